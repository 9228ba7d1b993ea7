"""Traces: one committed record per operator application, and the trace root.

A trace is the list of operator applications of one computation, in the
executor's order (the model's topological order). Record ``i`` commits to what
ran (operator kind and attributes), on what (each input's name, tensor root and
the index of the record that produced it) and what came out (the output's
tensor root, :func:`refute.compute.merkle.tensor_root`). docs/protocol.md,
section "Traces", specifies every byte; in short:

* ``record = 0x20 || version (u8) || index (u64) || kind || attrs || inputs || output root``
  (big-endian integers, length-prefixed ASCII names, typed attribute values:
  ints as int64, floats as binary32 bits, bools, UTF-8 strings);
  ``record_hash = keccak256(record)``;
* leaf ``i`` = ``keccak256(0x21 || record_hash_i)``, padded to a power of two
  with :data:`EMPTY`; node = ``keccak256(0x22 || left || right)``;
* ``trace_root = keccak256(0x23 || count (u64) || tree root)``.

The prefixes 0x20-0x23 differ from the tensor tree's (0x00-0x03) and the claim
tree's (0x10, 0x11), so no trace node or record passes for anything else.

A generation of N tokens is traced as **one prefill** over the prompt and the
first N-1 generated tokens, not as N decode steps (docs/protocol.md explains
why); :func:`trace_generation` and :func:`trace_embedding` are the two tasks'
trace builders. :class:`Tracer` is the executor observer behind them: it roots
every input and output once (a :class:`RootCache` remembers the roots of
tensors it has seen, by identity and version, so a model's weights are hashed
once per process, not once per trace).
"""

from __future__ import annotations

import inspect
import json
import operator
import re
import statistics
import struct
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import torch

from refute.compute.executor import OPERATORS, Executor, OpRecord
from refute.compute.merkle import DTYPES, empty_subtrees, keccak256, tensor_root

__all__ = [
    "TRACE_VERSION",
    "RECORD_PREFIX",
    "LEAF_PREFIX",
    "NODE_PREFIX",
    "ROOT_PREFIX",
    "EMPTY",
    "EXTERNAL",
    "JSON_KIND",
    "OPERATOR_SIGNATURES",
    "TraceError",
    "TraceInput",
    "TraceRecord",
    "Trace",
    "RecordProof",
    "RootCache",
    "Tracer",
    "verify_record",
    "first_divergence",
    "wiring_faults",
    "diff_records",
    "replay_record",
    "default_cache",
    "record_run",
    "trace_generation",
    "generation_inputs",
    "trace_encoder",
    "trace_embedding",
    "bench_trace_overhead",
    "DEFERRED",
    "SEGMENT_RECORDS",
    "checkpoint_cuts",
    "select_checkpoints",
    "checkpointed",
    "prefix",
]

TRACE_VERSION: Final = 1
"""The record encoding's version: the second byte of every record."""

RECORD_PREFIX: Final = b"\x20"
LEAF_PREFIX: Final = b"\x21"
NODE_PREFIX: Final = b"\x22"
ROOT_PREFIX: Final = b"\x23"

EMPTY: Final = bytes(32)
"""Padding leaf of the record tree (no known keccak256 preimage)."""

EXTERNAL: Final = 2**64 - 1
"""The ``source`` of an input no record of the trace produced (weights, token ids, ...)."""

JSON_KIND: Final = "refute.trace"

DEFERRED: Final = bytes(32)
"""The root a checkpointed trace gives the output of a record that is not a
checkpoint (and every input read from such a record): committed to nothing, it
is computed only in a dispute (docs/protocol.md, "Checkpointed traces")."""

SEGMENT_RECORDS: Final = 16
"""Most records between two checkpoints that :func:`select_checkpoints` leaves,
where the program allows (one transformer layer of SmolLM2 or MiniLM)."""

_U64 = 2**64
_MAX_DEPTH = 64
_NAME_RE = re.compile(r"[a-z_][a-z0-9_]*\Z")
_HEX32_RE = re.compile(r"0x[0-9a-f]{64}\Z")
_HEX8_RE = re.compile(r"0x[0-9a-f]{8}\Z")

_TAG_INT = b"i"  # int64, two's complement
_TAG_F32 = b"f"  # binary32 bits
_TAG_BOOL = b"b"  # one byte, 0 or 1
_TAG_STR = b"s"  # u16 length || UTF-8


class TraceError(ValueError):
    """A record, trace, encoding or proof is invalid."""


# --------------------------------------------------------------------------- operator signatures


def _signature(kind: str, fn: Callable[..., Any]) -> tuple[tuple[str, ...], frozenset[str], frozenset[str]]:
    """(tensor input names in order, the required ones, attribute names) of an operator."""
    names, required, attrs = [], set(), set()
    for p in inspect.signature(fn).parameters.values():
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            names.append(p.name)
            if p.default is p.empty:
                required.add(p.name)
        elif p.kind == p.KEYWORD_ONLY and p.name != "backend":
            attrs.add(p.name)
        elif p.kind != p.KEYWORD_ONLY:
            raise TypeError(f"operator {kind!r}: unsupported parameter {p}")
    return tuple(names), frozenset(required), frozenset(attrs)


OPERATOR_SIGNATURES: Final[Mapping[str, tuple[tuple[str, ...], frozenset[str], frozenset[str]]]] = {
    kind: _signature(kind, fn) for kind, fn in OPERATORS.items()
}
"""For each kind of :data:`refute.compute.executor.OPERATORS`: its tensor inputs
in signature order, the required ones, and its attribute names. A record must
match its kind's signature (optional inputs, like a linear's bias, may be absent)."""


# --------------------------------------------------------------------------- attribute values


