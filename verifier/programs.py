"""Element programs: one output element of a long reduction, split into cheap steps.

The compute one-step recomputes a disputed element from Merkle-proven inputs.
For most operators that is a few hundred input elements; an ``attention``
element depends on every key and value its query sees, and recomputing it on
chain costs about 220k gas per key (docs/protocol.md, "On-chain referee"), far
over any block at real context lengths. Instead the parties bisect the
element's **program**: a fixed sequence of small states ``S_0 … S_n`` where
``S_0`` is a constant, each ``S_{k+1}`` follows from ``S_k`` and a few
Merkle-proven keys, and the element is a function of ``S_n``. The defendant
posts ``S_n`` (its output must be the element it committed) and then the
hash of its state at each midpoint; the challenger agrees or not; at the end
the referee runs one step from the agreed state and compares the hash with
the defendant's next one (docs/protocol.md, "Element programs").

The attention program (one query head ``h`` of token ``t``, column ``c`` of
the head, keys ``j`` of its batch row, :mod:`refute.kernels.attention_reference`)
walks the keys ``KEYS_PER_STEP`` at a time in five passes, each recomputing
the key's score ``gemm(q_h, k_j) · scale`` from the proven rows:

0. ``m`` = the max kept score (total order), ``G`` = the max kept ``g_j``;
1. the flags and largest finite magnitude of ``e_j = exp(score_j − m)``;
2. the fixed-point sum of the ``e_j`` images (``exact_sum``'s integers);
3. the flags and largest finite magnitude of ``P'_j = ldexp(e_j / s, g_j − G)``;
4. ``Σ Â_j · B̂_j``, the exact PV dot of the GEMM images of ``P'`` and ``V'``.

The output is ``ldexp(ldexp(fl32(Σ), e_P + 2 − 14s), G)``, NaN canonical:
the same integers and roundings as the reference, so the same bits (tested
against the whole operator).

The ``log_softmax`` program (element ``c`` of row ``i``,
:func:`refute.kernels.softmax_reference.log_softmax`) walks the row
``ROW_PER_STEP`` entries at a time in three passes (the max; exact_sum's flags
and scale of ``exp(x_j − m)``; its images), then one last step reads ``x_c``
and stores ``canon((x_c − m) − log(s))`` in the state, whose last word the
output is.

A state is eight 32-byte big-endian two's complement words; its hash is
keccak256 of those 256 bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import torch

from refute.compute.merkle import ProofError, RangeProof, keccak256, verify_range
from refute.compute.trace import RecordProof, TraceError, TraceRecord, verify_record
from refute.kernels import softmax_reference
from refute.kernels.attention_reference import NO_KEY_EXP, NONFINITE_EXP, value_exponents
from refute.kernels.bits_reference import bits_f32, exponent_of, f32_bits, ldexp, round_half_even_to_int64
from refute.kernels.gemm_reference import gemm_reference, images, product_shift
from refute.kernels.mathlib_reference import exp, log
from refute.kernels.reduce_reference import FRAC_BITS, row_max
from refute.verifier.dispute import decode_elements

__all__ = ["PROGRAM_KINDS", "KEYS_PER_STEP", "PASSES", "ROW_PER_STEP", "ROW_PASSES", "STATE_WORDS", "ProgramError",
           "StepProof", "StepResult",
           "has_program", "prefers_program", "program_length", "start_state", "step_inputs", "run_step",
           "program_output", "program_states", "state_hash", "encode_state", "decode_state", "check_step"]

#: Operator kinds with an element program.
PROGRAM_KINDS: Final = frozenset({"attention", "log_softmax"})
#: Keys one attention step reads (each pass walks the keys in chunks of this many).
KEYS_PER_STEP: Final = 2
#: Passes over the keys.
PASSES: Final = 5
#: Row entries one log_softmax step reads.
ROW_PER_STEP: Final = 32
#: Passes over a log_softmax row (then one step for the element itself).
ROW_PASSES: Final = 3
#: Words in a state (32 bytes each).
STATE_WORDS: Final = 8
#: Above this many keys the direct attention one-step passes 1.5M gas, so the
#: game plays the program instead (referee_gas.json: ~0.6M + ~220k per key).
DIRECT_MAX_KEYS: Final = 4
#: Likewise for a log_softmax row (~28k gas an entry: an exp each).
DIRECT_MAX_ROW: Final = 32

_NEG_INF_BITS: Final = 0xFF800000
_POS_INF_BITS: Final = 0x7F800000
_ABS: Final = 0x7FFFFFFF
_NAN_BITS: Final = 0x7FC00000
_PIN_BITS: Final = 0x3F800000  # V' of the pinning key, 1.0: the column exponent is 0
# e_flags bits
_NAN, _PINF, _NINF = 1, 2, 4

_INPUTS: Final = ("q", "k", "v", "key_mask", "q_positions", "k_positions")


class ProgramError(ValueError):
    """The record, shapes or state do not describe a step of an element program."""


def has_program(kind: str) -> bool:
    """Whether operator ``kind`` has an element program."""
    return kind in PROGRAM_KINDS


def prefers_program(kind: str, shapes: dict[str, tuple[int, ...]]) -> bool:
    """Whether a game over an element of ``kind`` should play its program rather
    than the direct compute one-step (which would exceed 1.5M gas): attention over
    more than ``DIRECT_MAX_KEYS`` keys, and log_softmax over more than
    ``DIRECT_MAX_ROW`` entries."""
    if kind == "attention":
        return len(shapes.get("k", ())) == 3 and shapes["k"][1] > DIRECT_MAX_KEYS
    return kind == "log_softmax" and len(shapes.get("x", ())) >= 1 and shapes["x"][-1] > DIRECT_MAX_ROW


@dataclass(frozen=True)
class _Attention:
    """The static part of one attention element's problem."""

    keys: int  # S
    kv_width: int
    head_dim: int
    group: int  # kv head
    col: int
    bt: int  # flat (batch, token) index of the query
    bi: int  # batch row
    q_start: int
    scale: np.float32
    causal: bool
    slices: int

    @property
    def chunks(self) -> int:
        return -(-self.keys // KEYS_PER_STEP)


def _attention(attrs: dict[str, Any], shapes: dict[str, tuple[int, ...]], e: int) -> _Attention:
    try:
        heads, kv_heads = int(attrs["num_heads"]), int(attrs["num_kv_heads"])
        b, t, wq = shapes["q"]
        kb, s, wk = shapes["k"]
    except (KeyError, TypeError, ValueError) as err:
        raise ProgramError(f"not an attention problem: {err}") from None
    if heads <= 0 or kv_heads <= 0 or heads % kv_heads or wq % heads or (wq // heads) * kv_heads != wk:
        raise ProgramError("head counts do not fit the widths")
    if shapes.get("v") != (kb, s, wk) or kb != b or not 0 <= e < b * t * wq:
        raise ProgramError("q, k, v shapes or the element do not fit")
    hd = wq // heads
    bt, c = divmod(e, wq)
    return _Attention(keys=s, kv_width=wk, head_dim=hd, group=c // hd // (heads // kv_heads), col=c % hd, bt=bt,
                      bi=bt // t, q_start=bt * wq + c // hd * hd, scale=np.float32(attrs["scale"]),
                      causal=bool(attrs["causal"]), slices=int(attrs["slices"]))


@dataclass(frozen=True)
class _LogSoftmax:
    """One log_softmax element: its row's flat start, length and its column."""

    start: int
    n: int
    col: int

    @property
    def chunks(self) -> int:
        return -(-self.n // ROW_PER_STEP)


def _log_softmax(shapes: dict[str, tuple[int, ...]], e: int) -> _LogSoftmax:
    x = shapes.get("x")
    if x is None or len(x) < 1 or x[-1] == 0 or not 0 <= e < int(np.prod(x, dtype=np.int64)):
        raise ProgramError("the element is not in x")
    n = x[-1]
    return _LogSoftmax(start=e // n * n, n=n, col=e % n)


def _problem(kind: str, attrs: dict[str, Any], shapes: dict[str, tuple[int, ...]], e: int):
    if kind == "attention":
        return _attention(attrs, shapes, e)
    if kind == "log_softmax":
        return _log_softmax(shapes, e)
    raise ProgramError(f"operator {kind!r} has no element program")


def program_length(kind: str, attrs: dict[str, Any], shapes: dict[str, tuple[int, ...]], e: int) -> int:
    """The number of steps ``n`` of element ``e``'s program (states ``S_0 … S_n``)."""
    p = _problem(kind, attrs, shapes, e)
    if isinstance(p, _LogSoftmax):
        return ROW_PASSES * p.chunks + 1
    if p.keys == 0:
        raise ProgramError("no keys: the direct one-step decides this element")
    return PASSES * p.chunks


def _keys_of(p: _Attention, step: int) -> tuple[int, int, int]:
    if not 0 <= step < PASSES * p.chunks:
        raise ProgramError(f"step {step} is outside the program's {PASSES * p.chunks} steps")
    pass_, chunk = divmod(step, p.chunks)
    j0 = chunk * KEYS_PER_STEP
    return pass_, j0, min(j0 + KEYS_PER_STEP, p.keys)


def _row_of(p: _LogSoftmax, step: int) -> tuple[int, int, int]:
    """(pass, first, stop) entries of the row a log_softmax step reads."""
    if not 0 <= step < ROW_PASSES * p.chunks + 1:
        raise ProgramError(f"step {step} is outside the program's {ROW_PASSES * p.chunks + 1} steps")
    if step == ROW_PASSES * p.chunks:
        return ROW_PASSES, p.col, p.col + 1
    pass_, chunk = divmod(step, p.chunks)
    j0 = chunk * ROW_PER_STEP
    return pass_, j0, min(j0 + ROW_PER_STEP, p.n)


def step_inputs(kind: str, attrs: dict[str, Any], shapes: dict[str, tuple[int, ...]], e: int,
                step: int) -> dict[str, tuple[int, int]]:
    """The flat element ranges of each input that step ``step`` reads: the query's
    head, the step's keys' rows of ``k`` and ``v`` (every kv head: rows are
    contiguous), their mask and positions, and the query's position."""
    p = _problem(kind, attrs, shapes, e)
    if isinstance(p, _LogSoftmax):
        pass_, j0, j1 = _row_of(p, step)
        return {"x": (p.start + j0, p.start + j1)}
    _, j0, j1 = _keys_of(p, step)
    rows = (p.bi * p.keys + j0, p.bi * p.keys + j1)
    return {"q": (p.q_start, p.q_start + p.head_dim), "k": (rows[0] * p.kv_width, rows[1] * p.kv_width),
            "v": (rows[0] * p.kv_width, rows[1] * p.kv_width), "key_mask": rows, "q_positions": (p.bt, p.bt + 1),
            "k_positions": rows}


# --------------------------------------------------------------------------- states


def encode_state(words: list[int]) -> bytes:
    """A state's 256 bytes from its eight words."""
    return b"".join(int(w).to_bytes(32, "big", signed=True) for w in words)


def decode_state(state: bytes) -> list[int]:
    """A state's eight words; :class:`ProgramError` unless in ProgramReferee's ranges."""
    if not isinstance(state, (bytes, bytearray)) or len(state) != 32 * STATE_WORDS:
        raise ProgramError(f"a state is {32 * STATE_WORDS} bytes")
    w = [int.from_bytes(state[i:i + 32], "big", signed=True) for i in range(0, len(state), 32)]
    # the ranges ProgramReferee._decodeState accepts
    if not (0 <= w[0] <= 0xFFFFFFFF and NO_KEY_EXP <= w[1] <= NONFINITE_EXP and 0 <= w[2] <= 7
            and 0 <= w[3] <= _POS_INF_BITS and 0 <= w[5] <= 1 and 0 <= w[6] <= _POS_INF_BITS):
        raise ProgramError("a state word is out of range")
    return w


def start_state(kind: str = "attention") -> bytes:
    """``S_0``: m = −inf, G = −127 (no kept key yet), every flag and sum 0."""
    if kind not in PROGRAM_KINDS:
        raise ProgramError(f"operator {kind!r} has no element program")
    return encode_state([_NEG_INF_BITS, NO_KEY_EXP, 0, 0, 0, 0, 0, 0])


def state_hash(state: bytes) -> bytes:
    """keccak256 of a state's 256 bytes (what the game stores)."""
    return keccak256(bytes(state))


def _f32(bits: int) -> np.ndarray:
    return bits_f32(np.array([bits & 0xFFFFFFFF], dtype=np.uint32).astype(np.int64).astype(np.int32))


def _bits(x: np.ndarray) -> np.ndarray:
    return f32_bits(x).astype(np.int64) & 0xFFFFFFFF


def _sum_value(flags: int, e_max: int, e_sum: int) -> np.ndarray:
    """exact_sum's result from its flags, largest finite |bits| and image sum."""
    if flags & _NAN or (flags & _PINF and flags & _NINF):
        return _f32(_NAN_BITS)
    if flags & _PINF:
        return _f32(_POS_INF_BITS)
    if flags & _NINF:
        return _f32(_NEG_INF_BITS)
    e = exponent_of(_f32(e_max))
    with np.errstate(all="ignore"):
        return ldexp(np.array([e_sum], dtype=np.int64).astype(np.float32), e + 1 - FRAC_BITS)


def _int_to_f32(v: int) -> np.float32:
    """fl32 of an integer: one round-to-nearest-even conversion."""
    a = abs(v)
    n = a.bit_length()
    if n > 24:
        shift = n - 24
        q, r = divmod(a, 1 << shift)
        half = 1 << (shift - 1)
        if r > half or (r == half and q & 1):
            q += 1
        a = q << shift  # at most 25 significant bits and exactly representable after rounding
    return np.float32(-float(a) if v < 0 else float(a))


def _chunk_values(p: _Attention, values: dict[str, np.ndarray], j0: int, j1: int):
    """The step's keep flags, scores, value exponents and value rows."""
    n = j1 - j0
    hd, g = p.head_dim, p.group
    q = values["q"].reshape(1, hd)
    k = values["k"].reshape(n, p.kv_width)[:, g * hd:(g + 1) * hd]
    v = values["v"].reshape(n, p.kv_width)[:, g * hd:(g + 1) * hd]
    keep = values["key_mask"].reshape(n).astype(bool)
    if p.causal:
        keep = keep & (values["k_positions"].reshape(n) <= values["q_positions"].reshape(1))
    with np.errstate(all="ignore"):
        scores = (gemm_reference(q, np.ascontiguousarray(k.T), p.slices) * p.scale).reshape(n)
    return keep, scores, value_exponents(np.ascontiguousarray(v)), v


def _exps(keep: np.ndarray, scores: np.ndarray, m_bits: int) -> np.ndarray:
    with np.errstate(all="ignore"):
        return np.where(keep, exp(scores - _f32(m_bits)), np.float32(0.0)).astype(np.float32)


def _scaled_probs(keep, e_vals, g, s, big_g) -> np.ndarray:
    with np.errstate(all="ignore"):
        p = np.where(keep, softmax_reference.canonicalize_nan(e_vals / s), np.float32(0.0)).astype(np.float32)
        pp = ldexp(p, (g - big_g).astype(np.int32))
    return np.where(keep & (big_g == NONFINITE_EXP), _f32(_NAN_BITS), pp).astype(np.float32)


def _exp_stats(e_vals: np.ndarray, e_flags: int, e_max: int) -> tuple[int, int]:
    """exact_sum's special-value flags and largest finite |bits| over ``e_vals`` added in."""
    eb = _bits(e_vals)
    ea = eb & _ABS
    e_flags |= (_NAN if (ea > _POS_INF_BITS).any() else 0) | (_PINF if (eb == _POS_INF_BITS).any() else 0) \
        | (_NINF if (eb == _NEG_INF_BITS).any() else 0)
    return e_flags, max(e_max, int(np.max(np.where(ea < _POS_INF_BITS, ea, 0), initial=0)))


def _image_sum(e_vals: np.ndarray, e_max: int) -> int:
    """Σ exact_sum images of the finite ``e_vals`` at the scale of ``e_max``."""
    finite = (_bits(e_vals) & _ABS) < _POS_INF_BITS
    e = exponent_of(_f32(e_max))
    with np.errstate(all="ignore"):
        img = round_half_even_to_int64(ldexp(np.where(finite, e_vals, np.float32(0.0)), FRAC_BITS - 1 - e))
    return int(img.sum(dtype=np.int64))


def _log_softmax_step(p: _LogSoftmax, step: int, words: list[int], x: np.ndarray) -> list[int]:
    m_bits, big_g, e_flags, e_max, e_sum, p_flags, p_max, out = words
    pass_, j0, j1 = _row_of(p, step)
    x = x.astype(np.float32).reshape(j1 - j0)
    if pass_ == 0:
        m_bits = int(_bits(row_max(np.concatenate([_f32(m_bits), x])[None, :]))[0])
    elif pass_ < ROW_PASSES:
        e_vals = _exps(np.ones(x.shape, dtype=bool), x, m_bits)
        if pass_ == 1:
            e_flags, e_max = _exp_stats(e_vals, e_flags, e_max)
        else:
            e_sum += _image_sum(e_vals, e_max)
    else:
        s = _sum_value(e_flags, e_max, e_sum)
        with np.errstate(all="ignore"):
            y = softmax_reference.canonicalize_nan((x - _f32(m_bits)) - log(s))
        out = int(_bits(y)[0])
    return [m_bits, big_g, e_flags, e_max, e_sum, p_flags, p_max, out]


def _attention_step(p: _Attention, step: int, words: list[int], values: dict[str, np.ndarray]) -> list[int]:
    m_bits, big_g, e_flags, e_max, e_sum, p_flags, p_max, p_sum = words
    pass_, j0, j1 = _keys_of(p, step)
    keep, scores, g, v = _chunk_values(p, values, j0, j1)
    if pass_ == 0:
        row = np.concatenate([_f32(m_bits), np.where(keep, scores, np.float32(-np.inf)).astype(np.float32)])
        m_bits = int(_bits(row_max(row[None, :]))[0])
        big_g = max(big_g, int(np.max(np.where(keep, g, NO_KEY_EXP), initial=NO_KEY_EXP)))
        return [m_bits, big_g, e_flags, e_max, e_sum, p_flags, p_max, p_sum]
    e_vals = _exps(keep, scores, m_bits)
    if pass_ == 1:
        e_flags, e_max = _exp_stats(e_vals, e_flags, e_max)
    elif pass_ == 2:
        e_sum += _image_sum(e_vals, e_max)
    else:
        s = _sum_value(e_flags, e_max, e_sum)
        pp = _scaled_probs(keep, e_vals, g, s, big_g)
        pa = _bits(pp) & _ABS
        if pass_ == 3:
            p_flags |= int((pa >= _POS_INF_BITS).any())
            p_max = max(p_max, int(np.max(np.where(pa < _POS_INF_BITS, pa, 0), initial=0)))
        elif not p_flags:
            vc = np.where(g == NONFINITE_EXP, np.float32(0.0), ldexp(v[:, p.col], -g)).astype(np.float32)
            a_img = images(pp[None, :], np.array([p_max], dtype=np.int32), -1, p.slices).reshape(-1)
            b_img = images(vc[None, :], np.array([_PIN_BITS], dtype=np.int32), -1, p.slices).reshape(-1)
            p_sum += sum(int(a) * int(b) for a, b in zip(a_img, b_img))
    return [m_bits, big_g, e_flags, e_max, e_sum, p_flags, p_max, p_sum]


def _np_values(values: dict[str, Any], names: tuple[str, ...]) -> dict[str, np.ndarray]:
    out = {}
    for name in names:
        if name not in values:
            raise ProgramError(f"no values for input {name}")
        v = values[name]
        out[name] = v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
    return out


def run_step(kind: str, attrs: dict[str, Any], shapes: dict[str, tuple[int, ...]], e: int, step: int, state: bytes,
             values: dict[str, Any]) -> bytes:
    """``S_{step+1}`` from ``S_step`` and the step's slices ``values`` (the ranges
    of :func:`step_inputs`, flat)."""
    p = _problem(kind, attrs, shapes, e)
    words = decode_state(state)
    if isinstance(p, _LogSoftmax):
        return encode_state(_log_softmax_step(p, step, words, _np_values(values, ("x",))["x"]))
    return encode_state(_attention_step(p, step, words, _np_values(values, _INPUTS)))


def program_output(kind: str, attrs: dict[str, Any], state: bytes) -> bytes:
    """The element's 4 little-endian bytes that final state ``state`` gives."""
    if kind not in PROGRAM_KINDS:
        raise ProgramError(f"operator {kind!r} has no element program")
    m_bits, big_g, e_flags, e_max, e_sum, p_flags, p_max, p_sum = decode_state(state)
    if kind == "log_softmax":
        return (p_sum & 0xFFFFFFFF).to_bytes(4, "little")
    slices = int(attrs["slices"])
    if p_flags:
        out = _f32(_NAN_BITS)
    else:
        e_p = exponent_of(_f32(p_max))
        with np.errstate(all="ignore"):
            c = ldexp(np.array([_int_to_f32(p_sum)], dtype=np.float32), e_p + product_shift(slices))
            out = softmax_reference.canonicalize_nan(ldexp(c, np.int32(big_g)))
    return np.ascontiguousarray(out, dtype=np.float32).tobytes()


def program_states(kind: str, attrs: dict[str, Any], inputs: dict[str, torch.Tensor], e: int) -> list[bytes]:
    """Every state ``S_0 … S_n`` of element ``e``'s program over the whole input
    tensors (what each party computes from its own tensors)."""
    shapes = {n: tuple(t.shape) for n, t in inputs.items()}
    n = program_length(kind, attrs, shapes, e)
    flat = {name: t.reshape(-1) for name, t in inputs.items()}
    states = [start_state(kind)]
    for step in range(n):
        need = step_inputs(kind, attrs, shapes, e, step)
        states.append(run_step(kind, attrs, shapes, e, step, states[-1],
                               {name: flat[name][a:b] for name, (a, b) in need.items()}))
    return states


# --------------------------------------------------------------------------- the step decision


@dataclass(frozen=True)
class StepProof:
    """The last move of a program bisection: record ``record`` (proven under the
    claim's trace root), element ``element`` of its output, step ``step``, the agreed
    state ``before`` (the challenger's own), the defendant's hash of the next state
    ``after_hash``, and the challenger's openings of the step's input slices."""

    trace_root: bytes
    record: TraceRecord
    record_proof: RecordProof
    element: int
    step: int
    before: bytes
    after_hash: bytes
    input_openings: dict[str, RangeProof]


@dataclass(frozen=True)
class StepResult:
    """``defendant_wrong`` iff the step from ``before`` does not give ``after_hash``."""

    defendant_wrong: bool
    reason: str


def party_program_states(trace: Any, opened: Callable[[int], Any]) -> Callable[[int, int], list[bytes]]:
    """``(record, element) -> S_0 … S_n``, computed from a party's own input tensors of
    the record (``opened(i).inputs``: its :class:`~refute.verifier.prover.Opened`) over
    its ``trace``, each element's states once."""
    cache: dict[tuple[int, int], list[bytes]] = {}

    def states(rec: int, element: int) -> list[bytes]:
        if (rec, element) not in cache:
            r = trace[rec]
            cache[(rec, element)] = program_states(r.kind, r.attr_dict(), opened(rec).inputs, element)
        return cache[(rec, element)]

    return states


def check_step(proof: Any) -> StepResult:
    """The referee's program-step decision in Python (the twin of
    ``ProgramReferee.programStep`` and the game's comparison). Total: malformed
    challenger evidence decides for the defendant."""
    try:
        if not isinstance(proof, StepProof):
            return StepResult(False, "not a step proof")
        r = proof.record
        try:
            verify_record(proof.trace_root, r, proof.record_proof)
        except (TraceError, AttributeError, TypeError) as err:
            return StepResult(False, f"record proof: {err}")
        if not has_program(r.kind):
            return StepResult(False, f"operator {r.kind!r} has no element program")
        roots = {i.name: i.root for i in r.inputs}
        want = _INPUTS if r.kind == "attention" else ("x",)
        if tuple(roots) != want or set(proof.input_openings) != set(roots):
            return StepResult(False, "the openings are not the record's inputs")
        values, shapes = {}, {}
        for name, o in proof.input_openings.items():
            try:
                raw = verify_range(roots[name], o)
            except ProofError as err:
                return StepResult(False, f"input {name}: {err}")
            shapes[name] = o.header.shape
            values[name] = decode_elements(raw, o.header, o.stop - o.start).numpy()
        attrs = r.attr_dict()
        need = step_inputs(r.kind, attrs, shapes, proof.element, proof.step)
        for name, (a, b) in need.items():
            o = proof.input_openings[name]
            if (o.start, o.stop) != (a, b):
                return StepResult(False, f"input {name}: opened [{o.start}, {o.stop}), step {proof.step} needs [{a}, {b})")
        after = run_step(r.kind, attrs, shapes, proof.element, proof.step, proof.before, values)
        if state_hash(after) != proof.after_hash:
            return StepResult(True, f"step {proof.step} of element {proof.element}: the defendant's next state is wrong")
        return StepResult(False, f"step {proof.step} of element {proof.element} is right")
    except Exception as err:  # totality: evidence that breaks the checker is the challenger's fault
        return StepResult(False, f"malformed step proof: {type(err).__name__}: {err}")
