"""The console in a real browser (Debian's chromium under Playwright), as a new user goes through it: sign in,
chat in the playground with the answer streaming in, fine-tune a tiny model from the form and watch its loss
curve, provision the custom model, open the evaluation report of that provisioned model, be refused a page a
policy does not allow (its menu and forms drawn from that policy), and see a forged form refused.

Each page's screenshot is saved under test-artifacts/console/ (OUTCROP_TEST_ARTIFACTS moves it) for a reviewer.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import pytest

from tests.conftest import register_model, start_server, stop_server
from tests.integration.customization.test_customization import PAIRS, outcrop

CHROMIUM = "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("playwright") is None or not Path(CHROMIUM).is_file(),
    reason=f"needs the playwright package and Debian's chromium at {CHROMIUM}")
ARTIFACTS = Path(os.environ.get("OUTCROP_TEST_ARTIFACTS", Path(__file__).parents[3] / "test-artifacts")) / "console"
CATALOG_ONLY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": ["bedrock:ListFoundationModels", "bedrock:GetFoundationModel"], "Resource": "*"}]}


@pytest.fixture(scope="module")
def site(tmp_path_factory, tiny_model_dir):
    """A server with the tiny model, a bucket of training and evaluation data, a role, and a catalog-only user."""
    server = start_server(tmp_path_factory.mktemp("console-data"))
    try:
        model = register_model(server, "tiny-llama", tiny_model_dir)
        folder = tmp_path_factory.mktemp("console-files")
        (folder / "train.jsonl").write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n"
                                                    for p, c in PAIRS))
        (folder / "prompts.jsonl").write_text("".join(json.dumps({"prompt": p, "referenceResponse": c}) + "\n"
                                                      for p, c in PAIRS[:2]))
        outcrop(server.data_dir, "s3", "mb", "s3://console-data")
        outcrop(server.data_dir, "s3", "cp", str(folder), "s3://console-data/in/", "--recursive")
        role = outcrop(server.data_dir, "iam", "create-role", "--name", "console-role", "--s3-access",
                       "console-data", "--invoke-models").strip()
        outcrop(server.data_dir, "iam", "create-user", "--name", "viewer")
        (folder / "policy.json").write_text(json.dumps(CATALOG_ONLY))
        outcrop(server.data_dir, "iam", "put-user-policy", "--user-name", "viewer", "--policy-name", "catalog",
                "--policy-document", str(folder / "policy.json"))
        key = json.loads(outcrop(server.data_dir, "iam", "create-access-key", "--user-name", "viewer"))
        from tests.helpers import make_tiny_diffusion

        painter = register_model(server, "tiny-painter", make_tiny_diffusion(tmp_path_factory.mktemp("painter")))
        yield server, model, role, (key["AccessKeyId"], key["SecretAccessKey"]), painter
    finally:
        stop_server(server)


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def sign_in(page, endpoint: str, key_id: str, secret: str) -> None:
    page.goto(endpoint + "/console/")
    assert page.url.endswith("/console/sign-in")
    page.get_by_label("Access key ID").fill(key_id)
    page.get_by_label("Secret access key").fill(secret)
    with page.expect_navigation():
        page.get_by_role("button", name="Sign in").click()


def test_from_a_chat_to_a_fine_tuned_provisioned_evaluated_model(site):
    from playwright.sync_api import expect, sync_playwright

    server, model, role, viewer, painter = site
    endpoint = server.endpoint
    key_id, secret = server.root_key()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            page = context.new_page()
            csp_violations: list[str] = []
            page.on("console", lambda m: csp_violations.append(m.text) if "Content Security Policy" in m.text
                    else None)
            missing: list[str] = []  # nothing a page asks for is missing (the favicon included)
            page.on("response", lambda r: missing.append(r.url) if r.status == 404 else None)
            sign_in(page, endpoint, key_id, secret)
            expect(page.get_by_role("heading", name="Outcrop console")).to_be_visible()
            cookie = next(c for c in context.cookies() if c["name"] == "outcrop_console")
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
            shot(page, "01-home")

            page.get_by_role("link", name="Model catalog").first.click()
            expect(page.locator("table")).to_contain_text(model)
            shot(page, "02-catalog")

            # The playground: the answer streams in from ConverseStream, then its token counts and latency.
            page.goto(f"{endpoint}/console/playground?model={model}")
            page.get_by_label("Max tokens").fill("24")
            page.get_by_label("Seed").fill("7")
            page.get_by_label("Message").fill("Hello there")
            expect(page.locator("#code")).to_contain_text("converse_stream")  # "view code": the boto3 call
            page.get_by_role("button", name="Send").click()
            answer = page.locator("[data-pane=A] .turn.assistant")
            expect(page.locator("[data-pane=A] .stats")).to_contain_text("output tokens", timeout=120_000)
            assert answer.inner_text().strip(), "no text streamed in"
            shot(page, "03-playground")

            # Text mode: first token and total both timed by the browser, the server's latency beside them.
            page.get_by_label("Mode", exact=True).select_option("text")
            page.get_by_label("Message").fill("Once upon a time")
            page.get_by_role("button", name="Send").click()
            stats = page.locator("[data-pane=A] .stats")
            expect(stats).to_contain_text("server latency", timeout=60_000)
            first, total = (int(n) for n in
                            re.search(r"first token (\d+) ms · total (\d+) ms", stats.inner_text()).groups())
            assert first <= total

            # Each mode offers models of its kind: embeddings picks an embedding model, and its answer is a vector.
            page.goto(f"{endpoint}/console/playground?mode=embeddings")
            kind = "s => s.selectedOptions[0].parentElement.dataset.kind"
            assert page.get_by_label("Model", exact=True).evaluate(kind) == "embedding"
            page.get_by_label("Message").fill("a lighthouse at dawn")
            page.get_by_role("button", name="Send").click()
            expect(page.locator("[data-pane=A] .turn.assistant")).to_contain_text("dimensions", timeout=120_000)
            shot(page, "03-playground-embeddings")
            page.get_by_label("Mode", exact=True).select_option("chat")  # the list follows the mode
            assert page.get_by_label("Model", exact=True).evaluate(kind) == "text"

            # The playground's image tab: Titan's body through InvokeModel, the PNG drawn in the pane at its size.
            page.goto(f"{endpoint}/console/playground?mode=images&model={painter}")
            page.get_by_label("Seed").fill("7")
            page.get_by_label("Image size").fill("64x48")
            page.get_by_label("Message").fill("a lighthouse at dawn")
            expect(page.locator("#code")).to_contain_text("TEXT_IMAGE")
            page.get_by_role("button", name="Send").click()
            expect(page.locator("[data-pane=A] .stats")).to_contain_text("64x48", timeout=120_000)
            assert page.locator("[data-pane=A] img.generated").evaluate("i => i.complete && i.naturalWidth") == 64
            shot(page, "03-playground-image")

            # Fine-tuning from the form: a bad value shows the API's own message, then the job runs to the end.
            page.goto(f"{endpoint}/console/customization/create")
            page.get_by_label("Base model").select_option(model)
            page.get_by_label("Service role").select_option(role)
            page.get_by_label("Training data (JSONL in S3)").fill("s3://console-data/in/train.jsonl")
            page.get_by_label("Output folder").fill("s3://console-data/out/")
            page.get_by_label("epochCount").fill("0")
            with page.expect_navigation():
                page.get_by_role("button", name="Start the job").click()
            expect(page.get_by_role("alert")).to_contain_text("ValidationException")
            expect(page.get_by_role("alert")).to_contain_text("epochCount")
            shot(page, "04-fine-tuning-form-error")
            page.get_by_label("epochCount").fill("2")
            page.get_by_label("batchSize").fill("2")
            page.get_by_label("learningRate", exact=True).fill("0.005")
            with page.expect_navigation():
                page.get_by_role("button", name="Start the job").click()
            expect(page.locator("[data-line]")).to_contain_text("loss", timeout=240_000)  # live progress
            # Done, the page shows what the job made (it reloads itself once) and its loss curve, drawn by uPlot.
            expect(page.get_by_role("link", name="Provision it")).to_be_visible(timeout=240_000)
            expect(page.locator("[data-job-status]")).to_have_text("Completed")
            expect(page.locator(".chart canvas")).to_be_visible()
            shot(page, "05-fine-tuning-job")

            # Provision the custom model it made.
            with page.expect_navigation():
                page.get_by_role("link", name="Provision it").click()
            page.get_by_label("Name", exact=True).fill("console-pt")
            with page.expect_navigation():
                page.get_by_role("button", name="Buy").click()
            expect(page.locator(".status")).to_have_text("InService", timeout=120_000)  # the page reloads itself
            expect(page.get_by_text("sequences in use now")).to_be_visible()
            throughput_arn = page.locator("dl.facts code").first.inner_text()
            shot(page, "06-provisioned")

            # Evaluate the provisioned model; the console shows the report the job wrote.
            bedrock = server.client("bedrock")
            params = json.dumps({"inferenceConfig": {"maxTokens": 6}})
            job = bedrock.create_evaluation_job(
                jobName="console-eval", roleArn=role, outputDataConfig={"s3Uri": "s3://console-data/eval/"},
                evaluationConfig={"automated": {"datasetMetricConfigs": [{
                    "taskType": "QuestionAndAnswer", "metricNames": ["Outcrop.ROUGE-1"],
                    "dataset": {"name": "prompts",
                                "datasetLocation": {"s3Uri": "s3://console-data/in/prompts.jsonl"}}}]}},
                inferenceConfig={"models": [{"bedrockModel": {"modelIdentifier": throughput_arn,
                                                              "inferenceParams": params}}]})
            page.goto(f"{endpoint}/console/evaluation")
            expect(page.locator("table")).to_contain_text("console-eval")
            page.goto(f"{endpoint}/console/evaluation/jobs/console-eval")
            expect(page.locator(".status").first).to_have_text("Completed", timeout=240_000)
            report = page.frame_locator("iframe.report-frame")
            expect(report.locator("svg").first).to_be_visible()
            page.wait_for_function("""() => {  // the frame grows to the whole report: nothing cut off
                const frame = document.querySelector("iframe.report-frame"), doc = frame.contentDocument;
                return doc && doc.readyState === "complete" && frame.clientHeight >= doc.documentElement.scrollHeight;
            }""")
            assert bedrock.get_evaluation_job(jobIdentifier=job["jobArn"])["status"] == "Completed"
            shot(page, "07-evaluation-report")

            # Every other room opens, draws what it draws, and breaks no CSP rule.
            for number, (path, heading) in enumerate([
                    ("storage/console-data?prefix=in/", "console-data"), ("iam", "IAM"),
                    ("insights", "Insights"), ("knowledge-bases", "Knowledge bases"), ("agents", "Agents"),
                    ("guardrails/create", "Create a guardrail"), ("evaluation/create", "automated evaluation"),
                    ("customization", "Fine-tuning"), ("provisioned", "Provisioned throughput")], start=9):
                response = page.goto(f"{endpoint}/console/{path}")
                assert response.status == 200, path
                expect(page.get_by_role("heading", level=1)).to_contain_text(heading)
                if path == "evaluation/create":  # its role is picked as fine-tuning's is
                    page.get_by_label("Service role").select_option(role)
                shot(page, f"{number:02d}-{path.split('?')[0].replace('/', '-')}")
            expect(page.locator("table")).to_contain_text("console-pt")

            # A forged form (no session token) and an API call without the header are refused.
            forged = page.request.post(f"{endpoint}/console/provisioned/create",
                                       form={"provisionedModelName": "forged", "modelId": model, "modelUnits": "1"})
            assert forged.status == 403 and "security token" in forged.text()
            bare = page.request.get(f"{endpoint}/foundation-models")
            assert bare.status == 403 and bare.headers["x-amzn-errortype"] == "MissingAuthenticationTokenException"
            assert not csp_violations, csp_violations
            assert not missing, missing

            # A user whose policy allows the catalog only: the catalog opens, fine-tuning says why not.
            page.get_by_role("button", name="Sign out").click()
            page.wait_for_url("**/console/sign-in")
            sign_in(page, endpoint, viewer[0], viewer[1])
            # Its menu is what its policy opens; the fine-tuning form is the denied page, not a form it cannot send.
            expect(page.locator("nav a")).to_have_text(["Model catalog", "Playground"])
            response = page.goto(f"{endpoint}/console/customization/create")
            assert response.status == 403
            expect(page.get_by_role("alert")).to_contain_text("bedrock:CreateModelCustomizationJob")
            page.goto(f"{endpoint}/console/models")
            expect(page.locator("table")).to_contain_text(model)
            response = page.goto(f"{endpoint}/console/customization")
            assert response.status == 403
            expect(page.get_by_role("alert")).to_contain_text("bedrock:ListModelCustomizationJobs")
            shot(page, "18-denied")
        finally:
            browser.close()