def _attr_value(key: str, v: Any) -> int | float | bool | str:
    """Normalise an attribute value: bool, int (int64), float (held as the binary32
    value it rounds to, exactly, in a Python float; not NaN) or str."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        v = int(v)
        if not -(2**63) <= v < 2**63:
            raise TraceError(f"attribute {key}={v} is out of range for int64")
        return v
    if isinstance(v, (float, np.floating)):
        if v != v:
            raise TraceError(f"attribute {key} is NaN, which has no canonical bits")
        with np.errstate(over="ignore"):
            return float(np.float32(v))
    if isinstance(v, str):
        if len(v.encode("utf-8")) >= 2**16:
            raise TraceError(f"attribute {key} is too long")
        return v
    raise TraceError(f"attribute {key}: no canonical encoding for {type(v).__name__}")


def _f32_bits(v: float) -> int:
    return struct.unpack(">I", struct.pack(">f", v))[0]


def _f32_from_bits(b: int) -> float:
    return struct.unpack(">f", struct.pack(">I", b))[0]


def _same_attr(a: Any, b: Any) -> bool:
    """Attribute equality by encoding (type and, for floats, bits: -0.0 != 0.0, NaN == NaN)."""
    return type(a) is type(b) and (_f32_bits(a) == _f32_bits(b) if isinstance(a, float) else a == b)


def _check_name(what: str, name: Any) -> str:
    if not isinstance(name, str) or len(name) > 255 or not _NAME_RE.match(name):
        raise TraceError(f"{what} must be an identifier [a-z_][a-z0-9_]*, got {name!r:.80}")
    return name


def _check_root(what: str, root: Any) -> bytes:
    if not isinstance(root, bytes) or len(root) != 32:
        raise TraceError(f"{what} must be 32 bytes")
    return root


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class TraceInput:
    """One input of a record: its parameter name, its tensor root, and the index
    of the record whose output it is (:data:`EXTERNAL` if none)."""

    name: str
    root: bytes
    source: int = EXTERNAL

    def __post_init__(self) -> None:
        _check_name("input name", self.name)
        _check_root(f"input {self.name}'s root", self.root)
        if type(self.source) is not int or not 0 <= self.source < _U64:
            raise TraceError(f"input {self.name}: source must be a u64, got {self.source!r}")

    @property
    def external(self) -> bool:
        return self.source == EXTERNAL


@dataclass(frozen=True)
class TraceRecord:
    """One operator application (see the module docstring). Constructor inputs:
    ``attrs`` any mapping (stored as sorted ``(key, value)`` pairs, floats rounded
    to binary32), ``inputs`` a sequence of :class:`TraceInput`."""

    index: int
    kind: str
    attrs: tuple[tuple[str, int | float | bool | str], ...]
    inputs: tuple[TraceInput, ...]
    output: bytes

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if type(self.index) is not int or not 0 <= self.index < _U64 - 1:
            raise TraceError(f"record index must be a u64 below 2**64 - 1, got {self.index!r}")
        if not isinstance(self.kind, str) or self.kind not in OPERATOR_SIGNATURES:
            raise TraceError(f"unknown operator kind {self.kind!r}; known: {sorted(OPERATOR_SIGNATURES)}")
        names, required, attr_names = OPERATOR_SIGNATURES[self.kind]
        attrs = dict(self.attrs) if isinstance(self.attrs, Mapping) else None
        if attrs is None:
            pairs = tuple(self.attrs)
            attrs = dict(pairs)
            if len(attrs) != len(pairs):
                raise TraceError(f"record {self.index}: duplicate attribute")
        for key in attrs:
            _check_name("attribute name", key)
        if set(attrs) != attr_names:
            raise TraceError(f"record {self.index} ({self.kind}): attributes {sorted(attrs)}, expected {sorted(attr_names)}")
        set_(self, "attrs", tuple((k, _attr_value(k, attrs[k])) for k in sorted(attrs)))
        inputs = tuple(self.inputs)
        if not all(isinstance(i, TraceInput) for i in inputs):
            raise TraceError(f"record {self.index}: inputs must be TraceInput")
        given = [i.name for i in inputs]
        if given != [n for n in names if n in given] or len(set(given)) != len(given):
            raise TraceError(f"record {self.index} ({self.kind}): inputs {given} are not a subsequence of {list(names)}")
        if not required <= set(given):
            raise TraceError(f"record {self.index} ({self.kind}): missing inputs {sorted(required - set(given))}")
        for i in inputs:
            if not i.external and i.source >= self.index:
                raise TraceError(f"record {self.index}: input {i.name} comes from record {i.source}, not an earlier one")
        set_(self, "inputs", inputs)
        _check_root(f"record {self.index}'s output root", self.output)

    # ---- encoding

    def encode(self) -> bytes:
        """The canonical bytes (``0x20 || version || ...``): the preimage of :meth:`hash`."""
        out = [RECORD_PREFIX, bytes([TRACE_VERSION]), self.index.to_bytes(8, "big")]
        out += [bytes([len(self.kind)]), self.kind.encode("ascii"), bytes([len(self.attrs)])]
        for key, v in self.attrs:
            out += [bytes([len(key)]), key.encode("ascii")]
            if isinstance(v, bool):
                out += [_TAG_BOOL, b"\x01" if v else b"\x00"]
            elif isinstance(v, int):
                out += [_TAG_INT, v.to_bytes(8, "big", signed=True)]
            elif isinstance(v, float):
                out += [_TAG_F32, struct.pack(">f", v)]
            else:
                s = v.encode("utf-8")
                out += [_TAG_STR, len(s).to_bytes(2, "big"), s]
        out.append(bytes([len(self.inputs)]))
        for i in self.inputs:
            out += [bytes([len(i.name)]), i.name.encode("ascii"), i.source.to_bytes(8, "big"), i.root]
        out.append(self.output)
        return b"".join(out)

    def hash(self) -> bytes:
        """``keccak256(encode())``: the record's hash (cached)."""
        h = self.__dict__.get("_hash")
        if h is None:
            h = keccak256(self.encode())
            object.__setattr__(self, "_hash", h)
        return h

    @classmethod
    def decode(cls, data: bytes) -> TraceRecord:
        """Parse :meth:`encode`'s output; strict (the result must re-encode to ``data``)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TraceError(f"record encoding must be bytes, got {type(data).__name__}")
        data = bytes(data)
        pos = 0

        def take(n: int) -> bytes:
            nonlocal pos
            if pos + n > len(data):
                raise TraceError("record encoding is truncated")
            pos += n
            return data[pos - n : pos]

        def name() -> str:
            raw = take(take(1)[0])
            try:
                return raw.decode("ascii")
            except UnicodeDecodeError:
                raise TraceError("a name in the record is not ASCII") from None

        if take(1) != RECORD_PREFIX:
            raise TraceError("not a trace record (wrong prefix byte)")
        if (v := take(1)[0]) != TRACE_VERSION:
            raise TraceError(f"unsupported record version {v} (this build knows {TRACE_VERSION})")
        index = int.from_bytes(take(8), "big")
        kind = name()
        attrs = []
        for _ in range(take(1)[0]):
            key, tag = name(), take(1)
            if tag == _TAG_BOOL:
                b = take(1)[0]
                if b > 1:
                    raise TraceError(f"attribute {key}: bool byte {b}")
                value: Any = bool(b)
            elif tag == _TAG_INT:
                value = int.from_bytes(take(8), "big", signed=True)
            elif tag == _TAG_F32:
                value = struct.unpack(">f", take(4))[0]
            elif tag == _TAG_STR:
                try:
                    value = take(int.from_bytes(take(2), "big")).decode("utf-8")
                except UnicodeDecodeError:
                    raise TraceError(f"attribute {key} is not UTF-8") from None
            else:
                raise TraceError(f"attribute {key}: unknown type tag {tag!r}")
            attrs.append((key, value))
        if [k for k, _ in attrs] != sorted(k for k, _ in attrs):
            raise TraceError("record attributes are not sorted")
        inputs = []
        for _ in range(take(1)[0]):
            n = name()
            source = int.from_bytes(take(8), "big")
            inputs.append(TraceInput(n, take(32), source))
        output = take(32)
        if pos != len(data):
            raise TraceError(f"{len(data) - pos} trailing bytes after the record")
        record = cls(index, kind, tuple(attrs), tuple(inputs), output)
        if record.encode() != data:
            raise TraceError("record encoding is not canonical")
        return record

    # ---- JSON (plain objects; Trace.to_json wraps them)

    def to_obj(self) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        for k, v in self.attrs:
            if isinstance(v, bool):
                attrs[k] = {"bool": v}
            elif isinstance(v, int):
                attrs[k] = {"int": v}
            elif isinstance(v, float):
                attrs[k] = {"f32": f"0x{_f32_bits(v):08x}"}
            else:
                attrs[k] = {"str": v}
        return {
            "index": self.index,
            "op": self.kind,
            "attrs": attrs,
            "inputs": [
                {"name": i.name, "source": None if i.external else i.source, "root": "0x" + i.root.hex()}
                for i in self.inputs
            ],
            "output": "0x" + self.output.hex(),
        }

    @classmethod
    def from_obj(cls, o: Any) -> TraceRecord:
        o = _obj(o, ("index", "op", "attrs", "inputs", "output"), "record")
        attrs_o = o["attrs"]
        if not isinstance(attrs_o, dict):
            raise TraceError("record attrs must be an object")
        attrs = []
        for k, typed in attrs_o.items():
            if not isinstance(typed, dict) or len(typed) != 1:
                raise TraceError(f"attribute {k!r} must be an object with one type key")
            ((tag, v),) = typed.items()
            if tag == "bool" and type(v) is bool:
                attrs.append((k, v))
            elif tag == "int" and type(v) is int:
                attrs.append((k, v))
            elif tag == "f32" and isinstance(v, str) and _HEX8_RE.match(v):
                attrs.append((k, _f32_from_bits(int(v, 16))))
            elif tag == "str" and isinstance(v, str):
                attrs.append((k, v))
            else:
                raise TraceError(f"attribute {k!r}: bad typed value {typed!r:.80}")
        inputs_o = o["inputs"]
        if not isinstance(inputs_o, list):
            raise TraceError("record inputs must be a list")
        inputs = []
        for io in inputs_o:
            io = _obj(io, ("name", "source", "root"), "input")
            src = io["source"]
            if src is None:
                src = EXTERNAL
            elif type(src) is not int or not 0 <= src < EXTERNAL:
                raise TraceError(f"input source must be null or a record index, got {src!r:.40}")
            inputs.append(TraceInput(io["name"], _root(io["root"]), src))
        index = o["index"]
        if type(index) is not int:
            raise TraceError(f"record index must be an integer, got {index!r:.40}")
        return cls(index, o["op"], tuple(attrs), tuple(inputs), _root(o["output"]))

    # ---- replay

    def attr_dict(self) -> dict[str, Any]:
        """The attributes as keyword arguments of ``OPERATORS[kind]``."""
        return dict(self.attrs)


def _obj(o: Any, keys: tuple[str, ...], what: str) -> dict[str, Any]:
    if not isinstance(o, dict):
        raise TraceError(f"{what} must be a JSON object, got {type(o).__name__}")
    if set(o) != set(keys):
        raise TraceError(f"{what} keys: missing {sorted(set(keys) - set(o))}, unexpected {sorted(set(o) - set(keys), key=str)}")
    return o


def _root(v: Any) -> bytes:
    if not isinstance(v, str) or not _HEX32_RE.match(v):
        raise TraceError(f"a root must be 0x + 64 lowercase hex digits, got {v!r:.80}")
    return bytes.fromhex(v[2:])


def _reject_constant(c: str) -> Any:
    raise TraceError(f"JSON constant {c} is not allowed")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        raise TraceError("duplicate key in JSON object")
    return d


# --------------------------------------------------------------------------- the record tree


def _depth(count: int) -> int:
    return max(count - 1, 0).bit_length()


_Z = empty_subtrees(NODE_PREFIX, _MAX_DEPTH)


def _leaf(record_hash: bytes) -> bytes:
    return keccak256(LEAF_PREFIX + record_hash)


def _combine(count: int, tree_root: bytes) -> bytes:
    return keccak256(ROOT_PREFIX + count.to_bytes(8, "big") + tree_root)


@dataclass(frozen=True)
class RecordProof:
    """Record ``index`` of a trace of ``count`` records: its siblings from the leaf
    up (exactly ``ceil(log2(count))`` of them)."""

    index: int
    count: int
    siblings: tuple[bytes, ...]

    def to_obj(self) -> dict[str, Any]:
        return {"index": self.index, "count": self.count, "siblings": ["0x" + s.hex() for s in self.siblings]}

    @classmethod
    def from_obj(cls, o: Any) -> RecordProof:
        o = _obj(o, ("index", "count", "siblings"), "record proof")
        if type(o["index"]) is not int or type(o["count"]) is not int or not isinstance(o["siblings"], list):
            raise TraceError("record proof: index and count must be integers, siblings a list")
        return cls(o["index"], o["count"], tuple(_root(s) for s in o["siblings"]))


def verify_record(trace_root: bytes, record: TraceRecord | bytes, proof: RecordProof) -> None:
    """Check that ``record`` (a :class:`TraceRecord`, or a record hash) is record
    ``proof.index`` of the trace committed to by ``trace_root``; :class:`TraceError` if not."""
    _check_root("trace root", trace_root)
    if isinstance(record, TraceRecord):
        if record.index != proof.index:
            raise TraceError(f"the record's index {record.index} is not the proof's {proof.index}")
        h = record.hash()
    else:
        h = _check_root("record hash", record)
    for name in ("index", "count"):
        if type(getattr(proof, name)) is not int:
            raise TraceError(f"proof {name} must be an int")
    if not 0 <= proof.index < proof.count < _U64:
        raise TraceError(f"record {proof.index} is not in a trace of {proof.count} records")
    depth = _depth(proof.count)
    if not isinstance(proof.siblings, (tuple, list)) or len(proof.siblings) != depth:
        raise TraceError(f"a trace of {proof.count} records needs {depth} siblings")
    acc, i = _leaf(h), proof.index
    for s in proof.siblings:
        _check_root("sibling", s)
        acc = keccak256(NODE_PREFIX + s + acc) if i & 1 else keccak256(NODE_PREFIX + acc + s)
        i >>= 1
    if _combine(proof.count, acc) != trace_root:
        raise TraceError("record proof does not match the trace root")


class Trace:
    """The records of one computation, their tree, root and proofs.

    Construction checks the trace is well formed: record ``i`` has index ``i``,
    and every input that names a source record carries that record's output root.
    ``check_wiring=False`` skips the second rule: a dishonest prover can commit to
    a trace whose wiring is broken, and a verifier must still hold it (to find the
    broken edge with :func:`wiring_faults` and dispute it on chain).
    """

    def __init__(self, records: Iterable[TraceRecord], *, check_wiring: bool = True) -> None:
        records = tuple(records)
        if not records:
            raise TraceError("a trace has at least one record")
        for i, r in enumerate(records):
            if not isinstance(r, TraceRecord):
                raise TraceError(f"record {i} is a {type(r).__name__}, not a TraceRecord")
            if r.index != i:
                raise TraceError(f"record {i} carries index {r.index}")
            for inp in r.inputs if check_wiring else ():
                if not inp.external and records[inp.source].output != inp.root:
                    raise TraceError(
                        f"record {i}: input {inp.name} claims record {inp.source}'s output but has another root"
                    )
        self.records = records
        self.hashes = tuple(r.hash() for r in records)
        self._levels = self._build(self.hashes)
        self.tree_root = self._levels[-1][0]
        self.root = _combine(len(records), self.tree_root)

    @staticmethod
    def _build(hashes: Sequence[bytes]) -> list[list[bytes]]:
        level = [_leaf(h) for h in hashes]
        levels = [level]
        for k in range(_depth(len(hashes))):
            if len(level) % 2:
                level = level + [_Z[k]]
            level = [keccak256(NODE_PREFIX + level[j] + level[j + 1]) for j in range(0, len(level), 2)]
            levels.append(level)
        return levels

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> TraceRecord:
        return self.records[i]

    def __iter__(self):
        return iter(self.records)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Trace) and self.root == other.root

    def __hash__(self) -> int:
        return hash(self.root)

    def __repr__(self) -> str:
        return f"Trace({len(self)} records, root 0x{self.root.hex()})"

    def node(self, level: int, index: int) -> bytes:
        """Node ``index`` of ``level`` (0: leaves), padding included: what a bisection game reveals."""
        if not 0 <= level < len(self._levels):
            raise IndexError(f"level {level} not in a tree of depth {len(self._levels) - 1}")
        nodes = self._levels[level]
        if not 0 <= index < 2 ** (len(self._levels) - 1 - level):
            raise IndexError(f"node {index} not on level {level}")
        return nodes[index] if index < len(nodes) else _Z[level]

    def prove_record(self, index: int) -> RecordProof:
        """The inclusion proof of record ``index`` (check it with :func:`verify_record`)."""
        index = operator.index(index)
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} not in a trace of {len(self)} records")
        return RecordProof(
            index, len(self), tuple(self.node(level, (index >> level) ^ 1) for level in range(len(self._levels) - 1))
        )

    def external_inputs(self) -> list[tuple[int, str, bytes]]:
        """``(record index, input name, root)`` of every input no record produced
        (weights, token ids, positions, masks): what a verifier checks against the
        model and the claim's input."""
        return [(r.index, i.name, i.root) for r in self.records for i in r.inputs if i.external]

    @property
    def output(self) -> bytes:
        """The last record's output root (logits, or embeddings)."""
        return self.records[-1].output

    # ---- JSON

    def to_json(self) -> str:
        """Compact JSON: ``{"kind": "refute.trace", "version": 1, "root": ..., "records": [...]}``."""
        return json.dumps(
            {"kind": JSON_KIND, "version": TRACE_VERSION, "root": "0x" + self.root.hex(),
             "records": [r.to_obj() for r in self.records]},
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes, *, check_wiring: bool = True) -> Trace:
        """Parse :meth:`to_json`'s output; strict: exact keys, typed attributes,
        lowercase hex, no floats or NaN, and the stated root must be the records' root
        (``check_wiring``: as in the constructor)."""
        if isinstance(text, bytes):
            try:
                text = text.decode("utf-8")
            except UnicodeDecodeError:
                raise TraceError("trace JSON is not UTF-8") from None
        if not isinstance(text, str):
            raise TraceError(f"trace JSON must be str or bytes, got {type(text).__name__}")
        try:
            o = json.loads(
                text, parse_constant=_reject_constant, parse_float=lambda s: _reject_constant(s),
                object_pairs_hook=_no_duplicates,
            )
        except json.JSONDecodeError as e:
            raise TraceError(f"trace is not valid JSON: {e}") from None
        o = _obj(o, ("kind", "version", "root", "records"), "trace")
        if o["kind"] != JSON_KIND:
            raise TraceError(f"kind must be {JSON_KIND!r}, got {o['kind']!r:.40}")
        if type(o["version"]) is not int or o["version"] != TRACE_VERSION:
            raise TraceError(f"unsupported trace version {o['version']!r:.20}")
        if not isinstance(o["records"], list):
            raise TraceError("records must be a list")
        trace = cls((TraceRecord.from_obj(r) for r in o["records"]), check_wiring=check_wiring)
        if trace.root != _root(o["root"]):
            raise TraceError("the stated root is not the records' root")
        return trace


