"""DisputeGames (contracts/src/DisputeGames.sol) played through refute.contracts.game.

* catalogue cheats on a tiny random Llama (checkpoints 0, 16, 32, 34): a compute
  lie is disputed in a game pinned at the first checkpoint of the claim's
  checkpointed trace it reaches, and the on-chain bisection of the two full
  prefixes stands on the record and element the off-chain ``dispute()`` reaches;
  a structural lie (flipped weight, another model, a skipped layer, broken
  wiring) is refuted in one ``openTemplate`` call at the record the off-chain
  plan names, and a game over such a lie reaches the ``Template`` state at that
  record, decided on the defendant's full prefix; decisions that need the
  referee's one-step run to the end only when ``contracts/artifacts/Referee.json``
  exists (else they skip, saying so); games decided without it (a defendant that
  cannot serve its own commitment, a silent defendant, a challenger that cannot
  make the one-step) run to the end for real;
* bonds, locks, slashing, clocks and timeouts, custom errors, events,
  front-running, double challenges, unbonding during a dispute, re-entrancy
  on payouts;
* a hypothesis state machine of random actors asserting solvency, honest
  parties never losing stake, and exact ETH conservation (gas counted).

tests/test_contracts_pin.py covers the pin and the response themselves on
small synthetic traces.
"""

from __future__ import annotations

import pytest
from eth_account import Account
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from test_models_tiny import LLAMA, random_llama_weights
from web3.logs import DISCARD

from refute.compute.claims import ClaimRound, sign_claim
from refute.compute.executor import Executor
from refute.compute.llama import LlamaDecoder
from refute.compute.trace import DEFERRED, checkpointed, prefix, record_run
from refute.contracts.build import ARTIFACT_DIR
from refute.contracts.client import Chain, ContractError, claim_tuple
from refute.contracts.game import (
    DEFENDANT_STATES,
    FINAL_STATES,
    Challenger,
    Defendant,
    GameParams,
    GameSystem,
    State,
    pin_of,
    play,
    trace_tree_root,
)
from refute.verifier import cheats
from refute.verifier.dispute import dispute, open_own, template_one_step
from refute.verifier.prover import Prover
from refute.verifier.tasks import GenerateTask
from refute.verifier.verify import Verifier

KEYS = [i.to_bytes(32, "big") for i in range(1, 11)]  # the tester's accounts
ADDR = [Account.from_key(k).address for k in KEYS]
DEPLOYER, PROVER, CHALLENGER, COPIER, OTHER = ADDR[0], ADDR[1], ADDR[2], ADDR[3], ADDR[4]
PROVER_KEY = KEYS[1]
TASK = GenerateTask((5, 9, 11, 4), 6, temperature=3.0, top_k=0, top_p=1.0, sequence=3)
SEED = 7
PARAMS = GameParams(min_bond=10**17, slash_amount=10**18, winner_share_bps=5_000, clock=3_600, reopen_grace=3_600)
WINDOW = 24 * 3600
HAVE_REFEREE = (ARTIFACT_DIR / "Referee.json").exists()
NEEDS_REFEREE = pytest.mark.skipif(not HAVE_REFEREE, reason="contracts/artifacts/Referee.json is not built yet: "
                                                         "the one-step decision needs the on-chain referee")
#: The tiny Llama's checkpoints: the embedding, each layer's output, the logits.
CHECKPOINTS = (0, 16, 32, 34)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def model():
    return LlamaDecoder(LLAMA, random_llama_weights(LLAMA), Executor("reference"))


@pytest.fixture(scope="module")
def verifier(model):
    return Verifier({"smollm2.generate": model})


def _cheaters(model):
    return {
        "perturbed_activation": cheats.PerturbedActivation(model, PROVER_KEY, 10, 7),
        "low_precision_op": cheats.LowPrecisionOp(model, PROVER_KEY, 12),
        "forged_trace": cheats.ForgedTrace(model, PROVER_KEY, 16, 3),
        "mismatched_serving": cheats.MismatchedServing(model, PROVER_KEY, 14, 3),
        "flipped_weight_bit": cheats.FlippedWeightBit(model, PROVER_KEY, "layers.1.attn.k.weight", 3, 20),
        "different_model": cheats.DifferentModel(model, PROVER_KEY),
        "native_torch_kernels": cheats.NativeTorchKernels(model, PROVER_KEY),
        "skipped_layer": cheats.SkippedLayer(model, PROVER_KEY, 1),
        "broken_wiring": cheats.BrokenWiring(model, PROVER_KEY, 17, 1),
    }


class Case:
    """A bundle, its prover and the prover's full trace, the challenger's own full
    trace and tensors, the program, and where the off-chain ``dispute()`` lands."""

    def __init__(self, prover, bundle, verifier, model):
        self.prover, self.bundle = prover, bundle
        t = TASK.sequence_tensors(bundle.tokens)
        self.mine, _ = record_run(model.ex, model.forward, t["ids"], t["positions"], t["mask"], None, "all")
        self.full = prover.full_trace(bundle)  # the defendant's full trace (the claim commits it checkpointed)
        self.program = verifier.program(bundle)
        self._verifier = verifier
        self._own: dict[int, object] = {}
        self._served: dict[int, object] = {}
        honest = bundle.trace.root == checkpointed(self.mine, self.program.checkpoints).root
        self.where = None if honest else dispute(bundle, prover, verifier)

    def own(self, i):
        if i not in self._own:
            self._own[i] = open_own(self._verifier, self.bundle, i)
        return self._own[i]

    def served(self, i):
        if i not in self._served:
            self._served[i] = self.prover.open(self.bundle, [i])[i]
        return self._served[i]


