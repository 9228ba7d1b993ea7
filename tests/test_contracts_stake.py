"""StakeManager (contracts/src/StakeManager.sol) and the client's error handling.

* every path and every custom error: staking, unbonding, withdrawing, the
  role model (owner -> game factory -> games), locks, slashes;
* a prover that requested unbonding during a lock is still slashable, and
  locked stake cannot be withdrawn;
* a reentrancy attacker on the payout path (``withdraw``): the attack fails
  and balances stay right;
* a hypothesis state machine with random actors, time jumps, locks and
  slashes by two test "games": after every step the contract is solvent
  (balance == stakes + unbonding + credits), the model matches the chain, no
  never-slashed party loses anything, and ETH is conserved exactly (fees
  taken from receipts);
* client: revert messages, timeouts and unreachable endpoints.
"""

from __future__ import annotations

import socket
import threading

import pytest
from eth_utils import keccak
from web3.logs import DISCARD
from hypothesis import Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from refute.contracts.client import (
    Chain,
    ChainTimeout,
    ChainUnavailable,
    ContractError,
    Deployment,
    decode_revert,
)

WINDOW, GAME, DELAY = 100, 200, 301
E = 10**18
ZERO = "0x" + "00" * 20


def expect(name: str, **args):
    class _Ctx:
        def __enter__(self):
            self.cm = pytest.raises(ContractError)
            self.info = self.cm.__enter__()
            return self.info

        def __exit__(self, *exc):
            r = self.cm.__exit__(*exc)
            e = self.info.value
            assert e.name == name, str(e)
            for k, v in args.items():
                assert e.args_dict[k] == v, (k, str(e))
            return r

    return _Ctx()


class Env:
    """Roles: owner = accounts[0] (deployer), factory = accounts[1], games = accounts[2:4],
    treasury = accounts[4], actors = accounts[5:9]."""

    def __init__(self):
        self.chain = Chain()
        acc = self.chain.accounts
        self.owner, self.factory, self.games, self.treasury, self.actors = acc[0], acc[1], acc[2:4], acc[4], acc[5:9]
        self.d = self.chain.deploy(deployer=self.owner, treasury=self.treasury, challenge_window=WINDOW,
                                   max_game_duration=GAME, unbonding_delay=DELAY, min_stake=E)  # fmt: skip
        self.d.set_game_factory(self.owner, self.factory)
        for g in self.games:
            self.d.authorize_game(self.factory, g)
        self.snapshot = self.chain.tester.take_snapshot()

    def reset(self) -> Deployment:
        self.chain.tester.revert_to_snapshot(self.snapshot)
        return self.d


@pytest.fixture(scope="module")
def env_module():
    return Env()


@pytest.fixture
def env(env_module):
    env_module.reset()
    return env_module


def solvent(d: Deployment) -> None:
    bal, owed = d.solvency()
    assert bal == owed == sum(d.totals()) == d.chain.balance(d.stake_manager.address)
    assert d.chain.call(d.stake_manager.functions.isSolvent())


# ---------------------------------------------------------------------------
# construction and roles


def test_constructor_checks_delay_and_treasury():
    chain = Chain()
    with expect("UnbondingDelayTooShort", delay=300, minimumExclusive=300):
        chain.deploy(challenge_window=WINDOW, max_game_duration=GAME, unbonding_delay=300)
    with expect("UnbondingDelayTooShort", delay=2**64 - 1, minimumExclusive=2 * (2**64 - 1)):
        chain.deploy(challenge_window=2**64 - 1, max_game_duration=2**64 - 1, unbonding_delay=2**64 - 1)
    with expect("ZeroAddress"):
        chain.deploy(treasury=ZERO, challenge_window=WINDOW, max_game_duration=GAME, unbonding_delay=DELAY)
    d = chain.deploy(challenge_window=WINDOW, max_game_duration=GAME)  # default delay: window + game + 1 day
    f = d.stake_manager.functions
    assert chain.call(f.unbondingDelay()) == WINDOW + GAME + 86400
    assert chain.call(f.owner()) == chain.accounts[0] == chain.call(f.treasury())
    assert chain.call(d.registry.functions.challengeWindow()) == WINDOW == chain.call(f.challengeWindow())
    assert chain.call(f.maxGameDuration()) == GAME
    assert chain.call(f.gameFactory()) == ZERO


