"""Chat markup inside a raw prompt: recognise another model family's turns so that any chat model can answer.

A provider-native body (Meta Llama's or Mistral's `prompt`) is a raw completion prompt, but clients
write a chat into it in the markup of the model they expect: LangChain's ChatBedrock with provider
`meta` writes Llama 2 `[INST]` or Llama 3 header tokens, with `mistral` it writes `[INST]`, with
`qwen` ChatML. Tokenized as is, that markup means nothing to a model whose template differs, and
a small model answers nothing. `parse_chat_markup` reads such a prompt back into a conversation,
which the runtime then renders through the serving model's own chat template.

Families recognised (each with and without its begin-of-text token, whitespace between turns
allowed, as LangChain joins turns with newlines):

- Llama 3: `<|begin_of_text|><|start_header_id|>user<|end_header_id|>\\n\\n...<|eot_id|>`
- Llama 4: `<|begin_of_text|><|header_start|>user<|header_end|>...<|eot|>`
- ChatML: `<|im_start|>user\\n...<|im_end|>`
- `[INST]` (Llama 2 and Mistral): `<s>[INST] <<SYS>>\\n...\\n<</SYS>>\\n\\n... [/INST] ... </s>`, also
  with the system block before the first `[INST]` (`<<SYS>> ... <</SYS>>`, LangChain's form) and
  assistant turns not closed by `</s>` (LangChain's form).

Strict on purpose, since a wrong guess would rewrite a prompt the caller meant literally: the whole
text must be well-formed turns of one family (only whitespace and begin/end-of-text tokens between
them), roles are system (first only), then user and assistant alternating from user, and no
turn may hold a structural token of its family. Anything else, including prose that mentions
`[INST]`, is no markup: None, and the prompt stays raw.

The end of the prompt says what to generate:

- an open assistant turn with nothing in it (`...<|start_header_id|>assistant<|end_header_id|>\\n\\n`,
  `...[/INST]`, `<|im_start|>assistant\\n`), or a closed user turn with no assistant header after it:
  the assistant's answer (the template's generation prompt);
- an open assistant turn with text in it (`[/INST] Sure,`): that text is a prefill, kept as the
  last assistant message, so the model continues it (rendered like an Anthropic Messages prefill,
  `render_chat`'s `continue_final_message`); the answer returned is only what the model adds;
- a closed assistant turn (`... [/INST] Hi </s>`): no turn is open for an answer, so no markup;
- an unclosed user or system turn: malformed, no markup.

Each turn's text is stripped of surrounding whitespace: templates write their own. So are the
`Cutting Knowledge Date: ...` / `Today Date: ...` lines that Llama 3.1's template puts at the top of
every system turn: they are the template's, and a Llama 3.1 template writes them again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class MarkedUpChat:
    """A conversation read from a raw prompt: what `render_chat` takes, and the family it was in."""

    family: str
    system: str
    #: Starts with user and alternates; ends with user (answer it) or assistant (a prefill to continue).
    messages: list[dict[str, str]]

    @property
    def generation_prompt(self) -> bool:
        """Whether the template must open the assistant's turn (False: the last message is a prefill)."""
        return self.messages[-1]["role"] == "user"


@dataclass
class _Turn:
    role: str
    content: str
    closed: bool


def parse_chat_markup(text: str) -> MarkedUpChat | None:
    """The conversation a prompt writes in a known family's chat markup, or None if it is not wholly that."""
    body = text.strip()
    llama_bos = body.startswith("<|begin_of_text|>")
    if llama_bos:
        body = body[len("<|begin_of_text|>"):].lstrip()
    if body.startswith("<|start_header_id|>"):
        family, turns = "llama3", _header_turns(body, "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")
    elif body.startswith("<|header_start|>"):
        family, turns = "llama4", _header_turns(body, "<|header_start|>", "<|header_end|>", "<|eot|>")
    elif not llama_bos and body.startswith("<|im_start|>"):
        family, turns = "chatml", _chatml_turns(body)
    elif not llama_bos and body.startswith(("[INST]", "<<SYS>>", "<s>")):
        family, turns = "inst", _inst_turns(body)
    else:
        return None
    chat = _chat(family, turns) if turns else None
    if chat is not None and family == "llama3":  # Llama 3.1's template writes these lines itself
        chat = replace(chat, system=_LLAMA31_DATES.sub("", chat.system, count=1))
    return chat


def _chat(family: str, turns: list[_Turn]) -> MarkedUpChat | None:
    """The turns as a conversation, if they make one (see the module's rules); None otherwise."""
    if any(not t.closed for t in turns[:-1]) or any(t.role not in ROLES for t in turns):
        return None
    last = turns[-1]
    if not last.closed:
        if last.role != "assistant":
            return None
        if not last.content:
            turns = turns[:-1]  # the open assistant header: answer
    elif last.role != "user":
        return None  # a closed assistant turn leaves nothing open to generate
    system = ""
    if turns and turns[0].role == "system":
        system, turns = turns[0].content, turns[1:]
    if not turns:
        return None
    for index, turn in enumerate(turns):
        if turn.role != ("user" if index % 2 == 0 else "assistant"):
            return None
    return MarkedUpChat(family, system, [{"role": t.role, "content": t.content} for t in turns])


