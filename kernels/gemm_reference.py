"""CPU reference of refute's exact GEMM (DESIGN.md rule 1), in numpy.

For ``C = A @ B`` (A: (..., M, K), B: (..., K, N), float32) with ``s`` slices:

1. ``e_i`` = exponent field of ``max_k |A_ik|`` (an integer max over the abs
   bits; subnormal or all-zero rows give -127); ``f_j`` likewise for column j
   of B. A scale depends only on its own row or column.
2. Integer images ``Â_ik = clamp(rne(A_ik * 2**(7s-1-e_i)), ±(2**(7s)-1))``
   and ``B̂_kj`` with ``f_j``: ``|Â| < 2**(7s)``, i.e. s signed base-128 digits.
3. ``P_ij = Σ_k Â_ik B̂_kj``, exact.
4. ``C_ij = ldexp(fl32(P_ij), e_i + f_j + 2 - 14s)``: one round-to-nearest-even
   conversion of the exact integer, then :func:`bits_reference.ldexp`.
5. An inf or NaN anywhere in row i of A or column j of B makes ``C_ij`` the
   canonical NaN 0x7FC00000.
6. With a bias: ``C_ij = C_ij + bias_j`` (one float32 add), and any NaN this
   produces is made canonical.

Here the exact integer products come from float64 BLAS: every image is an
integer and every partial sum stays below 2**53, so the float64 GEMM is exact
in any summation order (torch.matmul on float64 CPU tensors; every other
operation is numpy). This module never calls Triton.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from refute.kernels.bits_reference import bits_f32, exponent_of, ldexp, pow2

SLICE_BITS = 7  # one signed int8 digit holds 7 magnitude bits (base 128)
MIN_SLICES = 1
MAX_SLICES = 4
# Largest reduction length. It keeps every integer below its limit with room
# to spare: s=3 products (< K * 2**42) fit in int64, the s=4 float64 GEMMs on
# 15-bit sums of halves stay below 2**53 (K * 2**30), and the Triton int64
# accumulators stay below 2**58.
MAX_K = 1 << 20

ABS_MASK = 0x7FFFFFFF
INF_BITS = 0x7F800000  # abs bits >= this: inf or NaN
CANONICAL_NAN_BITS = 0x7FC00000
POW2_MIN_EXP = -126
POW2_MAX_EXP = 127

# s=3 images have 21 bits: (2**21 - 1)**2 * 2048 < 2**53, so a float64 GEMM over
# 2048 terms is exact; longer K is summed chunk by chunk in int64.
S3_F64_CHUNK = 2048
# s=4 images (28 bits) are split into two 14-bit halves, hi * 2**14 + lo.
S4_HALF_BITS = 14
# With |hi*hi| < 2**33 and |cross| < 2**47 (and |lo*lo| < K * 2**28 <= 2**48),
# P = hi*hi * 2**28 + cross * 2**14 + lo*lo fits in int64 directly.
S4_DIRECT_T2_LIMIT = 1 << 33
S4_DIRECT_T1_LIMIT = 1 << 47
LIMB_BITS = 32
# P = H * 2**32 + L with -2**29 <= H < 2**29 means |P| <= 2**61: it fits in
# int64 and converts to float32 in one RNE step.
DIRECT_H_LIMIT = 1 << 29
TWO_POW_32_F32 = np.float32(4294967296.0)


def image_limit(slices: int) -> int:
    """Largest integer image magnitude for ``slices`` slices: 2**(7s) - 1."""
    return (1 << (SLICE_BITS * slices)) - 1


def image_shift(slices: int) -> int:
    """Images are ``x * 2**(image_shift - e)``: the row max lands in [2**(7s-1), 2**(7s))."""
    return SLICE_BITS * slices - 1


def product_shift(slices: int) -> int:
    """``C = fl32(P) * 2**(e + f + product_shift)`` undoes both image scalings."""
    return 2 - 2 * SLICE_BITS * slices


def max_abs_bits(x: np.ndarray, axis: int) -> np.ndarray:
    """Integer max of ``bits & 0x7FFFFFFF`` along ``axis`` (0 for an empty axis).

    For finite values this orders like |x|; inf and NaN have the largest bits,
    so ``>= INF_BITS`` flags a row that holds one. An integer max is exact and
    independent of the order in which it is taken.
    """
    bits = np.asarray(x, dtype=np.float32).view(np.int32)
    return (bits & ABS_MASK).max(axis=axis, initial=0)


def images(x: np.ndarray, maxbits: np.ndarray, axis: int, slices: int) -> np.ndarray:
    """The integer images of ``x`` (exact integers held in float64).

    ``maxbits`` comes from :func:`max_abs_bits` along ``axis`` (the reduction
    axis); each row's scale 2**(7s-1-e) multiplies ``x`` through
    :func:`bits_reference.ldexp`. The scaled value is exact unless it falls
    below 2**-126, and then it (and its rounding) is below 1/2, so it rounds to
    the integer 0 either way. Rows holding inf/NaN are imaged as zeros: their
    outputs are NaN regardless.
    """
    e = exponent_of(bits_f32(maxbits))
    nonfinite = np.expand_dims(maxbits >= INF_BITS, axis)
    k = np.expand_dims(image_shift(slices) - e, axis).astype(np.int32)
    with np.errstate(all="ignore"):
        if nonfinite.any():
            x = np.where(nonfinite, np.float32(0.0), x)
        if k.size and POW2_MIN_EXP <= k.min() and k.max() <= POW2_MAX_EXP:
            # ldexp's 2nd and 3rd factors are 1.0 here: one multiplication gives its bits.
            y = x * pow2(k)
        else:
            y = ldexp(x, k)
        # rint on float32 is exact round-half-even; float64 holds every image.
        img = np.rint(y).astype(np.float64)
    lim = float(image_limit(slices))
    return np.clip(img, -lim, lim, out=img)


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """float64 GEMM of integer-valued arrays through torch's BLAS (the same
    library and thread pool as the float32 models it stands beside), with
    matmul broadcasting. Exact because every partial sum is an integer below
    2**53, whatever the summation order. A 2-D ``b`` shared by a batched ``a``
    becomes one large GEMM."""
    # torch takes numpy's strides as they are: a transposed operand reaches BLAS
    # as a transposed GEMM, not as a copy.
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    if tb.dim() == 2 and ta.dim() > 2:
        return torch.matmul(ta.reshape(-1, ta.shape[-1]), tb).reshape(*ta.shape[:-1], tb.shape[-1]).numpy()
    return torch.matmul(ta, tb).numpy()


def _add_shifted(h: np.ndarray, low: np.ndarray, x: np.ndarray, shift: int) -> tuple[np.ndarray, np.ndarray]:
    """(h, low) += x * 2**shift for int64 x and 0 <= shift < 32, exactly.

    ``x = xh * 2**(32 - shift) + xl`` with 0 <= xl < 2**(32 - shift) (arithmetic
    shift = floor), so ``x * 2**shift = xh * 2**32 + xl * 2**shift`` with the
    second term below 2**32. ``low`` may exceed 2**32 until :func:`_normalize`.
    """
    low_bits = LIMB_BITS - shift
    xh = x >> low_bits
    xl = x - (xh << low_bits)
    return h + xh, low + (xl << shift)


def _normalize(h: np.ndarray, low: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Carry ``low``'s bits above 2**32 into ``h``: afterwards 0 <= low < 2**32."""
    carry = low >> LIMB_BITS
    return h + carry, low - (carry << LIMB_BITS)


