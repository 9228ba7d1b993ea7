"""The evaluation corpus: original English passages written for refute.

40 passages of 79-135 words (news, technical prose, fiction, dialogue, code
comments, lists, numbers, non-ASCII words, a ChatML transcript, markdown, a
server log, ...), stored in ``data/corpus.json``. SmolLM2's accuracy checks
(next-token agreement, logits error, perplexity) run over its ~6,000 token
positions; MiniLM's embedding checks use the passages as sentences.
"""

from __future__ import annotations

import functools
import json
from importlib import resources

__all__ = ["load_corpus", "load_corpus_entries"]


@functools.lru_cache(maxsize=1)
def _entries() -> tuple[dict, ...]:
    text = resources.files("refute.compute").joinpath("data/corpus.json").read_text(encoding="utf-8")
    return tuple(json.loads(text)["passages"])


def load_corpus_entries() -> list[dict]:
    """Every passage as ``{"id": int, "kind": str, "text": str}``, in a fixed order."""
    return [dict(e) for e in _entries()]


def load_corpus() -> list[str]:
    """The passages' texts, in a fixed order."""
    return [e["text"] for e in _entries()]
