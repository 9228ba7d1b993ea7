"""Triton kernel of :func:`refute.kernels.embedding.embedding`: a row gather.

The table and the output are handled as int32 bit patterns, so a row is copied
bit for bit (no float load, store or conversion can touch a NaN payload).
One program per (id, block of ``BLOCK_D`` columns); ids are checked to lie in
``[0, V)`` by the public API before the launch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from refute.kernels.backend import CompileSpec, launch

DEFAULT_BLOCK_D = 256


@triton.jit(do_not_specialize=["D"])
def _gather_kernel(ids_ptr, table_ptr, out_ptr, D, BLOCK_D: tl.constexpr):
    """out[i, cols] = table[ids[i], cols] on int32 bits."""
    i = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask = cols < D
    row = tl.load(ids_ptr + i)
    bits = tl.load(table_ptr + row * D + cols, mask=mask, other=0)
    tl.store(out_ptr + i * D + cols, bits, mask=mask)


def gather_launch(ids: torch.Tensor, table: torch.Tensor, block_d: int = DEFAULT_BLOCK_D) -> torch.Tensor:
    """Rows ``table[ids]`` for contiguous int64 ``ids`` (N,) (all in range) and a
    contiguous float32 ``table`` (V, D) -> float32 (N, D), bit copies."""
    count, dim = ids.numel(), table.shape[1]
    out = torch.empty((count, dim), dtype=torch.float32, device=table.device)
    if count and dim:
        grid = (count, triton.cdiv(dim, block_d))
        launch(_gather_kernel, grid, ids, table.view(torch.int32), out.view(torch.int32), dim, BLOCK_D=block_d)
    return out


COMPILE_SPECS: list[CompileSpec] = [
    CompileSpec(
        _gather_kernel,
        {"ids_ptr": "*i64", "table_ptr": "*i32", "out_ptr": "*i32", "D": "i32", "BLOCK_D": "constexpr"},
        {"BLOCK_D": DEFAULT_BLOCK_D},
    )
]
