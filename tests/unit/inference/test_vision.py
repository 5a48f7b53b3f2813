"""Vision-language generation one request at a time (inference/vision.py), on a tiny random SmolVLM: the batch's
sampling, stops and cancellation, and the wait for the model bounded as the wait for the batch is."""

from __future__ import annotations

import threading
import time

import pytest
from PIL import Image

from outcrop.errors import Cancelled, ThrottlingException
from outcrop.inference import vision
from outcrop.inference.engine import Engine
from outcrop.inference.sampling import SamplingParams
from outcrop.inference.scheduler import STOP_SEQUENCE
from tests.vision_helpers import make_tiny_vlm

ASK = [{"role": "user", "content": f"{vision.IMAGE_MARKER}What is this?"}]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    engine = Engine(tmp_path_factory.mktemp("cache"), memory_budget_bytes=1 << 30)
    yield engine.get(make_tiny_vlm(tmp_path_factory.mktemp("vlm")), vision.VISION)
    engine.close()


def submit(deployment, params, color=(255, 0, 0), wait=0.2, cancelled=None):
    text = vision.ChatTemplate(deployment.loaded).apply_chat_template(ASK, tokenize=False, add_generation_prompt=True)
    request, ids = vision.prepare(deployment, text, [Image.new("RGB", (40, 30), color)], False, wait)
    return request.scheduler.submit(ids, params, cancelled=cancelled)


def test_seeds_and_stop_sequences_behave_as_in_the_batch(deployment):
    sampled = SamplingParams(max_tokens=10, temperature=1.0, seed=3)
    first, second = (submit(deployment, sampled).result() for _ in range(2))
    assert first.text == second.text and first.output_tokens == 10
    assert submit(deployment, sampled, color=(0, 0, 255)).result().text != first.text
    stop = first.text[3:5]
    stopped = submit(deployment, SamplingParams(max_tokens=10, temperature=1.0, seed=3, stop=(stop,))).result()
    assert stopped.finish_reason == STOP_SEQUENCE and stopped.stop_sequence == stop
    assert stopped.text == first.text[:first.text.index(stop)]


def test_one_at_a_time_dropped_throttled_and_cancelled(deployment):
    long = SamplingParams(max_tokens=3000, temperature=1.0)
    dropped = submit(deployment, long)
    deltas = iter(dropped)
    next(deltas)
    deltas.close()  # the consumer went away: the generation stops and lets the model go
    deadline = time.monotonic() + 5
    while deployment.lock.locked() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not deployment.lock.locked() and dropped.produced_tokens < 100
    # The model busy with another request (held here: a random model's sampled request may end at any token).
    with deployment.lock:
        with pytest.raises(ThrottlingException):
            submit(deployment, SamplingParams(max_tokens=2), wait=0.1)
        waiting = threading.Event()
        threading.Timer(0.1, waiting.set).start()
        with pytest.raises(Cancelled):  # cancelled while it waited: it never ran
            submit(deployment, SamplingParams(max_tokens=2), wait=None, cancelled=waiting).result()
