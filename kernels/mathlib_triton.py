"""Triton twins of :mod:`refute.kernels.mathlib_reference` (DESIGN.md rule 3).

``exp_f32``, ``log_f32``, ``tanh_f32``, ``sigmoid_f32``, ``erf_f32``,
``sin_f32``, ``cos_f32`` and ``rsqrt_f32`` are plain ``@triton.jit`` device
functions: operator kernels (GELU, softmax, SiLU, rotary embeddings) call them
inline on float32 blocks. Each is the reference's program op for op, with the
reference's constants (imported from it, all exact float32 values), so the two
backends return the same bits, NaN payloads included.

Only IEEE float32 add/sub/mul, ``div_rn``, ``sqrt_rn``, compare/select,
int32/int64 integer operations and bit casts are used; float-to-int
conversions only ever see integral, in-range values. ``_unary_kernel`` applies
one of them to a flat tensor; launch it through :func:`launch_unary`.
"""

import torch
import triton
import triton.language as tl

from refute.kernels import mathlib_reference as _ref
from refute.kernels.backend import CompileSpec, launch
from refute.kernels.bits_triton import bits_f32, f32_bits, negate, pow2

_CANONICAL_NAN_BITS: tl.constexpr = tl.constexpr(_ref.CANONICAL_NAN_BITS)
_ABS_MASK: tl.constexpr = tl.constexpr(_ref.ABS_MASK)
_INF_BITS: tl.constexpr = tl.constexpr(_ref.INF_BITS)
_MIN_NORMAL: tl.constexpr = tl.constexpr(_ref.MIN_NORMAL)
_TWO_POW_23: tl.constexpr = tl.constexpr(_ref.TWO_POW_23)

_EXP_HI: tl.constexpr = tl.constexpr(_ref.EXP_HI)
_EXP_LO: tl.constexpr = tl.constexpr(_ref.EXP_LO)
_LOG2E: tl.constexpr = tl.constexpr(_ref.LOG2E)
_ROUND_MAGIC: tl.constexpr = tl.constexpr(_ref.ROUND_MAGIC)
_LN2_HI: tl.constexpr = tl.constexpr(_ref.LN2_HI)
_LN2_LO: tl.constexpr = tl.constexpr(_ref.LN2_LO)
_EXP_P0: tl.constexpr = tl.constexpr(_ref.EXP_P0)
_EXP_P1: tl.constexpr = tl.constexpr(_ref.EXP_P1)
_EXP_P2: tl.constexpr = tl.constexpr(_ref.EXP_P2)
_EXP_P3: tl.constexpr = tl.constexpr(_ref.EXP_P3)
_EXP_P4: tl.constexpr = tl.constexpr(_ref.EXP_P4)

_LOG_SQRT_HALF_BITS: tl.constexpr = tl.constexpr(_ref.LOG_SQRT_HALF_BITS)
_ONE_BITS: tl.constexpr = tl.constexpr(_ref.ONE_BITS)
_LOG_L0: tl.constexpr = tl.constexpr(_ref.LOG_L0)
_LOG_L1: tl.constexpr = tl.constexpr(_ref.LOG_L1)
_LOG_L2: tl.constexpr = tl.constexpr(_ref.LOG_L2)

_TANH_SPLIT: tl.constexpr = tl.constexpr(_ref.TANH_SPLIT)
_TANH_T0: tl.constexpr = tl.constexpr(_ref.TANH_T0)
_TANH_T1: tl.constexpr = tl.constexpr(_ref.TANH_T1)
_TANH_T2: tl.constexpr = tl.constexpr(_ref.TANH_T2)
_TANH_T3: tl.constexpr = tl.constexpr(_ref.TANH_T3)
_TANH_T4: tl.constexpr = tl.constexpr(_ref.TANH_T4)

