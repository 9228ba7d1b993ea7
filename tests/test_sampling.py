"""Deterministic sampling (kernels/sampling.py).

* the integer pieces against exact oracles: probability images (Fractions),
  the keep set and the chosen token (Python sorts and integer prefix sums);
* the defining properties: a pure function, independent of the batch,
  greedy == argmax, top_k = 1 / top_p -> 0 / temperature -> 0 are greedy,
  degenerate rows fall back to argmax;
* the distribution: chi-square of sampled frequencies against softmax(z),
  unfiltered and filtered;
* both backends choose the same tokens.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import refute.kernels  # noqa: F401  (chooses the interpreter before any kernel is defined)
from refute.kernels import philox
from refute.kernels.bits_reference import ldexp, round_half_even_to_int64
from refute.kernels.sampling import (
    PROB_FRAC_BITS,
    fixed_point_image,
    greedy_token,
    greedy_tokens,
    sample_token,
    sample_tokens,
)
from refute.kernels.softmax import softmax
from test_bits import F32_SPECIAL_BITS, f32_from_bits

# The interpreter evaluates kernels with numpy, which warns on overflow and NaN.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

NEG_INF = float("-inf")
SCALE = 2**PROB_FRAC_BITS

# ---------------------------------------------------------------------------
# Strategies.
# ---------------------------------------------------------------------------

LOGIT_KINDS = ("normal", "wide", "ties", "masked", "specials", "clear_max")


def make_logits(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """One float32 row of n logits of the given kind."""
    if kind == "normal":
        return (rng.standard_normal(n) * 3).astype(np.float32)
    if kind == "wide":
        return (rng.standard_normal(n) * 10.0 ** rng.integers(-3, 30)).astype(np.float32)
    if kind == "ties":
        return rng.integers(-2, 3, n).astype(np.float32)
    if kind == "masked":
        row = (rng.standard_normal(n) * 2).astype(np.float32)
        row[rng.random(n) < 0.6] = NEG_INF
        return row
    if kind == "specials":
        row = rng.standard_normal(n).astype(np.float32)
        where = rng.random(n) < 0.2
        row[where] = f32_from_bits(rng.choice(np.array(F32_SPECIAL_BITS, dtype=np.uint64), int(where.sum())))
        return row
    assert kind == "clear_max"
    row = rng.standard_normal(n).astype(np.float32)
    row[int(rng.integers(0, n))] = np.float32(20.0)
    return row


@st.composite
def logit_batches(draw, max_rows: int = 4, max_n: int = 70, n: int | None = None) -> np.ndarray:
    """float32 [rows, n] logits, each row of a drawn kind (n drawn unless given)."""
    rows = draw(st.integers(1, max_rows))
    if n is None:
        n = draw(st.one_of(st.integers(1, max_n), st.sampled_from((1, 2, 63, 65))))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return np.stack([make_logits(draw(st.sampled_from(LOGIT_KINDS)), n, rng) for _ in range(rows)])


temperatures = st.sampled_from((1.0, 0.0, 0.7, 1.3, 1e-6, 1e-38, 3e38, 0.25))
top_ks = st.one_of(st.sampled_from((0, 1, 2, 5)), st.integers(0, 80))
top_ps = st.sampled_from((1.0, 0.0, 1e-9, 0.5, 0.9, 0.95, 0.3, 0.999999))
words = st.one_of(st.sampled_from((0, 1, 2**32 - 1)), st.integers(0, 2**32 - 1))
seeds = st.one_of(st.sampled_from((0, 2**63, 2**64 - 1)), st.integers(0, 2**64 - 1))


@st.composite
def row_params(draw, rows: int) -> dict:
    """Per-row sampling parameters as tensors."""

    def col(strategy, dtype):
        return torch.tensor([draw(strategy) for _ in range(rows)], dtype=dtype)

    return dict(
        seeds=torch.tensor([s - 2**64 if s >= 2**63 else s for s in (draw(seeds) for _ in range(rows))]),
        sequences=col(words, torch.int64),
        positions=col(words, torch.int64),
        temperature=col(temperatures, torch.float32),
        top_k=col(top_ks, torch.int64),
        top_p=col(top_ps, torch.float32),
    )


def row_of(params: dict, b: int) -> dict:
    """The scalar parameters of row b, for sample_token."""
    return dict(
        seed=int(params["seeds"][b]) % 2**64,
        sequence=int(params["sequences"][b]),
        position=int(params["positions"][b]),
        temperature=float(params["temperature"][b]),
        top_k=int(params["top_k"][b]),
        top_p=float(params["top_p"][b]),
    )


# ---------------------------------------------------------------------------
# Exact oracles.
# ---------------------------------------------------------------------------


def image_oracle(p: float) -> int:
    """rne(p * 2**40) in exact rational arithmetic (Fraction rounds half to even)."""
    return round(Fraction(p) * SCALE)


def argmax_oracle(row: np.ndarray) -> int:
    """Lowest NaN index if any, else the lowest index of the max with -0 < +0."""
    nan = np.flatnonzero(np.isnan(row))
    if nan.size:
        return int(nan[0])
    return max(range(row.size), key=lambda i: (float(row[i]), not np.signbit(row[i]), -i))


def z_order(z: np.ndarray) -> list[int]:
    """Indices by z descending (+0 before -0), equal z by index ascending."""
    return sorted(range(z.size), key=lambda i: (-float(z[i]), bool(np.signbit(z[i])), i))


def token_oracle(logits: np.ndarray, params: dict) -> int:
    """The token of one row by the definition, with every integer step done in
    Python: sort by (z desc, index asc), top-k, exact prefix sums of the
    images of p, Gumbel argmax. The float pieces (z, scores, p) come from the
    reference kernels, whose own tests pin them."""
    n = logits.shape[0]
    t = float(np.float32(params["temperature"]))
    greedy = argmax_oracle(logits)
    if t == 0:
        return greedy
    seed_pattern = torch.tensor([params["seed"] - 2**64 if params["seed"] >= 2**63 else params["seed"]])
    z, score = philox.gumbel_scores(
        torch.from_numpy(logits[None]),
        torch.tensor([t], dtype=torch.float32),
        seed_pattern,
        torch.tensor([params["sequence"]]),
        torch.tensor([params["position"]]),
    )
    z, score = z[0].numpy(), score[0].numpy()
    if np.isnan(z).any() or np.isposinf(z).any() or np.isneginf(z).all():
        return greedy
    order = z_order(z)
    k = params["top_k"]
    kept = n if k == 0 or k > n else k
    top_p = np.float32(params["top_p"])
    if top_p < 1:
        mask = torch.zeros(n, dtype=torch.bool)
        mask[order[:kept]] = True
        p = softmax(torch.from_numpy(z[None]), mask=mask[None])[0].numpy()
        threshold = image_oracle(float(top_p))
        total, length = 0, 0
        for i in order[:kept]:
            total += image_oracle(float(p[i]))
            length += 1
            if total >= threshold:
                break
        kept = length
    return max(order[:kept], key=lambda i: (float(score[i]), -i))  # highest score, then lowest index


# ---------------------------------------------------------------------------
# Integer pieces.
# ---------------------------------------------------------------------------

PROB_SPECIAL_BITS = (
    0x00000000, 0x00000001, 0x007FFFFF, 0x00800000,  # 0, subnormals, smallest normal
    0x2A800000, 0x2B000000, 0x2B400000, 0x2AC00000, 0x2B200000,  # around 2**-42 .. 2**-40: ties
    0x3F800000, 0x3F7FFFFF, 0x3F000000, 0x3E800001, 0x34000000, 0x33FFFFFF,
)


@settings(max_examples=100)
@given(st.lists(st.one_of(st.sampled_from(PROB_SPECIAL_BITS), st.integers(0, 0x3F800000)), min_size=1, max_size=64))
def test_fixed_point_image_is_exact_round_half_even(bits):
    p = f32_from_bits(bits)
    got = fixed_point_image(torch.from_numpy(p)).numpy()
    assert got.dtype == np.int64
    assert got.tolist() == [image_oracle(float(v)) for v in p]
    # The same as the float route of the reductions (exact scaling, then rne).
    np.testing.assert_array_equal(got, round_half_even_to_int64(ldexp(p, np.full(p.shape, PROB_FRAC_BITS))))


def test_fixed_point_image_ties_round_to_even():
    # 2**-41 * (2j + 1) has image j + 1/2.
    p = np.array([2.0**-41, 3 * 2.0**-41, 5 * 2.0**-41, 2.0**-42], dtype=np.float32)
    assert fixed_point_image(torch.from_numpy(p)).tolist() == [0, 2, 2, 0]


@settings(max_examples=60)
@given(logit_batches(max_rows=3), st.data())
def test_token_matches_the_exact_oracle(x, data):
    params = data.draw(row_params(x.shape[0]))
    got = sample_tokens(torch.from_numpy(x), **params)
    assert got.dtype == torch.int64 and got.shape == (x.shape[0],)
    for b in range(x.shape[0]):
        assert int(got[b]) == token_oracle(x[b], row_of(params, b)), (b, row_of(params, b), x[b])


# ---------------------------------------------------------------------------
# Defining properties (reference backend).
# ---------------------------------------------------------------------------


@settings(max_examples=40)
@given(logit_batches(max_rows=3), st.data())
def test_sampling_is_a_pure_function_of_the_row(x, data):
    params = data.draw(row_params(x.shape[0]))
    xt = torch.from_numpy(x)
    first = sample_tokens(xt, **params)
    # Unrelated work in between must not matter (no hidden state).
    sample_tokens(torch.from_numpy(np.flip(x, axis=1).copy()), **params)
    assert torch.equal(sample_tokens(xt.clone(), **params), first)
    # Each row alone, and the rows in another batch with other rows around them.
    for b in range(x.shape[0]):
        assert sample_token(xt[b], **row_of(params, b)) == int(first[b])
    others = data.draw(logit_batches(max_rows=2, n=x.shape[1]))
    other_params = data.draw(row_params(others.shape[0]))
    mixed = {key: torch.cat([other_params[key], params[key]]) for key in params}
    both = sample_tokens(torch.from_numpy(np.concatenate([others, x])), **mixed)
    assert torch.equal(both[others.shape[0]:], first)


@settings(max_examples=40)
@given(logit_batches())
def test_greedy_is_argmax_and_the_limits_of_sampling_are_greedy(x):
    xt = torch.from_numpy(x)
    rows = x.shape[0]
    greedy = greedy_tokens(xt)
    for b in range(rows):
        assert int(greedy[b]) == argmax_oracle(x[b])
        assert greedy_token(xt[b]) == int(greedy[b])
    common = dict(seeds=7, sequences=torch.arange(rows), positions=3)
    # At T = 1, z is the logits, so every filter that keeps one token is greedy.
    assert torch.equal(sample_tokens(xt, temperature=0.0, **common), greedy)
    assert torch.equal(sample_tokens(xt, top_k=1, **common), greedy)
    assert torch.equal(sample_tokens(xt, top_p=0.0, **common), greedy)
    assert torch.equal(sample_tokens(xt, top_p=1e-9, top_k=3, **common), greedy)


@settings(max_examples=30)
@given(st.integers(2, 50), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))
def test_tiny_temperature_is_greedy_on_a_clear_max(n, seed, position):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(n).astype(np.float32)
    best = int(rng.integers(0, n))
    x[best] = np.max(x) + np.float32(1.0)
    for t in (1e-3, 1e-6, 1e-30):
        assert sample_token(torch.from_numpy(x), seed=seed, sequence=0, position=position, temperature=t) == best


def test_degenerate_rows_fall_back_to_argmax():
    nan, inf = float("nan"), float("inf")
    rows = torch.tensor(
        [
            [0.0, 1.0, nan, 2.0, nan],  # NaN: the lowest NaN index
            [0.0, inf, 1.0, inf, 3.0],  # +inf: the lowest +inf index
            [NEG_INF] * 5,  # all masked: index 0
            [1e30, 2e30, 3e30, -1.0, 0.0],  # z overflows at T = 1e-10: argmax of the logits
            [-1e30, -2e30, -5e29, -1e31, -3e30],  # z all -inf at T = 1e-10: argmax of the logits
        ],
        dtype=torch.float32,
    )
    got = sample_tokens(rows, seeds=1, sequences=0, positions=0, temperature=1e-10)
    assert got.tolist() == [2, 1, 0, 2, 2]
    assert sample_tokens(rows[:3], seeds=1, sequences=0, positions=0).tolist() == [2, 1, 0]


def test_masked_tokens_are_never_sampled():
    x = torch.full((1, 40), NEG_INF)
    allowed = [3, 17, 18, 39]
    x[0, allowed] = torch.tensor([0.5, 0.0, -0.5, 1.0])
    tokens = {sample_token(x[0], seed=5, sequence=1, position=pos) for pos in range(300)}
    assert tokens == set(allowed)


@pytest.mark.parametrize(
    "top_p, kept",
    [(0.25, {0}), (0.5, {0, 1}), (0.5000001, {0, 1, 2}), (0.75, {0, 1, 2}), (0.7499999, {0, 1, 2}), (1.0, {0, 1, 2, 3})],
)
def test_top_p_keeps_the_shortest_prefix_reaching_it(top_p, kept):
    # Four equal logits: p = 1/4 exactly, images 2**38 each, so the prefix sums
    # hit 0.25, 0.5, 0.75 exactly; reaching top_p counts (>=).
    x = torch.tensor([1.5, 1.5, 1.5, 1.5, NEG_INF])
    tokens = {sample_token(x, seed=3, sequence=0, position=pos, top_p=top_p) for pos in range(200)}
    assert tokens == kept


def test_draws_change_with_position_sequence_and_seed():
    x = torch.zeros(1, 1000)
    base = dict(seed=11, sequence=2, position=9)
    first = sample_token(x[0], **base)
    for change in (dict(position=10), dict(sequence=3), dict(seed=12)):
        tokens = {sample_token(x[0], **{**base, **change}) for _ in range(2)}
        assert len(tokens) == 1  # repeatable
        assert tokens != {first}  # 1/1000 chance each of a false alarm, fixed by the seeds above


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(temperature=-1.0), ValueError),
        (dict(temperature=float("nan")), ValueError),
        (dict(temperature=float("inf")), ValueError),
        (dict(top_k=-1), ValueError),
        (dict(top_p=1.5), ValueError),
        (dict(top_p=-0.1), ValueError),
        (dict(top_p=float("nan")), ValueError),
        (dict(seeds=-1), ValueError),
        (dict(positions=2**32), ValueError),
        (dict(top_k=1.5), TypeError),
        (dict(temperature=torch.ones(3)), ValueError),
    ],
)
def test_sample_tokens_rejects_bad_parameters(kwargs, error):
    args = {"seeds": 0, "sequences": 0, "positions": 0, **kwargs}
    with pytest.raises(error):
        sample_tokens(torch.zeros(2, 5), **args)


def test_sample_tokens_rejects_bad_logits():
    with pytest.raises(TypeError):
        sample_tokens(torch.zeros(2, 5, dtype=torch.float64), seeds=0, sequences=0, positions=0)
    with pytest.raises(ValueError):
        sample_tokens(torch.zeros(2, 0), seeds=0, sequences=0, positions=0)
    with pytest.raises(ValueError):
        sample_token(torch.zeros(2, 5), seed=0, sequence=0, position=0)


# ---------------------------------------------------------------------------
# The distribution.
# ---------------------------------------------------------------------------

CHI2_LOGITS = np.array([1.0, 0.5, -0.3, 2.0, 0.0, -1.5, 0.9], dtype=np.float32)
CHI2_DRAWS = 40000
# Critical values of chi-square at P = 1e-5 (deterministic seeds: a pass is reproducible).
CHI2_CRITICAL = {1: 19.5, 2: 23.0, 3: 25.9, 6: 33.1}


def sampled_frequencies(temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """Counts of each token over CHI2_DRAWS positions of one sequence."""
    x = torch.from_numpy(np.tile(CHI2_LOGITS, (CHI2_DRAWS, 1)))
    tokens = sample_tokens(
        x,
        seeds=2024,
        sequences=5,
        positions=torch.arange(CHI2_DRAWS),
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
    )
    return np.bincount(tokens.numpy(), minlength=CHI2_LOGITS.size)


@pytest.mark.parametrize(
    "temperature, top_k, top_p, kept",
    [
        (1.0, 0, 1.0, (3, 0, 6, 1, 4, 2, 5)),
        (0.8, 0, 1.0, (3, 0, 6, 1, 4, 2, 5)),
        (1.0, 3, 1.0, (3, 0, 6)),
        # p = .457 .168 .152 .102 .062 .046 .014 in z order 3, 0, 6, 1, 4, 2, 5:
        # cumulative .457 .625 .777 .879, so 0.85 keeps four tokens; within the
        # top four, .519 .711, so 0.6 keeps two.
        (1.0, 0, 0.85, (3, 0, 6, 1)),
        (1.0, 4, 0.6, (3, 0)),
    ],
)
def test_sampled_frequencies_match_softmax(temperature, top_k, top_p, kept):
    counts = sampled_frequencies(temperature, top_k, top_p)
    z = CHI2_LOGITS.astype(np.float64) / np.float32(temperature)
    # Probabilities over all tokens; `kept` lists tokens in z order and is the nucleus.
    full = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    order = np.argsort(-z, kind="stable")
    assert tuple(order[: len(kept)]) == kept
    assert all(counts[i] == 0 for i in range(z.size) if i not in kept)
    if top_p < 1:
        restricted = full[order[: top_k or z.size]] / full[order[: top_k or z.size]].sum()
        cumulative = np.cumsum(restricted)
        assert cumulative[len(kept) - 2] < top_p - 0.01 and cumulative[len(kept) - 1] > top_p + 0.01
    idx = np.array(kept)
    expected = full[idx] / full[idx].sum() * CHI2_DRAWS
    chi2 = float(((counts[idx] - expected) ** 2 / expected).sum())
    assert chi2 < CHI2_CRITICAL[len(kept) - 1], (chi2, counts[idx], expected)


# ---------------------------------------------------------------------------
# Both backends choose the same tokens.
# ---------------------------------------------------------------------------


@settings(max_examples=12)
@given(logit_batches(max_rows=3, max_n=40), st.data())
def test_backends_choose_the_same_tokens(x, data):
    params = data.draw(row_params(x.shape[0]))
    xt = torch.from_numpy(x)
    ref = sample_tokens(xt, backend="reference", **params)
    tri = sample_tokens(xt, backend="triton", **params)
    assert torch.equal(ref, tri), (ref, tri)
    assert torch.equal(greedy_tokens(xt, backend="triton"), greedy_tokens(xt))


def test_backends_agree_on_a_vocabulary_longer_than_a_block():
    rng = np.random.default_rng(3)
    x = torch.from_numpy((rng.standard_normal((2, 1500)) * 4).astype(np.float32))
    kwargs = dict(seeds=99, sequences=torch.tensor([0, 1]), positions=torch.tensor([5, 6]), top_k=torch.tensor([0, 50]), top_p=0.9)
    assert torch.equal(sample_tokens(x, backend="triton", **kwargs), sample_tokens(x, **kwargs))
