"""Verification bolted onto another swarm's communication layer.

GenRL (Gensyn's RL swarm framework) moves rollouts between peers through a
``Communication`` backend with two methods, ``all_gather_object(obj, *args,
**kwargs) -> dict[peer id, obj]`` and ``get_id() -> int | str``.
:class:`VerifiedCommunication` has exactly that interface and wraps any such
backend (refute does not depend on GenRL):

* sending: it asks ``make_bundle(obj)`` for the :class:`~refute.verifier.prover.Bundle`
  proving the object (e.g. a rollout generated with SmolLM2: the claim, its
  trace, the tokens) and shares ``(obj, bundle JSON)`` through the inner backend;
* receiving: for every other peer it parses the bundle, checks that it proves
  *this* object (``output_of(obj)`` must equal the bundle's output) and verifies
  it (structure always; full or spot replay for a sampled fraction), and
  returns only the objects that passed. Refuted peers, and why, are in
  :attr:`refuted`; malformed payloads are counted, never raised.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from refute.verifier.prover import Bundle, BundleError
from refute.verifier.verify import Verifier

__all__ = ["Communication", "VerifiedCommunication", "Refutation", "MAX_BUNDLE_BYTES"]

log = logging.getLogger(__name__)

#: Larger payloads are rejected unread (a SmolLM2 bundle is ~200 KB).
MAX_BUNDLE_BYTES = 16 << 20


class Communication(Protocol):
    """GenRL's communication interface."""

    def all_gather_object(self, obj: Any, *args: Any, **kwargs: Any) -> dict[str | int, Any]: ...

    def get_id(self) -> int | str: ...


@dataclass(frozen=True)
class Refutation:
    peer: str | int
    round: int
    reason: str


@dataclass
class VerifiedCommunication:
    """A GenRL ``Communication`` that proves what this peer shares and checks what it receives.

    ``make_bundle(obj)`` proves an object this peer shares; ``output_of(obj)``
    is what a bundle's output must be for that object (the generated tokens, or
    the embeddings); ``verifier`` checks bundles; each received claim is
    replayed with probability ``sample_rate`` (``mode`` full or spot with
    ``spot_ops`` records; structure and the object binding are always checked).
    ``source_for(peer)`` gives the prover a spot replay asks for tensors."""

    inner: Communication
    make_bundle: Callable[[Any], Bundle]
    output_of: Callable[[Any], Any]
    verifier: Verifier
    sample_rate: float = 1.0
    mode: str = "full"
    spot_ops: int = 8
    source_for: Callable[[str | int], Any] | None = None
    rng: random.Random = field(default_factory=random.SystemRandom)
    refuted: list[Refutation] = field(default_factory=list)
    counters: Counter = field(default_factory=Counter)
    round: int = 0

    def get_id(self) -> int | str:
        return self.inner.get_id()

    def all_gather_object(self, obj: Any, *args: Any, **kwargs: Any) -> dict[str | int, Any]:
        """Share ``obj`` with its proof; the verified objects of every peer (this one's included)."""
        me = self.get_id()
        bundle = self.make_bundle(obj)
        gathered = self.inner.all_gather_object({"obj": obj, "bundle": bundle.to_json()}, *args, **kwargs)
        out: dict[str | int, Any] = {}
        for peer, payload in gathered.items():
            if peer == me:
                out[peer] = obj
                continue
            reason = self._check(peer, payload)
            self.counters["received"] += 1
            if reason is None:
                out[peer] = payload["obj"]
                self.counters["accepted"] += 1
            else:
                self.refuted.append(Refutation(peer, self.round, reason))
                self.counters["refuted"] += 1
                log.warning("peer %s refuted in round %d: %s", peer, self.round, reason)
        self.round += 1
        return out

    def _check(self, peer: str | int, payload: Any) -> str | None:
        if not isinstance(payload, dict) or set(payload) != {"obj", "bundle"} or not isinstance(payload["bundle"], (str, bytes)):
            self.counters["malformed"] += 1
            return "malformed payload (expected {obj, bundle})"
        if len(payload["bundle"]) > MAX_BUNDLE_BYTES:
            self.counters["malformed"] += 1
            return f"bundle over {MAX_BUNDLE_BYTES} bytes"
        try:
            bundle = Bundle.from_json(payload["bundle"])
        except BundleError as e:
            self.counters["malformed"] += 1
            return f"malformed bundle: {e}"
        try:
            expected = self.output_of(payload["obj"])
        except Exception as e:  # the object is not what this swarm shares
            self.counters["malformed"] += 1
            return f"object not understood: {type(e).__name__}: {e}"
        proven = bundle.tokens if bundle.tokens is not None else bundle.embeddings
        if not _same(expected, proven):
            return "the bundle proves another output than the object shared"
        if self.rng.random() >= self.sample_rate:
            findings = self.verifier.structure(bundle)
        elif self.mode == "spot" and self.source_for is not None:
            findings = self.verifier.spot_replay(bundle, self.source_for(peer), self.spot_ops, self.rng).findings
        else:
            findings = self.verifier.full_replay(bundle).findings
        self.counters["checked"] += 1
        return str(findings[0]) if findings else None


def _same(a: Any, b: Any) -> bool:
    import torch

    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.dtype == b.dtype
                and a.shape == b.shape and bool((a.contiguous().view(torch.uint8) == b.contiguous().view(torch.uint8)).all()))
    return tuple(a) == tuple(b) if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) else a == b