def test_roles(env):
    d, chain = env.d, env.chain
    f = d.stake_manager.functions
    assert chain.call(f.gameFactory()) == env.factory
    assert chain.call(f.isGame(env.games[0])) and not chain.call(f.isGame(env.actors[0]))
    with expect("GameFactoryAlreadySet", factory=env.factory):
        d.set_game_factory(env.owner, env.actors[0])
    with expect("NotOwner", caller=env.actors[0]):
        d.set_game_factory(env.actors[0], env.actors[0])
    with expect("NotGameFactory", caller=env.owner):
        d.authorize_game(env.owner, env.actors[0])
    with expect("GameAlreadyAuthorized", game=env.games[0]):
        d.authorize_game(env.factory, env.games[0])
    with expect("ZeroAddress"):
        d.authorize_game(env.factory, ZERO)
    tx = d.authorize_game(env.factory, env.actors[3])
    (ev,) = d.stake_manager.events.GameAuthorized().process_receipt(tx.receipt)
    assert ev.args.game == env.actors[3]
    a = env.actors[0]
    d.stake(a, 10)
    for call in (lambda: d.lock(a, a, 1), lambda: d.unlock(a, a, 1), lambda: d.slash(a, a, 1, a, 0)):
        with expect("NotGame", caller=a):
            call()


def test_set_game_factory_zero_and_event():
    chain = Chain()
    d = chain.deploy(challenge_window=WINDOW, max_game_duration=GAME)
    with expect("ZeroAddress"):
        d.set_game_factory(chain.accounts[0], ZERO)
    tx = d.set_game_factory(chain.accounts[0], chain.accounts[1])
    (ev,) = d.stake_manager.events.GameFactorySet().process_receipt(tx.receipt)
    assert ev.args.factory == chain.accounts[1]


# ---------------------------------------------------------------------------
# staking, unbonding, withdrawing


def test_stake_unbond_withdraw_happy_path(env):
    d, chain = env.d, env.chain
    a = env.actors[0]
    start = chain.balance(a)
    fees = 0
    with expect("ZeroAmount"):
        d.stake(a, 0)
    tx = d.stake(a, 5 * E)
    fees += tx.fee
    (ev,) = d.stake_manager.events.Staked().process_receipt(tx.receipt)
    assert (ev.args.account, ev.args.amount, ev.args.stake) == (a, 5 * E, 5 * E)
    fees += d.stake(a, E).fee
    assert d.stake_of(a) == 6 * E
    solvent(d)
    with expect("ZeroAmount"):
        d.request_unbond(a, 0)
    with expect("InsufficientStake", account=a, stake=6 * E, requested=7 * E):
        d.request_unbond(a, 7 * E)
    with expect("NoUnbonding", account=a):
        d.withdraw_unbonded(a)
    tx = d.request_unbond(a, 2 * E)
    fees += tx.fee
    (ev,) = d.stake_manager.events.UnbondRequested().process_receipt(tx.receipt)
    assert (ev.args.amount, ev.args.unbonding, ev.args.readyAt) == (2 * E, 2 * E, tx.timestamp + DELAY)
    assert d.unbonding_of(a) == (2 * E, tx.timestamp + DELAY) and d.stake_of(a) == 4 * E
    assert d.chain.call(d.stake_manager.functions.slashableOf(a)) == 6 * E
    solvent(d)
    chain.advance_time(DELAY - 10)
    with expect("UnbondingNotReady", account=a, readyAt=tx.timestamp + DELAY):
        d.withdraw_unbonded(a)
    # a second request adds to the amount and restarts the delay
    tx2 = d.request_unbond(a, E)
    fees += tx2.fee
    assert d.unbonding_of(a) == (3 * E, tx2.timestamp + DELAY)
    chain.advance_time(DELAY - 5)
    with expect("UnbondingNotReady", readyAt=tx2.timestamp + DELAY):
        d.withdraw_unbonded(a)
    chain.advance_time(10)
    with expect("NothingToWithdraw", account=a):
        d.withdraw(a)
    tx = d.withdraw_unbonded(a)
    fees += tx.fee
    (ev,) = d.stake_manager.events.Unbonded().process_receipt(tx.receipt)
    assert ev.args.amount == 3 * E
    assert d.unbonding_of(a) == (0, 0) and d.credit_of(a) == 3 * E and d.stake_of(a) == 3 * E
    solvent(d)
    tx = d.withdraw(a)
    fees += tx.fee
    (ev,) = d.stake_manager.events.Withdrawn().process_receipt(tx.receipt)
    assert ev.args.amount == 3 * E
    assert d.credit_of(a) == 0
    assert chain.balance(a) == start - 3 * E - fees
    solvent(d)


