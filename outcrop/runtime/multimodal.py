"""Images in requests, on Bedrock's terms: Converse's image content blocks and Titan Multimodal Embeddings' body.

Every image is decoded and checked here, before any model runs, and a bad one is a ValidationException naming
its place (`messages.0.content.1.image.format`): the declared format must be what the bytes are, and the
sizes are Bedrock's (Converse: at most 20 images a request, each at most 3.75 MB and 8000 px on a side; Titan
Multimodal Embeddings: 25 MB and 2048 px). A Converse image block becomes IMAGE_MARKER in its message's
text, so the conversation goes through tool_use's parsing and the chat template as text does, and the
vision model's template puts each image's tokens where its block was (inference/vision.py).

Images in S3 (`source.s3Location`) are refused: reading a caller's bucket needs its permissions and the
request's condition keys (iam/scoped_store.py), which the runtime is not given; reading it with the server's
would bypass bucket isolation.
"""

from __future__ import annotations

import base64
import binascii
import io
from dataclasses import dataclass
from typing import Any

from outcrop.errors import ValidationException
from outcrop.inference.vision import IMAGE_MARKER
from outcrop.runtime.formats import only_keys

#: Converse's image formats, and what Pillow calls the bytes of each (MPO: a camera's multi-picture JPEG).
IMAGE_FORMATS = {"png": ("PNG",), "jpeg": ("JPEG", "MPO"), "gif": ("GIF",), "webp": ("WEBP",)}
#: Bedrock's limits on a Converse request's images (the Message shape's documentation).
MAX_IMAGES = 20
MAX_IMAGE_BYTES = 3_932_160  # 3.75 MB
MAX_SIDE = 8000
#: Images are kept at most this large on a side once checked (aspect kept): 20 images of 8000 x 8000 px would
#: hold almost 4 GB as pixels, and vision processors resize to about this or less anyway (SmolVLM: 2048, split
#: into 512 px tiles). A model whose processor keeps more (Qwen2-VL) sees large images at this size.
WORKING_SIDE = 2048

TITAN_MULTIMODAL = "Amazon Titan Multimodal Embeddings"
#: Titan Multimodal Embeddings G1's documented limits on its image.
MAX_EMBED_IMAGE_BYTES = 25 * 1024 * 1024
MAX_EMBED_SIDE = 2048


@dataclass(frozen=True)
class ImageInput:
    """A decoded, checked image (PIL, RGB) and where the request had it."""

    image: Any
    where: str


def converse_images(messages: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], tuple[ImageInput, ...]]:
    """Converse's messages with each image block replaced by a text block holding IMAGE_MARKER, and the
    images, decoded and checked, in the order they appear."""
    out, images = [], []
    for i, message in enumerate(messages):
        content = []
        for j, block in enumerate(message.get("content") or []):
            if "image" not in block:
                content.append(block)
                continue
            where = f"messages.{i}.content.{j}.image"
            if message.get("role") != "user":
                raise ValidationException(f"{where}: images can only be included in user messages")
            if len(images) == MAX_IMAGES:
                raise ValidationException(f"{where}: a request can include at most {MAX_IMAGES} images")
            images.append(ImageInput(_image_block(block["image"], where), where))
            content.append({"text": IMAGE_MARKER})
        out.append({**message, "content": content})
    return out, tuple(images)


def _image_block(block: dict[str, Any], where: str):
    declared = block.get("format")
    if declared not in IMAGE_FORMATS:
        raise ValidationException(f"{where}.format must be one of {', '.join(IMAGE_FORMATS)}, got {declared!r}")
    source = block.get("source") or {}
    if "s3Location" in source:
        raise ValidationException(
            f"{where}.source.s3Location: images in Amazon S3 are not supported by this server (the runtime cannot "
            "read a bucket with the caller's permissions); send the image in source.bytes instead.")
    data = source.get("bytes")
    if not isinstance(data, bytes | bytearray) or not data:
        raise ValidationException(f"{where}.source.bytes is required: the image's bytes")
    return decode_image(bytes(data), f"{where}.source.bytes", MAX_IMAGE_BYTES, MAX_SIDE, declared, f"{where}.format")


