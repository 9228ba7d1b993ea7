"""The cheating catalogue: ten dishonest provers, each lying in one way.

Each is a :class:`~refute.verifier.prover.Prover` subclass that claims the
honest model's digest and signs a well-formed claim; :data:`CATALOGUE` names
them. Tests (``tests/test_verifier.py``), the contract tests and benchmarks use
them as fixtures: full replay must refute every one, bisection must land on
the record (and element) each corrupted, and :func:`check_one_step` must
decide each against the cheater.

Where a lie is inside the traced forward, it is applied to the traced pass
(the prefill a claim commits to) and, identically, whenever the prover
regenerates tensors to open them, so its openings match its commitments
(except for :class:`MismatchedServing`, whose point is that they do not).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any, ClassVar

import numpy as np
import torch

from refute.compute.executor import OPERATORS, Executor, OpRecord
from refute.compute.merkle import tensor_root
from refute.compute.trace import Trace, TraceInput, TraceRecord
from refute.verifier import programs
from refute.verifier.prover import Bundle, Opened, Prover, capture_records, model_program, traced_forward
from refute.verifier.tasks import GenerateTask, Task

__all__ = [
    "CATALOGUE",
    "TamperingExecutor",
    "FlippedWeightBit",
    "DifferentModel",
    "SkippedLayer",
    "PerturbedActivation",
    "ForgedAttentionEnd",
    "LowPrecisionOp",
    "NativeTorchKernels",
    "CopiedOutput",
    "WrongSeed",
    "ForgedTrace",
    "MismatchedServing",
    "BrokenWiring",
    "TruncatedGeneration",
    "flip_low_bit",
    "PERTURBED_BIT",
    "forge_program_end",
    "make_cheater",
    "SWARM_CHEATS",
]

Tamper = Callable[[int, str, Mapping[str, torch.Tensor], dict[str, Any], torch.Tensor], torch.Tensor]


def flip_low_bit(t: torch.Tensor, element: int, bit: int = 0) -> torch.Tensor:
    """A copy of float32 ``t`` with bit ``bit`` (default the lowest: one ulp) of flat
    ``element`` flipped."""
    out = t.detach().clone().contiguous()
    out.view(-1).view(torch.int32)[element] ^= 1 << bit
    return out


PERTURBED_BIT = 20
"""The mantissa bit :class:`PerturbedActivation` flips (a 1/8 relative change).
One ulp is not enough: refute's GEMM reads about 14 significant bits of each
input, so a lowest-bit change can vanish in the next linear layer and reach no
checkpoint, and a lie that changes nothing the claim commits is no lie."""


@dataclasses.dataclass
class TamperingExecutor(Executor):
    """An executor that lets ``tamper(step, kind, inputs, attrs, output)``
    replace operator outputs while ``active`` (``step`` counts operators from
    when it was last armed). ``kernels`` overrides operators by kind."""

    tamper: Tamper | None = None
    kernels: dict[str, Callable[..., torch.Tensor]] = dataclasses.field(default_factory=dict)
    active: bool = False
    step: int = 0

    def arm(self) -> None:
        self.active, self.step = True, 0

    def apply(self, kind: str, inputs: Mapping[str, torch.Tensor | None], **attrs: Any) -> torch.Tensor:
        given = {k: v for k, v in inputs.items() if v is not None}
        op = self.kernels.get(kind, OPERATORS[kind])
        output = op(**inputs, **attrs, backend=self.backend)
        if self.active and self.tamper is not None:
            output = self.tamper(self.step, kind, given, attrs, output)
        if self.active:
            self.step += 1
        record = OpRecord(self.count, kind, dict(attrs), given, output)
        for observe in self.observers:
            observe(record)
        self.count += 1
        return output


def _rebuild(model: Any, weights: Mapping[str, torch.Tensor] | None = None, executor: Executor | None = None,
             config: Any = None) -> Any:
    """A model of ``model``'s class with some of its parts replaced."""
    return type(model)(config or model.config, dict(weights if weights is not None else model.w), executor or model.ex)


