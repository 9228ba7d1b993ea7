"""The reference backend's hot loops, fused in C: the same bits as the numpy
programs, several times faster.

The numpy modules (:mod:`gemm_reference`, :mod:`reduce_reference`,
:mod:`mathlib_reference`, :mod:`softmax_reference`,
:mod:`elementwise_reference`) are the readable definitions of the numeric
contract. Each of their hot functions makes many whole-array passes through
memory (an exact sum is eleven); the C functions here run the same
straight-line programs one element or one row at a time, in cache. They are
not a third numeric design: every C float operation below is the numpy
operation of the same line of the numpy program (binary32, round to nearest
even; compiled with ``-ffp-contract=off`` so no multiply-add is fused, and
without ``-ffast-math``), and the tests compare the two bit for bit on drawn and
special inputs (tests/test_native_reference.py).

Used when a C compiler is found (the library is built once and cached, see
:mod:`refute.ccompile`) and ``REFUTE_NATIVE`` is not ``0``; the library also
checks itself against numpy on special values when loaded. Otherwise, and
inside :func:`disabled`, the numpy programs run.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import threading
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from refute.kernels import mathlib_reference as M
from refute.kernels.elementwise_reference import GELU_C
from refute.kernels.reduce_reference import FRAC_BITS


def _c(v: float) -> str:
    """A float32 constant as an exact C hex literal."""
    assert float(np.float32(v)) == v, v
    return f"{float(v).hex()}f"


_SOURCE = f"""
#include <stdint.h>
#include <string.h>

#define ABS_MASK 0x7FFFFFFF
#define INF_BITS 0x7F800000
#define NEG_INF_BITS ((int32_t)0xFF800000)
#define CANONICAL_NAN_BITS 0x7FC00000
#define FRAC_BITS {FRAC_BITS}

static inline int32_t bits(float x) {{ int32_t i; memcpy(&i, &x, 4); return i; }}
static inline float from_bits(int32_t i) {{ float f; memcpy(&f, &i, 4); return f; }}
static inline int is_nan(float x) {{ return (bits(x) & ABS_MASK) > INF_BITS; }}
static inline float canon(float x) {{ return is_nan(x) ? from_bits(CANONICAL_NAN_BITS) : x; }}
/* np.abs: clears the sign bit. */
static inline float abs_f(float x) {{ return from_bits(bits(x) & ABS_MASK); }}
/* 2**k for k in [-126, 127], from its bits (bits_reference.pow2). */
static inline float pow2(int32_t k) {{ return from_bits((k + 127) << 23); }}
static inline int32_t clampi(int32_t k, int32_t lo, int32_t hi) {{ return k < lo ? lo : (k > hi ? hi : k); }}
/* bits_reference.ldexp's three normal powers of two, whose product is 2**k. */
static inline void ldexp_factors(int32_t k, float *p1, float *p2, float *p3) {{
    int32_t k1 = clampi(k, -126, 127), k2 = clampi(k - k1, -126, 127), k3 = clampi(k - k1 - k2, -126, 127);
    *p1 = pow2(k1); *p2 = pow2(k2); *p3 = pow2(k3);
}}
/* bits_reference.ldexp: three multiplications by normal powers of two. */
static inline float ldexp3(float x, int32_t k) {{
    float p1, p2, p3;
    ldexp_factors(k, &p1, &p2, &p3);
    return ((x * p1) * p2) * p3;
}}
/* bits_reference.exponent_of on the bits of |x|. */
static inline int32_t exponent_of_abs(int32_t abs_bits) {{ return ((abs_bits >> 23) & 0xFF) - 127; }}
/* bits_reference.round_half_even_to_int64 for finite |y| <= 2**50. The float
   is rounded to an integer as numpy does; the integer-valued double is then
   read as int64 through the 1.5 * 2**52 bias (exact below 2**51), which the
   compiler can vectorize where a float -> int64 conversion has no instruction. */
#define I64_BIAS 0x1.8p52
static inline int64_t rne_i64(float y) {{
    float a = y < 0.0f ? -y : y;
    float r = a < 0x1p23f ? (a + 0x1p23f) - 0x1p23f : a;
    double d = (double)(y < 0.0f ? -r : r) + I64_BIAS;
    int64_t q;
    memcpy(&q, &d, 8);
    return q - 0x4338000000000000LL;
}}

