"""Functions without a server: the registry and its account isolation, invoking URLs against a real local HTTP
server, entry points in real child processes, and the `outcrop functions` command."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from outcrop.cli import main
from outcrop.errors import ResourceNotFoundException, ValidationException
from outcrop.functions.service import FunctionError, Functions
from outcrop.functions.tables import FunctionKind

REGION = "us-east-1"

#: What Bedrock sends an action group defined by function details (trimmed).
EVENT = {"messageVersion": "1.0", "actionGroup": "weather", "function": "get_weather",
         "parameters": [{"name": "city", "type": "string", "value": "Lyon"}],
         "sessionAttributes": {}, "promptSessionAttributes": {}, "inputText": "Weather in Lyon?"}


def agent_response(event: dict) -> dict:
    """The answer a Bedrock agent's Lambda gives for a function-details action group."""
    city = event["parameters"][0]["value"]
    return {"messageVersion": "1.0",
            "response": {"actionGroup": event["actionGroup"], "function": event["function"],
                         "functionResponse": {"responseBody": {"TEXT": {"body": f"Sunny in {city}"}}}}}


@pytest.fixture
def accounts(iam):
    first = iam.bootstrap().principal_arn.split(":")[4]
    second = iam.create_account("other").principal_arn.split(":")[4]
    return first, second


@pytest.fixture
def functions(db):
    return Functions(db, REGION)


# -- the registry -----------------------------------------------------------------------------------


def test_register_get_list_delete(functions, accounts):
    account, _ = accounts
    row = functions.register(account, "weather", url="http://127.0.0.1:9/weather")
    assert row.arn == f"arn:aws:lambda:{REGION}:{account}:function:weather"
    assert (row.kind, row.target, row.timeout_seconds) == (FunctionKind.URL, "http://127.0.0.1:9/weather", 30)
    assert functions.get(account, "weather").arn == row.arn
    assert functions.get(account, row.arn).name == "weather"
    assert functions.get(account, row.arn + ":$LATEST").name == "weather"  # Bedrock allows the qualifier

    replaced = functions.register(account, "weather", entry_point="tools.weather:handler", timeout_seconds=5)
    assert replaced.arn == row.arn and replaced.created_at == row.created_at
    assert (replaced.kind, replaced.target, replaced.timeout_seconds) == ("ENTRY_POINT", "tools.weather:handler", 5)
    functions.register(account, "another_one", url="https://functions.internal/x")
    assert [f.name for f in functions.list(account)] == ["another_one", "weather"]

    functions.delete(account, row.arn)
    assert [f.name for f in functions.list(account)] == ["another_one"]
    with pytest.raises(ResourceNotFoundException, match="weather"):
        functions.get(account, "weather")
    with pytest.raises(ResourceNotFoundException):
        functions.delete(account, "weather")


def test_accounts_see_only_their_own_functions(functions, accounts):
    mine, theirs = accounts
    arn = functions.register(mine, "private", url="http://127.0.0.1:9/").arn
    functions.register(theirs, "private", url="http://127.0.0.1:10/")  # the same name in another account is its own
    assert functions.get(theirs, "private").target == "http://127.0.0.1:10/"
    with pytest.raises(ResourceNotFoundException):
        functions.get(theirs, arn)  # another account's ARN is missing, not forbidden
    with pytest.raises(ResourceNotFoundException):
        functions.delete(theirs, arn)
    with pytest.raises(ResourceNotFoundException):
        functions.invoke(theirs, arn, EVENT)
    assert [f.account_id for f in functions.list(mine)] == [mine]
    assert functions.get(mine, "private").target == "http://127.0.0.1:9/"


#: (what register is given, what the refusal says): one test, not one per case, since each case costs a database.
REFUSALS = [
    ({"url": "http://x/", "entry_point": "a:b"}, "exactly one"),
    ({}, "exactly one"),
    ({"url": "ftp://host/x"}, "http"),
    ({"url": "http:///nohost"}, "http"),
    ({"url": "http://[::1/x"}, "http"),
    ({"url": "http://x/ y"}, "http"),
    ({"entry_point": "module"}, "package.module:function"),
    ({"entry_point": "pkg.mod:fn; rm -rf /"}, "package.module:function"),
    ({"url": "http://x/", "timeout_seconds": 0}, "1 to 900"),
    ({"url": "http://x/", "timeout_seconds": 901}, "1 to 900"),
    ({"url": "http://x/", "timeout_seconds": True}, "1 to 900"),
]


