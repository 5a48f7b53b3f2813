"""Images in, through real boto3: Converse and ConverseStream image blocks on a tiny random SmolVLM, and Titan
Multimodal Embeddings' body on a tiny random CLIP. Both are registered in the suite's one server: a server of
their own would cost this module more time than all its tests."""

from __future__ import annotations

import base64
import json
import math
import re

import pytest
from botocore.exceptions import ClientError

from tests.conftest import register_model
from tests.integration.security.helpers import error_code, outcrop
from tests.vision_helpers import make_tiny_clip, make_tiny_vlm, png

SMOLLM2 = "huggingface.smollm2-135m-instruct-v1:0"  # text only: refused before it loads
TITAN_IMAGE = "amazon.titan-embed-image-v1"
RED, BLUE = (255, 0, 0), (0, 0, 255)
GREEDY = {"maxTokens": 8, "temperature": 0}


@pytest.fixture(scope="module")
def vlm(server, tmp_path_factory) -> str:
    return register_model(server, "tiny-vlm", make_tiny_vlm(tmp_path_factory.mktemp("tiny-vlm")))


@pytest.fixture(scope="module")
def clip(server, tmp_path_factory) -> str:
    return register_model(server, "tiny-clip", make_tiny_clip(tmp_path_factory.mktemp("tiny-clip")))


def ask(color, text="What is in the picture?", fmt="png"):
    return [{"role": "user", "content": [{"image": {"format": fmt, "source": {"bytes": png(color)}}},
                                         {"text": text}]}]


def answer(response) -> str:
    return "".join(b.get("text", "") for b in response["output"]["message"]["content"])


def test_the_image_reaches_the_model(runtime, vlm):
    red = runtime.converse(modelId=vlm, messages=ask(RED), inferenceConfig=GREEDY)
    blue = runtime.converse(modelId=vlm, messages=ask(BLUE), inferenceConfig=GREEDY)
    again = runtime.converse(modelId=vlm, messages=ask(RED), inferenceConfig=GREEDY)
    assert answer(red) == answer(again) != answer(blue)  # the image, and nothing else, changed the answer
    assert red["stopReason"] == "max_tokens" and red["usage"]["outputTokens"] == 8
    text_only = runtime.converse(modelId=vlm, messages=[{"role": "user", "content": [
        {"text": "What is in the picture?"}]}], inferenceConfig=GREEDY)
    # The image's tokens (4 after the pixel shuffle, and the markers around them) are input tokens.
    assert red["usage"]["inputTokens"] > text_only["usage"]["inputTokens"] + 4
    assert answer(text_only)


def test_converse_stream_streams_the_same_answer(runtime, vlm):
    whole = runtime.converse(modelId=vlm, messages=ask(BLUE), inferenceConfig={"maxTokens": 12, "temperature": 1},
                             additionalModelRequestFields={"seed": 7})
    events = list(runtime.converse_stream(modelId=vlm, messages=ask(BLUE),
                                          inferenceConfig={"maxTokens": 12, "temperature": 1},
                                          additionalModelRequestFields={"seed": 7})["stream"])
    streamed = "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e)
    assert streamed == answer(whole)
    assert [e["metadata"]["usage"] for e in events if "metadata" in e] == [whole["usage"]]


def test_a_vision_model_calls_tools_under_the_grammar(runtime, vlm):
    weather = {"toolSpec": {"name": "get_weather", "inputSchema": {"json": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 12}}, "required": ["city"]}}}}
    response = runtime.converse(modelId=vlm, messages=ask(RED, "Weather where this was taken?"),
                                toolConfig={"tools": [weather], "toolChoice": {"any": {}}},
                                inferenceConfig={"maxTokens": 150, "temperature": 0})
    calls = [b["toolUse"] for b in response["output"]["message"]["content"] if "toolUse" in b]
    assert response["stopReason"] == "tool_use" and calls[0]["name"] == "get_weather"
    assert isinstance(calls[0]["input"]["city"], str)


def refusal(call) -> str:
    with pytest.raises(ClientError) as caught:
        call()
    assert caught.value.response["Error"]["Code"] == "ValidationException"
    return caught.value.response["Error"]["Message"]


def test_refusals_name_the_model_or_the_field(runtime, vlm):
    text_only = refusal(lambda: runtime.converse(modelId=SMOLLM2, messages=ask(RED)))
    assert text_only == (f"The model {SMOLLM2} does not accept images (messages.0.content.0.image); its input is "
                         "TEXT only.")
    wrong = refusal(lambda: runtime.converse(modelId=vlm, messages=ask(RED, fmt="jpeg")))
    assert wrong == "messages.0.content.0.image.format is jpeg, but the image is png"
    too_wide = [{"role": "user", "content": [{"image": {"format": "png", "source": {"bytes": png(RED, (8001, 2))}}}]}]
    assert refusal(lambda: runtime.converse(modelId=vlm, messages=too_wide)).startswith(
        "messages.0.content.0.image.source.bytes: the image is 8001 x 2 pixels")


