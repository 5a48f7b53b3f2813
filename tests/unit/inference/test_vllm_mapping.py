"""What Outcrop asks of vLLM (engine = "vllm"): its sampling parameters, engine capacity and finish reasons, checked
on CPU. vLLM itself needs a GPU; bench/gpu.sh runs it."""

from __future__ import annotations

from pathlib import Path

import pytest

from outcrop.inference.sampling import SamplingParams
from outcrop.inference.scheduler import END_OF_TEXT, LENGTH, STOP_SEQUENCE
from outcrop.inference.vllm_engine import MAX_LORA_RANK, engine_args, finish, sampling_kwargs


def test_sampling_parameters_carry_over():
    kwargs = sampling_kwargs(SamplingParams(max_tokens=64, temperature=0.5, top_p=0.8, top_k=40, seed=7,
                                            stop=("\n\n", "END")))
    assert kwargs == {"n": 1, "max_tokens": 64, "temperature": 0.5, "top_p": 0.8, "top_k": 40, "seed": 7,
                      "stop": ["\n\n", "END"], "include_stop_str_in_output": False, "skip_special_tokens": True,
                      "spaces_between_special_tokens": False}


@pytest.mark.parametrize("params", [SamplingParams(temperature=0), SamplingParams(top_k=1, temperature=0.9)])
def test_greedy_is_greedy_on_vllm_too(params):
    kwargs = sampling_kwargs(params)
    assert (kwargs["temperature"], kwargs["top_p"], kwargs["top_k"]) == (0.0, 1.0, -1)


def test_top_k_off_grammar_and_visible_tokens():
    kwargs = sampling_kwargs(SamplingParams(top_k=0, grammar="start: /[a-z]+/", visible_tokens=frozenset({5})))
    assert kwargs["top_k"] == -1  # vLLM's "off"
    assert kwargs["grammar"] == "start: /[a-z]+/"  # to vLLM's structured outputs, llguidance backend
    assert kwargs["skip_special_tokens"] is False  # a tool call's marker token stays in the text


def test_finish_reasons():
    assert finish("length", None) == (LENGTH, None)
    assert finish("stop", "END") == (STOP_SEQUENCE, "END")
    assert finish("stop", None) == (END_OF_TEXT, None)  # end of sequence
    assert finish("stop", 2) == (END_OF_TEXT, None)  # a stop token id (EOS among them)


def test_model_units_map_to_vllm_capacity():
    plain = engine_args(Path("/m"), lora_host=False, max_batch=16, mu_concurrent_sequences=2, context_length=8192)
    assert plain["max_num_seqs"] == 16 and plain["max_model_len"] == 8192 and "enable_lora" not in plain
    assert plain["structured_outputs_config"] == {"backend": "guidance"}
    host = engine_args(Path("/m"), lora_host=True, max_batch=16, mu_concurrent_sequences=2, context_length=8192)
    # Each provisioned model holds at least one unit (2 of the 16 sequences): at most 8 adapters in one batch.
    assert (host["enable_lora"], host["max_loras"], host["max_lora_rank"]) == (True, 8, MAX_LORA_RANK)
    assert engine_args(Path("/m"), lora_host=True, max_batch=1, mu_concurrent_sequences=4,
                       context_length=512)["max_loras"] == 1


def test_the_engine_and_the_job_backend_are_named_or_refused():
    from outcrop.platform.config import load_settings

    assert load_settings(engine="vllm", job_backend="ray").engine == "vllm"
    for name, value in (("engine", "tensorrt"), ("job_backend", "slurm")):
        with pytest.raises(ValueError, match=f"setting {name} must be one of"):
            load_settings(**{name: value})


def test_on_vllm_a_base_is_one_engine_with_its_adapters(tmp_path):
    from outcrop.inference.engine import Engine
    from outcrop.inference.loader import CAUSAL, ENCODER, LORA_HOST

    engine = Engine(tmp_path, 1 << 30, generator="vllm")
    assert engine._hosting(CAUSAL) == LORA_HOST and engine._hosting(ENCODER) == ENCODER
    assert engine.state(tmp_path / "m") == "not loaded"
    assert Engine(tmp_path, 1 << 30)._hosting(CAUSAL) == CAUSAL
    args = engine_args(Path("/m"), lora_host=True, max_batch=4, mu_concurrent_sequences=2, context_length=64,
                       memory_fraction=0.25)
    assert args["gpu_memory_utilization"] == 0.25


def test_idle_vllm_engines_make_room_for_another_and_busy_ones_do_not(tmp_path):
    """Each vLLM engine reserves its share of the GPU as it starts: idle ones go first (least recently used)."""
    import asyncio
    import threading

    from outcrop.inference.engine import Deployment, Engine
    from outcrop.inference.vllm_engine import VllmScheduler

    class Closed:
        def shutdown(self):
            pass

    def engine_on_gpu(active: int) -> Deployment:
        scheduler = object.__new__(VllmScheduler)  # no vLLM here: just what eviction looks at
        scheduler._active, scheduler._live, scheduler._counting = active, set(), threading.Lock()
        scheduler._engine, scheduler._loop = Closed(), loop  # a loop never run: close() only queues its stop
        return Deployment(loaded=None, scheduler=scheduler, lock=threading.Lock())

    loop = asyncio.new_event_loop()
    engine = Engine(tmp_path, 1 << 30, generator="vllm", vllm_gpu_fraction=0.45)
    engine._deployments.update({("/a", "lora-host"): engine_on_gpu(0), ("/b", "lora-host"): engine_on_gpu(0)})
    engine._gpu_room_for_vllm()
    assert list(engine._deployments) == [("/b", "lora-host")]  # /a was the least recently used
    engine._deployments[("/c", "lora-host")] = engine_on_gpu(1)
    engine._deployments[("/b", "lora-host")] = engine_on_gpu(2)
    with pytest.raises(RuntimeError, match="no room on the GPU"):
        engine._gpu_room_for_vllm()
    loop.close()
