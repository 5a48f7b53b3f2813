"""Bedrock's training data formats: read a JSONL dataset once, validate every line, tokenize with loss masks.

A dataset is JSON Lines, one record a line, in one of three formats, told apart by their keys:

    prompt-completion       {"prompt": "...", "completion": "..."}
    conversation            {"schemaVersion": "bedrock-conversation-2024", "system": [{"text": "..."}],
                             "messages": [{"role": "user", "content": [{"text": "..."}]},
                                          {"role": "assistant", "content": [{"text": "..."}]}]}
    continued-pretraining   {"input": "..."}

FINE_TUNING takes prompt-completion or conversation records, CONTINUED_PRE_TRAINING takes continued-pretraining
records; the first record fixes the format of the whole file. Every problem is a `DatasetError` (a
ValidationException) that names the file and the line, counted from 1, blank lines included.

Tokenization trains the model the way the runtime will prompt it. The runtime renders a chat with the model's
own chat template (`outcrop.inference.chat.render_chat`, generation prompt added) and tokenizes that text with
`add_special_tokens=False`; so here:

- The text is rendered as a chain of strings. For each assistant turn i, P_i is `render_chat` of the messages
  before it (exactly the prompt the runtime would send for that turn) and T_i is the chat template's rendering
  of the messages up to and including it, without a generation prompt (so with the template's end-of-turn
  marker). The chain P_1 <= T_1 <= P_2 <= T_2 ... must hold as *string* prefixes; the pieces between are
  tokenized separately and concatenated: P_1 unlabelled, T_1 - P_1 labelled (the assistant text and its
  end-of-turn marker), P_2 - T_1 unlabelled, and so on.
- Why pieces and not one tokenization of the whole text: byte-pair merges cross the prompt/answer boundary
  (a generation prompt ending in "assistant: " followed by "the" tokenizes as "...:", " the" in the whole text,
  but the runtime's prompt ends in the token " "). Tokenizing pieces keeps the prompt tokens of the first
  assistant turn identical to the runtime's, and the labels exactly the tokens of the answer text. The two
  tokenizations can differ only where a merge crosses a piece boundary; at special tokens (every real
  template's turn markers) they never do.
- A template that breaks the chain (one that renders earlier turns differently once more follow, as some
  "thinking" templates do) cannot be masked this way: that is a RuntimeError naming the line, not a
  DatasetError, because the data is fine and the model's template is the problem. There is no fallback.
- A prompt-completion record is one user turn (the prompt, no system prompt of ours; the template may add its
  own default) and one assistant turn (the completion).
- Without a chat template, a prompt-completion record is `prompt + completion + eos`, the prompt tokenized as
  the runtime tokenizes a raw prompt (with the tokenizer's special tokens, unless the prompt already starts with
  the BOS text), loss on `completion + eos`. A conversation is `render_chat`'s plain transcript
  ("System: ...", "User: ...", "Assistant: ..." lines joined with "\\n"); the labelled part of an assistant
  turn is what follows the runtime's prompt ("\\nAssistant:"), i.e. " <text>", plus an EOS token inserted after
  it, because EOS is the only place the runtime stops such a model.
- Continued pre-training: `input + eos`, loss on every token, the input tokenized like a raw prompt. Records
  longer than `max_tokens` are cut into windows of `max_tokens` tokens: unlabelled text has no boundary to
  respect. Consecutive windows overlap by one token (the stride is `max_tokens - 1`), because a window's first
  token is never a target (it has no token before it): with the overlap every token after the first of the
  record is a target exactly once, and no window is a lone token with nothing to predict.
- Prompt-completion and conversation records longer than `max_tokens` are refused (truncating would cut the
  answer the loss is about).

Labels follow the transformers convention: `labels[i]` is the target at position i (the model shifts), -100
where no loss is taken. Validation and tokenization happen in one pass; records are tokenized in batches of
`BATCH_RECORDS` with the fast tokenizer, and an error is still reported at the first bad line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from outcrop.errors import ValidationException
from outcrop.inference.chat import render_chat
from outcrop.platform import jsontext

PROMPT_COMPLETION, CONVERSATION, CONTINUED_TEXT = "prompt-completion", "conversation", "continued-pretraining"
FINE_TUNING, CONTINUED_PRE_TRAINING = "FINE_TUNING", "CONTINUED_PRE_TRAINING"
SCHEMA_VERSION = "bedrock-conversation-2024"
IGNORE_INDEX = -100
BATCH_RECORDS = 512

#: The formats each customization type trains on.
FORMATS_FOR_TYPE = {FINE_TUNING: (PROMPT_COMPLETION, CONVERSATION), CONTINUED_PRE_TRAINING: (CONTINUED_TEXT,)}
#: Required and optional keys of each format.
KEYS = {
    PROMPT_COMPLETION: (("prompt", "completion"), ()),
    CONVERSATION: (("messages",), ("system", "schemaVersion")),
    CONTINUED_TEXT: (("input",), ()),
}
_SHAPES = {PROMPT_COMPLETION: '{"prompt", "completion"}', CONVERSATION: '{"schemaVersion"?, "system"?, "messages"}',
           CONTINUED_TEXT: '{"input"}'}


class DatasetError(ValidationException):
    """A dataset file that is not right: "<source> line <n>: <what>" or "<source>: <what>"."""

    aws_code = "ValidationException"


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where no loss is taken


@dataclass
class DatasetSummary:
    source: str
    format: str
    records: int
    examples: int
    tokens: int
    trainable_tokens: int


def load_examples(lines: Iterable[bytes | str], *, source: str, customization_type: str, tokenizer: Any,
                  max_tokens: int, min_records: int, max_records: int) -> tuple[list[Example], DatasetSummary]:
    """Validate and tokenize a JSONL dataset, line by line; stop reading as soon as it has too many records."""
    if customization_type not in FORMATS_FOR_TYPE:
        raise DatasetError(f"{source}: customization type {customization_type!r} takes no training data here; "
                           f"use {' or '.join(FORMATS_FOR_TYPE)}")
    if max_tokens < 2:
        raise ValueError(f"max_tokens must be at least 2, not {max_tokens}")
    loader = _Loader(source, customization_type, tokenizer, max_tokens)
    records, too_many = 0, False
    for number, raw in enumerate(lines, start=1):
        try:
            text = decode_line(raw, number)
            if not text.strip():
                continue
            if records == max_records:
                too_many = True  # stop here: a 10 GB file is not read to its end to say so
                break
            records += 1
            loader.add(number, text)
        except RecordError as exc:
            loader.flush()  # an earlier line's error (too many tokens) is reported first
            raise DatasetError(f"{source} line {number}: {exc}") from None
    loader.flush()
    check_count(source, records, min_records, max_records, too_many)
    examples = loader.examples
    fmt = loader.format or (CONTINUED_TEXT if customization_type == CONTINUED_PRE_TRAINING else "")
    return examples, DatasetSummary(
        source=source, format=fmt, records=records, examples=len(examples),
        tokens=sum(len(e.input_ids) for e in examples),
        trainable_tokens=sum(sum(1 for label in e.labels if label != IGNORE_INDEX) for e in examples))


# -- one record: parse and validate ------------------------------------------------------------------


class RecordError(Exception):
    """What is wrong with one record; the dataset's loader adds the file and the line."""


