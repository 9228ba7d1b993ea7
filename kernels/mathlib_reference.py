"""numpy reference of refute's fp32 math library (DESIGN.md rule 3).

exp, log, tanh, sigmoid, erf, sin, cos and rsqrt, each a fixed straight-line
program over IEEE-754 binary32 (add, sub, mul, correctly rounded div and sqrt,
compare/select), integer operations on int32/int64 and bit casts. The Triton
twins in :mod:`refute.kernels.mathlib_triton` run the same programs op for op,
and the on-chain referee will too, so every backend returns the same bits.

This module is also the single home of the programs' constants: every float
constant is a float32 value written as a hex literal (no decimal-to-binary
rounding anywhere), and the Triton module imports them from here.

Conventions shared by every function:

* float32 in, float32 out, elementwise, any shape.
* Every numpy float32 operation below is one correctly rounded IEEE operation
  (round to nearest even; numpy keeps subnormals). Python float constants meet
  float32 arrays as weak scalars (NEP 50), so the arithmetic stays float32.
* Inputs outside a function's domain (NaN, and per function infinities or
  negative numbers) are replaced by a harmless value before the arithmetic and
  their result is chosen at the end from the special-value table; so no
  integer conversion ever sees NaN or an out-of-range value.
* Every NaN result is the canonical quiet NaN 0x7FC00000.

Accuracy (max ulp against float64, ulp in the float32 binade of the true
value, measured by ``bench/ulp_table.py`` on about ten million points each):
exp 0.96, log 0.82, tanh 1.44, sigmoid 2.29, erf 1.29, sin 0.79, cos 0.81,
rsqrt 1.49 (targets: 2 for exp, log, sin, cos; 3 for the others).
"""

from __future__ import annotations

from collections.abc import Callable

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from refute.kernels.bits_reference import bits_f32, f32_bits, pow2

# ---------------------------------------------------------------------------
# Shared constants
# ---------------------------------------------------------------------------

CANONICAL_NAN_BITS = 0x7FC00000  # the one NaN every function returns
ABS_MASK = 0x7FFFFFFF
INF_BITS = 0x7F800000
MIN_NORMAL = float.fromhex("0x1p-126")
TWO_POW_23 = float.fromhex("0x1p+23")  # scales a subnormal to a normal exactly

# ---------------------------------------------------------------------------
# exp: x = n*ln2 + r, |r| <= ln2/2 (Cody-Waite, two parts), e**r by a
# degree-6 polynomial, times 2**n in two exact steps.
# ---------------------------------------------------------------------------

# Inputs are clamped to [EXP_LO, EXP_HI] first: exp(89) > FLT_MAX, so clamped
# inputs still overflow to +inf through the program; exp(-104) < 2**-150, so
# clamped inputs still round to +0. The clamp keeps n within [-150, 128].
EXP_HI = 89.0
EXP_LO = -104.0
LOG2E = float.fromhex("0x1.715476p+0")  # float32(1/ln 2): only picks n
ROUND_MAGIC = float.fromhex("0x1.8p+23")  # (t + 1.5*2**23) - 1.5*2**23 = rint(t) for |t| < 2**22
# ln 2 = LN2_HI + LN2_LO. LN2_HI has 15 significant bits, so n*LN2_HI is exact
# for |n| < 2**9 and x - n*LN2_HI is exact (the two are within a factor 2).
LN2_HI = float.fromhex("0x1.62e4p-1")
LN2_LO = float.fromhex("0x1.7f7d1cp-20")
# e**r = 1 + r + r*r*(P0 + r*(P1 + r*(P2 + r*(P3 + r*P4)))) on |r| <= 0.3468;
# near-minimax fit of (e**r - 1 - r)/r**2 (error of the fit 2**-28 relative).
EXP_P0 = float.fromhex("0x1.fffffcp-2")
EXP_P1 = float.fromhex("0x1.55549p-3")
EXP_P2 = float.fromhex("0x1.5558f4p-5")
EXP_P3 = float.fromhex("0x1.123a2ap-7")
EXP_P4 = float.fromhex("0x1.6a23bcp-10")

# ---------------------------------------------------------------------------
# log: x = 2**k * m with m in [sqrt(1/2), sqrt(2)), f = m - 1 (exact),
# s = f/(2 + f), log(m) = f - hfsq + s*(hfsq + R(s*s)) with hfsq = f*f/2
# (the fdlibm/musl logf structure), plus k*ln2 in two parts.
# ---------------------------------------------------------------------------

