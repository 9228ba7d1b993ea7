"""Rotary position embeddings (Hugging Face ``rotate_half`` convention), bit-exact.

``rotary(x, positions, head_dim=d, theta=theta)`` rotates every head of
``x`` (B, T, heads * d): for i < d/2, with refute's exp, log, sin and cos,

    inv_i = exp(-(div(float32(2i), float32(d)) * log(float32(theta))))
    a     = float32(pos) * inv_i
    out_i       = x_i * cos(a) - x_{i+d/2} * sin(a)
    out_{i+d/2} = x_{i+d/2} * cos(a) + x_i * sin(a)

Every NaN output is the canonical NaN 0x7FC00000. An output depends only on
its own head vector and position, so rotary is
batch-, padding- and prefill/decode-invariant by construction. The numpy
program is :mod:`rotary_reference`; docs/numerics.md has the details.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from refute.kernels import rotary_reference
from refute.kernels.backend import check_backend, triton_device_check


def _validate(x: object, positions: object, head_dim: object, theta: object) -> np.float32:
    """Check the arguments; return theta as float32."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"rotary: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype != torch.float32:
        raise TypeError(f"rotary: x must be float32, got {x.dtype}")
    if x.dim() != 3:
        raise ValueError(f"rotary: x must have shape (B, T, heads * head_dim), got {tuple(x.shape)}")
    if not isinstance(positions, torch.Tensor):
        raise TypeError(f"rotary: positions must be a torch.Tensor, got {type(positions).__name__}")
    if positions.dtype != torch.int64:
        raise TypeError(f"rotary: positions must be int64, got {positions.dtype}")
    if tuple(positions.shape) != tuple(x.shape[:2]):
        raise ValueError(
            f"rotary: positions must have shape (B, T) = {tuple(x.shape[:2])}, got {tuple(positions.shape)}"
        )
    if positions.device != x.device:
        raise ValueError(f"rotary: positions are on {positions.device} but x is on {x.device}")
    if not isinstance(head_dim, int) or isinstance(head_dim, bool):
        raise TypeError(f"rotary: head_dim must be an int, got {type(head_dim).__name__}")
    if head_dim <= 0 or head_dim % 2:
        raise ValueError(f"rotary: head_dim must be a positive even number, got {head_dim}")
    if x.shape[-1] % head_dim:
        raise ValueError(f"rotary: the last dimension {x.shape[-1]} is not a multiple of head_dim={head_dim}")
    if not isinstance(theta, (int, float)) or isinstance(theta, bool):
        raise TypeError(f"rotary: theta must be a number, got {type(theta).__name__}")
    theta32 = np.float32(theta)
    if not (math.isfinite(theta32) and theta32 > 0):
        raise ValueError(f"rotary: theta must be a positive finite float32, got {theta}")
    return theta32


def rotary(
    x: torch.Tensor, positions: torch.Tensor, *, head_dim: int, theta: float, backend: str = "reference"
) -> torch.Tensor:
    """Rotate every head of float32 ``x`` (B, T, heads * head_dim) by the int64
    ``positions`` (B, T) -> float32 of x's shape on x's device."""
    theta32 = _validate(x, positions, head_dim, theta)
    check_backend(backend)
    b, t, width = x.shape
    x3 = x.detach().contiguous().reshape(b * t, width // head_dim, head_dim)
    pos = positions.detach().contiguous().reshape(b * t)
    if backend == "triton":
        from refute.kernels.rotary_triton import rotary_launch

        triton_device_check(x, positions)
        return rotary_launch(x3, pos, float(theta32)).reshape(x.shape)
    out = rotary_reference.rotary(x3.cpu().numpy(), pos.cpu().numpy(), head_dim, theta32)
    return torch.from_numpy(np.ascontiguousarray(out)).reshape(x.shape).to(x.device)
