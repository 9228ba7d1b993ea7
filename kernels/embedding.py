"""Embedding lookup: ``embedding(ids, table)[..., :] = table[ids[...], :]``.

No arithmetic: every output row is a bit copy of a table row (NaN payloads and
signed zeros included), on every backend. The reference gathers the table's
int32 bit view with numpy; the Triton kernel (:mod:`refute.kernels.embedding_triton`)
copies int32 bits too. An id outside ``[0, V)`` raises ``IndexError`` on both
backends before anything is read (negative ids are not wrapped).
"""

from __future__ import annotations

import numpy as np
import torch

from refute.kernels.backend import check_backend, triton_device_check

__all__ = ["embedding", "embedding_reference"]


def embedding_reference(ids: np.ndarray, table: np.ndarray) -> np.ndarray:
    """numpy reference: ``table[ids]`` gathered on the int32 bit view (a bit
    copy); ``ids`` int64 of any shape, all in ``[0, V)``; float32 ``table`` (V, D)."""
    bits = np.ascontiguousarray(table, dtype=np.float32).view(np.int32)
    return np.take(bits, np.asarray(ids, dtype=np.int64), axis=0).view(np.float32)


def _validate(ids: object, table: object) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(ids, torch.Tensor):
        raise TypeError(f"embedding: ids must be a torch.Tensor, got {type(ids).__name__}")
    if not isinstance(table, torch.Tensor):
        raise TypeError(f"embedding: table must be a torch.Tensor, got {type(table).__name__}")
    if ids.dtype != torch.int64:
        raise TypeError(f"embedding: ids must be int64, got {ids.dtype}")
    if table.dtype != torch.float32:
        raise TypeError(f"embedding: table must be float32, got {table.dtype}")
    if table.dim() != 2:
        raise ValueError(f"embedding: table must have shape (V, D), got {tuple(table.shape)}")
    if ids.device != table.device:
        raise ValueError(f"embedding: ids are on {ids.device} but the table is on {table.device}")
    vocab = table.shape[0]
    if ids.numel():
        lo, hi = int(ids.min()), int(ids.max())
        if lo < 0 or hi >= vocab:
            bad = lo if lo < 0 else hi
            raise IndexError(
                f"embedding: id {bad} is out of range for a table of {vocab} rows (valid ids: 0..{vocab - 1})"
            )
    return ids.detach(), table.detach()


def embedding(ids: torch.Tensor, table: torch.Tensor, backend: str = "reference") -> torch.Tensor:
    """Rows of float32 ``table`` (V, D) at int64 ``ids`` (any shape) -> float32
    (*ids.shape, D), bit copies, on the table's device."""
    check_backend(backend)
    ids, table = _validate(ids, table)
    shape = (*ids.shape, table.shape[1])
    if backend == "triton":
        from refute.kernels.embedding_triton import gather_launch

        triton_device_check(ids, table)
        return gather_launch(ids.contiguous().reshape(-1), table.contiguous()).reshape(shape)
    out = embedding_reference(ids.cpu().numpy(), table.cpu().numpy())
    return torch.from_numpy(np.ascontiguousarray(out)).reshape(shape).to(table.device)
