"""refute's counter-based random numbers: Philox4x32-10 and sampling uniforms.

A counter-based generator is a pure function of (counter, key): any element of
any stream is computed directly, in any order, on any device, with no state to
carry or split. refute uses Philox4x32-10 (Salmon et al., SC 2011; identical
to the Random123 library, so its published known-answer vectors apply). See
docs/numerics.md for the exact layout.

Representation of 32-bit words: torch has no uint32 arithmetic on every device,
so words are int64 tensors holding values in [0, 2**32). ``torch.uint32``
inputs are accepted and widened. Outputs are always int64 in [0, 2**32).

Seeds are 64-bit: a Python int in [0, 2**64), or in a tensor the int64 bit
pattern of the uint64 seed (a negative int64 s stands for s + 2**64). The key
is (seed mod 2**32, seed >> 32).

* :func:`philox4x32` - the raw generator.
* :func:`uniform` - the uniforms of one sampling draw: vocabulary index i of
  the draw of token ``position`` of sequence ``sequence`` under ``seed`` gets
  word i % 4 of Philox at counter (i // 4, position, sequence, SAMPLING_STREAM),
  mapped to ``((word >> 9) + 0.5) * 2**-23``: exactly representable, in
  [2**-24, 1 - 2**-24], never 0 or 1.
* :func:`uniforms` - the same for a batch of (seed, sequence, position) rows.
* :func:`gumbel_scores` - temperature-scaled logits and their Gumbel-perturbed
  scores, the float half of :mod:`refute.kernels.sampling`.
"""

from __future__ import annotations

import numpy as np
import torch

from refute.kernels import philox_reference
from refute.kernels.backend import check_backend, triton_device_check

SAMPLING_STREAM = philox_reference.SAMPLING_STREAM
WORD_LIMIT = 1 << 32
SEED_LIMIT = 1 << 64
MAX_DRAW_INDEX = philox_reference.MAX_DRAW_INDEX


def _word_tensor(x: torch.Tensor, name: str, width: int) -> torch.Tensor:
    """``x`` [..., width] as int64 words, checked to lie in [0, 2**32)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dtype == torch.uint32:
        x = x.to(torch.int64)
    if x.dtype != torch.int64:
        raise TypeError(f"{name}: expected int64 words in [0, 2**32) or torch.uint32, got {x.dtype}")
    if x.dim() < 1 or x.shape[-1] != width:
        raise ValueError(f"{name}: expected shape [..., {width}], got {tuple(x.shape)}")
    if x.numel() and (int(x.min()) < 0 or int(x.max()) >= WORD_LIMIT):
        raise ValueError(f"{name}: words must lie in [0, 2**32)")
    return x


def philox4x32(counter: torch.Tensor, key: torch.Tensor, backend: str = "reference") -> torch.Tensor:
    """Philox4x32-10 of ``counter`` [..., 4] under ``key`` [..., 2] (leading
    dims broadcast) -> int64 words [..., 4] in [0, 2**32), on the inputs' device."""
    counter = _word_tensor(counter, "counter", 4)
    key = _word_tensor(key, "key", 2)
    check_backend(backend)
    if counter.device != key.device:
        raise ValueError(f"counter and key are on different devices: {counter.device} and {key.device}")
    shape = torch.broadcast_shapes(counter.shape[:-1], key.shape[:-1])
    counter = counter.expand(*shape, 4).reshape(-1, 4).contiguous()
    key = key.expand(*shape, 2).reshape(-1, 2).contiguous()
    if backend == "triton":
        from refute.kernels.philox_triton import philox_launch

        triton_device_check(counter, key)
        return philox_launch(counter, key).reshape(*shape, 4)
    words = philox_reference.philox4x32(counter.cpu().numpy(), key.cpu().numpy()).astype(np.int64)
    return torch.from_numpy(words).reshape(*shape, 4).to(counter.device)


def seed_tensor(seeds: int | torch.Tensor, rows: int, device: torch.device | str) -> torch.Tensor:
    """int64 [rows] seed bit patterns from a Python int in [0, 2**64) (shared
    by every row) or an int64 tensor [rows] of bit patterns."""
    if isinstance(seeds, torch.Tensor):
        if seeds.dtype != torch.int64 or seeds.shape != (rows,):
            raise ValueError(f"seeds: expected an int64 tensor of shape ({rows},), got {seeds.dtype} {tuple(seeds.shape)}")
        return seeds.to(device)
    if isinstance(seeds, bool) or not isinstance(seeds, int):
        raise TypeError(f"seed: expected an int, got {type(seeds).__name__}")
    if not 0 <= seeds < SEED_LIMIT:
        raise ValueError(f"seed {seeds} is outside [0, 2**64)")
    pattern = seeds - SEED_LIMIT if seeds >= SEED_LIMIT // 2 else seeds
    return torch.full((rows,), pattern, dtype=torch.int64, device=device)