def wiring_faults(trace: Trace) -> list[tuple[int, str]]:
    """``(record, input name)`` of every internal input whose root is not its source
    record's output root (empty for a well-formed trace)."""
    return [(r.index, i.name) for r in trace for i in r.inputs
            if not i.external and trace[i.source].output != i.root]


# --------------------------------------------------------------------------- checkpoints


def checkpoint_cuts(trace: Trace) -> tuple[int, ...]:
    """The records after which a trace may be cut: record ``c`` qualifies when
    every record after it reads nothing produced before it but ``c``'s own output
    (external inputs aside). The records between two such cuts can then be
    recomputed from the first cut's output alone. The last record always qualifies."""
    n = len(trace)
    blocked = [0] * (n + 1)  # difference array: an edge s -> j blocks the cuts s+1 .. j-1
    for r in trace:
        for i in r.inputs:
            if not i.external and i.source + 1 < r.index:
                blocked[i.source + 1] += 1
                blocked[r.index] -= 1
    cuts, open_edges = [], 0
    for c in range(n):
        open_edges += blocked[c]
        if open_edges == 0:
            cuts.append(c)
    return tuple(cuts)


def select_checkpoints(cuts: Sequence[int], count: int, span: int = SEGMENT_RECORDS) -> tuple[int, ...]:
    """The checkpoints among ``cuts`` (:func:`checkpoint_cuts` of a trace of
    ``count`` records): the first cut; then, from each checkpoint, the farthest cut
    at most ``span`` records on (the next cut if none is that close); and the last
    record. For a transformer that is the embedding's output, every layer's output
    and the logits."""
    if not cuts or cuts[-1] != count - 1:
        raise TraceError("the last record must be a cut")
    chosen = [cuts[0]]
    k = 0
    while chosen[-1] != count - 1:
        j = k + 1
        while j + 1 < len(cuts) and cuts[j + 1] - chosen[-1] <= span:
            j += 1
        chosen.append(cuts[j])
        k = j
    return tuple(chosen)


