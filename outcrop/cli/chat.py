"""`outcrop chat` and `outcrop invoke`: talk to a model through a running `outcrop serve`.

Both are plain bedrock-runtime clients (boto3), so they share the server's loaded models, batching and
usage records instead of loading a second copy of the weights. They sign with the root key that
`outcrop serve` wrote to `<data dir>/credentials` (profile `outcrop`).
"""

from __future__ import annotations

import argparse
import configparser
import json
import os
import sys
from typing import Any, TextIO
from urllib.parse import urlsplit

from outcrop.platform.config import Settings, load_settings

ENDPOINT_ENV = "OUTCROP_ENDPOINT_URL"
PROFILE = "outcrop"
PROMPT = "you> "
RESET, EXIT = "/reset", ("/exit", "/quit")


class Fatal(Exception):
    """An error that ends the command with one line on stderr and exit status 1."""


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    client = argparse.ArgumentParser(add_help=False)
    client.add_argument("--endpoint-url", default=None,
                        help=f"the Outcrop server (default: ${ENDPOINT_ENV}, else http://HOST:PORT from the "
                             "settings, http://127.0.0.1:8600 unless configured)")

    chat = sub.add_parser("chat", parents=[common, client], help="chat with a model on a running server",
                          description="Chat with a model through a running `outcrop serve` (ConverseStream). "
                                      "One message per line; /reset forgets the conversation, /exit or EOF "
                                      "quits, Ctrl-C stops a reply.")
    chat.add_argument("model_id", metavar="MODEL",
                      help="a model id or ARN, e.g. huggingface.smollm2-135m-instruct-v1:0")
    chat.add_argument("--system", default=None, help="a system prompt")
    chat.add_argument("--temperature", type=float, default=None)
    chat.add_argument("--top-p", type=float, default=None)
    chat.add_argument("--max-tokens", type=int, default=None, help="most tokens in one reply")
    chat.add_argument("--seed", type=int, default=None, help="pin sampling (the same seed on every turn)")
    chat.set_defaults(func=_chat)

    invoke = sub.add_parser("invoke", parents=[common, client], help="send one InvokeModel body to a running server",
                            description="Send a provider-native JSON body to a model through a running "
                                        "`outcrop serve` and print the response body.")
    invoke.add_argument("model_id", metavar="MODEL", help="a model id or ARN")
    invoke.add_argument("--body", required=True, metavar="FILE", help="the JSON request body (- reads stdin)")
    invoke.add_argument("--stream", action="store_true",
                        help="use InvokeModelWithResponseStream and print each chunk as one JSON line")
    invoke.set_defaults(func=_invoke)


# -- the client ------------------------------------------------------------------------------------

def endpoint_url(args: argparse.Namespace, settings: Settings) -> str:
    if args.endpoint_url:
        return args.endpoint_url.rstrip("/")
    if os.environ.get(ENDPOINT_ENV):
        return os.environ[ENDPOINT_ENV].rstrip("/")
    host = "127.0.0.1" if settings.host in ("", "0.0.0.0", "::") else settings.host
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    return f"http://{host}:{settings.port}"


def _credentials(settings: Settings) -> dict[str, str]:
    """The root key from `<data dir>/credentials`; failing that, boto3's usual chain (env, AWS_PROFILE)."""
    path = settings.credentials_file
    parser = configparser.ConfigParser()
    try:
        parser.read(path)
    except configparser.Error as exc:
        raise Fatal(f"{path} is not a credentials file: {exc}") from None
    if parser.has_section(PROFILE) and "aws_access_key_id" in parser[PROFILE]:
        section = parser[PROFILE]
        return {"aws_access_key_id": section["aws_access_key_id"],
                "aws_secret_access_key": section.get("aws_secret_access_key", "")}
    import boto3

    if boto3.Session().get_credentials() is None:
        raise Fatal(f"no credentials: {path} has no profile {PROFILE} (it is written when `outcrop serve` "
                     f"first starts with this --data-dir), and no AWS credentials are configured")
    return {}


def make_client(args: argparse.Namespace, service: str = "bedrock-runtime"):
    import boto3
    from botocore.config import Config

    settings = load_settings(data_dir=args.data_dir)
    url = endpoint_url(args, settings)
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
        raise Fatal(f"--endpoint-url must be an http(s) URL, got {url!r}")
    args.resolved_endpoint = url
    return boto3.client(service, endpoint_url=url, region_name=settings.region, **_credentials(settings),
                        config=Config(connect_timeout=5, read_timeout=900, retries={"max_attempts": 1},
                                      tcp_keepalive=True))


def run_client(command, args: argparse.Namespace) -> int:
    """Run a command, turning what a user can cause into `outcrop: ...` on stderr and exit status 1."""
    from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

    try:
        return command(args)
    except Fatal as exc:
        _error(str(exc))
    except ClientError as exc:
        _error(_client_error(exc))
    except EndpointConnectionError:
        _error(_no_server(args))
    except BotoCoreError as exc:
        _error(str(exc))
    return 1


