"""DisputeGames (contracts/src/DisputeGames.sol) played through refute.contracts.game.

* catalogue cheats on a tiny random Llama: the on-chain bisection stands on
  the record and element the off-chain ``dispute()`` reaches; games whose
  decision needs the referee's one-step run to the end only when
  ``contracts/artifacts/Referee.json`` exists (else they skip, saying so);
  games decided without it (a defendant that cannot serve its own
  commitment, a silent defendant, a challenger that cannot make the
  one-step) run to the end for real;
* bonds, locks, slashing, clocks and timeouts, custom errors, events,
  front-running, double challenges, unbonding during a dispute, re-entrancy
  on payouts;
* a hypothesis state machine of random actors asserting solvency, honest
  parties never losing stake, and exact ETH conservation (gas counted).
"""

from __future__ import annotations

import dataclasses

import pytest
from eth_account import Account
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from test_models_tiny import LLAMA, random_llama_weights

from refute.compute.claims import ClaimRound, sign_claim
from refute.compute.executor import Executor
from refute.compute.llama import LlamaDecoder
from refute.compute.trace import record_run
from refute.contracts.build import ARTIFACT_DIR
from refute.contracts.client import Chain, ContractError
from refute.contracts.game import (
    DEFENDANT_STATES,
    FINAL_STATES,
    Challenger,
    Defendant,
    GameParams,
    GameSystem,
    State,
    play,
    trace_tree_root,
)
from refute.verifier import cheats
from refute.verifier.dispute import dispute, open_own
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
        "forged_trace": cheats.ForgedTrace(model, PROVER_KEY, 14, 3),
        "mismatched_serving": cheats.MismatchedServing(model, PROVER_KEY, 14, 3),
        "flipped_weight_bit": cheats.FlippedWeightBit(model, PROVER_KEY, "layers.1.attn.k.weight", 3, 20),
        "different_model": cheats.DifferentModel(model, PROVER_KEY),
        "native_torch_kernels": cheats.NativeTorchKernels(model, PROVER_KEY),
        "skipped_layer": cheats.SkippedLayer(model, PROVER_KEY, 1),
        "broken_wiring": cheats.BrokenWiring(model, PROVER_KEY, 12, 1),
    }


class Case:
    """A bundle, its prover, the challenger's honest trace and tensors, and where the
    off-chain ``dispute()`` lands."""

    def __init__(self, prover, bundle, verifier, model):
        self.prover, self.bundle = prover, bundle
        t = TASK.sequence_tensors(bundle.tokens)
        self.mine, _ = record_run(model.ex, model.forward, t["ids"], t["positions"], t["mask"], None, "all")
        self._verifier = verifier
        self._own: dict[int, object] = {}
        self._served: dict[int, object] = {}
        self.where = dispute(bundle, prover, verifier) if bundle.trace.root != self.mine.root else None

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

    def open(self, case, challenger=CHALLENGER, bond=None, trace=None):
        signed, cr = self.post(case)
        trace = case.mine if trace is None else trace
        return self.sys.open(challenger, signed, len(trace), trace_tree_root(trace), bond=bond, claim_round=cr)

    def players(self, case, challenger=CHALLENGER, evidence=None):
        d = Defendant(PROVER, case.bundle.trace, case.served)
        c = Challenger(challenger, case.mine, case.own, case.bundle.claim, evidence)
        return d, c


def _template_evidence():
    try:
        from refute.contracts import referee as r
    except ImportError:
        return None
    return r.template_evidence


# --------------------------------------------------------------------------- the catalogue


BISECTED = ["perturbed_activation", "low_precision_op", "forged_trace", "native_torch_kernels",
            "flipped_weight_bit", "different_model"]


@pytest.mark.parametrize("name", BISECTED)
def test_bisection_lands_where_the_offchain_dispute_does(name, cases):
    case = cases[name]
    w = World(referee=None)
    gid, _ = w.open(case)
    d, c = w.players(case)
    want = case.where
    stop = State.ONE_STEP if want.kind == "compute" else State.TEMPLATE
    if len(case.bundle.trace) != len(case.mine):
        stop = State.TEMPLATE
    res = play(w.sys, gid, d, c, stop_at=stop)
    assert res.state == stop, res
    assert res.record == want.record
    if want.kind == "compute":
        assert res.element == want.element
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
@pytest.mark.parametrize("name", ["flipped_weight_bit", "different_model"])
def test_catalogue_template_game_ends_with_the_cheater_slashed(name, cases):
    build = _template_evidence()
    case = cases[name]
    proof = case.where.proof  # the off-chain game's template one-step for this very record

    def ev(claim, index):
        assert index == proof.record.index and claim == proof.claim
        return build(proof)

    w = World()
    gid, _ = w.open(case)
    d, c = w.players(case, evidence=ev)
    res = play(w.sys, gid, d, c)
    assert res.state == State.CHALLENGER_WON, res
    assert res.record == case.where.record


