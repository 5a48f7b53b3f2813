"""The evaluation report: every number reaches the page and the terminal, user data is escaped, charts are SVG."""

from __future__ import annotations

import copy
import json
import math
from html.parser import HTMLParser

import pytest

from outcrop.evaluation.report import (
    better_model,
    format_count,
    format_difference,
    format_interval,
    format_p,
    format_score,
    format_share,
    render_html,
    render_json,
    text_table,
    validate_summary,
)

EVIL = "<script>alert(1)</script>"
BASE = "us.meta.llama3-2-1b-instruct-v1:0"
TUNED = "arn:aws:bedrock:us-east-1:000000000000:custom-model/smollm2/abc&def"


def _metric(name, kind, scores, *, range_=(0, 1), higher=True, counts=None, **extra):
    return {"name": name, "kind": kind, "description": f"{name} as computed", "range": list(range_),
            "higherIsBetter": higher, "scores": scores, "counts": counts or {m: 10 for m in scores},
            "byCategory": {}, **extra}


def _summary(models, tasks, job_type="Automated", evaluator=None, human=None):
    return {"jobName": "eval-job", "jobArn": "arn:aws:bedrock:us-east-1:000000000000:evaluation-job/abc123",
            "jobType": job_type, "status": "Completed", "createdAt": "2024-05-01T10:00:00+00:00",
            "completedAt": "2024-05-01T10:05:00+00:00", "models": models, "evaluatorModel": evaluator,
            "tasks": tasks, "human": human}


@pytest.fixture
def one_model():
    """(a) one model, automated, a task with categories (one of them hostile), a None score, an unbounded metric."""
    accuracy = _metric("Builtin.Accuracy", "automatic", {BASE: 0.8125},
                       byCategory={"science": {BASE: 0.9}, EVIL: {BASE: 0.725}, "empty": {BASE: None}})
    toxicity = _metric("Builtin.Toxicity", "automatic", {BASE: 0.0421}, higher=False)
    bleu = _metric("BLEU", "automatic", {BASE: 23.4567}, range_=(0, 100))
    perplexity = _metric("Perplexity", "automatic", {BASE: 12.345}, range_=(1, None), higher=False)
    robustness = _metric("Builtin.Robustness", "automatic", {BASE: None}, counts={BASE: 0})
    return _summary([BASE], [{"taskType": "QuestionAndAnswer", "dataset": "my<data>set", "records": 1200,
                              "metrics": [accuracy, toxicity, bleu, perplexity, robustness]}])


@pytest.fixture
def two_models():
    """(b) two models, with a judge metric whose verdicts were partly unparseable."""
    correctness = _metric("Builtin.Correctness", "judge", {BASE: 0.61, TUNED: 0.74},
                          counts={BASE: 47, TUNED: 50}, unparseable={BASE: 3, TUNED: 0},
                          byCategory={"a": {BASE: 0.5, TUNED: 0.8}, "b": {BASE: 0.7, TUNED: None}},
                          byCategoryIntervals={"a": {BASE: [0.3125, 0.6875], TUNED: [0.6875, 0.9375]},
                                               "b": {BASE: [0.5625, 0.8125], TUNED: None}},
                          intervals={BASE: [0.5472, 0.6683], TUNED: [0.6911, 0.7932]},
                          comparisons=[{"baseline": BASE, "candidate": TUNED, "difference": 0.13,
                                        "interval": [0.0712, 0.1899], "pValue": 0.0012, "pAdjusted": 0.0048,
                                        "significant": True, "better": TUNED, "test": "paired approximate "
                                        "randomization", "pairs": 47}])
    style = _metric("Custom.Style", "judge", {BASE: 4.25, TUNED: 3.5}, range_=(1, 5),
                    distribution={BASE: {"good": 30, "poor": 20}, TUNED: {"good": 25, "poor": 25}})
    harm = _metric("Builtin.Harmfulness", "judge", {BASE: 0.1, TUNED: 0.05}, higher=False)
    rouge = _metric("ROUGE-L", "automatic", {BASE: 0.333, TUNED: 0.333}, intervals={BASE: [0.2811, 0.3822],
                                                                                      TUNED: None},
                    comparisons=[{"baseline": BASE, "candidate": TUNED, "difference": -0.0004,
                                  "interval": [-0.0561, 0.0533], "pValue": 0.97, "pAdjusted": 1.0,
                                  "significant": False, "better": None, "test": "paired bootstrap", "pairs": 50}])
    summary = _summary([BASE, TUNED], [{"taskType": "Summarization", "dataset": "Builtin.Gigaword", "records": 50,
                                        "metrics": [correctness, style, harm, rouge]}], evaluator="judge-model")
    summary["statistics"] = {"signature": "ci:percentile-bootstrap|n:1000|level:0.9|seed:7", "confidence": 0.9,
                             "resamples": 1000, "seed": 7, "alpha": 0.05, "correction": "Holm over every comparison"}
    return summary


