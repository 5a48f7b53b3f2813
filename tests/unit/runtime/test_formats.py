"""The provider bodies of Bedrock ids that aliases map to local models: which format a body is read in (by the
id's provider first), what each parses into, and the answers and stream chunks each renders."""

from __future__ import annotations

import base64
import io
import json

import pytest
import torch

from outcrop.errors import ValidationException
from outcrop.inference.scheduler import END_OF_TEXT, LENGTH, STOP_SEQUENCE, Completion
from outcrop.runtime import embeddings, tool_use
from outcrop.runtime.formats import Invocation, bedrock_provider, detect_text_format, human_assistant_turns

NOVA = {"schemaVersion": "messages-v1", "system": [{"text": "Be brief."}],
        "messages": [{"role": "user", "content": [{"text": "Hi"}]}],
        "inferenceConfig": {"maxTokens": 30, "temperature": 0.5, "topP": 0.8, "topK": 20, "stopSequences": ["END"]}}
CLAUDE_TEXT = {"prompt": "\n\nHuman: Hi\n\nAssistant:", "max_tokens_to_sample": 30, "temperature": 0.2,
               "top_p": 0.9, "top_k": 5, "stop_sequences": ["END"]}
COHERE = {"message": "And now?", "preamble": "Be brief.", "max_tokens": 30, "temperature": 0.3, "p": 0.75, "k": 10,
          "stop_sequences": ["END"], "seed": 3,
          "chat_history": [{"role": "USER", "message": "Hi"}, {"role": "CHATBOT", "message": "Hello"}]}
OPENAI_CHAT = {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
               "max_tokens": 30, "temperature": 0.5, "top_p": 0.9, "stop": ["END"]}


def invocation(text: str = "Hello there", reason: str = END_OF_TEXT, stop: str | None = None) -> Invocation:
    completion = Completion(text, 7, 3, reason, stop, 0.01, 0.02)
    return Invocation("alias-v1:0", 7, completion, metrics=lambda: {"inputTokenCount": 7, "outputTokenCount": 3},
                      answer=tool_use.AnswerReader(None, None))


@pytest.mark.parametrize(("model_id", "body", "name"), [
    ("amazon.nova-micro-v1:0", NOVA, "amazon-nova"),
    ("us.amazon.nova-lite-v1:0", {"messages": NOVA["messages"]}, "amazon-nova"),
    ("arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-pro-v1:0", NOVA, "amazon-nova"),
    ("anthropic.claude-v2", CLAUDE_TEXT, "anthropic-text"),
    ("anthropic.claude-instant-v1", {**CLAUDE_TEXT, "anthropic_version": "bedrock-2023-05-31"}, "anthropic-text"),
    ("cohere.command-r-plus-v1:0", COHERE, "cohere-chat"),
    ("ai21.jamba-1-5-large-v1:0", OPENAI_CHAT, "ai21-jamba"),
    ("mistral.mistral-large-2402-v1:0", OPENAI_CHAT, "mistral-chat"),
    ("mistral.mistral-large-2402-v1:0", {"prompt": "[INST] Hi [/INST]", "max_tokens": 5}, "mistral"),
    # The bodies every model takes keep their format under any provider's id.
    ("amazon.nova-micro-v1:0", {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5,
                                "messages": [{"role": "user", "content": "Hi"}]}, "anthropic-messages"),
    ("cohere.command-r-plus-v1:0", {"inputText": "Hi"}, "titan-text"),
    # A local id: by keys.
    ("local.tiny-v1:0", NOVA, "amazon-nova"),
    ("local.tiny-v1:0", CLAUDE_TEXT, "anthropic-text"),
    ("local.tiny-v1:0", COHERE, "cohere-chat"),
])
def test_the_format_follows_the_named_provider_then_the_keys(model_id, body, name):
    assert detect_text_format(body, "meta-llama", model_id).name == name


def test_the_cards_id_decides_where_the_named_id_has_no_provider():
    """An application profile's ARN names no provider; the card it copies (an alias of a Nova id) does."""
    arn = "arn:aws:bedrock:us-east-1:111122223333:application-inference-profile/abc123"
    assert bedrock_provider(arn) == ("", "")
    assert detect_text_format(NOVA, "meta-llama", arn, "amazon.nova-micro-v1:0").name == "amazon-nova"


