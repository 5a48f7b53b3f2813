"""Image bodies parsed against a card's limits: what a few-step model does with a light touch, what a model
without guidance refuses, the sizes an aspect ratio takes on a card that lists them, masks checked before their
pixels are decoded."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from outcrop.catalog.cards import ImageLimits, builtin_cards
from outcrop.errors import ValidationException
from outcrop.runtime.images import parse

TURBO = ImageLimits(default_size=(512, 512), min_side=256, max_side=1024, max_steps=10, default_steps=1,
                    default_guidance=0.0)
SDXL = next(c.image for c in builtin_cards() if c.model_id == "stability.stable-diffusion-xl-v1:0")


def png(width: int, height: int) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(("similarity", "steps", "strength"), [(0.7, 4, 0.3), (0.2, 2, 0.8), (1.0, 10, 0.1)])
def test_a_light_touch_on_a_one_step_model_takes_the_steps_it_needs(similarity, steps, strength):
    request = parse({"taskType": "IMAGE_VARIATION", "imageVariationParams": {
        "images": [png(512, 512)], "similarityStrength": similarity}}, TURBO).request
    assert request.steps == steps and request.strength == pytest.approx(strength, abs=1e-5)
    assert int(request.steps * request.strength) >= 1  # diffusers runs this many steps: never none


def test_a_negative_prompt_without_guidance_is_refused_naming_the_field():
    with pytest.raises(ValidationException, match="negativeText.*cfgScale"):
        parse({"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "a cat", "negativeText": "dogs"}}, TURBO)
    with pytest.raises(ValidationException, match="negative_prompt"):
        parse({"prompt": "a cat", "negative_prompt": "dogs"}, TURBO)
    guided = parse({"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "a cat", "negativeText": "dogs"},
                    "imageGenerationConfig": {"cfgScale": 2.0}}, TURBO).request
    assert guided.negative_prompt == "dogs" and guided.guidance == 2.0


def test_an_aspect_ratio_on_a_card_with_sizes_takes_the_closest_size():
    assert parse({"prompt": "a cat", "aspect_ratio": "4:5"}, SDXL).request.width == 896  # 896x1152
    assert parse({"prompt": "a cat", "aspect_ratio": "21:9"}, SDXL).request.height == 640


def test_a_mask_is_checked_against_its_image_before_it_is_decoded():
    with pytest.raises(ValidationException, match="maskImage must be the size"):
        parse({"taskType": "INPAINTING", "inPaintingParams": {"image": png(512, 512), "maskImage": png(256, 256)}},
              TURBO)
    with pytest.raises(ValidationException, match="at most 1024 pixels a side"):
        parse({"taskType": "IMAGE_VARIATION", "imageVariationParams": {"images": [png(2000, 300)]}}, TURBO)
    with pytest.raises(ValidationException, match="imageGenerationConfig.width cannot be sent with INPAINTING"):
        parse({"taskType": "INPAINTING", "imageGenerationConfig": {"width": 512},
               "inPaintingParams": {"image": png(512, 512), "maskImage": png(512, 512)}}, TURBO)
