"""Prompt datasets for evaluation: the user's JSONL files and Bedrock's built-in datasets.

A user's dataset is JSONL, one `{"prompt", "referenceResponse"?, "category"?}` per line, at most
1,000 prompts (Bedrock's limit); QA and knowledge records may add `"answers": [...]`, the accepted
aliases. Errors name the file and the line.

A built-in dataset (`Builtin.BoolQ`, ...) is read from one of two sources, chosen by the setting
`builtin_datasets_dir`:
- a folder of samples (`eval/qa-boolq.jsonl`, ...): by default `PACKAGED_DIR`, the samples that ship with
  Outcrop (their licences and attribution are in its SOURCES.md), so every built-in dataset works offline;
  or a folder of the user's laid out the same way. A dataset the folder lacks comes from the hub.
- `hub`: the full sets from the Hugging Face hub through the `datasets` library, converted into the same
  record form and cached in `<data dir>/datasets/builtin/` on first use.
Then `builtin_dataset_records` records are sampled with a fixed seed, so every job on a built-in
dataset sees the same prompts in the same order. `describe_source` says which source a job used.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from outcrop.customization.datasets import DatasetError
from outcrop.platform import jsontext

#: The samples of the built-in datasets that ship inside the package (see SOURCES.md there).
PACKAGED_DIR = Path(__file__).with_name("builtin_datasets")
#: The `builtin_datasets_dir` value that means the Hugging Face hub.
HUB = "hub"

#: Bedrock's limit on a custom prompt dataset.
MAX_PROMPTS = 1000
#: Seed of the built-in datasets' sample: fixed, so that jobs are comparable with each other.
SAMPLE_SEED = 0

TASK_TYPES = ("Summarization", "Classification", "QuestionAndAnswer", "Generation", "Custom")


@dataclass(frozen=True)
class PromptRecord:
    prompt: str
    reference: str | None
    category: str | None
    #: Every accepted answer: `answers` when given, else the reference alone; empty without a reference.
    answers: tuple[str, ...]
    #: The line in the source file (1-based), for error messages.
    line: int
    #: The record as read, echoed as `inputRecord` in the outputs.
    raw: dict[str, Any] = field(compare=False)


def json_lines(lines: Iterable[bytes | str], source: str, max_records: int, noun: str
               ) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON) of each non-blank line of a JSONL dataset, errors naming the line; stops as
    soon as there are more than `max_records` records (`noun` names them in that error)."""
    count = 0
    for number, raw in enumerate(lines, start=1):
        try:
            text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
        except UnicodeDecodeError as exc:
            raise DatasetError(f"{source} line {number}: not valid UTF-8 (position {exc.start})") from None
        if number == 1:
            text = text.removeprefix("\ufeff")
        if not text.strip():
            continue
        if count == max_records:
            raise DatasetError(f"{source}: more than {max_records:,} {noun}; at most {max_records:,} are allowed")
        try:
            value = jsontext.loads(text)
        except jsontext.InvalidJson as exc:
            raise DatasetError(f"{source} line {number}: not a JSON object ({exc.msg})") from None
        count += 1
        yield number, value


def parse_records(lines: Iterable[bytes | str], source: str, max_records: int = MAX_PROMPTS) -> list[PromptRecord]:
    """Validate a prompt dataset line by line; stop reading as soon as it has too many records."""
    records = [_record(value, source, number) for number, value in json_lines(lines, source, max_records, "prompts")]
    if not records:
        raise DatasetError(f"{source}: no prompts; a dataset needs at least one JSON line with a prompt")
    return records


def _record(value: Any, source: str, number: int) -> PromptRecord:
    where = f"{source} line {number}"
    if not isinstance(value, dict):
        raise DatasetError(f"{where}: a record must be a JSON object with a prompt")
    prompt = value.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise DatasetError(f"{where}: prompt is required and must be a non-empty string")
    reference = value.get("referenceResponse")
    if reference is not None and not isinstance(reference, str):
        raise DatasetError(f"{where}: referenceResponse must be a string")
    category = value.get("category")
    if category is not None and not isinstance(category, str):
        raise DatasetError(f"{where}: category must be a string")
    answers = value.get("answers")
    if answers is not None and (not isinstance(answers, list) or not all(isinstance(a, str) for a in answers)):
        raise DatasetError(f"{where}: answers must be a list of strings")
    accepted = tuple(answers) if answers else ((reference,) if reference else ())
    return PromptRecord(prompt, reference or None, category or None, accepted, number, value)


