"""Flat keccak256 digests of tensors: the canonical bytes every layer agrees on.

A tensor's canonical encoding is ``dtype-name | shape | little-endian bytes``
of its contiguous row-major data (bf16 as its 16-bit patterns). Two tensors
have the same digest exactly when they have the same dtype, shape and bits.
"""

from __future__ import annotations

import struct

import numpy as np
import torch
from Crypto.Hash import keccak

_DTYPE_NAMES = {
    torch.float32: b"f32",
    torch.bfloat16: b"bf16",
    torch.float16: b"f16",
    torch.int64: b"i64",
    torch.int32: b"i32",
    torch.bool: b"bool",
}


def canonical_bytes(t: torch.Tensor) -> bytes:
    """The canonical encoding of ``t`` (see the module docstring)."""
    if t.dtype not in _DTYPE_NAMES:
        raise TypeError(f"no canonical encoding for dtype {t.dtype}")
    t = t.detach().to("cpu").contiguous()
    name = _DTYPE_NAMES[t.dtype]
    header = struct.pack("<B", len(name)) + name + struct.pack("<B", t.dim()) + b"".join(
        struct.pack("<Q", d) for d in t.shape
    )
    if t.dtype in (torch.bfloat16, torch.float16):
        data = t.view(torch.int16).numpy()
    else:
        data = t.numpy()
    return header + np.ascontiguousarray(data).astype(data.dtype.newbyteorder("<"), copy=False).tobytes()


def tensor_digest(t: torch.Tensor) -> str:
    """keccak256 of :func:`canonical_bytes`, as 64 hex digits."""
    return keccak.new(digest_bits=256, data=canonical_bytes(t)).hexdigest()


def first_difference(a: torch.Tensor, b: torch.Tensor) -> int | None:
    """The flat index of the first element whose bits differ between ``a`` and
    ``b`` (same dtype and shape), or None if every bit is equal."""
    if a.shape != b.shape or a.dtype != b.dtype:
        raise ValueError(f"cannot compare {a.dtype}{list(a.shape)} with {b.dtype}{list(b.shape)} element-wise")
    fa, fb = a.detach().cpu().contiguous().reshape(-1), b.detach().cpu().contiguous().reshape(-1)
    ia, ib = fa.view(torch.uint8).reshape(fa.numel(), -1), fb.view(torch.uint8).reshape(fb.numel(), -1)
    diff = (ia != ib).any(1).nonzero()
    return int(diff[0]) if len(diff) else None