@pytest.fixture(scope="module")
def cases(model, verifier):
    out = {}
    for k, (name, c) in enumerate(_cheaters(model).items()):
        out[name] = Case(c, c.prove(TASK, seed=SEED, round=k + 1), verifier, model)
    honest = Prover(model, PROVER_KEY)
    out["honest"] = Case(honest, honest.prove(TASK, seed=SEED, round=100), verifier, model)
    return out


def lite_pin(trace, i):
    """Record ``i`` of a claim's checkpointed ``trace`` with its proof (``RecordProof``)."""
    return trace[i].encode(), len(trace), list(trace.prove_record(i).siblings)


def response(full, count):
    """The defendant's answer from its ``full`` trace: the tree root of its prefix of
    ``count`` records, its last record and that record's proof."""
    p = prefix(full, count)
    return trace_tree_root(p), p[count - 1].encode(), list(p.prove_record(count - 1).siblings)


def _what(exc):
    """The ``what`` tag of a ``BadOpening``/``BadRecord`` revert."""
    return bytes(exc.value.args_dict["what"]).rstrip(b"\0")


class World:
    """A fresh chain with the system deployed, the prover staked."""

    def __init__(self, params=PARAMS, referee="auto", stake=3 * 10**18):
        self.chain = Chain()
        self.sys = GameSystem.deploy(self.chain, params=params, deployer=DEPLOYER, treasury=OTHER,
                                     challenge_window=WINDOW, min_stake=10**18, referee=referee)
        self.dep = self.sys.dep
        self.dep.stake(PROVER, stake)
        self.rounds: dict[int, tuple] = {}

    def post(self, case):
        """Sign the case's claim for this registry and post its round; (signed, round)."""
        signed = sign_claim(case.bundle.claim, PROVER_KEY, registry=self.dep.registry.address)
        cr = ClaimRound([signed])
        if case.bundle.claim.round not in self.rounds:
            self.dep.post_round(PROVER, cr)
            self.rounds[case.bundle.claim.round] = (signed, cr)
        return self.rounds[case.bundle.claim.round]

    def open(self, case, challenger=CHALLENGER, bond=None, trace=None, index=None):
        """Open a game against the case's claim, pinning ``index`` (default: the first
        checkpoint where the challenger's full ``trace``, default its own, differs)."""
        signed, cr = self.post(case)
        trace = case.mine if trace is None else trace
        _, pin, tree_root = pin_of(case.bundle.trace, trace, index)
        return self.sys.open(challenger, signed, pin, tree_root, bond=bond, claim_round=cr)

    def players(self, case, challenger=CHALLENGER):
        d = Defendant(PROVER, case.full, case.served)
        c = Challenger(challenger, case.mine, case.own, case.bundle.claim, program=case.program, task=TASK,
                       tokens=case.bundle.tokens)
        return d, c


# --------------------------------------------------------------------------- the catalogue


#: Compute lies: a game pinned at the first checkpoint the lie reaches.
BISECTED = ["perturbed_activation", "low_precision_op", "forged_trace", "native_torch_kernels"]
#: Structural lies: a record of the claim's checkpointed trace off its template (``openTemplate``).
STRUCTURAL = ["flipped_weight_bit", "different_model", "skipped_layer", "broken_wiring"]
#: Structural lies that also move a committed checkpoint output: a game pinned there
#: reaches the ``Template`` state (broken wiring moves none: no game can be pinned).
STRUCTURAL_GAMES = ["flipped_weight_bit", "different_model", "skipped_layer"]


def _pinned(w, gid):
    return w.sys.events("GameOpened", gid)[0]["pinned"]


@pytest.mark.parametrize("name", BISECTED)
def test_bisection_lands_where_the_offchain_dispute_does(name, cases):
    case = cases[name]
    want = case.where
    assert want.kind == "compute"
    w = World(referee=None)
    gid, _ = w.open(case)
    pinned = _pinned(w, gid)
    assert pinned == next(c for c in CHECKPOINTS if c >= want.record)  # the first checkpoint the lie reaches
    d, c = w.players(case)
    res = play(w.sys, gid, d, c, stop_at=State.ONE_STEP)
    assert res.state == State.ONE_STEP, res
    assert (res.record, res.element) == (want.record, want.element)
    # the same rounds as off chain: the full prefix's depth, then the output tensor's
    assert sum(m[0] in ("RECORD_BISECT_C", "TENSOR_BISECT_C") for m in res.moves) == want.rounds
    assert sum(m[0] == "RECORD_BISECT_C" for m in res.moves) == pinned.bit_length()
    g = w.sys.game(gid)
    assert g["index"] == want.element
    # the committed element is the defendant's bytes of that element
    out = case.served(want.record).output.reshape(-1)
    assert g["committed"][: g["itemsize"]] == out[want.element: want.element + 1].numpy().tobytes()
    assert w.sys.solvency()[0] == w.sys.solvency()[1] == 2 * PARAMS.min_bond
    assert w.dep.locked_of(PROVER) == PARAMS.slash_amount