def checkpointed(trace: Trace, checkpoints: Iterable[int]) -> Trace:
    """``trace`` as a claim commits to it: the output root of every record not in
    ``checkpoints``, and every input read from such a record, replaced by
    :data:`DEFERRED`. The wiring rule still holds (both sides of a deferred edge
    are zero); wiring that ``trace`` breaks on a checkpoint's edge stays broken."""
    keep = frozenset(checkpoints)
    records = []
    for r in trace:
        inputs = tuple(i if i.external or i.source in keep else TraceInput(i.name, DEFERRED, i.source)
                       for i in r.inputs)
        records.append(TraceRecord(r.index, r.kind, r.attrs, inputs, r.output if r.index in keep else DEFERRED))
    return Trace(records, check_wiring=False)


def prefix(trace: Trace, stop: int) -> Trace:
    """Records ``0 .. stop - 1`` of ``trace`` (a dispute's full prefix)."""
    if not 1 <= stop <= len(trace):
        raise TraceError(f"a prefix of {stop} records of a trace of {len(trace)}")
    return Trace(trace.records[:stop], check_wiring=False)


# --------------------------------------------------------------------------- comparing traces


def first_divergence(a: Trace, b: Trace) -> int | None:
    """The index of the first record whose hash differs between ``a`` and ``b``
    (the first record of the shorter trace's length if one is a prefix of the
    other), or None if the traces are equal.

    Both traces are well formed (:class:`Trace` checks wiring), so every input of
    that record that another record produced agrees between them: the record
    either consumed a different external tensor (weight, token ids) or, with
    equal inputs, produced a different output. :func:`diff_records` says which.
    """
    if a.root == b.root:
        return None
    for i, (x, y) in enumerate(zip(a.hashes, b.hashes)):
        if x != y:
            return i
    return min(len(a), len(b))


