"""The loop the issue ends with: fine-tune, provision, evaluate the base against the fine-tuned copy with
`outcrop eval`, read the report, then have two colleagues compare the two in the rating pages."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.backends import objects_path
from tests.conftest import register_model, start_server, stop_server
from tests.integration.customization.test_customization import PAIRS, create, jsonl, outcrop, wait
from tests.integration.evaluation.test_human_pages import CHROMIUM, PREFIX, needs_browser
from tests.integration.provisioning.test_provisioning import wait_in_service


@pytest.fixture(scope="module")
def tuned(tmp_path_factory, tiny_model_dir):
    """A server with the tiny base model and a provisioned fine-tuned copy that learned PAIRS."""
    server = start_server(tmp_path_factory.mktemp("compare-data"))
    base = register_model(server, "tiny", tiny_model_dir)
    folder = tmp_path_factory.mktemp("compare-files")
    (folder / "train.jsonl").write_text(jsonl([{"prompt": p, "completion": c} for p, c in PAIRS]))
    (folder / "prompts.jsonl").write_text(jsonl([{"prompt": p, "referenceResponse": c,
                                                  "category": "animals" if i % 2 else "nature"}
                                                 for i, (p, c) in enumerate(PAIRS)]))
    outcrop(server.data_dir, "s3", "mb", "s3://ft-data")
    outcrop(server.data_dir, "s3", "cp", str(folder / "train.jsonl"), "s3://ft-data/train/instructions.jsonl")
    outcrop(server.data_dir, "s3", "cp", str(folder / "prompts.jsonl"), "s3://ft-data/eval/prompts.jsonl")
    role = outcrop(server.data_dir, "iam", "create-role", "--name", "lab", "--s3-access", "ft-data",
                   "--invoke-models").strip()
    bedrock = server.client("bedrock")
    job = wait(bedrock, create(bedrock, base, role, "instructions.jsonl", epochCount="8", learningRate="0.03",
                               loraRank="16", loraAlpha="32"))
    assert job["status"] == "Completed", job.get("failureMessage")
    pt = bedrock.create_provisioned_model_throughput(modelUnits=1, provisionedModelName="tuned",
                                                     modelId=job["outputModelArn"])["provisionedModelArn"]
    assert wait_in_service(bedrock, pt)["status"] == "InService"
    yield server, base, pt, role
    stop_server(server)


def cli(server, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "outcrop", *args, "--data-dir", str(server.data_dir)],
                          capture_output=True, text=True, timeout=timeout, env=server.cli_env())


def test_base_against_fine_tuned_with_the_cli(tuned, tmp_path):
    server, base, pt, role = tuned
    created = cli(server, "eval", "create", "base-vs-tuned", "--endpoint-url", server.endpoint,
                  "--model", base, "--model", pt, "--task", "QuestionAndAnswer",
                  "--dataset", "s3://ft-data/eval/prompts.jsonl",
                  "--metrics", "Builtin.Accuracy,Outcrop.ROUGE-1,Outcrop.Perplexity",
                  "--role-arn", role, "--output", "s3://ft-data/evaluations/", "--max-tokens", "8", "--watch")
    assert created.returncode == 0, created.stderr
    assert "base-vs-tuned: Completed" in created.stdout and "report: s3://ft-data/evaluations/base-vs-tuned/" \
        in created.stdout
    assert "generating" in created.stderr  # the progress bar

    watched = cli(server, "eval", "watch", "base-vs-tuned", "--endpoint-url", server.endpoint)
    assert watched.returncode == 0 and "base-vs-tuned: Completed" in watched.stdout, watched.stderr
    listed = cli(server, "eval", "list", "--endpoint-url", server.endpoint)
    assert "base-vs-tuned" in listed.stdout and f"{base} vs {pt}" in listed.stdout

    report = cli(server, "eval", "report", "base-vs-tuned", "--html", str(tmp_path / "report.html"))
    assert report.returncode == 0, report.stderr
    assert "Outcrop.ROUGE-1" in report.stdout and pt.rsplit("/", 1)[1] in report.stdout
    html = (tmp_path / "report.html").read_text()
    assert "<svg" in html and "animals" in html

    as_json = json.loads(cli(server, "eval", "report", "base-vs-tuned", "--json").stdout)
    [task] = as_json["tasks"]
    scores = {m["name"]: m["scores"] for m in task["metrics"]}
    # The fine-tuned copy learned these answers (a 32-wide model does not yet say them greedily, but it
    # expects them): its perplexity on the references is far below the random base's.
    perplexity = scores["Outcrop.Perplexity"]
    assert perplexity[pt] < 0.5 * perplexity[base], perplexity
    assert set(scores["Outcrop.ROUGE-1"]) == {base, pt}
    # ... and the report says the difference is real: every pair of the 8 goes the same way, so the exact
    # randomization p is 2/256, about 0.008, and 0.023 after Holm over the job's three comparisons.
    metrics = {m["name"]: m for m in task["metrics"]}
    [comparison] = metrics["Outcrop.Perplexity"]["comparisons"]
    assert comparison["baseline"] == base and comparison["candidate"] == pt and comparison["better"] == pt
    assert comparison["difference"] < 0 and comparison["interval"][1] < 0 and comparison["pAdjusted"] < 0.05
    low, high = metrics["Outcrop.Perplexity"]["intervals"][pt]
    assert low <= perplexity[pt] <= high
    assert as_json["statistics"]["correction"].startswith("Holm")
    assert "Is the difference real?" in html and f"{pt.rsplit('/', 1)[1]} is better than" in report.stdout
    folder = objects_path(server.data_dir, "s3://ft-data/evaluations/base-vs-tuned")
    [job_folder] = list(folder.iterdir())
    for model in (base, pt.rsplit("/", 1)[1]):
        [output] = list((job_folder / "models" / model / "taskTypes" / "QuestionAndAnswer" / "datasets" / "prompts")
                        .glob("*_output.jsonl"))
        assert len(output.read_text().splitlines()) == len(PAIRS)


def test_compare_names_the_custom_model_and_finds_no_difference_on_an_unrelated_task(tuned, tmp_path):
    server, base, pt, role = tuned
    unrelated = [("Capital of France?", "Paris"), ("Largest planet?", "Jupiter"), ("Author of Hamlet?", "Shakespeare"),
                 ("Opposite of north?", "South"), ("Freezing point of water?", "Zero degrees"),
                 ("First month?", "January")]
    (tmp_path / "unrelated.jsonl").write_text(jsonl([{"prompt": q, "referenceResponse": a} for q, a in unrelated]))
    outcrop(server.data_dir, "s3", "cp", str(tmp_path / "unrelated.jsonl"), "s3://ft-data/eval/unrelated.jsonl")
    custom = server.client("bedrock").get_provisioned_model_throughput(provisionedModelId=pt)["modelArn"]
    compared = cli(server, "eval", "compare", base, custom, "--endpoint-url", server.endpoint,
                   "--dataset", "s3://ft-data/eval/unrelated.jsonl", "--metrics", "Outcrop.ROUGE-1",
                   "--role-arn", role, "--output", "s3://ft-data/evaluations/", "--max-tokens", "8")
    assert compared.returncode == 0, compared.stderr
    assert "Completed" in compared.stdout and "Scores show [95% intervals]" in compared.stdout
    # Neither model knows these answers: the report must not call their equal failure a difference.
    assert "Outcrop.ROUGE-1: no significant difference" in compared.stdout, compared.stdout
    # The custom model was evaluated through its provisioned throughput.
    assert f"Model 2: {pt}" in compared.stdout


@needs_browser
def test_a_human_comparison_rated_by_two_colleagues(tuned):
    from playwright.sync_api import sync_playwright

    server, base, pt, role = tuned
    keys = {}
    for name in ("ana", "ben"):
        outcrop(server.data_dir, "iam", "create-user", "--name", name)
        key = json.loads(outcrop(server.data_dir, "iam", "create-access-key", "--user-name", name))
        keys[name] = (key["AccessKeyId"], key["SecretAccessKey"])
    flow = outcrop(server.data_dir, "workteam", "create", "reviewers", "--users", "ana,ben",
                   "--workers-per-item", "2").strip()
    created = cli(server, "eval", "create", "side-by-side", "--endpoint-url", server.endpoint,
                  "--model", base, "--model", pt, "--task", "Generation",
                  "--dataset", "s3://ft-data/eval/prompts.jsonl", "--role-arn", role,
                  "--output", "s3://ft-data/evaluations/", "--max-tokens", "8", "--flow-definition", flow,
                  "--rate", "preferred:ComparisonChoice:Which answer is better?", "--rate", "good:ThumbsUpDown",
                  "--instructions", "Pick the answer that a person would give.")
    assert created.returncode == 0, created.stderr
    job_arn = created.stdout.strip()
    bedrock = server.client("bedrock")
    deadline = time.monotonic() + 120
    path = f"/evaluation-jobs/{job_arn.replace(':', '%3A').replace('/', '%2F')}"
    while server.raw("GET", path)[2].get("progress", {}).get("stage") != "awaiting ratings":
        assert time.monotonic() < deadline and bedrock.get_evaluation_job(jobIdentifier=job_arn)["status"] \
            == "InProgress"
        time.sleep(0.5)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            for rater in ("ana", "ben"):
                page = browser.new_page()
                page.goto(server.endpoint + PREFIX + "/")
                page.fill("#kid", keys[rater][0])
                page.fill("#sec", keys[rater][1])
                page.keyboard.press("Enter")
                page.get_by_role("link", name="side-by-side").click()
                page.get_by_text("Pick the answer that a person would give.").wait_for()
                for _ in PAIRS:
                    for group in ("m0", "m1.1", "m1.2"):  # choose a response; thumbs for each response
                        page.locator(f"input[type=radio][name='{group}']").first.check()
                    with page.expect_navigation():
                        page.get_by_role("button", name="Submit rating").click()
                page.locator("#done").wait_for()
                page.close()
        finally:
            browser.close()

    deadline = time.monotonic() + 30
    while (job := bedrock.get_evaluation_job(jobIdentifier=job_arn))["status"] == "InProgress":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert job["status"] == "Completed", job.get("failureMessages")
    summary = json.loads(cli(server, "eval", "report", "side-by-side", "--json").stdout)
    assert summary["human"]["ratings"] == 2 * len(PAIRS) and len(summary["human"]["raters"]) == 2
    metrics = {m["name"]: m for m in summary["tasks"][0]["metrics"]}
    wins = metrics["preferred"]["winRates"]
    assert sum(wins.values()) == pytest.approx(1.0) and set(wins) == {base, pt, "tie"}
    assert metrics["good"]["counts"] == {base: 2 * len(PAIRS), pt: 2 * len(PAIRS)}
    outputs = list(objects_path(server.data_dir, "s3://ft-data/evaluations/side-by-side").rglob("*_output.jsonl"))
    # Bedrock's layout for human jobs: <job>/<id>/datasets/<dataset>/<uuid>_output.jsonl, both models in each line.
    [output] = outputs
    assert output.parent.name == "prompts" and output.parents[1].name == "datasets"
    assert all(len(json.loads(line)["humanEvaluationResult"]["ratings"]) == 2
               and len(json.loads(line)["modelResponses"]) == 2 for line in output.read_text().splitlines())
    assert (Path(output.parents[2]) / "report.html").is_file()
