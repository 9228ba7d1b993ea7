"""``refute demo --numeric-core``: the numeric core on every CPU backend, digests side by side.

Each case runs one operator on inputs drawn from a fixed seed (special values
included) on the reference backend and on the Triton backend (Triton's
interpreter on a CPU, compiled kernels on a GPU) and prints the keccak256 of each
output's canonical bytes. Equal digests mean equal bits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from refute.compute.digest import tensor_digest

SPECIAL_VALUES = [0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1e-45, -1e-45, 1.17549435e-38, 3.4028235e38]


@dataclass
class Case:
    name: str
    op: Callable[..., torch.Tensor]
    inputs: tuple[torch.Tensor, ...]
    options: dict[str, object] = field(default_factory=dict)

    def run(self, backend: str, device: str) -> torch.Tensor:
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.options.items()}
        return self.op(*(t.to(device) for t in self.inputs), backend=backend, **moved)


def _cases(seed: int) -> list[Case]:
    import refute.kernels as K

    g = torch.Generator().manual_seed(seed)
    n = 2048 - len(SPECIAL_VALUES)
    scale = 2.0 ** torch.randint(-30, 30, (n,), generator=g).float()
    wide = torch.cat([torch.tensor(SPECIAL_VALUES), torch.randn(n, generator=g) * scale])
    angles = (torch.rand(2048, generator=g) - 0.5) * 2.0**17
    positive = torch.rand(2048, generator=g) * 2.0 ** torch.randint(-140, 120, (2048,), generator=g).float()
    a = torch.randn(3, 37, 300, generator=g)
    b = torch.randn(300, 45, generator=g)
    bias = torch.randn(45, generator=g)
    rows = torch.randn(6, 1000, generator=g) * 10.0 ** torch.randint(-6, 6, (6, 1), generator=g).float()

    cases = [Case(f"{fn}(x)", getattr(K, fn), (wide,)) for fn in ("exp", "log", "tanh", "sigmoid", "erf")]
    cases += [Case(f"{fn}(angles)", getattr(K, fn), (angles,)) for fn in ("sin", "cos")]
    cases.append(Case("rsqrt(x)", K.rsqrt, (positive,)))
    cases.append(Case("fp32_to_bf16(x)", K.fp32_to_bf16, (wide,)))
    cases += [
        Case(f"gemm s={s} (3x37x300 @ 300x45 + bias)", K.gemm, (a, b), {"slices": s, "bias": bias}) for s in (1, 2, 3, 4)
    ]
    reductions = ("row_sum", "row_sumsq", "row_mean", "row_var", "row_max", "row_argmax")
    cases += [Case(f"{fn} (6x1000)", getattr(K, fn), (rows,)) for fn in reductions]
    return cases


def run_numeric_core_demo(seed: int = 0) -> int:
    """Run every case on both backends; return 0 when all digests match."""
    import refute.kernels as K
    from refute.kernels.backend import interpreter_enabled

    triton_label = "triton (interpreter)" if interpreter_enabled() else "triton (GPU)"
    device = "cpu" if interpreter_enabled() else "cuda"
    print(f"refute numeric core: reference (CPU) vs {triton_label}, seed {seed}\n")
    print(f"{'operator':<40} {'reference':<18} {triton_label:<22} match")
    mismatches = 0
    start = time.perf_counter()
    for case in _cases(seed):
        ref = case.run("reference", "cpu")
        tri = case.run("triton", device)
        d_ref, d_tri = tensor_digest(ref), tensor_digest(tri)
        ok = d_ref == d_tri
        mismatches += not ok
        print(f"{case.name:<40} {d_ref[:16]:<18} {d_tri[:16]:<22} {'yes' if ok else 'NO'}", flush=True)
    elapsed = time.perf_counter() - start
    print(f"\n{K.__name__}: {'all outputs bit-identical' if not mismatches else f'{mismatches} MISMATCHES'} ({elapsed:.1f} s)")
    return 0 if mismatches == 0 else 1
