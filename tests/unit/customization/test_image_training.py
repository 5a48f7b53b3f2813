"""Image fine-tuning on the tiny Stable Diffusion pipeline: the LoRA learns, diffusers loads what was saved, a
restart resumes exactly, and a bad dataset line is named."""

from __future__ import annotations

import functools
import io
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from outcrop.catalog.cards import FoundationModel, ImageLimits, WeightsSource
from outcrop.customization import hyperparameters
from outcrop.customization.datasets import DatasetError
from outcrop.customization.image_training import (
    Denoiser,
    ImagePair,
    ImageTrainingConfig,
    check_base,
    encode,
    load_tokenizer,
    read_pairs,
    train,
    validation_loss,
)
from outcrop.errors import ValidationException
from outcrop.inference.images import LORA_WEIGHTS
from outcrop.platform.objectstore import LocalObjectStore
from tests.helpers import make_tiny_diffusion

CPU = torch.device("cpu")
COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (30, 60, 220), "yellow": (240, 220, 40),
           "cyan": (40, 220, 220), "magenta": (210, 40, 200), "black": (10, 10, 10), "white": (250, 250, 250)}
#: Rank and alpha differ, so a LoRA file that lost its alpha would not reproduce the trained model.
CONFIG = ImageTrainingConfig(steps=10, batch_size=8, learning_rate=1e-2, lora_rank=4, lora_alpha=8, seed=7)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return make_tiny_diffusion(tmp_path_factory.mktemp("tiny-diffusion"))


def square(colour: tuple[int, int, int], size: int = 64) -> Image.Image:
    """A coloured square on grey: each caption names what its picture shows."""
    image = Image.new("RGB", (size, size), (128, 128, 128))
    image.paste(Image.new("RGB", (size // 2, size // 2), colour), (size // 4, size // 4))
    return image


@pytest.fixture(scope="module")
def pairs() -> list[ImagePair]:
    return [ImagePair(f"a {name} square", functools.partial(square, rgb), line) for line, (name, rgb)
            in enumerate(COLOURS.items(), start=1)]


@pytest.fixture(scope="module")
def trained(base, pairs, tmp_path_factory):
    """Ten steps on the eight pairs, measured on the same pairs (fixed noise and timesteps) along the way."""
    seen = []
    result = train(base, pairs, pairs, CONFIG, tmp_path_factory.mktemp("work"), on_progress=seen.append, device=CPU)
    return result, seen


def denoiser_of(pipeline, base: Path) -> Denoiser:
    from diffusers import DDPMScheduler

    return Denoiser(pipeline.unet, pipeline.vae, pipeline.text_encoder, pipeline.tokenizer,
                    DDPMScheduler.from_pretrained(base, subfolder="scheduler"))


def test_training_lowers_the_loss_and_diffusers_loads_the_lora(base, pairs, trained):
    from diffusers import StableDiffusionPipeline

    result, seen = trained
    assert not result.stopped and result.steps == 10 and result.images == 80
    assert [p.step for p in seen] == list(range(1, 11)) and seen[-1].percent == 100.0
    assert [s for s, _, _ in result.step_metrics] == list(range(1, 11))
    assert len(result.validation_metrics) == 10  # EVALUATIONS: one every step of ten
    assert sorted(path.name for path in result.model_dir.iterdir()) == [LORA_WEIGHTS]

    # The same pairs, noised alike (one seed), before training and through the LoRA file diffusers loaded.
    pipeline = StableDiffusionPipeline.from_pretrained(base)
    data = encode(denoiser_of(pipeline, base), pairs, 64)
    before = validation_loss(denoiser_of(pipeline, base), data, 8, CONFIG.seed)
    pipeline.load_lora_weights(str(result.model_dir), weight_name=LORA_WEIGHTS)
    assert pipeline.get_list_adapters() == {"unet": ["default_0"]}
    after = validation_loss(denoiser_of(pipeline, base), data, 8, CONFIG.seed)
    assert after < before - 0.02, (before, after)
    # The file is the trained model: the loss through it is the trainer's own last validation loss.
    assert after == pytest.approx(result.validation_metrics[-1][2], rel=1e-5)


def test_a_stopped_job_resumes_from_its_checkpoint_exactly(base, pairs, trained, tmp_path):
    steps = []

    def stop_after_four() -> bool:
        return len(steps) == 4

    first = train(base, pairs, pairs, CONFIG, tmp_path, on_progress=steps.append, should_stop=stop_after_four,
                  device=CPU)
    assert first.stopped and first.steps == 4 and first.model_dir is None
    resumed = train(base, pairs, pairs, CONFIG, tmp_path, device=CPU)
    uninterrupted = trained[0]
    assert resumed.step_metrics == uninterrupted.step_metrics
    assert resumed.validation_metrics == uninterrupted.validation_metrics


# --- the dataset -----------------------------------------------------------------------------------------


SOURCE = "s3://pictures/train.jsonl"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> LocalObjectStore:
    store = LocalObjectStore(tmp_path_factory.mktemp("objects"))
    store.create_bucket("pictures")

    def png(image: Image.Image, fmt: str = "PNG") -> bytes:
        out = io.BytesIO()
        image.save(out, format=fmt)
        return out.getvalue()

    store.put_bytes("s3://pictures/red.png", png(square(COLOURS["red"])))
    store.put_bytes("s3://pictures/small.png", png(square(COLOURS["red"], 16)))
    store.put_bytes("s3://pictures/red.gif", png(square(COLOURS["red"]), "GIF"))
    store.put_bytes("s3://pictures/notes.txt", b"not a picture")
    return store


@pytest.fixture(scope="module")
def tokenizer(base):
    return load_tokenizer(base)


GOOD = json.dumps({"image-ref": "s3://pictures/red.png", "caption": "a red square"})


@pytest.mark.parametrize(("record", "problem"), [
    ({"caption": "a red square"}, "missing key 'image-ref'; an image record is"),
    ({"image-ref": "s3://pictures/red.png"}, "missing key 'caption'"),
    ({"image-ref": "s3://pictures/red.png", "caption": "red", "label": 3}, "unknown key 'label' in an image record"),
    ({"image-ref": "https://example.com/red.png", "caption": "red"}, '"image-ref" is not an S3 URI'),
    ({"image-ref": "s3://pictures/red.png", "caption": ""}, '"caption" is empty'),
    ({"image-ref": "s3://pictures/gone.png", "caption": "red"}, "s3://pictures/gone.png does not exist"),
    ({"image-ref": "s3://pictures/notes.txt", "caption": "red"}, "s3://pictures/notes.txt cannot be decoded"),
    ({"image-ref": "s3://pictures/red.gif", "caption": "red"}, "is a GIF image; images must be PNG or JPEG"),
    ({"image-ref": "s3://pictures/small.png", "caption": "red"}, "is 16x16 pixels; each side must be from 64"),
    # The tiny tokenizer spells one token a character: 80 of them, with start and end 82, over 77.
    ({"image-ref": "s3://pictures/red.png", "caption": "r" * 80}, "the caption is 82 tokens; the model's text "
                                                                   "encoder reads at most 77"),
])
def test_a_bad_line_is_named(store, tokenizer, record, problem):
    lines = [GOOD, "", json.dumps(record)]  # the blank line counts: the bad record is on line 3
    with pytest.raises(DatasetError) as caught:
        read_pairs(lines, source=SOURCE, store=store, tokenizer=tokenizer, min_records=1, max_records=10)
    assert caught.value.message.startswith(f"{SOURCE} line 3: "), caught.value.message
    assert problem in caught.value.message, caught.value.message


def test_good_lines_read_and_counted(store, tokenizer):
    pairs = read_pairs([GOOD, GOOD], source=SOURCE, store=store, tokenizer=tokenizer, min_records=1, max_records=2)
    assert [(p.caption, p.line, p.image().size) for p in pairs] == [("a red square", 1, (64, 64)),
                                                                   ("a red square", 2, (64, 64))]
    with pytest.raises(DatasetError, match="more than 2 records"):
        read_pairs([GOOD] * 3, source=SOURCE, store=store, tokenizer=tokenizer, min_records=1, max_records=2)
    with pytest.raises(DatasetError, match="2 records; at least 8 are needed"):
        read_pairs([GOOD] * 2, source=SOURCE, store=store, tokenizer=tokenizer, min_records=8, max_records=10)


# --- the base and the hyperparameters --------------------------------------------------------------------


def test_only_stable_diffusion_1_and_2_pipelines_are_fine_tuned(base, tmp_path):
    assert check_base(base, "registered.canvas") == "StableDiffusionPipeline"
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline",
                                                           "unet": ["diffusers", "UNet2DConditionModel"]}))
    with pytest.raises(ValidationException) as caught:
        check_base(tmp_path, "registered.sdxl")
    assert caught.value.message == (
        "The base model registered.sdxl is a StableDiffusionXLPipeline pipeline, which cannot be fine-tuned here: "
        "image fine-tuning trains Stable Diffusion 1.x and 2.x pipelines (StableDiffusionPipeline, "
        "StableDiffusionImg2ImgPipeline) only")