class _Dishonest(Prover):
    """Claims the honest model's digest whatever it runs."""

    def __init__(self, honest_model: Any, private_key: Any, model: Any, **kw: Any) -> None:
        super().__init__(model, private_key, model_digest=model_program(honest_model).model_digest, **kw)


class _TracedTamper(_Dishonest):
    """Runs ``tamper`` on the traced forward (and its regenerations) only."""

    def __init__(self, honest_model: Any, private_key: Any, tamper: Tamper | None = None,
                 kernels: dict[str, Callable[..., torch.Tensor]] | None = None, always: bool = False, **kw: Any) -> None:
        ex = honest_model.ex
        self.executor = TamperingExecutor(ex.backend, ex.slices, ex.device, tamper=tamper, kernels=kernels or {})
        self.executor.active = always
        self.always = always
        super().__init__(honest_model, private_key, _rebuild(honest_model, executor=self.executor), **kw)

    def forward(self, task: Task, output: Any) -> Any:
        self.executor.arm()
        try:
            return super().forward(task, output)
        finally:
            self.executor.active = self.always

    def compute(self, task: Task, seed: int) -> Any:
        # An embedding is the traced forward's own output: claim the tampered one, so
        # that the lie is in the records and not in a digest anyone can check.
        if not isinstance(task, GenerateTask):
            return self.forward(task, None)
        return super().compute(task, seed)


# --------------------------------------------------------------------------- the ten


class FlippedWeightBit(_Dishonest):
    """One bit of one weight flipped (bit ``bit`` of flat element ``element`` of ``weight``)."""

    def __init__(self, honest_model: Any, private_key: Any, weight: str, element: int = 0, bit: int = 0, **kw: Any):
        w = dict(honest_model.w)
        t = w[weight].detach().clone().contiguous()
        t.view(-1).view(torch.int32)[element] ^= 1 << bit
        w[weight] = t
        super().__init__(honest_model, private_key, _rebuild(honest_model, weights=w), **kw)


class DifferentModel(_Dishonest):
    """Another model of the same architecture: every weight scaled by ``1 + 2**-8``
    (a cheaper fine-tune, say), claimed under the honest model's digest."""

    def __init__(self, honest_model: Any, private_key: Any, **kw: Any):
        w = {k: v * (1 + 2**-8) if v.is_floating_point() else v for k, v in honest_model.w.items()}
        super().__init__(honest_model, private_key, _rebuild(honest_model, weights=w), **kw)


class SkippedLayer(_Dishonest):
    """Layer ``layer`` left out (the later layers move down one)."""

    def __init__(self, honest_model: Any, private_key: Any, layer: int, **kw: Any):
        c = honest_model.config
        w = {}
        for name, t in honest_model.w.items():
            if name.startswith("layers."):
                i = int(name.split(".")[1])
                if i == layer:
                    continue
                if i > layer:
                    name = f"layers.{i - 1}." + name.split(".", 2)[2]
            w[name] = t
        cfg = dataclasses.replace(c, num_layers=c.num_layers - 1)
        super().__init__(honest_model, private_key, _rebuild(honest_model, weights=w, config=cfg), **kw)


class PerturbedActivation(_TracedTamper):
    """Element ``element`` of record ``record``'s output off by an eighth
    (:data:`PERTURBED_BIT`), everything after it computed from the perturbed value."""

    def __init__(self, honest_model: Any, private_key: Any, record: int, element: int, **kw: Any):
        self.record, self.element = record, element

        def tamper(step, kind, inputs, attrs, out):
            return flip_low_bit(out, element, PERTURBED_BIT) if step == record else out

        super().__init__(honest_model, private_key, tamper, **kw)


