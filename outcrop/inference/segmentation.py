"""Text-prompted segmentation: which pixels of an image a phrase names, as a mask (Titan's and Nova Canvas's
`maskPrompt`).

A CLIPSeg folder (`CLIPSegForImageSegmentation` and its `CLIPSegProcessor`: a CLIP tokenizer and an image
processor; the published one is CIDAS/clipseg-rd64-refined) loads through the engine like any other model, on
first use and within its memory budget. CLIPSeg scores every pixel of its square input (352 x 352 for the
published model) for the phrase; the mask is those scores, bilinearly resized to the image, turned into
probabilities (sigmoid), and kept where the probability is above THRESHOLD, then dilated by a few pixels
(`dilation_radius`). The mask is white (255) where the phrase is. Knows tensors and PIL images, nothing of
Bedrock.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from outcrop.inference.loader import LoadedModel, _context_length, _dtype, default_device

if TYPE_CHECKING:
    from outcrop.inference.engine import Deployment

SEGMENTATION = "segmentation"
#: The native format of a segmentation card (catalog/foundation_models.toml): how the catalog tells it from an image
#: generator, both of which output images.
SEGMENTATION_FORMAT = "clipseg"
#: The probability above which a pixel belongs to the phrase. CLIPSeg is trained with a per-pixel binary
#: cross-entropy, so 0.5 would be even odds; its map is made at 352 px and is soft at an object's edges, where
#: the probabilities fall through the 0.4-0.5 band over several pixels, so a little under even odds keeps the
#: object's rim. Below it, a pixel is left alone.
THRESHOLD = 0.4
#: The mask grows by this share of the image's longer side (at least 1 px: 5 px on a 512-px image) after the
#: threshold: inpainting that stops exactly at an object's edge leaves a halo of the old object's pixels around
#: the new content (the edit is pasted back inside the mask only), and outpainting that keeps the object frays
#: its outline. A ring of a few pixels gives the denoiser the edge to blend.
DILATION = 0.01


def load_segmenter(path: Path, device: torch.device | None = None) -> LoadedModel:
    """A CLIPSeg folder: the model, its tokenizer, and its processor in `extra["processor"]`."""
    from transformers import CLIPSegForImageSegmentation, CLIPSegProcessor

    device = device or default_device()
    processor = CLIPSegProcessor.from_pretrained(path)
    model = CLIPSegForImageSegmentation.from_pretrained(path, dtype=_dtype(device)).to(device).eval()
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return LoadedModel(SEGMENTATION, model, processor.tokenizer, device,
                       _context_length(model.config.text_config, processor.tokenizer), nbytes=nbytes,
                       extra={"processor": processor})


def probabilities(loaded: LoadedModel, image: Any, prompt: str) -> torch.Tensor:
    """(height, width) float probabilities, on the CPU, that each pixel of a PIL image is what `prompt` names."""
    inputs = loaded.extra["processor"](text=[prompt], images=[image.convert("RGB")], padding=True, truncation=True,
                                       max_length=loaded.context_length, return_tensors="pt")
    inputs = {k: v.to(loaded.device, loaded.model.dtype) if torch.is_floating_point(v) else v.to(loaded.device)
              for k, v in inputs.items()}
    with torch.inference_mode():
        logits = loaded.model(**inputs).logits
    # (1, side, side), or (side, side) where a transformers version squeezes a batch of one.
    logits = logits.float().reshape(-1, 1, *logits.shape[-2:])[:1]
    resized = torch.nn.functional.interpolate(logits, size=(image.height, image.width), mode="bilinear",
                                              align_corners=False)
    return torch.sigmoid(resized)[0, 0].cpu()


def dilation_radius(width: int, height: int, dilation: float = DILATION) -> int:
    """How many pixels the mask grows by on an image of this size (0 when `dilation` is 0)."""
    return max(1, round(max(width, height) * dilation)) if dilation > 0 else 0


def mask(deployment: Deployment, image: Any, prompt: str, threshold: float = THRESHOLD,
         dilation: float = DILATION) -> Any:
    """A PIL "L" mask the size of `image`: 255 where `prompt` names the pixel (probability above `threshold`, then
    grown by `dilation_radius`), 0 elsewhere. All black when the phrase names nothing in the image."""
    from PIL import Image

    with deployment.lock:
        probs = probabilities(deployment.loaded, image, prompt)
    inside = (probs > threshold).float()[None, None]
    radius = dilation_radius(image.width, image.height, dilation)
    if radius:  # a square grown around each pixel: a max filter
        inside = torch.nn.functional.max_pool2d(inside, 2 * radius + 1, stride=1, padding=radius)
    pixels = (inside[0, 0] > 0).to(torch.uint8).mul_(255).numpy()
    return Image.fromarray(pixels)  # uint8, 2-D: mode "L"

