"""Tensor roots and their proofs (compute/merkle.py, docs/protocol.md "Tensor roots").

The roots are checked against a naive implementation written here from the byte
specification alone (padding leaves hashed level by level, no shortcuts), and
pinned by known answers; the compiled tree hasher is checked against the
pycryptodome one. Proofs must round-trip for every dtype and shape (empty and
0-d included) and every single-byte change to a proof, its header, its index or
the root must be rejected.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import struct
import warnings

import numpy as np
import pytest
import torch
from Crypto.Hash import keccak
from hypothesis import given, settings
from hypothesis import strategies as st

from refute.compute import merkle as M
from refute.compute.merkle import (
    CHUNK_BYTES,
    DTYPES,
    ElementProof,
    Header,
    ProofError,
    RangeProof,
    TensorTree,
    tensor_root,
    verify_element,
    verify_range,
)

# ---------------------------------------------------------------------------
# An independent implementation of the byte spec (docs/protocol.md).
# ---------------------------------------------------------------------------


def _h(b: bytes) -> bytes:
    return keccak.new(digest_bits=256, data=b).digest()


SPEC_CODES = {"f32": 1, "bf16": 2, "f16": 3, "i64": 4, "i32": 5, "bool": 6}


def spec_root(data: bytes, dtype: str, shape: tuple[int, ...]) -> bytes:
    header = bytes([SPEC_CODES[dtype], len(shape)]) + b"".join(struct.pack(">Q", d) for d in shape)
    leaves = [_h(b"\x01" + data[i : i + 256].ljust(256, b"\0")) for i in range(0, len(data), 256)]
    width = 1
    while width < len(leaves):
        width *= 2
    level = leaves + [bytes(32)] * (width - len(leaves))
    while len(level) > 1:
        level = [_h(b"\x02" + level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return _h(b"\x03" + _h(b"\x00" + header) + level[0])


def spec_bytes(t: torch.Tensor) -> bytes:
    """Canonical data bytes, independently of merkle.py (this host is little-endian)."""
    t = t.contiguous().reshape(-1)
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.view(torch.int16)
    elif t.dtype == torch.bool:
        t = t.view(torch.uint8)
    return t.numpy().tobytes()


TORCH_DTYPES = {name: d.torch_dtype for name, d in DTYPES.items()}


def spec_verify_range(
    root: bytes, dtype: str, shape: tuple[int, ...], first: int, chunks: bytes, siblings: list[bytes]
) -> bool:
    """The docs' verification loop: leaves first..first+m-1 up to the root."""
    numel = int(np.prod(shape, dtype=object)) if shape else 1
    n_chunks = -(-numel * {"f32": 4, "bf16": 2, "f16": 2, "i64": 8, "i32": 4, "bool": 1}[dtype] // 256)
    depth = (n_chunks - 1).bit_length()
    nodes = [_h(b"\x01" + chunks[i : i + 256]) for i in range(0, len(chunks), 256)]
    lo, hi, sib = first, first + len(nodes), list(siblings)
    for _ in range(depth):
        if lo % 2 == 1:
            nodes.insert(0, sib.pop(0))
            lo -= 1
        if hi % 2 == 1:
            nodes.append(sib.pop(0))
            hi += 1
        nodes = [_h(b"\x02" + nodes[i] + nodes[i + 1]) for i in range(0, len(nodes), 2)]
        lo, hi = lo // 2, hi // 2
    header = bytes([SPEC_CODES[dtype], len(shape)]) + b"".join(struct.pack(">Q", d) for d in shape)
    return not sib and _h(b"\x03" + _h(b"\x00" + header) + nodes[0]) == root


def spec_verify_element(
    root: bytes, dtype: str, shape: tuple[int, ...], chunk_index: int, chunk: bytes, siblings: list[bytes]
) -> bool:
    """The docs' single-leaf loop: bit k of the chunk index says which side sibling k is on."""
    node = _h(b"\x01" + chunk)
    for k, s in enumerate(siblings):
        node = _h(b"\x02" + s + node) if (chunk_index >> k) & 1 else _h(b"\x02" + node + s)
    header = bytes([SPEC_CODES[dtype], len(shape)]) + b"".join(struct.pack(">Q", d) for d in shape)
    return _h(b"\x03" + _h(b"\x00" + header) + node) == root


def test_constants_match_the_spec() -> None:
    assert CHUNK_BYTES == 256
    assert M.EMPTY == bytes(32)
    assert {n: d.code for n, d in DTYPES.items()} == SPEC_CODES
    assert M.keccak256(b"").hex() == "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"


# Pinned roots: a change to any byte of the format shows up here.
KNOWN_ROOTS = {
    # 600 bytes: three chunks (the last 88 bytes long), one padding leaf, depth 2
    "arange150_f32_3x50": "5bc681c64ba52ddb9747ba38ff3999c1a5d5dc6f8fe8f6205b3a29df76b8b70a",
    "scalar_f32_1.5": "df00844c1bace02c9b4de0429fc8bf76b3619aa3ac99f1b5b43b70507d3e0a4d",
    "empty_i64_0x3": "6ec257418493bf897f827c368eba27237137027e4d70dbcb3e8a47449e087e51",
}


def _known_tensors() -> dict[str, torch.Tensor]:
    return {
        "arange150_f32_3x50": torch.arange(150, dtype=torch.float32).reshape(3, 50),
        "scalar_f32_1.5": torch.tensor(1.5, dtype=torch.float32),
        "empty_i64_0x3": torch.zeros(0, 3, dtype=torch.int64),
    }


@pytest.mark.parametrize("name", sorted(KNOWN_ROOTS))
def test_known_answer(name: str) -> None:
    t = _known_tensors()[name]
    dtype = {torch.float32: "f32", torch.int64: "i64"}[t.dtype]
    expected = spec_root(spec_bytes(t), dtype, tuple(t.shape))
    assert expected.hex() == KNOWN_ROOTS[name]
    assert tensor_root(t) == expected
    assert TensorTree.from_tensor(t).root == expected


# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------


@st.composite
def tensors(draw: st.DrawFn, max_numel: int = 1500, min_numel: int = 0) -> torch.Tensor:
    dtype = draw(st.sampled_from(sorted(DTYPES)))
    ndim = draw(st.integers(0, 4))
    shape = tuple(draw(st.lists(st.integers(0 if min_numel == 0 else 1, 12), min_size=ndim, max_size=ndim)))
    numel = int(np.prod(shape, dtype=np.int64))
    if numel > max_numel or numel < min_numel:
        shape = (draw(st.integers(max(min_numel, 1), max_numel)),)
        numel = shape[0]
    size = DTYPES[dtype].itemsize
    raw = np.frombuffer(draw(st.binary(min_size=numel * size, max_size=numel * size)), dtype=np.uint8).copy()
    if dtype == "bool":
        raw &= 1
    if numel == 0:
        return torch.empty(shape, dtype=TORCH_DTYPES[dtype])
    return torch.from_numpy(raw).view(TORCH_DTYPES[dtype]).reshape(shape)


def _dtype_name(t: torch.Tensor) -> str:
    return next(n for n, d in TORCH_DTYPES.items() if d == t.dtype)


# ---------------------------------------------------------------------------
# Roots
# ---------------------------------------------------------------------------


@settings(max_examples=150)
@given(tensors())
def test_root_matches_the_spec(t: torch.Tensor) -> None:
    assert tensor_root(t) == spec_root(spec_bytes(t), _dtype_name(t), tuple(t.shape))


@settings(max_examples=60)
@given(tensors(min_numel=1), st.data())
def test_root_changes_with_any_byte_dtype_or_shape(t: torch.Tensor, data: st.DataObject) -> None:
    root, name, raw = tensor_root(t), _dtype_name(t), bytearray(spec_bytes(t))
    pos = data.draw(st.integers(0, len(raw) - 1))
    raw[pos] ^= data.draw(st.integers(1, 255))
    assert TensorTree.from_bytes(bytes(raw), name, t.shape).root != root
    for other in DTYPES:
        if other != name and DTYPES[other].itemsize == DTYPES[name].itemsize:
            assert TensorTree.from_bytes(spec_bytes(t), other, t.shape).root != root
    for shape in {(t.numel(),), (1, t.numel()), (t.numel(), 1), tuple(t.shape) + (1,)} - {tuple(t.shape)}:
        assert TensorTree.from_bytes(spec_bytes(t), name, shape).root != root


def test_root_of_a_view_is_the_root_of_its_contents() -> None:
    t = torch.randn(40, 30)
    assert tensor_root(t.T) == tensor_root(t.T.contiguous()) != tensor_root(t)
    assert tensor_root(t[::2]) == tensor_root(t[::2].clone())


def test_root_keeps_signed_zeros_and_nans_apart() -> None:
    assert tensor_root(torch.tensor([0.0])) != tensor_root(torch.tensor([-0.0]))
    nan = torch.tensor([float("nan")])
    assert tensor_root(nan) != tensor_root(nan.view(torch.int32).add(1).view(torch.float32))


def test_header_encoding() -> None:
    h = Header("bf16", (3, 2**40))
    assert h.encode() == bytes([2, 2]) + (3).to_bytes(8, "big") + (2**40).to_bytes(8, "big")
    assert Header("f32", ()).encode() == b"\x01\x00"
    assert Header("i32", (5, 100)).n_chunks == 8 and Header("i32", (5, 100)).depth == 3
    assert Header("i64", (0,)).n_chunks == 0 and Header("i64", (0,)).depth == 0
    bad = (("f64", (1,)), ("f32", [1]), ("f32", (-1,)), ("f32", (2**64,)), ("f32", (1.0,)), ("f32", (1,) * 256))
    for dtype, shape in bad:
        with pytest.raises(ValueError):
            Header(dtype, shape)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Header("f32", (2**40, 2**40))  # more chunks than a u64 index can address


@pytest.mark.skipif(M.hashing_backend() != "native", reason="no native hasher: only pycryptodome's")
@settings(max_examples=40)
@given(st.integers(1, 5000), st.sampled_from([64, 128, 136, 200, 256, 1024, 1088]), st.integers(0, 2**32),
       st.integers(1, 5))
def test_native_levels_equal_pycryptodome(n: int, chunk: int, seed: int, threads: int) -> None:
    # min_leaves=1 lets even a few leaves split across threads, so the subtree runs'
    # boundaries and the levels above them are exercised at every size.
    data = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)
    assert M._levels_native(M._native(), data, chunk, threads, min_leaves=1) == M._levels_python(data, chunk)