@pytest.fixture
def human():
    """(c) a human comparison job: win rates, distributions, and a thumbs metric."""
    preference = _metric("Preference", "human", {BASE: 0.4, TUNED: 0.45}, ratingMethod="ComparisonChoice",
                         winRates={BASE: 0.4, TUNED: 0.45, "tie": 0.15},
                         distribution={BASE: {"preferred": 8}, TUNED: {"preferred": 9}})
    likert = _metric("Fluency", "human", {BASE: 3.6, TUNED: 4.15}, range_=(1, 5), ratingMethod="IndividualLikertScale",
                     distribution={BASE: {"1": 1, "2": 2, "3": 5, "4": 8, "5": 4},
                                   TUNED: {"1": 0, "2": 1, "3": 3, "4": 7, "5": 9}})
    thumbs = _metric("Helpful", "human", {BASE: 0.55, TUNED: 0.7}, ratingMethod="ThumbsUpDown",
                     distribution={BASE: {"up": 11, "down": 9}, TUNED: {"up": 14, "down": 6}})
    return _summary([BASE, TUNED], [{"taskType": "Custom", "dataset": "team-prompts", "records": 20,
                                     "metrics": [preference, likert, thumbs]}], job_type="Human",
                    human={"flowDefinitionArn": "arn:aws:sagemaker:us-east-1:0:flow-definition/f",
                           "instructions": "Rate <carefully>.\nTake your time.",
                           "raters": ["arn:outcrop:user/alice", "arn:outcrop:user/bob"], "ratings": 120})


