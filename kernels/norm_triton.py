"""Triton kernels of the normalisation and pooling operators of :mod:`refute.kernels.norm`.

layer_norm, rms_norm and l2_normalize are fused: one program per row. When the
row fits one block (``SINGLE``) it is loaded once and kept in registers: its
statistics come from :func:`~refute.kernels.reduce_triton.exact_sum_block` and
the output program runs on the same block. Longer rows are walked in
``BLOCK``-sized chunks: two passes per exact sum (integer max of the
magnitudes, then the int64 fixed-point images, through the device functions
``sum_scan`` / ``sum_exponent`` / ``fixed_point_sum`` / ``exact_sum_finish``)
and one output pass. Integer max and sum are exact, so the block size, the
single/chunked choice and the grid cannot change a bit.

mean_pool runs one program per (batch, block of ``BLOCK_D`` features) over
``[BLOCK_T, BLOCK_D]`` tiles: the same device functions reduce a tile along
its token axis (axis 0), column by column. Masked tokens enter as +0, which
contributes nothing to an exact sum.

Every program is the reference's (:mod:`refute.kernels.norm_reference`) op for
op; reciprocal square roots are refute's ``rsqrt_f32``; divisions are
``div_rn``, square roots ``sqrt_rn``; every NaN stored is 0x7FC00000.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from refute.kernels import norm_reference as _ref
from refute.kernels.backend import CompileSpec, launch
from refute.kernels.mathlib_triton import rsqrt_f32
from refute.kernels.reduce_triton import (
    canonicalize_nan,
    exact_mean,
    exact_sum_block,
    exact_sum_finish,
    fixed_point_sum,
    sum_exponent,
    sum_scan,
)

# Rows up to MAX_BLOCK elements are held in one block; longer rows are chunked.
MAX_BLOCK = 4096
# mean_pool tiles: up to MAX_BLOCK_T tokens (more are chunked) x BLOCK_D features.
MAX_BLOCK_T = 128
DEFAULT_BLOCK_D = 64

_POOL_MIN_COUNT: tl.constexpr = tl.constexpr(_ref.POOL_MIN_COUNT)

# What a chunked exact sum adds up (constexpr MODE of _chunked_exact_sum).
PLAIN: tl.constexpr = tl.constexpr(0)  # x_i
SQUARE: tl.constexpr = tl.constexpr(1)  # x_i * x_i
CENTERED_SQUARE: tl.constexpr = tl.constexpr(2)  # (x_i - c) * (x_i - c)


@triton.jit
def _load_terms(base, offs, n, center, MODE: tl.constexpr):
    """The terms of elements ``offs`` of a row (see MODE); lanes past the row
    end give 0.0, which an exact sum ignores."""
    mask = offs < n
    v = tl.load(base + offs, mask=mask, other=0.0)
    if MODE == CENTERED_SQUARE:
        v = v - center
        v = v * v
    elif MODE == SQUARE:
        v = v * v
    return tl.where(mask, v, 0.0)


@triton.jit
def _chunked_exact_sum(base, n, center, MODE: tl.constexpr, BLOCK: tl.constexpr):
    """Exact fixed-point sum of the row's terms, BLOCK elements at a time
    (pass 1: scale and special-value flags; pass 2: int64 images)."""
    max_abs = tl.full([], 0, tl.int32)
    has_nan = tl.full([], 0, tl.int32)
    has_pinf = tl.full([], 0, tl.int32)
    has_ninf = tl.full([], 0, tl.int32)
    for start in range(0, n, BLOCK):
        m, f_nan, f_pinf, f_ninf = sum_scan(_load_terms(base, start + tl.arange(0, BLOCK), n, center, MODE))
        max_abs = tl.maximum(max_abs, m)
        has_nan = tl.maximum(has_nan, f_nan)
        has_pinf = tl.maximum(has_pinf, f_pinf)
        has_ninf = tl.maximum(has_ninf, f_ninf)
    e = sum_exponent(max_abs)
    s = tl.full([], 0, tl.int64)
    for start in range(0, n, BLOCK):
        s += fixed_point_sum(_load_terms(base, start + tl.arange(0, BLOCK), n, center, MODE), e)
    return exact_sum_finish(s, e, has_nan, has_pinf, has_ninf)


@triton.jit
def _row_rsqrt(stat, eps, BLOCK: tl.constexpr):
    """rsqrt(stat + eps) for a per-row scalar, as a BLOCK-wide vector."""
    return rsqrt_f32(tl.broadcast_to(stat + eps, [BLOCK]))


@triton.jit(do_not_specialize=["n"])
def _layer_norm_kernel(x_ptr, w_ptr, b_ptr, out_ptr, n, eps, BLOCK: tl.constexpr, SINGLE: tl.constexpr):
    """LayerNorm of row ``program_id`` of the contiguous (rows, n) x:
    mu = mean; d = x - mu; var = div(sum(d*d), n); y = ((d * rsqrt(var + eps)) * w) + b."""
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * n
    out_row = out_ptr + row * n
    if SINGLE:
        offs = tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_row + offs, mask=mask, other=0.0)
        mu = exact_mean(exact_sum_block(x), n)
        d = tl.where(mask, x - mu, 0.0)
        r = _row_rsqrt(exact_mean(exact_sum_block(d * d), n), eps, BLOCK)
        w = tl.load(w_ptr + offs, mask=mask, other=0.0)
        b = tl.load(b_ptr + offs, mask=mask, other=0.0)
        tl.store(out_row + offs, canonicalize_nan(((d * r) * w) + b), mask=mask)
    else:
        mu = exact_mean(_chunked_exact_sum(x_row, n, 0.0, PLAIN, BLOCK), n)
        r = _row_rsqrt(exact_mean(_chunked_exact_sum(x_row, n, mu, CENTERED_SQUARE, BLOCK), n), eps, BLOCK)
        for start in range(0, n, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            mask = offs < n
            d = tl.load(x_row + offs, mask=mask, other=0.0) - mu
            w = tl.load(w_ptr + offs, mask=mask, other=0.0)
            b = tl.load(b_ptr + offs, mask=mask, other=0.0)
            tl.store(out_row + offs, canonicalize_nan(((d * r) * w) + b), mask=mask)


@triton.jit(do_not_specialize=["n"])
def _rms_norm_kernel(x_ptr, w_ptr, out_ptr, n, eps, BLOCK: tl.constexpr, SINGLE: tl.constexpr):
    """RMSNorm of row ``program_id``: y = (x * rsqrt(div(sum(x*x), n) + eps)) * w."""
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * n
    out_row = out_ptr + row * n
    if SINGLE:
        offs = tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_row + offs, mask=mask, other=0.0)
        r = _row_rsqrt(exact_mean(exact_sum_block(x * x), n), eps, BLOCK)
        w = tl.load(w_ptr + offs, mask=mask, other=0.0)
        tl.store(out_row + offs, canonicalize_nan((x * r) * w), mask=mask)
    else:
        r = _row_rsqrt(exact_mean(_chunked_exact_sum(x_row, n, 0.0, SQUARE, BLOCK), n), eps, BLOCK)
        for start in range(0, n, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            mask = offs < n
            x = tl.load(x_row + offs, mask=mask, other=0.0)
            w = tl.load(w_ptr + offs, mask=mask, other=0.0)
            tl.store(out_row + offs, canonicalize_nan((x * r) * w), mask=mask)


@triton.jit
def _l2_denominator(sumsq, eps, BLOCK: tl.constexpr):
    """max(sqrt(sumsq), eps) as a BLOCK-wide vector (a NaN norm stays NaN)."""
    nrm = tl.math.sqrt_rn(tl.broadcast_to(sumsq, [BLOCK]))
    return tl.where(nrm < eps, eps, nrm)


@triton.jit(do_not_specialize=["n"])
def _l2_normalize_kernel(x_ptr, out_ptr, n, eps, BLOCK: tl.constexpr, SINGLE: tl.constexpr):
    """L2 normalisation of row ``program_id``: y = div(x, max(sqrt(sum(x*x)), eps))."""
    row = tl.program_id(0).to(tl.int64)
    x_row = x_ptr + row * n
    out_row = out_ptr + row * n
    if SINGLE:
        offs = tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_row + offs, mask=mask, other=0.0)
        den = _l2_denominator(exact_sum_block(x * x), eps, BLOCK)
        tl.store(out_row + offs, canonicalize_nan(tl.math.div_rn(x, den)), mask=mask)
    else:
        den = _l2_denominator(_chunked_exact_sum(x_row, n, 0.0, SQUARE, BLOCK), eps, BLOCK)
        for start in range(0, n, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            mask = offs < n
            x = tl.load(x_row + offs, mask=mask, other=0.0)
            tl.store(out_row + offs, canonicalize_nan(tl.math.div_rn(x, den)), mask=mask)


@triton.jit
def _pool_tile(x_base, m_base, tokens, cols, T, D):
    """(kept x as a [BLOCK_T, BLOCK_D] tile with masked tokens and padding as
    +0, kept-token flags as int32 [BLOCK_T])."""
    t_ok = tokens < T
    keep = (tl.load(m_base + tokens, mask=t_ok, other=0) != 0) & t_ok
    inside = keep[:, None] & (cols < D)[None, :]
    v = tl.load(x_base + tokens[:, None].to(tl.int64) * D + cols[None, :], mask=inside, other=0.0)
    return tl.where(inside, v, 0.0), keep.to(tl.int32)


@triton.jit(do_not_specialize=["T", "D"])
def _mean_pool_kernel(
    x_ptr, mask_ptr, out_ptr, T, D, BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, SINGLE: tl.constexpr
):
    """out[b, cols] = div(exact sum over kept tokens of x[b, :, cols],
    max(float32(kept count), 1e-9)) for b = program_id(0)."""
    batch = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    x_base = x_ptr + batch * T * D
    m_base = mask_ptr + batch * T
    if SINGLE:
        v, keep = _pool_tile(x_base, m_base, tl.arange(0, BLOCK_T), cols, T, D)
        s = exact_sum_block(v)
        cnt = tl.sum(keep, axis=0)
    else:
        max_abs = tl.zeros([BLOCK_D], tl.int32)
        has_nan = tl.zeros([BLOCK_D], tl.int32)
        has_pinf = tl.zeros([BLOCK_D], tl.int32)
        has_ninf = tl.zeros([BLOCK_D], tl.int32)
        cnt = tl.full([], 0, tl.int32)
        for start in range(0, T, BLOCK_T):
            v, keep = _pool_tile(x_base, m_base, start + tl.arange(0, BLOCK_T), cols, T, D)
            m, f_nan, f_pinf, f_ninf = sum_scan(v)
            max_abs = tl.maximum(max_abs, m)
            has_nan = tl.maximum(has_nan, f_nan)
            has_pinf = tl.maximum(has_pinf, f_pinf)
            has_ninf = tl.maximum(has_ninf, f_ninf)
            cnt += tl.sum(keep, axis=0)
        e = sum_exponent(max_abs)
        acc = tl.zeros([BLOCK_D], tl.int64)
        for start in range(0, T, BLOCK_T):
            v, keep = _pool_tile(x_base, m_base, start + tl.arange(0, BLOCK_T), cols, T, D)
            acc += fixed_point_sum(v, e)
        s = exact_sum_finish(acc, e, has_nan, has_pinf, has_ninf)
    # The count is an integer <= 2**24, exact in float32; max(cnt, 1e-9) by select.
    count = tl.broadcast_to(cnt.to(tl.float32), [BLOCK_D])
    den = tl.where(count < _POOL_MIN_COUNT, _POOL_MIN_COUNT, count)
    tl.store(out_ptr + batch * D + cols, canonicalize_nan(tl.math.div_rn(s, den)), mask=cols < D)


# ---------------------------------------------------------------------------
# Launch wrappers
# ---------------------------------------------------------------------------


def row_block(n: int) -> int:
    """Default block for rows of n: the whole row (next power of two) up to MAX_BLOCK."""
    return min(triton.next_power_of_2(max(n, 1)), MAX_BLOCK)


def layer_norm_launch(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float, block: int | None = None
) -> torch.Tensor:
    """LayerNorm of each row of the contiguous 2-D float32 ``x`` (``eps`` a float32 value)."""
    rows, n = x.shape
    out = torch.empty_like(x)
    block = block or row_block(n)
    if rows and n:
        launch(_layer_norm_kernel, (rows,), x, weight, bias, out, n, eps, BLOCK=block, SINGLE=n <= block)
    return out


def rms_norm_launch(x: torch.Tensor, weight: torch.Tensor, eps: float, block: int | None = None) -> torch.Tensor:
    """RMSNorm of each row of the contiguous 2-D float32 ``x`` (``eps`` a float32 value)."""
    rows, n = x.shape
    out = torch.empty_like(x)
    block = block or row_block(n)
    if rows and n:
        launch(_rms_norm_kernel, (rows,), x, weight, out, n, eps, BLOCK=block, SINGLE=n <= block)
    return out


def l2_normalize_launch(x: torch.Tensor, eps: float, block: int | None = None) -> torch.Tensor:
    """L2 normalisation of each row of the contiguous 2-D float32 ``x`` (``eps`` a float32 value)."""
    rows, n = x.shape
    out = torch.empty_like(x)
    block = block or row_block(n)
    if rows and n:
        launch(_l2_normalize_kernel, (rows,), x, out, n, eps, BLOCK=block, SINGLE=n <= block)
    return out


def mean_pool_launch(
    x: torch.Tensor, mask: torch.Tensor, block_t: int | None = None, block_d: int = DEFAULT_BLOCK_D
) -> torch.Tensor:
    """Masked mean over T of the contiguous float32 ``x`` (B, T, D) with the
    contiguous int32 0/1 ``mask`` (B, T) -> float32 (B, D)."""
    batch, tokens, dim = x.shape
    out = torch.empty((batch, dim), dtype=torch.float32, device=x.device)
    block_t = block_t or min(triton.next_power_of_2(max(tokens, 1)), MAX_BLOCK_T)
    if batch and dim:
        grid = (batch, triton.cdiv(dim, block_d))
        launch(
            _mean_pool_kernel, grid, x, mask, out, tokens, dim,
            BLOCK_T=block_t, BLOCK_D=block_d, SINGLE=tokens <= block_t,
        )
    return out


def _row_spec(kernel: object, pointers: tuple[str, ...], single: bool) -> CompileSpec:
    signature = {name: "*fp32" for name in pointers} | {
        "n": "i32", "eps": "fp32", "BLOCK": "constexpr", "SINGLE": "constexpr"
    }
    return CompileSpec(kernel, signature, {"BLOCK": 1024, "SINGLE": single})


COMPILE_SPECS: list[CompileSpec] = [
    spec
    for single in (True, False)
    for spec in (
        _row_spec(_layer_norm_kernel, ("x_ptr", "w_ptr", "b_ptr", "out_ptr"), single),
        _row_spec(_rms_norm_kernel, ("x_ptr", "w_ptr", "out_ptr"), single),
        _row_spec(_l2_normalize_kernel, ("x_ptr", "out_ptr"), single),
        CompileSpec(
            _mean_pool_kernel,
            {
                "x_ptr": "*fp32", "mask_ptr": "*i32", "out_ptr": "*fp32", "T": "i32", "D": "i32",
                "BLOCK_T": "constexpr", "BLOCK_D": "constexpr", "SINGLE": "constexpr",
            },
            {"BLOCK_T": MAX_BLOCK_T, "BLOCK_D": DEFAULT_BLOCK_D, "SINGLE": single},
        ),
    )
]
