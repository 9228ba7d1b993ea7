"""DisputeGames' pinned start (contracts/src/DisputeGames.sol, docs/protocol.md "Dispute game").

A claim commits a checkpointed ("lite") trace: records that are not checkpoints carry
output root zero, and so does every input read from them. A game starts from one
checkpoint record ``i`` of the claim's lite trace that the challenger pins (``open``),
the challenger committing its full trace of records ``0..i`` and the defendant its own
(``respond``, with its full record ``i``, whose output root must be the pinned one);
``openTemplate`` refutes a lite record that does not fit its template in one call, and
a game's template state decides on the defendant's full prefix.

Small synthetic traces (five records with made-up roots, checkpoints 0, 1, 3, 4) on a
fresh chain; no model is run.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from eth_account import Account
from web3.logs import DISCARD

from refute.compute.claims import Claim, ClaimRound, sign_claim
from refute.compute.merkle import keccak256, tensor_root
from refute.compute.program import PROGRAM_PREFIX, ZERO_ROOT, input_binding, model_digest_of
from refute.compute.trace import EXTERNAL, Trace, TraceInput, TraceRecord, checkpointed
from refute.contracts.build import ARTIFACT_DIR
from refute.contracts.client import Chain, ContractError
from refute.contracts.game import GameParams, GameSystem, State
from refute.verifier.tasks import GenerateTask

KEYS = [i.to_bytes(32, "big") for i in range(1, 11)]  # the tester's accounts
ADDR = [Account.from_key(k).address for k in KEYS]
DEPLOYER, PROVER, CHALLENGER, OTHER = ADDR[0], ADDR[1], ADDR[2], ADDR[4]
PROVER_KEY = KEYS[1]
PARAMS = GameParams(min_bond=10**17, slash_amount=10**18, winner_share_bps=5_000, clock=3_600, reopen_grace=3_600)
WINDOW = 24 * 3600
HAVE_REFEREE = (ARTIFACT_DIR / "Referee.json").exists()
NEEDS_REFEREE = pytest.mark.skipif(not HAVE_REFEREE, reason="contracts/artifacts/Referee.json is not built")

TASK = GenerateTask((5, 9, 11, 4), 3, temperature=0.7, sequence=1)
TOKENS = (7, 8, 2)
IDS_ROOT = tensor_root(TASK.sequence_tensors(TOKENS)["ids"])
CHECKPOINT = keccak256(b"refute/checkpoint")  # a template's output root at a checkpoint
CHECKPOINTS = frozenset({0, 1, 3, 4})
IDENTITY = b"\x03" * 32
W = [bytes([0x40 + k]) * 32 for k in range(4)]  # weight roots


def _root(tag: int, variant: int = 0) -> bytes:
    return bytes([tag, variant]) * 16


def full_records(*, slices2: int = 1, out: dict[int, bytes] | None = None) -> list[TraceRecord]:
    """The full trace: embedding -> rms_norm -> linear -> add(linear, rms_norm) -> linear.
    ``out`` replaces output roots (inputs follow them)."""
    o = {i: _root(0x10 + i) for i in range(5)} | (out or {})
    return [
        TraceRecord(0, "embedding", {}, (TraceInput("ids", IDS_ROOT), TraceInput("table", W[0])), o[0]),
        TraceRecord(1, "rms_norm", {"eps": 1e-5}, (TraceInput("x", o[0], 0), TraceInput("weight", W[1])), o[1]),
        TraceRecord(2, "linear", {"slices": slices2}, (TraceInput("x", o[1], 1), TraceInput("weight", W[2])), o[2]),
        TraceRecord(3, "add", {}, (TraceInput("x", o[2], 2), TraceInput("y", o[1], 1)), o[3]),
        TraceRecord(4, "linear", {"slices": 1}, (TraceInput("x", o[3], 3), TraceInput("weight", W[3])), o[4]),
    ]


def lite(records: list[TraceRecord], checkpoints=CHECKPOINTS) -> Trace:
    """The claim's trace: outputs off the checkpoints, and inputs read from them, zero."""
    return checkpointed(Trace(records, check_wiring=False), checkpoints)


