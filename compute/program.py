"""A model's program: what every record of its traces must be, and the claim's model digest.

A forward pass of a refute model has the same records whatever its input: the
same operator kinds and attributes in the same order, wired the same way, with
every external input either a weight or a tensor derived from the task's input
(token ids, masks, positions). Only the tensors' roots depend on the input.
The **program** of a model is that input-independent part, one **template**
per record: a :class:`~refute.compute.trace.TraceRecord` whose output root is
zero, whose internal inputs' roots are zero (their ``source`` says which
record produced them), and whose external inputs' roots are **bindings**:

* a weight's own tensor root (weights do not depend on the input), or
* ``keccak256("refute/input/" || name)`` for a task input, ``name`` one of
  :data:`TASK_INPUTS`, whose tensor the task definition fixes.

``program_root = keccak256(0x24 || trace_root(templates))`` and the claim's
model digest is ``keccak256(0x30 || identity || program_root || u64be(stop))``
where ``identity`` is :func:`refute.compute.weights.model_digest` (config and
weight bytes) and ``stop`` is the generation's end-of-sequence token id plus
one (0 for a model without one, such as an encoder). So a claim's model digest
pins every weight root every record may use, the exact shape of the trace and
where a generation must stop: a verifier (or the contract) decides a dispute
over an external input, an attribute or the wiring of record ``i`` by proving
template ``i`` against the model digest, and a dispute over EOS by opening the
digest's preimage, without the model.
docs/protocol.md, section "Programs", is the normative text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import torch

from refute.compute.merkle import keccak256, tensor_root
from refute.compute.trace import (
    DEFERRED,
    EXTERNAL,
    RecordProof,
    Trace,
    TraceError,
    TraceInput,
    TraceRecord,
    checkpoint_cuts,
    default_cache,
    diff_records,
    record_run,
    select_checkpoints,
    verify_record,
)

__all__ = [
    "PROGRAM_PREFIX",
    "MODEL_PREFIX",
    "TASK_INPUTS",
    "ZERO_ROOT",
    "CHECKPOINT",
    "input_binding",
    "model_digest_of",
    "stop_word",
    "Program",
    "ProgramError",
    "program_of",
    "check_against_template",
    "task_tensors",
    "verify_model_digest",
    "verify_template",
    "template_of",
]

PROGRAM_PREFIX: Final = b"\x24"
MODEL_PREFIX: Final = b"\x30"
ZERO_ROOT: Final = bytes(32)
CHECKPOINT: Final = keccak256(b"refute/checkpoint")
"""A template's output root when its record is a checkpoint (its output root is
committed in a claim's checkpointed trace); other templates' output is zero."""

#: The task-derived external inputs a record may consume, by binding name.
#: ``ids`` (B, T) int64 token ids; ``mask`` (B, T) as the task gives it (bool
#: for generation, int64 0/1 from the MiniLM tokenizer); ``keep`` the mask as
#: bool, True = a real token (the same tensor as ``mask`` when that is bool);
#: ``positions`` (B, T) int64 ``arange(T)`` in every row; ``token_types``
#: (B, T) int64 zeros (BERT's segment ids).
TASK_INPUTS: Final = ("ids", "mask", "keep", "positions", "token_types")


class ProgramError(ValueError):
    """A trace does not fit a program, or a program cannot be derived."""


def stop_word(eos_token_id: int | None) -> bytes:
    """The model digest's last 8 bytes: ``u64be(eos_token_id + 1)``, or zero for none."""
    if eos_token_id is not None and not 0 <= eos_token_id < 2**64 - 1:
        raise ProgramError(f"eos_token_id {eos_token_id} is not a token id")
    return (0 if eos_token_id is None else eos_token_id + 1).to_bytes(8, "big")


def model_digest_of(identity: bytes, program_root: bytes, eos_token_id: int | None) -> bytes:
    """``keccak256(0x30 || identity || program_root || stop_word(eos_token_id))``."""
    return keccak256(MODEL_PREFIX + identity + program_root + stop_word(eos_token_id))


def input_binding(name: str) -> bytes:
    """The binding that stands for task input ``name`` in a template."""
    if name not in TASK_INPUTS:
        raise ProgramError(f"unknown task input {name!r}; known: {TASK_INPUTS}")
    return keccak256(b"refute/input/" + name.encode())


