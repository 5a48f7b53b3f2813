"""A human comparison rated through the raters' web pages by two raters, in headless Chromium, by keyboard.

The server runs in this process (the real `BedrockApp` under Outcrop's HTTP server on a loopback port) so that the
test can put its own completion hook in place of the evaluation service's and count its calls.
"""

from __future__ import annotations

import http.cookiejar
import importlib.util
import threading
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import select

from outcrop.evaluation.human.items import create_tasks
from outcrop.evaluation.tables import EvaluationJobRow, HumanRatingRow, HumanTaskRow
from tests.conftest import free_port, prepare_data_dir

CHROMIUM = "/usr/bin/chromium"
needs_browser = pytest.mark.skipif(
    importlib.util.find_spec("playwright") is None or not Path(CHROMIUM).is_file(),
    reason=f"needs the playwright package and Debian's chromium at {CHROMIUM} (apt-get install chromium; "
           "pip install playwright)")

PREFIX = "/_outcrop/evaluation/rate"
A, B = "model-base", "model-tuned"
METRICS = [
    {"name": "Better", "description": "Which response answers the prompt better?",
     "ratingMethod": "ComparisonLikertScale"},
    {"name": "Fluency", "description": "How well the response reads", "ratingMethod": "IndividualLikertScale"},
    {"name": "Pick", "description": "Which one would you send?", "ratingMethod": "ComparisonChoice"},
]
#: What each rater means to say, in model terms: (Better 1..5 from A to B, Fluency per model, Pick).
PLAN = {
    "alice": [(1, {A: 5, B: 3}, A), (4, {A: 2, B: 4}, B), (3, {A: 4, B: 4}, "tie")],
    "bob": [(2, {A: 4, B: 3}, A), (5, {A: 1, B: 5}, B), (4, {A: 3, B: 3}, B)],
}


@pytest.fixture
def site(tmp_path):
    """The app under Outcrop's HTTP server in a thread; yields (endpoint, services)."""
    from outcrop.api.app import BedrockApp
    from outcrop.cli.serve import HttpServer
    from outcrop.platform.config import load_settings
    from outcrop.services import Services

    port = free_port()
    # No model is preloaded: these pages need none, and a load would take the CPUs from the browser.
    services = Services.start(load_settings(data_dir=prepare_data_dir(tmp_path / "data"), port=port,
                                            preload_models=""))
    server = HttpServer(BedrockApp(services), "127.0.0.1", port)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    assert server.started.wait(30) and thread.is_alive(), "the server did not start"
    yield f"http://127.0.0.1:{port}", services
    server.stop()
    thread.join(timeout=30)


def _job(services, account: str, flow_arn: str) -> str:
    arn = f"arn:aws:bedrock:us-east-1:{account}:evaluation-job/humanpages01"
    request = {
        "jobName": "base-vs-tuned", "jobId": "humanpages01", "roleArn": f"arn:aws:iam::{account}:role/eval",
        "evaluationConfig": {"human": {
            "humanWorkflowConfig": {"flowDefinitionArn": flow_arn,
                                    "instructions": "Compare the two answers.\nIgnore their length."},
            "customMetrics": METRICS,
            "datasetMetricConfigs": [{"taskType": "Generation", "dataset": {"name": "prompts"},
                                      "metricNames": [m["name"] for m in METRICS]}]}},
        "inferenceConfig": {"models": [{"bedrockModel": {"modelIdentifier": A}},
                                       {"bedrockModel": {"modelIdentifier": B}}]},
    }
    now = datetime.now(UTC)
    with services.db.session() as session:
        session.add(EvaluationJobRow(job_arn=arn, account_id=account, job_name="base-vs-tuned", job_type="Human",
                                     status="InProgress", request=request, created_at=now, updated_at=now))
    items = [{"taskType": "Generation", "dataset": "prompts",
              "record": {"prompt": f"Question {i}: <b>what</b> is {i} + {i}?", "category": "xyx"[i],
                         **({"referenceResponse": str(2 * i)} if i != 1 else {})},
              "responses": [{"modelIdentifier": A, "response": f"base says {2 * i + 1}"},
                            {"modelIdentifier": B, "response": f"tuned says {2 * i}"}]} for i in range(3)]
    assert create_tasks(services.db, arn, items, 2) == 3
    return arn


def _keys_for(plan, first_model: str, shown_as: dict[str, int]) -> tuple[int, list[int], int]:
    """The options to pick on the page (1-based, in the order shown) for one planned rating."""
    better, fluency, pick = plan
    by_slot = sorted(fluency, key=lambda m: shown_as[m])
    return (better if first_model == A else 6 - better, [fluency[m] for m in by_slot],
            3 if pick == "tie" else shown_as[pick])


