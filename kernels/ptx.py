"""Ahead-of-time compilation of every refute kernel for NVIDIA GPUs.

Triton ships ptxas, so kernels compile for sm_80/sm_90 on a machine with no
GPU. The PTX is then scanned for instructions that would break the numeric
contract of DESIGN.md rule 2. Run as ``python -m refute.kernels.ptx``; it must
run with ``TRITON_INTERPRET=0`` (compiled kernels, not interpreted ones).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import sys
from dataclasses import dataclass

# Each pattern names a PTX instruction whose rounding differs from the
# straight-line IEEE binary32 program that the reference executes.
FORBIDDEN_PTX: dict[str, re.Pattern[str]] = {
    "fused multiply-add on f32": re.compile(r"\bfma\.[a-z.]*f32\b"),
    "approximate or full-range division": re.compile(r"\bdiv\.(approx|full)\b"),
    "approximate sqrt/rsqrt": re.compile(r"\b(sqrt|rsqrt)\.approx\b"),
    "hardware transcendental": re.compile(r"\b(ex2|lg2|sin|cos|tanh)\.approx\b"),
    "flush-to-zero": re.compile(r"\.ftz\b"),
    "float atomic": re.compile(r"\b(atom|red)\.[a-z.]*\.f(16|32|64)\b"),
}

# triton 3.6 (not 3.9) lowers a float's unary minus to ``0 - x`` (``arith.subf`` of
# a +0 constant), which maps +0 to +0 where the reference negates to -0: seen on
# an H200 as tanh(-0) = +0. Kernels flip the sign bit instead (bits_triton.negate).
# Found in the Triton IR, since by PTX the zero has moved into a register.
ZERO_CONSTANT_TTIR = re.compile(r"(%[\w.]+) = arith\.constant (?:dense<)?0\.000000e\+00>? : (?:tensor<[\dx]+xf32>|f32)")
SUBTRACTION_TTIR = re.compile(r"= arith\.subf (%[\w.]+), ")
NEGATION_AS_SUBTRACTION = "negation as subtraction from +0"

TARGETS: tuple[int, ...] = (80, 90)


@dataclass
class PtxReport:
    kernel: str
    capability: int
    violations: list[str]


def negations_as_subtraction(ttir: str) -> list[str]:
    """The Triton IR lines that subtract from a +0 constant."""
    zeros = set(ZERO_CONSTANT_TTIR.findall(ttir))
    return [line.strip() for line in ttir.splitlines()
            if (m := SUBTRACTION_TTIR.search(line)) and m.group(1) in zeros]


def kernel_modules() -> list[str]:
    import refute.kernels as pkg

    return sorted(
        f"refute.kernels.{m.name}" for m in pkgutil.iter_modules(pkg.__path__) if m.name.endswith("_triton")
    )


def check_all(targets: tuple[int, ...] = TARGETS) -> list[PtxReport]:
    """Compile every registered kernel for each target and scan its PTX."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    reports = []
    for module_name in kernel_modules():
        module = importlib.import_module(module_name)
        for spec in getattr(module, "COMPILE_SPECS", []):
            src = ASTSource(fn=spec.kernel, signature=spec.signature, constexprs=spec.constexprs)
            for cap in targets:
                compiled = triton.compile(src, target=GPUTarget("cuda", cap, 32), options={"enable_fp_fusion": False})
                ptx = compiled.asm["ptx"]
                violations = [
                    f"{what}: {line.strip()}"
                    for line in ptx.splitlines()
                    for what, pattern in FORBIDDEN_PTX.items()
                    if pattern.search(line)
                ] + [f"{NEGATION_AS_SUBTRACTION}: {line}" for line in negations_as_subtraction(compiled.asm["ttir"])]
                reports.append(PtxReport(f"{module_name}.{spec.name}", cap, violations))
    return reports


def main() -> int:
    if os.environ.get("TRITON_INTERPRET", "0") not in ("0", ""):
        print("run with TRITON_INTERPRET=0: the interpreter cannot compile kernels", file=sys.stderr)
        return 2
    reports = check_all()
    bad = [r for r in reports if r.violations]
    for r in reports:
        print(f"sm_{r.capability} {r.kernel}: {'ok' if not r.violations else 'VIOLATES'}")
        for v in r.violations[:5]:
            print(f"    {v}")
    print(f"{len(reports)} compilations, {len(bad)} with forbidden instructions")
    return 1 if bad or not reports else 0


if __name__ == "__main__":
    sys.exit(main())