class _Checker(HTMLParser):
    """Collects text and tags, and fails on a tag closed out of order (ignoring HTML's void elements)."""

    VOID = {"meta", "br", "img", "hr", "input", "link"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes <{self.stack[-1] if self.stack else None}>"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _parse(page: str) -> _Checker:
    checker = _Checker()
    checker.feed(page)
    checker.close()
    assert checker.stack == [], f"unclosed: {checker.stack}"
    return checker


def _numbers(summary):
    """Every number the report must show, formatted as the report formats it."""
    out = []
    for task in summary["tasks"]:
        out.append(format_count(task["records"]))
        for metric in task["metrics"]:
            out += [format_score(v, metric) for v in metric["scores"].values()]
            out += [format_count(v) for v in metric["counts"].values()]
            out += [format_score(v, metric) for scores in metric["byCategory"].values() for v in scores.values()]
            out += [format_count(v) for v in metric.get("unparseable", {}).values() if v]
            out += [format_share(v) for v in metric.get("winRates", {}).values()]
            out += [format_count(v) for counts in metric.get("distribution", {}).values() for v in counts.values()]
            out += [format_interval(v, metric) for v in metric.get("intervals", {}).values() if v]
            out += [format_interval(v, metric) for by_model in metric.get("byCategoryIntervals", {}).values()
                    for v in by_model.values() if v]
            for comparison in metric.get("comparisons", []):
                out += [format_difference(comparison["difference"], metric),
                        format_interval(comparison["interval"], metric), format_p(comparison["pValue"]),
                        format_p(comparison["pAdjusted"])]
    return out


@pytest.mark.parametrize("name", ["one_model", "two_models", "human"])
def test_html_parses_and_shows_every_number(name, request):
    summary = request.getfixturevalue(name)
    validate_summary(summary)
    page = render_html(summary)
    checker = _parse(page)
    text = "".join(checker.text)
    for number in _numbers(summary):
        assert number in text, number
    assert "eval-job" in text and summary["jobArn"] in text
    # Charts are inline SVG, each with a title and an accessible name; nothing is fetched or run.
    svgs = [attrs for tag, attrs in checker.tags if tag == "svg"]
    assert svgs and all(a.get("role") == "img" and a.get("aria-label") for a in svgs)
    assert page.count("<title>") == len(svgs) + 1
    assert not [t for t, a in checker.tags if t == "script" or a.get("src") or (t == "link" and a.get("href"))]
    assert "<?xml" not in page and "<!DOCTYPE svg" not in page
    assert all(a.get("scope") for t, a in checker.tags if t == "th")
    assert text_table(summary)  # and the terminal view renders the same summary


@pytest.mark.parametrize("name", ["one_model", "two_models", "human"])
def test_text_table_has_the_same_numbers(name, request):
    summary = request.getfixturevalue(name)
    table = text_table(summary)
    for number in _numbers(summary):
        assert number in table, number
    for task in summary["tasks"]:
        for metric in task["metrics"]:
            assert metric["name"] in table


def test_user_data_is_escaped(one_model):
    one_model["models"] = [EVIL]
    task = one_model["tasks"][0]
    for metric in task["metrics"]:
        metric["scores"] = {EVIL: next(iter(metric["scores"].values()))}
        metric["counts"] = {EVIL: 10}
        metric["byCategory"] = {c: {EVIL: v[BASE]} for c, v in metric["byCategory"].items()}
    task["dataset"] = EVIL
    one_model["jobName"] = EVIL
    page = render_html(one_model)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "my&lt;data&gt;set" not in page  # the dataset was replaced...
    text = "".join(_parse(page).text)
    assert EVIL in text  # ...and the hostile strings show as text, not markup


def test_hostile_names_in_the_default_fixture(one_model, human):
    page = render_html(one_model)
    assert "<script>" not in page and "my&lt;data&gt;set" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page  # the category, in its table and its chart
    human_page = render_html(human)
    assert "Rate &lt;carefully&gt;." in human_page and "abc&amp;def" in human_page


def test_dollar_signs_are_not_tex():
    """matplotlib reads `$...$` as mathtext; a category or model id with dollars must still render."""
    metric = _metric("Acc", "automatic", {"$a$": 0.5}, byCategory={"$x^": {"$a$": 0.5}, "$$": {"$a$": 0.25}})
    page = render_html(_summary(["$a$"], [{"taskType": "Custom", "dataset": "d", "records": 2, "metrics": [metric]}]))
    assert "$x^" in page


def test_better_model_is_marked_by_direction(two_models):
    correctness, style, harm, rouge = two_models["tasks"][0]["metrics"]
    models = two_models["models"]
    assert better_model(correctness, models) == TUNED
    assert better_model(style, models) == BASE
    assert better_model(harm, models) == TUNED  # lower is better
    assert better_model(rouge, models) is None  # a tie marks nobody
    assert better_model(correctness, [BASE]) is None
    page = render_html(two_models)
    assert page.count('class="num best"') == 3
    assert "Unparseable judge verdicts" in page and f"{BASE}: 3" in page
    assert f"{TUNED}: 0" not in page  # zero is not worth a note
    lines = text_table(two_models).splitlines()
    assert any("Builtin.Correctness" in line and "0.740 [0.691, 0.793] (n=50) *" in line for line in lines)
    assert any("unparseable" in line and f"{BASE} 3" in line for line in lines)


def test_none_scores_and_empty_categories(one_model):
    page = render_html(one_model)
    assert "n/a" in page
    # byCategory with 3 categories draws a chart; empty byCategory draws no section.
    assert page.count("by category</h3>") == 1
    assert "Not drawn (no upper bound): Perplexity" in page
    one_model["tasks"][0]["metrics"] = [_metric("Only", "automatic", {BASE: None}, counts={BASE: 0})]
    _parse(render_html(one_model))
    one_model["tasks"] = []
    assert "No tasks." in render_html(one_model)


def test_single_category_gets_a_table_but_no_chart(one_model):
    metric = one_model["tasks"][0]["metrics"][0]
    metric["byCategory"] = {"only": {BASE: 0.5}}
    one_model["tasks"][0]["metrics"] = [metric]
    page = render_html(one_model)
    assert "Builtin.Accuracy by category</caption>" in page
    assert page.count("<svg") == 1  # the overview only


def test_human_page_has_win_rates_and_distributions(human):
    page = render_html(human)
    assert "Model against model" in page and "40.0%" in page and "15.0%" in page
    assert page.count("ratings</h3>") == 3
    assert page.count("<svg") == 1 + 1 + 3  # overview, win rates, three distributions
    assert "Rated by ComparisonChoice" in page
    assert "alice" in page and "120" in page


def test_chart_ids_are_unique_across_the_page(two_models):
    import re

    page = render_html(two_models)
    ids = re.findall(r'\bid="([^"]+)"', page)
    assert len(ids) == len(set(ids))


def test_render_json_is_sorted_and_strict(two_models):
    two_models["tasks"][0]["metrics"][0]["scores"][BASE] = math.nan
    data = render_json(two_models)
    assert data.endswith(b"\n")
    loaded = json.loads(data.decode("utf-8"))
    assert loaded["tasks"][0]["metrics"][0]["scores"][BASE] is None
    assert list(loaded) == sorted(loaded)
    assert "NaN" not in data.decode()
    assert "n/a" in render_html(two_models)  # NaN shows as no score, not as "nan"


def test_validate_summary_names_the_field(two_models):
    validate_summary(two_models)
    broken = copy.deepcopy(two_models)
    broken["tasks"][0]["metrics"][1]["kind"] = "vibes"
    with pytest.raises(ValueError, match=r"tasks\[0\]\.metrics\[1\]\.kind"):
        validate_summary(broken)
    broken = copy.deepcopy(two_models)
    broken["models"] = ["a", "b", "c"]
    with pytest.raises(ValueError, match="models"):
        validate_summary(broken)


def test_formats():
    assert format_score(0.5, {"range": [0, 1]}) == "0.500"
    assert format_score(4.256, {"range": [1, 5]}) == "4.26"
    assert format_score(12.346, {"range": [1, None]}) == "12.35"
    assert format_score(None, {"range": [0, 1]}) == "n/a"
    assert format_share(0.125) == "12.5%"
    assert format_count(1200) == "1,200"


def test_same_summary_same_page(two_models):
    assert render_html(two_models) == render_html(copy.deepcopy(two_models))


def test_a_label_that_looks_like_an_attribute_is_left_alone():
    metric = _metric("Acc", "automatic", {"m": 0.5}, byCategory={'x id="y"': {"m": 0.5}, "z": {"m": 0.25}})
    page = render_html(_summary(["m"], [{"taskType": "Custom", "dataset": "d", "records": 2, "metrics": [metric]}]))
    assert 'id="chart2-y"' not in page and '>x id="y"</text>' in page


def test_a_comparison_reads_as_a_verdict_with_its_interval(two_models):
    text = text_table(two_models)
    assert "Scores show [90% intervals]: ci:percentile-bootstrap|n:1000|level:0.9|seed:7" in text
    assert f"Builtin.Correctness: {TUNED[-39:]} is better than {BASE} (" in text.replace("…", "")
    assert "difference +0.130, 90% interval [0.071, 0.190], p = 0.0012, adjusted = 0.0048, on the 47 records " \
        "scored for both" in text
    assert "ROUGE-L: no significant difference between" in text
    page = render_html(two_models)
    checker = _parse(page)
    assert "Is the difference real?" in "".join(checker.text)
    # the forest plot: one drawn chart more than without comparisons
    plain = copy.deepcopy(two_models)
    for metric in plain["tasks"][0]["metrics"]:
        metric.pop("comparisons", None)
    assert page.count("<svg") == render_html(plain).count("<svg") + 1
    broken = copy.deepcopy(two_models)
    broken["tasks"][0]["metrics"][0]["comparisons"][0].pop("pValue")
    with pytest.raises(ValueError, match=r"tasks\[0\]\.metrics\[0\]\.comparisons\[0\]"):
        validate_summary(broken)


def test_a_job_is_completed_when_its_report_is_written(one_model):
    from outcrop.evaluation import outputs
    from outcrop.platform.objectstore import S3Uri

    written = {}

    class Store:
        def put_bytes(self, uri, data):
            written[str(uri)] = data

    one_model["completedAt"] = None  # as the job's summary starts: the answers and scores come after it
    outputs.write_report(Store(), S3Uri.parse("s3://bucket/out/job"), one_model)
    report = json.loads(written["s3://bucket/out/job/report.json"])
    assert report["completedAt"] and report["completedAt"] > report["createdAt"]
