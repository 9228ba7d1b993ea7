"""Triton kernels for refute's counter-based RNG: Philox4x32-10, the uniforms
of a sampling draw, and the Gumbel-perturbed logits sampling is built on.

Twins of :mod:`refute.kernels.philox_reference` (definitions and constants
live there); the two must return the same bits. Philox needs only 32-bit
integer multiply (low half: ``*`` on uint32, which wraps; high half:
``tl.umulhi``), xor and wrapping add. The float work is the exact uniform
construction, refute's own ``log`` (DESIGN rule 3), one ``div_rn`` and one add.

Reusable device functions: :func:`philox4x32_10`, :func:`uniform_f32`,
:func:`sampling_uniform`, :func:`gumbel_f32`.

Words cross the kernel boundary as int64 holding 0..2**32-1 (torch has no
uint32 arithmetic on every device); seeds as int64 bit patterns of the uint64
seed.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from refute.kernels import philox_reference as ref
from refute.kernels.backend import CompileSpec, launch
from refute.kernels.bits_triton import bits_f32, f32_bits, negate
from refute.kernels.mathlib_triton import log_f32

PHILOX_BLOCK = 256
DEFAULT_BLOCK = 1024

PHILOX_M0: tl.constexpr = tl.constexpr(ref.PHILOX_M0)
PHILOX_M1: tl.constexpr = tl.constexpr(ref.PHILOX_M1)
PHILOX_W0: tl.constexpr = tl.constexpr(ref.PHILOX_W0)
PHILOX_W1: tl.constexpr = tl.constexpr(ref.PHILOX_W1)
PHILOX_ROUNDS: tl.constexpr = tl.constexpr(ref.PHILOX_ROUNDS)
SAMPLING_STREAM: tl.constexpr = tl.constexpr(ref.SAMPLING_STREAM)
UNIFORM_SHIFT: tl.constexpr = tl.constexpr(ref.UNIFORM_SHIFT)
UNIFORM_HALF: tl.constexpr = tl.constexpr(ref.UNIFORM_HALF)
UNIFORM_SCALE: tl.constexpr = tl.constexpr(ref.UNIFORM_SCALE)
CANONICAL_NAN_BITS: tl.constexpr = tl.constexpr(ref.CANONICAL_NAN_BITS)
ABS_MASK: tl.constexpr = tl.constexpr(ref.ABS_MASK)
INF_BITS: tl.constexpr = tl.constexpr(ref.INF_BITS)


@triton.jit
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32-10 of counter (c0, c1, c2, c3) under key (k0, k1), all
    uint32 tensors of one shape; returns the four uint32 output words."""
    m0 = tl.full(c0.shape, PHILOX_M0, tl.uint32)
    m1 = tl.full(c0.shape, PHILOX_M1, tl.uint32)
    w0 = tl.full(c0.shape, PHILOX_W0, tl.uint32)
    w1 = tl.full(c0.shape, PHILOX_W1, tl.uint32)
    for _ in tl.static_range(PHILOX_ROUNDS):
        hi0 = tl.umulhi(c0, m0)
        lo0 = c0 * m0
        hi1 = tl.umulhi(c2, m1)
        lo1 = c2 * m1
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        # The bump after the last round is dead and is dropped by the compiler.
        k0 = k0 + w0
        k1 = k1 + w1
    return c0, c1, c2, c3


@triton.jit
def uniform_f32(word):
    """float32 ``((word >> 9) + 0.5) * 2**-23`` of a uint32 word (exact)."""
    k = (word >> UNIFORM_SHIFT).to(tl.int32)  # < 2**23, so the float conversion is exact
    return (k.to(tl.float32) + UNIFORM_HALF) * UNIFORM_SCALE


@triton.jit
def sampling_uniform(seed, sequence, position, idx):
    """Uniforms of vocabulary indices ``idx`` (int32 tensor >= 0) for the draw
    of token ``position`` of ``sequence`` under ``seed`` (int64 scalars; the
    seed a bit pattern, the others in [0, 2**32)): word ``idx % 4`` of Philox
    at counter (idx // 4, position, sequence, SAMPLING_STREAM)."""
    c0 = (idx >> 2).to(tl.uint32)
    zero = c0 * 0
    # Narrowing int64 -> uint32 keeps the low 32 bits: the seed's low and high words.
    k0 = zero + seed.to(tl.uint32)
    k1 = zero + (seed >> 32).to(tl.uint32)
    w0, w1, w2, w3 = philox4x32_10(
        c0, zero + position.to(tl.uint32), zero + sequence.to(tl.uint32), tl.full(c0.shape, SAMPLING_STREAM, tl.uint32), k0, k1
    )
    lane = idx & 3
    word = tl.where(lane == 0, w0, tl.where(lane == 1, w1, tl.where(lane == 2, w2, w3)))
    return uniform_f32(word)


@triton.jit
def gumbel_f32(u):
    """``-log(-log(u))`` with refute's log: finite for every uniform."""
    return negate(log_f32(negate(log_f32(u))))


@triton.jit
def canonicalize_nan(x):
    """float32 ``x`` with every NaN replaced by the canonical NaN 0x7FC00000
    (the GPU's div.rn and numpy write different NaN bits)."""
    b = f32_bits(x)
    return bits_f32(tl.where((b & ABS_MASK) > INF_BITS, CANONICAL_NAN_BITS, b))


