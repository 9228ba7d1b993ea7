"""Triton kernels for bf16 <-> fp32 conversion, done on integer bit views.

The kernels read and write raw bits (int32 for fp32, int16 for bf16) and call
the shared device functions of :mod:`refute.kernels.bits_triton`, so no float
load, store or cast can touch a NaN payload or round. ``.to(tl.bfloat16)`` is
never used: Triton's interpreter truncates where the GPU rounds to nearest
even. Launch wrappers sit beside their kernels.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from refute.kernels.backend import CompileSpec, launch
from refute.kernels.bits_triton import bf16_bits_to_fp32, bits_f32, f32_bits, fp32_to_bf16_bits

DEFAULT_BLOCK = 1024

# bf16 bits leave fp32_to_bf16_bits as int32 in [0, 65535]; the int16 store needs
# the two's-complement value in [-32768, 32767], so the top half is shifted down
# by 2**16 first. The cast is then in range (no reliance on wrap-around).
INT16_SIGN: tl.constexpr = tl.constexpr(32768)
TWO_POW_16: tl.constexpr = tl.constexpr(65536)
LOW_16: tl.constexpr = tl.constexpr(0xFFFF)


@triton.jit
def _fp32_to_bf16_kernel(x_bits_ptr, out_bits_ptr, numel, BLOCK: tl.constexpr):
    """out[i] = bf16 bits of fp32 bits x[i], round to nearest even."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    b = tl.load(x_bits_ptr + offs, mask=mask, other=0)
    h = fp32_to_bf16_bits(bits_f32(b))
    h = tl.where(h >= INT16_SIGN, h - TWO_POW_16, h)
    tl.store(out_bits_ptr + offs, h.to(tl.int16), mask=mask)


def fp32_to_bf16_bits_launch(x_bits: torch.Tensor, block: int = DEFAULT_BLOCK) -> torch.Tensor:
    """bf16 bits (int16) of the fp32 bits in contiguous int32 tensor ``x_bits``."""
    out = torch.empty(x_bits.shape, dtype=torch.int16, device=x_bits.device)
    numel = x_bits.numel()
    if numel:
        launch(_fp32_to_bf16_kernel, (triton.cdiv(numel, block),), x_bits, out, numel, BLOCK=block)
    return out


@triton.jit
def _bf16_to_fp32_kernel(h_bits_ptr, out_bits_ptr, numel, BLOCK: tl.constexpr):
    """out[i] = fp32 bits of bf16 bits h[i]: exact widening."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    h = tl.load(h_bits_ptr + offs, mask=mask, other=0).to(tl.int32) & LOW_16
    tl.store(out_bits_ptr + offs, f32_bits(bf16_bits_to_fp32(h)), mask=mask)


def bf16_to_fp32_bits_launch(h_bits: torch.Tensor, block: int = DEFAULT_BLOCK) -> torch.Tensor:
    """fp32 bits (int32) of the bf16 bits in contiguous int16 tensor ``h_bits``."""
    out = torch.empty(h_bits.shape, dtype=torch.int32, device=h_bits.device)
    numel = h_bits.numel()
    if numel:
        launch(_bf16_to_fp32_kernel, (triton.cdiv(numel, block),), h_bits, out, numel, BLOCK=block)
    return out


COMPILE_SPECS: list[CompileSpec] = [
    CompileSpec(
        _fp32_to_bf16_kernel,
        {"x_bits_ptr": "*i32", "out_bits_ptr": "*i16", "numel": "i32", "BLOCK": "constexpr"},
        {"BLOCK": DEFAULT_BLOCK},
    ),
    CompileSpec(
        _bf16_to_fp32_kernel,
        {"h_bits_ptr": "*i16", "out_bits_ptr": "*i32", "numel": "i32", "BLOCK": "constexpr"},
        {"BLOCK": DEFAULT_BLOCK},
    ),
]
