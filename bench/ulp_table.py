"""Accuracy table of refute's fp32 math library (reference backend).

Run: ``python bench/ulp_table.py [--scale S]``. Prints a Markdown table with,
for each function and input domain: sample count, max and mean error in ulp
and the argument of the max error. The true value is the float64 function
(``math.erf`` for erf, mpmath is not needed); the ulp is that of the float32
binade of the true value, 2**-149 for subnormal (and zero) true values.

The reference backend is bit-identical to the Triton backend (tests check it),
so these numbers hold for every backend. ``--scale`` multiplies every sample
count (default 2: about ten million points per function; about 30 s on
two cores).
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import mpmath
import numpy as np

from refute.kernels import mathlib_reference as ref

FLT_MAX = float(np.finfo(np.float32).max)
ERF64 = np.frompyfunc(math.erf, 1, 1)


def ulp_of(truth: np.ndarray) -> np.ndarray:
    """The ulp of the float32 binade holding each float64 true value."""
    _, exponent = np.frexp(np.abs(truth))
    return np.ldexp(1.0, np.maximum(exponent - 24, -149))


def ulp_error(y: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """|y - truth| in ulps of truth's float32 binade; 0 where both overflow."""
    y64 = y.astype(np.float64)
    both_inf = np.isinf(y64) & (np.abs(truth) > FLT_MAX) & (np.sign(y64) == np.sign(truth))
    with np.errstate(invalid="ignore"):
        err = np.abs(y64 - truth) / ulp_of(truth)
    return np.where(both_inf, 0.0, err)


# ---------------------------------------------------------------------------
# Samples
# ---------------------------------------------------------------------------

RNG = np.random.default_rng(20240521)


def uniform(lo: float, hi: float, n: int) -> np.ndarray:
    return RNG.uniform(lo, hi, n).astype(np.float32)


def log_uniform(lo_exp: float, hi_exp: float, n: int, signed: bool = True) -> np.ndarray:
    """|x| = 2**U(lo_exp, hi_exp), random sign if ``signed``."""
    x = np.exp2(RNG.uniform(lo_exp, hi_exp, n))
    if signed:
        x = x * RNG.choice([-1.0, 1.0], n)
    return x.astype(np.float32)


def positive_bits(n: int, lo: int = 1, hi: int = 0x7F800000) -> np.ndarray:
    """Random float32 bit patterns in [lo, hi): every positive finite float
    (subnormals included) is equally likely."""
    return RNG.integers(lo, hi, n, dtype=np.int64).astype(np.int32).view(np.float32)


def floats_between(lo: float, hi: float) -> np.ndarray:
    """Every float32 in [lo, hi] (0 < lo < hi)."""
    lo_bits, hi_bits = (int(np.float32(v).view(np.int32)) for v in (lo, hi))
    return np.arange(lo_bits, hi_bits + 1, dtype=np.int32).view(np.float32)


def neighbours(x: np.ndarray, radius: int) -> np.ndarray:
    """x and the `radius` float32 neighbours on each side (positive x)."""
    bits = x.view(np.int32).astype(np.int64)
    return np.concatenate([(bits + d).astype(np.int32).view(np.float32) for d in range(-radius, radius + 1)])


def pio2_multiples(limit: float) -> np.ndarray:
    """The floats nearest k*pi/2 for every k with k*pi/2 <= limit, with two
    neighbours each side: where x - k*pi/2 is smallest and reduction hardest."""
    k = np.arange(1, int(limit / (math.pi / 2)) + 1, dtype=np.float64)
    return neighbours((k * (math.pi / 2)).astype(np.float32), 2)


