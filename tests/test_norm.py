"""Normalisation and pooling (kernels/norm.py): layer_norm, rms_norm, l2_normalize, mean_pool.

* the fused Triton kernels (interpreter) equal the numpy reference on raw bits,
  on rows of many kinds (specials, huge ranges, overflowing squares,
  subnormals, constant rows), single-block and chunked, n = 1 and odd sizes;
* invariances: the other rows of the batch and padding tokens (I2), the block
  size and the single/chunked path (I4);
* mean_pool's definition: the exact sum over the kept tokens only;
* special values, validation, and accuracy against torch's fp32
  F.layer_norm / Llama RMSNorm / F.normalize / masked mean and float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import refute.kernels  # noqa: F401  (chooses the interpreter before any kernel is defined)
from refute.kernels import norm_reference as ref
from refute.kernels import norm_triton
from refute.kernels.norm import l2_normalize, layer_norm, mean_pool, rms_norm
from refute.kernels.reduce_reference import row_sum
from test_bits import F32_SPECIAL_BITS, f32_from_bits
from test_reduce import ROW_KINDS, make_row

# The interpreter evaluates kernels with numpy, which warns on overflow and NaN.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

CANONICAL_NAN = 0x7FC00000
ROW_OPS = ("layer_norm", "rms_norm", "l2_normalize")
BLOCKS = (32, 64, 1024)  # rows up to 150: chunked, chunked, single
POOL_BLOCKS = ((8, 32), (16, 64), (128, 16))  # (BLOCK_T, BLOCK_D)
EPS_VALUES = (1e-12, 1e-5, 1e-6, 0.0, 1.0)
SIZE_EDGES = (1, 2, 31, 32, 33, 63, 64, 65, 129)

# ---------------------------------------------------------------------------
# Strategies and helpers.
# ---------------------------------------------------------------------------


def _param(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """A weight or bias vector: realistic, with specials, or ones."""
    if kind == "ones":
        return np.ones(n, np.float32)
    v = (1.0 + 0.3 * rng.standard_normal(n)).astype(np.float32)
    if kind == "specials":
        where = rng.random(n) < 0.2
        v[where] = f32_from_bits(rng.choice(np.array(F32_SPECIAL_BITS, dtype=np.uint64), int(where.sum())))
    return v


@st.composite
def norm_cases(draw, max_rows: int = 3, min_n: int = 1, max_n: int = 150):
    """(x (rows, n), weight (n,), bias (n,), eps): each row of a drawn kind
    (plus constant rows, whose variance is 0)."""
    rows = draw(st.integers(1, max_rows))
    edges = tuple(v for v in SIZE_EDGES if min_n <= v <= max_n) or (min_n,)
    n = draw(st.one_of(st.integers(min_n, max_n), st.sampled_from(edges)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kinds = [draw(st.sampled_from(ROW_KINDS + ("constant",))) for _ in range(rows)]
    x = np.stack(
        [np.full(n, rng.standard_normal(), np.float32) if k == "constant" else make_row(k, n, rng) for k in kinds]
    )
    weight = _param(draw(st.sampled_from(("normal", "specials", "ones"))), n, rng)
    bias = _param(draw(st.sampled_from(("normal", "specials", "ones"))), n, rng) - np.float32(1.0)
    return x.astype(np.float32), weight, bias, draw(st.sampled_from(EPS_VALUES))


def reference(op: str, x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    e = np.float32(eps)
    if op == "layer_norm":
        return ref.layer_norm(x, weight, bias, e)
    if op == "rms_norm":
        return ref.rms_norm(x, weight, e)
    return ref.l2_normalize(x, e)


def interpreter(
    op: str, x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float, block: int | None = None
) -> np.ndarray:
    xt, wt, bt = (torch.from_numpy(np.ascontiguousarray(a)) for a in (x, weight, bias))
    e = float(np.float32(eps))
    if op == "layer_norm":
        return norm_triton.layer_norm_launch(xt, wt, bt, e, block).numpy()
    if op == "rms_norm":
        return norm_triton.rms_norm_launch(xt, wt, e, block).numpy()
    return norm_triton.l2_normalize_launch(xt, e, block).numpy()


def bits(a: np.ndarray | torch.Tensor) -> np.ndarray:
    a = a.numpy() if isinstance(a, torch.Tensor) else a
    return np.ascontiguousarray(a, dtype=np.float32).view(np.int32)


def assert_same_bits(got, expected, what: str) -> None:
    g, e = bits(got), bits(expected)
    assert g.shape == e.shape, f"{what}: shapes {g.shape} vs {e.shape}"
    bad = np.argwhere(g != e)
    assert bad.size == 0, (
        f"{what}: {len(bad)} elements differ, first at {tuple(bad[0])}: "
        f"got {hex(int(g[tuple(bad[0])]) & 0xFFFFFFFF)} expected {hex(int(e[tuple(bad[0])]) & 0xFFFFFFFF)}"
    )


def assert_nan_canonical(y) -> None:
    b = bits(y)
    assert np.all(b[(b & 0x7FFFFFFF) > 0x7F800000] == CANONICAL_NAN)


# ---------------------------------------------------------------------------
# layer_norm / rms_norm / l2_normalize: interpreter == reference.
# ---------------------------------------------------------------------------


@settings(max_examples=60)
@given(norm_cases(), st.sampled_from(ROW_OPS), st.sampled_from(BLOCKS + (None,)))
def test_row_norms_interpreter_matches_reference(case, op, block):
    x, w, b, eps = case
    expected = reference(op, x, w, b, eps)
    assert_same_bits(interpreter(op, x, w, b, eps, block), expected, f"{op} BLOCK={block} eps={eps}")
    assert_nan_canonical(expected)


@settings(max_examples=3)
@given(norm_cases(max_rows=1, min_n=4097, max_n=4400), st.sampled_from(ROW_OPS))
def test_rows_longer_than_the_largest_block(case, op):
    # Default blocks: rows above MAX_BLOCK take the chunked path.
    x, w, b, eps = case
    assert x.shape[1] > norm_triton.MAX_BLOCK
    assert_same_bits(interpreter(op, x, w, b, eps), reference(op, x, w, b, eps), op)


@settings(max_examples=15)
@given(norm_cases(max_rows=2, max_n=150), st.sampled_from(ROW_OPS))
def test_block_size_does_not_change_bits(case, op):
    x, w, b, eps = case
    results = [interpreter(op, x, w, b, eps, block) for block in BLOCKS]
    for block, r in zip(BLOCKS[1:], results[1:]):
        assert_same_bits(r, results[0], f"{op} BLOCK={block} vs {BLOCKS[0]}")


@settings(max_examples=60)
@given(norm_cases(max_rows=3, max_n=100), st.data())
def test_reference_rows_do_not_depend_on_the_batch(case, data):
    x, w, b, eps = case
    others = data.draw(norm_cases(max_rows=3, min_n=x.shape[1], max_n=x.shape[1]))[0]
    mixed = np.concatenate([others, x])
    for op in ROW_OPS:
        alone = [reference(op, x[i : i + 1], w, b, eps) for i in range(x.shape[0])]
        assert_same_bits(reference(op, mixed, w, b, eps)[others.shape[0] :], np.concatenate(alone), op)


@settings(max_examples=8)
@given(norm_cases(max_rows=2, max_n=80), st.data())
def test_interpreter_rows_do_not_depend_on_the_batch(case, data):
    x, w, b, eps = case
    others = data.draw(norm_cases(max_rows=2, min_n=x.shape[1], max_n=x.shape[1]))[0]
    for op in ROW_OPS:
        assert_same_bits(
            interpreter(op, np.concatenate([x, others]), w, b, eps)[: x.shape[0]], interpreter(op, x, w, b, eps), op
        )


@settings(max_examples=10)
@given(norm_cases(max_rows=2, max_n=40), st.sampled_from(ROW_OPS))
def test_public_api_backends_agree(case, op):
    x, w, b, eps = case
    xt = torch.from_numpy(x).reshape(x.shape[0], 1, x.shape[1])  # two leading dimensions
    wt, bt = torch.from_numpy(w), torch.from_numpy(b)
    fn = {
        "layer_norm": lambda backend: layer_norm(xt, wt, bt, eps=eps, backend=backend),
        "rms_norm": lambda backend: rms_norm(xt, wt, eps=eps, backend=backend),
        "l2_normalize": lambda backend: l2_normalize(xt, eps=eps, backend=backend),
    }[op]
    out_ref, out_tri = fn("reference"), fn("triton")
    assert out_ref.shape == out_tri.shape == xt.shape and out_ref.dtype == out_tri.dtype == torch.float32
    assert_same_bits(out_tri, out_ref, op)
    assert_same_bits(out_ref.reshape(x.shape), reference(op, x, w, b, eps), f"{op} public vs reference")


def test_empty_and_non_contiguous_inputs():
    w, b = torch.ones(5), torch.zeros(5)
    for backend in ("reference", "triton"):
        assert layer_norm(torch.empty(0, 5), w, b, eps=1e-5, backend=backend).shape == (0, 5)
        assert l2_normalize(torch.empty(3, 0), backend=backend).shape == (3, 0)
        x = torch.from_numpy(np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32))
        expected = rms_norm(x.t().contiguous(), w, eps=1e-5)
        assert_same_bits(rms_norm(x.t(), w, eps=1e-5, backend=backend), expected, backend)


# ---------------------------------------------------------------------------
# Special values.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_norm_special_values(backend):
    n = 7
    w = torch.linspace(0.5, 2.0, n)
    b = torch.linspace(-1.0, 1.0, n) + 0.125  # no zero bias
    const = torch.full((1, n), 3.25)
    # Constant row: d = 0 exactly, so y = 0 * r * w + b = b.
    assert_same_bits(layer_norm(const, w, b, eps=1e-5, backend=backend)[0], b, "constant row")
    # eps = 0 on a constant row: rsqrt(0) = inf, 0 * inf = NaN.
    assert np.all(bits(layer_norm(const, w, b, eps=0.0, backend=backend)) == CANONICAL_NAN)
    zeros = torch.zeros(1, n)
    assert torch.equal(rms_norm(zeros, w, eps=1e-6, backend=backend), zeros)
    assert torch.equal(l2_normalize(zeros, backend=backend), zeros)  # 0 / eps
    # A NaN anywhere makes the whole row the canonical NaN; other rows are untouched.
    x = torch.randn(2, n, generator=torch.Generator().manual_seed(0))
    x[0, 3] = float("nan")
    outputs = (
        layer_norm(x, w, b, eps=1e-5, backend=backend),
        rms_norm(x, w, eps=1e-5, backend=backend),
        l2_normalize(x, backend=backend),
    )
    for y in outputs:
        assert np.all(bits(y[0]) == CANONICAL_NAN)
        assert not torch.isnan(y[1]).any()
    # l2 of a row with an infinity: the norm is inf, finite entries become 0, inf/inf is NaN.
    inf_row = torch.tensor([[1.0, float("inf"), -2.0]])
    y = bits(l2_normalize(inf_row, backend=backend))[0]
    assert y[0] == 0 and y[1] == CANONICAL_NAN and y[2] == np.int32(-(2**31))  # +0, NaN, -0


# ---------------------------------------------------------------------------
# mean_pool.
# ---------------------------------------------------------------------------

MASK_KINDS = ("ones", "zeros", "prefix", "random")


def _mask(kind: str, tokens: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "ones":
        return np.ones(tokens, np.int32)
    if kind == "zeros":
        return np.zeros(tokens, np.int32)
    if kind == "prefix":  # right padding, as a tokenizer pads
        return (np.arange(tokens) < rng.integers(0, tokens + 1)).astype(np.int32)
    return (rng.random(tokens) < 0.6).astype(np.int32)


@st.composite
def pool_cases(
    draw, max_b: int = 3, max_t: int = 40, max_d: int = 80, tokens: int | None = None, dim: int | None = None
):
    """(x (B, T, D) float32, mask (B, T) int32 0/1)."""
    batch = draw(st.integers(1, max_b))
    t = tokens if tokens is not None else draw(st.one_of(st.integers(0, max_t), st.sampled_from((1, 8, 9, 16, 17))))
    d = dim if dim is not None else draw(st.one_of(st.integers(1, max_d), st.sampled_from((1, 16, 63, 64, 65))))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kinds = [draw(st.sampled_from(ROW_KINDS)) for _ in range(batch)]
    x = np.stack([make_row(k, t * d, rng).reshape(t, d) if t else np.zeros((0, d), np.float32) for k in kinds])
    mask = np.stack([_mask(draw(st.sampled_from(MASK_KINDS)), t, rng) for _ in range(batch)]).reshape(batch, t)
    return x.astype(np.float32).reshape(batch, t, d), mask


def pool_interpreter(x: np.ndarray, mask: np.ndarray, blocks: tuple[int, int] | None = None) -> np.ndarray:
    xt, mt = torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(mask, dtype=np.int32))
    if blocks is None:
        return norm_triton.mean_pool_launch(xt, mt).numpy()
    return norm_triton.mean_pool_launch(xt, mt, *blocks).numpy()


@settings(max_examples=40)
@given(pool_cases(), st.sampled_from(POOL_BLOCKS + (None,)))
def test_mean_pool_interpreter_matches_reference(case, blocks):
    x, mask = case
    expected = ref.mean_pool(x, mask)
    assert_same_bits(pool_interpreter(x, mask, blocks), expected, f"mean_pool blocks={blocks}")
    assert_nan_canonical(expected)


@settings(max_examples=3)
@given(pool_cases(max_b=1, tokens=300, dim=3))
def test_mean_pool_more_tokens_than_the_largest_block(case):
    x, mask = case
    assert x.shape[1] > norm_triton.MAX_BLOCK_T
    assert_same_bits(pool_interpreter(x, mask), ref.mean_pool(x, mask), "mean_pool long")


@settings(max_examples=8)
@given(pool_cases(max_b=2, max_t=24, max_d=40))
def test_mean_pool_block_sizes_do_not_change_bits(case):
    x, mask = case
    results = [pool_interpreter(x, mask, blocks) for blocks in POOL_BLOCKS]
    for blocks, r in zip(POOL_BLOCKS[1:], results[1:]):
        assert_same_bits(r, results[0], f"mean_pool {blocks} vs {POOL_BLOCKS[0]}")


@settings(max_examples=60)
@given(pool_cases(max_t=30, max_d=20))
def test_mean_pool_is_the_exact_sum_over_kept_tokens(case):
    # The definition, written independently: row_sum over the kept tokens only
    # (the scale comes from the kept entries), divided by max(count, 1e-9).
    x, mask = case
    expected = np.empty((x.shape[0], x.shape[2]), np.float32)
    for i in range(x.shape[0]):
        kept = x[i][mask[i] != 0]  # (kept tokens, D)
        s = row_sum(np.ascontiguousarray(kept.T))
        cnt = np.float32(kept.shape[0])
        with np.errstate(all="ignore"):
            y = s / (cnt if kept.shape[0] else np.float32(ref.POOL_MIN_COUNT))
        expected[i] = np.where(np.isnan(y), f32_from_bits([CANONICAL_NAN])[0], y)
    assert_same_bits(ref.mean_pool(x, mask), expected, "mean_pool definition")


@settings(max_examples=50)
@given(pool_cases(max_t=20, max_d=20), st.data())
def test_mean_pool_padding_does_not_change_bits(case, data):
    # I2: inserting tokens with mask 0, whatever their values (NaN, inf,
    # huge), anywhere in the sequence leaves the pooled bits unchanged.
    x, mask = case
    batch, tokens, dim = x.shape
    pad = data.draw(st.integers(1, 8))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    junk_kind = data.draw(st.sampled_from(("bits", "specials", "overflow")))
    junk = make_row(junk_kind, batch * pad * dim, rng).reshape(batch, pad, dim)
    order = rng.permutation(tokens + pad)
    x_padded = np.concatenate([x, junk], axis=1)[:, order]
    mask_padded = np.concatenate([mask, np.zeros((batch, pad), np.int32)], axis=1)[:, order]
    expected = ref.mean_pool(x, mask)
    assert_same_bits(ref.mean_pool(x_padded, mask_padded), expected, "reference with padding")
    if data.draw(st.integers(0, 4)) == 0:  # the interpreter is slower: a sample of the cases
        assert_same_bits(pool_interpreter(x_padded, mask_padded), expected, "interpreter with padding")


@settings(max_examples=40)
@given(pool_cases(max_b=3), st.data())
def test_mean_pool_rows_do_not_depend_on_the_batch(case, data):
    x, mask = case
    others_x, others_mask = data.draw(pool_cases(max_b=3, tokens=x.shape[1], dim=x.shape[2]))
    mixed = ref.mean_pool(np.concatenate([others_x, x]), np.concatenate([others_mask, mask]))
    assert_same_bits(mixed[others_x.shape[0] :], ref.mean_pool(x, mask), "mean_pool batch")


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_mean_pool_public_api(backend):
    rng = np.random.default_rng(5)
    x = torch.from_numpy(rng.standard_normal((3, 6, 5)).astype(np.float32))
    x[1, 4:] = float("nan")  # masked out below: never read into the sum
    mask_bool = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 0, 0]], dtype=torch.bool)
    out = mean_pool(x, mask_bool, backend=backend)
    assert out.shape == (3, 5) and out.dtype == torch.float32
    assert not torch.isnan(out).any()
    assert torch.equal(out[2], torch.zeros(5)) and not torch.signbit(out[2]).any()  # no kept token: +0
    for mask in (mask_bool.to(torch.int64), mask_bool.to(torch.int32), mask_bool.to(torch.uint8)):
        assert_same_bits(mean_pool(x, mask, backend=backend), out, f"mask dtype {mask.dtype}")
    assert_same_bits(out, mean_pool(x, mask_bool, backend="reference"), "backends")
    assert mean_pool(torch.empty(2, 0, 4), torch.empty(2, 0, dtype=torch.bool), backend=backend).shape == (2, 4)


# ---------------------------------------------------------------------------
# Validation.
# ---------------------------------------------------------------------------


def test_validation():
    x, w, b = torch.ones(2, 4), torch.ones(4), torch.zeros(4)
    with pytest.raises(TypeError, match="float32"):
        layer_norm(x.double(), w, b, eps=1e-5)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        layer_norm(x, torch.ones(3), b, eps=1e-5)
    with pytest.raises(ValueError, match=r"shape \(4,\)"):
        rms_norm(x, torch.ones(1, 4), eps=1e-5)
    with pytest.raises(ValueError, match="0-d"):
        l2_normalize(torch.tensor(1.0))
    with pytest.raises(ValueError, match="eps"):
        rms_norm(x, w, eps=-1.0)
    with pytest.raises(TypeError, match="eps"):
        rms_norm(x, w, eps="1e-5")
    # numpy scalars are accepted and rounded to float32 like Python floats.
    assert torch.equal(rms_norm(x, w, eps=np.float32(1e-5)), rms_norm(x, w, eps=1e-5))
    with pytest.raises(ValueError, match="unknown backend"):
        l2_normalize(x, backend="gpu")
    with pytest.raises(ValueError, match=r"\(B, T, D\)"):
        mean_pool(x, torch.ones(2, 4))
    with pytest.raises(ValueError, match="mask must have shape"):
        mean_pool(torch.ones(2, 3, 4), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool or integer"):
        mean_pool(torch.ones(2, 3, 4), torch.ones(2, 3))
    with pytest.raises(ValueError, match="only 0 and 1"):
        mean_pool(torch.ones(2, 3, 4), torch.full((2, 3), 2))


def test_constants_are_float32_values():
    for name, value in ref.float_constants().items():
        assert float(np.float32(value)) == value, name
    assert ref.POOL_MIN_COUNT == float(np.float32(1e-9))


# ---------------------------------------------------------------------------
# Accuracy (the only place with tolerances): realistic activations.
# ---------------------------------------------------------------------------

ULP_UNIT = 2.0**-24
N_FEATURES = 384


def _ulp(t: np.ndarray) -> np.ndarray:
    """ulp of float32 in the binade of the float64 values t."""
    return 2.0 ** (np.floor(np.log2(np.maximum(np.abs(t), 2.0**-126))) - 23)


def _activations(kind: str, rows: int = 256) -> torch.Tensor:
    rng = np.random.default_rng(11)
    x = rng.standard_normal((rows, N_FEATURES))
    if kind == "outliers":  # a few large channels, as in transformer residual streams
        x = x * np.where(rng.random((rows, N_FEATURES)) < 0.01, 100.0, 1.0)
    if kind == "tiny":
        x = x * 1e-3
    return torch.from_numpy(x.astype(np.float32))


@pytest.fixture(scope="module")
def affine() -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(12)
    return (
        torch.from_numpy((1 + 0.1 * rng.standard_normal(N_FEATURES)).astype(np.float32)),
        torch.from_numpy((0.1 * rng.standard_normal(N_FEATURES)).astype(np.float32)),
    )


@pytest.mark.parametrize("kind", ["normal", "outliers", "tiny"])
@pytest.mark.parametrize("eps", [1e-12, 1e-5])
def test_layer_norm_accuracy(kind, eps, affine):
    x, (w, b) = _activations(kind), affine
    e32 = float(np.float32(eps))
    ours = layer_norm(x, w, b, eps=eps).double()
    theirs = F.layer_norm(x, (N_FEATURES,), w, b, e32).double()
    x64 = x.double()
    mu = x64.mean(-1, keepdim=True)
    d = x64 - mu
    inv = 1 / torch.sqrt((d * d).mean(-1, keepdim=True) + e32)
    core = d * inv * w.double()
    truth = core + b.double()
    # Elementwise against float64: the float32 mean's rounding (|mu| * r * |w|)
    # enters every d, so it is part of the scale.
    scale = (core.abs() + b.double().abs() + mu.abs() * inv * w.double().abs()) * ULP_UNIT
    assert ((ours - truth).abs() / scale).max() <= 6.0  # measured 4.40
    # Against torch, per row in units of the row's largest output.
    row_scale = truth.abs().amax(-1, keepdim=True) * ULP_UNIT
    assert ((ours - theirs).abs() / row_scale).max() <= 8.0  # measured 5.44


@pytest.mark.parametrize("kind", ["normal", "outliers", "tiny"])
def test_rms_norm_accuracy(kind, affine):
    x, w = _activations(kind), affine[0]
    eps = float(np.float32(1e-5))
    ours = rms_norm(x, w, eps=eps).double().numpy()
    # Hugging Face LlamaRMSNorm in fp32.
    variance = x.pow(2).mean(-1, keepdim=True)
    theirs = (w * (x * torch.rsqrt(variance + eps))).double().numpy()
    x64 = x.double()
    truth = (w.double() * (x64 / torch.sqrt(x64.pow(2).mean(-1, keepdim=True) + eps))).numpy()
    assert np.max(np.abs(ours - truth) / _ulp(truth)) <= 4.0  # measured 3.15
    assert np.max(np.abs(ours - theirs) / _ulp(theirs)) <= 6.0  # measured 5


@pytest.mark.parametrize("kind", ["normal", "outliers", "tiny"])
def test_l2_normalize_accuracy(kind):
    x = _activations(kind)
    ours = l2_normalize(x).double().numpy()
    theirs = F.normalize(x, dim=-1).double().numpy()
    x64 = x.double()
    truth = (x64 / x64.norm(dim=-1, keepdim=True).clamp_min(1e-12)).numpy()
    assert np.max(np.abs(ours - truth) / _ulp(truth)) <= 2.5  # measured 1.89
    assert np.max(np.abs(ours - theirs) / _ulp(theirs)) <= 5.0  # measured 4


@pytest.mark.parametrize("scale", [1.0, 1e3, 1e-3])
def test_mean_pool_accuracy(scale):
    rng = np.random.default_rng(13)
    batch, tokens = 16, 128
    x = torch.from_numpy((rng.standard_normal((batch, tokens, N_FEATURES)) * scale).astype(np.float32))
    lengths = rng.integers(1, tokens + 1, batch)
    mask = torch.from_numpy((np.arange(tokens)[None, :] < lengths[:, None]).astype(np.int64))
    ours = mean_pool(x, mask).double().numpy()
    # sentence-transformers' masked mean in fp32.
    m = mask.unsqueeze(-1).float()
    theirs = ((x * m).sum(1) / m.sum(1).clamp(min=1e-9)).double().numpy()
    m64 = m.double()
    truth = ((x.double() * m64).sum(1) / m64.sum(1)).numpy()
    mean_abs = ((x.double().abs() * m64).sum(1) / m64.sum(1)).numpy() * ULP_UNIT
    assert np.max(np.abs(ours - truth) / _ulp(truth)) <= 2.0  # measured 1.45: exact sum, then one division
    assert np.max(np.abs(ours - theirs) / mean_abs) <= 4.0  # measured 3.1 (torch's float sum)
