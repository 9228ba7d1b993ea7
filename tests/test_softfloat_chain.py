"""On-chain SoftFloat (contracts/src/SoftFloat.sol through Float32) == IEEE binary32, bit for bit.

References: numpy float32 for + - * / sqrt and comparisons (each one IEEE operation,
round to nearest even, subnormals kept); refute's own numpy helpers for the
total-order key, max/min, bf16 and ldexp; exact Python-integer rounding for the
integer conversions. NaN rule: wherever the reference gives a NaN, the chain must
give exactly 0x7FC00000 (bf16 narrowing keeps the kernels' payload rule instead).

Inputs over-represent special values: zeros, subnormals, min/max normal, infinities,
NaNs with payloads, mantissas with few bits (exact results and ties), operands a few
ulps apart (cancellation), exponent differences around 24..26 (add ties) and up to 60.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from eth_tester.exceptions import TransactionFailed
from web3.exceptions import ContractLogicError

from refute.contracts.float32 import Float32Contract
from refute.kernels import bits_reference as bits
from refute.kernels import reduce_reference as reduce

# A revert reaches the caller as either, depending on how the provider decodes it.
REVERTED = (ContractLogicError, TransactionFailed)

NAN = 0x7FC00000
SPECIALS = np.array(
    [
        0x00000000, 0x80000000, 0x00000001, 0x80000001, 0x00000002, 0x00400000, 0x007FFFFF, 0x807FFFFF,
        0x00800000, 0x80800000, 0x00800001, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F7FFFFE, 0x7F000000, 0x7F800000,
        0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001, 0x7FBFFFFF, 0xFFFFFFFF, 0x7FC12345, 0x3F800000,
        0xBF800000, 0x3F800001, 0x3F7FFFFF, 0x4B000000, 0x4B000001, 0x4AFFFFFF, 0x33800000, 0x34000000,
        0x3F000000, 0x40000000, 0x5F000000, 0xDF000000, 0x4F000000, 0xCF000000, 0x1F800000, 0x0C000000,
    ],
    dtype=np.uint32,
)


@pytest.fixture(scope="module")
def f32() -> Float32Contract:
    return Float32Contract(batch=2000)


# ---------------------------------------------------------------------------
# Drawing bit patterns
# ---------------------------------------------------------------------------


def draw_bits(rng: np.random.Generator, n: int) -> np.ndarray:
    """n float32 bit patterns, about one sixth each: random bits, specials,
    subnormals, moderate exponents, extreme exponents, short mantissas."""
    kind = rng.integers(0, 6, n)
    sign = rng.integers(0, 2, n, dtype=np.uint32) << np.uint32(31)
    mant = rng.integers(0, 1 << 23, n, dtype=np.uint32)
    out = rng.integers(0, 1 << 32, n, dtype=np.uint64).astype(np.uint32)
    out = np.where(kind == 1, SPECIALS[rng.integers(0, SPECIALS.size, n)], out)
    out = np.where(kind == 2, sign | mant, out)  # subnormals (and zeros)
    moderate = rng.integers(100, 155, n, dtype=np.uint32)
    out = np.where(kind == 3, sign | (moderate << np.uint32(23)) | mant, out)
    extreme = np.where(rng.integers(0, 2, n) == 0, rng.integers(0, 4, n), rng.integers(251, 255, n)).astype(np.uint32)
    out = np.where(kind == 4, sign | (extreme << np.uint32(23)) | mant, out)
    # Few mantissa bits: products are often exact or exact ties.
    short = mant & ~((np.uint32(1) << rng.integers(12, 24, n).astype(np.uint32)) - np.uint32(1)) & np.uint32(0x7FFFFF)
    expo = rng.integers(90, 165, n, dtype=np.uint32)
    out = np.where(kind == 5, sign | (expo << np.uint32(23)) | short, out)
    return out.astype(np.uint32)


def draw_pairs(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Operand pairs: independent draws, near neighbours (cancellation), exact
    negations, and exponent differences 0..60 with tie-prone mantissas."""
    a = draw_bits(rng, n)
    b = draw_bits(rng, n)
    mode = rng.integers(0, 5, n)
    near = (a.astype(np.int64) + rng.integers(-3, 4, n)).astype(np.uint32)
    near ^= (rng.integers(0, 2, n, dtype=np.uint32) << np.uint32(31))
    b = np.where(mode == 1, near, b)
    b = np.where(mode == 2, a ^ np.uint32(0x80000000), b)
    d = np.where(rng.integers(0, 2, n) == 0, rng.integers(22, 28, n), rng.integers(0, 61, n))
    field = ((a >> np.uint32(23)) & np.uint32(0xFF)).astype(np.int64)
    newfield = np.clip(field - d, 0, 254).astype(np.uint32)
    tie_mant = np.array([0, 1, 0x400000, 0x7FFFFF, 0x000001, 0x400001], dtype=np.uint32)[rng.integers(0, 6, n)]
    mant = np.where(rng.integers(0, 2, n) == 0, tie_mant, b & np.uint32(0x7FFFFF))
    shifted = (b & np.uint32(0x80000000)) | (newfield << np.uint32(23)) | mant
    b = np.where(mode >= 3, shifted, b)
    swap = rng.integers(0, 2, n) == 1
    return np.where(swap, b, a).astype(np.uint32), np.where(swap, a, b).astype(np.uint32)


