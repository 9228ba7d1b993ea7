"""Verifying a bundle: structure, full replay, and spot replay of sampled records.

Every check ends in a :class:`Verdict`: valid, or refuted with reasons (a
malformed bundle never gets this far: :class:`~refute.verifier.prover.BundleError`).

* **Structure** (cheap, always): the signature; the model digest is a model
  this verifier holds; the input and output digests are the bundle's task and
  outputs; a generation is well formed (length, EOS); the trace has the
  program's records with the program's kinds, attributes, wiring and weights,
  and its task inputs are the task's tensors; an embedding's output is the
  trace's last output.
* **Full replay**: run the traced forward and compare every record of the
  claim's checkpointed trace; re-derive every generated token from the
  replayed logits with the claim's seed.
* **Spot replay**: fetch the records of ``k`` segments (from one checkpoint to
  the next, :attr:`Program.segments`) sampled uniformly without replacement
  from the prover (:meth:`Prover.open`), check the served tensors against the
  committed roots, recompute each segment from the previous checkpoint and
  compare its end with the committed checkpoint; re-derive every token from
  the committed logits. A dishonest trace with ``m`` of its ``S`` segments not
  matching their own inputs is caught with probability
  ``1 - C(S - m, k) / C(S, k)`` (:func:`catch_probability`) when the structure
  and the tokens are right; structural and token lies are caught always.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from refute.compute.claims import ClaimError, verify_signed_claim
from refute.compute.digest import first_difference
from refute.compute.executor import OPERATORS
from refute.compute.merkle import tensor_root
from refute.compute.program import Program, check_against_template
from refute.compute.trace import (
    DEFERRED,
    Trace,
    default_cache,
    diff_records,
    first_divergence,
    record_run,
    wiring_faults,
)
from refute.kernels import sampling
from refute.verifier.prover import Bundle, Opened, model_program, traced_forward
from refute.verifier.tasks import EMBED, GenerateTask, generation_valid

__all__ = ["Finding", "Verdict", "Verifier", "catch_probability", "expected_tokens", "held_weights"]


@dataclass(frozen=True)
class Finding:
    """One reason a bundle is refuted: what kind of lie, and where."""

    kind: str  # signature | model | digest | generation | structure | binding | compute | sampling | serving
    message: str
    record: int | None = None
    element: int | None = None

    def __str__(self) -> str:
        at = "" if self.record is None else f" [record {self.record}" + ("" if self.element is None else f", element {self.element}") + "]"
        return f"{self.kind}: {self.message}{at}"


@dataclass
class Verdict:
    """``valid`` iff no finding; ``checked`` says what was looked at."""

    findings: list[Finding] = field(default_factory=list)
    checked: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.findings

    def __str__(self) -> str:
        head = "VALID" if self.valid else "REFUTED"
        return "\n".join([f"{head} ({'; '.join(self.checked)})"] + [f"  - {f}" for f in self.findings])


def held_weights(model: Any) -> dict[bytes, torch.Tensor]:
    """``model``'s weights by tensor root (hashed once per process, then cached)."""
    tensors = [*model.w.values(), *([model.lm_head] if hasattr(model, "lm_head") else [])]
    return {default_cache().root(t): t for t in tensors}


def catch_probability(records: int, bad: int, k: int) -> float:
    """P(a uniform sample of ``k`` of ``records`` records without replacement hits
    at least one of ``bad``) = ``1 - C(R - m, k) / C(R, k)``."""
    k = min(k, records)
    return 1.0 - math.comb(records - bad, k) / math.comb(records, k)


def expected_tokens(task: GenerateTask, seed: int, logits: torch.Tensor, n: int, backend: str = "reference") -> list[int]:
    """The tokens the sampler draws from the traced prefill's logits ``[1, T, V]``
    (row ``P - 1 + j`` for token ``j``, position ``P + j``)."""
    p = len(task.prompt_ids)
    rows = logits[0, p - 1 : p - 1 + n]
    toks = sampling.sample_tokens(rows, seeds=seed, sequences=task.sequence,
                                  positions=torch.arange(p, p + rows.shape[0], dtype=torch.int64),
                                  temperature=task.temperature, top_k=task.top_k, top_p=task.top_p, backend=backend)
    return [int(t) for t in toks]


