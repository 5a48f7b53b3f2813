"""Guardrails through boto3 against a real server: the control plane (versions that do not change when the
DRAFT does, configurations refused by name), and ApplyGuardrail masking, blocking and passing text."""

from __future__ import annotations

import json

import pytest

from tests.integration.security.helpers import error_code, outcrop

BLOCKED_INPUT = "Sorry, I cannot help with that request."
BLOCKED_OUTPUT = "Sorry, the answer held information it may not share."
POLICIES = {
    "wordPolicyConfig": {"wordsConfig": [{"text": "Project Falcon"}],
                         "managedWordListsConfig": [{"type": "PROFANITY"}]},
    "sensitiveInformationPolicyConfig": {
        "piiEntitiesConfig": [{"type": "EMAIL", "action": "ANONYMIZE"},
                              {"type": "CREDIT_DEBIT_CARD_NUMBER", "action": "ANONYMIZE"},
                              {"type": "US_SOCIAL_SECURITY_NUMBER", "action": "BLOCK"},
                              {"type": "IP_ADDRESS", "action": "NONE"}],
        "regexesConfig": [{"name": "ORDER_ID", "pattern": r"order-\d{6}", "action": "ANONYMIZE"}]},
}


@pytest.fixture(scope="module")
def guardrail(server):
    bedrock = server.client("bedrock")
    created = bedrock.create_guardrail(name="support-chat", blockedInputMessaging=BLOCKED_INPUT,
                                       blockedOutputsMessaging=BLOCKED_OUTPUT, **POLICIES)
    assert created["version"] == "DRAFT" and created["guardrailArn"].endswith("guardrail/" + created["guardrailId"])
    return created


def _apply(server, guardrail, text: str, source: str = "OUTPUT", version: str = "DRAFT", **extra) -> dict:
    return server.client("bedrock-runtime").apply_guardrail(
        guardrailIdentifier=guardrail["guardrailId"], guardrailVersion=version, source=source,
        content=[{"text": {"text": text}}], **extra)


def test_personal_information_is_masked_in_an_answer(server, guardrail):
    answer = _apply(server, guardrail, "Write to jane.doe@example.com about order-123456; the card on file is "
                                       "4111 1111 1111 1111 and the server is 10.0.0.7.")
    assert answer["action"] == "GUARDRAIL_INTERVENED"
    assert answer["outputs"] == [{"text": "Write to {EMAIL} about {ORDER_ID}; the card on file is "
                                          "{CREDIT_DEBIT_CARD_NUMBER} and the server is 10.0.0.7."}]
    [assessment] = answer["assessments"]
    found = assessment["sensitiveInformationPolicy"]
    assert {(e["type"], e["match"], e["action"]) for e in found["piiEntities"]} == {
        ("EMAIL", "jane.doe@example.com", "ANONYMIZED"),
        ("CREDIT_DEBIT_CARD_NUMBER", "4111 1111 1111 1111", "ANONYMIZED")}  # the IP is NONE: shown with FULL
    assert [(r["name"], r["match"]) for r in found["regexes"]] == [("ORDER_ID", "order-123456")]
    assert answer["usage"]["sensitiveInformationPolicyUnits"] == 1
    full = _apply(server, guardrail, "The server is 10.0.0.7.", outputScope="FULL")
    assert full["action"] == "NONE" and full["assessments"][0]["sensitiveInformationPolicy"]["piiEntities"] == [
        {"match": "10.0.0.7", "type": "IP_ADDRESS", "action": "NONE", "detected": True}]
    # A card number that fails the Luhn check is not one.
    assert _apply(server, guardrail, "Ticket 4111 1111 1111 1112 is open.")["action"] == "NONE"


