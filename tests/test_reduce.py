"""Exact row reductions (kernels/reduce.py).

* the Triton interpreter equals the numpy reference bit for bit;
* invariances: the rest of the batch (I2), the tile size (I4), the order of
  the row;
* an exact oracle in Python integers and Fractions for the definition of
  row_sum / row_mean / row_var / row_max / row_argmax;
* the documented accuracy bound against the exact sum.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import refute.kernels  # noqa: F401  (chooses the interpreter before any kernel below is defined)
import triton
import triton.language as tl
from refute.kernels import reduce_reference, reduce_triton
from refute.kernels.backend import launch
from refute.kernels.reduce import MAX_SUM_LEN, row_argmax, row_max, row_mean, row_sum, row_sumsq, row_var
from refute.kernels.reduce_triton import exact_sum_block
from test_bits import F32_SPECIAL_BITS, bits_of, f32_from_bits, pow2_fraction, round_fraction

# The interpreter evaluates kernels with numpy, which warns on overflow and NaN.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

F = reduce_reference.FRAC_BITS
CANONICAL_NAN = 0x7FC00000
FLOAT_STATS = ("sum", "sumsq", "mean", "var", "max")
ALL_STATS = FLOAT_STATS + ("argmax",)
PUBLIC = {"sum": row_sum, "sumsq": row_sumsq, "mean": row_mean, "var": row_var, "max": row_max, "argmax": row_argmax}
BLOCKS = (16, 128, reduce_triton.DEFAULT_BLOCK)

# ---------------------------------------------------------------------------
# Row strategies.
# ---------------------------------------------------------------------------

ROW_KINDS = (
    "normal", "huge_range", "bits", "specials", "cancel", "zeros", "subnormal", "ties", "overflow", "one_binade",
)
SIZE_EDGES = (1, 15, 16, 17, 127, 129)  # around the 16- and 128-element blocks


def _random_bits(rng: np.random.Generator, n: int, fields: tuple[int, int]) -> np.ndarray:
    """float32 with random sign and mantissa and exponent field in [lo, hi]."""
    sign = rng.integers(0, 2, n, dtype=np.uint64) << np.uint64(31)
    field = rng.integers(fields[0], fields[1] + 1, n, dtype=np.uint64) << np.uint64(23)
    return f32_from_bits(sign | field | rng.integers(0, 1 << 23, n, dtype=np.uint64))


def make_row(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """One float32 row of length n of the given kind."""
    if kind == "normal":
        return (rng.standard_normal(n) * 2.0 ** int(rng.integers(-20, 21))).astype(np.float32)
    if kind == "huge_range":
        return _random_bits(rng, n, (0, 254))
    if kind == "bits":
        return f32_from_bits(rng.integers(0, 2**32, n, dtype=np.uint64))
    if kind == "specials":
        row = rng.standard_normal(n).astype(np.float32)
        where = rng.random(n) < 0.3
        row[where] = f32_from_bits(rng.choice(np.array(F32_SPECIAL_BITS, dtype=np.uint64), int(where.sum())))
        return row
    if kind == "cancel":
        # Pairs v, -v (exact cancellation of large values) plus small residues.
        half = _random_bits(rng, (n + 1) // 2, (100, 180))
        row = np.concatenate([half, -half])[:n]
        row[rng.random(n) < 0.2] = _random_bits(rng, 1, (0, 110))[0]
        return rng.permutation(row)
    if kind == "zeros":
        return np.where(rng.random(n) < 0.5, np.float32(0.0), np.float32(-0.0)).astype(np.float32)
    if kind == "subnormal":
        return _random_bits(rng, n, (0, 0))
    if kind == "ties":
        # With 1.0 in the row (e = 0), (2j+1) * 2**-40 has image j + 1/2: a tie.
        odd = 2 * rng.integers(0, 1 << 20, n) + 1
        row = (odd * 2.0**-40 * rng.choice([-1.0, 1.0], n)).astype(np.float32)
        row[int(rng.integers(0, n))] = 1.0
        return row
    if kind == "overflow":
        return _random_bits(rng, n, (252, 254)) if rng.random() < 0.5 else np.abs(_random_bits(rng, n, (252, 254)))
    assert kind == "one_binade"
    return (1.0 + rng.random(n)).astype(np.float32) * np.float32(rng.choice([-1.0, 1.0]))


@st.composite
def batches(draw, max_rows: int = 3, min_n: int = 1, max_n: int = 150) -> np.ndarray:
    """float32 (rows, n): each row of a drawn kind, n mostly not a multiple of a block."""
    rows = draw(st.integers(1, max_rows))
    edges = tuple(v for v in SIZE_EDGES if min_n <= v <= max_n) or (min_n,)
    n = draw(st.one_of(st.integers(min_n, max_n), st.sampled_from(edges)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return np.stack([make_row(draw(st.sampled_from(ROW_KINDS)), n, rng) for _ in range(rows)])


# ---------------------------------------------------------------------------
# Helpers.
# ---------------------------------------------------------------------------


def reference(stat: str, x: np.ndarray) -> np.ndarray:
    return getattr(reduce_reference, f"row_{stat}")(x)


def interpreter(stat: str, x: np.ndarray, block: int = reduce_triton.DEFAULT_BLOCK) -> np.ndarray:
    xt = torch.from_numpy(np.ascontiguousarray(x))
    if stat in ("max", "argmax"):
        m, i = reduce_triton.row_max_launch(xt, block)
        return (m if stat == "max" else i).numpy()
    return reduce_triton.row_stats_launch(xt, stat, block).numpy()


def raw(a: np.ndarray) -> np.ndarray:
    """Comparable raw content: int32 bits for float32, the values for int64."""
    return a.view(np.int32) if a.dtype == np.float32 else a


def assert_same_bits(got: np.ndarray, expected: np.ndarray, x: np.ndarray, what: str) -> None:
    assert got.dtype == expected.dtype and got.shape == expected.shape, what
    bad = np.nonzero(raw(got) != raw(expected))[0]
    assert bad.size == 0, (
        f"{what}: rows {bad[:5].tolist()} got {got[bad[:3]]} expected {expected[bad[:3]]}; row {x[bad[0]][:8]}"
    )


# ---------------------------------------------------------------------------
# Interpreter == reference, bit for bit.
# ---------------------------------------------------------------------------


@settings(max_examples=120)
@given(batches(), st.sampled_from(ALL_STATS), st.sampled_from(BLOCKS))
def test_interpreter_matches_reference(x, stat, block):
    assert_same_bits(interpreter(stat, x, block), reference(stat, x), x, stat)


@settings(max_examples=4)
@given(batches(max_rows=1, min_n=1500, max_n=4000))
def test_interpreter_matches_reference_on_long_rows(x):
    for stat in ALL_STATS:
        assert_same_bits(interpreter(stat, x, 1024), reference(stat, x), x, stat)


@settings(max_examples=15)
@given(batches(max_rows=2, max_n=64), st.sampled_from(ALL_STATS))
def test_public_api_backends_agree(x, stat):
    xt = torch.from_numpy(x).reshape(x.shape[0], 1, x.shape[1])  # a leading shape of two dims
    ref_out = PUBLIC[stat](xt, backend="reference")
    tri_out = PUBLIC[stat](xt, backend="triton")
    assert ref_out.shape == tri_out.shape == xt.shape[:-1]
    assert ref_out.dtype == tri_out.dtype == (torch.int64 if stat == "argmax" else torch.float32)
    assert_same_bits(tri_out.reshape(-1).numpy(), ref_out.reshape(-1).numpy(), x, stat)


@triton.jit
def _block_sum_kernel(x_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """Test-only: a row held in one block, summed by the reusable device function."""
    offs = tl.arange(0, BLOCK)
    v = tl.load(x_ptr + tl.program_id(0) * n + offs, mask=offs < n, other=0.0)
    tl.store(out_ptr + tl.program_id(0), exact_sum_block(v))


@settings(max_examples=20)
@given(batches(max_n=128))
def test_exact_sum_block_device_function_matches_reference(x):
    xt = torch.from_numpy(x)
    out = torch.empty(x.shape[0], dtype=torch.float32)
    launch(_block_sum_kernel, (x.shape[0],), xt, out, x.shape[1], BLOCK=128)
    assert_same_bits(out.numpy(), reference("sum", x), x, "exact_sum_block")


# ---------------------------------------------------------------------------
# Invariances.
# ---------------------------------------------------------------------------


@settings(max_examples=20)
@given(batches(max_rows=1, max_n=300), st.sampled_from(ALL_STATS))
def test_tile_size_does_not_change_bits(x, stat):
    results = [interpreter(stat, x, block) for block in BLOCKS]
    for block, r in zip(BLOCKS[1:], results[1:]):
        assert_same_bits(r, results[0], x, f"{stat} BLOCK={block} vs {BLOCKS[0]}")


@settings(max_examples=100)
@given(batches(max_rows=4, max_n=100), st.data())
def test_reference_is_batch_invariant(x, data):
    # A row's result is the same alone, in its batch, or beside other rows.
    others = data.draw(batches(max_rows=3, min_n=x.shape[1], max_n=x.shape[1]))
    mixed = np.concatenate([others, x])
    for stat in ALL_STATS:
        whole = reference(stat, x)
        assert_same_bits(reference(stat, mixed)[others.shape[0]:], whole, x, stat)
        for i in range(x.shape[0]):
            assert_same_bits(reference(stat, x[i : i + 1]), whole[i : i + 1], x[i : i + 1], stat)


@settings(max_examples=12)
@given(batches(max_rows=3, max_n=64), st.sampled_from(ALL_STATS))
def test_interpreter_is_batch_invariant(x, stat):
    whole = interpreter(stat, x)
    for i in range(x.shape[0]):
        assert_same_bits(interpreter(stat, x[i : i + 1]), whole[i : i + 1], x[i : i + 1], stat)


def check_order_invariance(x: np.ndarray, perm: np.ndarray, run) -> None:
    """Permuting the columns keeps every statistic's bits; argmax of the
    permuted row points at an element with the max's bits (or at a NaN)."""
    xp = x[:, perm]
    for stat in FLOAT_STATS:
        assert_same_bits(run(stat, xp), run(stat, x), x, stat)
    m = run("max", x)
    picked = xp[np.arange(x.shape[0]), run("argmax", xp)]
    nan = np.isnan(m)
    assert np.isnan(picked[nan]).all()
    assert (bits_of(picked[~nan]) == bits_of(m[~nan])).all()


