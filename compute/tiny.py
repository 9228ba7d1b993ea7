"""A tiny random-weight Llama: the same architecture and program as SmolLM2 at a
size that replays in milliseconds.

The swarm's nodes accept ``--model tiny`` so that end-to-end and fault tests
exercise real processes, the real DHT, the real chain and real games without
paying for SmolLM2's forward passes; the weights come from a fixed seed, so
every process builds the same model and the same model digest.
"""

from __future__ import annotations

import torch

from refute.compute.weights import LlamaConfig

__all__ = ["TINY_LLAMA", "random_llama_weights", "tiny_llama"]

#: Odd sizes and grouped-query heads (6 query heads over 2 KV heads) on purpose.
TINY_LLAMA = LlamaConfig(vocab_size=41, hidden_size=36, num_layers=2, num_heads=6, num_kv_heads=2, head_dim=6,
                         intermediate_size=29, rope_dim=6, rope_theta=10000.0, max_position_embeddings=64,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)


def random_llama_weights(c: LlamaConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Weights of config ``c`` drawn from ``seed`` (norm weights near 1)."""
    g = torch.Generator().manual_seed(seed)
    h, f, d = c.hidden_size, c.intermediate_size, c.head_dim

    def r(*shape: int, scale: float = 0.3) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    w = {"embed.tokens": r(c.vocab_size, h, scale=1.0), "final_norm.weight": 1 + r(h)}
    for i in range(c.num_layers):
        p = f"layers.{i}."
        w[p + "attn_norm.weight"], w[p + "ffn_norm.weight"] = 1 + r(h), 1 + r(h)
        w[p + "attn.q.weight"] = r(c.num_heads * d, h)
        w[p + "attn.k.weight"] = r(c.num_kv_heads * d, h)
        w[p + "attn.v.weight"] = r(c.num_kv_heads * d, h)
        w[p + "attn.o.weight"] = r(h, c.num_heads * d)
        w[p + "ffn.gate.weight"], w[p + "ffn.up.weight"] = r(f, h), r(f, h)
        w[p + "ffn.down.weight"] = r(h, f)
    return w


def tiny_llama(executor: object) -> object:
    """The tiny Llama (:data:`TINY_LLAMA`, seed 0) on ``executor``."""
    from refute.compute.llama import LlamaDecoder

    return LlamaDecoder(TINY_LLAMA, random_llama_weights(TINY_LLAMA), executor)