def limbs_to_f32(h: np.ndarray, low: np.ndarray) -> np.ndarray:
    """fl32(P) for P = h * 2**32 + low (int64 h, 0 <= low < 2**32), one RNE rounding.

    If |P| <= 2**61 it is an int64 and numpy's int64 -> float32 conversion is a
    single RNE rounding. Otherwise |P| = hm * 2**32 + lm with hm >= 2**29: the
    rounding of |P| to 24 bits depends on its top 24 bits, the next bit, and
    whether anything below is nonzero; OR-ing ``lm != 0`` into bit 0 of hm (which
    lies at least 5 places below the round bit) keeps all three, so
    ``fl32(hm | sticky) * 2**32`` (an exact scaling) is fl32(|P|).
    """
    small = (h >= -DIRECT_H_LIMIT) & (h < DIRECT_H_LIMIT)
    direct = ((np.where(small, h, 0) << LIMB_BITS) + low).astype(np.float32)
    neg = h < 0
    low_zero = low == 0
    hm = np.where(neg, np.where(low_zero, -h, -h - 1), h)
    lm = np.where(neg, np.where(low_zero, 0, (1 << LIMB_BITS) - low), low)
    big = (hm | (lm != 0)).astype(np.float32) * TWO_POW_32_F32
    return np.where(small, direct, np.where(neg, -big, big))


