"""Exact row reductions over the last dimension of a float32 tensor.

Every function here is defined bit for bit (docs/numerics.md) and returns
the same bits on every backend, whatever the order of the row, the tile size,
or the other rows of the batch:

* :func:`row_sum` - fixed-point sum: each finite element becomes the int64
  image ``rne(x_i * 2**(39 - e))`` with ``e`` the exponent of the row's largest
  finite magnitude; the images add exactly in int64 and the sum is rounded once
  to float32 and scaled back by ``2**(e - 39)``. NaN, or both infinities, give
  the canonical NaN 0x7FC00000; otherwise an infinity wins. Empty rows give +0.
* :func:`row_sumsq` - :func:`row_sum` of the float32 squares.
* :func:`row_mean` - ``div_rn(row_sum(x), n)``.
* :func:`row_var` - population variance ``div_rn(row_sum(d * d), n)`` with
  ``d = x - row_mean(x)``.
* :func:`row_max` / :func:`row_argmax` - exact max under IEEE order with
  -0 < +0; NaN is the largest (canonical NaN / lowest NaN index).

Sums need rows of at most 2**22 elements (the int64 sum is exact up to there).
Every NaN these functions return is the canonical NaN 0x7FC00000.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from refute.kernels import reduce_reference
from refute.kernels.backend import check_backend, triton_device_check

MAX_SUM_LEN = reduce_reference.MAX_SUM_LEN


def _validate(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype != torch.float32:
        raise TypeError(f"{name}: expected a float32 tensor, got {x.dtype}")
    if x.dim() < 1:
        raise ValueError(f"{name}: expected at least one dimension to reduce over, got a 0-d tensor")


def _as_rows(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a contiguous 2-D (rows, n) tensor."""
    rows = int(np.prod(x.shape[:-1], dtype=np.int64))
    return x.detach().contiguous().reshape(rows, x.shape[-1])


def _reference(x: torch.Tensor, fn: Callable[[np.ndarray], np.ndarray]) -> torch.Tensor:
    """Apply a numpy row function to ``x`` on the CPU; result on ``x``'s device."""
    out = fn(_as_rows(x).cpu().numpy())
    return torch.from_numpy(np.ascontiguousarray(out)).reshape(x.shape[:-1]).to(x.device)


def _stat(x: torch.Tensor, stat: str, backend: str) -> torch.Tensor:
    name = f"row_{stat}"
    _validate(x, name)
    check_backend(backend)
    if x.shape[-1] > MAX_SUM_LEN:
        raise ValueError(f"{name}: rows of {x.shape[-1]} elements exceed the exact-sum limit of {MAX_SUM_LEN}")
    if backend == "triton":
        from refute.kernels.reduce_triton import row_stats_launch

        triton_device_check(x)
        return row_stats_launch(_as_rows(x), stat).reshape(x.shape[:-1])
    return _reference(x, getattr(reduce_reference, name))


def row_sum(x: torch.Tensor, backend: str = "reference") -> torch.Tensor:
    """Exact fixed-point sum over the last dimension -> float32 of shape x.shape[:-1]."""
    return _stat(x, "sum", backend)


def row_sumsq(x: torch.Tensor, backend: str = "reference") -> torch.Tensor:
    """:func:`row_sum` of the elementwise float32 squares ``x * x``."""
    return _stat(x, "sumsq", backend)


def row_mean(x: torch.Tensor, backend: str = "reference") -> torch.Tensor:
    """``div_rn(row_sum(x), n)``; empty rows give the canonical NaN."""
    return _stat(x, "mean", backend)


def row_var(x: torch.Tensor, backend: str = "reference") -> torch.Tensor:
    """Population variance ``div_rn(row_sum(d * d), n)``, ``d = x - row_mean(x)``."""
    return _stat(x, "var", backend)


def _max(x: torch.Tensor, name: str, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    _validate(x, name)
    check_backend(backend)
    if x.shape[-1] == 0:
        raise ValueError(f"{name}: cannot reduce empty rows (last dimension is 0)")
    if backend == "triton":
        from refute.kernels.reduce_triton import row_max_launch

        triton_device_check(x)
        m, i = row_max_launch(_as_rows(x))
        return m.reshape(x.shape[:-1]), i.reshape(x.shape[:-1])
    return _reference(x, reduce_reference.row_max), _reference(x, reduce_reference.row_argmax)


def row_max(x: torch.Tensor, backend: str = "reference") -> torch.Tensor:
    """Exact max over the last dimension (-0 < +0; any NaN -> canonical NaN)."""
    return _max(x, "row_max", backend)[0]


def row_argmax(x: torch.Tensor, backend: str = "reference") -> torch.Tensor:
    """int64 lowest index of the max (the lowest NaN index if the row has NaN)."""
    return _max(x, "row_argmax", backend)[1]
