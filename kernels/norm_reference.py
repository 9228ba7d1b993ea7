"""numpy reference of the normalisation and pooling operators of :mod:`refute.kernels.norm`.

layer_norm, rms_norm, l2_normalize (rows of a 2-D ``(rows, n)`` float32 array)
and mean_pool (``(B, T, D)`` over T). Written independently of the Triton
kernels: the row statistics are the exact fixed-point sums of
:mod:`refute.kernels.reduce_reference`, the reciprocal square root is refute's
(:mod:`refute.kernels.mathlib_reference`), and everything else is single
IEEE-754 binary32 operations (numpy float32, round to nearest even, subnormals
kept). The programs are written out in docs/numerics.md.

Every NaN returned is the canonical NaN 0x7FC00000: intermediate NaN bits never
reach an output, so only the final canonicalisation matters.
"""

from __future__ import annotations

import numpy as np

from refute.kernels import mathlib_reference
from refute.kernels.elementwise_reference import canonicalize_nan
from refute.kernels.reduce_reference import exact_sum, row_mean

# float32(1e-9): mean_pool's floor for the token count (sentence-transformers'
# clamp), bits 0x3089705F, written in hex so no decimal rounding is involved.
POOL_MIN_COUNT = float.fromhex("0x1.12e0bep-30")


def float_constants() -> dict[str, float]:
    """Every float constant of the programs, by name (for the representability test)."""
    return {"POOL_MIN_COUNT": POOL_MIN_COUNT}


def _check_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.float32 or x.ndim != 2:
        raise TypeError(f"expected a 2-D float32 array, got {x.dtype} with shape {x.shape}")
    return x


def layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: np.float32) -> np.ndarray:
    """Per row of n: mu = row_mean(x); d = x - mu; var = div(row_sum(d * d), n);
    r = rsqrt(var + eps); y = ((d * r) * w) + b."""
    x = _check_rows(x)
    n = np.float32(x.shape[1])
    with np.errstate(all="ignore"):
        d = x - row_mean(x)[:, None]
        var = exact_sum(d * d) / n
        r = mathlib_reference.rsqrt(var + np.float32(eps))
        return canonicalize_nan(((d * r[:, None]) * weight) + bias)


def rms_norm(x: np.ndarray, weight: np.ndarray, eps: np.float32) -> np.ndarray:
    """Per row of n: ms = div(row_sum(x * x), n); r = rsqrt(ms + eps); y = (x * r) * w."""
    x = _check_rows(x)
    n = np.float32(x.shape[1])
    with np.errstate(all="ignore"):
        ms = exact_sum(x * x) / n
        r = mathlib_reference.rsqrt(ms + np.float32(eps))
        return canonicalize_nan((x * r[:, None]) * weight)


def l2_normalize(x: np.ndarray, eps: np.float32) -> np.ndarray:
    """Per row: nrm = sqrt(row_sum(x * x)); y = div(x, max(nrm, eps)) (a NaN
    norm stays NaN)."""
    x = _check_rows(x)
    eps = np.float32(eps)
    with np.errstate(all="ignore"):
        nrm = np.sqrt(exact_sum(x * x))
        den = np.where(nrm < eps, eps, nrm)
        return canonicalize_nan(x / den[:, None])


def mean_pool(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Masked mean over T of float32 ``x`` (B, T, D) with ``mask`` (B, T) of 0/1:
    y[b, d] = div(s, max(cnt, 1e-9)) where cnt = float32(number of kept tokens)
    and s = the exact sum over the kept tokens of x[b, :, d].

    A masked token contributes exactly nothing (NaN and inf included): replacing
    it by +0 leaves the exact sum's scale, flags and images unchanged.
    """
    x = np.asarray(x)
    if x.dtype != np.float32 or x.ndim != 3:
        raise TypeError(f"expected a 3-D float32 array, got {x.dtype} with shape {x.shape}")
    keep = np.asarray(mask) != 0
    batch, _, dim = x.shape
    kept = np.where(keep[:, :, None], x, np.float32(0.0))
    # Rows of (B * D, T): the sum runs over tokens.
    s = exact_sum(np.ascontiguousarray(kept.transpose(0, 2, 1)).reshape(batch * dim, -1)).reshape(batch, dim)
    cnt = keep.sum(axis=1, dtype=np.int64).astype(np.float32)
    den = np.where(cnt < np.float32(POOL_MIN_COUNT), np.float32(POOL_MIN_COUNT), cnt)
    with np.errstate(all="ignore"):
        return canonicalize_nan(s / den[:, None])
