"""Model as judge without a model: rubrics, custom-metric validation, the judge's prompt, the verdict
parser's accept/refuse line, and the accounting of summaries."""

from __future__ import annotations

import tomllib

import pytest

from outcrop.errors import ValidationException
from outcrop.evaluation.judge import (
    BUILTIN_RUBRICS,
    DEFAULT_SCALE,
    NO_REFERENCE,
    RUBRICS_FILE,
    Rubric,
    ScaleItem,
    Verdict,
    builtin_rubric,
    custom_rubric,
    judge,
    judge_messages,
    parse_verdict,
    show_value,
    summarise,
)

JUDGE_METRICS = ["Builtin.Correctness", "Builtin.Completeness", "Builtin.Faithfulness", "Builtin.Helpfulness",
                 "Builtin.Coherence", "Builtin.Relevance", "Builtin.FollowingInstructions",
                 "Builtin.ProfessionalStyleAndTone", "Builtin.Harmfulness", "Builtin.Refusal"]


def float_scale(*values: float) -> list[dict]:
    return [{"definition": f"level {v}", "value": {"floatValue": v}} for v in values]


def definition(**overrides) -> dict:
    base = {"name": "Conciseness", "instructions": "Is {{prediction}} concise for {{prompt}}?",
            "ratingScale": [{"definition": "Wordy: says much more than needed", "value": {"floatValue": 0}},
                            {"definition": "Fair: some padding", "value": {"floatValue": 1}},
                            {"definition": "Concise: nothing superfluous", "value": {"floatValue": 2}}]}
    base.update(overrides)
    return base


# -- rubrics ---------------------------------------------------------------------------------------------


def test_every_bedrock_judge_metric_is_built_in():
    assert set(JUDGE_METRICS) <= set(BUILTIN_RUBRICS)
    for name, rubric in BUILTIN_RUBRICS.items():
        assert rubric.name == name and rubric.numeric and 2 <= len(rubric.scale) <= 10
        assert "{{prompt}}" in rubric.instructions and "{{prediction}}" in rubric.instructions
        assert rubric.description
        values = [item.value for item in rubric.scale]
        assert values == sorted(values) and len(set(values)) == len(values)
        assert rubric.normalise(values[0]) == 0.0 and rubric.normalise(values[-1]) == 1.0


def test_rubrics_say_what_they_measure_and_which_use_the_reference():
    texts = {name: rubric.instructions for name, rubric in BUILTIN_RUBRICS.items()}
    assert "CORRECTNESS" in texts["Builtin.Correctness"] and "COMPLETENESS" in texts["Builtin.Completeness"]
    for name in ("Builtin.Correctness", "Builtin.Completeness", "Builtin.Faithfulness"):
        assert "{{ground_truth}}" in texts[name]
    assert "{{ground_truth}}" not in texts["Builtin.ProfessionalStyleAndTone"]
    assert len({text for text in texts.values()}) == len(texts)


def test_builtin_rubrics_are_the_data_file_and_each_prompt_shows_it_exactly_once():
    """The prose lives in catalog/judge_rubrics.toml (shipped by the `catalog/*.toml` package-data glob);
    every built-in's judge prompt carries its task, its inputs and each scale line exactly once."""
    assert RUBRICS_FILE.parent.name == "catalog" and RUBRICS_FILE.is_file()
    data = tomllib.loads(RUBRICS_FILE.read_text(encoding="utf-8"))
    assert [entry["name"] for entry in data["rubric"]] == list(BUILTIN_RUBRICS)
    assert NO_REFERENCE == data["no_reference"]
    assert [(item.definition, item.value) for item in DEFAULT_SCALE] == [
        (item["definition"], float(item["value"])) for item in data["scales"]["default"]]
    for entry in data["rubric"]:
        rubric = BUILTIN_RUBRICS[entry["name"]]
        assert rubric.description == entry["description"]
        assert rubric.higher_is_better is entry.get("higher_is_better", True)
        scale = data["scales"][entry["scale"]] if isinstance(entry["scale"], str) else entry["scale"]
        assert [(item.definition, item.value) for item in rubric.scale] == [
            (item["definition"], float(item["value"])) for item in scale]
        for reference in ("The answer is 4.", None):
            system, user = judge_messages(rubric, "What is 2+2?", "It is 4.", reference)
            text = user["content"]
            assert system["role"] == "system" and user["role"] == "user"
            assert text.startswith(entry["task"].strip() + "\n\n")
            assert text.count(entry["task"].strip()) == 1
            assert text.count(data["inputs"]["response"].split("{{")[0]) == 1
            assert text.count("<prompt>\nWhat is 2+2?\n</prompt>") == 1
            assert text.count("<response>\nIt is 4.\n</response>") == 1
            with_reference = entry.get("reference", False)
            assert text.count("<reference>\n" + (reference or NO_REFERENCE) + "\n</reference>") == with_reference
            assert "{{" not in text
            for item in scale:
                line = f"- {show_value(float(item['value']))} = {item['definition']}"
                assert text.count(line) == 1 and text.count(item["definition"]) == 1
            values = ", ".join(show_value(float(item["value"])) for item in scale)
            assert text.count(f"Allowed values: {values}.") == 1


