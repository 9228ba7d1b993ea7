"""all-MiniLM-L6-v2 (a BERT encoder) built from refute operators.

Sentence embeddings exactly as sentence-transformers computes them: the BERT
encoder, mean pooling over the attention mask, L2 normalisation. Every
arithmetic step is an :class:`~refute.compute.executor.Executor` operator, so
the embedding's bits are the same on every backend and device.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from refute.compute.executor import Executor
from refute.compute.weights import BertConfig, Weights

L2_EPS = 1e-12  # torch.nn.functional.normalize's default, which sentence-transformers uses


class BertEncoder:
    """A post-LayerNorm BERT encoder with mean pooling and normalisation."""

    def __init__(self, config: BertConfig, weights: Weights, executor: Executor):
        self.config = config
        self.ex = executor
        self.w = {name: t.to(executor.device) for name, t in weights.items()}
        # float32(1/sqrt(head_dim)): BERT divides scores by sqrt(head_dim); one
        # multiplication by the rounded reciprocal is our defined program.
        self.scale = float(np.float32(1.0 / np.sqrt(config.head_dim)))

    def hidden_states(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Last hidden states ``[B, T, hidden]`` for token ids and a 0/1 mask ``[B, T]``."""
        c, ex, w = self.config, self.ex, self.w
        device = ex.device
        ids = ids.to(device)
        keep = mask.to(device).bool()
        batch, length = ids.shape
        positions = torch.arange(length, device=device).expand(batch, length)
        token_types = torch.zeros_like(ids)
        h = ex.add(ex.embedding(ids, w["embed.word"]), ex.embedding(token_types, w["embed.token_type"]))
        h = ex.add(h, ex.embedding(positions, w["embed.position"]))
        h = ex.layer_norm(h, w["embed.norm.weight"], w["embed.norm.bias"], c.layer_norm_eps)
        for i in range(c.num_layers):
            p = f"layers.{i}."
            q = ex.linear(h, w[p + "attn.q.weight"], w[p + "attn.q.bias"])
            k = ex.linear(h, w[p + "attn.k.weight"], w[p + "attn.k.bias"])
            v = ex.linear(h, w[p + "attn.v.weight"], w[p + "attn.v.bias"])
            a = ex.attention(
                q, k, v, keep, positions, positions,
                num_heads=c.num_heads, num_kv_heads=c.num_heads, scale=self.scale, causal=False,
            )
            o = ex.linear(a, w[p + "attn.o.weight"], w[p + "attn.o.bias"])
            h = ex.layer_norm(ex.add(h, o), w[p + "attn_norm.weight"], w[p + "attn_norm.bias"], c.layer_norm_eps)
            f = ex.gelu_erf(ex.linear(h, w[p + "ffn.up.weight"], w[p + "ffn.up.bias"]))
            f = ex.linear(f, w[p + "ffn.down.weight"], w[p + "ffn.down.bias"])
            h = ex.layer_norm(ex.add(h, f), w[p + "ffn_norm.weight"], w[p + "ffn_norm.bias"], c.layer_norm_eps)
        return h

    def embed(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Sentence embeddings ``[B, hidden]``: mean pooling, then L2 normalisation."""
        h = self.hidden_states(ids, mask)
        pooled = self.ex.mean_pool(h, mask.to(self.ex.device))
        return self.ex.l2_normalize(pooled, L2_EPS) if self.config.normalize else pooled


def minilm(executor: Executor) -> BertEncoder:
    """The packaged all-MiniLM-L6-v2 on ``executor``."""
    from refute.compute.weights import load_minilm

    config, weights = load_minilm()
    return BertEncoder(config, weights, executor)


def embed_texts(texts: Sequence[str], executor: Executor, batch_size: int = 32) -> torch.Tensor:
    """Embed ``texts`` with all-MiniLM-L6-v2: ``[len(texts), 384]`` float32.

    Batching changes nothing but speed: each text's embedding has the same bits
    alone or in any batch (invariance I2). So, like sentence-transformers, texts
    are batched in order of length to waste little work on padding.
    """
    from refute.compute.tokenizer import minilm_tokenizer

    model, tok = minilm(executor), minilm_tokenizer()
    order = sorted(range(len(texts)), key=lambda i: len(tok.encode(texts[i])))
    out = torch.empty(len(texts), model.config.hidden_size)
    for start in range(0, len(texts), batch_size):
        chunk = order[start : start + batch_size]
        ids, mask = tok.encode_batch([texts[i] for i in chunk])
        out[chunk] = model.embed(ids, mask).cpu()
    return out