def test_an_image_in_s3_is_read_with_the_callers_permissions(server, runtime, vlm, tmp_path):
    (tmp_path / "blue.png").write_bytes(png(BLUE))
    outcrop(server, "s3", "mb", "s3://vision-in")
    outcrop(server, "s3", "cp", str(tmp_path / "blue.png"), "s3://vision-in/pictures/blue.png")

    def from_s3(uri, **location):
        return [{"role": "user", "content": [{"image": {"format": "png", "source": {"s3Location": {"uri": uri,
                                                                                                   **location}}}},
                                             {"text": "What is in the picture?"}]}]

    inline = runtime.converse(modelId=vlm, messages=ask(BLUE), inferenceConfig=GREEDY)
    stored = runtime.converse(modelId=vlm, messages=from_s3("s3://vision-in/pictures/blue.png"), inferenceConfig=GREEDY)
    assert answer(stored) == answer(inline) and stored["usage"] == inline["usage"]  # the same image reached it
    events = runtime.converse_stream(modelId=vlm, messages=from_s3("s3://vision-in/pictures/blue.png"),
                                     inferenceConfig=GREEDY)["stream"]
    assert "".join(e["contentBlockDelta"]["delta"]["text"] for e in events if "contentBlockDelta" in e) == \
        answer(inline)
    field = "messages.0.content.0.image.source.s3Location"
    # Another account's bucket is refused as every read refuses it, and a missing object answers alike.
    created = json.loads(outcrop(server, "iam", "create-account", "--name", "vision-outsider").stdout)
    outsider = server.client("bedrock-runtime", key=(created["AccessKeyId"], created["SecretAccessKey"]))
    foreign = error_code(lambda: outsider.converse(modelId=vlm, messages=from_s3("s3://vision-in/pictures/blue.png")))
    missing = error_code(lambda: runtime.converse(modelId=vlm, messages=from_s3("s3://vision-in/pictures/gone.png")))
    assert foreign == ("AccessDeniedException", 403, f"{field}.uri: User: arn:aws:iam::{created['AccountId']}:root "
                       "cannot read s3://vision-in/pictures/blue.png: there is no such object, or s3:GetObject on it "
                       "is not allowed")
    # The same answer but for who asked and the key: whether an object exists is not told.
    assert missing[:2] == foreign[:2] and re.sub(r"User: \S+ ", "", missing[2]) == \
        re.sub(r"User: \S+ ", "", foreign[2]).replace("blue.png", "gone.png")
    wrong_owner = error_code(lambda: runtime.converse(modelId=vlm, messages=from_s3(
        "s3://vision-in/pictures/blue.png", bucketOwner=created["AccountId"])))
    assert wrong_owner == ("AccessDeniedException", 403, f"{field}.bucketOwner: the bucket vision-in does not "
                           f"belong to account {created['AccountId']}")


def embed(runtime, model, **body):
    return json.loads(runtime.invoke_model(modelId=model, body=json.dumps(body))["body"].read())


def test_titan_multimodal_embeddings_text_image_and_both(runtime, bedrock, clip):
    image = base64.b64encode(png(RED)).decode()
    text = embed(runtime, clip, inputText="a red square")
    picture = embed(runtime, clip, inputImage=image, embeddingConfig={"outputEmbeddingLength": 16})
    both = embed(runtime, clip, inputText="a red square", inputImage=image)
    assert set(text) == {"embedding", "inputTextTokenCount", "message"} and text["message"] is None
    assert text["inputTextTokenCount"] == both["inputTextTokenCount"] > 0 == picture["inputTextTokenCount"]
    assert all(len(r["embedding"]) == 16 and math.isclose(math.hypot(*r["embedding"]), 1, rel_tol=1e-4)
               for r in (text, picture, both))
    # Both together: the direction of the two vectors' mean, in the same space.
    mean = [a + b for a, b in zip(text["embedding"], picture["embedding"], strict=True)]
    cosine = sum(a * b for a, b in zip(mean, both["embedding"], strict=True)) / math.hypot(*mean)
    assert cosine == pytest.approx(1, abs=1e-4)
    blue = embed(runtime, clip, inputImage=base64.b64encode(png(BLUE)).decode())
    assert blue["embedding"] != pytest.approx(picture["embedding"], abs=1e-3)  # the image reaches the model
    padded = embed(runtime, clip, inputText="a red square", embeddingConfig={"outputEmbeddingLength": 1024})
    assert padded["embedding"] == pytest.approx(text["embedding"] + [0.0] * 1008, abs=1e-6)  # Bedrock's default
    wrong = refusal(lambda: embed(runtime, clip, inputText="red", embeddingConfig={"outputEmbeddingLength": 8}))
    assert wrong.startswith("embeddingConfig.outputEmbeddingLength must be one of 16, 256, 384, 1024 for")
    # Bedrock's own id for this body is an alias of the catalog's CLIP (a hub model, not fetched here).
    alias = bedrock.get_foundation_model(modelIdentifier=TITAN_IMAGE)["modelDetails"]
    assert alias["modelId"] == TITAN_IMAGE and alias["inputModalities"] == ["TEXT", "IMAGE"]
    assert alias["outputModalities"] == ["EMBEDDING"]
