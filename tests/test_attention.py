"""Grouped-query attention with a KV cache (kernels/attention.py).

* the Triton interpreter equals the numpy reference bit for bit;
* the PV product is the exact GEMM with V's column exponent fixed at 0
  (checked against gemm_reference's building blocks directly);
* invariances: tile size (I4), the rest of the batch and padding (I2),
  prefill versus token-by-token decoding with a growing KV cache (I3), alone
  and after rotary embeddings; GQA equals repeating the kv heads;
* special values: non-finite inputs poison only the queries that see them;
* accuracy against float64 scaled_dot_product_attention (tolerances only there).

The interpreter is slow (about 40 ms per query row and head), so the Triton
checks use few, small examples; the properties of the definition itself are
checked on the reference with many.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import refute.kernels  # noqa: F401  (chooses the interpreter before any kernel below is defined)
from refute.kernels import attention_reference, attention_triton
from refute.kernels.attention import attention
from refute.kernels.bits_reference import exponent_of, ldexp
from refute.kernels.gemm_reference import (
    gemm_reference,
    images,
    max_abs_bits,
    product_shift,
    products_f32,
    scale_products,
)
from refute.kernels.rotary import rotary
from refute.kernels.softmax_reference import canonicalize_nan, softmax
from test_bits import F32_SPECIAL_BITS, f32_from_bits

# The interpreter evaluates kernels with numpy, which warns on overflow and NaN.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

CANONICAL_NAN = 0x7FC00000
VALUE_KINDS = ("gaussian", "gaussian", "wide", "specials", "zero_rows", "peaked")
MASK_KINDS = ("all", "random", "left_pad", "right_pad", "none_for_one")
ONE_BITS = 0x3F800000  # bits of 1.0: the max |bits| that gives exponent 0

# ---------------------------------------------------------------------------
# Strategies.
# ---------------------------------------------------------------------------


def make_values(kind: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """float32 q, k or v (B, T, heads * d) of a given kind."""
    x = rng.standard_normal(shape).astype(np.float32)
    if kind == "wide":
        # Each token row scaled by its own power of two over 80 binades.
        x = (x * np.exp2(rng.integers(-40, 41, shape[:-1] + (1,)))).astype(np.float32)
    elif kind == "specials":
        flat = x.reshape(-1)
        where = rng.random(flat.size) < 0.05
        flat[where] = f32_from_bits(rng.choice(np.array(F32_SPECIAL_BITS, dtype=np.uint64), int(where.sum())))
    elif kind == "zero_rows":
        rows = rng.random(shape[:-1]) < 0.4
        x[rows] = f32_from_bits(rng.integers(0, 4, (int(rows.sum()), shape[-1]), dtype=np.uint64))  # 0 and subnormal
    elif kind == "peaked":
        x = (x * np.float32(8.0)).astype(np.float32)  # large logits: exp underflows to 0
    return x


@st.composite
def attention_cases(
    draw,
    max_b: int = 2,
    max_tq: int = 3,
    max_tk: int = 6,
    max_kv_heads: int = 2,
    max_group: int = 2,
    head_dims: tuple[int, ...] = (1, 3, 8, 16),
) -> dict:
    """Keyword arguments of one attention call (torch tensors)."""
    b = draw(st.integers(1, max_b))
    kv_heads = draw(st.integers(1, max_kv_heads))
    heads = kv_heads * draw(st.integers(1, max_group))
    d = draw(st.sampled_from(head_dims))
    tk = draw(st.integers(1, max_tk))
    mode = draw(st.sampled_from(["prefill", "decode", "cross"]))
    tq = tk if mode == "prefill" else draw(st.integers(1, min(max_tq, tk) if mode == "decode" else max_tq))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    q = make_values(draw(st.sampled_from(VALUE_KINDS)), (b, tq, heads * d), rng)
    k = make_values(draw(st.sampled_from(VALUE_KINDS)), (b, tk, kv_heads * d), rng)
    v = make_values(draw(st.sampled_from(VALUE_KINDS)), (b, tk, kv_heads * d), rng)
    mask_kind = draw(st.sampled_from(MASK_KINDS))
    key_mask = np.ones((b, tk), dtype=bool)
    if mask_kind == "random":
        key_mask = rng.random((b, tk)) < 0.7
    elif mask_kind == "none_for_one":
        key_mask[int(rng.integers(0, b))] = False
    elif mask_kind != "all":
        for i in range(b):
            pad = int(rng.integers(0, tk))
            key_mask[i, :pad] = key_mask[i, :pad] & (mask_kind != "left_pad")
            key_mask[i, tk - pad :] = key_mask[i, tk - pad :] & (mask_kind != "right_pad" or pad == 0)
    if mode == "cross":
        k_positions = rng.integers(0, 10, (b, tk))
        q_positions = rng.integers(0, 10, (b, tq))
    else:
        k_positions = np.broadcast_to(np.arange(tk), (b, tk)) + rng.integers(0, 3, (b, 1))
        q_positions = k_positions[:, tk - tq :]
    scale = draw(st.sampled_from([1.0 / math.sqrt(d), 0.125, 1.0, 0.0, 3.0e38]) | st.floats(-4.0, 4.0))
    return {
        "q": torch.from_numpy(q),
        "k": torch.from_numpy(k),
        "v": torch.from_numpy(v),
        "key_mask": torch.from_numpy(key_mask),
        "q_positions": torch.from_numpy(np.ascontiguousarray(q_positions, dtype=np.int64)),
        "k_positions": torch.from_numpy(np.ascontiguousarray(k_positions, dtype=np.int64)),
        "num_heads": heads,
        "num_kv_heads": kv_heads,
        "scale": scale,
        "causal": mode != "cross" or draw(st.booleans()),
        "slices": draw(st.sampled_from([2, 2, 1, 3, 4])),
    }


def assert_same_bits(got: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    g, e = got.detach().numpy(), expected.detach().numpy()
    assert g.shape == e.shape and g.dtype == e.dtype == np.float32, (what, g.shape, e.shape)
    bad = np.argwhere(g.view(np.int32) != e.view(np.int32))
    if bad.size:
        i = tuple(bad[0])
        raise AssertionError(f"{what}: {len(bad)} differ, first at {i}: {g[i]!r} vs {e[i]!r}")


def sub_batch(case: dict, rows: slice, q_cols: slice, k_cols: slice) -> dict:
    """The call restricted to some sequences, queries and keys."""
    out = dict(case)
    for name in ("q", "q_positions"):
        out[name] = case[name][rows, q_cols].contiguous()
    for name in ("k", "v", "key_mask", "k_positions"):
        out[name] = case[name][rows, k_cols].contiguous()
    return out


# ---------------------------------------------------------------------------
# Interpreter == reference, bit for bit; tile sizes.
# ---------------------------------------------------------------------------


@settings(max_examples=20)
@given(attention_cases())
def test_interpreter_matches_reference(case):
    assert_same_bits(attention(**case, backend="triton"), attention(**case), "triton vs reference")


@pytest.mark.parametrize("block", [4, 8])
def test_key_chunk_size_does_not_change_bits(block):
    # Two decode queries over 19 cached keys (with padding garbage): chunks of
    # 4 or 8 keys take the four-pass path of the probabilities kernel.
    case = padded_batch(np.random.default_rng(block), [19, 12], 2, 1, 4, left=True)
    case = sub_batch(case, slice(None), slice(17, 19), slice(None))
    args = {k: case[k] for k in ("num_heads", "num_kv_heads", "scale", "causal")}
    tensors = [case[k] for k in ("q", "k", "v", "key_mask", "q_positions", "k_positions")]
    chunked = attention_triton.attention_triton(*tensors, slices=2, block=block, **args)
    assert_same_bits(chunked, attention(**case), f"block={block} vs reference")


def test_value_and_output_blocks_do_not_change_bits():
    rng = np.random.default_rng(3)
    v = torch.from_numpy(make_values("wide", (2, 9, 2 * 5), rng))
    vs, g = attention_triton.value_scale_launch(v, 2)
    for block_keys in (1, 4):
        vs_b, g_b = attention_triton.value_scale_launch(v, 2, block_keys)
        assert_same_bits(vs_b, vs, f"V' block_keys={block_keys}")
        assert torch.equal(g_b, g)
    c = torch.from_numpy(make_values("specials", (2, 3, 7, 5), rng))
    big_g = torch.from_numpy(rng.integers(-127, 129, (2, 3, 7)).astype(np.int32))
    out = attention_triton.output_launch(c, big_g)
    for block_rows in (4, 64):
        assert_same_bits(attention_triton.output_launch(c, big_g, block_rows), out, f"block_rows={block_rows}")


# ---------------------------------------------------------------------------
# The definition: P'V' is the exact GEMM with V's column exponent fixed at 0.
# ---------------------------------------------------------------------------


def fixed_exponent_gemm(a: np.ndarray, b: np.ndarray, slices: int) -> np.ndarray:
    """gemm_reference's steps with every column exponent of B set to 0
    (rows of A with inf/NaN give NaN, as in the GEMM)."""
    amax = max_abs_bits(a, axis=-1)
    fixed = np.full(b.shape[:-2] + b.shape[-1:], ONE_BITS, dtype=np.int32)
    p32 = products_f32(images(a, amax, -1, slices), images(b, fixed, -2, slices), slices)
    e = exponent_of(amax.view(np.float32))[..., :, None]
    c = scale_products(p32, (e + product_shift(slices)).astype(np.int32))
    return np.where((amax >= 0x7F800000)[..., :, None], np.float32(np.nan), c)


@settings(max_examples=60)
@given(attention_cases(max_tq=4, max_tk=8))
def test_pv_product_uses_column_exponent_zero(case):
    # The reference pins V's column exponents with an appended all-ones key;
    # here the same program is composed from gemm_reference's steps with the
    # column exponent set to 0 directly.
    b, tq, _ = case["q"].shape
    tk = case["k"].shape[1]
    h, hkv = case["num_heads"], case["num_kv_heads"]
    d = case["q"].shape[-1] // h
    rows = (h // hkv) * tq

    def heads_first(x: torch.Tensor, n: int) -> np.ndarray:
        return x.reshape(x.shape[0], x.shape[1], n, d).permute(0, 2, 1, 3).contiguous().numpy()

    q, k, v = heads_first(case["q"], h), heads_first(case["k"], hkv), heads_first(case["v"], hkv)
    keep = attention_reference.visible_keys(
        case["key_mask"].numpy(), case["q_positions"].numpy(), case["k_positions"].numpy(), case["causal"]
    )
    keep = np.broadcast_to(np.tile(keep[:, None], (1, 1, h // hkv, 1)), (b, hkv, rows, tk))
    with np.errstate(all="ignore"):
        scores = gemm_reference(q.reshape(b, hkv, rows, d), np.swapaxes(k, -1, -2), case["slices"])
        scores = scores * np.float32(case["scale"])
        p = softmax(scores.reshape(-1, tk), keep.reshape(-1, tk)).reshape(scores.shape)
        g = attention_reference.value_exponents(v)  # (B, Hkv, Tk)
        big_g = np.where(keep, g[:, :, None, :], -127).max(axis=-1)
        pp = ldexp(p, g[:, :, None, :] - big_g[..., None])
        pp = np.where(keep & (big_g == 128)[..., None], np.float32(np.nan), pp)
        vs = np.where((g == 128)[..., None], np.float32(0.0), ldexp(v, -g[..., None]))
        c = fixed_exponent_gemm(pp, vs, case["slices"])
        expected = canonicalize_nan(ldexp(c, big_g[..., None]))
    got = heads_first(attention(**case), h).reshape(b, hkv, rows, d)
    assert_same_bits(torch.from_numpy(got), torch.from_numpy(expected), "pinned key vs fixed column exponent")


# ---------------------------------------------------------------------------
# I2: the rest of the batch and padding never matter.
# ---------------------------------------------------------------------------


def padded_batch(
    rng: np.random.Generator, lengths: list[int], heads: int, kv_heads: int, d: int, left: bool, garbage: bool = True
) -> dict:
    """A causal prefill batch of standard normal sequences of the given lengths
    padded to the longest, with special values (NaN, inf, ...) or zeros in the
    padding."""
    b, t = len(lengths), max(lengths)
    q = rng.standard_normal((b, t, heads * d)).astype(np.float32)
    k = rng.standard_normal((b, t, kv_heads * d)).astype(np.float32)
    v = rng.standard_normal((b, t, kv_heads * d)).astype(np.float32)
    key_mask = np.zeros((b, t), dtype=bool)
    positions = np.zeros((b, t), dtype=np.int64)
    for i, n in enumerate(lengths):
        cols = slice(t - n, t) if left else slice(0, n)
        pad = slice(0, t - n) if left else slice(n, t)
        key_mask[i, cols] = True
        positions[i, cols] = np.arange(n)
        for x in (q, k, v):
            specials = f32_from_bits(rng.choice(np.array(F32_SPECIAL_BITS, dtype=np.uint64), x[i, pad].shape))
            x[i, pad] = specials if garbage else 0.0
    return {
        "q": torch.from_numpy(q),
        "k": torch.from_numpy(k),
        "v": torch.from_numpy(v),
        "key_mask": torch.from_numpy(key_mask),
        "q_positions": torch.from_numpy(positions),
        "k_positions": torch.from_numpy(positions.copy()),
        "num_heads": heads,
        "num_kv_heads": kv_heads,
        "scale": 1.0 / math.sqrt(d),
        "causal": True,
    }


def check_batch_invariance(case: dict, lengths: list[int], left: bool, backend: str) -> None:
    whole = attention(**case, backend=backend)
    t = max(lengths)
    for i, n in enumerate(lengths):
        cols = slice(t - n, t) if left else slice(0, n)
        alone = attention(**sub_batch(case, slice(i, i + 1), cols, cols), backend=backend)
        assert_same_bits(alone[0], whole[i, cols], f"sequence {i} (length {n}) alone vs padded in the batch")


@settings(max_examples=40)
@given(
    st.lists(st.integers(1, 7), min_size=1, max_size=3),
    st.booleans(),
    st.sampled_from([(2, 1), (2, 2), (3, 1)]),
    st.integers(0, 2**32 - 1),
)
def test_batch_and_padding_invariance_reference(lengths, left, heads, seed):
    case = padded_batch(np.random.default_rng(seed), lengths, heads[0], heads[1], 8, left)
    check_batch_invariance(case, lengths, left, "reference")


def test_batch_and_padding_invariance_triton():
    case = padded_batch(np.random.default_rng(5), [3, 1, 2], 2, 1, 4, left=True)
    check_batch_invariance(case, [3, 1, 2], True, "triton")


# ---------------------------------------------------------------------------
# I3: prefill == token-by-token decoding with a growing KV cache.
# ---------------------------------------------------------------------------


def decode_steps(case: dict, first: int, backend: str, rotary_theta: float | None = None) -> torch.Tensor:
    """Outputs of a prefill of the first ``first`` tokens followed by one-token
    decode steps, each attending to the KV cache of every token so far. With
    ``rotary_theta``, q and k are rotated as they arrive (the cache keeps
    rotated keys)."""
    t = case["q"].shape[1]
    d = case["q"].shape[-1] // case["num_heads"]

    def rot(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return x if rotary_theta is None else rotary(x, pos, head_dim=d, theta=rotary_theta, backend=backend)

    outs, k_cache, v_cache = [], [], []
    bounds = [0, first] + list(range(first + 1, t + 1)) if first else list(range(t + 1))
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        step = sub_batch(case, slice(None), slice(lo, hi), slice(lo, hi))
        k_cache.append(rot(step["k"], step["k_positions"]))
        v_cache.append(step["v"])
        step["q"] = rot(step["q"], step["q_positions"])
        step["k"] = torch.cat(k_cache, dim=1)
        step["v"] = torch.cat(v_cache, dim=1)
        step["key_mask"] = case["key_mask"][:, :hi]
        step["k_positions"] = case["k_positions"][:, :hi]
        outs.append(attention(**step, backend=backend))
    return torch.cat(outs, dim=1)


def prefill(case: dict, backend: str, rotary_theta: float | None = None) -> torch.Tensor:
    if rotary_theta is None:
        return attention(**case, backend=backend)
    d = case["q"].shape[-1] // case["num_heads"]
    rotated = dict(case)
    rotated["q"] = rotary(case["q"], case["q_positions"], head_dim=d, theta=rotary_theta, backend=backend)
    rotated["k"] = rotary(case["k"], case["k_positions"], head_dim=d, theta=rotary_theta, backend=backend)
    return attention(**rotated, backend=backend)


@st.composite
def prefill_cases(draw, max_b: int = 2, max_t: int = 7) -> dict:
    # Even head dimensions: rotary pairs the two halves.
    case = draw(attention_cases(max_b=max_b, max_tk=max_t, head_dims=(2, 8, 16)))
    t = case["k"].shape[1]
    b = case["q"].shape[0]
    # A causal self-attention call: the queries are the keys' tokens, which
    # arrive in the order of their positions.
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    case["q"] = torch.from_numpy(make_values(draw(st.sampled_from(VALUE_KINDS)), (b, t, case["q"].shape[-1]), rng))
    case["k_positions"] = torch.arange(t).repeat(b, 1) + torch.from_numpy(rng.integers(0, 3, (b, 1)))
    case["q_positions"] = case["k_positions"].clone()
    case["causal"] = True
    return case


@settings(max_examples=60)
@given(prefill_cases(), st.data())
def test_prefill_equals_decode_reference(case, data):
    t = case["k"].shape[1]
    first = data.draw(st.integers(0, t - 1))
    assert_same_bits(decode_steps(case, first, "reference"), prefill(case, "reference"), f"prefill {first} then decode")


@settings(max_examples=40)
@given(prefill_cases(), st.data(), st.sampled_from([10000.0, 100000.0]))
def test_prefill_equals_decode_with_rotary_reference(case, data, theta):
    t = case["k"].shape[1]
    first = data.draw(st.integers(0, t - 1))
    got = decode_steps(case, first, "reference", rotary_theta=theta)
    assert_same_bits(got, prefill(case, "reference", rotary_theta=theta), f"rotary: prefill {first} then decode")


@settings(max_examples=2)
@given(prefill_cases(max_b=2, max_t=4))
def test_prefill_equals_decode_with_rotary_triton(case):
    got = decode_steps(case, 0, "triton", rotary_theta=10000.0)
    assert_same_bits(got, prefill(case, "triton", rotary_theta=10000.0), "triton rotary + attention decode")


# ---------------------------------------------------------------------------
# GQA: sharing a kv head is the same as repeating it.
# ---------------------------------------------------------------------------


def repeated_kv(case: dict) -> dict:
    group = case["num_heads"] // case["num_kv_heads"]
    d = case["q"].shape[-1] // case["num_heads"]
    out = dict(case, num_kv_heads=case["num_heads"])
    for name in ("k", "v"):
        x = case[name]
        heads = x.reshape(x.shape[0], x.shape[1], case["num_kv_heads"], d)
        out[name] = heads.repeat_interleave(group, dim=2).reshape(x.shape[0], x.shape[1], case["num_heads"] * d)
    return out


@settings(max_examples=60)
@given(attention_cases(max_group=3))
def test_gqa_equals_repeated_kv_heads_reference(case):
    assert_same_bits(attention(**repeated_kv(case)), attention(**case), "repeated kv heads")


def test_gqa_equals_repeated_kv_heads_triton():
    case = padded_batch(np.random.default_rng(11), [2, 1], 3, 1, 4, left=False)
    repeated = attention(**repeated_kv(case), backend="triton")
    assert_same_bits(repeated, attention(**case, backend="triton"), "triton GQA")


# ---------------------------------------------------------------------------
# Special values and edge cases, on both backends.
# ---------------------------------------------------------------------------


def causal_case(t: int = 4, heads: int = 2, kv_heads: int = 1, d: int = 4, seed: int = 0) -> dict:
    return padded_batch(np.random.default_rng(seed), [t], heads, kv_heads, d, left=False)


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("tensor", ["k", "v"])
@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_nonfinite_key_poisons_only_the_queries_that_see_it(backend, tensor, value):
    case = causal_case()
    clean = attention(**case, backend=backend)
    case[tensor] = case[tensor].clone()
    case[tensor][0, 2, 1] = value  # key 2: seen by queries 2 and 3 only
    out = attention(**case, backend=backend)
    assert_same_bits(out[:, :2], clean[:, :2], "queries before the bad key")
    assert (out[:, 2:].numpy().view(np.uint32) == CANONICAL_NAN).all()


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_nonfinite_query_poisons_only_its_own_row(backend):
    case = causal_case()
    clean = attention(**case, backend=backend)
    case["q"] = case["q"].clone()
    case["q"][0, 1, 0] = math.inf  # query 1, head 0
    out = attention(**case, backend=backend).reshape(1, 4, 2, 4)
    assert (out[0, 1, 0].numpy().view(np.uint32) == CANONICAL_NAN).all()
    keep = torch.ones(1, 4, 2, 4, dtype=torch.bool)
    keep[0, 1, 0] = False
    assert torch.equal(out[keep].view(torch.int32), clean.reshape(1, 4, 2, 4)[keep].view(torch.int32))


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_masked_keys_never_matter(backend):
    case = causal_case(seed=1)
    clean = attention(**case, backend=backend)
    case["key_mask"] = case["key_mask"].clone()
    case["key_mask"][0, 1] = False
    clean_masked = attention(**case, backend=backend)
    for x in ("k", "v"):
        case[x] = case[x].clone()
        case[x][0, 1] = math.nan
    assert_same_bits(attention(**case, backend=backend), clean_masked, "garbage in a masked key")
    assert not torch.equal(clean_masked, clean)  # masking the key did change queries 1..3


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_queries_that_see_no_key_get_zeros(backend):
    case = causal_case()
    case["key_mask"] = torch.tensor([[False, True, True, True]])  # query 0 sees only key 0: masked
    out = attention(**case, backend=backend)
    assert (out[0, 0].numpy().view(np.uint32) == 0).all()
    assert (out[0, 1:] != 0).any()
    case["k"] = case["k"][:, :0]
    case["v"] = case["v"][:, :0]
    case["key_mask"] = case["key_mask"][:, :0]
    case["k_positions"] = case["k_positions"][:, :0]
    empty = attention(**case, backend=backend)
    assert empty.shape == (1, 4, 8) and (empty.numpy().view(np.uint32) == 0).all()


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_one_visible_key_returns_its_value(backend):
    # p = 1 exactly, P' = 1: the output is v rounded to 14-bit images (s = 2)
    # of its own scale, so a value with few significant bits comes back exactly.
    case = causal_case(t=1, heads=1, kv_heads=1, d=4)
    case["v"] = torch.tensor([[[3.0, -0.5, 0.0, 1.25]]])
    out = attention(**case, backend=backend)
    assert torch.equal(out, case["v"])


# ---------------------------------------------------------------------------
# Accuracy against float64 (the only tests with tolerances).
# ---------------------------------------------------------------------------


def sdpa64(case: dict) -> np.ndarray:
    """float64 scaled_dot_product_attention with the same masks (no-key rows -> 0)."""
    q, k, v = case["q"].double(), case["k"].double(), case["v"].double()
    b, tq, _ = q.shape
    h, hkv = case["num_heads"], case["num_kv_heads"]
    d = q.shape[-1] // h
    qh = q.reshape(b, tq, h, d).transpose(1, 2)
    kh = k.reshape(b, -1, hkv, d).transpose(1, 2).repeat_interleave(h // hkv, dim=1)
    vh = v.reshape(b, -1, hkv, d).transpose(1, 2).repeat_interleave(h // hkv, dim=1)
    visible = case["key_mask"][:, None, :] & (
        ~torch.tensor(case["causal"]) | (case["k_positions"][:, None, :] <= case["q_positions"][:, :, None])
    )
    out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=visible[:, None], scale=float(np.float32(case["scale"])))
    return torch.nan_to_num(out, nan=0.0).transpose(1, 2).reshape(b, tq, h * d).numpy()


# Measured (max error / max |v|): s=1 2.7e-2, s=2 1.6e-4, s=3 1.5e-6, s=4 8.8e-8
# (torch's float32 SDPA: 7.0e-7).
@pytest.mark.parametrize("slices,tolerance", [(2, 2.0**-11), (3, 2.0**-17), (4, 2.0**-21)])
def test_accuracy_against_float64_sdpa(slices, tolerance):
    rng = np.random.default_rng(slices)
    worst = 0.0
    for t, heads, kv_heads, d in ((64, 9, 3, 64), (17, 4, 4, 32), (128, 2, 1, 64)):
        case = padded_batch(rng, [t, t // 2], heads, kv_heads, d, left=True, garbage=False)
        case["q"] = case["q"] * 2.0  # sharper attention than unit-variance logits
        ours = attention(**case, slices=slices).numpy().astype(np.float64)
        exact = sdpa64(case)
        visible_rows = case["key_mask"].numpy()  # padded query rows see nothing real
        err = np.abs(ours - exact)[visible_rows].max() / np.abs(case["v"].numpy()).max()
        worst = max(worst, err)
    # Error relative to max |v|; the documented numbers come from this test.
    assert worst <= tolerance, (slices, worst)
    assert worst >= tolerance / 256, (slices, worst)  # the tolerance is not vacuous


def test_absolute_error_on_unit_data():
    case = padded_batch(np.random.default_rng(9), [48], 4, 2, 64, left=False)
    assert np.abs(attention(**case).numpy() - sdpa64(case)).max() <= 1e-3  # s = 2: 2.5e-4 measured
    assert np.abs(attention(**case, slices=3).numpy() - sdpa64(case)).max() <= 2e-5  # 2.4e-6 measured


# ---------------------------------------------------------------------------
# Argument checking.
# ---------------------------------------------------------------------------


def _valid() -> dict:
    return causal_case(t=2, heads=2, kv_heads=1, d=4)


@pytest.mark.parametrize(
    "change,error",
    [
        ({"q": torch.zeros(1, 2, 8, dtype=torch.float64)}, TypeError),
        ({"q": torch.zeros(2, 8)}, ValueError),
        ({"k": torch.zeros(1, 2, 8)}, ValueError),  # 2 kv heads of 4 expected 1
        ({"v": torch.zeros(1, 3, 4)}, ValueError),
        ({"key_mask": torch.ones(1, 2, dtype=torch.int64)}, TypeError),
        ({"key_mask": torch.ones(1, 3, dtype=torch.bool)}, ValueError),
        ({"q_positions": torch.zeros(1, 2, dtype=torch.int32)}, TypeError),
        ({"k_positions": torch.zeros(2, 2, dtype=torch.int64)}, ValueError),
        ({"num_heads": 3}, ValueError),  # 8 is not a multiple of 3
        ({"num_heads": 2, "num_kv_heads": 3}, ValueError),
        ({"num_kv_heads": 0}, ValueError),
        ({"num_heads": 2.0}, TypeError),
        ({"scale": "x"}, TypeError),
        ({"causal": 1}, TypeError),
        ({"slices": 5}, ValueError),
        ({"slices": 0}, ValueError),
    ],
)
def test_invalid_arguments_are_rejected(change, error):
    with pytest.raises(error):
        attention(**{**_valid(), **change})


def test_float_constants_are_exact_in_float32():
    assert float(np.float32(attention_reference.PIN_VALUE)) == 1.0
    assert np.float32(attention_reference.PIN_VALUE).view(np.int32) == ONE_BITS
