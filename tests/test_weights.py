"""The model-loading layer: configs, weights, dequantisation, rotary layout,
tokenizers, digests and the corpus (refute.compute.weights / tokenizer / corpus
/ hf_reference)."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from refute.compute import weights as W  # noqa: E402
from refute.compute.corpus import load_corpus, load_corpus_entries  # noqa: E402
from refute.compute.tokenizer import minilm_tokenizer, smollm2_tokenizer  # noqa: E402


def _bits(a) -> np.ndarray:
    a = a.numpy() if isinstance(a, torch.Tensor) else a
    return np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)


@pytest.fixture(scope="module")
def minilm():
    return W.load_minilm()


@pytest.fixture(scope="module")
def smollm2():
    return W.load_smollm2()


# --------------------------------------------------------------------------- #
# MiniLM
# --------------------------------------------------------------------------- #


def test_minilm_config(minilm):
    c, _ = minilm
    assert (c.hidden_size, c.num_layers, c.num_heads, c.head_dim, c.intermediate_size) == (384, 6, 12, 32, 1536)
    assert (c.vocab_size, c.type_vocab_size, c.max_position_embeddings) == (30522, 2, 512)
    assert c.hidden_act == "gelu" and c.layer_norm_eps == float(np.float32(1e-12))
    assert (c.max_seq_length, c.pooling, c.normalize) == (256, "mean", True)


def test_minilm_weights_match_safetensors(minilm):
    from safetensors import safe_open

    c, w = minilm
    names = W.bert_hf_names(c)
    assert len(w) == 5 + 16 * c.num_layers
    with safe_open(str(W.minilm_dir() / "model.safetensors"), "pt") as f:
        unused = set(f.keys()) - set(names.values())
        assert unused == {"embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias"}
        for ours, theirs in names.items():
            t = f.get_tensor(theirs)
            assert w[ours].dtype == torch.float32 and w[ours].is_contiguous()
            assert np.array_equal(_bits(w[ours]), _bits(t)), ours


# --------------------------------------------------------------------------- #
# SmolLM2: GGUF reading, dequantisation, rotary layout
# --------------------------------------------------------------------------- #


def test_smollm2_config(smollm2):
    c, w = smollm2
    assert (c.hidden_size, c.num_layers, c.num_heads, c.num_kv_heads, c.head_dim) == (576, 30, 9, 3, 64)
    assert (c.intermediate_size, c.vocab_size, c.max_position_embeddings) == (1536, 49152, 8192)
    assert c.rope_theta == 100000.0 and c.rms_norm_eps == float(np.float32(1e-5))
    assert (c.bos_token_id, c.eos_token_id, c.pad_token_id) == (1, 2, 2)
    assert c.tie_word_embeddings and "lm_head.weight" not in w
    assert c.rope_convention == "rotate_half" and c.chat_template.startswith("{% for message in messages %}")
    assert len(w) == 2 + 9 * c.num_layers
    assert all(t.dtype == torch.float32 and t.is_contiguous() for t in w.values())
    assert sum(t.numel() for t in w.values()) == 134_515_008


@pytest.fixture(scope="module")
def gguf_ref():
    gguf = pytest.importorskip("gguf")
    return gguf.GGUFReader(str(W.smollm2_gguf_path()))


def test_gguf_reader_matches_gguf_package(gguf_ref):
    ours = W.gguf_file()
    keys = [k for k in gguf_ref.fields if not k.startswith("GGUF.")]
    assert keys == list(ours.metadata)
    for k in keys:
        assert ours.metadata[k] == gguf_ref.fields[k].contents(), k
    assert [t.name for t in gguf_ref.tensors] == list(ours.tensors)
    for t in gguf_ref.tensors:
        mine = ours.tensors[t.name]
        assert mine.ggml_type == int(t.tensor_type), t.name
        assert mine.shape == tuple(int(n) for n in reversed(t.shape)), t.name
        assert mine.offset == t.data_offset and mine.nbytes == t.n_bytes, t.name


def test_dequantize_matches_gguf_quants_bit_for_bit(gguf_ref):
    """Every tensor of the file, read and dequantised by the gguf package, equals ours."""
    from gguf.quants import dequantize as ref_dequantize

    g = W.gguf_file()
    seen = set()
    for t in gguf_ref.tensors:
        ref = ref_dequantize(t.data, t.tensor_type)
        assert np.array_equal(_bits(g.dequantize(t.name)), _bits(ref)), t.name
        seen.add(g.tensors[t.name].type_name)
    assert seen == {"F32", "Q4_1", "Q8_0"}


@pytest.mark.parametrize("type_name", ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0"])
def test_dequantize_synthetic_blocks(type_name):
    """Every supported block type, on random blocks whose fp16 scales include
    zeros, subnormals, negatives and large values."""
    quants = pytest.importorskip("gguf.quants")
    gtype = W._GGML_TYPE_BY_NAME[type_name]
    _, block, size = W.GGML_TYPES[gtype]
    rng = np.random.default_rng(gtype)
    rows, blocks = 7, 5
    raw = rng.integers(0, 256, size=(rows, blocks, size), dtype=np.uint8)
    if block > 1:  # finite fp16 scale(s) at the start of each block
        n_scales = 2 if type_name in ("Q4_1", "Q5_1") else 1
        pool = np.array([0.0, -0.0, 6e-8, -3e-5, 1.5e-3, 0.0123, -0.77, 1.0, 31.5, -2048.0, 40000.0], np.float16)
        shape = (rows, blocks, n_scales)
        s = rng.choice(pool, size=shape) * rng.uniform(0.5, 1.5, size=shape).astype(np.float16)
        raw[..., : 2 * n_scales] = s.astype(np.float16).view(np.uint8).reshape(rows, blocks, 2 * n_scales)
    else:  # keep F16/BF16/F32 payloads finite (NaN payloads are not the point here)
        vals = rng.standard_normal((rows, blocks * block)) * 100
        dt = {"F32": "<f4", "F16": "<f2", "BF16": None}[type_name]
        if dt is None:
            f = vals.astype(np.float32).view(np.uint32)
            raw = (f >> 16).astype("<u2").view(np.uint8).reshape(rows, blocks, size)
        else:
            raw = vals.astype(dt).view(np.uint8).reshape(rows, blocks, size)
    raw = raw.reshape(rows, blocks * size)
    ours = W.dequantize(raw, gtype)
    ref = quants.dequantize(raw, gtype)
    assert ours.shape == (rows, blocks * block) and ours.dtype == np.float32
    assert np.array_equal(_bits(ours), _bits(ref))


def test_q4_1_definition_by_hand():
    """x = fp32(d) * q + fp32(m), element j from the low nibble of byte j, j+16 from its high nibble."""
    d, m = np.float16(0.0371), np.float16(-0.2969)
    qs = np.arange(16, dtype=np.uint8) * 17  # low nibble j, high nibble j
    qs[3] = 0xA5
    block = np.concatenate([np.array([d, m], np.float16).view(np.uint8), qs])
    got = W.dequantize(block[None, :], "Q4_1")[0]
    lo, hi = (qs & 15).astype(np.float32), (qs >> 4).astype(np.float32)
    want = np.concatenate([np.float32(d) * lo + np.float32(m), np.float32(d) * hi + np.float32(m)])
    assert np.array_equal(_bits(got), _bits(want))
    assert got[3] == np.float32(np.float32(d) * 5 + np.float32(m)) and got[19] == np.float32(np.float32(d) * 10 + np.float32(m))


def test_unpermute_inverts_llama_cpp_permute():
    x = np.arange(12 * 64 * 3, dtype=np.float32).reshape(12 * 64, 3)
    for heads in (12, 4, 1):
        y = W.unpermute_rope_rows(x, heads)
        assert np.array_equal(W.permute_rope_rows(y, heads), x)
        assert not np.array_equal(y, x)
    # within a head of size D: GGUF row 2j is HF row j, GGUF row 2j+1 is HF row j + D/2
    y = W.unpermute_rope_rows(x, 12)
    assert np.array_equal(y[5], x[10]) and np.array_equal(y[32 + 5], x[11]) and np.array_equal(y[64 + 1], x[64 + 2])


def _rope_rotate_half(q, pos, theta):  # HF: pairs (j, j + D/2)
    d = q.shape[-1]
    inv = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    ang = np.concatenate([pos * inv, pos * inv])
    rot = np.concatenate([-q[..., d // 2 :], q[..., : d // 2]], axis=-1)
    return q * np.cos(ang) + rot * np.sin(ang)


def _rope_interleaved(q, pos, theta):  # ggml "normal" rope: pairs (2j, 2j+1)
    d = q.shape[-1]
    inv = theta ** (-np.arange(0, d, 2, dtype=np.float64) / d)
    c, s = np.cos(pos * inv), np.sin(pos * inv)
    out = q.copy()
    out[..., 0::2] = q[..., 0::2] * c - q[..., 1::2] * s
    out[..., 1::2] = q[..., 0::2] * s + q[..., 1::2] * c
    return out


def test_unpermuted_weights_give_the_same_attention_scores(smollm2):
    """q.k after rope is the same whether computed GGUF-style (stored rows,
    interleaved rope) or HF-style (our rows, rotate_half)."""
    c, w = smollm2
    g = W.gguf_file()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, c.hidden_size))
    d = c.head_dim
    wq_g = g.dequantize("blk.3.attn_q.weight").astype(np.float64)
    wk_g = g.dequantize("blk.3.attn_k.weight").astype(np.float64)
    wq, wk = w["layers.3.attn.q.weight"].double().numpy(), w["layers.3.attn.k.weight"].double().numpy()
    for head in (0, 4, 8):
        kv = head // (c.num_heads // c.num_kv_heads)
        qs, ks = slice(head * d, (head + 1) * d), slice(kv * d, (kv + 1) * d)
        s_g = _rope_interleaved(x[0] @ wq_g[qs].T, 7, c.rope_theta) @ _rope_interleaved(x[1] @ wk_g[ks].T, 3, c.rope_theta)
        s_h = _rope_rotate_half(x[0] @ wq[qs].T, 7, c.rope_theta) @ _rope_rotate_half(x[1] @ wk[ks].T, 3, c.rope_theta)
        assert s_g == pytest.approx(s_h, rel=1e-9, abs=1e-9)


# --------------------------------------------------------------------------- #
# digests
# --------------------------------------------------------------------------- #


def test_digest_stable_across_loads_and_sensitive_to_one_bit():
    c1, w1 = W.load_smollm2()
    d1 = W.model_digest(c1, w1)
    W.clear_cache()
    c2, w2 = W.load_smollm2()
    assert w2["embed.tokens"] is not w1["embed.tokens"]  # really a second load
    assert W.model_digest(c2, w2) == d1 and len(d1) == 64

    flipped = dict(w2)
    t = w2["layers.17.ffn.down.weight"].clone()
    t.view(torch.int32).view(-1)[12345] ^= 1  # the lowest mantissa bit of one element
    flipped["layers.17.ffn.down.weight"] = t
    assert W.model_digest(c2, flipped) != d1
    assert W.model_digest(dataclasses.replace(c2, rope_theta=10000.0), w2) != d1
    renamed = dict(w2)
    renamed["layers.17.ffn.down.weight_"] = renamed.pop("layers.17.ffn.down.weight")
    assert W.model_digest(c2, renamed) != d1

    m1 = W.model_digest(*W.load_minilm())
    W.clear_cache()
    assert W.model_digest(*W.load_minilm()) == m1 != d1


def test_digest_encoding_small_example():
    """Pins the encoding documented in docs/models.md."""
    import struct

    from Crypto.Hash import keccak

    @dataclasses.dataclass(frozen=True)
    class Tiny:
        architecture: str = "tiny"
        n: int = 3
        eps: float = 0.5
        flag: bool = True
        note: str | None = None

    t = torch.tensor([[1.0, -2.0]], dtype=torch.float32)
    u64 = lambda n: struct.pack("<Q", n)  # noqa: E731
    b = lambda x: u64(len(x)) + x  # noqa: E731
    msg = b(b"refute/model/v1") + b(b"tiny") + u64(5)
    msg += b(b"architecture") + b"s" + b(b"tiny")
    msg += b(b"n") + b"i" + struct.pack("<q", 3)
    msg += b(b"eps") + b"f" + struct.pack("<d", 0.5)
    msg += b(b"flag") + b"b\x01"
    msg += b(b"note") + b"n"
    msg += u64(1) + b(b"w") + b(b"float32") + u64(2) + u64(1) + u64(2) + b(struct.pack("<2f", 1.0, -2.0))
    assert W.DIGEST_ALGORITHM == "keccak256"
    assert W.model_digest(Tiny(), {"w": t}) == keccak.new(digest_bits=256, data=msg).hexdigest()


# --------------------------------------------------------------------------- #
# tokenizers and corpus (no transformers needed)
# --------------------------------------------------------------------------- #


def test_corpus_size():
    entries = load_corpus_entries()
    texts = load_corpus()
    assert len(texts) >= 32 and [e["text"] for e in entries] == texts
    assert len({e["kind"] for e in entries}) >= 10
    for t in texts:
        assert 60 <= len(t.split()) <= 200, t[:40]
    assert any(any(ord(ch) > 127 for ch in t) for t in texts)
    tok = smollm2_tokenizer()
    ids = [tok.encode(t) for t in texts]
    assert sum(len(i) for i in ids) >= 2000
    assert all(0 <= i < tok.vocab_size for row in ids for i in row)
    mt = minilm_tokenizer()
    assert max(len(mt.encode(t)) for t in texts) <= mt.max_length


def test_smollm2_tokenizer_basics():
    tok = smollm2_tokenizer()
    assert tok.vocab_size == 49152 and (tok.bos_id, tok.eos_id) == (1, 2) and not tok.add_bos
    ids = tok.encode("<|im_start|>user\nIn 2024 I paid 19.99 €.<|im_end|>")
    assert ids[0] == 1 and ids[-1] == 2  # special tokens matched whole
    assert tok.id_to_token(ids[1]) == "user"
    digits = tok.encode("12345")
    assert [tok.decode([i]) for i in digits] == list("12345")  # digits split one by one
    for text in load_corpus()[:10] + ["  two  spaces\n\n\ttab", "naïve café — “quoted”", "日本語 😀"]:
        assert tok.decode(tok.encode(text)) == text
    prompt = tok.render_chat([{"role": "user", "content": "Hi"}])
    assert prompt.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_minilm_tokenizer_semantics():
    tok = minilm_tokenizer()
    ids, mask = tok.encode_batch(["  Hello, World!  ", "a much longer sentence than the first one"])
    assert ids.dtype == mask.dtype == torch.int64 and ids.shape == mask.shape
    assert ids[0, 0] == tok.cls_id and ids[0, int(mask[0].sum()) - 1] == tok.sep_id
    assert int(mask[1].sum()) == ids.shape[1] and (ids[0][mask[0] == 0] == tok.pad_id).all()
    assert tok.decode(ids[0]) == "hello, world!"
    long_ids, long_mask = tok.encode_batch(["word " * 1000])
    assert long_ids.shape == (1, 256) and long_ids[0, -1] == tok.sep_id


# --------------------------------------------------------------------------- #
# against transformers (optional dependency)
# --------------------------------------------------------------------------- #


@pytest.fixture(scope="module")
def hf():
    pytest.importorskip("transformers")
    from refute.compute import hf_reference

    return hf_reference


def test_minilm_tokenizer_matches_transformers(hf):
    ref = hf.hf_minilm_tokenizer()
    tok = minilm_tokenizer()
    texts = load_corpus() + ["  padded  ", "word " * 400]
    ids, mask = tok.encode_batch(texts)
    want = ref(
        [t.strip() for t in texts], padding=True, truncation="longest_first", max_length=256, return_tensors="pt"
    )
    assert torch.equal(ids, want["input_ids"]) and torch.equal(mask, want["attention_mask"])


def test_smollm2_tokenizer_matches_transformers(hf):
    ref = hf.hf_smollm2_tokenizer()
    tok = smollm2_tokenizer()
    extra = ["In 2024, 1,000,000 people paid $19.99.", "x = [1, 22, 333]  # ok\n", "日本語 😀", " <|im_end|> "]
    for text in load_corpus() + extra:
        assert tok.encode(text) == ref(text)["input_ids"], text[:40]
    msgs = [{"role": "user", "content": "What is 2+2?"}]
    assert tok.render_chat(msgs) == ref.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def test_hf_minilm_matches_from_pretrained(hf):
    import transformers

    ours = hf.hf_minilm().state_dict()
    ref = transformers.BertModel.from_pretrained(str(W.minilm_dir())).state_dict()
    assert set(ref) - set(ours) == {"pooler.dense.weight", "pooler.dense.bias"}
    for k, v in ours.items():
        assert torch.equal(v, ref[k]), k
    e = hf.hf_minilm_embed(["A man is playing a guitar.", "Someone plays an instrument.", "The stock market fell."])
    assert torch.allclose(e.norm(dim=1), torch.ones(3))
    assert float(e[0] @ e[1]) > float(e[0] @ e[2]) + 0.2


def test_unpermutation_matches_transformers_gguf_processor(hf, smollm2):
    """transformers' GGUF loader un-permutes q/k with LlamaTensorProcessor: same rows as ours."""
    try:
        from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor
    except ImportError:
        pytest.skip("this transformers has no LlamaTensorProcessor")
    c, w = smollm2
    g = W.gguf_file()
    proc = LlamaTensorProcessor(config={"num_attention_heads": c.num_heads, "num_key_value_heads": c.num_kv_heads})
    for layer in (0, 11, 29):
        for part in ("q", "k"):
            name = f"blk.{layer}.attn_{part}.weight"
            theirs = proc.process(g.dequantize(name), name).weights
            assert np.array_equal(_bits(w[f"layers.{layer}.attn.{part}.weight"]), _bits(theirs)), name


@pytest.mark.slow
@pytest.mark.skipif(
    not (os.environ.get("REFUTE_HF_FULL") or os.environ.get("CI")), reason="30-90 s: runs in CI or with REFUTE_HF_FULL=1"
)
def test_smollm2_weights_match_transformers_gguf_loader(hf):
    """Every tensor of transformers' own GGUF load equals ours, bit for bit."""
    ours = hf.hf_smollm2().state_dict()
    ref = hf.hf_smollm2_from_gguf().state_dict()
    assert set(ours) == set(ref)
    for k, v in ours.items():
        assert ref[k].dtype == torch.float32 and torch.equal(v, ref[k]), k


def test_smollm2_reference_knows_paris(hf):
    model = hf.hf_smollm2()
    tok = smollm2_tokenizer()
    ids = torch.tensor([tok.encode("The capital of France is")])
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=2, do_sample=False, pad_token_id=tok.pad_id)
    assert tok.decode(out[0, ids.shape[1] :]).startswith(" Paris")
