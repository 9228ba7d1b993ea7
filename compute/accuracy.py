"""Accuracy of refute's models against transformers fp32 on the shipped corpus.

Used by the accuracy tests and by ``bench/model_accuracy.py`` (which also
chooses the GEMM slice count). Needs the ``test`` extra (transformers).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from refute.compute.corpus import load_corpus
from refute.compute.executor import Executor


@dataclass(frozen=True)
class EmbeddingAgreement:
    passages: int
    cosine_mean: float
    cosine_min: float


@dataclass(frozen=True)
class LogitAgreement:
    positions: int
    top1_agreement: float
    perplexity: float
    reference_perplexity: float
    max_abs_logit_error: float

    @property
    def perplexity_change(self) -> float:
        return self.perplexity / self.reference_perplexity - 1


def minilm_agreement(executor: Executor, reference: torch.Tensor | None = None) -> EmbeddingAgreement:
    """Cosine similarity between refute's and sentence-transformers' embeddings
    of every corpus passage (``reference`` may pass precomputed HF embeddings)."""
    from refute.compute.bert import embed_texts

    texts = load_corpus()
    if reference is None:
        from refute.compute.hf_reference import hf_minilm_embed

        with torch.no_grad():
            reference = hf_minilm_embed(texts)
    ours = embed_texts(texts, executor)
    cos = torch.nn.functional.cosine_similarity(ours.double(), reference.double(), dim=1)
    return EmbeddingAgreement(len(texts), float(cos.mean()), float(cos.min()))


def smollm2_sequences(min_positions: int) -> list[list[int]]:
    """Corpus passages, tokenised, until they hold ``min_positions`` next-token predictions."""
    from refute.compute.tokenizer import smollm2_tokenizer

    tok = smollm2_tokenizer()
    seqs, positions = [], 0
    for text in load_corpus():
        ids = tok.encode(text)
        seqs.append(ids)
        positions += len(ids) - 1
        if positions >= min_positions:
            return seqs
    raise ValueError(f"the corpus holds only {positions} positions, fewer than {min_positions}")


def hf_smollm2_logits(sequences: list[list[int]]) -> list[torch.Tensor]:
    """transformers fp32 logits for each sequence ``[len - 1, vocab]`` (all but the last position)."""
    from refute.compute.hf_reference import hf_smollm2

    hf = hf_smollm2()
    with torch.no_grad():
        return [hf(input_ids=torch.tensor([ids])).logits[0, :-1] for ids in sequences]


def smollm2_agreement(
    executor: Executor,
    sequences: list[list[int]],
    reference_logits: list[torch.Tensor],
    progress: Callable[[int, int], None] | None = None,
) -> LogitAgreement:
    """Next-token top-1 agreement and perplexity of refute's SmolLM2 against
    precomputed transformers logits over the same sequences."""
    from refute.compute.llama import smollm2

    model = smollm2(executor)
    agree = total = 0
    nll = nll_ref = 0.0
    worst = 0.0
    for i, (ids, ref) in enumerate(zip(sequences, reference_logits)):
        x = torch.tensor([ids])
        n = x.shape[1]
        ours = model.forward(x, torch.arange(n)[None], torch.ones(1, n, dtype=torch.bool))[0, :-1].double().cpu()
        ref = ref.double()
        target = x[0, 1:]
        agree += int((ours.argmax(-1) == ref.argmax(-1)).sum())
        total += n - 1
        nll += float(torch.nn.functional.cross_entropy(ours, target, reduction="sum"))
        nll_ref += float(torch.nn.functional.cross_entropy(ref, target, reduction="sum"))
        worst = max(worst, float((ours - ref).abs().max()))
        if progress is not None:
            progress(i + 1, len(sequences))
    return LogitAgreement(total, agree / total, math.exp(nll / total), math.exp(nll_ref / total), worst)
