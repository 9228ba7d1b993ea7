"""refute.kernels: the numeric contract (DESIGN.md section 2).

Every operator is ``refute.kernels.<name>(..., backend="reference" | "triton")``
and returns the same bits on either backend, on any device.
"""

import os as _os

# Triton decides at kernel-definition time whether to interpret; with no GPU the
# interpreter is the only way to run the Triton backend, so choose it before any
# kernel module is imported (an explicit TRITON_INTERPRET always wins).
if "TRITON_INTERPRET" not in _os.environ:
    import torch as _torch

    if not _torch.cuda.is_available():
        _os.environ["TRITON_INTERPRET"] = "1"

from refute.kernels.backend import BACKENDS, Backend, check_backend  # noqa: E402
from refute.kernels.attention import attention  # noqa: E402
from refute.kernels.convert import bf16_to_fp32, fp32_to_bf16  # noqa: E402
from refute.kernels.elementwise import add, gelu_erf, gelu_tanh, mul, silu  # noqa: E402
from refute.kernels.embedding import embedding  # noqa: E402
from refute.kernels.gemm import gemm  # noqa: E402
from refute.kernels.mathlib import cos, erf, exp, log, rsqrt, sigmoid, sin, tanh  # noqa: E402
from refute.kernels.norm import l2_normalize, layer_norm, mean_pool, rms_norm  # noqa: E402
from refute.kernels.reduce import row_argmax, row_max, row_mean, row_sum, row_sumsq, row_var  # noqa: E402
from refute.kernels.rotary import rotary  # noqa: E402
from refute.kernels.softmax import log_softmax, softmax  # noqa: E402

__all__ = [
    "BACKENDS",
    "Backend",
    "check_backend",
    "bf16_to_fp32",
    "fp32_to_bf16",
    "gemm",
    "exp",
    "log",
    "tanh",
    "sigmoid",
    "erf",
    "sin",
    "cos",
    "rsqrt",
    "row_sum",
    "row_sumsq",
    "row_mean",
    "row_var",
    "row_max",
    "row_argmax",
    "add",
    "mul",
    "gelu_erf",
    "gelu_tanh",
    "silu",
    "embedding",
    "layer_norm",
    "rms_norm",
    "l2_normalize",
    "mean_pool",
    "softmax",
    "log_softmax",
    "rotary",
    "attention",
]
