"""Readiness without HTTP: bounded waits for a loading model, preloading, a bounded queue for the batch."""

from __future__ import annotations

import threading
import time

import pytest

from outcrop.errors import Cancelled, ModelNotReadyException, ResourceNotFoundException, ThrottlingException
from outcrop.inference import engine as engine_module
from outcrop.inference.engine import LOADING, NOT_LOADED, READY, BoundedEngine, Engine, Preload
from outcrop.inference.loader import CAUSAL
from outcrop.inference.sampling import SamplingParams
from outcrop.inference.scheduler import THROTTLED
from outcrop.platform.config import load_settings
from tests.helpers import make_endless_llama, make_tiny_llama


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def gated(monkeypatch):
    """load_causal_lm held until `release` is set, counting its calls (and failing on demand)."""
    real = engine_module.load_causal_lm
    gate = {"release": threading.Event(), "calls": 0, "fail": None}

    def load(*args, **kwargs):
        gate["calls"] += 1
        assert gate["release"].wait(30)
        if gate["fail"] is not None:
            raise gate["fail"]
        return real(*args, **kwargs)
    monkeypatch.setattr(engine_module, "load_causal_lm", load)
    return gate


def _wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_bounded_wait_answers_model_not_ready_while_the_load_goes_on(tmp_path, tiny_dir, gated):
    engine = Engine(tmp_path / "cache", memory_budget_bytes=1 << 30, max_batch=2)
    try:
        assert engine.state(tiny_dir) == NOT_LOADED
        started = time.monotonic()
        with pytest.raises(ModelNotReadyException):
            engine.get(tiny_dir, wait=0.2)
        assert 0.2 <= time.monotonic() - started < 5
        assert engine.state(tiny_dir) == LOADING
        with pytest.raises(ModelNotReadyException):  # a second caller joins the same load
            BoundedEngine(engine, 0.05).get(tiny_dir)
        # A caller that waits without a bound (provisioning, a job) gets the deployment once it is loaded.
        got: list = []
        waiter = threading.Thread(target=lambda: got.append(engine.get(tiny_dir)))
        waiter.start()
        gated["release"].set()
        waiter.join(30)
        assert engine.state(tiny_dir) == READY
        assert engine.get(tiny_dir, wait=0) is got[0]  # ready: no wait at all
        assert gated["calls"] == 1  # one load for all of them
    finally:
        engine.close()


def test_a_failed_load_reaches_every_waiter_and_the_next_call_tries_again(tmp_path, tiny_dir, gated):
    engine = Engine(tmp_path / "cache", memory_budget_bytes=1 << 30, max_batch=2)
    try:
        gated["fail"] = OSError("/secret/path/model.safetensors is corrupt")
        errors: list = []

        def ask():
            try:
                engine.get(tiny_dir, wait=30)
            except OSError as exc:
                errors.append(exc)
        threads = [threading.Thread(target=ask) for _ in range(3)]
        for thread in threads:
            thread.start()
        _wait_for(lambda: gated["calls"] == 1)
        gated["release"].set()
        for thread in threads:
            thread.join(30)
        assert len(errors) == 3 and gated["calls"] == 1
        assert engine.state(tiny_dir) == "failed: OSError"  # the type only: the message names a path
        gated["fail"] = None
        assert engine.get(tiny_dir).scheduler is not None
        assert engine.state(tiny_dir) == READY and gated["calls"] == 2
    finally:
        engine.close()


def test_preload_reports_loading_then_ready_and_failures_by_type(tmp_path, tiny_dir, gated):
    engine = Engine(tmp_path / "cache", memory_budget_bytes=1 << 30, max_batch=2)

    def missing():
        raise ResourceNotFoundException("The model nope does not exist.")
    preload = Preload(engine, {"tiny": lambda: (tiny_dir, CAUSAL), "nope": missing})
    try:
        assert preload.status() == LOADING and preload.models() == {"tiny": LOADING, "nope": LOADING}
        preload.start()
        _wait_for(lambda: gated["calls"] == 1)
        assert preload.status() == LOADING and preload.models()["tiny"] == LOADING
        # A request for the model now waits on the preload's own load instead of starting another.
        with pytest.raises(ModelNotReadyException):
            engine.get(tiny_dir, wait=0.05)
        gated["release"].set()
        assert preload.wait(30)
        assert preload.models() == {"tiny": READY, "nope": "failed: ResourceNotFoundException"}
        assert preload.status() == "failed"
        assert gated["calls"] == 1
        assert Preload(engine, {}).start().status() == READY  # nothing to preload: ready at once
        assert Preload(engine, {"tiny": lambda: (tiny_dir, CAUSAL)}).start().wait(30)
    finally:
        engine.close()


