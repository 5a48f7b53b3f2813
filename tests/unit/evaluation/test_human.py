"""Human evaluation without HTTP: metric checks, work teams, items, ratings, completion and aggregation."""

from __future__ import annotations

import html
import threading
import urllib.parse
from datetime import UTC, datetime

import pytest

from outcrop.errors import ConflictException, ResourceNotFoundException, ValidationException
from outcrop.evaluation.human.items import Shown, TaskView, answers_to_values, create_tasks, task_count
from outcrop.evaluation.human.methods import Metric, check_custom_metrics, check_values
from outcrop.evaluation.human.service import HumanReview
from outcrop.evaluation.tables import EvaluationJobRow
from tests.helpers import call_rating_pages

A, B = "model-a", "model-b"
METRICS = [
    {"name": "Helpful", "description": "Which helps more?", "ratingMethod": "ComparisonLikertScale"},
    {"name": "Fluent", "description": "Reads well", "ratingMethod": "IndividualLikertScale"},
    {"name": "Pick", "description": "", "ratingMethod": "ComparisonChoice"},
    {"name": "Order", "description": "", "ratingMethod": "ComparisonRank"},
    {"name": "Good", "description": "", "ratingMethod": "ThumbsUpDown"},
]


@pytest.fixture
def account(iam):
    account = iam.create_account("test").principal_arn.split(":")[4]
    for name in ("alice", "bob", "carol"):
        iam.create_user(account, name)
    return account


@pytest.fixture
def human(db, iam):
    return HumanReview(db, iam, "us-east-1")


def user(account: str, name: str) -> str:
    return f"arn:aws:iam::{account}:user/{name}"


def add_job(db, account: str, flow_arn: str, metrics=METRICS, name: str = "job", status: str = "InProgress",
            dataset_configs=None) -> str:
    arn = f"arn:aws:bedrock:us-east-1:{account}:evaluation-job/{name}"
    request = {
        "jobName": name, "jobId": name,
        "evaluationConfig": {"human": {
            "humanWorkflowConfig": {"flowDefinitionArn": flow_arn, "instructions": "Be fair."},
            "customMetrics": metrics,
            "datasetMetricConfigs": dataset_configs or [{"taskType": "Generation", "dataset": {"name": "mine"},
                                                         "metricNames": [m["name"] for m in metrics]}]}},
        "inferenceConfig": {"models": [{"bedrockModel": {"modelIdentifier": A}},
                                       {"bedrockModel": {"modelIdentifier": B}}]},
    }
    now = datetime.now(UTC)
    with db.session() as session:
        session.add(EvaluationJobRow(job_arn=arn, account_id=account, job_name=name, job_type="Human",
                                     status=status, request=request, created_at=now, updated_at=now))
    return arn


def items(count: int, dataset: str = "mine", categories=("x", "y")) -> list[dict]:
    return [{"taskType": "Generation", "dataset": dataset,
             "record": {"prompt": f"prompt {i}", "referenceResponse": "ref", "category": categories[i % 2]},
             "responses": [{"modelIdentifier": A, "response": f"a{i}"}, {"modelIdentifier": B, "response": f"b{i}"}]}
            for i in range(count)]


# -- metrics and values ---------------------------------------------------------------------------


def test_custom_metrics_are_checked_by_method_and_model_count():
    assert [m.rating_method for m in check_custom_metrics(METRICS, 2)] == [m["ratingMethod"] for m in METRICS]
    with pytest.raises(ValidationException, match=r"customMetrics\[0\].ratingMethod 'Stars'"):
        check_custom_metrics([{"name": "x", "ratingMethod": "Stars"}], 1)
    with pytest.raises(ValidationException, match=r"customMetrics\[0\].ratingMethod ComparisonChoice .* exactly two"):
        check_custom_metrics([{"name": "x", "ratingMethod": "ComparisonChoice"}], 1)
    with pytest.raises(ValidationException, match=r"customMetrics\[1\].name: the metric name 'x' is used twice"):
        check_custom_metrics([{"name": "x", "ratingMethod": "ThumbsUpDown"},
                              {"name": "x", "ratingMethod": "IndividualLikertScale"}], 1)
    with pytest.raises(ValidationException, match="at least one"):
        check_custom_metrics([], 1)
    assert check_custom_metrics([{"name": "x", "ratingMethod": "IndividualLikertScale"}], 1)