def f(b: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(b, dtype=np.uint32).view(np.float32)


def assert_bits(got: np.ndarray, want: np.ndarray, *inputs: np.ndarray) -> None:
    """Bit equality, where every NaN the reference gives must be 0x7FC00000 on chain."""
    want = np.asarray(want).view(np.uint32)
    expected = np.where((want & 0x7FFFFFFF) > 0x7F800000, np.uint32(NAN), want)
    bad = np.nonzero(got != expected)[0]
    if bad.size:
        rows = [tuple(hex(int(x[i])) for x in inputs) + (hex(int(got[i])), hex(int(expected[i]))) for i in bad[:8]]
        raise AssertionError(f"{bad.size} mismatches (inputs..., chain, reference): {rows}")


NUMPY_BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}


def numpy_binary(op: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        return NUMPY_BINARY[op](f(a), f(b))


# ---------------------------------------------------------------------------
# Arithmetic
# ---------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("op", "n", "seed"), [("add", 9000, 1), ("sub", 5000, 2), ("mul", 9000, 3), ("div", 7000, 4)])
def test_binary_arithmetic_drawn(f32: Float32Contract, op: str, n: int, seed: int) -> None:
    a, b = draw_pairs(np.random.default_rng(seed), n)
    assert_bits(f32.binary(op, a, b), numpy_binary(op, a, b), a, b)


@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_binary_arithmetic_all_special_pairs(f32: Float32Contract, op: str) -> None:
    a, b = (x.ravel() for x in np.meshgrid(SPECIALS, SPECIALS))
    assert_bits(f32.binary(op, a, b), numpy_binary(op, a, b), a, b)


@settings(max_examples=15, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)), min_size=1, max_size=64))
def test_arithmetic_hypothesis(f32: Float32Contract, pairs: list[tuple[int, int]]) -> None:
    a = np.array([p[0] for p in pairs], dtype=np.uint32)
    b = np.array([p[1] for p in pairs], dtype=np.uint32)
    for op in NUMPY_BINARY:
        assert_bits(f32.binary(op, a, b), numpy_binary(op, a, b), a, b)


# Fast paths (SoftFloat.add: both fields in [25, 254]; SoftFloat.mul: both fields in
# [1, 254] with fx + fy >= 128): operands drawn at and across those boundaries, with
# tie-prone short mantissas, near-equal magnitudes (cancellation at d = 0, 1, 2), the
# exponent-difference cap (d = 49..52) and overflowing sums and products.
mantissas = st.one_of(
    st.integers(0, (1 << 23) - 1),
    st.integers(0, (1 << 12) - 1).map(lambda m: m << 11),  # short: exact results and ties
    st.sampled_from([0, 1, 0x400000, 0x7FFFFF, 0x7FFFFE, 0x3FFFFF]),
)