/* ---- reduce_reference.exact_sum, one row -------------------------------- */
static float exact_sum_row(const float *v, int64_t n) {{
    const int32_t *b = (const int32_t *)v;
    int32_t max_abs = 0;
    int pinf = 0, ninf = 0, nan = 0;
    for (int64_t i = 0; i < n; i++) {{
        int32_t a = b[i] & ABS_MASK;
        int32_t finite_a = a < INF_BITS ? a : 0;
        max_abs = finite_a > max_abs ? finite_a : max_abs;
        nan |= a > INF_BITS;
        pinf |= b[i] == INF_BITS;
        ninf |= b[i] == NEG_INF_BITS;
    }}
    int32_t e = exponent_of_abs(max_abs);
    float p1, p2, p3;
    ldexp_factors(FRAC_BITS - 1 - e, &p1, &p2, &p3);
    int64_t s = 0;
    for (int64_t i = 0; i < n; i++) {{
        float x = (b[i] & ABS_MASK) < INF_BITS ? v[i] : 0.0f;
        s += rne_i64(((x * p1) * p2) * p3);
    }}
    int32_t r = bits(ldexp3((float)s, e + 1 - FRAC_BITS));
    if (ninf) r = NEG_INF_BITS;
    if (pinf) r = INF_BITS;
    if (nan || (pinf && ninf)) r = CANONICAL_NAN_BITS;
    return from_bits(r);
}}

void refute_ldexp(const float *x, const int32_t *k, int64_t n, float *y) {{
    for (int64_t i = 0; i < n; i++) y[i] = ldexp3(x[i], k[i]);
}}

void refute_exact_sum_rows(const float *v, int64_t rows, int64_t n, float *out) {{
    for (int64_t r = 0; r < rows; r++) out[r] = exact_sum_row(v + r * n, n);
}}

/* ---- mathlib_reference programs ----------------------------------------- */
static inline float exp_program(float x) {{
    int nan = is_nan(x);
    float xc = x > {_c(M.EXP_HI)} ? {_c(M.EXP_HI)} : x;
    xc = xc < {_c(M.EXP_LO)} ? {_c(M.EXP_LO)} : xc;
    xc = nan ? 0.0f : xc;
    float nf = (xc * {_c(M.LOG2E)} + {_c(M.ROUND_MAGIC)}) - {_c(M.ROUND_MAGIC)};
    int32_t n = (int32_t)nf;
    float r = (xc - nf * {_c(M.LN2_HI)}) - nf * {_c(M.LN2_LO)};
    float p = {_c(M.EXP_P3)} + r * {_c(M.EXP_P4)};
    p = {_c(M.EXP_P2)} + r * p;
    p = {_c(M.EXP_P1)} + r * p;
    p = {_c(M.EXP_P0)} + r * p;
    float y = 1.0f + (r + (r * r) * p);
    int32_t n1 = n >> 1;
    y = (y * pow2(n1)) * pow2(n - n1);
    return nan ? from_bits(CANONICAL_NAN_BITS) : y;
}}

static inline float erf_program(float x) {{
    int nan = is_nan(x);
    float a = abs_f(nan ? 0.0f : x);
    float z = a * a;
    float p = {_c(M.ERF_E5)} + z * {_c(M.ERF_E6)};
    p = {_c(M.ERF_E4)} + z * p;
    p = {_c(M.ERF_E3)} + z * p;
    p = {_c(M.ERF_E2)} + z * p;
    p = {_c(M.ERF_E1)} + z * p;
    p = {_c(M.ERF_E0)} + z * p;
    float small = a + a * p;
    float ac = a > {_c(M.ERF_CLAMP)} ? {_c(M.ERF_CLAMP)} : a;
    float w = ac - {_c(M.ERF_CENTER)};
    float h = {_c(M.ERF_H6)} + w * {_c(M.ERF_H7)};
    h = {_c(M.ERF_H5)} + w * h;
    h = {_c(M.ERF_H4)} + w * h;
    h = {_c(M.ERF_H3)} + w * h;
    h = {_c(M.ERF_H2)} + w * h;
    h = {_c(M.ERF_H1)} + w * h;
    h = {_c(M.ERF_H0)} + w * h;
    float large = 1.0f - exp_program(-(ac * ac)) * h;
    float y = a < {_c(M.ERF_SPLIT)} ? small : large;
    y = bits(x) < 0 ? -y : y;
    return nan ? from_bits(CANONICAL_NAN_BITS) : y;
}}