def test_nova_parses_converse_shapes_and_both_spellings_of_its_settings():
    request = detect_text_format(NOVA, "", "amazon.nova-micro-v1:0").parse(NOVA)
    assert request.system == "Be brief." and request.messages == [{"role": "user", "content": "Hi"}]
    p = request.params
    assert (p.max_tokens, p.temperature, p.top_p, p.top_k, p.stop) == (30, 0.5, 0.8, 20, ("END",))
    legacy = {"messages": NOVA["messages"], "inferenceConfig": {"max_new_tokens": 12, "top_p": 0.5, "top_k": 3}}
    p = detect_text_format(legacy, "", "amazon.nova-micro-v1:0").parse(legacy).params
    assert (p.max_tokens, p.top_p, p.top_k) == (12, 0.5, 3)


@pytest.mark.parametrize(("body", "message"), [
    ({**NOVA, "inferenceConfig": {"maxTokens": 5, "max_new_tokens": 5}}, "same setting"),
    ({**NOVA, "inferenceConfig": {"reasoningConfig": {"type": "enabled"}}}, "extraneous key [reasoningConfig]"),
    ({**NOVA, "schemaVersion": "messages-v2"}, "schemaVersion"),
    ({**NOVA, "messages": [{"role": "user", "content": "Hi"}]}, "messages.0.content"),
    ({**NOVA, "messages": [{"role": "user", "content": [{"video": {}}]}]}, "video"),
    ({**NOVA, "messages": [{"role": "user", "content": [{"image": {"format": "png", "source": {"bytes": "%%"}}}]}]},
     "base64"),
])
def test_nova_refuses_what_it_cannot_read(body, message):
    with pytest.raises(ValidationException, match=message.replace("[", r"\[").replace("]", r"\]")):
        detect_text_format(body, "", "amazon.nova-micro-v1:0").parse(body)


def test_nova_takes_converse_tools_and_base64_images():
    from PIL import Image

    png = io.BytesIO()
    Image.new("RGB", (8, 8)).save(png, "PNG")
    body = {"messages": [{"role": "user", "content": [
        {"image": {"format": "png", "source": {"bytes": base64.b64encode(png.getvalue()).decode()}}}, {"text": "Hi"}]}],
        "toolConfig": {"tools": [{"toolSpec": {"name": "lookup", "description": "Look it up",
                                               "inputSchema": {"json": {"type": "object"}}}}]}}
    request = detect_text_format(body, "", "amazon.nova-lite-v1:0").parse(body)
    assert len(request.images) == 1 and request.tools.names() == ["lookup"]


def test_nova_answers_and_streams_in_its_shapes():
    fmt = detect_text_format(NOVA, "", "amazon.nova-micro-v1:0")
    out = fmt.render(invocation())
    assert out == {"output": {"message": {"role": "assistant", "content": [{"text": "Hello there"}]}},
                   "stopReason": "end_turn", "usage": {"inputTokens": 7, "outputTokens": 3, "totalTokens": 10,
                                                       "cacheReadInputTokenCount": 0, "cacheWriteInputTokenCount": 0}}
    assert fmt.render(invocation(reason=LENGTH))["stopReason"] == "max_tokens"
    assert fmt.render(invocation(reason=STOP_SEQUENCE, stop="END"))["stopReason"] == "stop_sequence"
    chunks = list(fmt.stream(["Hel", "lo"], invocation("Hello")))
    assert [next(iter(c)) for c in chunks] == ["messageStart", "contentBlockDelta", "contentBlockDelta",
                                               "contentBlockStop", "messageStop", "metadata"]
    assert chunks[1]["contentBlockDelta"] == {"delta": {"text": "Hel"}, "contentBlockIndex": 0}
    assert chunks[4] == {"messageStop": {"stopReason": "end_turn"}}
    assert chunks[5]["metadata"]["usage"]["outputTokens"] == 3
    assert chunks[5]["amazon-bedrock-invocationMetrics"]["inputTokenCount"] == 7