@pytest.mark.parametrize("method, good, bad, message", [
    ("ThumbsUpDown", {A: "up", B: "down"}, {A: "up", B: "meh"}, r"values.m.model-b must be 'up' or 'down'"),
    ("ThumbsUpDown", {A: "up", B: "down"}, {A: "up"}, "one value per response"),
    ("IndividualLikertScale", {A: 1, B: 5}, {A: 0, B: 5}, r"values.m.model-a must be a whole number from 1 to 5"),
    ("IndividualLikertScale", {A: 1, B: 5}, {A: True, B: 5}, "whole number"),
    ("ComparisonLikertScale", 3, 6, r"values.m must be a whole number from 1 \(the first"),
    ("ComparisonChoice", B, "model-c", "must name the better response's model or be 'tie'"),
    ("ComparisonChoice", "tie", None, "must name"),
    ("ComparisonRank", {A: 1, B: 1}, {A: 2, B: 2}, "ranks start at 1"),
    ("ComparisonRank", {A: 2, B: 1}, {A: 1, B: 3}, "from 1 to 2"),
])
def test_values_are_checked_per_rating_method(method, good, bad, message):
    metrics = [Metric("m", "", method)]
    assert check_values(metrics, [A, B], {"m": good}) == {"m": good}
    with pytest.raises(ValidationException, match=message):
        check_values(metrics, [A, B], {"m": bad})


def test_values_need_every_metric_and_no_other():
    metrics = [Metric("m", "", "ThumbsUpDown")]
    with pytest.raises(ValidationException, match="values.m is missing"):
        check_values(metrics, [A], {})
    with pytest.raises(ValidationException, match="values.other: this item is not rated"):
        check_values(metrics, [A], {"m": {A: "up"}, "other": 1})


def test_answers_on_the_page_map_back_to_models_when_the_order_is_swapped():
    metrics = [Metric(m["name"], "", m["ratingMethod"]) for m in METRICS]
    view = TaskView("t", "j", 1, 1, "Generation", "mine", "p", None, None,
                    [Shown("Response 1", B, "b"), Shown("Response 2", A, "a")], metrics, [A, B])
    answers = {"Helpful": "2", "Fluent": ["5", "1"], "Pick": "1", "Order": ["1", "2"], "Good": ["up", "down"]}
    assert answers_to_values(view, answers) == {
        "Helpful": 4,  # "Response 1 (model B) is better" is 4 on the A-to-B scale
        "Fluent": {B: 5, A: 1}, "Pick": B, "Order": {B: 1, A: 2}, "Good": {B: "up", A: "down"}}
    with pytest.raises(ValidationException, match="Fluent: choose a rating from 1 to 5 for Response 2") as caught:
        answers_to_values(view, {**answers, "Fluent": ["5", ""]})
    assert A not in caught.value.message and B not in caught.value.message  # blind
    with pytest.raises(ValidationException, match="Helpful: choose how much better"):
        answers_to_values(view, {**answers, "Helpful": None})
    with pytest.raises(ValidationException, match="Order: give rank 1"):
        answers_to_values(view, {**answers, "Order": ["2", "2"]})
    with pytest.raises(ValidationException, match="'9' is not a choice for Response 1"):
        answers_to_values(view, {**answers, "Fluent": ["9", "1"]})


# -- work teams ------------------------------------------------------------------------------------


