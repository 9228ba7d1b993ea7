"""Elementwise operators: add, mul, gelu_erf, gelu_tanh, silu.

Each is a fixed straight-line float32 program (docs/numerics.md), so
``backend="reference"`` (numpy on the CPU) and ``backend="triton"`` (a compiled
kernel on CUDA tensors, Triton's interpreter on CPU tensors) return the same
bits. erf, tanh and sigmoid are refute's own (:mod:`refute.kernels.mathlib`).
Every NaN returned is the canonical quiet NaN 0x7FC00000.

* ``add(x, y) = x + y``, ``mul(x, y) = x * y``: ``y`` has x's shape or
  broadcasts to it (as in torch); the result has x's shape.
* ``gelu_erf(x) = (x * 0.5) * (1 + erf(x * C))``, C = float32(1/sqrt(2)).
* ``gelu_tanh(x) = (x * 0.5) * (1 + tanh(K0 * (x + K1 * ((x * x) * x))))``,
  K0 = float32(sqrt(2/pi)), K1 = float32(0.044715).
* ``silu(x) = x * sigmoid(x)``.

Inputs are float32 tensors of any shape (0-d and empty included); outputs are
new contiguous float32 tensors on the input's device.
"""

from __future__ import annotations

import numpy as np
import torch

from refute.kernels import elementwise_reference
from refute.kernels.backend import check_backend, triton_device_check

__all__ = ["add", "mul", "gelu_erf", "gelu_tanh", "silu"]


def _check_float32(name: str, arg: str, x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: {arg} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype != torch.float32:
        raise TypeError(f"{name}: {arg} must be float32, got {x.dtype}")
    return x


def _numpy(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


def _unary(name: str, x: object, backend: str) -> torch.Tensor:
    x = _check_float32(name, "x", x)
    if check_backend(backend) == "triton":
        from refute.kernels.elementwise_triton import launch_unary

        triton_device_check(x)
        return launch_unary(name, x.detach())
    out = elementwise_reference.UNARY[name](_numpy(x))
    return torch.from_numpy(np.ascontiguousarray(out)).reshape(x.shape).to(x.device)


def _binary(name: str, x: object, y: object, backend: str) -> torch.Tensor:
    x = _check_float32(name, "x", x)
    y = _check_float32(name, "y", y)
    check_backend(backend)
    if x.device != y.device:
        raise ValueError(f"{name}: x and y are on different devices ({x.device} and {y.device})")
    try:
        # torch.broadcast_shapes costs more than a small add: skip it for equal shapes.
        shape = x.shape if y.shape == x.shape else torch.broadcast_shapes(x.shape, y.shape)
    except RuntimeError:
        shape = None
    if shape != x.shape:
        raise ValueError(f"{name}: y of shape {tuple(y.shape)} does not broadcast to x's shape {tuple(x.shape)}")
    # Broadcasting is a layout change (no arithmetic): materialise y at x's shape.
    y_full = y.detach().expand(x.shape)
    if backend == "triton":
        from refute.kernels.elementwise_triton import launch_binary

        triton_device_check(x, y)
        return launch_binary(name, x.detach(), y_full)
    out = elementwise_reference.BINARY[name](_numpy(x), _numpy(y_full))
    return torch.from_numpy(np.ascontiguousarray(out)).reshape(x.shape).to(x.device)


def add(x: torch.Tensor, y: torch.Tensor, backend: str = "reference") -> torch.Tensor:
    """``x + y`` in float32; ``y`` broadcasts to ``x``'s shape."""
    return _binary("add", x, y, backend)


def mul(x: torch.Tensor, y: torch.Tensor, backend: str = "reference") -> torch.Tensor:
    """``x * y`` in float32; ``y`` broadcasts to ``x``'s shape."""
    return _binary("mul", x, y, backend)


def gelu_erf(x: torch.Tensor, backend: str = "reference") -> torch.Tensor:
    """Exact-form GELU ``(x * 0.5) * (1 + erf(x * C))``, C = float32(1/sqrt(2))
    (BERT's "gelu"). gelu_erf(+inf) = +inf, gelu_erf(-inf) = NaN (-inf * 0)."""
    return _unary("gelu_erf", x, backend)


def gelu_tanh(x: torch.Tensor, backend: str = "reference") -> torch.Tensor:
    """tanh-form GELU ``(x * 0.5) * (1 + tanh(K0 * (x + K1 * x**3)))`` (torch's
    ``approximate="tanh"``, evaluated as ``(x * x) * x``)."""
    return _unary("gelu_tanh", x, backend)


def silu(x: torch.Tensor, backend: str = "reference") -> torch.Tensor:
    """SiLU ``x * sigmoid(x)``. silu(+inf) = +inf, silu(-inf) = NaN (-inf * 0)."""
    return _unary("silu", x, backend)
