"""numpy reference of the elementwise operators of :mod:`refute.kernels.elementwise`.

add, mul, gelu_erf, gelu_tanh and silu, each a fixed straight-line program over
IEEE-754 binary32 (docs/numerics.md) that calls refute's own math
library (:mod:`refute.kernels.mathlib_reference`) for erf, tanh and sigmoid.
Written independently of the Triton kernels; every numpy float32 operation
below is one correctly rounded IEEE operation (numpy keeps subnormals), and
Python float constants meet float32 arrays as weak scalars (NEP 50), so the
arithmetic stays float32.

Float arithmetic does not define the bits of a NaN it produces (x86 and the
GPU disagree on payload and sign), so every NaN these operators return is the
canonical quiet NaN 0x7FC00000 (:func:`canonicalize_nan`). The norms reuse it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from refute.kernels import mathlib_reference
from refute.kernels.bits_reference import bits_f32, f32_bits

CANONICAL_NAN_BITS = 0x7FC00000
ABS_MASK = 0x7FFFFFFF
INF_BITS = 0x7F800000

# Every float constant is a float32 value written as a hex literal, so no
# decimal-to-binary rounding is involved (tests check float32 representability).
GELU_C = float.fromhex("0x1.6a09e6p-1")  # float32(1/sqrt(2)), bits 0x3F3504F3
GELU_K0 = float.fromhex("0x1.988454p-1")  # float32(sqrt(2/pi)), bits 0x3F4C422A
GELU_K1 = float.fromhex("0x1.6e4e26p-5")  # float32(0.044715), bits 0x3D372713


def float_constants() -> dict[str, float]:
    """Every float constant of the programs, by name (for the representability test)."""
    return {"GELU_C": GELU_C, "GELU_K0": GELU_K0, "GELU_K1": GELU_K1}


def canonicalize_nan(y: np.ndarray) -> np.ndarray:
    """float32 ``y`` with every NaN replaced by the canonical quiet NaN 0x7FC00000."""
    b = f32_bits(y)
    return bits_f32(np.where((b & ABS_MASK) > INF_BITS, np.int32(CANONICAL_NAN_BITS), b)).reshape(np.shape(y))


def _float32(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise TypeError(f"expected a float32 array, got {x.dtype}")
    return x


def add(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``x + y`` (numpy broadcasting), NaN canonicalised."""
    with np.errstate(all="ignore"):
        return canonicalize_nan(_float32(x) + _float32(y))


def mul(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``x * y`` (numpy broadcasting), NaN canonicalised."""
    with np.errstate(all="ignore"):
        return canonicalize_nan(_float32(x) * _float32(y))


def gelu_erf(x: np.ndarray) -> np.ndarray:
    """``(x * 0.5) * (1 + erf(x * C))``, C = float32(1/sqrt(2)); gelu(-inf) = NaN
    (-inf * 0), as the formula says."""
    x = _float32(x)
    from refute.kernels import native_reference  # imported here: it imports this module

    if (lib := native_reference.library()) is not None:
        return native_reference.elementwise(lib, "gelu_erf", x)
    with np.errstate(all="ignore"):
        return canonicalize_nan((x * 0.5) * (1.0 + mathlib_reference.erf(x * GELU_C)))


def gelu_tanh(x: np.ndarray) -> np.ndarray:
    """``(x * 0.5) * (1 + tanh(K0 * (x + K1 * ((x * x) * x))))``,
    K0 = float32(sqrt(2/pi)), K1 = float32(0.044715)."""
    x = _float32(x)
    with np.errstate(all="ignore"):
        inner = GELU_K0 * (x + GELU_K1 * ((x * x) * x))
        return canonicalize_nan((x * 0.5) * (1.0 + mathlib_reference.tanh(inner)))


def silu(x: np.ndarray) -> np.ndarray:
    """``x * sigmoid(x)``; silu(-inf) = NaN (-inf * 0)."""
    x = _float32(x)
    from refute.kernels import native_reference  # imported here: it imports this module

    if (lib := native_reference.library()) is not None:
        return native_reference.elementwise(lib, "silu", x)
    with np.errstate(all="ignore"):
        return canonicalize_nan(x * mathlib_reference.sigmoid(x))


UNARY: dict[str, Callable[[np.ndarray], np.ndarray]] = {"gelu_erf": gelu_erf, "gelu_tanh": gelu_tanh, "silu": silu}
BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {"add": add, "mul": mul}
