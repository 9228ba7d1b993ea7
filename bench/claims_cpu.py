"""Claims on this CPU: the cost of committing, proof sizes, and bisection depth.

1. Tensor roots of a SmolLM2-135M forward (``--tokens`` tokens) against the
   forward itself: :func:`refute.compute.trace.bench_trace_overhead`. The
   claim's cost: traced as a claim commits it, only the program's checkpoints
   rooted (each layer's output, the embedding's and the logits), on the
   worker thread as a prover runs it and inline. The full trace's (every
   operator's output rooted, what a dispute bisects): inline and on the
   worker thread. Weights' roots cached, as a prover's are after its first
   claim. And the floor a per-operator commitment has on this CPU: the
   activation bytes over the tree hasher's measured one-thread rate times the
   threads, as if hashing had every core to itself after the forward and
   scaled perfectly, and the same at keccak's own limit, one permutation per
   136 bytes whatever the chunk size.
2. Proof sizes: for one record of every operator kind in a real generation
   trace, the bytes of the one-step's openings (the defendant's element proof,
   the challenger's input range proofs, the record proof).
3. Verifier cost per claim: structure checks, full replay and spot replay,
   against the prover's own cost of running and claiming the task.
4. Bisection rounds against trace length: a real dispute (one perturbed
   activation) and the formula ``ceil(log2(pinned + 1)) + ceil(log2 chunks)``
   (the full prefix up to the checkpoint the challenger pins, then the tensor).

``python bench/claims_cpu.py [--tokens 128] [--out bench/results/claims_cpu.json]``
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time
from pathlib import Path

import refute.kernels  # noqa: F401  (before triton)
import torch
from refute.compute.executor import Executor
from refute.compute.llama import smollm2
from refute.compute.merkle import CHUNK_BYTES, tensor_root
from refute.compute.trace import bench_trace_overhead
from refute.verifier import cheats
from refute.verifier.dispute import compute_one_step, dispute
from refute.verifier.prover import Prover
from refute.verifier.tasks import GenerateTask
from refute.verifier.verify import Verifier

KEY = "0x" + "22" * 32


def proof_bytes(p) -> dict[str, int]:
    out = 32 * len(p.output_opening.siblings) + len(p.output_opening.chunk)
    ins = sum(len(o.chunks) + 32 * len(o.siblings) for o in p.input_openings.values())
    rec = len(p.record.encode()) + 32 * len(p.record_proof.siblings)
    return {"output_opening": out, "input_openings": ins, "record_and_proof": rec, "total": out + ins + rec}


def commitment_floor(activation_bytes: int, forward_s: float, sample_mib: int = 32) -> dict[str, float]:
    """The least time hashing ``activation_bytes`` can add to a forward of ``forward_s``
    seconds, from the tree hasher's one-thread rate measured now (CPU time, best of 5,
    over ``sample_mib`` MiB): the bytes spread over every thread at that rate, and the
    same at keccak's limit of one permutation per 136 bytes (a chunk so large that
    leaf padding and inner nodes cost nothing)."""
    threads = torch.get_num_threads()
    data = torch.randint(-(2**31), 2**31 - 1, (sample_mib << 18,), dtype=torch.int32)
    best = float("inf")
    torch.set_num_threads(1)
    try:
        for _ in range(5):
            t0 = time.thread_time()
            tensor_root(data)
            best = min(best, time.thread_time() - t0)
    finally:
        torch.set_num_threads(threads)
    rate = (sample_mib << 20) / best
    # A 257-byte leaf message is 2 permutations; each leaf adds one inner node (1).
    leaf_blocks = (1 + CHUNK_BYTES) // 136 + 1
    perms_per_s = rate / CHUNK_BYTES * (leaf_blocks + 1)
    floor_s = activation_bytes / (rate * threads)
    any_chunk_s = activation_bytes / 136 / (perms_per_s * threads)
    return {"threads": threads, "hasher_mib_s_one_thread": rate / 2**20, "permutations_per_s_one_thread": perms_per_s,
            "floor_s": floor_s, "overhead_floor": floor_s / forward_s,
            "floor_any_chunk_s": any_chunk_s, "overhead_floor_any_chunk": any_chunk_s / forward_s}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="bench/results/claims_cpu.json")
    args = ap.parse_args()
    model = smollm2(Executor("reference"))
    result: dict = {"machine": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d")}

    t = bench_trace_overhead(model, tokens=args.tokens, repeats=args.repeats)
    result["roots"] = {k: t[k] for k in (
        "tokens", "records", "checkpoints", "activation_bytes", "claim_bytes", "untraced_s", "claim_s", "claim_inline_s",
        "inline_s", "background_s", "hashing_claim_inline_s", "hashing_inline_s", "overhead_claim",
        "overhead_claim_inline", "overhead_inline", "overhead_background", "overhead_claim_cpu",
        "overhead_claim_inline_cpu", "overhead_inline_cpu", "overhead_background_cpu", "weight_roots_s")}
    r = result["roots"]
    print(f"forward {r['tokens']} tokens: {r['untraced_s']:.2f} s, {r['records']} records")
    print(f"claim ({r['checkpoints']} checkpoints, {r['claim_bytes'] / 2**20:.1f} MiB rooted): "
          f"+{100 * r['overhead_claim']:.1f}% on the worker thread, +{100 * r['overhead_claim_inline']:.1f}% inline "
          f"(hashing {r['hashing_claim_inline_s'] * 1e3:.0f} ms)")
    print(f"full trace ({r['activation_bytes'] / 2**20:.0f} MiB rooted, a dispute's): "
          f"+{100 * r['overhead_inline']:.1f}% inline (hashing {r['hashing_inline_s']:.2f} s), "
          f"+{100 * r['overhead_background']:.1f}% on the worker thread")

    result["roots_floor"] = floor = commitment_floor(r["activation_bytes"], r["untraced_s"])
    print(f"floor of a commitment to every output here: hasher {floor['hasher_mib_s_one_thread']:.0f} MiB/s per thread "
          f"({floor['permutations_per_s_one_thread'] / 1e6:.2f}M keccak-f/s) -> +{100 * floor['overhead_floor']:.1f}% "
          f"at {CHUNK_BYTES}-byte chunks, +{100 * floor['overhead_floor_any_chunk']:.1f}% at any chunk size")


    prompt = tuple(range(100, 100 + 60))
    task = GenerateTask(prompt, 4, 0.0, 0, 1.0, 0)
    honest = Prover(model, KEY)
    bundle = honest.prove(task, seed=0)
    opened = honest.open(bundle, range(len(bundle.trace)))
    full = honest.full_trace(bundle)
    sizes = {}
    for rec in full:
        if rec.kind in sizes:
            continue
        o = opened[rec.index]
        p = compute_one_step(bundle, rec.index, o.output.numel() // 2, o.output, o, full)
        sizes[rec.kind] = {"record": rec.index, **proof_bytes(p)}
        print(f"one-step {rec.kind:<10} record {rec.index:>3}: {sizes[rec.kind]['total']:>8} bytes")
    result["one_step_bytes"] = sizes

    verifier = Verifier({task.name: model})
    t0 = time.perf_counter()
    honest.prove(task, seed=0)
    prove_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert verifier.full_replay(bundle).valid
    full_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert verifier.spot_replay(bundle, honest, 16, random.Random(0)).valid
    spot_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert not verifier.structure(bundle)
    structure_s = time.perf_counter() - t0
    result["replay_per_claim"] = {"tokens": len(prompt) + len(bundle.tokens), "prove_s": prove_s, "full_replay_s": full_s,
                                  "spot16_s_incl_prover_regeneration": spot_s, "structure_s": structure_s,
                                  "full_over_prove": full_s / prove_s}
    print(f"per claim ({len(prompt)}+{len(bundle.tokens)} tokens): prove {prove_s:.2f} s, structure {structure_s:.2f} s, "
          f"full replay {full_s:.2f} s ({full_s / prove_s:.2f}x prove), spot k=16 {spot_s:.2f} s (incl. the prover's regeneration)")
    cheat = cheats.PerturbedActivation(model, KEY, 200, 1000)
    cb = cheat.prove(task, seed=0)
    d = dispute(cb, cheat, verifier)
    n = len(cb.trace)
    out_chunks = -(-opened[200].output.numel() * 4 // CHUNK_BYTES)
    pinned = next(c for c in verifier.program(cb).checkpoints if c >= 200)  # the first checkpoint the lie reaches
    result["dispute"] = {"records": n, "tokens": len(prompt) + 3, "kind": d.kind, "record": d.record, "element": d.element,
                         "pinned": pinned, "rounds": d.rounds,
                         "formula": pinned.bit_length() + (out_chunks - 1).bit_length()}
    print(f"dispute over {n} records, record 200 ({out_chunks} chunks), pinned at checkpoint {pinned}: {d.rounds} rounds "
          f"-> {d.kind} record {d.record} element {d.element}")
    table = []
    for tokens in (16, 128, 1024, 8192):
        logits_chunks = -(-tokens * model.config.vocab_size * 4 // CHUNK_BYTES)
        table.append({"tokens": tokens, "records": n, "record_rounds": (n - 1).bit_length(),
                      "max_tensor_rounds": (logits_chunks - 1).bit_length()})
    result["rounds_vs_length"] = table
    for row in table:
        print(f"T={row['tokens']:>5}: {row['record_rounds']} record rounds + up to {row['max_tensor_rounds']} tensor rounds")
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