@settings(max_examples=150)
@given(batches(max_rows=3, max_n=200), st.randoms(use_true_random=False))
def test_reference_is_order_invariant(x, rnd):
    perm = np.array(rnd.sample(range(x.shape[1]), x.shape[1]))
    check_order_invariance(x, perm, reference)


@settings(max_examples=12)
@given(batches(max_rows=2, max_n=80), st.randoms(use_true_random=False))
def test_interpreter_is_order_invariant(x, rnd):
    perm = np.array(rnd.sample(range(x.shape[1]), x.shape[1]))
    check_order_invariance(x, perm, interpreter)


# ---------------------------------------------------------------------------
# Exact oracle and accuracy.
# ---------------------------------------------------------------------------


def f32_bits_int(v: float) -> int:
    return int(bits_of(np.float32(v)))


def sum_scale_exponent(values: list[float]) -> int:
    """e of the largest finite magnitude: 2**e <= max|x| < 2**(e+1), or -127
    when every element is zero or subnormal."""
    m = max((abs(v) for v in values if math.isfinite(v)), default=0.0)
    return math.frexp(m)[1] - 1 if m >= 2.0**-126 else -127


def oracle_sum_bits(values: list[float]) -> int:
    """The row_sum definition in Python integers and Fractions -> float32 bits."""
    if any(math.isnan(v) for v in values) or (math.inf in values and -math.inf in values):
        return CANONICAL_NAN
    if math.inf in values:
        return 0x7F800000
    if -math.inf in values:
        return 0xFF800000
    e = sum_scale_exponent(values)
    s = sum(round(Fraction(v) * pow2_fraction(F - 1 - e)) for v in values)  # round: ties to even
    if s == 0:
        return 0  # an exact zero sum is +0
    s32 = round_fraction(Fraction(s))  # int64 -> float32, never 0 or inf here
    r = round_fraction(Fraction(s32) * pow2_fraction(e + 1 - F))
    return f32_bits_int(math.copysign(r, s) if r == 0 else r)