def pio2_hard_all_exponents() -> np.ndarray:
    """For every float32 binade above 2**16: mantissas m for which m*2**(e-23)
    is close to a multiple of pi/2, from the continued fraction of
    2**(e-23)*2/pi mod 1 (convergent denominators and their multiples that
    land in [2**23, 2**24)), with neighbours."""
    mpmath.mp.prec = 400
    two_over_pi = 2 / mpmath.pi
    found = []
    for e in range(16, 128):
        alpha = mpmath.frac(mpmath.ldexp(two_over_pi, e - 23))
        p0, q0, p1, q1 = 0, 1, 1, 0  # convergents p/q of alpha
        x = alpha
        for _ in range(60):
            a = int(mpmath.floor(x))
            p0, q0, p1, q1 = p1, q1, a * p1 + p0, a * q1 + q0
            if q1 >= 2**24:
                break
            for q in (q1, q1 + q0):
                if q > 0:
                    mult = -(-(2**23) // q)
                    m = q * mult
                    if 2**23 <= m < 2**24:
                        found.append(math.ldexp(m, e - 23))
            frac = x - a
            if frac == 0:
                break
            x = 1 / frac
    return neighbours(np.unique(np.array(found, dtype=np.float32)), 1)


def sigmoid64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


# (function, true function in float64, [(domain label, samples)])
Case = tuple[str, Callable[[np.ndarray], np.ndarray], list[tuple[str, np.ndarray]]]


def cases(scale: float) -> list[Case]:
    def n(k: float) -> int:
        return max(1, int(k * 1_000_000 * scale))

    hard16 = pio2_multiples(2.0**16)
    hard_all = pio2_hard_all_exponents()
    trig_domains = [
        ("uniform [-2^16, 2^16]", uniform(-(2.0**16), 2.0**16, n(2))),
        ("log-uniform 2^-30 <= abs x <= 2^16", log_uniform(-30, 16, n(2))),
        ("all finite floats (random bits)", positive_bits(n(1))),
        (f"floats nearest k*pi/2 <= 2^16, +-2 ulp ({hard16.size})", hard16),
        (f"near multiples of pi/2, 2^16..2^128 ({hard_all.size})", hard_all),
    ]
    return [
        (
            "exp",
            np.exp,
            [
                ("uniform [-104, 88.72]", uniform(-104.0, 88.72283, n(2))),
                ("log-uniform 2^-30 <= abs x <= 2^6.47", log_uniform(-30, 6.47, n(2))),
                ("uniform [-104, -87.3] (subnormal results)", uniform(-104.0, -87.3, n(1))),
            ],
        ),
        (
            "log",
            np.log,
            [
                ("all positive floats (random bits)", positive_bits(n(2))),
                ("uniform [0.5, 2]", uniform(0.5, 2.0, n(2))),
                ("every float in [1 - 2^-4, 1 + 2^-4]", floats_between(1 - 2.0**-4, 1 + 2.0**-4)),
            ],
        ),
        (
            "tanh",
            np.tanh,
            [
                ("uniform [-10, 10]", uniform(-10.0, 10.0, n(2))),
                ("log-uniform 2^-30 <= abs x <= 2^4", log_uniform(-30, 4, n(2))),
            ],
        ),
        (
            "sigmoid",
            sigmoid64,
            [
                ("uniform [-105, 20]", uniform(-105.0, 20.0, n(2))),
                ("log-uniform 2^-30 <= abs x <= 2^7", log_uniform(-30, 7, n(2))),
            ],
        ),
        (
            "erf",
            lambda x: ERF64(x).astype(np.float64),
            [
                ("uniform [-4.5, 4.5]", uniform(-4.5, 4.5, n(2))),
                ("log-uniform 2^-30 <= abs x <= 2^2.2", log_uniform(-30, 2.2, n(2))),
            ],
        ),
        ("sin", np.sin, trig_domains),
        ("cos", np.cos, trig_domains),
        (
            "rsqrt",
            lambda x: 1.0 / np.sqrt(x),
            [
                ("all positive floats (random bits)", positive_bits(n(2))),
                ("uniform [1, 4]", uniform(1.0, 4.0, n(2))),
            ],
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=2.0, help="multiply every sample count")
    args = parser.parse_args()
    start = time.perf_counter()
    rows = [
        "| function | domain | samples | max ulp | mean ulp | argmax x |",
        "|---|---|---:|---:|---:|---|",
    ]
    for name, truth_fn, domains in cases(args.scale):
        fn = ref.FUNCTIONS[name]
        for label, x in domains:
            err = ulp_error(fn(x), truth_fn(x.astype(np.float64)))
            i = int(np.argmax(err))
            rows.append(
                f"| {name} | {label} | {x.size:,} | {err[i]:.3f} | {err.mean():.3f} | "
                f"{float(x[i]):.9g} ({int(x[i : i + 1].view(np.uint32)[0]):#010x}) |"
            )
    print("\n".join(rows))
    print(f"\n{time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