static inline float sigmoid_program(float x) {{
    int nan = is_nan(x);
    float xs = nan ? 0.0f : x;
    float e = exp_program(-abs_f(xs));
    float num = xs >= 0.0f ? 1.0f : e;
    float y = num / (1.0f + e);
    return nan ? from_bits(CANONICAL_NAN_BITS) : y;
}}

void refute_exp(const float *x, int64_t n, float *y) {{ for (int64_t i = 0; i < n; i++) y[i] = exp_program(x[i]); }}
void refute_erf(const float *x, int64_t n, float *y) {{ for (int64_t i = 0; i < n; i++) y[i] = erf_program(x[i]); }}
void refute_sigmoid(const float *x, int64_t n, float *y) {{
    for (int64_t i = 0; i < n; i++) y[i] = sigmoid_program(x[i]);
}}

/* elementwise_reference.gelu_erf and silu. */
void refute_gelu_erf(const float *x, int64_t n, float *y) {{
    for (int64_t i = 0; i < n; i++) y[i] = canon((x[i] * 0.5f) * (1.0f + erf_program(x[i] * {_c(GELU_C)})));
}}
void refute_silu(const float *x, int64_t n, float *y) {{
    for (int64_t i = 0; i < n; i++) y[i] = canon(x[i] * sigmoid_program(x[i]));
}}

/* ---- softmax_reference.softmax_stats / softmax, one row per call ---------- */
/* reduce_reference.total_order_key */
static inline int32_t order_key(int32_t b) {{
    int32_t key = b < 0 ? b ^ ABS_MASK : b;
    return (b & ABS_MASK) > INF_BITS ? ABS_MASK : key;
}}

/* m (row max of the kept entries), e (the kept exps, +0 elsewhere) and s (exact sum of e). */
static void softmax_stats_row(const float *x, const uint8_t *keep, int64_t n, float *m_out, float *e, float *s_out) {{
    int32_t key = order_key(NEG_INF_BITS);
    for (int64_t i = 0; i < n; i++) {{
        int32_t k = order_key(keep[i] ? bits(x[i]) : NEG_INF_BITS);
        key = k > key ? k : key;
    }}
    float m = from_bits(key == ABS_MASK ? CANONICAL_NAN_BITS : (key < 0 ? key ^ ABS_MASK : key));
    for (int64_t i = 0; i < n; i++) e[i] = keep[i] ? exp_program(x[i] - m) : 0.0f;
    *m_out = m;
    *s_out = exact_sum_row(e, n);
}}

void refute_softmax_stats_rows(const float *x, const uint8_t *keep, int64_t rows, int64_t n,
                               float *m, float *e, float *s) {{
    for (int64_t r = 0; r < rows; r++) softmax_stats_row(x + r * n, keep + r * n, n, m + r, e + r * n, s + r);
}}

void refute_softmax_rows(const float *x, const uint8_t *keep, int64_t rows, int64_t n, float *p) {{
    for (int64_t r = 0; r < rows; r++) {{
        float m, s;
        float *pr = p + r * n;
        const uint8_t *kr = keep + r * n;
        softmax_stats_row(x + r * n, kr, n, &m, pr, &s);
        for (int64_t i = 0; i < n; i++) pr[i] = kr[i] ? canon(pr[i] / s) : 0.0f;
    }}
}}