def _client_error(exc) -> str:
    error = exc.response.get("Error", {})
    return f"{error.get('Code') or 'Error'}: {error.get('Message') or exc}"


def _no_server(args: argparse.Namespace) -> str:
    url = getattr(args, "resolved_endpoint", None) or args.endpoint_url or "the endpoint"
    return f"no Outcrop server at {url}: start one with `outcrop serve`"


def _error(message: str) -> None:
    print(f"outcrop: {message}", file=sys.stderr, flush=True)


# -- chat ------------------------------------------------------------------------------------------

def _chat(args: argparse.Namespace) -> int:
    return run_client(_chat_loop, args)


def _chat_loop(args: argparse.Namespace) -> int:
    from botocore.exceptions import ClientError, EndpointConnectionError

    runtime = make_client(args)
    request: dict[str, Any] = {"modelId": args.model_id}
    if args.system:
        request["system"] = [{"text": args.system}]
    config = {key: value for key, value in (("temperature", args.temperature), ("topP", args.top_p),
                                             ("maxTokens", args.max_tokens)) if value is not None}
    if config:
        request["inferenceConfig"] = config
    if args.seed is not None:
        request["additionalModelRequestFields"] = {"seed": args.seed}
    _check_model(args)

    interactive = sys.stdin.isatty()
    if interactive:
        try:
            import readline  # noqa: F401  (line editing and history for input())
        except ImportError:
            pass
    history: list[dict[str, Any]] = []
    failed = False
    while True:
        try:
            line = input(PROMPT) if interactive else sys.stdin.readline()
        except EOFError:
            line = ""
        except KeyboardInterrupt:  # at the prompt, Ctrl-C leaves
            print()
            return 130
        if not line:  # EOF
            if interactive:
                print()
            return 1 if failed else 0
        text = line.rstrip("\r\n")
        command = text.strip()
        if not command:
            continue
        if command in EXIT:
            return 1 if failed else 0
        if command == RESET:
            history.clear()
            if interactive:
                print("(conversation cleared)", file=sys.stderr, flush=True)
            continue
        history.append({"role": "user", "content": [{"text": text}]})
        try:
            reply = _stream_reply(runtime, {**request, "messages": history}, sys.stdout)
        except EndpointConnectionError:
            raise Fatal(_no_server(args)) from None
        except ClientError as exc:  # the server refused this turn (too long, bad parameter): say so, go on
            _error(_client_error(exc))
            failed = True
            history.pop()
            continue
        if reply:
            history.append({"role": "assistant", "content": [{"text": reply}]})
        else:  # nothing came back (or Ctrl-C before the first word): the turn never happened
            history.pop()


def _check_model(args: argparse.Namespace) -> None:
    """Fail before the first prompt if the server is down or does not know the model (GetFoundationModel)."""
    make_client(args, "bedrock").get_foundation_model(modelIdentifier=args.model_id)


def _stream_reply(runtime, request: dict[str, Any], out: TextIO) -> str:
    """Send the conversation, print the reply as it arrives; Ctrl-C stops it. Returns what was printed."""
    parts: list[str] = []
    stream = None
    try:
        response = runtime.converse_stream(**request)
        stream = response["stream"]
        for event in stream:
            delta = event.get("contentBlockDelta", {}).get("delta", {}).get("text")
            if delta:
                parts.append(delta)
                out.write(delta)
                out.flush()
    except KeyboardInterrupt:
        if stream is not None:
            stream.close()  # drops the connection; the server stops generating for it
        out.write("\n")
        out.flush()
        print("(reply stopped)", file=sys.stderr, flush=True)
        return "".join(parts)
    out.write("\n")
    out.flush()
    return "".join(parts)


# -- invoke ----------------------------------------------------------------------------------------

def _invoke(args: argparse.Namespace) -> int:
    return run_client(_invoke_once, args)


def _read_body(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        with open(source, "rb") as fh:
            return fh.read()
    except OSError as exc:
        raise Fatal(f"cannot read the body {source}: {exc.strerror or exc}") from None


def _invoke_once(args: argparse.Namespace) -> int:
    body = _read_body(args.body)
    runtime = make_client(args)
    common = dict(modelId=args.model_id, body=body, contentType="application/json", accept="application/json")
    if not args.stream:
        response = runtime.invoke_model(**common)
        print(_pretty(response["body"].read()), flush=True)
        return 0
    response = runtime.invoke_model_with_response_stream(**common)
    stream = response["body"]
    try:
        for event in stream:
            chunk = event.get("chunk")
            if chunk is not None:
                print(_compact(chunk["bytes"]), flush=True)
    except KeyboardInterrupt:
        stream.close()
        return 130
    return 0


def _pretty(raw: bytes) -> str:
    try:
        return json.dumps(json.loads(raw), indent=2, ensure_ascii=False)
    except ValueError:
        return raw.decode("utf-8", "replace")


def _compact(raw: bytes) -> str:
    try:
        return json.dumps(json.loads(raw), ensure_ascii=False)
    except ValueError:
        return raw.decode("utf-8", "replace")