@NEEDS_REFEREE
@pytest.mark.parametrize("name", ["perturbed_activation", "low_precision_op", "forged_trace"])
def test_catalogue_compute_game_ends_with_the_cheater_slashed(name, cases):
    case = cases[name]
    w = World()
    gid, _ = w.open(case)
    d, c = w.players(case)
    res = play(w.sys, gid, d, c)
    assert res.state == State.CHALLENGER_WON, res
    assert (res.record, res.element) == (case.where.record, case.where.element)
    assert res.reason == "compute one-step"
    assert w.dep.stake_of(PROVER) == 2 * 10**18


@NEEDS_REFEREE
@pytest.mark.parametrize("name", STRUCTURAL)
def test_structural_lie_is_refuted_by_open_template(name, cases):
    """One call, no bond, no defendant move: the template one-step of the record of
    the claim's checkpointed trace that the off-chain plan names slashes at once; the
    cheat's records before it fit their templates (``ChallengeFailed``)."""
    from refute.contracts.referee import template_evidence

    case = cases[name]
    want = case.where
    assert want.kind == "template" and want.rounds == 0 and want.result.defendant_wrong, want
    i = want.record
    trace = case.bundle.trace
    w = World()
    signed, cr = w.post(case)
    if i > 0:
        with pytest.raises(ContractError, match="ChallengeFailed"):
            w.sys.open_template(CHALLENGER, signed, lite_pin(trace, i - 1),
                                template_evidence(template_one_step(case.bundle, case.program, i - 1)), claim_round=cr)
    evidence = template_evidence(template_one_step(case.bundle, case.program, i))
    tx = w.sys.open_template(CHALLENGER, signed, lite_pin(trace, i), evidence, claim_round=cr)
    ev = w.sys.games.events.TemplateRefuted().process_receipt(tx.receipt, errors=DISCARD)
    assert len(ev) == 1
    ev = ev[0]["args"]
    assert (ev["index"], ev["prover"], ev["challenger"]) == (i, PROVER, CHALLENGER)
    assert ev["claimHash"] == signed.claim.hash()
    # slashed at once: half to the challenger, the rest to the treasury; no bond held
    assert w.dep.stake_of(PROVER) == 2 * 10**18 and w.dep.locked_of(PROVER) == 0
    assert w.dep.credit_of(CHALLENGER) == PARAMS.slash_amount // 2
    assert w.dep.credit_of(OTHER) == PARAMS.slash_amount - PARAMS.slash_amount // 2
    assert w.sys.claim_state(signed.claim.hash())[:2] == (0, True)
    assert w.sys.solvency() == (0, 0)
    # one slash per claim ever
    with pytest.raises(ContractError, match="AlreadySlashed"):
        w.sys.open_template(COPIER, signed, lite_pin(trace, i), evidence, claim_round=cr)


@NEEDS_REFEREE
def test_open_template_against_an_honest_claim_fails(cases):
    """Every record the structural cheats are refuted at, and the logits, fit their
    templates in the honest claim: ``ChallengeFailed``, nothing moves."""
    from refute.contracts.referee import template_evidence

    honest = cases["honest"]
    records = sorted({cases[n].where.record for n in STRUCTURAL} | {len(honest.bundle.trace) - 1})
    w = World()
    signed, cr = w.post(honest)
    for i in records:
        evidence = template_evidence(template_one_step(honest.bundle, honest.program, i))
        with pytest.raises(ContractError, match="ChallengeFailed"):
            w.sys.open_template(CHALLENGER, signed, lite_pin(honest.bundle.trace, i), evidence, claim_round=cr)
    assert w.dep.stake_of(PROVER) == 3 * 10**18 and w.dep.locked_of(PROVER) == 0
    assert w.sys.claim_state(signed.claim.hash())[:2] == (0, False)


def _template_game(case, referee):
    """Open a game over a structural lie at its first differing checkpoint; play it to
    the ``Template`` state; (world, game id, players, result, pinned)."""
    w = World(referee=referee)
    gid, _ = w.open(case)
    d, c = w.players(case)
    res = play(w.sys, gid, d, c, stop_at=State.TEMPLATE)
    return w, gid, (d, c), res, _pinned(w, gid)


@pytest.mark.parametrize("name", STRUCTURAL_GAMES)
def test_a_game_over_a_structural_lie_reaches_the_template_state_at_its_record(name, cases):
    """The bisection of the two full prefixes stops at the first record that differs
    in more than its output root: the record the off-chain plan names in the claim's
    checkpointed trace. Without a referee the challenger cannot make the decision and
    its clock runs out."""
    case = cases[name]
    w, gid, (d, c), res, pinned = _template_game(case, None)
    assert res.state == State.TEMPLATE and res.record == case.where.record, res
    assert pinned >= case.where.record
    g = w.sys.game(gid)
    # the decision stands on the defendant's full prefix (count pinned + 1)
    assert g["countD"] == g["countC"] == pinned + 1
    assert g["committed"] == trace_tree_root(prefix(case.full, pinned + 1))
    with pytest.raises(ContractError, match="NoReferee"):
        w.sys.resolve_template(OTHER, gid, case.bundle.claim, case.full[res.record].encode(), b"")
    res = play(w.sys, gid, d, c)
    assert res.state == State.DEFENDANT_WON and res.reason == "timeout"
    assert res.failures and res.failures[-1].startswith("TEMPLATE") and "NoReferee" in res.failures[-1]