@pytest.mark.skipif(M.hashing_backend() != "native", reason="no native hasher: only pycryptodome's")
def test_native_levels_threaded() -> None:
    data = np.random.default_rng(1).integers(0, 256, 3 << 20, dtype=np.uint8)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = M._levels(data)
        torch.set_num_threads(4)
        assert M._levels(data) == one
    finally:
        torch.set_num_threads(threads)
    assert [len(level) // 32 for level in one] == M._level_sizes(-(-data.size // CHUNK_BYTES))
    assert one[-1] == M._levels_python(data, CHUNK_BYTES)[-1]


def test_native_hasher_is_used_where_a_compiler_exists() -> None:
    # A native build that fails its self-test falls back silently but for a warning;
    # on a machine with a C compiler that would be a bug.
    if shutil.which(os.environ.get("CC", "cc")) is None or os.environ.get("REFUTE_MERKLE_NATIVE") == "0":
        pytest.skip("no C compiler, or the native hasher is switched off")
    assert M.hashing_backend() == "native"


def test_native_falls_back_without_a_compiler(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("REFUTE_MERKLE_NATIVE", raising=False)
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert M._native.__wrapped__() is None
    assert any("pycryptodome" in str(w.message) for w in caught)
    monkeypatch.setenv("REFUTE_MERKLE_NATIVE", "0")
    assert M._native.__wrapped__() is None


def test_unsupported_inputs() -> None:
    with pytest.raises(TypeError):
        tensor_root(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError):
        TensorTree.from_bytes(b"\0" * 7, "f32", (2,))


# ---------------------------------------------------------------------------
# Proofs: round trips
# ---------------------------------------------------------------------------


@settings(max_examples=150)
@given(tensors(max_numel=3000, min_numel=1), st.data())
def test_element_and_range_round_trip(t: torch.Tensor, data: st.DataObject) -> None:
    tree, raw = TensorTree.from_tensor(t), spec_bytes(t)
    assert tree.root == tensor_root(t)
    size, n = DTYPES[tree.header.dtype].itemsize, t.numel()
    i = data.draw(st.integers(0, n - 1))
    proof = tree.prove_element(i)
    assert len(proof.chunk) == CHUNK_BYTES and len(proof.siblings) == tree.header.depth
    assert proof.chunk_index == i * size // CHUNK_BYTES
    assert verify_element(tree.root, proof) == raw[i * size : (i + 1) * size]
    start = data.draw(st.integers(0, n - 1))
    stop = data.draw(st.integers(start + 1, n))
    rp = tree.prove_range(start, stop)
    assert verify_range(tree.root, rp) == raw[start * size : stop * size]
    assert len(rp.siblings) <= 2 * tree.header.depth
    h = tree.header
    assert spec_verify_element(tree.root, h.dtype, h.shape, proof.chunk_index, proof.chunk, list(proof.siblings))
    assert spec_verify_range(tree.root, h.dtype, h.shape, rp.first_chunk, rp.chunks, list(rp.siblings))
    assert ElementProof.from_json(json.dumps(proof.to_json())) == proof
    assert RangeProof.from_json(rp.to_json()) == rp


def test_whole_tensor_range_needs_no_siblings() -> None:
    t = torch.randn(7, 100)
    tree = TensorTree.from_tensor(t)
    rp = tree.prove_range(0, t.numel())
    assert rp.siblings == () or all(s in M._Z for s in rp.siblings)  # only padding subtrees
    assert verify_range(tree.root, rp) == spec_bytes(t)


def test_zero_dim_and_empty_tensors() -> None:
    t = torch.tensor(-2.5)
    tree = TensorTree.from_tensor(t)
    assert tree.n_chunks == 1 and tree.header.shape == ()
    assert verify_element(tree.root, tree.prove_element(0)) == struct.pack("<f", -2.5)
    assert verify_range(tree.root, tree.prove_range(0, 1)) == struct.pack("<f", -2.5)
    with pytest.raises(IndexError):
        tree.prove_element(1)
    for empty in (torch.zeros(0), torch.zeros(4, 0, 2, dtype=torch.bool)):
        tree = TensorTree.from_tensor(empty)
        assert tree.n_chunks == 0 and tree.data_root == M.EMPTY
        assert tree.root == spec_root(b"", _dtype_name(empty), tuple(empty.shape))
        with pytest.raises(IndexError):
            tree.prove_element(0)
        with pytest.raises(ProofError):
            verify_element(tree.root, ElementProof(tree.header, 0, bytes(CHUNK_BYTES), ()))
    empties = (torch.zeros(0), torch.zeros(0, 1), torch.zeros(1, 0), torch.zeros(0, dtype=torch.int32))
    roots = {tensor_root(e) for e in empties}
    assert len(roots) == 4


def test_prove_rejects_bad_indices() -> None:
    tree = TensorTree.from_tensor(torch.arange(10))
    for start, stop in ((-1, 2), (3, 3), (5, 2), (0, 11)):
        with pytest.raises(IndexError):
            tree.prove_range(start, stop)
    for i in (-1, 10):
        with pytest.raises(IndexError):
            tree.prove_element(i)
    assert tree.prove_element(np.int64(3)).index == 3


# ---------------------------------------------------------------------------
# Proofs: tampering
# ---------------------------------------------------------------------------


def _flip(b: bytes, pos: int, mask: int = 1) -> bytes:
    return b[:pos] + bytes([b[pos] ^ mask]) + b[pos + 1 :]


def _rejected(verify, root: bytes, proof) -> bool:  # noqa: ANN001
    try:
        verify(root, proof)
    except ProofError:
        return True
    return False


# 700 x 3 f32 = 8400 bytes: 33 chunks (the last one partial), depth 6 with padding subtrees on the right.
FIXED = torch.from_numpy(np.random.default_rng(7).standard_normal((700, 3)).astype(np.float32))


@pytest.mark.parametrize("index", [0, 1000, 2099])  # first chunk, a middle one, the last (partial) one
def test_every_byte_of_an_element_proof_matters(index: int) -> None:
    tree = TensorTree.from_tensor(FIXED)
    proof = tree.prove_element(index)
    assert verify_element(tree.root, proof) == spec_bytes(FIXED)[4 * index : 4 * index + 4]
    for pos in range(CHUNK_BYTES):
        assert _rejected(verify_element, tree.root, dataclasses.replace(proof, chunk=_flip(proof.chunk, pos))), pos
    for k, s in enumerate(proof.siblings):
        for pos in range(32):
            siblings = proof.siblings[:k] + (_flip(s, pos, 0x80),) + proof.siblings[k + 1 :]
            assert _rejected(verify_element, tree.root, dataclasses.replace(proof, siblings=siblings)), (k, pos)
    for pos in range(32):
        assert _rejected(verify_element, _flip(tree.root, pos), proof)


def test_index_tampering() -> None:
    tree, raw = TensorTree.from_tensor(FIXED), spec_bytes(FIXED)
    proof = tree.prove_element(1000)
    per_chunk = CHUNK_BYTES // 4
    for other in range(-3, FIXED.numel() + 3):
        if other == proof.index:
            continue
        forged = dataclasses.replace(proof, index=other)
        if 0 <= other < FIXED.numel() and other // per_chunk == proof.chunk_index:
            # Another element of the same chunk: still a true statement about the tensor.
            assert verify_element(tree.root, forged) == raw[4 * other : 4 * other + 4]
        else:
            assert _rejected(verify_element, tree.root, forged), other
    assert _rejected(verify_element, tree.root, dataclasses.replace(proof, index=True))


def test_header_tampering() -> None:
    tree = TensorTree.from_tensor(FIXED)
    proof = tree.prove_element(1000)
    rp = tree.prove_range(990, 1400)
    shapes = [(700, 4), (701, 3), (699, 3), (3, 700), (2100,), (700, 3, 1), (1, 700, 3), (350, 6), (2100, 1)]
    headers = [Header(d, (700, 3)) for d in DTYPES if d != "f32"] + [Header("f32", s) for s in shapes]
    for h in headers:
        assert _rejected(verify_element, tree.root, dataclasses.replace(proof, header=h)), h
        assert _rejected(verify_range, tree.root, dataclasses.replace(rp, header=h)), h


def test_structural_tampering() -> None:
    tree = TensorTree.from_tensor(FIXED)
    proof = tree.prove_element(2099)
    bad = [
        dataclasses.replace(proof, siblings=proof.siblings[:-1]),
        dataclasses.replace(proof, siblings=proof.siblings + (bytes(32),)),
        dataclasses.replace(proof, siblings=proof.siblings[:-1] + (proof.siblings[-1][:31],)),
        dataclasses.replace(proof, siblings=list(proof.siblings[:-1]) + ["00" * 32]),
        dataclasses.replace(proof, chunk=proof.chunk + b"\0"),
        dataclasses.replace(proof, chunk=proof.chunk[:-1]),
        dataclasses.replace(proof, chunk=bytearray(proof.chunk)),
        dataclasses.replace(proof, index=2100),
        dataclasses.replace(proof, index=-1),
    ]
    for p in bad:
        assert _rejected(verify_element, tree.root, p), p
    for root in (tree.root[:31], tree.root.hex(), bytearray(tree.root)):
        with pytest.raises(ProofError):
            verify_element(root, proof)  # type: ignore[arg-type]
    # A non-zero byte in the last chunk's padding is refused even though that chunk
    # hashes to a different leaf anyway: the check makes the encoding canonical.
    pad = dataclasses.replace(proof, chunk=_flip(proof.chunk, CHUNK_BYTES - 1))
    with pytest.raises(ProofError, match="padding"):
        verify_element(tree.root, pad)


@settings(max_examples=40)
@given(tensors(max_numel=2000, min_numel=2), st.data())
def test_range_proof_tampering(t: torch.Tensor, data: st.DataObject) -> None:
    tree = TensorTree.from_tensor(t)
    n = t.numel()
    start = data.draw(st.integers(0, n - 1))
    stop = data.draw(st.integers(start + 1, n))
    rp = tree.prove_range(start, stop)
    pos = data.draw(st.integers(0, len(rp.chunks) - 1))
    chunks = _flip(rp.chunks, pos, data.draw(st.integers(1, 255)))
    assert _rejected(verify_range, tree.root, dataclasses.replace(rp, chunks=chunks))
    if rp.siblings:
        k = data.draw(st.integers(0, len(rp.siblings) - 1))
        s = _flip(rp.siblings[k], data.draw(st.integers(0, 31)))
        siblings = rp.siblings[:k] + (s,) + rp.siblings[k + 1 :]
        assert _rejected(verify_range, tree.root, dataclasses.replace(rp, siblings=siblings))
        assert _rejected(verify_range, tree.root, dataclasses.replace(rp, siblings=rp.siblings[1:]))
    # Moving the window: rejected unless the new window lies in the same chunks
    # (then it is a true statement about the tensor).
    size = tree.header.itemsize
    for s2, e2 in ((start - 1, stop), (start + 1, stop), (start, stop + 1), (start, stop - 1)):
        moved = dataclasses.replace(rp, start=s2, stop=e2)
        same_chunks = 0 <= s2 < e2 <= n and (s2 * size // CHUNK_BYTES, -(-e2 * size // CHUNK_BYTES)) == (
            start * size // CHUNK_BYTES,
            -(-stop * size // CHUNK_BYTES),
        )
        if same_chunks:
            assert verify_range(tree.root, moved) == spec_bytes(t)[s2 * size : e2 * size]
        else:
            assert _rejected(verify_range, tree.root, moved)


# ---------------------------------------------------------------------------
# JSON
# ---------------------------------------------------------------------------


def test_json_shape() -> None:
    tree = TensorTree.from_tensor(torch.arange(5, dtype=torch.int32))
    j = tree.prove_element(2).to_json()
    chunk = "0x" + spec_bytes(torch.arange(5, dtype=torch.int32)).hex() + "00" * (CHUNK_BYTES - 20)
    assert j == {"dtype": "i32", "shape": [5], "index": 2, "chunk": chunk, "siblings": []}
    r = tree.prove_range(1, 4).to_json()
    assert set(r) == {"dtype", "shape", "start", "stop", "chunks", "siblings"}
    json.dumps(j), json.dumps(r)


MALFORMED_ELEMENT = [
    ("not json", "{"),
    ("not an object", "[]"),
    ("missing key", {"dtype": "f32", "shape": [3], "index": 0, "chunk": "0x"}),
    ("extra key", {"extra": 1}),
    ("index str", {"index": "0"}),
    ("index float", {"index": 0.0}),
    ("index bool", {"index": False}),
    ("index negative", {"index": -1}),
    ("dtype unknown", {"dtype": "f64"}),
    ("dtype int", {"dtype": 1}),
    ("shape tuple-ish", {"shape": "3"}),
    ("shape float", {"shape": [3.0]}),
    ("shape negative", {"shape": [-3]}),
    ("shape bool", {"shape": [True]}),
    ("chunk no 0x", {"chunk": "00"}),
    ("chunk odd", {"chunk": "0x0"}),
    ("chunk non-hex", {"chunk": "0xzz"}),
    ("chunk bytes", {"chunk": None}),
    ("siblings not list", {"siblings": "0x"}),
    ("sibling short", {"siblings": ["0x" + "00" * 31]}),
    ("sibling long", {"siblings": ["0x" + "00" * 33]}),
    ("sibling int", {"siblings": [0]}),
    ("sibling space", {"siblings": ["0x" + "00" * 31 + " 0"]}),
]


@pytest.mark.parametrize("why,change", MALFORMED_ELEMENT, ids=[m[0] for m in MALFORMED_ELEMENT])
def test_malformed_json_is_rejected(why: str, change: object) -> None:
    good = TensorTree.from_tensor(torch.ones(3)).prove_element(1).to_json()
    if isinstance(change, dict):
        obj = dict(good)
        if why == "missing key":
            del obj["siblings"]
        else:
            obj.update(change)
    else:
        obj = change
    with pytest.raises(ProofError):
        ElementProof.from_json(obj)  # type: ignore[arg-type]
    assert issubclass(ProofError, ValueError)


def test_malformed_range_json_is_rejected() -> None:
    good = TensorTree.from_tensor(torch.ones(300)).prove_range(10, 100).to_json()
    for change in ({"start": "10"}, {"stop": 1.5}, {"chunks": "0x1"}, {"index": 3}, {"siblings": ["0x00"]}):
        with pytest.raises(ProofError):
            RangeProof.from_json({**good, **change})
    with pytest.raises(ProofError):
        RangeProof.from_json({k: v for k, v in good.items() if k != "stop"})
    # Well-formed JSON that is wrong about the tensor fails at verification.
    root = TensorTree.from_tensor(torch.ones(300)).root
    with pytest.raises(ProofError):
        verify_range(root, RangeProof.from_json({**good, "stop": 301}))
    assert verify_range(root, RangeProof.from_json(json.dumps(good))) == struct.pack("<f", 1.0) * 90


def test_bench_roots() -> None:
    r = M.bench_roots(1 << 16, repeats=1)
    assert r["bytes"] == 1 << 16 and r["seconds"] > 0 and r["mb_per_s"] > 0
    assert r["backend"] in ("native", "pycryptodome")