def diff_records(a: TraceRecord, b: TraceRecord) -> list[str]:
    """What differs between two records: ``"kind"``, ``"attrs"``, ``"inputs"``
    (names or sources), ``"input:<name>"`` (root), ``"output"``; empty if equal."""
    out = []
    if a.index != b.index:
        out.append("index")
    if a.kind != b.kind:
        out.append("kind")
    if [k for k, _ in a.attrs] != [k for k, _ in b.attrs] or not all(
        _same_attr(x, y) for (_, x), (_, y) in zip(a.attrs, b.attrs)
    ):
        out.append("attrs")
    if [(i.name, i.source) for i in a.inputs] != [(i.name, i.source) for i in b.inputs]:
        out.append("inputs")
    else:
        out += [f"input:{x.name}" for x, y in zip(a.inputs, b.inputs) if x.root != y.root]
    if a.output != b.output:
        out.append("output")
    return out


def replay_record(record: TraceRecord, inputs: Mapping[str, torch.Tensor], *, backend: str = "reference") -> bool:
    """Spot replay: recompute ``record`` from ``inputs`` (its input tensors by name)
    on ``backend``. :class:`TraceError` if the inputs are not the ones the record
    names (names or roots); else whether the output's root is the record's."""
    if set(inputs) != {i.name for i in record.inputs}:
        raise TraceError(f"record {record.index} takes inputs {[i.name for i in record.inputs]}, got {sorted(inputs)}")
    for i in record.inputs:
        if tensor_root(inputs[i.name]) != i.root:
            raise TraceError(f"input {i.name} is not the tensor record {record.index} names")
    out = OPERATORS[record.kind](**{i.name: inputs[i.name] for i in record.inputs}, **record.attr_dict(), backend=backend)
    return tensor_root(out) == record.output


