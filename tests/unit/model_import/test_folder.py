"""What an importable folder must hold: each thing missing or unsupported refused by name."""

from __future__ import annotations

import json
import shutil

import pytest

from outcrop.errors import ValidationException
from outcrop.model_import import folder
from tests.helpers import make_tiny_llama

SOURCE = "s3://models/tiny/"
GOOD = {"config.json": 600, "generation_config.json": 100, "model.safetensors": 50_000, "tokenizer.json": 9_000,
        "tokenizer_config.json": 400, "chat_template.jinja": 200, "README.md": 3_000, "pytorch_model.bin": 50_000,
        ".gitattributes": 10}


def refusal(call, *args) -> str:
    with pytest.raises(ValidationException) as caught:
        call(*args)
    return caught.value.message


def test_a_complete_folder_copies_the_weights_and_what_loads_them_only():
    assert folder.check_listing(SOURCE, GOOD) == ["chat_template.jinja", "config.json", "generation_config.json",
                                                  "model.safetensors", "tokenizer.json", "tokenizer_config.json"]


@pytest.mark.parametrize("tokenizer", [{"tokenizer.json": 1}, {"tokenizer.model": 1},
                                       {"vocab.json": 1, "merges.txt": 1}])
def test_each_kind_of_tokenizer_file_is_a_tokenizer(tokenizer):
    files = {"config.json": 1, "model-00001-of-00002.safetensors": 1, **tokenizer}
    assert set(tokenizer) <= set(folder.check_listing(SOURCE, files))


def test_each_missing_file_is_named():
    assert "no config.json" in refusal(folder.check_listing, SOURCE, {k: v for k, v in GOOD.items()
                                                                      if k != "config.json"})
    message = refusal(folder.check_listing, SOURCE, {k: v for k, v in GOOD.items() if k != "model.safetensors"})
    assert "no .safetensors weights" in message and "pytorch_model.bin is pickled PyTorch weights" in message
    message = refusal(folder.check_listing, SOURCE, {k: v for k, v in GOOD.items() if k != "tokenizer.json"})
    assert "no tokenizer" in message and SOURCE in message
    assert "no tokenizer" in refusal(folder.check_listing, SOURCE, {"config.json": 1, "model.safetensors": 1,
                                                                    "vocab.json": 1})  # merges.txt too, or nothing
    assert "over the 1,048,576" in refusal(folder.check_listing, SOURCE, {**GOOD, "config.json": 5 << 20})
    message = refusal(folder.check_listing, SOURCE, {"README.md": 1})
    assert all(part in message for part in ("no config.json", "no .safetensors weights", "no tokenizer"))


def test_a_sharded_folder_needs_every_shard_its_index_names():
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    files = {"model-00001-of-00002.safetensors": 1, folder.INDEX: 1}
    assert "model-00002-of-00002.safetensors" in refusal(folder.check_index, SOURCE, index, files)
    folder.check_index(SOURCE, index, {**files, "model-00002-of-00002.safetensors": 1})
    assert "weight_map" in refusal(folder.check_index, SOURCE, {}, files)


def test_the_architecture_in_config_json_decides():
    llama = {"architectures": ["LlamaForCausalLM"], "model_type": "llama"}
    assert folder.check_config(SOURCE, llama).native_format == "meta-llama"
    assert folder.check_config(SOURCE, {"architectures": ["MixtralForCausalLM"], "model_type": "mixtral"}
                               ).native_format == "mistral"
    # transformers builds what model_type names: it must be the architecture that was checked, and no code comes along
    assert "must agree" in refusal(folder.check_config, SOURCE, {**llama, "model_type": "mamba"})
    assert "must agree" in refusal(folder.check_config, SOURCE, {"architectures": ["LlamaForCausalLM"]})
    assert "auto_map" in refusal(folder.check_config, SOURCE, {**llama, "auto_map": {"AutoModel": "x.Y"}})
    message = refusal(folder.check_config, SOURCE, {"architectures": ["MambaForCausalLM"]})
    assert "MambaForCausalLM" in message and "not supported" in message and "LlamaForCausalLM" in message
    message = refusal(folder.check_config, SOURCE, {"architectures": ["T5ForConditionalGeneration"]})
    assert "T5ForConditionalGeneration" in message and "encoder-decoder" in message
    assert "images" in refusal(folder.check_config, SOURCE, {"architectures": ["MllamaForConditionalGeneration"]})
    assert "names no architectures" in refusal(folder.check_config, SOURCE, {"model_type": "llama"})
    message = refusal(folder.check_config, SOURCE, {**llama, "quantization_config": {"quant_method": "awq"}})
    assert "quant_method awq" in message
    assert "not valid JSON" in refusal(folder.read_config, SOURCE, b"{nope")
    assert "not a JSON object" in refusal(folder.read_config, SOURCE, b"[]")


def test_every_supported_architecture_is_a_causal_lm_transformers_builds():
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    assert set(folder.SUPPORTED) <= set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    assert not set(folder.SUPPORTED) & set(folder.NOT_SERVED)


def test_the_context_window_comes_from_the_config():
    assert folder.context_length({"max_position_embeddings": 4096}) == 4096
    assert folder.context_length({"n_positions": 1024}) == 1024
    assert folder.context_length({}) == 0


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("tiny"))


def test_a_real_folder_loads_its_tokenizer_and_its_weights_match(tiny):
    assert folder.check_tokenizer(tiny).chat_template
    folder.check_weights(tiny)


def test_weights_that_contradict_the_config_are_refused_by_tensor(tiny, tmp_path):
    wider = shutil.copytree(tiny, tmp_path / "wider")
    config = json.loads((wider / "config.json").read_text())
    (wider / "config.json").write_text(json.dumps({**config, "intermediate_size": 96}))
    message = refusal(folder.check_weights, wider)
    assert "do not match config.json" in message and "mlp" in message
    deeper = shutil.copytree(tiny, tmp_path / "deeper")
    (deeper / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    message = refusal(folder.check_weights, deeper)
    assert "layers.2." in message


def test_a_broken_tokenizer_is_refused(tiny, tmp_path):
    broken = shutil.copytree(tiny, tmp_path / "broken")
    (broken / "tokenizer.json").write_text("{not json")
    assert "tokenizer does not load" in refusal(folder.check_tokenizer, broken)