def templates() -> Trace:
    """The program: external inputs bound (ids to the task's), internal roots zero,
    output CHECKPOINT at the checkpoints."""
    out = []
    for r in full_records():
        ins = tuple(TraceInput(i.name, input_binding("ids") if i.name == "ids" else i.root, EXTERNAL) if i.external
                    else TraceInput(i.name, ZERO_ROOT, i.source) for i in r.inputs)
        out.append(TraceRecord(r.index, r.kind, r.attrs, ins, CHECKPOINT if r.index in CHECKPOINTS else ZERO_ROOT))
    return Trace(out, check_wiring=False)


PROGRAM = templates()
FULL = Trace(full_records())
LITE = lite(full_records())


def prefix(trace: Trace, stop: int) -> Trace:
    return Trace(trace.records[:stop], check_wiring=False)


def pin(trace: Trace, i: int) -> tuple[bytes, int, list[bytes]]:
    return trace[i].encode(), len(trace), list(trace.prove_record(i).siblings)


def evidence(record: TraceRecord, trace: Trace) -> bytes:
    """``TemplateOps.Evidence`` for ``record``, its sources proven under ``trace``."""
    from refute.contracts.referee import template_evidence

    i = record.index
    sources = tuple((trace[x.source], trace.prove_record(x.source)) for x in record.inputs if not x.external)
    return template_evidence(SimpleNamespace(
        kind="template", identity=IDENTITY, program_tree_root=PROGRAM.root, eos_token_id=None,
        template=PROGRAM[i], template_proof=PROGRAM.prove_record(i), task=TASK, tokens=TOKENS,
        record_proof=trace.prove_record(i), sources=sources))


def expect(exc: pytest.ExceptionInfo, name: str, what: bytes | None = None) -> None:
    e = exc.value
    assert isinstance(e, ContractError) and e.name == name, str(e)
    if what is not None:
        tag = e.args_dict.get("what")
        assert tag is not None and bytes(tag).rstrip(b"\0") == what, str(e)


class World:
    """A fresh chain with the system deployed and the prover staked."""

    def __init__(self, referee=None):
        self.chain = Chain()
        self.sys = GameSystem.deploy(self.chain, params=PARAMS, deployer=DEPLOYER, treasury=OTHER,
                                     challenge_window=WINDOW, min_stake=10**18, referee=referee)
        self.sys.dep.stake(PROVER, 3 * 10**18)
        self._round = 0

    def post(self, trace: Trace):
        """Sign a claim committing ``trace`` and post it alone in a new round: (signed, round)."""
        self._round += 1
        md = model_digest_of(IDENTITY, keccak256(PROGRAM_PREFIX + PROGRAM.root), None)
        claim = Claim.create(chain_id=self.chain.chain_id, model_digest=md, input_digest=TASK.digest(),
                             output_digest=TASK.output_digest(TOKENS), trace_root=trace.root, seed=7,
                             round=self._round, step=0, task="smollm2.generate", prover=PROVER)
        signed = sign_claim(claim, PROVER_KEY, registry=self.sys.dep.registry.address)
        cr = ClaimRound([signed])
        self.sys.dep.post_round(PROVER, cr)
        return signed, cr

    def open(self, signed, cr, i: int, mine: Trace, claim_trace: Trace = LITE, **kw):
        return self.sys.open(CHALLENGER, signed, pin(claim_trace, i), prefix(mine, i + 1).tree_root,
                             claim_round=cr, **kw)


@pytest.fixture(scope="module")
def ref_world():
    """One chain with the referee deployed, shared by the referee tests."""
    return World(referee="auto") if HAVE_REFEREE else None


# --------------------------------------------------------------------------- open