class ForgedAttentionEnd(PerturbedActivation):
    """Attention element perturbed (as PerturbedActivation), its element program's end state forged to match.

    Record ``record`` must be an attention. A defendant that committed a wrong
    attention element has no honest final program state to post (its output is
    the honest element), so it would stall and lose on time; this one posts the
    honest states but a last one forged with :func:`forge_program_end` to give
    its committed element, and the program bisection runs to the last step,
    which the referee refutes. The swarm's way to play an element program end
    to end (not in :data:`CATALOGUE`: full replay and bisection treat it exactly
    as :class:`PerturbedActivation`)."""

    def program_states(self, trace: Trace,
                       opened: Callable[[int], Opened]) -> Callable[[int, int], list[bytes]] | None:
        honest = programs.party_program_states(trace, opened)

        @functools.cache
        def states(rec: int, element: int) -> list[bytes]:
            r, states_ = trace[rec], honest(rec, element)
            if r.kind != "attention":
                return states_
            committed = opened(rec).output.reshape(-1)[element : element + 1].numpy().tobytes()
            return states_[:-1] + [forge_program_end(r.attr_dict(), states_[-1], committed)]

        return states


class LowPrecisionOp(_TracedTamper):
    """Record ``record`` computed in ``dtype`` (bf16 or fp16): inputs and output rounded."""

    def __init__(self, honest_model: Any, private_key: Any, record: int, dtype: torch.dtype = torch.bfloat16, **kw: Any):
        self.record = record

        def tamper(step, kind, inputs, attrs, out):
            if step != record:
                return out
            low = {k: v.to(dtype).float() if v.is_floating_point() else v for k, v in inputs.items()}
            return OPERATORS[kind](**low, **attrs, backend="reference").to(dtype).float()

        super().__init__(honest_model, private_key, tamper, **kw)


def _torch_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, slices: int,
                  backend: str) -> torch.Tensor:
    return torch.nn.functional.linear(x, weight, bias)


class NativeTorchKernels(_TracedTamper):
    """torch's own float32 matmul for every linear layer instead of refute's exact GEMM."""

    def __init__(self, honest_model: Any, private_key: Any, **kw: Any):
        super().__init__(honest_model, private_key, kernels={"linear": _torch_linear}, always=True, **kw)


class CopiedOutput(_Dishonest):
    """Claims ``task`` but hands in the output (and trace) of ``other``."""

    def __init__(self, honest_model: Any, private_key: Any, other: Task, **kw: Any):
        self.other = other
        super().__init__(honest_model, private_key, honest_model, **kw)

    def compute(self, task: Task, seed: int) -> Any:
        return super().compute(self.other, seed)

    def forward(self, task: Task, output: Any) -> Any:
        return super().forward(self.other, output)

    def ran(self, bundle: Bundle) -> tuple[Task, Any]:
        return self.other, bundle.tokens if bundle.tokens is not None else bundle.embeddings


class WrongSeed(_Dishonest):
    """Samples with ``actual_seed`` and claims the requested seed. With
    ``actual_seed=None`` it samples with the first seed after the requested one
    whose tokens differ (so the lie always changes the output; greedy or
    near-certain tasks, where no seed changes anything, run honestly)."""

    #: Seeds tried after the requested one when ``actual_seed`` is None.
    SEARCH: ClassVar[int] = 32

    def __init__(self, honest_model: Any, private_key: Any, actual_seed: int | None = None, **kw: Any):
        self.actual_seed = actual_seed
        super().__init__(honest_model, private_key, honest_model, **kw)

    def compute(self, task: Task, seed: int) -> Any:
        if self.actual_seed is not None:
            return super().compute(task, self.actual_seed)
        want = super().compute(task, seed)
        for other in range(seed + 1, seed + 1 + self.SEARCH):
            got = super().compute(task, other)
            if got != want:
                return got
        return want


class TruncatedGeneration(_Dishonest):
    """Claims the honest generation without its last token, traced honestly: every
    token is the sampler's, but the generation stops short of ``max_new_tokens``
    without EOS (``generation_valid``). Not in :data:`CATALOGUE` (its lie is in no
    record); the sampling one-step refutes it by the EOS rule."""

    def __init__(self, honest_model: Any, private_key: Any, **kw: Any):
        super().__init__(honest_model, private_key, honest_model, **kw)

    def compute(self, task: Task, seed: int) -> Any:
        tokens = super().compute(task, seed)
        return tokens[:-1] if len(tokens) > 1 else tokens


