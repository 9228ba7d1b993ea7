"""Rotary position embeddings (kernels/rotary.py).

* the Triton interpreter equals the numpy reference bit for bit;
* invariances: the block of heads (I4); a token's output depends only on its
  own vector and position (I2: batch and padding; I3: prefill vs decode);
* the definition: inverse frequencies, angle and the four float32 operations
  per pair, checked op by op in float32;
* accuracy against float64 and against Hugging Face's fp32 apply_rotary_pos_emb.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import refute.kernels  # noqa: F401  (chooses the interpreter before any kernel below is defined)
from refute.kernels import mathlib_reference, rotary_reference, rotary_triton
from refute.kernels.rotary import rotary
from test_bits import F32_SPECIAL_BITS, f32_from_bits

# The interpreter evaluates kernels with numpy, which warns on overflow and NaN.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

THETAS = (10000.0, 100000.0, 500000.0, 1.0e6, 2.0, 1.0, 0.5, 3.0e38)
HEAD_DIMS = (2, 4, 6, 8, 10, 16, 34, 64)
POSITION_EDGES = (0, 1, 2, 7, 2047, 4095, 1 << 24, (1 << 24) + 1, (1 << 31) - 1, -1, -5, (1 << 62) + 12345)

# ---------------------------------------------------------------------------
# Strategies.
# ---------------------------------------------------------------------------


@st.composite
def cases(draw, max_b: int = 2, max_t: int = 4, max_heads: int = 3) -> dict:
    """x (B, T, heads * d) with specials, positions (B, T), head_dim, theta."""
    b = draw(st.integers(1, max_b))
    t = draw(st.integers(1, max_t))
    heads = draw(st.integers(1, max_heads))
    d = draw(st.sampled_from(HEAD_DIMS))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = (rng.standard_normal((b, t, heads * d)) * 2.0 ** int(rng.integers(-10, 11))).astype(np.float32)
    if draw(st.booleans()):
        flat = x.reshape(-1)
        where = rng.random(flat.size) < 0.2
        flat[where] = f32_from_bits(rng.choice(np.array(F32_SPECIAL_BITS, dtype=np.uint64), int(where.sum())))
    positions = rng.integers(0, 1 << 16, (b, t)).astype(np.int64)
    if draw(st.booleans()):
        positions.reshape(-1)[0] = draw(st.sampled_from(POSITION_EDGES))
    theta = draw(st.sampled_from(THETAS) | st.floats(1.0e-3, 1.0e7))
    return {"x": torch.from_numpy(x), "positions": torch.from_numpy(positions), "head_dim": d, "theta": theta}


def assert_same_bits(got: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    g, e = got.numpy(), expected.numpy()
    assert g.shape == e.shape and g.dtype == e.dtype == np.float32, what
    bad = np.argwhere(g.view(np.int32) != e.view(np.int32))
    if bad.size:
        i = tuple(bad[0])
        raise AssertionError(f"{what}: {len(bad)} differ, first at {i}: {g[i]!r} vs {e[i]!r}")


# ---------------------------------------------------------------------------
# Interpreter == reference, bit for bit; block invariance.
# ---------------------------------------------------------------------------


@settings(max_examples=40)
@given(cases())
def test_interpreter_matches_reference(case):
    assert_same_bits(rotary(**case, backend="triton"), rotary(**case), "triton vs reference")


@settings(max_examples=10)
@given(cases(max_heads=5), st.sampled_from([1, 2, 8]))
def test_block_of_heads_does_not_change_bits(case, block_h):
    x, d = case["x"], case["head_dim"]
    b, t, width = x.shape
    x3 = x.reshape(b * t, width // d, d).contiguous()
    got = rotary_triton.rotary_launch(x3, case["positions"].reshape(-1), float(np.float32(case["theta"])), block_h)
    assert_same_bits(got.reshape(x.shape), rotary(**case), f"block_h={block_h}")


# ---------------------------------------------------------------------------
# The definition, op by op (reference; the interpreter equals it).
# ---------------------------------------------------------------------------


@settings(max_examples=100)
@given(cases(max_b=2, max_t=3, max_heads=2))
def test_reference_follows_the_definition_op_by_op(case):
    x = case["x"].numpy()
    pos = case["positions"].numpy()
    d = case["head_dim"]
    half = d // 2
    theta = np.float32(case["theta"])
    out = rotary(**case).numpy()
    log_theta = mathlib_reference.log(np.array([theta], dtype=np.float32))[0]
    with np.errstate(all="ignore"):
        for i in range(half):
            ratio = np.float32(2 * i) / np.float32(d)
            inv = mathlib_reference.exp(np.array([-(ratio * log_theta)], dtype=np.float32))[0]
            for b in range(x.shape[0]):
                for t in range(x.shape[1]):
                    a = np.array([np.float32(pos[b, t]) * inv], dtype=np.float32)
                    c, s = mathlib_reference.cos(a)[0], mathlib_reference.sin(a)[0]
                    for h in range(x.shape[2] // d):
                        x1, x2 = x[b, t, h * d + i], x[b, t, h * d + half + i]
                        lo, hi = out[b, t, h * d + i], out[b, t, h * d + half + i]
                        assert canonical_bits(x1 * c - x2 * s) == lo.view(np.int32)
                        assert canonical_bits(x2 * c + x1 * s) == hi.view(np.int32)


def canonical_bits(v: np.float32) -> int:
    """int32 bits of a float32 scalar with any NaN made 0x7FC00000."""
    return 0x7FC00000 if np.isnan(v) else int(np.float32(v).view(np.int32))


def test_inverse_frequencies_start_at_one_and_decrease():
    for theta in (10000.0, 100000.0, 500000.0):
        inv = rotary_reference.inv_freq(64, np.float32(theta))
        assert inv[0] == np.float32(1.0)
        assert np.all(np.diff(inv) < 0)


def test_position_zero_is_the_identity():
    x = torch.randn(2, 3, 32)
    out = rotary(x, torch.zeros(2, 3, dtype=torch.int64), head_dim=16, theta=10000.0)
    # cos(0) = 1 and sin(0) = 0 exactly: x*1 - y*0 = x (for finite x).
    assert torch.equal(out, x)


# ---------------------------------------------------------------------------
# Invariances: one token's output depends only on its vector and position.
# ---------------------------------------------------------------------------


@settings(max_examples=60)
@given(cases(max_b=3, max_t=5))
def test_tokens_are_independent_reference(case):
    whole = rotary(**case)
    x, pos = case["x"], case["positions"]
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            one = rotary(
                x[b : b + 1, t : t + 1], pos[b : b + 1, t : t + 1], head_dim=case["head_dim"], theta=case["theta"]
            )
            assert_same_bits(one[0, 0], whole[b, t], f"token ({b}, {t})")


@settings(max_examples=4)
@given(cases(max_b=2, max_t=3))
def test_prefill_equals_decode_triton(case):
    whole = rotary(**case, backend="triton")
    x, pos = case["x"], case["positions"]
    for t in range(x.shape[1]):  # one decode step per position, the whole batch at once
        step = rotary(
            x[:, t : t + 1], pos[:, t : t + 1], head_dim=case["head_dim"], theta=case["theta"], backend="triton"
        )
        assert_same_bits(step[:, 0], whole[:, t], f"step {t}")


# ---------------------------------------------------------------------------
# Special values.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_special_values_propagate_per_pair(backend):
    x = torch.tensor([[[1.0, float("nan"), 2.0, 3.0, float("inf"), 0.0, -0.0, 5.0]]])
    out = rotary(x, torch.tensor([[3]]), head_dim=8, theta=10000.0, backend=backend)[0, 0]
    # Pairs are (0, 4), (1, 5), (2, 6), (3, 7): a NaN or inf spreads to its pair only.
    assert torch.isinf(out[[0, 4]]).all()
    assert torch.isfinite(out[[2, 3, 6, 7]]).all()
    # A NaN operand gives one NaN, the canonical one, on every backend.
    assert (out.numpy().view(np.uint32)[[1, 5]] == 0x7FC00000).all()
    # inf * 0 too: at position 0, sin = 0.
    zero_pos = rotary(x, torch.tensor([[0]]), head_dim=8, theta=10000.0, backend=backend)[0, 0]
    assert (zero_pos.numpy().view(np.uint32)[[0, 1, 5]] == 0x7FC00000).all()


# ---------------------------------------------------------------------------
# Accuracy (the only tests with tolerances).
# ---------------------------------------------------------------------------


def exact_rotary(x: np.ndarray, positions: np.ndarray, d: int, theta: float) -> np.ndarray:
    """float64 rotary with exact inverse frequencies and angles."""
    half = d // 2
    inv = float(np.float32(theta)) ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    a = positions.astype(np.float64)[:, None] * inv[None, :]
    c, s = np.cos(a)[:, None, :], np.sin(a)[:, None, :]
    x = x.astype(np.float64)
    return np.concatenate([x[..., :half] * c - x[..., half:] * s, x[..., half:] * c + x[..., :half] * s], axis=-1)


def hf_rotary(x: np.ndarray, positions: np.ndarray, d: int, theta: float) -> np.ndarray:
    """transformers' fp32 apply_rotary_pos_emb with Llama's inverse frequencies."""
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    inv = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    freqs = torch.from_numpy(positions).float()[:, None] * inv[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    q = torch.from_numpy(x).transpose(0, 1)[None]  # (1, heads, T, d)
    out, _ = apply_rotary_pos_emb(q, q, emb.cos()[None], emb.sin()[None])
    return out[0].transpose(0, 1).numpy()


@pytest.mark.parametrize("theta,d", [(10000.0, 64), (100000.0, 64), (500000.0, 128)])
def test_accuracy_against_float64_and_transformers(theta, d):
    rng = np.random.default_rng(d)
    positions = np.arange(4096, dtype=np.int64)
    x = rng.standard_normal((positions.size, 3, d)).astype(np.float32)
    ours = rotary_reference.rotary(x, positions, d, np.float32(theta)).astype(np.float64)
    exact = exact_rotary(x, positions, d, theta)
    hf = hf_rotary(x, positions, d, theta).astype(np.float64)
    err = np.abs(ours - exact).max(axis=(1, 2))
    hf_err = np.abs(hf - exact).max(axis=(1, 2))
    # As accurate as transformers' fp32 rotary: the float32 angle pos * inv_i
    # (half an ulp of up to 4096) dominates both.
    assert err.max() <= 1.05 * hf_err.max(), (err.max(), hf_err.max())
    assert err[:64].max() <= 2e-5 and err.max() <= 1e-3, (err[:64].max(), err.max())
    assert np.abs(ours - hf).max() <= 1e-3


# ---------------------------------------------------------------------------
# Argument checking.
# ---------------------------------------------------------------------------

X = torch.zeros(1, 2, 8)
POS = torch.zeros(1, 2, dtype=torch.int64)


@pytest.mark.parametrize(
    "kwargs,error",
    [
        ({"x": X.double()}, TypeError),
        ({"x": torch.zeros(2, 8)}, ValueError),
        ({"positions": POS.int()}, TypeError),
        ({"positions": torch.zeros(1, 3, dtype=torch.int64)}, ValueError),
        ({"head_dim": 3}, ValueError),
        ({"head_dim": 16}, ValueError),  # 8 is not a multiple of 16
        ({"head_dim": 4.0}, TypeError),
        ({"theta": -1.0}, ValueError),
        ({"theta": float("inf")}, ValueError),
        ({"theta": 1e39}, ValueError),  # overflows float32
        ({"theta": "big"}, TypeError),
    ],
)
def test_invalid_arguments_are_rejected(kwargs, error):
    args = {"x": X, "positions": POS, "head_dim": 4, "theta": 10000.0, **kwargs}
    with pytest.raises(error):
        rotary(args.pop("x"), args.pop("positions"), **args)
