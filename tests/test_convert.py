"""bf16 <-> fp32 conversions (kernels/convert.py): interpreter == reference on
raw bits, narrowing == torch's CPU rounding (RNE) on every non-NaN input and
== an exact rule computed independently, widening exact over all 2**16
bf16 patterns."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from refute.kernels import convert_triton
from refute.kernels.convert import bf16_to_fp32, fp32_to_bf16
from test_bits import bits_of, f32_bits_strategy, f32_from_bits, round_fraction

# The interpreter evaluates kernels with numpy, which warns on overflow and NaN.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

BF16_PRECISION = 8
BINADE = 1 << 23  # float32 patterns per binade (one exponent field value)
BLOCKS = (16, 64, convert_triton.DEFAULT_BLOCK)
LOW_HALF_PROBES = (0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF)  # bf16 ties and their neighbours


def to_torch_f32(bits: np.ndarray | list[int]) -> torch.Tensor:
    return torch.from_numpy(f32_from_bits(bits).copy())


def bf16_bits(t: torch.Tensor) -> np.ndarray:
    """bf16 bits of a bfloat16 tensor as int64 in [0, 65535]."""
    return t.view(torch.int16).numpy().astype(np.int64) & 0xFFFF


def is_nan_bits(b: np.ndarray) -> np.ndarray:
    return (np.asarray(b, dtype=np.int64) & 0x7FFFFFFF) > 0x7F800000


def exact_bf16_rule(x: np.ndarray) -> np.ndarray:
    """float64 values of RNE(x) in bf16 for non-NaN float32 ``x``, computed
    with float64 arithmetic that is exact here (scaling by powers of two,
    floor, subtraction of nearby values); no bit manipulation."""
    a = np.abs(x.astype(np.float64))
    exp = np.frexp(a)[1] - 1  # 2**exp <= a < 2**(exp+1) (a > 0)
    quantum = np.maximum(exp, -126) - (BF16_PRECISION - 1)
    t = np.ldexp(a, -quantum)
    lo = np.floor(t)
    frac = t - lo
    m = lo + ((frac > 0.5) | ((frac == 0.5) & (lo % 2 == 1)))
    r = np.ldexp(m, quantum)
    r = np.where(r >= 2.0**128, np.inf, r)
    r = np.where(np.isinf(a), np.inf, r)
    return np.copysign(r, x.astype(np.float64))


BIT_ARRAYS = st.lists(f32_bits_strategy(), min_size=1, max_size=300).map(lambda b: np.array(b, dtype=np.uint64))


@settings(max_examples=40)
@given(BIT_ARRAYS, st.sampled_from(BLOCKS))
def test_narrowing_interpreter_matches_reference(bits, block):
    x = to_torch_f32(bits)
    expected = fp32_to_bf16(x, backend="reference")
    got = convert_triton.fp32_to_bf16_bits_launch(x.view(torch.int32), block=block).view(torch.bfloat16)
    assert np.array_equal(bf16_bits(got), bf16_bits(expected))
    assert np.array_equal(bf16_bits(fp32_to_bf16(x, backend="triton")), bf16_bits(expected))


@settings(max_examples=40)
@given(st.lists(st.integers(0, 0xFFFF), min_size=1, max_size=300), st.sampled_from(BLOCKS))
def test_widening_interpreter_matches_reference(h, block):
    x = torch.from_numpy(np.array(h, dtype=np.uint16).view(np.int16)).view(torch.bfloat16)
    expected = bf16_to_fp32(x, backend="reference").view(torch.int32)
    got = convert_triton.bf16_to_fp32_bits_launch(x.view(torch.int16), block=block)
    assert torch.equal(got, expected)
    assert torch.equal(bf16_to_fp32(x, backend="triton").view(torch.int32), expected)


def test_narrowing_interpreter_matches_reference_on_every_bf16_neighbourhood():
    # Every upper half (sign, exponent, top 7 mantissa bits, NaN and inf
    # included) with the lower halves that decide the rounding.
    high = np.arange(1 << 16, dtype=np.uint64) << 16
    bits = (high[:, None] | np.array(LOW_HALF_PROBES, dtype=np.uint64)[None, :]).ravel()
    x = to_torch_f32(bits)
    got = fp32_to_bf16(x, backend="triton")
    expected = fp32_to_bf16(x, backend="reference")
    assert np.array_equal(bf16_bits(got), bf16_bits(expected))


def test_widening_is_exact_over_all_bf16_patterns():
    h = np.arange(1 << 16, dtype=np.int64)
    x = torch.from_numpy(h.astype(np.uint16).view(np.int16)).view(torch.bfloat16)
    sign = np.where(h >> 15, -1.0, 1.0)
    field = (h >> 7) & 0xFF
    mant = h & 0x7F
    # Value of each pattern from its fields: normal (1 + m/128) * 2**(E-127),
    # subnormal m * 2**-133, inf for the all-ones field with m = 0.
    subnormal = np.ldexp(mant.astype(np.float64), -133)
    normal = np.ldexp((128 + mant).astype(np.float64), field - 134)
    value = sign * np.where(field == 0, subnormal, normal)
    value = np.where((field == 0xFF) & (mant == 0), sign * np.inf, value)
    nan = (field == 0xFF) & (mant != 0)
    for backend in ("reference", "triton"):
        y = bf16_to_fp32(x, backend=backend)
        assert y.dtype == torch.float32
        yb = y.view(torch.int32).numpy().astype(np.int64) & 0xFFFFFFFF
        assert np.array_equal(yb, h << 16), backend  # bits: payloads and signs kept
        yv = y.numpy().astype(np.float64)
        assert np.array_equal(yv[~nan], value[~nan]) and np.isnan(yv[nan]).all(), backend
        assert np.array_equal(np.signbit(yv), h >> 15 == 1), backend


@pytest.mark.parametrize(
    "field,sign",
    [(0, 0), (0, 1), (1, 0), (127, 0), (126, 1), (254, 0), (254, 1)],
    ids=["subnormal", "-subnormal", "min-normal", "one", "-half", "top", "-top"],
)
def test_narrowing_exhaustive_binade(field, sign):
    """Every float32 of one binade vs the exact rule and vs torch's RNE."""
    bits = (np.uint64(sign) << np.uint64(31)) | (np.uint64(field) << np.uint64(23)) | np.arange(BINADE, dtype=np.uint64)
    x = to_torch_f32(bits)
    got = fp32_to_bf16(x, backend="reference")
    got_value = got.to(torch.float32).numpy().astype(np.float64)
    expected = exact_bf16_rule(x.numpy())
    assert np.array_equal(got_value, expected)
    assert np.array_equal(np.signbit(got_value), np.signbit(expected))
    assert torch.equal(got.view(torch.int16), x.to(torch.bfloat16).view(torch.int16))


