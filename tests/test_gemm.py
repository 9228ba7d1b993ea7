"""Tests of refute's exact GEMM (kernels/gemm*.py, DESIGN.md rule 1).

* a brute-force model of the semantics (Python ints and ``fractions.Fraction``,
  every float32 rounding done by hand) validates the reference bit for bit;
* the reference and the Triton kernels (interpreter here) agree bit for bit
  over hypothesis-drawn shapes, strides, batches, slices and values;
* batch invariance, tile/chunk invariance, the int32 accumulation limit, the
  documented error bound, the special-value rules and input validation.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

# refute.kernels must be imported before triton: it selects the interpreter
# (no GPU here), and triton's own jit functions are fixed when triton loads.
import refute.kernels  # noqa: F401, I001
import triton
import triton.language as tl
from refute.kernels import gemm_reference as ref
from refute.kernels import gemm_triton as gt
from refute.kernels.backend import launch
from refute.kernels.gemm import MAX_K, gemm

# The interpreter runs the kernels' float ops in numpy, which warns where IEEE
# arithmetic overflows to inf or makes a NaN: both are part of the contract.
pytestmark = pytest.mark.filterwarnings("ignore:(overflow|invalid value) encountered:RuntimeWarning")

CANONICAL_NAN = ref.CANONICAL_NAN_BITS
F32_MIN_NORMAL_EXP = -126
F32_MANT_BITS = 23
F32_OVERFLOW = Fraction(2) ** 128

# ---------------------------------------------------------------------------
# helpers


def as_bits(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """Raw float32 bits as int32."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().contiguous().numpy()
    return np.ascontiguousarray(x, dtype=np.float32).view(np.int32)


def assert_same_bits(x: torch.Tensor | np.ndarray, y: torch.Tensor | np.ndarray) -> None:
    bx, by = as_bits(x), as_bits(y)
    assert bx.shape == by.shape, (bx.shape, by.shape)
    bad = np.argwhere(bx != by)
    if bad.size:
        i = tuple(bad[0])
        fx, fy = bx.view(np.float32)[i], by.view(np.float32)[i]
        raise AssertionError(
            f"{len(bad)} of {bx.size} elements differ; first at {i}: "
            f"{int(bx[i]) & 0xFFFFFFFF:#010x} ({fx!r}) vs {int(by[i]) & 0xFFFFFFFF:#010x} ({fy!r})"
        )


def f32_from_bits(bits: list[int]) -> np.ndarray:
    return np.array(bits, dtype=np.uint32).view(np.float32)


# ---------------------------------------------------------------------------
# brute-force model of the semantics: exact integers and rationals, with every
# float32 rounding written out (signed zeros, subnormals, overflow)


def pow2(k: int) -> Fraction:
    return Fraction(1 << k) if k >= 0 else Fraction(1, 1 << -k)


def round_f32(q: Fraction) -> float:
    """The float32 nearest to q (ties to even, with subnormals; overflow -> inf)."""
    if q == 0:
        return 0.0
    sign = -1.0 if q < 0 else 1.0
    a = abs(q)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if pow2(e) > a:
        e -= 1
    quantum = pow2(max(e, F32_MIN_NORMAL_EXP) - F32_MANT_BITS)
    v = round(a / quantum) * quantum  # Fraction.__round__ rounds half to even
    return sign * math.inf if v >= F32_OVERFLOW else sign * float(v)


def mul_pow2(x: float, k: int) -> float:
    """float32 x * 2**k, one IEEE multiplication."""
    if math.isnan(x) or math.isinf(x) or x == 0:
        return x
    return round_f32(Fraction(x) * pow2(k))


def ldexp3(x: float, k: int) -> float:
    """The semantics' ldexp: three IEEE multiplications by normal powers of two."""
    k1 = min(max(k, -126), 127)
    k2 = min(max(k - k1, -126), 127)
    k3 = min(max(k - k1 - k2, -126), 127)
    return mul_pow2(mul_pow2(mul_pow2(x, k1), k2), k3)


