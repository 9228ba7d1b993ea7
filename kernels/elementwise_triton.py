"""Triton kernels of the elementwise operators of :mod:`refute.kernels.elementwise`.

Each operator is a plain ``@triton.jit`` device function on a float32 block
(``add_f32``, ``mul_f32``, ``gelu_erf_f32``, ``gelu_tanh_f32``, ``silu_f32``)
so fused kernels can call it inline; it is the reference's program op for op
(:mod:`refute.kernels.elementwise_reference`, whose constants it imports),
using refute's math library for erf, tanh and sigmoid. ``_unary_kernel`` and
``_binary_kernel`` apply them to flat tensors; launch through
:func:`launch_unary` / :func:`launch_binary`.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from refute.kernels import elementwise_reference as _ref
from refute.kernels.backend import CompileSpec, launch
from refute.kernels.mathlib_triton import erf_f32, sigmoid_f32, tanh_f32
from refute.kernels.reduce_triton import canonicalize_nan

DEFAULT_BLOCK = 1024

_GELU_C: tl.constexpr = tl.constexpr(_ref.GELU_C)
_GELU_K0: tl.constexpr = tl.constexpr(_ref.GELU_K0)
_GELU_K1: tl.constexpr = tl.constexpr(_ref.GELU_K1)

# Operator numbers of the launchable kernels (constexpr OP).
UNARY_OPS: dict[str, int] = {"gelu_erf": 0, "gelu_tanh": 1, "silu": 2}
BINARY_OPS: dict[str, int] = {"add": 0, "mul": 1}


@triton.jit
def add_f32(x, y):
    """x + y, NaN canonicalised; bit-identical to elementwise_reference.add."""
    return canonicalize_nan(x + y)


@triton.jit
def mul_f32(x, y):
    """x * y, NaN canonicalised; bit-identical to elementwise_reference.mul."""
    return canonicalize_nan(x * y)


@triton.jit
def gelu_erf_f32(x):
    """(x * 0.5) * (1 + erf(x * C)); bit-identical to elementwise_reference.gelu_erf."""
    return canonicalize_nan((x * 0.5) * (1.0 + erf_f32(x * _GELU_C)))


@triton.jit
def gelu_tanh_f32(x):
    """(x * 0.5) * (1 + tanh(K0 * (x + K1 * x**3))); bit-identical to
    elementwise_reference.gelu_tanh."""
    inner = _GELU_K0 * (x + _GELU_K1 * ((x * x) * x))
    return canonicalize_nan((x * 0.5) * (1.0 + tanh_f32(inner)))


@triton.jit
def silu_f32(x):
    """x * sigmoid(x); bit-identical to elementwise_reference.silu."""
    return canonicalize_nan(x * sigmoid_f32(x))


@triton.jit(do_not_specialize=["n"])
def _unary_kernel(x_ptr, out_ptr, n, OP: tl.constexpr, BLOCK: tl.constexpr):
    """out[i] = op(x[i]) for the operator numbered OP in UNARY_OPS."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    if OP == 0:
        y = gelu_erf_f32(x)
    elif OP == 1:
        y = gelu_tanh_f32(x)
    else:
        y = silu_f32(x)
    tl.store(out_ptr + offs, y, mask=mask)


@triton.jit(do_not_specialize=["n"])
def _binary_kernel(x_ptr, y_ptr, out_ptr, n, OP: tl.constexpr, BLOCK: tl.constexpr):
    """out[i] = op(x[i], y[i]) for the operator numbered OP in BINARY_OPS."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    y = tl.load(y_ptr + offs, mask=mask, other=0.0)
    if OP == 0:
        r = add_f32(x, y)
    else:
        r = mul_f32(x, y)
    tl.store(out_ptr + offs, r, mask=mask)


def launch_unary(name: str, x: torch.Tensor, block: int = DEFAULT_BLOCK) -> torch.Tensor:
    """Apply unary operator ``name`` to float32 ``x``; a new contiguous tensor
    of x's shape on x's device."""
    flat = x.contiguous().view(-1)
    out = torch.empty_like(flat)
    n = flat.numel()
    if n:
        launch(_unary_kernel, (triton.cdiv(n, block),), flat, out, n, OP=UNARY_OPS[name], BLOCK=block)
    return out.view(x.shape)


def launch_binary(name: str, x: torch.Tensor, y: torch.Tensor, block: int = DEFAULT_BLOCK) -> torch.Tensor:
    """Apply binary operator ``name`` to float32 ``x`` and ``y`` of the same
    shape; a new contiguous tensor of that shape on x's device."""
    fx = x.contiguous().view(-1)
    fy = y.contiguous().view(-1)
    out = torch.empty_like(fx)
    n = fx.numel()
    if n:
        launch(_binary_kernel, (triton.cdiv(n, block),), fx, fy, out, n, OP=BINARY_OPS[name], BLOCK=block)
    return out.view(x.shape)


COMPILE_SPECS: list[CompileSpec] = [
    CompileSpec(
        _unary_kernel,
        {"x_ptr": "*fp32", "out_ptr": "*fp32", "n": "i32", "OP": "constexpr", "BLOCK": "constexpr"},
        {"OP": op, "BLOCK": DEFAULT_BLOCK},
    )
    for op in UNARY_OPS.values()
] + [
    CompileSpec(
        _binary_kernel,
        {"x_ptr": "*fp32", "y_ptr": "*fp32", "out_ptr": "*fp32", "n": "i32", "OP": "constexpr", "BLOCK": "constexpr"},
        {"OP": op, "BLOCK": DEFAULT_BLOCK},
    )
    for op in BINARY_OPS.values()
]