CANVAS = FoundationModel(model_id="registered.canvas", name="canvas", provider="Registered",
                         input_modalities=("TEXT", "IMAGE"), output_modalities=("IMAGE",), streaming=False,
                         customizations=("FINE_TUNING",), inference_types=("ON_DEMAND", "PROVISIONED"),
                         native_format="diffusers", context_length=0, source=WeightsSource(kind="local-folder"),
                         image=ImageLimits(multiple=2, min_side=16, default_size=(64, 64)))


def test_image_hyperparameters_are_titan_image_generators():
    values = hyperparameters.resolve(CANVAS, "FINE_TUNING", None)
    assert values == {"stepCount": 500, "batchSize": 8, "learningRate": 1e-4, "loraRank": 8, "loraAlpha": 8,
                      "resolution": 64, "seed": 42}  # the resolution is the model's native size
    by_passes = hyperparameters.resolve(CANVAS, "FINE_TUNING", {"epochCount": "3", "resolution": "32"})
    assert "stepCount" not in by_passes and by_passes["epochCount"] == 3 and by_passes["resolution"] == 32
    config = ImageTrainingConfig.from_hyperparameters(by_passes)
    assert (config.steps, config.epochs, config.resolution) == (None, 3, 32)
    for given, message in [({"stepCount": "5", "epochCount": "1"}, "give stepCount or epochCount, not both"),
                           ({"resolution": "33"}, "hyperParameters.resolution: 33 is not a multiple of 2"),
                           ({"resolution": "8"}, "'8' is out of range; it must be an integer from 16 to 2048"),
                           ({"maxSequenceLength": "64"}, "unknown key 'maxSequenceLength'")]:
        with pytest.raises(ValidationException, match=message):
            hyperparameters.resolve(CANVAS, "FINE_TUNING", given)