def test_flow_definitions_are_teams_of_existing_users(human, iam, account):
    arn = human.create_flow_definition(account, "raters", ["alice", user(account, "bob"), "alice"], 2)
    assert arn == f"arn:aws:sagemaker:us-east-1:{account}:flow-definition/raters"
    team = human.get_flow_definition(account, "raters")
    assert team.members == [user(account, "alice"), user(account, "bob")] and team.workers_per_item == 2
    assert [t.arn for t in human.list_flow_definitions(account)] == [arn]
    assert human.resolve_flow_definition(account, arn).name == "raters"
    with pytest.raises(ValidationException, match="'dave' does not exist"):
        human.create_flow_definition(account, "other", ["alice", "dave"], 1)
    with pytest.raises(ValidationException, match="from 1 to the team's size \\(1\\)"):
        human.create_flow_definition(account, "other", ["alice"], 2)
    with pytest.raises(ValidationException, match="lowercase"):
        human.create_flow_definition(account, "Bad_Name", ["alice"], 1)
    with pytest.raises(ValidationException, match="another account"):
        human.create_flow_definition(account, "other", ["arn:aws:iam::000000000000:user/alice"], 1)
    with pytest.raises(ConflictException):
        human.create_flow_definition(account, "raters", ["alice"], 1)
    with pytest.raises(ValidationException, match="not a flow definition ARN"):
        human.resolve_flow_definition(account, "raters")
    with pytest.raises(ValidationException, match="another account"):
        human.resolve_flow_definition(account, arn.replace(account, "000000000000"))
    with pytest.raises(ResourceNotFoundException, match="outcrop workteam create nobody"):
        human.resolve_flow_definition(account, arn.replace("raters", "nobody"))
    iam.delete_principal(user(account, "bob"))
    with pytest.raises(ValidationException, match="needs 2 raters per item but only 1"):
        human.resolve_flow_definition(account, arn)


def test_a_team_in_use_is_not_deleted(human, db, account):
    arn = human.create_flow_definition(account, "raters", ["alice"], 1)
    job = add_job(db, account, arn)
    with pytest.raises(ConflictException, match="used by evaluation jobs in progress: job"):
        human.delete_flow_definition(account, "raters")
    with db.session() as session:
        session.get(EvaluationJobRow, job).status = "Stopped"
    human.delete_flow_definition(account, arn)
    with pytest.raises(ResourceNotFoundException):
        human.get_flow_definition(account, "raters")


# -- items and ratings -----------------------------------------------------------------------------


@pytest.fixture
def job(human, db, account):
    flow = human.create_flow_definition(account, "raters", ["alice", "bob"], 2)
    arn = add_job(db, account, flow)
    assert create_tasks(db, arn, items(2), 2) == 2
    return arn


def test_create_tasks_validates_and_shuffles_deterministically(db, job):
    assert task_count(db, job) == 2
    with pytest.raises(ValidationException, match=r"items\[0\].responses need distinct modelIdentifier"):
        create_tasks(db, job, [{**items(1)[0], "responses": [{"modelIdentifier": A, "response": "x"}] * 2}], 1)
    with pytest.raises(ValidationException, match=r"items\[0\].record.prompt is required"):
        create_tasks(db, job, [{**items(1)[0], "record": {}}], 1)
    with pytest.raises(ValidationException, match="ratings_needed"):
        create_tasks(db, job, items(1), 0)
    orders = {tuple(r["shownAs"] for r in task["responses"]) for task in _tasks(db, job)}
    create_tasks(db, job, items(2), 2)  # a restarted job replaces unrated items, in the same order
    assert {tuple(r["shownAs"] for r in task["responses"]) for task in _tasks(db, job)} == orders
    assert all(sorted(o) == [1, 2] for o in orders)


def _tasks(db, job):
    from sqlalchemy import select

    from outcrop.evaluation.tables import HumanTaskRow

    with db.session() as session:
        return [{"responses": t.responses} for t in session.scalars(
            select(HumanTaskRow).where(HumanTaskRow.job_arn == job).order_by(HumanTaskRow.position))]


def _rating(helpful, fluent, pick, order, good):
    return {"Helpful": helpful, "Fluent": dict(zip((A, B), fluent, strict=True)), "Pick": pick,
            "Order": dict(zip((A, B), order, strict=True)), "Good": dict(zip((A, B), good, strict=True))}


RATINGS = {  # item -> rater -> values (hand-made, so the aggregate below can be computed by hand)
    0: {"alice": _rating(1, (5, 3), A, (1, 2), ("up", "down")), "bob": _rating(3, (4, 4), "tie", (1, 1), ("up", "up"))},
    1: {"alice": _rating(5, (2, 5), B, (2, 1), ("down", "up")), "bob": _rating(4, (3, 4), B, (2, 1), ("down", "up"))},
}


