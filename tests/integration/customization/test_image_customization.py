"""Image fine-tuning end to end through boto3, as Titan Image Generator is customized: image-caption pairs in the
user's bucket, a job, a LoRA custom model, provisioned throughput, and a Titan body answered by the custom model."""

from __future__ import annotations

import base64
import io
import json
import shutil
import uuid
from pathlib import Path

import pytest
from PIL import Image

from tests.backends import objects_path
from tests.conftest import register_model
from tests.integration.customization.test_customization import jsonl, outcrop, wait
from tests.integration.provisioning.test_provisioning import wait_in_service

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 60), "blue": (30, 60, 220), "yellow": (240, 220, 40),
           "cyan": (40, 220, 220), "magenta": (210, 40, 200), "black": (10, 10, 10), "white": (250, 250, 250)}
BUCKET = "img-ft-data"
RED_SQUARE = {"taskType": "TEXT_IMAGE", "textToImageParams": {"text": "a red square"},
              "imageGenerationConfig": {"width": 64, "height": 64, "numberOfImages": 1, "seed": 3}}


@pytest.fixture(scope="module")
def pipeline_dir(tmp_path_factory) -> Path:
    from tests.helpers import make_tiny_diffusion

    return make_tiny_diffusion(tmp_path_factory.mktemp("canvas"))


@pytest.fixture(scope="module")
def canvas(server, pipeline_dir) -> str:
    """The tiny Stable Diffusion pipeline in the server's catalog."""
    return register_model(server, "tiny-canvas", pipeline_dir)


@pytest.fixture(scope="module")
def role(server, tmp_path_factory) -> str:
    """Eight PNGs of coloured squares, their captions as Bedrock's image JSONL, and a role that may read them."""
    folder = tmp_path_factory.mktemp("pictures")
    for name, rgb in COLOURS.items():
        image = Image.new("RGB", (64, 64), (128, 128, 128))
        image.paste(Image.new("RGB", (32, 32), rgb), (16, 16))
        image.save(folder / f"{name}.png")
    records = [{"image-ref": f"s3://{BUCKET}/train/{name}.png", "caption": f"a {name} square"} for name in COLOURS]
    (folder / "train.jsonl").write_text(jsonl(records))
    (folder / "validation.jsonl").write_text(jsonl(records[:2]))
    outcrop(server.data_dir, "s3", "mb", f"s3://{BUCKET}")
    outcrop(server.data_dir, "s3", "cp", str(folder), f"s3://{BUCKET}/train/", "--recursive")
    return outcrop(server.data_dir, "iam", "create-role", "--name", "img-ft-role", "--s3-access", BUCKET).strip()


def create(bedrock, base: str, role: str, **hyper: str) -> str:
    name = f"paint-{uuid.uuid4().hex[:8]}"
    return bedrock.create_model_customization_job(
        jobName=name, customModelName=f"model-{name}", roleArn=role, baseModelIdentifier=base,
        customizationType="FINE_TUNING", trainingDataConfig={"s3Uri": f"s3://{BUCKET}/train/train.jsonl"},
        validationDataConfig={"validators": [{"s3Uri": f"s3://{BUCKET}/train/validation.jsonl"}]},
        outputDataConfig={"s3Uri": f"s3://{BUCKET}/out/"}, hyperParameters=hyper)["jobArn"]


def only_image(body: dict) -> Image.Image:
    assert body["error"] is None and len(body["images"]) == 1, body
    image = Image.open(io.BytesIO(base64.b64decode(body["images"][0])))
    assert image.format == "PNG" and image.size == (64, 64)
    return image.convert("RGB")


def test_pipelines_this_loss_would_train_wrong_are_refused_at_create(server, pipeline_dir, role, tmp_path):
    """The tiny pipeline's files under SDXL's pipeline class: refused by the API, before any job runs."""
    shutil.copytree(pipeline_dir, tmp_path / "sdxl")
    index = tmp_path / "sdxl" / "model_index.json"
    index.write_text(json.dumps({**json.loads(index.read_text()), "_class_name": "StableDiffusionXLPipeline"}))
    sdxl = register_model(server, "tiny-sdxl", tmp_path / "sdxl")
    bedrock = server.client("bedrock")
    with pytest.raises(bedrock.exceptions.ValidationException, match="is a StableDiffusionXLPipeline pipeline, "
                       "which cannot be fine-tuned here: image fine-tuning trains Stable Diffusion 1.x and 2.x"):
        create(bedrock, sdxl, role, stepCount="4")
    assert not bedrock.list_model_customization_jobs(nameContains="paint-")["modelCustomizationJobSummaries"]


def test_fine_tune_an_image_model_provision_it_and_paint(server, runtime, canvas, role):
    bedrock = server.client("bedrock")
    with pytest.raises(bedrock.exceptions.ValidationException, match="give stepCount or epochCount, not both"):
        create(bedrock, canvas, role, stepCount="4", epochCount="1")

    job_arn = create(bedrock, canvas, role, stepCount="4", batchSize="4", learningRate="0.01", loraRank="4")
    job = wait(bedrock, job_arn)
    assert job["status"] == "Completed", job.get("failureMessage")
    assert {d["status"] for d in job["statusDetails"].values()} == {"Completed"}
    assert job["hyperParameters"] == {"stepCount": "4", "batchSize": "4", "learningRate": "0.01", "loraRank": "4",
                                      "loraAlpha": "8", "resolution": "64", "seed": "42"}
    assert job["trainingMetrics"]["trainingLoss"] > 0 and len(job["validationMetrics"]) == 4

    out = objects_path(server.data_dir, f"s3://{BUCKET}/out/model-customization-job-{job_arn.rsplit('/', 1)[1]}")
    steps = (out / "training_artifacts" / "step_wise_training_metrics.csv").read_text().splitlines()
    assert steps[0] == "step_number,epoch_number,training_loss"  # a mean squared error has no perplexity
    assert [line.split(",")[:2] for line in steps[1:]] == [["1", "1"], ["2", "1"], ["3", "2"], ["4", "2"]]
    validation = out / "validation_artifacts" / "post_fine_tuning_validation" / "validation_metrics.csv"
    assert validation.read_text().splitlines()[0] == "step_number,epoch_number,validation_loss"

    model_arn = job["outputModelArn"]
    account, model_id = model_arn.split(":")[4], model_arn.rsplit("/", 1)[1]
    folder = server.data_dir / "custom-models" / account / model_id
    assert (folder / "pytorch_lora_weights.safetensors").is_file()
    assert bedrock.get_custom_model(modelIdentifier=model_arn)["baseModelArn"].endswith(canvas)

    # Served as Bedrock serves a custom model: through provisioned throughput, the LoRA on its base pipeline.
    arn = bedrock.create_provisioned_model_throughput(
        modelUnits=1, provisionedModelName=f"painter-{model_id[:8]}", modelId=model_arn)["provisionedModelArn"]
    try:
        got = wait_in_service(bedrock, arn)
        assert got["status"] == "InService", got.get("failureMessage")
        answer = runtime.invoke_model(modelId=arn, body=json.dumps(RED_SQUARE))
        custom = only_image(json.loads(answer["body"].read()))
        base = only_image(json.loads(runtime.invoke_model(modelId=canvas, body=json.dumps(RED_SQUARE))["body"].read()))
        assert custom.tobytes() != base.tobytes()  # one seed, one prompt: only the LoRA differs
    finally:
        bedrock.delete_provisioned_model_throughput(provisionedModelId=arn)
