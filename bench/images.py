#!/usr/bin/env python
"""Images per second for concurrent requests: Outcrop's image scheduler against diffusers called per request.

`--clients` (8) requests arrive together, each for one image of the same size and step count with its own
prompt and seed, `--rounds` times:

* diffusers: the pipeline called once per request, one after another (what a server wrapping
  `pipeline(prompt)` does; a pipeline is not safe to call from two threads at once);
* outcrop: the same requests submitted from `--clients` threads to `inference/images.py`'s ImageScheduler
  over the same loaded pipeline, which denoises requests of one shape together (up to `--max-batch` images
  a call), every image with its own seeded generator.

The pipeline is a random Stable Diffusion built here (`--size` px, the default) unless `--folder` names a
real diffusers folder (e.g. SD-Turbo: `--folder PATH --steps 1 --guidance 0 --size 512`, on a GPU when one
is there). Printed: images/s each side, CPU time other processes took meanwhile, and last the line
`ratio <outcrop / diffusers images/s>` (goal: at least 2 on the batch).

    .venv/bin/python bench/images.py [--folder DIR] [--clients 8] [--rounds 3] [--steps 4] [--size 128]
                                     [--guidance 7] [--width-scale 1]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPTS = ["a lighthouse at dawn", "a red fox in snow", "a bowl of ramen", "a sailing boat at sea",
           "a mountain lake", "a city street at night", "an old oak tree", "a cup of coffee"]


def tiny_pipeline(folder: Path, width_scale: int) -> Path:
    """A random SD pipeline a little wider than the tests' (so that compute, not Python, dominates a step)."""
    import torch
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from tests.helpers import make_tiny_diffusion

    base = make_tiny_diffusion(folder / "tokenizer-source")
    torch.manual_seed(0)
    w = 32 * width_scale
    unet = UNet2DConditionModel(
        block_out_channels=(w, 2 * w), layers_per_block=1, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=64, attention_head_dim=8, norm_num_groups=8)
    vae = AutoencoderKL(block_out_channels=(16, 32), in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                        norm_num_groups=8, sample_size=64)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=80, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                        num_attention_heads=4, max_position_embeddings=77, bos_token_id=0,
                                        eos_token_id=1, pad_token_id=1, projection_dim=64))
    reference = StableDiffusionPipeline.from_pretrained(base)
    pipeline = StableDiffusionPipeline(unet=unet, vae=vae, text_encoder=text, tokenizer=reference.tokenizer,
                                       scheduler=EulerDiscreteScheduler.from_config(reference.scheduler.config),
                                       safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipeline.save_pretrained(folder / "pipeline")
    return folder / "pipeline"


def cpu_of_others(since: tuple[float, float]) -> float:
    """CPU seconds the rest of the machine used since `since` (this process's and the machine's totals)."""
    mine, machine = since
    return (_machine_cpu() - machine) - (time.process_time() - mine)


def _machine_cpu() -> float:
    with open("/proc/stat") as fh:
        fields = [float(x) for x in fh.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, default=None, help="a diffusers pipeline folder (default: built)")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--guidance", type=float, default=7.0)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--width-scale", type=int, default=1, help="the built pipeline's UNet width, in 32s")
    args = parser.parse_args()

    import torch

    from outcrop.inference.images import TEXT_TO_IMAGE, ImageRequest, ImageScheduler, load_image_pipeline

    folder = args.folder or tiny_pipeline(Path(tempfile.mkdtemp(prefix="outcrop-bench-images-")), args.width_scale)
    loaded = load_image_pipeline(folder)
    pipeline = loaded.model
    print(f"pipeline {type(pipeline).__name__} from {folder}, {loaded.nbytes / 2**20:.1f} MB on {loaded.device}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"{args.clients} concurrent requests x {args.rounds} rounds, one {args.size}x{args.size} image each, "
          f"{args.steps} steps, guidance {args.guidance}")
    requests = [ImageRequest(TEXT_TO_IMAGE, PROMPTS[i % len(PROMPTS)], args.size, args.size, args.steps,
                             args.guidance, (i,)) for i in range(args.clients)]

    def per_request() -> None:
        for r in requests:
            pipeline(r.prompt, height=r.height, width=r.width, num_inference_steps=r.steps,
                     guidance_scale=r.guidance, generator=torch.Generator().manual_seed(r.seeds[0]))

    scheduler = ImageScheduler(loaded, max_batch=args.max_batch)

    def batched() -> None:
        jobs: list = []
        threads = [threading.Thread(target=lambda r=r: jobs.append(scheduler.submit(r).result())) for r in requests]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(jobs) == len(requests)

    per_request()  # warm-up: first calls allocate
    batched()
    results = {}
    for name, run in (("diffusers", per_request), ("outcrop", batched)):
        since = (time.process_time(), _machine_cpu())
        started = time.perf_counter()
        for _ in range(args.rounds):
            run()
        elapsed = time.perf_counter() - started
        results[name] = args.clients * args.rounds / elapsed
        print(f"{name:10s} {results[name]:7.2f} images/s  ({elapsed:.1f} s; other processes took "
              f"{max(cpu_of_others(since), 0):.1f} CPU s meanwhile)")
    scheduler.close()
    print(f"ratio {results['outcrop'] / results['diffusers']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