def _f32_bits(sign: int, field: int, mant: int) -> int:
    return (sign << 31) | (field << 23) | mant


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.sampled_from([0, 1, 2, 23, 24, 25, 26, 27, 60, 127, 200, 253, 254, 255]),
                          mantissas, st.integers(0, 1),
                          st.sampled_from([0, 0, 1, 1, 2, 3, 22, 23, 24, 25, 26, 49, 50, 51, 52, 60]), mantissas,
                          st.sampled_from([0, 1, -1, 2, -2])), min_size=1, max_size=48))
def test_add_fast_path_boundaries(f32: Float32Contract, rows: list[tuple]) -> None:
    """add/sub with the larger field fx and the smaller fy = fx - d around 25 and 254,
    d around 0..2 (cancellation), 24..26 (ties) and 50 (the sticky cap), and the
    second significand a few ulps from the first (exact or near cancellation)."""
    a, b = [], []
    for sx, fx, mx, sy, d, my, near in rows:
        fy = max(fx - d, 0)
        if d == 0 and near:
            my = min(max(mx + near, 0), (1 << 23) - 1)
        a.append(_f32_bits(sx, fx, mx))
        b.append(_f32_bits(sy, fy, my))
    a, b = np.array(a, dtype=np.uint32), np.array(b, dtype=np.uint32)
    for op in ("add", "sub"):
        assert_bits(f32.binary(op, a, b), numpy_binary(op, a, b), a, b)
        assert_bits(f32.binary(op, b, a), numpy_binary(op, b, a), b, a)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 255), mantissas, st.integers(0, 1),
                          st.sampled_from([-2, -1, 0, 1, 2, 20, 46, 47, 48, 49, 126, 127, 128, 129, 250, 253, 254, 255, 256]),
                          mantissas), min_size=1, max_size=48))
def test_mul_fast_path_boundaries(f32: Float32Contract, rows: list[tuple]) -> None:
    """mul with fx + fy drawn around 128 (the fast path's edge: below it the result may
    be subnormal), around 174 - n (where _round's clamp starts), and near overflow."""
    a, b = [], []
    for sx, fx, mx, sy, total, my in rows:
        fy = min(max(total - fx, 0), 255)
        a.append(_f32_bits(sx, fx, mx))
        b.append(_f32_bits(sy, fy, my))
    a, b = np.array(a, dtype=np.uint32), np.array(b, dtype=np.uint32)
    assert_bits(f32.binary("mul", a, b), numpy_binary("mul", a, b), a, b)


def test_fast_path_edges_exhaustive_fields(f32: Float32Contract) -> None:
    """Every pair of fields in [0, 255] x a few around the fast-path edges, with
    mantissas 0, 1, max and a tie-prone one: add, sub and mul against numpy."""
    rng = np.random.default_rng(11)
    fields = np.arange(256, dtype=np.uint32)
    edge = np.array([0, 1, 2, 23, 24, 25, 26, 100, 101, 126, 127, 128, 200, 253, 254, 255], dtype=np.uint32)
    fa, fb = (x.ravel() for x in np.meshgrid(fields, edge))
    n = fa.size
    ma = rng.choice(np.array([0, 1, 0x7FFFFF, 0x400000, 0x1800], dtype=np.uint32), n)
    mb = rng.choice(np.array([0, 1, 0x7FFFFF, 0x400000, 0x1800], dtype=np.uint32), n)
    sa = rng.integers(0, 2, n, dtype=np.uint32) << np.uint32(31)
    sb = rng.integers(0, 2, n, dtype=np.uint32) << np.uint32(31)
    a = (sa | (fa << np.uint32(23)) | ma).astype(np.uint32)
    b = (sb | (fb << np.uint32(23)) | mb).astype(np.uint32)
    for op in ("add", "sub", "mul"):
        assert_bits(f32.binary(op, a, b), numpy_binary(op, a, b), a, b)
        assert_bits(f32.binary(op, b, a), numpy_binary(op, b, a), b, a)


