"""Tensor roots: keccak256 Merkle trees over tensors, with element and range proofs.

A tensor's root commits to its dtype, its shape and every bit of its data
(DESIGN section 3). docs/protocol.md, section "Tensor roots", specifies every
byte; in short:

* data: the canonical little-endian, row-major bytes, cut into chunks of
  :data:`CHUNK_BYTES` (the last one zero-padded);
* leaf ``i`` = ``keccak256(0x01 || chunk_i)``; the leaf count is padded to a
  power of two with :data:`EMPTY` (32 zero bytes, which no hash takes);
* inner node = ``keccak256(0x02 || left || right)``;
* header = ``dtype code (u8) || ndim (u8) || dims (big-endian u64 each)``,
  ``header_hash = keccak256(0x00 || header)``;
* root = ``keccak256(0x03 || header_hash || data_root)``.

The depth of the tree, hence the number of siblings in a proof, follows from the
header, so a proof cannot trade a subtree for a leaf or pad itself out.

Building a tree hashes every chunk. That runs in a small C library compiled on
first use with the system C compiler (cached under ``~/.cache/refute``,
``$REFUTE_CACHE_DIR`` or ``$XDG_CACHE_HOME/refute``): four keccak states per
AVX2 register; up to ``torch.get_num_threads()`` threads per tensor, each
hashing a run of whole subtrees (one thread start per tensor), the few levels
above them by the caller. Without a compiler (or with
``REFUTE_MERKLE_NATIVE=0``) the same tree is hashed with pycryptodome, one
call per node, which is ~40x slower. Verification hashes a handful of nodes and
always uses pycryptodome.
"""

from __future__ import annotations

import ctypes
import functools
import json
import operator
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from Crypto.Hash import keccak

from refute.ccompile import compile_library

CHUNK_BYTES = 256
"""Bytes of tensor data per leaf (docs/protocol.md explains the choice)."""

EMPTY = bytes(32)
"""The padding leaf: 32 zero bytes (no keccak256 output is known to be zero)."""

HEADER_PREFIX = b"\x00"
LEAF_PREFIX = b"\x01"
NODE_PREFIX = b"\x02"
ROOT_PREFIX = b"\x03"

_MAX_DEPTH = 64  # chunk indices are u64


class ProofError(ValueError):
    """A proof does not verify against a root, or is malformed."""


@dataclass(frozen=True)
class DType:
    """A tensor element type that has a canonical encoding."""

    name: str
    code: int
    itemsize: int
    torch_dtype: torch.dtype


# Names as in refute.compute.digest; codes are the header's first byte.
DTYPES: dict[str, DType] = {
    d.name: d
    for d in (
        DType("f32", 1, 4, torch.float32),
        DType("bf16", 2, 2, torch.bfloat16),
        DType("f16", 3, 2, torch.float16),
        DType("i64", 4, 8, torch.int64),
        DType("i32", 5, 4, torch.int32),
        DType("bool", 6, 1, torch.bool),
    )
}
_BY_TORCH = {d.torch_dtype: d for d in DTYPES.values()}


def keccak256(data: bytes) -> bytes:
    """The EVM's keccak256 (original Keccak padding, not SHA3-256)."""
    return keccak.new(digest_bits=256, data=data).digest()


def empty_subtrees(node_prefix: bytes, depth: int = _MAX_DEPTH) -> tuple[bytes, ...]:
    """``Z[k]`` for k = 0..depth: the root of a subtree of ``2**k`` EMPTY
    padding leaves in a tree whose inner nodes are ``H(node_prefix || l || r)``."""
    z = [EMPTY]
    for _ in range(depth):
        z.append(keccak256(node_prefix + z[-1] + z[-1]))
    return tuple(z)


_Z = empty_subtrees(NODE_PREFIX)


# --------------------------------------------------------------------------- header


