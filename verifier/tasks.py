"""The two claimable tasks: what their input and output digests commit to, and
how a task is run and traced.

* ``smollm2.generate`` (:class:`GenerateTask`): prompt token ids, the sampling
  parameters, a sequence id (the Philox key's second word) and a token budget;
  the claim's seed is the Philox seed. Output: the generated token ids (the
  generation stops after EOS or at the budget).
* ``minilm.embed`` (:class:`EmbedTask`): texts, tokenized by the packaged
  MiniLM tokenizer into ids and a mask (right padded). Output: the embeddings.

Digests (docs/protocol.md, "Tasks"; integers big-endian, floats as binary32 bits)::

    generate input  = keccak256(0x40 || u32 max_new_tokens || f32 temperature || u32 top_k
                                || f32 top_p || u32 sequence || tensor_root(int64 prompt [P]))
    generate output = tensor_root(int64 tokens [N])
    embed input     = keccak256(0x41 || tensor_root(ids) || tensor_root(mask))
    embed output    = tensor_root(float32 embeddings [B, H])   (the trace's last output)
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import torch

from refute.compute.merkle import keccak256, tensor_root
from refute.compute.program import task_tensors

__all__ = [
    "GENERATE",
    "EMBED",
    "TaskError",
    "GenerateTask",
    "EmbedTask",
    "Task",
    "task_from_obj",
    "generation_valid",
]

GENERATE: Final = "smollm2.generate"
EMBED: Final = "minilm.embed"
MAX_PROMPT_TOKENS: Final = 8192
MAX_NEW_TOKENS: Final = 4096
MAX_TEXTS: Final = 256


class TaskError(ValueError):
    """A task's parameters are malformed."""


def _f32(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TaskError(f"{name} must be a number, got {v!r}")
    f = float(np.float32(v))
    if not np.isfinite(f):
        raise TaskError(f"{name} must be finite, got {v!r}")
    return f


def _int(name: str, v: Any, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise TaskError(f"{name} must be an integer in [{lo}, {hi}], got {v!r}")
    return v


@dataclass(frozen=True)
class GenerateTask:
    """SmolLM2 generation; ``seed`` lives in the claim."""

    prompt_ids: tuple[int, ...]
    max_new_tokens: int
    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    sequence: int = 0

    name = GENERATE

    def __post_init__(self) -> None:
        ids = self.prompt_ids
        if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence) or not 1 <= len(ids) <= MAX_PROMPT_TOKENS:
            raise TaskError(f"prompt_ids must be 1..{MAX_PROMPT_TOKENS} token ids")
        object.__setattr__(self, "prompt_ids", tuple(_int("token id", i, 0, 2**31 - 1) for i in ids))
        _int("max_new_tokens", self.max_new_tokens, 1, MAX_NEW_TOKENS)
        t = _f32("temperature", self.temperature)
        if t < 0:
            raise TaskError("temperature must be >= 0")
        p = _f32("top_p", self.top_p)
        if not 0 <= p <= 1:
            raise TaskError("top_p must lie in [0, 1]")
        object.__setattr__(self, "temperature", t)
        object.__setattr__(self, "top_p", p)
        _int("top_k", self.top_k, 0, 2**31 - 1)
        _int("sequence", self.sequence, 0, 2**32 - 1)

    def digest(self) -> bytes:
        prompt = torch.tensor(self.prompt_ids, dtype=torch.int64)
        return keccak256(b"\x40" + struct.pack(">IfIfI", self.max_new_tokens, self.temperature, self.top_k, self.top_p,
                                              self.sequence) + tensor_root(prompt))

    @staticmethod
    def output_digest(tokens: Sequence[int]) -> bytes:
        return tensor_root(torch.tensor(list(tokens), dtype=torch.int64))

    def sequence_tensors(self, tokens: Sequence[int]) -> dict[str, torch.Tensor]:
        """The traced prefill's task tensors: prompt + tokens[:-1], one row."""
        seq = list(self.prompt_ids) + list(tokens)[:-1]
        ids = torch.tensor([seq], dtype=torch.int64)
        return task_tensors(ids, torch.ones_like(ids, dtype=torch.bool))

    def to_obj(self) -> dict[str, Any]:
        return {"task": self.name, "prompt_ids": list(self.prompt_ids), "max_new_tokens": self.max_new_tokens,
                "temperature": self.temperature, "top_k": self.top_k, "top_p": self.top_p, "sequence": self.sequence}


@dataclass(frozen=True)
class EmbedTask:
    """MiniLM sentence embeddings of ``texts`` (one batch)."""

    texts: tuple[str, ...]

    name = EMBED

    def __post_init__(self) -> None:
        t = self.texts
        if isinstance(t, str) or not isinstance(t, Sequence) or not 1 <= len(t) <= MAX_TEXTS:
            raise TaskError(f"texts must be 1..{MAX_TEXTS} strings")
        if not all(isinstance(x, str) for x in t):
            raise TaskError("every text must be a string")
        object.__setattr__(self, "texts", tuple(t))

    def encode(self) -> tuple[torch.Tensor, torch.Tensor]:
        from refute.compute.tokenizer import minilm_tokenizer

        return minilm_tokenizer().encode_batch(list(self.texts))

    def digest(self) -> bytes:
        ids, mask = self.encode()
        return keccak256(b"\x41" + tensor_root(ids) + tensor_root(mask))

    def sequence_tensors(self) -> dict[str, torch.Tensor]:
        return task_tensors(*self.encode())

    def to_obj(self) -> dict[str, Any]:
        return {"task": self.name, "texts": list(self.texts)}


Task = GenerateTask | EmbedTask


def task_from_obj(o: Any) -> Task:
    """Parse :meth:`GenerateTask.to_obj` / :meth:`EmbedTask.to_obj` output strictly."""
    if not isinstance(o, dict) or "task" not in o:
        raise TaskError("a task must be an object with a 'task' field")
    fields = {k: v for k, v in o.items() if k != "task"}
    if o["task"] == GENERATE:
        expected = {"prompt_ids", "max_new_tokens", "temperature", "top_k", "top_p", "sequence"}
        cls: Callable[..., Task] = GenerateTask
    elif o["task"] == EMBED:
        expected, cls = {"texts"}, EmbedTask
    else:
        raise TaskError(f"unknown task {o['task']!r}; known: {GENERATE}, {EMBED}")
    if set(fields) != expected:
        raise TaskError(f"task {o['task']}: fields {sorted(fields)}, expected {sorted(expected)}")
    if "prompt_ids" in fields and not isinstance(fields["prompt_ids"], list):
        raise TaskError("prompt_ids must be a list")
    if "texts" in fields and not isinstance(fields["texts"], list):
        raise TaskError("texts must be a list")
    return cls(**fields)


def generation_valid(task: GenerateTask, tokens: Sequence[int], vocab_size: int, eos: int | None) -> list[str]:
    """What is structurally wrong with ``tokens`` as the output of ``task``
    (length, vocabulary, stopping at EOS); empty if nothing."""
    problems = []
    if not 1 <= len(tokens) <= task.max_new_tokens:
        problems.append(f"{len(tokens)} tokens, expected 1..{task.max_new_tokens}")
    if any(isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < vocab_size for t in tokens):
        problems.append(f"a token id is outside the vocabulary [0, {vocab_size})")
    if eos is not None and tokens:
        if eos in list(tokens)[:-1]:
            problems.append("the generation continues after EOS")
        if len(tokens) < task.max_new_tokens and tokens[-1] != eos:
            problems.append(f"the generation stops after {len(tokens)} of {task.max_new_tokens} tokens without EOS")
    return problems
