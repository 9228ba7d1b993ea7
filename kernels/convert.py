"""bf16 <-> fp32 conversions: bf16 is a storage format (DESIGN.md section 2).

* :func:`bf16_to_fp32` widens exactly (the bf16 bits become the top half of the
  fp32 bits; NaN payloads are kept).
* :func:`fp32_to_bf16` narrows with round-to-nearest-even computed in integer
  bit operations: ``(b + 0x7FFF + ((b >> 16) & 1)) >> 16`` on the fp32 bits
  ``b``. Subnormals round like any other value; magnitudes at or above
  ``0x1.FFp127`` (the tie between the largest finite bf16 ``0x1.FEp127`` and
  2**128) round to infinity; a NaN keeps its sign and top payload bits with the
  quiet bit set (``(b >> 16) | 0x0040``).

The reference is :mod:`refute.kernels.bits_reference`; the Triton backend is
:mod:`refute.kernels.convert_triton`. Both produce the same bits on any device.
"""

from __future__ import annotations

import numpy as np
import torch

from refute.kernels import bits_reference
from refute.kernels.backend import check_backend, triton_device_check


def _require(x: torch.Tensor, dtype: torch.dtype, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype != dtype:
        raise TypeError(f"{name}: expected a {dtype} tensor, got {x.dtype}")


def fp32_to_bf16(x: torch.Tensor, backend: str = "reference") -> torch.Tensor:
    """Round a float32 tensor to bfloat16, to nearest even (bit-exact on every backend)."""
    _require(x, torch.float32, "fp32_to_bf16")
    check_backend(backend)
    x = x.detach().contiguous()
    if backend == "triton":
        from refute.kernels.convert_triton import fp32_to_bf16_bits_launch

        triton_device_check(x)
        return fp32_to_bf16_bits_launch(x.view(torch.int32)).view(torch.bfloat16)
    h = bits_reference.fp32_to_bf16_bits(x.cpu().numpy()).astype(np.uint16).view(np.int16)
    return torch.from_numpy(h).view(torch.bfloat16).reshape(x.shape).to(x.device)


def bf16_to_fp32(x: torch.Tensor, backend: str = "reference") -> torch.Tensor:
    """Widen a bfloat16 tensor to float32 exactly (NaN payloads kept)."""
    _require(x, torch.bfloat16, "bf16_to_fp32")
    check_backend(backend)
    bits = x.detach().contiguous().view(torch.int16)
    if backend == "triton":
        from refute.kernels.convert_triton import bf16_to_fp32_bits_launch

        triton_device_check(x)
        return bf16_to_fp32_bits_launch(bits).view(torch.float32)
    h = bits.cpu().numpy().astype(np.int32) & 0xFFFF
    f = bits_reference.bf16_bits_to_fp32(h)
    return torch.from_numpy(f).reshape(x.shape).to(x.device)