/* ---- gemm_reference: images of rows, and the products' final scaling ------ */
/* images(a, max_abs_bits(a, -1), -1, slices) for one row of k: row max in *maxbits. */
void refute_gemm_row_images(const float *a, int64_t rows, int64_t k, int32_t shift, double limit,
                            int32_t *maxbits, double *img) {{
    const int32_t *b = (const int32_t *)a;
    for (int64_t r = 0; r < rows; r++) {{
        int32_t mx = 0;
        for (int64_t i = 0; i < k; i++) {{ int32_t v = b[r * k + i] & ABS_MASK; if (v > mx) mx = v; }}
        maxbits[r] = mx;
        double *out = img + r * k;
        if (mx >= INF_BITS) {{ for (int64_t i = 0; i < k; i++) out[i] = 0.0; continue; }}
        float p1, p2, p3;
        ldexp_factors(shift - exponent_of_abs(mx), &p1, &p2, &p3);
        for (int64_t i = 0; i < k; i++) {{
            float y = ((a[r * k + i] * p1) * p2) * p3;
            float ay = y < 0.0f ? -y : y;
            /* np.rint on float32: round half even (|y| >= 2**23 is already an integer). */
            float q = ay < 0x1p23f ? (ay + 0x1p23f) - 0x1p23f : ay;
            q = y < 0.0f ? -q : (y == 0.0f ? y : q);
            double d = (double)q;
            out[i] = d > limit ? limit : (d < -limit ? -limit : d);
        }}
    }}
}}

/* fl32(P) scaled by 2**(e_i + f_j + pshift), NaN where row i or column j is
   non-finite, then + bias_j with NaN made canonical. p: rows first_row.. of a
   stack of (m, n) products, exact integers in float64; amax: one per row;
   bmax: one (n,) vector per matrix (bmax_matrix_stride = n) or one shared (0). */
