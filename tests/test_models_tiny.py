"""Tiny random-weight BERT and Llama models: the Triton interpreter and the
reference give the same bits end to end, for several batch compositions, and
the invariances I2 (batch) and I3 (prefill == decode) hold for the whole model.
"""

import pytest
import torch

from refute.compute.bert import BertEncoder
from refute.compute.executor import Executor, OpRecord
from refute.compute.generate import SamplingParams, generate
from refute.compute.llama import KVCache, LlamaDecoder
from refute.compute.tiny import TINY_LLAMA, random_llama_weights
from refute.compute.weights import BertConfig

BERT = BertConfig(vocab_size=37, hidden_size=30, num_layers=2, num_heads=3, head_dim=10, intermediate_size=43,
                  max_position_embeddings=16, max_seq_length=16)
LLAMA = TINY_LLAMA


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def random_bert_weights(c: BertConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    h, f = c.hidden_size, c.intermediate_size

    def r(*shape, scale=0.2):
        return torch.randn(*shape, generator=g) * scale

    w = {"embed.word": r(c.vocab_size, h), "embed.position": r(c.max_position_embeddings, h),
         "embed.token_type": r(c.type_vocab_size, h), "embed.norm.weight": 1 + r(h), "embed.norm.bias": r(h)}
    for i in range(c.num_layers):
        p = f"layers.{i}."
        for name in ("q", "k", "v", "o"):
            w[p + f"attn.{name}.weight"], w[p + f"attn.{name}.bias"] = r(h, h), r(h)
        w[p + "ffn.up.weight"], w[p + "ffn.up.bias"] = r(f, h), r(f)
        w[p + "ffn.down.weight"], w[p + "ffn.down.bias"] = r(h, f), r(h)
        for norm in ("attn_norm", "ffn_norm"):
            w[p + f"{norm}.weight"], w[p + f"{norm}.bias"] = 1 + r(h), r(h)
    return w


def bert_batch(lengths, seed=1):
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.int64)
    mask = torch.zeros(len(lengths), width, dtype=torch.int64)
    for b, n in enumerate(lengths):
        ids[b, :n] = torch.randint(3, BERT.vocab_size, (n,), generator=g)
        mask[b, :n] = 1
    return ids, mask


@pytest.mark.parametrize("lengths", [(5,), (7, 3, 6), (1, 9)])
def test_bert_interpreter_equals_reference_end_to_end(lengths):
    w = random_bert_weights(BERT)
    ids, mask = bert_batch(lengths)
    ref = BertEncoder(BERT, w, Executor("reference")).embed(ids, mask)
    tri = BertEncoder(BERT, w, Executor("triton")).embed(ids, mask)
    assert torch.equal(bits(ref), bits(tri))
    assert torch.isfinite(ref).all()


def test_bert_sentence_embedding_does_not_depend_on_batch_or_padding():
    w = random_bert_weights(BERT)
    model = BertEncoder(BERT, w, Executor("reference"))
    ids, mask = bert_batch((4, 8, 2))
    together = model.embed(ids, mask)
    for b in range(3):
        n = int(mask[b].sum())
        alone = model.embed(ids[b : b + 1, :n], mask[b : b + 1, :n])
        assert torch.equal(bits(alone[0]), bits(together[b]))


def llama_prompts(lengths, seed=2):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(3, LLAMA.vocab_size, (n,), generator=g).tolist() for n in lengths]


def test_llama_interpreter_equals_reference_with_grouped_query_heads_and_left_padding():
    w = random_llama_weights(LLAMA)
    prompts = llama_prompts((6, 3, 5))
    params = SamplingParams(temperature=0.9, top_k=12, top_p=0.95, seed=7)
    runs = {}
    for backend in ("reference", "triton"):
        model = LlamaDecoder(LLAMA, w, Executor(backend))
        runs[backend] = generate(model, prompts, 2, params, keep_logits=True, stop_at_eos=False)
    for ref, tri in zip(runs["reference"], runs["triton"]):
        assert ref.token_ids == tri.token_ids
        for a, b in zip(ref.step_logits, tri.step_logits):
            assert torch.equal(bits(a), bits(b))


def test_llama_decode_logits_equal_prefill_replay_and_batch_does_not_matter():
    w = random_llama_weights(LLAMA)
    model = LlamaDecoder(LLAMA, w, Executor("reference"))
    prompts = llama_prompts((5, 2, 7, 4))
    params = SamplingParams(temperature=1.0, seed=3)
    together = generate(model, prompts, 6, params, sequence_ids=[10, 11, 12, 13], keep_logits=True, stop_at_eos=False)
    for b, gen in enumerate(together):
        (alone,) = generate(model, [prompts[b]], 6, params, sequence_ids=[10 + b], keep_logits=True, stop_at_eos=False)
        assert alone.token_ids == gen.token_ids  # I2 for tokens
        for x, y in zip(alone.step_logits, gen.step_logits):
            assert torch.equal(bits(x), bits(y))  # I2 for logits
        # I3: one prefill over prompt + generated tokens gives every step's logits.
        full = torch.tensor([prompts[b] + gen.token_ids[:-1]])
        n = full.shape[1]
        logits = model.forward(full, torch.arange(n)[None], torch.ones(1, n, dtype=torch.bool))
        start = len(prompts[b]) - 1
        for step, step_logits in enumerate(gen.step_logits):
            assert torch.equal(bits(logits[0, start + step]), bits(step_logits))


def test_executor_reports_every_operator_in_order():
    w = random_llama_weights(LLAMA)
    records: list[OpRecord] = []
    ex = Executor("reference", observers=[records.append])
    model = LlamaDecoder(LLAMA, w, ex)
    ids = torch.tensor([[5, 6, 7]])
    out = model.forward(ids, torch.arange(3)[None], torch.ones(1, 3, dtype=torch.bool), KVCache())
    # embedding; per layer 2 norms, 7 linears, 2 rotaries, attention, silu, mul, 2 adds; final norm; lm head
    assert [r.index for r in records] == list(range(len(records)))
    assert len(records) == 1 + 16 * LLAMA.num_layers + 2
    assert records[0].kind == "embedding" and records[-1].kind == "linear"
    assert torch.equal(bits(records[-1].output), bits(out))
    assert {r.kind for r in records} == {"embedding", "rms_norm", "linear", "rotary", "attention", "add", "silu", "mul"}