def test_words_and_blocked_entities_answer_with_the_blocked_message(server, guardrail):
    asked = _apply(server, guardrail, "What is the launch date of project  falcon?", source="INPUT")
    assert asked["action"] == "GUARDRAIL_INTERVENED" and asked["outputs"] == [{"text": BLOCKED_INPUT}]
    assert asked["assessments"][0]["wordPolicy"]["customWords"] == [
        {"match": "project  falcon", "action": "BLOCKED", "detected": True}]
    rude = _apply(server, guardrail, "That is a shit answer.", source="INPUT")
    assert rude["assessments"][0]["wordPolicy"]["managedWordLists"][0]["type"] == "PROFANITY"
    leaked = _apply(server, guardrail, "Her SSN is 123-45-6789.")
    assert leaked["outputs"] == [{"text": BLOCKED_OUTPUT}]
    assert leaked["assessments"][0]["sensitiveInformationPolicy"]["piiEntities"][0]["action"] == "BLOCKED"
    # Each intervention is in the audit trail: the guardrail, the direction, what it did, and why.
    audited = [json.loads(line) for line in outcrop(server, "audit", "--operation", "GuardrailIntervention",
                                                    "--json").stdout.splitlines()]
    results = {e["result"] for e in audited if e["resource"] == guardrail["guardrailArn"] + ":DRAFT"}
    assert {"INPUT BLOCKED word", "OUTPUT BLOCKED sensitiveInformation"} <= results


def test_clean_text_passes_unchanged(server, guardrail):
    answer = _apply(server, guardrail, "The museum opens at nine and closes at five.")
    assert (answer["action"], answer["outputs"]) == ("NONE", [])
    assert answer["guardrailCoverage"]["textCharacters"]["guarded"] == len(
        "The museum opens at nine and closes at five.")


def test_a_version_keeps_its_policies_when_the_draft_changes(server, guardrail):
    bedrock = server.client("bedrock")
    version = bedrock.create_guardrail_version(guardrailIdentifier=guardrail["guardrailArn"])["version"]
    assert version == "1"
    bedrock.update_guardrail(guardrailIdentifier=guardrail["guardrailId"], name="support-chat",
                             blockedInputMessaging=BLOCKED_INPUT, blockedOutputsMessaging=BLOCKED_OUTPUT,
                             sensitiveInformationPolicyConfig=POLICIES["sensitiveInformationPolicyConfig"])
    question = "Is Project Falcon late?"
    assert _apply(server, guardrail, question, source="INPUT", version="1")["action"] == "GUARDRAIL_INTERVENED"
    assert _apply(server, guardrail, question, source="INPUT")["action"] == "NONE"
    assert "wordPolicy" in bedrock.get_guardrail(guardrailIdentifier=guardrail["guardrailId"], guardrailVersion="1")
    assert "wordPolicy" not in bedrock.get_guardrail(guardrailIdentifier=guardrail["guardrailId"])
    listed = bedrock.list_guardrails(guardrailIdentifier=guardrail["guardrailId"])["guardrails"]
    assert [g["version"] for g in listed] == ["DRAFT", "1"]


def test_bad_configurations_are_named(server):
    bedrock = server.client("bedrock")
    base = {"blockedInputMessaging": "no", "blockedOutputsMessaging": "no"}
    code, _, message = error_code(lambda: bedrock.create_guardrail(
        name="bad-1", **base, sensitiveInformationPolicyConfig={
            "piiEntitiesConfig": [{"type": "SOCIAL_NUMBER", "action": "BLOCK"}]}))
    assert code == "ValidationException" and "SOCIAL_NUMBER" in message
    code, _, message = error_code(lambda: bedrock.create_guardrail(name="bad-2", **base, contentPolicyConfig={
        "filtersConfig": [{"type": "HATE", "inputStrength": "EXTREME", "outputStrength": "HIGH"}]}))
    assert code == "ValidationException" and "EXTREME" in message
    code, _, message = error_code(lambda: bedrock.create_guardrail(name="bad-3", **base, contentPolicyConfig={
        "filtersConfig": [{"type": "HATE", "inputStrength": "HIGH", "outputStrength": "HIGH"}]}))
    assert code == "ValidationException" and "contentPolicyConfig" in message  # not yet: refused, not ignored
    code, _, message = error_code(lambda: bedrock.create_guardrail(
        name="bad-4", **base, sensitiveInformationPolicyConfig={
            "regexesConfig": [{"name": "broken", "pattern": "(unclosed", "action": "BLOCK"}]}))
    assert code == "ValidationException" and "regexesConfig[0].pattern" in message
    assert not [g for g in bedrock.list_guardrails()["guardrails"] if g["name"].startswith("bad-")]