LOG_SQRT_HALF_BITS = 0x3F3504F3  # bits of float32(sqrt(1/2)): where m's range starts
ONE_BITS = 0x3F800000
# R(z) = z*(L0 + z*(L1 + z*L2)) ~ 2*atanh(s)/s - 2 for z = s*s <= 0.02944;
# near-minimax fit, error 2**-29 (relative to the final log(m)).
LOG_L0 = float.fromhex("0x1.55557ap-1")
LOG_L1 = float.fromhex("0x1.995eb8p-2")
LOG_L2 = float.fromhex("0x1.31e33cp-2")

# ---------------------------------------------------------------------------
# tanh: |x| < TANH_SPLIT: a + a*z*P(z), z = a*a; else 1 - 2u/(1 + u) with
# u = exp(-2|x|) (which reaches exactly 1 for large |x|); sign of x restored.
# ---------------------------------------------------------------------------

TANH_SPLIT = 0.625
# tanh(a)/a - 1 = z*(T0 + z*(T1 + z*(T2 + z*(T3 + z*T4)))) on a <= 0.625;
# near-minimax fit, error 2**-27.8 relative.
TANH_T0 = float.fromhex("-0x1.555532p-2")
TANH_T1 = float.fromhex("0x1.110726p-3")
TANH_T2 = float.fromhex("-0x1.b83c1ap-5")
TANH_T3 = float.fromhex("0x1.5224e4p-6")
TANH_T4 = float.fromhex("-0x1.75d9d4p-8")

# ---------------------------------------------------------------------------
# erf: |x| < ERF_SPLIT: a + a*P(a*a); else 1 - exp(-a*a) * H(a - ERF_CENTER)
# with H ~ erfcx = exp(a*a)*erfc(a), a clamped to ERF_CLAMP (where erf
# already rounds to 1); sign of x restored.
# ---------------------------------------------------------------------------

ERF_SPLIT = 1.0
ERF_CLAMP = 4.0  # erfc(4) = 1.5e-8 < 2**-25: the true erf rounds to 1 from 3.92 on
ERF_CENTER = 2.5
# erf(a)/a - 1 = E0 + z*(E1 + ... + z*E6), z = a*a <= 1; error 2**-29.6 relative.
ERF_E0 = float.fromhex("0x1.06eba8p-3")
ERF_E1 = float.fromhex("-0x1.81273ep-2")
ERF_E2 = float.fromhex("0x1.ce2cf6p-4")
ERF_E3 = float.fromhex("-0x1.b7f908p-6")
ERF_E4 = float.fromhex("0x1.540588p-8")
ERF_E5 = float.fromhex("-0x1.a3f5c2p-11")
ERF_E6 = float.fromhex("0x1.4966ap-14")
# erfcx(a) = H0 + w*(H1 + ... + w*H7), w = a - 2.5, a in [1, 4]; fitted for
# absolute error of erf (weight exp(-a*a)): 2**-26.2.
ERF_H0 = float.fromhex("0x1.afbb5ap-3")
ERF_H1 = float.fromhex("-0x1.3054d8p-4")
ERF_H2 = float.fromhex("0x1.9c2ff2p-6")
ERF_H3 = float.fromhex("-0x1.ff7838p-8")
ERF_H4 = float.fromhex("0x1.01a0a8p-9")
ERF_H5 = float.fromhex("-0x1.014d7p-9")
ERF_H6 = float.fromhex("-0x1.a3d3e6p-11")
ERF_H7 = float.fromhex("-0x1.97dcd2p-12")

# ---------------------------------------------------------------------------
# sin/cos: exact integer argument reduction (Payne-Hanek with a fixed 195-bit
# image of 2/pi), then the fdlibm kernels on |r| <= pi/4 with a tail.
# ---------------------------------------------------------------------------