def test_add_rounding_cases(f32: Float32Contract) -> None:
    """Hand-picked: ties to even both ways, carry into the exponent, overflow to inf,
    x - x = +0, -0 + -0 = -0, gradual underflow of a difference."""
    cases = [
        (0x3F800000, 0x33800000),  # 1 + 2^-24: tie, stays 1 (even)
        (0x3F800001, 0x33800000),  # tie, rounds up to even
        (0x3F800000, 0x33800001),  # just above the tie
        (0x3FFFFFFF, 0x34000000),  # carry into the exponent
        (0x7F7FFFFF, 0x73000000),  # max + half ulp: tie to inf
        (0x7F7FFFFF, 0x72FFFFFF),  # below the tie: stays max
        (0x3F800000, 0xBF800000),  # 1 - 1 = +0
        (0x80000000, 0x80000000),  # -0 + -0 = -0
        (0x00800000, 0x807FFFFF),  # min normal - max subnormal = 2^-149
    ]
    a = np.array([c[0] for c in cases], dtype=np.uint32)
    b = np.array([c[1] for c in cases], dtype=np.uint32)
    assert_bits(f32.binary("add", a, b), numpy_binary("add", a, b), a, b)


@pytest.mark.slow
def test_sqrt_drawn(f32: Float32Contract) -> None:
    rng = np.random.default_rng(5)
    x = np.concatenate([draw_bits(rng, 5000), SPECIALS, rng.integers(0, 0x7F800000, 1000, dtype=np.uint32)])
    with np.errstate(all="ignore"):
        want = np.sqrt(f(x))
    assert_bits(f32.unary("sqrt", x), want, x)


def test_sqrt_exact_squares(f32: Float32Contract) -> None:
    """Perfect squares (no sticky bit) and their neighbours."""
    r = np.arange(1, 1025, dtype=np.float32) * np.float32(1.25)
    sq = (r * r).view(np.uint32)
    x = np.concatenate([sq, sq + 1, sq - 1]).astype(np.uint32)
    assert_bits(f32.unary("sqrt", x), np.sqrt(f(x)), x)


def test_neg_abs(f32: Float32Contract) -> None:
    x = draw_bits(np.random.default_rng(6), 500)
    assert np.array_equal(f32.unary("neg", x), x ^ np.uint32(0x80000000))
    assert np.array_equal(f32.unary("abs", x), x & np.uint32(0x7FFFFFFF))


# ---------------------------------------------------------------------------
# Comparisons, total order, min/max
# ---------------------------------------------------------------------------


@pytest.mark.slow
def test_compare_drawn(f32: Float32Contract) -> None:
    a, b = draw_pairs(np.random.default_rng(7), 5000)
    eq, lt, le = f32.compare(a, b)
    fa, fb = f(a), f(b)
    assert np.array_equal(eq, fa == fb)
    assert np.array_equal(lt, fa < fb)
    assert np.array_equal(le, fa <= fb)


def test_total_order_key(f32: Float32Contract) -> None:
    x = np.concatenate([draw_bits(np.random.default_rng(8), 12000), SPECIALS])
    assert np.array_equal(f32.total_order_key(x), reduce.total_order_key(f(x)))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [9])
def test_max_min(f32: Float32Contract, seed: int) -> None:
    a, b = draw_pairs(np.random.default_rng(seed), 8000)
    pair = np.stack([f(a), f(b)], axis=-1)
    assert_bits(f32.binary("max", a, b), reduce.row_max(pair), a, b)
    # min mirrors max: the smaller total-order key, NaN if either is NaN.
    ka, kb = reduce.total_order_key(f(a)), reduce.total_order_key(f(b))
    nan = (ka == reduce.NAN_KEY) | (kb == reduce.NAN_KEY)
    want = np.where(nan, np.uint32(NAN), np.where(ka <= kb, a, b))
    assert np.array_equal(f32.binary("min", a, b), want)
    assert f32.call("max", 0x80000000, 0x00000000) == 0 and f32.call("min", 0x80000000, 0) == 0x80000000


# ---------------------------------------------------------------------------
# Conversions
# ---------------------------------------------------------------------------


def rne_int_to_f32_bits(v: int) -> int:
    """Exact round-to-nearest-even of a Python int to binary32 bits (no floats)."""
    if v == 0:
        return 0
    sign = 0x80000000 if v < 0 else 0
    m = abs(v)
    n = m.bit_length()
    if n > 24:
        sh = n - 24
        q, rem = m >> sh, m & ((1 << sh) - 1)
        half = 1 << (sh - 1)
        if rem > half or (rem == half and q & 1):
            q += 1
        m, e = q, sh
    else:
        e = 0
    while m >= 1 << 24:
        m >>= 1
        e += 1
    while m < 1 << 23:
        m <<= 1
        e -= 1
    field = e + 23 + 127
    if field >= 255:
        return sign | 0x7F800000
    return sign | (field << 23) | (m & 0x7FFFFF)