void refute_gemm_finish(const double *p, int64_t first_row, int64_t rows, int64_t m, int64_t n,
                        const int32_t *amax, const int32_t *bmax, int64_t bmax_matrix_stride, int32_t pshift,
                        const float *bias, float *out) {{
    for (int64_t r = 0; r < rows; r++) {{
        const int32_t *bm = bmax + ((first_row + r) / m) * bmax_matrix_stride;
        const double *pr = p + r * n;
        float *o = out + r * n;
        int32_t e = exponent_of_abs(amax[r]) + pshift;
        int32_t a_bad = amax[r] >= INF_BITS;
        for (int64_t j = 0; j < n; j++) {{
            float c = ldexp3((float)(pr[j] + 0.0), e + exponent_of_abs(bm[j]));
            o[j] = (a_bad | (bm[j] >= INF_BITS)) ? from_bits(CANONICAL_NAN_BITS) : c;
        }}
        if (bias)
            for (int64_t j = 0; j < n; j++) o[j] = canon(o[j] + bias[j]);
    }}
}}
"""

# -ffp-contract=off: no fused multiply-add; -fno-trapping-math lets selects of
# float values become branch-free (and the loops vectorize) without changing any
# result; -mavx2 only where the CPU has it.
_CFLAGS = ["-O3", "-std=gnu11", "-ffp-contract=off", "-fno-fast-math", "-fno-math-errno", "-fno-trapping-math"]


def _cflags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            avx2 = any(line.startswith("flags") and " avx2" in line for line in f)
    except OSError:
        avx2 = False
    return _CFLAGS + (["-mavx2"] if avx2 else [])

# Work of at least this many elements is split into one piece per thread of
# the pool (ctypes releases the GIL during a call); less runs in the caller.
PARALLEL_MIN_ELEMENTS = 1 << 16
_POOL: ThreadPoolExecutor | None = None
_disabled = threading.local()

_f32p = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")
_f64p = np.ctypeslib.ndpointer(np.float64, flags="C_CONTIGUOUS")
_i32p = np.ctypeslib.ndpointer(np.int32, flags="C_CONTIGUOUS")
_u8p = np.ctypeslib.ndpointer(np.uint8, flags="C_CONTIGUOUS")
_i64 = ctypes.c_int64
_SIGNATURES = {
    "refute_exact_sum_rows": [_f32p, _i64, _i64, _f32p],
    "refute_ldexp": [_f32p, _i32p, _i64, _f32p],
    "refute_exp": [_f32p, _i64, _f32p],
    "refute_erf": [_f32p, _i64, _f32p],
    "refute_sigmoid": [_f32p, _i64, _f32p],
    "refute_gelu_erf": [_f32p, _i64, _f32p],
    "refute_silu": [_f32p, _i64, _f32p],
    "refute_softmax_stats_rows": [_f32p, _u8p, _i64, _i64, _f32p, _f32p, _f32p],
    "refute_softmax_rows": [_f32p, _u8p, _i64, _i64, _f32p],
    "refute_gemm_row_images": [_f32p, _i64, _i64, ctypes.c_int32, ctypes.c_double, _i32p, _f64p],
    "refute_gemm_finish": [_f64p, _i64, _i64, _i64, _i64, _i32p, _i32p, _i64, ctypes.c_int32, ctypes.c_void_p,
                           _f32p],
}


@functools.cache
def _threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=_threads(), thread_name_prefix="refute-native")
    return _POOL


@functools.cache
def _library() -> ctypes.CDLL | None:
    from refute.ccompile import compile_library

    try:
        lib = ctypes.CDLL(str(compile_library("reference", _SOURCE, _cflags())))
    except OSError as e:
        warnings.warn(f"native reference loops unavailable ({e}); the numpy programs run", RuntimeWarning)
        return None
    for name, args in _SIGNATURES.items():
        getattr(lib, name).argtypes = args
        getattr(lib, name).restype = None
    return lib


@contextlib.contextmanager
def disabled() -> Iterator[None]:
    """Run the numpy programs in this thread while inside (tests compare the two)."""
    before = getattr(_disabled, "on", False)
    _disabled.on = True
    try:
        yield
    finally:
        _disabled.on = before


def library() -> ctypes.CDLL | None:
    """The compiled library, or None where the numpy programs must run."""
    if getattr(_disabled, "on", False) or os.environ.get("REFUTE_NATIVE", "1") == "0":
        return None
    lib = _library()
    if lib is not None and not _self_tested(lib):
        return None
    return lib


def _over_rows(rows: int, row_elements: int, run: Callable[[int, int], None]) -> None:
    """Call ``run(start, stop)`` on row ranges, across the pool when there is enough work."""
    pool = _pool()
    pieces = min(rows, _threads(), max(1, rows * row_elements // PARALLEL_MIN_ELEMENTS))
    if pieces <= 1:
        if rows:
            run(0, rows)
        return
    bounds = [rows * i // pieces for i in range(pieces + 1)]
    list(pool.map(lambda i: run(bounds[i], bounds[i + 1]), range(pieces)))


# ---------------------------------------------------------------------------
# Wrappers: the numpy modules call these when library() is not None.
# ---------------------------------------------------------------------------


def exact_sum(lib: ctypes.CDLL, v: np.ndarray) -> np.ndarray:
    """reduce_reference.exact_sum of float32 (rows, n)."""
    v = np.ascontiguousarray(v, dtype=np.float32)
    rows, n = v.shape
    out = np.empty(rows, np.float32)
    _over_rows(rows, n, lambda a, b: lib.refute_exact_sum_rows(v[a:b], b - a, n, out[a:b]))
    return out


def ldexp(lib: ctypes.CDLL, x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """bits_reference.ldexp of float32 ``x`` and int ``k`` (broadcast together)."""
    xb, kb = np.broadcast_arrays(np.asarray(x, dtype=np.float32), np.asarray(k, dtype=np.int32))
    flat_x = np.ascontiguousarray(xb).reshape(-1)
    flat_k = np.ascontiguousarray(kb).reshape(-1)
    out = np.empty_like(flat_x)
    _over_rows(flat_x.size, 1, lambda a, b: lib.refute_ldexp(flat_x[a:b], flat_k[a:b], b - a, out[a:b]))
    return out.reshape(xb.shape)


def elementwise(lib: ctypes.CDLL, name: str, x: np.ndarray) -> np.ndarray:
    """One of exp, erf, sigmoid, gelu_erf, silu on float32 ``x`` of any shape."""
    fn = getattr(lib, f"refute_{name}")
    flat = np.ascontiguousarray(x, dtype=np.float32).reshape(-1)
    out = np.empty_like(flat)
    _over_rows(flat.size, 1, lambda a, b: fn(flat[a:b], b - a, out[a:b]))
    return out.reshape(np.shape(x))


def softmax_stats(lib: ctypes.CDLL, x: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """softmax_reference.softmax_stats of 2-D ``x`` and ``keep``."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    keep8 = np.ascontiguousarray(keep, dtype=np.uint8)
    rows, n = x.shape
    m, e, s = np.empty(rows, np.float32), np.empty_like(x), np.empty(rows, np.float32)
    _over_rows(rows, n, lambda a, b: lib.refute_softmax_stats_rows(x[a:b], keep8[a:b], b - a, n, m[a:b], e[a:b], s[a:b]))
    return m, e, s


