"""Triton implementation of :mod:`refute.kernels.attention` (semantics: :mod:`attention_reference`).

Five launches, none of which sums floats:

1. ``scores = gemm(q, k^T)`` - refute's exact GEMM (Triton backend);
2. :func:`_value_scale_kernel` - per key ``g_k`` and ``V' = ldexp(v, -g_k)``,
   written with the pinning key (all 1.0) that fixes the PV GEMM's column
   exponent at 0;
3. :func:`_attention_probs_kernel` - per query row: the visibility mask from
   ``key_mask`` and positions, ``x = score * scale``, the masked softmax (the
   device functions of :mod:`softmax_triton`), ``G`` and ``P'``;
4. ``C = gemm(P', V')`` - exact GEMM again;
5. :func:`_attention_output_kernel` - ``out = ldexp(C, G)``, written straight
   into the (B, Tq, H * d) layout.

Heads sharing a kv head are stacked as extra query rows (B, Hkv, group * Tq):
GEMM rows are independent, so this is layout only.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from refute.kernels.attention_reference import NO_KEY_EXP, NONFINITE_EXP, PIN_VALUE
from refute.kernels.backend import CompileSpec, launch
from refute.kernels.bits_triton import bits_f32, exponent_of, f32_bits, ldexp
from refute.kernels.gemm import gemm
from refute.kernels.gemm_reference import ABS_MASK, CANONICAL_NAN_BITS
from refute.kernels.reduce_triton import (
    MIN_KEY,
    canonicalize_nan,
    exact_sum_block,
    exact_sum_finish,
    fixed_point_sum,
    key_to_f32,
    sum_exponent,
    sum_scan,
)
from refute.kernels.softmax_triton import masked_max_key, softmax_numerators, softmax_probs

DEFAULT_BLOCK = 1024  # keys per chunk of a score row
DEFAULT_BLOCK_KEYS = 16  # keys per program of the value kernel
DEFAULT_BLOCK_ROWS = 16  # output rows per program

_ABS_MASK: tl.constexpr = tl.constexpr(ABS_MASK)
_NAN_BITS: tl.constexpr = tl.constexpr(CANONICAL_NAN_BITS)
_NONFINITE_EXP: tl.constexpr = tl.constexpr(NONFINITE_EXP)
_NO_KEY_EXP: tl.constexpr = tl.constexpr(NO_KEY_EXP)


# ---------------------------------------------------------------------------
# 2. value exponents and V'


@triton.jit(do_not_specialize=["Tk", "kv_heads"])
def _value_scale_kernel(
    v_ptr,
    vs_ptr,
    g_ptr,
    Tk,
    kv_heads,
    D: tl.constexpr,
    D_P2: tl.constexpr,
    BLOCK_KEYS: tl.constexpr,
):
    """For keys of one (batch, kv head): g[bh, k] = exponent_of(max_d |v|) and
    vs[bh, k, :] = ldexp(v, -g) (0 where g == 128). ``v`` is contiguous
    (B, Tk, kv_heads, D); ``vs`` contiguous (B * kv_heads, Tk + 1, D) (row Tk,
    the pinning key, is not written here); ``g`` (B * kv_heads, Tk).
    Grid: (B * kv_heads, cdiv(Tk, BLOCK_KEYS))."""
    bh = tl.program_id(0).to(tl.int64)
    b = bh // kv_heads
    h = bh % kv_heads
    keys = tl.program_id(1) * BLOCK_KEYS + tl.arange(0, BLOCK_KEYS)
    cols = tl.arange(0, D_P2)
    mask = (keys < Tk)[:, None] & (cols < D)[None, :]
    v = tl.load(v_ptr + ((b * Tk + keys)[:, None] * kv_heads + h) * D + cols[None, :], mask=mask, other=0.0)
    g = exponent_of(bits_f32(tl.max(f32_bits(v) & _ABS_MASK, axis=1)))
    vs = tl.where((g == _NONFINITE_EXP)[:, None], 0.0, ldexp(v, -g[:, None]))
    tl.store(vs_ptr + (bh * (Tk + 1) + keys)[:, None] * D + cols[None, :], vs, mask=mask)
    tl.store(g_ptr + bh * Tk + keys, g, mask=keys < Tk)


def value_scale_launch(
    v: torch.Tensor, kv_heads: int, block_keys: int = DEFAULT_BLOCK_KEYS
) -> tuple[torch.Tensor, torch.Tensor]:
    """(V' with the pinning key (B, kv_heads, Tk + 1, d), g int32 (B, kv_heads, Tk))
    from contiguous float32 ``v`` (B, Tk, kv_heads * d)."""
    b, tk, width = v.shape
    d = width // kv_heads
    vs = torch.empty((b, kv_heads, tk + 1, d), dtype=torch.float32, device=v.device)
    g = torch.empty((b, kv_heads, tk), dtype=torch.int32, device=v.device)
    vs[:, :, tk, :] = float(PIN_VALUE)
    if b * tk:
        grid = (b * kv_heads, triton.cdiv(tk, block_keys))
        d_p2 = triton.next_power_of_2(d)
        launch(_value_scale_kernel, grid, v, vs, g, tk, kv_heads, D=d, D_P2=d_p2, BLOCK_KEYS=block_keys)
    return vs, g


# ---------------------------------------------------------------------------
# 3. masked softmax, G and P'


@triton.jit
def _load_scores(s_row, g_row, mask_row, kpos_row, qpos, scale, offs, Tk, CAUSAL: tl.constexpr):
    """(x = score * scale, g, keep) for the keys ``offs`` of one query row."""
    inside = offs < Tk
    keep = inside & (tl.load(mask_row + offs, mask=inside, other=0) != 0)
    if CAUSAL:
        keep = keep & (tl.load(kpos_row + offs, mask=inside, other=0) <= qpos)
    x = tl.load(s_row + offs, mask=inside, other=0.0) * scale
    g = tl.load(g_row + offs, mask=inside, other=_NO_KEY_EXP)
    return x, g, keep


@triton.jit
def _scaled_probs(p, g, keep, big_g):
    """P' = ldexp(p, g - G); NaN on kept keys when a kept value is non-finite."""
    pp = ldexp(p, g - big_g)
    return tl.where(keep & (big_g == _NONFINITE_EXP), bits_f32(tl.full(p.shape, _NAN_BITS, tl.int32)), pp)


@triton.jit(do_not_specialize=["Tq", "Tk", "rows_per_kv", "kv_heads"])
def _attention_probs_kernel(
    s_ptr,
    g_ptr,
    mask_ptr,
    qpos_ptr,
    kpos_ptr,
    scale_ptr,
    pp_ptr,
    big_g_ptr,
    Tq,
    Tk,
    rows_per_kv,
    kv_heads,
    CAUSAL: tl.constexpr,
    ONE_BLOCK: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """One query row r of the scores (B * kv_heads * rows_per_kv, Tk), rows
    ordered (b, kv head, head in group, t): writes P'[r, :Tk], the pinning
    column P'[r, Tk] = 0 and G[r]. ``mask`` int8 (B, Tk), ``qpos`` (B, Tq) and
    ``kpos`` (B, Tk) int64, ``g`` int32 (B * kv_heads, Tk), scale one float32.
    ONE_BLOCK requires Tk <= BLOCK. Grid: (rows,)."""
    r = tl.program_id(0).to(tl.int64)
    bh = r // rows_per_kv
    b = bh // kv_heads
    qpos = tl.load(qpos_ptr + b * Tq + r % Tq)
    scale = tl.load(scale_ptr)
    s_row = s_ptr + r * Tk
    g_row = g_ptr + bh * Tk
    mask_row = mask_ptr + b * Tk
    kpos_row = kpos_ptr + b * Tk
    pp_row = pp_ptr + r * (Tk + 1)
    if ONE_BLOCK:
        offs = tl.arange(0, BLOCK)
        x, g, keep = _load_scores(s_row, g_row, mask_row, kpos_row, qpos, scale, offs, Tk, CAUSAL)
        m = key_to_f32(masked_max_key(x, keep))
        big_g = tl.max(tl.where(keep, g, _NO_KEY_EXP), axis=0)
        e = softmax_numerators(x, keep, m)
        s = exact_sum_block(e)
        pp = _scaled_probs(softmax_probs(e, keep, s), g, keep, big_g)
        tl.store(pp_row + offs, pp, mask=offs < Tk)
    else:
        best = tl.full([], MIN_KEY, tl.int32)
        big_g = tl.full([], _NO_KEY_EXP, tl.int32)
        for start in range(0, Tk, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            x, g, keep = _load_scores(s_row, g_row, mask_row, kpos_row, qpos, scale, offs, Tk, CAUSAL)
            best = tl.maximum(best, masked_max_key(x, keep))
            big_g = tl.maximum(big_g, tl.max(tl.where(keep, g, _NO_KEY_EXP), axis=0))
        m = key_to_f32(best)
        max_abs = tl.full([], 0, tl.int32)
        has_nan = tl.full([], 0, tl.int32)
        has_pinf = tl.full([], 0, tl.int32)
        has_ninf = tl.full([], 0, tl.int32)
        for start in range(0, Tk, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            x, g, keep = _load_scores(s_row, g_row, mask_row, kpos_row, qpos, scale, offs, Tk, CAUSAL)
            c_max, c_nan, c_pinf, c_ninf = sum_scan(softmax_numerators(x, keep, m))
            max_abs = tl.maximum(max_abs, c_max)
            has_nan = tl.maximum(has_nan, c_nan)
            has_pinf = tl.maximum(has_pinf, c_pinf)
            has_ninf = tl.maximum(has_ninf, c_ninf)
        e_scale = sum_exponent(max_abs)
        total = tl.full([], 0, tl.int64)
        for start in range(0, Tk, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            x, g, keep = _load_scores(s_row, g_row, mask_row, kpos_row, qpos, scale, offs, Tk, CAUSAL)
            total += fixed_point_sum(softmax_numerators(x, keep, m), e_scale)
        s = exact_sum_finish(total, e_scale, has_nan, has_pinf, has_ninf)
        for start in range(0, Tk, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            x, g, keep = _load_scores(s_row, g_row, mask_row, kpos_row, qpos, scale, offs, Tk, CAUSAL)
            pp = _scaled_probs(softmax_probs(softmax_numerators(x, keep, m), keep, s), g, keep, big_g)
            tl.store(pp_row + offs, pp, mask=offs < Tk)
    tl.store(pp_row + Tk, 0.0)
    tl.store(big_g_ptr + r, big_g)


def probs_launch(
    scores: torch.Tensor,
    g: torch.Tensor,
    key_mask: torch.Tensor,
    q_positions: torch.Tensor,
    k_positions: torch.Tensor,
    scale: float,
    causal: bool,
    block: int = DEFAULT_BLOCK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(P' with the pinning column (B, Hkv, rows, Tk + 1), G int32 (B, Hkv, rows))
    from contiguous scores (B, Hkv, rows, Tk), g (B, Hkv, Tk), int8 key_mask
    (B, Tk), int64 positions (B, Tq) and (B, Tk); ``scale`` rounds to float32."""
    b, kv_heads, rows, tk = scores.shape
    tq = q_positions.shape[1]
    pp = torch.empty((b, kv_heads, rows, tk + 1), dtype=torch.float32, device=scores.device)
    big_g = torch.empty((b, kv_heads, rows), dtype=torch.int32, device=scores.device)
    if pp.numel() == 0:
        return pp, big_g
    one_block = tk <= block
    launch(
        _attention_probs_kernel,
        (b * kv_heads * rows,),
        scores,
        g,
        key_mask,
        q_positions,
        k_positions,
        torch.tensor([scale], dtype=torch.float32, device=scores.device),
        pp,
        big_g,
        tq,
        tk,
        rows,
        kv_heads,
        CAUSAL=causal,
        ONE_BLOCK=one_block,
        BLOCK=triton.next_power_of_2(tk) if one_block else block,
    )
    return pp, big_g


# ---------------------------------------------------------------------------
# 5. out = ldexp(C, G) in the (B, Tq, H * d) layout


@triton.jit(do_not_specialize=["n_rows", "Tq", "heads"])
def _attention_output_kernel(
    c_ptr,
    big_g_ptr,
    out_ptr,
    n_rows,
    Tq,
    heads,
    D: tl.constexpr,
    D_P2: tl.constexpr,
    BLOCK_ROWS: tl.constexpr,
):
    """out[b, t, h * D + j] = ldexp(C[r, j], G[r]) (NaN canonical) for rows
    r = (b * heads + h) * Tq + t of the contiguous C (n_rows, D).
    Grid: (cdiv(n_rows, BLOCK_ROWS),)."""
    rows = tl.program_id(0).to(tl.int64) * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    cols = tl.arange(0, D_P2)
    in_rows = rows < n_rows
    mask = in_rows[:, None] & (cols < D)[None, :]
    c = tl.load(c_ptr + rows[:, None] * D + cols[None, :], mask=mask, other=0.0)
    big_g = tl.load(big_g_ptr + rows, mask=in_rows, other=0)
    y = canonicalize_nan(ldexp(c, big_g[:, None]))
    t = rows % Tq
    bh = rows // Tq
    dest = ((bh // heads) * Tq + t) * heads + bh % heads
    tl.store(out_ptr + dest[:, None] * D + cols[None, :], y, mask=mask)


def output_launch(c: torch.Tensor, big_g: torch.Tensor, block_rows: int = DEFAULT_BLOCK_ROWS) -> torch.Tensor:
    """(B, Tq, H * d) output from contiguous C (B, H, Tq, d) and G (B, H, Tq)."""
    b, heads, tq, d = c.shape
    out = torch.empty((b, tq, heads * d), dtype=torch.float32, device=c.device)
    n_rows = b * heads * tq
    if out.numel():
        launch(
            _attention_output_kernel,
            (triton.cdiv(n_rows, block_rows),),
            c,
            big_g,
            out,
            n_rows,
            tq,
            heads,
            D=d,
            D_P2=triton.next_power_of_2(d),
            BLOCK_ROWS=block_rows,
        )
    return out


def attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor,
    q_positions: torch.Tensor,
    k_positions: torch.Tensor,
    *,
    num_heads: int,
    num_kv_heads: int,
    scale: float,
    causal: bool,
    slices: int,
    block: int = DEFAULT_BLOCK,
) -> torch.Tensor:
    """Attention on float32 q (B, Tq, H * d), k and v (B, Tk, Hkv * d) with Tk >= 1;
    inputs validated by :func:`refute.kernels.attention.attention`. ``block``
    (keys per chunk of a score row) never changes the bits."""
    b, tq, width = q.shape
    tk = k.shape[1]
    d = width // num_heads
    group = num_heads // num_kv_heads
    rows = group * tq
    qg = q.reshape(b, tq, num_heads, d).permute(0, 2, 1, 3).reshape(b, num_kv_heads, rows, d)
    k4 = k.reshape(b, tk, num_kv_heads, d).permute(0, 2, 1, 3)
    scores = gemm(qg, k4, slices=slices, trans_b=True, backend="triton").contiguous()
    vs, g = value_scale_launch(v.contiguous(), num_kv_heads)
    pp, big_g = probs_launch(
        scores,
        g,
        key_mask.to(torch.int8).contiguous(),
        q_positions.contiguous(),
        k_positions.contiguous(),
        scale,
        causal,
        block,
    )
    c = gemm(pp, vs, slices=slices, backend="triton").contiguous()
    return output_launch(c.reshape(b, num_heads, tq, d), big_g.reshape(b, num_heads, tq))


COMPILE_SPECS: list[CompileSpec] = [
    *[
        CompileSpec(
            _value_scale_kernel,
            {
                "v_ptr": "*fp32",
                "vs_ptr": "*fp32",
                "g_ptr": "*i32",
                "Tk": "i32",
                "kv_heads": "i32",
                "D": "constexpr",
                "D_P2": "constexpr",
                "BLOCK_KEYS": "constexpr",
            },
            {"D": d, "D_P2": triton.next_power_of_2(d), "BLOCK_KEYS": DEFAULT_BLOCK_KEYS},
        )
        for d in (64, 80)
    ],
    *[
        CompileSpec(
            _attention_probs_kernel,
            {
                "s_ptr": "*fp32",
                "g_ptr": "*i32",
                "mask_ptr": "*i8",
                "qpos_ptr": "*i64",
                "kpos_ptr": "*i64",
                "scale_ptr": "*fp32",
                "pp_ptr": "*fp32",
                "big_g_ptr": "*i32",
                "Tq": "i32",
                "Tk": "i32",
                "rows_per_kv": "i32",
                "kv_heads": "i32",
                "CAUSAL": "constexpr",
                "ONE_BLOCK": "constexpr",
                "BLOCK": "constexpr",
            },
            {"CAUSAL": causal, "ONE_BLOCK": one_block, "BLOCK": DEFAULT_BLOCK},
        )
        for causal in (False, True)
        for one_block in (False, True)
    ],
    *[
        CompileSpec(
            _attention_output_kernel,
            {
                "c_ptr": "*fp32",
                "big_g_ptr": "*i32",
                "out_ptr": "*fp32",
                "n_rows": "i32",
                "Tq": "i32",
                "heads": "i32",
                "D": "constexpr",
                "D_P2": "constexpr",
                "BLOCK_ROWS": "constexpr",
            },
            {"D": d, "D_P2": triton.next_power_of_2(d), "BLOCK_ROWS": DEFAULT_BLOCK_ROWS},
        )
        for d in (64, 80)
    ],
]
