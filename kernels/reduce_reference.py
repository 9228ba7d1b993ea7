"""numpy reference for the exact row reductions of :mod:`refute.kernels.reduce`.

Written independently of the Triton kernels (it never calls them); it shares
only the bit-level helpers of :mod:`refute.kernels.bits_reference`. Every array
here is 2-D ``(rows, n)`` float32 and every result is one value per row. The
definitions are in docs/numerics.md; in short:

* sums: each finite element ``x_i`` becomes the int64 image
  ``X_i = rne(x_i * 2**(F - 1 - e))`` where ``e`` is the exponent of the row's
  largest finite magnitude; ``S = sum X_i`` is exact; the result is
  ``ldexp(fl32(S), e + 1 - F)``. Infinities and NaN follow IEEE, order-free.
* max / argmax: an exact integer max over a total-order key of the bits.
"""

from __future__ import annotations

import numpy as np

from refute.kernels.bits_reference import (
    bits_f32,
    exponent_of,
    f32_bits,
    ldexp,
    round_half_even_to_int64,
)

# Fraction bits of the fixed-point images: |X_i| <= 2**F. A fixed constant, never
# a function of n, so a causal prefix sums to the same bits in prefill and decode.
FRAC_BITS = 40
# Largest row length whose image sum fits int64: n * 2**40 <= 2**62 < 2**63.
MAX_SUM_LEN = 1 << 22

ABS_MASK = np.int32(0x7FFFFFFF)
POS_INF_BITS = np.int32(0x7F800000)
NEG_INF_BITS = np.int32(-0x00800000)  # 0xFF800000 as int32
CANONICAL_NAN_BITS = np.int32(0x7FC00000)
# Total-order key given to every NaN: above +inf's key 0x7F800000, so NaN wins
# max and argmax (as in torch); no non-NaN value has this key.
NAN_KEY = np.int32(0x7FFFFFFF)


def _canonicalize_nan(r: np.ndarray) -> np.ndarray:
    """Replace every NaN in float32 ``r`` by the canonical quiet NaN 0x7FC00000."""
    b = f32_bits(r)
    return bits_f32(np.where((b & ABS_MASK) > POS_INF_BITS, CANONICAL_NAN_BITS, b))


def exact_sum(v: np.ndarray) -> np.ndarray:
    """Exact fixed-point row sum of float32 ``v`` (rows, n) -> float32 (rows,)."""
    from refute.kernels import native_reference  # imported here: it imports this module

    if (lib := native_reference.library()) is not None:
        return native_reference.exact_sum(lib, v)
    b = f32_bits(v)
    a = b & ABS_MASK
    finite = a < POS_INF_BITS
    # Integer max of |bits| is the max magnitude: exact and order-free.
    max_abs = np.max(np.where(finite, a, 0), axis=-1, initial=0).astype(np.int32)
    e = exponent_of(bits_f32(max_abs))
    images = round_half_even_to_int64(ldexp(np.where(finite, v, np.float32(0)), (FRAC_BITS - 1 - e)[:, None]))
    s = images.sum(axis=-1, dtype=np.int64)
    # int64 -> float32 is one round-to-nearest-even conversion; ldexp is then exact
    # unless the result is subnormal (one more rounding) or overflows.
    r = f32_bits(ldexp(s.astype(np.float32), e + 1 - FRAC_BITS))
    has_pinf = (b == POS_INF_BITS).any(axis=-1)
    has_ninf = (b == NEG_INF_BITS).any(axis=-1)
    has_nan = (a > POS_INF_BITS).any(axis=-1)
    r = np.where(has_ninf, NEG_INF_BITS, r)
    r = np.where(has_pinf, POS_INF_BITS, r)
    r = np.where(has_nan | (has_pinf & has_ninf), CANONICAL_NAN_BITS, r)
    return bits_f32(r.astype(np.int32))


def _mean_of(total: np.ndarray, n: int) -> np.ndarray:
    """Correctly rounded ``total / n`` in float32 (n <= 2**22 is exact in float32)."""
    with np.errstate(all="ignore"):
        return _canonicalize_nan(total / np.float32(n))


def row_sum(x: np.ndarray) -> np.ndarray:
    """Exact row sum (see module docstring)."""
    return exact_sum(x)


def row_sumsq(x: np.ndarray) -> np.ndarray:
    """Exact row sum of the float32 squares ``x_i * x_i`` (one rounding each)."""
    with np.errstate(all="ignore"):
        return exact_sum(x * x)


def row_mean(x: np.ndarray) -> np.ndarray:
    """``div_rn(row_sum(x), n)``; empty rows give the canonical NaN (0/0)."""
    return _mean_of(exact_sum(x), x.shape[-1])


def row_var(x: np.ndarray) -> np.ndarray:
    """Population variance ``div_rn(row_sum(d * d), n)`` with ``d = x - row_mean(x)``."""
    n = x.shape[-1]
    with np.errstate(all="ignore"):
        d = x - row_mean(x)[:, None]
        return _mean_of(exact_sum(d * d), n)


def total_order_key(x: np.ndarray) -> np.ndarray:
    """int32 key whose integer order is IEEE order with -0 < +0; NaN -> NAN_KEY.

    Non-negative floats keep their bits; negative ones flip their magnitude
    bits, so larger magnitudes give smaller (more negative) keys and -0 maps to -1.
    """
    b = f32_bits(x)
    key = np.where(b < 0, b ^ ABS_MASK, b)
    return np.where((b & ABS_MASK) > POS_INF_BITS, NAN_KEY, key).astype(np.int32)


def row_max(x: np.ndarray) -> np.ndarray:
    """Exact row max under the total order; any NaN gives the canonical NaN."""
    key = np.max(total_order_key(x), axis=-1)
    b = np.where(key < 0, key ^ ABS_MASK, key)
    return bits_f32(np.where(key == NAN_KEY, CANONICAL_NAN_BITS, b).astype(np.int32))


def row_argmax(x: np.ndarray) -> np.ndarray:
    """Lowest index of the row max's key (so the lowest NaN index if any) as int64."""
    # np.argmax returns the first occurrence of the maximum.
    return np.argmax(total_order_key(x), axis=-1).astype(np.int64)