def oracle_div_bits(total_bits: int, n: int) -> int:
    """Correctly rounded float32 total / n, NaN canonical (n >= 1)."""
    total = float(f32_from_bits([total_bits])[0])
    if math.isnan(total):
        return CANONICAL_NAN
    if math.isinf(total):
        return f32_bits_int(total)
    r = round_fraction(Fraction(total) / n)
    return f32_bits_int(math.copysign(r, total) if r == 0 else r)


def oracle_max(values: list[float]) -> tuple[int, int]:
    """(max bits, argmax) under IEEE order with -0 < +0, NaN largest."""
    for i, v in enumerate(values):
        if math.isnan(v):
            return CANONICAL_NAN, i
    keys = [(v, math.copysign(1.0, v)) for v in values]
    best = max(keys)
    i = keys.index(best)
    return f32_bits_int(values[i]), i


@settings(max_examples=150)
@given(batches(max_rows=3, max_n=100))
def test_reference_matches_exact_oracle(x):
    sums, means, vars_, maxes, argmaxes = (reference(s, x) for s in ("sum", "mean", "var", "max", "argmax"))
    sumsqs = reference("sumsq", x)
    n = x.shape[1]
    with np.errstate(all="ignore"):
        squares = x * x  # one float32 rounding each
        centered = x - means[:, None]
        dev2 = centered * centered
    for i, row in enumerate(x):
        values = row.tolist()
        sum_bits = oracle_sum_bits(values)
        assert int(bits_of(sums[i])) == sum_bits, ("sum", values)
        assert int(bits_of(sumsqs[i])) == oracle_sum_bits(squares[i].tolist()), ("sumsq", values)
        assert int(bits_of(means[i])) == oracle_div_bits(sum_bits, n), ("mean", values)
        assert int(bits_of(vars_[i])) == oracle_div_bits(oracle_sum_bits(dev2[i].tolist()), n), ("var", values)
        max_bits, argmax = oracle_max(values)
        assert (int(bits_of(maxes[i])), int(argmaxes[i])) == (max_bits, argmax), ("max", values)


