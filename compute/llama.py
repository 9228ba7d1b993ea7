"""SmolLM2-135M-Instruct (a Llama decoder) built from refute operators, with a KV cache.

Batches carry per-sequence positions and a key mask, so sequences of different
lengths share a batch (left padding) without any sequence's bits depending on
its neighbours (invariance I2), and every operator is row-local or uses scales
that depend only on what a query may see, so decoding token by token against
the cache gives the bits of a full prefill (invariance I3).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from refute.compute.executor import Executor
from refute.compute.weights import LlamaConfig, Weights


@dataclass
class KVCache:
    """Keys and values of every layer for the tokens seen so far.

    ``keys[i]``/``values[i]`` are ``[B, T, kv_heads * head_dim]`` in the layout
    the projections wrote them; ``positions`` and ``mask`` (``[B, T]``) say where
    each cached token sits in its sequence and whether it is a real token.
    """

    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)
    positions: torch.Tensor | None = None
    mask: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.positions is None else int(self.positions.shape[1])


class LlamaDecoder:
    """Pre-RMSNorm Llama with rotary embeddings, grouped-query attention and SwiGLU."""

    def __init__(self, config: LlamaConfig, weights: Weights, executor: Executor):
        self.config = config
        self.ex = executor
        self.w = {name: t.to(executor.device) for name, t in weights.items()}
        self.lm_head = self.w["embed.tokens"] if config.tie_word_embeddings else self.w["lm_head.weight"]
        self.scale = float(np.float32(1.0 / np.sqrt(config.head_dim)))

    def forward(
        self,
        ids: torch.Tensor,
        positions: torch.Tensor,
        mask: torch.Tensor,
        cache: KVCache | None = None,
        logits_for: str = "all",
    ) -> torch.Tensor:
        """Run ``ids`` ``[B, T]`` at ``positions`` ``[B, T]`` (``mask`` marks real
        tokens), appending to ``cache`` if given. Returns logits ``[B, T, vocab]``,
        or ``[B, 1, vocab]`` for the last column only with ``logits_for="last"``
        (the same bits as that column of the full logits: GEMM rows are
        independent)."""
        c, ex, w = self.config, self.ex, self.w
        device = ex.device
        ids, positions, keep = ids.to(device), positions.to(device), mask.to(device).bool()
        if cache is not None and cache.length:
            k_positions = torch.cat([cache.positions, positions], dim=1)
            k_mask = torch.cat([cache.mask, keep], dim=1)
        else:
            k_positions, k_mask = positions, keep
        h = ex.embedding(ids, w["embed.tokens"])
        for i in range(c.num_layers):
            p = f"layers.{i}."
            x = ex.rms_norm(h, w[p + "attn_norm.weight"], c.rms_norm_eps)
            q = ex.rotary(ex.linear(x, w[p + "attn.q.weight"]), positions, c.head_dim, c.rope_theta)
            k = ex.rotary(ex.linear(x, w[p + "attn.k.weight"]), positions, c.head_dim, c.rope_theta)
            v = ex.linear(x, w[p + "attn.v.weight"])
            if cache is not None:
                if len(cache.keys) > i:
                    k = cache.keys[i] = torch.cat([cache.keys[i], k], dim=1)
                    v = cache.values[i] = torch.cat([cache.values[i], v], dim=1)
                else:
                    cache.keys.append(k)
                    cache.values.append(v)
            a = ex.attention(
                q, k, v, k_mask, positions, k_positions,
                num_heads=c.num_heads, num_kv_heads=c.num_kv_heads, scale=self.scale, causal=True,
            )
            h = ex.add(h, ex.linear(a, w[p + "attn.o.weight"]))
            x = ex.rms_norm(h, w[p + "ffn_norm.weight"], c.rms_norm_eps)
            gate = ex.silu(ex.linear(x, w[p + "ffn.gate.weight"]))
            up = ex.linear(x, w[p + "ffn.up.weight"])
            h = ex.add(h, ex.linear(ex.mul(gate, up), w[p + "ffn.down.weight"]))
        if cache is not None:
            cache.positions, cache.mask = k_positions, k_mask
        if logits_for == "last":
            h = h[:, -1:, :].contiguous()
        h = ex.rms_norm(h, w["final_norm.weight"], c.rms_norm_eps)
        return ex.linear(h, self.lm_head)


def smollm2(executor: Executor) -> LlamaDecoder:
    """The packaged SmolLM2-135M-Instruct on ``executor``."""
    from refute.compute.weights import load_smollm2

    config, weights = load_smollm2()
    return LlamaDecoder(config, weights, executor)
