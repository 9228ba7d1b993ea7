"""On-chain MathLib (contracts/src/MathLib.sol through Float32) == refute.kernels.mathlib, bit for bit.

The reference is ``mathlib.<f>(x, backend="reference")``; every NaN it returns is
already 0x7FC00000, so the comparison is plain bit equality. Inputs: the special
values, each function's interesting range (thresholds, splits, subnormal results),
random bit patterns, and for sin/cos huge arguments and floats next to multiples
of pi/2.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from refute.contracts.float32 import Float32Contract
from refute.kernels import mathlib

FUNCTIONS = ("exp", "log", "tanh", "sigmoid", "erf", "sin", "cos", "rsqrt")
SPECIALS = np.array(
    [0, 0x80000000, 1, 0x80000001, 0x007FFFFF, 0x00800000, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000,
     0x7FC00000, 0xFFC00001, 0x7F800001, 0x3F800000, 0xBF800000, 0x3F000000, 0x42B17217, 0x42B17218,
     0xC2CFF1B4, 0xC2CFF1B5, 0x41102CB4, 0x4079AEA4, 0x3F200000, 0x3F1FFFFF, 0x3F490FDB, 0x3F490FDC,
     0x3FC90FDB, 0x40490FDB, 0x62000001, 0x57800013, 0x6BFC7E68, 0x7E000000],
    dtype=np.uint32,
)
# Where each program branches or saturates.
RANGES = {"exp": (-110.0, 90.0), "log": (0.0, 4.0), "tanh": (-10.0, 10.0), "sigmoid": (-110.0, 20.0),
          "erf": (-4.5, 4.5), "sin": (-300.0, 300.0), "cos": (-300.0, 300.0), "rsqrt": (0.0, 10.0)}


@pytest.fixture(scope="module")
def f32() -> Float32Contract:
    return Float32Contract(batch=400)


def reference(name: str, x: np.ndarray) -> np.ndarray:
    y = getattr(mathlib, name)(torch.from_numpy(x.view(np.float32).copy()), backend="reference")
    return y.numpy().view(np.uint32)


def check(f32: Float32Contract, name: str, x: np.ndarray) -> None:
    x = np.ascontiguousarray(x, dtype=np.uint32)
    got, want = f32.unary(name, x), reference(name, x)
    bad = np.nonzero(got != want)[0]
    assert bad.size == 0, [(hex(int(x[i])), hex(int(got[i])), hex(int(want[i]))) for i in bad[:8]]


def draw(name: str, rng: np.random.Generator, n: int) -> np.ndarray:
    lo, hi = RANGES[name]
    uniform = rng.uniform(lo, hi, n).astype(np.float32).view(np.uint32)
    logu = (np.exp2(rng.uniform(-30, 7, n)) * rng.choice([-1, 1], n)).astype(np.float32).view(np.uint32)
    rand = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    pick = rng.integers(0, 3, n)
    return np.where(pick == 0, uniform, np.where(pick == 1, logu, rand)).astype(np.uint32)


@pytest.mark.slow
@pytest.mark.parametrize("name", FUNCTIONS)
def test_drawn_and_special(f32: Float32Contract, name: str) -> None:
    rng = np.random.default_rng(FUNCTIONS.index(name) + 100)
    check(f32, name, np.concatenate([SPECIALS, draw(name, rng, 220)]))


@pytest.mark.parametrize("name", ["sin", "cos"])
def test_trig_huge_and_near_multiples_of_pio2(f32: Float32Contract, name: str) -> None:
    rng = np.random.default_rng(7 if name == "sin" else 8)
    huge = (rng.integers(0x47800000, 0x7F800000, 60, dtype=np.uint32)) | (rng.integers(0, 2, 60, dtype=np.uint32) << np.uint32(31))
    k = rng.integers(1, 1 << 16, 30)
    near = (k * (np.pi / 2)).astype(np.float32).view(np.uint32)
    near = np.concatenate([near, near + 1, near - 1]).astype(np.uint32)
    check(f32, name, np.concatenate([huge, near]))


@settings(max_examples=6, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=8))
def test_hypothesis_all_functions(f32: Float32Contract, xs: list[int]) -> None:
    for name in FUNCTIONS:
        check(f32, name, np.array(xs, dtype=np.uint32))