# ---------------------------------------------------------------------------
# locks and slashes


def test_lock_unlock_errors_and_events(env):
    d = env.d
    g, h = env.games
    a = env.actors[0]
    d.stake(a, 10 * E)
    with expect("ZeroAmount"):
        d.lock(g, a, 0)
    with expect("InsufficientFreeStake", account=a, free=10 * E, requested=11 * E):
        d.lock(g, a, 11 * E)
    tx = d.lock(g, a, 6 * E)
    (ev,) = d.stake_manager.events.Locked().process_receipt(tx.receipt)
    assert (ev.args.game, ev.args.account, ev.args.amount) == (g, a, 6 * E)
    with expect("InsufficientFreeStake", free=4 * E, requested=5 * E):
        d.lock(h, a, 5 * E)
    d.lock(h, a, 4 * E)
    assert d.locked_of(a) == 10 * E and d.locked_by(g, a) == 6 * E and d.locked_by(h, a) == 4 * E
    assert d.chain.call(d.stake_manager.functions.freeOf(a)) == 0
    # a game can release only its own lock
    with expect("ExceedsLock", game=h, account=a, locked=4 * E, requested=5 * E):
        d.unlock(h, a, 5 * E)
    with expect("ZeroAmount"):
        d.unlock(g, a, 0)
    tx = d.unlock(g, a, 6 * E)
    (ev,) = d.stake_manager.events.Unlocked().process_receipt(tx.receipt)
    assert ev.args.amount == 6 * E
    assert d.locked_of(a) == 4 * E and d.locked_by(g, a) == 0
    with expect("ExceedsLock", game=g, locked=0, requested=1):
        d.slash(g, a, 1, env.actors[1], 5000)
    solvent(d)