def accuracy_bound(n: int, e: int, r: float) -> Fraction:
    """Documented bound on |row_sum - exact sum| for a finite result r: the
    image errors plus the one rounding of the int64 sum to float32 (which is
    exact when r is subnormal or zero)."""
    image_error = n * pow2_fraction(e - F)
    if abs(r) >= 2.0**-126:
        return image_error + pow2_fraction(math.frexp(r)[1] - 1 - 23) / 2  # half an ulp of r
    return image_error


@settings(max_examples=150)
@given(batches(max_rows=3, max_n=200))
def test_row_sum_is_within_the_documented_bound(x):
    sums = reference("sum", x)
    for row, r in zip(x, sums.tolist()):
        values = row.tolist()
        if not all(math.isfinite(v) for v in values) or not math.isfinite(r):
            continue
        exact = sum((Fraction(v) for v in values), Fraction(0))
        bound = accuracy_bound(len(values), sum_scale_exponent(values), r)
        assert abs(Fraction(r) - exact) <= bound, (values, r)
        # math.fsum is the correctly rounded float64 exact sum.
        assert abs(Fraction(r) - Fraction(math.fsum(values))) <= bound + abs(Fraction(math.fsum(values)) - exact)


@settings(max_examples=150)
@given(batches(max_rows=3, max_n=200))
def test_scaling_back_never_rounds(x):
    # r = fl32(S) * 2**(e+1-F) exactly: a subnormal r comes from an S that is
    # exact in float32 and lies on the subnormal grid; a nonzero S never underflows.
    for row, r in zip(x, reference("sum", x).tolist()):
        values = row.tolist()
        if not all(math.isfinite(v) for v in values) or not math.isfinite(r):
            continue
        e = sum_scale_exponent(values)
        s = sum(round(Fraction(v) * pow2_fraction(F - 1 - e)) for v in values)
        assert Fraction(r) == Fraction(round_fraction(Fraction(s))) * pow2_fraction(e + 1 - F)
        assert (r == 0) == (s == 0)


@settings(max_examples=100)
@given(batches(max_rows=3, max_n=200), st.integers(-127, -110))
def test_tiny_rows_are_summed_with_one_rounding(x, e_max):
    # When every |x| < 2**(e_max+1) <= 2**-109 the images are exact (x is a
    # multiple of 2**-149), so the result is the correctly rounded exact sum.
    limit = np.float32(2.0 ** (e_max + 1))
    with np.errstate(all="ignore"):
        x = np.where(np.isfinite(x), np.fmod(x, limit), np.float32(0)).astype(np.float32)
    for row, r in zip(x, reference("sum", x).tolist()):
        exact = sum((Fraction(v) for v in row.tolist()), Fraction(0))
        assert r == round_fraction(exact) and (r != 0 or math.copysign(1.0, r) == 1.0), (row.tolist(), r)


# ---------------------------------------------------------------------------
# Special values and edge cases, on both backends.
# ---------------------------------------------------------------------------

