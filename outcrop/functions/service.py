"""Functions: register, look up and invoke what stands in for AWS Lambda, for agents' action groups.

Bedrock runs an action group's Lambda function; self-hosted, a function is either
- a URL: the server POSTs the event to it as JSON and reads a JSON object back. The request is made by the
  Outcrop server itself, so private and loopback addresses are allowed (self-hosted functions live there):
  registering a URL lets an account's callers make the server reach that address, as Lambda lets them
  run code; or
- a Python entry point (`package.module:function`), run in a child process (`outcrop.functions.runner`)
  that inherits the server's environment (`PYTHONPATH` finds the user's module): the user's code cannot
  crash the server, hold its memory, or block it past the function's timeout, after which the child and
  whatever it started are killed.

Every failure of the function itself is a `FunctionError` whose `kind` is Lambda-like ("Timeout",
"Unhandled", "InvalidResponse"); the agent loop turns it into a failed action result. `invoke` blocks
(up to the timeout): call it from a worker thread, not on the event loop.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import IO, Any
from urllib.parse import urlsplit

from sqlalchemy import select

from outcrop.errors import ResourceNotFoundException, ValidationException
from outcrop.functions.runner import NOT_JSON
from outcrop.functions.tables import FunctionKind, FunctionRow
from outcrop.platform.database import Database, utc_now

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_SECONDS = 30
#: Lambda's own ceiling (15 minutes).
MAX_TIMEOUT_SECONDS = 900
#: Lambda's synchronous response limit; a larger answer is refused rather than held in the server's memory.
MAX_RESPONSE_BYTES = 6 * 1024 * 1024
#: How much of a failing URL's body an error quotes: enough to see the function's own message.
ERROR_BODY_CHARS = 500
MAX_TARGET_CHARS = 2048

TIMEOUT, UNHANDLED, INVALID_RESPONSE = "Timeout", "Unhandled", "InvalidResponse"

_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ACCOUNT = re.compile(r"\d{12}")
_ENTRY_POINT = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*", re.ASCII)
#: Lambda's unqualified version: the only qualifier a function here has (Outcrop keeps no versions or aliases).
_LATEST = ":$LATEST"
_READ_CHUNK = 64 * 1024


class FunctionError(Exception):
    """A function failed: it timed out ("Timeout"), failed or could not be reached ("Unhandled"), or answered
    something other than a JSON object ("InvalidResponse")."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


def function_arn(region: str, account: str, name: str) -> str:
    return f"arn:aws:lambda:{region}:{account}:function:{name}"


class Functions:
    def __init__(self, db: Database, region: str) -> None:
        self.db = db
        self.region = region

    def register(self, account: str, name: str, *, url: str | None = None, entry_point: str | None = None,
                 timeout_seconds: int = DEFAULT_TIMEOUT_SECONDS) -> FunctionRow:
        """Create the function, or replace the one of that name (its ARN, and so the agents naming it, stay)."""
        kind, target = _target(url, entry_point)
        _check_account(account)
        _check_name(name)
        _check_timeout(timeout_seconds)
        arn, now = function_arn(self.region, account, name), utc_now()
        with self.db.session() as session:
            row = session.get(FunctionRow, arn)
            if row is None:
                row = FunctionRow(arn=arn, account_id=account, name=name, created_at=now)
                session.add(row)
            row.kind, row.target, row.timeout_seconds, row.updated_at = kind, target, timeout_seconds, now
        return row

    def get(self, account: str, name_or_arn: str) -> FunctionRow:
        """The account's function by name or ARN; another account's is as missing as one never registered."""
        return self.db.owned(FunctionRow, FunctionRow.name, account, _unqualified(name_or_arn), "function")

    def list(self, account: str) -> list[FunctionRow]:
        with self.db.session() as session:
            return list(session.scalars(select(FunctionRow).where(FunctionRow.account_id == account)
                                        .order_by(FunctionRow.name)))

    def delete(self, account: str, name_or_arn: str) -> None:
        arn = self.get(account, name_or_arn).arn
        with self.db.session() as session:
            row = session.get(FunctionRow, arn)
            if row is not None:  # deleted meanwhile by another caller: the outcome is the same
                session.delete(row)

    def invoke(self, account: str, name_or_arn: str, event: dict[str, Any]) -> dict[str, Any]:
        """Run the function on `event` and return its JSON object; any failure of the function is a FunctionError.

        Blocks up to the function's timeout (plus start-up): call it from a worker thread."""
        function = self.get(account, name_or_arn)
        try:
            payload = json.dumps(event).encode()
        except (TypeError, ValueError) as exc:
            raise ValidationException(f"The event for function {function.name} is not JSON: {exc}") from None
        if function.kind == FunctionKind.URL:
            answer = _post(function, payload)
        else:
            answer = _run(function, payload)
        return _json_object(function, answer)