def decode_line(raw: bytes | str, number: int) -> str:
    """One line's text (line `number`, counted from 1: the first may start with a byte-order mark)."""
    if isinstance(raw, str):
        text = raw
    else:
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RecordError(f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at position {exc.start})") from None
    return text.removeprefix("\ufeff") if number == 1 else text


def check_count(source: str, records: int, min_records: int, max_records: int, too_many: bool) -> None:
    """A dataset's record count against its bounds (`too_many`: reading stopped past `max_records`)."""
    if too_many:
        raise DatasetError(f"{source}: more than {max_records:,} records; at most {max_records:,} are allowed")
    if records < min_records:
        noun = "record" if records == 1 else "records"
        raise DatasetError(f"{source}: {records:,} {noun}; at least {min_records:,} "
                           f"{'is' if min_records == 1 else 'are'} needed")


def parse_record(text: str) -> dict[str, Any]:
    try:
        record = jsontext.loads(text)  # strict: an unpaired surrogate would crash the tokenizer later
    except jsontext.InvalidJson as exc:
        where = f" (column {exc.colno})" if exc.colno else ""
        raise RecordError(f"not valid JSON: {exc.msg}{where}") from None
    if not isinstance(record, dict):
        raise RecordError(f"not a JSON object but {json_type(record)}; each line is one record, an object")
    return record


def _detect(record: dict[str, Any]) -> str:
    if "messages" in record:
        return CONVERSATION
    if "prompt" in record or "completion" in record:
        return PROMPT_COMPLETION
    if "input" in record:
        return CONTINUED_TEXT
    keys = ", ".join(repr(k) for k in record) or "none"
    raise RecordError(f"a record of no known format (keys: {keys}); a record is {_SHAPES[PROMPT_COMPLETION]} "
                       f"({PROMPT_COMPLETION}), {_SHAPES[CONVERSATION]} ({CONVERSATION}) or "
                       f"{_SHAPES[CONTINUED_TEXT]} ({CONTINUED_TEXT})")