@NEEDS_REFEREE
@pytest.mark.parametrize("name", STRUCTURAL_GAMES)
def test_template_game_ends_with_the_cheater_slashed(name, cases):
    """The challenger decides the ``Template`` state with the template one-step of the
    defendant's revealed full record, its sources proven under the defendant's full
    prefix (nodes it has: its own below the departure, the defendant's revealed ones)."""
    case = cases[name]
    w, gid, (d, c), res, _ = _template_game(case, "auto")
    assert res.state == State.TEMPLATE
    res = play(w.sys, gid, d, c)
    assert res.state == State.CHALLENGER_WON and res.reason == "template one-step", res
    assert res.record == case.where.record and not res.failures
    assert w.dep.stake_of(PROVER) == 2 * 10**18


def test_broken_wiring_commits_no_wrong_output_a_game_could_pin(cases):
    """Broken wiring on the edge from checkpoint 16 to record 17: every committed
    output is right, so no checkpoint differs; pinned anyway, the defendant's full
    prefix up to it is the challenger's and it wins at once. Only ``openTemplate``
    refutes it (test_structural_lie_is_refuted_by_open_template)."""
    case = cases["broken_wiring"]
    assert case.where.kind == "template" and case.where.record == 17 and case.where.result.defendant_wrong
    assert case.bundle.trace[17].inputs[0].source == 16 and 16 in case.program.checkpoints
    with pytest.raises(ValueError, match="no committed output"):
        pin_of(case.bundle.trace, case.mine)
    w = World(referee=None)
    gid, _ = w.open(case, index=16)
    d, c = w.players(case)
    res = play(w.sys, gid, d, c)
    assert res.state == State.DEFENDANT_WON and res.reason == "same prefix"
    assert [m[0] for m in res.moves] == ["AWAIT_RESPONSE"]
    assert w.sys.credit_of(PROVER) == 2 * PARAMS.min_bond and w.dep.locked_of(PROVER) == 0


def test_traces_of_different_lengths_are_refuted_by_open_template(cases):
    """SkippedLayer commits fewer records: games are no longer played over traces of
    different lengths. Its claim is refuted in one ``openTemplate`` call at the first
    record off its template (the referee's part: test_structural_lie_is_refuted_by_open_template);
    a game pinned at a checkpoint bisects two prefixes of the same count."""
    case = cases["skipped_layer"]
    assert len(case.bundle.trace) == len(case.full) < len(case.mine)
    assert case.where.kind == "template" and case.where.rounds == 0
    assert case.where.record < len(case.bundle.trace) and case.where.result.defendant_wrong
    w = World(referee=None)
    signed, cr = w.post(case)
    with pytest.raises(ContractError, match="NoReferee"):
        w.sys.open_template(CHALLENGER, signed, lite_pin(case.bundle.trace, case.where.record),
                            b"", claim_round=cr)
    gid, _ = w.open(case)
    d, c = w.players(case)
    res = play(w.sys, gid, d, c, stop_at=State.RECORD_BISECT_D)
    g = w.sys.game(gid)
    assert g["countD"] == g["countC"] == _pinned(w, gid) + 1 <= len(case.bundle.trace)
    assert [m[0] for m in res.moves] == ["AWAIT_RESPONSE"]


def test_mismatched_serving_loses_on_its_clock_and_is_slashed(cases):
    """The off-chain game says "serving": the cheater cannot open its own output root."""
    case = cases["mismatched_serving"]
    assert case.where.kind == "serving"
    w = World(referee=None)
    w.post(case)
    b0 = w.chain.balance(CHALLENGER)
    gid, topen = w.open(case)
    d, c = w.players(case)
    res = play(w.sys, gid, d, c)
    assert res.state == State.CHALLENGER_WON and res.reason == "timeout"
    assert res.failures and res.failures[0].startswith("HEADER_D")
    assert res.record == case.where.record
    # the challenger: both bonds as credit, half the slash as StakeManager credit
    assert w.sys.credit_of(CHALLENGER) == 2 * PARAMS.min_bond
    assert w.dep.credit_of(CHALLENGER) == PARAMS.slash_amount // 2
    assert w.dep.credit_of(OTHER) == PARAMS.slash_amount - PARAMS.slash_amount // 2
    assert w.dep.stake_of(PROVER) == 2 * 10**18 and w.dep.locked_of(PROVER) == 0
    t1, t2 = w.sys.withdraw(CHALLENGER), w.dep.withdraw(CHALLENGER)
    # ETH exact: the challenger paid its bond (+ gas of its moves) and got 2 bonds + the share
    spent = topen.fee + res.fees.get(CHALLENGER, 0) + t1.fee + t2.fee
    assert w.chain.balance(CHALLENGER) == b0 + PARAMS.min_bond + PARAMS.slash_amount // 2 - spent
    assert w.sys.solvency() == (0, 0)
    # one slash per claim ever
    with pytest.raises(ContractError, match="AlreadySlashed"):
        w.open(case, challenger=COPIER)


