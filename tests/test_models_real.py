"""The packaged models on the reference backend: accuracy against transformers
fp32 on the shipped corpus, and the generation invariances on real weights.

Slow (minutes); CI runs them.
"""

import json
import subprocess
import sys

import pytest
import torch

from refute.compute.executor import Executor
from refute.compute.generate import SamplingParams, generate
from refute.compute.tokenizer import smollm2_tokenizer

pytestmark = pytest.mark.slow

MIN_POSITIONS = 2000


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


@pytest.fixture(scope="module")
def smollm2():
    from refute.compute.llama import smollm2 as load

    return load(Executor("reference"))


def test_minilm_embeddings_match_sentence_transformers():
    pytest.importorskip("transformers")
    from refute.compute.accuracy import minilm_agreement

    result = minilm_agreement(Executor("reference"))
    print(f"MiniLM over {result.passages} passages: cosine mean {result.cosine_mean:.7f} min {result.cosine_min:.7f}")
    assert result.passages >= 32
    assert result.cosine_mean >= 0.9999
    assert result.cosine_min >= 0.999


def test_smollm2_next_token_agreement_and_perplexity_match_transformers():
    pytest.importorskip("transformers")
    from refute.compute.accuracy import hf_smollm2_logits, smollm2_agreement, smollm2_sequences

    sequences = smollm2_sequences(MIN_POSITIONS)
    result = smollm2_agreement(Executor("reference"), sequences, hf_smollm2_logits(sequences))
    print(f"SmolLM2 over {result.positions} positions: top-1 agreement {result.top1_agreement:.4%}, "
          f"perplexity {result.perplexity:.4f} vs {result.reference_perplexity:.4f} ({result.perplexity_change:+.4%})")
    assert result.positions >= MIN_POSITIONS
    assert result.top1_agreement >= 0.99
    assert abs(result.perplexity_change) <= 0.005


def test_smollm2_32_decoded_tokens_equal_prefill_replay(smollm2):
    prompt = smollm2_tokenizer().encode("Write a short poem about the sea:")
    (gen,) = generate(smollm2, [prompt], 32, SamplingParams(temperature=0.8, top_p=0.9, seed=11),
                      keep_logits=True, stop_at_eos=False)
    assert len(gen.token_ids) == 32
    full = torch.tensor([prompt + gen.token_ids[:-1]])
    n = full.shape[1]
    logits = smollm2.forward(full, torch.arange(n)[None], torch.ones(1, n, dtype=torch.bool))[0]
    for step, step_logits in enumerate(gen.step_logits):
        assert torch.equal(bits(logits[len(prompt) - 1 + step]), bits(step_logits)), f"step {step}"


def test_smollm2_batch_of_four_equals_each_alone_and_seed_repeats(smollm2):
    tok = smollm2_tokenizer()
    prompts = [tok.encode(p) for p in ("Once upon a time", "The three laws of thermodynamics are",
                                       "def fibonacci(n):", "Paris is a city where")]
    params = SamplingParams(temperature=0.7, top_k=40, seed=1234)
    together = generate(smollm2, prompts, 8, params, sequence_ids=[0, 1, 2, 3], keep_logits=True, stop_at_eos=False)
    for b, prompt in enumerate(prompts):
        (alone,) = generate(smollm2, [prompt], 8, params, sequence_ids=[b], keep_logits=True, stop_at_eos=False)
        assert alone.token_ids == together[b].token_ids
        for x, y in zip(alone.step_logits, together[b].step_logits):
            assert torch.equal(bits(x), bits(y))
        if b == 0:  # the same seed twice: the same bits (a second run of one sequence)
            (again,) = generate(smollm2, [prompt], 8, params, sequence_ids=[b], keep_logits=True, stop_at_eos=False)
            assert again.token_ids == alone.token_ids
            assert all(torch.equal(bits(x), bits(y)) for x, y in zip(alone.step_logits, again.step_logits))


def test_cli_greedy_capital_of_france_is_paris():
    proc = subprocess.run(
        [sys.executable, "-m", "refute", "run", "smollm2", "--prompt", "The capital of France is",
         "--max-new-tokens", "8", "--json"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "Paris" in result["text"]
    assert len(result["token_ids"]) == 8
    assert len(result["model_digest"]) == 64 and len(result["output_digest"]) == 64
