"""The pages rendered from outcrop/web's templates: user text with markup shows as text in every page type."""

from __future__ import annotations

import re

import pytest

from outcrop.api import rating
from outcrop.evaluation.human.items import Shown, TaskView
from outcrop.evaluation.human.methods import CHOICE, THUMBS, Metric
from outcrop.web import static, static_hash
from tests.unit.console import conftest as console

EVIL = "<script>alert('x\"&')</script>"
ESCAPED = "&lt;script&gt;alert(&#39;x&#34;&amp;&#39;)&lt;/script&gt;"
SUMMARY = {"jobName": EVIL, "jobArn": f"arn:aws:bedrock:us-east-1:000000000000:evaluation-job/{EVIL}", "needed": 4,
           "ratings": 1, "percent": 25.0, "ratedByYou": 1, "leftForYou": 3, "items": 4, "status": "InProgress",
           "instructions": EVIL}


def _only_the_pages_script(page: str) -> None:
    """The one <script> is rating.js, whose hash the CSP allows; the hostile text is escaped everywhere."""
    assert page.lower().count("<script") == 1 and f"<script>{static('rating.js')}</script>" in page
    assert ESCAPED in page


def test_rater_pages_escape_user_text():
    view = TaskView("t1", "arn", 1, 4, EVIL, EVIL, EVIL, EVIL, EVIL,
                    [Shown("Response 1", "a", EVIL), Shown("Response 2", "b", EVIL)],
                    [Metric(EVIL, EVIL, THUMBS), Metric("pick", "", CHOICE)], ["a", "b"])
    pages = [rating._sign_in_page(EVIL, EVIL),
             rating._page(EVIL, EVIL, f"arn:aws:iam::000000000000:user/{EVIL}", back=True),
             rating._jobs_page("arn:aws:iam::000000000000:user/bob", [SUMMARY]),
             rating._done_page("arn:aws:iam::000000000000:user/bob", dict(SUMMARY, status=EVIL), EVIL),
             rating._task_page("arn:aws:iam::000000000000:user/bob", SUMMARY, view, EVIL, EVIL,
                               {"m0.1": "up", "comment": EVIL})]
    for page in pages:
        _only_the_pages_script(page)
    task = pages[-1]
    assert 'aria-label="&lt;script&gt;alert(&#39;x&#34;&amp;&#39;)&lt;/script&gt;, Response 1"' in task
    assert 'value="up" checked autofocus required' in task
    assert f">{ESCAPED}</textarea>" in task


def test_the_csp_allows_exactly_the_static_script():
    assert rating.SCRIPT_HASH == static_hash("rating.js")


def test_evaluation_report_escapes_user_text():
    from outcrop.evaluation.report import render_html

    metric = {"name": EVIL, "kind": "human", "description": EVIL, "range": [0, 1], "higherIsBetter": True,
              "scores": {EVIL: 0.5}, "counts": {EVIL: 2}, "byCategory": {EVIL: {EVIL: 0.5}, "b": {EVIL: 1.0}},
              "ratingMethod": EVIL, "distribution": {EVIL: {EVIL: 2}}}
    page = render_html({"jobName": EVIL, "jobArn": EVIL, "jobType": EVIL, "status": "Completed",
                        "createdAt": EVIL, "completedAt": None, "models": [EVIL], "evaluatorModel": EVIL,
                        "human": {"flowDefinitionArn": EVIL, "raters": [EVIL], "ratings": 2, "instructions": EVIL},
                        "tasks": [{"taskType": EVIL, "dataset": EVIL, "records": 2, "datasetSource": EVIL,
                                   "metrics": [metric]}]})
    assert "<script" not in page.lower() and ESCAPED in page
    assert page.count("<svg") == 3  # overview, categories, ratings


@pytest.mark.parametrize("domain", [EVIL])
def test_insights_report_escapes_user_text(domain, monkeypatch):
    from outcrop.insights import html

    monkeypatch.setattr(html, "render", lambda report: EVIL)
    report = {"accountId": EVIL, "since": EVIL, "until": EVIL, "groupBy": EVIL, "granularity": "day",
              "currency": "USD", "trend": [],
              "crossDomain": [{"domain": domain, "thumbsUpRate": 0.5, "csat": None, "evaluation": {}}],
              "groups": [{"key": EVIL, "requests": 1,
                          "efficiency": {"latencyMs": {"p50": 1, "p95": 2, "p99": 3}, "cost": 1.0}}]}
    page = html.render_html([report])
    assert "<script" not in page.lower() and ESCAPED in page
    assert page.count("<svg") == 2


# -- the console's pages as a principal's policy draws them (driven through ConsoleApp.handle, no server) --------

