"""Perplexity of a causal LM on texts, in the definitions people quote; the signature says which.

- "evaluate" (HF `evaluate`'s "perplexity" metric): each text alone, BOS prepended when the tokenizer
  has one, no window; per-text exp(mean NLL of its tokens); `mean_perplexity` is the mean of the
  per-text values (not the corpus perplexity).
- "lm-eval" (lm-eval-harness `loglikelihood_rolling`): each text cut into disjoint windows of the
  model's context length, the first predicted from the prefix token (BOS, else EOS), the last one
  left-filled with earlier tokens as context; every token is predicted exactly once.
  `word_perplexity` = exp(-sum LL / words) (words = `re.split(r"\\s+", text)`), `byte_perplexity` =
  exp(-sum LL / UTF-8 bytes), `bits_per_byte` = -sum LL / bytes / ln 2, all summed over the corpus.
- "sliding" (transformers' perplexity guide): texts joined by "\\n\\n", tokenized once, windows of the
  context length every `stride` tokens, each token scored once with as much left context as the
  window gives; corpus perplexity = exp(total NLL / tokens). The guide multiplies each window's mean
  loss by (targets - 1); here each token counts exactly once. stride = context length is the plain
  disjoint-window perplexity; a smaller stride gives more context per token and (usually) a lower value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

DEFINITIONS = ("evaluate", "lm-eval", "sliding")

#: One forward pass: input ids, and the token ids predicted by its last len(targets) positions.
Window = tuple[list[int], list[int]]


class Perplexity:
    name = "perplexity"

    def __init__(self, model_path: str | Path, cache_dir: str | Path | None = None, definition: str = "evaluate",
                 stride: int = 512, batch_size: int = 8, max_length: int | None = None,
                 device: str | torch.device | None = None, base: str | Path | None = None):
        if definition not in DEFINITIONS:
            raise ValueError(f"definition must be one of {DEFINITIONS}, not {definition!r}")
        if stride < 1:
            raise ValueError("stride must be positive")
        self.model_path = Path(model_path)
        #: The base model's folder when `model_path` is a LoRA adapter (merged into a copy on load).
        self.base = Path(base) if base is not None else None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else self.model_path.parent
        self.definition = definition
        self.stride = stride
        self.batch_size = max(1, batch_size)
        self._max_length = max_length
        self._device = torch.device(device) if device is not None else None
        self._loaded: Any = None

    def _load(self) -> Any:
        if self._loaded is None:
            from outcrop.inference.loader import load_causal_lm

            self._loaded = load_causal_lm(self.model_path, self.cache_dir, device=self._device, base=self.base)
        return self._loaded

    @property
    def max_length(self) -> int:
        return self._max_length or self._load().context_length

    def signature(self) -> str:
        from outcrop import __version__

        ctx = str(self._max_length) if self._max_length else "model"
        parts = [f"perplexity|def:{self.definition}|model:{self.model_path.name}"]
        if self.definition == "evaluate":
            parts.append("bos:yes-if-any|window:none|agg:mean-of-texts")
        elif self.definition == "lm-eval":
            parts.append(f"window:disjoint|ctx:{ctx}|prefix:bos-else-eos|agg:corpus")
        else:
            parts.append(f"window:sliding|ctx:{ctx}|stride:{self.stride}|join:nn|agg:corpus")
        parts.append(f"v:outcrop-{__version__}")
        return "|".join(parts)

    # -- the one model call -------------------------------------------------------------------------------------

    def _nll(self, windows: Sequence[Window]) -> list[list[float]]:
        """Per-target negative log-likelihoods of each window, batched by length (right padding)."""
        loaded = self._load()
        model, device = loaded.model, loaded.device
        pad = loaded.tokenizer.pad_token_id or 0
        order = sorted(range(len(windows)), key=lambda i: len(windows[i][0]))
        out: list[list[float]] = [[] for _ in windows]
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start:start + self.batch_size]
                width = max(len(windows[i][0]) for i in chunk)
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros((len(chunk), width), dtype=torch.long)
                for row, i in enumerate(chunk):
                    n = len(windows[i][0])
                    ids[row, :n] = torch.tensor(windows[i][0], dtype=torch.long)
                    mask[row, :n] = 1
                logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float()
                for row, i in enumerate(chunk):
                    inputs, targets = windows[i]
                    if not targets:
                        continue
                    n, k = len(inputs), len(targets)
                    rows = logits[row, n - k:n]
                    nll = torch.nn.functional.cross_entropy(rows, torch.tensor(targets, device=rows.device),
                                                            reduction="none")
                    out[i] = nll.double().cpu().tolist()
        return out

    def _tokens(self, text: str, special: bool = False) -> list[int]:
        return list(self._load().tokenizer(text, add_special_tokens=special)["input_ids"])

    # -- definitions --------------------------------------------------------------------------------------------

    def evaluate_windows(self, text: str) -> Window:
        tok = self._load().tokenizer
        ids = self._tokens(text)
        if tok.bos_token_id is not None:
            ids = [tok.bos_token_id] + ids
            if len(ids) < 2:
                raise ValueError("evaluate's perplexity needs texts of at least one token")
        elif len(ids) < 2:
            raise ValueError("without a BOS token evaluate's perplexity needs texts of at least two tokens")
        return ids[:-1], ids[1:]

    def lm_eval_windows(self, text: str) -> list[Window]:
        """lm-eval's `get_rolling_token_windows(context_len=1)` + `make_disjoint_window`, as model inputs."""
        tok = self._load().tokenizer
        tokens = self._tokens(text)
        if not tokens:
            return []
        prefix = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        size = self.max_length
        first = min(size, len(tokens))
        windows: list[Window] = [([prefix] + tokens[:first - 1], tokens[:first])]
        done = first
        while done < len(tokens):
            n = min(len(tokens) - done, size)
            end = done + n
            windows.append((tokens[max(0, end - size - 1):end - 1], tokens[done:end]))
            done = end
        return windows

    def sliding_windows(self, tokens: list[int]) -> list[Window]:
        size = self.max_length
        windows: list[Window] = []
        prev_end = 0
        for begin in range(0, len(tokens), self.stride):
            end = min(begin + size, len(tokens))
            first_target = max(begin + 1, prev_end)
            if end > first_target:
                windows.append((tokens[begin:end - 1], tokens[first_target:end]))
            prev_end = end
            if end == len(tokens):
                break
        return windows

    def compute(self, texts: Sequence[str]) -> dict[str, Any]:
        texts = list(texts)
        if not texts:
            raise ValueError("no texts")
        if self.definition == "evaluate":
            nll = self._nll([self.evaluate_windows(t) for t in texts])
            ppls = [math.exp(math.fsum(v) / len(v)) for v in nll]
            return {"perplexities": ppls, "mean_perplexity": math.fsum(ppls) / len(ppls)}
        if self.definition == "lm-eval":
            per_text = [self.lm_eval_windows(t) for t in texts]
            flat = [w for ws in per_text for w in ws]
            nll = self._nll(flat)
            total = math.fsum(x for v in nll for x in v)
            tokens = sum(len(v) for v in nll)
            words = sum(len(re.split(r"\s+", t)) for t in texts)
            nbytes = sum(len(t.encode("utf-8")) for t in texts)
            return {"word_perplexity": math.exp(total / words), "byte_perplexity": math.exp(total / nbytes),
                    "bits_per_byte": total / nbytes / math.log(2),
                    "token_perplexity": math.exp(total / tokens) if tokens else float("nan"),
                    "loglikelihood": -total, "words": words, "bytes": nbytes, "tokens": tokens,
                    "windows": len(flat)}
        tokens = self._tokens("\n\n".join(texts), special=True)
        windows = self.sliding_windows(tokens)
        nll = self._nll(windows)
        total = math.fsum(x for v in nll for x in v)
        count = sum(len(v) for v in nll)
        return {"perplexity": math.exp(total / count) if count else float("nan"), "nll": total,
                "tokens": count, "windows": len(windows)}