def test_narrowing_overflow_edge():
    # 0x7F7F7FFF is just below the tie between bf16's largest finite 0x7F7F
    # and 2**128; the tie 0x7F7F8000 goes to even (inf), as does everything above.
    x = to_torch_f32([0x7F7F7FFF, 0x7F7F8000, 0x7F7FFFFF, 0xFF7F8000, 0x7F7F0000])
    got = bf16_bits(fp32_to_bf16(x))
    assert got.tolist() == [0x7F7F, 0x7F80, 0x7F80, 0xFF80, 0x7F7F]


@given(st.lists(f32_bits_strategy(), min_size=1, max_size=100))
def test_narrowing_matches_fraction_oracle_and_torch(bits):
    x = to_torch_f32(bits)
    got = fp32_to_bf16(x)
    got_value = got.to(torch.float32).numpy()
    torch_bits = bf16_bits(x.to(torch.bfloat16))
    for xi, gi, gb, tb in zip(x.numpy(), got_value, bf16_bits(got), torch_bits):
        if math.isnan(xi):
            # NaN stays NaN with its sign and quiet bit (torch canonicalises, so no torch check).
            assert math.isnan(gi) and (gb >> 15) == (int(bits_of(xi)) >> 31) and gb & 0x40
            continue
        assert gb == tb
        if math.isinf(xi):
            assert gi == xi
            continue
        r = round_fraction(Fraction(float(xi)), precision=BF16_PRECISION)
        assert float(gi) == r and math.copysign(1.0, float(gi)) == math.copysign(1.0, float(xi)), (xi, gi, r)


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (5,), (2, 3, 7)])
def test_shapes_are_preserved(backend, shape):
    x = torch.randn(shape, dtype=torch.float32, generator=torch.Generator().manual_seed(0))
    y = fp32_to_bf16(x, backend=backend)
    assert y.dtype == torch.bfloat16 and y.shape == x.shape
    z = bf16_to_fp32(y, backend=backend)
    assert z.dtype == torch.float32 and z.shape == x.shape
    assert torch.equal(z.view(torch.int32), y.to(torch.float32).view(torch.int32))


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_non_contiguous_input(backend):
    x = torch.randn(6, 5, generator=torch.Generator().manual_seed(1)).t()
    assert not x.is_contiguous()
    assert torch.equal(fp32_to_bf16(x, backend=backend).view(torch.int16), x.to(torch.bfloat16).view(torch.int16))


def test_bad_inputs_raise():
    with pytest.raises(TypeError, match="float32"):
        fp32_to_bf16(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(TypeError, match="bfloat16"):
        bf16_to_fp32(torch.zeros(3))
    with pytest.raises(TypeError, match="torch.Tensor"):
        fp32_to_bf16(np.zeros(3, dtype=np.float32))
    with pytest.raises(ValueError, match="backend"):
        fp32_to_bf16(torch.zeros(3), backend="cuda")
