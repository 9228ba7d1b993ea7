"""refute's fp32 math library: reference == Triton bit for bit, special values,
constants, and accuracy against float64.

The Triton backend runs in the interpreter here (no GPU); on a GPU machine the
same tests compare the compiled kernels.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

from refute.kernels import mathlib
from refute.kernels import mathlib_reference as ref
from refute.kernels.backend import interpreter_enabled

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the interpreter's numpy on unselected lanes

FUNCTIONS = list(mathlib.__all__)
CANONICAL_NAN = 0x7FC00000
FLT_MAX = float(np.finfo(np.float32).max)
ULP_TARGET = {"exp": 2, "log": 2, "sin": 2, "cos": 2, "tanh": 3, "sigmoid": 3, "erf": 3, "rsqrt": 3}
ERF64 = np.frompyfunc(math.erf, 1, 1)


def bits_to_f32(bits: list[int] | np.ndarray) -> np.ndarray:
    return np.asarray(bits, dtype=np.int64).astype(np.uint32).view(np.float32)


def f32_hex(v: float) -> int:
    return int(np.float32(v).view(np.uint32))


def device_for(backend: str) -> str:
    """Where a backend's tensors live: the Triton backend runs compiled on CUDA
    unless the interpreter is on (always, on a machine without a GPU)."""
    return "cuda" if backend == "triton" and not interpreter_enabled() else "cpu"


def run(name: str, x: np.ndarray, backend: str = "reference") -> np.ndarray:
    # np.array keeps a 0-d array 0-d (np.ascontiguousarray would make it 1-d)
    xt = torch.from_numpy(np.array(x, np.float32)).to(device_for(backend))
    return getattr(mathlib, name)(xt, backend=backend).cpu().numpy()


def ulp_error(y: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """|y - truth| in ulps of the float32 binade of truth (2**-149 below 2**-126)."""
    _, exponent = np.frexp(np.abs(truth))
    ulp = np.ldexp(1.0, np.maximum(exponent - 24, -149))
    return np.abs(y.astype(np.float64) - truth) / ulp


# ---------------------------------------------------------------------------
# Reference == Triton, bit for bit
# ---------------------------------------------------------------------------

# Bit patterns every function must see often: signed zeros, infinities, NaNs
# with various payloads, subnormal and normal extremes, and each program's
# branch points and thresholds.
SPECIAL_BITS = [
    0x00000000, 0x80000000, 0x7F800000, 0xFF800000,  # +-0, +-inf
    0x7FC00000, 0xFFC00000, 0x7F800001, 0xFFFFFFFF, 0x7FA12345,  # NaNs (quiet, signalling, payloads)
    0x00000001, 0x80000001, 0x007FFFFF, 0x807FFFFF,  # subnormal extremes
    0x00800000, 0x80800000, 0x7F7FFFFF, 0xFF7FFFFF,  # normal extremes
    0x3F800000, 0xBF800000, 0x3F7FFFFF, 0x3F800001,  # around 1
    0x42B17217, 0x42B17218, 0xC2CFF1B4, 0xC2CFF1B5, 0xC2AEAC50,  # exp overflow / underflow thresholds
    0x42B20000, 0xC2D00000,  # exp clamp points 89, -104
    0x3F200000, 0x41102CB4, 0x40800000, 0x4079AEA4,  # tanh split and saturation, erf clamp and saturation
    0x3F490FDB, 0x3F490FDC, 0x3FC90FDB, 0x40490FDB, 0x477FFF00, 0x47800000,  # pi/4, pi/2, pi, 2**16
    0x3F3504F3, 0x3FB504F3,  # sqrt(1/2), sqrt(2): log's reduction boundaries
]

special = st.sampled_from(SPECIAL_BITS)
any_bits = st.integers(0, 2**32 - 1)
moderate = st.floats(-100.0, 100.0, width=32).map(f32_hex)


@st.composite
def float32_arrays(draw: st.DrawFn) -> np.ndarray:
    """A float32 array of a drawn shape (0-d, empty, several dims, or long 1-D
    not a multiple of the kernel's block) whose elements mix drawn special,
    arbitrary and moderate bit patterns with seeded random bits."""
    shape = draw(
        st.one_of(
            array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=9),
            st.integers(1000, 2100).map(lambda n: (n,)),
        )
    )
    size = math.prod(shape)
    drawn = draw(st.lists(st.one_of(special, any_bits, moderate), min_size=1, max_size=48))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    bits = rng.integers(0, 2**32, size, dtype=np.int64)
    if size:
        where = rng.integers(0, size, len(drawn))
        bits[where] = drawn
        bits[: min(size, len(drawn))] = drawn[:size]
    return bits_to_f32(bits).reshape(shape)


@pytest.mark.parametrize("name", FUNCTIONS)
@settings(max_examples=30)
@given(x=float32_arrays())
def test_reference_equals_triton_bitwise(name: str, x: np.ndarray) -> None:
    a = run(name, x, "reference")
    b = run(name, x, "triton")
    assert a.shape == b.shape == x.shape and a.dtype == b.dtype == np.float32
    xf, af, bf = (v.reshape(-1).view(np.uint32) for v in (x, a, b))
    mismatch = np.nonzero(af != bf)[0]
    assert mismatch.size == 0, [(hex(xf[i]), hex(af[i]), hex(bf[i])) for i in mismatch[:5]]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_reference_equals_triton_on_every_exponent(name: str) -> None:
    """Every exponent field (all 256, both signs) with random mantissas, plus
    each function's meaningful range densely: one launch of 2**13 elements."""
    rng = np.random.default_rng(7)
    exps = np.repeat(np.arange(512, dtype=np.int64), 8)
    bits = (exps << 23) | rng.integers(0, 2**23, exps.size)
    dense = rng.uniform(-20.0, 20.0, 8192 - bits.size).astype(np.float32)
    x = np.concatenate([bits_to_f32(bits), dense])
    assert np.array_equal(run(name, x).view(np.uint32), run(name, x, "triton").view(np.uint32))


# ---------------------------------------------------------------------------
# Special values, NaN rule, API
# ---------------------------------------------------------------------------

INF, NAN = math.inf, math.nan
MIN_SUB = float.fromhex("0x1p-149")
SPECIAL_TABLE: list[tuple[str, float | int, float]] = [
    ("exp", -INF, 0.0), ("exp", INF, INF), ("exp", NAN, NAN), ("exp", 0.0, 1.0), ("exp", -0.0, 1.0),
    ("exp", 0x42B17217, 3.4027984e38), ("exp", 0x42B17218, INF),  # largest x with finite exp, and the next
    ("exp", 0xC2CFF1B4, MIN_SUB), ("exp", 0xC2CFF1B5, 0.0),  # last nonzero (subnormal) result, then +0
    ("exp", -1000.0, 0.0), ("exp", 1000.0, INF),
    ("log", 0.0, -INF), ("log", -0.0, -INF), ("log", -1.0, NAN), ("log", -INF, NAN), ("log", -MIN_SUB, NAN),
    ("log", INF, INF), ("log", NAN, NAN), ("log", 1.0, 0.0),
    ("log", MIN_SUB, -103.27893), ("log", FLT_MAX, 88.72284),
    ("tanh", INF, 1.0), ("tanh", -INF, -1.0), ("tanh", -0.0, -0.0), ("tanh", 0.0, 0.0), ("tanh", NAN, NAN),
    ("tanh", 0x41102CB4, 1.0), ("tanh", -MIN_SUB, -MIN_SUB),
    ("sigmoid", -INF, 0.0), ("sigmoid", INF, 1.0), ("sigmoid", 0.0, 0.5), ("sigmoid", -0.0, 0.5),
    ("sigmoid", NAN, NAN), ("sigmoid", -104.0, 0.0),
    ("erf", INF, 1.0), ("erf", -INF, -1.0), ("erf", -0.0, -0.0), ("erf", 0.0, 0.0), ("erf", NAN, NAN),
    ("erf", 0x4079AEA4, 1.0), ("erf", -MIN_SUB, -MIN_SUB),
    ("sin", INF, NAN), ("sin", -INF, NAN), ("sin", NAN, NAN), ("sin", -0.0, -0.0), ("sin", 0.0, 0.0),
    ("sin", MIN_SUB, MIN_SUB), ("sin", -MIN_SUB, -MIN_SUB),
    ("cos", INF, NAN), ("cos", -INF, NAN), ("cos", NAN, NAN), ("cos", 0.0, 1.0), ("cos", -0.0, 1.0),
    ("rsqrt", 0.0, INF), ("rsqrt", -0.0, -INF), ("rsqrt", -1.0, NAN), ("rsqrt", -INF, NAN),
    ("rsqrt", INF, 0.0), ("rsqrt", NAN, NAN), ("rsqrt", 4.0, 0.5), ("rsqrt", MIN_SUB, float.fromhex("0x1.6a09e6p+74")),
]


def _as_f32(v: float | int) -> np.float32:
    return bits_to_f32([v])[0] if isinstance(v, int) else np.float32(v)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_special_values(name: str) -> None:
    rows = [(v, want) for n, v, want in SPECIAL_TABLE if n == name]
    assert rows
    x = np.array([_as_f32(v) for v, _ in rows], np.float32)
    want = np.array([want for _, want in rows], np.float32)
    for backend in ("reference", "triton"):
        got = run(name, x, backend)
        nan_want = np.isnan(want)
        assert np.array_equal(got.view(np.uint32)[nan_want], np.full(nan_want.sum(), CANONICAL_NAN, np.uint32))
        # exact bits (signed zeros included) where the table is exact; within 1e-6 for rounded decimals
        exact = ~nan_want & ((want == 0) | np.isinf(want) | (np.abs(want) == np.float32(1)) | (want == np.float32(0.5)))
        assert np.array_equal(got.view(np.uint32)[exact], want.view(np.uint32)[exact]), (backend, x[exact], got[exact])
        close = ~nan_want & ~exact
        np.testing.assert_allclose(got[close], want[close], rtol=1e-6)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_every_nan_result_is_canonical_and_only_where_defined(name: str) -> None:
    nan_payloads = bits_to_f32([0x7FC00000, 0xFFC00000, 0x7F800001, 0xFFFFFFFF, 0x7FBFFFFF, 0xFFA5A5A5])
    assert np.all(run(name, nan_payloads).view(np.uint32) == CANONICAL_NAN)
    rng = np.random.default_rng(3)
    finite = bits_to_f32(rng.integers(0, 2**32, 1 << 16))
    finite = finite[np.isfinite(finite)]
    y = run(name, finite)
    nan_domain = finite < 0 if name in ("log", "rsqrt") else np.zeros(finite.shape, bool)
    assert np.array_equal(np.isnan(y), nan_domain)
    assert np.all(y.view(np.uint32)[nan_domain] == CANONICAL_NAN)


@pytest.mark.parametrize("name", FUNCTIONS)
@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_shapes_dtype_device_and_noncontiguous(name: str, backend: str) -> None:
    fn = getattr(mathlib, name)
    device = device_for(backend)
    for shape in [(), (0,), (3, 0, 2), (5,), (2, 3, 4)]:
        x = torch.linspace(0.25, 3.0, max(1, math.prod(shape)))[: math.prod(shape)].reshape(shape).to(device)
        y = fn(x, backend=backend)
        assert y.shape == x.shape and y.dtype == torch.float32 and y.device == x.device
    base = torch.linspace(0.25, 3.0, 24).reshape(4, 6).to(device)
    strided = base.t()[:, ::2]
    assert not strided.is_contiguous()
    got = fn(strided, backend=backend).view(torch.int32)
    assert torch.equal(got, fn(strided.contiguous(), backend=backend).view(torch.int32))


@pytest.mark.parametrize("name", FUNCTIONS)
def test_rejects_bad_inputs(name: str) -> None:
    fn = getattr(mathlib, name)
    with pytest.raises(TypeError, match="float32"):
        fn(torch.ones(3, dtype=torch.float64))
    with pytest.raises(TypeError, match="float32"):
        fn(torch.ones(3, dtype=torch.int32), backend="triton")
    with pytest.raises(TypeError, match="torch.Tensor"):
        fn(np.ones(3, np.float32))
    with pytest.raises(ValueError, match="backend"):
        fn(torch.ones(3), backend="cuda")


def test_every_float_constant_is_exactly_float32() -> None:
    constants = ref.float_constants()
    assert len(constants) > 40 and "LN2_HI" in constants and "ERF_H7" in constants
    for name, value in constants.items():
        assert float(np.float32(value)) == value, name


def test_split_constants_are_exact_where_the_programs_rely_on_it() -> None:
    # n*LN2_HI exact for |n| <= 151 (exp) and k*LN2_HI exact for |k| <= 150 (log)
    for n in range(-151, 152):
        assert float(np.float32(n) * np.float32(ref.LN2_HI)) == n * ref.LN2_HI
    # head (16 bits) * PIO2_C1 exact: PIO2_C1 has at most 8 significant bits
    mantissa = int(np.float32(ref.PIO2_C1).view(np.uint32)) & 0x7FFFFF
    assert mantissa & 0xFFFF == 0
    # the 2/pi image: five 39-bit limbs, floor(2/pi * 2**195)
    import mpmath

    mpmath.mp.prec = 300
    image = sum(limb << (ref.TRIG_LIMB_BITS * j) for j, limb in enumerate(ref.TRIG_LIMBS))
    assert image == int(mpmath.floor(2 / mpmath.pi * mpmath.mpf(2) ** 195))
    assert all(0 <= limb < 2**39 for limb in ref.TRIG_LIMBS) and (2**24 - 1) * (2**39 - 1) < 2**63


def test_numpy_int64_to_float32_rounds_once() -> None:
    """sin/cos convert their 60-bit reduction fraction int64 -> float32 and
    rely on one round-to-nearest-even (as cvt.rn.f32.s64 on the GPU), not on
    a double rounding through float64: check numpy on the trap values
    2**k + 2**(k-24) + 1 (just above a tie) and on random ones."""
    rng = np.random.default_rng(11)
    top = rng.integers(25, 61, 4096)
    values = np.concatenate(
        [
            (np.int64(1) << top) + (np.int64(1) << (top - 24)) + 1,
            rng.integers(0, 2**62, 4096, dtype=np.int64) >> (62 - top),
        ]
    )
    values = np.concatenate([values, -values])

    def round_once(v: int) -> float:
        mag = abs(v)
        shift = max(mag.bit_length() - 24, 0)
        q, rem = divmod(mag, 1 << shift)
        if shift and (rem > 1 << (shift - 1) or (rem == 1 << (shift - 1) and q & 1)):
            q += 1
        return math.copysign(float(q << shift), v)

    want = np.array([round_once(int(v)) for v in values], np.float32)
    assert np.array_equal(values.astype(np.float32), want)


# ---------------------------------------------------------------------------
# Accuracy against float64 (reference backend; the backends are bit-identical)
# ---------------------------------------------------------------------------

N = 1 << 20


def _rng() -> np.random.Generator:
    return np.random.default_rng(12345)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    return (np.exp2(rng.uniform(lo, hi, n)) * rng.choice([-1.0, 1.0], n)).astype(np.float32)


def _positive_bits(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(1, 0x7F800000, n, dtype=np.int64).astype(np.int32).view(np.float32)


def _samples(name: str) -> np.ndarray:
    """>= 2**20 points over the function's meaningful domain, both uniform and
    log-uniform, plus the special regions (subnormal results, subnormal inputs)."""
    rng = _rng()
    half, quarter = N // 2, N // 4
    trig = lambda: [  # noqa: E731
        rng.uniform(-(2.0**16), 2.0**16, half),
        _log_uniform(rng, -30, 16, quarter),
        _positive_bits(rng, quarter),
    ]
    domains = {
        "exp": lambda: [
            rng.uniform(-104.0, 88.72283, half),
            _log_uniform(rng, -30, 6.47, quarter),
            rng.uniform(-104, -87.3, quarter),
        ],
        "log": lambda: [
            _positive_bits(rng, half),
            rng.uniform(0.5, 2.0, half),
            1.0 + np.arange(-4096, 4096) * 2.0**-24,
        ],
        "tanh": lambda: [rng.uniform(-10.0, 10.0, half), _log_uniform(rng, -30, 4, half)],
        "sigmoid": lambda: [rng.uniform(-105.0, 20.0, half), _log_uniform(rng, -30, 7, half)],
        "erf": lambda: [rng.uniform(-4.5, 4.5, half), _log_uniform(rng, -30, 2.2, half)],
        "sin": trig,
        "cos": trig,
        "rsqrt": lambda: [_positive_bits(rng, half), rng.uniform(1.0, 4.0, half)],
    }
    return np.concatenate([np.asarray(d).astype(np.float32) for d in domains[name]()])


def _truth(name: str, x: np.ndarray) -> np.ndarray:
    xd = x.astype(np.float64)
    with np.errstate(over="ignore"):
        return {
            "exp": np.exp,
            "log": np.log,
            "tanh": np.tanh,
            "sigmoid": lambda v: 1.0 / (1.0 + np.exp(-v)),
            "erf": lambda v: ERF64(v).astype(np.float64),
            "sin": np.sin,
            "cos": np.cos,
            "rsqrt": lambda v: 1.0 / np.sqrt(v),
        }[name](xd)


@pytest.mark.parametrize("name", FUNCTIONS)
def test_accuracy_against_float64(name: str) -> None:
    x = _samples(name)
    assert x.size >= N
    err = ulp_error(run(name, x), _truth(name, x))
    worst = int(np.argmax(err))
    assert err[worst] <= ULP_TARGET[name], (name, float(x[worst]), float(err[worst]))


def pio2_hard_cases(limit: float = 2.0**16) -> np.ndarray:
    """The float32 values nearest k*pi/2 for 1 <= k*pi/2 <= limit, with two
    neighbours on each side (float64 picks the nearest float within an ulp)."""
    k = np.arange(1, int(limit / (math.pi / 2)) + 1, dtype=np.float64)
    nearest = (k * (math.pi / 2)).astype(np.float32).view(np.int32).astype(np.int64)
    return np.concatenate([(nearest + d).astype(np.int32).view(np.float32) for d in range(-2, 3)])


@pytest.mark.parametrize("name", ["sin", "cos"])
def test_sin_cos_hard_cases_up_to_2_pow_16(name: str) -> None:
    x = np.concatenate([pio2_hard_cases(), -pio2_hard_cases()[:1000]])
    xd = x.astype(np.float64)
    # they are hard: some lie within 2**-27 of a multiple of pi/2
    assert np.min(np.minimum(np.abs(np.sin(xd)), np.abs(np.cos(xd)))) < 2.0**-27
    err = ulp_error(run(name, x), _truth(name, x))
    assert err.max() <= ULP_TARGET[name], float(x[np.argmax(err)])


@pytest.mark.parametrize("name", ["sin", "cos"])
def test_sin_cos_hard_cases_beyond_2_pow_16(name: str) -> None:
    """Huge arguments close to multiples of pi/2 keep the 2 ulp bound: for every
    binade above 2**16, mantissas from the continued fraction of
    2**(e-23)*2/pi mod 1 (convergent denominators q, q + q_prev, scaled into
    [2**23, 2**24))."""
    import mpmath

    mpmath.mp.prec = 300
    found = []
    for e in range(16, 128):
        v = mpmath.frac(mpmath.ldexp(2 / mpmath.pi, e - 23))
        q_prev, q = 1, 0
        for _ in range(40):
            a = int(mpmath.floor(v))
            q_prev, q = q, a * q + q_prev
            if q >= 2**24:
                break
            for d in (q, q + q_prev):
                m = d * -(-(2**23) // d)
                if m < 2**24:
                    found.append(math.ldexp(m, e - 23))
            v = 1 / (v - a)
    x = np.array(found, np.float32)
    xd = x.astype(np.float64)
    assert np.min(np.minimum(np.abs(np.sin(xd)), np.abs(np.cos(xd)))) < 2.0**-29
    err = ulp_error(run(name, x), _truth(name, x))
    assert err.max() <= ULP_TARGET[name], float(x[np.argmax(err)])


def test_exp_and_log_of_subnormals() -> None:
    rng = _rng()
    sub = rng.integers(1, 0x00800000, 1 << 16).astype(np.int32).view(np.float32)
    assert ulp_error(run("log", sub), np.log(sub.astype(np.float64))).max() <= ULP_TARGET["log"]
    # exp into the subnormal range: error counted in units of 2**-149
    x = np.linspace(-103.97, -87.34, 1 << 16).astype(np.float32)
    y = run("exp", x)
    assert np.all(y < np.float32(2.0**-126)) and np.all(y > 0)
    assert ulp_error(y, np.exp(x.astype(np.float64))).max() <= ULP_TARGET["exp"]


def test_exp_overflow_threshold_is_exact() -> None:
    """0x42b17217 is the largest float whose exp is finite when correctly
    rounded; the program agrees on it and on every float near it."""
    bits = np.arange(0x42B17200, 0x42B17240)
    x = bits_to_f32(bits)
    y = run("exp", x)
    true_finite = np.exp(x.astype(np.float64)) < 2.0**128 * (1 - 2.0**-25)  # FLT_MAX + half an ulp rounds to inf
    assert np.array_equal(np.isfinite(y), true_finite)
    assert np.isfinite(y[bits == 0x42B17217]).all() and np.isinf(y[bits == 0x42B17218]).all()