# -- validation -----------------------------------------------------------------------------------


def _target(url: str | None, entry_point: str | None) -> tuple[FunctionKind, str]:
    if (url is None) == (entry_point is None):
        raise ValidationException("A function takes exactly one of a URL or an entry point")
    if url is not None:
        return FunctionKind.URL, _check_url(url)
    if not _ENTRY_POINT.fullmatch(entry_point or "") or len(entry_point) > MAX_TARGET_CHARS:
        raise ValidationException(f"Entry point '{entry_point}' must look like package.module:function")
    return FunctionKind.ENTRY_POINT, entry_point


def _check_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # a malformed host (an unclosed IPv6 bracket, a bad port)
        valid = False
    if not valid or len(url) > MAX_TARGET_CHARS or any(c.isspace() for c in url):
        raise ValidationException(f"Function URL '{url}' must be an http:// or https:// URL with a host")
    return url


def _check_account(account: str) -> None:
    if not _ACCOUNT.fullmatch(account or ""):
        raise ValidationException(f"Account '{account}' must be a 12-digit account id")


def _check_name(name: str) -> None:
    if not _NAME.fullmatch(name or ""):
        raise ValidationException(f"Function name '{name}' must be 1-64 letters, digits, - or _")


def _check_timeout(seconds: int) -> None:
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 1 <= seconds <= MAX_TIMEOUT_SECONDS:
        raise ValidationException(f"Timeout {seconds!r} must be a whole number of seconds from 1 to "
                                  f"{MAX_TIMEOUT_SECONDS}")


def _unqualified(identifier: str) -> str:
    """An ARN as the table keys it: Bedrock lets an agent name `...:function:NAME:$LATEST`, which is the function
    itself here; any other qualifier names a version or alias, which Outcrop does not keep."""
    parts = identifier.split(":")
    if not identifier.startswith("arn:") or len(parts) != 8:
        return identifier
    if ":" + parts[7] == _LATEST:
        return ":".join(parts[:7])
    raise ResourceNotFoundException(f"The function {identifier} does not exist: Outcrop keeps no versions or "
                                    f"aliases of a function (name it without a qualifier, or with {_LATEST})")


# -- URLs -----------------------------------------------------------------------------------------


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A redirected POST would arrive as a GET without the event: report the 3xx as the function's failure."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirects)


def _post(function: FunctionRow, payload: bytes) -> bytes:
    request = urllib.request.Request(function.target, data=payload, method="POST",
                                     headers={"Content-Type": "application/json", "Accept": "application/json"})
    # The socket timeout bounds each connect and read; the deadline bounds the whole answer (a slow trickle too).
    deadline = time.monotonic() + function.timeout_seconds
    try:
        with _OPENER.open(request, timeout=function.timeout_seconds) as response:
            return _read_body(function, response, deadline)
    except urllib.error.HTTPError as error:
        body = _error_body(error)
        raise FunctionError(UNHANDLED, f"Function {function.name} answered HTTP {error.code}"
                                       + (f": {body}" if body else "")) from None
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError):
            raise _timed_out(function) from None
        raise FunctionError(UNHANDLED, f"Function {function.name} could not be reached at {function.target}: "
                                       f"{error.reason}") from None
    except TimeoutError:
        raise _timed_out(function) from None
    except (OSError, http.client.HTTPException) as error:
        raise FunctionError(UNHANDLED, f"Function {function.name} failed at {function.target}: "
                                       f"{error!r}") from None


