"""`outcrop image`: make, vary or repaint an image with a model on a running `outcrop serve`.

A bedrock-runtime client like `outcrop chat`: it sends Titan Image Generator's body (TEXT_IMAGE, or
IMAGE_VARIATION with --image, or INPAINTING with --image and --mask) through InvokeModel, so the server's
loaded pipeline, its batching and its usage records serve it, and writes each image as a PNG.
"""

from __future__ import annotations

import argparse
import base64
import json
import re
from pathlib import Path

from outcrop.cli.chat import Fatal, make_client, run_client


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    from outcrop.cli.chat import ENDPOINT_ENV

    image = sub.add_parser("image", parents=[common], help="generate an image with a model on a running server",
                           description="Generate, vary (--image) or repaint (--image and --mask) an image through a "
                                       "running `outcrop serve` (InvokeModel with Titan Image Generator's body) "
                                       "and write it as PNG.")
    image.add_argument("prompt", help="what the image shows")
    image.add_argument("--model", required=True, help="an image model's id or ARN (or a provisioned model's ARN)")
    image.add_argument("-o", "--output", default="image.png",
                       help="the PNG to write (several images: NAME-1.png, NAME-2.png, ...)")
    image.add_argument("--seed", type=int, default=None, help="the same seed makes the same image")
    image.add_argument("--size", default=None, metavar="WxH", help="width x height in pixels (default: the model's)")
    image.add_argument("--count", type=int, default=1, help="how many images (seeds SEED, SEED+1, ...)")
    image.add_argument("--negative", default=None, help="what the image should not show")
    image.add_argument("--cfg-scale", type=float, default=None, help="how closely to follow the prompt")
    image.add_argument("--premium", action="store_true", help="more denoising steps")
    image.add_argument("--image", dest="source", default=None, metavar="FILE",
                       help="vary this PNG or JPEG (or repaint it, with --mask)")
    image.add_argument("--similarity", type=float, default=None,
                       help="with --image alone: how close the variation stays to it, 0.2 to 1.0")
    image.add_argument("--mask", default=None, metavar="FILE",
                       help="with --image: repaint where this mask is black, keep the rest")
    image.add_argument("--endpoint-url", default=None, help=f"the Outcrop server (default: ${ENDPOINT_ENV}, else "
                                                            "the configured host and port)")
    image.set_defaults(func=lambda args: run_client(_image, args))


def body(args: argparse.Namespace) -> dict:
    """Titan Image Generator's InvokeModel body for these arguments."""
    config: dict = {"numberOfImages": args.count, "quality": "premium" if args.premium else "standard"}
    if args.seed is not None:
        config["seed"] = args.seed
    if args.cfg_scale is not None:
        config["cfgScale"] = args.cfg_scale
    if args.size:
        match = re.fullmatch(r"(\d+)[xX](\d+)", args.size)
        if not match:
            raise Fatal(f"--size must be WIDTHxHEIGHT, e.g. 512x512, got {args.size!r}")
        config["width"], config["height"] = int(match[1]), int(match[2])
    text = {"text": args.prompt} | ({"negativeText": args.negative} if args.negative else {})
    if args.mask and not args.source:
        raise Fatal("--mask needs --image (the picture to repaint)")
    if args.similarity is not None and (args.mask or not args.source):
        raise Fatal("--similarity goes with --image alone (a variation), not with --mask or without --image")
    if args.source is None:
        return {"taskType": "TEXT_IMAGE", "textToImageParams": text, "imageGenerationConfig": config}
    if args.size:
        raise Fatal("--size cannot be given with --image: the image's own size is kept")
    image = _read(args.source)
    if args.mask:
        return {"taskType": "INPAINTING", "imageGenerationConfig": config,
                "inPaintingParams": {**text, "image": image, "maskImage": _read(args.mask)}}
    variation = {**text, "images": [image]}
    if args.similarity is not None:
        variation["similarityStrength"] = args.similarity
    return {"taskType": "IMAGE_VARIATION", "imageVariationParams": variation, "imageGenerationConfig": config}


def _read(path: str) -> str:
    try:
        return base64.b64encode(Path(path).read_bytes()).decode()
    except OSError as exc:
        raise Fatal(f"cannot read {path}: {exc.strerror}") from None


def _image(args: argparse.Namespace) -> int:
    runtime = make_client(args)
    request = body(args)
    answer = json.loads(runtime.invoke_model(modelId=args.model, body=json.dumps(request))["body"].read())
    if answer.get("error"):
        raise Fatal(answer["error"])
    output = Path(args.output)
    images = answer["images"]
    names = [output] if len(images) == 1 else \
        [output.with_name(f"{output.stem}-{i}{output.suffix or '.png'}") for i in range(1, len(images) + 1)]
    for name, image in zip(names, images, strict=True):
        name.parent.mkdir(parents=True, exist_ok=True)
        name.write_bytes(base64.b64decode(image))
        print(name, flush=True)
    return 0