def test_preload_models_setting_takes_a_comma_separated_string_or_a_toml_list(tmp_path, monkeypatch):
    monkeypatch.delenv("OUTCROP_PRELOAD_MODELS", raising=False)
    monkeypatch.delenv("OUTCROP_CONFIG", raising=False)
    assert load_settings(data_dir=tmp_path).preload_model_ids == (
        "huggingface.smollm2-135m-instruct-v1:0", "sentence-transformers.all-minilm-l6-v2-v1:0")
    monkeypatch.setenv("OUTCROP_PRELOAD_MODELS", "")
    assert load_settings(data_dir=tmp_path).preload_model_ids == ()
    monkeypatch.setenv("OUTCROP_PRELOAD_MODELS", " a , b,a ")
    assert load_settings(data_dir=tmp_path).preload_model_ids == ("a", "b")
    monkeypatch.delenv("OUTCROP_PRELOAD_MODELS")
    (tmp_path / "outcrop.toml").write_text('preload_models = ["x", "y"]\nmax_queue_wait_seconds = 0\n')
    settings = load_settings(data_dir=tmp_path)
    assert settings.preload_model_ids == ("x", "y") and settings.max_queue_wait_seconds == 0


# -- the bounded queue ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def endless_dir(tmp_path_factory):
    return make_endless_llama(tmp_path_factory.mktemp("endless"), context=1024)


def test_a_request_that_finds_no_place_in_time_is_throttled_before_it_starts(tmp_path, endless_dir):
    engine = Engine(tmp_path / "cache", memory_budget_bytes=1 << 30, max_batch=1, max_queue_wait_s=0.3)
    try:
        deployment = engine.get(endless_dir)
        scheduler = deployment.scheduler
        ids = deployment.loaded.tokenizer("hello world")["input_ids"]
        long = SamplingParams(max_tokens=100_000, temperature=0)
        first_cancel = threading.Event()
        first = scheduler.submit(ids, long, cancelled=first_cancel)  # takes the only place
        started = time.monotonic()
        with pytest.raises(ThrottlingException) as raised:
            scheduler.submit(ids, SamplingParams(max_tokens=4, temperature=0))
        assert 0.3 <= time.monotonic() - started < 5
        assert raised.value.message == THROTTLED and raised.value.status == 429
        assert scheduler.active == 1  # it left the queue; the first one goes on
        # A caller cancelled while it waits gets its stream back, which says Cancelled (never throttled).
        cancel = threading.Event()
        threading.Timer(0.05, cancel.set).start()
        stream = scheduler.submit(ids, long, cancelled=cancel)
        with pytest.raises(Cancelled):
            stream.result()
        # When the place frees up within the bound, the waiting request runs.
        threading.Timer(0.1, first_cancel.set).start()
        assert scheduler.submit(ids, SamplingParams(max_tokens=4, temperature=0)).result().output_tokens == 4
        with pytest.raises(Cancelled):
            first.result()
    finally:
        engine.close()


def test_without_a_bound_submit_returns_at_once_and_the_request_waits(tmp_path, endless_dir):
    engine = Engine(tmp_path / "cache", memory_budget_bytes=1 << 30, max_batch=1)  # a job's engine
    try:
        deployment = engine.get(endless_dir)
        ids = deployment.loaded.tokenizer("hello world")["input_ids"]
        streams = [deployment.scheduler.submit(ids, SamplingParams(max_tokens=30, temperature=0)) for _ in range(3)]
        assert [s.result().output_tokens for s in streams] == [30, 30, 30]
    finally:
        engine.close()


def test_boto3_retries_both_answers_by_default():
    """ModelNotReadyException is modeled retryable, ThrottlingException is a throttling error: boto3's
    default (standard) retry mode retries both, so a client sees them only when its attempts run out."""
    import botocore.session
    from botocore.awsrequest import AWSResponse
    from botocore.retries.standard import RetryContext, StandardRetryConditions

    session = botocore.session.get_session()
    operation = session.get_service_model("bedrock-runtime").operation_model("Converse")
    conditions = StandardRetryConditions()
    for code in ("ModelNotReadyException", "ThrottlingException"):
        context = RetryContext(attempt_number=1, operation_model=operation,
                               parsed_response={"Error": {"Code": code, "Message": "..."}},
                               http_response=AWSResponse("http://x", 429, {}, None))
        assert conditions.is_retryable(context), code