def _pick(page, option: int, native: bool) -> None:
    """Choose the option-th radio of the focused group: a digit shortcut, or the keys every browser has."""
    if not native:
        page.keyboard.press(str(option))  # the shortcut also moves on to the next question
        return
    if option == 1:
        page.keyboard.press("Space")
    for _ in range(option - 1):
        page.keyboard.press("ArrowRight")
    page.keyboard.press("Tab")


@needs_browser
def test_two_raters_rate_a_comparison_by_keyboard(site):
    from playwright.sync_api import expect, sync_playwright

    endpoint, services = site
    human, iam = services.human, services.iam
    account = iam.default_account()
    keys = {}
    for name in ("alice", "bob"):
        iam.create_user(account, name)
        keys[name] = iam.create_access_key(f"arn:aws:iam::{account}:user/{name}")
    iam.create_user(account, "carol")
    flow = human.create_flow_definition(account, "raters", ["alice", "bob"], 2)
    job = _job(services, account, flow)
    fired: list[str] = []
    human.on_complete = fired.append  # the evaluation service's own completion is not under test here
    with services.db.session() as session:
        tasks = list(session.scalars(select(HumanTaskRow).where(HumanTaskRow.job_arn == job)
                                     .order_by(HumanTaskRow.position)))
    orders = [{r["modelIdentifier"]: r["shownAs"] for r in t.responses} for t in tasks]

    # Without a session every page leads to the sign-in form; a forged cookie does not help.
    request = urllib.request.Request(endpoint + PREFIX + "/", headers={"Cookie": "outcrop_rater=e30.forged"})
    with urllib.request.urlopen(request) as response:
        assert response.url.endswith(PREFIX + "/sign-in") and "Sign in to rate" in response.read().decode()

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            for rater, native in (("alice", False), ("bob", True)):
                context = browser.new_context()
                page = context.new_page()
                page.goto(endpoint + PREFIX + "/")
                assert page.url.endswith("/sign-in")
                expect(page.locator("#kid")).to_be_focused()  # autofocus; keys typed before it would be lost
                page.keyboard.type(keys[rater].access_key_id)
                page.keyboard.press("Tab")
                page.keyboard.type("wrong secret")
                page.keyboard.press("Enter")
                expect(page.get_by_role("alert")).to_contain_text("do not match an active key")
                expect(page.locator("#kid")).to_have_value(keys[rater].access_key_id)  # kept; the secret has focus
                expect(page.locator("#sec")).to_be_focused()
                page.keyboard.type(keys[rater].secret)
                with page.expect_navigation():
                    page.keyboard.press("Enter")
                cookie = next(c for c in context.cookies() if c["name"] == "outcrop_rater")
                assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"  # so a job link from a mail arrives signed in
                expect(page.get_by_role("heading", name="Your evaluation jobs")).to_be_visible()
                expect(page.locator("table")).to_contain_text("base-vs-tuned")
                expect(page.locator("table a").first).to_be_focused()
                with page.expect_navigation():
                    page.keyboard.press("Enter")
                expect(page.get_by_text("Ignore their length.")).to_be_visible()

                if rater == "alice":  # bad input re-renders the form with a message (browsers stop it earlier)
                    task_id = page.locator("input[name=task]").input_value()
                    answer = page.request.post(page.url, form={"task": task_id, "m0": "2", "m1.1": "3"})
                    assert answer.status == 400
                    assert "Fluency: choose a rating from 1 to 5 for Response 2" in answer.text()
                    assert A not in answer.text() and B not in answer.text()  # blind, even in errors

                for number, (plan, order) in enumerate(zip(PLAN[rater], orders, strict=True), start=1):
                    expect(page.get_by_text(f"Item {number} of 3")).to_be_visible()
                    first_model = min(order, key=order.get)
                    better, fluency, pick = _keys_for(plan, first_model, order)
                    expect(page.locator("input[name=m0]").first).to_be_focused()  # the first question
                    _pick(page, better, native)
                    for option in fluency:
                        _pick(page, option, native)
                    if native:
                        _pick(page, pick, native=True)
                        page.keyboard.press("Shift+Tab")  # back onto the chosen radio: Enter submits from there
                        submit = "Enter"
                    else:
                        page.keyboard.press(str(pick))  # now in the comment box
                        page.keyboard.type(f"item {number} by keyboard")
                        submit = "Control+Enter"
                    with page.expect_navigation():
                        page.keyboard.press(submit)
                    expect(page.get_by_role("status")).to_have_text("Saved.")

                expect(page.locator("#done")).to_have_text("You have rated every item that needs you. Thank you!")
                expect(page.get_by_role("link", name="Back to your evaluation jobs")).to_be_focused()
                page.keyboard.press("Shift+Tab")
                expect(page.get_by_role("button", name="Sign out")).to_be_focused()
                with page.expect_navigation():
                    page.keyboard.press("Enter")
                assert page.url.endswith("/sign-in")
                assert not [c for c in context.cookies() if c["name"] == "outcrop_rater" and c["value"]]
                page.goto(endpoint + PREFIX + "/")
                assert page.url.endswith("/sign-in")
                job_link = f"{endpoint}{PREFIX}/jobs/{urllib.parse.quote(job, safe='')}"
                page.goto(job_link)  # a job's link, as sent in a mail: sign in, and back to that job
                assert "/sign-in?next=" in page.url
                page.locator("#kid").fill(keys[rater].access_key_id)
                page.locator("#sec").fill(keys[rater].secret)
                with page.expect_navigation():
                    page.locator("#sec").press("Enter")
                assert page.url == job_link
                expect(page.locator("#done")).to_be_visible()
                context.close()
        finally:
            browser.close()

    assert fired == [job]
    with services.db.session() as session:
        ratings = list(session.scalars(select(HumanRatingRow).where(HumanRatingRow.job_arn == job)
                                       .order_by(HumanRatingRow.id)))
    by_rater = {}
    for rating in ratings:
        by_rater.setdefault(rating.rater_arn.rsplit("/", 1)[-1], []).append(rating)
    for rater, plans in PLAN.items():
        assert [r.task_id for r in by_rater[rater]] == [t.task_id for t in tasks]
        assert [r.values for r in by_rater[rater]] == [
            {"Better": better, "Fluency": fluency, "Pick": pick} for better, fluency, pick in plans]
    assert [r.comment for r in by_rater["alice"]] == [f"item {n} by keyboard" for n in (1, 2, 3)]
    assert all(r.comment is None for r in by_rater["bob"])
    with services.db.session() as session:
        assert session.get(EvaluationJobRow, job).status == "InProgress"  # completing it is the hook's job

    [group] = human.aggregate(job)
    metrics = {m["name"]: m for m in group["metrics"]}
    # Better: values 1, 4, 3 (alice), 2, 5, 4 (bob): B's mean preference 19/6, A's 6 - that; A wins 2, B 3, a tie.
    assert metrics["Better"]["scores"] == pytest.approx({A: 17 / 6, B: 19 / 6})
    assert metrics["Better"]["winRates"] == pytest.approx({A: 2 / 6, B: 3 / 6, "tie": 1 / 6})
    # items 0 and 2 are category x (values 1, 3, 2, 4), item 1 is y (4, 5)
    assert metrics["Better"]["byCategory"] == {"x": {A: 3.5, B: 2.5}, "y": {A: 1.5, B: 4.5}}
    assert metrics["Fluency"]["scores"] == pytest.approx({A: 19 / 6, B: 22 / 6})
    assert metrics["Fluency"]["counts"] == {A: 6, B: 6}
    assert metrics["Pick"]["winRates"] == pytest.approx({A: 2 / 6, B: 3 / 6, "tie": 1 / 6})
    assert metrics["Pick"]["scores"] == pytest.approx({A: 2.5 / 6, B: 3.5 / 6})

    # A user outside the work team signs in, sees no job, and gets the job's page as one that does not exist.
    carol = iam.create_access_key(f"arn:aws:iam::{account}:user/carol")
    assert human.jobs_for(carol.principal_arn) == []
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))
    form = urllib.parse.urlencode({"access_key_id": carol.access_key_id, "secret_access_key": carol.secret})
    with opener.open(endpoint + PREFIX + "/sign-in", data=form.encode(), timeout=10) as response:
        assert "nothing for you to rate" in response.read().decode()
    with pytest.raises(urllib.error.HTTPError) as refused:
        opener.open(f"{endpoint}{PREFIX}/jobs/{urllib.parse.quote(job, safe='')}", timeout=10)
    page = refused.value.read().decode()
    assert refused.value.code == 404 and "There is no human evaluation job" in page and "base-vs-tuned" not in page


def test_outcrop_serve_answers_the_rating_pages_without_sigv4(tmp_path):
    from tests.conftest import start_server, stop_server

    server = start_server(tmp_path / "data")
    try:
        with urllib.request.urlopen(server.endpoint + PREFIX, timeout=30) as response:
            page = response.read().decode()
            assert response.url.endswith(PREFIX + "/sign-in") and "Sign in to rate" in page
            policy = response.headers["Content-Security-Policy"]
            assert "default-src 'none'" in policy and "script-src 'sha256-" in policy
        status, _, body = server.raw("GET", "/_outcrop/evaluation/elsewhere", sign=False)
        assert status == 404 and body["__type"] == "UnknownOperationException"  # only the prefix leaves Bedrock's door
    finally:
        stop_server(server)