@NEEDS_REFEREE
def test_broken_wiring_game_ends_with_the_cheater_slashed(cases, model):
    """The template state's wiring check: the defendant's record reads an input that
    is not its source record's output; the challenger proves the source record under
    the claim's trace root and wins."""
    from refute.compute.program import program_of
    from refute.contracts.referee import template_evidence
    from refute.verifier.dispute import template_one_step

    case = cases["broken_wiring"]
    assert case.where.kind == "template" and case.where.result.defendant_wrong
    program = program_of(model)
    w = World()
    signed, _ = w.post(case)
    bundle = dataclasses.replace(case.bundle, signed=signed)
    gid, _ = w.open(case)
    d, c = w.players(case, evidence=lambda claim, index: template_evidence(template_one_step(bundle, program, index)))
    res = play(w.sys, gid, d, c)
    assert res.state == State.CHALLENGER_WON and res.reason == "template one-step", res
    assert res.record == case.where.record == 12
    assert w.dep.stake_of(PROVER) == 2 * 10**18


def test_traces_of_different_lengths_go_to_the_template_decision(cases):
    """SkippedLayer commits fewer records: no bisection; the defendant proves record
    min(count) - 1 against its tree root and the template decision is next."""
    case = cases["skipped_layer"]
    assert len(case.bundle.trace) < len(case.mine)
    w = World(referee=None)
    gid, _ = w.open(case)
    d, c = w.players(case)
    res = play(w.sys, gid, d, c, stop_at=State.TEMPLATE)
    assert [m[0] for m in res.moves] == ["AWAIT_RESPONSE", "RECORD_PROVE_D"]
    assert res.state == State.TEMPLATE and res.record == len(case.bundle.trace) - 1
    with pytest.raises(ContractError, match="NoReferee"):
        w.sys.resolve_template(OTHER, gid, case.bundle.claim, case.bundle.trace[res.record].encode(), b"")
    res = play(w.sys, gid, d, c)  # no evidence builder: the challenger's clock runs out
    assert res.state == State.DEFENDANT_WON


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
    signed, cr = w.rounds[case.bundle.claim.round]
    with pytest.raises(ContractError, match="AlreadySlashed"):
        w.sys.open(COPIER, signed, len(case.mine), trace_tree_root(case.mine), claim_round=cr)


