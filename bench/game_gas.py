"""Gas of a whole dispute game (contracts/src/DisputeGames.sol) over a trace of
SmolLM2's length.

Run: ``python bench/game_gas.py``. On an in-process eth-tester chain, deploys the
system (``refute.contracts.game.GameSystem``; the Referee too if its artifact is
built), posts a claim over a synthetic trace of 483 records (SmolLM2-135M's
prefill count), committed checkpointed as a claim commits it (SmolLM2's
checkpoints: record 0, every 16th record, the last; the others' output roots
deferred), and plays a game against a challenger whose full trace differs from
the defendant's first in element 12345 of record 300's output, an ``add`` over
f32[1, 63, 576] (SmolLM2's hidden state for 63 tokens: 567 chunks, 10 tensor
rounds), and in every output after it (the lie propagates). The challenger pins
checkpoint 304, the first committed output that differs, and the game bisects the
two full prefixes of records 0..304 (305 records: 9 rounds). Records the gas of
every move kind (one transaction each), of ``timeout`` (a silent defendant) and of
the whole game (open with its pin, respond with its record proof, 9 record
rounds, record reveal, headers, 10 tensor rounds, chunk, and the compute one-step
when the Referee is present, else a timeout in its place).
Then a second game over an attention element at SmolLM2's real size (record 300 of
483 is an attention of 576 queries over 576 keys, a 512 + 64 token context: 9 heads,
3 kv heads, head_dim 64): the defendant commits one element one ulp off and forges
its element program's final state to match, so the game plays every phase to the
program's last step (docs/protocol.md, "Element programs").
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
from refute.compute.merkle import keccak256, tensor_root
from refute.compute.trace import (
    Trace,
    TraceInput,
    TraceRecord,
    checkpoint_cuts,
    checkpointed,
    select_checkpoints,
)
from refute.contracts.client import Chain
from refute.contracts.game import Challenger, Defendant, GameParams, GameSystem, pin_of, play
from refute.verifier import cheats, programs
from refute.verifier.prover import Opened

OUT = Path(__file__).resolve().parent / "results" / "game_gas.json"
COUNT, DISPUTED, ELEMENT, SHAPE = 483, 300, 12_345, (1, 63, 576)
#: The attention game: context length and SmolLM2's attention attributes.
CONTEXT = 576
ATTENTION = dict(causal=True, num_heads=9, num_kv_heads=3, scale=0.125, slices=2)
ATTENTION_ELEMENT = 575 * 576 + 3 * 64 + 17  # last query, head 3, column 17: it sees every key
#: Every move is sent with this gas limit (no estimate: a move then runs once, not twice).
GAS_LIMIT = 20_000_000
KEYS = [i.to_bytes(32, "big") for i in range(1, 5)]
ADDR = [Account.from_key(k).address for k in KEYS]


def _traces(kind: str, attrs: dict, inputs: dict[str, torch.Tensor], element: int
            ) -> tuple[Trace, Trace, Opened, Opened]:
    """Two full traces of COUNT records, a chain (record i reads record i - 1's output,
    record DISPUTED is ``kind`` over the external ``inputs``), equal up to record
    DISPUTED, whose output differs in element ``element`` (the defendant's one ulp
    up), and in every output after it (the lie propagates to the next checkpoint)."""
    honest = OPERATORS[kind](**inputs, **attrs, backend="reference")
    bad = honest.clone().reshape(-1)
    bad[element] = torch.nextafter(bad[element], torch.tensor(float("inf")))
    bad = bad.reshape(honest.shape)
    roots = [TraceInput(n, tensor_root(t)) for n, t in inputs.items()]

    def records(out300: bytes, lie: bool) -> Trace:
        recs: list[TraceRecord] = []
        for i in range(COUNT):
            if i == DISPUTED:
                recs.append(TraceRecord(i, kind, attrs, roots, out300))
                continue
            x = TraceInput("x", recs[-1].output, i - 1) if i else TraceInput("x", bytes([1]) * 32)
            out = (i + 7).to_bytes(32, "big")
            if lie and i > DISPUTED:
                out = keccak256(b"lie" + out)
            recs.append(TraceRecord(i, "add", (), (x, TraceInput("y", i.to_bytes(32, "big"))), out))
        return Trace(recs)

    return (records(tensor_root(bad), True), records(tensor_root(honest), False), Opened(inputs, bad),
            Opened(inputs, honest))


def _checkpoints(trace: Trace) -> tuple[int, ...]:
    """The trace's checkpoints as a program picks them (SmolLM2's: 0, 16, ..., 480, 482)."""
    return select_checkpoints(checkpoint_cuts(trace), len(trace))


def _add_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"x": torch.randn(SHAPE, generator=g), "y": torch.randn(SHAPE, generator=g)}


def _attention_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"q": 2 * torch.randn(1, CONTEXT, 576, generator=g), "k": torch.randn(1, CONTEXT, 192, generator=g),
            "v": torch.randn(1, CONTEXT, 192, generator=g), "key_mask": torch.ones(1, CONTEXT, dtype=torch.bool),
            "q_positions": torch.arange(CONTEXT).reshape(1, -1), "k_positions": torch.arange(CONTEXT).reshape(1, -1)}


def _post(system: GameSystem, chain: Chain, round_: int, lite: Trace):
    """Sign a claim committing the checkpointed trace ``lite`` and post it in round
    ``round_``: (signed claim, round)."""
    claim = Claim.create(chain_id=chain.chain_id, model_digest=b"\1" * 32, input_digest=b"\2" * 32,
                         output_digest=b"\3" * 32, trace_root=lite.root, seed=0, round=round_, step=0,
                         task="smollm2.generate", prover=bytes.fromhex(ADDR[1][2:]))
    signed = sign_claim(claim, KEYS[1], registry=system.dep.registry.address)
    cr = ClaimRound([signed])
    system.dep.post_round(ADDR[1], cr)
    return signed, cr


def _game(system: GameSystem, chain: Chain, round_: int, traces: tuple[Trace, Trace, Opened, Opened],
          forged_states=None):
    """Post a claim over the defendant's checkpointed trace in round ``round_``, open a
    game pinned at the first committed output that differs and play it; (open
    transaction, result, pinned index)."""
    d_trace, c_trace, d_open, c_open = traces
    lite = checkpointed(d_trace, _checkpoints(d_trace))
    signed, cr = _post(system, chain, round_, lite)
    pinned, pin, tree_root = pin_of(lite, c_trace)
    gid, open_tx = system.open(ADDR[2], signed, pin, tree_root, claim_round=cr)
    d = Defendant(ADDR[1], d_trace, lambda i: d_open, program_states=forged_states)
    c = Challenger(ADDR[2], c_trace, lambda i: c_open, signed.claim)
    return open_tx, play(system, gid, d, c), pinned


def _summary(open_tx, res, pinned: int) -> dict:
    by_kind: dict[str, list[int]] = {}
    for kind, _, gas in res.moves:
        by_kind.setdefault(kind, []).append(gas)
    return {
        "final_state": res.state.name,
        "reason": res.reason,
        "pinned": pinned,
        "prefix_records": pinned + 1,
        "found": {"record": res.record, "element": res.element},
        "open": open_tx.gas_used,
        "moves": {k: {"count": len(v), "max": max(v), "mean": round(sum(v) / len(v))} for k, v in by_kind.items()},
        "whole_game": open_tx.gas_used + res.gas,
        "rounds": sum(1 for k, _, _ in res.moves if k in ("RECORD_BISECT_C", "TENSOR_BISECT_C", "PROGRAM_BISECT_C")),
        "failures": res.failures,
    }


def main() -> dict:
    chain = Chain(gas_limit=GAS_LIMIT)
    params = GameParams()
    system = GameSystem.deploy(chain, params=params, deployer=ADDR[0], treasury=ADDR[3])
    system.dep.stake(ADDR[1], 3 * 10**18)
    add_traces = _traces("add", {}, _add_inputs(), ELEMENT)
    checkpoints = _checkpoints(add_traces[0])
    open_tx, res, pinned = _game(system, chain, 1, add_traces)
    add_game = _summary(open_tx, res, pinned)

    att_traces = _traces("attention", ATTENTION, _attention_inputs(), ATTENTION_ELEMENT)
    committed = att_traces[2].output.reshape(-1)[ATTENTION_ELEMENT:ATTENTION_ELEMENT + 1].numpy().tobytes()
    honest_states = programs.program_states("attention", ATTENTION, att_traces[3].inputs, ATTENTION_ELEMENT)
    forged = honest_states[:-1] + [cheats.forge_program_end(ATTENTION, honest_states[-1], committed)]
    open_tx, res, pinned = _game(system, chain, 2, att_traces, lambda rec, e: forged)
    attention_game = _summary(open_tx, res, pinned) | {"program_steps": len(forged) - 1,
                                                        "keys_per_step": programs.KEYS_PER_STEP}

    # a silent defendant: open, then timeout
    d_trace, c_trace = add_traces[0], add_traces[1]
    lite = checkpointed(d_trace, checkpoints)
    s2, cr2 = _post(system, chain, 3, lite)
    _, pin, tree_root = pin_of(lite, c_trace)
    gid2, _ = system.open(ADDR[2], s2, pin, tree_root, claim_round=cr2)
    chain.advance_time(params.clock + 1)
    timeout_gas = system.timeout(ADDR[3], gid2).gas_used

    result = {
        "what": "DisputeGames gas on py-evm (eth-tester), solc 0.8.28, optimizer 200 runs, cancun",
        "trace_records": COUNT,
        "checkpoints": len(checkpoints),
        "disputed_record": DISPUTED,
        "referee": system.referee is not None,
        "add": {"disputed_element": ELEMENT, "output": f"f32{list(SHAPE)}"} | add_game,
        "attention": {"disputed_element": ATTENTION_ELEMENT, "context": CONTEXT, "attributes": ATTENTION}
        | attention_game,
        "timeout": timeout_gas,
        "python": platform.python_version(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    print(json.dumps(main(), indent=1))