@triton.jit
def _philox_kernel(ctr_ptr, key_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """out[i, :] = philox4x32_10(ctr[i, :], key[i, :]) for contiguous int64
    rows of 4, 2 and 4 words."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    c0 = tl.load(ctr_ptr + offs * 4, mask=m, other=0).to(tl.uint32)
    c1 = tl.load(ctr_ptr + offs * 4 + 1, mask=m, other=0).to(tl.uint32)
    c2 = tl.load(ctr_ptr + offs * 4 + 2, mask=m, other=0).to(tl.uint32)
    c3 = tl.load(ctr_ptr + offs * 4 + 3, mask=m, other=0).to(tl.uint32)
    k0 = tl.load(key_ptr + offs * 2, mask=m, other=0).to(tl.uint32)
    k1 = tl.load(key_ptr + offs * 2 + 1, mask=m, other=0).to(tl.uint32)
    w0, w1, w2, w3 = philox4x32_10(c0, c1, c2, c3, k0, k1)
    # uint32 -> int64 zero-extends: the stored values are 0..2**32-1.
    tl.store(out_ptr + offs * 4, w0.to(tl.int64), mask=m)
    tl.store(out_ptr + offs * 4 + 1, w1.to(tl.int64), mask=m)
    tl.store(out_ptr + offs * 4 + 2, w2.to(tl.int64), mask=m)
    tl.store(out_ptr + offs * 4 + 3, w3.to(tl.int64), mask=m)


def philox_launch(counter: torch.Tensor, key: torch.Tensor, block: int = PHILOX_BLOCK) -> torch.Tensor:
    """Philox words of contiguous int64 ``counter`` [N, 4] under ``key`` [N, 2]
    (values in [0, 2**32)) -> int64 [N, 4]."""
    n = counter.shape[0]
    out = torch.empty((n, 4), dtype=torch.int64, device=counter.device)
    if n:
        launch(_philox_kernel, (triton.cdiv(n, block),), counter, key, out, n, BLOCK=block)
    return out


@triton.jit(do_not_specialize=["n"])
def _uniform_kernel(seed_ptr, seq_ptr, pos_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """out[row, i] = sampling_uniform(seed[row], seq[row], pos[row], i), i < n."""
    row = tl.program_id(0).to(tl.int64)
    idx = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    u = sampling_uniform(tl.load(seed_ptr + row), tl.load(seq_ptr + row), tl.load(pos_ptr + row), idx)
    tl.store(out_ptr + row * n + idx, u, mask=idx < n)


def uniforms_launch(
    seeds: torch.Tensor, sequences: torch.Tensor, positions: torch.Tensor, n: int, block: int = DEFAULT_BLOCK
) -> torch.Tensor:
    """float32 [B, n] uniforms for int64 [B] seeds (bit patterns), sequences
    and positions (in [0, 2**32)); ``n`` <= MAX_DRAW_INDEX."""
    rows = seeds.shape[0]
    out = torch.empty((rows, n), dtype=torch.float32, device=seeds.device)
    if rows and n:
        launch(_uniform_kernel, (rows, triton.cdiv(n, block)), seeds, sequences, positions, out, n, BLOCK=block)
    return out


@triton.jit(do_not_specialize=["n"])
def _gumbel_scores_kernel(
    logits_ptr, temp_ptr, seed_ptr, seq_ptr, pos_ptr, z_ptr, score_ptr, n, BLOCK: tl.constexpr
):
    """z = div_rn(logits, T[row]) and score = z + gumbel(u) for a [rows, n]
    contiguous float32 logits tensor; NaNs canonical."""
    row = tl.program_id(0).to(tl.int64)
    idx = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    m = idx < n
    x = tl.load(logits_ptr + row * n + idx, mask=m, other=0.0)
    z = canonicalize_nan(tl.math.div_rn(x, tl.load(temp_ptr + row)))
    u = sampling_uniform(tl.load(seed_ptr + row), tl.load(seq_ptr + row), tl.load(pos_ptr + row), idx)
    tl.store(z_ptr + row * n + idx, z, mask=m)
    tl.store(score_ptr + row * n + idx, canonicalize_nan(z + gumbel_f32(u)), mask=m)


def gumbel_scores_launch(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    seeds: torch.Tensor,
    sequences: torch.Tensor,
    positions: torch.Tensor,
    block: int = DEFAULT_BLOCK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, score) float32 [B, V] for contiguous float32 ``logits`` [B, V],
    float32 ``temperature`` [B] and int64 [B] seeds, sequences, positions."""
    rows, n = logits.shape
    z = torch.empty_like(logits)
    score = torch.empty_like(logits)
    if rows and n:
        launch(
            _gumbel_scores_kernel,
            (rows, triton.cdiv(n, block)),
            logits,
            temperature,
            seeds,
            sequences,
            positions,
            z,
            score,
            n,
            BLOCK=block,
        )
    return z, score


_ROW_ARGS = {"seed_ptr": "*i64", "seq_ptr": "*i64", "pos_ptr": "*i64"}

COMPILE_SPECS: list[CompileSpec] = [
    CompileSpec(
        _philox_kernel,
        {"ctr_ptr": "*i64", "key_ptr": "*i64", "out_ptr": "*i64", "n": "i32", "BLOCK": "constexpr"},
        {"BLOCK": PHILOX_BLOCK},
    ),
    CompileSpec(
        _uniform_kernel,
        {**_ROW_ARGS, "out_ptr": "*fp32", "n": "i32", "BLOCK": "constexpr"},
        {"BLOCK": DEFAULT_BLOCK},
    ),
    CompileSpec(
        _gumbel_scores_kernel,
        {
            "logits_ptr": "*fp32",
            "temp_ptr": "*fp32",
            **_ROW_ARGS,
            "z_ptr": "*fp32",
            "score_ptr": "*fp32",
            "n": "i32",
            "BLOCK": "constexpr",
        },
        {"BLOCK": DEFAULT_BLOCK},
    ),
]
