"""Bedrock's batch inference files: input records, output lines and the manifest, as the docs lay them out.

An input file is JSONL, one `{"recordId": "...", "modelInput": {...}}` per line, the model input being
the body InvokeModel takes for that model; a record without a recordId gets one in the output, as on
Bedrock (11 digits: its file's and its line's number). A line that is no such record does not fail the job: it
gets an output line with its error (and its line number), and the others are done. The outputs go
under `<output prefix>/<job id>/`: `<input file name>.out` per input file, one line per record, in the
input's order, `{"recordId", "modelInput", "modelOutput"}` or `{"recordId", "modelInput", "error":
{"errorCode", "errorMessage"}}`, and `manifest.json.out` with the job's counts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from outcrop.platform import jsontext

MANIFEST_NAME = "manifest.json.out"
OUTPUT_SUFFIX = ".out"
INPUT_SUFFIX = ".jsonl"
#: The longest recordId kept (Bedrock's are 11 characters; ids people write are longer, never this long).
MAX_RECORD_ID = 256
RECORD_KEYS = ("recordId", "modelInput")


@dataclass(frozen=True)
class Record:
    """One line of an input file that is a record: what the model is asked."""

    #: Which input file (its index among the job's files) and line (1-based), the record's key in the job.
    file: int
    line: int
    record_id: str
    model_input: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class Malformed:
    """A line that is no record: its output line is its error, and no model is asked."""

    file: int
    line: int
    #: What could be read of it: the recordId and modelInput if the line was JSON, else the raw text as modelInput.
    record_id: str | None
    model_input: Any
    message: str

    def output(self) -> dict[str, Any]:
        return error_line(self.record_id, self.model_input, 400, self.message)


def parse_line(text: str, file: int, line: int) -> Record | Malformed:
    """One non-blank line of input file `file`; line numbers count from 1 and count blank lines too."""
    where = f"Line {line}"
    try:
        value = jsontext.loads(text)
    except jsontext.InvalidJson as exc:
        return Malformed(file, line, None, text, f"{where}: the record is not valid JSON: {exc}")
    if not isinstance(value, dict):
        return Malformed(file, line, None, value, f"{where}: a record must be a JSON object with recordId and "
                                                  "modelInput")
    record_id = value.get("recordId")
    model_input = value.get("modelInput")
    if "recordId" not in value:
        record_id = generated_id(file, line)
    readable_id = record_id if isinstance(record_id, str) and record_id else None
    unknown = sorted(set(value) - set(RECORD_KEYS))
    problem = None
    if unknown:
        problem = f"unknown member {', '.join(unknown)}; a record has only recordId and modelInput"
    elif not isinstance(record_id, str) or not record_id.strip():
        problem = "recordId must be a non-empty string"
    elif len(record_id) > MAX_RECORD_ID:
        problem = f"recordId is longer than {MAX_RECORD_ID} characters"
    elif "modelInput" not in value:
        problem = "the record has no modelInput"
    elif not isinstance(model_input, dict):
        problem = "modelInput must be a JSON object: the request body the model takes through InvokeModel"
    if problem is not None:
        return Malformed(file, line, readable_id, model_input, f"{where}: {problem}")
    return Record(file, line, record_id, model_input)


def generated_id(file: int, line: int) -> str:
    """The recordId of a record that has none: Bedrock's form (11 alphanumerics), the same on every attempt."""
    return f"{file:03d}{line:08d}"


def parse_lines(lines: Iterable[bytes | str], file: int = 0) -> Iterator[Record | Malformed]:
    """Every record of one input file, in order (blank lines skipped; a duplicated recordId is malformed: the
    outputs could not be told apart)."""
    seen: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        if isinstance(raw, bytes):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield Malformed(file, number, None, None, f"Line {number}: the record is not UTF-8 text ({exc.reason})")
                continue
        else:
            text = raw
        if not text.strip():
            continue
        parsed = parse_line(text.strip(), file, number)
        if isinstance(parsed, Record):
            first = seen.setdefault(parsed.record_id, number)
            if first != number:
                parsed = Malformed(file, number, parsed.record_id, parsed.model_input,
                                   f"Line {number}: recordId {parsed.record_id} is also the recordId of line {first}")
        yield parsed


def success_line(record: Record, model_output: dict[str, Any]) -> dict[str, Any]:
    return {"recordId": record.record_id, "modelInput": record.model_input, "modelOutput": model_output}


def error_line(record_id: str | None, model_input: Any, code: int, message: str) -> dict[str, Any]:
    return {"recordId": record_id, "modelInput": model_input, "error": {"errorCode": code, "errorMessage": message}}


def dumps(line: dict[str, Any]) -> str:
    """One output line: compact JSON, non-ASCII kept as it is (the input's own text comes back unchanged)."""
    return json.dumps(line, ensure_ascii=False, separators=(",", ":"))


def output_name(input_name: str) -> str:
    """`<input file name>.out`: `data/part-1.jsonl` -> `data/part-1.jsonl.out`."""
    return input_name + OUTPUT_SUFFIX


@dataclass
class Counts:
    """Bedrock's counts: what the manifest says and GetModelInvocationJob answers."""

    total: int = 0
    processed: int = 0
    success: int = 0
    error: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def add(self, line: dict[str, Any], input_tokens: int = 0, output_tokens: int = 0) -> None:
        """Count one processed record by its output line."""
        self.processed += 1
        if "error" in line:
            self.error += 1
        else:
            self.success += 1
            self.input_tokens += input_tokens
            self.output_tokens += output_tokens

    def manifest(self) -> dict[str, int]:
        return {"totalRecordCount": self.total, "processedRecordCount": self.processed,
                "successRecordCount": self.success, "errorRecordCount": self.error,
                "inputTokenCount": self.input_tokens, "outputTokenCount": self.output_tokens}
