"""Property tests of the shared bit helpers (kernels/bits_reference.py and
kernels/bits_triton.py).

The numpy helpers are checked against exact math (math.frexp/ldexp, Python's
Fraction and its round-half-even ``round``), and every Triton device function
against its numpy twin, bit for bit, through a test-only kernel run in Triton's
interpreter.

The exact-rounding oracle and the float32 bit-pattern strategies defined here
are imported by tests/test_convert.py and tests/test_reduce.py.
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
from refute.kernels import bits_reference as ref
from refute.kernels import bits_triton
from refute.kernels.backend import launch

# The interpreter evaluates kernels with numpy, which warns on overflow and NaN.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

# ---------------------------------------------------------------------------
# Shared helpers: float32 bit patterns and an exact rounding oracle.
# ---------------------------------------------------------------------------

# float32 bit patterns every strategy over-represents: signed zeros, infinities,
# quiet/signalling NaNs with payloads, subnormal and normal edges, the float32
# overflow edge, rounding-trick edges (2**23) and the int64 conversion edge (2**62).
F32_SPECIAL_BITS: tuple[int, ...] = (
    0x00000000, 0x80000000,  # +-0
    0x7F800000, 0xFF800000,  # +-inf
    0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FFFFFFF, 0x7FA00000,  # NaNs
    0x00000001, 0x80000001, 0x00000002, 0x00400000, 0x007FFFFF, 0x807FFFFF,  # subnormals
    0x00800000, 0x80800000, 0x00800001, 0x01000000,  # smallest normals
    0x7F7FFFFF, 0xFF7FFFFF, 0x7F7FFF7F, 0x7F7F8000, 0x7F000000,  # largest finite, 2**127
    0x3F800000, 0xBF800000, 0x3F000000, 0x3FC00000, 0x3F7FFFFF, 0x3F800001,  # around 1
    0x4AFFFFFF, 0x4B000000, 0x4B000001, 0x4A800001,  # around 2**23
    0x5E7FFFFF, 0x5E800000, 0xDE7FFFFF,  # around 2**62
    0x3F808000, 0x3F818000, 0x3F807FFF, 0x3F808001,  # bf16 ties and near-ties
)

FLOAT32_MIN_NORMAL_EXP = -126
FLOAT32_MAX_EXP = 127
FLOAT32_PRECISION = 24


def f32_bits_strategy() -> st.SearchStrategy[int]:
    """uint32 float32 bit patterns: specials, any pattern, and every exponent
    field with edge mantissas."""
    edge_mantissas = (0, 1, 0x7FFFFF, 0x400000, 0x8000, 0x7FFF, 0x18000)
    mantissas = st.one_of(st.sampled_from(edge_mantissas), st.integers(0, 0x7FFFFF))
    by_field = st.builds(lambda s, e, m: (s << 31) | (e << 23) | m, st.integers(0, 1), st.integers(0, 255), mantissas)
    return st.one_of(st.sampled_from(F32_SPECIAL_BITS), st.integers(0, 2**32 - 1), by_field)


def f32_from_bits(bits: list[int] | np.ndarray) -> np.ndarray:
    """float32 array with the given uint32 bit patterns."""
    return np.asarray(bits, dtype=np.uint64).astype(np.uint32).view(np.float32)


def bits_of(x: np.ndarray) -> np.ndarray:
    """uint32 bits of a float32 array or scalar (for comparisons and messages)."""
    return np.asarray(x, dtype=np.float32).view(np.uint32)


def pow2_fraction(k: int) -> Fraction:
    """2**k exactly, for any integer k."""
    return Fraction(2**k) if k >= 0 else Fraction(1, 2**-k)


def round_fraction(
    q: Fraction,
    precision: int = FLOAT32_PRECISION,
    min_exp: int = FLOAT32_MIN_NORMAL_EXP,
    max_exp: int = FLOAT32_MAX_EXP,
) -> float:
    """q rounded to nearest, ties to even, in the binary format with
    ``precision`` significand bits, normal exponents [min_exp, max_exp] and
    gradual underflow; overflow gives +-inf. Exact zero results are returned as
    0.0 (their sign is the caller's business). Independent of any float
    arithmetic: only integers and Fractions."""
    if q == 0:
        return 0.0
    sign = -1.0 if q < 0 else 1.0
    a = abs(q)
    exp = a.numerator.bit_length() - a.denominator.bit_length()
    if pow2_fraction(exp) > a:
        exp -= 1  # now 2**exp <= a < 2**(exp+1)
    quantum = max(exp, min_exp) - (precision - 1)
    m = round(a / pow2_fraction(quantum))  # Fraction.__round__ rounds half to even
    if m * pow2_fraction(quantum) >= pow2_fraction(max_exp + 1):
        return sign * math.inf
    return sign * math.ldexp(m, quantum)


def exact_ldexp_f32(x: np.float32, k: int) -> np.float32:
    """Correctly rounded float32 x * 2**k (x finite)."""
    r = round_fraction(Fraction(float(x)) * pow2_fraction(k))
    return np.float32(math.copysign(r, float(x)) if r == 0 else r)


# ---------------------------------------------------------------------------
# bits_reference against exact math.
# ---------------------------------------------------------------------------

BIT_LISTS = st.lists(f32_bits_strategy(), min_size=1, max_size=200)


def test_rounding_constant_is_exact_in_float32():
    assert float(ref.TWO_POW_23) == 2.0**23
    assert float(np.float32(bits_triton.TWO_POW_23.value)) == bits_triton.TWO_POW_23.value == 2.0**23


@given(BIT_LISTS)
def test_exponent_of_matches_frexp(bits):
    x = f32_from_bits(bits)
    e = ref.exponent_of(x)
    assert e.dtype == np.int32
    for xi, ei in zip(x.tolist(), e.tolist()):
        if not math.isfinite(xi):
            expected = 128
        elif abs(xi) < 2.0**FLOAT32_MIN_NORMAL_EXP:
            expected = -127
        else:
            expected = math.frexp(xi)[1] - 1  # frexp mantissa is in [0.5, 1)
        assert ei == expected, (xi, ei)


def test_pow2_over_its_whole_domain():
    k = np.arange(FLOAT32_MIN_NORMAL_EXP, FLOAT32_MAX_EXP + 1, dtype=np.int32)
    got = ref.pow2(k)
    assert got.dtype == np.float32
    assert [float(v) for v in got] == [math.ldexp(1.0, int(i)) for i in k]


def ldexp_rounds_once(x: float, k: int) -> bool:
    """Where three multiplications by normal powers of two round at most once:
    k >= -126 (one product), |x| >= 1 and k >= -252 (the first product is exact
    and normal), or |x| >= 2**126 (the first two products are exact and normal)."""
    a = abs(x)
    return k >= -126 or (a >= 1.0 and k >= -252) or a >= 2.0**126


LDEXP_K = st.one_of(
    st.sampled_from(
        (-381, -300, -276, -253, -252, -251, -200, -150, -149, -127, -126, -125, -1, 0, 1, 126, 127, 128, 254, 255, 381)
    ),
    st.integers(-381, 381),
)


def _underflowing_pair(sign: int, k: int, result_exp: int, mantissa: int) -> tuple[int, int]:
    """(x bits, k) with x * 2**k near 2**result_exp: x's exponent is chosen to fit."""
    field = max(0, min(254, result_exp - k + 127))
    return (sign << 31) | (field << 23) | mantissa, k


LDEXP_PAIRS = st.one_of(
    st.tuples(f32_bits_strategy(), LDEXP_K),
    # Results at or below the subnormal range, where ldexp has to round; k around
    # -252 is where the third multiplication starts to be used.
    st.builds(
        _underflowing_pair,
        st.integers(0, 1),
        st.one_of(st.sampled_from((-254, -253, -252, -251)), st.integers(-381, -100)),
        st.integers(-152, -120),
        st.integers(0, 0x7FFFFF),
    ),
)


@given(st.lists(LDEXP_PAIRS, min_size=10, max_size=100))
def test_ldexp_is_correctly_rounded_where_it_rounds_once(pairs):
    x = f32_from_bits([b for b, _ in pairs])
    k = np.array([k for _, k in pairs], dtype=np.int32)
    got = ref.ldexp(x, k)
    for xi, ki, gi in zip(x, k.tolist(), got):
        if not math.isfinite(float(xi)) or not ldexp_rounds_once(float(xi), ki):
            continue
        expected = exact_ldexp_f32(xi, ki)
        assert bits_of(gi) == bits_of(expected), (hex(int(bits_of(xi))), ki, gi, expected)


def test_ldexp_subnormal_results_and_overflow():
    # Cases with a known answer at the edges the general property may miss.
    cases = [
        (1.0, -149, 2.0**-149),  # smallest subnormal
        (1.0, -150, 0.0),  # exact tie between 0 and 2**-149 -> even (0)
        (1.5, -150, 2.0**-149),  # above the tie -> up
        (3.0, -150, 2.0**-148),  # 1.5 ulp -> tie -> even (2 ulp)
        (1.0, -126, 2.0**-126),
        (float(np.float32(2.0**127 * 1.5)), 1, math.inf),  # overflow
        (-1.0, 128, -math.inf),
        (1.0, 127, 2.0**127),
        (float(np.float32(1.999999880790710)), 127, float(np.finfo(np.float32).max)),
    ]
    for x, k, expected in cases:
        got = ref.ldexp(np.array([x], dtype=np.float32), np.array([k]))[0]
        assert float(got) == expected and math.copysign(1.0, float(got)) == math.copysign(1.0, expected), (x, k, got)
        assert bits_of(got) == bits_of(exact_ldexp_f32(np.float32(x), k))


@given(
    st.lists(st.sampled_from((0x00000000, 0x80000000, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFF800001)), min_size=1, max_size=20),
    LDEXP_K,
)
def test_ldexp_keeps_zeros_infinities_and_nan(bits, k):
    x = f32_from_bits(bits)
    got = ref.ldexp(x, np.full(x.shape, k, dtype=np.int32))
    nan = np.isnan(x)
    assert np.isnan(got[nan]).all()
    assert (bits_of(got[~nan]) == bits_of(x[~nan])).all()


TIES = st.builds(
    lambda m, s: s * (m + 0.5), st.integers(0, 2**23 - 1), st.sampled_from((1.0, -1.0))
)


def round_domain_strategy() -> st.SearchStrategy[float]:
    """float32 values with |y| < 2**62: ties, values near 2**23, and any
    pattern whose exponent field is below 127 + 62."""
    by_field = st.builds(
        lambda s, e, m: float(f32_from_bits([(s << 31) | (e << 23) | m])[0]),
        st.integers(0, 1), st.integers(0, 127 + 61), st.integers(0, 0x7FFFFF),
    )
    near_2_23 = st.sampled_from(
        (8388607.5, 8388608.0, 8388609.0, -8388607.5, 4194303.5, 4194304.5, 0.5, -0.5, 1.5, 2.5, -2.5)
    )
    return st.one_of(TIES, near_2_23, by_field)


@given(st.lists(round_domain_strategy(), min_size=1, max_size=200))
def test_round_half_even_to_int64_matches_python_round(values):
    y = np.array(values, dtype=np.float32)
    assert (np.abs(y) < 2.0**62).all()
    got = ref.round_half_even_to_int64(y)
    assert got.dtype == np.int64
    assert got.tolist() == [round(float(v)) for v in y]  # Python's round is ties-to-even


# ---------------------------------------------------------------------------
# bits_triton twins against bits_reference, in Triton's interpreter.
# ---------------------------------------------------------------------------

TWIN_OPS: dict[str, int] = {
    "f32_bits": 0,
    "bits_f32": 1,
    "exponent_of": 2,
    "pow2": 3,
    "ldexp": 4,
    "round_half_even_to_int64": 5,
    "fp32_to_bf16_bits": 6,
    "bf16_bits_to_fp32": 7,
}
TWIN_BLOCK = 64


@triton.jit
def _apply_bits_kernel(x_ptr, k_ptr, out_ptr, numel, OP: tl.constexpr, BLOCK: tl.constexpr):
    """out[i] = op(x[i], k[i]) widened to int64; float results as their bits."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    k = tl.load(k_ptr + offs, mask=mask, other=0)
    if OP == 0:
        r = bits_triton.f32_bits(x).to(tl.int64)
    elif OP == 1:
        r = bits_triton.f32_bits(bits_triton.bits_f32(k)).to(tl.int64)
    elif OP == 2:
        r = bits_triton.exponent_of(x).to(tl.int64)
    elif OP == 3:
        r = bits_triton.f32_bits(bits_triton.pow2(k)).to(tl.int64)
    elif OP == 4:
        r = bits_triton.f32_bits(bits_triton.ldexp(x, k)).to(tl.int64)
    elif OP == 5:
        r = bits_triton.round_half_even_to_int64(x)
    elif OP == 6:
        r = bits_triton.fp32_to_bf16_bits(x).to(tl.int64)
    else:
        r = bits_triton.f32_bits(bits_triton.bf16_bits_to_fp32(k)).to(tl.int64)
    tl.store(out_ptr + offs, r, mask=mask)


def run_twin(op: str, x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """The Triton twin of ``op`` applied elementwise in the interpreter."""
    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    kt = torch.from_numpy(np.ascontiguousarray(k, dtype=np.int32))
    out = torch.empty(x.shape, dtype=torch.int64)
    grid = (triton.cdiv(x.size, TWIN_BLOCK),)
    launch(_apply_bits_kernel, grid, xt, kt, out, x.size, OP=TWIN_OPS[op], BLOCK=TWIN_BLOCK)
    return out.numpy()


def canonical_nan_bits(b: np.ndarray) -> np.ndarray:
    """int64 float32 bits with every NaN replaced by 0x7FC00000 (float
    arithmetic does not promise NaN payloads)."""
    return np.where((b & 0x7FFFFFFF) > 0x7F800000, 0x7FC00000, b)


def run_reference(op: str, x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """The numpy twin of ``op``, with the output convention of run_twin."""
    if op == "f32_bits":
        return ref.f32_bits(x).astype(np.int64)
    if op == "bits_f32":
        return ref.f32_bits(ref.bits_f32(k)).astype(np.int64)
    if op == "exponent_of":
        return ref.exponent_of(x).astype(np.int64)
    if op == "pow2":
        return ref.f32_bits(ref.pow2(k)).astype(np.int64)
    if op == "ldexp":
        return ref.f32_bits(ref.ldexp(x, k)).astype(np.int64)
    if op == "round_half_even_to_int64":
        return ref.round_half_even_to_int64(x)
    if op == "fp32_to_bf16_bits":
        return ref.fp32_to_bf16_bits(x).astype(np.int64)
    return ref.f32_bits(ref.bf16_bits_to_fp32(k)).astype(np.int64)


def twin_inputs(op: str) -> st.SearchStrategy[tuple[np.ndarray, np.ndarray]]:
    """(x, k) arrays inside ``op``'s domain, of a length that is not a multiple
    of TWIN_BLOCK most of the time."""
    if op == "round_half_even_to_int64":
        xs = st.lists(round_domain_strategy(), min_size=1, max_size=150).map(lambda v: np.array(v, dtype=np.float32))
    else:
        xs = st.lists(f32_bits_strategy(), min_size=1, max_size=150).map(f32_from_bits)
    k_ranges = {"pow2": (-126, 127), "bf16_bits_to_fp32": (0, 0xFFFF), "bits_f32": (-(2**31), 2**31 - 1)}
    k_range = k_ranges.get(op, (-381, 381))  # ldexp's domain otherwise
    ks = st.integers(*k_range)

    @st.composite
    def pairs(draw):
        x = draw(xs)
        k = np.array(draw(st.lists(ks, min_size=x.size, max_size=x.size)), dtype=np.int64).astype(np.int32)
        return x, k

    return pairs()


@pytest.mark.parametrize("op", list(TWIN_OPS))
@settings(max_examples=25)
@given(data=st.data())
def test_triton_twin_matches_reference_bit_for_bit(op, data):
    x, k = data.draw(twin_inputs(op))
    got = run_twin(op, x, k)
    expected = run_reference(op, x, k)
    if op == "ldexp":
        got, expected = canonical_nan_bits(got), canonical_nan_bits(expected)
    mismatch = np.nonzero(got != expected)[0]
    examples = [(hex(int(bits_of(x[i]))), int(k[i]), int(got[i]), int(expected[i])) for i in mismatch[:5]]
    assert mismatch.size == 0, examples


def test_triton_pow2_over_its_whole_domain():
    k = np.arange(FLOAT32_MIN_NORMAL_EXP, FLOAT32_MAX_EXP + 1, dtype=np.int32)
    x = np.zeros(k.shape, dtype=np.float32)
    assert (run_twin("pow2", x, k) == run_reference("pow2", x, k)).all()