def test_raters_rate_each_item_once_and_the_last_rating_completes_the_job(human, db, account, job):
    alice, bob, carol = user(account, "alice"), user(account, "bob"), user(account, "carol")
    fired: list[str] = []
    human.on_complete = fired.append
    assert [j["jobName"] for j in human.jobs_for(alice)] == ["job"] and human.jobs_for(carol) == []
    assert human.progress(job) == {"ratings": 0, "needed": 4, "percent": 0.0}
    first = human.next_task(job, alice)
    assert first.number == 1 and first.total == 2 and first.prompt == "prompt 0" and first.reference == "ref"
    assert {s.model for s in first.shown} == {A, B} and [s.label for s in first.shown] == ["Response 1", "Response 2"]
    # Another team's job reads exactly like one that does not exist: a rater learns nothing of it.
    unknown = job.replace("/job", "/nosuchjob")
    for call in (lambda arn: human.submit(arn, first.task_id, carol, RATINGS[0]["alice"]),
                 lambda arn: human.next_task(arn, carol), lambda arn: human.job_summary(arn, carol)):
        with pytest.raises(ResourceNotFoundException) as other_team:
            call(job)
        with pytest.raises(ResourceNotFoundException) as nowhere:
            call(unknown)
        assert other_team.value.message == nowhere.value.message.replace(unknown, job)
    with pytest.raises(ValidationException, match="values.Helpful"):
        human.submit(job, first.task_id, alice, {**RATINGS[0]["alice"], "Helpful": 0})
    assert human.submit(job, first.task_id, alice, RATINGS[0]["alice"], "  ") == \
        {"ratings": 1, "needed": 4, "percent": 25.0}
    with pytest.raises(ConflictException, match="already rated"):
        human.submit(job, first.task_id, alice, RATINGS[0]["alice"])
    second = human.next_task(job, alice)
    assert second.number == 2
    human.submit(job, second.task_id, alice, RATINGS[1]["alice"], "B is clearer")
    assert human.next_task(job, alice) is None
    assert human.next_task(job, bob).task_id == first.task_id
    human.submit(job, first.task_id, bob, RATINGS[0]["bob"])
    assert fired == []
    summary = human.jobs_for(bob)[0]
    assert (summary["ratings"], summary["needed"], summary["ratedByYou"], summary["leftForYou"]) == (3, 4, 1, 1)
    human.submit(job, second.task_id, bob, RATINGS[1]["bob"])
    assert fired == [job]
    assert human.next_task(job, bob) is None and human.progress(job)["percent"] == 100.0
    assert [r["comment"] for r in human.ratings(job)] == [None, "B is clearer", None, None]
    with db.session() as session:
        session.get(EvaluationJobRow, job).status = "Stopped"
    assert human.next_task(job, bob) is None


def test_a_job_that_is_not_in_progress_takes_no_ratings(human, db, account, job):
    task = human.next_task(job, user(account, "alice"))
    with db.session() as session:
        session.get(EvaluationJobRow, job).status = "Stopping"
    with pytest.raises(ConflictException, match="is Stopping; it takes no more ratings"):
        human.submit(job, task.task_id, user(account, "alice"), RATINGS[0]["alice"])


def test_an_item_with_all_its_ratings_takes_no_more(human, db, account):
    flow = human.create_flow_definition(account, "solo", ["alice", "bob"], 1)
    arn = add_job(db, account, flow, name="solo")
    create_tasks(db, arn, items(2), 1)
    task = human.next_task(arn, user(account, "alice"))
    assert human.next_task(arn, user(account, "bob")).task_id == task.task_id
    human.submit(arn, task.task_id, user(account, "alice"), RATINGS[0]["alice"])
    assert human.next_task(arn, user(account, "bob")).task_id != task.task_id
    with pytest.raises(ConflictException, match="all the ratings it needs"):
        human.submit(arn, task.task_id, user(account, "bob"), RATINGS[0]["bob"])


def test_two_final_ratings_at_once_call_the_hook_once(human, db, account):
    flow = human.create_flow_definition(account, "raters", ["alice", "bob"], 2)
    arn = add_job(db, account, flow)
    create_tasks(db, arn, items(1), 2)
    task = human.next_task(arn, user(account, "alice"))
    calls: list[str] = []
    lock = threading.Lock()

    def hook(job_arn: str) -> None:
        with lock:
            calls.append(job_arn)
        raise ZeroDivisionError("the report could not be written")  # logged: the rating itself stands

    human.on_complete = hook
    start = threading.Barrier(2)
    errors: list[Exception] = []

    def rate(name: str) -> None:
        start.wait()
        try:
            human.submit(arn, task.task_id, user(account, name), RATINGS[0][name])
        except Exception as exc:  # noqa: BLE001 - collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=rate, args=(n,)) for n in ("alice", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and calls == [arn]
    assert human.finish_rated_jobs() == [arn] and calls == [arn, arn]  # a restart finishes what a crash left


