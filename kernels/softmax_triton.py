"""Triton kernels for :mod:`refute.kernels.softmax` (semantics: :mod:`softmax_reference`).

One program per row. A row that fits one ``BLOCK`` is loaded once and held in
registers; a longer row is walked in ``BLOCK``-sized chunks four times (max,
sum scan, fixed-point sum, output), recomputing ``exp`` rather than storing it.
The max and the sum are exact integer reductions (``reduce_triton``), so the
block size and the path never change a bit.

The per-chunk steps are plain ``@triton.jit`` device functions so the
attention kernel (:mod:`attention_triton`) runs the very same softmax on rows
whose mask it computes from positions:

* :func:`masked_max_key` - total-order key of the max of the kept lanes;
* :func:`softmax_numerators` - ``exp(x - m)`` on kept lanes, +0 elsewhere;
* :func:`softmax_probs` / :func:`log_softmax_values` - the outputs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from refute.kernels.backend import CompileSpec, launch
from refute.kernels.mathlib_triton import exp_f32, log_f32
from refute.kernels.reduce_triton import (
    MIN_KEY,
    canonicalize_nan,
    exact_sum_block,
    exact_sum_finish,
    fixed_point_sum,
    key_to_f32,
    sum_exponent,
    sum_scan,
    total_order_key,
)

DEFAULT_BLOCK = 1024
_NEG_INF: tl.constexpr = tl.constexpr(float("-inf"))


@triton.jit
def masked_max_key(x, keep):
    """int32 total-order key of the max of a 1-D chunk where lanes not kept
    count as -inf (so it is the max of the kept lanes if there are any).
    Combine chunks with ``tl.maximum``; ``key_to_f32`` gives the value."""
    return tl.max(total_order_key(tl.where(keep, x, _NEG_INF)), axis=0)


@triton.jit
def softmax_numerators(x, keep, m):
    """``exp(x - m)`` on kept lanes, +0.0 on the others."""
    return tl.where(keep, exp_f32(x - m), 0.0)


@triton.jit
def softmax_probs(e, keep, s):
    """``div_rn(e, s)`` (NaN canonical) on kept lanes, +0.0 on the others."""
    return tl.where(keep, canonicalize_nan(tl.math.div_rn(e, s)), 0.0)


@triton.jit
def log_softmax_values(x, keep, m, log_s):
    """``(x - m) - log_s`` (NaN canonical) on kept lanes, -inf on the others."""
    return tl.where(keep, canonicalize_nan((x - m) - log_s), _NEG_INF)


@triton.jit
def _load_chunk(x_ptr, mask_ptr, offs, n, HAS_MASK: tl.constexpr):
    """(x, keep) for the lanes ``offs`` of a row; lanes past n are not kept."""
    inside = offs < n
    x = tl.load(x_ptr + offs, mask=inside, other=0.0)
    keep = inside
    if HAS_MASK:
        keep = keep & (tl.load(mask_ptr + offs, mask=inside, other=0) != 0)
    return x, keep


@triton.jit(do_not_specialize=["n"])
def _softmax_kernel(
    x_ptr,
    mask_ptr,
    out_ptr,
    n,
    HAS_MASK: tl.constexpr,
    LOG: tl.constexpr,
    ONE_BLOCK: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """out[row] = (log_)softmax of the contiguous row x[row, :n] under the int8
    mask row mask[row, :n] (nonzero = kept). ONE_BLOCK requires n <= BLOCK."""
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * n
    mask_row = mask_ptr + row * n
    out_row = out_ptr + row * n
    if ONE_BLOCK:
        offs = tl.arange(0, BLOCK)
        x, keep = _load_chunk(x_row, mask_row, offs, n, HAS_MASK)
        m = key_to_f32(masked_max_key(x, keep))
        e = softmax_numerators(x, keep, m)
        s = exact_sum_block(e)
        if LOG:
            y = log_softmax_values(x, keep, m, log_f32(s))
        else:
            y = softmax_probs(e, keep, s)
        tl.store(out_row + offs, y, mask=offs < n)
    else:
        best = tl.full([], MIN_KEY, tl.int32)
        for start in range(0, n, BLOCK):
            x, keep = _load_chunk(x_row, mask_row, start + tl.arange(0, BLOCK), n, HAS_MASK)
            best = tl.maximum(best, masked_max_key(x, keep))
        m = key_to_f32(best)
        max_abs = tl.full([], 0, tl.int32)
        has_nan = tl.full([], 0, tl.int32)
        has_pinf = tl.full([], 0, tl.int32)
        has_ninf = tl.full([], 0, tl.int32)
        for start in range(0, n, BLOCK):
            x, keep = _load_chunk(x_row, mask_row, start + tl.arange(0, BLOCK), n, HAS_MASK)
            c_max, c_nan, c_pinf, c_ninf = sum_scan(softmax_numerators(x, keep, m))
            max_abs = tl.maximum(max_abs, c_max)
            has_nan = tl.maximum(has_nan, c_nan)
            has_pinf = tl.maximum(has_pinf, c_pinf)
            has_ninf = tl.maximum(has_ninf, c_ninf)
        e_scale = sum_exponent(max_abs)
        total = tl.full([], 0, tl.int64)
        for start in range(0, n, BLOCK):
            x, keep = _load_chunk(x_row, mask_row, start + tl.arange(0, BLOCK), n, HAS_MASK)
            total += fixed_point_sum(softmax_numerators(x, keep, m), e_scale)
        s = exact_sum_finish(total, e_scale, has_nan, has_pinf, has_ninf)
        for start in range(0, n, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            x, keep = _load_chunk(x_row, mask_row, offs, n, HAS_MASK)
            if LOG:
                y = log_softmax_values(x, keep, m, log_f32(s))
            else:
                y = softmax_probs(softmax_numerators(x, keep, m), keep, s)
            tl.store(out_row + offs, y, mask=offs < n)


def softmax_launch(x: torch.Tensor, keep: torch.Tensor | None, log: bool, block: int = DEFAULT_BLOCK) -> torch.Tensor:
    """(log_)softmax of each row of contiguous float32 ``x`` (rows, n) under the
    contiguous int8 ``keep`` (rows, n) or None (all kept) -> float32 (rows, n)."""
    rows, n = x.shape
    out = torch.empty_like(x)
    if rows * n == 0:
        return out
    one_block = n <= block
    launch(
        _softmax_kernel,
        (rows,),
        x,
        x if keep is None else keep,
        out,
        n,
        HAS_MASK=keep is not None,
        LOG=log,
        ONE_BLOCK=one_block,
        BLOCK=triton.next_power_of_2(n) if one_block else block,
    )
    return out


COMPILE_SPECS: list[CompileSpec] = [
    CompileSpec(
        _softmax_kernel,
        {
            "x_ptr": "*fp32",
            "mask_ptr": "*i8",
            "out_ptr": "*fp32",
            "n": "i32",
            "HAS_MASK": "constexpr",
            "LOG": "constexpr",
            "ONE_BLOCK": "constexpr",
            "BLOCK": "constexpr",
        },
        {"HAS_MASK": has_mask, "LOG": log, "ONE_BLOCK": one_block, "BLOCK": DEFAULT_BLOCK},
    )
    for has_mask in (False, True)
    for log in (False, True)
    for one_block in (False, True)
]
