"""Deterministic next-token selection: greedy, and temperature / top-k / top-p
sampling by the Gumbel-max trick on counter-based random numbers.

Every token chosen here is a function of the bits of one row of logits and of
(seed, sequence, position, temperature, top_k, top_p); never of the batch, the
device, the backend or the run (docs/numerics.md). The definition, for
one row ``x`` of V float32 logits:

1. ``T = float32(temperature)``. ``T == 0`` is greedy: ``row_argmax(x)``.
2. ``z_i = div(x_i, T)``. If some z_i is NaN or +inf, or every z_i is -inf,
   the row is *degenerate* and the token is ``row_argmax(x)`` (the T -> 0
   limit: division by T > 0 preserves order; NaN counts as the largest).
3. Order: tokens sorted by z descending, ties by index ascending (an exact
   sort of the integer total-order keys of z).
4. Top-k: ``K = V`` if top_k == 0 or top_k >= V, else top_k. Candidates: the
   first K tokens of the order.
5. Top-p (skipped when float32(top_p) >= 1): ``p = softmax(z, mask=candidates)``
   (refute's softmax: exact fixed-point denominator); images
   ``X_i = rne(p_i * 2**40)`` (exact integers, p_i <= 1); ``C_j`` = the int64
   prefix sums of X along the order; ``L = min(K, 1 + #{j : C_j < P})`` with
   ``P = rne(float32(top_p) * 2**40)``. Kept: the first L tokens of the order
   (always at least the top one). Without top-p, L = K.
6. ``g_i = -log(-log(u_i))`` with refute's log and u_i the sampling uniforms of
   :mod:`refute.kernels.philox` for (seed, sequence, position); the token is
   ``row_argmax`` over the kept tokens of ``z_i + g_i``, ties to the lowest index.

The kept set is a prefix of the one z order, so top-k and top-p nest, and
top_p -> 0 is exactly greedy. Steps 3-5 are integer work written once in torch
(stable sorts, int64 prefix sums: exact and deterministic on every device);
the float work (division, log, softmax, argmax) runs in refute's kernels on the
chosen backend.
"""

from __future__ import annotations

import numpy as np
import torch

from refute.kernels.backend import check_backend
from refute.kernels.philox import gumbel_scores, seed_tensor, word_tensor
from refute.kernels.reduce import row_argmax
from refute.kernels.softmax import softmax

# Fraction bits of the probability images X = rne(p * 2**40): p <= 1, so one
# fixed exponent serves every token, and V * 2**40 < 2**63 for V < 2**23.
PROB_FRAC_BITS = 40
MAX_VOCAB = 1 << 23

_F32_EXP_BIAS_PLUS_MANT = 150  # a float32 with biased exponent E, significand m is m * 2**(E - 150)
_MANT_BITS = 23
_MANT_MASK = (1 << _MANT_BITS) - 1
_IMPLICIT_BIT = 1 << _MANT_BITS
_ABS_MASK = 0x7FFFFFFF
_INF_BITS = 0x7F800000
_NEG_INF_BITS = -0x00800000  # 0xFF800000 as int32
_MAX_RIGHT_SHIFT = 62  # beyond 24 every image rounds to 0; keeps shifts inside int64


def fixed_point_image(p: torch.Tensor, frac_bits: int = PROB_FRAC_BITS) -> torch.Tensor:
    """int64 ``rne(p * 2**frac_bits)`` of non-negative finite float32 ``p``
    below ``2**(39 - frac_bits)``, computed exactly in integer operations on
    the bits (round half to even), so no float rounding mode is involved."""
    b = p.contiguous().view(torch.int32).to(torch.int64)
    biased = (b >> _MANT_BITS) & 0xFF
    mant = b & _MANT_MASK
    normal = biased > 0
    m = torch.where(normal, mant | _IMPLICIT_BIT, mant)
    # p = m * 2**(e - 150), with subnormals at the exponent of the smallest normal.
    e = torch.where(normal, biased, torch.ones_like(biased))
    shift = e - (_F32_EXP_BIAS_PLUS_MANT - frac_bits)
    left = shift.clamp(min=0)
    right = (-shift).clamp(min=0, max=_MAX_RIGHT_SHIFT)
    q = m >> right
    rem = m - (q << right)
    half = (torch.ones_like(right) << right) >> 1
    round_up = (right > 0) & ((rem > half) | ((rem == half) & ((q & 1) == 1)))
    return torch.where(right > 0, q + round_up.to(torch.int64), m << left)