def test_claude_text_turns_are_read_into_a_chat():
    system, chat = human_assistant_turns("Be brief.\n\nHuman: Hi\n\nAssistant: Hello\n\nHuman: And?\n\nAssistant:")
    assert system == "Be brief."
    assert chat == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                    {"role": "user", "content": "And?"}]
    _, prefilled = human_assistant_turns("\n\nHuman: Hi\n\nAssistant: Sure,")
    assert prefilled[-1] == {"role": "assistant", "content": "Sure,"}
    for prompt, message in [("Hi", "must start with"), ("\n\nHuman: Hi", "must end with"),
                            ("\n\nHuman: a\n\nHuman: b\n\nAssistant:", "alternate")]:
        with pytest.raises(ValidationException, match=message):
            human_assistant_turns(prompt)


def test_claude_text_parses_answers_and_streams():
    fmt = detect_text_format(CLAUDE_TEXT, "", "anthropic.claude-v2:1")
    request = fmt.parse(CLAUDE_TEXT)
    assert request.messages == [{"role": "user", "content": "Hi"}] and request.prompt is None
    p = request.params
    assert (p.max_tokens, p.temperature, p.top_p, p.top_k, p.stop) == (30, 0.2, 0.9, 5, ("END", "\n\nHuman:"))
    with pytest.raises(ValidationException, match="max_tokens_to_sample is required"):
        fmt.parse({"prompt": CLAUDE_TEXT["prompt"]})
    assert fmt.render(invocation()) == {"completion": "Hello there", "stop_reason": "stop_sequence",
                                        "stop": "\n\nHuman:"}
    assert fmt.render(invocation(reason=LENGTH)) == {"completion": "Hello there", "stop_reason": "max_tokens",
                                                     "stop": None}
    assert fmt.render(invocation(reason=STOP_SEQUENCE, stop="END"))["stop"] == "END"
    chunks = list(fmt.stream(["Hel", "lo"], invocation("Hello")))
    assert chunks[0] == {"completion": "Hel", "stop_reason": None, "stop": None}
    assert chunks[-1]["stop_reason"] == "stop_sequence" and "amazon-bedrock-invocationMetrics" in chunks[-1]


def test_cohere_chat_parses_answers_with_its_history_and_streams():
    fmt = detect_text_format(COHERE, "", "cohere.command-r-plus-v1:0")
    request = fmt.parse(COHERE)
    assert request.system == "Be brief."
    assert request.messages == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                                {"role": "user", "content": "And now?"}]
    p = request.params
    assert (p.max_tokens, p.temperature, p.top_p, p.top_k, p.stop, p.seed) == (30, 0.3, 0.75, 10, ("END",), 3)
    out = fmt.render(invocation("Fine"))
    assert out["text"] == "Fine" and out["finish_reason"] == "COMPLETE"
    assert out["response_id"] and out["generation_id"] and out["meta"]["billed_units"]["output_tokens"] == 3
    assert out["chat_history"] == [*COHERE["chat_history"], {"role": "USER", "message": "And now?"},
                                   {"role": "CHATBOT", "message": "Fine"}]
    assert fmt.render(invocation(reason=LENGTH))["finish_reason"] == "MAX_TOKENS"
    chunks = list(fmt.stream(["Fi", "ne"], invocation("Fine")))
    assert [c["event_type"] for c in chunks] == ["stream-start", "text-generation", "text-generation", "stream-end"]
    assert chunks[-1]["is_finished"] and chunks[-1]["response"]["text"] == "Fine"
    assert chunks[-1]["response"]["generation_id"] == chunks[0]["generation_id"]
    raw = fmt.parse({"message": "<|im_start|>user\nHi", "raw_prompting": True})
    assert raw.prompt == "<|im_start|>user\nHi"


@pytest.mark.parametrize(("field", "value"), [
    ("documents", [{"title": "a", "snippet": "b"}]), ("tools", [{"name": "x"}]), ("search_queries_only", True),
    ("return_prompt", True), ("prompt_truncation", "AUTO_PRESERVE_ORDER"), ("frequency_penalty", 0.5)])
def test_cohere_fields_it_cannot_honour_are_refused_by_name(field, value):
    with pytest.raises(ValidationException, match=f"^{field} is not supported"):
        detect_text_format(COHERE, "", "cohere.command-r-v1:0").parse({**COHERE, field: value})


