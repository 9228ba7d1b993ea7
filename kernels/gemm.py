"""refute's exact GEMM: ``C = op(A) @ op(B) (+ bias)`` with the same bits on every backend.

Each row of op(A) and column of op(B) is scaled by a power of two taken from
its largest magnitude and rounded to an integer image of ``7 * slices`` bits;
the images multiply exactly and the exact integer product is rounded once to
float32 and scaled back (DESIGN.md rule 1; the bit-level definition is in
:mod:`refute.kernels.gemm_reference` and docs/numerics.md). A scale depends
only on its own row or column, so a row's result never depends on the other
rows of the batch, on M, on the tiling or on the backend.
"""

from __future__ import annotations

import math
import weakref

import torch

from refute.kernels import gemm_reference
from refute.kernels.backend import check_backend, triton_device_check

MIN_SLICES = gemm_reference.MIN_SLICES
MAX_SLICES = gemm_reference.MAX_SLICES
MAX_K = gemm_reference.MAX_K
DEFAULT_SLICES = 2


def _check_matrix(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"gemm: {name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype != torch.float32:
        raise TypeError(f"gemm: {name} must be float32, got {x.dtype}")
    if x.dim() < 2:
        raise ValueError(f"gemm: {name} must have at least 2 dimensions (..., rows, cols), got shape {tuple(x.shape)}")
    return x


def _validate(
    a: object, b: object, slices: object, bias: object, trans_a: object, trans_b: object
) -> tuple[torch.Tensor, torch.Tensor, torch.Size]:
    """Check the arguments; return op(A) (..., M, K), op(B) (..., K, N) as views
    and the broadcast batch shape."""
    a = _check_matrix(a, "a")
    b = _check_matrix(b, "b")
    if not isinstance(slices, int) or isinstance(slices, bool):
        raise TypeError(f"gemm: slices must be an int, got {type(slices).__name__}")
    if not MIN_SLICES <= slices <= MAX_SLICES:
        raise ValueError(f"gemm: slices must be in {MIN_SLICES}..{MAX_SLICES}, got {slices}")
    for name, flag in (("trans_a", trans_a), ("trans_b", trans_b)):
        if not isinstance(flag, bool):
            raise TypeError(f"gemm: {name} must be a bool, got {type(flag).__name__}")
    op_a = a.transpose(-1, -2) if trans_a else a
    op_b = b.transpose(-1, -2) if trans_b else b
    k = op_a.shape[-1]
    if op_b.shape[-2] != k:
        raise ValueError(
            f"gemm: inner dimensions differ: op(a) is {tuple(op_a.shape)} and op(b) is {tuple(op_b.shape)}"
        )
    if k > MAX_K:
        raise ValueError(f"gemm: K={k} is too large; the exact integer products are proven for K <= {MAX_K}")
    try:
        # torch.broadcast_shapes costs more than a small GEMM: skip it in the usual cases.
        if op_b.dim() == 2 or op_a.shape[:-2] == op_b.shape[:-2]:
            batch_shape = op_a.shape[:-2]
        else:
            batch_shape = torch.broadcast_shapes(op_a.shape[:-2], op_b.shape[:-2])
    except RuntimeError as err:
        raise ValueError(
            f"gemm: batch dimensions {tuple(op_a.shape[:-2])} and {tuple(op_b.shape[:-2])} do not broadcast"
        ) from err
    devices = {a.device, b.device}
    if bias is not None:
        if not isinstance(bias, torch.Tensor):
            raise TypeError(f"gemm: bias must be a torch.Tensor or None, got {type(bias).__name__}")
        if bias.dtype != torch.float32:
            raise TypeError(f"gemm: bias must be float32, got {bias.dtype}")
        if tuple(bias.shape) != (op_b.shape[-1],):
            raise ValueError(f"gemm: bias must have shape (N,) = ({op_b.shape[-1]},), got {tuple(bias.shape)}")
        devices.add(bias.device)
    if len(devices) > 1:
        raise ValueError(f"gemm: tensors are on different devices: {sorted(str(d) for d in devices)}")
    return op_a, op_b, batch_shape


# Weights take part in every forward pass: their column maxima and images are
# computed once per (tensor, version, layout, slices) and kept as long as the
# tensor lives. Small operands (activations) are imaged afresh each call.
PREPARE_CACHE_MIN_ELEMENTS = 1 << 16
# id(tensor) -> (weak reference, key, images); tensors compare elementwise, so
# they cannot be dictionary keys themselves. A dying tensor drops its entry.
_PREPARED_B: dict[int, tuple[weakref.ref, tuple, gemm_reference.PreparedB]] = {}


def _prepared_b(b: torch.Tensor, op_b: torch.Tensor, trans_b: bool, slices: int) -> gemm_reference.PreparedB:
    """The reference backend's images of op(b), from the cache when ``b`` is an
    unchanged weight-sized CPU tensor seen before."""
    if b.numel() < PREPARE_CACHE_MIN_ELEMENTS or b.device.type != "cpu" or b.requires_grad:
        return gemm_reference.prepare_b(op_b.detach().numpy(), slices)
    # _version counts in-place writes, so a modified weight is imaged again.
    key = (b._version, b.data_ptr(), tuple(b.shape), tuple(b.stride()), trans_b, slices)
    hit = _PREPARED_B.get(id(b))
    if hit is not None and hit[0]() is b and hit[1] == key:
        return hit[2]
    prepared = gemm_reference.prepare_b(op_b.detach().numpy(), slices)
    ident = id(b)
    _PREPARED_B[ident] = (weakref.ref(b, lambda _, ident=ident: _PREPARED_B.pop(ident, None)), key, prepared)
    return prepared


def gemm(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    slices: int = DEFAULT_SLICES,
    bias: torch.Tensor | None = None,
    trans_a: bool = False,
    trans_b: bool = False,
    backend: str = "reference",
) -> torch.Tensor:
    """Exact-product GEMM ``op(a) @ op(b) (+ bias)`` -> float32 (..., M, N).

    ``a`` is float32 (..., M, K) ((..., K, M) with ``trans_a``), ``b`` float32
    (..., K, N) ((..., N, K) with ``trans_b``); leading batch dimensions
    broadcast (a 2-D ``b`` is shared by every matrix of ``a``). ``slices`` (1..4)
    sets the image precision to 7 * slices bits per row/column scale (s=2 keeps
    models at fp32 accuracy, docs/numerics.md). ``bias`` is float32 (N,),
    added with one float32 addition. Every NaN returned is 0x7FC00000; a row or
    column holding inf or NaN makes its whole output row/column NaN.
    """
    check_backend(backend)
    op_a, op_b, batch_shape = _validate(a, b, slices, bias, trans_a, trans_b)
    m, n = op_a.shape[-2], op_b.shape[-1]
    device = op_a.device
    if math.prod(batch_shape) * m * n == 0:
        return torch.empty((*batch_shape, m, n), dtype=torch.float32, device=device)
    if backend == "triton":
        from refute.kernels.gemm_triton import gemm_triton

        triton_device_check(*(t for t in (op_a, op_b, bias) if t is not None))
        return gemm_triton(op_a.detach(), op_b.detach(), slices, None if bias is None else bias.detach())
    out = gemm_reference.gemm_reference(
        op_a.detach().cpu().numpy(),
        _prepared_b(b, op_b, trans_b, slices),
        slices,
        None if bias is None else bias.detach().cpu().numpy(),
    )
    return torch.from_numpy(out).to(device)
