"""Images in requests (runtime/multimodal.py): Converse's image blocks and Titan Multimodal Embeddings' body,
decoded and checked against Bedrock's limits, each refusal naming its field."""

from __future__ import annotations

import base64
import io
from datetime import UTC, datetime

import pytest
import torch

from outcrop.errors import AccessDeniedException, ValidationException
from outcrop.iam.principal import Principal
from outcrop.inference.vision import IMAGE_MARKER, _with_parts
from outcrop.platform.objectstore import ObjectInfo, ObjectNotFound, S3Uri
from outcrop.runtime import multimodal
from tests.vision_helpers import png

RED, BLUE = (255, 0, 0), (0, 0, 255)


def image_block(data: bytes, fmt: str = "png") -> dict:
    return {"image": {"format": fmt, "source": {"bytes": data}}}


def refusal(messages: list[dict]) -> str:
    with pytest.raises(ValidationException) as caught:
        multimodal.converse_images(messages)
    return caught.value.message


def test_image_blocks_become_markers_in_place_and_images_in_order():
    messages = [{"role": "user", "content": [{"text": "Compare "}, image_block(png(RED)), {"text": " with "},
                                             image_block(png(BLUE, fmt="JPEG"), "jpeg")]},
                {"role": "assistant", "content": [{"text": "Sure."}]}]
    out, images = multimodal.converse_images(messages)
    assert out[0]["content"] == [{"text": "Compare "}, {"text": IMAGE_MARKER}, {"text": " with "},
                                 {"text": IMAGE_MARKER}]
    assert out[1] == messages[1]
    assert [i.where for i in images] == ["messages.0.content.1.image", "messages.0.content.3.image"]
    assert [i.image.mode for i in images] == ["RGB", "RGB"]
    assert images[0].image.getpixel((0, 0)) == RED and images[1].image.getpixel((0, 0))[2] > 200
    # The vision model's template gets the parts in the same order.
    joined = "".join(block["text"] for block in out[0]["content"])
    assert _with_parts({"role": "user", "content": joined})["content"] == [
        {"type": "text", "text": "Compare "}, {"type": "image"}, {"type": "text", "text": " with "}, {"type": "image"}]


def test_a_declared_format_the_bytes_are_not_is_refused_by_field():
    message = refusal([{"role": "user", "content": [{"text": "hi"}, image_block(png(RED), "jpeg")]}])
    assert message == "messages.0.content.1.image.format is jpeg, but the image is png"
    message = refusal([{"role": "user", "content": [image_block(png(RED), "bmp")]}])
    assert message.startswith("messages.0.content.0.image.format must be one of png, jpeg, gif, webp")
    message = refusal([{"role": "user", "content": [image_block(b"not an image at all")]}])
    assert message == "messages.0.content.0.image.source.bytes: the bytes are not a readable png image"
    bmp = png(RED, fmt="BMP")
    assert "accepted formats: png, jpeg, gif, webp" in refusal([{"role": "user", "content": [image_block(bmp)]}])


def test_bedrocks_limits_on_size_sides_count_and_role():
    too_wide = refusal([{"role": "user", "content": [image_block(png(RED, (8001, 1)))]}])
    assert too_wide == ("messages.0.content.0.image.source.bytes: the image is 8001 x 1 pixels; each side may be at "
                        "most 8000 pixels")
    heavy = refusal([{"role": "user", "content": [image_block(b"\x89PNG" + bytes(multimodal.MAX_IMAGE_BYTES))]}])
    assert heavy == (f"messages.0.content.0.image.source.bytes: the image is {multimodal.MAX_IMAGE_BYTES + 4} "
                     f"bytes; the limit is {multimodal.MAX_IMAGE_BYTES} bytes")
    small = png(RED, (2, 2))
    many = [{"role": "user", "content": [image_block(small) for _ in range(11)]},
            {"role": "assistant", "content": [{"text": "ok"}]},
            {"role": "user", "content": [image_block(small) for _ in range(10)]}]
    assert refusal(many) == "messages.2.content.9.image: a request can include at most 20 images"
    assistant = refusal([{"role": "assistant", "content": [image_block(small)]}])
    assert assistant == "messages.0.content.0.image: images can only be included in user messages"


