"""Masked softmax and log-softmax (kernels/softmax.py).

* the Triton interpreter equals the numpy reference bit for bit, on the
  one-block and the chunked path, with and without masks;
* invariances: block size (I4), the rest of the batch (I2), the order of the
  row, and masked entries behaving as absent (their values never matter, and
  the kept outputs equal those of the compacted row);
* special values on both backends;
* accuracy against float64 within the documented first-order bounds.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import refute.kernels  # noqa: F401  (chooses the interpreter before any kernel below is defined)
from refute.kernels import softmax_reference, softmax_triton
from refute.kernels.softmax import log_softmax, softmax
from test_bits import F32_SPECIAL_BITS, f32_from_bits

# The interpreter evaluates kernels with numpy, which warns on overflow and NaN.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

CANONICAL_NAN = 0x7FC00000
POS_ZERO = 0x00000000
NEG_INF = -0x00800000  # 0xFF800000 as int32
ONE = 0x3F800000
BLOCKS = (16, 64, softmax_triton.DEFAULT_BLOCK)
SIZE_EDGES = (1, 2, 15, 16, 17, 63, 64, 65)
ROW_KINDS = ("logits", "wide", "bits", "specials", "ties", "neg_inf", "tiny")
MASK_KINDS = ("none", "random", "sparse", "empty_row", "one_kept")

# ---------------------------------------------------------------------------
# Strategies.
# ---------------------------------------------------------------------------


def make_row(kind: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """One float32 row of a given kind."""
    if kind == "logits":
        return (rng.standard_normal(n) * 2.0 ** int(rng.integers(-3, 7))).astype(np.float32)
    if kind == "wide":
        # Exponent fields 100..160: |x| from 2**-27 to 2**33, so exp underflows often.
        fields = rng.integers(100, 161, n, dtype=np.uint64) << np.uint64(23)
        signs = rng.integers(0, 2, n, dtype=np.uint64) << np.uint64(31)
        return f32_from_bits(signs | fields | rng.integers(0, 1 << 23, n, dtype=np.uint64))
    if kind == "bits":
        return f32_from_bits(rng.integers(0, 2**32, n, dtype=np.uint64))
    if kind == "specials":
        row = rng.standard_normal(n).astype(np.float32)
        where = rng.random(n) < 0.3
        row[where] = f32_from_bits(rng.choice(np.array(F32_SPECIAL_BITS, dtype=np.uint64), int(where.sum())))
        return row
    if kind == "ties":
        return rng.integers(-2, 3, n).astype(np.float32) * np.float32(rng.choice([0.5, 1.0, 1e-30, 1e30]))
    if kind == "neg_inf":
        row = rng.standard_normal(n).astype(np.float32)
        row[rng.random(n) < 0.5] = -np.inf
        return row
    assert kind == "tiny"
    signs = rng.integers(0, 2, n, dtype=np.uint64) << np.uint64(31)
    return f32_from_bits(rng.integers(0, 1 << 23, n, dtype=np.uint64) | signs)  # zeros and subnormals


def make_mask(kind: str, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray | None:
    """A (rows, n) bool mask of a given kind (None: no mask)."""
    if kind == "none":
        return None
    if kind == "random":
        return rng.random(shape) < 0.7
    if kind == "sparse":
        return rng.random(shape) < 0.15
    mask = rng.random(shape) < 0.7
    if kind == "empty_row":
        mask[int(rng.integers(0, shape[0]))] = False
        return mask
    assert kind == "one_kept"
    mask[:] = False
    mask[np.arange(shape[0]), rng.integers(0, shape[1], shape[0])] = True
    return mask


@st.composite
def cases(draw, max_rows: int = 3, max_n: int = 80) -> tuple[np.ndarray, np.ndarray | None]:
    """(x (rows, n) float32, mask (rows, n) bool or None)."""
    rows = draw(st.integers(1, max_rows))
    n = draw(st.one_of(st.integers(1, max_n), st.sampled_from([v for v in SIZE_EDGES if v <= max_n])))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    x = np.stack([make_row(draw(st.sampled_from(ROW_KINDS)), n, rng) for _ in range(rows)])
    return x, make_mask(draw(st.sampled_from(MASK_KINDS)), (rows, n), rng)


# ---------------------------------------------------------------------------
# Helpers.
# ---------------------------------------------------------------------------


def reference(x: np.ndarray, mask: np.ndarray | None, log: bool) -> np.ndarray:
    return (softmax_reference.log_softmax if log else softmax_reference.softmax)(x, mask)


def interpreter(
    x: np.ndarray, mask: np.ndarray | None, log: bool, block: int = softmax_triton.DEFAULT_BLOCK
) -> np.ndarray:
    keep = None if mask is None else torch.from_numpy(mask.astype(np.int8))
    return softmax_triton.softmax_launch(torch.from_numpy(np.ascontiguousarray(x)), keep, log, block).numpy()


def assert_same_bits(got: np.ndarray, expected: np.ndarray, what: str) -> None:
    assert got.dtype == expected.dtype == np.float32 and got.shape == expected.shape, what
    bad = np.argwhere(got.view(np.int32) != expected.view(np.int32))
    if bad.size:
        i = tuple(bad[0])
        raise AssertionError(f"{what}: {len(bad)} differ, first at {i}: {got[i]!r} vs {expected[i]!r}")


# ---------------------------------------------------------------------------
# Interpreter == reference, bit for bit.
# ---------------------------------------------------------------------------


@settings(max_examples=100)
@given(cases(), st.booleans(), st.sampled_from(BLOCKS))
def test_interpreter_matches_reference(case, log, block):
    x, mask = case
    assert_same_bits(interpreter(x, mask, log, block), reference(x, mask, log), f"log={log} block={block}")


@settings(max_examples=15)
@given(cases(max_rows=2, max_n=200), st.booleans())
def test_block_size_does_not_change_bits(case, log):
    x, mask = case
    results = [interpreter(x, mask, log, block) for block in (16, 32, 256)]
    for r in results[1:]:
        assert_same_bits(r, results[0], "block size")


@settings(max_examples=10)
@given(cases(max_rows=4, max_n=40), st.booleans(), st.sampled_from(["full", "row", "column", "none"]))
def test_public_api_backends_agree_with_broadcast_masks(case, log, mask_shape):
    x, _ = case
    rows, n = x.shape
    rng = np.random.default_rng(rows * 1000 + n)
    xt = torch.from_numpy(x).reshape(rows, 1, n)  # two leading dimensions
    mask = {
        "full": torch.from_numpy(rng.random((rows, 1, n)) < 0.6),
        "row": torch.from_numpy(rng.random(n) < 0.6),  # one mask for every row
        "column": torch.from_numpy(rng.random((rows, 1, 1)) < 0.6),  # whole rows on/off
        "none": None,
    }[mask_shape]
    fn = log_softmax if log else softmax
    ref = fn(xt, mask, backend="reference")
    tri = fn(xt, mask, backend="triton")
    assert ref.shape == tri.shape == xt.shape and ref.dtype == torch.float32
    assert_same_bits(tri.numpy(), ref.numpy(), mask_shape)
    expected = reference(x, None if mask is None else mask.expand(xt.shape).reshape(rows, n).numpy(), log)
    assert_same_bits(ref.reshape(rows, n).numpy(), expected, "public vs module reference")


# ---------------------------------------------------------------------------
# Invariances of the definition (reference; the interpreter equals it).
# ---------------------------------------------------------------------------


@settings(max_examples=150)
@given(cases(max_rows=3, max_n=120), st.booleans(), st.data())
def test_masked_entries_are_absent(case, log, data):
    x, mask = case
    if mask is None:
        mask = np.ones(x.shape, dtype=bool)
    out = reference(x, mask, log)
    # Masked values never matter, whatever garbage they hold.
    garbage = np.where(mask, x, f32_from_bits([data.draw(st.sampled_from(F32_SPECIAL_BITS))])[0])
    assert_same_bits(reference(garbage, mask, log), out, "garbage in masked entries")
    # Masked outputs are +0 / -inf; kept outputs are those of the compacted row.
    assert (out.view(np.int32)[~mask] == (NEG_INF if log else POS_ZERO)).all()
    for i in range(x.shape[0]):
        kept = x[i, mask[i]]
        if kept.size:
            assert_same_bits(out[i, mask[i]], reference(kept[None, :], None, log)[0], f"compacted row {i}")


@settings(max_examples=100)
@given(cases(max_rows=4, max_n=100), st.booleans(), st.randoms(use_true_random=False))
def test_rows_are_independent_and_order_free(case, log, rnd):
    x, mask = case
    out = reference(x, mask, log)
    for i in range(x.shape[0]):
        alone = reference(x[i : i + 1], None if mask is None else mask[i : i + 1], log)
        assert_same_bits(alone[0], out[i], f"row {i} alone vs in the batch")
    perm = np.array(rnd.sample(range(x.shape[1]), x.shape[1]))
    permuted = reference(x[:, perm], None if mask is None else mask[:, perm], log)
    assert_same_bits(permuted, out[:, perm], "column permutation")


@settings(max_examples=6)
@given(cases(max_rows=3, max_n=50), st.booleans())
def test_interpreter_rows_are_batch_invariant(case, log):
    x, mask = case
    whole = interpreter(x, mask, log)
    for i in range(x.shape[0]):
        alone = interpreter(x[i : i + 1], None if mask is None else mask[i : i + 1], log)
        assert_same_bits(alone[0], whole[i], f"row {i}")


# ---------------------------------------------------------------------------
# Special values, on both backends.
# ---------------------------------------------------------------------------

INF, NAN = math.inf, math.nan


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize(
    "row,keep,softmax_bits,log_softmax_bits",
    [
        # A kept NaN, a kept +inf, or only -inf kept: every kept output is NaN.
        ([1.0, NAN, 2.0], None, [CANONICAL_NAN] * 3, [CANONICAL_NAN] * 3),
        ([1.0, NAN, 2.0], [True, False, True], None, None),  # a masked NaN is harmless
        ([INF, 1.0], None, [CANONICAL_NAN] * 2, [CANONICAL_NAN] * 2),
        ([-INF, -INF], None, [CANONICAL_NAN] * 2, [CANONICAL_NAN] * 2),
        ([-INF, 0.0, NAN], [True, True, False], [POS_ZERO, ONE, POS_ZERO], [NEG_INF, POS_ZERO, NEG_INF]),
        # No kept entry: +0 / -inf everywhere.
        ([1.0, 2.0], [False, False], [POS_ZERO] * 2, [NEG_INF] * 2),
        # One kept entry: exactly 1 / +0.
        ([3.0e38], None, [ONE], [POS_ZERO]),
        ([-0.0, 5.0], [True, False], [ONE, POS_ZERO], [POS_ZERO, NEG_INF]),
        # Far below the max: exp underflows to +0, log-softmax stays finite.
        ([0.0, -200.0], None, [ONE, POS_ZERO], [POS_ZERO, 0xC3480000]),
    ],
)
def test_special_values(backend, row, keep, softmax_bits, log_softmax_bits):
    x = torch.tensor([row], dtype=torch.float32)
    mask = None if keep is None else torch.tensor([keep])
    p = softmax(x, mask, backend=backend).numpy().view(np.uint32)[0]
    lp = log_softmax(x, mask, backend=backend).numpy().view(np.uint32)[0]
    if softmax_bits is None:  # compare with the row without its masked entry
        kept = x[:, torch.tensor(keep)]
        q = softmax(kept, backend=backend).numpy().view(np.uint32)[0]
        assert p.tolist() == [q[0], POS_ZERO, q[1]]
        return
    assert p.tolist() == [b & 0xFFFFFFFF for b in softmax_bits]
    assert lp.tolist() == [b & 0xFFFFFFFF for b in log_softmax_bits]


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("shape", [(0,), (3, 0), (0, 5), (2, 0, 4)])
def test_empty_shapes(backend, shape):
    x = torch.zeros(shape)
    assert softmax(x, backend=backend).shape == shape
    assert log_softmax(x, torch.ones(shape, dtype=torch.bool), backend=backend).shape == shape


def test_uniform_rows_are_exact():
    # n equal values: e_i = 1 and s = n exactly, so p = fl(1/n).
    for n in (1, 3, 7, 1000):
        p = softmax(torch.full((1, n), -4.25)).numpy()
        assert (p == np.float32(1.0) / np.float32(n)).all()


# ---------------------------------------------------------------------------
# Accuracy against float64 (the only tests with tolerances).
# ---------------------------------------------------------------------------


def first_order_bounds(x: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(exact p, exact log p, softmax relative bound, log_softmax absolute bound)
    in float64 for finite x (docs/numerics.md):
    rel(p_i) <= 2**-24 (|x_i - m| + W + 6) + n 2**-40 and
    abs(log p_i) <= 2**-24 (2 |x_i - m| + 3 log s + W + 3) + n 2**-40,
    with W = sum_j p_j |x_j - m| the p-weighted distance from the max."""
    x64 = np.where(keep, x.astype(np.float64), -np.inf)
    m = x64.max(axis=-1, keepdims=True)
    d = np.where(keep, m - x64, 0.0)
    e = np.where(keep, np.exp(-d), 0.0)
    s = e.sum(axis=-1, keepdims=True)
    p = e / s
    w = (p * d).sum(axis=-1, keepdims=True)
    n = x.shape[-1]
    rel = 2.0**-24 * (d + w + 6) + n * 2.0**-40
    absolute = 2.0**-24 * (2 * d + 3 * np.log(s) + w + 3) + n * 2.0**-40
    return p, np.where(keep, np.log(e) - np.log(s), -np.inf), rel, absolute