_ERF_SPLIT: tl.constexpr = tl.constexpr(_ref.ERF_SPLIT)
_ERF_CLAMP: tl.constexpr = tl.constexpr(_ref.ERF_CLAMP)
_ERF_CENTER: tl.constexpr = tl.constexpr(_ref.ERF_CENTER)
_ERF_E0: tl.constexpr = tl.constexpr(_ref.ERF_E0)
_ERF_E1: tl.constexpr = tl.constexpr(_ref.ERF_E1)
_ERF_E2: tl.constexpr = tl.constexpr(_ref.ERF_E2)
_ERF_E3: tl.constexpr = tl.constexpr(_ref.ERF_E3)
_ERF_E4: tl.constexpr = tl.constexpr(_ref.ERF_E4)
_ERF_E5: tl.constexpr = tl.constexpr(_ref.ERF_E5)
_ERF_E6: tl.constexpr = tl.constexpr(_ref.ERF_E6)
_ERF_H0: tl.constexpr = tl.constexpr(_ref.ERF_H0)
_ERF_H1: tl.constexpr = tl.constexpr(_ref.ERF_H1)
_ERF_H2: tl.constexpr = tl.constexpr(_ref.ERF_H2)
_ERF_H3: tl.constexpr = tl.constexpr(_ref.ERF_H3)
_ERF_H4: tl.constexpr = tl.constexpr(_ref.ERF_H4)
_ERF_H5: tl.constexpr = tl.constexpr(_ref.ERF_H5)
_ERF_H6: tl.constexpr = tl.constexpr(_ref.ERF_H6)
_ERF_H7: tl.constexpr = tl.constexpr(_ref.ERF_H7)

_TRIG_LIMB_BITS: tl.constexpr = tl.constexpr(_ref.TRIG_LIMB_BITS)
_TRIG_LIMB_0: tl.constexpr = tl.constexpr(_ref.TRIG_LIMB_0)
_TRIG_LIMB_1: tl.constexpr = tl.constexpr(_ref.TRIG_LIMB_1)
_TRIG_LIMB_2: tl.constexpr = tl.constexpr(_ref.TRIG_LIMB_2)
_TRIG_LIMB_3: tl.constexpr = tl.constexpr(_ref.TRIG_LIMB_3)
_TRIG_LIMB_4: tl.constexpr = tl.constexpr(_ref.TRIG_LIMB_4)
_TRIG_FRAC_BITS: tl.constexpr = tl.constexpr(_ref.TRIG_FRAC_BITS)
_TRIG_G_MASK: tl.constexpr = tl.constexpr(_ref.TRIG_G_MASK)
_TRIG_HALF_QUADRANT: tl.constexpr = tl.constexpr(_ref.TRIG_HALF_QUADRANT)
_TRIG_SHIFT_BASE: tl.constexpr = tl.constexpr(_ref.TRIG_SHIFT_BASE)
_TRIG_HEAD_MASK: tl.constexpr = tl.constexpr(_ref.TRIG_HEAD_MASK)
_TWO_POW_M60: tl.constexpr = tl.constexpr(_ref.TWO_POW_M60)
_PIO4: tl.constexpr = tl.constexpr(_ref.PIO4)
_PIO2: tl.constexpr = tl.constexpr(_ref.PIO2)
_PIO2_C1: tl.constexpr = tl.constexpr(_ref.PIO2_C1)
_PIO2_C2: tl.constexpr = tl.constexpr(_ref.PIO2_C2)
_SIN_S0: tl.constexpr = tl.constexpr(_ref.SIN_S0)
_SIN_S1: tl.constexpr = tl.constexpr(_ref.SIN_S1)
_SIN_S2: tl.constexpr = tl.constexpr(_ref.SIN_S2)
_COS_C0: tl.constexpr = tl.constexpr(_ref.COS_C0)
_COS_C1: tl.constexpr = tl.constexpr(_ref.COS_C1)
_COS_C2: tl.constexpr = tl.constexpr(_ref.COS_C2)

_INF: tl.constexpr = tl.constexpr(float("inf"))


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


