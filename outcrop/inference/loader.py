"""Load models from Hugging Face folders and GGUF files onto the CPU or one GPU.

GGUF is converted once into a safetensors folder in the model cache: loading GGUF through
transformers dequantizes every tensor in Python (15-30 s for SmolLM2), a safetensors folder
loads in about a second.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

CAUSAL = "causal"
ENCODER = "encoder"
#: A base causal LM prepared to host LoRA adapters that share it (multi-LoRA).
LORA_HOST = "lora-host"
#: A cross-encoder: a (query, passage) pair in, one relevance logit out (Rerank).
RERANKER = "reranker"


@dataclass
class LoadedModel:
    """A model ready to run, with what the scheduler needs to know about it."""

    kind: str  # CAUSAL | ENCODER
    model: Any
    tokenizer: Any
    device: torch.device
    context_length: int
    eos_ids: frozenset[int] = frozenset()
    #: Encoders: how token vectors become one sentence vector (sentence-transformers' setting).
    pooling: str = "mean"
    normalize: bool = False
    nbytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _dtype(device: torch.device) -> torch.dtype:
    # bf16 halves memory on GPUs; on CPUs fp32 is both faster and exact.
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def converted_gguf_dir(gguf: Path, cache_dir: Path) -> Path:
    stat = gguf.stat()
    return cache_dir / "gguf" / f"{gguf.stem}-{stat.st_size}-{int(stat.st_mtime)}"


def convert_gguf(gguf: Path, cache_dir: Path) -> Path:
    """The cached safetensors folder for a GGUF file, converting it on first use (atomically)."""
    target = converted_gguf_dir(gguf, cache_dir)
    if (target / "config.json").is_file():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    log.info("converting %s to safetensors in %s (once)", gguf, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
            quantization_config=GgufConfig(dequantize=True))
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        try:
            os.replace(staging, target)
        except OSError:  # another process converted it first; theirs is as good as ours
            shutil.rmtree(staging, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def _context_length(config: Any, tokenizer: Any) -> int:
    for name in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", 0)
    return limit if 0 < limit < 10**8 else 2048


def load_causal_lm(path: Path, cache_dir: Path, device: torch.device | None = None,
                   base: Path | None = None) -> LoadedModel:
    """A causal LM from a HF folder, a GGUF file, or a LoRA adapter folder on top of `base`.

    An adapter is merged into a private copy of its base on load, so it generates at the base's speed;
    the base's files are only read."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or default_device()
    folder = convert_gguf(path, cache_dir) if path.suffix.lower() == ".gguf" else path
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if (folder / "adapter_config.json").is_file():
        from peft import PeftModel

        if base is None:
            raise ValueError(f"{folder} is a LoRA adapter; loading it needs its base model's folder")
        model = AutoModelForCausalLM.from_pretrained(base, dtype=_dtype(device))
        model = PeftModel.from_pretrained(model, folder).merge_and_unload().to(device).eval()
    else:
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=_dtype(device)).to(device).eval()
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return LoadedModel(CAUSAL, model, tokenizer, device, _context_length(model.config, tokenizer),
                       _eos_ids(getattr(model, "generation_config", None), model.config, tokenizer), nbytes=nbytes)


def _eos_ids(*sources: Any) -> frozenset[int]:
    """Every end-of-sequence id the generation config, the model config and the tokenizer name."""
    eos: set[int] = set()
    for source in sources:
        value = getattr(source, "eos_token_id", None)
        eos.update(value if isinstance(value, list | tuple | set) else [value] if value is not None else [])
    return frozenset(int(e) for e in eos)


def describe_causal_lm(path: Path, cache_dir: Path) -> LoadedModel:
    """A causal LM's tokenizer and limits without its weights, for an engine that loads them itself (vLLM):
    `model` is None, and `extra["folder"]` is the Hugging Face folder to load (a GGUF file converted once)."""
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    folder = convert_gguf(path, cache_dir) if path.suffix.lower() == ".gguf" else path
    tokenizer = AutoTokenizer.from_pretrained(folder)
    config = AutoConfig.from_pretrained(folder)
    try:
        generation = GenerationConfig.from_pretrained(folder)
    except OSError:  # no generation_config.json
        generation = None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    nbytes = sum(f.stat().st_size for f in folder.glob("*.safetensors"))
    return LoadedModel(CAUSAL, None, tokenizer, torch.device("cuda"), _context_length(config, tokenizer),
                       _eos_ids(generation, config, tokenizer), nbytes=nbytes, extra={"folder": folder})


def load_lora_host(base: Path, device: torch.device | None = None) -> LoadedModel:
    """A base model wrapped for serving several LoRA adapters at once: PEFT routes each row of a batch
    through its own adapter (`adapter_names`), so N adapters cost one base plus N small adapters."""
    from peft import LoraConfig, get_peft_model

    loaded = load_causal_lm(base, base)
    # A placeholder adapter makes the model a PeftModel; real adapters are added by name, and rows
    # without one run through the base weights only.
    loaded.model = get_peft_model(loaded.model, LoraConfig(r=1, target_modules=["lm_head"]),
                                  adapter_name="host-placeholder").eval()
    return loaded


def load_reranker(path: Path, device: torch.device | None = None) -> LoadedModel:
    """A cross-encoder (a sequence-classification head over a pair of texts), as sentence-transformers'
    CrossEncoder loads one."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    device = device or default_device()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForSequenceClassification.from_pretrained(path, dtype=_dtype(device)).to(device).eval()
    limit = tokenizer.model_max_length if 0 < tokenizer.model_max_length < 10**8 else None
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return LoadedModel(RERANKER, model, tokenizer, device, limit or _context_length(model.config, tokenizer),
                       nbytes=nbytes)


def load_encoder(path: Path, device: torch.device | None = None) -> LoadedModel:
    """A sentence-embedding model; pooling and normalization follow its sentence-transformers files."""
    from transformers import AutoModel, AutoTokenizer

    device = device or default_device()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=_dtype(device)).to(device).eval()
    pooling, normalize = "mean", False
    modules = path / "modules.json"
    if modules.is_file():
        for module in json.loads(modules.read_text()):
            kind = module.get("type", "")
            if kind.endswith("Pooling"):
                config = json.loads((path / module["path"] / "config.json").read_text())
                pooling = "cls" if config.get("pooling_mode_cls_token") else "mean"
            elif kind.endswith("Normalize"):
                normalize = True
    limit = tokenizer.model_max_length if 0 < tokenizer.model_max_length < 10**8 else None
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    return LoadedModel(ENCODER, model, tokenizer, device, limit or _context_length(model.config, tokenizer),
                       pooling=pooling, normalize=normalize, nbytes=nbytes)
