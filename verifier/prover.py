"""The prover: run a task, trace it, sign a claim, and open any committed tensor later.

A prover keeps only the task and the claim (DESIGN section 3): every
intermediate tensor is regenerated on demand by running the deterministic
forward again (:meth:`Prover.open`), so nothing but the trace's roots is stored.

:class:`Bundle` is what a prover hands a verifier: the signed claim, the task,
the outputs and the trace (records and roots, no tensors). Its JSON form
(``kind: "refute.bundle"``) is what ``refute prove --out`` writes.
"""

from __future__ import annotations

import base64
import json
import threading
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import torch

from refute.compute.claims import Claim, ClaimError, SignedClaim, sign_claim
from refute.compute.executor import OpRecord
from refute.compute.merkle import tensor_root
from refute.compute.program import Program, program_of
from refute.compute.trace import Trace, TraceError, checkpointed, record_run
from refute.verifier.tasks import EMBED, GENERATE, GenerateTask, Task, TaskError, task_from_obj

__all__ = ["BUNDLE_KIND", "BUNDLE_VERSION", "BundleError", "Bundle", "Opened", "Prover", "model_program",
           "traced_forward", "capture_records"]

BUNDLE_KIND: Final = "refute.bundle"
BUNDLE_VERSION: Final = 1
DEFAULT_CHAIN_ID: Final = 31337


class BundleError(ValueError):
    """A bundle is malformed (bad JSON, missing or ill-typed fields, inconsistent parts)."""


@dataclass(frozen=True)
class Bundle:
    """A signed claim with everything a verifier needs besides the model.

    ``tokens`` for generation (the generated ids), ``embeddings`` (float32
    [B, H]) for embedding; the other is None."""

    signed: SignedClaim
    task: Task
    trace: Trace
    tokens: tuple[int, ...] | None = None
    embeddings: torch.Tensor | None = None

    @property
    def claim(self) -> Claim:
        return self.signed.claim

    def to_json(self) -> str:
        out: dict[str, Any] = {
            "kind": BUNDLE_KIND,
            "version": BUNDLE_VERSION,
            "claim": self.signed.to_dict(),
            "task": self.task.to_obj(),
            "trace": json.loads(self.trace.to_json()),
        }
        if self.tokens is not None:
            out["tokens"] = list(self.tokens)
        if self.embeddings is not None:
            e = self.embeddings.detach().cpu().contiguous()
            out["embeddings"] = {"shape": list(e.shape),
                                 "float32_le_base64": base64.b64encode(e.numpy().astype("<f4").tobytes()).decode()}
        return json.dumps(out, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes, *, check_wiring: bool = True) -> Bundle:
        """Parse a bundle strictly; :class:`BundleError` names what is wrong.
        ``check_wiring=False`` accepts a trace with broken wiring (a verifier that
        means to dispute it; :meth:`Verifier.structure` reports the broken edges)."""
        try:
            o = json.loads(text)
        except (ValueError, UnicodeDecodeError) as e:
            raise BundleError(f"not JSON: {e}") from None
        if not isinstance(o, dict) or o.get("kind") != BUNDLE_KIND:
            raise BundleError(f"not a {BUNDLE_KIND} object")
        if o.get("version") != BUNDLE_VERSION:
            raise BundleError(f"unsupported bundle version {o.get('version')!r} (this build knows {BUNDLE_VERSION})")
        allowed = {"kind", "version", "claim", "task", "trace", "tokens", "embeddings"}
        if not {"claim", "task", "trace"} <= set(o) or not set(o) <= allowed:
            raise BundleError(f"bundle fields {sorted(o)}; required claim, task, trace; optional tokens, embeddings")
        try:
            signed = SignedClaim.from_dict(o["claim"])
            task = task_from_obj(o["task"])
            trace = Trace.from_json(json.dumps(o["trace"]), check_wiring=check_wiring)
        except (ClaimError, TaskError, TraceError) as e:
            raise BundleError(str(e)) from None
        tokens = embeddings = None
        if "tokens" in o:
            t = o["tokens"]
            if not isinstance(t, list) or not all(type(i) is int for i in t):
                raise BundleError("tokens must be a list of integers")
            tokens = tuple(t)
        if "embeddings" in o:
            e = o["embeddings"]
            try:
                shape = [int(d) for d in e["shape"]]
                raw = base64.b64decode(e["float32_le_base64"], validate=True)
                embeddings = torch.from_numpy(np.frombuffer(raw, dtype="<f4").astype(np.float32).reshape(shape))
            except (KeyError, TypeError, ValueError) as err:
                raise BundleError(f"embeddings: {err}") from None
        if (task.name == GENERATE) != (tokens is not None) or (task.name == EMBED) != (embeddings is not None):
            raise BundleError("a generation bundle carries tokens, an embedding bundle embeddings")
        if signed.claim.task_name != task.name:
            raise BundleError(f"the claim is for task {signed.claim.task_name}, the bundle holds {task.name}")
        return cls(signed, task, trace, tokens, embeddings)


