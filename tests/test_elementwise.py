"""Elementwise operators (kernels/elementwise.py): add, mul, gelu_erf, gelu_tanh, silu.

* the Triton interpreter equals the numpy reference on raw bits, on values
  that over-represent special values, for sizes that are not multiples of the
  block, through the launch wrappers and the public API;
* tile-size invariance (I4); every NaN is 0x7FC00000;
* the programs' constants are the documented float32 values;
* special values; input validation;
* accuracy against float64 and against torch's fp32 F.gelu / F.silu.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import refute.kernels  # noqa: F401  (chooses the interpreter before any kernel is defined)
from refute.kernels import elementwise_reference as ref
from refute.kernels import elementwise_triton
from refute.kernels.elementwise import add, gelu_erf, gelu_tanh, mul, silu
from test_bits import F32_SPECIAL_BITS, f32_bits_strategy, f32_from_bits

# The interpreter evaluates kernels with numpy, which warns on overflow and NaN.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

CANONICAL_NAN = 0x7FC00000
UNARY = {"gelu_erf": gelu_erf, "gelu_tanh": gelu_tanh, "silu": silu}
BINARY = {"add": add, "mul": mul}
BLOCKS = (16, 128, elementwise_triton.DEFAULT_BLOCK)
SIZE_EDGES = (1, 15, 16, 17, 127, 129, 1025)

# ---------------------------------------------------------------------------
# Strategies and helpers.
# ---------------------------------------------------------------------------


@st.composite
def arrays(draw, max_n: int = 300, size: int | None = None) -> np.ndarray:
    """float32 1-D array: a mix of special values, the activations' interesting
    range (|x| <= 12, incl. the erf/tanh/exp breakpoints), any bit pattern, and
    hypothesis-chosen patterns at random places."""
    n = size if size is not None else draw(st.one_of(st.integers(1, max_n), st.sampled_from(SIZE_EDGES)))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = rng.integers(0, 3, n)
    specials = f32_from_bits(rng.choice(np.array(F32_SPECIAL_BITS, dtype=np.uint64), n))
    moderate = (rng.standard_normal(n) * 4.0).astype(np.float32)
    any_bits = f32_from_bits(rng.integers(0, 2**32, n, dtype=np.uint64))
    x = np.where(kind == 0, specials, np.where(kind == 1, moderate, any_bits)).astype(np.float32)
    chosen = draw(st.lists(f32_bits_strategy(), max_size=min(n, 16)))
    x[rng.permutation(n)[: len(chosen)]] = f32_from_bits(chosen)
    return x


def bits(a: np.ndarray | torch.Tensor) -> np.ndarray:
    a = a.numpy() if isinstance(a, torch.Tensor) else a
    return np.ascontiguousarray(a, dtype=np.float32).view(np.int32)


def assert_same_bits(
    got: np.ndarray | torch.Tensor, expected: np.ndarray | torch.Tensor, x: np.ndarray, what: str
) -> None:
    g, e = bits(got), bits(expected)
    assert g.shape == e.shape, what
    bad = np.flatnonzero(g != e)
    assert bad.size == 0, (
        f"{what}: {bad.size} differ, first at {bad[0]}: x bits {hex(int(bits(x).reshape(-1)[bad[0]]) & 0xFFFFFFFF)} "
        f"got {hex(int(g.reshape(-1)[bad[0]]) & 0xFFFFFFFF)} expected {hex(int(e.reshape(-1)[bad[0]]) & 0xFFFFFFFF)}"
    )


def assert_nan_canonical(y: np.ndarray | torch.Tensor) -> None:
    b = bits(y)
    nan = (b & 0x7FFFFFFF) > 0x7F800000
    assert np.all(b[nan] == CANONICAL_NAN)


# ---------------------------------------------------------------------------
# Interpreter == reference, bit for bit.
# ---------------------------------------------------------------------------


@settings(max_examples=80)
@given(arrays(), st.sampled_from(sorted(UNARY)), st.sampled_from(BLOCKS))
def test_unary_interpreter_matches_reference(x, name, block):
    expected = ref.UNARY[name](x)
    got = elementwise_triton.launch_unary(name, torch.from_numpy(x), block)
    assert_same_bits(got, expected, x, f"{name} BLOCK={block}")
    assert_nan_canonical(expected)


@settings(max_examples=60)
@given(st.data(), st.sampled_from(sorted(BINARY)), st.sampled_from(BLOCKS))
def test_binary_interpreter_matches_reference(data, name, block):
    x = data.draw(arrays())
    y = data.draw(arrays(size=x.size))
    expected = ref.BINARY[name](x, y)
    got = elementwise_triton.launch_binary(name, torch.from_numpy(x), torch.from_numpy(y), block)
    assert_same_bits(got, expected, x, f"{name} BLOCK={block}")
    assert_nan_canonical(expected)


@settings(max_examples=15)
@given(arrays(max_n=120), st.sampled_from(sorted(UNARY)))
def test_tile_size_does_not_change_bits(x, name):
    results = [elementwise_triton.launch_unary(name, torch.from_numpy(x), block) for block in BLOCKS]
    for block, r in zip(BLOCKS[1:], results[1:]):
        assert_same_bits(r, results[0], x, f"{name} BLOCK={block} vs {BLOCKS[0]}")


BROADCASTS = [
    ((3, 5, 7), (3, 5, 7)), ((3, 5, 7), (7,)), ((3, 5, 7), (5, 1)), ((4, 6), (1, 6)), ((), ()), ((0, 3), (3,)),
]


@pytest.mark.parametrize("name", sorted(BINARY))
@pytest.mark.parametrize("shapes", BROADCASTS)
def test_public_binary_broadcasts_and_backends_agree(name, shapes):
    rng = np.random.default_rng(7)
    x = torch.from_numpy(np.asarray(rng.standard_normal(shapes[0]) * 3, dtype=np.float32))
    y = torch.from_numpy(np.asarray(rng.standard_normal(shapes[1]) * 3, dtype=np.float32))
    out_ref = BINARY[name](x, y)
    out_tri = BINARY[name](x, y, backend="triton")
    assert out_ref.shape == out_tri.shape == x.shape and out_ref.dtype == torch.float32
    assert_same_bits(out_tri, out_ref, x.numpy(), name)
    # The definition: one float32 operation per element on the broadcast operands.
    op = {"add": torch.add, "mul": torch.mul}[name]
    assert_same_bits(out_ref, op(x, y.expand(x.shape)), x.numpy(), f"{name} vs torch")


@pytest.mark.parametrize("name", sorted(UNARY))
@pytest.mark.parametrize("shape", [(), (0,), (1,), (2, 3, 5), (4, 0, 2)])
def test_public_unary_shapes_and_backends_agree(name, shape):
    x = torch.from_numpy(np.asarray(np.random.default_rng(3).standard_normal(shape) * 3, dtype=np.float32))
    out_ref = UNARY[name](x)
    out_tri = UNARY[name](x, backend="triton")
    assert out_ref.shape == out_tri.shape == x.shape and out_ref.dtype == out_tri.dtype == torch.float32
    assert_same_bits(out_tri, out_ref, x.numpy(), name)


def test_non_contiguous_inputs_give_the_same_bits():
    x = torch.from_numpy((np.random.default_rng(4).standard_normal((6, 9)) * 3).astype(np.float32))
    for backend in ("reference", "triton"):
        assert_same_bits(gelu_erf(x.t(), backend=backend), gelu_erf(x.t().contiguous()), x.numpy(), backend)
        expected = add(x.t().contiguous(), x.t().contiguous())
        assert_same_bits(add(x.t(), x.t(), backend=backend), expected, x.numpy(), backend)


# ---------------------------------------------------------------------------
# Constants and special values.
# ---------------------------------------------------------------------------


def test_constants_are_the_documented_float32_values():
    consts = ref.float_constants()
    for name, value in consts.items():
        assert float(np.float32(value)) == value, f"{name} is not a float32 value"
    assert np.float32(ref.GELU_C).view(np.uint32) == 0x3F3504F3
    assert ref.GELU_C == float(np.float32(1 / math.sqrt(2)))
    assert ref.GELU_K0 == float(np.float32(math.sqrt(2 / math.pi)))
    assert ref.GELU_K1 == float(np.float32(0.044715))


INF, NAN = math.inf, math.nan
SPECIALS = [
    # (op, x, expected bits)
    ("gelu_erf", INF, 0x7F800000),
    ("gelu_erf", -INF, CANONICAL_NAN),  # -inf * 0
    ("gelu_erf", -0.0, 0x80000000),
    ("gelu_erf", 0.0, 0x00000000),
    ("gelu_erf", -100.0, 0x80000000),  # erf(-70.7) = -1 exactly: (x/2) * +0 = -0
    ("gelu_erf", 100.0, 0x42C80000),
    ("gelu_tanh", INF, 0x7F800000),
    ("gelu_tanh", -INF, CANONICAL_NAN),
    ("gelu_tanh", -0.0, 0x80000000),
    ("gelu_tanh", 1e30, int(np.float32(1e30).view(np.uint32))),  # x**3 overflows, tanh(inf) = 1
    ("silu", INF, 0x7F800000),
    ("silu", -INF, CANONICAL_NAN),
    ("silu", -0.0, 0x80000000),
    ("silu", 0.0, 0x00000000),
]


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize(("name", "value", "expected"), SPECIALS)
def test_special_values(name, value, expected, backend):
    y = UNARY[name](torch.tensor([value], dtype=torch.float32), backend=backend)
    assert int(bits(y)[0]) & 0xFFFFFFFF == expected


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_every_nan_is_canonical(backend):
    # inf - inf gives 0xFFC00000 on x86 and another NaN on the GPU; NaN inputs
    # keep their payloads in IEEE arithmetic. The contract names one NaN.
    nans = f32_from_bits([0x7FC00000, 0xFFC00000, 0x7F800001, 0xFFFFFFFF, 0x7FA00000])
    x = torch.from_numpy(np.concatenate([nans, np.array([INF, -INF, INF], np.float32)]))
    y = torch.from_numpy(np.concatenate([nans[::-1], np.array([-INF, INF, 0.0], np.float32)]))
    outputs = [add(x, y, backend=backend), mul(x, y, backend=backend)]
    for out in outputs + [f(x, backend=backend) for f in UNARY.values()]:
        assert_nan_canonical(out)
    assert np.all(bits(add(x, y, backend=backend))[:7] == CANONICAL_NAN)
    assert bits(mul(x, y, backend=backend))[7] == CANONICAL_NAN  # inf * 0


# ---------------------------------------------------------------------------
# Validation.
# ---------------------------------------------------------------------------


def test_validation():
    x = torch.ones(3)
    with pytest.raises(TypeError, match="float32"):
        gelu_erf(torch.ones(3, dtype=torch.float64))
    with pytest.raises(TypeError, match="torch.Tensor"):
        silu(np.ones(3, np.float32))
    with pytest.raises(TypeError, match="float32"):
        add(x, torch.ones(3, dtype=torch.int32))
    with pytest.raises(ValueError, match="does not broadcast"):
        add(x, torch.ones(4))
    with pytest.raises(ValueError, match="does not broadcast"):
        mul(x, torch.ones(2, 3))  # x would broadcast to y, not y to x
    with pytest.raises(ValueError, match="unknown backend"):
        gelu_tanh(x, backend="cuda")


# ---------------------------------------------------------------------------
# Accuracy (the only place with tolerances).
# ---------------------------------------------------------------------------

ULP_UNIT = 2.0**-24


def _ulp(t: np.ndarray) -> np.ndarray:
    """ulp of float32 in the binade of the float64 values t."""
    e = np.floor(np.log2(np.maximum(np.abs(t), 2.0**-126)))
    return 2.0 ** (e - 23)


@pytest.fixture(scope="module")
def realistic() -> torch.Tensor:
    """Pre-activation-like values: N(0, 3) plus a fine grid over [-10, 10]."""
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.standard_normal(100_000) * 3, np.linspace(-10, 10, 100_001)])
    return torch.from_numpy(values.astype(np.float32))


def _truth(name: str, x64: torch.Tensor) -> np.ndarray:
    if name == "gelu_erf":
        return (x64 * 0.5 * (1 + torch.erf(x64 / math.sqrt(2)))).numpy()
    if name == "gelu_tanh":
        return (0.5 * x64 * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64**3)))).numpy()
    return (x64 * torch.sigmoid(x64)).numpy()


TORCH = {"gelu_erf": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "silu": F.silu}


@pytest.mark.parametrize("name", ["gelu_erf", "gelu_tanh"])
def test_gelu_accuracy(realistic, name):
    # 1 + erf(x) cancels for negative x, so the natural error scale (for us and
    # for torch) is |x| * 2**-24; for x >= -1 we also bound the error in ulp.
    x = realistic
    ours = UNARY[name](x).numpy().astype(np.float64)
    truth = _truth(name, x.double())
    theirs = TORCH[name](x).numpy().astype(np.float64)
    scale = np.maximum(np.abs(x.numpy().astype(np.float64)), 2.0**-100) * ULP_UNIT
    assert np.max(np.abs(ours - truth) / scale) <= 2.5  # measured 1.79 / 1.78
    ulps = (np.abs(ours - truth) / _ulp(truth))[x.numpy() >= -1]
    assert np.max(ulps) <= {"gelu_erf": 3.0, "gelu_tanh": 4.5}[name]  # measured 2.44 / 3.68
    assert np.max(np.abs(ours - theirs) / scale) <= {"gelu_erf": 6.0, "gelu_tanh": 3.0}[name]  # 4.63 / 1.97


def test_silu_accuracy(realistic):
    x = realistic
    ours = silu(x).numpy().astype(np.float64)
    truth = _truth("silu", x.double())
    theirs = F.silu(x).numpy().astype(np.float64)
    assert np.max(np.abs(ours - truth) / _ulp(truth)) <= 3.5  # measured 3.1
    assert np.max(np.abs(ours - theirs) / _ulp(theirs)) <= 4.0  # measured 3.0
