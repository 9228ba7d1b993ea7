"""On-chain ExactDot (contracts/src/ExactDot.sol through Float32) == refute.kernels.gemm, bit for bit.

The reference is ``gemm(a, b, slices=s, bias=..., backend="reference")`` for a
(1, K) row times a (K, 1) column: its single element must equal ``dotElement``.
Rows: Gaussian, wide exponent spread, subnormal and zero rows, values that round
at the image clamp, inf/NaN rows, and SmolLM2's K = 576 and 1536.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from eth_tester.exceptions import TransactionFailed
from web3.exceptions import ContractLogicError

from refute.contracts.float32 import Float32Contract
from refute.kernels.gemm import gemm

REVERTED = (ContractLogicError, TransactionFailed)


@pytest.fixture(scope="module")
def f32() -> Float32Contract:
    return Float32Contract()


def reference(x: np.ndarray, w: np.ndarray, slices: int, bias: float | None) -> int:
    b = None if bias is None else torch.tensor([bias], dtype=torch.float32)
    c = gemm(torch.from_numpy(x[None, :].copy()), torch.from_numpy(w[:, None].copy()), slices=slices, bias=b, backend="reference")
    return int(c.numpy().view(np.uint32)[0, 0])


def dot_element_le(f32: Float32Contract, x: np.ndarray, w: np.ndarray, slices: int, bias: float | None = None) -> int:
    """dotElementLE (the little-endian bytes path ElementOps.linear takes) on the same row and column."""
    xs, ws, s, has_bias, bias_bits = f32._dot_args(x, w, slices, bias)
    le = lambda v: np.asarray(v, dtype="<u4").tobytes()  # noqa: E731
    return int(f32.call("dotElementLE", le(xs), le(ws), s, has_bias, bias_bits))


def check(f32: Float32Contract, x: np.ndarray, w: np.ndarray, slices: int, bias: float | None = None) -> None:
    got = f32.dot_element(x, w, slices, bias)
    want = reference(x, w, slices, bias)
    assert got == want, (hex(got), hex(want), slices, x.size)
    got_le = dot_element_le(f32, x, w, slices, bias)
    assert got_le == want, (hex(got_le), hex(want), slices, x.size)


def row(rng: np.random.Generator, k: int, kind: str) -> np.ndarray:
    if kind == "normal":
        return rng.normal(size=k).astype(np.float32)
    if kind == "spread":  # 60 binades wide, random signs
        return (np.exp2(rng.uniform(-30, 30, k)) * rng.choice([-1, 1], k)).astype(np.float32)
    if kind == "subnormal":
        return (rng.integers(0, 1 << 23, k, dtype=np.uint32) | (rng.integers(0, 2, k, dtype=np.uint32) << np.uint32(31))).view(np.float32)
    if kind == "huge":
        return (rng.uniform(-1, 1, k) * 3e38).astype(np.float32)
    if kind == "sparse":
        v = rng.normal(size=k).astype(np.float32)
        v[rng.random(k) < 0.7] = 0.0
        return v
    if kind == "clamp":  # values just below 2^(e+1): their images round up to the clamp
        return (np.float32(2.0) - np.float32(2.0**-23) * rng.integers(0, 3, k)).astype(np.float32) * rng.choice([-1, 1], k).astype(np.float32)
    raise ValueError(kind)


KINDS = ("normal", "spread", "subnormal", "huge", "sparse", "clamp")


@pytest.mark.parametrize("slices", [1, 2, 3, 4])
def test_drawn_rows(f32: Float32Contract, slices: int) -> None:
    rng = np.random.default_rng(slices)
    for i in range(8):
        k = int(rng.integers(1, 80))
        x = row(rng, k, KINDS[int(rng.integers(0, len(KINDS)))])
        w = row(rng, k, KINDS[int(rng.integers(0, len(KINDS)))])
        bias = None if i % 3 else float(np.float32(rng.normal()))
        check(f32, x, w, slices, bias)


@pytest.mark.slow
@pytest.mark.parametrize(("k", "slices"), [(576, 1), (576, 2), (576, 4), (1536, 2), (1536, 3)])
def test_smollm2_sizes(f32: Float32Contract, k: int, slices: int) -> None:
    rng = np.random.default_rng(k + slices)
    check(f32, row(rng, k, "normal"), row(rng, k, "spread"), slices)
    check(f32, row(rng, k, "normal"), (row(rng, k, "normal") * np.float32(0.02)).astype(np.float32), slices, 0.125)


def test_special_rows(f32: Float32Contract) -> None:
    z = np.zeros(5, np.float32)
    one = np.ones(5, np.float32)
    check(f32, z, one, 2)  # P = 0: +0
    check(f32, -z, one, 2)  # -0 terms still give +0
    check(f32, z, one, 2, -0.0)  # +0 + -0 = +0
    check(f32, np.array([np.inf, 1], np.float32), np.ones(2, np.float32), 2)  # NaN, not inf
    check(f32, np.array([np.nan, 1], np.float32), np.ones(2, np.float32), 2, 1.0)
    check(f32, one, one, 2, float("inf"))
    check(f32, np.full(3, 3e38, np.float32), np.full(3, 3e38, np.float32), 2)  # overflow to inf
    check(f32, np.full(3, 1e-30, np.float32), np.full(3, -1e-20, np.float32), 4)  # subnormal result
    check(f32, np.zeros(0, np.float32), np.zeros(0, np.float32), 2)  # K = 0
    with pytest.raises(REVERTED):
        f32.dot_element(one, one[:4], 2)
    with pytest.raises(REVERTED):
        f32.dot_element(one, one, 5)


def _row_at(rng: np.random.Generator, k: int, e: int, extras: str) -> np.ndarray:
    """K values whose largest magnitude lies in [2^e, 2^(e+1)) (e >= -126), with
    subnormals, zeros, -0 and values just below the max mixed in (``extras``)."""
    v = (rng.uniform(1, 2, k) * np.exp2(e - rng.integers(0, 30, k))).astype(np.float32)
    if "sub" in extras:
        sub = (rng.integers(0, 1 << 23, k, dtype=np.uint32)).view(np.float32)
        v = np.where(rng.random(k) < 0.4, sub, v).astype(np.float32)
    if "zero" in extras:
        v[rng.random(k) < 0.2] = 0.0
    v[int(rng.integers(0, k))] = np.float32(np.ldexp(np.float32(2.0) - np.float32(2.0**-23), e))  # the row max
    return (v * rng.choice([-1, 1], k).astype(np.float32)).astype(np.float32)


@pytest.mark.parametrize("slices", [1, 2, 3, 4])
def test_le_fast_path_boundary(f32: Float32Contract, slices: int) -> None:
    """dotElementLE's fast path (row max exponent e >= 7s - 126: every subnormal image is 0)
    and its fallback, at and around the boundary, with subnormals and zeros in the rows,
    and every K mod 8 (the last calldata word's masked lanes)."""
    rng = np.random.default_rng(100 + slices)
    shift = 7 * slices - 1
    for d in (-2, -1, 0, 1, 2, 30):
        for k in (1, 7, 8, 9, 13, 16, 23):
            ex = max(shift - 125 + d, -126)
            ew = max(shift - 125 + int(rng.integers(-1, 2)), -126) if d < 30 else int(rng.integers(-20, 20))
            x = _row_at(rng, k, ex, "sub zero")
            w = _row_at(rng, k, ew, "sub" if k % 2 else "zero")
            check(f32, x, w, slices)


def test_le_rows_ignore_bytes_past_k(f32: Float32Contract) -> None:
    """Trailing bytes that do not make a whole element are not read (K = len // 4),
    even when they would be NaN or inf lanes."""
    rng = np.random.default_rng(7)
    for k in (1, 5, 8, 11):
        x = rng.normal(size=k).astype(np.float32)
        w = rng.normal(size=k).astype(np.float32)
        want = reference(x, w, 2, None)
        got = int(f32.call("dotElementLE", x.tobytes() + b"\xff\xff\xff", w.tobytes() + b"\x00\x80\x7f", 2, False, 0))
        assert got == want, (hex(got), hex(want), k)
    with pytest.raises(REVERTED):
        f32.call("dotElementLE", bytes(8), bytes(12), 2, False, 0)
    with pytest.raises(REVERTED):
        f32.call("dotElementLE", bytes(8), bytes(8), 0, False, 0)
