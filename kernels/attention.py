"""Grouped-query attention with padding and causal masks, bit-exact on every backend.

``attention(q, k, v, key_mask=..., q_positions=..., k_positions=..., num_heads=H,
num_kv_heads=Hkv, scale=..., causal=...)`` with q (B, Tq, H * d) and k, v
(B, Tk, Hkv * d); head h attends with kv head ``h // (H // Hkv)``. Query t of
sequence b sees key j iff ``key_mask[b, j]`` and (not causal or
``k_positions[b, j] <= q_positions[b, t]``).

The program (docs/numerics.md; numpy in :mod:`attention_reference`):
``scores = gemm(q, k^T) * scale``, ``p = softmax(scores, visible)``, then the
P·V product is an exact GEMM whose scales depend only on the query's visible
keys: with ``g_k = exponent_of(max_d |v_k|)`` and ``G = max g_k`` over the
visible keys, ``P' = ldexp(p, g_k - G)``, ``V' = ldexp(v, -g_k)`` and
``out = ldexp(gemm(P', V') with column exponent 0, G)``.

So a query's output bits depend only on that query and the keys it sees: they
do not change with the rest of the batch, with padding (masked keys' values,
even NaN, never matter), or between a prefill of T tokens and T one-token
decode steps over a growing KV cache. A query that sees no key gets +0.
Non-finite inputs: a NaN/inf in a query's q row, or in a visible key's k or v
row, makes that query's whole output the canonical NaN 0x7FC00000.
"""

from __future__ import annotations

import numpy as np
import torch

from refute.kernels import attention_reference
from refute.kernels.backend import check_backend, triton_device_check
from refute.kernels.gemm_reference import MAX_K, MAX_SLICES, MIN_SLICES
from refute.kernels.reduce_reference import MAX_SUM_LEN

DEFAULT_SLICES = 2


def _check_int(name: str, value: object, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"attention: {name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"attention: {name} must be >= {minimum}, got {value}")
    return value


def _check_tensor(name: str, t: object, dtype: torch.dtype, shape: tuple[int, ...] | None, ndim: int) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"attention: {name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype != dtype:
        raise TypeError(f"attention: {name} must be {dtype}, got {t.dtype}")
    if t.dim() != ndim or (shape is not None and tuple(t.shape) != shape):
        want = shape if shape is not None else f"{ndim} dimensions"
        raise ValueError(f"attention: {name} must have shape {want}, got {tuple(t.shape)}")
    return t


def _validate(
    q: object,
    k: object,
    v: object,
    key_mask: object,
    q_positions: object,
    k_positions: object,
    num_heads: object,
    num_kv_heads: object,
    scale: object,
    causal: object,
    slices: object,
) -> int:
    """Check every argument; return the head dimension d."""
    q = _check_tensor("q", q, torch.float32, None, 3)
    k = _check_tensor("k", k, torch.float32, None, 3)
    heads = _check_int("num_heads", num_heads, 1)
    kv_heads = _check_int("num_kv_heads", num_kv_heads, 1)
    if heads % kv_heads:
        raise ValueError(f"attention: num_heads={heads} is not a multiple of num_kv_heads={kv_heads}")
    if q.shape[-1] % heads or q.shape[-1] == 0:
        raise ValueError(f"attention: q's last dimension {q.shape[-1]} is not a positive multiple of num_heads={heads}")
    d = q.shape[-1] // heads
    b, tq, tk = q.shape[0], q.shape[1], k.shape[1]
    _check_tensor("k", k, torch.float32, (b, tk, kv_heads * d), 3)
    _check_tensor("v", v, torch.float32, (b, tk, kv_heads * d), 3)
    _check_tensor("key_mask", key_mask, torch.bool, (b, tk), 2)
    _check_tensor("q_positions", q_positions, torch.int64, (b, tq), 2)
    _check_tensor("k_positions", k_positions, torch.int64, (b, tk), 2)
    if not isinstance(scale, (int, float)) or isinstance(scale, bool):
        raise TypeError(f"attention: scale must be a number, got {type(scale).__name__}")
    if not isinstance(causal, bool):
        raise TypeError(f"attention: causal must be a bool, got {type(causal).__name__}")
    _check_int("slices", slices, MIN_SLICES)
    if slices > MAX_SLICES:
        raise ValueError(f"attention: slices must be in {MIN_SLICES}..{MAX_SLICES}, got {slices}")
    if tk + 1 > min(MAX_K, MAX_SUM_LEN):
        raise ValueError(f"attention: {tk} keys exceed the exact-sum limit of {min(MAX_K, MAX_SUM_LEN) - 1}")
    devices = {t.device for t in (q, k, v, key_mask, q_positions, k_positions)}
    if len(devices) > 1:
        raise ValueError(f"attention: tensors are on different devices: {sorted(str(x) for x in devices)}")
    return d


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    key_mask: torch.Tensor,
    q_positions: torch.Tensor,
    k_positions: torch.Tensor,
    num_heads: int,
    num_kv_heads: int,
    scale: float,
    causal: bool,
    slices: int = DEFAULT_SLICES,
    backend: str = "reference",
) -> torch.Tensor:
    """Attention output float32 (B, Tq, num_heads * d) on q's device.

    q float32 (B, Tq, num_heads * d); k, v float32 (B, Tk, num_kv_heads * d);
    key_mask bool (B, Tk) (False = padding); q_positions int64 (B, Tq);
    k_positions int64 (B, Tk); ``scale`` is rounded to float32; ``slices``
    (1..4) is the precision of both exact GEMMs.
    """
    d = _validate(q, k, v, key_mask, q_positions, k_positions, num_heads, num_kv_heads, scale, causal, slices)
    check_backend(backend)
    b, tq, tk = q.shape[0], q.shape[1], k.shape[1]
    scale32 = np.float32(scale)
    if b * tq == 0 or tk == 0:
        # No key at all: every query sees nothing and gets +0.
        return torch.zeros((b, tq, num_heads * d), dtype=torch.float32, device=q.device)
    if backend == "triton":
        from refute.kernels.attention_triton import attention_triton

        triton_device_check(q, k, v, key_mask, q_positions, k_positions)
        return attention_triton(
            q.detach(),
            k.detach(),
            v.detach(),
            key_mask.detach(),
            q_positions.detach(),
            k_positions.detach(),
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
            scale=float(scale32),
            causal=causal,
            slices=slices,
        )

    def heads_first(x: torch.Tensor, heads: int) -> np.ndarray:
        """(B, T, heads * d) -> numpy (B, heads, T, d): a layout change only."""
        return x.detach().cpu().reshape(x.shape[0], x.shape[1], heads, d).permute(0, 2, 1, 3).contiguous().numpy()

    keep = attention_reference.visible_keys(
        key_mask.detach().cpu().numpy(), q_positions.detach().cpu().numpy(), k_positions.detach().cpu().numpy(), causal
    )
    qh, kh, vh = heads_first(q, num_heads), heads_first(k, num_kv_heads), heads_first(v, num_kv_heads)
    # A sequence's output depends on that sequence alone (I2), so the reference
    # runs one sequence at a time: its score matrices then stay in cache
    # instead of streaming a whole batch's through memory.
    out = np.concatenate(
        [attention_reference.attention(qh[i : i + 1], kh[i : i + 1], vh[i : i + 1], keep[i : i + 1], scale32, slices)
         for i in range(b)]
    )
    merged = np.ascontiguousarray(out.transpose(0, 2, 1, 3)).reshape(b, tq, num_heads * d)
    return torch.from_numpy(merged).to(q.device)
