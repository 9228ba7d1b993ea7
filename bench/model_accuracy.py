"""Model accuracy against transformers fp32 for each GEMM slice count.

    .venv/bin/python bench/model_accuracy.py [--slices 1 2 3] [--positions 2000]

For every slice count s: MiniLM embedding cosine similarity over the corpus,
and SmolLM2 next-token top-1 agreement, perplexity and worst logit error over
at least ``--positions`` corpus positions. The transformers references are
computed once and shared. This is the measurement behind refute's choice of
s = 2 (docs/numerics.md).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--positions", type=int, default=2000)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()

    import torch

    from refute.compute.accuracy import hf_smollm2_logits, minilm_agreement, smollm2_agreement, smollm2_sequences
    from refute.compute.corpus import load_corpus
    from refute.compute.executor import Executor
    from refute.compute.hf_reference import hf_minilm_embed

    start = time.perf_counter()
    with torch.no_grad():
        minilm_ref = hf_minilm_embed(load_corpus())
    sequences = smollm2_sequences(args.positions)
    smollm2_ref = hf_smollm2_logits(sequences)
    print(f"transformers references: {time.perf_counter() - start:.0f} s", file=sys.stderr)

    rows = []
    for s in args.slices:
        ex = Executor("reference", slices=s)
        emb = minilm_agreement(ex, minilm_ref)
        lm = smollm2_agreement(ex, sequences, smollm2_ref)
        rows.append({"slices": s, "minilm_cosine_mean": emb.cosine_mean, "minilm_cosine_min": emb.cosine_min,
                     "smollm2_positions": lm.positions, "smollm2_top1_agreement": lm.top1_agreement,
                     "smollm2_perplexity": lm.perplexity, "transformers_perplexity": lm.reference_perplexity,
                     "perplexity_change": lm.perplexity_change, "max_abs_logit_error": lm.max_abs_logit_error})
        print(f"s={s} done at {time.perf_counter() - start:.0f} s", file=sys.stderr)

    print("| s | MiniLM cosine mean | MiniLM cosine min | SmolLM2 positions | top-1 agreement | perplexity (transformers) | change | max logit error |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['slices']} | {r['minilm_cosine_mean']:.7f} | {r['minilm_cosine_min']:.7f} | {r['smollm2_positions']} | "
              f"{r['smollm2_top1_agreement']:.2%} | {r['smollm2_perplexity']:.4f} ({r['transformers_perplexity']:.4f}) | "
              f"{r['perplexity_change']:+.3%} | {r['max_abs_logit_error']:.4f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
