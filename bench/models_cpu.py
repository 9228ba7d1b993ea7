"""Model forward time and peak memory: refute's reference backend against
transformers fp32, measured in the same run on this CPU.

    .venv/bin/python bench/models_cpu.py [--repeats 5] [--threads N]

Workloads (issue: models): SmolLM2-135M prefill of 1 x 128 tokens, and
MiniLM embeddings of 32 corpus sentences. Each side runs once to warm up
(weights loaded, refute's weight images prepared, transformers' kernels
initialised), then ``--repeats`` timed runs; the fastest is reported (the
least disturbed by other load on a shared machine, as ``timeit`` advises). Peak
memory is the process's resident-set growth during the timed runs, measured
in a fresh subprocess per side so the two do not share allocations.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

WORKLOADS = ("smollm2_prefill_1x128", "minilm_32_sentences")


def _time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def _workload(name: str, side: str):
    import torch

    from refute.compute.corpus import load_corpus

    if name == "smollm2_prefill_1x128":
        from refute.compute.tokenizer import smollm2_tokenizer

        ids = torch.tensor([smollm2_tokenizer().encode(" ".join(load_corpus()))[:128]])
        assert ids.shape == (1, 128)
        if side == "refute":
            from refute.compute.executor import Executor
            from refute.compute.llama import smollm2

            model = smollm2(Executor("reference"))
            pos, mask = torch.arange(128)[None], torch.ones(1, 128, dtype=torch.bool)
            return lambda: model.forward(ids, pos, mask)
        from refute.compute.hf_reference import hf_smollm2

        hf = hf_smollm2()

        def run_hf():
            with torch.no_grad():
                return hf(input_ids=ids).logits

        return run_hf
    texts = load_corpus()[:32]
    if side == "refute":
        from refute.compute.bert import embed_texts
        from refute.compute.executor import Executor

        ex = Executor("reference")
        return lambda: embed_texts(texts, ex)
    from refute.compute.hf_reference import hf_minilm, hf_minilm_embed

    hf = hf_minilm()

    def run_hf_minilm():
        with torch.no_grad():
            return hf_minilm_embed(texts, model=hf)

    return run_hf_minilm


def measure_one(name: str, side: str, repeats: int, threads: int | None) -> dict[str, float]:
    """Time one workload on one side in this process; report seconds and MiB."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    fn = _workload(name, side)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    seconds = _time(fn, repeats)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "peak_rss_mib": peak / 1024, "growth_mib": (peak - before) / 1024}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--one", nargs=2, metavar=("WORKLOAD", "SIDE"), help=argparse.SUPPRESS)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one[0], args.one[1], args.repeats, args.threads)))
        return 0
    results = {}
    for name in WORKLOADS:
        row = {}
        for side in ("refute", "transformers"):
            cmd = [sys.executable, __file__, "--one", name, side, "--repeats", str(args.repeats)]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
            row[side] = json.loads(out.strip().splitlines()[-1])
        results[name] = row
    print(f"{'workload':<24} {'refute s':>9} {'hf s':>8} {'ratio':>6} {'refute peak MiB':>16} {'hf peak MiB':>12}")
    for name, row in results.items():
        r, h = row["refute"], row["transformers"]
        print(f"{name:<24} {r['seconds']:>9.3f} {h['seconds']:>8.3f} {r['seconds'] / h['seconds']:>6.2f} "
              f"{r['peak_rss_mib']:>16.0f} {h['peak_rss_mib']:>12.0f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