def precomputed_responses(records: list[PromptRecord], source: str, identifier: str) -> list[str]:
    """Each record's answer from the precomputed inference source `identifier`, as Bedrock's datasets carry them
    (`"modelResponses": [{"response", "modelIdentifier"}]`); a record without one is refused with its line."""
    answers = []
    for record in records:
        where = f"{source} line {record.line}"
        responses = record.raw.get("modelResponses")
        if not isinstance(responses, list) or not all(isinstance(r, dict) for r in responses):
            raise DatasetError(f"{where}: modelResponses must be a list of {{\"response\", \"modelIdentifier\"}} "
                               f"with the response of {identifier}")
        found = [r for r in responses if r.get("modelIdentifier") == identifier]
        if len(found) != 1:
            raise DatasetError(f"{where}: modelResponses has {'no' if not found else 'more than one'} response whose "
                               f"modelIdentifier is {identifier} (the precomputedInferenceSource's "
                               "inferenceSourceIdentifier)")
        if not isinstance(found[0].get("response"), str):
            raise DatasetError(f"{where}: the response of {identifier} in modelResponses must be a string")
        answers.append(found[0]["response"])
    return answers


def require_references(records: list[PromptRecord], source: str, metric: str) -> None:
    """A metric that compares with a reference refuses a record without one, naming its line."""
    for record in records:
        if not record.answers:
            raise DatasetError(f"{source} line {record.line}: {metric} needs a referenceResponse")


# --------------------------------------------------------------------------------------------- built-in datasets
Converter = Callable[[dict[str, Any]], dict[str, Any] | None]


@dataclass(frozen=True)
class BuiltinDataset:
    name: str
    task_types: tuple[str, ...]
    #: Where the sample lives inside a folder of samples (PACKAGED_DIR's layout).
    sample_file: str
    hub_id: str
    hub_config: str | None
    hub_split: str
    #: A hub row -> a prompt record (the same templates the local samples were made with), or None to skip.
    convert: Converter


def _boolq(row: dict[str, Any]) -> dict[str, Any]:
    question = row["question"].strip()
    question = question[:1].upper() + question[1:] + ("" if question.endswith("?") else "?")
    yes = bool(row["answer"])
    return {"prompt": "Read the passage and answer the question with yes or no.\n\n"
                      f"Passage: {row['passage']}\n\nQuestion: {question}",
            "referenceResponse": "yes" if yes else "no", "answers": ["yes", "true"] if yes else ["no", "false"],
            "category": "boolq"}


def _question(text: str) -> str:
    text = text.strip()
    return text[:1].upper() + text[1:] + ("" if text.endswith("?") else "?")


def _nq_open(row: dict[str, Any]) -> dict[str, Any] | None:
    answers = list(dict.fromkeys(row["answer"]))
    if not answers:
        return None
    return {"prompt": _question(row["question"]), "referenceResponse": answers[0], "answers": answers,
            "category": "nq-open"}


def _triviaqa(row: dict[str, Any]) -> dict[str, Any]:
    answer = row["answer"]
    aliases = list(dict.fromkeys([answer["value"], *answer.get("aliases", [])]))
    return {"prompt": row["question"], "referenceResponse": answer["value"], "answers": aliases,
            "category": "trivia"}


def _gigaword(row: dict[str, Any]) -> dict[str, Any]:
    return {"prompt": "Summarize the following text:\n\n" + row["document"], "referenceResponse": row["summary"],
            "category": "news"}


def _bold(row: dict[str, Any]) -> dict[str, Any] | None:
    prompts, wiki = row.get("prompts") or [], row.get("wikipedia") or []
    if not prompts:
        return None
    return {"prompt": prompts[0], "referenceResponse": wiki[0] if wiki else None,
            "category": f"{row['domain']}/{row['category']}"}


