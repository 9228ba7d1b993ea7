"""numpy reference for :mod:`refute.kernels.rotary` (rotary position embeddings).

Hugging Face's ``rotate_half`` convention: a head vector of ``d`` elements is
split into halves ``x[:d/2]`` and ``x[d/2:]``, and pair ``(i, i + d/2)`` turns by
the angle ``pos * inv_i``. With refute's exp, log, sin and cos
(:mod:`mathlib_reference`) and float32 ``theta``:

    inv_i = exp(-(div(float32(2i), float32(d)) * log(theta)))       i < d/2
    a     = float32(pos) * inv_i        (int64 -> float32 rounds to nearest even)
    out_i         = x_i * cos(a) - x_{i+d/2} * sin(a)
    out_{i + d/2} = x_{i+d/2} * cos(a) + x_i * sin(a)

Each ``*``, ``-``, ``+`` is one float32 operation, evaluated in that order.
Every NaN output is the canonical NaN 0x7FC00000 (x86 and the GPU give
different NaN bits for ``inf * 0`` or a NaN operand). Never calls Triton.
"""

from __future__ import annotations

import functools

import numpy as np

from refute.kernels.gemm_reference import canonical_nan
from refute.kernels.mathlib_reference import cos, exp, log, sin


def inv_freq(head_dim: int, theta: np.float32) -> np.ndarray:
    """float32 (head_dim / 2,) inverse frequencies ``exp(-(2i/d) * log(theta))``."""
    two_i = (2 * np.arange(head_dim // 2, dtype=np.int32)).astype(np.float32)
    with np.errstate(all="ignore"):
        ratio = two_i / np.float32(head_dim)
        log_theta = log(np.asarray([theta], dtype=np.float32))
        return exp(-(ratio * log_theta))


# A forward pass rotates q and k of every layer at the same positions: the
# angles' cos and sin are kept for the last few position vectors.
@functools.lru_cache(maxsize=8)
def _cos_sin(positions: bytes, head_dim: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin of the angles, float32 (rows, head_dim / 2) each, read-only."""
    inv = inv_freq(head_dim, np.float32(theta))
    with np.errstate(all="ignore"):
        angle = np.frombuffer(positions, dtype=np.int64).astype(np.float32)[:, None] * inv[None, :]
        c, s = cos(angle), sin(angle)
    c.flags.writeable = s.flags.writeable = False
    return c, s


def rotary(x: np.ndarray, positions: np.ndarray, head_dim: int, theta: np.float32) -> np.ndarray:
    """Rotate float32 ``x`` (rows, heads, head_dim) by int64 ``positions`` (rows,)."""
    half = head_dim // 2
    c, s = _cos_sin(np.ascontiguousarray(positions, dtype=np.int64).tobytes(), head_dim, float(theta))
    c, s = c[:, None, :], s[:, None, :]
    with np.errstate(all="ignore"):
        x1 = x[..., :half]
        x2 = x[..., half:]
        out = np.concatenate([x1 * c - x2 * s, x2 * c + x1 * s], axis=-1).astype(np.float32, copy=False)
    return np.where(np.isnan(out), canonical_nan(), out)