@pytest.mark.parametrize("referee", [None, pytest.param("auto", marks=NEEDS_REFEREE)])
def test_wrong_challenger_of_an_honest_claim_loses_its_bond(cases, referee):
    """A challenger committing a perturbed full trace against an honest claim pins the
    checkpoint the perturbation reaches, reaches the one-step and cannot win it: the
    referee sides with the defendant (without a referee the challenger cannot move and
    times out)."""
    honest, wrong = cases["honest"], cases["perturbed_activation"]
    w = World(referee=referee)
    signed, _ = w.post(honest)
    gid, _ = w.open(honest, trace=wrong.full)
    assert _pinned(w, gid) == 16
    d, _ = w.players(honest)
    c = Challenger(CHALLENGER, wrong.full, wrong.served, honest.bundle.claim, program=honest.program, task=TASK,
                   tokens=honest.bundle.tokens)
    res = play(w.sys, gid, d, c)
    assert res.state == State.DEFENDANT_WON
    if referee is None:
        assert res.failures and res.failures[-1].startswith("ONE_STEP") and "NoReferee" in res.failures[-1]
    else:
        assert res.reason == "compute one-step" and not res.failures
    assert (res.record, res.element) == (10, 7)
    assert w.sys.credit_of(PROVER) == 2 * PARAMS.min_bond
    assert w.dep.stake_of(PROVER) == 3 * 10**18 and w.dep.locked_of(PROVER) == 0
    assert w.sys.claim_state(signed.claim.hash())[:2] == (0, False)


# --------------------------------------------------------------------------- mechanics


def test_silent_defendant_is_slashed_and_events_trace_the_states(cases):
    case = cases["perturbed_activation"]
    w = World(referee=None)
    gid, tx = w.open(case)
    assert w.sys.turn(gid)[:2] == (State.AWAIT_RESPONSE, PROVER)
    with pytest.raises(ContractError, match="ClockRunning"):
        w.sys.timeout(OTHER, gid)
    w.chain.advance_time(PARAMS.clock + 1)
    with pytest.raises(ContractError, match="ClockExpired"):
        w.sys.respond(PROVER, gid, *response(case.full, _pinned(w, gid) + 1))
    w.sys.timeout(OTHER, gid)  # anyone may call it
    states = [(e["from"], e["to"]) for e in w.sys.events("StateChanged", gid)]
    assert states == [(State.NONE, State.AWAIT_RESPONSE), (State.AWAIT_RESPONSE, State.CHALLENGER_WON)]
    assert w.sys.credit_of(CHALLENGER) == PARAMS.min_bond
    assert w.dep.stake_of(PROVER) == 2 * 10**18


def test_moves_are_bound_to_their_party_and_a_copier_gains_nothing(cases):
    case = cases["perturbed_activation"]
    w = World(referee=None)
    gid, _ = w.open(case)
    d, c = w.players(case)
    play(w.sys, gid, d, c, stop_at=State.RECORD_BISECT_C)
    g = w.sys.game(gid)
    ev = w.sys.last_event("ChildrenRevealed", gid)
    mine = prefix(case.mine, g["countC"])
    lc, rc = mine.node(g["level"] - 1, 0), mine.node(g["level"] - 1, 1)
    # the challenger's move, sent by a copier: rejected
    with pytest.raises(ContractError, match="NotParty"):
        w.sys.reveal_children_c(COPIER, gid, ev["left"], ev["right"], lc, rc)
    # the defendant's move, sent by the challenger: rejected (wrong state and party)
    with pytest.raises(ContractError, match="WrongState"):
        w.sys.reveal_children(CHALLENGER, gid, ev["left"], ev["right"])
    w.sys.reveal_children_c(CHALLENGER, gid, ev["left"], ev["right"], lc, rc)
    # a copier of the open itself: the claim is in dispute
    with pytest.raises(ContractError, match="ClaimInDispute"):
        w.open(case, challenger=COPIER)


def test_front_run_open_copier_must_play_and_the_claim_reopens(cases):
    """A copier who front-runs the challenger's open becomes the challenger and must
    play every move itself; if it cannot, it loses its bond, and the honest challenger
    opens again within the reopen grace even after the window."""
    case = cases["perturbed_activation"]
    w = World(referee=None)
    gid, _ = w.open(case, challenger=COPIER)
    d, _ = w.players(case)
    c = Challenger(COPIER, case.mine, lambda i: (_ for _ in ()).throw(ContractError("NoData", {}, b"")),
                   case.bundle.claim)
    play(w.sys, gid, d, c, stop_at=State.RECORD_BISECT_C)
    # the copier has the public trace nodes, so it could bisect; it walks away instead
    w.chain.advance_time(WINDOW + 1)
    w.sys.timeout(PROVER, gid)
    assert w.sys.state(gid) == State.DEFENDANT_WON
    assert w.sys.credit_of(PROVER) == 2 * PARAMS.min_bond
    assert w.dep.locked_of(PROVER) == 0
    gid2, _ = w.open(case)  # past the window, inside the grace
    assert gid2 == gid + 1
    w.chain.advance_time(PARAMS.reopen_grace + PARAMS.clock * 3)
    w.sys.timeout(OTHER, gid2)
    with pytest.raises(ContractError, match="AlreadySlashed"):
        w.open(case)