class _RewritesTrace(_Dishonest):
    """Remembers the task and output of the run being claimed, so that
    :meth:`commit` can rewrite the trace of that run."""

    def prove(self, task: Task, **kw: Any) -> Bundle:
        self._task = task
        return super().prove(task, **kw)

    def compute(self, task: Task, seed: int) -> Any:
        self._output = out = super().compute(task, seed)
        return out

    def full_trace(self, bundle: Bundle) -> Trace:
        self._task, self._output = self.ran(bundle)
        return super().full_trace(bundle)


class ForgedTrace(_RewritesTrace):
    """The right output over a forged trace: record ``record``'s committed output
    (and the matching inputs of the records that read it) replaced by a tensor
    one ulp off at ``element``, while the computation went on with the true one.
    ``record`` must be a checkpoint: a claim commits no other output."""

    def __init__(self, honest_model: Any, private_key: Any, record: int, element: int, **kw: Any):
        self.record, self.element = record, element
        self._forged: torch.Tensor | None = None
        super().__init__(honest_model, private_key, honest_model, **kw)

    def _forgery(self, task: Task, output: Any) -> torch.Tensor:
        got = capture_records(self.model.ex, lambda: traced_forward(self.model, task, output), [self.record])
        return flip_low_bit(got[self.record].output, self.element)

    def commit(self, trace: Trace) -> Trace:
        forged = self._forgery(self._task, self._output)
        root = tensor_root(forged)
        records = []
        for r in trace:
            inputs = tuple(TraceInput(i.name, root if i.source == self.record else i.root, i.source) for i in r.inputs)
            records.append(TraceRecord(r.index, r.kind, r.attrs, inputs, root if r.index == self.record else r.output))
        return Trace(records)

    def served(self, bundle: Bundle, opened: Mapping[int, Opened]) -> dict[int, Opened]:
        task, output = self.ran(bundle)
        forged = self._forgery(task, output)
        out = {}
        for i, o in opened.items():
            r = bundle.trace[i]
            inputs = {n: forged if any(x.name == n and x.source == self.record for x in r.inputs) else t
                      for n, t in o.inputs.items()}
            out[i] = Opened(inputs, forged if i == self.record else o.output)
        return out


class MismatchedServing(PerturbedActivation):
    """Commits to a perturbed activation (record ``record``, element ``element``)
    but, asked for tensors, serves the honest ones, which do not match its roots."""

    def open(self, bundle: Bundle, indices) -> dict[int, Opened]:
        self.executor.tamper, saved = None, self.executor.tamper
        try:
            return super().open(bundle, indices)
        finally:
            self.executor.tamper = saved


class BrokenWiring(_RewritesTrace):
    """Record ``record``'s first internal input committed as a tensor one ulp off at
    ``element`` instead of its source record's output (everything else honest): a
    trace that breaks the wiring rule. No strict parser accepts it; on chain only the
    template one-step's wiring check (source record proven under the trace root)
    catches it. That input's source must be a checkpoint (a claim commits no other
    edge). Not one of the issue's ten; the wiring check's fixture."""

    def __init__(self, honest_model: Any, private_key: Any, record: int, element: int = 0, **kw: Any):
        self.record, self.element = record, element
        super().__init__(honest_model, private_key, honest_model, **kw)

    def commit(self, trace: Trace) -> Trace:
        r = trace[self.record]
        wire = next(i for i in r.inputs if not i.external)
        got = capture_records(self.model.ex, lambda: traced_forward(self.model, self._task, self._output),
                              [wire.source])
        forged = tensor_root(flip_low_bit(got[wire.source].output, self.element))
        inputs = tuple(TraceInput(i.name, forged if i is wire else i.root, i.source) for i in r.inputs)
        records = [TraceRecord(x.index, x.kind, x.attrs, inputs, x.output) if x.index == self.record else x
                   for x in trace]
        return Trace(records, check_wiring=False)


