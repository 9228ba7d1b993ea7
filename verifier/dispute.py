"""Bisection between a defendant's committed trace and a challenger's, and the one-step.

The game a contract referees (DESIGN section 4), played here off chain with the
same moves. A claim commits a *checkpointed* trace (only the checkpoints'
outputs rooted, docs/protocol.md "Checkpointed traces"); :func:`plan_dispute`
compares it with the challenger's replay:

0. If the first differing record departs from the program, the template
   one-step decides it at once (on chain ``openTemplate``, one call).
1. Else it is a checkpoint ``i`` whose output differs. The challenger pins it;
   both parties compute their **full** traces (every output rooted) of records
   ``0..i``, the defendant's ending at the output it committed. **Records.**
   Both reveal the two children of the current node of their prefix trees
   (each pair checked against the party's parent node); the game descends into
   the left child if the left children differ, else the right. After
   ``ceil(log2(i + 1))`` rounds it stands on the first record whose hash
   differs. Both reveal that record.
2. If the records differ in kind, attributes, wiring or an external input,
   the program decides (a ``template`` one-step: the model digest pins every
   record's template). If only the output differs (the inputs agree, because
   every earlier record agrees), the game descends the two **output tensor
   trees** the same way to the first differing 256-byte chunk, and the first
   differing element in it.
3. **One-step** (:func:`check_one_step`): recompute that element from input
   slices proven against the defendant's own input roots and compare with the
   element the defendant opened against its output root.

A token drawn from agreed logits is disputed by a ``sampling`` one-step: the
logits row proven against the trace's last output, the sampler re-run.

:func:`check_one_step` is the contract's decision written in Python: total (a
malformed proof is a decision, never an exception), and small.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from refute.compute.claims import Claim
from refute.compute.executor import OPERATORS
from refute.compute.merkle import (
    CHUNK_BYTES,
    DTYPES,
    ElementProof,
    Header,
    ProofError,
    RangeProof,
    TensorTree,
    keccak256,
    tensor_root,
    verify_element,
    verify_range,
)
from refute.kernels import sampling
from refute.compute.program import (
    Program,
    ProgramError,
    check_against_template,
    verify_model_digest,
    verify_template,
)
from refute.compute.trace import (
    DEFERRED,
    NODE_PREFIX,
    RecordProof,
    Trace,
    TraceError,
    TraceRecord,
    checkpointed,
    diff_records,
    first_divergence,
    prefix,
    record_run,
    verify_record,
)
from refute.compute.merkle import NODE_PREFIX as TENSOR_NODE_PREFIX
from refute.verifier.prover import Bundle, Opened, capture_records, traced_forward
from refute.verifier.tasks import GenerateTask, Task, TaskError, generation_valid

__all__ = ["OneStepProof", "OneStepResult", "Dispute", "Plan", "plan_dispute", "bisect_records", "bisect_tensor",
           "element_inputs", "dispute", "check_one_step", "decode_elements", "compute_one_step", "template_one_step", "open_own"]


# --------------------------------------------------------------------------- one-step


@dataclass(frozen=True)
class OneStepProof:
    """Everything the referee needs to decide one disputed element.

    ``kind``: ``compute`` (``element`` of ``record``'s output: the defendant's
    ``output_opening`` and the challenger's ``input_openings``), ``template``
    (``record`` against template ``template`` of the program behind the
    claim's model digest; ``identity`` and ``program_tree_root`` are the
    digest's preimage; ``task``/``tokens`` give the task inputs' roots;
    ``sources`` are the records that produce ``record``'s internal inputs, in
    input order, each proven under the claim's trace root, so that an input
    whose root is not its source's output is caught: the wiring rule; in a
    game's prefix phase both are proven under ``trace_root``, the defendant's
    full prefix, instead) or
    ``sampling`` (token ``element`` of ``tokens`` from ``logits_row`` of the
    trace's last record ``record``)."""

    kind: str
    claim: Claim
    record: TraceRecord
    record_proof: RecordProof
    element: int | None = None
    output_opening: ElementProof | None = None
    input_openings: dict[str, RangeProof] = field(default_factory=dict)
    identity: bytes | None = None
    program_tree_root: bytes | None = None
    template: TraceRecord | None = None
    template_proof: RecordProof | None = None
    task: Task | None = None
    tokens: tuple[int, ...] | None = None
    logits_row: RangeProof | None = None
    vocab_size: int | None = None
    eos_token_id: int | None = None
    sources: tuple[tuple[TraceRecord, RecordProof], ...] = ()
    trace_root: bytes | None = None

    @property
    def proven_under(self) -> bytes:
        """The trace root ``record`` and ``sources`` are proven under: the claim's
        checkpointed trace, or (``trace_root``) the defendant's full prefix in a game."""
        return self.claim.trace_root if self.trace_root is None else self.trace_root


@dataclass(frozen=True)
class OneStepResult:
    """``defendant_wrong``: the claim is refuted; else the challenge fails. ``reason`` says why."""

    defendant_wrong: bool
    reason: str


def decode_elements(raw: bytes, header: Header, count: int) -> torch.Tensor:
    """The first ``count`` elements of opened bytes ``raw`` as a tensor of ``header``'s dtype."""
    dt = DTYPES[header.dtype].torch_dtype
    return torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dt)[:count].clone() if raw else torch.empty(0, dtype=dt)


def _row(header: Header, e: int) -> tuple[int, int]:
    n = header.shape[-1]
    return (e // n) * n, (e // n + 1) * n


def element_inputs(kind: str, attrs: dict[str, Any], shapes: dict[str, tuple[int, ...]], out_shape: tuple[int, ...],
                   e: int) -> dict[str, tuple[int, int]]:
    """The flat element ranges of each input that output element ``e`` of an
    operator of ``kind`` depends on (a superset for simplicity where a whole
    row is cheaper to prove than pieces). ``embedding``'s table row depends on
    the id's value and is added by :func:`check_one_step`."""
    full = {name: (0, int(np.prod(s, dtype=np.int64))) for name, s in shapes.items()}
    if kind in ("gelu_erf", "silu", "add", "mul"):
        if any(s != out_shape for s in shapes.values()):
            return full
        return {name: (e, e + 1) for name in shapes}
    if kind == "embedding":
        d = out_shape[-1]
        return {"ids": (e // d, e // d + 1)}
    if kind == "linear":
        n, k = out_shape[-1], shapes["x"][-1]
        i, j = divmod(e, n)
        out = {"x": (i * k, (i + 1) * k), "weight": (j * k, (j + 1) * k)}
        if "bias" in shapes:
            out["bias"] = (j, j + 1)
        return out
    if kind in ("layer_norm", "rms_norm"):
        out = {"x": (e // out_shape[-1] * out_shape[-1], (e // out_shape[-1] + 1) * out_shape[-1])}
        return out | {name: full[name] for name in ("weight", "bias") if name in shapes}
    if kind in ("l2_normalize", "log_softmax"):
        n = out_shape[-1]
        return {"x": (e // n * n, (e // n + 1) * n)}
    if kind == "rotary":
        b, t, w = shapes["x"]
        hd = int(attrs["head_dim"])
        bt, col = divmod(e, w)
        start = bt * w + col // hd * hd
        return {"x": (start, start + hd), "positions": (bt, bt + 1)}
    if kind == "attention":
        b, t, wq = shapes["q"]
        s, wk = shapes["k"][1], shapes["k"][2]
        hd = wq // int(attrs["num_heads"])
        bt, col = divmod(e, wq)
        bi = bt // t
        return {"q": (bt * wq + col // hd * hd, bt * wq + col // hd * hd + hd),
                "k": (bi * s * wk, (bi + 1) * s * wk), "v": (bi * s * wk, (bi + 1) * s * wk),
                "key_mask": (bi * s, (bi + 1) * s), "q_positions": (bt, bt + 1), "k_positions": (bi * s, (bi + 1) * s)}
    if kind == "mean_pool":
        b, t, d = shapes["x"]
        bi = e // d
        return {"x": (bi * t * d, (bi + 1) * t * d), "mask": (bi * t, (bi + 1) * t)}
    raise ValueError(f"no one-step for operator {kind!r}")


def _recompute(kind: str, attrs: dict[str, Any], shapes: dict[str, tuple[int, ...]], out_shape: tuple[int, ...], e: int,
               values: dict[str, torch.Tensor]) -> torch.Tensor:
    """Output element ``e`` (a 0-d tensor) from the proven slices ``values``."""
    op = OPERATORS[kind]
    if kind in ("gelu_erf", "silu", "add", "mul"):
        if all(s == out_shape for s in shapes.values()):
            return op(**{n: v.reshape(1) for n, v in values.items()}, backend="reference")[0]
        return op(**{n: v.reshape(shapes[n]) for n, v in values.items()}, backend="reference").reshape(-1)[e]
    if kind == "linear":
        out = op(values["x"].reshape(1, -1), values["weight"].reshape(1, -1),
                 values["bias"].reshape(1) if "bias" in values else None, slices=int(attrs["slices"]), backend="reference")
        return out.reshape(-1)[0]
    if kind in ("layer_norm", "rms_norm", "l2_normalize", "log_softmax"):
        x = values["x"].reshape(1, -1)
        extra = {n: values[n] for n in ("weight", "bias") if n in values}
        return op(x, **extra, **attrs, backend="reference").reshape(-1)[e % out_shape[-1]]
    if kind == "rotary":
        hd = int(attrs["head_dim"])
        out = op(values["x"].reshape(1, 1, hd), values["positions"].reshape(1, 1), **attrs, backend="reference")
        return out.reshape(-1)[e % shapes["x"][2] % hd]
    if kind == "attention":
        wq, s = shapes["q"][2], shapes["k"][1]
        heads, kv_heads = int(attrs["num_heads"]), int(attrs["num_kv_heads"])
        hd = wq // heads
        col = e % wq
        g = col // hd // (heads // kv_heads)
        k = values["k"].reshape(1, s, kv_heads, hd)[:, :, g, :].contiguous()
        v = values["v"].reshape(1, s, kv_heads, hd)[:, :, g, :].contiguous()
        a = dict(attrs, num_heads=1, num_kv_heads=1)
        out = op(values["q"].reshape(1, 1, hd), k, v, values["key_mask"].reshape(1, s), values["q_positions"].reshape(1, 1),
                 values["k_positions"].reshape(1, s), **a, backend="reference")
        return out.reshape(-1)[col % hd]
    if kind == "mean_pool":
        t, d = shapes["x"][1], shapes["x"][2]
        return op(values["x"].reshape(1, t, d), values["mask"].reshape(1, t), backend="reference").reshape(-1)[e % d]
    raise ValueError(f"no one-step for operator {kind!r}")


def _output_header(kind: str, attrs: dict[str, Any], headers: dict[str, Header]) -> Header:
    """The output's dtype and shape, computed by running the operator on zeros
    of the inputs' shapes with the batch and token axes cut to one (shapes only)."""
    shapes = {n: h.shape for n, h in headers.items()}
    if kind == "embedding":
        return Header("f32", (*shapes["ids"], shapes["table"][1]))
    if kind == "linear":
        return Header("f32", (*shapes["x"][:-1], shapes["weight"][0]))
    if kind == "mean_pool":
        return Header("f32", (shapes["x"][0], shapes["x"][2]))
    if kind in ("add", "mul"):
        return Header("f32", tuple(torch.broadcast_shapes(shapes["x"], shapes["y"])))
    if kind == "attention":
        return Header("f32", shapes["q"])
    return Header("f32", shapes["x"])


def check_one_step(proof: Any) -> OneStepResult:
    """Decide a one-step: is the defendant's committed element (or record, or
    token) wrong? Total: any malformed part is decided against whoever
    supplied it (the defendant supplies ``output_opening``; the challenger
    everything else)."""
    try:
        if not isinstance(proof, OneStepProof):
            return OneStepResult(False, "not a one-step proof")
        try:
            verify_record(proof.proven_under, proof.record, proof.record_proof)
        except (TraceError, AttributeError, TypeError) as e:
            return OneStepResult(False, f"record proof: {e}")
        if proof.kind == "compute":
            return _check_compute(proof)
        if proof.kind == "template":
            return _check_template(proof)
        if proof.kind == "sampling":
            return _check_sampling(proof)
        return OneStepResult(False, f"unknown one-step kind {proof.kind!r}")
    except Exception as e:  # totality: a proof that breaks the checker is the challenger's fault
        return OneStepResult(False, f"malformed proof: {type(e).__name__}: {e}")


def _check_compute(p: OneStepProof) -> OneStepResult:
    r = p.record
    roots = {i.name: i.root for i in r.inputs}
    if set(p.input_openings) != set(roots):
        return OneStepResult(False, f"openings {sorted(p.input_openings)} are not the record's inputs {sorted(roots)}")
    headers = {n: o.header for n, o in p.input_openings.items()}
    values: dict[str, torch.Tensor] = {}
    for name, o in p.input_openings.items():
        try:
            raw = verify_range(roots[name], o)
        except ProofError as e:
            return OneStepResult(False, f"input {name}: {e}")
        values[name] = decode_elements(raw, o.header, o.stop - o.start)
    want_header = _output_header(r.kind, r.attr_dict(), headers)
    op = p.output_opening
    if op is None or not isinstance(op, ElementProof):
        return OneStepResult(True, "the defendant did not open the disputed element")
    if op.header != want_header:
        return OneStepResult(True, f"the output is {op.header.dtype}{list(op.header.shape)}, the operator gives "
                                   f"{want_header.dtype}{list(want_header.shape)}")
    try:
        claimed = verify_element(r.output, op)
    except ProofError as e:
        return OneStepResult(True, f"the defendant's opening does not match its output root: {e}")
    e = op.index
    if e != p.element:
        return OneStepResult(False, f"the opening is of element {e}, the dispute is over {p.element}")
    shapes = {n: h.shape for n, h in headers.items()}
    need = element_inputs(r.kind, r.attr_dict(), shapes, want_header.shape, e)
    if r.kind == "embedding":
        d = want_header.shape[-1]
        tid = int(values["ids"].reshape(-1)[0])
        if not 0 <= tid < shapes["table"][0]:
            return OneStepResult(True, f"id {tid} is outside the table (the operator rejects it)")
        need["table"] = (tid * d + e % d, tid * d + e % d + 1)
    for name, (a, b) in need.items():
        o = p.input_openings[name]
        if (o.start, o.stop) != (a, b):
            return OneStepResult(False, f"input {name}: opened [{o.start}, {o.stop}), element {e} needs [{a}, {b})")
    if r.kind == "embedding":
        value = values["table"].reshape(-1)[0]
    else:
        value = _recompute(r.kind, r.attr_dict(), shapes, want_header.shape, e, values)
    got = value.reshape(1).contiguous().view(torch.uint8).numpy().tobytes()
    if got != claimed:
        return OneStepResult(True, f"{r.kind} element {e}: the defendant committed 0x{claimed[::-1].hex()}, "
                                   f"the operator gives 0x{got[::-1].hex()}")
    return OneStepResult(False, f"{r.kind} element {e} is right")


def _task_roots(p: OneStepProof) -> dict[str, bytes]:
    if isinstance(p.task, GenerateTask):
        if p.task.digest() != p.claim.input_digest or p.task.output_digest(p.tokens) != p.claim.output_digest:
            raise TaskError("the task or tokens do not match the claim's digests")
        tensors = p.task.sequence_tensors(p.tokens)
    else:
        if p.task.digest() != p.claim.input_digest:
            raise TaskError("the task does not match the claim's input digest")
        tensors = p.task.sequence_tensors()
    return {k: tensor_root(v) for k, v in tensors.items()}


def _check_template(p: OneStepProof) -> OneStepResult:
    try:
        verify_template(p.claim.model_digest, p.identity, p.program_tree_root, p.template, p.template_proof,
                        eos_token_id=p.eos_token_id)
    except (ProgramError, TypeError, AttributeError) as e:
        return OneStepResult(False, f"template proof: {e}")
    if p.template.index != p.record.index:
        return OneStepResult(False, f"template {p.template.index} is not record {p.record.index}'s")
    try:
        roots = _task_roots(p)
    except (TaskError, TypeError, AttributeError) as e:
        return OneStepResult(False, f"task inputs: {e}")
    problems = check_against_template(p.record, p.template, roots, checkpointed=p.proven_under == p.claim.trace_root)
    if problems:
        return OneStepResult(True, f"record {p.record.index}: " + "; ".join(problems))
    internal = [i for i in p.record.inputs if not i.external]
    if len(p.sources) != len(internal):
        return OneStepResult(False, f"{len(p.sources)} source records for {len(internal)} internal inputs")
    for inp, (source, proof) in zip(internal, p.sources):
        try:
            if source.index != inp.source:
                raise TraceError(f"record {source.index} is not input {inp.name}'s source {inp.source}")
            verify_record(p.proven_under, source, proof)
        except (TraceError, TypeError, AttributeError) as e:
            return OneStepResult(False, f"source of {inp.name}: {e}")
        if source.output != inp.root:
            return OneStepResult(True, f"record {p.record.index}: input {inp.name} is not record {inp.source}'s output")
    return OneStepResult(False, f"record {p.record.index} fits the program and its inputs are wired to their sources")


def _check_sampling(p: OneStepProof) -> OneStepResult:
    if not isinstance(p.task, GenerateTask):
        return OneStepResult(False, "a sampling one-step needs a generation task")
    if p.task.digest() != p.claim.input_digest or p.task.output_digest(p.tokens) != p.claim.output_digest:
        return OneStepResult(False, "the task or tokens do not match the claim's digests")
    try:  # the EOS rule uses the EOS the claim's model digest commits to
        verify_model_digest(p.claim.model_digest, p.identity, p.program_tree_root, p.eos_token_id)
    except (ProgramError, TypeError) as e:
        return OneStepResult(False, f"model digest: {e}")
    problems = generation_valid(p.task, p.tokens, p.vocab_size, p.eos_token_id)
    if problems:
        return OneStepResult(True, "; ".join(problems))
    n_rows = len(p.task.prompt_ids) + len(p.tokens) - 1
    j = p.element
    if p.logits_row is None or not isinstance(j, int) or not 0 <= j < len(p.tokens):
        return OneStepResult(False, "no logits row or token index")
    o = p.logits_row
    if o.header != Header("f32", (1, n_rows, p.vocab_size)):
        return OneStepResult(False, f"the last record's output is not [1, {n_rows}, {p.vocab_size}] logits")
    row = len(p.task.prompt_ids) - 1 + j
    if (o.start, o.stop) != (row * p.vocab_size, (row + 1) * p.vocab_size):
        return OneStepResult(False, f"the opened range is not logits row {row}")
    try:
        raw = verify_range(p.record.output, o)
    except ProofError as e:
        return OneStepResult(False, f"logits row: {e}")
    logits = decode_elements(raw, o.header, p.vocab_size).reshape(1, p.vocab_size)
    t = p.task
    want = int(sampling.sample_tokens(logits, seeds=p.claim.seed, sequences=t.sequence,
                                      positions=len(t.prompt_ids) + j, temperature=t.temperature, top_k=t.top_k,
                                      top_p=t.top_p, backend="reference")[0])
    if want != p.tokens[j]:
        return OneStepResult(True, f"token {j} is {p.tokens[j]}, the sampler draws {want}")
    return OneStepResult(False, f"token {j} is right")


# --------------------------------------------------------------------------- bisection


class _Opening(Exception):
    """A party's revealed node does not hash to its committed parent: it loses."""


def _descend(depth: int, node_a, node_b, prefix: bytes, root_a: bytes, root_b: bytes) -> tuple[int, int]:
    """Bisect two Merkle trees of ``depth`` levels (``node_x(level, index)``,
    level 0 = leaves) whose roots differ, checking each revealed pair against its
    parent; the first differing leaf and the rounds played."""
    index, pa, pb = 0, root_a, root_b
    for level in range(depth - 1, -1, -1):
        la, ra = node_a(level, 2 * index), node_a(level, 2 * index + 1)
        lb, rb = node_b(level, 2 * index), node_b(level, 2 * index + 1)
        if keccak256(prefix + la + ra) != pa:
            raise _Opening("defendant")
        if keccak256(prefix + lb + rb) != pb:
            raise _Opening("challenger")
        if la != lb:
            index, pa, pb = 2 * index, la, lb
        else:
            index, pa, pb = 2 * index + 1, ra, rb
    return index, depth


def bisect_records(defendant: Trace, challenger: Trace) -> tuple[int, int]:
    """First differing record of two equal-length traces with different roots, and the rounds."""
    if len(defendant) != len(challenger):
        raise ValueError("traces of different lengths are decided by the program, not bisected")
    depth = (len(defendant) - 1).bit_length() if len(defendant) > 1 else 0
    top = depth
    leaf, rounds = _descend(depth, defendant.node, challenger.node, NODE_PREFIX,
                            defendant.node(top, 0), challenger.node(top, 0))
    return leaf, rounds


def bisect_tensor(defendant: TensorTree, challenger: TensorTree) -> tuple[int | None, int]:
    """First differing element of two tensors of equal header, and the rounds
    (``None`` if the headers differ: the one-step checks the shape)."""
    if defendant.header != challenger.header:
        return None, 0
    depth = defendant.header.depth
    chunk, rounds = _descend(depth, defendant.node, challenger.node, TENSOR_NODE_PREFIX,
                             defendant.node(depth, 0), challenger.node(depth, 0))
    size = defendant.header.itemsize
    a = defendant.data[chunk * CHUNK_BYTES : (chunk + 1) * CHUNK_BYTES]
    b = challenger.data[chunk * CHUNK_BYTES : (chunk + 1) * CHUNK_BYTES]
    first = next(i for i in range(0, len(a), size) if a[i : i + size] != b[i : i + size])
    return (chunk * CHUNK_BYTES + first) // size, rounds


@dataclass
class Dispute:
    """Where a dispute landed and how it was decided."""

    kind: str  # sampling | template | compute | serving | claim
    record: int | None
    element: int | None
    rounds: int
    proof: OneStepProof | None
    result: OneStepResult | None
    note: str = ""


@dataclass(frozen=True)
class Plan:
    """What the honest challenger does about a bundle (:func:`plan_dispute`).

    ``kind``: ``claim`` (a claim-level fault: signature, model, digests; nothing to
    dispute on chain), ``none`` (the claim is right), ``sampling`` (the trace is
    right or the tokens break the generation's rules: the sampling one-step),
    ``template`` (record ``index`` of the claim's checkpointed trace departs from
    the program: the template one-step, in one transaction) or ``game``
    (checkpoint ``index`` is wrong: a game over the two full prefixes ending
    there). ``full`` is the challenger's own full trace."""

    kind: str
    index: int | None
    full: Trace | None
    note: str = ""

    def pin(self, bundle: Bundle) -> tuple[bytes, int, list[bytes]]:
        """The defendant's record ``index`` with its proof under the claim's trace
        root, as the contract takes it (``RecordProof``: record, count, siblings)."""
        trace = bundle.trace
        return trace[self.index].encode(), len(trace), list(trace.prove_record(self.index).siblings)


def plan_dispute(bundle: Bundle, verifier: Any) -> Plan:
    """Replay ``bundle``'s forward and decide where to dispute it (:class:`Plan`):
    the first record of the claim's checkpointed trace that differs from the
    replay is either a departure from the program (template) or a checkpoint
    whose output differs (a game pinned there)."""
    findings = verifier.structure(bundle)
    claim_level = [f for f in findings if f.kind in ("signature", "model", "digest")]
    if claim_level:
        return Plan("claim", None, None, str(claim_level[0]))
    structural = [f for f in findings if f.kind == "generation"]
    if structural:
        return Plan("sampling", len(bundle.trace) - 1, None, str(structural[0]))
    model, program, trace = verifier.model(bundle), verifier.program(bundle), bundle.trace
    full = record_run(model.ex, traced_forward, model, bundle.task, bundle.tokens)[0]
    mine = checkpointed(full, program.checkpoints)
    if trace.root == mine.root:
        return Plan("sampling", len(trace) - 1, full)
    d = min(first_divergence(trace, mine), len(trace) - 1)
    what = diff_records(trace[d], mine[d]) if d < len(mine) else ["length"]
    if what != ["output"] or DEFERRED in (trace[d].output, mine[d].output):
        return Plan("template", d, full, ", ".join(what))
    return Plan("game", d, full, "checkpoint output")


def dispute(bundle: Bundle, defendant: Any, verifier: Any, plan: Plan | None = None) -> Dispute:
    """Play the game of the module docstring between ``defendant`` (a prover:
    :meth:`full_trace` and :meth:`open` serve its full trace and tensors) and
    ``verifier`` (the honest challenger, :class:`~refute.verifier.verify.Verifier`),
    and decide it with :func:`check_one_step`. The bundle must be refuted by full
    replay; ``plan`` is :func:`plan_dispute`'s, if already made."""
    claim, task = bundle.claim, bundle.task
    model = verifier.model(bundle)
    program = verifier.program(bundle)
    plan = plan_dispute(bundle, verifier) if plan is None else plan
    if plan.kind in ("claim", "none"):
        return Dispute(plan.kind, None, None, 0, None, None, plan.note)
    trace, full, d = bundle.trace, plan.full, plan.index
    base = dict(claim=claim, task=task, tokens=bundle.tokens)
    if plan.kind == "sampling":
        # Same trace (only a token can be wrong), or tokens that break the generation's
        # rules (length, vocabulary, EOS): the sampling one-step decides either.
        last = len(trace) - 1
        opened = _open(defendant, bundle, [last], trace, verifier)
        if isinstance(opened, Dispute):
            return opened
        from refute.verifier.verify import expected_tokens

        want = expected_tokens(task, claim.seed, opened[last].output, len(bundle.tokens))
        j = next((j for j, (a, b) in enumerate(zip(bundle.tokens, want)) if a != b), None)
        if j is None and full is not None:
            return Dispute("none", None, None, 0, None, None, "the claim is right")
        j = 0 if j is None else j
        tree = TensorTree.from_tensor(opened[last].output)
        v = model.config.vocab_size
        row = len(task.prompt_ids) - 1 + j
        proof = OneStepProof("sampling", record=trace[last], record_proof=trace.prove_record(last), element=j,
                             logits_row=tree.prove_range(row * v, (row + 1) * v), vocab_size=v,
                             eos_token_id=program.eos_token_id, identity=program.identity,
                             program_tree_root=program.templates.root, **base)
        return Dispute("sampling", last, j, 0, proof, check_one_step(proof), plan.note)
    if plan.kind == "template":
        proof = template_one_step(bundle, program, d)
        return Dispute("template", d, None, 0, proof, check_one_step(proof), plan.note)
    # Both parties' full traces of records 0..d; the defendant's must end at its checkpoint.
    try:
        theirs = defendant.full_trace(bundle)
    except Exception as e:
        return Dispute("serving", d, None, 0, None, None, f"the defendant could not give its full trace: {e}")
    if len(theirs) <= d or theirs[d].output != trace[d].output:
        return Dispute("serving", d, None, 0, None, None, f"the defendant's full trace does not reach its checkpoint {d}")
    d_prefix, c_prefix = prefix(theirs, d + 1), prefix(full, d + 1)
    try:
        i, rounds = bisect_records(d_prefix, c_prefix)
    except _Opening as e:
        return Dispute("serving", None, None, 0, None, None, f"{e} revealed a node that does not match its root")
    what = diff_records(d_prefix[i], c_prefix[i])
    if what != ["output"]:
        proof = template_one_step(bundle, program, i, d_prefix)
        return Dispute("template", i, None, rounds, proof, check_one_step(proof), ", ".join(what))
    served = _open(defendant, bundle, [i], d_prefix, verifier)
    if isinstance(served, Dispute):
        served.record, served.rounds = i, rounds
        return served
    ours = open_own(verifier, bundle, i)
    d_tree, c_tree = TensorTree.from_tensor(served[i].output), TensorTree.from_tensor(ours.output)
    element, more = bisect_tensor(d_tree, c_tree)
    rounds += more
    proof = compute_one_step(bundle, i, 0 if element is None else element, served[i].output, ours, d_prefix)
    return Dispute("compute", i, element, rounds, proof, check_one_step(proof))


def template_one_step(bundle: Bundle, program: Program, index: int, trace: Trace | None = None) -> OneStepProof:
    """The template one-step of record ``index`` against ``program`` (the honest
    model's): the record, its inclusion under its trace root, and the program's
    template for that position with its proof. ``trace``: the defendant's full
    prefix in a game's prefix phase; default the claim's checkpointed trace."""
    full = trace is not None
    trace = bundle.trace if trace is None else trace
    sources = tuple((trace[i.source], trace.prove_record(i.source)) for i in trace[index].inputs if not i.external)
    return OneStepProof("template", record=trace[index], record_proof=trace.prove_record(index),
                        identity=program.identity, program_tree_root=program.templates.root,
                        eos_token_id=program.eos_token_id,
                        template=program.template(index), template_proof=program.prove_template(index),
                        claim=bundle.claim, task=bundle.task, tokens=bundle.tokens, sources=sources,
                        trace_root=trace.root if full else None)


def compute_one_step(bundle: Bundle, index: int, element: int, defendant_output: torch.Tensor,
                     challenger: Opened, trace: Trace | None = None) -> OneStepProof:
    """The challenger's ``compute`` one-step against element ``element`` of
    record ``index`` of ``trace`` (the defendant's full prefix in a game; default
    the claim's checkpointed trace, whose checkpoints commit their inputs and
    output): the defendant's opening of that element of ``defendant_output`` and
    the challenger's openings of the inputs it needs (from its own tensors
    ``challenger``, which agree with the committed inputs)."""
    full = trace is not None
    trace = bundle.trace if trace is None else trace
    r = trace[index]
    shapes = {n: tuple(t.shape) for n, t in challenger.inputs.items()}
    need = element_inputs(r.kind, r.attr_dict(), shapes, tuple(challenger.output.shape), element)
    if r.kind == "embedding":
        dim = challenger.output.shape[-1]
        tid = int(challenger.inputs["ids"].reshape(-1)[element // dim])
        need["table"] = (tid * dim + element % dim, tid * dim + element % dim + 1)
    openings = {n: TensorTree.from_tensor(challenger.inputs[n]).prove_range(a, b) for n, (a, b) in need.items()}
    d_tree = TensorTree.from_tensor(defendant_output)
    return OneStepProof("compute", bundle.claim, r, trace.prove_record(index), element=element,
                        output_opening=d_tree.prove_element(element) if d_tree.header.numel > element else None,
                        input_openings=openings, task=bundle.task, tokens=bundle.tokens,
                        trace_root=trace.root if full else None)


def _open(defendant: Any, bundle: Bundle, indices: Sequence[int], trace: Trace,
          verifier: Any) -> dict[int, Opened] | Dispute:
    """The defendant's tensors for ``indices`` (weights it left out filled from the
    verifier's own, :meth:`Verifier.with_held`), each checked against its commitment
    in ``trace`` (roots :data:`DEFERRED` commit to nothing)."""
    try:
        got = verifier.with_held(bundle, defendant.open(bundle, indices))
    except Exception as e:
        return Dispute("serving", None, None, 0, None, None, f"the defendant could not open: {e}")
    for i in indices:
        r, o = trace[i], got.get(i)
        if o is None or tensor_root(o.output) != r.output or any(
                x.root != DEFERRED and tensor_root(o.inputs.get(x.name, torch.empty(0))) != x.root
                for x in r.inputs):
            return Dispute("serving", i, None, 0, None, None, f"record {i}: the served tensors do not match the committed roots")
    return got


def open_own(verifier: Any, bundle: Bundle, index: int) -> Opened:
    """Record ``index``'s tensors as the verifier computes them itself from the bundle's task."""
    model = verifier.model(bundle)
    return capture_records(model.ex, lambda: traced_forward(model, bundle.task, bundle.tokens), [index])[index]