def test_another_account_sees_no_guardrail(server, guardrail):
    created = json.loads(outcrop(server, "iam", "create-account", "--name", "guardrail-outsider").stdout)
    key = (created["AccessKeyId"], created["SecretAccessKey"])
    assert server.client("bedrock", key=key).list_guardrails()["guardrails"] == []
    code, status, _ = error_code(lambda: server.client("bedrock-runtime", key=key).apply_guardrail(
        guardrailIdentifier=guardrail["guardrailArn"], guardrailVersion="DRAFT", source="INPUT",
        content=[{"text": {"text": "hi"}}]))
    assert (code, status) == ("ResourceNotFoundException", 404)


def test_converse_checks_the_input_before_the_model_and_the_answer_after(server, guardrail, tiny_model):
    runtime = server.client("bedrock-runtime", read_timeout=300)
    config = {"guardrailIdentifier": guardrail["guardrailId"], "guardrailVersion": "DRAFT", "trace": "enabled"}
    asked = runtime.converse(modelId=tiny_model, guardrailConfig=config, messages=[
        {"role": "user", "content": [{"text": "Is 123-45-6789 a valid SSN?"}]}])
    assert asked["stopReason"] == "guardrail_intervened" and asked["usage"]["outputTokens"] == 0
    assert asked["output"]["message"]["content"] == [{"text": BLOCKED_INPUT}]
    [assessment] = asked["trace"]["guardrail"]["inputAssessment"].values()
    assert assessment["sensitiveInformationPolicy"]["piiEntities"][0]["action"] == "BLOCKED"
    # Only the guardContent block is checked when there is one: the number outside it passes.
    passed = runtime.converse(modelId=tiny_model, guardrailConfig=config, inferenceConfig={"maxTokens": 8},
                              messages=[{"role": "user", "content": [
                                  {"text": "About 123-45-6789: "}, {"guardContent": {"text": {"text": "hello"}}}]}])
    assert passed["stopReason"] != "guardrail_intervened" and passed["usage"]["outputTokens"] > 0
    # The answer is checked: a guardrail that masks every word of an answer masks the tiny model's.
    masking = server.client("bedrock").create_guardrail(
        name="mask-answers", blockedInputMessaging="no", blockedOutputsMessaging="no",
        sensitiveInformationPolicyConfig={"regexesConfig": [
            {"name": "WORD", "pattern": r"\S+", "action": "ANONYMIZE", "inputEnabled": False}]})
    config = {"guardrailIdentifier": masking["guardrailArn"], "guardrailVersion": "DRAFT"}
    question = [{"role": "user", "content": [{"text": "Say something."}]}]
    answer = runtime.converse(modelId=tiny_model, guardrailConfig=config, messages=question,
                              inferenceConfig={"maxTokens": 12})
    text = answer["output"]["message"]["content"][0]["text"]
    assert answer["stopReason"] == "guardrail_intervened" and set(text.split()) == {"{WORD}"}
    assert "trace" not in answer  # trace was not asked for
    events = list(runtime.converse_stream(modelId=tiny_model, guardrailConfig=config, messages=question,
                                          inferenceConfig={"maxTokens": 12})["stream"])
    deltas = [e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e]
    assert len(deltas) == 1 and set(deltas[0].split()) == {"{WORD}"}
    assert [e["messageStop"]["stopReason"] for e in events if "messageStop" in e] == ["guardrail_intervened"]
    code, _, message = error_code(lambda: runtime.converse_stream(
        modelId=tiny_model, messages=question, guardrailConfig={**config, "streamProcessingMode": "async"}))
    assert code == "ValidationException" and "async" in message


def test_guardrails_inside_invoke_model_are_refused_until_they_run_there(server, guardrail):
    code, _, message = error_code(lambda: server.client("bedrock-runtime").invoke_model(
        modelId="huggingface.smollm2-135m-instruct-v1:0", body=b"{}", guardrailIdentifier=guardrail["guardrailId"],
        guardrailVersion="DRAFT"))
    assert code == "ValidationException" and "ApplyGuardrail" in message


def test_a_guardrail_config_without_its_identifier_is_named(server, tiny_model):
    code, _, message = error_code(lambda: server.client("bedrock-runtime").converse(
        modelId=tiny_model, messages=[{"role": "user", "content": [{"text": "hi"}]}],
        guardrailConfig={"trace": "enabled"}))
    assert code == "ValidationException" and "guardrailConfig.guardrailIdentifier" in message
