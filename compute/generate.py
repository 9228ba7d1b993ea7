"""Deterministic text generation with SmolLM2: greedy or seeded sampling.

Sampling draws its randomness from Philox4x32-10 keyed by (seed, sequence id,
token position) (:mod:`refute.kernels.sampling`), never from a stateful RNG, so
a sequence's tokens depend only on its prompt, its sequence id and the
sampling parameters: not on the batch it was generated in (I2), and the
logits of every decode step equal a prefill replay of the finished sequence
(I3).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from refute.compute.llama import KVCache, LlamaDecoder
from refute.kernels import sampling


@dataclass(frozen=True)
class SamplingParams:
    """``temperature == 0`` is greedy; ``top_k == 0`` and ``top_p == 1`` are off."""

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0, got {self.top_k}")
        if not 0 <= self.top_p <= 1:
            raise ValueError(f"top_p must lie in [0, 1], got {self.top_p}")
        if not 0 <= self.seed < 2**64:
            raise ValueError(f"seed must lie in [0, 2**64), got {self.seed}")


@dataclass
class Generation:
    """One sequence's prompt, generated tokens and (optionally) each step's logits."""

    sequence_id: int
    prompt_ids: list[int]
    token_ids: list[int] = field(default_factory=list)
    step_logits: list[torch.Tensor] = field(default_factory=list)
    stopped_at_eos: bool = False


def generate(
    model: LlamaDecoder,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    params: SamplingParams = SamplingParams(),
    sequence_ids: Sequence[int] | None = None,
    keep_logits: bool = False,
    stop_at_eos: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> list[Generation]:
    """Generate up to ``max_new_tokens`` for each prompt (token ids), batched.

    Prompts are left-padded to a common length; each sequence keeps its own
    positions and key mask. ``sequence_ids`` (default ``0..B-1``) key the
    sampling randomness: give a sequence the same id to get the same tokens
    in any batch. ``progress(step, total)`` is called after every token.
    """
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token")
    if max_new_tokens < 0:
        raise ValueError("max_new_tokens must be >= 0")
    ids_of = list(range(len(prompts))) if sequence_ids is None else [int(i) for i in sequence_ids]
    if len(ids_of) != len(prompts):
        raise ValueError("sequence_ids must name every prompt")
    c = model.config
    pad = c.pad_token_id if c.pad_token_id is not None else c.eos_token_id
    batch, width = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((batch, width), pad, dtype=torch.int64)
    positions = torch.zeros((batch, width), dtype=torch.int64)
    mask = torch.zeros((batch, width), dtype=torch.bool)
    for b, prompt in enumerate(prompts):
        start = width - len(prompt)
        ids[b, start:] = torch.tensor(list(prompt), dtype=torch.int64)
        positions[b, start:] = torch.arange(len(prompt))
        mask[b, start:] = True
    results = [Generation(ids_of[b], list(prompts[b])) for b in range(batch)]
    if max_new_tokens == 0:
        return results

    cache = KVCache()
    logits = model.forward(ids, positions, mask, cache, logits_for="last")[:, 0, :]
    next_pos = torch.tensor([len(p) for p in prompts], dtype=torch.int64)
    live = torch.ones(batch, dtype=torch.bool)
    seq_tensor = torch.tensor(ids_of, dtype=torch.int64)
    for step in range(max_new_tokens):
        tokens = sampling.sample_tokens(
            logits,
            seeds=params.seed,
            sequences=seq_tensor,
            positions=next_pos,
            temperature=params.temperature,
            top_k=params.top_k,
            top_p=params.top_p,
            backend=model.ex.backend,
        ).cpu()
        for b in range(batch):
            if not live[b]:
                continue
            results[b].token_ids.append(int(tokens[b]))
            if keep_logits:
                results[b].step_logits.append(logits[b].cpu())
            if stop_at_eos and int(tokens[b]) == c.eos_token_id:
                results[b].stopped_at_eos = True
                live[b] = False
        if progress is not None:
            progress(step + 1, max_new_tokens)
        if step + 1 == max_new_tokens or not bool(live.any()):
            break
        # Finished sequences keep stepping (masked) so the batch stays rectangular;
        # their own outputs are no longer read.
        logits = model.forward(tokens[:, None], next_pos[:, None], live[:, None], cache, logits_for="last")[:, 0, :]
        next_pos = next_pos + 1
    return results