#: Name -> class, in the order of the issue's list.
CATALOGUE: dict[str, type[Prover]] = {
    "flipped_weight_bit": FlippedWeightBit,
    "different_model": DifferentModel,
    "skipped_layer": SkippedLayer,
    "perturbed_activation": PerturbedActivation,
    "low_precision_op": LowPrecisionOp,
    "native_torch_kernels": NativeTorchKernels,
    "copied_output": CopiedOutput,
    "wrong_seed": WrongSeed,
    "forged_trace": ForgedTrace,
    "mismatched_serving": MismatchedServing,
}


#: What a prover node can be told to do (``--cheat``): the catalogue plus :class:`BrokenWiring`
#: and :class:`ForgedAttentionEnd`.
SWARM_CHEATS: dict[str, type[Prover]] = {**CATALOGUE, "broken_wiring": BrokenWiring,
                                         "forged_attention_end": ForgedAttentionEnd}


def make_cheater(name: str, honest_model: Any, private_key: Any, *, other: Task, **kw: Any) -> Prover:
    """Catalogue entry ``name`` for any task of ``honest_model`` (a Llama decoder of
    at least two layers), with parameters that fit every such model: the tamper
    records (10, 12, 14) lie inside layer 0's attention and MLP blocks, record 7
    is layer 0's attention (its last element: the last query, over every key),
    record 16 is layer 0's output (a checkpoint: the forged root) and record 17
    reads it (the broken edge), the flipped weight is ``layers.0.attn.k.weight``,
    the skipped layer is layer 1.
    ``other`` is the task whose output :class:`CopiedOutput` hands in. ``kw`` goes
    to the prover (``chain_id``)."""
    m, k = honest_model, private_key
    builders: dict[str, Callable[[], Prover]] = {
        "flipped_weight_bit": lambda: FlippedWeightBit(m, k, "layers.0.attn.k.weight", 3, 20, **kw),
        "different_model": lambda: DifferentModel(m, k, **kw),
        "skipped_layer": lambda: SkippedLayer(m, k, 1, **kw),
        "perturbed_activation": lambda: PerturbedActivation(m, k, 10, 7, **kw),
        "low_precision_op": lambda: LowPrecisionOp(m, k, 12, **kw),
        "native_torch_kernels": lambda: NativeTorchKernels(m, k, **kw),
        "copied_output": lambda: CopiedOutput(m, k, other, **kw),
        "wrong_seed": lambda: WrongSeed(m, k, None, **kw),
        "forged_trace": lambda: ForgedTrace(m, k, 16, 3, **kw),
        "mismatched_serving": lambda: MismatchedServing(m, k, 14, 3, **kw),
        "broken_wiring": lambda: BrokenWiring(m, k, 17, 1, **kw),
        "forged_attention_end": lambda: ForgedAttentionEnd(m, k, 7, -1, **kw),
    }
    if set(builders) != set(SWARM_CHEATS):
        raise AssertionError("make_cheater and SWARM_CHEATS disagree")
    if name not in builders:
        raise ValueError(f"unknown cheat {name!r}; choose one of: {', '.join(SWARM_CHEATS)}")
    return builders[name]()


def forge_program_end(attrs: dict[str, Any], honest_end: bytes, target: bytes) -> bytes:
    """A final attention program state whose output is ``target`` (4 little-endian
    bytes): the honest final state with its PV sum moved (and, where the sum's grid is
    too coarse for ``target``, its row exponent lowered). A defendant that committed a
    wrong attention element posts this at ``postProgramEnd`` and keeps the honest
    states elsewhere; the program bisection then ends at the last step, which the
    referee refutes."""
    words = programs.decode_state(honest_end)
    value = Fraction(float(np.frombuffer(target, dtype=np.float32)[0]))
    field = (words[6] >> 23) & 0xFF
    for lower in range(min(field, 40)):
        words[6] = (field - lower) << 23
        scale = Fraction(2) ** (field - lower - 127 + 2 - 14 * int(attrs["slices"]) + words[1])
        guess = round(value / scale)
        for p_sum in (guess, guess - 1, guess + 1):
            words[7] = p_sum
            state = programs.encode_state(words)
            if programs.program_output("attention", attrs, state) == target:
                return state
    raise ValueError("no final state gives that element")
