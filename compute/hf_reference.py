"""fp32 Hugging Face ``transformers`` references for the models in :mod:`refute.compute.weights`.

The accuracy tests and benchmarks compare refute's deterministic forward passes
with these. Both are built offline from the *same* parameters refute uses (the
tensors :func:`~refute.compute.weights.load_minilm` and
:func:`~refute.compute.weights.load_smollm2` return, copied into the HF modules
with ``load_state_dict(strict=True)``), so the only difference left is the
arithmetic.

``transformers`` is an optional dependency: it is imported inside the functions,
and ``HF_HUB_OFFLINE=1`` is set before it is, so nothing is ever downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from refute.compute.weights import (
    BertConfig,
    LlamaConfig,
    bert_hf_names,
    llama_hf_names,
    load_minilm,
    load_smollm2,
    minilm_dir,
    smollm2_gguf_path,
)

__all__ = [
    "hf_minilm",
    "hf_minilm_embed",
    "hf_smollm2",
    "hf_smollm2_from_gguf",
    "hf_minilm_tokenizer",
    "hf_smollm2_tokenizer",
    "to_hf_bert_config",
    "to_hf_llama_config",
]


def _transformers():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import transformers

    return transformers


def _no_init():
    """Skip transformers' random initialisation (every parameter is overwritten)."""
    try:
        from transformers.initialization import no_init_weights
    except ImportError:  # transformers < 5
        from transformers.modeling_utils import no_init_weights
    return no_init_weights()


def to_hf_bert_config(c: BertConfig, attn_implementation: str = "eager"):
    tf = _transformers()
    cfg = tf.BertConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads,
        intermediate_size=c.intermediate_size,
        hidden_act=c.hidden_act,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        max_position_embeddings=c.max_position_embeddings,
        type_vocab_size=c.type_vocab_size,
        layer_norm_eps=c.layer_norm_eps,
        pad_token_id=c.pad_token_id,
    )
    cfg._attn_implementation = attn_implementation
    return cfg


def to_hf_llama_config(c: LlamaConfig, attn_implementation: str = "eager"):
    tf = _transformers()
    cfg = tf.LlamaConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads,
        num_key_value_heads=c.num_kv_heads,
        head_dim=c.head_dim,
        hidden_act=c.hidden_act,
        max_position_embeddings=c.max_position_embeddings,
        rms_norm_eps=c.rms_norm_eps,
        rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
        tie_word_embeddings=c.tie_word_embeddings,
        bos_token_id=c.bos_token_id,
        eos_token_id=c.eos_token_id,
        pad_token_id=c.pad_token_id,
        attention_bias=False,
        mlp_bias=False,
    )
    cfg._attn_implementation = attn_implementation
    return cfg


@torch.no_grad()
def hf_minilm(attn_implementation: str = "eager"):
    """``transformers.BertModel`` (fp32, eval, no pooler) holding refute's MiniLM weights."""
    tf = _transformers()
    config, weights = load_minilm()
    with _no_init():
        model = tf.BertModel(to_hf_bert_config(config, attn_implementation), add_pooling_layer=False)
    state = {hf: weights[ours].clone() for ours, hf in bert_hf_names(config).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    # position_ids / token_type_ids are non-persistent or buffers HF fills itself
    missing = [k for k in missing if not k.endswith(("position_ids", "token_type_ids"))]
    if missing or unexpected:
        raise RuntimeError(f"BertModel state mismatch: missing {missing}, unexpected {unexpected}")
    return model.float().eval()


@torch.no_grad()
def hf_minilm_embed(texts: Sequence[str], model=None, batch_size: int = 32) -> torch.Tensor:
    """Sentence embeddings exactly as sentence-transformers computes them:
    tokenise (truncate to ``max_seq_length``, pad to the batch's longest), BERT,
    mean over tokens with attention_mask 1, L2-normalise. fp32 ``[len(texts), hidden]``."""
    from refute.compute.tokenizer import minilm_tokenizer

    config, _ = load_minilm()
    model = model if model is not None else hf_minilm()
    tok = minilm_tokenizer()
    out = []
    for i in range(0, len(texts), batch_size):
        ids, mask = tok.encode_batch(list(texts[i : i + batch_size]))
        h = model(input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)).last_hidden_state
        m = mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp(min=1e-9)
        if config.normalize:
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        out.append(pooled)
    return torch.cat(out)


@torch.no_grad()
def hf_smollm2(attn_implementation: str = "eager"):
    """``transformers.LlamaForCausalLM`` (fp32, eval) holding refute's SmolLM2 weights."""
    tf = _transformers()
    config, weights = load_smollm2()
    with _no_init():
        model = tf.LlamaForCausalLM(to_hf_llama_config(config, attn_implementation))
    state = {hf: weights[ours].clone() for ours, hf in llama_hf_names(config).items()}
    if config.tie_word_embeddings:
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if "rotary_emb" not in k]
    if missing or unexpected:
        raise RuntimeError(f"LlamaForCausalLM state mismatch: missing {missing}, unexpected {unexpected}")
    if config.tie_word_embeddings:
        model.tie_weights()
    return model.float().eval()


def hf_smollm2_from_gguf():
    """SmolLM2 loaded by transformers' own GGUF loader (its dequantiser and its
    un-permutation), for cross-checking :func:`~refute.compute.weights.load_smollm2`."""
    tf = _transformers()
    path = smollm2_gguf_path()
    model = tf.AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    return model.eval()


def hf_minilm_tokenizer():
    """transformers' fast tokenizer for MiniLM, from the package folder (offline)."""
    tf = _transformers()
    return tf.AutoTokenizer.from_pretrained(str(minilm_dir()))


def hf_smollm2_tokenizer():
    """transformers' tokenizer built from the GGUF's metadata (offline).

    ``PreTrainedTokenizerFast.from_pretrained(dir, gguf_file=...)`` builds the
    same tokenizer as ``AutoTokenizer`` (class ``TokenizersBackend`` in
    transformers 5, identical ids on the corpus) in ~2 s instead of ~20 s:
    AutoTokenizer first parses the whole file with ``gguf.GGUFReader`` to get
    a llama config."""
    tf = _transformers()
    path = smollm2_gguf_path()
    return tf.PreTrainedTokenizerFast.from_pretrained(str(path.parent), gguf_file=path.name)