def test_window_bonds_counts_and_errors(cases):
    case = cases["perturbed_activation"]
    w = World(referee=None)
    signed, cr = w.post(case)
    i, pin, tr = pin_of(case.bundle.trace, case.mine)
    rec, _, sib = pin
    with pytest.raises(ContractError, match="WrongBond"):
        w.sys.open(CHALLENGER, signed, pin, tr, bond=PARAMS.min_bond - 1, claim_round=cr)
    with pytest.raises(ContractError, match="BadCount"):
        w.sys.open(CHALLENGER, signed, (rec, 0, sib), tr, claim_round=cr)
    with pytest.raises(ContractError, match="BadCount"):
        w.sys.open(CHALLENGER, signed, (rec, 2**16 + 1, sib), tr, claim_round=cr)
    # a record the claim defers commits to nothing: it cannot be pinned
    deferred = next(j for j in range(i) if case.bundle.trace[j].output == DEFERRED)
    with pytest.raises(ContractError, match="BadOpening") as e:
        w.sys.open(CHALLENGER, signed, lite_pin(case.bundle.trace, deferred), tr, claim_round=cr)
    assert _what(e) == b"deferred"
    # the challenger's own full record is not the claim's
    with pytest.raises(ContractError, match="BadOpening") as e:
        w.sys.open(CHALLENGER, signed, lite_pin(case.mine, i), tr, claim_round=cr)
    assert _what(e) == b"record proof"
    with pytest.raises(ContractError, match="NoGame"):
        w.sys.timeout(OTHER, 99)
    gid, _ = w.sys.open(CHALLENGER, signed, pin, tr, bond=3 * PARAMS.min_bond, claim_round=cr)
    theirs = response(case.full, i + 1)
    with pytest.raises(ContractError, match="WrongBond"):
        w.sys.respond(PROVER, gid, *theirs, bond=3 * PARAMS.min_bond)
    # the challenger's prefix, its record i proven under it: not the pinned output
    with pytest.raises(ContractError, match="BadOpening") as e:
        w.sys.respond(PROVER, gid, *response(case.mine, i + 1))
    assert _what(e) == b"pinned output"
    # the defendant's record under the challenger's tree root: no proof
    with pytest.raises(ContractError, match="BadOpening") as e:
        w.sys.respond(PROVER, gid, tr, *theirs[1:])
    assert _what(e) == b"record proof"
    # a prefix one record short (a shallower tree): not a prefix of the pinned count
    with pytest.raises(ContractError, match="BadOpening") as e:
        w.sys.respond(PROVER, gid, *response(case.full, i))
    assert _what(e) == b"sibling count"
    with pytest.raises(ContractError, match="NotParty"):
        w.sys.respond(COPIER, gid, *theirs)
    w.sys.respond(PROVER, gid, *theirs)
    g = w.sys.game(gid)
    assert g["countD"] == g["countC"] == i + 1
    with pytest.raises(ContractError, match="BadOpening"):  # children that do not hash to the node
        w.sys.reveal_children(PROVER, gid, b"\1" * 32, b"\2" * 32)
    assert g["bondC"] == 3 * PARAMS.min_bond and g["bondD"] == PARAMS.min_bond
    assert w.sys.solvency() == (4 * PARAMS.min_bond, 4 * PARAMS.min_bond)
    # a second round past its window cannot be challenged
    honest = cases["honest"]
    s2, cr2 = w.post(honest)
    w.chain.advance_time(WINDOW + 1)
    with pytest.raises(ContractError, match="ChallengeWindowOver"):
        w.sys.open(CHALLENGER, s2, lite_pin(honest.bundle.trace, i), tr, claim_round=cr2)


def test_not_enough_free_stake_and_unbonding_prover_is_still_slashed(cases):
    case = cases["mismatched_serving"]
    w = World(referee=None, stake=10**18)
    gid, _ = w.open(case)
    assert w.dep.locked_of(PROVER) == 10**18
    w.dep.request_unbond(PROVER, 10**18)  # allowed: unbonding stays slashable
    d, c = w.players(case)
    res = play(w.sys, gid, d, c)
    assert res.state == State.CHALLENGER_WON
    assert w.dep.unbonding_of(PROVER)[0] == 0 and w.dep.stake_of(PROVER) == 0
    assert w.dep.credit_of(CHALLENGER) == PARAMS.slash_amount // 2


def test_lock_needs_free_stake(cases):
    a, b = cases["perturbed_activation"], cases["low_precision_op"]
    w = World(referee=None, stake=10**18)
    w.open(a)
    with pytest.raises(ContractError, match="InsufficientFreeStake"):
        w.open(b)


