"""Counter-based RNG (kernels/philox*.py).

* Philox4x32-10 equals the published Random123 known-answer vectors, and the
  7-round ones (a check on the round structure, not only the final words);
* the Triton device function equals the numpy reference bit for bit, and
  Triton's own ``philox_impl`` (an independent implementation);
* the uniforms: exact values ``(k + 0.5) * 2**-23``, never 0 or 1, the
  documented counter layout, batch independence, a uniformity check;
* the Gumbel scores: finite noise at the extreme uniforms, interpreter ==
  reference bit for bit on logits with special values.
"""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import refute.kernels  # noqa: F401  (chooses the interpreter before any kernel below is defined)
import triton
import triton.language as tl
from refute.kernels import philox, philox_reference, philox_triton
from refute.kernels.backend import launch
from refute.kernels.philox_triton import gumbel_f32, philox4x32_10, uniform_f32
from test_bits import F32_SPECIAL_BITS, f32_from_bits

# The interpreter evaluates kernels with numpy, which warns on overflow and NaN.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

WORD = 2**32
CANONICAL_NAN = 0x7FC00000

# Random123 kat_vectors, philox4x32 lines: (rounds, counter, key, output). The
# 10-round lines are the Philox4x32-10 answers; the 7-round lines exercise the
# same round function and key schedule with fewer rounds. Copied from
# DEShawResearch/Random123-Boost libs/random/test/test_philox.cpp, which pastes
# them from the kat_vectors file of the Random123 distribution.
PI_COUNTER = (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344)  # hex digits of pi
PI_KEY = (0xA4093822, 0x299F31D0)
ONES = 0xFFFFFFFF
KAT_VECTORS: tuple[tuple[int, tuple[int, ...], tuple[int, ...], tuple[int, ...]], ...] = (
    (10, (0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    (10, (ONES,) * 4, (ONES,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    (10, PI_COUNTER, PI_KEY, (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
    (7, (0, 0, 0, 0), (0, 0), (0x5F6FB709, 0x0D893F64, 0x4F121F81, 0x4F730A48)),
    (7, (ONES,) * 4, (ONES,) * 2, (0x5207DDC2, 0x45165E59, 0x4D8EE751, 0x8C52F662)),
    (7, PI_COUNTER, PI_KEY, (0x4DFCCABA, 0x190A87F0, 0xC47362BA, 0xB6B5242A)),
)
KAT_10 = [v[1:] for v in KAT_VECTORS if v[0] == 10]

WORD_SPECIALS = (0, 1, 2, 0x7FFFFFFF, 0x80000000, 0x80000001, 0xFFFFFFFE, 0xFFFFFFFF, 0x9E3779B9, 0xD2511F53)
words = st.one_of(st.sampled_from(WORD_SPECIALS), st.integers(0, WORD - 1))
SEED_SPECIALS = (0, 1, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1)
seeds = st.one_of(st.sampled_from(SEED_SPECIALS), st.integers(0, 2**64 - 1))


def as_pattern(seed: int) -> int:
    """int64 bit pattern of a uint64 seed."""
    return seed - 2**64 if seed >= 2**63 else seed


# ---------------------------------------------------------------------------
# Known answers and independent implementations.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("rounds, counter, key, expected", KAT_VECTORS)
def test_reference_matches_random123_known_answers(rounds, counter, key, expected):
    got = philox_reference.philox4x32(np.array(counter), np.array(key), rounds=rounds)
    assert got.dtype == np.uint32
    assert tuple(int(w) for w in got) == expected


@pytest.mark.parametrize("backend", refute.kernels.BACKENDS)
def test_public_api_matches_known_answers_on_both_backends(backend):
    counter = torch.tensor([c for c, _, _ in KAT_10], dtype=torch.int64)
    key = torch.tensor([k for _, k, _ in KAT_10], dtype=torch.int64)
    got = philox.philox4x32(counter, key, backend=backend)
    assert got.dtype == torch.int64
    assert got.tolist() == [list(e) for _, _, e in KAT_10]


def _python_philox(counter: tuple[int, ...], key: tuple[int, ...]) -> tuple[int, ...]:
    """Philox4x32-10 in Python integers: a third, loop-free-of-numpy oracle."""
    c0, c1, c2, c3 = counter
    k0, k1 = key
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c0, 0xCD9E8D57 * c2
        c0, c1, c2, c3 = (p1 >> 32) ^ c1 ^ k0, p1 % WORD, (p0 >> 32) ^ c3 ^ k1, p0 % WORD
        k0, k1 = (k0 + 0x9E3779B9) % WORD, (k1 + 0xBB67AE85) % WORD
    return c0, c1, c2, c3


@settings(max_examples=200)
@given(st.tuples(words, words, words, words), st.tuples(words, words))
def test_reference_matches_python_integer_oracle(counter, key):
    got = philox_reference.philox4x32(np.array(counter, dtype=np.int64), np.array(key, dtype=np.int64))
    assert tuple(int(w) for w in got) == _python_philox(counter, key)


@st.composite
def counter_key_batches(draw) -> tuple[np.ndarray, np.ndarray]:
    """int64 counters [n, 4] and keys [n, 2], n mostly not a multiple of a block."""
    n = draw(st.one_of(st.integers(1, 300), st.sampled_from((1, 255, 256, 257))))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = rng.integers(0, WORD, (n, 6), dtype=np.int64)
    specials = np.array(WORD_SPECIALS, dtype=np.int64)
    where = rng.random((n, 6)) < draw(st.sampled_from((0.0, 0.3, 1.0)))
    values[where] = rng.choice(specials, int(where.sum()))
    return values[:, :4].copy(), values[:, 4:].copy()


@settings(max_examples=25)
@given(counter_key_batches())
def test_interpreter_matches_reference(batch):
    counter, key = batch
    got = philox_triton.philox_launch(torch.from_numpy(counter), torch.from_numpy(key))
    np.testing.assert_array_equal(got.numpy(), philox_reference.philox4x32(counter, key).astype(np.int64))


@triton.jit
def _both_philox_kernel(ctr_ptr, key_ptr, ours_ptr, theirs_ptr, n, BLOCK: tl.constexpr):
    """Test-only: refute's Philox and triton.language.random.philox_impl on the same inputs."""
    offs = tl.arange(0, BLOCK)
    m = offs < n
    c0 = tl.load(ctr_ptr + offs * 4, mask=m, other=0).to(tl.uint32)
    c1 = tl.load(ctr_ptr + offs * 4 + 1, mask=m, other=0).to(tl.uint32)
    c2 = tl.load(ctr_ptr + offs * 4 + 2, mask=m, other=0).to(tl.uint32)
    c3 = tl.load(ctr_ptr + offs * 4 + 3, mask=m, other=0).to(tl.uint32)
    k0 = tl.load(key_ptr + offs * 2, mask=m, other=0).to(tl.uint32)
    k1 = tl.load(key_ptr + offs * 2 + 1, mask=m, other=0).to(tl.uint32)
    o0, o1, o2, o3 = philox4x32_10(c0, c1, c2, c3, k0, k1)
    t0, t1, t2, t3 = tl.random.philox_impl(c0, c1, c2, c3, k0, k1, 10)
    tl.store(ours_ptr + offs * 4, o0.to(tl.int64), mask=m)
    tl.store(ours_ptr + offs * 4 + 1, o1.to(tl.int64), mask=m)
    tl.store(ours_ptr + offs * 4 + 2, o2.to(tl.int64), mask=m)
    tl.store(ours_ptr + offs * 4 + 3, o3.to(tl.int64), mask=m)
    tl.store(theirs_ptr + offs * 4, t0.to(tl.int64), mask=m)
    tl.store(theirs_ptr + offs * 4 + 1, t1.to(tl.int64), mask=m)
    tl.store(theirs_ptr + offs * 4 + 2, t2.to(tl.int64), mask=m)
    tl.store(theirs_ptr + offs * 4 + 3, t3.to(tl.int64), mask=m)


@settings(max_examples=10)
@given(counter_key_batches())
def test_device_function_matches_tritons_own_philox(batch):
    counter, key = batch
    counter, key = counter[:64], key[:64]
    n = counter.shape[0]
    ours = torch.empty((n, 4), dtype=torch.int64)
    theirs = torch.empty((n, 4), dtype=torch.int64)
    launch(_both_philox_kernel, (1,), torch.from_numpy(counter), torch.from_numpy(key), ours, theirs, n, BLOCK=64)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_public_api_broadcasts_and_accepts_uint32():
    counter = torch.tensor([list(PI_COUNTER), [0, 0, 0, 0]], dtype=torch.int64)[:, None, :]  # [2, 1, 4]
    keys = torch.tensor([list(PI_KEY), [0, 0], [ONES, ONES]], dtype=torch.int64)  # [3, 2]
    got = philox.philox4x32(counter, keys)
    assert got.shape == (2, 3, 4)
    assert got[1, 1].tolist() == list(KAT_10[0][2])
    assert got[0, 0].tolist() == list(KAT_10[2][2])
    as_u32 = philox.philox4x32(counter.to(torch.uint32), keys.to(torch.uint32))
    assert torch.equal(as_u32, got)


@pytest.mark.parametrize(
    "counter, key, error",
    [
        (torch.tensor([0, 0, 0, -1]), torch.tensor([0, 0]), ValueError),
        (torch.tensor([0, 0, 0, WORD]), torch.tensor([0, 0]), ValueError),
        (torch.tensor([0, 0, 0]), torch.tensor([0, 0]), ValueError),
        (torch.tensor([0, 0, 0, 0], dtype=torch.int32), torch.tensor([0, 0]), TypeError),
        (torch.zeros(4), torch.tensor([0, 0]), TypeError),
    ],
)
def test_public_api_rejects_bad_words(counter, key, error):
    with pytest.raises(error):
        philox.philox4x32(counter, key)


# ---------------------------------------------------------------------------
# Uniforms.
# ---------------------------------------------------------------------------


def test_uniform_constants_are_exact_float32():
    for c in (philox_reference.UNIFORM_HALF, philox_reference.UNIFORM_SCALE):
        assert float(np.float32(c)) == c
    assert philox_reference.UNIFORM_SCALE == 2.0**-23


def test_every_uniform_is_exact_and_strictly_inside_the_unit_interval():
    # All 2**23 distinct values: word = k << 9 reaches every k.
    k = np.arange(2**23, dtype=np.uint32)
    u = philox_reference.uniform_from_words(k << np.uint32(philox_reference.UNIFORM_SHIFT))
    assert u.dtype == np.float32
    np.testing.assert_array_equal(u.astype(np.float64), (k.astype(np.float64) + 0.5) * 2.0**-23)
    assert np.all(np.diff(u) > 0)
    lo_hi = philox_reference.uniform_from_words(np.array([0, 0xFFFFFFFF], dtype=np.uint32))
    assert Fraction(float(lo_hi[0])) == Fraction(1, 2**24)
    assert Fraction(float(lo_hi[1])) == 1 - Fraction(1, 2**24)


@triton.jit
def _uniform_gumbel_kernel(w_ptr, u_ptr, g_ptr, n, BLOCK: tl.constexpr):
    """Test-only: uniform_f32 and gumbel_f32 of int64-held words."""
    offs = tl.arange(0, BLOCK)
    m = offs < n
    u = uniform_f32(tl.load(w_ptr + offs, mask=m, other=0).to(tl.uint32))
    tl.store(u_ptr + offs, u, mask=m)
    tl.store(g_ptr + offs, gumbel_f32(u), mask=m)


@settings(max_examples=10)
@given(st.lists(words, min_size=1, max_size=100))
def test_uniform_and_gumbel_device_functions_match_reference(ws):
    ws = [0, ONES] + ws  # the extreme uniforms every time
    w = np.array(ws, dtype=np.int64)
    u = torch.empty(len(ws), dtype=torch.float32)
    g = torch.empty(len(ws), dtype=torch.float32)
    launch(_uniform_gumbel_kernel, (1,), torch.from_numpy(w), u, g, len(ws), BLOCK=128)
    u_ref = philox_reference.uniform_from_words(w.astype(np.uint32))
    np.testing.assert_array_equal(u.numpy().view(np.int32), u_ref.view(np.int32))
    np.testing.assert_array_equal(g.numpy().view(np.int32), philox_reference.gumbel(u_ref).view(np.int32))


def test_gumbel_noise_is_finite_at_the_extreme_uniforms():
    u = philox_reference.uniform_from_words(np.array([0, 0xFFFFFFFF], dtype=np.uint32))
    minus_log = -refute.kernels.mathlib_reference.log(u)
    assert np.all(minus_log > 0) and np.all(np.isfinite(minus_log))  # so the outer log is finite
    g = philox_reference.gumbel(u)
    assert np.all(np.isfinite(g))
    # Against float64 math: -log(-log(u)) at 2**-24 and 1 - 2**-24.
    exact = -np.log(-np.log(u.astype(np.float64)))
    np.testing.assert_allclose(g, exact, rtol=1e-6)


@settings(max_examples=40)
@given(seeds, words, words, st.integers(1, 40))
def test_uniform_follows_the_documented_counter_layout(seed, sequence, position, n):
    u = philox.uniform(seed, sequence, position, n)
    assert u.dtype == torch.float32 and u.shape == (n,)
    for i in range(n):
        w = _python_philox((i // 4, position, sequence, philox.SAMPLING_STREAM), (seed % WORD, seed >> 32))[i % 4]
        assert float(u[i]) == ((w >> 9) + 0.5) * 2.0**-23, i


@st.composite
def draw_rows(draw, max_rows: int = 3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rows = draw(st.integers(1, max_rows))
    s = torch.tensor([as_pattern(draw(seeds)) for _ in range(rows)], dtype=torch.int64)
    q = torch.tensor([draw(words) for _ in range(rows)], dtype=torch.int64)
    p = torch.tensor([draw(words) for _ in range(rows)], dtype=torch.int64)
    return s, q, p


@settings(max_examples=15)
@given(draw_rows(), st.one_of(st.integers(1, 1100), st.sampled_from((1, 4, 1023, 1024, 1025))))
def test_uniforms_interpreter_matches_reference(rows, n):
    s, q, p = rows
    ref = philox.uniforms(s, q, p, n, backend="reference")
    tri = philox.uniforms(s, q, p, n, backend="triton")
    assert ref.shape == tri.shape == (s.shape[0], n)
    np.testing.assert_array_equal(tri.numpy().view(np.int32), ref.numpy().view(np.int32))


@settings(max_examples=30)
@given(draw_rows(max_rows=5), st.integers(1, 64))
def test_uniforms_do_not_depend_on_the_batch(rows, n):
    s, q, p = rows
    batch = philox.uniforms(s, q, p, n)
    for b in range(s.shape[0]):
        seed = int(s[b]) % 2**64
        alone = philox.uniform(seed, int(q[b]), int(p[b]), n)
        np.testing.assert_array_equal(alone.numpy().view(np.int32), batch[b].numpy().view(np.int32))
        # A prefix of the vocabulary draws the same uniforms.
        np.testing.assert_array_equal(philox.uniform(seed, int(q[b]), int(p[b]), 1).numpy(), alone[:1].numpy())


def test_uniforms_look_uniform_and_streams_differ():
    n = 1 << 16
    u = philox.uniform(1234, 7, 0, n).numpy().astype(np.float64)
    counts = np.bincount((u * 64).astype(np.int64), minlength=64)
    chi2 = float(((counts - n / 64) ** 2 / (n / 64)).sum())
    assert chi2 < 120.0, chi2  # 63 degrees of freedom: P(chi2 > 120) < 1e-5
    assert abs(u.mean() - 0.5) < 0.01
    # Each key and counter field changes the stream.
    base = philox.uniform(1234, 7, 0, 16).numpy()
    for other in (philox.uniform(1235, 7, 0, 16), philox.uniform(1234, 8, 0, 16), philox.uniform(1234, 7, 1, 16)):
        assert np.mean(other.numpy() == base) < 0.5


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(seed=-1, sequence=0, position=0, n=4), ValueError),
        (dict(seed=2**64, sequence=0, position=0, n=4), ValueError),
        (dict(seed=0, sequence=2**32, position=0, n=4), ValueError),
        (dict(seed=0, sequence=0, position=-1, n=4), ValueError),
        (dict(seed=0, sequence=0, position=0, n=-1), ValueError),
        (dict(seed=0.5, sequence=0, position=0, n=4), TypeError),
    ],
)
def test_uniform_rejects_out_of_range_arguments(kwargs, error):
    with pytest.raises(error):
        philox.uniform(**kwargs)


# ---------------------------------------------------------------------------
# Gumbel scores.
# ---------------------------------------------------------------------------

LOGIT_SPECIALS = F32_SPECIAL_BITS


@st.composite
def logit_batches(draw) -> np.ndarray:
    rows = draw(st.integers(1, 3))
    n = draw(st.one_of(st.integers(1, 200), st.sampled_from((1, 1023, 1025))))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = (rng.standard_normal((rows, n)) * draw(st.sampled_from((1.0, 30.0, 1e30)))).astype(np.float32)
    where = rng.random((rows, n)) < draw(st.sampled_from((0.0, 0.1, 0.5)))
    x[where] = f32_from_bits(rng.choice(np.array(LOGIT_SPECIALS, dtype=np.uint64), int(where.sum())))
    return x


TEMPERATURES = st.one_of(
    st.sampled_from((1.0, 0.5, 0.7, 2.0, 1e-6, 1e-30, 1e-45, 3e38)),
    st.floats(0.0009765625, 16.0, width=32),
)


@settings(max_examples=20)
@given(logit_batches(), st.data())
def test_gumbel_scores_interpreter_matches_reference(x, data):
    rows = x.shape[0]
    temp = torch.tensor([data.draw(TEMPERATURES) for _ in range(rows)], dtype=torch.float32)
    s, q, p = data.draw(draw_rows(max_rows=1))
    s, q, p = s.repeat(rows), q.repeat(rows) + torch.arange(rows), p.repeat(rows)
    q = q % WORD
    xt = torch.from_numpy(x)
    z_ref, g_ref = philox.gumbel_scores(xt, temp, s, q, p, backend="reference")
    z_tri, g_tri = philox.gumbel_scores(xt, temp, s, q, p, backend="triton")
    np.testing.assert_array_equal(z_tri.numpy().view(np.int32), z_ref.numpy().view(np.int32))
    np.testing.assert_array_equal(g_tri.numpy().view(np.int32), g_ref.numpy().view(np.int32))
    # z is the correctly rounded quotient; NaNs are canonical.
    with np.errstate(all="ignore"):
        expected_z = x / temp.numpy()[:, None]
    nan = np.isnan(expected_z)
    assert np.all(z_ref.numpy().view(np.int32)[nan] == CANONICAL_NAN)
    assert np.all(g_ref.numpy().view(np.int32)[nan] == CANONICAL_NAN)
    np.testing.assert_array_equal(z_ref.numpy()[~nan].view(np.int32), expected_z[~nan].view(np.int32))
