"""A verifier node's tick stops starting claim checks once its budget is spent,
so provers that stall every request cannot keep its games from moving."""

from __future__ import annotations

from types import SimpleNamespace

from refute.verifier import node as node_module
from refute.verifier.metrics import Metrics
from refute.verifier.node import CHECK_BUDGET_S, VerifierNode
from refute.verifier.nodestate import NodeState

PROVER = "0x" + "ab" * 20


def test_claim_checks_stop_when_the_tick_budget_is_spent_and_resume_next_tick(tmp_path, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(node_module.time, "monotonic", lambda: clock[0])
    state = NodeState(str(tmp_path / "node.sqlite"))
    hashes = [bytes([i]) * 32 for i in range(5)]
    for h in hashes:
        state.record_claim(h, PROVER, 1, "")
    checked: list[bytes] = []

    def check_one(row, seed):  # a prover that stalls each check for 3/4 of the budget
        checked.append(row.claim_hash)
        clock[0] += 0.75 * CHECK_BUDGET_S
        state.set_claim_status(row.claim_hash, "valid")

    stub = SimpleNamespace(state=state, key="0x" + "11" * 32, config=SimpleNamespace(sampling_rate=1.0),
                           metrics=Metrics(), _round_block=lambda prover, round: b"\x00" * 32, _check_one=check_one)
    per_tick = []
    for _ in range(3):
        before = len(checked)
        VerifierNode._check_claims(stub)
        per_tick.append(len(checked) - before)
    assert per_tick == [2, 2, 1]  # the second check starts inside the budget, the third does not
    assert checked == hashes  # oldest first, none twice, none lost
    assert [c.status for c in state.claims()] == ["valid"] * 5
