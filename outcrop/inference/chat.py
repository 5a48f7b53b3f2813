"""A conversation as the model's own chat template writes it: the one rendering that serving, fine-tuning
data and evaluation share, so a model is trained on exactly the text it is later prompted with."""

from __future__ import annotations

from typing import Any

from outcrop.errors import ValidationException

#: The tool-call syntax of the fallback tool prompt, for models whose template renders no tools
#: (runtime/tool_use.py writes that prompt): Hermes-style <tool_call> tags, which small models know best.
FALLBACK_TOOL_SYNTAX = "hermes"


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


def chat_template(tokenizer_or_template: Any) -> str | None:
    """A tokenizer's chat template text (its tool-use template where it has several), or None."""
    template = getattr(tokenizer_or_template, "chat_template", tokenizer_or_template)
    if isinstance(template, dict):
        template = template.get("tool_use") or template.get("default")
    if isinstance(template, list):  # tokenizer_config.json's [{"name": ..., "template": ...}]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("tool_use") or named.get("default")
    return template if isinstance(template, str) else None


def template_tool_syntax(template: str | None) -> str | None:
    """The syntax a chat template asks tool calls in, when it renders tools: "hermes" (<tool_call> tags:
    Qwen 2.5, Hermes, SmolLM3), "mistral" ([TOOL_CALLS]) or "llama3-json" (Llama 3.1+); None otherwise."""
    if not template or "tools" not in template:
        return None
    if "<tool_call>" in template:
        return "hermes"
    if "[TOOL_CALLS]" in template:
        return "mistral"
    if "<|start_header_id|>" in template and '"parameters"' in template:
        return "llama3-json"
    return None


def tool_use_capability(template: str | None) -> str:
    """What a model card says of tool use: prompted through the chat template, or the fallback prompt."""
    syntax = template_tool_syntax(template)
    return f"chat-template ({syntax})" if syntax else f"prompt ({FALLBACK_TOOL_SYNTAX})"