def test_harm_like_metrics_are_lower_is_better():
    lower = {name for name, rubric in BUILTIN_RUBRICS.items() if not rubric.higher_is_better}
    assert lower == {"Builtin.Harmfulness", "Builtin.Refusal", "Builtin.Stereotyping"}
    harm = builtin_rubric("Builtin.Harmfulness")
    assert parse_verdict(harm, "Rating: Yes\nReason: it explains how to build a weapon.").score == 1.0


def test_unknown_builtin_names_the_metric():
    with pytest.raises(ValidationException, match="Builtin.Politeness"):
        builtin_rubric("Builtin.Politeness")


def test_normalise_maps_a_float_scale_onto_zero_to_one():
    helpful = builtin_rubric("Builtin.Helpfulness")  # 1..7
    assert helpful.normalise(4) == 0.5
    assert helpful.normalise(8) is None and helpful.normalise(0) is None
    assert helpful.normalise("4") is None and helpful.normalise(True) is None
    custom = custom_rubric(definition(ratingScale=float_scale(-1, 0, 3)))
    assert custom.normalise(0) == 0.25
    single = custom_rubric(definition(ratingScale=float_scale(7)))
    assert single.normalise(7) == 1.0
    strings = custom_rubric(definition(ratingScale=[{"definition": "d", "value": {"stringValue": "good"}}]))
    assert strings.normalise("good") is None


# -- custom metrics --------------------------------------------------------------------------------------


def test_custom_metric_with_float_and_string_scales():
    rubric = custom_rubric(definition())
    assert rubric.name == "Conciseness" and rubric.higher_is_better
    assert [item.value for item in rubric.scale] == [0.0, 1.0, 2.0]
    labels = custom_rubric(definition(ratingScale=[
        {"definition": "The answer is in English", "value": {"stringValue": "English"}},
        {"definition": "The answer is in French", "value": {"stringValue": "French"}}]))
    assert not labels.numeric and [item.value for item in labels.scale] == ["English", "French"]


def test_custom_metric_without_scale_gets_the_default_likert():
    rubric = custom_rubric({"name": "Tone", "instructions": "Rate the tone of {{prediction}}."})
    assert rubric.scale == DEFAULT_SCALE
    assert [item.value for item in rubric.scale] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert parse_verdict(rubric, "Rating: Good").value == 4.0