def test_constructor_checks():
    chain = Chain()
    dep = chain.deploy(challenge_window=WINDOW, max_game_duration=3_600)
    args = [dep.stake_manager.address, dep.registry.address, "0x" + "00" * 20]
    with pytest.raises(ContractError, match="GameTooLong"):
        chain.deploy_contract("DisputeGames", *args, 1, 1, 5000, 3_600, 0)
    with pytest.raises(ContractError, match="BadParameter"):
        chain.deploy_contract("DisputeGames", *args, 1, 1, 10_000, 1_800, 0)
    with pytest.raises(ContractError, match="BadParameter"):
        chain.deploy_contract("DisputeGames", *args, 1, 1, 5000, 60, 0)
    games, _ = chain.deploy_contract("DisputeGames", *args, 1, 1, 5000, 1_800, 0)
    with pytest.raises(ContractError, match="NotGameFactory"):
        chain.send(games.functions.activate())
    dep.set_game_factory(chain.accounts[0], games.address)
    chain.send(games.functions.activate())
    with pytest.raises(ContractError, match="NotActivatable"):
        chain.send(games.functions.activate())




def test_reentrant_winner_cannot_withdraw_twice(cases):
    case = cases["perturbed_activation"]
    w = World(referee=None)
    signed, cr = w.post(case)
    att, _ = w.chain.deploy_contract("GameAttacker", w.sys.address)
    proof = cr.prove(signed.claim.hash())
    sig = signed.signature
    _, pin, tree_root = pin_of(case.bundle.trace, case.mine)
    w.chain.send(att.functions.open(claim_tuple(signed.claim), sig[:32], sig[32:64], sig[64], proof, pin, tree_root),
                 CHALLENGER, value=PARAMS.min_bond)
    w.chain.advance_time(PARAMS.clock + 1)
    w.sys.timeout(OTHER, 1)
    assert w.sys.credit_of(att.address) == PARAMS.min_bond
    w.chain.send(att.functions.setMode(1))  # re-enter and bubble: the whole withdraw reverts
    with pytest.raises(ContractError, match="TransferFailed"):
        w.chain.send(att.functions.withdraw())
    w.chain.send(att.functions.setMode(2))  # re-enter and swallow: paid once
    w.chain.send(att.functions.withdraw())
    assert w.chain.call(att.functions.received()) == PARAMS.min_bond
    assert w.chain.balance(att.address) == PARAMS.min_bond
    assert w.sys.solvency() == (0, 0)


# --------------------------------------------------------------------------- gas


def test_gas_of_a_whole_game(cases):
    case = cases["perturbed_activation"]
    w = World(referee=None)
    gid, tx = w.open(case)
    d, c = w.players(case)
    res = play(w.sys, gid, d, c)
    total = tx.gas_used + res.gas
    assert tx.gas_used < 400_000
    assert total < 5_000_000, res.moves


# --------------------------------------------------------------------------- stateful