def add_f32(x: float, y: float) -> float:
    """float32 x + y, one IEEE addition (round to nearest even)."""
    if math.isnan(x) or math.isnan(y):
        return math.nan
    if math.isinf(x) or math.isinf(y):
        if math.isinf(x) and math.isinf(y) and x != y:
            return math.nan
        return x if math.isinf(x) else y
    if x == 0 and y == 0:
        return -0.0 if math.copysign(1, x) < 0 and math.copysign(1, y) < 0 else 0.0
    total = Fraction(x) + Fraction(y)
    return 0.0 if total == 0 else round_f32(total)


def exponent_field(v: float) -> int:
    """Exponent field of |v| minus 127, from frexp (not from the bits)."""
    v = abs(v)
    return -127 if v < 2.0**-126 else math.frexp(v)[1] - 1


def model_images(vec: list[float], slices: int) -> tuple[int, list[int]] | None:
    """(e, integer images) of a row/column, or None if it holds inf/NaN."""
    if not all(math.isfinite(v) for v in vec):
        return None
    e = exponent_field(max((abs(v) for v in vec), default=0.0))
    lim = 2 ** (7 * slices) - 1
    scale = pow2(7 * slices - 1 - e)
    return e, [min(max(round(Fraction(v) * scale), -lim), lim) for v in vec]


def model_gemm(a: np.ndarray, b: np.ndarray, slices: int, bias: np.ndarray | None) -> np.ndarray:
    """Bits of the exact GEMM of 2-D float32 a (M, K), b (K, N), from the definition."""
    with np.errstate(invalid="ignore"):  # widening a signalling NaN flags "invalid"
        rows = [model_images(r, slices) for r in a.astype(np.float64).tolist()]
        cols = [model_images(c, slices) for c in b.astype(np.float64).T.tolist()]
        bias_list = None if bias is None else bias.astype(np.float64).tolist()
    out = np.zeros((a.shape[0], b.shape[1]), dtype=np.float32)
    for i, row in enumerate(rows):
        for j, col in enumerate(cols):
            if row is None or col is None:
                c = math.nan
            else:
                p = sum(x * y for x, y in zip(row[1], col[1]))
                c = ldexp3(round_f32(Fraction(p)), row[0] + col[0] + 2 - 14 * slices)
            if bias_list is not None:
                c = add_f32(c, bias_list[j])
            out[i, j] = c
    bits = out.view(np.int32)
    bits[np.isnan(out)] = CANONICAL_NAN
    return out


# ---------------------------------------------------------------------------
# strategies

FINITE_SPECIAL_BITS = [
    0x00000000,  # +0
    0x80000000,  # -0
    0x00000001,  # smallest subnormal
    0x80000001,
    0x007FFFFF,  # largest subnormal
    0x00800000,  # smallest normal
    0x80800000,
    0x7F7FFFFF,  # largest finite
    0xFF7FFFFF,
    0x7F000000,  # 2**127
    0x3F800000,  # 1
    0x3FFFFFFF,  # 2 - ulp: its image rounds up to 2**(7s) and is clamped
    0xBFFFFFFF,
    0x3F7FFFFF,  # 1 - ulp/2
    0x1F800000,  # 2**-64: squares land near the underflow threshold
    0x1F000000,
    0x5F7FFFFF,  # just below 2**63
]
NONFINITE_BITS = [0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00001, 0x7FA00000]