def test_the_synthetic_traces_are_what_they_say():
    assert [r.output == ZERO_ROOT for r in LITE] == [False, False, True, False, False]
    assert LITE[3].inputs[0].root == ZERO_ROOT and LITE[3].inputs[1].root == FULL[1].output
    assert all(LITE[i].encode() == FULL[i].encode() for i in (0, 1, 4)) and LITE.root != FULL.root


def test_open_pins_a_checkpoint_of_the_lite_trace():
    w = World()
    signed, cr = w.post(LITE)
    mine = Trace(full_records(slices2=2))
    gid, tx = w.open(signed, cr, 3, mine)
    g = w.sys.game(gid)
    assert g["state"] == State.AWAIT_RESPONSE
    assert g["countC"] == 4 and g["countD"] == 0 and g["nodeD"] == FULL[3].output
    assert g["nodeC"] == prefix(mine, 4).tree_root
    ev = w.sys.events("GameOpened", gid)[0]
    assert ev["pinned"] == 3 and ev["pinnedOutput"] == FULL[3].output and ev["treeRoot"] == g["nodeC"]
    assert ev["challenger"] == CHALLENGER and ev["bond"] == PARAMS.min_bond
    assert w.sys.claim_state(signed.claim.hash())[0] == gid
    assert w.sys.dep.locked_of(PROVER) == PARAMS.slash_amount
    with pytest.raises(ContractError) as e:  # one game per claim
        w.open(signed, cr, 4, mine)
    expect(e, "ClaimInDispute")


def test_bad_pins_revert():
    w = World()
    signed, cr = w.post(LITE)
    tr = prefix(FULL, 4).tree_root
    rec, count, sib = pin(LITE, 3)

    def open_(p, **kw):
        with pytest.raises(ContractError) as e:
            w.sys.open(CHALLENGER, signed, p, tr, claim_round=cr, **kw)
        return e

    expect(open_((rec, count, [sib[0], bytes(32), sib[2]])), "BadOpening", b"record proof")
    expect(open_((rec, count, sib[:2])), "BadOpening", b"sibling count")
    expect(open_((rec, 6, sib)), "BadOpening", b"record proof")  # same depth, another count
    expect(open_((rec, 0, [])), "BadCount")
    expect(open_((rec, 2**16 + 1, sib)), "BadCount")
    expect(open_((LITE[4].encode(), 4, sib)), "BadRecord", b"index")  # index 4 in a trace of 4
    expect(open_((b"\x21" + rec[1:], count, sib)), "BadRecord", b"prefix")
    expect(open_(pin(FULL, 3)), "BadOpening", b"record proof")  # a record of another trace
    expect(open_(pin(LITE, 2)), "BadOpening", b"deferred")  # a deferred record commits to nothing
    expect(open_(pin(LITE, 3), bond=PARAMS.min_bond - 1), "WrongBond")
    assert w.sys.claim_state(signed.claim.hash())[0] == 0 and w.sys.solvency() == (0, 0)
    w.sys.open(CHALLENGER, signed, pin(LITE, 3), tr, claim_round=cr)  # the good pin opens


# --------------------------------------------------------------------------- respond


