"""Images in requests, on Bedrock's terms: Converse's image content blocks and Titan Multimodal Embeddings' body.

Every image is decoded and checked here, before any model runs, and a bad one is a ValidationException naming
its place (`messages.0.content.1.image.format`): the declared format must be what the bytes are, and the
sizes are Bedrock's (Converse: at most 20 images a request, each at most 3.75 MB and 8000 px on a side; Titan
Multimodal Embeddings: 25 MB and 2048 px). A Converse image block becomes IMAGE_MARKER in its message's
text, so the conversation goes through tool_use's parsing and the chat template as text does, and the
vision model's template puts each image's tokens where its block was (inference/vision.py).

An image in S3 (`source.s3Location`: `uri`, optional `bucketOwner`) is read as Bedrock reads it, with the
caller's permissions: through `CallerObjects`, the object store as the request's principal sees it (services.py
builds one per request from iam/scoped_store.py), so the caller needs s3:GetObject on the object, and a missing
object, a missing bucket and another account's bucket are one AccessDeniedException. The object's size is
checked before it is read, and the read stops at the limit. A path with no caller to read as (CountTokens, a
provider's InvokeModel body such as Nova's) is not given one and refuses S3 images: reading them with the
server's own access would bypass bucket isolation.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol

from outcrop.errors import AccessDeniedException, ResourceNotFoundException, ValidationException
from outcrop.iam.principal import Principal
from outcrop.inference.vision import IMAGE_MARKER
from outcrop.platform.objectstore import ObjectInfo, S3Uri
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


class CallerObjects(Protocol):
    """The object store as a request's caller sees it (iam/scoped_store.ScopedStore): `head` and `open_read`
    authorize s3:GetObject on the object for `principal` first, with the request's condition keys, and raise
    AccessDeniedException for a bucket that is missing or another account's (unless its policy grants the read),
    ObjectNotFound for a missing object; `owner` is the account a bucket belongs to."""

    principal: Principal

    def head(self, uri: S3Uri) -> ObjectInfo: ...

    def open_read(self, uri: S3Uri) -> BinaryIO: ...

    def owner(self, bucket: str) -> str | None: ...


#: How the runtime gets a caller's view of the store: (principal, the request's condition keys) -> CallerObjects.
#: Injected by services.py: the runtime does not build IAM's pieces itself.
ObjectsFor = Callable[[Principal, dict[str, Any]], CallerObjects]

_ACCOUNT_ID = re.compile(r"[0-9]{12}")


def converse_images(messages: list[dict[str, Any]], objects: CallerObjects | None = None
                    ) -> tuple[list[dict[str, Any]], tuple[ImageInput, ...]]:
    """Converse's messages with each image block replaced by a text block holding IMAGE_MARKER, and the
    images, decoded and checked, in the order they appear. An image in S3 is read through `objects`, the
    caller's view of the store; without one (a path with no caller) it is refused."""
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
            images.append(ImageInput(_image_block(block["image"], where, objects), where))
            content.append({"text": IMAGE_MARKER})
        out.append({**message, "content": content})
    return out, tuple(images)


def _image_block(block: dict[str, Any], where: str, objects: CallerObjects | None):
    declared = block.get("format")
    if declared not in IMAGE_FORMATS:
        raise ValidationException(f"{where}.format must be one of {', '.join(IMAGE_FORMATS)}, got {declared!r}")
    source = block.get("source") or {}
    if not isinstance(source, dict):
        raise ValidationException(f"{where}.source must be an object with bytes or s3Location")
    if "s3Location" in source:
        if "bytes" in source:
            raise ValidationException(f"{where}.source must have exactly one member: bytes or s3Location")
        field = f"{where}.source.s3Location"
        data = read_s3_image(source["s3Location"], field, objects)
        return decode_image(data, f"{field}.uri", MAX_IMAGE_BYTES, MAX_SIDE, declared, f"{where}.format")
    data = source.get("bytes")
    if not isinstance(data, bytes | bytearray) or not data:
        raise ValidationException(f"{where}.source.bytes is required: the image's bytes")
    return decode_image(bytes(data), f"{where}.source.bytes", MAX_IMAGE_BYTES, MAX_SIDE, declared, f"{where}.format")


def read_s3_image(location: Any, field: str, objects: CallerObjects | None, max_bytes: int = MAX_IMAGE_BYTES
                  ) -> bytes:
    """The bytes of the object an S3Location (`{"uri", "bucketOwner"}`, at `field`) names, read as the caller.

    A missing object, a missing bucket, another account's bucket and a read the caller's policies do not allow
    are one AccessDeniedException, so that the answer tells nothing about what exists. `bucketOwner`, when given,
    must be the account the bucket belongs to (S3's expected bucket owner), checked only once the read is
    allowed. An object larger than `max_bytes` is refused by its size, before any byte is read; the read itself
    stops after `max_bytes` (an object replaced meanwhile by a larger one)."""
    if not isinstance(location, dict):
        raise ValidationException(f"{field} must be an object: {{\"uri\": \"s3://bucket/key\"}}")
    text = location.get("uri")
    if not isinstance(text, str) or not text:
        raise ValidationException(f"{field}.uri is required: the object's s3:// URI")
    try:
        uri = S3Uri.parse(text)
    except ValidationException as exc:
        raise ValidationException(f"{field}.uri: {exc.message}") from None
    if not uri.key or uri.key.endswith("/"):
        raise ValidationException(f"{field}.uri must name an object (s3://bucket/key), got {text!r}")
    expected = location.get("bucketOwner")
    if expected is not None and not (isinstance(expected, str) and _ACCOUNT_ID.fullmatch(expected)):
        raise ValidationException(f"{field}.bucketOwner must be a 12-digit account ID, got {expected!r}")
    if objects is None:
        raise ValidationException(
            f"{field}: images in Amazon S3 are read only in Converse and ConverseStream requests, with the "
            "caller's permissions; send this image in source.bytes instead.")
    unreadable = (f"{field}.uri: User: {objects.principal.arn} cannot read {uri}: there is no such object, or "
                  "s3:GetObject on it is not allowed")
    try:
        size = objects.head(uri).size
    except (AccessDeniedException, ResourceNotFoundException):
        raise AccessDeniedException(unreadable) from None
    except ValidationException as exc:  # a key the store refuses ('..' segments), named once the read is allowed
        raise ValidationException(f"{field}.uri: {exc.message}") from None
    if expected is not None and objects.owner(uri.bucket) != expected:
        raise AccessDeniedException(f"{field}.bucketOwner: the bucket {uri.bucket} does not belong to account "
                                    f"{expected}")
    if size > max_bytes:
        raise ValidationException(f"{field}.uri: the image is {size} bytes; the limit is {max_bytes} bytes")
    try:
        with objects.open_read(uri) as body:
            data = _read_at_most(body, max_bytes + 1)
    except (AccessDeniedException, ResourceNotFoundException):  # deleted (or its policy changed) since
        raise AccessDeniedException(unreadable) from None
    if len(data) > max_bytes:
        raise ValidationException(f"{field}.uri: the image is more than {max_bytes} bytes; the limit is "
                                  f"{max_bytes} bytes")
    return data


def _read_at_most(body: BinaryIO, limit: int) -> bytes:
    """Up to `limit` bytes of `body` (a raw stream may answer a read with fewer bytes than asked)."""
    parts, left = [], limit
    while left > 0:
        part = body.read(min(left, 1 << 20))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


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
