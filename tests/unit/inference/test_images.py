"""The image scheduler on a tiny random Stable Diffusion pipeline: requests of one shape denoise in one pipeline
call, each image is its seed's whatever batch it ran in, and a queue that does not move throttles."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from outcrop.errors import ThrottlingException
from outcrop.inference import images
from outcrop.inference.images import TEXT_TO_IMAGE, ImageRequest, ImageScheduler, load_image_pipeline


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    from tests.helpers import make_tiny_diffusion

    return load_image_pipeline(make_tiny_diffusion(tmp_path_factory.mktemp("pipeline")))


def request(seed: int, prompt: str = "a lighthouse", size: int = 64, steps: int = 3) -> ImageRequest:
    return ImageRequest(TEXT_TO_IMAGE, prompt, size, size, steps, 5.0, (seed,))


def pixels(made) -> np.ndarray:
    return np.asarray(made[0].image, dtype=np.int16)


def test_requests_of_one_shape_share_a_call_and_keep_their_own_images(loaded, monkeypatch):
    alone = {seed: pixels(images.generate(loaded, [request(seed, f"prompt {seed}")])[0]) for seed in (1, 2, 3)}
    calls: list[int] = []
    real = images.generate

    def counted(loaded, requests, interrupted=lambda: False):
        calls.append(len(requests))
        return real(loaded, requests, interrupted)

    monkeypatch.setattr(images, "generate", counted)
    scheduler = ImageScheduler(loaded, max_batch=8)
    gate = threading.Lock()
    gate.acquire()
    # Hold the worker in its first call, so that everything submitted meanwhile waits together.
    monkeypatch.setattr(images, "GATHER_S", 0.0)
    blocker = scheduler.submit(request(9, size=32))
    with scheduler.step_lock:  # the worker is about to run the blocker: it waits for this lock
        jobs = {seed: scheduler.submit(request(seed, f"prompt {seed}")) for seed in (1, 2, 3)}
        odd = scheduler.submit(request(4, steps=2))  # another shape: its own call
    blocker.result()
    made = {seed: job.result() for seed, job in jobs.items()}
    odd.result()
    scheduler.close()
    assert sorted(calls) == [1, 1, 3]
    for seed, image in made.items():
        # The same noise and prompt: equal up to float rounding in a batch of another size.
        assert np.abs(pixels(image) - alone[seed]).max() <= 2
        assert image[0].seed == seed
    assert np.abs(pixels(made[1]) - pixels(made[2])).mean() > 5


def test_a_request_that_finds_no_place_in_time_is_throttled(loaded):
    scheduler = ImageScheduler(loaded, max_batch=1, max_queue_wait_s=0.2)
    try:
        with scheduler.step_lock:
            first = threading.Thread(target=lambda: scheduler.submit(request(1)))
            first.start()
            first.join()
            with pytest.raises(ThrottlingException):
                scheduler.submit(request(2, steps=2))
        assert scheduler.active <= 1
    finally:
        scheduler.close()


def test_a_batch_everyone_left_stops_at_the_next_step_without_decoding(loaded, monkeypatch):
    from outcrop.errors import Cancelled

    steps, decoded = [], []
    pipeline = loaded.model
    real_step, real_decode = pipeline.unet.forward, pipeline.vae.decode
    monkeypatch.setattr(pipeline.unet, "forward", lambda *a, **k: steps.append(1) or real_step(*a, **k))
    monkeypatch.setattr(pipeline.vae, "decode", lambda *a, **k: decoded.append(1) or real_decode(*a, **k))
    with pytest.raises(Cancelled):
        images.generate(loaded, [request(1, steps=20)], interrupted=lambda: len(steps) >= 2)
    assert len(steps) == 2 and decoded == []  # not the 18 steps left, nor the VAE's decode of a picture for no one