def test_jamba_and_mistral_chat_parse_and_answer_in_their_shapes():
    for model_id in ("ai21.jamba-1-5-large-v1:0", "mistral.mistral-large-2402-v1:0"):
        request = detect_text_format(OPENAI_CHAT, "", model_id).parse(OPENAI_CHAT)
        assert request.system == "Be brief." and request.messages == [{"role": "user", "content": "Hi"}]
        assert (request.params.max_tokens, request.params.stop) == (30, ("END",))
    jamba = detect_text_format(OPENAI_CHAT, "", "ai21.jamba-1-5-large-v1:0")
    out = jamba.render(invocation())
    assert out["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello there",
                                                       "tool_calls": None}, "finish_reason": "stop"}]
    assert out["usage"] == {"prompt_tokens": 7, "completion_tokens": 3, "total_tokens": 10} and out["id"]
    chunks = list(jamba.stream(["Hel", "lo"], invocation("Hello", LENGTH)))
    assert chunks[1]["choices"][0]["delta"] == {"content": "Hel"}
    assert chunks[-1]["choices"][0]["finish_reason"] == "length" and chunks[-1]["usage"]["total_tokens"] == 10
    with pytest.raises(ValidationException, match="^n is not supported"):
        jamba.parse({**OPENAI_CHAT, "n": 2})
    mistral = detect_text_format(OPENAI_CHAT, "", "mistral.mistral-large-2402-v1:0")
    assert mistral.render(invocation(reason=LENGTH)) == {"choices": [{"index": 0, "message": {
        "role": "assistant", "content": "Hello there", "tool_calls": None}, "stop_reason": "length"}]}
    chunks = list(mistral.stream(["Hel"], invocation("Hel")))
    assert chunks[0]["choices"][0]["message"]["content"] == "Hel" and chunks[-1]["choices"][0]["stop_reason"] == "stop"
    with pytest.raises(ValidationException, match="^tools is not supported"):
        mistral.parse({**OPENAI_CHAT, "tools": [{"type": "function"}]})
    with pytest.raises(ValidationException, match="tool calls and results are not supported"):
        mistral.parse({**OPENAI_CHAT, "messages": [*OPENAI_CHAT["messages"], {"role": "tool", "content": "x"}]})


def test_every_new_answer_is_json():
    for body, model_id in [(NOVA, "amazon.nova-micro-v1:0"), (CLAUDE_TEXT, "anthropic.claude-v2"),
                           (COHERE, "cohere.command-r-plus-v1:0"), (OPENAI_CHAT, "ai21.jamba-1-5-mini-v1:0"),
                           (OPENAI_CHAT, "mistral.mistral-large-2407-v1:0")]:
        fmt = detect_text_format(body, "", model_id)
        fmt.parse(body)
        json.dumps(fmt.render(invocation()))
        json.dumps(list(fmt.stream(["a"], invocation("a"))))


def test_titan_v2_dimensions_pad_exactly_and_cut_with_renormalization():
    vectors = torch.nn.functional.normalize(torch.randn(2, 384), dim=1)
    padded = embeddings.resize(vectors, 1024, True)
    assert padded.shape == (2, 1024) and torch.equal(padded[:, :384], vectors) and not padded[:, 384:].any()
    assert torch.allclose(padded[0] @ padded[1], vectors[0] @ vectors[1])  # cosine similarity unchanged
    cut = embeddings.resize(vectors, 256, True)
    assert cut.shape == (2, 256) and torch.allclose(cut.norm(dim=1), torch.ones(2))
    assert embeddings.resize(vectors, 256, False).norm(dim=1).max() < 1
    request = embeddings.parse({"inputText": "hi", "dimensions": 512})
    assert len(embeddings.render(request, vectors[:1], [3])["embedding"]) == 512
    for ok in (256, 384, 512, 1024, None):
        embeddings.check_dimensions(embeddings.EmbeddingRequest(embeddings.TITAN, ("hi",), ok), 384, "m")
    with pytest.raises(ValidationException, match="dimensions must be one of 256, 512, 1024"):
        embeddings.check_dimensions(embeddings.EmbeddingRequest(embeddings.TITAN, ("hi",), 300), 384, "m")