@pytest.mark.parametrize("referee", [None, pytest.param("auto", marks=NEEDS_REFEREE)])
def test_wrong_challenger_of_an_honest_claim_loses_its_bond(cases, referee):
    """A challenger committing a perturbed trace against an honest claim reaches the
    one-step and cannot win it: the referee sides with the defendant (without a
    referee the challenger cannot move and times out)."""
    honest, wrong = cases["honest"], cases["perturbed_activation"]
    w = World(referee=referee)
    signed, cr = w.post(honest)
    gid, _ = w.sys.open(CHALLENGER, signed, len(wrong.bundle.trace), trace_tree_root(wrong.bundle.trace),
                        claim_round=cr)
    d = Defendant(PROVER, honest.bundle.trace, honest.served)
    c = Challenger(CHALLENGER, wrong.bundle.trace, wrong.served, honest.bundle.claim)
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
        w.sys.respond(PROVER, gid, len(case.bundle.trace), trace_tree_root(case.bundle.trace))
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
    lc, rc = case.mine.node(g["level"] - 1, 0), case.mine.node(g["level"] - 1, 1)
    # the challenger's move, sent by a copier: rejected
    with pytest.raises(ContractError, match="NotParty"):
        w.sys.reveal_children_c(COPIER, gid, ev["left"], ev["right"], lc, rc)
    # the defendant's move, sent by the challenger: rejected (wrong state and party)
    with pytest.raises(ContractError, match="WrongState"):
        w.sys.reveal_children(CHALLENGER, gid, ev["left"], ev["right"])
    w.sys.reveal_children_c(CHALLENGER, gid, ev["left"], ev["right"], lc, rc)
    # a copier of the open itself: the claim is in dispute
    signed, cr = w.rounds[case.bundle.claim.round]
    with pytest.raises(ContractError, match="ClaimInDispute"):
        w.sys.open(COPIER, signed, len(case.mine), trace_tree_root(case.mine), claim_round=cr)


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
    tr = trace_tree_root(case.mine)
    with pytest.raises(ContractError, match="WrongBond"):
        w.sys.open(CHALLENGER, signed, len(case.mine), tr, bond=PARAMS.min_bond - 1, claim_round=cr)
    with pytest.raises(ContractError, match="BadCount"):
        w.sys.open(CHALLENGER, signed, 0, tr, claim_round=cr)
    with pytest.raises(ContractError, match="BadCount"):
        w.sys.open(CHALLENGER, signed, 2**16 + 1, tr, claim_round=cr)
    with pytest.raises(ContractError, match="SameTrace"):
        w.sys.open(CHALLENGER, signed, len(case.bundle.trace), trace_tree_root(case.bundle.trace), claim_round=cr)
    with pytest.raises(ContractError, match="NoGame"):
        w.sys.timeout(OTHER, 99)
    gid, _ = w.sys.open(CHALLENGER, signed, len(case.mine), tr, bond=3 * PARAMS.min_bond, claim_round=cr)
    with pytest.raises(ContractError, match="WrongBond"):
        w.sys.respond(PROVER, gid, len(case.bundle.trace), trace_tree_root(case.bundle.trace), bond=3 * PARAMS.min_bond)
    with pytest.raises(ContractError, match="BadOpening"):
        w.sys.respond(PROVER, gid, len(case.bundle.trace), tr)
    with pytest.raises(ContractError, match="NotParty"):
        w.sys.respond(COPIER, gid, len(case.bundle.trace), trace_tree_root(case.bundle.trace))
    w.sys.respond(PROVER, gid, len(case.bundle.trace), trace_tree_root(case.bundle.trace))
    g = w.sys.game(gid)
    with pytest.raises(ContractError, match="BadOpening"):  # children that do not hash to the node
        w.sys.reveal_children(PROVER, gid, b"\1" * 32, b"\2" * 32)
    assert g["bondC"] == 3 * PARAMS.min_bond and g["bondD"] == PARAMS.min_bond
    assert w.sys.solvency() == (4 * PARAMS.min_bond, 4 * PARAMS.min_bond)
    # a second round past its window cannot be challenged
    honest = cases["honest"]
    s2, cr2 = w.post(honest)
    w.chain.advance_time(WINDOW + 1)
    with pytest.raises(ContractError, match="ChallengeWindowOver"):
        w.sys.open(CHALLENGER, s2, len(case.mine), tr, claim_round=cr2)


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
    from refute.contracts.client import claim_tuple

    w.chain.send(att.functions.open(claim_tuple(signed.claim), sig[:32], sig[32:64], sig[64], proof,
                                    len(case.mine), trace_tree_root(case.mine)), CHALLENGER, value=PARAMS.min_bond)
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
    (a perturbed trace against the honest claim, refuted by the same one-step); a
    dishonest side may grief (stop answering anywhere); time jumps. Honest sides always
    answer before time moves on."""

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
        trace = claim_case.mine if wrong_name is None else cs[wrong_name].bundle.trace
        try:
            signed, cr = self._post(claim_case)
            gid, tx = self.sys.open(who, signed, len(trace), trace_tree_root(trace), claim_round=cr)
        except ContractError as e:
            assert e.name in ("ClaimInDispute", "AlreadySlashed", "ChallengeWindowOver", "InsufficientFreeStake",
                              "StakeTooLow", "RootAlreadyPosted"), e
            return
        self._tx(tx, who)
        d = Defendant(PROVER, claim_case.bundle.trace, claim_case.served)
        opened = claim_case.own if wrong_name is None else cs[wrong_name].served
        c = Challenger(who, trace, opened, claim_case.bundle.claim)
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
    GameMachine.TestCase.settings = settings(max_examples=8, stateful_step_count=25, deadline=None,
                                             suppress_health_check=list(HealthCheck))
    GameMachine.ENDINGS.clear()
    GameMachine.TestCase().runTest()
    # the run reached the referee's decisions, not only timeouts
    assert GameMachine.ENDINGS.get("compute one-step", 0) > 0, GameMachine.ENDINGS
