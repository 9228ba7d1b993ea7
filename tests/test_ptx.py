"""Every Triton kernel compiles for real NVIDIA GPUs and its PTX keeps rule 2.

Runs without a GPU: Triton's bundled ptxas compiles for sm_80 and sm_90.
"""

import os
import subprocess
import sys

import pytest

from refute.kernels.ptx import FORBIDDEN_PTX, negations_as_subtraction


@pytest.mark.slow
def test_every_kernel_compiles_for_gpu_without_forbidden_instructions():
    env = dict(os.environ, TRITON_INTERPRET="0")
    proc = subprocess.run(
        [sys.executable, "-m", "refute.kernels.ptx"], env=env, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "0 with forbidden instructions" in proc.stdout


@pytest.mark.parametrize(
    "line,what",
    [
        ("fma.rn.f32 %r1, %r2, %r3, %r4;", "fused multiply-add on f32"),
        ("div.full.f32 %r1, %r2, %r3;", "approximate or full-range division"),
        ("sqrt.approx.ftz.f32 %r1, %r2;", "approximate sqrt/rsqrt"),
        ("ex2.approx.f32 %r1, %r2;", "hardware transcendental"),
        ("add.ftz.f32 %r1, %r2, %r3;", "flush-to-zero"),
        ("atom.global.add.f32 %r1, [%rd1], %r2;", "float atomic"),
    ],
)
def test_scanner_flags_each_forbidden_instruction(line, what):
    assert FORBIDDEN_PTX[what].search(line)


@pytest.mark.parametrize(
    "line", ["div.rn.f32 %r3, %r1, %r2;", "sqrt.rn.f32 %r1, %r2;", "mad.lo.s32 %r1, %r2, %r3, %r4;", "add.f32 %r1, %r2, %r3;",
             "neg.f32 %r2, %r1;"]
)
def test_scanner_accepts_correctly_rounded_instructions(line):
    assert not any(p.search(line) for p in FORBIDDEN_PTX.values())


def test_scanner_flags_negation_lowered_to_a_subtraction_from_zero():
    """Triton 3.6's lowering of ``-y`` (it made tanh(-0) +0 on an H200)."""
    ttir = """
    %cst = arith.constant dense<0.000000e+00> : tensor<1024xf32> loc(#loc1)
    %cst_1 = arith.constant dense<1.000000e+00> : tensor<1024xf32> loc(#loc1)
    %y_91 = arith.subf %cst, %y_89 : tensor<1024xf32> loc(#loc180)
    %z = arith.subf %cst_1, %y_89 : tensor<1024xf32> loc(#loc181)
    %w = arith.subf %y_89, %cst : tensor<1024xf32> loc(#loc182)
    """
    assert negations_as_subtraction(ttir) == ["%y_91 = arith.subf %cst, %y_89 : tensor<1024xf32> loc(#loc180)"]