#: The console's fixtures (a data dir's services, the app, a signed-in root, users with a policy of their own).
services, app, root, user_browser = console.services, console.app, console.root, console.user_browser
TINY_MODEL = "huggingface.smollm2-135m-instruct-v1:0"
#: Alice: the catalog, and InvokeModel on one model.
ALICE = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["bedrock:ListFoundationModels", "bedrock:GetFoundationModel"], "Resource": "*"},
    {"Effect": "Allow", "Action": "bedrock:InvokeModel",
     "Resource": f"arn:aws:bedrock:*::foundation-model/{TINY_MODEL}"}]}
#: Tuner: the catalog and fine-tuning jobs, starting them from one base model only.
TUNER = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["bedrock:List*", "bedrock:Get*"], "Resource": "*"},
    {"Effect": "Allow", "Action": "bedrock:CreateModelCustomizationJob",
     "Resource": f"arn:aws:bedrock:*::foundation-model/{TINY_MODEL}"}]}


def _menu(page) -> list[str]:
    nav = re.search(r"<nav .*?</nav>", page.body, re.S)
    return re.findall(r'<a href="/console/([^"]+)"', nav.group(0)) if nav else []


def _tiles(page) -> list[str]:
    return re.findall(r'<li><a href="/console/([^"]+)"><strong>', page.body)


def test_the_console_draws_what_the_policy_allows_and_refuses_the_forms_it_does_not(root, user_browser):
    everything = root.get("")
    assert len(_menu(everything)) == 11 and _tiles(everything) == _menu(everything)
    assert 'rel="icon" href="data:image/svg+xml,' in everything.body  # no /favicon.ico asked for (and 404'd)

    alice = user_browser("alice", ALICE)
    home = alice.get("")
    assert _menu(home) == ["models", "playground"] and _tiles(home) == ["models", "playground"]
    for form, action in [("customization/create", "CreateModelCustomizationJob"),
                         ("provisioned/create", "CreateProvisionedModelThroughput"),
                         ("evaluation/create", "CreateEvaluationJob"),
                         ("knowledge-bases/create", "CreateKnowledgeBase"),
                         ("agents/create", "CreateAgent"), ("guardrails/create", "CreateGuardrail")]:
        refused = alice.get(form)  # the denied page, in the API's words, not a form that cannot be sent
        assert refused.status == 403 and f"bedrock:{action}" in refused.errors()[0], form
        assert "<form method=\"post\" action=\"/console/" + form not in refused.body

    tuner = user_browser("tuner", TUNER)  # a Create allowed on one resource: the form, offering that one
    assert "customization" in _menu(tuner.get("")) and "iam" not in _menu(tuner.get(""))
    assert 'href="/console/customization/create"' in tuner.get("customization").body
    assert 'href="/console/evaluation/create"' not in tuner.get("evaluation").body
    form = tuner.get("customization/create")
    assert form.status == 200 and f'<option value="{TINY_MODEL}"' in form.body
    assert 'value="meta.llama3-2-1b-instruct-v1:0"' not in form.body


def test_each_playground_mode_offers_models_of_its_kind_and_the_evaluation_form_picks_its_role(root, services):
    def picked(page) -> tuple[str, str]:
        select = re.search(r'<select id="modelA".*?</select>', page.body, re.S).group(0)
        group = re.search(r'<optgroup label="[^"]*" data-kind="(\w+)">(?:(?!</optgroup>).)*? selected>', select, re.S)
        return group.group(1), re.search(r'<option value="([^"]+)" selected>', select).group(1)

    assert picked(root.get("playground")) == ("text", TINY_MODEL)
    assert picked(root.get("playground?mode=embeddings"))[0] == "embedding"
    assert picked(root.get("playground?mode=images"))[0] == "image"
    assert picked(root.get("playground?model=stability.sd-turbo-v1:0")) == ("image", "stability.sd-turbo-v1:0")
    wrong = root.get(f"playground?model={TINY_MODEL}&mode=embeddings")  # a chat model for embeddings: said so
    assert picked(wrong)[0] == "embedding"
    assert (f"{TINY_MODEL} is a text model, and embeddings needs an embedding model: pick one below."
            in wrong.errors())
    # the reranker answers no chat: it is offered in no mode, nor tried from the catalog
    assert "cross-encoder.ms-marco" not in root.get("playground").body
    assert "playground?model=cross-encoder" not in root.get("models").body

    role = services.iam.create_role(services.iam.default_account(), "evaluator")  # a drop-down in both forms
    for form in ("evaluation/create", "customization/create"):
        page = root.get(form)
        assert f'<select id="roleArn" name="roleArn"><option>{role.arn}</option></select>' in page.body, form
