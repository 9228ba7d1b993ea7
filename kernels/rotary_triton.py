"""Triton kernel for :mod:`refute.kernels.rotary` (semantics: :mod:`rotary_reference`).

One program per token row and block of ``BLOCK_H`` heads: it computes the
``d/2`` inverse frequencies, angles, sines and cosines once (refute's
``exp_f32``, ``log_f32``, ``sin_f32``, ``cos_f32``) and rotates every head of
the block with them. The block of heads never changes a bit: each output is
the same four float32 operations on the same operands.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from refute.kernels.backend import CompileSpec, launch
from refute.kernels.bits_triton import negate
from refute.kernels.mathlib_triton import cos_f32, exp_f32, log_f32, sin_f32
from refute.kernels.reduce_triton import canonicalize_nan

DEFAULT_BLOCK_H = 4


@triton.jit
def rotary_cos_sin(pos, theta, HALF: tl.constexpr, HALF_P2: tl.constexpr):
    """(cos, sin) of the angles ``float32(pos) * inv_i`` for i < HALF on a
    (HALF_P2,) block (lanes past HALF hold values for i >= HALF, unused);
    ``pos`` int64 scalar, ``theta`` float32 scalar, head dim 2 * HALF."""
    i = tl.arange(0, HALF_P2)
    ratio = tl.math.div_rn((2 * i).to(tl.float32), tl.full([HALF_P2], 2 * HALF, tl.int32).to(tl.float32))
    inv = exp_f32(negate(ratio * log_f32(theta)))
    angle = pos.to(tl.float32) * inv
    return cos_f32(angle), sin_f32(angle)


@triton.jit
def _rotary_kernel(
    x_ptr,
    pos_ptr,
    out_ptr,
    theta_ptr,
    NUM_HEADS: tl.constexpr,
    HALF: tl.constexpr,
    HALF_P2: tl.constexpr,
    BLOCK_H: tl.constexpr,
):
    """out[row, h, :] = rotary(x[row, h, :], pos[row]) for a block of heads h;
    x and out are contiguous (rows, NUM_HEADS, 2 * HALF); theta is the one
    float32 at ``theta_ptr`` (a pointer, so the interpreter and the GPU both
    see a float32, never a Python double).
    Grid: (rows, cdiv(NUM_HEADS, BLOCK_H))."""
    row = tl.program_id(0).to(tl.int64)
    heads = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)
    c, s = rotary_cos_sin(tl.load(pos_ptr + row), tl.load(theta_ptr), HALF, HALF_P2)
    i = tl.arange(0, HALF_P2)
    mask = (heads < NUM_HEADS)[:, None] & (i < HALF)[None, :]
    lo = row * (NUM_HEADS * 2 * HALF) + heads.to(tl.int64)[:, None] * (2 * HALF) + i[None, :]
    x1 = tl.load(x_ptr + lo, mask=mask, other=0.0)
    x2 = tl.load(x_ptr + lo + HALF, mask=mask, other=0.0)
    c = c[None, :]
    s = s[None, :]
    tl.store(out_ptr + lo, canonicalize_nan(x1 * c - x2 * s), mask=mask)
    tl.store(out_ptr + lo + HALF, canonicalize_nan(x2 * c + x1 * s), mask=mask)


def rotary_launch(
    x: torch.Tensor, positions: torch.Tensor, theta: float, block_h: int = DEFAULT_BLOCK_H
) -> torch.Tensor:
    """Rotate contiguous float32 ``x`` (rows, heads, head_dim) by contiguous int64
    ``positions`` (rows,); ``theta`` is rounded to float32."""
    rows, heads, head_dim = x.shape
    out = torch.empty_like(x)
    if x.numel() == 0:
        return out
    half = head_dim // 2
    grid = (rows, triton.cdiv(heads, block_h))
    launch(
        _rotary_kernel,
        grid,
        x,
        positions,
        out,
        torch.tensor([theta], dtype=torch.float32, device=x.device),
        NUM_HEADS=heads,
        HALF=half,
        HALF_P2=triton.next_power_of_2(half),
        BLOCK_H=block_h,
    )
    return out


COMPILE_SPECS: list[CompileSpec] = [
    CompileSpec(
        _rotary_kernel,
        {
            "x_ptr": "*fp32",
            "pos_ptr": "*i64",
            "out_ptr": "*fp32",
            "theta_ptr": "*fp32",
            "NUM_HEADS": "constexpr",
            "HALF": "constexpr",
            "HALF_P2": "constexpr",
            "BLOCK_H": "constexpr",
        },
        {"NUM_HEADS": heads, "HALF": half, "HALF_P2": triton.next_power_of_2(half), "BLOCK_H": DEFAULT_BLOCK_H},
    )
    # SmolLM2-135M (9 heads of 64) and a head dim that is not a power of two.
    for heads, half in ((9, 32), (3, 40))
]