# -- aggregation -----------------------------------------------------------------------------------


def test_aggregate_per_metric_model_category_with_win_rates_and_ties(human, account, job):
    tasks = [human.next_task(job, user(account, "alice"))]
    human.submit(job, tasks[0].task_id, user(account, "alice"), RATINGS[0]["alice"])
    tasks.append(human.next_task(job, user(account, "alice")))
    human.submit(job, tasks[1].task_id, user(account, "alice"), RATINGS[1]["alice"])
    for i, task in enumerate(tasks):
        human.submit(job, task.task_id, user(account, "bob"), RATINGS[i]["bob"])
    [group] = human.aggregate(job)
    assert (group["taskType"], group["dataset"]) == ("Generation", "mine")
    metrics = {m["name"]: m for m in group["metrics"]}
    assert list(metrics) == ["Helpful", "Fluent", "Pick", "Order", "Good"]

    # Helpful, ComparisonLikertScale: values 1, 3 (category x), 5, 4 (y); B's score is the mean value,
    # A's the mean of 6 - value; A wins below 3, B above, 3 is a tie.
    helpful = metrics["Helpful"]
    # Each of the 4 ratings is resampled as a unit, so A's and B's scores stay paired (they sum to 6).
    intervals, [comparison] = helpful.pop("intervals"), helpful.pop("comparisons")
    by_category = helpful.pop("byCategoryIntervals")
    assert set(by_category) == {"x", "y"} and by_category["x"][A][0] <= 4.0 <= by_category["x"][A][1]
    assert 1 <= intervals[A][0] <= 11 / 4 <= intervals[A][1] <= 5
    assert comparison["difference"] == 13 / 4 - 11 / 4 and comparison["pairs"] == 4
    assert comparison["interval"][0] <= 0.5 <= comparison["interval"][1]
    assert helpful == {
        "name": "Helpful", "kind": "human", "description": "Which helps more?", "ratingMethod": "ComparisonLikertScale",
        "range": [1, 5], "higherIsBetter": True,
        "scores": {A: 11 / 4, B: 13 / 4}, "counts": {A: 4, B: 4},
        "byCategory": {"x": {A: 4.0, B: 2.0}, "y": {A: 1.5, B: 4.5}},
        "distribution": {A: {"1": 1, "2": 1, "3": 1, "4": 0, "5": 1}, B: {"1": 1, "2": 0, "3": 1, "4": 1, "5": 1}},
        "winRates": {A: 0.25, B: 0.5, "tie": 0.25}}

    fluent = metrics["Fluent"]  # IndividualLikertScale: the mean per model, no win rates
    assert fluent["scores"] == {A: 3.5, B: 4.0} and "winRates" not in fluent
    assert fluent["byCategory"] == {"x": {A: 4.5, B: 3.5}, "y": {A: 2.5, B: 4.5}}
    assert fluent["distribution"][A] == {"1": 0, "2": 1, "3": 1, "4": 1, "5": 1}

    pick = metrics["Pick"]  # ComparisonChoice: A, tie, B, B; a tie is half a win in the score
    assert pick["winRates"] == {A: 0.25, B: 0.5, "tie": 0.25}
    assert pick["scores"] == {A: 0.375, B: 0.625} and pick["range"] == [0, 1]
    assert pick["distribution"] == {A: {"better": 1, "worse": 2, "tie": 1}, B: {"better": 2, "worse": 1, "tie": 1}}

    order = metrics["Order"]  # ComparisonRank: mean rank, lower is better; equal ranks are a tie
    assert order["scores"] == {A: 1.5, B: 1.25} and order["higherIsBetter"] is False and order["range"] == [1, 2]
    assert order["winRates"] == {A: 0.25, B: 0.5, "tie": 0.25}
    assert order["distribution"] == {A: {"1": 2, "2": 2}, B: {"1": 3, "2": 1}}

    good = metrics["Good"]  # ThumbsUpDown: the share of thumbs up
    assert good["scores"] == {A: 0.5, B: 0.75} and good["range"] == [0, 1]
    assert good["distribution"] == {A: {"up": 2, "down": 2}, B: {"up": 3, "down": 1}}
    assert good["byCategory"] == {"x": {A: 1.0, B: 0.5}, "y": {A: 0.0, B: 1.0}}