@triton.jit
def _is_nan(x):
    """NaN test on the bits."""
    return (f32_bits(x) & _ABS_MASK) > _INF_BITS


@triton.jit
def _sign_set(x):
    """True where the sign bit of x is set (-0 included)."""
    return f32_bits(x) < 0


@triton.jit
def _nan_where(bad, y):
    """The canonical NaN (0x7FC00000) where ``bad``, else y."""
    return tl.where(bad, bits_f32(tl.full(y.shape, _CANONICAL_NAN_BITS, tl.int32)), y)


# ---------------------------------------------------------------------------
# The programs (see mathlib_reference for the derivations and special values)
# ---------------------------------------------------------------------------


@triton.jit
def exp_f32(x):
    """e**x on a float32 block; bit-identical to mathlib_reference.exp."""
    nan = _is_nan(x)
    xc = tl.where(x > _EXP_HI, _EXP_HI, x)
    xc = tl.where(xc < _EXP_LO, _EXP_LO, xc)
    xc = tl.where(nan, 0.0, xc)
    nf = (xc * _LOG2E + _ROUND_MAGIC) - _ROUND_MAGIC
    n = nf.to(tl.int32)
    r = (xc - nf * _LN2_HI) - nf * _LN2_LO
    p = _EXP_P3 + r * _EXP_P4
    p = _EXP_P2 + r * p
    p = _EXP_P1 + r * p
    p = _EXP_P0 + r * p
    y = 1.0 + (r + (r * r) * p)
    n1 = n >> 1
    y = (y * pow2(n1)) * pow2(n - n1)
    return _nan_where(nan, y)


@triton.jit
def log_f32(x):
    """Natural log on a float32 block; bit-identical to mathlib_reference.log."""
    nan = _is_nan(x) | (x < 0.0)
    zero = x == 0.0
    inf = x == _INF
    xs = tl.where(nan | zero | inf, 1.0, x)
    sub = xs < _MIN_NORMAL
    xs = tl.where(sub, xs * _TWO_POW_23, xs)
    ix = f32_bits(xs) + (_ONE_BITS - _LOG_SQRT_HALF_BITS)
    k = (ix >> 23) - 127 - tl.where(sub, 23, 0)
    m = bits_f32((ix & 0x7FFFFF) + _LOG_SQRT_HALF_BITS)
    f = m - 1.0
    s = tl.math.div_rn(f, 2.0 + f)
    z = s * s
    rz = z * (_LOG_L0 + z * (_LOG_L1 + z * _LOG_L2))
    hfsq = (0.5 * f) * f
    dk = k.to(tl.float32)
    y = (((s * (hfsq + rz) + dk * _LN2_LO) - hfsq) + f) + dk * _LN2_HI
    y = tl.where(zero, -_INF, y)
    y = tl.where(inf, _INF, y)
    return _nan_where(nan, y)


@triton.jit
def tanh_f32(x):
    """Hyperbolic tangent on a float32 block; bit-identical to mathlib_reference.tanh."""
    nan = _is_nan(x)
    a = tl.abs(tl.where(nan, 0.0, x))
    z = a * a
    p = _TANH_T3 + z * _TANH_T4
    p = _TANH_T2 + z * p
    p = _TANH_T1 + z * p
    p = _TANH_T0 + z * p
    small = a + a * (z * p)
    u = exp_f32(-2.0 * a)
    large = 1.0 - tl.math.div_rn(2.0 * u, 1.0 + u)
    y = tl.where(a < _TANH_SPLIT, small, large)
    y = tl.where(_sign_set(x), negate(y), y)
    return _nan_where(nan, y)


@triton.jit
def sigmoid_f32(x):
    """1/(1 + e**-x) on a float32 block; bit-identical to mathlib_reference.sigmoid."""
    nan = _is_nan(x)
    xs = tl.where(nan, 0.0, x)
    e = exp_f32(negate(tl.abs(xs)))
    num = tl.where(xs >= 0.0, 1.0, e)
    y = tl.math.div_rn(num, 1.0 + e)
    return _nan_where(nan, y)