# What Llama 3.1's template writes at the top of every system turn.
_LLAMA31_DATES = re.compile(r"\ACutting Knowledge Date: [^\n]*\nToday Date: [^\n]*(?:\n+|\Z)")
# Every special token of Llama 3 and Llama 4 is written `<|lowercase_name|>`.
_LLAMA_SPECIAL = re.compile(r"(<\|[a-z0-9_]+\|>)")


def _header_turns(body: str, start: str, end: str, close: str) -> list[_Turn] | None:
    """Llama 3/4: `start` role `end` content `close`, repeated; the last `close` may be missing."""
    parts = _LLAMA_SPECIAL.split(body)  # text, token, text, token, ..., text
    if parts[0]:
        return None
    turns: list[_Turn] = []
    i = 1
    while i < len(parts):
        if parts[i] != start or i + 2 >= len(parts) or parts[i + 2] != end:
            return None
        role, content = parts[i + 1], parts[i + 3]
        if i + 4 >= len(parts):  # the text runs to the end: an open turn
            turns.append(_Turn(role, content.strip(), closed=False))
            break
        if parts[i + 4] != close:
            return None
        turns.append(_Turn(role, content.strip(), closed=True))
        if parts[i + 5].strip():  # only whitespace between turns
            return None
        i += 6
    return turns


_CHATML_SPECIAL = re.compile(r"(<\|im_start\|>|<\|im_end\|>|<\|endoftext\|>)")
_CHATML_ROLE = re.compile(r"(system|user|assistant)(?:\n|\Z)")


def _chatml_turns(body: str) -> list[_Turn] | None:
    """ChatML: `<|im_start|>role\\n content <|im_end|>`, repeated; the last `<|im_end|>` may be missing."""
    parts = _CHATML_SPECIAL.split(body)
    if parts[0]:
        return None
    turns: list[_Turn] = []
    i = 1
    while i < len(parts):
        if parts[i] != "<|im_start|>":
            return None
        header = _CHATML_ROLE.match(parts[i + 1])
        if header is None:
            return None
        content = parts[i + 1][header.end():].strip()
        if i + 2 >= len(parts):
            turns.append(_Turn(header.group(1), content, closed=False))
            break
        if parts[i + 2] != "<|im_end|>" or parts[i + 3].strip():
            return None
        turns.append(_Turn(header.group(1), content, closed=True))
        i += 4
    return turns


# The structural tokens of the [INST] family (Mistral's newer control tokens included: a prompt using
# them, tools for instance, is not one this reading can carry, so it stays raw).
_INST_SPECIAL = re.compile(r"(\[/?INST\]|<</?SYS>>|</?s>|\[/?(?:SYSTEM_PROMPT|AVAILABLE_TOOLS|TOOL_RESULTS)\]"
                           r"|\[TOOL_CALLS\])")


def _inst_turns(body: str) -> list[_Turn] | None:
    """Llama 2 / Mistral: `<s>[INST] user [/INST] assistant </s>`, repeated, with an optional `<<SYS>>` block
    before the first `[INST]` or at the start of its text. An assistant turn also ends where the next
    `[INST]` begins (LangChain writes no `</s>`)."""
    parts = _INST_SPECIAL.split(body)
    tokens = [(True, p) if k % 2 else (False, p) for k, p in enumerate(parts)]
    turns: list[_Turn] = []
    i = 0

    def text_at(j: int) -> str:
        return tokens[j][1] if j < len(tokens) and not tokens[j][0] else ""

    def system_block(j: int) -> tuple[str, int] | None:
        """`<<SYS>> text <</SYS>>` starting at token j: the text and the index after it."""
        if j + 2 < len(tokens) and tokens[j] == (True, "<<SYS>>") and tokens[j + 2] == (True, "<</SYS>>"):
            return tokens[j + 1][1].strip(), j + 3
        return None

    while i < len(tokens):
        is_token, value = tokens[i]
        if not is_token:
            if value.strip():
                return None  # text outside any turn
            i += 1
        elif value == "<s>":  # Llama 2 writes a begin-of-text before every [INST]
            i += 1
        elif value == "<<SYS>>" and not turns:
            block = system_block(i)
            if block is None:
                return None
            turns.append(_Turn("system", block[0], closed=True))
            i = block[1]
        elif value == "[INST]":
            i += 1
            if text_at(i).strip() == "" and i + 1 < len(tokens) and tokens[i + 1] == (True, "<<SYS>>"):
                block = system_block(i + 1)
                if block is None or turns:
                    return None
                turns.append(_Turn("system", block[0], closed=True))
                i = block[1]
            if not (i + 1 < len(tokens) and not tokens[i][0] and tokens[i + 1] == (True, "[/INST]")):
                return None
            turns.append(_Turn("user", tokens[i][1].strip(), closed=True))
            answer = text_at(i + 2)
            i += 3
            if i >= len(tokens):  # the prompt ends in the assistant's turn
                turns.append(_Turn("assistant", answer.strip(), closed=False))
            elif tokens[i][1] == "</s>":
                turns.append(_Turn("assistant", answer.strip(), closed=True))
                i += 1
            elif tokens[i][1] in ("[INST]", "<s>") and answer.strip():
                turns.append(_Turn("assistant", answer.strip(), closed=True))
            else:
                return None  # two user turns in a row, or a token that has no place here
        else:
            return None
    return turns
