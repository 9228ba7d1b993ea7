"""Normalisation and pooling: layer_norm, rms_norm, l2_normalize, mean_pool.

Each is defined bit for bit (docs/numerics.md) from exact fixed-point
row sums (:mod:`refute.kernels.reduce`), refute's rsqrt
(:mod:`refute.kernels.mathlib`) and single IEEE binary32 operations, so
``backend="reference"`` (numpy) and ``backend="triton"`` (fused kernels; the
interpreter on CPU tensors) return the same bits, whatever the other rows of
the batch, the padding or the block size. With ``n`` the last dimension:

* ``layer_norm``: mu = row_mean(x); d = x - mu; var = div(row_sum(d*d), n);
  y = ((d * rsqrt(var + eps)) * w) + b.
* ``rms_norm``: y = (x * rsqrt(div(row_sum(x*x), n) + eps)) * w  (Llama's).
* ``l2_normalize``: y = div(x, max(sqrt(row_sum(x*x)), eps)).
* ``mean_pool``: y[b, d] = div(exact sum of x[b, t, d] over kept t,
  max(float32(kept count), 1e-9)); masked tokens contribute nothing.

``eps`` is converted to float32 (``np.float32(eps)``). Rows may hold at most
2**22 elements (the exact sums' limit). Every NaN returned is 0x7FC00000.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from refute.kernels import norm_reference
from refute.kernels.backend import check_backend, triton_device_check
from refute.kernels.reduce_reference import MAX_SUM_LEN

__all__ = ["layer_norm", "rms_norm", "l2_normalize", "mean_pool"]

DEFAULT_L2_EPS = 1e-12


def _check_float32(name: str, arg: str, x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: {arg} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype != torch.float32:
        raise TypeError(f"{name}: {arg} must be float32, got {x.dtype}")
    return x


def _eps32(name: str, eps: object) -> float:
    """``eps`` as a float32 value (held in a Python float, exactly)."""
    if isinstance(eps, (bool, np.bool_)) or not isinstance(eps, numbers.Real):
        raise TypeError(f"{name}: eps must be a real number, got {type(eps).__name__}")
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"{name}: eps must be finite and >= 0, got {eps}")
    return float(np.float32(eps))


def _check_rows(name: str, x: object, params: dict[str, object]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Validate x (..., n) and its per-feature parameters (n,)."""
    x = _check_float32(name, "x", x)
    if x.dim() < 1:
        raise ValueError(f"{name}: x must have at least one dimension (..., n), got a 0-d tensor")
    n = x.shape[-1]
    if n > MAX_SUM_LEN:
        raise ValueError(f"{name}: rows of {n} elements exceed the exact-sum limit of {MAX_SUM_LEN}")
    checked = []
    for arg, p in params.items():
        p = _check_float32(name, arg, p)
        if tuple(p.shape) != (n,):
            raise ValueError(f"{name}: {arg} must have shape ({n},) to match x's last dimension, got {tuple(p.shape)}")
        if p.device != x.device:
            raise ValueError(f"{name}: {arg} is on {p.device} but x is on {x.device}")
        checked.append(p.detach().contiguous())
    return x, checked