def test_register_refuses_what_cannot_run(functions, accounts):
    for kwargs, message in REFUSALS:
        with pytest.raises(ValidationException, match=message):
            functions.register(accounts[0], "f", **kwargs)
    for name in ["", "has space", "dots.not.allowed", "x" * 65]:
        with pytest.raises(ValidationException, match="1-64"):
            functions.register(accounts[0], name, url="http://x/")
    with pytest.raises(ValidationException, match="12-digit"):
        functions.register("123", "f", url="http://x/")
    assert functions.list(accounts[0]) == []


def test_versions_and_aliases_are_not_kept(functions, accounts):
    arn = functions.register(accounts[0], "f", url="http://x/").arn
    with pytest.raises(ResourceNotFoundException, match="versions or aliases"):
        functions.get(accounts[0], arn + ":1")


# -- URLs -------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    release: threading.Event  # set by the fixture, so that the slow handler lets go at teardown

    def do_POST(self):
        event = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/echo":
            assert self.headers["Content-Type"] == "application/json"
            self._answer(200, json.dumps(agent_response(event)).encode())
        elif self.path == "/fail":
            self._answer(500, b'{"errorMessage": "the weather service is down"}' + b"x" * 2000)
        elif self.path == "/text":
            self._answer(200, b"<html>hello</html>")
        elif self.path == "/list":
            self._answer(200, b"[1, 2]")
        elif self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/echo")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/slow":
            self.release.wait(10)
            self._answer(200, b"{}")
        else:
            self._answer(404, b"no such function")

    def _answer(self, status: int, body: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:  # the client gave up (the timeout test)
            pass

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def server():
    release = threading.Event()
    handler = type("Handler", (_Handler,), {"release": release})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    release.set()
    httpd.shutdown()
    httpd.server_close()


def test_a_url_gets_the_event_and_answers_for_the_agent(functions, accounts, server):
    account = accounts[0]
    functions.register(account, "weather", url=f"{server}/echo")
    answer = functions.invoke(account, "weather", EVENT)
    assert answer["response"]["functionResponse"]["responseBody"]["TEXT"]["body"] == "Sunny in Lyon"


def test_a_failing_url_is_a_function_error(functions, accounts, server):
    cases = [("/fail", "Unhandled", 'HTTP 500: {"errorMessage": "the weather service is down"}'),
             ("/missing", "Unhandled", "HTTP 404: no such function"),
             ("/redirect", "Unhandled", "HTTP 302"),  # a redirected POST would lose its event
             ("/text", "InvalidResponse", "answered not JSON: '<html>hello</html>', not a JSON object"),
             ("/list", "InvalidResponse", "answered a JSON array, not a JSON object")]
    for path, kind, message in cases:
        functions.register(accounts[0], "f", url=server + path)
        with pytest.raises(FunctionError) as caught:
            functions.invoke(accounts[0], "f", EVENT)
        assert (caught.value.kind, message in caught.value.message) == (kind, True), caught.value.message
    functions.register(accounts[0], "f", url=server + "/fail")
    with pytest.raises(FunctionError) as caught:
        functions.invoke(accounts[0], "f", EVENT)
    assert len(caught.value.message) < 600  # the body's start is quoted, not all of it


def test_a_slow_url_times_out(functions, accounts, server):
    functions.register(accounts[0], "slow", url=f"{server}/slow", timeout_seconds=1)
    started = time.monotonic()
    with pytest.raises(FunctionError, match="timed out after 1 s") as caught:
        functions.invoke(accounts[0], "slow", EVENT)
    assert caught.value.kind == "Timeout" and time.monotonic() - started < 5


def test_an_unreachable_url_is_unhandled(functions, accounts):
    from tests.conftest import free_port

    functions.register(accounts[0], "gone", url=f"http://127.0.0.1:{free_port()}/")
    with pytest.raises(FunctionError, match="could not be reached") as caught:
        functions.invoke(accounts[0], "gone", EVENT)
    assert caught.value.kind == "Unhandled"


# -- entry points -----------------------------------------------------------------------------------

MODULE = '''
import os, sys, time

def weather(event):
    print("a print goes to the log, not into the answer")
    city = event["parameters"][0]["value"]
    return {"messageVersion": "1.0", "response": {"actionGroup": event["actionGroup"],
            "function": event["function"],
            "functionResponse": {"responseBody": {"TEXT": {"body": "Sunny in " + city}}}}}

def lambda_style(event, context):
    return {"context": context, "path_var": os.environ.get("MARKER")}

def boom(event):
    raise ValueError("no weather for Atlantis")

def sleepy(event):
    time.sleep(30)

def a_list(event):
    return [1, 2]

def a_set(event):
    return {"numbers": {1, 2}}

def dies(event):
    sys.stdout.flush()
    os._exit(7)
'''


@pytest.fixture
def module(tmp_path, monkeypatch):
    (tmp_path / "user_functions.py").write_text(MODULE)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    monkeypatch.setenv("MARKER", "inherited")
    return "user_functions"


def _invoke(functions, account, entry_point, timeout_seconds=30):
    functions.register(account, "f", entry_point=entry_point, timeout_seconds=timeout_seconds)
    return functions.invoke(account, "f", EVENT)


def test_an_entry_point_runs_in_a_child_and_answers(functions, accounts, module):
    answer = _invoke(functions, accounts[0], f"{module}:weather")
    assert answer == agent_response(EVENT)
    # Lambda's (event, context) handlers run too; the child has the server's environment.
    assert _invoke(functions, accounts[0], f"{module}:lambda_style") == {"context": None, "path_var": "inherited"}


def test_a_failing_entry_point_is_a_function_error(functions, accounts, module):
    cases = [(f"{module}:boom", "Unhandled", "exited with status 1: ValueError: no weather for Atlantis"),
             (f"{module}:a_list", "InvalidResponse", "a JSON array, not a JSON object"),
             (f"{module}:a_set", "InvalidResponse", "is not JSON"),
             (f"{module}:dies", "Unhandled", "exited with status 7"),
             (f"{module}:nowhere", "Unhandled", "AttributeError"),
             ("not_there:handler", "Unhandled", "No module named 'not_there'")]
    for entry_point, kind, message in cases:
        with pytest.raises(FunctionError) as caught:
            _invoke(functions, accounts[0], entry_point)
        assert (caught.value.kind, message in caught.value.message) == (kind, True), caught.value.message


def test_an_entry_point_past_its_timeout_is_killed(functions, accounts, module):
    started = time.monotonic()
    with pytest.raises(FunctionError, match="timed out after 1 s") as caught:
        _invoke(functions, accounts[0], f"{module}:sleepy", timeout_seconds=1)
    assert caught.value.kind == "Timeout" and time.monotonic() - started < 5


# -- the command ------------------------------------------------------------------------------------


def test_the_cli_registers_lists_invokes_and_deletes(tmp_path, module, capsys):
    data = ["--data-dir", str(tmp_path / "data")]
    assert main(["functions", "register", "weather", "--entry-point", f"{module}:weather", "--timeout", "10",
                 *data]) == 0
    arn = capsys.readouterr().out.strip()
    assert arn.startswith("arn:aws:lambda:") and arn.endswith(":function:weather")

    assert main(["functions", "list", *data]) == 0
    assert capsys.readouterr().out.split() == [arn, "ENTRY_POINT", f"{module}:weather", "10s"]

    (tmp_path / "event.json").write_text(json.dumps(EVENT))
    assert main(["functions", "invoke", "weather", "--event", str(tmp_path / "event.json"), *data]) == 0
    assert json.loads(capsys.readouterr().out) == agent_response(EVENT)

    assert main(["functions", "register", "boom", "--entry-point", f"{module}:boom", *data]) == 0
    capsys.readouterr()
    assert main(["functions", "invoke", "boom", "--event", "{}", *data]) == 1
    assert "function failed (Unhandled)" in capsys.readouterr().err

    assert main(["functions", "delete", "weather", *data]) == 0
    assert main(["functions", "list", *data]) == 0
    assert "weather" not in capsys.readouterr().out
    assert main(["functions", "delete", "weather", *data]) == 1
    assert "ResourceNotFoundException" in capsys.readouterr().err


def test_the_cli_wants_exactly_one_target(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["functions", "register", "f", "--url", "http://x/", "--entry-point", "a:b",
              "--data-dir", str(tmp_path)])
    assert "not allowed with" in capsys.readouterr().err