@dataclass(frozen=True)
class Header:
    """A tensor's dtype and shape: what the header leaf commits to."""

    dtype: str
    shape: tuple[int, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.dtype, str) or self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype!r}; expected one of {', '.join(DTYPES)}")
        if not isinstance(self.shape, tuple):
            raise ValueError(f"shape must be a tuple, got {type(self.shape).__name__}")
        if len(self.shape) > 255:
            raise ValueError(f"ndim {len(self.shape)} exceeds 255")
        for d in self.shape:
            if type(d) is not int or not 0 <= d < 2**64:
                raise ValueError(f"shape {self.shape!r}: every dimension must be an int in [0, 2**64)")
        if self.n_chunks > 2**_MAX_DEPTH:
            raise ValueError(f"shape {self.shape!r} is too large to commit to")

    @property
    def itemsize(self) -> int:
        return DTYPES[self.dtype].itemsize

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * self.itemsize

    @property
    def n_chunks(self) -> int:
        return -(-self.nbytes // CHUNK_BYTES)

    @property
    def depth(self) -> int:
        """Levels above the leaves: ``ceil(log2(n_chunks))`` (0 for at most one chunk)."""
        return max(self.n_chunks - 1, 0).bit_length()

    def encode(self) -> bytes:
        """``code (u8) || ndim (u8) || dims (u64, big-endian)``."""
        return bytes([DTYPES[self.dtype].code, len(self.shape)]) + b"".join(d.to_bytes(8, "big") for d in self.shape)

    def digest(self) -> bytes:
        """``keccak256(0x00 || encode())``."""
        return keccak256(HEADER_PREFIX + self.encode())


def _combine(header: Header, data_root: bytes) -> bytes:
    return keccak256(ROOT_PREFIX + header.digest() + data_root)


# --------------------------------------------------------------------------- hashing the tree

# Keccak-f[1600] over four states at once (GCC/Clang vector extensions: one AVX2
# register per lane position), generated from the permutation's definition.


def _keccak_round_constants() -> list[int]:
    r, out = 1, []
    for _ in range(24):
        c = 0
        for j in range(7):
            if r & 1:
                c |= 1 << ((1 << j) - 1)
            r = (r << 1) ^ (0x171 if r & 0x80 else 0)
        out.append(c)
    return out


def _keccak_round_c() -> str:
    """One round (theta, rho, pi, chi) over lane variables ``a{x}{y}``, as C statements."""
    rot = [[0] * 5 for _ in range(5)]
    x, y = 1, 0
    for t in range(24):
        rot[x][y] = (t + 1) * (t + 2) // 2 % 64
        x, y = y, (2 * x + 3 * y) % 5
    lines = [f"c{x} = a{x}0 ^ a{x}1 ^ a{x}2 ^ a{x}3 ^ a{x}4;" for x in range(5)]
    lines += [f"d{x} = c{(x - 1) % 5} ^ ROL(c{(x + 1) % 5}, 1);" for x in range(5)]
    for x in range(5):
        for y in range(5):
            e = f"(a{x}{y} ^ d{x})"
            lines.append(f"b{y}{(2 * x + 3 * y) % 5} = {e if rot[x][y] == 0 else f'ROL({e}, {rot[x][y]})'};")
    lines += [f"a{x}{y} = b{x}{y} ^ (~b{(x + 1) % 5}{y} & b{(x + 2) % 5}{y});" for x in range(5) for y in range(5)]
    return "\n        ".join(lines)


def _c_source() -> str:
    lanes = [f"{x}{y}" for y in range(5) for x in range(5)]  # lane i = x + 5y
    rc = ", ".join(f"0x{c:016x}ULL" for c in _keccak_round_constants())
    return f"""\
/* refute tensor roots: keccak256 Merkle levels (generated by refute/compute/merkle.py). */
#include <pthread.h>
#include <stdint.h>
#include <string.h>

typedef uint64_t lane4 __attribute__((vector_size(32)));
#define ROL(a, n) (((a) << (n)) | ((a) >> (64 - (n))))
#define RATE 136
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
#define CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CLONES
#endif
#define INLINE static inline __attribute__((always_inline))

static const uint64_t RC[24] = {{{rc}}};

INLINE void keccak_f4(lane4 *st) {{
    lane4 {", ".join("a" + v for v in lanes)};
    lane4 {", ".join("b" + v for v in lanes)}, c0, c1, c2, c3, c4, d0, d1, d2, d3, d4;
    {" ".join(f"a{v} = st[{i}];" for i, v in enumerate(lanes))}
    for (int r = 0; r < 24; r++) {{
        {_keccak_round_c()}
        a00 ^= RC[r];
    }}
    {" ".join(f"st[{i}] = a{v};" for i, v in enumerate(lanes))}
}}

/* Bytes [o, o + 8) of the message prefix || seg[0:avail] || zeros, little-endian. */
INLINE uint64_t message_word(uint8_t prefix, const uint8_t *seg, uint64_t avail, uint64_t o) {{
    uint64_t w = 0;
    if (o >= 1 && o + 7 <= avail) {{ memcpy(&w, seg + o - 1, 8); return w; }}
    if (o == 0 && avail >= 8) {{ memcpy(&w, seg, 8); return (w << 8) | prefix; }}
    for (int i = 7; i >= 0; i--) {{
        uint64_t p = o + (uint64_t)i;
        w = (w << 8) | (p == 0 ? prefix : (p - 1 < avail ? seg[p - 1] : 0));
    }}
    return w;
}}

/* out[k] = keccak256(prefix || seg[k][0:avail[k]] || zeros), a message of 1 + len bytes. */
INLINE void hash4(uint8_t prefix, const uint8_t *const seg[4], const uint64_t avail[4], uint64_t len,
                  uint8_t *const out[4]) {{
    lane4 st[25];
    memset(st, 0, sizeof st);
    uint64_t total = 1 + len, nblk = total / RATE + 1;
    for (uint64_t b = 0; b < nblk; b++) {{
        uint64_t start = b * RATE;
        for (uint64_t j = 0; j < RATE / 8 && start + 8 * j < total; j++) {{
            uint64_t o = start + 8 * j;
            lane4 v = {{message_word(prefix, seg[0], avail[0], o), message_word(prefix, seg[1], avail[1], o),
                        message_word(prefix, seg[2], avail[2], o), message_word(prefix, seg[3], avail[3], o)}};
            st[j] ^= v;
        }}
        if (b + 1 == nblk) {{  /* pad10*1: all four messages have the same length */
            uint64_t p = total - start;
            st[p / 8] ^= (lane4){{0, 0, 0, 0}} + ((uint64_t)0x01 << (8 * (p % 8)));
            st[RATE / 8 - 1] ^= (lane4){{0, 0, 0, 0}} + ((uint64_t)0x80 << 56);
        }}
        keccak_f4(st);
    }}
    for (int k = 0; k < 4; k++)
        for (int j = 0; j < 4; j++) {{ uint64_t w = st[j][k]; memcpy(out[k] + 8 * j, &w, 8); }}
}}

/* Leaves [lo, hi): leaf i = H(0x01 || chunk i of data[0:n_bytes], zero-padded). */
CLONES static void hash_leaves(const uint8_t *data, uint64_t n_bytes, uint64_t chunk, uint64_t lo, uint64_t hi,
                               uint8_t *leaves) {{
    uint8_t scratch[32];
    for (uint64_t i = lo; i < hi; i += 4) {{
        const uint8_t *seg[4]; uint64_t avail[4]; uint8_t *out[4];
        for (int k = 0; k < 4; k++) {{
            uint64_t n = i + k < hi ? i + k : i, off = n * chunk, left = n_bytes - off;
            seg[k] = data + off; avail[k] = left < chunk ? left : chunk;
            out[k] = i + k < hi ? leaves + 32 * (i + k) : scratch;
        }}
        hash4(0x01, seg, avail, chunk, out);
    }}
}}

/* Parents [lo, hi) of a level of n_in nodes: parent i = H(0x02 || in[2i] || in[2i + 1]),
   where a missing right child (n_in odd, the last parent) is the empty subtree z. */
CLONES static void hash_parents(const uint8_t *in, uint64_t n_in, const uint8_t *z, uint64_t lo, uint64_t hi,
                                uint8_t *parents) {{
    uint8_t scratch[32], pair[64];
    uint64_t full = n_in / 2, stop = hi < full ? hi : full;
    for (uint64_t i = lo; i < stop; i += 4) {{
        const uint8_t *seg[4]; uint64_t avail[4] = {{64, 64, 64, 64}}; uint8_t *out[4];
        for (int k = 0; k < 4; k++) {{
            uint64_t n = i + k < stop ? i + k : i;
            seg[k] = in + 64 * n;
            out[k] = i + k < stop ? parents + 32 * (i + k) : scratch;
        }}
        hash4(0x02, seg, avail, 64, out);
    }}
    if (hi > full && (n_in & 1)) {{
        memcpy(pair, in + 32 * (n_in - 1), 32);
        memcpy(pair + 32, z, 32);
        const uint8_t *seg[4] = {{pair, pair, pair, pair}};
        uint64_t avail[4] = {{64, 64, 64, 64}};
        uint8_t *out[4] = {{parents + 32 * full, scratch, scratch, scratch}};
        hash4(0x02, seg, avail, 64, out);
    }}
}}

/* The tree's levels: sizes[k] nodes at offsets[k] (in nodes) of the output. */
typedef struct {{ const uint8_t *data; uint64_t n_bytes, chunk; const uint8_t *z; uint8_t *nodes;
                 const uint64_t *sizes, *offsets; }} tree_t;

/* A run of whole subtrees: leaves [lo, hi) and their ancestors up to `top` levels above
   the leaves. Runs start at multiples of 2^top, so no two share a node below that level. */
typedef struct {{ const tree_t *tree; uint64_t lo, hi; int top; }} subtree_t;

static void hash_subtree(const subtree_t *s) {{
    const tree_t *t = s->tree;
    uint64_t lo = s->lo, hi = s->hi;
    hash_leaves(t->data, t->n_bytes, t->chunk, lo, hi, t->nodes);
    for (int k = 1; k <= s->top; k++) {{
        lo /= 2; hi = (hi + 1) / 2;
        hash_parents(t->nodes + 32 * t->offsets[k - 1], t->sizes[k - 1], t->z + 32 * (k - 1), lo, hi,
                     t->nodes + 32 * t->offsets[k]);
    }}
}}

static void *hash_subtree_thread(void *arg) {{ hash_subtree((const subtree_t *)arg); return NULL; }}

#define MAX_THREADS 64
#define SUBTREES_PER_THREAD 16

/* Every level of the tree over data[0:n_bytes] (n_bytes > 0), leaves first, each
   level's nodes contiguous (32 bytes each): level k holds ceil(n_{{k-1}} / 2) nodes, the
   last one paired with z[k-1] (the empty subtree) when n_{{k-1}} is odd.
   Up to `threads` threads each hash a run of subtrees, at least `min_leaves` leaves in
   all (one thread start per call, not per level); the few levels above the subtrees
   are hashed by the caller. */
void refute_merkle_levels(const uint8_t *data, uint64_t n_bytes, uint64_t chunk, const uint8_t *z,
                          uint8_t *nodes, int threads, uint64_t min_leaves) {{
    uint64_t sizes[66], offsets[66];
    int depth = 0;
    sizes[0] = (n_bytes + chunk - 1) / chunk; offsets[0] = 0;
    while (sizes[depth] > 1) {{
        sizes[depth + 1] = (sizes[depth] + 1) / 2;
        offsets[depth + 1] = offsets[depth] + sizes[depth];
        depth++;
    }}
    tree_t tree = {{data, n_bytes, chunk, z, nodes, sizes, offsets}};
    uint64_t n = sizes[0], by_work = min_leaves ? n / min_leaves : n;
    if (threads > MAX_THREADS) threads = MAX_THREADS;
    if ((uint64_t)threads > by_work) threads = by_work ? (int)by_work : 1;
    /* Subtrees of 2^top leaves, at most SUBTREES_PER_THREAD per thread, dealt out in
       contiguous runs (a run starts at a multiple of 2^top, so no two runs share a node
       below level top and the runs' sizes differ by at most one subtree). */
    int top = 0;
    while (top < depth && (n + ((uint64_t)1 << top) - 1) >> top > (uint64_t)threads * SUBTREES_PER_THREAD) top++;
    uint64_t span = (uint64_t)1 << top, parts = (n + span - 1) >> top;
    if ((uint64_t)threads > parts) threads = (int)parts;
    subtree_t sub[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    int started[MAX_THREADS] = {{0}};
    for (int t = 0; t < threads; t++) {{
        uint64_t first = parts * t / threads, stop = parts * (t + 1) / threads;
        sub[t].tree = &tree; sub[t].lo = first * span; sub[t].hi = stop * span < n ? stop * span : n;
        sub[t].top = top;
    }}
    for (int t = 1; t < threads; t++) started[t] = pthread_create(&tid[t], NULL, hash_subtree_thread, &sub[t]) == 0;
    hash_subtree(&sub[0]);
    for (int t = 1; t < threads; t++) {{
        if (started[t]) pthread_join(tid[t], NULL);
        else hash_subtree(&sub[t]);
    }}
    for (int k = top + 1; k <= depth; k++)
        hash_parents(nodes + 32 * offsets[k - 1], sizes[k - 1], z + 32 * (k - 1), 0, sizes[k], nodes + 32 * offsets[k]);
}}
"""


# -O3 -funroll-loops: the 24 rounds unrolled run ~30% faster than -O2 (bench_roots, per-thread CPU time).
_CFLAGS = ["-O3", "-funroll-loops", "-std=gnu11", "-pthread"]


@functools.cache
def _native() -> ctypes.CDLL | None:
    """The compiled tree hasher, or None (with a warning) where it cannot be had."""
    if os.environ.get("REFUTE_MERKLE_NATIVE", "1") == "0":
        return None
    try:
        lib = ctypes.CDLL(str(compile_library("merkle", _c_source(), _CFLAGS)))
        fn = lib.refute_merkle_levels
        u64, ptr = ctypes.c_uint64, ctypes.c_void_p
        fn.argtypes = [ptr, u64, u64, ctypes.c_char_p, ptr, ctypes.c_int, u64]
        fn.restype = None
    except OSError as e:
        warnings.warn(f"native keccak unavailable ({e}); tensor roots fall back to pycryptodome", RuntimeWarning)
        return None
    # Self-test against pycryptodome (a miscompiled or big-endian build must not be used).
    probe = np.frombuffer(bytes(range(250)) * 4, dtype=np.uint8)  # 7 two-block leaves, the last partial
    expected = _levels_python(probe, 150)
    if any(_levels_native(lib, probe, 150, threads, 1) != expected for threads in (1, 3)):
        warnings.warn("native keccak failed its self-test; tensor roots fall back to pycryptodome", RuntimeWarning)
        return None
    return lib


def hashing_backend() -> str:
    """``"native"`` (the compiled hasher) or ``"pycryptodome"`` (the fallback)."""
    return "native" if _native() is not None else "pycryptodome"


def _level_sizes(n_chunks: int) -> list[int]:
    sizes = [n_chunks]
    while sizes[-1] > 1:
        sizes.append((sizes[-1] + 1) // 2)
    return sizes


_Z_BYTES = b"".join(_Z)


MIN_LEAVES_PER_THREAD = 256
"""A thread of the native hasher takes at least this many leaves (64 KiB of 256-byte
chunks, ~0.2 ms of hashing: several times the cost of starting the thread)."""


def _levels_native(lib: ctypes.CDLL, data: np.ndarray, chunk: int, threads: int,
                   min_leaves: int = MIN_LEAVES_PER_THREAD) -> list[bytes]:
    sizes = _level_sizes(-(-data.size // chunk))
    nodes = np.empty(32 * sum(sizes), dtype=np.uint8)
    lib.refute_merkle_levels(data.ctypes.data, data.size, chunk, _Z_BYTES, nodes.ctypes.data, threads, min_leaves)
    out, off = [], 0
    for n in sizes:
        out.append(nodes[off : off + 32 * n].tobytes())
        off += 32 * n
    return out


def _levels_python(data: np.ndarray, chunk: int) -> list[bytes]:
    raw = data.tobytes()
    level = [keccak256(LEAF_PREFIX + raw[i : i + chunk].ljust(chunk, b"\0")) for i in range(0, len(raw), chunk)]
    out = [b"".join(level)]
    for k in range(len(_level_sizes(len(level))) - 1):
        if len(level) % 2:
            level.append(_Z[k])
        level = [keccak256(NODE_PREFIX + level[i] + level[i + 1]) for i in range(0, len(level), 2)]
        out.append(b"".join(level))
    return out


def _levels(data: np.ndarray, chunk: int = CHUNK_BYTES) -> list[bytes]:
    """Every level of the data tree, leaves first (each the concatenation of its
    nodes; a level's padding nodes, ``_Z[k]``, are implied). Empty data: ``[]``."""
    if data.size == 0:
        return []
    lib = _native()
    if lib is None:
        return _levels_python(data, chunk)
    return _levels_native(lib, data, chunk, max(1, torch.get_num_threads()))


# --------------------------------------------------------------------------- trees


def _canonical(t: torch.Tensor) -> tuple[Header, np.ndarray]:
    """The header and the canonical bytes (a uint8 array, a view where possible)."""
    if t.dtype not in _BY_TORCH:
        raise TypeError(f"no canonical encoding for dtype {t.dtype}")
    t = t.detach().to("cpu").contiguous()
    flat = t.reshape(-1)
    if t.dtype in (torch.bfloat16, torch.float16):
        arr = flat.view(torch.int16).numpy()
    elif t.dtype == torch.bool:
        arr = flat.view(torch.uint8).numpy()
    else:
        arr = flat.numpy()
    arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
    return Header(_BY_TORCH[t.dtype].name, tuple(t.shape)), arr.view(np.uint8)


def tensor_root(t: torch.Tensor) -> bytes:
    """The root of ``t`` (32 bytes), without keeping the tree."""
    header, data = _canonical(t)
    levels = _levels(data)
    return _combine(header, levels[-1] if levels else EMPTY)


def _sibling_positions(first: int, stop: int, depth: int) -> list[tuple[int, int]]:
    """``(level, index)`` of the siblings needed to recompute the root from leaves
    ``[first, stop)``: per level bottom-up, the left one (if any), then the right."""
    out = []
    lo, hi = first, stop
    for level in range(depth):
        if lo & 1:
            out.append((level, lo - 1))
            lo -= 1
        if hi & 1:
            out.append((level, hi))
            hi += 1
        lo, hi = lo >> 1, hi >> 1
    return out


class TensorTree:
    """A tensor's Merkle tree: its root and proofs of elements and ranges."""

    def __init__(self, header: Header, data: bytes) -> None:
        if len(data) != header.nbytes:
            raise ValueError(f"{header.dtype}{list(header.shape)} has {header.nbytes} bytes, got {len(data)}")
        self.header = header
        self.data = data
        self._levels = _levels(np.frombuffer(data, dtype=np.uint8))
        self.data_root = self._levels[-1] if self._levels else EMPTY
        self.root = _combine(header, self.data_root)

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> TensorTree:
        header, data = _canonical(t)
        return cls(header, data.tobytes())

    @classmethod
    def from_bytes(cls, data: bytes, dtype: str, shape: Sequence[int]) -> TensorTree:
        """From canonical bytes (little-endian, row-major) and the header fields."""
        return cls(Header(dtype, tuple(operator.index(d) for d in shape)), bytes(data))

    @property
    def n_chunks(self) -> int:
        return self.header.n_chunks

    def node(self, level: int, index: int) -> bytes:
        """Node ``index`` of ``level`` of the data tree (0: chunk leaves), padding
        included: what a bisection over this tensor reveals."""
        if not 0 <= level <= self.header.depth or not 0 <= index < 2 ** (self.header.depth - level):
            raise IndexError(f"no node {index} on level {level} of a tree of depth {self.header.depth}")
        return self._node(level, index)

    def _node(self, level: int, index: int) -> bytes:
        nodes = self._levels[level]
        return nodes[32 * index : 32 * index + 32] if 32 * index < len(nodes) else _Z[level]

    def _run(self, start: int, stop: int) -> tuple[int, bytes, tuple[bytes, ...]]:
        """First chunk, chunk bytes and siblings of the run covering elements [start, stop)."""
        size, n = self.header.itemsize, self.header.numel
        if not 0 <= start < stop <= n:
            raise IndexError(f"elements [{start}, {stop}) not in a tensor of {n} elements")
        first, stop_chunk = start * size // CHUNK_BYTES, -(-stop * size // CHUNK_BYTES)
        chunks = self.data[first * CHUNK_BYTES : stop_chunk * CHUNK_BYTES]
        chunks = chunks.ljust((stop_chunk - first) * CHUNK_BYTES, b"\0")
        siblings = tuple(self._node(k, i) for k, i in _sibling_positions(first, stop_chunk, self.header.depth))
        return first, chunks, siblings

    def prove_element(self, index: int) -> ElementProof:
        """A proof of element ``index`` (row-major flat index)."""
        index = operator.index(index)
        _, chunk, siblings = self._run(index, index + 1)
        return ElementProof(self.header, index, chunk, siblings)

    def prove_range(self, start: int, stop: int) -> RangeProof:
        """A proof of elements ``[start, stop)`` (flat indices, ``start < stop``)."""
        start, stop = operator.index(start), operator.index(stop)
        _, chunks, siblings = self._run(start, stop)
        return RangeProof(self.header, start, stop, chunks, siblings)


# --------------------------------------------------------------------------- proofs


@dataclass(frozen=True)
class ElementProof:
    """One element: the chunk holding it and the siblings on its path to the root."""

    header: Header
    index: int
    chunk: bytes
    siblings: tuple[bytes, ...]

    @property
    def chunk_index(self) -> int:
        return self.index * self.header.itemsize // CHUNK_BYTES

    def to_json(self) -> dict[str, Any]:
        return {
            "dtype": self.header.dtype,
            "shape": list(self.header.shape),
            "index": self.index,
            "chunk": _hex(self.chunk),
            "siblings": [_hex(s) for s in self.siblings],
        }

    @classmethod
    def from_json(cls, obj: str | Mapping[str, Any]) -> ElementProof:
        """Parse :meth:`to_json`'s output (a dict, or its JSON text); strict."""
        o = _json_object(obj, ("dtype", "shape", "index", "chunk", "siblings"))
        return cls(_json_header(o), _json_int(o, "index"), _json_hex(o["chunk"], "chunk"), _json_siblings(o))


@dataclass(frozen=True)
class RangeProof:
    """Elements ``[start, stop)``: the consecutive chunks covering them and the
    siblings that complete those leaves to the root (a multi-leaf proof)."""

    header: Header
    start: int
    stop: int
    chunks: bytes
    siblings: tuple[bytes, ...]

    @property
    def first_chunk(self) -> int:
        return self.start * self.header.itemsize // CHUNK_BYTES

    def to_json(self) -> dict[str, Any]:
        return {
            "dtype": self.header.dtype,
            "shape": list(self.header.shape),
            "start": self.start,
            "stop": self.stop,
            "chunks": _hex(self.chunks),
            "siblings": [_hex(s) for s in self.siblings],
        }

    @classmethod
    def from_json(cls, obj: str | Mapping[str, Any]) -> RangeProof:
        """Parse :meth:`to_json`'s output (a dict, or its JSON text); strict."""
        o = _json_object(obj, ("dtype", "shape", "start", "stop", "chunks", "siblings"))
        return cls(
            _json_header(o),
            _json_int(o, "start"),
            _json_int(o, "stop"),
            _json_hex(o["chunks"], "chunks"),
            _json_siblings(o),
        )


def _verify_run(root: bytes, header: Header, start: int, stop: int, chunks: bytes, siblings: Sequence[bytes]) -> bytes:
    """Check that ``chunks`` cover elements [start, stop) of the tensor committed to
    by ``root``; return those elements' bytes."""
    if not isinstance(root, bytes) or len(root) != 32:
        raise ProofError("root must be 32 bytes")
    if not isinstance(header, Header):
        raise ProofError("header must be a Header")
    for name, v in (("start", start), ("stop", stop)):
        if type(v) is not int:
            raise ProofError(f"{name} must be an int, got {type(v).__name__}")
    if not 0 <= start < stop <= header.numel:
        raise ProofError(f"elements [{start}, {stop}) not in a tensor of {header.numel} elements")
    size = header.itemsize
    first, stop_chunk = start * size // CHUNK_BYTES, -(-stop * size // CHUNK_BYTES)
    if not isinstance(chunks, bytes) or len(chunks) != (stop_chunk - first) * CHUNK_BYTES:
        got = len(chunks) if isinstance(chunks, bytes) else type(chunks).__name__
        raise ProofError(f"expected {(stop_chunk - first) * CHUNK_BYTES} bytes of chunks, got {got}")
    if stop_chunk == header.n_chunks and any(chunks[header.nbytes - first * CHUNK_BYTES :]):
        raise ProofError("the last chunk's padding is not zero")
    positions = _sibling_positions(first, stop_chunk, header.depth)
    if not isinstance(siblings, (tuple, list)) or len(siblings) != len(positions):
        got = len(siblings) if isinstance(siblings, (tuple, list)) else type(siblings).__name__
        raise ProofError(f"expected {len(positions)} siblings, got {got}")
    if not all(isinstance(s, bytes) and len(s) == 32 for s in siblings):
        raise ProofError("every sibling must be 32 bytes")
    nodes = [keccak256(LEAF_PREFIX + chunks[i : i + CHUNK_BYTES]) for i in range(0, len(chunks), CHUNK_BYTES)]
    lo, hi, s = first, stop_chunk, iter(siblings)
    for _ in range(header.depth):
        if lo & 1:
            nodes.insert(0, next(s))
            lo -= 1
        if hi & 1:
            nodes.append(next(s))
            hi += 1
        nodes = [keccak256(NODE_PREFIX + nodes[i] + nodes[i + 1]) for i in range(0, len(nodes), 2)]
        lo, hi = lo >> 1, hi >> 1
    if _combine(header, nodes[0]) != root:
        raise ProofError("proof does not match the root")
    offset = start * size - first * CHUNK_BYTES
    return chunks[offset : offset + (stop - start) * size]


def verify_element(root: bytes, proof: ElementProof) -> bytes:
    """The element's canonical bytes if ``proof`` holds against ``root``; else :class:`ProofError`."""
    if type(proof.index) is not int:
        raise ProofError(f"index must be an int, got {type(proof.index).__name__}")
    return _verify_run(root, proof.header, proof.index, proof.index + 1, proof.chunk, proof.siblings)


def verify_range(root: bytes, proof: RangeProof) -> bytes:
    """Elements ``[start, stop)``'s canonical bytes if ``proof`` holds; else :class:`ProofError`."""
    return _verify_run(root, proof.header, proof.start, proof.stop, proof.chunks, proof.siblings)


# --------------------------------------------------------------------------- JSON


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


def _json_object(obj: str | Mapping[str, Any], keys: tuple[str, ...]) -> Mapping[str, Any]:
    if isinstance(obj, str):
        try:
            obj = json.loads(obj)
        except json.JSONDecodeError as e:
            raise ProofError(f"proof is not valid JSON: {e}") from None
    if not isinstance(obj, Mapping):
        raise ProofError(f"proof must be a JSON object, got {type(obj).__name__}")
    if set(obj) != set(keys):
        missing, extra = sorted(set(keys) - set(obj)), sorted(set(obj) - set(keys), key=str)
        raise ProofError(f"proof keys: missing {missing}, unexpected {extra}")
    return obj


def _json_int(o: Mapping[str, Any], key: str) -> int:
    v = o[key]
    if type(v) is not int or v < 0:
        raise ProofError(f"{key} must be a non-negative integer, got {v!r}")
    return v


def _json_hex(v: Any, what: str, length: int | None = None) -> bytes:
    if not isinstance(v, str) or not v.startswith("0x"):
        raise ProofError(f"{what} must be a 0x-prefixed hex string, got {v!r:.80}")
    digits = v[2:]
    if len(digits) % 2 or any(c not in "0123456789abcdefABCDEF" for c in digits):
        raise ProofError(f"{what} is not an even-length hex string: {v!r:.80}")
    b = bytes.fromhex(digits)
    if length is not None and len(b) != length:
        raise ProofError(f"{what} must be {length} bytes, got {len(b)}")
    return b


def _json_header(o: Mapping[str, Any]) -> Header:
    shape = o["shape"]
    if not isinstance(shape, list) or not all(type(d) is int for d in shape):
        raise ProofError(f"shape must be a list of integers, got {shape!r:.80}")
    try:
        return Header(o["dtype"], tuple(shape))
    except ValueError as e:
        raise ProofError(str(e)) from None


def _json_siblings(o: Mapping[str, Any]) -> tuple[bytes, ...]:
    s = o["siblings"]
    if not isinstance(s, list):
        raise ProofError(f"siblings must be a list, got {type(s).__name__}")
    return tuple(_json_hex(h, f"siblings[{i}]", 32) for i, h in enumerate(s))


# --------------------------------------------------------------------------- benchmark


def bench_roots(n_bytes: int, *, repeats: int = 3, chunk_bytes: int = CHUNK_BYTES) -> dict[str, Any]:
    """Time the data tree of ``n_bytes`` random bytes (best of ``repeats``).

    ``chunk_bytes`` other than :data:`CHUNK_BYTES` measures the speed/gas trade-off
    of docs/protocol.md; it changes the tree, so such roots are not refute's."""
    data = np.random.default_rng(0).integers(0, 256, n_bytes, dtype=np.uint8)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        _levels(data, chunk_bytes)
        best = min(best, time.perf_counter() - t0)
    return {
        "bytes": n_bytes,
        "chunk_bytes": chunk_bytes,
        "backend": hashing_backend(),
        "threads": torch.get_num_threads(),
        "seconds": best,
        "mb_per_s": n_bytes / best / 1e6,
    }