def test_slash_splits_between_winner_and_treasury(env):
    d = env.d
    g = env.games[0]
    prover, challenger = env.actors[0], env.actors[1]
    d.stake(prover, 10 * E)
    d.lock(g, prover, 4 * E)
    with expect("ZeroAmount"):
        d.slash(g, prover, 0, challenger, 5000)
    with expect("ZeroAddress"):
        d.slash(g, prover, E, ZERO, 5000)
    with expect("InvalidWinnerShare", winnerShareBps=10_000):
        d.slash(g, prover, E, challenger, 10_000)
    with expect("ExceedsLock", locked=4 * E, requested=5 * E):
        d.slash(g, prover, 5 * E, challenger, 5000)
    tx = d.slash(g, prover, 3 * E, challenger, 2500)
    (ev,) = d.stake_manager.events.Slashed().process_receipt(tx.receipt)
    assert dict(ev.args) == {"game": g, "account": prover, "winner": challenger, "amount": 3 * E,
                             "toWinner": 3 * E // 4, "toTreasury": 3 * E - 3 * E // 4}  # fmt: skip
    assert d.credit_of(challenger) == 3 * E // 4 and d.credit_of(env.treasury) == 3 * E - 3 * E // 4
    assert d.stake_of(prover) == 7 * E and d.locked_of(prover) == E and d.locked_by(g, prover) == E
    solvent(d)
    # self-challenge never pays: the prover wins its own game and still loses the treasury's part
    d.slash(g, prover, E, prover, 9_999)
    assert d.credit_of(prover) == E * 9_999 // 10_000 < E
    assert d.stake_of(prover) == 6 * E
    solvent(d)
    # rounding: with the largest share, one wei still goes to the treasury
    d.lock(g, prover, 1)
    before = d.credit_of(env.treasury)
    d.slash(g, prover, 1, challenger, 9_999)
    assert d.credit_of(env.treasury) == before + 1
    solvent(d)


def test_unbonding_during_lock_is_slashable_and_locked_stake_cannot_leave(env):
    d, chain = env.d, env.chain
    g = env.games[0]
    prover, challenger = env.actors[0], env.actors[1]
    d.stake(prover, 10 * E)
    d.lock(g, prover, 8 * E)
    # the prover tries to run: unbonding everything is allowed (it stays slashable) ...
    d.request_unbond(prover, 10 * E)
    assert d.stake_of(prover) == 0 and d.unbonding_of(prover)[0] == 10 * E
    assert chain.call(d.stake_manager.functions.slashableOf(prover)) == 10 * E
    chain.advance_time(DELAY + 1)
    # ... but the matured unbonding cannot leave while locked
    with expect("StakeLocked", account=prover, locked=8 * E):
        d.withdraw_unbonded(prover)
    with expect("NothingToWithdraw"):
        d.withdraw(prover)
    # the game resolves against the prover: slashed out of the unbonding bucket
    d.slash(g, prover, 8 * E, challenger, 5000)
    assert d.unbonding_of(prover)[0] == 2 * E and d.locked_of(prover) == 0
    assert d.totals() == (0, 2 * E, 8 * E)
    solvent(d)
    d.withdraw_unbonded(prover)
    assert d.credit_of(prover) == 2 * E
    d.withdraw(prover)
    d.withdraw(challenger)
    d.withdraw(env.treasury)
    assert d.totals() == (0, 0, 0)
    solvent(d)


def test_slash_takes_bonded_stake_first_then_unbonding(env):
    d, chain = env.d, env.chain
    g = env.games[0]
    p = env.actors[2]
    d.stake(p, 5 * E)
    d.request_unbond(p, 3 * E)
    d.lock(g, p, 4 * E)
    with expect("StakeLocked", locked=4 * E):
        chain.advance_time(DELAY + 1)
        d.withdraw_unbonded(p)
    d.slash(g, p, 3 * E, env.actors[3], 0)  # winner share 0: all to the treasury
    assert d.stake_of(p) == 0 and d.unbonding_of(p)[0] == 2 * E and d.credit_of(env.actors[3]) == 0
    d.unlock(g, p, E)
    d.withdraw_unbonded(p)  # nothing locked any more
    assert d.credit_of(p) == 2 * E and d.credit_of(env.treasury) == 3 * E
    solvent(d)


def test_partial_lock_allows_releasing_what_is_not_needed(env):
    d, chain = env.d, env.chain
    g = env.games[1]
    p = env.actors[1]
    d.stake(p, 10 * E)
    d.lock(g, p, 3 * E)
    d.request_unbond(p, 7 * E)  # leaves 3 E bonded, exactly the lock
    chain.advance_time(DELAY)
    d.withdraw_unbonded(p)
    assert d.credit_of(p) == 7 * E
    with expect("InsufficientStake", stake=3 * E, requested=4 * E):
        d.request_unbond(p, 4 * E)
    solvent(d)


# ---------------------------------------------------------------------------
# reentrancy


def _attacker(env):
    chain, d = env.chain, env.d
    atk, _ = chain.deploy_contract("ReentrancyAttacker", d.stake_manager.address, sender=env.actors[3])
    return atk


def _attacker_with_credit(env, amount: int):
    chain, d = env.chain, env.d
    atk = _attacker(env)
    a = env.actors[3]
    chain.send(atk.functions.stake(), a, value=amount)
    chain.send(atk.functions.requestUnbond(amount), a)
    chain.advance_time(DELAY)
    chain.send(atk.functions.withdrawUnbonded(), a)
    assert d.credit_of(atk.address) == amount
    return atk


def test_reentrancy_bubbling_fails_and_changes_nothing(env):
    chain, d = env.chain, env.d
    d.stake(env.actors[0], 50 * E)  # other people's money in the contract
    atk = _attacker_with_credit(env, 2 * E)
    chain.send(atk.functions.setMode(1), env.actors[3])
    before = (chain.balance(atk.address), chain.balance(d.stake_manager.address), d.totals())
    # the inner withdraw hits the guard (Reentrancy), the payment fails, the whole call reverts
    with expect("TransferFailed", to=atk.address, amount=2 * E):
        chain.send(atk.functions.withdraw(), env.actors[3])
    assert (chain.balance(atk.address), chain.balance(d.stake_manager.address), d.totals()) == before
    assert d.credit_of(atk.address) == 2 * E
    solvent(d)


def test_reentrancy_swallowed_pays_once(env):
    chain, d = env.chain, env.d
    d.stake(env.actors[0], 50 * E)
    atk = _attacker_with_credit(env, 2 * E)
    chain.send(atk.functions.setMode(2), env.actors[3])
    sm_before = chain.balance(d.stake_manager.address)
    tx = chain.send(atk.functions.withdraw(), env.actors[3])
    assert chain.balance(atk.address) == 2 * E == chain.call(atk.functions.received())
    assert chain.call(atk.functions.reentries()) == 1
    inner = chain.call(atk.functions.lastInnerError())
    assert inner == keccak(text="Reentrancy()")[:4]
    assert decode_revert(inner, chain._errors).name == "Reentrancy"
    (ev,) = atk.events.Reentered().process_receipt(tx.receipt, errors=DISCARD)
    assert ev.args.ok is False
    assert chain.balance(d.stake_manager.address) == sm_before - 2 * E
    assert d.credit_of(atk.address) == 0
    with expect("NothingToWithdraw", account=atk.address):
        chain.send(atk.functions.withdraw(), env.actors[3])
    solvent(d)


def test_reentrancy_as_slash_winner_and_refusing_receiver(env):
    chain, d = env.chain, env.d
    g = env.games[0]
    atk = _attacker(env)
    p = env.actors[0]
    d.stake(p, 10 * E)
    d.lock(g, p, 4 * E)
    d.slash(g, p, 4 * E, atk.address, 5000)
    assert d.credit_of(atk.address) == 2 * E
    for mode in (1, 3):  # re-enter and bubble; refuse the payment
        chain.send(atk.functions.setMode(mode), env.actors[3])
        with expect("TransferFailed", to=atk.address, amount=2 * E):
            chain.send(atk.functions.withdraw(), env.actors[3])
        assert d.credit_of(atk.address) == 2 * E
    chain.send(atk.functions.setMode(0), env.actors[3])
    chain.send(atk.functions.withdraw(), env.actors[3])
    assert chain.balance(atk.address) == 2 * E and d.credit_of(atk.address) == 0
    solvent(d)


# ---------------------------------------------------------------------------
# the state machine


class StakeMachine(RuleBasedStateMachine):
    """Random actors bond, unbond, withdraw; time jumps; two games lock, unlock, slash.
    The model predicts every outcome; failures must be the predicted custom error."""

    env: Env = None  # set once per module (class attribute: the chain is reused via snapshots)

    @initialize()
    def setup(self):
        if StakeMachine.env is None:
            StakeMachine.env = Env()
        e = self.e = StakeMachine.env
        self.d = e.reset()
        self.c = e.chain
        self.parties = [e.owner, e.factory, *e.games, e.treasury, *e.actors]
        self.wallet = {a: self.c.balance(a) for a in self.parties}
        self.initial_total = sum(self.wallet.values()) + self.c.balance(self.d.stake_manager.address)
        self.fees = 0
        self.stake = {a: 0 for a in self.parties}
        self.unb = {a: [0, 0] for a in self.parties}
        self.credit = {a: 0 for a in self.parties}
        self.lock = {(g, a): 0 for g in e.games for a in self.parties}
        self.slashed: set[str] = set()
        self.won = {a: 0 for a in self.parties}
        self.put_in = {a: 0 for a in self.parties}  # wei sent into the contract
        self.taken_out = {a: 0 for a in self.parties}  # wei withdrawn
        # the contract starts empty after the snapshot
        assert self.d.totals() == (0, 0, 0)

    # -- helpers

    def _tx(self, who, f, *args, **kw):
        tx = f(*args, **kw)
        self.wallet[who] -= tx.fee
        self.fees += tx.fee
        return tx

    def _locked(self, a):
        return sum(self.lock[(g, a)] for g in self.e.games)

    def _check_account(self, a):
        assert self.d.stake_of(a) == self.stake[a]
        assert list(self.d.unbonding_of(a)) == self.unb[a]
        assert self.d.credit_of(a) == self.credit[a]
        assert self.d.locked_of(a) == self._locked(a)

    actor = st.integers(0, 3)
    amount = st.one_of(st.just(0), st.integers(1, 5 * E), st.integers(1, 1000))

    # -- rules

    @rule(i=actor, amount=amount)
    def bond(self, i, amount):
        a = self.e.actors[i]
        if amount == 0:
            with expect("ZeroAmount"):
                self.d.stake(a, 0)
            return
        self._tx(a, self.d.stake, a, amount)
        self.wallet[a] -= amount
        self.put_in[a] += amount
        self.stake[a] += amount
        self._check_account(a)

    @rule(i=actor, frac=st.floats(0, 1.2), extra=st.integers(0, 1))
    def request_unbond(self, i, frac, extra):
        a = self.e.actors[i]
        amount = int(self.stake[a] * frac) + extra
        if amount == 0:
            with expect("ZeroAmount"):
                self.d.request_unbond(a, 0)
        elif amount > self.stake[a]:
            with expect("InsufficientStake", account=a, stake=self.stake[a], requested=amount):
                self.d.request_unbond(a, amount)
        else:
            tx = self._tx(a, self.d.request_unbond, a, amount)
            self.stake[a] -= amount
            self.unb[a] = [self.unb[a][0] + amount, tx.timestamp + DELAY]
        self._check_account(a)

    @rule(i=actor)
    def withdraw_unbonded(self, i):
        a = self.e.actors[i]
        amt, ready = self.unb[a]
        if amt == 0:
            with expect("NoUnbonding", account=a):
                self.d.withdraw_unbonded(a)
            return
        try:
            tx = self._tx(a, self.d.withdraw_unbonded, a)
        except ContractError as err:
            if err.name == "UnbondingNotReady":
                assert err.args_dict["readyAt"] == ready and err.args_dict["timestamp"] < ready
            else:
                assert err.name == "StakeLocked", str(err)
                assert err.args_dict["locked"] == self._locked(a) > self.stake[a]
            return
        assert tx.timestamp >= ready and self.stake[a] >= self._locked(a)
        self.unb[a] = [0, 0]
        self.credit[a] += amt
        self._check_account(a)

    @rule(i=st.integers(0, 4))
    def withdraw(self, i):
        a = (*self.e.actors, self.e.treasury)[i]
        if self.credit[a] == 0:
            with expect("NothingToWithdraw", account=a):
                self.d.withdraw(a)
            return
        self._tx(a, self.d.withdraw, a)
        self.wallet[a] += self.credit[a]
        self.taken_out[a] += self.credit[a]
        self.credit[a] = 0

    @rule(seconds=st.one_of(st.integers(1, 50), st.integers(DELAY - 20, DELAY + 20), st.integers(1, 3 * DELAY)))
    def time_jump(self, seconds):
        self.c.advance_time(seconds)

    @rule(gi=st.integers(0, 1), i=actor, frac=st.floats(0, 1.2), extra=st.integers(0, 1))
    def lock(self, gi, i, frac, extra):
        g, a = self.e.games[gi], self.e.actors[i]
        free = self.stake[a] + self.unb[a][0] - self._locked(a)
        amount = int(free * frac) + extra
        if amount == 0:
            with expect("ZeroAmount"):
                self.d.lock(g, a, 0)
        elif amount > free:
            with expect("InsufficientFreeStake", account=a, free=free, requested=amount):
                self.d.lock(g, a, amount)
        else:
            self._tx(g, self.d.lock, g, a, amount)
            self.lock[(g, a)] += amount
        self._check_account(a)

    @rule(gi=st.integers(0, 1), i=actor, frac=st.floats(0, 1.2), extra=st.integers(0, 1))
    def unlock(self, gi, i, frac, extra):
        g, a = self.e.games[gi], self.e.actors[i]
        mine = self.lock[(g, a)]
        amount = int(mine * frac) + extra
        if amount == 0:
            with expect("ZeroAmount"):
                self.d.unlock(g, a, 0)
        elif amount > mine:
            with expect("ExceedsLock", game=g, account=a, locked=mine, requested=amount):
                self.d.unlock(g, a, amount)
        else:
            self._tx(g, self.d.unlock, g, a, amount)
            self.lock[(g, a)] -= amount
        self._check_account(a)

    @rule(gi=st.integers(0, 1), i=actor, frac=st.floats(0, 1.2), extra=st.integers(0, 1), w=st.integers(0, 4),
          bps=st.one_of(st.integers(0, 9_999), st.just(10_000)))  # fmt: skip
    def slash(self, gi, i, frac, extra, w, bps):
        g, a = self.e.games[gi], self.e.actors[i]
        winner = (*self.e.actors, self.e.treasury)[w]
        mine = self.lock[(g, a)]
        amount = int(mine * frac) + extra
        if amount == 0:
            with expect("ZeroAmount"):
                self.d.slash(g, a, 0, winner, bps)
            return
        if bps >= 10_000:
            with expect("InvalidWinnerShare", winnerShareBps=bps):
                self.d.slash(g, a, amount, winner, bps)
            return
        if amount > mine:
            with expect("ExceedsLock", locked=mine, requested=amount):
                self.d.slash(g, a, amount, winner, bps)
            return
        self._tx(g, self.d.slash, g, a, amount, winner, bps)
        self.lock[(g, a)] -= amount
        from_stake = min(amount, self.stake[a])
        self.stake[a] -= from_stake
        rest = amount - from_stake
        if rest:
            self.unb[a][0] -= rest
            assert self.unb[a][0] >= 0
            if self.unb[a][0] == 0:
                self.unb[a] = [0, 0]
        to_winner = amount * bps // 10_000
        self.credit[winner] += to_winner
        self.credit[self.e.treasury] += amount - to_winner
        self.won[winner] += to_winner
        self.slashed.add(a)
        self._check_account(a)
        self._check_account(winner)

    # -- invariants

    @invariant()
    def solvent_and_conserved(self):
        if not hasattr(self, "d"):
            return
        d = self.d
        staked = sum(self.stake.values())
        unbonding = sum(u[0] for u in self.unb.values())
        credits = sum(self.credit.values())
        bal, owed = d.solvency()
        assert bal == owed == staked + unbonding + credits
        assert d.totals() == (staked, unbonding, credits)
        # wallets match the model to the wei; ETH is conserved (fees from receipts)
        for a in self.parties:
            assert self.c.balance(a) == self.wallet[a], a
        assert sum(self.wallet.values()) + bal + self.fees == self.initial_total
        # a never-slashed party has lost nothing: what it put in is still its own
        for a in self.e.actors:
            held = self.stake[a] + self.unb[a][0] + self.credit[a] + self.taken_out[a]
            if a not in self.slashed:
                assert held == self.put_in[a] + self.won[a]
            else:
                assert held <= self.put_in[a] + self.won[a]
            assert self._locked(a) <= self.stake[a] + self.unb[a][0]


TestStakeMachine = StakeMachine.TestCase
TestStakeMachine.settings = settings(
    max_examples=10, stateful_step_count=25, deadline=None, phases=(Phase.explicit, Phase.reuse, Phase.generate)
)
TestStakeMachine = pytest.mark.slow(TestStakeMachine)


# ---------------------------------------------------------------------------
# client: revert decoding and unreachable endpoints


def test_revert_messages_are_readable(env):
    d = env.d
    a = env.actors[0]
    d.stake(a, 10)
    d.lock(env.games[0], a, 10)
    d.request_unbond(a, 10)
    env.chain.advance_time(DELAY)
    with pytest.raises(ContractError, match=rf"^StakeLocked\(account={a}, locked=10\)$") as ei:
        d.withdraw_unbonded(a)
    assert ei.value.args_dict == {"account": a, "locked": 10}
    assert ei.value.data[:4] == keccak(text="StakeLocked(address,uint256)")[:4]
    # standard errors and unknown selectors
    from eth_abi import encode

    err = decode_revert(keccak(text="Error(string)")[:4] + encode(["string"], ["boom"]), {})
    assert str(err) == "Error(reason=boom)"
    assert str(decode_revert(keccak(text="Panic(uint256)")[:4] + encode(["uint256"], [0x11]), {})) == "Panic(code=0x11)"
    assert str(decode_revert(b"\xde\xad\xbe\xef", {})) == "UnknownError(data=0xdeadbeef)"
    assert str(decode_revert(b"", {})) == "Revert()"


def test_a_transaction_that_reverts_when_mined_is_a_contract_error(env):
    """Mined and reverted although its estimate passed (here: too little gas, the
    estimate skipped by a fixed gas limit): a revert of this transaction, reported as
    a ContractError that names it, not as a chain outage."""
    d, a = env.d, env.actors[0]
    env.chain.gas_limit = 30_000  # stake() needs far more
    try:
        with expect("RevertedWhenMined") as ei:
            d.stake(a, 10)
    finally:
        env.chain.gas_limit = None
    assert ei.value.args_dict["gas_used"] == 30_000 and len(ei.value.args_dict["tx"]) == 32
    assert d.stake_of(a) == 0
    d.stake(a, 10)  # with estimates again it goes through
    assert d.stake_of(a) == 10


def _silent_server():
    """A TCP server that accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    conns = []
    stop = threading.Event()

    def loop():
        srv.settimeout(0.1)
        while not stop.is_set():
            try:
                conns.append(srv.accept()[0])
            except OSError:
                pass

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return srv, stop, conns, t


def test_endpoint_that_never_answers_times_out():
    srv, stop, conns, t = _silent_server()
    try:
        url = f"http://127.0.0.1:{srv.getsockname()[1]}"
        with pytest.raises(ChainTimeout, match="did not answer within 0.3 s"):
            Chain(url, timeout=0.3)
    finally:
        stop.set()
        t.join()
        for c in conns:
            c.close()
        srv.close()


def test_unreachable_endpoint():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    with pytest.raises(ChainUnavailable, match="cannot reach"):
        Chain(f"http://127.0.0.1:{port}", timeout=1)