@pytest.mark.parametrize(("overrides", "field"), [
    ({"name": ""}, "customMetricDefinition.name"),
    ({"name": "has space"}, "customMetricDefinition.name"),
    ({"name": "x" * 64}, "customMetricDefinition.name"),
    ({"name": "Builtin.Mine"}, "customMetricDefinition.name"),
    ({"instructions": "   "}, "customMetricDefinition.instructions"),
    ({"instructions": "x" * 5001}, "customMetricDefinition.instructions"),
    ({"instructions": "Judge {{prediction}} against {{context}}"}, "customMetricDefinition.instructions"),
    ({"ratingScale": []}, "customMetricDefinition.ratingScale"),
    ({"ratingScale": float_scale(*range(11))}, "customMetricDefinition.ratingScale"),
    ({"ratingScale": [{"definition": "", "value": {"floatValue": 1}}]},
     "customMetricDefinition.ratingScale.1.definition"),
    ({"ratingScale": [{"definition": "x" * 101, "value": {"floatValue": 1}}]},
     "customMetricDefinition.ratingScale.1.definition"),
    ({"ratingScale": [{"definition": "a", "value": {}}]}, "customMetricDefinition.ratingScale.1.value"),
    ({"ratingScale": [{"definition": "a", "value": {"floatValue": 1, "stringValue": "x"}}]},
     "customMetricDefinition.ratingScale.1.value"),
    ({"ratingScale": [{"definition": "a", "value": {"stringValue": ""}}]},
     "customMetricDefinition.ratingScale.1.value.stringValue"),
    ({"ratingScale": [{"definition": "a", "value": {"floatValue": True}}]},
     "customMetricDefinition.ratingScale.1.value.floatValue"),
    ({"ratingScale": [{"definition": "a", "value": {"floatValue": float("nan")}}]},
     "customMetricDefinition.ratingScale.1.value.floatValue"),
    ({"ratingScale": [{"definition": "a", "value": {"floatValue": 1}},
                      {"definition": "b", "value": {"stringValue": "x"}}]}, "customMetricDefinition.ratingScale"),
    ({"ratingScale": [{"definition": "a", "value": {"floatValue": 1}},
                      {"definition": "b", "value": {"floatValue": 1.0}}]},
     "customMetricDefinition.ratingScale.2.value"),
    ({"ratingScale": [{"definition": "a", "value": {"stringValue": "Good"}},
                      {"definition": "b", "value": {"stringValue": "good"}}]},
     "customMetricDefinition.ratingScale.2.value"),
    ({"ratingScale": [{"definition": "Same.", "value": {"floatValue": 1}},
                      {"definition": "same", "value": {"floatValue": 2}}]},
     "customMetricDefinition.ratingScale.2.definition"),
    ({"ratingScale": [{"definition": "yes", "value": {"stringValue": "A"}},
                      {"definition": "other", "value": {"stringValue": "Yes"}}]},
     "customMetricDefinition.ratingScale.2.value"),
    ({"extra": 1}, "customMetricDefinition"),
])
def test_bad_custom_metrics_name_the_field(overrides, field):
    with pytest.raises(ValidationException) as caught:
        custom_rubric(definition(**overrides))
    assert field in caught.value.message


def test_custom_metric_errors_carry_the_callers_path():
    where = "evaluationConfig.automated.customMetricConfig.customMetrics.2.customMetricDefinition"
    with pytest.raises(ValidationException, match=r"customMetrics\.2\.customMetricDefinition\.ratingScale"):
        custom_rubric(definition(ratingScale=[]), where)
    with pytest.raises(ValidationException, match="customMetricDefinition must be an object"):
        custom_rubric("not a dict")  # type: ignore[arg-type]


# -- the judge's messages -------------------------------------------------------------------------------


def test_messages_fill_placeholders_and_list_the_allowed_values():
    rubric = builtin_rubric("Builtin.Completeness")
    system, user = judge_messages(rubric, "Name two primes.", "2 and 3.", "2, 3")
    assert system["role"] == "system" and "Rating: <one of the allowed values>" in system["content"]
    assert user["role"] == "user"
    text = user["content"]
    assert "Name two primes." in text and "2 and 3." in text and "<reference>\n2, 3\n</reference>" in text
    assert "{{" not in text
    assert "Allowed values: 1, 2, 3, 4, 5." in text
    assert "- 4 = Generally yes:" in text and 'first line as "Rating: <value>"' in text


def test_missing_reference_is_said_not_left_as_a_placeholder():
    text = judge_messages(builtin_rubric("Builtin.Correctness"), "2+2?", "4", None)[1]["content"]
    assert NO_REFERENCE in text and "{{ground_truth}}" not in text
    assert NO_REFERENCE in judge_messages(builtin_rubric("Builtin.Correctness"), "2+2?", "4", "  ")[1]["content"]


def test_texts_that_look_like_placeholders_are_not_expanded_twice():
    text = judge_messages(builtin_rubric("Builtin.Relevance"), "say {{prediction}}", "I said {{prompt}}",
                          None)[1]["content"]
    assert "say {{prediction}}" in text and "I said {{prompt}}" in text


def test_custom_instructions_get_the_response_when_they_forget_it():
    rubric = custom_rubric({"name": "Brevity", "instructions": "Is it brief? The question was {{ prompt }}.",
                            "ratingScale": [{"definition": "brief", "value": {"stringValue": "yes"}},
                                            {"definition": "long", "value": {"stringValue": "no"}}]})
    text = judge_messages(rubric, "Why?", "Because.", None)[1]["content"]
    assert "The question was Why?." in text and "<response>\nBecause.\n</response>" in text
    assert "Allowed values: yes, no." in text and "- yes = brief" in text


# -- parsing verdicts ------------------------------------------------------------------------------------


LIKERT = builtin_rubric("Builtin.Completeness")  # 1..5, "Not at all" .. "Yes"


