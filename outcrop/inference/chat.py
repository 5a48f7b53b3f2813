"""A conversation as the model's own chat template writes it: the one rendering that serving, fine-tuning
data and evaluation share, so a model is trained on exactly the text it is later prompted with."""

from __future__ import annotations

from typing import Any

from outcrop.errors import ValidationException


def render_chat(tokenizer: Any, messages: list[dict[str, Any]], system: str,
                tools: list[dict[str, Any]] | None = None) -> str:
    """The chat as the model's own template writes it; a plain transcript for models without one.

    `tools` (function specs, transformers' format) go to templates that render tools; the runtime
    passes them only to such templates (runtime/tool_use.py), and writes its own prompt for others."""
    chat = ([{"role": "system", "content": system}] if system else []) + messages
    continue_last = bool(messages) and messages[-1]["role"] == "assistant"
    if getattr(tokenizer, "chat_template", None):
        from jinja2 import TemplateError

        try:
            return tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=not continue_last,
                                                 continue_final_message=continue_last,
                                                 **({"tools": tools} if tools is not None else {}))
        except TemplateError as exc:
            raise ValidationException(f"The model's chat template refused this conversation: {exc}") from None
    lines = [f"{m['role'].capitalize()}: {m['content']}" for m in chat]
    return "\n".join(lines) + ("" if continue_last else "\nAssistant:")