def _check_keys(record: dict[str, Any], fmt: str) -> None:
    required, optional = KEYS[fmt]
    missing = [k for k in required if k not in record]
    if missing:
        raise RecordError(f"missing key {', '.join(repr(k) for k in missing)} in a {fmt} record")
    extra = [k for k in record if k not in required and k not in optional]
    if extra:
        noun = "key" if len(extra) == 1 else "keys"
        raise RecordError(f"unknown {noun} {', '.join(repr(k) for k in extra)} in a {fmt} record "
                           f"(its keys are {', '.join(required + optional)})")


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise RecordError(f'"{where}" must be a string, not {json_type(value)}')
    if not value.strip():
        raise RecordError(f'"{where}" is empty')
    return value


def _blocks(value: Any, where: str) -> list[str]:
    """A list of `{"text": ...}` blocks, as Bedrock's conversation format writes content and system."""
    if not isinstance(value, list):
        raise RecordError(f'"{where}" must be a list of {{"text": ...}} blocks, not {json_type(value)}')
    texts = []
    for index, block in enumerate(value):
        here = f"{where}[{index}]"
        if not isinstance(block, dict):
            raise RecordError(f'"{here}" must be a {{"text": ...}} block, not {json_type(block)}')
        extra = [k for k in block if k != "text"]
        if extra:
            raise RecordError(f'"{here}" has unsupported key {", ".join(repr(k) for k in extra)}; '
                               f"only text blocks are supported")
        if "text" not in block:
            raise RecordError(f'"{here}" is missing key \'text\'')
        if not isinstance(block["text"], str):
            raise RecordError(f'"{here}.text" must be a string, not {json_type(block["text"])}')
        texts.append(block["text"])
    return texts


def _conversation(record: dict[str, Any]) -> tuple[str, list[dict[str, str]]]:
    """(system, messages) of a conversation record, messages as `render_chat` takes them."""
    if "schemaVersion" in record and record["schemaVersion"] != SCHEMA_VERSION:
        raise RecordError(f'"schemaVersion" must be "{SCHEMA_VERSION}", not {json.dumps(record["schemaVersion"])}')
    system_blocks = _blocks(record.get("system", []), "system")
    for index, text in enumerate(system_blocks):
        if not text.strip():
            raise RecordError(f'"system[{index}].text" is empty')
    messages = record["messages"]
    if not isinstance(messages, list):
        raise RecordError(f'"messages" must be a non-empty list of messages, not {json_type(messages)}')
    if not messages:
        raise RecordError('"messages" is empty')
    chat = []
    for index, message in enumerate(messages):
        here = f"messages[{index}]"
        if not isinstance(message, dict):
            raise RecordError(f'"{here}" must be an object with "role" and "content", not {json_type(message)}')
        for key in ("role", "content"):
            if key not in message:
                raise RecordError(f"{here} is missing key {key!r}")
        extra = [k for k in message if k not in ("role", "content")]
        if extra:
            raise RecordError(f"{here} has unknown key {', '.join(repr(k) for k in extra)} "
                               f"(its keys are role, content)")
        role = message["role"]
        if role not in ("user", "assistant"):
            raise RecordError(f"{here}.role must be 'user' or 'assistant', not {json.dumps(role)}")
        expected = "user" if index % 2 == 0 else "assistant"
        if role != expected:
            raise RecordError(f"{here} has role {role!r} where {expected!r} was expected")
        content = "".join(_blocks(message["content"], f"{here}.content"))
        if not content.strip():
            raise RecordError(f"{here} has no text")
        chat.append({"role": role, "content": content})
    if chat[-1]["role"] != "assistant":
        raise RecordError("the last message must be from the assistant")
    return "\n".join(system_blocks), chat


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


# -- tokenization ----------------------------------------------------------------------------------


@dataclass
class _Piece:
    text: str | None  # None: the EOS token
    labelled: bool
    special: bool = False  # tokenize with the tokenizer's special tokens (a raw prompt's BOS)
    ids: list[int] = field(default_factory=list)


@dataclass
class _Pending:
    line: int
    pieces: list[_Piece] = field(default_factory=list)