def _as_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a contiguous 2-D (rows, n) tensor (a layout change only)."""
    return x.detach().contiguous().reshape(math.prod(x.shape[:-1]), x.shape[-1])


def _from_numpy(y: np.ndarray, shape: torch.Size, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(y)).reshape(shape).to(device)


def layer_norm(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, *, eps: float, backend: str = "reference"
) -> torch.Tensor:
    """LayerNorm over the last dimension of float32 ``x`` (..., n) with float32
    ``weight`` and ``bias`` (n,); same shape as x."""
    check_backend(backend)
    x, (weight, bias) = _check_rows("layer_norm", x, {"weight": weight, "bias": bias})
    eps32 = _eps32("layer_norm", eps)
    if backend == "triton":
        from refute.kernels.norm_triton import layer_norm_launch

        triton_device_check(x, weight, bias)
        return layer_norm_launch(_as_rows(x), weight, bias, eps32).reshape(x.shape)
    y = norm_reference.layer_norm(
        _as_rows(x).cpu().numpy(), weight.cpu().numpy(), bias.cpu().numpy(), np.float32(eps32)
    )
    return _from_numpy(y, x.shape, x.device)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, *, eps: float, backend: str = "reference") -> torch.Tensor:
    """RMSNorm over the last dimension of float32 ``x`` (..., n) with float32
    ``weight`` (n,), as Llama writes it; same shape as x."""
    check_backend(backend)
    x, (weight,) = _check_rows("rms_norm", x, {"weight": weight})
    eps32 = _eps32("rms_norm", eps)
    if backend == "triton":
        from refute.kernels.norm_triton import rms_norm_launch

        triton_device_check(x, weight)
        return rms_norm_launch(_as_rows(x), weight, eps32).reshape(x.shape)
    y = norm_reference.rms_norm(_as_rows(x).cpu().numpy(), weight.cpu().numpy(), np.float32(eps32))
    return _from_numpy(y, x.shape, x.device)


def l2_normalize(x: torch.Tensor, *, eps: float = DEFAULT_L2_EPS, backend: str = "reference") -> torch.Tensor:
    """``x / max(||x||_2, eps)`` over the last dimension of float32 ``x``
    (F.normalize's definition); same shape as x."""
    check_backend(backend)
    x, _ = _check_rows("l2_normalize", x, {})
    eps32 = _eps32("l2_normalize", eps)
    if backend == "triton":
        from refute.kernels.norm_triton import l2_normalize_launch

        triton_device_check(x)
        return l2_normalize_launch(_as_rows(x), eps32).reshape(x.shape)
    y = norm_reference.l2_normalize(_as_rows(x).cpu().numpy(), np.float32(eps32))
    return _from_numpy(y, x.shape, x.device)


def mean_pool(x: torch.Tensor, mask: torch.Tensor, backend: str = "reference") -> torch.Tensor:
    """Masked mean over the token axis: float32 ``x`` (B, T, D) and ``mask``
    (B, T) of bool or integer 0/1 -> float32 (B, D). A token with mask 0
    contributes nothing (its values, NaN and inf included, never enter the
    sum); a sequence with no kept token gives +0 (an empty exact sum is +0,
    divided by 1e-9)."""
    check_backend(backend)
    x = _check_float32("mean_pool", "x", x)
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mean_pool: mask must be a torch.Tensor, got {type(mask).__name__}")
    if x.dim() != 3:
        raise ValueError(f"mean_pool: x must have shape (B, T, D), got {tuple(x.shape)}")
    if tuple(mask.shape) != tuple(x.shape[:2]):
        raise ValueError(f"mean_pool: mask must have shape (B, T) = {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
    if mask.dtype.is_floating_point or mask.dtype.is_complex:
        raise TypeError(f"mean_pool: mask must be bool or integer, got {mask.dtype}")
    if mask.device != x.device:
        raise ValueError(f"mean_pool: mask is on {mask.device} but x is on {x.device}")
    if mask.dtype != torch.bool and mask.numel() and not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mean_pool: an integer mask must hold only 0 and 1")
    if x.shape[1] > MAX_SUM_LEN:
        raise ValueError(f"mean_pool: {x.shape[1]} tokens exceed the exact-sum limit of {MAX_SUM_LEN}")
    keep = mask.detach().to(torch.int32).contiguous()
    if backend == "triton":
        from refute.kernels.norm_triton import mean_pool_launch

        triton_device_check(x, keep)
        return mean_pool_launch(x.detach().contiguous(), keep)
    y = norm_reference.mean_pool(x.detach().cpu().numpy(), keep.cpu().numpy())
    return _from_numpy(y, torch.Size((x.shape[0], x.shape[2])), x.device)
