"""Gas of the on-chain referee's compute one-step per operator kind at SmolLM2-135M's
sizes (hidden 576, intermediate 1536, head_dim 64, 9 heads / 3 kv heads; MiniLM's 384
for the kinds only it uses), on random data of those shapes (not the real model: the
gas depends on the shapes, and random data builds in seconds).

Writes bench/results/referee_gas.json: per case the exact transaction gas and the
execution gas (total - 21,000 - calldata), and attention's gas against the number of
keys T. Also ``decideTemplate`` (synthetic one-template programs whose records bind the
task inputs, at prompt + generated lengths up to 512 + 64) and ``decideSampling``
(compact evidence on a one-record trace of (1, T, 49152) logits: SmolLM2's vocabulary;
greedy and Gumbel-max), and ``programStep`` of the element programs that replace
the direct one-step where it grows with the row: attention over 576 keys (a
512 + 64 token context) and log_softmax over SmolLM2's 49,152 logits, each step
kind measured (docs/protocol.md, "Element programs").
Usage: ``python bench/referee_gas.py``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from refute.compute.executor import OPERATORS
from refute.compute.merkle import TensorTree, tensor_root
from refute.compute.trace import Trace, TraceInput, TraceRecord
from refute.compute.claims import Claim
from refute.compute.merkle import keccak256
from refute.compute.program import CHECKPOINT, EXTERNAL, PROGRAM_PREFIX, ZERO_ROOT, input_binding, model_digest_of
from refute.contracts.referee import RefereeContract, step_openings
from refute.verifier import programs
from refute.kernels import sampling
from refute.verifier.dispute import OneStepProof, check_one_step, element_inputs
from refute.verifier.tasks import GenerateTask

OUT = Path(__file__).parent / "results" / "referee_gas.json"
TARGET = 1_500_000


def one_step(kind: str, attrs: dict, inputs: dict[str, torch.Tensor], e: int) -> OneStepProof:
    """An honest compute one-step of element ``e`` of a one-record trace."""
    out = OPERATORS[kind](**inputs, **attrs, backend="reference")
    r = TraceRecord(0, kind, attrs, [TraceInput(n, tensor_root(t)) for n, t in inputs.items()], tensor_root(out))
    trace = Trace([r])
    shapes = {n: tuple(t.shape) for n, t in inputs.items()}
    need = element_inputs(kind, r.attr_dict(), shapes, tuple(out.shape), e)
    if kind == "embedding":
        d = out.shape[-1]
        tid = int(inputs["ids"].reshape(-1)[e // d])
        need["table"] = (tid * d + e % d, tid * d + e % d + 1)
    openings = {n: TensorTree.from_tensor(inputs[n]).prove_range(a, b) for n, (a, b) in need.items()}
    return OneStepProof("compute", SimpleNamespace(trace_root=trace.root), r, trace.prove_record(0), element=e,
                        output_opening=TensorTree.from_tensor(out).prove_element(e), input_openings=openings)


def cases(rng: np.random.Generator) -> list[tuple[str, str, dict, dict, int]]:
    def f(*shape: int) -> torch.Tensor:
        return torch.from_numpy(rng.normal(size=shape).astype(np.float32))

    t = 4
    out = [
        ("linear", "q_proj 576->576", {"slices": 2}, {"x": f(1, t, 576), "weight": f(576, 576)}, 1000),
        ("linear", "up 576->1536", {"slices": 2}, {"x": f(1, t, 576), "weight": f(1536, 576)}, 1000),
        ("linear", "down 1536->576", {"slices": 2}, {"x": f(1, t, 1536), "weight": f(576, 1536)}, 1000),
        ("add", "residual 576", {}, {"x": f(1, t, 576), "y": f(1, t, 576)}, 700),
        ("mul", "swiglu 1536", {}, {"x": f(1, t, 1536), "y": f(1, t, 1536)}, 700),
        ("silu", "1536", {}, {"x": f(1, t, 1536)}, 700),
        ("gelu_erf", "1536", {}, {"x": f(1, t, 1536)}, 700),
        ("embedding", "vocab 4096 x 576", {}, {"ids": torch.from_numpy(rng.integers(0, 4096, (1, t))), "table": f(4096, 576)}, 700),
        ("rms_norm", "576", {"eps": 1e-5}, {"x": f(1, t, 576), "weight": f(576)}, 700),
        ("rotary", "head_dim 64", {"head_dim": 64, "theta": 100000.0},
         {"x": f(1, t, 576), "positions": torch.arange(t).reshape(1, t) + 1000}, 700),
        ("layer_norm", "384 (MiniLM)", {"eps": 1e-12}, {"x": f(1, t, 384), "weight": f(384), "bias": f(384)}, 500),
        ("l2_normalize", "384 (MiniLM)", {"eps": 1e-12}, {"x": f(1, 384)}, 100),
        ("mean_pool", "T=16, 384 (MiniLM)", {}, {"x": f(1, 16, 384), "mask": torch.ones(1, 16, dtype=torch.int64)}, 100),
        ("log_softmax", "576", {}, {"x": f(1, 576)}, 100),
    ]
    for keys in (8, 16, 32, 64):
        q, k, v = f(1, keys, 576), f(1, keys, 192), f(1, keys, 192)
        pos = torch.arange(keys).reshape(1, keys)
        out.append(("attention", f"T={keys}", {"num_heads": 9, "num_kv_heads": 3, "scale": 0.125, "causal": True, "slices": 2},
                    {"q": q, "k": k, "v": v, "key_mask": torch.ones(1, keys, dtype=torch.bool), "q_positions": pos,
                     "k_positions": pos}, (keys - 1) * 576 + 100))
    return out


BASE_CLAIM = dict(chain_id=1, model_digest=bytes(32), input_digest=bytes(32), output_digest=bytes(32),
                  trace_root=bytes(32), seed=7, round=0, step=0, task="smollm2.generate", prover=b"\x01" * 20)


def template_case(kind: str, prompt_len: int, n: int, rng: np.random.Generator) -> OneStepProof:
    """An honest template one-step: record ``kind`` (embedding: binds ids; attention:
    binds keep and positions twice) of a one-record trace and a one-template program."""
    task = GenerateTask(tuple(int(i) for i in rng.integers(0, 49152, prompt_len)), n, temperature=0.7, sequence=1)
    tokens = tuple(int(i) for i in rng.integers(0, 49152, n))
    t = task.sequence_tensors(tokens)
    w = bytes(range(32))
    if kind == "embedding":
        ins, attrs = [("ids", tensor_root(t["ids"]), input_binding("ids")), ("table", w, w)], {}
    else:
        ins = [("q", bytes(32), None), ("k", bytes(32), None), ("v", bytes(32), None),
               ("key_mask", tensor_root(t["keep"]), input_binding("mask")),
               ("q_positions", tensor_root(t["positions"]), input_binding("positions")),
               ("k_positions", tensor_root(t["positions"]), input_binding("positions"))]
        attrs = {"num_heads": 9, "num_kv_heads": 3, "scale": 0.125, "causal": True, "slices": 2}
    # The attention record's q, k, v come from record 0 (an embedding placeholder).
    src = TraceRecord(0, "embedding", {}, [TraceInput("ids", tensor_root(t["ids"])), TraceInput("table", w)], bytes([9]) * 32)
    idx = 0 if kind == "embedding" else 1
    rec = TraceRecord(idx, kind, attrs, [TraceInput(nm, root if b is not None else src.output, EXTERNAL if b is not None else 0)
                                         for nm, root, b in ins], bytes([5]) * 32)
    # The disputed record is a checkpoint (its output committed in the claim's trace).
    tmpl = TraceRecord(idx, kind, attrs, [TraceInput(nm, b if b is not None else ZERO_ROOT, EXTERNAL if b is not None else 0)
                                          for nm, _, b in ins], CHECKPOINT)
    stmpl = TraceRecord(0, "embedding", {}, [TraceInput("ids", input_binding("ids"), EXTERNAL), TraceInput("table", w, EXTERNAL)],
                        ZERO_ROOT)
    records = [rec] if idx == 0 else [src, rec]
    templates = Trace([tmpl] if idx == 0 else [stmpl, tmpl])
    trace = Trace(records)
    identity = bytes([3]) * 32
    md = model_digest_of(identity, keccak256(PROGRAM_PREFIX + templates.root), None)
    claim = Claim.create(**{**BASE_CLAIM, "model_digest": md, "input_digest": task.digest(),
                            "output_digest": task.output_digest(tokens), "trace_root": trace.root})
    sources = tuple((trace[i.source], trace.prove_record(i.source)) for i in rec.inputs if not i.external)
    return OneStepProof("template", claim, rec, trace.prove_record(idx), identity=identity,
                        program_tree_root=templates.root, template=tmpl, template_proof=templates.prove_record(idx),
                        task=task, tokens=tokens, sources=sources)


def sampling_case(temperature: float, prompt_len: int, n: int, rng: np.random.Generator) -> OneStepProof:
    """A sampling one-step against a wrong last token, on (1, T, 49152) random logits."""
    v = 49152
    task = GenerateTask(tuple(int(i) for i in rng.integers(0, v, prompt_len)), n, temperature=temperature, sequence=1)
    logits = torch.from_numpy(rng.normal(size=(1, prompt_len + n - 1, v)).astype(np.float32))
    want = int(sampling.sample_tokens(logits[0, -1:], seeds=7, sequences=1, positions=prompt_len + n - 1,
                                      temperature=temperature, backend="reference")[0])
    tokens = tuple(int(i) for i in rng.integers(0, v, n - 1)) + ((want + 1) % v,)
    r = TraceRecord(0, "linear", {"slices": 2}, [TraceInput("x", bytes(32)), TraceInput("weight", bytes(32))],
                    tensor_root(logits))
    trace = Trace([r])
    identity, templates_root = bytes([3]) * 32, bytes([4]) * 32
    md = model_digest_of(identity, keccak256(PROGRAM_PREFIX + templates_root), None)
    claim = Claim.create(**{**BASE_CLAIM, "model_digest": md, "input_digest": task.digest(),
                            "output_digest": task.output_digest(tokens), "trace_root": trace.root})
    row = prompt_len + n - 2
    return OneStepProof("sampling", claim, r, trace.prove_record(0), element=n - 1,
                        logits_row=TensorTree.from_tensor(logits).prove_range(row * v, (row + 1) * v), vocab_size=v,
                        task=task, tokens=tokens, identity=identity, program_tree_root=templates_root)


def decide_rows(ref: RefereeContract, rng: np.random.Generator) -> tuple[list[dict], list[dict]]:
    tmpl, samp = [], []
    for kind in ("embedding", "attention"):
        for p_len, n in ((16, 8), (128, 32), (512, 64)):
            p = template_case(kind, p_len, n, rng)
            assert not check_one_step(p).defendant_wrong and ref.decide(p) is False, (kind, p_len)
            total, execution = ref.gas_used(p)
            tmpl.append({"record": kind, "prompt": p_len, "tokens": n, "gas": total, "execution_gas": execution,
                         "within_target": total <= TARGET})
            print(f"template {kind:10s} P={p_len:<4d} N={n:<3d} {total:>10,d} {execution:>10,d}", file=sys.stderr)
    for temperature in (0.0, 0.7):
        for p_len, n in ((16, 8), (512, 64)):
            p = sampling_case(temperature, p_len, n, rng)
            assert check_one_step(p).defendant_wrong and ref.decide(p) is True, (temperature, p_len)
            total, execution = ref.gas_used(p)
            samp.append({"mode": "greedy" if temperature == 0 else "gumbel", "vocab": 49152, "prompt": p_len,
                         "tokens": n, "gas": total, "execution_gas": execution, "within_target": total <= TARGET})
            print(f"sampling T={temperature} P={p_len:<4d} N={n:<3d} {total:>10,d} {execution:>10,d}", file=sys.stderr)
    return tmpl, samp


def program_rows(ref: RefereeContract, rng: np.random.Generator) -> list[dict]:
    """Gas of one program step per pass (the largest is the one that matters)."""
    def f(*shape: int) -> torch.Tensor:
        return torch.from_numpy(rng.normal(size=shape).astype(np.float32))

    s = 576
    att = ("attention", "T=576 (512+64)", {"causal": True, "num_heads": 9, "num_kv_heads": 3, "scale": 0.125,
                                            "slices": 2},
           {"q": 2 * f(1, 1, 576), "k": f(1, s, 192), "v": f(1, s, 192), "key_mask": torch.ones(1, s, dtype=torch.bool),
            "q_positions": torch.tensor([[s - 1]]), "k_positions": torch.arange(s).reshape(1, s)}, 3 * 64 + 17)
    lsm = ("log_softmax", "V=49152", {}, {"x": 4 * f(1, 49152)}, 31_337)
    rows = []
    for kind, size, attrs, inputs, e in (att, lsm):
        out = OPERATORS[kind](**inputs, **attrs, backend="reference")
        r = TraceRecord(0, kind, attrs, [TraceInput(n, tensor_root(t)) for n, t in inputs.items()], tensor_root(out))
        states = programs.program_states(kind, attrs, inputs, e)
        n = len(states) - 1
        shapes = {k: tuple(t.shape) for k, t in inputs.items()}
        first_of_pass: dict[int, int] = {}
        for k in range(n):
            first_of_pass.setdefault(_pass_of(kind, shapes, k), k)
        picks = sorted({*first_of_pass.values(), n - 1})  # the first step of each pass, and the last step
        gases = []
        for k in picks:
            ops = step_openings(r, inputs, e, k)
            assert ref.program_step(r, e, k, states[k], ops) == programs.state_hash(states[k + 1])
            gases.append(ref.program_step_gas(r, e, k, states[k], ops))
        rows.append({"kind": kind, "size": size, "steps": n, "measured_steps": picks, "gas": gases,
                     "max_gas": max(gases), "within_target": max(gases) <= TARGET})
        print(f"program {kind:13s} {size:16s} {n:>6d} steps, max {max(gases):>10,d}", file=sys.stderr)
    return rows


def _pass_of(kind: str, shapes: dict, step: int) -> int:
    if kind == "attention":
        return step // -(-shapes["k"][1] // programs.KEYS_PER_STEP)
    return min(step // -(-shapes["x"][-1] // programs.ROW_PER_STEP), programs.ROW_PASSES)


def main() -> int:
    rng = np.random.default_rng(0)
    ref = RefereeContract()
    rows = []
    for kind, size, attrs, inputs, e in cases(rng):
        p = one_step(kind, attrs, inputs, e)
        assert not check_one_step(p).defendant_wrong and ref.decide(p) is False, (kind, size)
        t0 = time.perf_counter()
        total, execution = ref.gas_used(p)
        rows.append({"kind": kind, "size": size, "gas": total, "execution_gas": execution,
                     "within_target": total <= TARGET, "seconds_py_evm": round(time.perf_counter() - t0, 2)})
        print(f"{kind:13s} {size:22s} {total:>10,d} {execution:>10,d}", file=sys.stderr)
    tmpl, samp = decide_rows(ref, rng)
    progs = program_rows(ref, rng)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"target_gas": TARGET, "decideCompute": rows, "decideTemplate": tmpl,
                               "decideSampling": samp, "programStep": progs}, indent=1) + "\n")
    print(f"wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
