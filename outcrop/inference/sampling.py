"""Next-token sampling: temperature, top-k, top-p, and a per-request random generator.

Each request draws from its own `torch.Generator`, so a seeded request gives the same text no
matter what else is in the batch, and unseeded requests differ from one another.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import torch

#: Tokens generated when a request names no limit (Llama's `max_gen_len` default on Bedrock).
DEFAULT_MAX_TOKENS = 512
DEFAULT_TEMPERATURE = 0.7
DEFAULT_TOP_P = 0.9


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    #: 0 switches top-k off.
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    #: A grammar the text must follow (inference/grammar.py): tool calls and JSON answers. None: free text.
    grammar: str | None = None
    #: Special tokens the text keeps instead of dropping (a tool call's marker, such as Mistral's [TOOL_CALLS]).
    visible_tokens: frozenset[int] = frozenset()

    @property
    def greedy(self) -> bool:
        """Temperature 0 or top-k 1 always takes the most likely token: repeatable without a seed."""
        return self.temperature == 0 or self.top_k == 1

    def generator(self, device: torch.device | str = "cpu") -> torch.Generator:
        generator = torch.Generator(device=device)
        generator.manual_seed(self.seed if self.seed is not None else secrets.randbits(63))
        return generator


#: Candidates a batched step draws a nucleus from before it falls back to sorting the whole vocabulary: top_p's
#: nucleus is the head of the sorted distribution, and after a temperature below 1 it is almost always short.
NUCLEUS_CANDIDATES = 256


def sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator) -> int:
    """One token id from a row of next-token logits: the reference `sample_batch` is held to."""
    if params.greedy:
        return int(torch.argmax(logits))
    logits = logits.float() / params.temperature
    if params.top_k > 0 and params.top_k < logits.numel():
        kth = torch.topk(logits, params.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if params.top_p >= 1.0:
        return int(torch.multinomial(probs, 1, generator=generator))
    return _from_nucleus(*torch.sort(probs, descending=True), params.top_p, generator)


def _from_nucleus(sorted_probs: torch.Tensor, order: torch.Tensor, top_p: float, generator: torch.Generator) -> int:
    """A draw from the smallest head of the sorted distribution whose mass reaches top_p (the first token always
    survives): the same draw whether the head came from a full sort or from a top-k that holds it."""
    kept = max(1, int(((torch.cumsum(sorted_probs, dim=-1) - sorted_probs) < top_p).sum()))  # top_p 0: the first
    return int(order[torch.multinomial(sorted_probs[:kept], 1, generator=generator)])


def sample_batch(logits: torch.Tensor, params: list[SamplingParams], generators: list[torch.Generator]) -> list[int]:
    """One token per row, with the same result as `sample` row by row, but the filtering batched.

    Sorting a 50k vocabulary for top-p is the costly part of a decode step's sampling (and a draw over all of it
    the next): each row's nucleus is found in one batched top-k of NUCLEUS_CANDIDATES, sorted only where it is
    longer, and drawn from its own few tokens."""
    tokens = torch.argmax(logits, dim=-1).tolist()
    rows = [i for i, p in enumerate(params) if not p.greedy]
    if not rows:
        return tokens
    index = torch.tensor(rows, device=logits.device)
    scaled = logits.index_select(0, index).float()
    scaled /= torch.tensor([params[i].temperature for i in rows], device=logits.device).unsqueeze(1)
    top_k = [params[i].top_k if 0 < params[i].top_k < scaled.shape[1] else 0 for i in rows]
    if any(top_k):
        kth = torch.topk(scaled, max(top_k), dim=-1).values
        for r, k in enumerate(top_k):
            if k:
                scaled[r].masked_fill_(scaled[r] < kth[r, k - 1], float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    head, head_order = torch.topk(probs, min(NUCLEUS_CANDIDATES, probs.shape[1]), dim=-1)
    head_mass = head.cumsum(dim=-1)[:, -1].tolist()  # as the nucleus adds it up
    for r, i in enumerate(rows):
        top_p = params[i].top_p
        if top_p >= 1.0:
            tokens[i] = int(torch.multinomial(probs[r], 1, generator=generators[i]))
        elif head_mass[r] >= top_p:  # the nucleus lies inside the head
            tokens[i] = _from_nucleus(head[r], head_order[r], top_p, generators[i])
        else:
            tokens[i] = _from_nucleus(*torch.sort(probs[r], descending=True), top_p, generators[i])
    return tokens
