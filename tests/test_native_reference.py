"""The compiled loops of kernels/native_reference.py against the numpy programs
they fuse: the same bits on drawn inputs with special values over-represented
(and the library is really used: these tests fail where it cannot be built)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refute.kernels import (
    attention_reference,
    elementwise_reference,
    gemm_reference,
    mathlib_reference,
    native_reference,
    norm_reference,
    reduce_reference,
    softmax_reference,
)

SPECIAL_BITS = [
    0x00000000, 0x80000000, 0x00000001, 0x80000001, 0x007FFFFF, 0x00800000, 0x3F800000, 0xBF800000,
    0x7F7FFFFF, 0xFF7FFFFF, 0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00001, 0x7F800001, 0x42B17218,
    0xC2CFF1B4, 0x4079AEA4, 0x33800000, 0x4B000000, 0x4AFFFFFF, 0x3F000001,
]


def test_the_library_builds_and_passes_its_self_test():
    assert native_reference.library() is not None
    with native_reference.disabled():
        assert native_reference.library() is None


def _both(fn, *args):
    got = fn(*args)
    with native_reference.disabled():
        want = fn(*args)
    if isinstance(got, tuple):
        return list(got), list(want)
    return [got], [want]


def _assert_same_bits(fn, *args):
    got, want = _both(fn, *args)
    for g, w in zip(got, want, strict=True):
        g, w = np.asarray(g), np.asarray(w)
        assert g.dtype == w.dtype and g.shape == w.shape
        assert g.tobytes() == w.tobytes()


@st.composite
def f32_arrays(draw, shape, scale_exp=st.integers(-30, 30)):
    """float32 arrays of ``shape``: normal draws scaled by a power of two, with
    special values and exact duplicates sprinkled in."""
    n = int(np.prod(shape))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * np.float32(2.0) ** draw(scale_exp)).astype(np.float32)
    k = draw(st.integers(0, max(0, n // 4)))
    idx = rng.integers(0, n, size=k) if n else np.zeros(0, np.int64)
    x[idx] = np.array(SPECIAL_BITS, dtype=np.uint32).view(np.float32)[rng.integers(0, len(SPECIAL_BITS), size=k)]
    return x.reshape(shape)


shapes_2d = st.tuples(st.integers(0, 9), st.integers(0, 70))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_exact_sum_and_norm_statistics(data):
    x = data.draw(f32_arrays(data.draw(shapes_2d)))
    _assert_same_bits(reduce_reference.exact_sum, x)
    _assert_same_bits(reduce_reference.row_var, x)
    if x.shape[1]:
        w, b = np.ones(x.shape[1], np.float32), np.zeros(x.shape[1], np.float32)
        _assert_same_bits(norm_reference.layer_norm, x, w, b, np.float32(1e-12))


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_ldexp_over_its_whole_exponent_range(data):
    from refute.kernels import bits_reference

    n = 2 * data.draw(st.integers(bits_reference.NATIVE_MIN_ELEMENTS // 2, bits_reference.NATIVE_MIN_ELEMENTS))
    x = data.draw(f32_arrays((n,)))
    k = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).integers(-381, 382, size=n).astype(np.int32)
    _assert_same_bits(bits_reference.ldexp, x, k)
    _assert_same_bits(bits_reference.ldexp, x.reshape(-1, 2), k.reshape(-1, 2)[:, :1])  # broadcast k


@settings(max_examples=60, deadline=None)
@given(st.data(), st.sampled_from(["exp", "erf", "sigmoid"]))
def test_math_programs(data, name):
    x = data.draw(f32_arrays((data.draw(st.integers(0, 300)),), st.integers(-10, 8)))
    _assert_same_bits(mathlib_reference.FUNCTIONS[name], x)


@settings(max_examples=60, deadline=None)
@given(st.data(), st.sampled_from(["gelu_erf", "silu"]))
def test_activations(data, name):
    x = data.draw(f32_arrays(data.draw(st.tuples(st.integers(0, 5), st.integers(0, 50))), st.integers(-10, 8)))
    _assert_same_bits(elementwise_reference.UNARY[name], x)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_masked_softmax_and_log_softmax(data):
    shape = data.draw(st.tuples(st.integers(0, 9), st.integers(1, 70)))  # the softmax API takes n >= 1
    x = data.draw(f32_arrays(shape, st.integers(-8, 8)))
    keep = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).random(shape) < data.draw(
        st.sampled_from([0.0, 0.5, 1.0]))
    _assert_same_bits(softmax_reference.softmax, x, keep)
    _assert_same_bits(softmax_reference.log_softmax, x, keep)
    _assert_same_bits(softmax_reference.softmax_stats, x, keep)


@settings(max_examples=60, deadline=None)
@given(st.data(), st.integers(1, 4), st.booleans(), st.booleans())
def test_gemm_with_every_slice_count_bias_and_batch(data, slices, with_bias, shared_b):
    batch = data.draw(st.integers(1, 3))
    m, k, n = (data.draw(st.integers(1, 12)) for _ in range(3))
    a = data.draw(f32_arrays((batch, m, k)))
    b = data.draw(f32_arrays((k, n) if shared_b else (batch, k, n)))
    bias = data.draw(f32_arrays((n,))) if with_bias else None
    _assert_same_bits(gemm_reference.gemm_reference, a, b, slices, bias)
    # A transposed operand (as attention passes k^T) and a prepared one.
    _assert_same_bits(gemm_reference.gemm_reference, a, np.swapaxes(a, -1, -2), slices)
    got = gemm_reference.prepare_b(b, slices)
    with native_reference.disabled():
        want = gemm_reference.prepare_b(b, slices)
    assert got.maxbits.tobytes() == want.maxbits.tobytes()
    assert np.ascontiguousarray(got.images).tobytes() == want.images.tobytes()


def test_gemm_with_a_long_reduction_and_slice_counts_past_the_float64_path():
    rng = np.random.default_rng(3)
    a = rng.standard_normal((5, 2500)).astype(np.float32)
    b = rng.standard_normal((2500, 7)).astype(np.float32)
    for slices in (2, 3, 4):
        _assert_same_bits(gemm_reference.gemm_reference, a, b, slices, None)


@pytest.mark.parametrize("hkv", [1, 2])
def test_attention(hkv):
    rng = np.random.default_rng(hkv)
    q = rng.standard_normal((2, 4, 6, 8)).astype(np.float32)
    k = rng.standard_normal((2, hkv, 9, 8)).astype(np.float32)
    v = rng.standard_normal((2, hkv, 9, 8)).astype(np.float32)
    v[1, 0, 3, 2] = np.inf
    keep = rng.random((2, 6, 9)) < 0.7
    _assert_same_bits(attention_reference.attention, q, k, v, keep, np.float32(0.35), 2)


def test_large_inputs_split_across_threads_give_the_same_bits():
    rng = np.random.default_rng(9)
    x = rng.standard_normal((300, 1000)).astype(np.float32)
    keep = rng.random(x.shape) < 0.9
    _assert_same_bits(reduce_reference.exact_sum, x)
    _assert_same_bits(softmax_reference.softmax, x, keep)
    _assert_same_bits(mathlib_reference.exp, x)
    _assert_same_bits(gemm_reference.gemm_reference, x, rng.standard_normal((1000, 200)).astype(np.float32), 2, None)
