"""Guardrails in the console: creating one from the form's common policies, its page (the policies told, the
versions), the test panel (ApplyGuardrail with word, PII-pattern and regex policies, which need no model), the
API's errors beside the form, and a denied page."""

from __future__ import annotations

import re

from outcrop.api.console.pages.guardrails import BLOCKED_MESSAGE, create_params


def _create(root, **fields) -> str:
    form = {"name": "support", "blockedInputMessaging": "No, not that.", "blockedOutputsMessaging": BLOCKED_MESSAGE,
            "words": "pineapple\nsecret project", "pii_EMAIL": "ANONYMIZE", "pii_US_SOCIAL_SECURITY_NUMBER": "BLOCK",
            "regexName": "order", "regexPattern": "ORD-[0-9]{6}", "regexAction": "ANONYMIZE", **fields}
    created = root.post("guardrails/create", form)
    assert created.status == 303, created.errors()
    return created.location.rsplit("/", 1)[-1]


def test_the_form_builds_create_guardrail_from_what_is_filled_in():
    params = create_params({
        "name": "g", "blockedInputMessaging": "in", "blockedOutputsMessaging": "out", "topicName": "Investing",
        "topicDefinition": "Advice on where to invest money.", "topicExamples": "Which stocks?\n\nBuy bitcoin?",
        "filter_HATE_input": "HIGH", "filter_HATE_output": "LOW", "filter_INSULTS_input": "NONE",
        "filter_INSULTS_output": "NONE", "words": " darn \n", "profanity": "1", "pii_NAME": "ANONYMIZE",
        "pii_EMAIL": ""})
    assert params["topicPolicyConfig"] == {"topicsConfig": [{"name": "Investing", "type": "DENY",
                                                             "definition": "Advice on where to invest money.",
                                                             "examples": ["Which stocks?", "Buy bitcoin?"]}]}
    assert params["contentPolicyConfig"] == {"filtersConfig": [{"type": "HATE", "inputStrength": "HIGH",
                                                                "outputStrength": "LOW"}]}
    assert params["wordPolicyConfig"] == {"wordsConfig": [{"text": "darn"}],
                                          "managedWordListsConfig": [{"type": "PROFANITY"}]}
    assert params["sensitiveInformationPolicyConfig"] == {"piiEntitiesConfig": [{"type": "NAME",
                                                                                 "action": "ANONYMIZE"}]}
    bare = create_params({"name": "g", "blockedInputMessaging": "in", "blockedOutputsMessaging": "out"})
    assert set(bare) == {"name", "blockedInputMessaging", "blockedOutputsMessaging"}


def test_creating_a_guardrail_and_reading_its_policies(root):
    assert root.get("guardrails/create").status == 200
    gid = _create(root, topicName="Investing", topicDefinition="Advice on where to invest money.",
                  filter_HATE_input="HIGH", filter_HATE_output="MEDIUM", profanity="1")
    listed = root.get("guardrails")
    assert listed.status == 200 and f"/console/guardrails/{gid}" in listed.body and "support" in listed.body
    page = root.get(f"guardrails/{gid}")
    assert page.status == 200
    for shown in ("Investing", "Advice on where to invest money.", "HATE", "“pineapple”", "“secret project”",
                  "The PROFANITY list", "EMAIL", "US_SOCIAL_SECURITY_NUMBER", "ORD-[0-9]{6}", "No, not that."):
        assert shown in page.body, shown
    assert "prompts: ANONYMIZE · answers: ANONYMIZE" in page.body