def s3_block(uri: str, **location) -> dict:
    return {"image": {"format": "png", "source": {"s3Location": {"uri": uri, **location}}}}


class FakeObjects:
    """The caller's view of a store (multimodal.CallerObjects): account 111111111111 owns `mine`; `theirs` is
    another account's, and the caller is refused there as IAM refuses it."""

    principal = Principal.account_root("111111111111")

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects, self.reads = objects, []

    def _check(self, uri: S3Uri) -> bytes:
        if uri.bucket != "mine":
            raise AccessDeniedException(f"not authorized to perform s3:GetObject on {uri}")
        if str(uri) not in self.objects:
            raise ObjectNotFound(f"no such object: {uri}")
        return self.objects[str(uri)]

    def head(self, uri: S3Uri) -> ObjectInfo:
        return ObjectInfo(uri.bucket, uri.key, len(self._check(uri)), datetime.now(UTC))

    def open_read(self, uri: S3Uri):
        self.reads.append(str(uri))
        return io.BytesIO(self._check(uri))

    def owner(self, bucket: str) -> str | None:
        return {"mine": "111111111111", "theirs": "222222222222"}.get(bucket)


def s3_refusal(block: dict, objects, kind=ValidationException) -> str:
    with pytest.raises(kind) as caught:
        multimodal.converse_images([{"role": "user", "content": [{"text": "Look:"}, block]}], objects)
    assert type(caught.value) is kind
    return caught.value.message


def test_an_image_in_s3_is_read_as_the_caller_and_refused_alike_when_missing_or_foreign():
    objects = FakeObjects({"s3://mine/red.png": png(RED)})
    out, images = multimodal.converse_images([{"role": "user", "content": [
        s3_block("s3://mine/red.png", bucketOwner="111111111111"), {"text": "What is this?"}]}], objects)
    assert out[0]["content"][0] == {"text": IMAGE_MARKER} and images[0].image.getpixel((0, 0)) == RED
    field = "messages.0.content.1.image.source.s3Location"
    root = "arn:aws:iam::111111111111:root"
    missing = s3_refusal(s3_block("s3://mine/gone.png"), objects, AccessDeniedException)
    foreign = s3_refusal(s3_block("s3://theirs/gone.png"), objects, AccessDeniedException)
    assert missing == (f"{field}.uri: User: {root} cannot read s3://mine/gone.png: there is no such object, or "
                       "s3:GetObject on it is not allowed")
    assert foreign == missing.replace("s3://mine/", "s3://theirs/")
    # bucketOwner is checked once the read is allowed (before, it would tell who owns a bucket one cannot read).
    assert s3_refusal(s3_block("s3://mine/red.png", bucketOwner="222222222222"), objects, AccessDeniedException) == (
        f"{field}.bucketOwner: the bucket mine does not belong to account 222222222222")
    assert s3_refusal(s3_block("s3://theirs/x.png", bucketOwner="222222222222"), objects,
                      AccessDeniedException) == foreign.replace("gone.png", "x.png")
    assert s3_refusal(s3_block("s3://mine/"), objects) == (
        f"{field}.uri must name an object (s3://bucket/key), got 's3://mine/'")
    assert s3_refusal(s3_block("s3://mine/red.png", bucketOwner="me"), objects) == (
        f"{field}.bucketOwner must be a 12-digit account ID, got 'me'")
    both = {"image": {"format": "png", "source": {"bytes": png(RED), "s3Location": {"uri": "s3://mine/red.png"}}}}
    assert s3_refusal(both, objects) == "messages.0.content.1.image.source must have exactly one member: bytes or " \
                                        "s3Location"


def test_an_oversized_object_in_s3_is_refused_by_its_size_unread():
    objects = FakeObjects({"s3://mine/big.png": b"\x89PNG" + bytes(multimodal.MAX_IMAGE_BYTES)})
    message = s3_refusal(s3_block("s3://mine/big.png"), objects)
    assert message == (f"messages.0.content.1.image.source.s3Location.uri: the image is "
                       f"{multimodal.MAX_IMAGE_BYTES + 4} bytes; the limit is {multimodal.MAX_IMAGE_BYTES} bytes")
    assert objects.reads == []
    wrong = FakeObjects({"s3://mine/red.png": png(RED, fmt="JPEG")})
    assert s3_refusal(s3_block("s3://mine/red.png"), wrong) == "messages.0.content.1.image.format is png, but the " \
                                                                "image is jpeg"