def word_tensor(values: int | torch.Tensor, name: str, rows: int, device: torch.device | str) -> torch.Tensor:
    """int64 [rows] of 32-bit counter words (sequence ids or positions) from
    an int (shared by every row) or an integer tensor [rows]."""
    if isinstance(values, torch.Tensor):
        if values.dtype not in (torch.int32, torch.int64) or values.shape != (rows,):
            raise ValueError(f"{name}: expected an integer tensor of shape ({rows},), got {values.dtype} {tuple(values.shape)}")
        t = values.to(device=device, dtype=torch.int64)
    elif isinstance(values, bool) or not isinstance(values, int):
        raise TypeError(f"{name}: expected an int, got {type(values).__name__}")
    else:
        t = torch.full((rows,), values, dtype=torch.int64, device=device)
    if rows and (int(t.min()) < 0 or int(t.max()) >= WORD_LIMIT):
        raise ValueError(f"{name}: values must lie in [0, 2**32)")
    return t


def _check_n(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int):
        raise TypeError(f"n: expected an int, got {type(n).__name__}")
    if not 0 <= n <= MAX_DRAW_INDEX:
        raise ValueError(f"n = {n} is outside [0, {MAX_DRAW_INDEX}]")


def uniforms(
    seeds: int | torch.Tensor,
    sequences: torch.Tensor,
    positions: torch.Tensor,
    n: int,
    backend: str = "reference",
) -> torch.Tensor:
    """float32 [B, n]: row b holds the sampling uniforms of vocabulary indices
    0..n-1 for (seeds[b], sequences[b], positions[b]); on ``sequences``' device."""
    _check_n(n)
    check_backend(backend)
    if not isinstance(sequences, torch.Tensor) or sequences.dim() != 1:
        raise ValueError("sequences: expected a 1-D integer tensor")
    rows, device = sequences.shape[0], sequences.device
    seeds_t = seed_tensor(seeds, rows, device)
    seq_t = word_tensor(sequences, "sequences", rows, device)
    pos_t = word_tensor(positions, "positions", rows, device)
    if backend == "triton":
        from refute.kernels.philox_triton import uniforms_launch

        triton_device_check(seeds_t, seq_t, pos_t)
        return uniforms_launch(seeds_t, seq_t, pos_t, n)
    u = philox_reference.draw_uniforms(seeds_t.cpu().numpy(), seq_t.cpu().numpy(), pos_t.cpu().numpy(), n)
    return torch.from_numpy(u).to(device)


def uniform(
    seed: int, sequence: int, position: int, n: int, backend: str = "reference", device: torch.device | str = "cpu"
) -> torch.Tensor:
    """float32 [n]: one uniform per vocabulary index for the draw of token
    ``position`` of sequence ``sequence`` under ``seed``."""
    seq = word_tensor(sequence, "sequence", 1, device)
    return uniforms(seed, seq, word_tensor(position, "position", 1, device), n, backend)[0]


def gumbel_scores(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    seeds: torch.Tensor,
    sequences: torch.Tensor,
    positions: torch.Tensor,
    backend: str = "reference",
) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, score), float32 [B, V]: ``z = div(logits, temperature[:, None])``
    and ``score = z + (-log(-log(u)))`` with refute's log and the uniforms of
    :func:`uniforms`. ``temperature`` is float32 [B]; ``seeds`` int64 [B] bit
    patterns; ``sequences``, ``positions`` int64 [B] in [0, 2**32). Every NaN
    in z or score is the canonical NaN 0x7FC00000."""
    if not isinstance(logits, torch.Tensor) or logits.dtype != torch.float32 or logits.dim() != 2:
        raise TypeError("logits: expected a 2-D float32 tensor [B, V]")
    rows, n = logits.shape
    _check_n(n)
    check_backend(backend)
    if not isinstance(temperature, torch.Tensor) or temperature.dtype != torch.float32 or temperature.shape != (rows,):
        raise TypeError(f"temperature: expected a float32 tensor of shape ({rows},)")
    device = logits.device
    seeds_t = seed_tensor(seeds, rows, device)
    seq_t = word_tensor(sequences, "sequences", rows, device)
    pos_t = word_tensor(positions, "positions", rows, device)
    if backend == "triton":
        from refute.kernels.philox_triton import gumbel_scores_launch

        triton_device_check(logits, temperature, seeds_t, seq_t, pos_t)
        return gumbel_scores_launch(logits.contiguous(), temperature.contiguous(), seeds_t, seq_t, pos_t)
    z, score = philox_reference.gumbel_scores(
        logits.detach().cpu().numpy(),
        temperature.detach().cpu().numpy(),
        seeds_t.cpu().numpy(),
        seq_t.cpu().numpy(),
        pos_t.cpu().numpy(),
    )
    return torch.from_numpy(z).to(device), torch.from_numpy(score).to(device)
