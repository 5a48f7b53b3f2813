"""CLIP: a text, an image, or both, into one vector of a space the two share (multimodal embeddings).

A `CLIPModel` folder loads with its tokenizer and image processor. Text and image each go through their
own tower and projection; a text and an image given together become one vector, the normalized sum of
the two unit vectors: their mean's direction, which is what Titan Multimodal Embeddings answers for both
("a vector that averages the text and the image embeddings"), and which stays in the joint space, so it is
compared with text-only and image-only vectors as they are with each other. Knows tensors and PIL images,
nothing of Bedrock.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from outcrop.inference.loader import LoadedModel, _context_length, _dtype, default_device

if TYPE_CHECKING:  # the engine imports this module (its loaders)
    from outcrop.inference.engine import Deployment

CLIP = "clip"


def load_clip(path: Path, device: torch.device | None = None) -> LoadedModel:
    """A CLIP folder: the model, its tokenizer, and its image processor in `extra["image_processor"]`."""
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    device = device or default_device()
    tokenizer = AutoTokenizer.from_pretrained(path)
    image_processor = AutoImageProcessor.from_pretrained(path)
    model = CLIPModel.from_pretrained(path, dtype=_dtype(device)).to(device).eval()
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return LoadedModel(CLIP, model, tokenizer, device, _context_length(model.config.text_config, tokenizer),
                       normalize=True, nbytes=nbytes, extra={"image_processor": image_processor})


def dimension(loaded: LoadedModel) -> int:
    """The length of every vector this model gives: its projection's."""
    return int(loaded.model.config.projection_dim)


def embed(deployment: Deployment, text_ids: list[int] | None, image: Any | None) -> torch.Tensor:
    """One unit vector (on the CPU) for a text's token ids, a PIL image, or both (the normalized sum)."""
    loaded = deployment.loaded
    model = loaded.model
    parts = []
    with deployment.lock, torch.inference_mode():
        if text_ids is not None:
            ids = torch.tensor([text_ids], device=loaded.device)
            parts.append(_features(model.get_text_features(input_ids=ids, attention_mask=torch.ones_like(ids))))
        if image is not None:
            pixels = loaded.extra["image_processor"](images=image, return_tensors="pt")["pixel_values"]
            parts.append(_features(model.get_image_features(pixel_values=pixels.to(loaded.device, model.dtype))))
    if not parts:
        raise ValueError("a text, an image, or both")
    return torch.nn.functional.normalize(sum(parts), dim=-1)[0]


def _features(out: Any) -> torch.Tensor:
    """A unit vector from `get_*_features`: a tensor before transformers 5, an output whose pooled member is
    the projection since."""
    features = out if isinstance(out, torch.Tensor) else out.pooler_output
    return torch.nn.functional.normalize(features.float().cpu(), dim=-1)
