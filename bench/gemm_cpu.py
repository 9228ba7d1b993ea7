"""CPU cost and accuracy of refute's exact GEMM (reference backend).

Run: ``python bench/gemm_cpu.py [--sizes 256 512 1024 2048] [--reps 7] [--threads T]``.

Speed: square float32 GEMMs, reference backend (s = 1..4) against
``torch.matmul`` in float32 (and float64) measured in the same run. The
methods run interleaved, round after round, and each reports its fastest
round: on a shared machine the minimum is the least disturbed measurement.

Accuracy, against the float64 product ``C64`` of the same float32 inputs
(standard normal entries):

* ``normwise``  = ||C - C64||_F / ||C64||_F;
* ``elem``      = max |C - C64| / |C64| over the elements with
  |C64| >= 0.1 * rms(C64) (smaller elements are cancellation-dominated and
  measure the inputs, not the method);
* ``vs |A||B|`` = max |C - C64| / (|A| @ |B|), the componentwise error
  relative to the magnitude of the terms, which the bound in
  docs/numerics.md controls;
* ``/bound``    = max |C - C64| / (that bound): must stay <= 1.

torch.matmul fp32 is measured with the same metrics as the yardstick.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable

import numpy as np
import torch

from refute.kernels.gemm import gemm

SMALL_FRACTION_OF_RMS = 0.1
UNIT_ROUNDOFF_F32 = 2.0**-24


def fastest_times(fns: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Fastest wall time of each function over ``rounds`` interleaved rounds
    (after one warm-up round)."""
    best = {name: math.inf for name in fns}
    for r in range(rounds + 1):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            if r:
                best[name] = min(best[name], time.perf_counter() - t)
    return best


def exponents(x: np.ndarray, axis: int) -> np.ndarray:
    """Exponent field of the max |x| along ``axis`` (-127 for subnormal/zero)."""
    m = np.abs(x).max(axis=axis).astype(np.float32)
    return ((m.view(np.int32) >> 23) & 0xFF) - 127


def error_bound(a: np.ndarray, b: np.ndarray, slices: int) -> np.ndarray:
    """The documented bound on |C - A @ B| (docs/numerics.md, section Error bound)."""
    k = a.shape[1]
    alpha = np.ldexp(1.0, exponents(a, 1) + 1 - 7 * slices)[:, None]
    beta = np.ldexp(1.0, exponents(b, 0) + 1 - 7 * slices)[None, :]
    a_abs, b_abs = np.abs(a.astype(np.float64)), np.abs(b.astype(np.float64))
    image = alpha * b_abs.sum(axis=0)[None, :] + beta * a_abs.sum(axis=1)[:, None] + k * alpha * beta
    return image * (1 + 2 * UNIT_ROUNDOFF_F32) + UNIT_ROUNDOFF_F32 * (a_abs @ b_abs) + 2.0**-149


def accuracy(c: np.ndarray, a: np.ndarray, b: np.ndarray, bound: np.ndarray | None) -> dict[str, float]:
    c64 = a.astype(np.float64) @ b.astype(np.float64)
    err = np.abs(c.astype(np.float64) - c64)
    big = np.abs(c64) >= SMALL_FRACTION_OF_RMS * np.sqrt(np.mean(c64**2))
    terms = np.abs(a.astype(np.float64)) @ np.abs(b.astype(np.float64))
    return {
        "normwise": float(np.linalg.norm(err) / np.linalg.norm(c64)),
        "elem": float((err[big] / np.abs(c64[big])).max()),
        "terms": float((err / terms).max()),
        "bound": float((err / bound).max()) if bound is not None else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--slices", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--reps", type=int, default=7, help="timed rounds")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, numpy {np.__version__}")
    rng = np.random.default_rng(0)
    speed_rows, acc_rows = [], []
    for n in args.sizes:
        a_np = rng.standard_normal((n, n)).astype(np.float32)
        b_np = rng.standard_normal((n, n)).astype(np.float32)
        a, b = torch.from_numpy(a_np), torch.from_numpy(b_np)
        a64, b64 = a.double(), b.double()
        fns: dict[str, Callable[[], object]] = {"fp32": lambda: torch.matmul(a, b), "fp64": lambda: torch.matmul(a64, b64)}
        for s in args.slices:
            fns[f"s{s}"] = lambda s=s: gemm(a, b, slices=s)
        speed_rows.append({"n": n} | fastest_times(fns, args.reps))
        acc_rows.append((n, "torch fp32", accuracy(torch.matmul(a, b).numpy(), a_np, b_np, None)))
        for s in args.slices:
            c = gemm(a, b, slices=s).numpy()
            acc_rows.append((n, f"exact s={s}", accuracy(c, a_np, b_np, error_bound(a_np, b_np, s))))

    print("\nspeed: fastest of the rounds in seconds, and the ratio to torch.matmul fp32")
    header = f"{'n':>6} {'fp32 s':>9} {'fp64/fp32':>9}" + "".join(f" {'s=' + str(s) + ' s':>9} {'ratio':>6}" for s in args.slices)
    print(header)
    for r in speed_rows:
        line = f"{r['n']:>6} {r['fp32']:>9.4f} {r['fp64'] / r['fp32']:>9.2f}"
        line += "".join(f" {r[f's{s}']:>9.4f} {r[f's{s}'] / r['fp32']:>6.2f}" for s in args.slices)
        print(line)

    print("\naccuracy against the float64 product (standard normal inputs)")
    print(f"{'n':>6} {'method':>12} {'normwise':>10} {'elem':>10} {'vs |A||B|':>10} {'/bound':>8}")
    for n, name, m in acc_rows:
        print(f"{n:>6} {name:>12} {m['normwise']:>10.2e} {m['elem']:>10.2e} {m['terms']:>10.2e} {m['bound']:>8.3f}")


if __name__ == "__main__":
    main()