@triton.jit
def erf_f32(x):
    """Error function on a float32 block; bit-identical to mathlib_reference.erf."""
    nan = _is_nan(x)
    a = tl.abs(tl.where(nan, 0.0, x))
    z = a * a
    p = _ERF_E5 + z * _ERF_E6
    p = _ERF_E4 + z * p
    p = _ERF_E3 + z * p
    p = _ERF_E2 + z * p
    p = _ERF_E1 + z * p
    p = _ERF_E0 + z * p
    small = a + a * p
    ac = tl.where(a > _ERF_CLAMP, _ERF_CLAMP, a)
    w = ac - _ERF_CENTER
    h = _ERF_H6 + w * _ERF_H7
    h = _ERF_H5 + w * h
    h = _ERF_H4 + w * h
    h = _ERF_H3 + w * h
    h = _ERF_H2 + w * h
    h = _ERF_H1 + w * h
    h = _ERF_H0 + w * h
    large = 1.0 - exp_f32(negate(ac * ac)) * h
    y = tl.where(a < _ERF_SPLIT, small, large)
    y = tl.where(_sign_set(x), negate(y), y)
    return _nan_where(nan, y)


@triton.jit
def _limb_term(m, e, limb, j: tl.constexpr):
    """Limb j's product m*limb shifted to its place in G = floor(y*2**60) mod
    2**62 (left shifts masked so nothing overflows, right shifts truncate)."""
    p = m * limb
    d = e + (_TRIG_SHIFT_BASE + _TRIG_LIMB_BITS * j)
    dl = tl.minimum(tl.maximum(d, 0), 62)
    dr = tl.minimum(tl.maximum(-d, 0), 63)
    left = (p & ((tl.full(p.shape, 1, tl.int64) << (62 - dl)) - 1)) << dl
    right = p >> dr
    return tl.where(d >= 0, left, right)


@triton.jit
def _reduce_pio2(a):
    """(q, r, t) with |x| = a = q*pi/2 + r + t, |r| <= pi/4, for finite a >= 0:
    exact integer Payne-Hanek reduction (see mathlib_reference._reduce_pio2)."""
    b = f32_bits(a).to(tl.int64)
    e = tl.minimum(tl.maximum((b >> 23) - 127, -1), 127)
    m = (b & 0x7FFFFF) | 0x800000
    g = _limb_term(m, e, _TRIG_LIMB_0, 0)
    g = (g + _limb_term(m, e, _TRIG_LIMB_1, 1)) & _TRIG_G_MASK
    g = (g + _limb_term(m, e, _TRIG_LIMB_2, 2)) & _TRIG_G_MASK
    g = (g + _limb_term(m, e, _TRIG_LIMB_3, 3)) & _TRIG_G_MASK
    g = (g + _limb_term(m, e, _TRIG_LIMB_4, 4)) & _TRIG_G_MASK
    n = (g + _TRIG_HALF_QUADRANT) >> _TRIG_FRAC_BITS
    frac = g - (n << _TRIG_FRAC_BITS)
    q = (n & 3).to(tl.int32)
    head = bits_f32(f32_bits(frac.to(tl.float32)) & _TRIG_HEAD_MASK)
    rest = (frac - head.to(tl.int64)).to(tl.float32)
    head = head * _TWO_POW_M60
    rest = rest * _TWO_POW_M60
    hi = head * _PIO2_C1
    lo = head * _PIO2_C2 + rest * _PIO2
    r = hi + lo
    t = lo - (r - hi)
    small = a <= _PIO4
    return tl.where(small, 0, q), tl.where(small, a, r), tl.where(small, 0.0, t)


@triton.jit
def _sin_kernel(r, t):
    """sin(r + t) for |r| <= pi/4."""
    z = r * r
    s = _SIN_S0 + z * (_SIN_S1 + z * _SIN_S2)
    return r + ((z * r) * s + (t - (0.5 * z) * t))