# --------------------------------------------------------------------------- tensor roots, cached

_ROOTABLE = frozenset(d.torch_dtype for d in DTYPES.values())
_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def _hash_pool() -> ThreadPoolExecutor:
    """One worker thread that hashes tensors while the forward pass goes on."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="refute-trace-roots")
        return _pool


def _version(t: torch.Tensor) -> int | None:
    try:
        return t._version
    except RuntimeError:  # an inference tensor has no version counter
        return None


class RootCache:
    """Tensor roots remembered by tensor identity and version counter.

    A model's weights are the same tensor objects in every forward pass, so they
    are hashed once per process; an activation consumed by several operators is
    hashed once. An entry is used only while its tensor is alive (a weak
    reference) and unmodified (``t._version``, which every in-place torch
    operation bumps, views included). Writing to a tensor behind torch's back
    (through ``.numpy()`` or ``data_ptr()``) is not seen: do not. Tensors
    without a version counter (made under ``torch.inference_mode``) are never cached.

    :meth:`lookup` with ``background=True`` hands the hashing to a worker thread
    and returns a future; the worker checks the tensor's version again after
    hashing, so an in-place write that races the hash is an error, not a wrong root.
    """

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref, int, bytes | Future]] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.bytes_hashed = 0
        self.seconds = 0.0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def _forget(self, key: int, ref: weakref.ref) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry[0] is ref:
            self._entries.pop(key, None)

    def _compute(self, t: torch.Tensor, version: int | None, stream: Any = None) -> bytes:
        t0 = time.perf_counter()
        if stream is not None:  # copy to the host on the stream that produced t
            with torch.cuda.stream(stream):
                root = tensor_root(t)
        else:
            root = tensor_root(t)
        if _version(t) != version:
            raise TraceError("a tensor was modified in place while its root was being computed")
        with self._lock:
            self.seconds += time.perf_counter() - t0
            self.bytes_hashed += t.numel() * t.element_size()
        return root

    def lookup(self, t: torch.Tensor, background: bool = False) -> bytes | Future:
        """``tensor_root(t)``, from the cache if ``t`` was seen unmodified before;
        with ``background``, a future of it when it has to be computed."""
        if not isinstance(t, torch.Tensor):
            raise TraceError(f"operator inputs and outputs must be tensors, got {type(t).__name__}")
        if t.dtype not in _ROOTABLE:
            raise TraceError(f"no tensor root for dtype {t.dtype}")
        version, key = _version(t), id(t)
        entry = self._entries.get(key)
        if version is not None and entry is not None and entry[0]() is t and entry[1] == version:
            self.hits += 1
            value = entry[2]
            if isinstance(value, Future) and value.done() and value.exception() is None:
                value = value.result()
                self._entries[key] = (entry[0], version, value)
            return value
        self.misses += 1
        if background:
            stream = torch.cuda.current_stream(t.device) if t.is_cuda else None
            value = _hash_pool().submit(self._compute, t, version, stream)
        else:
            value = self._compute(t, version)
        if version is not None:
            ref = weakref.ref(t, lambda r, key=key: self._forget(key, r))
            self._entries[key] = (ref, version, value)
        return value

    def root(self, t: torch.Tensor) -> bytes:
        """``tensor_root(t)``, from the cache if ``t`` was seen unmodified before."""
        value = self.lookup(t)
        return value.result() if isinstance(value, Future) else value


_DEFAULT_CACHE = RootCache()


def default_cache() -> RootCache:
    """The process-wide cache the tracers use unless given another."""
    return _DEFAULT_CACHE


def _resolve(value: bytes | Future) -> bytes:
    return value.result() if isinstance(value, Future) else value


class Tracer:
    """An executor observer that turns every :class:`OpRecord` into a :class:`TraceRecord`.

    ``Executor(observers=[tracer])``, or :func:`record_run`. Records are numbered
    from 0 in the order the tracer sees them (not by the executor's running
    count). An input's ``source`` is the record that produced that very tensor
    object, unmodified, in this trace; else :data:`EXTERNAL`.

    With ``background=True`` (the default) roots are computed on a worker thread
    while the model runs on, and records are assembled when :attr:`records`,
    :meth:`trace` or :attr:`trace_root` is first read; the trace is the same
    either way. Tensors waiting for their hash stay alive until hashed.

    With ``checkpoints`` (record indices), only those records' outputs are
    hashed; the others' outputs, and the inputs read from them, get
    :data:`DEFERRED`: the trace is :func:`checkpointed` without the cost of
    rooting every activation.
    """

    def __init__(self, cache: RootCache | None = None, background: bool = True,
                 checkpoints: Iterable[int] | None = None) -> None:
        self.cache = cache if cache is not None else _DEFAULT_CACHE
        self.background = background
        self.checkpoints = None if checkpoints is None else frozenset(checkpoints)
        self._records: list[TraceRecord] = []
        self._pending: list[tuple[str, dict[str, Any], list[tuple[str, bytes | Future, int]], bytes | Future]] = []
        self._produced: dict[int, tuple[weakref.ref, int, int | None]] = {}
        self._trace: Trace | None = None

    def reset(self) -> None:
        """Forget every record (hashes still running finish into the cache)."""
        self._pending.clear()
        self._records.clear()
        self._produced.clear()
        self._trace = None

    def __len__(self) -> int:
        return len(self._records) + len(self._pending)

    def __call__(self, op: OpRecord) -> None:
        if op.kind not in OPERATOR_SIGNATURES:
            raise TraceError(f"unknown operator kind {op.kind!r}")
        index = len(self)
        keep = self.checkpoints
        inputs = []
        for name, t in op.inputs.items():
            source = EXTERNAL
            produced = self._produced.get(id(t))
            # (tensors made under inference mode have no version: identity, then the root check below)
            if produced is not None and produced[0]() is t and produced[2] == _version(t):
                source = produced[1]
            deferred = keep is not None and source != EXTERNAL and source not in keep
            inputs.append((name, DEFERRED if deferred else self.cache.lookup(t, self.background), source))
        out = op.output
        committed = keep is None or index in keep
        self._pending.append((op.kind, dict(op.attrs), inputs,
                              self.cache.lookup(out, self.background) if committed else DEFERRED))
        self._produced[id(out)] = (weakref.ref(out), index, _version(out))
        self._trace = None

    @property
    def records(self) -> list[TraceRecord]:
        """The records so far (waits for pending roots)."""
        done = 0
        try:
            for kind, attrs, inputs, out in self._pending:
                index = len(self._records)
                ins = []
                for name, root, source in inputs:
                    root = _resolve(root)
                    # The producer's identity and version matched; its root must too.
                    if source != EXTERNAL and self._records[source].output != root:
                        source = EXTERNAL
                    ins.append(TraceInput(name, root, source))
                self._records.append(TraceRecord(index, kind, attrs, tuple(ins), _resolve(out)))
                done += 1
        finally:
            del self._pending[:done]
        return self._records

    def trace(self) -> Trace:
        """The records so far as a :class:`Trace`."""
        records = self.records
        if self._trace is None or len(self._trace) != len(records):
            self._trace = Trace(records)
        return self._trace

    @property
    def trace_root(self) -> bytes:
        return self.trace().root

    def prove_record(self, index: int) -> RecordProof:
        return self.trace().prove_record(index)


def record_run(executor: Executor, fn: Callable[..., Any], *args: Any, cache: RootCache | None = None,
               background: bool = True, checkpoints: Iterable[int] | None = None,
               **kwargs: Any) -> tuple[Trace, Any]:
    """Run ``fn(*args, **kwargs)`` with a :class:`Tracer` on ``executor``; return
    ``(trace, fn's result)``. The tracer is detached afterwards, whatever happens.
    With ``checkpoints``, only those records' outputs are hashed and the trace is
    :func:`checkpointed` (the same records, computed without hashing the rest)."""
    tracer = Tracer(cache, background, checkpoints)
    executor.observers.append(tracer)
    try:
        result = fn(*args, **kwargs)
    finally:
        executor.observers.remove(tracer)
    return tracer.trace(), result


# --------------------------------------------------------------------------- the two tasks


def generation_inputs(prompt_ids: Sequence[int], generated_ids: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(ids, positions, mask)`` of the traced prefill: one sequence, the prompt
    followed by every generated token but the last, positions ``0..T-1``, no padding."""
    prompt, generated = [int(i) for i in prompt_ids], [int(i) for i in generated_ids]
    if not prompt:
        raise ValueError("the prompt needs at least one token")
    if not generated:
        raise ValueError("a generation with no tokens has nothing to trace")
    seq = prompt + generated[:-1]
    n = len(seq)
    return torch.tensor([seq], dtype=torch.int64), torch.arange(n, dtype=torch.int64)[None], torch.ones(1, n, dtype=torch.bool)


def trace_generation(model: Any, prompt_ids: Sequence[int], generated_ids: Sequence[int], *, cache: RootCache | None = None,
                     background: bool = True, return_logits: bool = False) -> Trace | tuple[Trace, torch.Tensor]:
    """The trace of a generation: one prefill of ``model`` (a
    :class:`~refute.compute.llama.LlamaDecoder`) over ``prompt + generated[:-1]``,
    all logits. Row ``len(prompt) - 1 + j`` of the last record's output holds the
    logits the ``j``-th generated token was sampled from (invariance I3), so the
    tokens can be re-derived from this one trace."""
    ids, positions, mask = generation_inputs(prompt_ids, generated_ids)
    trace, logits = record_run(model.ex, model.forward, ids, positions, mask, None, "all", cache=cache,
                               background=background)
    return (trace, logits) if return_logits else trace


def trace_encoder(model: Any, ids: torch.Tensor, mask: torch.Tensor, *, cache: RootCache | None = None,
                  background: bool = True, return_embeddings: bool = False) -> Trace | tuple[Trace, torch.Tensor]:
    """The trace of ``model.embed(ids, mask)`` (a :class:`~refute.compute.bert.BertEncoder`)."""
    trace, emb = record_run(model.ex, model.embed, ids, mask, cache=cache, background=background)
    return (trace, emb) if return_embeddings else trace


def trace_embedding(model: Any, texts: Sequence[str], *, tokenizer: Any = None, cache: RootCache | None = None,
                    background: bool = True, return_embeddings: bool = False) -> Trace | tuple[Trace, torch.Tensor]:
    """The trace of embedding ``texts`` with MiniLM: every text in one batch,
    tokenized by ``tokenizer`` (default: the packaged MiniLM tokenizer) and
    right-padded to the longest, as :meth:`MiniLMTokenizer.encode_batch` does."""
    if isinstance(texts, str) or not texts:
        raise ValueError("texts must be a non-empty sequence of strings")
    if tokenizer is None:
        from refute.compute.tokenizer import minilm_tokenizer

        tokenizer = minilm_tokenizer()
    ids, mask = tokenizer.encode_batch(list(texts))
    return trace_encoder(model, ids, mask, cache=cache, background=background, return_embeddings=return_embeddings)


# --------------------------------------------------------------------------- overhead


def bench_trace_overhead(model: Any = None, tokens: int = 128, repeats: int = 3, seed: int = 0) -> dict[str, Any]:
    """Time one prefill of ``tokens`` random tokens through ``model`` (default:
    SmolLM2-135M on the reference backend): untraced; traced as a claim commits
    it (only the program's checkpoints rooted, :func:`checkpointed`), inline
    (``claim_inline``) and on the worker thread (``claim``, what a prover runs);
    traced in full, every output rooted, inline (``inline``) and on the worker
    thread (``background``: what a dispute's full trace costs); the weights'
    roots cached throughout; and, once, the first full traced forward with an
    empty cache and the weights' roots alone.

    The three kinds of run alternate, ``repeats`` times, so that drift in the
    machine's speed affects all alike. For each kind: wall seconds (median and
    minimum) and process CPU seconds (median, all threads: on a shared machine
    the least noisy measure of the work added). ``overhead_*`` = traced /
    untraced - 1 on median wall time; ``*_min`` on minimum wall time, ``*_cpu``
    on median CPU time. Every traced run must give the same trace root.
    """
    if model is None:
        from refute.compute.llama import smollm2

        model = smollm2(Executor("reference"))
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (1, tokens), generator=g)
    positions, mask = torch.arange(tokens)[None], torch.ones(1, tokens, dtype=torch.bool)

    def forward() -> torch.Tensor:
        return model.forward(ids, positions, mask, None, "all")

    forward()  # warm-up: allocations, lazy imports
    tensor_root(torch.zeros(1))  # compiles the native hasher on first use
    cache = RootCache()
    t0 = time.perf_counter()
    first, _ = record_run(model.ex, forward, cache=cache)
    first_s = time.perf_counter() - t0
    weights = {id(t): t for t in model.w.values()}.values()
    weight_bytes = sum(t.numel() * t.element_size() for t in weights)
    t0 = time.perf_counter()
    for t in weights:
        tensor_root(t)
    weights_s = time.perf_counter() - t0
    from refute.compute.program import program_of

    checkpoints = program_of(model).checkpoints
    claimed = checkpointed(first, checkpoints).root
    kinds = ("untraced", "claim", "claim_inline", "inline", "background")
    wall: dict[str, list[float]] = {k: [] for k in kinds}
    cpu: dict[str, list[float]] = {k: [] for k in kinds}
    hashing, claim_hashing, activation_bytes, claim_bytes = [], [], 0, 0
    for _ in range(repeats):
        for kind in kinds:
            before_s, before_b = cache.seconds, cache.bytes_hashed
            t0, c0 = time.perf_counter(), time.process_time()
            if kind == "untraced":
                forward()
            else:
                claim = kind.startswith("claim")
                trace, _ = record_run(model.ex, forward, cache=cache, background=kind in ("background", "claim"),
                                      checkpoints=checkpoints if claim else None)
                if trace.root != (claimed if claim else first.root):
                    raise AssertionError("tracing the same forward twice gave two roots")
            wall[kind].append(time.perf_counter() - t0)
            cpu[kind].append(time.process_time() - c0)
            if kind == "inline":
                hashing.append(cache.seconds - before_s)
                activation_bytes = cache.bytes_hashed - before_b
            if kind == "claim_inline":
                claim_hashing.append(cache.seconds - before_s)
                claim_bytes = cache.bytes_hashed - before_b
    med = {k: statistics.median(v) for k, v in wall.items()}
    low = {k: min(v) for k, v in wall.items()}
    cpu_med = {k: statistics.median(v) for k, v in cpu.items()}
    out: dict[str, Any] = {
        "tokens": tokens,
        "backend": model.ex.backend,
        "threads": torch.get_num_threads(),
        "records": len(first),
        "checkpoints": len(checkpoints),
        "activation_bytes": activation_bytes,
        "claim_bytes": claim_bytes,
        "weight_bytes": weight_bytes,
    }
    for k in kinds:
        out[f"{k}_s"], out[f"{k}_min_s"], out[f"{k}_cpu_s"] = med[k], low[k], cpu_med[k]
    for k in kinds[1:]:
        out[f"overhead_{k}"] = med[k] / med["untraced"] - 1
        out[f"overhead_{k}_min"] = low[k] / low["untraced"] - 1
        out[f"overhead_{k}_cpu"] = cpu_med[k] / cpu_med["untraced"] - 1
    out.update({
        "hashing_inline_s": statistics.median(hashing),
        "hashing_claim_inline_s": statistics.median(claim_hashing),
        "traced_first_s": first_s,
        "weight_roots_s": weights_s,
        "overhead_first": first_s / med["untraced"] - 1,
        "wall_s": wall,
        "cpu_s": cpu,
        "trace_root": "0x" + first.root.hex(),
        "claim_trace_root": "0x" + claimed.hex(),
    })
    return out
