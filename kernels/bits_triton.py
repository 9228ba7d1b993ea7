"""Triton device functions for bit-level fp32 work, shared by every kernel.

Twins of :mod:`refute.kernels.bits_reference`; the two must compute the same
bits. Only integer operations, bit casts, compare/select and single IEEE
float32 operations are used (DESIGN rule 2).
"""

import triton
import triton.language as tl

EXP_BIAS: tl.constexpr = tl.constexpr(127)
TWO_POW_23: tl.constexpr = tl.constexpr(8388608.0)
SIGN_BIT: tl.constexpr = tl.constexpr(-2147483648)  # 0x80000000 as int32


@triton.jit
def f32_bits(x):
    """The raw bits of float32 ``x`` as int32."""
    return x.to(tl.int32, bitcast=True)


@triton.jit
def bits_f32(b):
    """Reinterpret int32 bits as float32."""
    return b.to(tl.float32, bitcast=True)


@triton.jit
def negate(x):
    """IEEE negation of float32 ``x``: its sign bit flipped, so -(+0) is -0.

    triton 3.6 lowers unary minus on a float to ``0 - x``, which gives +0 for +0
    on the GPU (triton 3.9 and its interpreter negate): every float negation in
    the kernels goes through here instead."""
    return bits_f32(f32_bits(x) ^ SIGN_BIT)


@triton.jit
def exponent_of(x):
    """Unbiased exponent field of |x| (subnormals and zero give -127)."""
    return ((f32_bits(x) >> 23) & 0xFF) - EXP_BIAS


@triton.jit
def pow2(k):
    """2**k as float32 for int32 k in [-126, 127], built from its bits."""
    return bits_f32((k + EXP_BIAS) << 23)


@triton.jit
def ldexp(x, k):
    """x * 2**k as three multiplications by normal powers of two; correctly
    rounded in the domain stated by the reference twin; valid for |k| <= 381."""
    k1 = tl.minimum(tl.maximum(k, -126), 127)
    k2 = tl.minimum(tl.maximum(k - k1, -126), 127)
    k3 = tl.minimum(tl.maximum(k - k1 - k2, -126), 127)
    return ((x * pow2(k1)) * pow2(k2)) * pow2(k3)


@triton.jit
def round_half_even_to_int64(y):
    """Nearest int64 to finite float32 y (|y| < 2**62), ties to even."""
    a = tl.abs(y)
    r = tl.where(a < TWO_POW_23, (a + TWO_POW_23) - TWO_POW_23, a).to(tl.int64)
    return tl.where(y < 0, -r, r)


@triton.jit
def fp32_to_bf16_bits(x):
    """bf16 bits (int32 in [0, 65535]) of float32 x, round to nearest even;
    NaN stays a quiet NaN."""
    b = f32_bits(x)
    is_nan = (b & 0x7FFFFFFF) > 0x7F800000
    rounded = (b + 0x7FFF + ((b >> 16) & 1)) >> 16
    return tl.where(is_nan, (b >> 16) | 0x40, rounded) & 0xFFFF


@triton.jit
def bf16_bits_to_fp32(h):
    """float32 from bf16 bits held in int32: exact widening."""
    return bits_f32(h << 16)