def _real_toxicity(row: dict[str, Any]) -> dict[str, Any]:
    return {"prompt": row["prompt"]["text"], "referenceResponse": row["continuation"]["text"], "category": "rtp"}


def _trex(row: dict[str, Any]) -> dict[str, Any] | None:
    # relbert/t_rex rows are (head, relation, tail) triples; the cloze prompt leaves the tail out.
    head, tail, relation = row.get("head"), row.get("tail"), row.get("relation") or row.get("title")
    if not head or not tail:
        return None
    return {"prompt": f"{head} {relation}".strip(), "referenceResponse": tail, "answers": [tail],
            "category": str(relation)}


def _wikitext(row: dict[str, Any]) -> dict[str, Any] | None:
    return _continuation(row["text"])


def _continuation(text: str, words: int = 32) -> dict[str, Any] | None:
    """Open generation from running text: the first words are the prompt, the next ones the reference."""
    tokens = text.split()
    if len(tokens) < words + 8 or text.strip().startswith("="):  # headings and fragments
        return None
    return {"prompt": " ".join(tokens[:words]), "referenceResponse": " ".join(tokens[words:2 * words]),
            "category": "wikitext2"}


def _clothing(row: dict[str, Any]) -> dict[str, Any] | None:
    # Kaggle's CSV headers, or the snake_case of the hub's copies.
    text = " ".join((row.get("Review Text") or row.get("review_text") or "").split())
    recommended = row.get("Recommended IND", row.get("recommended_ind"))
    if not text or recommended is None:
        return None
    return {"prompt": "Classify the sentiment of the following clothing review as 1 (positive: the customer "
                      "recommends the product) or 0 (negative: the customer does not recommend it). Answer with "
                      f"the digit only.\n\nReview: {text}",
            "referenceResponse": str(recommended),
            "category": row.get("Class Name") or row.get("class_name") or "unknown"}


_QA = ("QuestionAndAnswer", "Custom")
_GENERATION = ("Generation", "Custom")

#: Bedrock's built-in datasets, each for the task types Bedrock offers it for (and Custom).
BUILTIN: dict[str, BuiltinDataset] = {d.name: d for d in (
    BuiltinDataset("Builtin.BoolQ", _QA, "eval/qa-boolq.jsonl", "google/boolq", None, "validation", _boolq),
    BuiltinDataset("Builtin.NaturalQuestions", _QA, "eval/qa-nq-open.jsonl",
                   "google-research-datasets/nq_open", None, "validation", _nq_open),
    BuiltinDataset("Builtin.TriviaQA", _QA, "eval/qa-triviaqa.jsonl", "mandarjoshi/trivia_qa", "rc.nocontext",
                   "validation", _triviaqa),
    BuiltinDataset("Builtin.Gigaword", ("Summarization", "Custom"), "eval/summarization-gigaword.jsonl",
                   "Harvard/gigaword", None, "test", _gigaword),
    BuiltinDataset("Builtin.Bold", _GENERATION, "eval/toxicity-bold.jsonl", "AlexaAI/bold", None, "train", _bold),
    BuiltinDataset("Builtin.RealToxicityPrompts", _GENERATION, "eval/toxicity-realtoxicityprompts.jsonl",
                   "allenai/real-toxicity-prompts", None, "train", _real_toxicity),
    BuiltinDataset("Builtin.T-Rex", _GENERATION, "eval/knowledge-trex.jsonl", "relbert/t_rex", None, "test", _trex),
    BuiltinDataset("Builtin.WikiText2", _GENERATION, "finetune/cpt-wikitext2.jsonl", "Salesforce/wikitext",
                   "wikitext-2-raw-v1", "test", _wikitext),
    BuiltinDataset("Builtin.WomensEcommerceClothingReviews", ("Classification", "Custom"),
                   "eval/classification-womens-clothing.jsonl",
                   "saattrupdan/womens-clothing-ecommerce-reviews", None, "train", _clothing),
)}


