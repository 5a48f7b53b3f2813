"""The console's door: sign-in, sessions, CSRF, the denied page, and the API calls its scripts make."""

from __future__ import annotations

from outcrop.api.console.app import COOKIE, CSP, CSRF_HEADER
from outcrop.iam.tables import AuditEvent as AuditEventRow
from tests.unit.console.conftest import Browser

READ_CATALOG = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["bedrock:ListFoundationModels"], "Resource": "*"}]}


def test_signing_in_gives_a_strict_httponly_session_and_every_page_a_strict_csp(app, services):
    from outcrop.iam.credentials import read_credentials

    browser = Browser(app)
    assert browser.get("").location == "/console/sign-in"
    wrong = browser.post("sign-in", {"access_key_id": "AKIANOPE", "secret_access_key": "x"}, csrf=False)
    assert wrong.status == 401 and "do not match an active key" in wrong.errors()[0]
    key_id, secret = read_credentials(services.settings.credentials_file)
    signed = browser.post("sign-in", {"access_key_id": key_id, "secret_access_key": secret}, csrf=False)
    cookie = signed.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Path=/;" in cookie  # the page's script calls the API with it
    home = browser.get("")
    assert home.status == 200 and home.headers["content-security-policy"] == CSP
    assert "'unsafe-inline'" not in CSP and "script-src 'self'" in CSP
    with services.db.session() as session:
        results = [e.result for e in session.query(AuditEventRow).filter_by(service="outcrop-console")]
    assert sorted(results) == ["Success", "UnrecognizedClientException"]


def test_a_form_without_the_session_token_or_from_another_site_is_refused(root):
    refused = root.post("customization/create", {"jobName": "x"}, csrf=False)
    assert refused.status == 403 and "security token" in refused.errors()[0]
    foreign = root.post("customization/create", {"jobName": "x"}, headers={"origin": "https://evil.example"})
    assert foreign.status == 403 and "another site" in foreign.errors()[0]


def test_a_page_the_policy_does_not_allow_says_so_in_the_apis_words(user_browser, services):
    reader = user_browser("reader", READ_CATALOG)
    assert reader.get("models").status == 200
    denied = reader.get("customization")
    assert denied.status == 403 and "bedrock:ListModelCustomizationJobs" in denied.body
    with services.db.session() as session:
        event = session.query(AuditEventRow).filter_by(operation="ListModelCustomizationJobs").one()
    assert event.result == "AccessDeniedException" and event.principal_arn.endswith(":user/reader")


def test_a_form_error_is_the_apis_validation_message(root):
    page = root.get("customization/create")
    assert page.status == 200
    bad = root.post("customization/create", {"jobName": "bad name!", "customModelName": "m", "roleArn": "r",
                                             "baseModelIdentifier": "x", "trainingData": "s3://b/t.jsonl",
                                             "outputData": "s3://b/o/"})
    assert bad.status == 400 and bad.errors()[0].startswith("ValidationException: ")
    assert "jobName" in bad.errors()[0] and 'value="bad name!"' in bad.body  # the values come back to fix


def test_the_api_takes_a_console_session_only_with_its_csrf_token_and_origin(app, root):
    headers = {"cookie": f"{COOKIE}={root.cookie}", "host": "127.0.0.1:8000"}
    principal = app.api_principal({**headers, CSRF_HEADER: root.csrf})
    assert principal is not None and principal.is_root
    assert app.api_principal(headers) is None  # a cross-site form or <img> cannot add the header
    assert app.api_principal({**headers, CSRF_HEADER: root.csrf + "x"}) is None
    assert app.api_principal({**headers, CSRF_HEADER: root.csrf, "origin": "https://evil.example"}) is None


def test_static_files_are_served_with_their_types_and_nothing_outside_static(root):
    script = root.get("/console/static/console.js")
    assert script.status == 200 and script.headers["content-type"].startswith("text/javascript")
    assert root.get("/console/static/vendor/uplot/uPlot.iife.min.js").status == 200
    for bad in ("/console/static/../__init__.py", "/console/static/%2e%2e/x", "/console/static/templates/x"):
        assert root.get(bad).status == 404


def test_signing_out_ends_the_session_even_for_a_copy_of_its_cookie(root):
    copy = Browser(root.app, cookie=root.cookie, csrf=root.csrf)
    assert copy.get("models").status == 200
    assert root.post("sign-out").location == "/console/sign-in"
    assert copy.get("models").location == "/console/sign-in"
    assert root.app.api_principal({"cookie": f"{COOKIE}={copy.cookie}", CSRF_HEADER: copy.csrf,
                                   "host": "127.0.0.1:8000"}) is None


def test_the_object_store_pages_see_the_requests_conditions(user_browser):
    """A policy's Deny on the caller's address holds on the console's store pages as on the API."""
    everything_but_here = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:*", "bedrock:*"], "Resource": "*"},
        {"Effect": "Deny", "Action": ["s3:*", "bedrock:*"], "Resource": "*",
         "Condition": {"IpAddress": {"aws:SourceIp": "127.0.0.0/8"}}}]}
    browser = user_browser("remote-only", everything_but_here)
    assert browser.get("models").status == 403
    assert browser.get("storage").status == 403


def test_only_the_upload_page_takes_multipart_and_never_many_parts(root):
    big = root.post("customization/create", {"jobName": "x"}, files={"f": ("a.txt", b"x")})
    assert big.status == 413
    root.post("storage", {"bucket": "parts"})
    many = {f"field{i}": "v" for i in range(40)}
    refused = root.post("storage/parts/upload", many, files={"file": ("a.txt", b"x")})
    assert refused.status == 403 and "security token" in refused.errors()[0]  # nothing was taken from it
    assert root.post("storage/parts/upload", {}, files={"file": ("a.txt", b"x")}).status == 303


def test_with_authentication_off_a_post_must_come_from_this_server(services, monkeypatch):
    from outcrop.api.console.app import ConsoleApp

    monkeypatch.setattr(type(services.settings), "auth_enabled", property(lambda self: False))
    browser = Browser(ConsoleApp(services))
    assert browser.get("models").status == 200  # no sign-in: every caller is the root
    assert browser.post("iam/users", {"UserName": "x"}, csrf=False).status == 403  # no Origin
    assert browser.post("iam/users", {"UserName": "x"}, csrf=False, headers={"origin": "null"}).status == 403
    made = browser.post("iam/users", {"UserName": "x"}, csrf=False, headers={"origin": "http://127.0.0.1:8000"})
    assert made.status == 303


def test_reports_are_sandboxed_and_cannot_post_anywhere():
    from outcrop.api.console.app import REPORT_CSP

    assert "sandbox" in REPORT_CSP and "form-action 'none'" in REPORT_CSP and "script-src" not in REPORT_CSP