def _read_body(function: FunctionRow, response: IO[bytes], deadline: float) -> bytes:
    chunks, size = [], 0
    while chunk := response.read(_READ_CHUNK):
        size += len(chunk)
        if size > MAX_RESPONSE_BYTES:
            raise _too_large(function)
        if time.monotonic() > deadline:
            raise _timed_out(function)
        chunks.append(chunk)
    return b"".join(chunks)


def _error_body(error: urllib.error.HTTPError) -> str:
    """The start of a failing answer's body (its own error message, usually); never a second failure."""
    try:
        return error.read(ERROR_BODY_CHARS * 4).decode("utf-8", "replace")[:ERROR_BODY_CHARS].strip()
    except (OSError, http.client.HTTPException):
        return ""
    finally:
        error.close()


# -- entry points ---------------------------------------------------------------------------------


def _run(function: FunctionRow, payload: bytes) -> bytes:
    """The entry point's answer from a child process. Its output goes to unnamed temporary files rather than
    pipes: a chatty function costs disk rather than server memory, and a grandchild keeping a pipe open cannot
    hold up the answer."""
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        try:
            # A session of its own, so that the timeout kills whatever the function started along with it.
            child = subprocess.Popen([sys.executable, "-m", "outcrop.functions.runner", function.target],
                                     stdin=subprocess.PIPE, stdout=stdout, stderr=stderr, start_new_session=True)
        except OSError as error:
            raise FunctionError(UNHANDLED, f"Function {function.name} could not be started: {error}") from None
        try:
            child.communicate(payload, timeout=function.timeout_seconds)
        except subprocess.TimeoutExpired:
            _kill(child)
            raise _timed_out(function) from None
        last_line = _last_line(stderr)
        if child.returncode != 0:
            raise _exited(function, child.returncode, last_line)
        if last_line:
            log.debug("function %s wrote to stderr, last: %s", function.name, last_line)
        return _read_limited(function, stdout)


def _kill(child: subprocess.Popen) -> None:
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:  # it ended on its own just now
        pass
    child.wait()


def _exited(function: FunctionRow, status: int, last_line: str) -> FunctionError:
    how = f"was killed by {_signal_name(-status)}" if status < 0 else f"exited with status {status}"
    kind = INVALID_RESPONSE if status == NOT_JSON else UNHANDLED
    return FunctionError(kind, f"Function {function.name} {how}: {last_line or 'nothing on stderr'}")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _last_line(stream: IO[bytes]) -> str:
    """The last non-empty line the child wrote to stderr (a traceback's last line names the exception)."""
    stream.seek(0, os.SEEK_END)
    stream.seek(max(0, stream.tell() - 4096))
    lines = [line.strip() for line in stream.read().decode("utf-8", "replace").splitlines()]
    return next((line for line in reversed(lines) if line), "")


def _read_limited(function: FunctionRow, stream: IO[bytes]) -> bytes:
    if stream.seek(0, os.SEEK_END) > MAX_RESPONSE_BYTES:
        raise _too_large(function)
    stream.seek(0)
    return stream.read()


# -- answers --------------------------------------------------------------------------------------


def _json_object(function: FunctionRow, answer: bytes) -> dict[str, Any]:
    try:
        value = json.loads(answer)
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        what = f"not JSON: {answer[:100].decode('utf-8', 'replace')!r}"
    else:
        if isinstance(value, dict):
            return value
        what = f"a JSON {_JSON_TYPES.get(type(value), type(value).__name__)}"
    raise FunctionError(INVALID_RESPONSE, f"Function {function.name} answered {what}, not a JSON object")


_JSON_TYPES = {list: "array", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}


def _timed_out(function: FunctionRow) -> FunctionError:
    return FunctionError(TIMEOUT, f"Function {function.name} timed out after {function.timeout_seconds} s")


def _too_large(function: FunctionRow) -> FunctionError:
    return FunctionError(INVALID_RESPONSE, f"Function {function.name} answered more than "
                                           f"{MAX_RESPONSE_BYTES // (1024 * 1024)} MB")