def products_f32(ai: np.ndarray, bi: np.ndarray, slices: int) -> np.ndarray:
    """fl32 of the exact integer products P = ai @ bi (integer images in float64)."""
    k = ai.shape[-1]
    if slices <= 2 or (slices == 3 and k <= S3_F64_CHUNK):
        # |P| < K * 2**(14s) <= 2**53 here: the float64 result is the exact integer,
        # and float64 -> float32 is one RNE rounding of it. An integer has no
        # sign of zero, but float64 sums of -0.0 products are -0.0: + 0.0 fixes that.
        return (_matmul(ai, bi) + 0.0).astype(np.float32)
    if slices == 3:
        p = None
        for k0 in range(0, k, S3_F64_CHUNK):
            part = _matmul(ai[..., k0 : k0 + S3_F64_CHUNK], bi[..., k0 : k0 + S3_F64_CHUNK, :]).astype(np.int64)
            p = part if p is None else p + part
        # |P| < MAX_K * 2**42 = 2**62: int64 -> float32 is one RNE rounding.
        return p.astype(np.float32)
    # s = 4: split each image into sign-magnitude 14-bit halves, hi * 2**14 + lo
    # (scaling by powers of two and trunc are exact on these float64 integers),
    # and get the three partial products from three GEMMs (Karatsuba):
    # hi_a lo_b + lo_a hi_b = (hi_a + lo_a)(hi_b + lo_b) - hi_a hi_b - lo_a lo_b.
    # |hi + lo| < 2**15, so every float64 GEMM sums < K * 2**30 <= 2**50: exact.
    half = float(1 << S4_HALF_BITS)
    inv_half = 1.0 / half
    a_hi = np.trunc(ai * inv_half)
    a_lo = ai - a_hi * half
    b_hi = np.trunc(bi * inv_half)
    b_lo = bi - b_hi * half
    t2 = _matmul(a_hi, b_hi).astype(np.int64)
    t0 = _matmul(a_lo, b_lo).astype(np.int64)
    t1 = _matmul(a_hi + a_lo, b_hi + b_lo).astype(np.int64) - t2 - t0
    if t2.size == 0 or (np.abs(t2).max() < S4_DIRECT_T2_LIMIT and np.abs(t1).max() < S4_DIRECT_T1_LIMIT):
        # |P| < 2**61 + 2**61 + 2**48: P is an int64, one RNE conversion.
        return ((t2 << 2 * S4_HALF_BITS) + (t1 << S4_HALF_BITS) + t0).astype(np.float32)
    h = np.zeros(t0.shape, dtype=np.int64)
    low = np.zeros(t0.shape, dtype=np.int64)
    h, low = _add_shifted(h, low, t0, 0)
    h, low = _add_shifted(h, low, t1, S4_HALF_BITS)
    h, low = _add_shifted(h, low, t2, 2 * S4_HALF_BITS)
    return limbs_to_f32(*_normalize(h, low))


