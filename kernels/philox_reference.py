"""numpy reference of refute's counter-based RNG (Philox4x32-10) and of the
Gumbel-perturbed logits that sampling is built on.

Written independently of :mod:`refute.kernels.philox_triton` (it never calls
Triton). This module is the single home of the RNG's constants; the Triton
module imports them from here. Definitions (docs/numerics.md):

* ``philox4x32(counter, key)`` is Philox4x32-10 of Salmon, Moraes, Dror and
  Shaw, "Parallel Random Numbers: As Easy as 1, 2, 3" (SC 2011), exactly as in
  the Random123 library, so the published known-answer vectors apply.
* The uniform for vocabulary index ``i`` of the draw of token ``position`` of
  sequence ``sequence`` under ``seed`` is word ``i % 4`` of
  ``philox4x32((i // 4, position, sequence, SAMPLING_STREAM),
  (seed mod 2**32, seed // 2**32))``, mapped by :func:`uniform_from_words`.
  Nothing in the counter or key names a batch slot, so draws never depend on
  the batch composition.
* ``gumbel(u) = -log(-log(u))`` with refute's own log
  (:mod:`refute.kernels.mathlib_reference`).
* ``gumbel_scores``: ``z = logit / T`` (correctly rounded division) and
  ``score = z + gumbel(u)``: the argmax of the score over a token set is an
  exact Gumbel-max sample from softmax(z) restricted to that set.

All words are held as uint32 values; products are formed in uint64 so the
high and low halves of the 32x32-bit multiply are exact.
"""

from __future__ import annotations

import numpy as np

from refute.kernels import mathlib_reference
from refute.kernels.bits_reference import bits_f32, f32_bits

# Philox4x32 multipliers and Weyl key increments (Random123's PHILOX_M4x32_0/1,
# PHILOX_W32_0/1; W0 and W1 are the golden ratio and sqrt(3) - 1 in 0.32 fixed point).
PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
PHILOX_ROUNDS = 10
WORD_MASK = 0xFFFFFFFF
WORDS_PER_COUNTER = 4

# Fourth counter word of every sampling draw ("SAMP" in ASCII): other consumers
# of the same seed must use another stream value, so their words never collide.
SAMPLING_STREAM = 0x53414D50

# A uniform keeps the top 23 bits of its word: k = word >> 9 in [0, 2**23), and
# u = (k + 0.5) * 2**-23. k + 0.5 needs 24 significant bits, so it is an exact
# float32 (with 24 bits, k + 0.5 would round for k >= 2**23, and the top word
# values would round to u = 1); the scaling by a power of two is exact too.
UNIFORM_SHIFT = 9
UNIFORM_HALF = 0.5
UNIFORM_SCALE = float.fromhex("0x1p-23")
# Largest vocabulary a draw may index: i // 4 must fit a counter word, and the
# kernels index with int32.
MAX_DRAW_INDEX = 2**31 - 1
# NaN logits give NaN z and scores; every backend writes this one NaN.
CANONICAL_NAN_BITS = 0x7FC00000
ABS_MASK = 0x7FFFFFFF
INF_BITS = 0x7F800000


def _words(a: np.ndarray, name: str) -> np.ndarray:
    """``a`` as uint64 holding 32-bit words; raise if a value is out of range."""
    a = np.asarray(a)
    if a.dtype.kind not in "iu":
        raise TypeError(f"{name}: expected integer words, got {a.dtype}")
    if a.size and (int(a.min()) < 0 or int(a.max()) > WORD_MASK):
        raise ValueError(f"{name}: words must lie in [0, 2**32)")
    return a.astype(np.uint64)


