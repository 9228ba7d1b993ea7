"""Triton kernels for the exact row reductions of :mod:`refute.kernels.reduce`.

One program per row; the row is walked in ``BLOCK``-sized chunks. An exact sum
takes two passes: pass 1 is an integer max of the finite magnitudes' bits plus
the NaN/+inf/-inf flags, pass 2 accumulates the int64 fixed-point images with an
integer ``tl.sum``. Integer max and sum are exact, so neither the chunk size nor
the reduction tree can change a bit.

The building blocks are plain ``@triton.jit`` device functions so fused kernels
(LayerNorm, RMSNorm, softmax denominators) can apply them to a row they already
hold in one block:

* :func:`exact_sum_block` - the whole exact sum of a 1-D block (masked-out lanes
  must hold 0.0);
* :func:`sum_scan`, :func:`sum_exponent`, :func:`fixed_point_sum`,
  :func:`exact_sum_finish` - the same in pieces, for rows longer than a block;
* :func:`exact_mean` - ``div_rn(total, n)`` with NaN canonicalised;
* :func:`total_order_key`, :func:`key_to_f32`, :func:`max_key_block` - exact max.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from refute.kernels.backend import CompileSpec, launch
from refute.kernels.bits_triton import (
    bits_f32,
    exponent_of,
    f32_bits,
    ldexp,
    round_half_even_to_int64,
)

DEFAULT_BLOCK = 1024

# Same constants as kernels/reduce_reference.py (see there for why).
FRAC_BITS: tl.constexpr = tl.constexpr(40)
ABS_MASK: tl.constexpr = tl.constexpr(0x7FFFFFFF)
POS_INF_BITS: tl.constexpr = tl.constexpr(0x7F800000)
NEG_INF_BITS: tl.constexpr = tl.constexpr(-0x00800000)  # 0xFF800000 as int32
CANONICAL_NAN_BITS: tl.constexpr = tl.constexpr(0x7FC00000)
NAN_KEY: tl.constexpr = tl.constexpr(0x7FFFFFFF)
# Key of masked-out lanes: below every real key (-inf's key is 0x807FFFFF and
# the key 0x80000000 would belong to a NaN, which gets NAN_KEY instead).
MIN_KEY: tl.constexpr = tl.constexpr(-0x80000000)
INT32_MAX: tl.constexpr = tl.constexpr(0x7FFFFFFF)

# Which statistic _row_stats_kernel computes.
STAT_SUM: tl.constexpr = tl.constexpr(0)
STAT_SUMSQ: tl.constexpr = tl.constexpr(1)
STAT_MEAN: tl.constexpr = tl.constexpr(2)
STAT_VAR: tl.constexpr = tl.constexpr(3)
STATS: dict[str, int] = {"sum": 0, "sumsq": 1, "mean": 2, "var": 3}


@triton.jit
def sum_scan(v):
    """Pass 1 over a 1-D block of float32 (masked-out lanes hold 0.0).

    Returns int32 scalars (max |bits| over finite lanes, any NaN, any +inf,
    any -inf); combine blocks with ``tl.maximum``.
    """
    b = f32_bits(v)
    a = b & ABS_MASK
    max_abs = tl.max(tl.where(a < POS_INF_BITS, a, 0), axis=0)
    has_nan = tl.max((a > POS_INF_BITS).to(tl.int32), axis=0)
    has_pinf = tl.max((b == POS_INF_BITS).to(tl.int32), axis=0)
    has_ninf = tl.max((b == NEG_INF_BITS).to(tl.int32), axis=0)
    return max_abs, has_nan, has_pinf, has_ninf


@triton.jit
def sum_exponent(max_abs_bits):
    """The scale exponent e of a row from its max finite |bits| (-127 if all
    elements are zero or subnormal)."""
    return exponent_of(bits_f32(max_abs_bits))


@triton.jit
def fixed_point_sum(v, e):
    """Pass 2 over a 1-D block: int64 sum of rne(v_i * 2**(F-1-e)) over finite
    lanes (exact: |image| <= 2**40). Combine blocks with integer addition."""
    finite = (f32_bits(v) & ABS_MASK) < POS_INF_BITS
    y = ldexp(tl.where(finite, v, 0.0), FRAC_BITS - 1 - e)
    return tl.sum(round_half_even_to_int64(y), axis=0)


@triton.jit
def exact_sum_finish(s, e, has_nan, has_pinf, has_ninf):
    """float32 result from the int64 image sum ``s`` and the pass-1 flags."""
    r = f32_bits(ldexp(s.to(tl.float32), e + 1 - FRAC_BITS))
    r = tl.where(has_ninf != 0, NEG_INF_BITS, r)
    r = tl.where(has_pinf != 0, POS_INF_BITS, r)
    r = tl.where((has_nan != 0) | ((has_pinf != 0) & (has_ninf != 0)), CANONICAL_NAN_BITS, r)
    return bits_f32(r)


@triton.jit
def exact_sum_block(v):
    """Exact sum of a whole row held in one 1-D block (masked-out lanes 0.0)."""
    max_abs, has_nan, has_pinf, has_ninf = sum_scan(v)
    e = sum_exponent(max_abs)
    return exact_sum_finish(fixed_point_sum(v, e), e, has_nan, has_pinf, has_ninf)


@triton.jit
def canonicalize_nan(r):
    """Replace a NaN float32 by the canonical quiet NaN 0x7FC00000 (the GPU's
    div.rn and numpy produce different NaN bits)."""
    b = f32_bits(r)
    return bits_f32(tl.where((b & ABS_MASK) > POS_INF_BITS, CANONICAL_NAN_BITS, b))


@triton.jit
def exact_mean(total, n):
    """Correctly rounded ``total / n`` (n an int32 <= 2**22, exact in float32)."""
    return canonicalize_nan(tl.math.div_rn(total, n.to(tl.float32)))


@triton.jit
def _load_row_chunk(base, offs, n, center, CENTER: tl.constexpr, SQUARE: tl.constexpr):
    """Elements offs of a row, optionally ``x - center`` then squared (fp32
    ops, one rounding each); lanes past the row end give 0.0."""
    mask = offs < n
    v = tl.load(base + offs, mask=mask, other=0.0)
    if CENTER:
        v = v - center
    if SQUARE:
        v = v * v
    return tl.where(mask, v, 0.0)


@triton.jit
def _chunked_exact_sum(base, n, center, CENTER: tl.constexpr, SQUARE: tl.constexpr, BLOCK: tl.constexpr):
    """Exact sum of the (transformed) row at ``base``, ``BLOCK`` elements at a time."""
    max_abs = tl.full([], 0, tl.int32)
    has_nan = tl.full([], 0, tl.int32)
    has_pinf = tl.full([], 0, tl.int32)
    has_ninf = tl.full([], 0, tl.int32)
    for start in range(0, n, BLOCK):
        v = _load_row_chunk(base, start + tl.arange(0, BLOCK), n, center, CENTER, SQUARE)
        m, f_nan, f_pinf, f_ninf = sum_scan(v)
        max_abs = tl.maximum(max_abs, m)
        has_nan = tl.maximum(has_nan, f_nan)
        has_pinf = tl.maximum(has_pinf, f_pinf)
        has_ninf = tl.maximum(has_ninf, f_ninf)
    e = sum_exponent(max_abs)
    s = tl.full([], 0, tl.int64)
    for start in range(0, n, BLOCK):
        v = _load_row_chunk(base, start + tl.arange(0, BLOCK), n, center, CENTER, SQUARE)
        s += fixed_point_sum(v, e)
    return exact_sum_finish(s, e, has_nan, has_pinf, has_ninf)


@triton.jit(do_not_specialize=["n"])
def _row_stats_kernel(x_ptr, out_ptr, n, STAT: tl.constexpr, BLOCK: tl.constexpr):
    """out[row] = sum / sumsq / mean / var of the contiguous row x[row, :n]."""
    row = tl.program_id(0).to(tl.int64)
    base = x_ptr + row * n
    zero = tl.full([], 0.0, tl.float32)
    if STAT == STAT_SUM:
        r = _chunked_exact_sum(base, n, zero, False, False, BLOCK)
    elif STAT == STAT_SUMSQ:
        r = _chunked_exact_sum(base, n, zero, False, True, BLOCK)
    elif STAT == STAT_MEAN:
        r = exact_mean(_chunked_exact_sum(base, n, zero, False, False, BLOCK), n)
    else:
        mean = exact_mean(_chunked_exact_sum(base, n, zero, False, False, BLOCK), n)
        r = exact_mean(_chunked_exact_sum(base, n, mean, True, True, BLOCK), n)
    tl.store(out_ptr + row, r)


def row_stats_launch(x: torch.Tensor, stat: str, block: int = DEFAULT_BLOCK) -> torch.Tensor:
    """One statistic (``"sum" | "sumsq" | "mean" | "var"``) of each row of the
    contiguous 2-D float32 tensor ``x`` -> float32 (rows,)."""
    rows, n = x.shape
    out = torch.empty(rows, dtype=torch.float32, device=x.device)
    if rows:
        launch(_row_stats_kernel, (rows,), x, out, n, STAT=STATS[stat], BLOCK=block)
    return out


@triton.jit
def total_order_key(x):
    """int32 key whose integer order is IEEE order with -0 < +0; NaN -> NAN_KEY."""
    b = f32_bits(x)
    key = tl.where(b < 0, b ^ ABS_MASK, b)
    return tl.where((b & ABS_MASK) > POS_INF_BITS, NAN_KEY, key)


@triton.jit
def key_to_f32(key):
    """Inverse of total_order_key; NAN_KEY gives the canonical NaN."""
    b = tl.where(key < 0, key ^ ABS_MASK, key)
    return bits_f32(tl.where(key == NAN_KEY, CANONICAL_NAN_BITS, b))


@triton.jit
def max_key_block(key, idx):
    """(max key, lowest idx attaining it) of a 1-D block; masked-out lanes must
    hold MIN_KEY."""
    kmax = tl.max(key, axis=0)
    first = tl.min(tl.where(key == kmax, idx, INT32_MAX), axis=0)
    return kmax, first


@triton.jit(do_not_specialize=["n"])
def _row_max_kernel(x_ptr, max_ptr, argmax_ptr, n, BLOCK: tl.constexpr):
    """max_ptr[row], argmax_ptr[row] = exact max and its lowest index (n >= 1)."""
    row = tl.program_id(0).to(tl.int64)
    base = x_ptr + row * n
    best = tl.full([], MIN_KEY, tl.int32)
    best_idx = tl.full([], 0, tl.int32)
    for start in range(0, n, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        mask = offs < n
        key = tl.where(mask, total_order_key(tl.load(base + offs, mask=mask, other=0.0)), MIN_KEY)
        k, i = max_key_block(key, offs)
        # Strictly greater: an equal key in a later chunk has a higher index.
        best_idx = tl.where(k > best, i, best_idx)
        best = tl.maximum(best, k)
    tl.store(max_ptr + row, key_to_f32(best))
    tl.store(argmax_ptr + row, best_idx.to(tl.int64))


def row_max_launch(x: torch.Tensor, block: int = DEFAULT_BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """(max float32 (rows,), argmax int64 (rows,)) of contiguous 2-D float32
    ``x`` with at least one column."""
    rows, n = x.shape
    out_max = torch.empty(rows, dtype=torch.float32, device=x.device)
    out_idx = torch.empty(rows, dtype=torch.int64, device=x.device)
    if rows:
        launch(_row_max_kernel, (rows,), x, out_max, out_idx, n, BLOCK=block)
    return out_max, out_idx


COMPILE_SPECS: list[CompileSpec] = [
    CompileSpec(
        _row_stats_kernel,
        {"x_ptr": "*fp32", "out_ptr": "*fp32", "n": "i32", "STAT": "constexpr", "BLOCK": "constexpr"},
        {"STAT": stat, "BLOCK": DEFAULT_BLOCK},
    )
    for stat in STATS.values()
] + [
    CompileSpec(
        _row_max_kernel,
        {"x_ptr": "*fp32", "max_ptr": "*fp32", "argmax_ptr": "*i64", "n": "i32", "BLOCK": "constexpr"},
        {"BLOCK": DEFAULT_BLOCK},
    )
]