@dataclass
class Opened:
    """One record's tensors as the prover regenerated them: inputs by name, output."""

    inputs: dict[str, torch.Tensor]
    output: torch.Tensor


_PROGRAMS: weakref.WeakKeyDictionary[Any, Program] = weakref.WeakKeyDictionary()
_PROGRAMS_LOCK = threading.Lock()


def model_program(model: Any) -> Program:
    """``program_of(model)``, computed once per live model object."""
    with _PROGRAMS_LOCK:
        program = _PROGRAMS.get(model)
        if program is None:
            program = _PROGRAMS[model] = program_of(model)
        return program


class _Capture:
    """Executor observer keeping the tensors of the wanted record indices."""

    def __init__(self, wanted: Iterable[int]) -> None:
        self.wanted, self.seen, self.got = set(wanted), 0, {}

    def __call__(self, op: OpRecord) -> None:
        if self.seen in self.wanted:
            self.got[self.seen] = Opened({k: v.detach().clone() for k, v in op.inputs.items()}, op.output.detach().clone())
        self.seen += 1


def traced_forward(model: Any, task: Task, output: Any) -> Any:
    """The computation a claim of ``task`` traces: the generation's prefill over
    ``prompt + output[:-1]`` (all logits), or the embedding of the task's texts."""
    if isinstance(task, GenerateTask):
        t = task.sequence_tensors(output)
        return model.forward(t["ids"], t["positions"], t["mask"], None, "all")
    return model.embed(*task.encode())


def capture_records(executor: Any, run: Callable[[], Any], indices: Iterable[int]) -> dict[int, Opened]:
    """Run ``run()`` on ``executor`` and keep the tensors of records ``indices``
    (counted from the first operator ``run`` applies)."""
    capture = _Capture(indices)
    executor.observers.append(capture)
    try:
        run()
    finally:
        executor.observers.remove(capture)
    return capture.got