def _mulhilo(a: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(high, low) 32-bit halves of the exact 64-bit product a * m."""
    p = a * np.uint64(m)  # < 2**64: exact in uint64
    return p >> np.uint64(32), p & np.uint64(WORD_MASK)


def philox4x32(counter: np.ndarray, key: np.ndarray, rounds: int = PHILOX_ROUNDS) -> np.ndarray:
    """Philox4x32-``rounds`` of ``counter`` [..., 4] under ``key`` [..., 2]
    (broadcast against each other) -> uint32 [..., 4].

    One round maps (c0, c1, c2, c3) under (k0, k1) to
    (hi(M1*c2) ^ c1 ^ k0, lo(M1*c2), hi(M0*c0) ^ c3 ^ k1, lo(M0*c0));
    the key gains (W0, W1) mod 2**32 between rounds.
    """
    counter = _words(counter, "counter")
    key = _words(key, "key")
    if counter.shape[-1:] != (WORDS_PER_COUNTER,) or key.shape[-1:] != (2,):
        raise ValueError(f"expected counter [..., 4] and key [..., 2], got {counter.shape} and {key.shape}")
    shape = np.broadcast_shapes(counter.shape[:-1], key.shape[:-1])
    c0, c1, c2, c3 = (np.broadcast_to(counter[..., j], shape) for j in range(4))
    k0, k1 = (np.broadcast_to(key[..., j], shape) for j in range(2))
    mask = np.uint64(WORD_MASK)
    for r in range(rounds):
        if r:
            k0 = (k0 + np.uint64(PHILOX_W0)) & mask
            k1 = (k1 + np.uint64(PHILOX_W1)) & mask
        hi0, lo0 = _mulhilo(c0, PHILOX_M0)
        hi1, lo1 = _mulhilo(c2, PHILOX_M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return np.stack([c0, c1, c2, c3], axis=-1).astype(np.uint32)


def uniform_from_words(words: np.ndarray) -> np.ndarray:
    """float32 ``((word >> 9) + 0.5) * 2**-23``: exact, in [2**-24, 1 - 2**-24]."""
    k = (np.asarray(words).astype(np.uint32) >> np.uint32(UNIFORM_SHIFT)).astype(np.float32)  # < 2**23: exact
    return (k + np.float32(UNIFORM_HALF)) * np.float32(UNIFORM_SCALE)


def seed_key(seeds: np.ndarray) -> np.ndarray:
    """Philox keys [..., 2] = (low, high 32 bits) of 64-bit seeds given as
    int64 bit patterns (or uint64)."""
    s = np.asarray(seeds).astype(np.int64).view(np.uint64)
    return np.stack([s & np.uint64(WORD_MASK), s >> np.uint64(32)], axis=-1)


def draw_uniforms(seeds: np.ndarray, sequences: np.ndarray, positions: np.ndarray, n: int) -> np.ndarray:
    """float32 [B, n]: row b holds the uniforms of vocabulary indices 0..n-1 for
    (seeds[b], sequences[b], positions[b]); seeds are int64 bit patterns,
    sequences and positions int64 in [0, 2**32)."""
    idx = np.arange(n, dtype=np.int64)
    seq = _words(sequences, "sequences")[:, None]
    pos = _words(positions, "positions")[:, None]
    b = seq.shape[0]
    counter = np.stack(
        np.broadcast_arrays(
            (idx // WORDS_PER_COUNTER).astype(np.uint64)[None, :], pos, seq, np.uint64(SAMPLING_STREAM)
        ),
        axis=-1,
    ).reshape(b, n, 4)
    words = philox4x32(counter, seed_key(seeds)[:, None, :])
    pick = (idx % WORDS_PER_COUNTER)[None, :, None]
    return uniform_from_words(np.take_along_axis(words, np.broadcast_to(pick, (b, n, 1)), axis=-1)[..., 0])


def canonicalize_nan(x: np.ndarray) -> np.ndarray:
    """float32 ``x`` with every NaN replaced by the canonical NaN 0x7FC00000."""
    b = f32_bits(x)
    return bits_f32(np.where((b & ABS_MASK) > INF_BITS, np.int32(CANONICAL_NAN_BITS), b))


def gumbel(u: np.ndarray) -> np.ndarray:
    """float32 ``-log(-log(u))`` with refute's log; finite for every uniform."""
    return -mathlib_reference.log(-mathlib_reference.log(u))


def gumbel_scores(
    logits: np.ndarray,
    temperature: np.ndarray,
    seeds: np.ndarray,
    sequences: np.ndarray,
    positions: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(z, score), both float32 [B, V]: ``z = logits / temperature[:, None]``
    (one correctly rounded division) and ``score = z + gumbel(u)`` with the
    uniforms of :func:`draw_uniforms`; NaNs are canonical."""
    logits = np.asarray(logits, dtype=np.float32)
    g = gumbel(draw_uniforms(seeds, sequences, positions, logits.shape[-1]))
    with np.errstate(all="ignore"):
        z = canonicalize_nan(logits / np.asarray(temperature, dtype=np.float32)[:, None])
        return z, canonicalize_nan(z + g)