@pytest.mark.parametrize(("text", "value"), [
    ("Rating: 4\nReason: covers both parts.", 4.0),
    ("rating: 4", 4.0),
    ("RATING: 2", 2.0),
    ("**Rating:** 4", 4.0),
    ("**Rating: 4**", 4.0),
    ("Rating: **4**.", 4.0),
    ("Rating: 4.", 4.0),
    ("Rating: 4.0", 4.0),
    ("Rating: 4/5", 4.0),
    ("Rating: 4 / 5", 4.0),
    ("Rating: 4 out of 5", 4.0),
    ("Rating: [4]", 4.0),
    ("Rating: \"4\"", 4.0),
    ("Rating = 3", 3.0),
    ("Rating 3", 3.0),
    ("Rating is 3", 3.0),
    ("Rating (1-5): 3", 3.0),
    ("Final rating: 5", 5.0),
    ("## Score: 1", 1.0),
    ("- Rating: 1", 1.0),
    ("Rating: 4 - minor part missing", 4.0),
    ("Rating: 4 (Generally yes)", 4.0),
    ("Rating:\n4\nReason: fine", 4.0),
    ("Reason: it answers everything.\nRating: 5", 5.0),
    ("Rating: 4\nReason: fine.\nRating: 4", 4.0),
    ("4", 4.0),
    ("4.\nThe response covers most of it.", 4.0),
    ("**4/5**\nReason: good", 4.0),
    ("Rating: Generally yes", 4.0),
    ("Rating: generally YES.", 4.0),
    ("Rating: Generally yes: it addresses nearly everything, with a minor part missing", 4.0),
    ("Rating: Neutral/Mixed", 3.0),
    ("Rating: Not generally, it skips the second question", 2.0),
    ("Rating: Not at all", 1.0),
    ("Rating: Yes", 5.0),
    ("Yes", 5.0),
    ("<answer>Not generally</answer>", 2.0),
    ("  \n\nRating: 3  ", 3.0),
])
def test_parser_accepts_what_small_models_write(text, value):
    verdict = parse_verdict(LIKERT, text)
    assert verdict.value == value, text
    assert verdict.score == (value - 1) / 4
    assert verdict.raw == text


@pytest.mark.parametrize("text", [
    "",
    "   \n ",
    "The response is quite good overall.",
    "I would give it a 4.",
    "Rating: 6",
    "Rating: 0",
    "Rating: -1",
    "Rating: 3.5",
    "Rating: 8/10",
    "Rating: 4/10",
    "Rating: 4 or 5",
    "Rating: 3-4",
    "Rating: 3 to 4",
    "Rating: 4, 5",
    "Rating: 4 5",
    "Rating: 2 + 2 is 5",  # SmolLM2 echoing the response it judged
    "Rating: 4 because it covers most",
    "Rating: 4\nRating: 5",
    "Rating: 4\nReason: fine\n\nRating: 2\nReason: not fine",
    "5\nRating: 4",
    "Rating: 4 (Not at all)",
    "Rating: excellent",
    "Rating: yes and no",
    "Rating: N/A",
    "Rating:",
    "Rating: 4\nRating: great",
    "Rating: four",
    "4 apples",
    "<rating>4</rating>\nRating: 3",
])
def test_parser_refuses_what_it_would_have_to_guess(text):
    verdict = parse_verdict(LIKERT, text)
    assert verdict.value is None and verdict.score is None and verdict.raw == text


def test_parser_on_other_scales():
    correctness = builtin_rubric("Builtin.Correctness")  # 1 incorrect, 2 partially correct, 3 correct
    assert parse_verdict(correctness, "Rating: Partially correct").value == 2.0
    assert parse_verdict(correctness, "Rating: incorrect.").value == 1.0
    assert parse_verdict(correctness, "Correct").value == 3.0
    assert parse_verdict(correctness, "Rating: 3/3").value == 3.0
    assert parse_verdict(correctness, "Rating: 4").value is None

    refusal = builtin_rubric("Builtin.Refusal")  # 0 no, 1 yes
    assert parse_verdict(refusal, "Rating: No").value == 0.0
    assert parse_verdict(refusal, "no.").value == 0.0
    assert parse_verdict(refusal, "Rating: Yes, it declines.").score == 1.0
    assert parse_verdict(refusal, "Rating: 1/1").value == 1.0
    assert parse_verdict(refusal, "Rating: 2").value is None
    assert parse_verdict(refusal, "No response was needed").value is None  # prose, not "No"

    labels = custom_rubric(definition(ratingScale=[
        {"definition": "Written in English", "value": {"stringValue": "EN"}},
        {"definition": "Written in French", "value": {"stringValue": "FR"}}]))
    assert parse_verdict(labels, "Rating: fr").value == "FR"
    assert parse_verdict(labels, "Rating: **EN**").value == "EN"
    assert parse_verdict(labels, "Rating: written in french.").value == "FR"
    verdict = parse_verdict(labels, "Rating: DE")
    assert verdict.value is None
    assert parse_verdict(labels, "Rating: EN\nRating: FR").value is None
    assert parse_verdict(labels, "Rating: FR").score is None  # strings have no order, so no score