class Prover:
    """An honest prover for ``model`` (a LlamaDecoder for generation or a
    BertEncoder for embedding) signing with ``private_key``.

    Subclasses (the cheating catalogue, ``refute.verifier.cheats``) override
    :meth:`compute`, :meth:`forward` or :meth:`commit` to lie in one way each.
    """

    def __init__(self, model: Any, private_key: Any, *, chain_id: int = DEFAULT_CHAIN_ID,
                 model_digest: bytes | None = None) -> None:
        from eth_account import Account

        self.model = model
        self.key = private_key
        self.address = bytes.fromhex(Account.from_key(private_key).address[2:])
        self.chain_id = chain_id
        self._model_digest = model_digest

    @property
    def model_digest(self) -> bytes:
        if self._model_digest is None:
            self._model_digest = model_program(self.model).model_digest
        return self._model_digest

    # ---- the computation (overridden by cheats)

    def compute(self, task: Task, seed: int) -> tuple[int, ...] | torch.Tensor:
        """Run the task: generated tokens, or embeddings."""
        if isinstance(task, GenerateTask):
            from refute.compute.generate import SamplingParams, generate

            params = SamplingParams(task.temperature, task.top_k, task.top_p, seed)
            [g] = generate(self.model, [list(task.prompt_ids)], task.max_new_tokens, params, sequence_ids=[task.sequence])
            return tuple(g.token_ids)
        return self.model.embed(*task.encode())

    def forward(self, task: Task, output: Any) -> Any:
        """The traced computation (:func:`traced_forward`)."""
        return traced_forward(self.model, task, output)

    def commit(self, trace: Trace) -> Trace:
        """The full trace the prover stands by (the honest prover: the one it ran);
        its claim commits to it :func:`checkpointed`."""
        return trace

    def claimed_task(self, task: Task) -> Task:
        """The task the claim names (the honest prover: the one it ran)."""
        return task

    def claimed_seed(self, seed: int) -> int:
        return seed

    # ---- claims and openings

    def prove(self, task: Task, *, seed: int = 0, round: int = 0, step: int = 0) -> Bundle:
        """Run ``task``, trace it, sign the claim; the :class:`Bundle`."""
        return self._claim(task, self.compute(task, seed), seed, round, step)

    def _claim(self, task: Task, output: Any, seed: int, round: int, step: int) -> Bundle:
        checkpoints = model_program(self.model).checkpoints
        if type(self).commit is Prover.commit:  # hash only what the claim commits
            trace, _ = record_run(self.model.ex, self.forward, task, output, checkpoints=checkpoints)
        else:
            trace = checkpointed(self.commit(record_run(self.model.ex, self.forward, task, output)[0]), checkpoints)
        claimed = self.claimed_task(task)
        if isinstance(claimed, GenerateTask):
            out_digest, tokens, emb = claimed.output_digest(output), tuple(output), None
        else:
            out_digest, tokens, emb = tensor_root(output), None, output
        claim = Claim.create(chain_id=self.chain_id, model_digest=self.model_digest, input_digest=claimed.digest(),
                             output_digest=out_digest, trace_root=trace.root, seed=self.claimed_seed(seed),
                             round=round, step=step, task=claimed.name, prover=self.address)
        return Bundle(sign_claim(claim, self.key), claimed, trace, tokens, emb)

    def prove_batch(self, tasks: Sequence[GenerateTask], *, seed: int = 0, round: int = 0) -> list[Bundle]:
        """Generate every task's tokens in one batch (left-padded; each sequence's
        tokens depend only on its own task: invariance I2), then trace and claim
        each; the claims get steps ``0..n-1`` of ``round``."""
        from refute.compute.generate import SamplingParams, generate

        if not tasks or any(not isinstance(t, GenerateTask) for t in tasks):
            raise TaskError("prove_batch takes a non-empty list of generation tasks")
        first = tasks[0]
        if any((t.temperature, t.top_k, t.top_p, t.max_new_tokens) != (first.temperature, first.top_k, first.top_p,
                                                                         first.max_new_tokens) for t in tasks):
            raise TaskError("one batch shares its sampling parameters and token budget")
        params = SamplingParams(first.temperature, first.top_k, first.top_p, seed)
        gens = generate(self.model, [list(t.prompt_ids) for t in tasks], first.max_new_tokens, params,
                        sequence_ids=[t.sequence for t in tasks])
        return [self._claim(t, tuple(g.token_ids), seed, round, step) for step, (t, g) in enumerate(zip(tasks, gens))]

    def full_trace(self, bundle: Bundle) -> Trace:
        """The full trace behind ``bundle``'s checkpointed one (every output rooted),
        regenerated by running its forward again: what a dispute bisects."""
        task, output = self.ran(bundle)
        return self.commit(record_run(self.model.ex, self.forward, task, output)[0])

    def open(self, bundle: Bundle, indices: Iterable[int]) -> dict[int, Opened]:
        """Regenerate the tensors of records ``indices`` of ``bundle``'s trace by
        running its forward again (the prover stores no activation)."""
        task, output = self.ran(bundle)
        return self.served(bundle, capture_records(self.model.ex, lambda: self.forward(task, output), indices))

    def program_states(self, trace: Trace,
                       opened: Callable[[int], Opened]) -> Callable[[int, int], list[bytes]] | None:
        """The states this prover posts in element-program games over ``trace``
        (``opened(i)``: its served tensors of record ``i``), as a function of
        (record, element); None for the honest ones, which the game player computes
        from those served inputs."""
        return None

    def ran(self, bundle: Bundle) -> tuple[Task, Any]:
        """What this prover actually ran for ``bundle`` (task, output)."""
        return bundle.task, bundle.tokens if bundle.tokens is not None else bundle.embeddings

    def served(self, bundle: Bundle, opened: Mapping[int, Opened]) -> dict[int, Opened]:
        """What the prover hands out for those records (the honest one: what it computed)."""
        return dict(opened)