# floor(2/pi * 2**195) in five 39-bit limbs, least significant first. A 24-bit
# mantissa times a 39-bit limb is < 2**63, so every product fits in int64.
TRIG_LIMB_BITS = 39
TRIG_LIMB_0 = 0x49E21C820F
TRIG_LIMB_1 = 0x5C0DB62959
TRIG_LIMB_2 = 0x6AFA3EA69B
TRIG_LIMB_3 = 0x11054A7F09
TRIG_LIMB_4 = 0x517CC1B727
TRIG_LIMBS = (TRIG_LIMB_0, TRIG_LIMB_1, TRIG_LIMB_2, TRIG_LIMB_3, TRIG_LIMB_4)
# The reduction keeps y = x*2/pi as G = floor(y * 2**60) mod 2**62: two bits of
# quadrant and 60 bits of fraction.
TRIG_FRAC_BITS = 60
TRIG_G_MASK = (1 << 62) - 1
TRIG_HALF_QUADRANT = 1 << (TRIG_FRAC_BITS - 1)  # added before >> 60 to round to the nearest quadrant
# Limb j's product enters G shifted left by e + TRIG_SHIFT_BASE + 39*j, where e
# is the exponent of x: 60 - 23 - 195 = -158.
TRIG_SHIFT_BASE = TRIG_FRAC_BITS - 23 - TRIG_LIMB_BITS * len(TRIG_LIMBS)
TRIG_HEAD_MASK = -256  # clears 8 mantissa bits: a 16-bit head of the fraction
TWO_POW_M60 = float.fromhex("0x1p-60")
PIO4 = float.fromhex("0x1.921fb6p-1")  # float32(pi/4), just above pi/4: |x| <= PIO4 needs no reduction
PIO2 = float.fromhex("0x1.921fb6p+0")  # float32(pi/2)
PIO2_C1 = float.fromhex("0x1.92p+0")  # pi/2 to 8 bits: head * C1 is exact (16 + 8 bits)
PIO2_C2 = float.fromhex("0x1.fb5444p-12")  # float32(pi/2 - PIO2_C1)
# sin(r) = r + r*z*(S0 + z*(S1 + z*S2)), z = r*r, |r| <= pi/4; error 2**-28.
SIN_S0 = float.fromhex("-0x1.555546p-3")
SIN_S1 = float.fromhex("0x1.11076p-7")
SIN_S2 = float.fromhex("-0x1.994e5ap-13")
# cos(r) = 1 - z/2 + z*z*(C0 + z*(C1 + z*C2)); error 2**-33.
COS_C0 = float.fromhex("0x1.55554ap-5")
COS_C1 = float.fromhex("-0x1.6c0c32p-10")
COS_C2 = float.fromhex("0x1.99eb48p-16")


def float_constants() -> dict[str, float]:
    """Every float constant of the programs, by name (for the representability
    test and the docs)."""
    return {k: v for k, v in globals().items() if k.isupper() and isinstance(v, float)}


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _is_nan(x: np.ndarray) -> np.ndarray:
    """NaN test on the bits (exponent all ones, mantissa nonzero)."""
    return (f32_bits(x) & ABS_MASK) > INF_BITS


def _sign_set(x: np.ndarray) -> np.ndarray:
    """True where the sign bit of x is set (so -0 counts as negative)."""
    return f32_bits(x) < 0


