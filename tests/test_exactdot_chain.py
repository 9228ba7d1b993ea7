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


def check(f32: Float32Contract, x: np.ndarray, w: np.ndarray, slices: int, bias: float | None = None) -> None:
    got = f32.dot_element(x, w, slices, bias)
    want = reference(x, w, slices, bias)
    assert got == want, (hex(got), hex(want), slices, x.size)


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