def test_parser_refuses_a_label_shared_by_two_items():
    rubric = Rubric("Shared", "{{prediction}}", (ScaleItem("Good: short", 1.0), ScaleItem("Good: long", 2.0)))
    assert parse_verdict(rubric, "Rating: Good").value is None
    assert parse_verdict(rubric, "Rating: 2").value == 2.0
    assert parse_verdict(rubric, "Rating: good: long").value == 2.0


def test_parser_reads_custom_number_scales_and_none():
    rubric = custom_rubric(definition(ratingScale=float_scale(0, 0.5, 1)))
    assert parse_verdict(rubric, "Rating: 0.5").value == 0.5
    assert parse_verdict(rubric, "Rating: .5").value is None
    assert parse_verdict(rubric, "Rating: level 0.5").value == 0.5
    assert parse_verdict(rubric, None).value is None  # type: ignore[arg-type]


def test_explanation_is_the_reason():
    verdict = parse_verdict(LIKERT, "Rating: 4\nReason: misses the date.\nIt is otherwise fine.")
    assert verdict.explanation == "misses the date.\nIt is otherwise fine."
    assert parse_verdict(LIKERT, "Rating: 4\nCovers most.").explanation == "Covers most."


# -- running and summarising -------------------------------------------------------------------------------


def test_judge_sends_one_chat_per_item_in_order_and_parses_each():
    seen: list[list[list[dict]]] = []

    def generate(chats):
        seen.append(chats)
        return [f"Rating: {len(c[1]['content']) % 2 + 1 if 'odd' in c[1]['content'] else 5}" for c in chats]

    items = [("p1", "even", None), ("p2", "odd", "ref"), ("p3", "even", None)]
    verdicts = judge(generate, LIKERT, items, batch_size=2)
    assert [len(batch) for batch in seen] == [2, 1]
    assert "<response>\nodd\n</response>" in seen[0][1][1]["content"]
    assert verdicts[0].value == 5.0 and verdicts[2].value == 5.0 and verdicts[1].parsed


def test_judge_defaults_to_one_batch_and_counts_failed_generations():
    calls = []

    def generate(chats):
        calls.append(len(chats))
        return ["Rating: 1", None, "garbage"]

    verdicts = judge(generate, LIKERT, [("a", "b", None)] * 3)
    assert calls == [3]
    assert [v.value for v in verdicts] == [1.0, None, None]
    assert verdicts[1].raw == ""


def test_judge_refuses_a_generator_that_loses_answers():
    with pytest.raises(RuntimeError, match="2 answers for 3"):
        judge(lambda chats: ["Rating: 1"] * 2, LIKERT, [("a", "b", None)] * 3)
    assert judge(lambda chats: [], LIKERT, []) == []


def test_summarise_counts_parsed_and_unparseable():
    texts = ["Rating: 5", "Rating: 4", "Rating: Not at all", "nonsense", "Rating: 9", "Rating: 5"]
    summary = summarise(LIKERT, [parse_verdict(LIKERT, t) for t in texts])
    assert summary["count"] == 4 and summary["unparseable"] == 2
    assert summary["distribution"] == {"1": 1, "2": 0, "3": 0, "4": 1, "5": 2}
    assert summary["mean"] == pytest.approx((1 + 0.75 + 0 + 1) / 4)
    assert sum(summary["distribution"].values()) == summary["count"]


def test_summarise_without_numbers():
    assert summarise(LIKERT, []) == {"mean": None, "count": 0, "unparseable": 0,
                                     "distribution": {"1": 0, "2": 0, "3": 0, "4": 0, "5": 0}}
    assert summarise(LIKERT, [Verdict(None, None, "x")])["mean"] is None
    labels = custom_rubric(definition(ratingScale=[{"definition": "a", "value": {"stringValue": "A"}},
                                                   {"definition": "b", "value": {"stringValue": "B"}}]))
    summary = summarise(labels, [parse_verdict(labels, "Rating: b"), parse_verdict(labels, "B"),
                                 parse_verdict(labels, "?")])
    assert summary == {"mean": None, "count": 2, "unparseable": 1, "distribution": {"A": 0, "B": 2}}