def test_the_test_panel_shows_the_action_the_masked_text_and_the_findings(root):
    gid = _create(root)
    masked = root.post(f"guardrails/{gid}/apply", {"text": "Mail me at jane@example.com about ORD-123456.",
                                                   "source": "OUTPUT", "guardrailVersion": "DRAFT"})
    assert masked.status == 200 and not masked.errors()
    assert "GUARDRAIL_INTERVENED" in masked.body and "Guardrail masked." in masked.body
    assert "Mail me at {EMAIL} about {order}." in masked.body
    pii = re.search(r"<h3>PII entities</h3>.*?</table>", masked.body, re.S)[0]
    assert "jane@example.com" in pii and "ANONYMIZED" in pii
    assert "ORD-123456" in re.search(r"<h3>Regexes</h3>.*?</table>", masked.body, re.S)[0]
    assert "Mail me at jane@example.com" in masked.body  # the text stays in the form to try again

    blocked = root.post(f"guardrails/{gid}/apply", {"text": "Tell me about the secret project.", "source": "INPUT"})
    assert "Guardrail blocked." in blocked.body and "No, not that." in blocked.body
    words = re.search(r"<h3>Custom words</h3>.*?</table>", blocked.body, re.S)[0]
    assert "secret project" in words and "BLOCKED" in words

    clean = root.post(f"guardrails/{gid}/apply", {"text": "What is the weather like?", "source": "INPUT"})
    assert "<strong>NONE</strong>" in clean.body and "unchanged" in clean.body


def test_versions_are_made_listed_and_tested(root):
    gid = _create(root)
    made = root.post(f"guardrails/{gid}/versions", {"description": "first cut"})
    assert made.status == 303 and made.location == f"/console/guardrails/{gid}?version=1"
    page = root.get(made.location)
    assert "<strong>1</strong> (shown)" in page.body and "first cut" in page.body
    applied = root.post(f"guardrails/{gid}/apply", {"text": "pineapple", "source": "INPUT", "guardrailVersion": "1"})
    assert "Guardrail blocked." in applied.body
    missing = root.post(f"guardrails/{gid}/apply", {"text": "hi", "source": "INPUT", "guardrailVersion": "7"})
    assert missing.status == 404 and missing.errors()[0].startswith("ResourceNotFoundException: ")
    assert "Version 7" in missing.errors()[0]


def test_form_errors_are_the_apis_and_keep_the_values(root):
    bad = root.post("guardrails/create", {"name": "g", "blockedInputMessaging": "in", "blockedOutputsMessaging": "out",
                                          "regexName": "broken", "regexPattern": "ORD-[0-9"})
    assert bad.status == 400 and bad.errors()[0].startswith("ValidationException: ")
    assert "does not compile" in bad.errors()[0] and 'value="ORD-[0-9"' in bad.body
    _create(root)
    taken = root.post("guardrails/create", {"name": "support", "blockedInputMessaging": "in",
                                            "blockedOutputsMessaging": "out"})
    assert taken.errors()[0].startswith("ConflictException: ") and 'value="support"' in taken.body
    prompt_attack = root.post("guardrails/create", {"name": "pa", "blockedInputMessaging": "in",
                                                    "blockedOutputsMessaging": "out",
                                                    "filter_PROMPT_ATTACK_input": "HIGH",
                                                    "filter_PROMPT_ATTACK_output": "HIGH"})
    assert "outputStrength must be NONE for PROMPT_ATTACK" in prompt_attack.errors()[0]
    assert '<option selected>HIGH</option>' in prompt_attack.body
    gid = _create(root, name="other")
    empty = root.post(f"guardrails/{gid}/apply", {"text": "", "source": "SIDEWAYS"})
    assert empty.status == 400 and empty.errors()[0].startswith("ValidationException: ")


def test_deleting_a_guardrail(root):
    gid = _create(root)
    gone = root.post(f"guardrails/{gid}/delete")
    assert gone.status == 303 and gone.location == "/console/guardrails"
    assert root.get(f"guardrails/{gid}").status == 404


def test_a_user_may_test_only_what_its_policy_allows(user_browser, root):
    gid = _create(root)
    reader = user_browser("reader", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["bedrock:ListGuardrails", "bedrock:GetGuardrail"], "Resource": "*"}]})
    assert reader.get(f"guardrails/{gid}").status == 200
    refused = reader.post(f"guardrails/{gid}/apply", {"text": "pineapple", "source": "INPUT"})
    assert refused.status == 403 and "bedrock:ApplyGuardrail" in refused.errors()[0]
    catalog_only = user_browser("catalog-only", {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["bedrock:ListFoundationModels"], "Resource": "*"}]})
    denied = catalog_only.get("guardrails")
    assert denied.status == 403 and "bedrock:ListGuardrails" in denied.body
