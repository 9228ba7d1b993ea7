"""Triton kernels of refute's exact GEMM (semantics: :mod:`gemm_reference`).

Three kernels, each with its launch wrapper beside it:

* :func:`gemm_absmax_kernel` - per row (of A) or column (of B) the integer max
  of the abs bits along K: exact, so order- and tile-free.
* :func:`gemm_slice_kernel` - the integer images, written as ``s`` planes of
  signed int8 digits (sign-magnitude base 128: every digit has the image's sign).
* :func:`gemm_kernel` - for every slice pair (p, q) an integer ``tl.dot`` of
  int8 tiles into int32 (integer tensor cores on the GPU), summed per level
  ``l = p + q``. The int32 level sums are flushed into two int64 accumulators
  after at most ``chunk_k`` terms, a bound that keeps them below 2**31. The
  epilogue combines them into the exact product P = H * 2**32 + L, rounds once
  to float32, scales, and adds the bias.

Everything before the final rounding is integer arithmetic, so the bits depend
neither on the block sizes nor on the chunk length (tests check both).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from refute.kernels.backend import CompileSpec, launch
from refute.kernels.bits_triton import bits_f32, exponent_of, f32_bits, ldexp, negate, round_half_even_to_int64
from refute.kernels.gemm_reference import (
    ABS_MASK,
    CANONICAL_NAN_BITS,
    DIRECT_H_LIMIT,
    INF_BITS,
    LIMB_BITS,
    MAX_SLICES,
    SLICE_BITS,
)

DIGIT_MAX = 127  # largest int8 digit magnitude
INT32_MAX = 2**31 - 1
# Level l = p + q sums at most min(l + 1, 2s - 1 - l) <= s slice pairs; each
# pair contributes at most 127**2 per K term.
DIGIT_PRODUCT_MAX = DIGIT_MAX * DIGIT_MAX
# The low accumulator takes levels 0..3, the high one levels 4..6 (times 2**28).
LEVELS_IN_LOW = 4

_ABS_MASK: tl.constexpr = tl.constexpr(ABS_MASK)
_INF_BITS: tl.constexpr = tl.constexpr(INF_BITS)
_NAN_BITS: tl.constexpr = tl.constexpr(CANONICAL_NAN_BITS)
_DIGIT_BITS: tl.constexpr = tl.constexpr(SLICE_BITS)
_DIGIT_MASK: tl.constexpr = tl.constexpr((1 << SLICE_BITS) - 1)
_LIMB_BITS: tl.constexpr = tl.constexpr(LIMB_BITS)
_DIRECT_H_LIMIT: tl.constexpr = tl.constexpr(DIRECT_H_LIMIT)
_HIGH_SHIFT: tl.constexpr = tl.constexpr(SLICE_BITS * LEVELS_IN_LOW)  # 28
_LIMB_BASE: tl.constexpr = tl.constexpr(1 << LIMB_BITS)  # 2**32 as an int64 constant
_TWO_POW_32: tl.constexpr = tl.constexpr(4294967296.0)  # 2**32, exact in float32

DEFAULT_BLOCKS = {"block_m": 64, "block_n": 64, "block_k": 64}
# Row-wise kernels (max and slicing) use tiles of ROW_TILE_ELEMS elements:
# up to ROW_TILE_MAX_R rows, and the rest of the tile along K (so a single
# column of B still gets long tiles). Tile shapes never change the bits.
ROW_TILE_MAX_R = 32
ROW_TILE_ELEMS = 2048
MIN_DOT_BLOCK = 16  # tl.dot needs every block dimension >= 16 ...
MIN_DOT_BLOCK_K = 32  # ... and int8 operands need K >= 32 (mma m16n8k32) on sm_80/sm_90


def row_tile(rows: int) -> tuple[int, int]:
    """(BLOCK_R, BLOCK_K) for the row-wise kernels on ``rows`` rows."""
    block_r = min(ROW_TILE_MAX_R, triton.next_power_of_2(max(rows, 1)))
    return block_r, ROW_TILE_ELEMS // block_r


def max_chunk_k(slices: int, block_k: int) -> int:
    """Largest multiple of ``block_k`` whose level sums provably fit in int32:
    chunk * 127**2 * s <= 2**31 - 1."""
    return (INT32_MAX // (DIGIT_PRODUCT_MAX * slices * block_k)) * block_k


# ---------------------------------------------------------------------------
# 1. max |x| bits per row or column


@triton.jit
def gemm_absmax_kernel(
    x_ptr,
    out_ptr,
    R,
    K,
    stride_xb,
    stride_xr,
    stride_xk,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """out[b, r] = max_k (bits(x[b, r, k]) & 0x7FFFFFFF); 0 when K == 0.

    Grid: (cdiv(R, BLOCK_R) * batch,). ``out`` is contiguous (batch, R).
    """
    pid = tl.program_id(0)
    r_blocks = tl.cdiv(R, BLOCK_R)
    pid_b = pid // r_blocks
    offs_r = (pid % r_blocks) * BLOCK_R + tl.arange(0, BLOCK_R)
    mask_r = offs_r < R
    base = x_ptr + pid_b.to(tl.int64) * stride_xb + offs_r.to(tl.int64)[:, None] * stride_xr
    m = tl.zeros((BLOCK_R,), dtype=tl.int32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask = mask_r[:, None] & (offs_k[None, :] < K)
        x = tl.load(base + offs_k.to(tl.int64)[None, :] * stride_xk, mask=mask, other=0.0)
        m = tl.maximum(m, tl.max(f32_bits(x) & _ABS_MASK, axis=1))
    tl.store(out_ptr + pid_b.to(tl.int64) * R + offs_r, m, mask=mask_r)


def absmax_launch(x: torch.Tensor) -> torch.Tensor:
    """Max abs bits of float32 ``x`` (batch, R, K) along K -> int32 (batch, R)."""
    batch, rows, k = x.shape
    out = torch.empty((batch, rows), dtype=torch.int32, device=x.device)
    if out.numel() == 0:
        return out
    block_r, block_k = row_tile(rows)
    grid = (triton.cdiv(rows, block_r) * batch,)
    launch(
        gemm_absmax_kernel,
        grid,
        x,
        out,
        rows,
        k,
        x.stride(0),
        x.stride(1),
        x.stride(2),
        BLOCK_R=block_r,
        BLOCK_K=block_k,
    )
    return out


# ---------------------------------------------------------------------------
# 2. integer images as int8 digit planes


@triton.jit
def gemm_slice_kernel(
    x_ptr,
    maxbits_ptr,
    out_ptr,
    R,
    K,
    stride_xb,
    stride_xr,
    stride_xk,
    stride_op,
    stride_ob,
    stride_or,
    stride_ok,
    S: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """out[p, b, r, k] = digit p of clamp(rne(x[b, r, k] * 2**(7S-1-e_r))).

    ``maxbits`` is contiguous (batch, R) from :func:`gemm_absmax_kernel`.
    Grid: (cdiv(R, BLOCK_R) * cdiv(K, BLOCK_K) * batch,).
    """
    pid = tl.program_id(0)
    r_blocks = tl.cdiv(R, BLOCK_R)
    k_blocks = tl.cdiv(K, BLOCK_K)
    pid_b = pid // (r_blocks * k_blocks)
    rest = pid % (r_blocks * k_blocks)
    offs_r = (rest // k_blocks) * BLOCK_R + tl.arange(0, BLOCK_R)
    offs_k = (rest % k_blocks) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask_r = offs_r < R
    mask = mask_r[:, None] & (offs_k[None, :] < K)
    b64 = pid_b.to(tl.int64)
    r64 = offs_r.to(tl.int64)[:, None]
    k64 = offs_k.to(tl.int64)[None, :]

    maxbits = tl.load(maxbits_ptr + b64 * R + offs_r, mask=mask_r, other=0)
    e = exponent_of(bits_f32(maxbits))
    finite = maxbits < _INF_BITS
    x = tl.load(x_ptr + b64 * stride_xb + r64 * stride_xr + k64 * stride_xk, mask=mask, other=0.0)
    # Rows holding inf/NaN are imaged as zeros (their outputs are NaN anyway);
    # this also keeps non-finite values away from the float -> int conversion.
    x = tl.where(finite[:, None], x, 0.0)
    # gemm_reference.image_shift / image_limit, written with SLICE_BITS = 7.
    y = ldexp(x, (7 * S - 1 - e)[:, None])
    lim = (1 << (7 * S)) - 1
    q = tl.minimum(tl.maximum(round_half_even_to_int64(y), -lim), lim)
    mag = tl.abs(q)
    neg = q < 0
    out = out_ptr + b64 * stride_ob + r64 * stride_or + k64 * stride_ok
    plane = tl.full((), 0, tl.int64) + stride_op  # int64: 3 planes may pass 2**31
    for p in tl.static_range(S):
        d = (mag >> (_DIGIT_BITS * p)) & _DIGIT_MASK
        tl.store(out + p * plane, tl.where(neg, -d, d).to(tl.int8), mask=mask)


def slice_launch(x: torch.Tensor, maxbits: torch.Tensor, slices: int, out: torch.Tensor) -> None:
    """Write the digit planes of ``x`` (batch, R, K) into ``out``, a (s, batch, R, K)
    int8 view whose strides the GEMM kernel reads back."""
    batch, rows, k = x.shape
    if batch * rows * k == 0:
        return
    block_r, block_k = row_tile(rows)
    grid = (triton.cdiv(rows, block_r) * triton.cdiv(k, block_k) * batch,)
    launch(
        gemm_slice_kernel,
        grid,
        x,
        maxbits,
        out,
        rows,
        k,
        x.stride(0),
        x.stride(1),
        x.stride(2),
        out.stride(0),
        out.stride(1),
        out.stride(2),
        out.stride(3),
        S=slices,
        BLOCK_R=block_r,
        BLOCK_K=block_k,
    )


# ---------------------------------------------------------------------------
# 3. the integer GEMM and its rounding epilogue


@triton.jit
def _split32(x):
    """(x >> 32, x mod 2**32) for int64 x: x = hi * 2**32 + lo, 0 <= lo < 2**32."""
    hi = x >> _LIMB_BITS
    return hi, x - (hi << _LIMB_BITS)


@triton.jit
def limbs_to_f32(h, low):
    """fl32(h * 2**32 + low), one RNE rounding (twin of gemm_reference.limbs_to_f32)."""
    small = (h >= -_DIRECT_H_LIMIT) & (h < _DIRECT_H_LIMIT)
    direct = ((tl.where(small, h, 0) << _LIMB_BITS) + low).to(tl.float32)
    neg = h < 0
    low_zero = low == 0
    hm = tl.where(neg, tl.where(low_zero, -h, -h - 1), h)
    lm = tl.where(neg, tl.where(low_zero, 0, _LIMB_BASE - low), low)
    # |P| > 2**61 here, so hm >= 2**29 and bit 0 lies below the rounding bit:
    # a sticky bit there keeps the round-to-nearest-even decision exact.
    big = (hm | (lm != 0).to(tl.int64)).to(tl.float32) * _TWO_POW_32
    return tl.where(small, direct, tl.where(neg, negate(big), big))


@triton.jit
def gemm_kernel(
    a_ptr,
    b_ptr,
    amax_ptr,
    bmax_ptr,
    bias_ptr,
    c_ptr,
    batch_a_ptr,
    batch_b_ptr,
    M,
    N,
    K,
    stride_ap,
    stride_ab,
    stride_am,
    stride_ak,
    stride_bp,
    stride_bb,
    stride_bk,
    stride_bn,
    stride_cb,
    stride_cm,
    stride_cn,
    S: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    CHUNK_K: tl.constexpr,
):
    """C[b] = exact-GEMM(A[batch_a[b]], B[batch_b[b]]) from int8 digit planes.

    ``a`` planes are (S, batch_a, M, K), ``b`` planes (S, batch_b, K, N) (any
    strides); ``amax`` (batch_a, M) and ``bmax`` (batch_b, N) are contiguous max
    abs bits. Grid: (cdiv(M, BLOCK_M) * cdiv(N, BLOCK_N) * batch,).
    """
    pid = tl.program_id(0)
    m_blocks = tl.cdiv(M, BLOCK_M)
    n_blocks = tl.cdiv(N, BLOCK_N)
    pid_b = pid // (m_blocks * n_blocks)
    tile = pid % (m_blocks * n_blocks)
    offs_m = (tile // n_blocks) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = (tile % n_blocks) * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    ba = tl.load(batch_a_ptr + pid_b).to(tl.int64)
    bb = tl.load(batch_b_ptr + pid_b).to(tl.int64)
    a_rows = a_ptr + ba * stride_ab + offs_m.to(tl.int64)[:, None] * stride_am
    b_cols = b_ptr + bb * stride_bb + offs_n.to(tl.int64)[None, :] * stride_bn
    # Plane offsets in int64 (a plane stride times 3 may pass 2**31); adding to
    # an int64 zero also works when Triton passes a stride of 1 as a constexpr.
    plane_a = tl.full((), 0, tl.int64) + stride_ap
    plane_b = tl.full((), 0, tl.int64) + stride_bp

    # P = low + high * 2**28, both exact in int64 (see max_chunk_k and MAX_K).
    low = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int64)
    high = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int64)
    for kc in range(0, K, CHUNK_K):
        # t<l>: the int32 sum of level l = p + q over this chunk.
        t0 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        t1 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        t2 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        t3 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        t4 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        t5 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        t6 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
        for k0 in range(kc, tl.minimum(kc + CHUNK_K, K), BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            mask_k = offs_k < K
            a_ptrs = a_rows + offs_k.to(tl.int64)[None, :] * stride_ak
            b_ptrs = b_cols + offs_k.to(tl.int64)[:, None] * stride_bk
            for p in tl.static_range(S):
                a_p = tl.load(a_ptrs + p * plane_a, mask=mask_m[:, None] & mask_k[None, :], other=0)
                for q in tl.static_range(S):
                    b_q = tl.load(b_ptrs + q * plane_b, mask=mask_k[:, None] & mask_n[None, :], other=0)
                    if p + q == 0:
                        t0 = tl.dot(a_p, b_q, t0, out_dtype=tl.int32)
                    elif p + q == 1:
                        t1 = tl.dot(a_p, b_q, t1, out_dtype=tl.int32)
                    elif p + q == 2:
                        t2 = tl.dot(a_p, b_q, t2, out_dtype=tl.int32)
                    elif p + q == 3:
                        t3 = tl.dot(a_p, b_q, t3, out_dtype=tl.int32)
                    elif p + q == 4:
                        t4 = tl.dot(a_p, b_q, t4, out_dtype=tl.int32)
                    elif p + q == 5:
                        t5 = tl.dot(a_p, b_q, t5, out_dtype=tl.int32)
                    else:
                        t6 = tl.dot(a_p, b_q, t6, out_dtype=tl.int32)
        # Levels 0..3 weigh 2**(7l) < 2**22 and 4..6 weigh 2**28 * 2**(7(l-4)):
        # each flush adds < 2**53 to either accumulator.
        low += t0.to(tl.int64)
        if S >= 2:
            low += (t1.to(tl.int64) << _DIGIT_BITS) + (t2.to(tl.int64) << (2 * _DIGIT_BITS))
        if S >= 3:
            low += t3.to(tl.int64) << (3 * _DIGIT_BITS)
            high += t4.to(tl.int64)
        if S >= 4:
            high += (t5.to(tl.int64) << _DIGIT_BITS) + (t6.to(tl.int64) << (2 * _DIGIT_BITS))

    # Exact P = H * 2**32 + L with 0 <= L < 2**32.
    low_h, low_l = _split32(low)
    high_h = high >> (_LIMB_BITS - _HIGH_SHIFT)
    high_l = high - (high_h << (_LIMB_BITS - _HIGH_SHIFT))
    limb_h, limb_l = _split32(low_l + (high_l << _HIGH_SHIFT))
    p32 = limbs_to_f32(low_h + high_h + limb_h, limb_l)

    amax = tl.load(amax_ptr + ba * M + offs_m, mask=mask_m, other=0)
    bmax = tl.load(bmax_ptr + bb * N + offs_n, mask=mask_n, other=0)
    e = exponent_of(bits_f32(amax))
    f = exponent_of(bits_f32(bmax))
    c = ldexp(p32, e[:, None] + f[None, :] + (2 - 14 * S))  # gemm_reference.product_shift
    nan = bits_f32(tl.full((BLOCK_M, BLOCK_N), _NAN_BITS, dtype=tl.int32))
    nonfinite = (amax >= _INF_BITS)[:, None] | (bmax >= _INF_BITS)[None, :]
    c = tl.where(nonfinite, nan, c)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_n, mask=mask_n, other=0.0)
        c = c + bias[None, :]
        # The GPU's NaN (0x7FFFFFFF) and x86's (payload kept, inf-inf negative)
        # differ: the contract names one.
        c = tl.where(c != c, nan, c)
    c_ptrs = (
        c_ptr + pid_b.to(tl.int64) * stride_cb + offs_m.to(tl.int64)[:, None] * stride_cm + offs_n[None, :] * stride_cn
    )
    tl.store(c_ptrs, c, mask=mask_m[:, None] & mask_n[None, :])


def gemm_launch(
    a_planes: torch.Tensor,
    b_planes: torch.Tensor,
    amax: torch.Tensor,
    bmax: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor,
    batch_a: torch.Tensor,
    batch_b: torch.Tensor,
    *,
    block_m: int,
    block_n: int,
    block_k: int,
    chunk_k: int,
) -> None:
    """Run :func:`gemm_kernel`: planes (s, batch, M, K) and (s, batch, K, N),
    ``out`` (batch, M, N); ``batch_a``/``batch_b`` map each output batch to its
    A and B batch (broadcasting without copies)."""
    slices, _, m, k = a_planes.shape
    n = b_planes.shape[3]
    batch = out.shape[0]
    grid = (triton.cdiv(m, block_m) * triton.cdiv(n, block_n) * batch,)
    launch(
        gemm_kernel,
        grid,
        a_planes,
        b_planes,
        amax,
        bmax,
        bias if bias is not None else out,
        out,
        batch_a,
        batch_b,
        m,
        n,
        k,
        *a_planes.stride(),
        *b_planes.stride(),
        *out.stride(),
        S=slices,
        HAS_BIAS=bias is not None,
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        BLOCK_K=block_k,
        CHUNK_K=chunk_k,
    )


def _check_blocks(slices: int, block_m: int, block_n: int, block_k: int, chunk_k: int | None) -> int:
    """Validate the tile configuration; return the chunk length to use."""
    for name, v, least in (
        ("block_m", block_m, MIN_DOT_BLOCK),
        ("block_n", block_n, MIN_DOT_BLOCK),
        ("block_k", block_k, MIN_DOT_BLOCK_K),
    ):
        if v < least or v & (v - 1):
            raise ValueError(f"{name} must be a power of two >= {least}, got {v}")
    limit = max_chunk_k(slices, block_k)
    if chunk_k is None:
        return limit
    if chunk_k <= 0 or chunk_k % block_k or chunk_k > limit:
        raise ValueError(f"chunk_k must be a positive multiple of block_k={block_k} and <= {limit}, got {chunk_k}")
    return chunk_k


def gemm_triton(
    a: torch.Tensor,
    b: torch.Tensor,
    slices: int,
    bias: torch.Tensor | None = None,
    *,
    block_m: int = DEFAULT_BLOCKS["block_m"],
    block_n: int = DEFAULT_BLOCKS["block_n"],
    block_k: int = DEFAULT_BLOCKS["block_k"],
    chunk_k: int | None = None,
) -> torch.Tensor:
    """Exact GEMM of float32 ``a`` (..., M, K) and ``b`` (..., K, N) with Triton.

    Any strides (a transpose is a stride swap); batch dimensions broadcast.
    ``block_*`` and ``chunk_k`` (int32 flush length, default the largest safe
    one) change the schedule, never the bits. Inputs are assumed validated.
    """
    if not 1 <= slices <= MAX_SLICES:
        raise ValueError(f"slices must be in 1..{MAX_SLICES}, got {slices}")
    chunk = _check_blocks(slices, block_m, block_n, block_k, chunk_k)
    m, k = a.shape[-2:]
    n = b.shape[-1]
    batch_shape = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    batch = math.prod(batch_shape)
    device = a.device
    a3 = a.reshape(math.prod(a.shape[:-2]), m, k)
    b3 = b.reshape(math.prod(b.shape[:-2]), k, n)

    amax = absmax_launch(a3)
    bmax = absmax_launch(b3.transpose(1, 2))
    a_planes = torch.empty((slices, a3.shape[0], m, k), dtype=torch.int8, device=device)
    b_planes = torch.empty((slices, b3.shape[0], k, n), dtype=torch.int8, device=device)
    slice_launch(a3, amax, slices, a_planes)
    slice_launch(b3.transpose(1, 2), bmax, slices, b_planes.transpose(2, 3))

    def batch_index(shape: torch.Size) -> torch.Tensor:
        count = math.prod(shape)
        idx = torch.arange(count, dtype=torch.int32, device=device).reshape(shape)
        return idx.expand(batch_shape).reshape(-1).contiguous()

    out = torch.empty((batch, m, n), dtype=torch.float32, device=device)
    if out.numel():
        gemm_launch(
            a_planes,
            b_planes,
            amax,
            bmax,
            bias,
            out,
            batch_index(a.shape[:-2]),
            batch_index(b.shape[:-2]),
            block_m=block_m,
            block_n=block_n,
            block_k=block_k,
            chunk_k=chunk,
        )
    return out.reshape(*batch_shape, m, n)


COMPILE_SPECS: list[CompileSpec] = [
    *[
        CompileSpec(
            gemm_absmax_kernel,
            {
                "x_ptr": "*fp32",
                "out_ptr": "*i32",
                "R": "i32",
                "K": "i32",
                "stride_xb": "i32",
                "stride_xr": "i32",
                "stride_xk": "i32",
                "BLOCK_R": "constexpr",
                "BLOCK_K": "constexpr",
            },
            {"BLOCK_R": block_r, "BLOCK_K": ROW_TILE_ELEMS // block_r},
        )
        for block_r in (1, ROW_TILE_MAX_R)
    ],
    *[
        CompileSpec(
            gemm_slice_kernel,
            {
                "x_ptr": "*fp32",
                "maxbits_ptr": "*i32",
                "out_ptr": "*i8",
                "R": "i32",
                "K": "i32",
                **{f"stride_{s}": "i32" for s in ("xb", "xr", "xk", "op", "ob", "or", "ok")},
                "S": "constexpr",
                "BLOCK_R": "constexpr",
                "BLOCK_K": "constexpr",
            },
            {"S": s, "BLOCK_R": block_r, "BLOCK_K": ROW_TILE_ELEMS // block_r},
        )
        for s in range(1, MAX_SLICES + 1)
        for block_r in (1, ROW_TILE_MAX_R)
    ],
    *[
        CompileSpec(
            gemm_kernel,
            {
                "a_ptr": "*i8",
                "b_ptr": "*i8",
                "amax_ptr": "*i32",
                "bmax_ptr": "*i32",
                "bias_ptr": "*fp32",
                "c_ptr": "*fp32",
                "batch_a_ptr": "*i32",
                "batch_b_ptr": "*i32",
                "M": "i32",
                "N": "i32",
                "K": "i32",
                **{
                    f"stride_{s}": "i32"
                    for s in ("ap", "ab", "am", "ak", "bp", "bb", "bk", "bn", "cb", "cm", "cn")
                },
                "S": "constexpr",
                "HAS_BIAS": "constexpr",
                "BLOCK_M": "constexpr",
                "BLOCK_N": "constexpr",
                "BLOCK_K": "constexpr",
                "CHUNK_K": "constexpr",
            },
            {
                "S": s,
                "HAS_BIAS": has_bias,
                **{k.upper(): v for k, v in DEFAULT_BLOCKS.items()},
                "CHUNK_K": max_chunk_k(s, DEFAULT_BLOCKS["block_k"]),
            },
        )
        for s in range(1, MAX_SLICES + 1)
        for has_bias in (False, True)
    ],
]
