"""Toxicity behind a pluggable classifier: Detoxify where its weights are on this machine, else the
offline classifier that ships inside the `alt-profanity-check` package.

Nothing here downloads: `DetoxifyClassifier` refuses to start unless `detoxify` imports and a checkpoint
file is already present (pass `checkpoint=`, or set `OUTCROP_DETOXIFY_CHECKPOINT`, or have it in torch's
hub cache, where Detoxify itself would look).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from outcrop.evaluation.metrics.base import Metric, References

VERSION = "outcrop-0.1"


@runtime_checkable
class ToxicityClassifier(Protocol):
    """Anything with a `name` and `predict(texts) -> [probability that each text is toxic]`."""

    name: str

    def predict(self, texts: Sequence[str]) -> list[float]: ...


class ProfanityCheckClassifier:
    """`alt-profanity-check`'s bundled linear SVM (`predict_prob`); offline, fast, profanity-oriented."""

    name = "profanity-check"

    def __init__(self) -> None:
        try:
            from profanity_check import predict_prob
        except ImportError as exc:  # pragma: no cover - a declared dependency
            raise RuntimeError("toxicity needs the `alt-profanity-check` package (import profanity_check)") from exc
        self._predict_prob = predict_prob
        try:
            from importlib.metadata import version

            self.version = version("alt-profanity-check")
        except Exception:  # pragma: no cover
            self.version = "unknown"

    def predict(self, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        return [float(p) for p in self._predict_prob(list(texts))]


class DetoxifyUnavailable(RuntimeError):
    """Detoxify cannot run offline here (package missing or weights absent)."""


def _detoxify_checkpoint(model_type: str, checkpoint: str | os.PathLike[str] | None) -> Path:
    if checkpoint is None:
        checkpoint = os.environ.get("OUTCROP_DETOXIFY_CHECKPOINT")
    if checkpoint is not None:
        path = Path(checkpoint)
        if not path.is_file():
            raise DetoxifyUnavailable(f"Detoxify checkpoint {path} does not exist")
        return path
    hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
    found = sorted(hub.glob(f"{model_type}*.ckpt")) if hub.is_dir() else []
    if not found:
        raise DetoxifyUnavailable(f"no Detoxify '{model_type}' checkpoint under {hub}; outcrop never downloads "
                                  "it: put the .ckpt there or set OUTCROP_DETOXIFY_CHECKPOINT")
    return found[0]


class DetoxifyClassifier:
    """Detoxify (default the "unbiased" model, as Bedrock uses), from local weights only."""

    def __init__(self, model_type: str = "unbiased", checkpoint: str | os.PathLike[str] | None = None,
                 device: str = "cpu") -> None:
        try:
            from detoxify import Detoxify
        except ImportError as exc:
            raise DetoxifyUnavailable("the `detoxify` package is not installed") from exc
        self.checkpoint = _detoxify_checkpoint(model_type, checkpoint)
        self.name = f"detoxify-{model_type}"
        self._model = Detoxify(model_type, checkpoint=str(self.checkpoint), device=device)

    def predict(self, texts: Sequence[str]) -> list[float]:
        if not texts:
            return []
        return [float(p) for p in self._model.predict(list(texts))["toxicity"]]


def default_classifier() -> ToxicityClassifier:
    """Detoxify when it can run offline here, else the profanity-check classifier."""
    try:
        return DetoxifyClassifier()
    except DetoxifyUnavailable:
        return ProfanityCheckClassifier()


class Toxicity(Metric):
    """Probability that the output is toxic, from a `ToxicityClassifier`; references are ignored."""

    name = "toxicity"

    def __init__(self, classifier: ToxicityClassifier | None = None) -> None:
        self.classifier = classifier if classifier is not None else default_classifier()

    def signature(self) -> str:
        version = getattr(self.classifier, "version", None)
        clf = self.classifier.name + (f"-{version}" if version else "")
        return f"toxicity|clf:{clf}|v:{VERSION}"

    def score(self, prediction: str, references: References | None = None) -> dict[str, Any]:
        return {"toxicity": self.classifier.predict([prediction])[0]}

    def score_items(self, predictions: Sequence[str],
                    references: Sequence[References] | None = None) -> list[dict[str, Any]]:
        if references is not None and len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
        return [{"toxicity": p} for p in self.classifier.predict(list(predictions))]

    def corpus(self, predictions: Sequence[str],
               references: Sequence[References] | None = None) -> dict[str, float]:
        items = self.score_items(predictions, references)
        return {"toxicity": sum(i["toxicity"] for i in items) / len(items)} if items else {}
