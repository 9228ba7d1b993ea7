"""Backend selection and Triton launch policy shared by every operator.

Every public operator takes ``backend="reference" | "triton"``:

* ``reference``: an independent CPU implementation in numpy (or torch on the
  CPU). It never calls a Triton kernel.
* ``triton``: the Triton kernel. On CUDA tensors it is compiled for the GPU;
  on CPU tensors it runs in Triton's interpreter, which needs
  ``TRITON_INTERPRET=1`` before any kernel is defined. ``refute.kernels`` sets
  that variable itself when no CUDA device is present and the user did not
  choose, so the interpreter is the default on a GPU-less machine.

Every launch goes through :func:`launch`, which disables FMA contraction
(DESIGN rule 2): the same straight-line program must round the same way on the
GPU, in the interpreter and in the reference.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import numpy as np
import torch

Backend = Literal["reference", "triton"]
BACKENDS: tuple[str, ...] = ("reference", "triton")


def check_backend(backend: str) -> str:
    """Return ``backend`` if it names a backend, else raise ``ValueError``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    return backend


def interpreter_enabled() -> bool:
    """True when Triton kernels are being run by Triton's CPU interpreter."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "yes", "on")


def triton_device_check(*tensors: torch.Tensor) -> None:
    """Raise a clear error if the Triton backend cannot run on these tensors."""
    devices = {t.device.type for t in tensors}
    if len(devices) > 1:
        raise ValueError(f"tensors are on different devices: {sorted(devices)}")
    device = devices.pop() if devices else "cpu"
    if device == "cpu" and not interpreter_enabled():
        raise RuntimeError(
            "the triton backend on CPU tensors needs Triton's interpreter: "
            "set TRITON_INTERPRET=1 before importing refute"
        )
    if device == "cuda" and interpreter_enabled():
        raise RuntimeError("TRITON_INTERPRET=1 is set, so CUDA tensors cannot use compiled kernels")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}")


def launch(kernel: Any, grid: tuple[int, ...], *args: Any, **kwargs: Any) -> None:
    """Launch a Triton kernel under refute's numeric policy.

    ``enable_fp_fusion=False`` forbids the compiler from contracting ``a*b+c``
    into an FMA, whose single rounding would differ from the reference's two.
    The interpreter executes IEEE overflow and invalid operations in numpy,
    which would warn about what is, here, defined behaviour.
    """
    if interpreter_enabled():
        with np.errstate(all="ignore"):
            kernel[grid](*args, enable_fp_fusion=False, **kwargs)
    else:
        kernel[grid](*args, enable_fp_fusion=False, **kwargs)


class CompileSpec:
    """One way a Triton kernel is launched, for ahead-of-time GPU compilation.

    Each ``*_triton.py`` module lists its kernels in ``COMPILE_SPECS`` so that
    ``refute.kernels.ptx`` can compile every kernel for real NVIDIA targets on a
    machine without a GPU and scan the PTX for instructions that break the
    numeric contract (FMA contraction, approximate division, ``.ftz``, ...).

    ``signature`` maps every argument name to a Triton type string (``"*fp32"``,
    ``"i32"``, ``"constexpr"``); ``constexprs`` gives each constexpr's value.
    """

    def __init__(self, kernel: Any, signature: dict[str, str], constexprs: dict[str, Any] | None = None):
        self.kernel = kernel
        self.signature = signature
        self.constexprs = constexprs or {}

    @property
    def name(self) -> str:
        constexprs = ",".join(f"{k}={v}" for k, v in sorted(self.constexprs.items()))
        return f"{self.kernel.__name__}[{constexprs}]"
