"""numpy reference for :mod:`refute.kernels.attention` (grouped-query attention).

Independent of the Triton kernels; built from the numpy programs of the other
operators: :func:`gemm_reference.gemm_reference` (exact GEMM),
:mod:`softmax_reference` (masked softmax) and the bit helpers. Per-head layout:
``q`` (B, H, Tq, d), ``k`` and ``v`` (B, Hkv, Tk, d), head h reads kv head
``h // (H // Hkv)``; ``keep`` (B, Tq, Tk) says which keys each query sees.

The program (docs/numerics.md):

1. ``scores = gemm(q, k^T) * scale``; ``p = softmax(scores, keep)``.
2. ``g_k = exponent_of(max_d |v_kd|)`` for each key (128 iff v_k holds inf or
   NaN, -127 if v_k is zero or subnormal); ``G = max(g_k over kept keys)``
   (-127 if none).
3. ``P'_tk = ldexp(p_tk, g_k - G)``, NaN for kept keys if ``G == 128``;
   ``V'_kd = ldexp(v_kd, -g_k)`` (0 if g_k == 128), so ``|V'| < 2``.
4. ``C = gemm(P', V')`` with the column exponent of V' fixed at 0, and
   ``out = ldexp(C, G)`` (NaN canonical).

The fixed column exponent makes a query's output independent of the keys it
cannot see: every scale in the program depends on one key's vector or on the
query's kept keys only, and masked P' are exactly 0. The GEMM's column
exponent is pinned by appending one key whose V' row is all 1.0 and whose P'
column is 0: every column of V' then has its max magnitude in [1, 2), so the
GEMM's own rule gives exponent 0, and the extra key adds an exact 0.
"""

from __future__ import annotations

import numpy as np

from refute.kernels import softmax_reference
from refute.kernels.bits_reference import bits_f32, exponent_of, ldexp
from refute.kernels.gemm_reference import CANONICAL_NAN_BITS, gemm_reference, max_abs_bits

# exponent_of of a vector whose max |bits| is inf or NaN (exponent field 255).
NONFINITE_EXP = 128
# G of a query that sees no key: the smallest exponent_of (zero/subnormal).
NO_KEY_EXP = -127
# V' of the appended key: 1.0 pins every column's max magnitude to [1, 2).
PIN_VALUE = np.float32(1.0)


def visible_keys(key_mask: np.ndarray, q_positions: np.ndarray, k_positions: np.ndarray, causal: bool) -> np.ndarray:
    """bool (B, Tq, Tk): key_mask[b, k] and (not causal or k_pos <= q_pos)."""
    keep = np.broadcast_to(key_mask[:, None, :], (key_mask.shape[0], q_positions.shape[1], key_mask.shape[1]))
    if causal:
        keep = keep & (k_positions[:, None, :] <= q_positions[:, :, None])
    return np.ascontiguousarray(keep)


def value_exponents(v: np.ndarray) -> np.ndarray:
    """int32 g_k = exponent_of(max_d |v_kd|) over the last axis of float32 ``v``."""
    return exponent_of(bits_f32(max_abs_bits(v, axis=-1)))


def scaled_values(v: np.ndarray, g: np.ndarray) -> np.ndarray:
    """V' = ldexp(v, -g) (0 for non-finite keys) with the pinning key appended:
    float32 (..., Tk + 1, d) from ``v`` (..., Tk, d) and ``g`` (..., Tk)."""
    vs = np.where((g == NONFINITE_EXP)[..., None], np.float32(0.0), ldexp(v, -g[..., None]))
    pin = np.full((*v.shape[:-2], 1, v.shape[-1]), PIN_VALUE, dtype=np.float32)
    return np.concatenate([vs.astype(np.float32, copy=False), pin], axis=-2)


def attention(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, keep: np.ndarray, scale: np.float32, slices: int
) -> np.ndarray:
    """Attention output float32 (B, H, Tq, d) (see the module docstring)."""
    b, h, tq, d = q.shape
    hkv, tk = k.shape[1], k.shape[2]
    rows = (h // hkv) * tq
    # Heads sharing a kv head become extra query rows: (B, Hkv, group * Tq, ...).
    qg = q.reshape(b, hkv, rows, d)
    keep_g = np.broadcast_to(np.tile(keep[:, None], (1, 1, h // hkv, 1)), (b, hkv, rows, tk))
    with np.errstate(all="ignore"):
        scores = gemm_reference(qg, np.swapaxes(k, -1, -2), slices) * np.float32(scale)
        p = softmax_reference.softmax(scores.reshape(-1, tk), keep_g.reshape(-1, tk)).reshape(scores.shape)
        g_kv = value_exponents(v)  # (B, Hkv, Tk)
        g = g_kv[:, :, None, :]
        big_g = np.max(np.where(keep_g, g, NO_KEY_EXP), axis=-1, initial=NO_KEY_EXP).astype(np.int32)
        pp = ldexp(p, g - big_g[..., None])
        nan = bits_f32(np.int32(CANONICAL_NAN_BITS))
        pp = np.where(keep_g & (big_g == NONFINITE_EXP)[..., None], nan, pp)
        pp = np.concatenate([pp, np.zeros((b, hkv, rows, 1), np.float32)], axis=-1)
        c = gemm_reference(pp, scaled_values(v, g_kv), slices)
        out = softmax_reference.canonicalize_nan(ldexp(c, big_g[..., None]))
    return out.reshape(b, h, tq, d)