def scale_products(p32: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``bits_reference.ldexp(p32, k)``; when every k is a normal power of two
    the second and third factors are 1.0 and one multiplication gives the same bits."""
    with np.errstate(all="ignore"):
        if k.size and POW2_MIN_EXP <= k.min() and k.max() <= POW2_MAX_EXP:
            return p32 * pow2(k)
        return ldexp(p32, k)


def canonical_nan() -> np.float32:
    """The float32 NaN with bits 0x7FC00000."""
    return np.array(CANONICAL_NAN_BITS, dtype=np.int32).view(np.float32)[()]


@dataclass(frozen=True)
class PreparedB:
    """The data-dependent half of a GEMM that depends on ``b`` alone: its
    column maxima and integer images. A weight matrix is prepared once and
    reused by every product it takes part in."""

    slices: int
    maxbits: np.ndarray  # (..., N) int32, from max_abs_bits along K
    images: np.ndarray  # (..., K, N) float64 integer images

    @property
    def shape(self) -> tuple[int, ...]:
        return self.images.shape


def _native_library():
    from refute.kernels import native_reference  # imported here: it imports modules that import this one

    return native_reference, native_reference.library()


def prepare_b(b: np.ndarray, slices: int) -> PreparedB:
    """Column maxima and images of float32 ``b`` (..., K, N) for ``slices``."""
    b = np.asarray(b, dtype=np.float32)
    native, lib = _native_library()
    if lib is not None:
        # A column of b is a row of b^T; the images come back as a (strided) view of b's layout.
        maxbits, img_t = native.gemm_row_images(lib, np.swapaxes(b, -1, -2), image_shift(slices), image_limit(slices))
        return PreparedB(slices, maxbits, np.swapaxes(img_t, -1, -2))
    bmax = max_abs_bits(b, axis=-2)
    return PreparedB(slices, bmax, images(b, bmax, -2, slices))


def gemm_reference(
    a: np.ndarray, b: np.ndarray | PreparedB, slices: int, bias: np.ndarray | None = None
) -> np.ndarray:
    """Exact-GEMM bits for float32 ``a`` (..., M, K) and ``b`` (..., K, N).

    Batch dimensions broadcast as in ``np.matmul``; ``bias`` is float32 (N,) or
    None; ``b`` may be given already prepared (:func:`prepare_b`). Inputs are
    assumed validated (see :func:`refute.kernels.gemm.gemm`).
    """
    a = np.asarray(a, dtype=np.float32)
    prepared = b if isinstance(b, PreparedB) else prepare_b(b, slices)
    if prepared.slices != slices:
        raise ValueError(f"b was prepared for {prepared.slices} slices, not {slices}")
    bmax, bi = prepared.maxbits, prepared.images
    native, lib = _native_library()
    if lib is not None:
        amax, ai = native.gemm_row_images(lib, a, image_shift(slices), image_limit(slices))
        if slices <= 2 or (slices == 3 and a.shape[-1] <= S3_F64_CHUNK):
            # The float64 products are the exact integers (as in products_f32); the
            # rounding, scaling, NaN and bias steps below run fused.
            return native.gemm_finish(lib, _matmul(ai, bi), amax, bmax, product_shift(slices), bias)
    else:
        amax = max_abs_bits(a, axis=-1)  # (..., M)
        ai = images(a, amax, -1, slices)
    p32 = products_f32(ai, bi, slices)
    e = exponent_of(bits_f32(amax))[..., :, None]
    f = exponent_of(bits_f32(bmax))[..., None, :]
    c = scale_products(p32, (e + f + product_shift(slices)).astype(np.int32))
    nonfinite = (amax >= INF_BITS)[..., :, None] | (bmax >= INF_BITS)[..., None, :]
    if nonfinite.any():
        c = np.where(nonfinite, canonical_nan(), c)
    if bias is not None:
        with np.errstate(all="ignore"):
            c = c + np.asarray(bias, dtype=np.float32)
        # x86 keeps a NaN operand's payload and makes inf - inf negative; the GPU
        # returns its own NaN: the contract names one NaN.
        c = np.where(np.isnan(c), canonical_nan(), c)
    return np.ascontiguousarray(c, dtype=np.float32)