@pytest.mark.slow
def test_from_int64(f32: Float32Contract) -> None:
    rng = np.random.default_rng(11)
    n = 8000
    mags = rng.integers(0, 63, n)
    v = rng.integers(0, 1 << 62, n, dtype=np.int64) >> (62 - mags).astype(np.int64)
    # Ties and the double-rounding trap 2^60 + 2^36 + 1 (docs/numerics.md).
    ties = (np.int64(1) << rng.integers(25, 62, n).astype(np.int64)) + (np.int64(1) << rng.integers(0, 38, n).astype(np.int64))
    v = np.where(rng.integers(0, 3, n) == 0, ties, v)
    v = np.where(rng.integers(0, 2, n) == 0, -v, v)
    edge = np.array([0, 1, -1, 2**60 + 2**36 + 1, 2**63 - 1, -(2**63), 2**24 + 1, 2**24 + 3, -(2**31), 2**31 - 1], dtype=np.int64)
    v = np.concatenate([edge, v])
    got = f32.from_int64(v)
    want = np.array([rne_int_to_f32_bits(int(x)) for x in v], dtype=np.uint32)
    assert np.array_equal(got, want)
    assert np.array_equal(got, v.astype(np.float32).view(np.uint32))  # numpy's cvtsi2ss agrees
    assert f32.call("fromInt32", -(2**31)) == 0xCF000000 and f32.call("fromInt32", 2**31 - 1) == 0x4F000000


def test_to_int(f32: Float32Contract) -> None:
    rng = np.random.default_rng(12)
    x = draw_bits(rng, 6000)
    with np.errstate(invalid="ignore"):
        fx = f(x).astype(np.float64)
    ok = np.isfinite(fx) & (np.abs(fx) < 2.0**62)
    ties = np.array([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 0.49999997, 8388607.5, 2.0**62], np.float32).view(np.uint32)
    x = np.concatenate([x[ok], ties])
    want = np.array([round(float(v)) for v in f(x)], dtype=np.int64)  # Python round: exact, ties to even
    assert np.array_equal(f32.to_int64(x), want)
    assert f32.call("toInt32", 0xCF000000) == -(2**31)
    for bad, fn in [(NAN, "toInt64"), (0x7F800000, "toInt64"), (0x5F000000, "toInt64"), (0x4F000000, "toInt32"), (0xFF800000, "toInt32")]:
        with pytest.raises(REVERTED):
            f32.call(fn, bad)


@pytest.mark.slow
def test_bf16(f32: Float32Contract) -> None:
    rng = np.random.default_rng(13)
    x = np.concatenate([draw_bits(rng, 8000), SPECIALS, (rng.integers(0, 1 << 16, 500, dtype=np.uint32) << np.uint32(16)) | np.uint32(0x8000)])
    assert np.array_equal(f32.to_bf16(x), bits.fp32_to_bf16_bits(f(x)).astype(np.uint16))
    h = rng.integers(0, 1 << 16, 20, dtype=np.uint32)
    assert [f32.call("fromBF16", int(v)) for v in h] == [int(v) << 16 for v in h]


def test_ldexp_exponent_pow2(f32: Float32Contract) -> None:
    rng = np.random.default_rng(14)
    x = np.concatenate([draw_bits(rng, 3000), SPECIALS])
    k = rng.integers(-400, 401, x.size).astype(np.int32)
    assert_bits(f32.ldexp(x, k), bits.ldexp(f(x), k), x, k.view(np.uint32))
    for v in SPECIALS[:12]:
        assert f32.call("exponentOf", int(v)) == int(bits.exponent_of(f(np.array([v])))[0])
    for kk in (-126, -1, 0, 1, 127):
        assert f32.call("pow2", kk) == int(bits.pow2(np.array([kk])).view(np.uint32)[0])
    with pytest.raises(REVERTED):
        f32.call("pow2", 128)