@triton.jit
def _cos_kernel(r, t):
    """cos(r + t) for |r| <= pi/4."""
    z = r * r
    hz = 0.5 * z
    w = 1.0 - hz
    c = _COS_C0 + z * (_COS_C1 + z * _COS_C2)
    return w + (((1.0 - w) - hz) + ((z * z) * c - r * t))


@triton.jit
def _trig_parts(x):
    """(invalid, q, sin(r + t), cos(r + t)) for |x| = q*pi/2 + r + t."""
    nan = (f32_bits(x) & _ABS_MASK) >= _INF_BITS
    a = tl.abs(tl.where(nan, 0.0, x))
    q, r, t = _reduce_pio2(a)
    return nan, q, _sin_kernel(r, t), _cos_kernel(r, t)


@triton.jit
def sin_f32(x):
    """Sine on a float32 block; bit-identical to mathlib_reference.sin."""
    nan, q, s, c = _trig_parts(x)
    y = tl.where((q & 1) != 0, c, s)
    y = tl.where((q & 2) != 0, negate(y), y)
    y = tl.where(_sign_set(x), negate(y), y)
    return _nan_where(nan, y)


@triton.jit
def cos_f32(x):
    """Cosine on a float32 block; bit-identical to mathlib_reference.cos."""
    nan, q, s, c = _trig_parts(x)
    y = tl.where((q & 1) != 0, s, c)
    y = tl.where(((q + 1) & 2) != 0, negate(y), y)
    return _nan_where(nan, y)


@triton.jit
def rsqrt_f32(x):
    """div_rn(1, sqrt_rn(x)) on a float32 block; bit-identical to mathlib_reference.rsqrt."""
    nan = _is_nan(x) | (x < 0.0)
    y = tl.math.div_rn(tl.full(x.shape, 1.0, tl.float32), tl.math.sqrt_rn(x))
    return _nan_where(nan, y)


# ---------------------------------------------------------------------------
# Launchable elementwise kernel
# ---------------------------------------------------------------------------

FUNC_IDS: dict[str, int] = {name: i for i, name in enumerate(_ref.FUNCTIONS)}
BLOCK = 1024


@triton.jit
def _unary_kernel(x_ptr, y_ptr, n, FUNC: tl.constexpr, BLOCK: tl.constexpr):
    """y[i] = f(x[i]) for the function numbered FUNC in FUNC_IDS."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    x = tl.load(x_ptr + offs, mask=mask, other=0.0)
    if FUNC == 0:
        y = exp_f32(x)
    elif FUNC == 1:
        y = log_f32(x)
    elif FUNC == 2:
        y = tanh_f32(x)
    elif FUNC == 3:
        y = sigmoid_f32(x)
    elif FUNC == 4:
        y = erf_f32(x)
    elif FUNC == 5:
        y = sin_f32(x)
    elif FUNC == 6:
        y = cos_f32(x)
    else:
        y = rsqrt_f32(x)
    tl.store(y_ptr + offs, y, mask=mask)


def launch_unary(name: str, x: torch.Tensor) -> torch.Tensor:
    """Apply the math-library function ``name`` to float32 tensor x with
    ``_unary_kernel``; returns a new contiguous tensor of x's shape on x's device."""
    flat = x.contiguous().view(-1)
    out = torch.empty_like(flat)
    n = flat.numel()
    if n:
        launch(_unary_kernel, (triton.cdiv(n, BLOCK),), flat, out, n, FUNC=FUNC_IDS[name], BLOCK=BLOCK)
    return out.view(x.shape)


COMPILE_SPECS: list[CompileSpec] = [
    CompileSpec(
        _unary_kernel,
        {"x_ptr": "*fp32", "y_ptr": "*fp32", "n": "i32", "FUNC": "constexpr", "BLOCK": "constexpr"},
        {"FUNC": func_id, "BLOCK": BLOCK},
    )
    for func_id in FUNC_IDS.values()
]