def total_order_key(z: torch.Tensor) -> torch.Tensor:
    """int64 key whose integer order is the IEEE order of non-NaN float32 z
    (-0 < +0): non-negative floats keep their bits, negative ones flip their
    magnitude bits."""
    b = z.contiguous().view(torch.int32)
    return torch.where(b < 0, b ^ _ABS_MASK, b).to(torch.int64)


def descending_order(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(order, rank) over the last dim of non-NaN float32 ``z`` [B, V]: order
    lists indices by z descending, equal z by index ascending (a stable sort of
    integer keys); rank is its inverse permutation."""
    order = torch.argsort(-total_order_key(z), dim=-1, stable=True)
    positions = torch.arange(z.shape[-1], device=z.device).expand_as(order)
    rank = torch.empty_like(order).scatter_(-1, order, positions)
    return order, rank


def _float_param(value: float | torch.Tensor, name: str, rows: int, device: torch.device) -> torch.Tensor:
    """float32 [rows] from a Python number or a tensor [rows] (converted to float32)."""
    if isinstance(value, torch.Tensor):
        if value.shape != (rows,) or not value.dtype.is_floating_point:
            raise ValueError(f"{name}: expected a float tensor of shape ({rows},), got {value.dtype} {tuple(value.shape)}")
        return value.to(device=device, dtype=torch.float32)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    return torch.full((rows,), float(np.float32(value)), dtype=torch.float32, device=device)


def _int_param(value: int | torch.Tensor, name: str, rows: int, device: torch.device) -> torch.Tensor:
    """int64 [rows] from a Python int or an integer tensor [rows]."""
    if isinstance(value, torch.Tensor):
        if value.shape != (rows,) or value.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"{name}: expected an integer tensor of shape ({rows},), got {value.dtype} {tuple(value.shape)}")
        return value.to(device=device, dtype=torch.int64)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    return torch.full((rows,), value, dtype=torch.int64, device=device)


def _check_logits(logits: object, dims: int) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor):
        raise TypeError(f"logits: expected a torch.Tensor, got {type(logits).__name__}")
    if logits.dtype != torch.float32:
        raise TypeError(f"logits: expected float32, got {logits.dtype}")
    if logits.dim() != dims:
        raise ValueError(f"logits: expected {dims} dimension(s), got shape {tuple(logits.shape)}")
    if logits.shape[-1] == 0 or logits.shape[-1] > MAX_VOCAB:
        raise ValueError(f"logits: vocabulary size {logits.shape[-1]} is outside [1, {MAX_VOCAB}]")
    return logits


def greedy_tokens(logits: torch.Tensor, backend: str = "reference") -> torch.Tensor:
    """int64 [B]: ``row_argmax`` of each row of float32 ``logits`` [B, V]
    (lowest index on ties; NaN counts as the largest value)."""
    return row_argmax(_check_logits(logits, 2), backend)


def greedy_token(logits: torch.Tensor, backend: str = "reference") -> int:
    """The greedy token of one row of float32 logits [V]."""
    return int(greedy_tokens(_check_logits(logits, 1)[None], backend)[0])


def _degenerate_rows(z: torch.Tensor) -> torch.Tensor:
    """bool [B]: rows with a NaN or +inf z, or with every z equal to -inf."""
    b = z.contiguous().view(torch.int32)
    nan_or_pinf = ((b & _ABS_MASK) > _INF_BITS) | (b == _INF_BITS)
    return nan_or_pinf.any(dim=-1) | (b == _NEG_INF_BITS).all(dim=-1)


def sample_tokens(
    logits: torch.Tensor,
    *,
    seeds: int | torch.Tensor,
    sequences: int | torch.Tensor,
    positions: int | torch.Tensor,
    temperature: float | torch.Tensor = 1.0,
    top_k: int | torch.Tensor = 0,
    top_p: float | torch.Tensor = 1.0,
    backend: str = "reference",
) -> torch.Tensor:
    """int64 [B]: the token of each row of float32 ``logits`` [B, V] under the
    module's definition. Row b uses seeds[b] (a Python int in [0, 2**64) for
    every row, or an int64 tensor [B] of bit patterns), sequences[b] and
    positions[b] (ints or integer tensors [B], in [0, 2**32)), and its own
    temperature (>= 0; 0 = greedy), top_k (>= 0; 0 = off) and top_p (in
    [0, 1]; 1 = off): each a Python number for every row or a tensor [B].
    Temperature and top_p are converted to float32 first."""
    logits = _check_logits(logits, 2)
    check_backend(backend)
    rows, vocab = logits.shape
    device = logits.device
    temp = _float_param(temperature, "temperature", rows, device)
    k = _int_param(top_k, "top_k", rows, device)
    p_top = _float_param(top_p, "top_p", rows, device)
    if not bool(((temp >= 0) & (temp < float("inf"))).all()):
        raise ValueError("temperature must be finite and >= 0 (0 = greedy)")
    if not bool((k >= 0).all()):
        raise ValueError("top_k must be >= 0 (0 = off)")
    if not bool(((p_top >= 0) & (p_top <= 1)).all()):
        raise ValueError("top_p must lie in [0, 1] (1 = off)")
    seeds_t = seed_tensor(seeds, rows, device)
    seq_t = word_tensor(sequences, "sequences", rows, device)
    pos_t = word_tensor(positions, "positions", rows, device)
    if rows == 0:
        return torch.empty(0, dtype=torch.int64, device=device)

    greedy_row = temp == 0
    # Greedy rows get T = 1 only so that their (unused) scores are harmless.
    z, score = gumbel_scores(logits, torch.where(greedy_row, 1.0, temp), seeds_t, seq_t, pos_t, backend)
    fallback = greedy_row | _degenerate_rows(z)
    # Fallback rows are replaced by zeros: their scores are never used and
    # the integer steps below then see no NaN.
    z = torch.where(fallback[:, None], 0.0, z)

    order, rank = descending_order(z)
    cand = torch.where((k == 0) | (k > vocab), vocab, k)
    kept = cand
    nucleus = p_top < 1
    if bool(nucleus.any()):
        probs = softmax(z, mask=rank < cand[:, None], backend=backend)
        cumulative = torch.cumsum(torch.gather(fixed_point_image(probs), -1, order), dim=-1)
        below = (cumulative < fixed_point_image(p_top)[:, None]).sum(dim=-1)
        kept = torch.where(nucleus, torch.minimum(below + 1, cand), cand)
    masked = torch.where(rank < kept[:, None], score, float("-inf"))
    return torch.where(fallback, row_argmax(logits, backend), row_argmax(masked, backend))


def sample_token(
    logits: torch.Tensor,
    *,
    seed: int,
    sequence: int,
    position: int,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    backend: str = "reference",
) -> int:
    """The token chosen from one row of float32 logits [V] for the draw of
    token ``position`` of ``sequence`` under ``seed`` (see :func:`sample_tokens`)."""
    token = sample_tokens(
        _check_logits(logits, 1)[None],
        seeds=seed,
        sequences=sequence,
        positions=position,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        backend=backend,
    )
    return int(token[0])