@st.composite
def float32_arrays(draw: st.DrawFn, shape: tuple[int, ...]) -> np.ndarray:
    """float32 arrays with a drawn exponent centre and spread, optional
    per-row/column exponent offsets, zero rows/columns, and injected special
    values (finite ones often, inf/NaN rarely)."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    center = draw(st.sampled_from([0, -10, 20, -75, -130, 120, 126]) | st.integers(-150, 127))
    width = draw(st.sampled_from([0, 1, 3, 10, 60]))
    exps = center + rng.integers(-width, width + 1, size=shape)
    if len(shape) >= 2 and draw(st.booleans()):
        exps = exps + rng.integers(-40, 41, size=shape[:-1] + (1,))
    if len(shape) >= 2 and draw(st.booleans()):
        exps = exps + rng.integers(-40, 41, size=shape[:-2] + (1, shape[-1]))
    mant = rng.uniform(1.0, 2.0, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    with np.errstate(all="ignore"):
        x = np.ldexp(mant, np.clip(exps, -160, 127)).astype(np.float32)
    x[~np.isfinite(x)] = np.float32(3.0e38)
    flat = x.reshape(-1)
    if x.size and len(shape) >= 2 and draw(st.integers(0, 4)) == 0:
        axis = draw(st.sampled_from([-1, -2]))
        idx = draw(st.integers(0, shape[axis] - 1))
        np.moveaxis(x, axis, -1)[..., idx] = 0.0  # a zero column / row
    if x.size:
        for _ in range(draw(st.integers(0, 4))):
            flat[draw(st.integers(0, x.size - 1))] = f32_from_bits([draw(st.sampled_from(FINITE_SPECIAL_BITS))])[0]
        if draw(st.integers(0, 5)) == 0:
            flat[draw(st.integers(0, x.size - 1))] = f32_from_bits([draw(st.sampled_from(NONFINITE_BITS))])[0]
    return x


def dims(lo: int, hi: int, favourites: list[int]) -> st.SearchStrategy[int]:
    return st.sampled_from([d for d in favourites if lo <= d <= hi]) | st.integers(lo, hi)


@st.composite
def gemm_cases(draw: st.DrawFn, max_mn: int, max_k: int, batched: bool) -> dict:
    """A full gemm call: slices, op shapes, batch broadcasting, transposes, bias."""
    m = draw(dims(1, max_mn, [1, 2, 15, 16, 17, 33, 63, 65]))
    n = draw(dims(1, max_mn, [1, 3, 16, 31, 64, 66]))
    k = draw(dims(1, max_k, [1, 2, 31, 32, 33, 64, 65, 127]))
    batch_a, batch_b = draw(
        st.sampled_from([((), ()), ((2,), ()), ((), (2,)), ((3,), (3,)), ((2, 1), (3,)), ((1,), (2,))])
        if batched
        else st.just(((), ()))
    )
    trans_a, trans_b = draw(st.booleans()), draw(st.booleans())
    a = draw(float32_arrays(batch_a + ((k, m) if trans_a else (m, k))))
    b = draw(float32_arrays(batch_b + ((n, k) if trans_b else (k, n))))
    bias = draw(st.none() | float32_arrays((n,)))
    return {
        "a": torch.from_numpy(a),
        "b": torch.from_numpy(b),
        "slices": draw(st.integers(1, 4)),
        "bias": None if bias is None else torch.from_numpy(bias),
        "trans_a": trans_a,
        "trans_b": trans_b,
    }


# ---------------------------------------------------------------------------
# the brute-force model and the reference


def test_model_rounding_matches_numpy_float64_to_float32():
    """The model's hand-written rounding equals the hardware's float64 -> float32
    conversion (one RNE rounding) across the whole range, subnormals included."""
    rng = np.random.default_rng(1)
    x = np.ldexp(rng.uniform(-2.0, 2.0, 3000), rng.integers(-160, 130, 3000))
    x = np.concatenate([x, [2.0**-150, 3 * 2.0**-151, 2.0**128 * (1 - 2.0**-25), 2.0**128 * (1 - 2.0**-24)]])
    with np.errstate(over="ignore"):
        expected = x.astype(np.float32)
    got = np.array([round_f32(Fraction(v)) for v in x.tolist()], dtype=np.float32)
    assert_same_bits(got, expected)


def test_int64_to_float32_conversions_round_once():
    """2**60 + 2**36 + 1 rounds up in one RNE step; through float64 it would
    first lose the +1 and then tie down to 2**60."""
    x = 2**60 + 2**36 + 1
    assert int(np.array([x], dtype=np.int64).astype(np.float32)[0]) == 2**60 + 2**37
    assert int(torch.tensor([x], dtype=torch.int64).to(torch.float32)[0]) == 2**60 + 2**37
    assert int(np.float32(np.float64(x))) == 2**60


@settings(max_examples=150)
@given(
    m=st.integers(1, 3),
    n=st.integers(1, 3),
    k=st.integers(1, 8),
    slices=st.integers(1, 4),
    data=st.data(),
)
def test_reference_matches_bruteforce_model(m, n, k, slices, data):
    a = data.draw(float32_arrays((m, k)))
    b = data.draw(float32_arrays((k, n)))
    bias = data.draw(st.none() | float32_arrays((n,)))
    got = ref.gemm_reference(a, b, slices, bias)
    assert_same_bits(got, model_gemm(a, b, slices, bias))


@settings(max_examples=40)
@given(k=st.integers(1, 160), slices=st.sampled_from([3, 4]), data=st.data())
def test_reference_matches_model_on_products_beyond_2_pow_61(k, slices, data):
    """Entries within a factor 4/3 of their row's max make |P| approach
    K * 2**(14s): each s=4 image is >= 0.75 * 2**28, so for K >= 64
    |P| >= 2**61.17 and the reference must take its two-limb, sticky-bit path."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    e = data.draw(st.integers(-20, 20))
    a = (rng.uniform(1.5, 2.0, (2, k)) * 2.0**e).astype(np.float32)
    b = (rng.uniform(1.5, 2.0, (k, 2)) * rng.choice([-1.0, 1.0], (1, 2))).astype(np.float32)
    got = ref.gemm_reference(a, b, slices)
    assert_same_bits(got, model_gemm(a, b, slices, None))