class _Loader:
    """The state of one pass: the dataset's format, records waiting for a batch encode, examples made."""

    def __init__(self, source: str, customization_type: str, tokenizer: Any, max_tokens: int) -> None:
        self.source, self.customization_type = source, customization_type
        self.tokenizer, self.max_tokens = tokenizer, max_tokens
        self.templated = bool(getattr(tokenizer, "chat_template", None))
        self.eos = tokenizer.eos_token_id
        self.format = ""
        self.pending: list[_Pending] = []
        self.examples: list[Example] = []

    def add(self, number: int, text: str) -> None:
        record = parse_record(text)
        fmt = _detect(record)
        if not self.format:
            allowed = FORMATS_FOR_TYPE[self.customization_type]
            if fmt not in allowed:
                needs = " or ".join(f"{f} {_SHAPES[f]}" for f in allowed)
                raise RecordError(f"a {fmt} record, but {self.customization_type} needs {needs} records")
            self.format = fmt
        elif fmt != self.format:
            raise RecordError(f"a {fmt} record in a {self.format} dataset: one dataset, one format")
        _check_keys(record, fmt)
        pending = _Pending(number)
        if fmt == PROMPT_COMPLETION:
            prompt, completion = _text(record["prompt"], "prompt"), _text(record["completion"], "completion")
            if self.templated:
                self._chat(pending, "", [{"role": "user", "content": prompt},
                                         {"role": "assistant", "content": completion}])
            else:
                pending.pieces += [_Piece(prompt, False, self._raw_special(prompt)), _Piece(completion, True),
                                   _Piece(None, True)]
        elif fmt == CONVERSATION:
            system, messages = _conversation(record)
            self._chat(pending, system, messages)
        else:
            document = _text(record["input"], "input")
            pending.pieces += [_Piece(document, True, self._raw_special(document)), _Piece(None, True)]
        self.pending.append(pending)
        if len(self.pending) >= BATCH_RECORDS:
            self.flush()

    def _raw_special(self, text: str) -> bool:
        """The runtime's rule for a raw prompt: the tokenizer's special tokens, unless it starts with BOS."""
        bos = self.tokenizer.bos_token
        return not (bos and text.startswith(bos))

    def _chat(self, pending: _Pending, system: str, messages: list[dict[str, str]]) -> None:
        done = ""
        for index, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            prompt = self._render(system, messages[:index])
            through = self._render(system, messages[:index + 1])
            if not prompt.startswith(done) or not through.startswith(prompt) or through == prompt:
                raise RuntimeError(
                    f"{self.source} line {pending.line}: the model's chat template does not render "
                    f"messages[{index}] as a non-empty continuation of the prompt before it (the rendering of the "
                    f"chat up to each assistant turn must start with the rendering of the chat before it), so the "
                    f"assistant's tokens cannot be told from the prompt's for the loss mask")
            pending.pieces += [_Piece(prompt[len(done):], False), _Piece(through[len(prompt):], True)]
            if not self.templated:
                pending.pieces.append(_Piece(None, True))
            done = through
        # The chain ends with the last assistant turn: the conversation ends there, and so does its rendering.

    def _render(self, system: str, messages: list[dict[str, str]]) -> str:
        """`render_chat`'s text: with a generation prompt after a user turn, closed after an assistant turn."""
        if messages[-1]["role"] == "user" or not self.templated:
            try:
                return render_chat(self.tokenizer, messages, system)
            except ValidationException as exc:
                raise RecordError(exc.message) from None
        from jinja2 import TemplateError

        chat = ([{"role": "system", "content": system}] if system else []) + messages
        try:
            return self.tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=False)
        except TemplateError as exc:
            raise RecordError(f"The model's chat template refused this conversation: {exc}") from None

    def flush(self) -> None:
        """Tokenize the waiting records in two batch calls, make their examples, check their lengths."""
        pending, self.pending = self.pending, []
        if not pending:
            return
        for special in (False, True):
            pieces = [p for r in pending for p in r.pieces if p.text and p.special == special]
            if pieces:
                encoded = self.tokenizer([p.text for p in pieces], add_special_tokens=special)["input_ids"]
                for piece, tokens in zip(pieces, encoded, strict=True):
                    piece.ids = list(tokens)
        eos = [] if self.eos is None else [self.eos]
        for record in pending:
            input_ids: list[int] = []
            labels: list[int] = []
            for piece in record.pieces:
                if piece.text is None and input_ids[-1:] == eos:
                    continue  # the tokenizer already ended the text with EOS
                tokens = eos if piece.text is None else piece.ids
                input_ids += tokens
                labels += tokens if piece.labelled else [IGNORE_INDEX] * len(tokens)
            if self.format == CONTINUED_TEXT:
                self.examples += _windows(input_ids, labels, self.max_tokens)
            elif len(input_ids) > self.max_tokens:
                raise DatasetError(f"{self.source} line {record.line}: {len(input_ids):,} tokens, over the limit "
                                   f"of {self.max_tokens:,} (maxSequenceLength)")
            else:
                self.examples.append(Example(input_ids, labels))


def _windows(input_ids: list[int], labels: list[int], size: int) -> list[Example]:
    """Windows of `size` tokens, overlapping by one so that every token after the first is a target once."""
    if len(input_ids) <= size:
        return [Example(input_ids, labels)]
    stride = size - 1
    return [Example(input_ids[start:start + size], labels[start:start + size])
            for start in range(0, len(input_ids) - 1, stride)]
