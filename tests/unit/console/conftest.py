"""The console's pages, driven in this process through `ConsoleApp.handle` (no server, no browser): a signed-in
client per principal, cookies and CSRF tokens kept as a browser keeps them. The browser itself drives them in
tests/integration/console."""

from __future__ import annotations

import html
import re
import urllib.parse
from dataclasses import dataclass, field

import pytest

from outcrop.api.asgi import LOOPBACK
from outcrop.api.console.app import COOKIE, CSRF_FIELD, PREFIX, ConsoleApp
from outcrop.api.sessions import cookies
from tests.conftest import prepare_data_dir


@dataclass
class Page:
    status: int
    headers: dict[str, str]
    body: str

    @property
    def location(self) -> str:
        return self.headers.get("location", "")

    def errors(self) -> list[str]:
        return [html.unescape(e) for e in re.findall(r'class="error"[^>]*>([^<]*)<', self.body)]


@dataclass
class Browser:
    """One visitor: its cookie jar is the one console cookie."""

    app: ConsoleApp
    cookie: str = ""
    csrf: str = ""
    origin: str = "http://127.0.0.1:8000"
    extra: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, form: dict[str, str] | None = None, *, csrf: bool = True,
                files: dict[str, tuple[str, bytes]] | None = None, headers: dict[str, str] | None = None) -> Page:
        path, _, query = (path if path.startswith("/") else f"{PREFIX}/{path}").partition("?")
        sent = {"host": "127.0.0.1:8000", **self.extra, **(headers or {})}
        if self.cookie:
            sent["cookie"] = f"{COOKIE}={self.cookie}"
        body = b""
        if method == "POST":
            fields = {**({CSRF_FIELD: self.csrf} if csrf else {}), **(form or {})}
            if files:
                body, sent["content-type"] = _multipart(fields, files)
            else:
                body = urllib.parse.urlencode(fields).encode()
                sent["content-type"] = "application/x-www-form-urlencoded"
        response = self.app.handle(method, path, dict(urllib.parse.parse_qsl(query, keep_blank_values=True)),
                                   sent, body, LOOPBACK, "127.0.0.1")
        out = {k.lower(): v for k, v in response.headers}
        if "set-cookie" in out:
            self.cookie = cookies(out["set-cookie"].split(";", 1)[0]).get(COOKIE, "")
        text = response.body.decode("utf-8", "replace") if isinstance(response.body, bytes) else response.body
        token = re.search(r'name="outcrop-csrf" content="([^"]+)"', text)
        if token:
            self.csrf = token.group(1)
        return Page(response.status, out, text)

    def get(self, path: str, **kw) -> Page:
        return self.request("GET", path, **kw)

    def post(self, path: str, form: dict[str, str] | None = None, **kw) -> Page:
        return self.request("POST", path, form, **kw)

    def sign_in(self, key_id: str, secret: str) -> Page:
        page = self.post("sign-in", {"access_key_id": key_id, "secret_access_key": secret}, csrf=False)
        assert page.status == 303, page.errors()
        self.get("")  # the front page hands out the CSRF token
        return page


def _multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = "outcrop-test-boundary"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
             for k, v in fields.items()]
    parts += [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{name}"\r\n'
              f"Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n"
              for k, (name, data) in files.items()]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


@pytest.fixture
def services(tmp_path):
    from outcrop.platform.config import load_settings
    from outcrop.services import Services

    started = Services.start(load_settings(data_dir=prepare_data_dir(tmp_path / "data"), preload_models=""))
    yield started
    started.close()


@pytest.fixture
def app(services) -> ConsoleApp:
    return ConsoleApp(services)


@pytest.fixture
def root(app, services) -> Browser:
    """The account root, signed in."""
    from outcrop.iam.credentials import read_credentials

    browser = Browser(app)
    browser.sign_in(*read_credentials(services.settings.credentials_file))
    return browser


@pytest.fixture
def user_browser(app, services):
    """make(name, policy document or None) -> a signed-in Browser for a new IAM user of the root's account."""
    def make(name: str, policy: dict | None = None) -> Browser:
        iam = services.iam
        account = iam.default_account()
        user = iam.create_user(account, name)
        if policy is not None:
            iam.put_policy(user.arn, "console", policy)
        key = iam.create_access_key(user.arn)
        browser = Browser(app)
        browser.sign_in(key.access_key_id, key.secret)
        return browser
    return make