def test_respond_checks_the_pinned_record():
    w = World()
    signed, cr = w.post(LITE)
    mine = Trace(full_records(slices2=2))
    gid, _ = w.open(signed, cr, 3, mine)
    mine_d = prefix(FULL, 4)
    proof3 = list(mine_d.prove_record(3).siblings)

    def respond(tree_root, record, siblings, **kw):
        with pytest.raises(ContractError) as e:
            w.sys.respond(PROVER, gid, tree_root, record, siblings, **kw)
        return e

    other = prefix(Trace(full_records(out={3: _root(0x13, 1)})), 4)  # its record 3 outputs another root
    expect(respond(other.tree_root, other[3], list(other.prove_record(3).siblings)), "BadOpening", b"pinned output")
    expect(respond(mine_d.tree_root, mine_d[2], list(mine_d.prove_record(2).siblings)), "BadRecord", b"index")
    expect(respond(mine_d.tree_root, mine_d[3], proof3[:1] + [bytes(32)] + proof3[2:]), "BadOpening",
           b"record proof")
    expect(respond(prefix(FULL, 5).tree_root, mine_d[3], proof3), "BadOpening", b"record proof")
    expect(respond(mine_d.tree_root, mine_d[3], proof3, bond=2 * PARAMS.min_bond), "WrongBond")
    with pytest.raises(ContractError) as e:
        w.sys.respond(CHALLENGER, gid, mine_d.tree_root, mine_d[3], proof3)
    expect(e, "NotParty")

    tx = w.sys.respond(PROVER, gid, mine_d.tree_root, mine_d[3], proof3)
    g = w.sys.game(gid)
    assert g["state"] == State.RECORD_BISECT_D
    assert g["countD"] == g["countC"] == 4 and g["level"] == 2 and g["index"] == 0
    assert g["nodeD"] == g["committed"] == mine_d.tree_root and g["nodeC"] == prefix(mine, 4).tree_root
    assert g["bondD"] == PARAMS.min_bond and w.sys.solvency() == (2 * PARAMS.min_bond,) * 2
    assert w.sys.events("Responded", gid)[0]["count"] == 4 and tx.gas_used < 150_000
    # the bisection runs on the prefix trees: the defendant opens its root's children
    w.sys.reveal_children(PROVER, gid, mine_d.node(1, 0), mine_d.node(1, 1))
    assert w.sys.state(gid) == State.RECORD_BISECT_C


def test_respond_with_the_challengers_prefix_wins_at_once():
    w = World()
    signed, cr = w.post(LITE)
    gid, _ = w.open(signed, cr, 3, FULL)  # the challenger committed the defendant's very prefix
    d = prefix(FULL, 4)
    w.sys.respond(PROVER, gid, d.tree_root, d[3], list(d.prove_record(3).siblings))
    assert w.sys.state(gid) == State.DEFENDANT_WON
    assert w.sys.events("GameResolved", gid)[-1]["reason"] == "same prefix"
    assert w.sys.credit_of(PROVER) == 2 * PARAMS.min_bond and w.sys.dep.locked_of(PROVER) == 0
    assert w.sys.claim_state(signed.claim.hash())[:2] == (0, False)


def test_a_pin_at_record_0_goes_straight_to_the_record_reveal():
    w = World()
    signed, cr = w.post(LITE)
    mine = Trace(full_records(out={0: _root(0x10, 1)}))
    gid, _ = w.open(signed, cr, 0, mine)
    d = prefix(FULL, 1)
    w.sys.respond(PROVER, gid, d.tree_root, d[0], [])
    g = w.sys.game(gid)
    assert g["state"] == State.RECORD_REVEAL_D and g["countD"] == g["countC"] == 1 and g["level"] == 0
    w.sys.reveal_record(PROVER, gid, d[0].encode())
    w.sys.reveal_record_c(CHALLENGER, gid, d[0].encode(), mine[0].encode())
    assert w.sys.state(gid) == State.HEADER_D  # the records differ in the output root only


# --------------------------------------------------------------------------- template decisions


