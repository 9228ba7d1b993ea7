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

__all__ = ["BACKENDS", "Backend", "check_backend"]