def decode_image(data: bytes, field: str, max_bytes: int, max_side: int, declared: str | None = None,
                 format_field: str = ""):
    """The image in `data` as PIL RGB, at most WORKING_SIDE on a side, once it is known to be an image of
    IMAGE_FORMATS within the limits, and the `declared` one when a request declares it; else a
    ValidationException naming `field` (the bytes) or `format_field` (a declared format they are not)."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > max_bytes:
        raise ValidationException(f"{field}: the image is {len(data)} bytes; the limit is {max_bytes} bytes")
    try:
        with Image.open(io.BytesIO(data)) as image:
            actual = next((name for name, kinds in IMAGE_FORMATS.items() if image.format in kinds), None)
            if actual is None:
                raise ValidationException(f"{field}: the image is {(image.format or 'unknown').lower()}; accepted "
                                          f"formats: {', '.join(IMAGE_FORMATS)}")
            if declared is not None and actual != declared:
                raise ValidationException(f"{format_field} is {declared}, but the image is {actual}")
            width, height = image.size
            if max(width, height) > max_side:  # read from the header, before any pixel is decoded
                raise ValidationException(f"{field}: the image is {width} x {height} pixels; each side may be at "
                                          f"most {max_side} pixels")
            rgb = image.convert("RGB")  # a GIF's first frame
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        kind = f"{declared} image" if declared else "image"
        raise ValidationException(f"{field}: the bytes are not a readable {kind}") from None
    rgb.thumbnail((WORKING_SIDE, WORKING_SIDE))
    return rgb


def check_accepts_images(model_id: str, input_modalities: tuple[str, ...], images: tuple[ImageInput, ...]) -> None:
    """A model whose card lists no IMAGE input is given none."""
    if images and "IMAGE" not in input_modalities:
        raise ValidationException(f"The model {model_id} does not accept images ({images[0].where}); its input is "
                                  f"{', '.join(input_modalities)} only.")


# -- Titan Multimodal Embeddings ------------------------------------------------------------------

@dataclass(frozen=True)
class MultimodalEmbedding:
    """What a Titan Multimodal Embeddings body asks: a text, an image, or both, and a vector length."""

    text: str | None
    image: Any | None
    #: embeddingConfig.outputEmbeddingLength; None: the model's own.
    length: int | None = None


def parse_multimodal_embedding(body: dict[str, Any]) -> MultimodalEmbedding:
    """{"inputText", "inputImage" (base64), "embeddingConfig": {"outputEmbeddingLength"}}, or ValidationException."""
    only_keys(body, {"inputText", "inputImage", "embeddingConfig"}, TITAN_MULTIMODAL)
    text = body.get("inputText")
    if text is not None and (not isinstance(text, str) or not text.strip()):
        raise ValidationException("inputText must be a non-empty string")
    encoded = body.get("inputImage")
    image = None
    if encoded is not None:
        if not isinstance(encoded, str) or not encoded:
            raise ValidationException("inputImage must be a base64-encoded image")
        try:
            data = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise ValidationException("inputImage must be a base64-encoded image: it is not valid base64") from None
        image = decode_image(data, "inputImage", MAX_EMBED_IMAGE_BYTES, MAX_EMBED_SIDE)
    if text is None and image is None:
        raise ValidationException("At least one of inputText and inputImage is required")
    config = body.get("embeddingConfig")
    length = None
    if config is not None:
        if not isinstance(config, dict):
            raise ValidationException("embeddingConfig must be a JSON object")
        only_keys(config, {"outputEmbeddingLength"}, TITAN_MULTIMODAL, "embeddingConfig: ")
        length = config.get("outputEmbeddingLength")
        if length is not None and (isinstance(length, bool) or not isinstance(length, int)):
            raise ValidationException(f"embeddingConfig.outputEmbeddingLength must be an integer, got {length!r}")
    return MultimodalEmbedding(text, image, length)


#: Titan Multimodal Embeddings' outputEmbeddingLength values (1024 when left out on Bedrock).
TITAN_MULTIMODAL_LENGTHS = (256, 384, 1024)


def check_length(request: MultimodalEmbedding, model_id: str, dimension: int) -> None:
    """The vector has the model's own length, or a longer one of Titan's, zero-padded (which changes no
    similarity: Bedrock's default body asks for 1024 and works). A shorter one is refused, not honoured badly: a
    CLIP vector cut short is no longer a point of its joint space (CLIP is not trained to be truncated)."""
    allowed = sorted({dimension, *(n for n in TITAN_MULTIMODAL_LENGTHS if n > dimension)})
    if request.length is not None and request.length not in allowed:
        raise ValidationException(
            f"embeddingConfig.outputEmbeddingLength must be one of {', '.join(map(str, allowed))} for {model_id} "
            f"(its embedding size is {dimension}; a shorter vector is not cut from CLIP's), or left out; got "
            f"{request.length}")


def render_multimodal_embedding(vector: Any, text_tokens: int) -> dict[str, Any]:
    """Titan Multimodal Embeddings' answer: the vector, the text's token count (0 without a text), no error."""
    return {"embedding": vector.float().tolist(), "inputTextTokenCount": text_tokens, "message": None}
