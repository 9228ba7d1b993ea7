"""Masked softmax and log-softmax over the last dimension, bit-exact on every backend.

For a row x with kept entries K (``mask`` True, or every entry without a mask):
``m`` = exact max of the kept entries, ``e_i = exp(x_i - m)`` (refute's exp) for
i in K and +0 otherwise, ``s = row_sum(e)`` (exact fixed-point sum), then

* ``softmax``: ``p_i = div_rn(e_i, s)`` for i in K, +0 for masked entries;
* ``log_softmax``: ``(x_i - m) - log(s)`` for i in K, -inf for masked entries.

Masked entries behave as absent: their values (NaN included) never matter. A
row with no kept entry gives all +0 (softmax) / all -inf (log_softmax). A kept
NaN or +inf, or kept entries that are all -inf, make every kept output NaN (the
canonical 0x7FC00000), as in torch. The definition and error bounds are in
docs/numerics.md; the numpy program is :mod:`softmax_reference`.
"""

from __future__ import annotations

import numpy as np
import torch

from refute.kernels import softmax_reference
from refute.kernels.backend import check_backend, triton_device_check
from refute.kernels.reduce_reference import MAX_SUM_LEN


def _validate(name: str, x: object, mask: object) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype != torch.float32:
        raise TypeError(f"{name}: x must be float32, got {x.dtype}")
    if x.dim() < 1:
        raise ValueError(f"{name}: x needs at least one dimension to normalise over, got a 0-d tensor")
    if x.shape[-1] > MAX_SUM_LEN:
        raise ValueError(f"{name}: rows of {x.shape[-1]} elements exceed the exact-sum limit of {MAX_SUM_LEN}")
    if mask is None:
        return
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name}: mask must be a torch.Tensor or None, got {type(mask).__name__}")
    if mask.dtype != torch.bool:
        raise TypeError(f"{name}: mask must be a bool tensor (True = keep), got {mask.dtype}")
    try:
        shape = torch.broadcast_shapes(mask.shape, x.shape)
    except RuntimeError:
        shape = None
    # A mask that only broadcasts together with x to a larger shape is rejected too.
    if shape != x.shape:
        raise ValueError(f"{name}: mask of shape {tuple(mask.shape)} does not broadcast to x's {tuple(x.shape)}")
    if mask.device != x.device:
        raise ValueError(f"{name}: mask is on {mask.device} but x is on {x.device}")


def _apply(name: str, x: torch.Tensor, mask: torch.Tensor | None, log: bool, backend: str) -> torch.Tensor:
    _validate(name, x, mask)
    check_backend(backend)
    n = x.shape[-1]
    rows = int(np.prod(x.shape[:-1], dtype=np.int64))
    if rows * n == 0:
        return torch.empty(x.shape, dtype=torch.float32, device=x.device)
    x2 = x.detach().contiguous().reshape(rows, n)
    keep = None if mask is None else mask.detach().expand(x.shape).reshape(rows, n)
    if backend == "triton":
        from refute.kernels.softmax_triton import softmax_launch

        triton_device_check(x)
        keep8 = None if keep is None else keep.to(torch.int8).contiguous()
        return softmax_launch(x2, keep8, log).reshape(x.shape)
    fn = softmax_reference.log_softmax if log else softmax_reference.softmax
    out = fn(x2.cpu().numpy(), None if keep is None else keep.cpu().numpy())
    return torch.from_numpy(np.ascontiguousarray(out)).reshape(x.shape).to(x.device)


def softmax(x: torch.Tensor, mask: torch.Tensor | None = None, backend: str = "reference") -> torch.Tensor:
    """Softmax of float32 ``x`` over its last dimension; ``mask`` (bool, True =
    keep) broadcasts to x. Returns float32 of x's shape on x's device."""
    return _apply("softmax", x, mask, False, backend)


def log_softmax(x: torch.Tensor, mask: torch.Tensor | None = None, backend: str = "reference") -> torch.Tensor:
    """Log-softmax of float32 ``x`` over its last dimension; ``mask`` (bool,
    True = keep) broadcasts to x; masked entries give -inf."""
    return _apply("log_softmax", x, mask, True, backend)