@NEEDS_REFEREE
def test_open_template_refutes_a_lite_record_off_its_template(ref_world):
    w = ref_world
    signed, cr = w.post(LITE)
    with pytest.raises(ContractError) as e:  # an honest lite record fits (sources under the lite trace)
        w.sys.open_template(CHALLENGER, signed, pin(LITE, 3), evidence(LITE[3], LITE), claim_round=cr)
    expect(e, "ChallengeFailed")
    with pytest.raises(ContractError) as e:  # an honest record, but the full trace's: not in the claim
        w.sys.open_template(CHALLENGER, signed, pin(FULL, 3), evidence(FULL[3], FULL), claim_round=cr)
    expect(e, "BadOpening")

    # a checkpoint deferred: it cannot be pinned in a game, but it does not fit its template
    deferred = lite(full_records(), CHECKPOINTS - {3})
    signed, cr = w.post(deferred)
    with pytest.raises(ContractError) as e:
        w.sys.open(CHALLENGER, signed, pin(deferred, 3), prefix(FULL, 4).tree_root, claim_round=cr)
    expect(e, "BadOpening", b"deferred")
    before = w.sys.dep.stake_of(PROVER)
    tx = w.sys.open_template(CHALLENGER, signed, pin(deferred, 3), evidence(deferred[3], deferred), claim_round=cr)
    ev = w.sys.games.events.TemplateRefuted().process_receipt(tx.receipt, errors=DISCARD)[0]["args"]
    assert ev["index"] == 3 and ev["prover"] == PROVER and ev["challenger"] == CHALLENGER
    assert w.sys.dep.stake_of(PROVER) == before - PARAMS.slash_amount
    assert w.sys.claim_state(signed.claim.hash())[1] is True
    with pytest.raises(ContractError) as e:
        w.sys.open_template(CHALLENGER, signed, pin(deferred, 3), evidence(deferred[3], deferred), claim_round=cr)
    expect(e, "AlreadySlashed")

    # an output committed off the checkpoints (wiring intact) does not fit either
    committed = lite(full_records(), CHECKPOINTS | {2})
    signed, cr = w.post(committed)
    w.sys.open_template(CHALLENGER, signed, pin(committed, 2), evidence(committed[2], committed), claim_round=cr)
    assert w.sys.claim_state(signed.claim.hash())[1] is True


@NEEDS_REFEREE
def test_the_template_state_decides_on_the_defendants_full_prefix(ref_world):
    """Record 2 is not a checkpoint: its full output is nonzero, which fits in a game's
    template state (full mode), its source proven under the defendant's prefix root."""
    w = ref_world
    signed, cr = w.post(LITE)
    mine = Trace(full_records(slices2=2))  # differs from the defendant's at record 2, not only in roots
    gid, _ = w.open(signed, cr, 4, mine)
    d, c = prefix(FULL, 5), prefix(mine, 5)
    w.sys.respond(PROVER, gid, d.tree_root, d[4], list(d.prove_record(4).siblings))
    for _ in range(3):
        g = w.sys.game(gid)
        lvl, idx = g["level"] - 1, 2 * g["index"]
        w.sys.reveal_children(PROVER, gid, d.node(lvl, idx), d.node(lvl, idx + 1))
        w.sys.reveal_children_c(CHALLENGER, gid, d.node(lvl, idx), d.node(lvl, idx + 1), c.node(lvl, idx),
                                c.node(lvl, idx + 1))
    g = w.sys.game(gid)
    assert g["state"] == State.RECORD_REVEAL_D and g["index"] == 2
    w.sys.reveal_record(PROVER, gid, d[2].encode())
    w.sys.reveal_record_c(CHALLENGER, gid, d[2].encode(), c[2].encode())
    assert w.sys.state(gid) == State.TEMPLATE
    with pytest.raises(ContractError):  # sources proven under the claim's lite trace do not verify here
        w.sys.resolve_template(CHALLENGER, gid, signed.claim, d[2].encode(), evidence(LITE[2], LITE))
    w.sys.resolve_template(CHALLENGER, gid, signed.claim, d[2].encode(), evidence(d[2], d))
    assert w.sys.state(gid) == State.DEFENDANT_WON
    assert w.sys.events("GameResolved", gid)[-1]["reason"] == "template one-step"


def test_open_template_needs_a_referee():
    w = World()
    signed, cr = w.post(LITE)
    with pytest.raises(ContractError) as e:
        w.sys.open_template(CHALLENGER, signed, pin(LITE, 3), b"", claim_round=cr)
    expect(e, "NoReferee")
