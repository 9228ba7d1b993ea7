"""numpy twins of :mod:`refute.kernels.bits_triton`: bit-level fp32 helpers.

Each function is the same straight-line program as its Triton twin, written
separately in numpy. Every numpy float32 operation used here is a single
IEEE-754 operation with round-to-nearest-even, and numpy keeps subnormals.
"""

from __future__ import annotations

import numpy as np

EXP_BIAS = 127
TWO_POW_23 = np.float32(8388608.0)
# From this size on, ldexp runs in the compiled loop (kernels/native_reference.py).
NATIVE_MIN_ELEMENTS = 4096


def f32_bits(x: np.ndarray) -> np.ndarray:
    """The raw bits of a float32 array as int32."""
    return np.ascontiguousarray(x, dtype=np.float32).view(np.int32)


def bits_f32(b: np.ndarray) -> np.ndarray:
    """Reinterpret int32 (or uint32) bits as float32."""
    return np.ascontiguousarray(b).astype(np.int32, copy=False).view(np.float32)


def exponent_of(x: np.ndarray) -> np.ndarray:
    """Unbiased exponent field of |x| as int32: 2**e <= |x| < 2**(e+1) for
    normal x; subnormals and zero give -127 (and |x| < 2**-126 holds)."""
    return ((f32_bits(x) >> 23) & 0xFF) - EXP_BIAS


def pow2(k: np.ndarray) -> np.ndarray:
    """2**k as float32 for integer k in [-126, 127], built from its bits."""
    return bits_f32((np.asarray(k, dtype=np.int32) + EXP_BIAS) << 23)


def ldexp(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """x * 2**k as three float32 multiplications by normal powers of two.

    Only the last multiplication that changes the value can round, so the
    result is x * 2**k correctly rounded, when k >= -126, or 1 <= |x| and
    k >= -252, or |x| >= 2**126. Outside that domain (tiny results reached from
    huge |x|) an intermediate can round first. Valid for |k| <= 381.
    """
    k = np.asarray(k, dtype=np.int32)
    if max(np.size(x), k.size) >= NATIVE_MIN_ELEMENTS:
        from refute.kernels import native_reference  # imported here: it imports this module

        if (lib := native_reference.library()) is not None:
            return native_reference.ldexp(lib, x, k)
    k1 = np.clip(k, -126, 127)
    k2 = np.clip(k - k1, -126, 127)
    k3 = np.clip(k - k1 - k2, -126, 127)
    with np.errstate(all="ignore"):
        return (np.asarray(x, dtype=np.float32) * pow2(k1)) * pow2(k2) * pow2(k3)


def round_half_even_to_int64(y: np.ndarray) -> np.ndarray:
    """Round finite float32 values with |y| < 2**62 to the nearest int64, ties
    to even. Below 2**23 the addition of 2**23 rounds in float32; at or above
    it every float32 is already an integer and truncation is exact."""
    y = np.asarray(y, dtype=np.float32)
    a = np.abs(y)
    r = np.where(a < TWO_POW_23, (a + TWO_POW_23) - TWO_POW_23, a).astype(np.int64)
    return np.where(y < 0, -r, r)


def fp32_to_bf16_bits(x: np.ndarray) -> np.ndarray:
    """bf16 bits (as int32 in [0, 65535]) of float32 x, round to nearest even.
    NaN stays NaN (quiet bit set); overflow rounds to inf as IEEE requires."""
    b = f32_bits(x)
    is_nan = (b & 0x7FFFFFFF) > 0x7F800000
    rounded = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    return np.where(is_nan, (b >> 16) | 0x40, rounded) & 0xFFFF


def bf16_bits_to_fp32(h: np.ndarray) -> np.ndarray:
    """float32 from bf16 bits (int32 in [0, 65535]): exact widening."""
    return bits_f32(np.asarray(h, dtype=np.int32) << 16)