def softmax(lib: ctypes.CDLL, x: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """softmax_reference.softmax of 2-D ``x`` and ``keep``."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    keep8 = np.ascontiguousarray(keep, dtype=np.uint8)
    rows, n = x.shape
    p = np.empty_like(x)
    _over_rows(rows, n, lambda a, b: lib.refute_softmax_rows(x[a:b], keep8[a:b], b - a, n, p[a:b]))
    return p


def gemm_row_images(lib: ctypes.CDLL, a: np.ndarray, shift: int, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """(max_abs_bits(a, -1), images(a, ..., -1, slices)) for float32 ``a`` (..., K)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    k = a.shape[-1]
    rows = int(np.prod(a.shape[:-1], dtype=np.int64))
    flat = a.reshape(rows, k)
    maxbits = np.empty(rows, np.int32)
    img = np.empty((rows, k), np.float64)
    _over_rows(rows, k, lambda s, e: lib.refute_gemm_row_images(flat[s:e], e - s, k, shift, float(limit),
                                                                maxbits[s:e], img[s:e]))
    return maxbits.reshape(a.shape[:-1]), img.reshape(a.shape)


def gemm_finish(
    lib: ctypes.CDLL, p: np.ndarray, amax: np.ndarray, bmax: np.ndarray, pshift: int, bias: np.ndarray | None
) -> np.ndarray:
    """The float32 GEMM result from exact products ``p`` (..., M, N) (float64),
    row maxima ``amax`` (..., M) and column maxima ``bmax`` (..., N)."""
    p = np.ascontiguousarray(p, dtype=np.float64)
    *batch, m, n = p.shape
    rows = int(np.prod(batch, dtype=np.int64)) * m
    amax_r = np.ascontiguousarray(np.broadcast_to(amax, (*batch, m)), dtype=np.int32).reshape(rows)
    if bmax.ndim == 1:
        bmax_m, stride = np.ascontiguousarray(bmax, dtype=np.int32), 0
    else:
        bmax_m, stride = np.ascontiguousarray(np.broadcast_to(bmax, (*batch, n)), dtype=np.int32).reshape(-1), n
    bias_c = None if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
    bias_p = None if bias_c is None else bias_c.ctypes.data
    flat = p.reshape(rows, n)
    out = np.empty((rows, n), np.float32)
    _over_rows(rows, n, lambda s, e: lib.refute_gemm_finish(flat[s:e], s, e - s, m, n, amax_r[s:e], bmax_m, stride,
                                                            pshift, bias_p, out[s:e]))
    return out.reshape(p.shape)


# ---------------------------------------------------------------------------
# Self-test on load: special values through every entry point, against numpy.
# ---------------------------------------------------------------------------

_SPECIALS_BITS = [
    0x00000000, 0x80000000, 0x00000001, 0x80000001, 0x007FFFFF, 0x00800000, 0x3F800000, 0xBF800000,
    0x3F000000, 0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00001, 0x7F800001,
    0x42B17218, 0xC2CFF1B4, 0x40800000, 0x4079AEA4, 0x3F3504F3, 0xC1200000, 0x41200000, 0x33800000,
]


@functools.cache
def _self_tested(lib: ctypes.CDLL) -> bool:
    from refute.kernels import elementwise_reference, reduce_reference

    x = np.array(_SPECIALS_BITS, dtype=np.uint32).view(np.float32)
    rng = np.random.default_rng(0)
    drawn = (rng.standard_normal(1000) * np.float32(8.0)).astype(np.float32)
    x = np.concatenate([x, drawn])
    with disabled():
        want = [M.exp(x), M.erf(x), M.sigmoid(x), elementwise_reference.gelu_erf(x),
                elementwise_reference.silu(x), reduce_reference.exact_sum(x.reshape(8, -1))]
    got = [elementwise(lib, n, x) for n in ("exp", "erf", "sigmoid", "gelu_erf", "silu")]
    got.append(exact_sum(lib, x.reshape(8, -1)))
    if all(a.tobytes() == b.tobytes() for a, b in zip(want, got)):
        return True
    warnings.warn("native reference loops failed their self-test; the numpy programs run", RuntimeWarning)
    return False