def test_unrated_metrics_score_none_and_dataset_configs_pick_metrics(human, db, account):
    flow = human.create_flow_definition(account, "raters", ["alice"], 1)
    configs = [{"taskType": "Generation", "dataset": {"name": "one"}, "metricNames": ["Good"]},
               {"taskType": "Generation", "dataset": {"name": "two"}, "metricNames": ["Pick"]}]
    arn = add_job(db, account, flow, dataset_configs=configs)
    create_tasks(db, arn, items(1, "one") + items(1, "two"), 1)
    task = human.next_task(arn, user(account, "alice"))
    assert [m.name for m in task.metrics] == ["Good"]
    human.submit(arn, task.task_id, user(account, "alice"), {"Good": {A: "up", B: "down"}})
    one, two = human.aggregate(arn)
    assert [m["name"] for m in one["metrics"]] == ["Good"] and one["metrics"][0]["scores"] == {A: 1.0, B: 0.0}
    assert two["dataset"] == "two" and two["metrics"][0]["scores"] == {A: None, B: None}
    assert two["metrics"][0]["winRates"] == {A: None, B: None, "tie": None}
    assert two["metrics"][0]["counts"] == {A: 0, B: 0} and two["metrics"][0]["byCategory"] == {}


def test_rating_sessions_are_signed_and_expire():
    from outcrop.api.sessions import Sessions

    sessions = Sessions(b"server secret")
    cookie = sessions.issue("arn:aws:iam::123456789012:user/alice", "AKIAEXAMPLE")
    assert sessions.read(cookie) == ("arn:aws:iam::123456789012:user/alice", "AKIAEXAMPLE")
    payload, mac = cookie.split(".")
    assert sessions.read(payload[:-2] + "xx." + mac) is None
    assert Sessions(b"another secret").read(cookie) is None
    assert sessions.read("garbage") is None and sessions.read("") is None
    assert Sessions(b"server secret", lifetime=-1).read(Sessions(b"server secret", lifetime=-1).issue("a", "k")) is None


def test_unicode_digits_are_not_whole_numbers():
    view = TaskView("t", "j", 1, 1, "Generation", "d", "p", None, None,
                    [Shown("Response 1", A, "a"), Shown("Response 2", B, "b")],
                    [Metric("Helpful", "", "ComparisonLikertScale"), Metric("Fluent", "", "IndividualLikertScale")],
                    [A, B])
    for odd in ("²", "٣", "³", "9" * 5000):  # isdigit() is true of all of them; int() takes none (or dies)
        with pytest.raises(ValidationException, match="is not a choice"):
            answers_to_values(view, {"Helpful": odd, "Fluent": ["3", "3"]})
        with pytest.raises(ValidationException, match="is not a choice"):
            answers_to_values(view, {"Helpful": "3", "Fluent": [odd, "3"]})
    with pytest.raises(ValidationException, match="whole number from 1"):
        check_values(view.metrics, [A, B], {"Helpful": "²", "Fluent": {A: 3, B: 3}})
    assert answers_to_values(view, {"Helpful": " 3 ", "Fluent": ["03", "5"]}) == {"Helpful": 3,
                                                                                   "Fluent": {A: 3, B: 5}}


def test_a_comment_counts_line_breaks_as_the_browser_does(human, account, job):
    """Browsers send a textarea's newlines as CRLF but count each as one character against maxlength."""
    alice = user(account, "alice")
    task = human.next_task(job, alice)
    comment = "line\r\n" * 333 + "x"  # 2332 characters as sent, 1999 as typed
    human.submit(job, task.task_id, alice, RATINGS[0]["alice"], comment)
    assert human.ratings(job)[0]["comment"] == "line\n" * 333 + "x"
    with pytest.raises(ValidationException, match="the limit is 2000"):
        human.submit(job, human.next_task(job, alice).task_id, alice, RATINGS[1]["alice"], "ab\r\n" * 700)