@pytest.mark.parametrize("scale", [0.25, 1.0, 8.0, 64.0])
def test_accuracy_against_float64(scale):
    rng = np.random.default_rng(int(scale * 4))
    worst_rel, worst_abs = 0.0, 0.0
    for n in (1, 7, 100, 1000, 5000):
        x = (rng.standard_normal((8, n)) * scale).astype(np.float32)
        keep = rng.random((8, n)) < 0.8
        keep[:, 0] = True
        p = softmax_reference.softmax(x, keep).astype(np.float64)
        lp = softmax_reference.log_softmax(x, keep).astype(np.float64)
        p64, lp64, rel, absolute = first_order_bounds(x, keep)
        normal = keep & (p64 >= 2.0**-126)  # subnormal p has an absolute error floor
        ratio = np.abs(p - p64)[normal] / (rel * p64)[normal]
        assert ratio.max() <= 1.0, ratio.max()
        assert np.all(np.abs(p - p64)[keep & ~normal] <= 2.0**-149 + (rel * p64)[keep & ~normal])
        ratio_log = np.abs(lp - lp64)[keep] / absolute[keep]
        assert ratio_log.max() <= 1.0, ratio_log.max()
        worst_rel, worst_abs = max(worst_rel, ratio.max()), max(worst_abs, ratio_log.max())
    # The bound is not loose by orders of magnitude.
    assert worst_rel > 0.05 and worst_abs > 0.05, (worst_rel, worst_abs)