INF, NAN = math.inf, math.nan


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize(
    "row,expected_bits",
    [
        ([1.0, NAN, 2.0], CANONICAL_NAN),
        ([float(f32_from_bits([0xFFC00001])[0]), 1.0], CANONICAL_NAN),  # payload and sign dropped
        ([INF, -INF], CANONICAL_NAN),
        ([INF, 1.0, INF], 0x7F800000),
        ([-INF, 3.0e38, 3.0e38], 0xFF800000),
        ([3.0e38, 3.0e38], 0x7F800000),  # finite overflow rounds to inf
        ([-0.0, -0.0], 0x00000000),  # a zero sum is +0
        ([1.0, -1.0], 0x00000000),
        ([2.0**-120, -(2.0**-120) + 2.0**-143], 0x00000040),  # cancels to the exact subnormal 2**-143
        ([1.0e-45, 1.0e-45], 0x00000002),  # subnormals add exactly
        ([1.0, 2.0**-24], 0x3F800000),  # tie in the int64 -> float32 step goes to even
    ],
)
def test_row_sum_special_values(backend, row, expected_bits):
    got = row_sum(torch.tensor([row], dtype=torch.float32), backend=backend)
    assert int(bits_of(got.numpy()[0])) == expected_bits
    assert oracle_sum_bits(np.array(row, dtype=np.float32).tolist()) == expected_bits


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_empty_rows(backend):
    x = torch.empty(2, 3, 0)
    assert torch.equal(row_sum(x, backend=backend).view(torch.int32), torch.zeros(2, 3, dtype=torch.int32))
    assert torch.equal(row_sumsq(x, backend=backend).view(torch.int32), torch.zeros(2, 3, dtype=torch.int32))
    for fn in (row_mean, row_var):  # 0 / 0
        assert (fn(x, backend=backend).view(torch.int32) == CANONICAL_NAN).all()
    for fn in (row_max, row_argmax):
        with pytest.raises(ValueError, match="empty"):
            fn(x, backend=backend)
    assert row_sum(torch.empty(0, 5), backend=backend).shape == (0,)
    assert row_argmax(torch.empty(0, 5), backend=backend).shape == (0,)


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize(
    "row,max_bits,argmax",
    [
        ([-0.0, 0.0, -0.0], 0x00000000, 1),  # -0 < +0
        ([-0.0, -0.0], 0x80000000, 0),
        ([-INF, -3.0, -INF], 0xC0400000, 1),
        ([1.0, NAN, INF, float(f32_from_bits([0xFFC00000])[0])], CANONICAL_NAN, 1),  # lowest NaN index
        ([INF, 5.0, INF], 0x7F800000, 0),  # lowest index of ties
        ([-INF], 0xFF800000, 0),
        ([1.0e-45, -1.0e-45, 0.0], 0x00000001, 0),
    ],
)
def test_row_max_special_values(backend, row, max_bits, argmax):
    x = torch.tensor([row], dtype=torch.float32)
    assert int(bits_of(row_max(x, backend=backend).numpy()[0])) == max_bits
    assert row_argmax(x, backend=backend).tolist() == [argmax]


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_mean_and_var_specials(backend):
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0], [INF, 1.0, 1.0, 1.0], [5.0] * 4, [3.0e38] * 4])
    mean = row_mean(x, backend=backend).numpy()
    var = row_var(x, backend=backend).numpy()
    assert mean.tolist()[:3] == [2.5, INF, 5.0] and var.tolist()[0] == 1.25 and var.tolist()[2] == 0.0
    assert int(bits_of(var[1])) == CANONICAL_NAN  # inf - inf
    assert mean.tolist()[3] == INF  # the sum overflows before the division


def test_longest_rows_do_not_overflow_the_int64_sum():
    # n = 2**22 of the largest image, 2**40 - 2**16, sum exactly to 2**62 - 2**38.
    big = np.nextafter(np.float32(2.0), np.float32(0.0))
    x = np.full((1, MAX_SUM_LEN), big, dtype=np.float32)
    expected = np.float32(2.0**23 - 0.5)  # (2**62 - 2**38) * 2**-39
    assert reduce_reference.row_sum(x)[0] == expected
    assert reduce_reference.row_sum(-x)[0] == -expected


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_bad_inputs_raise(backend):
    with pytest.raises(TypeError, match="float32"):
        row_sum(torch.zeros(2, 3, dtype=torch.float64), backend=backend)
    with pytest.raises(TypeError, match="torch.Tensor"):
        row_max(np.zeros((2, 3), dtype=np.float32), backend=backend)
    with pytest.raises(ValueError, match="0-d"):
        row_mean(torch.tensor(1.0), backend=backend)
    with pytest.raises(ValueError, match="exact-sum limit"):
        row_var(torch.empty(1, MAX_SUM_LEN + 1), backend=backend)
    with pytest.raises(ValueError, match="backend"):
        row_sum(torch.zeros(2, 3), backend="cpu")


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_non_contiguous_input(backend):
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(3)).t()
    expected = reduce_reference.row_sum(x.contiguous().numpy())
    assert np.array_equal(raw(row_sum(x, backend=backend).numpy()), raw(expected))