def test_a_deleted_user_leaves_the_team_and_a_new_one_of_that_name_does_not_join(human, iam, db, account, job):
    bob = user(account, "bob")
    task = human.next_task(job, bob)
    iam.delete_principal(bob)
    assert human.jobs_for(bob) == []
    iam.create_user(account, "bob")  # someone else, who happens to be called bob too
    iam.create_access_key(bob)
    assert human.jobs_for(bob) == []
    with pytest.raises(ResourceNotFoundException):
        human.next_task(job, bob)
    with pytest.raises(ResourceNotFoundException):
        human.submit(job, task.task_id, bob, RATINGS[0]["bob"])
    with pytest.raises(ValidationException, match="needs 2 raters per item but only 1 .*new work team"):
        human.resolve_flow_definition(account, human.get_flow_definition(account, "raters").arn)
    newer = human.create_flow_definition(account, "newer", ["alice", "bob"], 2)  # a new team takes the new bob
    assert human.resolve_flow_definition(account, newer).members == [user(account, "alice"), bob]
    assert human.jobs_for(user(account, "alice"))[0]["jobName"] == "job"  # the others keep their place


def test_session_cookies_that_are_not_ascii_are_refused_not_a_crash():
    from outcrop.api.sessions import Sessions

    sessions = Sessions(b"server secret")
    assert sessions.read("abc.\u00ff") is None and sessions.read("\u00ff") is None
    payload, mac = sessions.issue("a", "k").split(".")
    assert sessions.read(payload + "." + mac[:-1] + "\u00e9") is None


# -- the rating pages over ASGI --------------------------------------------------------------------


@pytest.fixture
def pages(human, iam, account, job, tmp_path):
    """(call, keys): call(method, rest, ...) runs one request through RatingApp's ASGI entry point."""
    from outcrop.api.rating import RatingApp

    app = RatingApp(human, iam, tmp_path)
    keys = {name: iam.create_access_key(user(account, name)) for name in ("alice", "carol")}

    def call(method, rest, **request):
        return call_rating_pages(app, method, rest, **request)

    return call, keys


def _sign_in_form(key, **extra):
    return {"access_key_id": key.access_key_id, "secret_access_key": key.secret, **extra}


def test_sign_in_takes_secrets_only_over_https_or_from_loopback(pages, monkeypatch, iam):
    call, keys = pages
    alice = keys["alice"]
    looked_up = []
    authenticate = iam.authenticate_key
    monkeypatch.setattr(iam, "authenticate_key", lambda key_id: looked_up.append(key_id) or authenticate(key_id))
    remote = ("192.0.2.7", 50000)
    status, _, page = call("GET", "/sign-in", client=remote)
    assert status == 200 and "outcrop serve --tls" in page and 'name="secret_access_key"' in page
    status, head, page = call("POST", "/sign-in", client=remote, form=_sign_in_form(alice))
    assert status == 403 and "set-cookie" not in head and looked_up == []
    assert "outcrop serve --tls" in page and "SigV4 or bearer keys are not affected" in page
    assert f'value="{alice.access_key_id}"' in page and alice.secret not in page
    for client in (("127.0.0.1", 1), ("127.8.9.10", 1), ("::1", 1), ("::ffff:127.0.0.1", 1)):
        status, head, page = call("POST", "/sign-in", client=client, form=_sign_in_form(alice))
        assert status == 303 and "outcrop_rater=" in head["set-cookie"] and "Secure" not in head["set-cookie"]
    status, _, page = call("GET", "/sign-in", client=("127.0.0.1", 1))
    assert "outcrop serve --tls" not in page
    for client in (("::ffff:192.0.2.7", 1), ("10.0.0.1", 1), None, ("not-an-address", 1)):
        assert call("POST", "/sign-in", client=client, form=_sign_in_form(alice))[0] == 403
    status, head, _ = call("POST", "/sign-in", client=remote, scheme="https", form=_sign_in_form(alice))
    assert status == 303 and head["set-cookie"].endswith("; Secure")