def _nan_where(bad: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The canonical NaN where ``bad``, else y."""
    return np.where(bad, bits_f32(np.full(y.shape, CANONICAL_NAN_BITS, np.int32)), y)


def _f(v: float) -> np.float32:
    return np.float32(v)


# The programs are elementwise, so running them on slices of the input gives
# the same bits as running them on the whole. Slices small enough for the
# intermediates to stay in cache are several times faster than whole-array
# passes through memory, and numpy releases the GIL, so two threads overlap.
CHUNK_ELEMENTS = 1 << 15
# The programs the models run most, also compiled (kernels/native_reference.py).
NATIVE_PROGRAMS = ("exp", "erf", "sigmoid")
_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1)), thread_name_prefix="refute-math")
    return _POOL


def _elementwise(program: Callable[[np.ndarray], np.ndarray], name: str) -> Callable[[np.ndarray], np.ndarray]:
    """Run ``program`` on a flat float32 copy and give the result x's shape.

    The programs work on 1-D arrays so that every intermediate is an array
    (0-d numpy arithmetic would return numpy scalars)."""

    def run(flat: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            y = program(flat)
        assert y.dtype == np.float32, y.dtype
        return y

    def apply(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype != np.float32:
            raise TypeError(f"expected a float32 array, got {x.dtype}")
        if name in NATIVE_PROGRAMS:
            from refute.kernels import native_reference  # imported here: it imports this module

            if (lib := native_reference.library()) is not None:
                return native_reference.elementwise(lib, name, x)
        flat = np.ascontiguousarray(x).reshape(-1)
        if flat.size <= CHUNK_ELEMENTS:
            return run(flat).reshape(x.shape)
        out = np.empty_like(flat)

        def run_slice(start: int) -> None:
            out[start : start + CHUNK_ELEMENTS] = run(flat[start : start + CHUNK_ELEMENTS])

        list(_pool().map(run_slice, range(0, flat.size, CHUNK_ELEMENTS)))
        return out.reshape(x.shape)

    apply.__name__ = apply.__qualname__ = name
    apply.__doc__ = program.__doc__
    return apply


# ---------------------------------------------------------------------------
# The programs
# ---------------------------------------------------------------------------


def _exp_program(x: np.ndarray) -> np.ndarray:
    """e**x. Special values: exp(NaN) = NaN, exp(-inf) = +0, exp(+inf) = +inf;
    finite for x <= 0x1.62e42ep+6 (88.7228317), +inf above; subnormal results
    from x < -87.33654, +0 for x < -103.97208 (0xc2cff1b4 is the last nonzero)."""
    nan = _is_nan(x)
    xc = np.where(x > _f(EXP_HI), _f(EXP_HI), x)
    xc = np.where(xc < _f(EXP_LO), _f(EXP_LO), xc)
    xc = np.where(nan, _f(0.0), xc)
    nf = (xc * _f(LOG2E) + _f(ROUND_MAGIC)) - _f(ROUND_MAGIC)
    n = nf.astype(np.int32)
    r = (xc - nf * _f(LN2_HI)) - nf * _f(LN2_LO)
    p = _f(EXP_P3) + r * _f(EXP_P4)
    p = _f(EXP_P2) + r * p
    p = _f(EXP_P1) + r * p
    p = _f(EXP_P0) + r * p
    y = _f(1.0) + (r + (r * r) * p)
    # 2**n in two steps keeps the first product normal (exact) and rounds once.
    n1 = n >> 1
    y = (y * pow2(n1)) * pow2(n - n1)
    return _nan_where(nan, y)


def _log_program(x: np.ndarray) -> np.ndarray:
    """Natural log. Special values: log(NaN) = NaN, log(x < 0) = NaN (also
    -inf), log(+-0) = -inf, log(+inf) = +inf, log(1) = +0; subnormals are
    scaled by 2**23 first, so they are as accurate as normal inputs."""
    nan = _is_nan(x) | (x < _f(0.0))
    zero = x == _f(0.0)
    inf = x == _f(np.inf)
    xs = np.where(nan | zero | inf, _f(1.0), x)
    sub = xs < _f(MIN_NORMAL)
    xs = np.where(sub, xs * _f(TWO_POW_23), xs)
    # Adding 1 - sqrt(1/2) (in bits) carries into the exponent exactly when the
    # mantissa is >= sqrt(1/2), so m lands in [sqrt(1/2), sqrt(2)).
    ix = f32_bits(xs) + (ONE_BITS - LOG_SQRT_HALF_BITS)
    k = (ix >> 23) - 127 - np.where(sub, 23, 0).astype(np.int32)
    m = bits_f32((ix & 0x7FFFFF) + LOG_SQRT_HALF_BITS)
    f = m - _f(1.0)
    s = f / (_f(2.0) + f)
    z = s * s
    rz = z * (_f(LOG_L0) + z * (_f(LOG_L1) + z * _f(LOG_L2)))
    hfsq = (_f(0.5) * f) * f
    dk = k.astype(np.float32)
    y = (((s * (hfsq + rz) + dk * _f(LN2_LO)) - hfsq) + f) + dk * _f(LN2_HI)
    y = np.where(zero, _f(-np.inf), y)
    y = np.where(inf, _f(np.inf), y)
    return _nan_where(nan, y)


def _tanh_program(x: np.ndarray) -> np.ndarray:
    """Hyperbolic tangent. tanh(NaN) = NaN, tanh(+-inf) = +-1, tanh(-0) = -0;
    exactly +-1 from |x| >= 9.010914 (0x41102cb4) on."""
    nan = _is_nan(x)
    a = np.abs(np.where(nan, _f(0.0), x))
    z = a * a
    p = _f(TANH_T3) + z * _f(TANH_T4)
    p = _f(TANH_T2) + z * p
    p = _f(TANH_T1) + z * p
    p = _f(TANH_T0) + z * p
    small = a + a * (z * p)
    u = _exp_program(_f(-2.0) * a)
    large = _f(1.0) - (_f(2.0) * u) / (_f(1.0) + u)
    y = np.where(a < _f(TANH_SPLIT), small, large)
    y = np.where(_sign_set(x), -y, y)
    return _nan_where(nan, y)


def _sigmoid_program(x: np.ndarray) -> np.ndarray:
    """Logistic function 1/(1 + e**-x), as 1/(1 + e) for x >= 0 and e/(1 + e)
    for x < 0 with e = exp(-|x|). sigmoid(NaN) = NaN, sigmoid(-inf) = +0,
    sigmoid(+inf) = 1, sigmoid(+-0) = 0.5."""
    nan = _is_nan(x)
    xs = np.where(nan, _f(0.0), x)
    e = _exp_program(-np.abs(xs))
    num = np.where(xs >= _f(0.0), _f(1.0), e)
    y = num / (_f(1.0) + e)
    return _nan_where(nan, y)


def _erf_program(x: np.ndarray) -> np.ndarray:
    """Error function. erf(NaN) = NaN, erf(+-inf) = +-1, erf(-0) = -0;
    exactly +-1 from |x| >= 3.9012842 (0x4079aea4) on
    (the true erf rounds to 1 from 3.9192 on)."""
    nan = _is_nan(x)
    a = np.abs(np.where(nan, _f(0.0), x))
    z = a * a
    p = _f(ERF_E5) + z * _f(ERF_E6)
    p = _f(ERF_E4) + z * p
    p = _f(ERF_E3) + z * p
    p = _f(ERF_E2) + z * p
    p = _f(ERF_E1) + z * p
    p = _f(ERF_E0) + z * p
    small = a + a * p
    ac = np.where(a > _f(ERF_CLAMP), _f(ERF_CLAMP), a)
    w = ac - _f(ERF_CENTER)
    h = _f(ERF_H6) + w * _f(ERF_H7)
    h = _f(ERF_H5) + w * h
    h = _f(ERF_H4) + w * h
    h = _f(ERF_H3) + w * h
    h = _f(ERF_H2) + w * h
    h = _f(ERF_H1) + w * h
    h = _f(ERF_H0) + w * h
    large = _f(1.0) - _exp_program(-(ac * ac)) * h
    y = np.where(a < _f(ERF_SPLIT), small, large)
    y = np.where(_sign_set(x), -y, y)
    return _nan_where(nan, y)


def _reduce_pio2(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """a = |x| (finite, >= 0) as q*pi/2 + r + t with q in 0..3, |r| <= pi/4 and
    t a tail below half an ulp of r.

    For a <= PIO4 this is (0, a, 0). Above, y = a*2/pi is computed exactly
    enough in integers: a = m * 2**(e-23) with a 24-bit m, and m times the
    195-bit image of 2/pi is summed limb by limb into G = floor(y*2**60) mod
    2**62 (the bits above 2**62 are whole turns). Each limb's product is
    shifted into place (left shifts are masked first so nothing overflows;
    right shifts truncate, so G is low by less than 5 units of 2**-60). The
    nearest quadrant n and the signed fraction F = (y - n)*2**60 follow; F
    becomes floats as a 16-bit head (rounded to float, 8 low mantissa bits
    cleared) and a rounded remainder, and (head + rest)*pi/2 is formed with
    an exact head*PIO2_C1 and a Fast2Sum. Error of r + t: < 2**-56.5
    absolute, far below an ulp even at the hardest float32 arguments."""
    b = f32_bits(a).astype(np.int64)
    e = np.clip((b >> 23) - 127, -1, 127)
    m = (b & 0x7FFFFF) | 0x800000
    g = np.zeros_like(m)
    for j, limb in enumerate(TRIG_LIMBS):
        p = m * np.int64(limb)
        d = e + (TRIG_SHIFT_BASE + TRIG_LIMB_BITS * j)
        dl = np.clip(d, 0, 62)
        dr = np.clip(-d, 0, 63)
        left = (p & ((np.int64(1) << (62 - dl)) - 1)) << dl
        right = p >> dr
        g = (g + np.where(d >= 0, left, right)) & TRIG_G_MASK
    n = (g + TRIG_HALF_QUADRANT) >> TRIG_FRAC_BITS
    frac = g - (n << TRIG_FRAC_BITS)
    q = (n & 3).astype(np.int32)
    head = bits_f32(f32_bits(frac.astype(np.float32)) & TRIG_HEAD_MASK)
    rest = (frac - head.astype(np.int64)).astype(np.float32)
    head = head * _f(TWO_POW_M60)
    rest = rest * _f(TWO_POW_M60)
    hi = head * _f(PIO2_C1)
    lo = head * _f(PIO2_C2) + rest * _f(PIO2)
    r = hi + lo
    t = lo - (r - hi)
    small = a <= _f(PIO4)
    return np.where(small, 0, q), np.where(small, a, r), np.where(small, _f(0.0), t)


def _sin_kernel(r: np.ndarray, t: np.ndarray) -> np.ndarray:
    """sin(r + t) for |r| <= pi/4, |t| <= ulp(r)/2: r + (r*z*S(z) + t*(1 - z/2))."""
    z = r * r
    s = _f(SIN_S0) + z * (_f(SIN_S1) + z * _f(SIN_S2))
    return r + ((z * r) * s + (t - (_f(0.5) * z) * t))


def _cos_kernel(r: np.ndarray, t: np.ndarray) -> np.ndarray:
    """cos(r + t) for |r| <= pi/4: w = 1 - z/2 plus its rounding error,
    z*z*C(z) and -r*t (fdlibm's __kernel_cos)."""
    z = r * r
    hz = _f(0.5) * z
    w = _f(1.0) - hz
    c = _f(COS_C0) + z * (_f(COS_C1) + z * _f(COS_C2))
    return w + (((_f(1.0) - w) - hz) + ((z * z) * c - r * t))


def _trig_parts(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(invalid, q, sin(r + t), cos(r + t)) for |x| = q*pi/2 + r + t."""
    nan = (f32_bits(x) & ABS_MASK) >= INF_BITS  # NaN or +-inf
    a = np.abs(np.where(nan, _f(0.0), x))
    q, r, t = _reduce_pio2(a)
    return nan, q, _sin_kernel(r, t), _cos_kernel(r, t)


def _sin_program(x: np.ndarray) -> np.ndarray:
    """Sine. sin(NaN) = sin(+-inf) = NaN, sin(-0) = -0; accurate for every
    finite float32 (the reduction is exact to 2**-56 at any magnitude)."""
    nan, q, s, c = _trig_parts(x)
    y = np.where((q & 1) != 0, c, s)
    y = np.where((q & 2) != 0, -y, y)
    y = np.where(_sign_set(x), -y, y)
    return _nan_where(nan, y)


def _cos_program(x: np.ndarray) -> np.ndarray:
    """Cosine. cos(NaN) = cos(+-inf) = NaN, cos(+-0) = 1; accurate for every
    finite float32."""
    nan, q, s, c = _trig_parts(x)
    y = np.where((q & 1) != 0, s, c)
    y = np.where(((q + 1) & 2) != 0, -y, y)
    return _nan_where(nan, y)


def _rsqrt_program(x: np.ndarray) -> np.ndarray:
    """1/sqrt(x) as div_rn(1, sqrt_rn(x)). rsqrt(+0) = +inf, rsqrt(-0) = -inf
    (IEEE sqrt(-0) = -0), rsqrt(x < 0) = NaN, rsqrt(+inf) = +0, NaN -> NaN."""
    nan = _is_nan(x) | (x < _f(0.0))
    y = _f(1.0) / np.sqrt(x)
    return _nan_where(nan, y)


exp = _elementwise(_exp_program, "exp")
log = _elementwise(_log_program, "log")
tanh = _elementwise(_tanh_program, "tanh")
sigmoid = _elementwise(_sigmoid_program, "sigmoid")
erf = _elementwise(_erf_program, "erf")
sin = _elementwise(_sin_program, "sin")
cos = _elementwise(_cos_program, "cos")
rsqrt = _elementwise(_rsqrt_program, "rsqrt")

FUNCTIONS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "exp": exp,
    "log": log,
    "tanh": tanh,
    "sigmoid": sigmoid,
    "erf": erf,
    "sin": sin,
    "cos": cos,
    "rsqrt": rsqrt,
}
