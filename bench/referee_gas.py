"""Gas of the on-chain referee's compute one-step per operator kind at SmolLM2-135M's
sizes (hidden 576, intermediate 1536, head_dim 64, 9 heads / 3 kv heads; MiniLM's 384
for the kinds only it uses), on random data of those shapes (not the real model: the
gas depends on the shapes, and random data builds in seconds).

Writes bench/results/referee_gas.json: per case the exact transaction gas and the
execution gas (total - 21,000 - calldata), and attention's gas against the number of
keys T. Usage: ``python bench/referee_gas.py``.
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
from refute.contracts.referee import RefereeContract
from refute.verifier.dispute import OneStepProof, check_one_step, element_inputs

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
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"target_gas": TARGET, "decideCompute": rows,
                               "decideTemplate": "not implemented (reverts Unsupported)",
                               "decideSampling": "not implemented (reverts Unsupported)"}, indent=1) + "\n")
    print(f"wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