def test_a_failed_sign_in_waits_on_the_event_loop_not_in_a_worker_thread(pages, monkeypatch):
    import anyio

    call, keys = pages

    def no_sleeping_in_threads(seconds):
        raise AssertionError("time.sleep in a worker thread holds one of the server's few threads")

    waited = []
    real_sleep = anyio.sleep

    async def sleep(seconds):
        waited.append(seconds)
        await real_sleep(0)

    monkeypatch.setattr("time.sleep", no_sleeping_in_threads)
    monkeypatch.setattr("anyio.sleep", sleep)
    status, _, page = call("POST", "/sign-in", form={"access_key_id": keys["alice"].access_key_id,
                                                     "secret_access_key": "wrong"})
    assert status == 401 and "do not match an active key" in page and waited == [0.3]
    assert call("POST", "/sign-in", form=_sign_in_form(keys["alice"]))[0] == 303 and waited == [0.3]


def _cookie(call, key, **form):
    status, head, _ = call("POST", "/sign-in", form=_sign_in_form(key, **form))
    assert status == 303
    return head["set-cookie"].split(";")[0], head["location"]


def test_crafted_input_gets_an_answer_not_a_server_error(pages, human, account, job):
    call, keys = pages
    status, head, _ = call("GET", "/", cookie="outcrop_rater=abc.\u00ff")  # a byte the latin-1 header decodes to ÿ
    assert status == 303 and head["location"].endswith("/sign-in")
    cookie, _ = _cookie(call, keys["alice"])
    here = "/jobs/" + urllib.parse.quote(job, safe="")
    task = human.next_task(job, user(account, "alice"))
    good = {"task": task.task_id, "m0": "3", "m1.1": "3", "m1.2": "3", "m2": "1", "m3.1": "1", "m3.2": "2",
            "m4.1": "up", "m4.2": "up"}
    for field, odd in (("m0", "²"), ("m1.1", "³"), ("m2", "١"), ("m3.1", "9" * 5000)):
        status, _, page = call("POST", here, cookie=cookie, form={**good, field: odd})
        assert status == 400 and "is not a choice" in page
    status, _, page = call("POST", here, cookie=cookie, form=good)
    assert status == 303
    assert call("POST", here, cookie=cookie, form=good, headers=[(b"origin", b"http://[")])[0] == 403


def test_other_teams_jobs_are_not_found_like_jobs_that_do_not_exist(pages, job):
    call, keys = pages
    cookie, _ = _cookie(call, keys["carol"])  # carol is not on the job's team
    status, _, theirs = call("GET", "/jobs/" + urllib.parse.quote(job, safe=""), cookie=cookie)
    missing = job.replace("/job", "/nosuchjob")
    status_missing, _, nothing = call("GET", "/jobs/" + urllib.parse.quote(missing, safe=""), cookie=cookie)
    assert status == status_missing == 404
    assert theirs == nothing.replace(missing, job)
    assert "Be fair" not in theirs and "work team" not in theirs


def test_a_job_link_signs_in_and_comes_back_to_the_job(pages, job):
    from outcrop.api.rating import PREFIX

    call, keys = pages
    path = PREFIX + "/jobs/" + urllib.parse.quote(job, safe="")
    status, head, _ = call("GET", path[len(PREFIX):])  # opened from an email: no cookie yet
    assert status == 303
    location = urllib.parse.urlsplit(head["location"])
    assert location.path == PREFIX + "/sign-in"
    next_path = urllib.parse.parse_qs(location.query)["next"][0]
    assert next_path == path
    status, _, page = call("GET", "/sign-in", query=location.query)
    assert f'<input type="hidden" name="next" value="{html.escape(path)}">' in page
    cookie, where = _cookie(call, keys["alice"], next=next_path)
    assert where == path and "SameSite=Lax" in call("POST", "/sign-in", form=_sign_in_form(keys["alice"]))[1][
        "set-cookie"]
    assert call("GET", path[len(PREFIX):], cookie=cookie)[0] == 200
    for elsewhere in ("//evil.example/", "https://evil.example" + PREFIX + "/", "/elsewhere",
                      PREFIX + "/../../elsewhere", PREFIX + "/%2e%2e/%2E%2E/x", PREFIX + "\\evil",
                      PREFIX + "/\\evil.example", PREFIX + "/x?y", PREFIX + '/"><script>', PREFIX + "/\u00e9"):
        assert _cookie(call, keys["alice"], next=elsewhere)[1] == PREFIX + "/", elsewhere
        assert 'name="next"' not in call("GET", "/sign-in", query=urllib.parse.urlencode({"next": elsewhere}))[2]