def test_without_a_caller_an_image_in_s3_is_refused_not_read_with_the_servers_permissions():
    message = s3_refusal(s3_block("s3://bucket/cat.png"), None)
    assert message == ("messages.0.content.1.image.source.s3Location: images in Amazon S3 are read only in Converse "
                       "and ConverseStream requests, with the caller's permissions; send this image in source.bytes "
                       "instead.")


def test_large_images_are_kept_within_the_working_size():
    _, images = multimodal.converse_images([{"role": "user", "content": [image_block(png(RED, (4000, 100)))]}])
    assert images[0].image.size == (multimodal.WORKING_SIDE, 51)


def test_a_model_without_image_input_is_told_it_gets_none():
    _, images = multimodal.converse_images([{"role": "user", "content": [image_block(png(RED))]}])
    multimodal.check_accepts_images("m", ("TEXT", "IMAGE"), images)
    multimodal.check_accepts_images("m", ("TEXT",), ())
    with pytest.raises(ValidationException) as caught:
        multimodal.check_accepts_images("local.tiny-v1:0", ("TEXT",), images)
    assert caught.value.message == ("The model local.tiny-v1:0 does not accept images (messages.0.content.0.image); "
                                    "its input is TEXT only.")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_titan_multimodal_bodies_text_image_or_both():
    text = multimodal.parse_multimodal_embedding({"inputText": "a red square"})
    assert (text.text, text.image, text.length) == ("a red square", None, None)
    image = multimodal.parse_multimodal_embedding({"inputImage": b64(png(RED)),
                                                   "embeddingConfig": {"outputEmbeddingLength": 384}})
    assert image.text is None and image.image.getpixel((0, 0)) == RED and image.length == 384
    both = multimodal.parse_multimodal_embedding({"inputText": "red", "inputImage": b64(png(RED, fmt="JPEG"))})
    assert both.text == "red" and both.image is not None
    assert multimodal.render_multimodal_embedding(torch.tensor([0.6, 0.8]), 3) == {
        "embedding": pytest.approx([0.6, 0.8]), "inputTextTokenCount": 3, "message": None}


@pytest.mark.parametrize(("body", "expected"), [
    ({}, "At least one of inputText and inputImage is required"),
    ({"inputText": "  "}, "inputText must be a non-empty string"),
    ({"inputImage": "***"}, "inputImage must be a base64-encoded image: it is not valid base64"),
    ({"inputImage": b64(b"plain text")}, "inputImage: the bytes are not a readable image"),
    ({"inputText": "x", "dimensions": 8}, "extraneous key [dimensions] is not permitted"),
    ({"inputText": "x", "embeddingConfig": {"outputEmbeddingLength": "256"}},
     "embeddingConfig.outputEmbeddingLength must be an integer, got '256'"),
    ({"inputText": "x", "embeddingConfig": {"length": 256}}, "embeddingConfig: extraneous key [length]"),
])
def test_titan_multimodal_refusals_name_the_field(body, expected):
    with pytest.raises(ValidationException) as caught:
        multimodal.parse_multimodal_embedding(body)
    assert caught.value.message.startswith(expected)


def test_the_embedding_length_is_the_models_own_or_a_longer_one_of_titans():
    multimodal.check_length(multimodal.MultimodalEmbedding("x", None), "m", 512)
    multimodal.check_length(multimodal.MultimodalEmbedding("x", None, 512), "m", 512)
    multimodal.check_length(multimodal.MultimodalEmbedding("x", None, 1024), "m", 512)  # Bedrock's default: padded
    request = multimodal.parse_multimodal_embedding({"inputText": "x",
                                                     "embeddingConfig": {"outputEmbeddingLength": 384}})
    with pytest.raises(ValidationException) as caught:
        multimodal.check_length(request, "openai.clip-vit-base-patch32-v1:0", 512)
    assert caught.value.message == (
        "embeddingConfig.outputEmbeddingLength must be one of 512, 1024 for openai.clip-vit-base-patch32-v1:0 (its "
        "embedding size is 512; a shorter vector is not cut from CLIP's), or left out; got 384")
