"""Gas of a whole dispute game (contracts/src/DisputeGames.sol) over a trace of
SmolLM2's length.

Run: ``python bench/game_gas.py``. On an in-process eth-tester chain, deploys the
system (``refute.contracts.game.GameSystem``; the Referee too if its artifact is
built), posts a claim whose trace has 483 records (SmolLM2-135M's prefill count)
and plays a game against a challenger whose trace differs only in element 12345
of record 300's output, an ``add`` over f32[1, 63, 576] (SmolLM2's hidden state
for 63 tokens: 567 chunks, 10 tensor rounds). Records the gas of every move kind
(one transaction each), of ``timeout`` (a silent defendant) and of the whole game
(open, 9 record rounds, record reveal, headers, 10 tensor rounds, chunk, and the
compute one-step when the Referee is present, else a timeout in its place).
Writes ``bench/results/game_gas.json``.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import torch
from eth_account import Account

from refute.compute.claims import Claim, ClaimRound, sign_claim
from refute.compute.executor import OPERATORS
from refute.compute.merkle import tensor_root
from refute.compute.trace import Trace, TraceInput, TraceRecord
from refute.contracts.client import Chain
from refute.contracts.game import Challenger, Defendant, GameParams, GameSystem, State, play, trace_tree_root
from refute.verifier.prover import Opened

OUT = Path(__file__).resolve().parent / "results" / "game_gas.json"
COUNT, DISPUTED, ELEMENT, SHAPE = 483, 300, 12_345, (1, 63, 576)
KEYS = [i.to_bytes(32, "big") for i in range(1, 5)]
ADDR = [Account.from_key(k).address for k in KEYS]


def _traces() -> tuple[Trace, Trace, Opened, Opened]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    honest = OPERATORS["add"](x, y, backend="reference")
    bad = honest.clone().reshape(-1)
    bad[ELEMENT] = torch.nextafter(bad[ELEMENT], torch.tensor(float("inf")))
    bad = bad.reshape(SHAPE)
    rx, ry = tensor_root(x), tensor_root(y)

    def records(out300: bytes) -> Trace:
        recs = []
        for i in range(COUNT):
            if i == DISPUTED:
                ins, out = (TraceInput("x", rx), TraceInput("y", ry)), out300
            else:
                ins = (TraceInput("x", bytes([1]) * 32), TraceInput("y", i.to_bytes(32, "big")))
                out = (i + 7).to_bytes(32, "big")
            recs.append(TraceRecord(i, "add", (), ins, out))
        return Trace(recs)

    inputs = {"x": x, "y": y}
    return records(tensor_root(bad)), records(tensor_root(honest)), Opened(inputs, bad), Opened(inputs, honest)


def main() -> dict:
    d_trace, c_trace, d_open, c_open = _traces()
    chain = Chain()
    params = GameParams()
    system = GameSystem.deploy(chain, params=params, deployer=ADDR[0], treasury=ADDR[3])
    system.dep.stake(ADDR[1], 2 * 10**18)
    claim = Claim.create(chain_id=chain.chain_id, model_digest=b"\1" * 32, input_digest=b"\2" * 32,
                         output_digest=b"\3" * 32, trace_root=d_trace.root, seed=0, round=1, step=0,
                         task="smollm2.generate", prover=bytes.fromhex(ADDR[1][2:]))
    signed = sign_claim(claim, KEYS[1], registry=system.dep.registry.address)
    cr = ClaimRound([signed])
    system.dep.post_round(ADDR[1], cr)

    gid, open_tx = system.open(ADDR[2], signed, len(c_trace), trace_tree_root(c_trace), claim_round=cr)
    d = Defendant(ADDR[1], d_trace, lambda i: d_open)
    c = Challenger(ADDR[2], c_trace, lambda i: c_open, claim)
    res = play(system, gid, d, c)
    by_kind: dict[str, list[int]] = {}
    for kind, _, gas in res.moves:
        by_kind.setdefault(kind, []).append(gas)

    # a silent defendant: open, then timeout
    c2 = Claim.create(chain_id=chain.chain_id, model_digest=b"\1" * 32, input_digest=b"\2" * 32,
                      output_digest=b"\3" * 32, trace_root=d_trace.root, seed=0, round=2, step=0,
                      task="smollm2.generate", prover=bytes.fromhex(ADDR[1][2:]))
    s2 = sign_claim(c2, KEYS[1], registry=system.dep.registry.address)
    cr2 = ClaimRound([s2])
    system.dep.post_round(ADDR[1], cr2)
    gid2, _ = system.open(ADDR[2], s2, len(c_trace), trace_tree_root(c_trace), claim_round=cr2)
    chain.advance_time(params.clock + 1)
    timeout_gas = system.timeout(ADDR[3], gid2).gas_used

    result = {
        "what": "DisputeGames gas on py-evm (eth-tester), solc 0.8.28, optimizer 200 runs, cancun",
        "trace_records": COUNT,
        "disputed_record": DISPUTED,
        "disputed_element": ELEMENT,
        "output": f"f32{list(SHAPE)}",
        "referee": system.referee is not None,
        "final_state": res.state.name,
        "reason": res.reason,
        "found": {"record": res.record, "element": res.element},
        "open": open_tx.gas_used,
        "moves": {k: {"count": len(v), "max": max(v), "mean": round(sum(v) / len(v))} for k, v in by_kind.items()},
        "timeout": timeout_gas,
        "whole_game": open_tx.gas_used + res.gas,
        "rounds": sum(1 for k, _, _ in res.moves if k in ("RECORD_BISECT_C", "TENSOR_BISECT_C")),
        "python": platform.python_version(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
