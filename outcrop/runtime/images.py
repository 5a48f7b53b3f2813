"""InvokeModel's image bodies, as each provider defines them, and their answers.

Three body formats, told apart by their members so that any image model answers any of them:
- Amazon Titan Image Generator v2 and Nova Canvas: `taskType` TEXT_IMAGE, IMAGE_VARIATION, INPAINTING,
  OUTPAINTING with its `...Params` and `imageGenerationConfig`; answers `{"images": [...], "error": null}`. An
  inpainting's or outpainting's `maskPrompt` becomes its mask through the catalog's text-prompted segmentation
  model (`PromptMasks`: CLIPSeg, inference/segmentation.py), and then runs as a `maskImage` does.
- Stability AI SDXL 1.0: `text_prompts` with weights, `cfg_scale`, `steps`, `seed`, `style_preset`, `sampler`,
  `init_image` with `image_strength`, masks; answers `{"result": "success", "artifacts": [...]}`.
- Stability AI SD3-style (SD3 Large, SD3.5, Stable Image Core and Ultra): `prompt`, `mode`, `aspect_ratio`,
  `image` with `strength`, `output_format`; answers `{"seeds": [...], "finish_reasons": [...], "images": [...]}`.

Every field is honoured or refused with a ValidationException naming it. Sizes, steps and the number of images
are checked against the model's card (`ImageLimits`): Bedrock's documented limits on the built-in cards, the
pipeline's own on a registered folder.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from outcrop.catalog.cards import ImageLimits
from outcrop.errors import ResourceNotFoundException, ValidationException
from outcrop.inference.images import IMAGE_TO_IMAGE, INPAINT, TEXT_TO_IMAGE, GeneratedImage, ImageRequest
from outcrop.runtime.formats import integer_field, number_field, only_keys, string_field

TITAN, SDXL, SD3 = "Titan Image Generator / Nova Canvas", "Stability SDXL", "Stability SD3"
#: Bedrock's words when a provider's content filter stops an image (Titan's error member, Stability's reason).
CONTENT_FILTERED = "This request has been blocked by our content filters."
#: Titan's and Nova Canvas's prompts (Nova allows 1024 characters; Titan v2 512: the larger is kept).
MAX_TITAN_TEXT = 1024
MAX_SD3_PROMPT = 10_000
#: The catalog's text-prompted segmentation model, which turns a Titan or Nova Canvas `maskPrompt` into a mask
#: (CLIPSeg; an alias of this id in outcrop.toml points it at another model of the catalog).
SEGMENTATION_MODEL = "cidas.clipseg-rd64-refined-v1:0"
#: Encoded input images Bedrock accepts (its request limit is 25 MB in all; one image may not exceed this).
MAX_INPUT_IMAGE_BYTES = 10 << 20
TITAN_TASKS = {"TEXT_IMAGE": "textToImageParams", "IMAGE_VARIATION": "imageVariationParams",
               "INPAINTING": "inPaintingParams", "OUTPAINTING": "outPaintingParams"}
#: Titan and Nova tasks that need a model this server does not have (a background segmenter, a try-on model).
UNSUPPORTED_TITAN_TASKS = {"BACKGROUND_REMOVAL", "COLOR_GUIDED_GENERATION", "VIRTUAL_TRY_ON"}
#: SD3-style aspect ratios and the 1-megapixel sizes Stability renders them at.
SD3_ASPECT_RATIOS = {"16:9": (1344, 768), "1:1": (1024, 1024), "21:9": (1536, 640), "2:3": (832, 1216),
                     "3:2": (1216, 832), "4:5": (896, 1088), "5:4": (1088, 896), "9:16": (768, 1344),
                     "9:21": (640, 1536)}
SD3_OUTPUT_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
#: SDXL's samplers -> diffusers' schedulers (the same families; inference/images.py swaps them per batch).
SDXL_SAMPLERS = {"DDIM": "DDIMScheduler", "DDPM": "DDPMScheduler", "K_EULER": "EulerDiscreteScheduler",
                 "K_EULER_ANCESTRAL": "EulerAncestralDiscreteScheduler", "K_HEUN": "HeunDiscreteScheduler",
                 "K_DPMPP_2M": "DPMSolverMultistepScheduler", "K_DPM_2": "KDPM2DiscreteScheduler",
                 "K_DPM_2_ANCESTRAL": "KDPM2AncestralDiscreteScheduler", "K_LMS": "LMSDiscreteScheduler",
                 "K_DPMPP_2S_ANCESTRAL": "DPMSolverSinglestepScheduler"}
#: SDXL's style presets, as the words each adds to the prompt (how open front ends implement them too).
STYLE_PRESETS = {
    "3d-model": "professional 3d model, octane render, highly detailed, volumetric, dramatic lighting",
    "analog-film": "analog film photo, faded film, desaturated, 35mm photo, grainy, vignette, vintage",
    "anime": "anime artwork, anime style, key visual, vibrant, studio anime, highly detailed",
    "cinematic": "cinematic film still, shallow depth of field, vignette, highly detailed, bokeh, film grain",
    "comic-book": "comic book style, graphic illustration, comic art, graphic novel art, vibrant, highly detailed",
    "digital-art": "digital artwork, illustrative, painterly, matte painting, highly detailed",
    "enhance": "breathtaking, award-winning, professional, highly detailed",
    "fantasy-art": "ethereal fantasy concept art, magnificent, celestial, painterly, epic, majestic, magical",
    "isometric": "isometric style, vibrant, beautiful, crisp, detailed, ultra detailed, intricate",
    "line-art": "line art drawing, professional, sleek, modern, minimalist, graphic, line art, vector graphics",
    "low-poly": "low-poly style, low-poly game art, polygon mesh, jagged, blocky, wireframe edges, centered",
    "modeling-compound": "play-doh style, sculpture, clay art, centered composition, claymation",
    "neon-punk": "neonpunk style, cyberpunk, vaporwave, neon, vibes, vibrant, stunningly beautiful, crisp",
    "origami": "origami style, paper art, pleated paper, folded, origami art, pleats, cut and fold, centered",
    "photographic": "cinematic photo, 35mm photograph, film, bokeh, professional, 4k, highly detailed",
    "pixel-art": "pixel-art, low-res, blocky, pixel art style, 8-bit graphics",
    "tile-texture": "tile texture, seamless, repeating pattern, flat lay",
}


#: (image, the prompt, the field it came in) -> a PIL "L" mask of the image, white where the prompt names it.
MaskMaker = Callable[[Any, str, str], Any]


@dataclass(frozen=True)
class ImageCall:
    """A parsed body: what to generate, and how its answer is written."""

    request: ImageRequest
    fmt: str
    render: Callable[[list[GeneratedImage]], dict[str, Any]]


class PromptMasks:
    """`maskPrompt` -> mask by the catalog's segmentation model (SEGMENTATION_MODEL), its weights found as any
    model's are (the hub's cache, fetched on first use when the hub answers) and loaded through the engine on
    first use, within its memory budget (the engine may unload it again, least recently used, to make room)."""

    def __init__(self, catalog: Any, engine: Any) -> None:
        self.catalog = catalog
        self.engine = engine

    def __call__(self, image: Any, prompt: str, field: str) -> Any:
        from outcrop.inference import segmentation

        try:
            card = self.catalog.get(SEGMENTATION_MODEL)
        except ResourceNotFoundException as exc:  # an alias in outcrop.toml to a model the catalog lacks
            raise ValidationException(f"{field} needs a segmentation model to make the mask: {exc.message}") from None
        try:
            weights = self.catalog.local_weights(card)
        except ResourceNotFoundException as exc:  # offline, and not in the hub's cache
            how = (f"Fetch them once where the Hugging Face hub is reachable (huggingface-cli download "
                   f"{card.source.repo}): the server then finds them in the hub's cache"
                   if card.source.kind == "hub" else exc.message.rstrip("."))
            raise ValidationException(
                f"{field} needs a text-prompted segmentation model ({card.served_model_id}, CLIPSeg) to make the "
                f"mask, and its weights are not on this machine. {how}. Or send maskImage instead.") from None
        return segmentation.mask(self.engine.get(weights, segmentation.SEGMENTATION), image, prompt)


def parse(body: dict[str, Any], limits: ImageLimits | None, masks: MaskMaker | None = None) -> ImageCall:
    """The body's format by its members, parsed and checked against the model card's limits (None: the model
    makes no images from a prompt). `masks` turns a Titan or Nova Canvas `maskPrompt` into a mask; without it a
    maskPrompt is refused."""
    if limits is None:
        raise ValidationException("This model does not generate images: it takes no image request body (a "
                                  "segmentation model makes the masks of maskPrompt; invoke an image model)")
    if "taskType" in body:
        return _titan(body, limits, masks)
    if "text_prompts" in body:
        return _sdxl(body, limits)
    if "prompt" in body:
        return _sd3(body, limits)
    raise ValidationException(
        "The body is not an image request this model understands: send Titan Image Generator or Nova Canvas's "
        "(taskType), Stability SDXL's (text_prompts) or Stability SD3's (prompt).")


# -- Titan Image Generator v2 and Nova Canvas ------------------------------------------------------------------

def _titan(body: dict[str, Any], limits: ImageLimits, masks: MaskMaker | None) -> ImageCall:
    task = body.get("taskType")
    if task in UNSUPPORTED_TITAN_TASKS:
        raise ValidationException(f"taskType {task} is not supported by this server; supported task types: "
                                  f"{', '.join(TITAN_TASKS)}")
    if task not in TITAN_TASKS:
        raise ValidationException(f"taskType must be one of {', '.join(TITAN_TASKS)}, got {task!r}")
    params_key = TITAN_TASKS[task]
    only_keys(body, {"taskType", params_key, "imageGenerationConfig"}, TITAN)
    params = _object(body, params_key, required=True)
    config = _object(body, "imageGenerationConfig")
    where = "imageGenerationConfig."
    only_keys(config, {"numberOfImages", "width", "height", "cfgScale", "seed", "quality"}, TITAN, where)
    count = integer_field(config, "numberOfImages", 1, limits.max_images, 1, where)
    # The card's guidance when none is sent (a distilled model's is 0, outside Titan's range for a sent value).
    guidance = number_field(config, "cfgScale", 1.1, 10.0, 0, where) if "cfgScale" in config \
        else limits.default_guidance
    seed = integer_field(config, "seed", 0, 2_147_483_646, 42, where)
    quality = config.get("quality", "standard")
    if quality not in ("standard", "premium"):
        raise ValidationException(f"{where}quality must be standard or premium, got {quality!r}")
    # Titan has no step count: premium quality is more denoising steps than standard.
    steps = limits.default_steps if quality == "standard" else min(2 * limits.default_steps, limits.max_steps)
    where = f"{params_key}."
    text_keys = {"text", "negativeText"}
    task_keys = {"TEXT_IMAGE": text_keys | {"conditionImage", "controlMode", "controlStrength", "style"},
                 "IMAGE_VARIATION": text_keys | {"images", "similarityStrength"},
                 "INPAINTING": text_keys | {"image", "maskPrompt", "maskImage", "returnMask"},
                 "OUTPAINTING": text_keys | {"image", "maskPrompt", "maskImage", "outPaintingMode", "returnMask"}}
    only_keys(params, task_keys[task], TITAN, where)
    for unsupported in ("conditionImage", "controlMode", "controlStrength", "style", "returnMask"):
        if unsupported in params:
            raise ValidationException(f"{where}{unsupported} is not supported by this server")
    # Without text, inpainting fills the mask with what surrounds it (removing an object), as Titan does.
    text = _text(params, "text", MAX_TITAN_TEXT, where, required=task not in ("IMAGE_VARIATION", "INPAINTING"))
    negative = _text(params, "negativeText", MAX_TITAN_TEXT, where, required=False)
    _check_negative(negative, guidance, f"{where}negativeText", "imageGenerationConfig.cfgScale")
    if task in ("INPAINTING", "OUTPAINTING"):
        for key in ("width", "height"):
            if key in config:
                raise ValidationException(f"imageGenerationConfig.{key} cannot be sent with {task}: the image keeps "
                                          "the size of the image it edits")
    width, height = _size(config, "width", "height", limits, "imageGenerationConfig.")
    seeds = tuple(seed + i for i in range(count))
    request = dict(prompt=text, negative_prompt=negative, steps=steps, guidance=guidance, seeds=seeds)
    if task == "TEXT_IMAGE":
        image_request = ImageRequest(TEXT_TO_IMAGE, width=width, height=height, **request)
    elif task == "IMAGE_VARIATION":
        images = params.get("images")
        if not isinstance(images, list) or not images:
            raise ValidationException(f"{where}images is required: a list of base64-encoded images")
        if len(images) > 1:
            raise ValidationException(f"{where}images: this server varies one image at a time, got {len(images)}")
        similarity = number_field(params, "similarityStrength", 0.2, 1.0, 0.7, where)
        image = _decode_image(images[0], f"{where}images[0]", limits)
        if "width" in config or "height" in config:  # a variation at the size asked for
            image = image.resize((width, height))
        _check_size(image.width, image.height, limits, f"{where}images[0]")
        # How far from the image the variation may go: the share of the denoising it redoes.
        strength, request["steps"] = _partial(1.0 - similarity, steps, limits)
        image_request = ImageRequest(IMAGE_TO_IMAGE, width=image.width, height=image.height, init_image=image,
                                     strength=strength, **request)
    else:
        image = _decode_image(params.get("image"), f"{where}image", limits)
        _check_size(image.width, image.height, limits, f"{where}image")
        mode = params.get("outPaintingMode", "DEFAULT")
        if mode not in ("DEFAULT", "PRECISE"):
            raise ValidationException(f"{where}outPaintingMode must be DEFAULT or PRECISE, got {mode!r}")
        if ("maskPrompt" in params) == ("maskImage" in params):
            raise ValidationException(f"send exactly one of {where}maskPrompt (the area, in words) and "
                                      f"{where}maskImage")
        if "maskImage" in params:
            mask = _decode_image(params["maskImage"], f"{where}maskImage", limits, size=image.size).convert("L")
            # Titan's mask is black (0, 0, 0) inside. Dark pixels count as black (a JPEG's are never exactly 0).
            inside = mask.point(lambda v: 255 if v < 128 else 0)
        else:
            inside = _prompted_mask(params, image, where, masks)
        # Inpainting repaints inside the mask, outpainting outside it (a maskPrompt names what inpainting changes
        # and what outpainting keeps, as Nova Canvas's guide says). Diffusers repaints where its mask is white.
        repaint = inside if task == "INPAINTING" else inside.point(lambda v: 255 - v)
        # OUTPAINTING's DEFAULT mode may touch the kept area to blend it in; PRECISE and INPAINTING may not.
        image_request = ImageRequest(INPAINT, width=image.width, height=image.height, init_image=image,
                                     mask=repaint, strength=1.0, keep_unmasked=mode == "PRECISE" or
                                     task == "INPAINTING", **request)

    def render(made: list[GeneratedImage]) -> dict[str, Any]:
        if any(m.filtered for m in made):
            return {"images": [], "error": CONTENT_FILTERED}
        return {"images": [_encode(m.image, "PNG") for m in made], "error": None}
    return ImageCall(image_request, TITAN, render)


def _prompted_mask(params: dict[str, Any], image: Any, where: str, masks: MaskMaker | None) -> Any:
    """The mask a `maskPrompt` names, white inside; refused when nothing can make it or it names nothing."""
    field = f"{where}maskPrompt"
    prompt = _text(params, "maskPrompt", MAX_TITAN_TEXT, where)
    if masks is None:
        raise ValidationException(f"{field}: this server has no segmentation model to make the mask; send maskImage")
    inside = masks(image, prompt, field)
    if inside.getbbox() is None:
        raise ValidationException(f"{field}: the segmentation model found nothing in the image that {prompt!r} "
                                  "names; describe the area otherwise, or send maskImage")
    return inside


# -- Stability SDXL ----------------------------------------------------------------------------------------------

def _sdxl(body: dict[str, Any], limits: ImageLimits) -> ImageCall:
    only_keys(body, {"text_prompts", "height", "width", "cfg_scale", "clip_guidance_preset", "sampler", "samples",
                     "seed", "steps", "style_preset", "extras", "init_image", "init_image_mode", "image_strength",
                     "step_schedule_start", "step_schedule_end", "mask_source", "mask_image"}, SDXL)
    prompts = body.get("text_prompts")
    if not isinstance(prompts, list) or not prompts:
        raise ValidationException("text_prompts is required: a list of {text, weight} objects")
    positive, negative = [], []
    for i, item in enumerate(prompts):
        where = f"text_prompts[{i}]."
        if not isinstance(item, dict):
            raise ValidationException(f"text_prompts[{i}] must be an object with text and weight")
        only_keys(item, {"text", "weight"}, SDXL, where)
        text = _text(item, "text", 2000, where)
        weight = number_field(item, "weight", -10.0, 10.0, 1.0, where)
        # A prompt's sign is honoured (negative weights are the negative prompt); a blend of magnitudes is not.
        if abs(weight) != 1.0:
            raise ValidationException(f"{where}weight: this server takes weights 1 and -1 (a prompt or a negative "
                                      f"prompt), got {weight:g}")
        (positive if weight > 0 else negative).append(text)
    if not positive:
        raise ValidationException("text_prompts needs at least one prompt with a positive weight")
    preset = body.get("style_preset")
    if preset is not None and preset not in STYLE_PRESETS:
        raise ValidationException(f"style_preset must be one of {', '.join(STYLE_PRESETS)}, got {preset!r}")
    prompt = ", ".join(positive + ([STYLE_PRESETS[preset]] if preset else []))
    clip = body.get("clip_guidance_preset", "NONE")
    if clip != "NONE":
        raise ValidationException(f"clip_guidance_preset {clip!r} is not supported by this server; send NONE")
    if body.get("extras") not in (None, {}):
        raise ValidationException("extras is not supported by this server")
    sampler = body.get("sampler")
    if sampler is not None and sampler not in SDXL_SAMPLERS:
        raise ValidationException(f"sampler must be one of {', '.join(SDXL_SAMPLERS)}, got {sampler!r}")
    samples = integer_field(body, "samples", 1, limits.max_images, 1)
    guidance = number_field(body, "cfg_scale", 0.0, 35.0, limits.default_guidance)
    _check_negative(", ".join(negative), guidance, "text_prompts (a negative weight)", "cfg_scale")
    seed = integer_field(body, "seed", 0, 4_294_967_295, 0)
    seed = seed or random.randrange(1, 4_294_967_295)  # 0: a random seed, reported in the answer
    steps = integer_field(body, "steps", limits.min_steps, limits.max_steps, limits.default_steps)
    common = dict(prompt=prompt, negative_prompt=", ".join(negative), steps=steps, guidance=guidance,
                  seeds=tuple(seed + i for i in range(samples)), sampler=SDXL_SAMPLERS.get(sampler, ""))
    if "init_image" not in body:
        for key in ("init_image_mode", "image_strength", "step_schedule_start", "step_schedule_end", "mask_source",
                    "mask_image"):
            if key in body:
                raise ValidationException(f"{key} needs init_image")
        width, height = _size(body, "width", "height", limits, "")
        request = ImageRequest(TEXT_TO_IMAGE, width=width, height=height, **common)
    else:
        if "width" in body or "height" in body:
            raise ValidationException("width and height cannot be sent with init_image: the image's size is used")
        image = _decode_image(body["init_image"], "init_image", limits)
        _check_size(image.width, image.height, limits, "init_image")
        strength, common["steps"] = _partial(_sdxl_strength(body), steps, limits)
        if "mask_source" in body:
            mask = _sdxl_mask(body, image, limits)
            request = ImageRequest(INPAINT, width=image.width, height=image.height, init_image=image, mask=mask,
                                   strength=strength, **common)
        else:
            if "mask_image" in body:
                raise ValidationException("mask_image needs mask_source (MASK_IMAGE_WHITE or MASK_IMAGE_BLACK)")
            request = ImageRequest(IMAGE_TO_IMAGE, width=image.width, height=image.height, init_image=image,
                                   strength=strength, **common)

    def render(made: list[GeneratedImage]) -> dict[str, Any]:
        return {"result": "success", "artifacts": [
            {"seed": m.seed, "base64": None if m.filtered else _encode(m.image, "PNG"),
             "finishReason": "CONTENT_FILTERED" if m.filtered else "SUCCESS"} for m in made]}
    return ImageCall(request, SDXL, render)


def _sdxl_strength(body: dict[str, Any]) -> float:
    """The share of the denoising redone on the init image. SDXL's `image_strength` is how much of the image is
    kept (1: all of it); STEP_SCHEDULE starts the schedule at `step_schedule_start` instead."""
    mode = body.get("init_image_mode", "IMAGE_STRENGTH")
    if mode == "IMAGE_STRENGTH":
        if "step_schedule_start" in body or "step_schedule_end" in body:
            raise ValidationException("step_schedule_start and step_schedule_end need init_image_mode STEP_SCHEDULE")
        return 1.0 - number_field(body, "image_strength", 0.0, 1.0, 0.35)
    if mode == "STEP_SCHEDULE":
        if "image_strength" in body:
            raise ValidationException("image_strength needs init_image_mode IMAGE_STRENGTH")
        start = number_field(body, "step_schedule_start", 0.0, 1.0, 0.65)
        end = number_field(body, "step_schedule_end", 0.0, 1.0, 0.0)
        if end != 0.0:
            raise ValidationException("step_schedule_end: this server denoises to the end of the schedule; send 0")
        return start
    raise ValidationException(f"init_image_mode must be IMAGE_STRENGTH or STEP_SCHEDULE, got {mode!r}")


def _sdxl_mask(body: dict[str, Any], image, limits: ImageLimits):
    source = body["mask_source"]
    if source == "INIT_IMAGE_ALPHA":
        if "mask_image" in body:
            raise ValidationException("mask_image cannot be sent with mask_source INIT_IMAGE_ALPHA")
        if "A" not in image.getbands():
            raise ValidationException("mask_source INIT_IMAGE_ALPHA needs an init_image with an alpha channel")
        # Transparent pixels are the ones to paint.
        return image.getchannel("A").point(lambda v: 255 if v < 128 else 0)
    if source not in ("MASK_IMAGE_WHITE", "MASK_IMAGE_BLACK"):
        raise ValidationException(f"mask_source must be MASK_IMAGE_WHITE, MASK_IMAGE_BLACK or INIT_IMAGE_ALPHA, "
                                  f"got {source!r}")
    if "mask_image" not in body:
        raise ValidationException(f"mask_image is required with mask_source {source}")
    mask = _decode_image(body["mask_image"], "mask_image", limits, size=image.size).convert("L")
    # MASK_IMAGE_WHITE paints where the mask is white; MASK_IMAGE_BLACK where it is black.
    return mask.point(lambda v: 255 if v >= 128 else 0) if source == "MASK_IMAGE_WHITE" \
        else mask.point(lambda v: 255 if v < 128 else 0)


# -- Stability SD3-style -----------------------------------------------------------------------------------------

def _sd3(body: dict[str, Any], limits: ImageLimits) -> ImageCall:
    only_keys(body, {"prompt", "mode", "aspect_ratio", "image", "strength", "negative_prompt", "seed",
                     "output_format"}, SD3)
    prompt = _text(body, "prompt", MAX_SD3_PROMPT, "")
    negative = _text(body, "negative_prompt", MAX_SD3_PROMPT, "", required=False)
    mode = body.get("mode", "image-to-image" if "image" in body else "text-to-image")
    output = body.get("output_format", "png")
    if output not in SD3_OUTPUT_FORMATS:
        raise ValidationException(f"output_format must be one of {', '.join(SD3_OUTPUT_FORMATS)}, got {output!r}")
    seed = integer_field(body, "seed", 0, 4_294_967_294, 0) or random.randrange(1, 4_294_967_294)
    common = dict(prompt=prompt, negative_prompt=negative, steps=limits.default_steps,
                  guidance=limits.default_guidance, seeds=(seed,))
    _check_negative(negative, limits.default_guidance, "negative_prompt", None)
    if mode == "text-to-image":
        for key in ("image", "strength"):
            if key in body:
                raise ValidationException(f"{key} needs mode image-to-image")
        ratio = body.get("aspect_ratio", "1:1")
        if ratio not in SD3_ASPECT_RATIOS:
            raise ValidationException(f"aspect_ratio must be one of {', '.join(SD3_ASPECT_RATIOS)}, got {ratio!r}")
        width, height = _aspect_size(ratio, limits)
        request = ImageRequest(TEXT_TO_IMAGE, width=width, height=height, **common)
    elif mode == "image-to-image":
        if "aspect_ratio" in body:
            raise ValidationException("aspect_ratio cannot be sent with mode image-to-image: the image's is kept")
        image = _decode_image(body.get("image"), "image", limits)
        _check_size(image.width, image.height, limits, "image")
        if "strength" not in body:
            raise ValidationException("strength is required with mode image-to-image (0 keeps the image, 1 "
                                      "replaces it)")
        strength, common["steps"] = _partial(number_field(body, "strength", 0.0, 1.0, 0.0), common["steps"], limits)
        request = ImageRequest(IMAGE_TO_IMAGE, width=image.width, height=image.height, init_image=image,
                               strength=strength, **common)
    else:
        raise ValidationException(f"mode must be text-to-image or image-to-image, got {mode!r}")

    def render(made: list[GeneratedImage]) -> dict[str, Any]:
        return {"seeds": [m.seed for m in made],
                "finish_reasons": ["Filter reason: output image" if m.filtered else None for m in made],
                "images": [None if m.filtered else _encode(m.image, SD3_OUTPUT_FORMATS[output]) for m in made]}
    return ImageCall(request, SD3, render)


def _aspect_size(ratio: str, limits: ImageLimits) -> tuple[int, int]:
    """An aspect ratio at the model's own resolution: Stability's sizes on a one-megapixel model whose card allows
    them, else the ratio at the card's default area, in the card's multiple."""
    width, height = SD3_ASPECT_RATIOS[ratio]
    if limits.sizes:  # a card that lists its sizes: the one closest to the ratio
        return min(limits.sizes, key=lambda size: abs(math.log(size[0] / size[1]) - math.log(width / height)))
    if limits.default_size[0] * limits.default_size[1] >= 1024 * 1024 and _fits(width, height, limits):
        return width, height
    area = limits.default_size[0] * limits.default_size[1]
    aspect = width / height
    step = limits.multiple
    width = max(step, round(math.sqrt(area * aspect) / step) * step)
    height = max(step, round(math.sqrt(area / aspect) / step) * step)
    return width, height


# -- shared checks -----------------------------------------------------------------------------------------------

def _partial(strength: float, steps: int, limits: ImageLimits) -> tuple[float, int]:
    """(strength, steps) for a request that starts from an image. Diffusers runs `int(steps * strength)` of the
    steps, so a light touch on a few-step model (SD-Turbo: one step) would run none, or, clamped, redo all of
    the image: steps grow within the card's limit until the strength runs at least one, and only a strength
    that still runs none is raised to the least that does (one step)."""
    strength = min(max(strength, 0.0), 1.0)
    if steps * strength < 1:  # a strength of 0 (keep the image) gets the lightest touch the card allows
        steps = min(limits.max_steps, max(steps, math.ceil(1 / strength - 1e-9))) if strength > 0 \
            else max(steps, limits.max_steps)
    if steps * strength < 1:
        strength = min(1.0, (1 + 1e-6) / steps)
    return strength, steps


def _check_negative(negative: str, guidance: float, field: str, guidance_field: str | None) -> None:
    """A negative prompt acts through classifier-free guidance only: refused where the model runs without it."""
    if negative and guidance <= 1:
        how = f"send {guidance_field} above 1 to use one" if guidance_field else "this body cannot set guidance"
        raise ValidationException(f"{field}: this model runs without classifier-free guidance (scale {guidance:g}), "
                                  f"so a negative prompt would change nothing; {how}")


def _object(body: dict[str, Any], key: str, required: bool = False) -> dict[str, Any]:
    value = body.get(key)
    if value is None and not required:
        return {}
    if not isinstance(value, dict):
        raise ValidationException(f"{key} {'is required and ' if required else ''}must be a JSON object")
    return value


def _text(body: dict[str, Any], key: str, limit: int, where: str, required: bool = True) -> str:
    text = string_field(body, key, where, required=required)
    if required and not text.strip():
        raise ValidationException(f"{where}{key} must not be empty")
    if len(text) > limit:
        raise ValidationException(f"{where}{key} must be at most {limit} characters, got {len(text)}")
    return text


def _fits(width: int, height: int, limits: ImageLimits) -> bool:
    if limits.sizes:
        return (width, height) in limits.sizes
    return (limits.min_side <= width <= limits.max_side and limits.min_side <= height <= limits.max_side
            and width % limits.multiple == 0 and height % limits.multiple == 0
            and width * height <= limits.max_pixels)


def _check_size(width: int, height: int, limits: ImageLimits, where: str) -> None:
    if _fits(width, height, limits):
        return
    if limits.sizes:
        allowed = ", ".join(f"{w}x{h}" for w, h in limits.sizes)
        raise ValidationException(f"{where}: {width}x{height} is not a size this model makes; allowed: {allowed}")
    raise ValidationException(
        f"{where}: {width}x{height} does not fit this model: each side from {limits.min_side} to {limits.max_side} "
        f"pixels in multiples of {limits.multiple}, at most {limits.max_pixels} pixels in all")


def _size(body: dict[str, Any], width_key: str, height_key: str, limits: ImageLimits, where: str) -> tuple[int, int]:
    width = integer_field(body, width_key, 1, None, limits.default_size[0], where)
    height = integer_field(body, height_key, 1, None, limits.default_size[1], where)
    _check_size(width, height, limits, f"{where}{width_key} and {height_key}")
    return width, height


def _decode_image(value: Any, where: str, limits: ImageLimits, size: tuple[int, int] | None = None):
    """A base64 PNG or JPEG as an RGB (or RGBA, for SDXL's alpha mask) PIL image; its size is checked from its
    header before its pixels are decoded (a small file can hold a huge image), against the card's largest side
    and, for a mask, against the image it masks (`size`)."""
    from PIL import Image, UnidentifiedImageError

    if not isinstance(value, str) or not value:
        raise ValidationException(f"{where} is required: a base64-encoded PNG or JPEG image")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationException(f"{where} is not valid base64") from None
    if len(data) > MAX_INPUT_IMAGE_BYTES:
        raise ValidationException(f"{where} is {len(data)} bytes; at most {MAX_INPUT_IMAGE_BYTES} are accepted")
    try:
        image = Image.open(io.BytesIO(data))
        if image.format not in ("PNG", "JPEG"):
            raise ValidationException(f"{where} must be a PNG or JPEG image, got {image.format}")
        if max(image.size) > limits.max_side or image.width * image.height > limits.max_pixels:
            raise ValidationException(f"{where} is {image.width}x{image.height}; at most {limits.max_side} pixels "
                                      f"a side and {limits.max_pixels} in all")
        if size is not None and image.size != size:
            raise ValidationException(f"{where} must be the size of the image it masks ({size[0]}x{size[1]}), got "
                                      f"{image.width}x{image.height}")
        image.load()
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise ValidationException(f"{where} is not a PNG or JPEG image") from None
    return image.convert("RGBA" if "A" in image.getbands() else "RGB")


def _encode(image, fmt: str) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return base64.b64encode(buffer.getvalue()).decode()