_BINDING_NAMES: Final = {input_binding(n): n for n in TASK_INPUTS}


def task_tensors(ids: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
    """The tensors :data:`TASK_INPUTS` name, derived from a task's ids and mask."""
    if ids.dim() != 2 or ids.dtype != torch.int64 or tuple(mask.shape) != tuple(ids.shape):
        raise ProgramError(f"ids must be int64 (B, T) and mask of the same shape, got {tuple(ids.shape)}, {tuple(mask.shape)}")
    b, t = ids.shape
    return {
        "ids": ids,
        "mask": mask,
        "keep": mask.bool(),
        "positions": torch.arange(t, dtype=torch.int64).expand(b, t),
        "token_types": torch.zeros_like(ids),
    }


@dataclass(frozen=True)
class Program:
    """A model's templates, its identity digest, its end-of-sequence token (None for
    models that do not generate) and the resulting claim model digest."""

    identity: bytes
    templates: Trace
    eos_token_id: int | None = None

    @property
    def root(self) -> bytes:
        return keccak256(PROGRAM_PREFIX + self.templates.root)

    @property
    def model_digest(self) -> bytes:
        """The claim's ``model_digest``."""
        return model_digest_of(self.identity, self.root, self.eos_token_id)

    def __len__(self) -> int:
        return len(self.templates)

    def template(self, index: int) -> TraceRecord:
        return self.templates[index]

    def prove_template(self, index: int) -> RecordProof:
        return self.templates.prove_record(index)

    def weight_roots(self) -> set[bytes]:
        return {i.root for r in self.templates for i in r.inputs if i.external and i.root not in _BINDING_NAMES}

    @property
    def checkpoints(self) -> tuple[int, ...]:
        """The records whose output roots a claim commits (templates marked :data:`CHECKPOINT`)."""
        return tuple(t.index for t in self.templates if t.output == CHECKPOINT)

    @property
    def segments(self) -> tuple[range, ...]:
        """The records from one checkpoint (exclusive) to the next (inclusive): each
        recomputes from the previous checkpoint's output and external inputs alone."""
        out, start = [], 0
        for c in self.checkpoints:
            out.append(range(start, c + 1))
            start = c + 1
        return tuple(out)


def verify_model_digest(model_digest: bytes, identity: bytes, program_root_preimage: bytes,
                        eos_token_id: int | None) -> None:
    """Check ``model_digest`` = ``model_digest_of(identity, keccak256(0x24 ||
    program_root_preimage), eos_token_id)``; :class:`ProgramError` if not."""
    program_root = keccak256(PROGRAM_PREFIX + program_root_preimage)
    if model_digest_of(identity, program_root, eos_token_id) != model_digest:
        raise ProgramError("identity, program root and EOS do not hash to the model digest")


def verify_template(model_digest: bytes, identity: bytes, program_root_preimage: bytes, template: TraceRecord,
                    proof: RecordProof, *, eos_token_id: int | None) -> None:
    """Check that ``template`` is template ``proof.index`` of the program behind
    ``model_digest`` (:func:`verify_model_digest`); :class:`ProgramError` if not."""
    verify_model_digest(model_digest, identity, program_root_preimage, eos_token_id)
    try:
        verify_record(program_root_preimage, template, proof)
    except TraceError as e:
        raise ProgramError(f"template proof: {e}") from None


def template_of(record: TraceRecord, binding: Mapping[bytes, bytes]) -> TraceRecord:
    """The template of ``record``: external roots replaced through ``binding``
    (tensor root -> binding), internal roots and the output zeroed."""
    inputs = []
    for i in record.inputs:
        if i.external:
            if i.root not in binding:
                raise ProgramError(f"record {record.index} ({record.kind}): external input {i.name} is neither a weight nor a task input")
            inputs.append(TraceInput(i.name, binding[i.root], EXTERNAL))
        else:
            inputs.append(TraceInput(i.name, ZERO_ROOT, i.source))
    return TraceRecord(record.index, record.kind, record.attrs, tuple(inputs), ZERO_ROOT)


def program_of(model: Any, identity: bytes | str | None = None) -> Program:
    """Derive ``model``'s program (a :class:`~refute.compute.llama.LlamaDecoder`
    or :class:`~refute.compute.bert.BertEncoder`) by tracing a 3-token forward
    whose task tensors have roots no weight can have, and binding every external
    root to the weight or task input it is. ``identity`` defaults to
    ``model_digest(model.config, model.w)``."""
    if identity is None:
        from refute.compute.weights import model_digest

        identity = model_digest(model.config, model.w)
    identity = bytes.fromhex(identity.removeprefix("0x")) if isinstance(identity, str) else identity
    if len(identity) != 32:
        raise ProgramError("identity must be 32 bytes")
    ids = torch.tensor([[3, 5, 7]], dtype=torch.int64)
    embeds = hasattr(model, "embed")  # an encoder takes the tokenizer's int64 mask, a decoder a bool one
    tensors = task_tensors(ids, torch.ones(1, 3, dtype=torch.int64 if embeds else torch.bool))
    if embeds:
        trace, _ = record_run(model.ex, model.embed, tensors["ids"], tensors["mask"])
    else:
        trace, _ = record_run(model.ex, model.forward, tensors["ids"], tensors["positions"], tensors["mask"], None, "all")
    cache = default_cache()  # the trace above hashed every weight into it
    binding: dict[bytes, bytes] = {}
    for t in [*model.w.values(), *([model.lm_head] if hasattr(model, "lm_head") else [])]:
        root = cache.root(t)  # weights bind to themselves (tied weights share a root)
        binding[root] = root
    for name, t in tensors.items():
        root = tensor_root(t)
        if root in binding and binding[root] not in _BINDING_NAMES:
            raise ProgramError(f"task input {name} has a weight's root")
        binding.setdefault(root, input_binding(name))  # mask and keep coincide for a bool mask: the first name binds
    eos = None if embeds else getattr(model.config, "eos_token_id", None)
    keep = set(select_checkpoints(checkpoint_cuts(trace), len(trace)))
    templates = []
    for r in trace:
        t = template_of(r, binding)
        templates.append(TraceRecord(t.index, t.kind, t.attrs, t.inputs, CHECKPOINT if r.index in keep else ZERO_ROOT))
    return Program(identity, Trace(templates, check_wiring=False), eos)


def check_against_template(record: TraceRecord, template: TraceRecord,
                           task_roots: Mapping[str, bytes], *, checkpointed: bool = True) -> list[str]:
    """How ``record`` departs from ``template`` given the roots of the task's
    inputs (:func:`task_tensors`); empty if it fits. Internal inputs' roots are
    not compared here (that is the wiring rule :class:`Trace` enforces). A record
    of a claim's ``checkpointed`` trace must also commit its output exactly when
    the template marks it a checkpoint; a full trace's record (a dispute's
    prefix, ``checkpointed=False``) commits every output."""
    if record.index != template.index:
        return [f"record {record.index} compared with template {template.index}"]
    inputs = tuple(TraceInput(i.name, i.root if i.external else ZERO_ROOT, i.source) for i in record.inputs)
    shape = TraceRecord(record.index, record.kind, record.attrs, inputs, template.output)
    problems = []
    if checkpointed and (record.output == DEFERRED) != (template.output == ZERO_ROOT):
        problems.append(f"output {'deferred at a checkpoint' if record.output == DEFERRED else 'committed off the checkpoints'}")
    for what in diff_records(shape, template):
        if what == "kind":
            problems.append(f"kind {record.kind} is not the program's {template.kind}")
        elif what == "attrs":
            problems.append(f"attributes {record.attr_dict()} are not the program's {template.attr_dict()}")
        elif what == "inputs":
            problems.append(f"inputs {[(i.name, i.source) for i in record.inputs]} are not wired as the program's "
                            f"{[(i.name, i.source) for i in template.inputs]}")
        elif what.startswith("input:"):
            name = what.split(":", 1)[1]
            want = next(i.root for i in template.inputs if i.name == name)
            got = next(i.root for i in record.inputs if i.name == name)
            task_input = _BINDING_NAMES.get(want)
            if task_input is None:
                problems.append(f"input {name} is not the program's weight (root 0x{got.hex()[:16]}...)")
            elif task_roots.get(task_input) != got:
                problems.append(f"input {name} is not the task's {task_input} (root 0x{got.hex()[:16]}...)")
    return problems
