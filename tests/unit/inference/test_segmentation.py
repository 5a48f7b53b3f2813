"""maskPrompt's mask: a tiny random CLIPSeg loaded through the engine, its probabilities thresholded and dilated."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from outcrop.inference import segmentation
from outcrop.inference.engine import Engine


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    from tests.vision_helpers import make_tiny_clipseg

    folder = make_tiny_clipseg(tmp_path_factory.mktemp("clipseg"))
    engine = Engine(tmp_path_factory.mktemp("cache"), memory_budget_bytes=1 << 30)
    return engine.get(folder, segmentation.SEGMENTATION)  # the engine loads the kind from its folder


def test_the_mask_is_the_images_size_binary_and_the_thresholded_probabilities_grown(segmenter):
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 80, 3), dtype=np.uint8))
    probs = segmentation.probabilities(segmenter.loaded, image, "a red door").numpy()
    assert probs.shape == (48, 80) and 0 <= probs.min() and probs.max() <= 1
    middle = float(np.median(probs))  # a threshold that cuts this random model's map in two
    exact = np.asarray(segmentation.mask(segmenter, image, "a red door", threshold=middle, dilation=0))
    assert exact.shape == (48, 80) and set(np.unique(exact)) == {0, 255}
    assert (exact == 255).tolist() == (probs > middle).tolist()
    assert np.asarray(segmentation.mask(segmenter, image, "a red door", threshold=1.0)).max() == 0  # nothing named
    grown = np.asarray(segmentation.mask(segmenter, image, "a red door", threshold=middle))
    radius = segmentation.dilation_radius(80, 48)
    assert radius == 1 and set(np.unique(grown)) == {0, 255}
    assert (grown[exact == 255] == 255).all() and (grown == 255).sum() > (exact == 255).sum()
    # Every pixel of the grown mask is within `radius` of one the threshold kept (a square max filter).
    ys, xs = np.nonzero(grown)
    kept = np.pad(exact == 255, radius)
    assert all(kept[y:y + 2 * radius + 1, x:x + 2 * radius + 1].any() for y, x in zip(ys, xs, strict=True))
    assert segmentation.dilation_radius(1024, 512) == 10


def test_a_mask_prompt_is_the_mask_inpainting_repaints_and_outpainting_keeps():
    import base64
    import io

    from outcrop.catalog.cards import ImageLimits
    from outcrop.errors import ValidationException
    from outcrop.runtime.images import parse

    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (9, 9, 9)).save(buffer, format="PNG")
    image = base64.b64encode(buffer.getvalue()).decode()
    door = np.zeros((64, 64), dtype=np.uint8)
    door[8:40, 16:32] = 255
    asked = []

    def masks(picture, prompt, field):
        asked.append((picture.size, prompt, field))
        return Image.fromarray(door if prompt == "the door" else np.zeros_like(door))

    def body(task, prompt, **more):
        key = {"INPAINTING": "inPaintingParams", "OUTPAINTING": "outPaintingParams"}[task]
        return {"taskType": task, key: {"text": "a red door", "image": image, "maskPrompt": prompt, **more}}

    painted = parse(body("INPAINTING", "the door"), ImageLimits(), masks).request
    assert (np.asarray(painted.mask) == door).all() and painted.keep_unmasked
    assert asked == [((64, 64), "the door", "inPaintingParams.maskPrompt")]
    extended = parse(body("OUTPAINTING", "the door"), ImageLimits(), masks).request
    assert (np.asarray(extended.mask) == 255 - door).all()  # outpainting keeps what the prompt names
    for refused, says in [(body("INPAINTING", "the sky"), "found nothing"),
                          (body("INPAINTING", "the door", maskImage=image), "exactly one of inPaintingParams"),
                          (body("OUTPAINTING", ""), "must not be empty")]:
        with pytest.raises(ValidationException, match=says):
            parse(refused, ImageLimits(), masks)
    with pytest.raises(ValidationException, match="no segmentation model"):
        parse(body("INPAINTING", "the door"), ImageLimits())