class Verifier:
    """Checks bundles against the models it holds (by task name)."""

    def __init__(self, models: Mapping[str, Any], *, backend: str = "reference", chain_id: int | None = None) -> None:
        self.models = dict(models)
        self.backend = backend
        self.chain_id = chain_id
        self._held: dict[int, dict[bytes, torch.Tensor]] = {}

    def model(self, bundle: Bundle) -> Any:
        return self.models[bundle.task.name]

    def program(self, bundle: Bundle) -> Program:
        return model_program(self.model(bundle))

    def held(self, bundle: Bundle) -> dict[bytes, torch.Tensor]:
        """The weights of the model for ``bundle``'s task, by tensor root: inputs a
        prover need not send."""
        model = self.model(bundle)
        if id(model) not in self._held:
            self._held[id(model)] = held_weights(model)
        return self._held[id(model)]

    def with_held(self, bundle: Bundle, opened: Mapping[int, Opened]) -> dict[int, Opened]:
        """``opened`` with every input the prover left out because this verifier holds
        it (a weight, by its committed root) put back; inputs it left out otherwise
        stay missing (and are found missing)."""
        held, out = self.held(bundle), {}
        for i, o in opened.items():
            inputs = dict(o.inputs)
            if 0 <= i < len(bundle.trace):
                for x in bundle.trace[i].inputs:
                    if x.name not in inputs and x.root in held:
                        inputs[x.name] = held[x.root]
            out[i] = Opened(inputs, o.output)
        return out

    # ---- structure

    def structure(self, bundle: Bundle) -> list[Finding]:
        """Every check that needs no computation on tensors (module docstring)."""
        claim, task = bundle.claim, bundle.task
        if task.name not in self.models:
            return [Finding("model", f"this verifier holds no model for task {task.name}")]
        try:
            verify_signed_claim(bundle.signed, chain_id=self.chain_id)
        except ClaimError as e:
            return [Finding("signature", str(e))]
        program = self.program(bundle)
        if claim.model_digest != program.model_digest:
            return [Finding("model", f"model digest 0x{claim.model_digest.hex()} is not the held model's 0x{program.model_digest.hex()}")]
        out: list[Finding] = []
        if claim.input_digest != task.digest():
            out.append(Finding("digest", "the input digest is not the bundle's task"))
        if isinstance(task, GenerateTask):
            cfg = self.model(bundle).config
            out += [Finding("generation", p) for p in generation_valid(task, bundle.tokens, cfg.vocab_size, cfg.eos_token_id)]
            if claim.output_digest != task.output_digest(bundle.tokens):
                out.append(Finding("digest", "the output digest is not the bundle's tokens"))
            if out:
                return out
            roots = {k: tensor_root(v) for k, v in task.sequence_tensors(bundle.tokens).items()}
        else:
            if claim.seed != 0:
                out.append(Finding("digest", "an embedding claim must have seed 0"))
            if claim.output_digest != tensor_root(bundle.embeddings):
                out.append(Finding("digest", "the output digest is not the bundle's embeddings"))
            roots = {k: tensor_root(v) for k, v in task.sequence_tensors().items()}
        trace = bundle.trace
        if trace.root != claim.trace_root:
            out.append(Finding("digest", "the bundle's trace is not the one the claim's trace root commits to"))
            return out
        if len(trace) != len(program):
            out.append(Finding("structure", f"the trace has {len(trace)} records, the program {len(program)}",
                               record=min(len(trace), len(program))))
        for record, template in zip(trace, program.templates):
            problems = check_against_template(record, template, roots)
            if problems:
                kind = "binding" if all(p.startswith("input ") for p in problems) else "structure"
                out.append(Finding(kind, "; ".join(problems), record=record.index))
                break  # the first departure is where a dispute goes
        faults = wiring_faults(trace)
        if faults:
            r, name = faults[0]
            out.append(Finding("wiring", f"input {name} does not carry its source record's output root", record=r))
        if task.name == EMBED and len(trace) and trace[len(trace) - 1].output != claim.output_digest:
            out.append(Finding("digest", "the output digest is not the trace's last output", record=len(trace) - 1))
        return out

    # ---- full replay

    def full_replay(self, bundle: Bundle) -> Verdict:
        """Structure, then the whole traced forward on this verifier's backend,
        its checkpoints compared with the claim's."""
        verdict = Verdict(checked=["structure"])
        verdict.findings = self.structure(bundle)
        if verdict.findings:
            return verdict
        model, task, claim = self.model(bundle), bundle.task, bundle.claim
        program = self.program(bundle)
        mine, logits = record_run(model.ex, traced_forward, model, task, bundle.tokens,
                                  checkpoints=program.checkpoints)
        verdict.checked.append(f"full replay of {len(mine)} records")
        d = first_divergence(bundle.trace, mine)
        if d is not None:
            what = diff_records(bundle.trace[d], mine[d])
            segment = next(s for s in program.segments if d in s)
            where = f"records {segment.start}-{segment.stop - 1}" if len(segment) > 1 else f"record {d}"
            verdict.findings.append(Finding("compute" if what == ["output"] else "structure",
                                            f"first differing record: {', '.join(what)} (the lie is in {where})",
                                            record=d))
            return verdict
        if isinstance(task, GenerateTask):
            verdict.checked.append(f"{len(bundle.tokens)} tokens re-derived")
            want = expected_tokens(task, claim.seed, logits, len(bundle.tokens), self.backend)
            j = next((j for j, (a, b) in enumerate(zip(bundle.tokens, want)) if a != b), None)
            if j is not None:
                verdict.findings.append(Finding("sampling", f"token {j} is {bundle.tokens[j]}, the sampler draws {want[j]}",
                                                record=len(mine) - 1, element=j))
        return verdict

    # ---- spot replay

    def spot_replay(self, bundle: Bundle, source: Any, k: int, rng: random.Random | None = None, *,
                    unreachable: tuple[type[BaseException], ...] = ()) -> Verdict:
        """Structure, every token from the committed logits, and ``k`` sampled
        segments (the records from one checkpoint to the next) recomputed from
        the previous checkpoint's tensor and the external inputs ``source`` (the
        prover: anything with :meth:`Prover.open`) serves, the result compared
        with the segment's checkpoint. ``rng`` defaults to OS randomness, which
        the prover could not predict when it committed. An exception of a type in
        ``unreachable`` from ``source.open`` (the prover could not be reached at
        all, say it left the swarm) propagates instead of refuting the claim."""
        rng = rng if rng is not None else random.SystemRandom()
        verdict = Verdict(checked=["structure"])
        verdict.findings = self.structure(bundle)
        if verdict.findings:
            return verdict
        trace, task = bundle.trace, bundle.task
        segments = self.program(bundle).segments
        last = len(trace) - 1
        sample = sorted(rng.sample(range(len(segments)), min(k, len(segments))))
        wanted = {i for s in sample for i in segments[s]} | ({last} if isinstance(task, GenerateTask) else set())
        try:
            opened = self.with_held(bundle, source.open(bundle, wanted))
        except unreachable:
            raise
        except Exception as e:  # a prover that cannot answer loses; say why
            verdict.findings.append(Finding("serving", f"the prover could not open records: {type(e).__name__}: {e}"))
            return verdict
        for i in sorted(wanted):
            problem = _check_opened(trace, i, opened.get(i))
            if problem:
                verdict.findings.append(Finding("serving", problem, record=i))
                return verdict
        if isinstance(task, GenerateTask):
            verdict.checked.append(f"{len(bundle.tokens)} tokens re-derived")
            want = expected_tokens(task, bundle.claim.seed, opened[last].output, len(bundle.tokens), self.backend)
            j = next((j for j, (a, b) in enumerate(zip(bundle.tokens, want)) if a != b), None)
            if j is not None:
                verdict.findings.append(Finding("sampling", f"token {j} is {bundle.tokens[j]}, the sampler draws {want[j]}",
                                                record=last, element=j))
                return verdict
        verdict.checked.append(f"spot replay of {len(sample)} of {len(segments)} segments")
        for s in sample:
            finding = self._replay_segment(trace, segments[s], opened)
            if finding is not None:
                verdict.findings.append(finding)
                return verdict
        return verdict

    def _replay_segment(self, trace: Trace, segment: range, opened: Mapping[int, Opened]) -> Finding | None:
        """Recompute ``segment`` from its served inputs from outside it (checked
        against their committed roots by :func:`_check_opened`), each record's
        output feeding the records after it; the last one's root must be the
        committed checkpoint. The finding names the first record whose recomputed
        output is not what the prover served (where it departed), else the checkpoint."""
        ours: dict[int, torch.Tensor] = {}
        departed: int | None = None
        for i in segment:
            r, o = trace[i], opened[i]
            inputs = {x.name: ours[x.source] if x.source in ours else o.inputs[x.name] for x in r.inputs}
            out = OPERATORS[r.kind](**inputs, **r.attr_dict(), backend=self.backend)
            ours[i] = out
            if departed is None and not _same_bits(out, o.output):
                departed = i
        end = segment[-1]
        if tensor_root(ours[end]) == trace[end].output:
            return None
        at = end if departed is None else departed
        served = opened[at].output
        same_layout = ours[at].shape == served.shape and ours[at].dtype == served.dtype
        return Finding("compute", f"{trace[at].kind} recomputed from the committed inputs of records "
                                  f"{segment.start}-{end} differs", record=at,
                       element=first_difference(ours[at], served) if same_layout else None)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(
        a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


def _check_opened(trace: Trace, i: int, o: Opened | None) -> str | None:
    r = trace[i]
    if o is None:
        return "the prover did not open this record"
    if set(o.inputs) != {x.name for x in r.inputs}:
        return f"opened inputs {sorted(o.inputs)} are not the record's"
    for x in r.inputs:
        if x.root != DEFERRED and tensor_root(o.inputs[x.name]) != x.root:
            return f"served input {x.name} does not match its committed root"
    if r.output != DEFERRED and tensor_root(o.output) != r.output:
        return "served output does not match its committed root"
    return None