def _limb_cases() -> st.SearchStrategy[int]:
    """Integers up to 2**80 with many exact ties and near-ties at float32 precision."""
    tie = st.builds(
        lambda mant, shift, delta, sign: sign * ((mant << shift) + (1 << (shift - 1)) + delta),
        st.integers(2**23, 2**24 - 1),
        st.integers(30, 56),
        st.sampled_from([-1, 0, 1]),
        st.sampled_from([-1, 1]),
    )
    edges = st.sampled_from([2**61, 2**61 - 1, 2**61 + 1, -(2**61), -(2**61) - 1, 2**62, -(2**62) + 1, 2**60 + 2**36 + 1])
    return st.integers(-(2**80), 2**80) | tie | edges


def _to_limbs(values: list[int]) -> tuple[np.ndarray, np.ndarray]:
    h = np.array([v >> 32 for v in values], dtype=np.int64)
    low = np.array([v & 0xFFFFFFFF for v in values], dtype=np.int64)
    return h, low


@triton.jit
def _limbs_probe_kernel(h_ptr, low_ptr, out_ptr, n, BLOCK: tl.constexpr):
    """Test-only: out = gemm_triton.limbs_to_f32(h, low), elementwise."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    h = tl.load(h_ptr + offs, mask=mask, other=0)
    low = tl.load(low_ptr + offs, mask=mask, other=0)
    tl.store(out_ptr + offs, gt.limbs_to_f32(h, low), mask=mask)


@settings(max_examples=20)
@given(values=st.lists(_limb_cases(), min_size=1, max_size=64))
def test_limbs_to_f32_rounds_exact_integers_once(values):
    """Both twins of fl32(H * 2**32 + L) equal the exact rounding of the integer."""
    h, low = _to_limbs(values)
    expected = np.array([round_f32(Fraction(v)) for v in values], dtype=np.float32)
    assert_same_bits(ref.limbs_to_f32(h, low), expected)
    out = torch.empty(len(values), dtype=torch.float32)
    launch(_limbs_probe_kernel, (1,), torch.from_numpy(h), torch.from_numpy(low), out, len(values), BLOCK=64)
    assert_same_bits(out, expected)


# ---------------------------------------------------------------------------
# reference == Triton (interpreter)


@settings(max_examples=30)
@given(case=gemm_cases(max_mn=70, max_k=140, batched=True))
def test_triton_matches_reference(case):
    expected = gemm(**case, backend="reference")
    got = gemm(**case, backend="triton")
    assert_same_bits(got, expected)


@pytest.mark.parametrize("slices", [1, 2, 3, 4])
def test_triton_matches_reference_long_k(slices):
    """K = 2600 crosses the reference's 2048-term float64 chunks for s=3, and a
    short int32 chunk makes the kernel flush dozens of times."""
    rng = np.random.default_rng(slices)
    a = torch.from_numpy((rng.standard_normal((3, 2600)) * np.exp2(rng.integers(-30, 30, (3, 1)))).astype(np.float32))
    b = torch.from_numpy(rng.standard_normal((2600, 5)).astype(np.float32))
    b[17, 2] = 1.0e30  # one column whose other terms all underflow in its image
    expected = gemm(a, b, slices=slices)
    got = gt.gemm_triton(a, b, slices, block_m=16, block_n=16, block_k=128, chunk_k=256)
    assert_same_bits(got, expected)


TILE_CONFIGS = [
    {"block_m": 16, "block_n": 16, "block_k": 32, "chunk_k": 32},
    {"block_m": 32, "block_n": 64, "block_k": 64, "chunk_k": None},
    {"block_m": 64, "block_n": 16, "block_k": 32, "chunk_k": 96},
    {"block_m": 16, "block_n": 32, "block_k": 128, "chunk_k": 256},
]


@pytest.mark.parametrize("slices", [2, 4])
def test_tile_and_chunk_invariance(slices):
    """Block sizes and the int32 flush length change the schedule, not the bits."""
    rng = np.random.default_rng(10 + slices)
    a = torch.from_numpy(np.ldexp(rng.standard_normal((2, 21, 100)), rng.integers(-8, 8, (2, 21, 100))).astype(np.float32))
    b = torch.from_numpy(rng.standard_normal((100, 35)).astype(np.float32))
    bias = torch.from_numpy(rng.standard_normal(35).astype(np.float32))
    expected = gemm(a, b, slices=slices, bias=bias)
    for config in TILE_CONFIGS:
        assert_same_bits(gt.gemm_triton(a, b, slices, bias, **config), expected)


def test_max_chunk_k_is_the_largest_safe_multiple():
    for slices in range(1, 5):
        for block_k in (16, 64, 256):
            chunk = gt.max_chunk_k(slices, block_k)
            assert chunk % block_k == 0
            assert chunk * 127**2 * slices <= 2**31 - 1 < (chunk + block_k) * 127**2 * slices


@pytest.mark.slow
@pytest.mark.parametrize("slices,block_k", [(1, 128), (3, 64)])
def test_int32_level_sums_at_their_limit(slices, block_k):
    """Every digit 127 over a full default chunk plus one block. 2 - 2**-23
    scales to 2**(7s) - 2**(7s-24), which rounds up to 2**(7s) and is clamped
    to 2**(7s) - 1; the fullest level then sums chunk * 127**2 * s, 99.9% of
    2**31. Any overflow, saturation or lost flush would change
    P = K * (2**(7s) - 1)**2."""
    k = gt.max_chunk_k(slices, block_k) + block_k
    assert gt.max_chunk_k(slices, block_k) * 127**2 * slices > 0.999 * 2**31
    a = torch.from_numpy(np.full((1, k), f32_from_bits([0x3FFFFFFF])[0]))
    b = torch.from_numpy(np.full((k, 1), f32_from_bits([0x3FFFFFFF])[0]))
    assert ref.images(a.numpy(), ref.max_abs_bits(a.numpy(), -1), -1, slices)[0, 0] == 2 ** (7 * slices) - 1
    expected = model_gemm(a.numpy(), b.numpy(), slices, None)
    assert_same_bits(gemm(a, b, slices=slices), expected)
    assert_same_bits(gt.gemm_triton(a, b, slices, block_m=16, block_n=16, block_k=block_k), expected)


# ---------------------------------------------------------------------------
# invariances


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("slices", [1, 2, 3, 4])
def test_batch_invariance(backend, slices):
    """A row's bits depend only on that row and B: not on M, on the other rows
    (even huge or non-finite ones) or on the other matrices of the batch."""
    rng = np.random.default_rng(20 + slices)
    a = torch.from_numpy(rng.standard_normal((3, 21, 40)).astype(np.float32))
    b = torch.from_numpy(rng.standard_normal((40, 19)).astype(np.float32))
    full = gemm(a, b, slices=slices, backend=backend)
    assert_same_bits(gemm(a[1, 4:9], b, slices=slices, backend=backend), full[1, 4:9])
    assert_same_bits(gemm(a[2, 7:8], b, slices=slices, backend=backend), full[2, 7:8])
    noisy = a.clone()
    noisy[:, 0] = 3.0e38
    noisy[0, 1, 3] = math.inf
    noisy[2, :2] = 1.0e-40
    assert_same_bits(gemm(noisy, b, slices=slices, backend=backend)[:, 2:], full[:, 2:])


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_transposes_and_strides_do_not_change_bits(backend):
    rng = np.random.default_rng(30)
    a = torch.from_numpy(rng.standard_normal((2, 33, 2 * 47)).astype(np.float32))[:, :, ::2]  # non-contiguous
    b = torch.from_numpy(rng.standard_normal((47, 29)).astype(np.float32))
    expected = gemm(a.contiguous(), b, slices=3, backend=backend)
    assert_same_bits(gemm(a, b, slices=3, backend=backend), expected)
    at = a.transpose(-1, -2).contiguous()
    bt = b.t().contiguous()
    assert_same_bits(gemm(at, bt, slices=3, trans_a=True, trans_b=True, backend=backend), expected)


# ---------------------------------------------------------------------------
# special values


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_special_value_rules(backend):
    a = torch.tensor([[1.0, 2.0], [math.nan, 1.0], [1.0, -1.0], [3.0e38, 3.0e38], [1e-30, 1e-30]])
    b = torch.tensor([[1.0, math.inf, 3.0e38], [1.0, 1.0, 1.0]])
    c = gemm(a, b, slices=2, backend=backend)
    bits = as_bits(c)
    # row 1 holds a NaN and column 1 an inf: canonical NaN there, nowhere else
    assert (bits[1, :] == CANONICAL_NAN).all() and (bits[:, 1] == CANONICAL_NAN).all()
    assert not np.isnan(c[[0, 2, 3, 4]][:, [0, 2]].numpy()).any()
    assert bits[2, 0] == 0  # 1*1 + (-1)*1: P = 0 gives +0
    assert c[3, 0] == math.inf and c[3, 2] == math.inf  # overflow rounds to inf
    assert c[0, 0] == 3.0 and c[4, 2] == pytest.approx(3e8, rel=1e-3)
    bias = torch.tensor([-math.inf, 0.0, math.nan])
    cb = gemm(a, b, slices=2, bias=bias, backend=backend)
    assert (as_bits(cb)[:, 2] == CANONICAL_NAN).all()
    assert as_bits(cb)[3, 0] == CANONICAL_NAN  # inf + (-inf)
    assert cb[0, 0] == -math.inf


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_empty_dimensions(backend):
    bias = torch.tensor([1.5, -0.0, 2.0])
    c = gemm(torch.ones(4, 0), torch.ones(0, 3), bias=bias, backend=backend)
    assert_same_bits(c, torch.tensor([[1.5, 0.0, 2.0]] * 4))  # empty sum +0, +0 + -0 = +0
    assert gemm(torch.ones(2, 0, 5), torch.ones(5, 3), backend=backend).shape == (2, 0, 3)


# ---------------------------------------------------------------------------
# accuracy


def error_bound(a: np.ndarray, b: np.ndarray, slices: int) -> np.ndarray:
    """docs/numerics.md's bound on |C - A @ B| for finite, non-overflowing C.

    Image errors |ΔA_ik| <= α_i = 2**(e_i + 1 - 7s), |ΔB_kj| <= β_j; the
    integer product is exact; one rounding to float32 (relative 2**-24, plus
    2**-149 absolute when subnormal). The float64 comparison product adds its
    own K * 2**-52 |A||B|.
    """
    k = a.shape[-1]
    alpha = np.ldexp(1.0, np.array([exponent_field(v) for v in np.abs(a).max(axis=1)]) + 1 - 7 * slices)[:, None]
    beta = np.ldexp(1.0, np.array([exponent_field(v) for v in np.abs(b).max(axis=0)]) + 1 - 7 * slices)[None, :]
    a64, b64 = np.abs(a.astype(np.float64)), np.abs(b.astype(np.float64))
    image_err = alpha * b64.sum(axis=0)[None, :] + beta * a64.sum(axis=1)[:, None] + k * alpha * beta
    exact_mag = a64 @ b64
    return image_err * (1 + 2.0**-23) + 2.0**-24 * exact_mag + 2.0**-149 + k * 2.0**-52 * exact_mag


@pytest.mark.parametrize("slices", [1, 2, 3, 4])
@pytest.mark.parametrize("kind", ["normal", "wide"])
def test_error_within_documented_bound(slices, kind):
    rng = np.random.default_rng(40 + slices)
    a = rng.standard_normal((48, 300))
    b = rng.standard_normal((300, 40))
    if kind == "wide":  # rows/columns across 60 binades, elements within a row over 16
        a = np.ldexp(a, rng.integers(-30, 30, (48, 1)) + rng.integers(-8, 8, (48, 300)))
        b = np.ldexp(b, rng.integers(-30, 30, (1, 40)))
    a, b = a.astype(np.float32), b.astype(np.float32)
    c = gemm(torch.from_numpy(a), torch.from_numpy(b), slices=slices).numpy().astype(np.float64)
    err = np.abs(c - a.astype(np.float64) @ b.astype(np.float64))
    bound = error_bound(a, b, slices)
    assert (err <= bound).all(), float((err / bound).max())
    if slices == 1:
        assert (err > 0).any()  # 7-bit images are visibly inexact


# ---------------------------------------------------------------------------
# validation


def test_float_constants_are_exact_in_float32():
    for value in (gt._TWO_POW_32.value, float(ref.TWO_POW_32_F32)):
        assert float(np.float32(value)) == value == 2.0**32


@pytest.mark.parametrize(
    "kwargs,error",
    [
        ({"a": torch.ones(2, 3, dtype=torch.float64)}, TypeError),
        ({"b": torch.ones(3, 2, dtype=torch.bfloat16)}, TypeError),
        ({"a": [[1.0]]}, TypeError),
        ({"a": torch.ones(3)}, ValueError),
        ({"a": torch.ones(2, 4)}, ValueError),
        ({"slices": 0}, ValueError),
        ({"slices": 5}, ValueError),
        ({"slices": True}, TypeError),
        ({"slices": 2.0}, TypeError),
        ({"bias": torch.ones(3)}, ValueError),
        ({"bias": torch.ones(2, dtype=torch.float64)}, TypeError),
        ({"trans_a": 1}, TypeError),
        ({"backend": "cuda"}, ValueError),
        ({"a": torch.ones(2, 2, 3), "b": torch.ones(3, 3, 2)}, ValueError),
        ({"a": torch.ones(1, MAX_K + 1), "b": torch.ones(MAX_K + 1, 2)}, ValueError),
    ],
)
def test_invalid_arguments_are_rejected(kwargs, error):
    args = {"a": torch.ones(2, 3), "b": torch.ones(3, 2)} | kwargs
    a, b = args.pop("a"), args.pop("b")
    with pytest.raises(error):
        gemm(a, b, **args)


@pytest.mark.parametrize(
    "config", [{"block_m": 8}, {"block_k": 16}, {"block_k": 48}, {"chunk_k": 40}, {"chunk_k": 10**7}]
)
def test_invalid_tile_configs_are_rejected(config):
    with pytest.raises(ValueError):
        gt.gemm_triton(torch.ones(2, 3), torch.ones(3, 2), 2, **config)


def test_cached_weight_images_follow_in_place_updates():
    """The reference caches a weight's images; writing into the weight must not
    serve stale images (the cache keys on the tensor's version counter)."""
    g = torch.Generator().manual_seed(5)
    w = torch.randn(300, 257, generator=g)
    x = torch.randn(3, 257, generator=g)
    first = gemm(x, w, trans_b=True)
    assert torch.equal(first.view(torch.int32), gemm(x, w, trans_b=True).view(torch.int32))
    w.mul_(3.0)
    fresh = gemm(x, w.clone(), trans_b=True)
    assert torch.equal(gemm(x, w, trans_b=True).view(torch.int32), fresh.view(torch.int32))
    assert not torch.equal(first.view(torch.int32), fresh.view(torch.int32))