class GameMachine(RuleBasedStateMachine):
    """Random actors on one chain with the real referee. One prover account signs an
    honest claim and two cheating ones (mismatched serving: it cannot open its own
    commitment; a perturbed activation: the referee's compute one-step refutes it);
    challengers are honest (their own replayed trace against a cheating claim) or wrong
    (a perturbed trace against the honest claim, refuted by the same one-step), each
    pinning the first checkpoint where its trace departs from the claim's; a dishonest
    side may grief (stop answering anywhere); time jumps. Honest sides always answer
    before time moves on."""

    #: (claim case, challenger's trace case or None for its own replay) per game kind
    KINDS = {"honest_vs_cheater": ("mismatched_serving", None),
             "honest_vs_compute_cheater": ("perturbed_activation", None),
             "wrong_vs_honest": ("honest", "perturbed_activation")}
    CHEATS = ("mismatched_serving", "perturbed_activation")
    #: how games ended over the whole run, by the contract's reason
    ENDINGS: dict = {}

    CASES: dict = {}

    def __init__(self):
        super().__init__()
        self.w = World(stake=5 * 10**18)
        self.sys, self.chain = self.w.sys, self.w.chain
        self.accounts = [PROVER, CHALLENGER, COPIER, OTHER]
        self.fees = {a: 0 for a in self.accounts}
        self.total0 = self._held()
        self.stake0 = self.w.dep.stake_of(PROVER)
        self.games: dict[int, dict] = {}

    def _held(self):
        return sum(self.chain.balance(a) for a in self.accounts) + self.chain.balance(self.sys.address) + \
            self.chain.balance(self.w.dep.stake_manager.address)

    def _tx(self, tx, who):
        self.fees[who] += tx.fee

    def _post(self, case):
        if case.bundle.claim.round not in self.w.rounds:
            signed = sign_claim(case.bundle.claim, PROVER_KEY, registry=self.w.dep.registry.address)
            cr = ClaimRound([signed])
            self._tx(self.w.dep.post_round(PROVER, cr), PROVER)
            self.w.rounds[case.bundle.claim.round] = (signed, cr)
        return self.w.rounds[case.bundle.claim.round]

    def _honest_turn(self, info, g) -> bool:
        d_moves = g["state"] in DEFENDANT_STATES
        return (info["kind"] != "wrong_vs_honest") != d_moves

    def _step(self, gid, honest_only: bool) -> bool:
        info = self.games[gid]
        g = self.sys.game(gid)
        if g["state"] in FINAL_STATES:
            return False
        honest = self._honest_turn(info, g)
        if honest_only and not honest:
            return False
        if not honest and info["griefer"]:
            return False
        player = info["d"] if g["state"] in DEFENDANT_STATES else info["c"]
        try:
            self._tx(player.move(self.sys, gid, g), player.account)
        except ContractError as e:
            assert not honest, f"an honest party could not move: {e}"
            assert e.name in ("BadOpening", "NoReferee", "ClockExpired"), e
            return False
        return True

    def teardown(self):
        for gid in self.games:
            for e in self.sys.events("GameResolved", gid):
                self.ENDINGS[e["reason"]] = self.ENDINGS.get(e["reason"], 0) + 1

    def _catch_up(self):
        for gid in list(self.games):
            while self._step(gid, honest_only=True):
                pass

    @rule(kind=st.sampled_from(sorted(KINDS)), who=st.sampled_from([CHALLENGER, COPIER]), griefer=st.booleans())
    def open_game(self, kind, who, griefer):
        cs = self.CASES
        claim_name, wrong_name = self.KINDS[kind]
        claim_case = cs[claim_name]
        trace = claim_case.mine if wrong_name is None else cs[wrong_name].full
        _, pin, tree_root = pin_of(claim_case.bundle.trace, trace)
        try:
            signed, cr = self._post(claim_case)
            gid, tx = self.sys.open(who, signed, pin, tree_root, claim_round=cr)
        except ContractError as e:
            assert e.name in ("ClaimInDispute", "AlreadySlashed", "ChallengeWindowOver", "InsufficientFreeStake",
                              "StakeTooLow", "RootAlreadyPosted"), e
            return
        self._tx(tx, who)
        d = Defendant(PROVER, claim_case.full, claim_case.served)
        opened = claim_case.own if wrong_name is None else cs[wrong_name].served
        c = Challenger(who, trace, opened, claim_case.bundle.claim, program=claim_case.program, task=TASK,
                       tokens=claim_case.bundle.tokens)
        self.games[gid] = dict(kind=kind, d=d, c=c, griefer=griefer)

    @precondition(lambda self: self.games)
    @rule(data=st.data())
    def move(self, data):
        self._step(data.draw(st.sampled_from(sorted(self.games))), honest_only=False)

    @precondition(lambda self: self.games)
    @rule(data=st.data())
    def play_on(self, data):
        """Both sides of one game move until it ends or a griefer stops answering."""
        gid = data.draw(st.sampled_from(sorted(self.games)))
        while self._step(gid, honest_only=False):
            pass

    @rule(seconds=st.sampled_from([60, 1_800, 3_601, 24 * 3600 + 1]))
    def wait(self, seconds):
        self._catch_up()
        self.chain.advance_time(seconds)

    @precondition(lambda self: self.games)
    @rule(data=st.data(), who=st.sampled_from([OTHER, CHALLENGER]))
    def timeout(self, data, who):
        gid = data.draw(st.sampled_from(sorted(self.games)))
        try:
            self._tx(self.sys.timeout(who, gid), who)
        except ContractError as e:
            assert e.name in ("ClockRunning", "WrongState"), e

    @rule(who=st.sampled_from([PROVER, CHALLENGER, COPIER, OTHER]))
    def withdraw(self, who):
        for fn in (self.sys.withdraw, self.w.dep.withdraw):
            try:
                self._tx(fn(who), who)
            except ContractError as e:
                assert e.name == "NothingToWithdraw", e

    @invariant()
    def solvent(self):
        bal, owed = self.sys.solvency()
        assert bal == owed
        bal, owed = self.w.dep.solvency()
        assert bal == owed

    @invariant()
    def eth_is_conserved(self):
        assert self._held() + sum(self.fees.values()) == self.total0

    @invariant()
    def honest_parties_never_lose(self):
        for gid, info in self.games.items():
            st_ = self.sys.game(gid)["state"]
            if info["kind"] == "wrong_vs_honest":
                assert st_ != State.CHALLENGER_WON, "an honest prover lost"
            else:
                assert st_ != State.DEFENDANT_WON, "an honest challenger lost"
        # the prover's stake moves only by one slash per cheating claim, never for the honest one
        registry = self.w.dep.registry.address
        slashed = {name: self.sys.claim_state(
            sign_claim(self.CASES[name].bundle.claim, PROVER_KEY, registry=registry).claim.hash())[1]
            for name in (*self.CHEATS, "honest")}
        assert not slashed["honest"]
        have = self.w.dep.stake_of(PROVER) + self.w.dep.unbonding_of(PROVER)[0]
        assert have == self.stake0 - PARAMS.slash_amount * sum(slashed[n] for n in self.CHEATS)


@pytest.mark.slow
def test_stateful_random_actors(cases):
    GameMachine.CASES = cases
    # derandomized here as under CI (conftest): with random draws, 8 examples do not always
    # reach a compute one-step (locally 1 run in 4 missed before checkpointed claims, 4 in 7 after)
    GameMachine.TestCase.settings = settings(max_examples=8, stateful_step_count=25, deadline=None,
                                             derandomize=True, suppress_health_check=list(HealthCheck))
    GameMachine.ENDINGS.clear()
    GameMachine.TestCase().runTest()
    # the run reached the referee's decisions, not only timeouts
    assert GameMachine.ENDINGS.get("compute one-step", 0) > 0, GameMachine.ENDINGS