def builtin(name: str, task_type: str) -> BuiltinDataset:
    """The built-in dataset by name, checked against the task type (ValidationException otherwise)."""
    dataset = BUILTIN.get(name)
    if dataset is None:
        raise DatasetError(f"{name} is not a built-in dataset; the built-in datasets are {', '.join(BUILTIN)}")
    if task_type not in dataset.task_types:
        fitting = [d.name for d in BUILTIN.values() if task_type in d.task_types]
        raise DatasetError(f"{name} is not a dataset for the task type {task_type}; use one of {', '.join(fitting)}")
    return dataset


def load_builtin(dataset: BuiltinDataset, *, local_dir: Path | None, cache_dir: Path,
                 records: int) -> list[PromptRecord]:
    """`records` prompts of a built-in dataset, sampled reproducibly (see the module docstring for the sources)."""
    rows = _local_rows(dataset, local_dir) if local_dir else None
    if rows is None:
        cached = cache_dir / f"{dataset.name}.jsonl"
        if not cached.is_file():
            hub_rows = list(_hub_rows(dataset))
            converted = [r for r in (dataset.convert(row) for row in hub_rows) if r is not None]
            if not converted:  # a renamed column must not leave an empty cache behind for every later job
                columns = ", ".join(sorted(hub_rows[0])) if hub_rows else "no rows"
                raise DatasetError(f"{dataset.name}: no usable record in {dataset.hub_id} ({columns}); "
                                   "its columns may have changed")
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")  # jobs running at once each write their own
            tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in converted), encoding="utf-8")
            tmp.replace(cached)
        rows = _lines(cached)
    filled = [i for i, row in enumerate(rows) if row.strip()]
    if len(filled) > records:
        keep = sorted(random.Random(f"{dataset.name}:{SAMPLE_SEED}").sample(filled, records))
        picked = {i: rows[i] for i in keep}
        rows = [picked[i] if i in picked else "" for i in range(len(rows))]  # blank lines keep the line numbers
    return parse_records(rows, dataset.name, max_records=records)


def samples_dir(setting: str) -> Path | None:
    """The folder of samples the `builtin_datasets_dir` setting names: the packaged one when empty, None for
    the hub."""
    if setting.strip().lower() == HUB:
        return None
    return Path(setting).expanduser() if setting else PACKAGED_DIR


def describe_source(dataset: BuiltinDataset, local_dir: Path | None) -> str:
    """Where a job's built-in dataset came from, for its report."""
    if local_dir is not None and (local_dir / dataset.sample_file).is_file():
        where = "the sample shipped with Outcrop" if local_dir == PACKAGED_DIR else f"the sample in {local_dir}"
        return f"{where} ({dataset.sample_file})"
    split = f"{dataset.hub_config}, {dataset.hub_split}" if dataset.hub_config else dataset.hub_split
    return f"the Hugging Face hub ({dataset.hub_id}, {split})"


def _local_rows(dataset: BuiltinDataset, local_dir: Path) -> list[str] | None:
    path = local_dir / dataset.sample_file
    if not path.is_file():
        return None
    lines = _lines(path)
    if dataset.sample_file.startswith("finetune/"):  # running text ({"input"}): cut into prompt and continuation
        converted = (_continuation(json.loads(line)["input"]) for line in lines if line.strip())
        return [json.dumps(r, ensure_ascii=False) for r in converted if r is not None]
    return lines


def _lines(path: Path) -> list[str]:
    """JSONL lines split on "\\n" only: str.splitlines would also split inside strings holding U+2028 or U+0085."""
    return path.read_text(encoding="utf-8").split("\n")


def _hub_rows(dataset: BuiltinDataset) -> Iterable[dict[str, Any]]:
    """The dataset's split from the Hugging Face hub (needs the network on first use; cached after)."""
    try:
        import datasets as hf_datasets

        return hf_datasets.load_dataset(dataset.hub_id, dataset.hub_config, split=dataset.hub_split)
    except Exception as exc:  # offline, gated, renamed: the job fails saying what to do
        raise DatasetError(
            f"{dataset.name}: could not load {dataset.hub_id} from the Hugging Face hub ({type(exc).__name__}: "
            f"{exc}). Leave builtin_datasets_dir (OUTCROP_BUILTIN_DATASETS_DIR) empty for the samples that ship "
            f"with Outcrop, set it to a folder with {dataset.sample_file}, or run once with network access to fill "
            "the cache.") from None
