"""Fine-tuning on several workers through Ray Train: the same `trainer.train`, run by each of them.

Ray Train starts `workers` processes (on the cluster the job runs on under job_backend = "ray", else on a Ray
the job starts on this machine) and joins them in one torch.distributed group (gloo on CPUs, NCCL on GPUs).
Each runs `trainer.train`, which deals each step's rows out among them and sums their gradients
(`trainer.DataParallel`): N workers take the steps one worker would. The first worker reports progress (the
job's callbacks reach the database from wherever they run) and writes checkpoints and weights into the job's
work dir, which every worker and the job read: on a cluster, the data dir is on a shared filesystem.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from outcrop.customization import trainer

log = logging.getLogger(__name__)

RESULT_FILE = "ray-train-result.json"


def ray_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("ray") is not None and importlib.util.find_spec("ray.train") is not None


def train(workers: int, base_model_dir: Path, train_examples: Sequence[trainer.TokenizedExample],
          validation_examples: Sequence[trainer.TokenizedExample] | None, config: trainer.TrainingConfig,
          work_dir: Path, *, on_progress: Callable[[trainer.Progress], None],
          should_stop: Callable[[], bool]) -> trainer.TrainingResult:
    """`trainer.train` on `workers` Ray Train workers; the first worker's result. The callbacks are sent to the
    workers (cloudpickle), so what they hold must travel: the job's context and database do."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):  # a Ray job: its cluster
            ray.init(log_to_driver=True)
        else:  # the local job backend: a Ray of this machine, for this job only
            ray.init(address="local", num_cpus=workers, include_dashboard=False)
        # ray.init makes SIGTERM raise SystemExit, which the job would record as a failure; a SIGTERM (a forced
        # stop, the server stopping) must end the process at once, to resume from its checkpoints (jobs.run_job).
        signal.signal(signal.SIGTERM, lambda *_: os._exit(143))
    available = ray.cluster_resources().get("GPU", 0)
    gpus = available >= workers
    if available and not gpus:
        log.warning("the cluster has %g GPUs for %d workers: training on CPUs", available, workers)
    work_dir = Path(work_dir).resolve()
    result_file = work_dir / RESULT_FILE
    result_file.unlink(missing_ok=True)
    loop = {"base": str(base_model_dir), "train": list(train_examples), "config": config,
            "validation": list(validation_examples) if validation_examples else None, "work_dir": str(work_dir),
            "on_progress": on_progress, "should_stop": should_stop}
    fit = TorchTrainer(_worker, train_loop_config=loop,
                       scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus),
                       run_config=RunConfig(name="ray-train", storage_path=str(work_dir / "ray")))
    log.info("training on %d Ray Train workers (%s)", workers, "GPUs" if gpus else "CPUs")
    try:
        fit.fit()
    except Exception as exc:  # the first worker's error, not Ray's wrapping of it
        raise RuntimeError(f"Ray Train failed: {_root_cause(exc)}") from exc
    saved = json.loads(result_file.read_text())
    saved["model_dir"] = Path(saved["model_dir"]) if saved["model_dir"] else None
    saved["step_metrics"] = [tuple(m) for m in saved["step_metrics"]]
    saved["validation_metrics"] = [tuple(m) for m in saved["validation_metrics"]]
    return trainer.TrainingResult(**saved)


def _worker(loop: dict[str, Any]) -> None:
    """One Ray Train worker: torch.distributed is set up; train, and the first worker leaves the result."""
    import ray.train
    from ray.train.torch import get_device

    result = trainer.train(Path(loop["base"]), loop["train"], loop["validation"], loop["config"],
                           Path(loop["work_dir"]), on_progress=loop["on_progress"], should_stop=loop["should_stop"],
                           device=get_device())
    if ray.train.get_context().get_world_rank() == 0:
        saved = dataclasses.asdict(result)
        saved["model_dir"] = str(result.model_dir) if result.model_dir else None
        target = Path(loop["work_dir"]) / RESULT_FILE
        target.with_suffix(".tmp").write_text(json.dumps(saved))
        target.with_suffix(".tmp").replace(target)


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1] if text else ''}"
