"""What a folder must hold to be imported, and which architectures this server serves.

Each check names what is wrong (a file missing, the architecture in config.json, a tensor whose shape the
config contradicts), so a refused import says how to fix the folder. The checks on the listing and on
config.json need no weights and run when the job is created; the weights' shapes and the tokenizer are
checked by the job once the folder is copied (`check_weights`, `check_tokenizer`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from outcrop.errors import ValidationException

CONFIG = "config.json"
INDEX = "model.safetensors.index.json"
#: Most bytes config.json and the shard index may have: both are read whole, before the job starts.
MAX_JSON_BYTES = {CONFIG: 1 << 20, INDEX: 64 << 20}


@dataclass(frozen=True)
class Architecture:
    """An architecture this server imports: its class in config.json, and the InvokeModel body it answers
    natively (Bedrock asks an imported model for its base family's parameters)."""

    name: str
    native_format: str


#: config.json's `architectures[0]` -> how the model is served. Bedrock's list (Llama, Mistral, Mixtral,
#: Qwen, GPTBigCode...) as far as this engine serves it (decoder-only text models through transformers),
#: with the Gemma families that it serves too.
SUPPORTED: dict[str, Architecture] = {a.name: a for a in (
    Architecture("LlamaForCausalLM", "meta-llama"),
    Architecture("MistralForCausalLM", "mistral"),
    Architecture("MixtralForCausalLM", "mistral"),
    Architecture("Qwen2ForCausalLM", "meta-llama"),
    Architecture("Qwen3ForCausalLM", "meta-llama"),
    Architecture("GemmaForCausalLM", "meta-llama"),
    Architecture("Gemma2ForCausalLM", "meta-llama"),
    Architecture("Gemma3ForCausalLM", "meta-llama"),
    Architecture("GPTBigCodeForCausalLM", "meta-llama"),
)}

_VISION = "it reads images, and this server's engine serves text models only"
#: Architectures Bedrock imports that this server cannot serve, and why: the refusal says so.
NOT_SERVED: dict[str, str] = {
    "T5ForConditionalGeneration": "Flan-T5 is an encoder-decoder model, and this server's engine generates with "
                                  "decoder-only (causal) models only",
    "MllamaForConditionalGeneration": _VISION,
    "Qwen2VLForConditionalGeneration": _VISION,
    "Qwen2_5_VLForConditionalGeneration": _VISION,
    "Gemma3ForConditionalGeneration": _VISION + " (a text-only Gemma 3 is Gemma3ForCausalLM)",
    "GptOssForCausalLM": "its weights ship MXFP4-quantized, and quantized weights are not imported",
}

#: The tokenizer files that make a tokenizer on their own (any one of these sets).
TOKENIZERS = (("tokenizer.json",), ("tokenizer.model",), ("vocab.json", "merges.txt"))
#: The other files copied with the weights: what transformers reads to load and prompt the model.
COMPANIONS = frozenset({CONFIG, INDEX, "generation_config.json", "tokenizer.json", "tokenizer.model",
                        "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "vocab.json",
                        "merges.txt", "chat_template.jinja", "chat_template.json"})
_PICKLED = re.compile(r".*\.(bin|pt|pth|ckpt)$")


def check_listing(source: str, files: dict[str, int]) -> list[str]:
    """The files to copy from a folder's listing (top-level name -> size), or a ValidationException naming
    everything missing: config.json, safetensors weights, a tokenizer."""
    problems = []
    if CONFIG not in files:
        problems.append("no config.json")
    if not any(name.endswith(".safetensors") for name in files):
        pickled = sorted(name for name in files if _PICKLED.fullmatch(name))
        problems.append("no .safetensors weights" + (
            f" ({', '.join(pickled[:3])} {'is' if len(pickled) == 1 else 'are'} pickled PyTorch weights, which are "
            "not imported: save the model with safe_serialization)" if pickled else ""))
    if not any(all(name in files for name in names) for names in TOKENIZERS):
        problems.append("no tokenizer (tokenizer.json, tokenizer.model, or vocab.json with merges.txt)")
    problems += [f"{name} has {files[name]:,} bytes, over the {limit:,} a {name} may have"
                 for name, limit in MAX_JSON_BYTES.items() if files.get(name, 0) > limit]
    if problems:
        raise ValidationException(f"The folder {source} cannot be imported: {'; '.join(problems)}. A model to "
                                  "import is a Hugging Face folder of safetensors weights, config.json and "
                                  "its tokenizer's files.")
    return sorted(name for name in files if name in COMPANIONS or name.endswith(".safetensors"))


def check_index(source: str, index: dict[str, Any], files: dict[str, int]) -> None:
    """Every shard model.safetensors.index.json names is in the folder."""
    shards = set((index.get("weight_map") or {}).values()) if isinstance(index, dict) else set()
    if not shards:
        raise ValidationException(f"{source}{INDEX} has no weight_map naming the weight shards")
    missing = sorted(shards - set(files))
    if missing:
        raise ValidationException(f"The folder {source} misses {len(missing)} weight shard(s) its {INDEX} names: "
                                  f"{', '.join(missing[:5])}")


def read_config(source: str, data: bytes) -> dict[str, Any]:
    try:
        config = json.loads(data)
    except ValueError as exc:
        raise ValidationException(f"{source}{CONFIG} is not valid JSON: {exc}") from None
    if not isinstance(config, dict):
        raise ValidationException(f"{source}{CONFIG} is not a JSON object")
    return config


def check_config(source: str, config: dict[str, Any]) -> Architecture:
    """The architecture config.json names, if this server serves it unquantized; else a ValidationException
    that names it."""
    names = config.get("architectures")
    if not isinstance(names, list) or not names or not isinstance(names[0], str):
        raise ValidationException(f"{source}{CONFIG} names no architectures (e.g. \"architectures\": "
                                  "[\"LlamaForCausalLM\"]), so the model's class is unknown")
    name = names[0]
    if name in NOT_SERVED:
        raise ValidationException(f"The architecture {name} named in {CONFIG} is not supported for import: "
                                  f"{NOT_SERVED[name]}")
    if name not in SUPPORTED:
        raise ValidationException(f"The architecture {name} named in {CONFIG} is not supported for import; "
                                  f"supported: {', '.join(sorted(SUPPORTED))}")
    # transformers builds the class `model_type` maps to, whatever `architectures` says, and `auto_map` points it at
    # code in the folder: both must agree with the architecture that was checked, and no code is ever taken.
    if "auto_map" in config:
        raise ValidationException(f"{CONFIG} has auto_map (custom model code); only the architectures built into "
                                  "transformers can be imported, and no code from the folder is run")
    model_type = config.get("model_type")
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    mapped = MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.get(model_type) if isinstance(model_type, str) else None
    if mapped != name:
        raise ValidationException(f"{CONFIG} names the architecture {name} but its model_type {model_type!r} is "
                                  f"built as {mapped or 'no causal language model'}; they must agree")
    quantization = config.get("quantization_config")
    if quantization:
        method = quantization.get("quant_method", "?") if isinstance(quantization, dict) else "?"
        raise ValidationException(f"{CONFIG} declares quantized weights (quant_method {method}); import the "
                                  "model's FP32, FP16 or BF16 weights")
    return SUPPORTED[name]


def check_tokenizer(folder: Path) -> Any:
    """The folder's tokenizer, loaded as serving will load it."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    except Exception as exc:  # every way a tokenizer fails to load is the folder's problem here
        raise ValidationException(f"The tokenizer does not load: {type(exc).__name__}: {exc}") from None


def check_weights(folder: Path) -> None:
    """The safetensors' tensors are the ones the config describes, each of the shape it implies: a model
    built from config.json on the meta device (no memory) is matched against the files' headers, through
    transformers' own loading (its key renames and fused experts included), reading no tensor's data."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    except Exception as exc:
        raise ValidationException(f"{CONFIG} does not load: {type(exc).__name__}: {exc}") from None
    try:
        # Mismatched sizes are reported, not raised, so that the refusal can name the tensors.
        _, info = AutoModelForCausalLM.from_pretrained(folder, config=config, device_map="meta",
                                                       trust_remote_code=False, output_loading_info=True,
                                                       ignore_mismatched_sizes=True)
    except Exception as exc:  # a corrupt header, a dtype transformers does not know
        raise ValidationException(f"The weights do not load: {_first_line(exc)}") from None
    mismatched = [f"{key} is {tuple(found)} where {CONFIG} implies {tuple(wanted)}"
                  for key, found, wanted in sorted(info.get("mismatched_keys") or (), key=lambda m: m[0])]
    missing = sorted(info.get("missing_keys") or ())
    if mismatched:
        raise ValidationException(f"The weights do not match {CONFIG} ({len(mismatched)} tensor(s)): "
                                  f"{'; '.join(mismatched[:3])}")
    if missing:
        raise ValidationException(f"The weights miss {len(missing)} tensor(s) {CONFIG} implies: "
                                  f"{', '.join(missing[:5])}")


def context_length(config: dict[str, Any]) -> int:
    """The context window config.json declares (the first of the names architectures use), 0 when none does:
    serving then reads it from the tokenizer, as for any model (inference/loader.py)."""
    for name in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        value = config.get(name)
        if isinstance(value, int) and value > 0:
            return value
    return 0


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:500] if text else type(exc).__name__
