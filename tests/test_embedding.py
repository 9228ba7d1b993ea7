"""Embedding lookup (kernels/embedding.py): a row gather, bit for bit.

* the Triton interpreter equals the numpy reference on raw bits, and both are
  exact copies of the table rows (NaN payloads, signalling NaNs, -0 kept);
* block-size invariance (I4) and row independence (I2);
* out-of-range ids raise IndexError on both backends; input validation;
* agreement with torch's F.embedding on ordinary tables.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import refute.kernels  # noqa: F401  (chooses the interpreter before any kernel is defined)
from refute.kernels import embedding_triton
from refute.kernels.embedding import embedding, embedding_reference
from test_bits import F32_SPECIAL_BITS, f32_from_bits

BLOCKS = (16, 64, embedding_triton.DEFAULT_BLOCK_D)


@st.composite
def cases(draw, max_vocab: int = 50, max_dim: int = 300):
    """(ids int64 of a drawn shape, table float32 (V, D) of arbitrary bits)."""
    vocab = draw(st.integers(1, max_vocab))
    dim = draw(st.one_of(st.integers(1, max_dim), st.sampled_from((1, 16, 17, 255, 256, 257))))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    table_bits = rng.integers(0, 2**32, (vocab, dim), dtype=np.uint64)
    specials = rng.random((vocab, dim)) < 0.3
    table_bits[specials] = rng.choice(np.array(F32_SPECIAL_BITS, dtype=np.uint64), int(specials.sum()))
    shape = draw(st.sampled_from([(), (1,), (7,), (2, 3), (3, 1, 2)]))
    ids = rng.integers(0, vocab, shape, dtype=np.int64)
    table = torch.from_numpy(f32_from_bits(table_bits).reshape(vocab, dim))
    return torch.from_numpy(np.asarray(ids, dtype=np.int64)), table


def bits(t: torch.Tensor) -> np.ndarray:
    return t.contiguous().view(torch.int32).numpy()


@settings(max_examples=40)
@given(cases(), st.sampled_from(BLOCKS))
def test_interpreter_matches_reference_and_copies_rows(case, block):
    ids, table = case
    ref_out = embedding(ids, table)
    assert ref_out.shape == (*ids.shape, table.shape[1]) and ref_out.dtype == torch.float32
    # Bit copies of the rows (compare on the int32 bits of the table).
    np.testing.assert_array_equal(bits(ref_out), bits(table)[ids.numpy()])
    tri = embedding_triton.gather_launch(ids.reshape(-1), table, block).reshape(ref_out.shape)
    np.testing.assert_array_equal(bits(tri), bits(ref_out))


@settings(max_examples=10)
@given(cases(max_dim=80))
def test_public_api_backends_agree_and_block_size_is_invisible(case):
    ids, table = case
    out = embedding(ids, table, backend="triton")
    np.testing.assert_array_equal(bits(out), bits(embedding(ids, table)))
    for block in BLOCKS:
        got = embedding_triton.gather_launch(ids.reshape(-1), table, block)
        np.testing.assert_array_equal(bits(got), bits(out).reshape(-1, table.shape[1]))


@settings(max_examples=30)
@given(cases(max_dim=40), st.data())
def test_rows_do_not_depend_on_other_ids(case, data):
    ids, table = case
    flat = ids.reshape(-1)
    extra = torch.tensor(data.draw(st.lists(st.integers(0, table.shape[0] - 1), max_size=5)), dtype=torch.int64)
    mixed = torch.cat([extra, flat])
    for backend in ("reference", "triton"):
        got = embedding(mixed, table, backend=backend)[extra.numel() :]
        np.testing.assert_array_equal(bits(got), bits(embedding(flat, table)))


def test_signalling_nan_and_negative_zero_survive():
    raw = [0x7F800001, 0xFF800001, 0x7FA00000, 0x80000000, 0x00000001, 0xFFFFFFFF]
    table = torch.from_numpy(f32_from_bits(raw).reshape(2, 3))
    ids = torch.tensor([1, 0, 1])
    for backend in ("reference", "triton"):
        got = embedding(ids, table, backend=backend).view(torch.int32).numpy().astype(np.int64) & 0xFFFFFFFF
        assert got.tolist() == [raw[3:], raw[:3], raw[3:]]


def test_matches_torch_embedding():
    gen = torch.Generator().manual_seed(0)
    table = torch.randn(1000, 96, generator=gen)
    ids = torch.randint(0, 1000, (4, 33), generator=gen)
    for backend in ("reference", "triton"):
        np.testing.assert_array_equal(bits(embedding(ids, table, backend=backend)), bits(F.embedding(ids, table)))


@pytest.mark.parametrize("backend", ["reference", "triton"])
@pytest.mark.parametrize("bad", [-1, 10, 1 << 40])
def test_out_of_range_ids_raise_index_error(backend, bad):
    table = torch.zeros(10, 4)
    with pytest.raises(IndexError, match=rf"id {bad} is out of range for a table of 10 rows"):
        embedding(torch.tensor([[0, bad], [3, 9]]), table, backend=backend)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_empty_ids_and_zero_width_table(backend):
    assert embedding(torch.empty(0, 3, dtype=torch.int64), torch.zeros(5, 4), backend=backend).shape == (0, 3, 4)
    assert embedding(torch.tensor([1, 2]), torch.zeros(5, 0), backend=backend).shape == (2, 0)


def test_validation():
    table = torch.zeros(5, 4)
    with pytest.raises(TypeError, match="int64"):
        embedding(torch.tensor([1], dtype=torch.int32), table)
    with pytest.raises(TypeError, match="float32"):
        embedding(torch.tensor([1]), table.double())
    with pytest.raises(ValueError, match=r"\(V, D\)"):
        embedding(torch.tensor([1]), torch.zeros(5))
    with pytest.raises(TypeError, match="torch.Tensor"):
        embedding([1], table)
    with pytest.raises(ValueError, match="unknown backend"):
        embedding(torch.tensor([1]), table, backend="numpy")


def test_reference_function_gathers_bits():
    table = f32_from_bits([0x7F800001, 0x3F800000, 0x80000000, 0x7FC00001]).reshape(2, 2)
    out = embedding_reference(np.array([1, 0, 1]), table)
    np.testing.assert_array_equal(out.view(np.uint32), table.view(np.uint32)[[1, 0, 1]])