def test_matches_torch_float32_closely():
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((16, 4096)) * 4).astype(np.float32)
    ours = softmax(torch.from_numpy(x))
    theirs = torch.softmax(torch.from_numpy(x), dim=-1)
    assert torch.allclose(ours, theirs, rtol=2e-6, atol=0)
    ours_log = log_softmax(torch.from_numpy(x))
    assert torch.allclose(ours_log, torch.log_softmax(torch.from_numpy(x), dim=-1), rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------
# Argument checking.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "x,mask,error",
    [
        ([1.0, 2.0], None, TypeError),  # not a tensor
        (torch.zeros(3, dtype=torch.float64), None, TypeError),
        (torch.tensor(1.0), None, ValueError),  # 0-d
        (torch.zeros(2, 3), torch.ones(2, 3), TypeError),  # float mask
        (torch.zeros(2, 3), torch.ones(3, 3, dtype=torch.bool), ValueError),  # does not broadcast
        (torch.zeros(2, 3), torch.ones(2, 2, 3, dtype=torch.bool), ValueError),  # broadcasts to a larger shape
        (torch.zeros(2, 3), [True, False, True], TypeError),
    ],
)
def test_invalid_arguments_are_rejected(x, mask, error):
    with pytest.raises(error):
        softmax(x, mask)
    with pytest.raises(error):
        log_softmax(x, mask, backend="triton")


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend"):
        softmax(torch.zeros(2, 3), backend="cuda")


def test_float_constants_are_exact_in_float32():
    for v in (softmax_reference.NEG_INF, softmax_reference.ZERO, softmax_triton._NEG_INF.value):
        assert float(np.float32(v)) == float(v)
