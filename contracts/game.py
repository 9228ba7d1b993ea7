"""Dispute games on chain: deploy the whole system and play a game move by move.

:meth:`GameSystem.deploy` deploys a StakeManager and a ClaimRegistry (through
:meth:`refute.contracts.client.Chain.deploy`), the ``DisputeGames`` contract
(``contracts/src/DisputeGames.sol``: the StakeManager's game factory and its
only game), and a ``Referee`` if its artifact is present (its constructor's
contract arguments are deployed first, each with no arguments), then wires
them: the StakeManager's owner makes ``DisputeGames`` the game factory and
``activate()`` authorises it.

:class:`Defendant` and :class:`Challenger` are the two players, each driven
by its own Python :class:`~refute.compute.trace.Trace` and a function that
returns the tensors of a record (:class:`~refute.verifier.prover.Opened`).
:func:`play` runs a game to its end: at each state it asks the party to move
for its move, sends it, and records the gas of every move; a party that
cannot make a valid move (its data does not open its own commitment, the
contract reverts) lets its clock run out and loses by :meth:`timeout`. What
the defendant reveals (children, record, header, chunk) the challenger reads
back from the contract's events, as a real challenger would.

docs/protocol.md "Dispute game" describes the contract; this module's names
follow it.
"""

from __future__ import annotations

import dataclasses
import enum
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from web3.logs import DISCARD

from refute.compute.claims import Claim, ClaimRound, SignedClaim
from refute.compute.merkle import CHUNK_BYTES, TensorTree
from refute.compute.program import Program
from refute.compute.trace import DEFERRED, RecordProof, Trace, TraceError, TraceRecord, prefix
from refute.contracts.build import ARTIFACT_DIR, load_artifact
from refute.contracts.client import Chain, ChainError, ContractError, Deployment, Tx, _addr, claim_tuple
from refute.contracts.referee import input_heads, range_openings, step_openings
from refute.verifier import programs

__all__ = ["State", "GameParams", "GameSystem", "Defendant", "Challenger", "GameResult", "play", "openings_for",
           "DEFENDANT_STATES", "FINAL_STATES", "take_turn", "CannotMove", "pin_of"]


class State(enum.IntEnum):
    """``DisputeGames.State``."""

    NONE = 0
    AWAIT_RESPONSE = 1
    RECORD_BISECT_D = 2
    RECORD_BISECT_C = 3
    RECORD_REVEAL_D = 4
    RECORD_REVEAL_C = 5
    TEMPLATE = 6
    HEADER_D = 7
    HEADER_C = 8
    TENSOR_BISECT_D = 9
    TENSOR_BISECT_C = 10
    CHUNK_D = 11
    CHUNK_C = 12
    ELEMENT_D = 13
    ONE_STEP = 14
    DEFENDANT_WON = 15
    CHALLENGER_WON = 16
    PROGRAM_END_D = 17
    PROGRAM_BISECT_D = 18
    PROGRAM_BISECT_C = 19
    PROGRAM_STEP = 20


#: States in which the defendant moves (the others but the final ones: the challenger).
DEFENDANT_STATES = frozenset({State.AWAIT_RESPONSE, State.RECORD_BISECT_D, State.RECORD_REVEAL_D,
                              State.HEADER_D, State.TENSOR_BISECT_D, State.CHUNK_D,
                              State.ELEMENT_D, State.PROGRAM_END_D, State.PROGRAM_BISECT_D})
FINAL_STATES = frozenset({State.DEFENDANT_WON, State.CHALLENGER_WON})

_GAME_FIELDS = ("prover", "lastMoveAt", "state", "level", "itemsize", "challenger", "clockD", "clockC", "countD",
                "countC", "index", "numelD", "claimHash", "nodeD", "nodeC", "bondC", "bondD", "recordHashD",
                "headerHashD", "committed")


@dataclass(frozen=True)
class GameParams:
    """``DisputeGames`` constructor parameters (wei and seconds)."""

    min_bond: int = 10**17
    slash_amount: int = 10**18
    winner_share_bps: int = 5_000
    clock: int = 3_600
    reopen_grace: int = 3_600


def _tree_depth(count: int) -> int:
    return (count - 1).bit_length() if count > 1 else 0


def trace_tree_root(trace: Trace) -> bytes:
    """The tree root under a trace root (``trace_root = H(0x23 || u64 count || tree_root)``)."""
    return trace.node(_tree_depth(len(trace)), 0)


#: A pinned record with its proof: ``(record bytes, count, siblings)``, or a
#: ``(TraceRecord, RecordProof)`` pair (``Trace.prove_record``).
PinArg = tuple[Any, ...]


def _record_bytes(record: Any) -> bytes:
    return bytes(record) if isinstance(record, (bytes, bytearray, memoryview)) else record.encode()


def pin_tuple(pin: PinArg) -> tuple[bytes, int, list[bytes]]:
    """``DisputeGames.RecordProof`` calldata of a pin (see :data:`PinArg`)."""
    if len(pin) == 2:
        record, rp = pin
        return _record_bytes(record), int(rp.count), [bytes(s) for s in rp.siblings]
    record, count, siblings = pin
    return _record_bytes(record), int(count), [bytes(s) for s in siblings]


def _chunk(tree: TensorTree, c: int) -> bytes:
    return tree.data[c * CHUNK_BYTES:(c + 1) * CHUNK_BYTES].ljust(CHUNK_BYTES, b"\0")


class GameSystem:
    """StakeManager, ClaimRegistry, DisputeGames (and a Referee, if built) on a :class:`Chain`.

    Transactions take the sending account first and return a :class:`Tx`;
    reverts raise :class:`ContractError`."""

    def __init__(self, dep: Deployment, games: Any, referee: Any | None, params: GameParams):
        self.dep = dep
        self.chain: Chain = dep.chain
        self.games = games
        self.referee = referee
        self.params = params
        self._open_block: dict[int, int] = {}

    @classmethod
    def deploy(cls, chain: Chain, *, params: GameParams = GameParams(), deployer: Any = None, treasury: Any = None,
               challenge_window: int = 24 * 3600, max_game_duration: int | None = None, min_stake: int = 10**18,
               referee: Any = "auto") -> GameSystem:
        """Deploy and wire everything. ``referee``: ``"auto"`` (deploy ``Referee`` if its
        artifact exists, else none), ``None`` (none: decisions revert ``NoReferee``), or an
        address. ``max_game_duration`` defaults to two clocks."""
        frm = _addr(deployer) if deployer is not None else chain.accounts[0]
        if max_game_duration is None:
            max_game_duration = 2 * params.clock
        dep = chain.deploy(deployer=frm, treasury=treasury, challenge_window=challenge_window,
                           max_game_duration=max_game_duration, min_stake=min_stake)
        ref = None
        if referee == "auto":
            ref = deploy_referee(chain, frm) if (ARTIFACT_DIR / "Referee.json").exists() else None
            ref_addr = ref.address if ref is not None else "0x" + "00" * 20
        elif referee is None:
            ref_addr = "0x" + "00" * 20
        else:
            ref_addr = _addr(referee)
        games, _ = chain.deploy_contract(
            "DisputeGames", dep.stake_manager.address, dep.registry.address, ref_addr, params.min_bond,
            params.slash_amount, params.winner_share_bps, params.clock, params.reopen_grace, sender=frm)
        dep.set_game_factory(frm, games.address)
        chain.send(games.functions.activate(), frm)
        return cls(dep, games, ref, params)

    @classmethod
    def attach(cls, chain: Chain, info: dict[str, Any]) -> GameSystem:
        """The system described by ``info`` (:meth:`describe`'s dict) on ``chain``."""
        try:
            if int(info["chain_id"]) != chain.chain_id:
                raise ChainError(f"the deployment is on chain {info['chain_id']}, this endpoint is {chain.chain_id}")
            dep = chain.attach(info["stake_manager"], info["registry"])
            games = chain.contract("DisputeGames", info["games"])
            referee = chain.contract("Referee", info["referee"]) if info.get("referee") else None
            params = GameParams(**{k: int(v) for k, v in info["params"].items()})
        except (KeyError, TypeError, ValueError) as e:
            raise ChainError(f"malformed deployment description: {type(e).__name__}: {e}") from None
        return cls(dep, games, referee, params)

    def describe(self) -> dict[str, Any]:
        """Addresses and parameters, as JSON-able values (the deployment file)."""
        return {"chain_id": self.chain.chain_id, "stake_manager": self.dep.stake_manager.address,
                "registry": self.dep.registry.address, "games": self.games.address,
                "referee": self.referee.address if self.referee is not None else None,
                "params": dataclasses.asdict(self.params)}

    @property
    def address(self) -> str:
        return self.games.address

    # -- transactions -----------------------------------------------------

    def _send(self, account: Any, fn: Any, game_id: int | None = None, value: int = 0) -> Tx:
        return self.chain.send(fn, account, value=value)

    def open(self, challenger: Any, signed: SignedClaim, pin: PinArg, tree_root: bytes, *, bond: int | None = None,
             proof: Sequence[bytes] | None = None, claim_round: ClaimRound | None = None) -> tuple[int, Tx]:
        """Open a game against ``signed``: ``pin`` is the defendant's checkpoint record ``i``
        of the claim's lite trace with its proof, ``(record bytes, count, siblings)`` (or a
        ``(TraceRecord, RecordProof)`` pair), and ``tree_root`` the tree root of the
        challenger's full trace of records ``0..i``; the game id and the transaction."""
        fn = self.games.functions.open(*self._claim_args(signed, proof, claim_round), pin_tuple(pin), tree_root)
        tx = self._send(challenger, fn, value=self.params.min_bond if bond is None else bond)
        ev = self.games.events.GameOpened().process_receipt(tx.receipt, errors=DISCARD)
        gid = ev[0]["args"]["gameId"]
        self._open_block[gid] = tx.block
        return gid, tx

    def open_sampling(self, challenger: Any, signed: SignedClaim, evidence: bytes, *,
                      proof: Sequence[bytes] | None = None, claim_round: ClaimRound | None = None) -> Tx:
        """A sampling refutation (one call; reverts ``ChallengeFailed`` unless the referee agrees)."""
        fn = self.games.functions.openSampling(*self._claim_args(signed, proof, claim_round), evidence)
        return self._send(challenger, fn)

    def open_template(self, challenger: Any, signed: SignedClaim, pin: PinArg, evidence: bytes, *,
                      proof: Sequence[bytes] | None = None, claim_round: ClaimRound | None = None) -> Tx:
        """A template refutation of the pinned record of the claim's lite trace (one call;
        reverts ``ChallengeFailed`` unless the referee agrees). ``pin`` as for :meth:`open`."""
        fn = self.games.functions.openTemplate(*self._claim_args(signed, proof, claim_round), pin_tuple(pin), evidence)
        return self._send(challenger, fn)

    def _claim_args(self, signed: SignedClaim, proof: Sequence[bytes] | None, claim_round: ClaimRound | None):
        if proof is None:
            if claim_round is None:
                raise ValueError("need the claim's inclusion proof or its round")
            proof = claim_round.prove(signed.claim.hash())
        sig = signed.signature
        return claim_tuple(signed.claim), sig[:32], sig[32:64], sig[64], [bytes(p) for p in proof]

    def respond(self, account: Any, game_id: int, tree_root: bytes, record: bytes, siblings: Sequence[bytes],
                bond: int | None = None) -> Tx:
        """The defendant's answer: ``tree_root`` of its full prefix trace (the pinned index + 1
        records) and its full record at the pinned index (``bytes`` or a ``TraceRecord``)
        with ``siblings`` under it."""
        fn = self.games.functions.respond(game_id, tree_root, _record_bytes(record), [bytes(s) for s in siblings])
        return self._send(account, fn, game_id, self.params.min_bond if bond is None else bond)

    def reveal_children(self, account: Any, game_id: int, left: bytes, right: bytes) -> Tx:
        return self._send(account, self.games.functions.revealChildren(game_id, left, right), game_id)

    def reveal_children_c(self, account: Any, game_id: int, ld: bytes, rd: bytes, lc: bytes, rc: bytes) -> Tx:
        return self._send(account, self.games.functions.revealChildrenC(game_id, ld, rd, lc, rc), game_id)

    def reveal_record(self, account: Any, game_id: int, record: bytes) -> Tx:
        return self._send(account, self.games.functions.revealRecord(game_id, record), game_id)

    def reveal_record_c(self, account: Any, game_id: int, record_d: bytes, record_c: bytes) -> Tx:
        return self._send(account, self.games.functions.revealRecordC(game_id, record_d, record_c), game_id)

    def reveal_header(self, account: Any, game_id: int, header: bytes, data_root: bytes) -> Tx:
        return self._send(account, self.games.functions.revealHeader(game_id, header, data_root), game_id)

    def reveal_header_c(self, account: Any, game_id: int, header: bytes, data_root: bytes) -> Tx:
        return self._send(account, self.games.functions.revealHeaderC(game_id, header, data_root), game_id)

    def reveal_chunk(self, account: Any, game_id: int, chunk: bytes) -> Tx:
        return self._send(account, self.games.functions.revealChunk(game_id, chunk), game_id)

    def reveal_chunk_c(self, account: Any, game_id: int, chunk_d: bytes, chunk_c: bytes) -> Tx:
        return self._send(account, self.games.functions.revealChunkC(game_id, chunk_d, chunk_c), game_id)

    def open_element(self, account: Any, game_id: int, chunk: bytes, siblings: Sequence[bytes]) -> Tx:
        return self._send(account, self.games.functions.openElement(game_id, chunk, list(siblings)), game_id)

    def one_step(self, account: Any, game_id: int, record: bytes, header: bytes, openings: Sequence[tuple]) -> Tx:
        return self._send(account, self.games.functions.oneStep(game_id, record, header, list(openings)), game_id)

    def open_program(self, account: Any, game_id: int, record: bytes, header: bytes,
                     heads: Sequence[tuple[bytes, bytes]]) -> Tx:
        return self._send(account, self.games.functions.openProgram(game_id, record, header, list(heads)), game_id)

    def post_program_end(self, account: Any, game_id: int, record: bytes, state: bytes) -> Tx:
        return self._send(account, self.games.functions.postProgramEnd(game_id, record, state), game_id)

    def post_program_hashes(self, account: Any, game_id: int, hashes: Sequence[bytes]) -> Tx:
        return self._send(account, self.games.functions.postProgramHashes(game_id, list(hashes)), game_id)

    def judge_program_hashes(self, account: Any, game_id: int, hashes: Sequence[bytes], first_wrong: int) -> Tx:
        fn = self.games.functions.judgeProgramHashes(game_id, list(hashes), first_wrong)
        return self._send(account, fn, game_id)

    def program_step(self, account: Any, game_id: int, record: bytes, before: bytes,
                     openings: Sequence[tuple]) -> Tx:
        return self._send(account, self.games.functions.programStep(game_id, record, before, list(openings)), game_id)

    def resolve_template(self, account: Any, game_id: int, claim: Claim, record: bytes, evidence: bytes) -> Tx:
        fn = self.games.functions.resolveTemplate(game_id, claim_tuple(claim), record, evidence)
        return self._send(account, fn, game_id)

    def timeout(self, account: Any, game_id: int) -> Tx:
        return self._send(account, self.games.functions.timeout(game_id), game_id)

    def withdraw(self, account: Any) -> Tx:
        """Pull ``account``'s credit from DisputeGames (bonds)."""
        return self._send(account, self.games.functions.withdraw())

    # -- views ------------------------------------------------------------

    def game(self, game_id: int) -> dict[str, Any]:
        """The game record, by field name (``state`` as :class:`State`)."""
        g = dict(zip(_GAME_FIELDS, self.chain.call(self.games.functions.gameOf(game_id))))
        g["state"] = State(g["state"])
        return g

    def state(self, game_id: int) -> State:
        return State(self.chain.call(self.games.functions.turn(game_id))[0])

    def turn(self, game_id: int) -> tuple[State, str, int]:
        """(state, party to move or the zero address, seconds left on its clock)."""
        st, party, left = self.chain.call(self.games.functions.turn(game_id))
        return State(st), party, left

    def credit_of(self, account: Any) -> int:
        return self.chain.call(self.games.functions.creditOf(_addr(account)))

    def claim_state(self, claim_hash: bytes) -> tuple[int, bool, int]:
        """(open game id or 0, slashed, reopenUntil)."""
        return tuple(self.chain.call(self.games.functions.claimState(claim_hash)))  # type: ignore[return-value]

    def solvency(self) -> tuple[int, int]:
        """(balance, bonds + credits)."""
        return tuple(self.chain.call(self.games.functions.solvency()))  # type: ignore[return-value]

    def events(self, name: str, game_id: int) -> list[dict[str, Any]]:
        """Event ``name`` of game ``game_id`` (args dicts, oldest first)."""
        frm = self._open_block.get(game_id, 0)
        ev = getattr(self.games.events, name)
        logs = ev().get_logs(from_block=max(0, frm - 1), argument_filters={"gameId": game_id})
        return [dict(log["args"]) for log in logs]

    def last_event(self, name: str, game_id: int, **match: Any) -> dict[str, Any]:
        for e in reversed(self.events(name, game_id)):
            if all(e.get(k) == v for k, v in match.items()):
                return e
        raise ChainError(f"no {name} event of game {game_id} matching {match}")


def deploy_referee(chain: Chain, sender: Any) -> Any:
    """Deploy ``Referee``: each constructor argument typed ``contract X`` is a fresh ``X``."""
    art = load_artifact("Referee")
    ctor = next((e for e in art.abi if e["type"] == "constructor"), {"inputs": []})
    args = []
    for inp in ctor["inputs"]:
        kind = inp.get("internalType", "")
        if not kind.startswith("contract "):
            raise ChainError(f"cannot deploy Referee: constructor argument {inp['name']} is {kind}")
        c, _ = chain.deploy_contract(kind.split()[1], sender=sender)
        args.append(c.address)
    ref, _ = chain.deploy_contract("Referee", *args, sender=sender)
    return ref


#: ``DisputeGames.PROGRAM_SECTIONS``: a program round splits (lo, hi) into this many sections.
PROGRAM_SECTIONS = 16


def program_points(lo: int, hi: int) -> list[int]:
    """The steps whose states the defendant posts in a program round over (lo, hi)."""
    m = min(PROGRAM_SECTIONS, hi - lo)
    return [lo + (hi - lo) * i // m for i in range(1, m)]


# --------------------------------------------------------------------------- players


Opener = Callable[[int], Any]  # record index -> Opened (inputs by name, output)


class CannotMove(Exception):
    """A player has no valid move (its data does not open its commitment)."""


#: (record index, element) -> the states S_0 .. S_n of the element's program.
ProgramStates = Callable[[int, int], list[bytes]]


class _Prefixes:
    """A party's full trace and its prefixes (a game bisects the prefix ending at the
    pinned checkpoint, whose tree is not a subtree of the full trace's)."""

    trace: Trace

    def prefix(self, count: int) -> Trace:
        cache = self.__dict__.setdefault("_prefixes", {})
        if count not in cache:
            try:
                cache[count] = prefix(self.trace, count)
            except TraceError as e:
                raise CannotMove(f"no prefix of {count} records: {e}") from None
        return cache[count]


@dataclass
class Defendant(_Prefixes):
    """The claim's prover: its full trace (every output rooted; the claim commits to it
    checkpointed), a function serving a record's tensors and, for element programs, a
    function giving its states (default: computed from its own served inputs)."""

    account: str
    trace: Trace
    opened: Opener
    program_states: ProgramStates | None = None

    def _tree(self, i: int) -> TensorTree:
        return TensorTree.from_tensor(self.opened(i).output)

    def _states(self, rec: int, element: int) -> list[bytes]:
        if self.program_states is None:
            self.program_states = programs.party_program_states(self.trace, self.opened)
        return self.program_states(rec, element)

    def move(self, sys: GameSystem, gid: int, g: dict[str, Any]) -> Tx:
        st, a = g["state"], self.account
        level, index = g["level"], g["index"]
        if st == State.AWAIT_RESPONSE:  # its full prefix up to the pinned checkpoint, that record proven
            mine = self.prefix(g["countC"])
            last = len(mine) - 1
            return sys.respond(a, gid, trace_tree_root(mine), mine[last].encode(), mine.prove_record(last).siblings)
        if st == State.RECORD_BISECT_D:
            mine = self.prefix(g["countD"])
            return sys.reveal_children(a, gid, mine.node(level - 1, 2 * index), mine.node(level - 1, 2 * index + 1))
        if st == State.RECORD_REVEAL_D:
            return sys.reveal_record(a, gid, self.prefix(g["countD"])[index].encode())
        # tensor phase: the record the game stands on is g["index"] until the header is in
        rec = self._record_index(sys, gid)
        tree = self._tree(rec)
        if st == State.HEADER_D:
            return sys.reveal_header(a, gid, tree.header.encode(), tree.data_root)
        if st == State.TENSOR_BISECT_D:
            return sys.reveal_children(a, gid, tree.node(level - 1, 2 * index), tree.node(level - 1, 2 * index + 1))
        if st == State.CHUNK_D:
            return sys.reveal_chunk(a, gid, _chunk(tree, index))
        if st == State.ELEMENT_D:
            p = tree.prove_element(0)
            return sys.open_element(a, gid, _chunk(tree, 0), p.siblings)
        if st == State.PROGRAM_END_D:
            record = sys.last_event("RecordRevealed", gid)["record"]
            return sys.post_program_end(a, gid, record, self._states(rec, index)[-1])
        if st == State.PROGRAM_BISECT_D:
            states = self._states(rec, index)
            points = program_points(g["countD"], g["countC"])
            return sys.post_program_hashes(a, gid, [programs.state_hash(states[p]) for p in points])
        raise CannotMove(f"the defendant does not move in {st.name}")

    @staticmethod
    def _record_index(sys: GameSystem, gid: int) -> int:
        return sys.last_event("RecordRevealed", gid)["index"]


@dataclass
class Challenger(_Prefixes):
    """The challenger: its own (honest) full trace, a function giving its own tensors of
    a record, the claim and, to decide a template state, the program behind the claim's
    model digest and the task and tokens."""

    account: str
    trace: Trace
    opened: Opener
    claim: Claim
    program: Program | None = None
    task: Any = None
    tokens: Any = None
    _cache: dict[int, TensorTree] = field(default_factory=dict)
    _states: ProgramStates | None = None

    def states(self, rec: int, element: int) -> list[bytes]:
        """The honest program states of ``element`` of record ``rec`` (its own inputs)."""
        if self._states is None:
            self._states = programs.party_program_states(self.trace, self.opened)
        return self._states(rec, element)

    def _tree(self, i: int) -> TensorTree:
        if i not in self._cache:
            self._cache[i] = TensorTree.from_tensor(self.opened(i).output)
        return self._cache[i]

    def move(self, sys: GameSystem, gid: int, g: dict[str, Any]) -> Tx:
        st, a = g["state"], self.account
        level, index = g["level"], g["index"]
        prover = _addr(g["prover"])
        if st in (State.RECORD_BISECT_C, State.TENSOR_BISECT_C):
            ev = sys.last_event("ChildrenRevealed", gid, party=prover)
            if st == State.RECORD_BISECT_C:
                mine = self.prefix(g["countC"])
                lc, rc = mine.node(level - 1, 2 * index), mine.node(level - 1, 2 * index + 1)
            else:
                tree = self._tree(self._record_index(sys, gid))
                lc, rc = tree.node(level - 1, 2 * index), tree.node(level - 1, 2 * index + 1)
            return sys.reveal_children_c(a, gid, ev["left"], ev["right"], lc, rc)
        if st == State.RECORD_REVEAL_C:
            rd = sys.last_event("RecordRevealed", gid)["record"]
            return sys.reveal_record_c(a, gid, rd, self.prefix(g["countC"])[index].encode())
        if st == State.TEMPLATE:
            ev = sys.last_event("RecordRevealed", gid)
            return sys.resolve_template(a, gid, self.claim, ev["record"],
                                        self._template_evidence(sys, gid, g, bytes(ev["record"])))
        rec = self._record_index(sys, gid)
        tree = self._tree(rec)
        if st == State.HEADER_C:
            return sys.reveal_header_c(a, gid, tree.header.encode(), tree.data_root)
        if st == State.CHUNK_C:
            cd = sys.last_event("ChunkRevealed", gid)["chunk"]
            return sys.reveal_chunk_c(a, gid, cd, _chunk(tree, index))
        if st == State.ONE_STEP:
            record = sys.last_event("RecordRevealed", gid)["record"]
            header = sys.last_event("HeaderRevealed", gid, party=prover)["header"]
            mine = self.opened(rec)
            shapes = {n: tuple(t.shape) for n, t in mine.inputs.items()}
            if programs.prefers_program(self.trace[rec].kind, shapes):
                return sys.open_program(a, gid, record, header, input_heads(self.trace[rec], mine.inputs))
            openings = openings_for(self.trace[rec], mine, index)
            return sys.one_step(a, gid, record, header, openings)
        if st == State.PROGRAM_BISECT_C:
            posted = [bytes(h) for h in sys.last_event("ProgramHashesPosted", gid)["hashes"]]
            mine = [programs.state_hash(self.states(rec, index)[p]) for p in program_points(g["countD"], g["countC"])]
            first = next((i for i, (h, m) in enumerate(zip(posted, mine)) if h != m), len(posted))
            return sys.judge_program_hashes(a, gid, posted, first)
        if st == State.PROGRAM_STEP:
            record = sys.last_event("RecordRevealed", gid)["record"]
            lo = g["countD"]
            openings = step_openings(self.trace[rec], self.opened(rec).inputs, index, lo)
            return sys.program_step(a, gid, record, self.states(rec, index)[lo], openings)
        raise CannotMove(f"the challenger does not move in {st.name}")

    def _template_evidence(self, sys: GameSystem, gid: int, g: dict[str, Any], record: bytes) -> bytes:
        """The referee's evidence that the defendant's revealed ``record`` departs from its
        template, its sources proven under the defendant's full prefix. The challenger
        never saw that tree whole, but needs only nodes it has: the records before the
        disputed one are its own too (the bisection stopped at the first that differs),
        and every node that covers the disputed record or a later one is a child the
        defendant revealed on the bisection's path."""
        from refute.contracts.referee import template_evidence
        from refute.verifier.dispute import OneStepProof

        if self.program is None:
            raise CannotMove("no program to prove the template against")
        try:
            rec = TraceRecord.decode(record)
        except TraceError as e:
            raise CannotMove(f"the defendant's record does not decode: {e}") from None
        count = g["countD"]
        mine = self.prefix(count)
        prover = _addr(g["prover"])
        theirs: dict[tuple[int, int], bytes] = {}
        for e in sys.events("ChildrenRevealed", gid):
            if _addr(e["party"]) == prover:
                theirs[(e["level"], e["index"])] = bytes(e["left"])
                theirs[(e["level"], e["index"] + 1)] = bytes(e["right"])
        depth = _tree_depth(count)

        def proof(j: int) -> RecordProof:
            sib = [theirs.get((k, (j >> k) ^ 1)) or mine.node(k, (j >> k) ^ 1) for k in range(depth)]
            return RecordProof(j, count, tuple(sib))

        sources = tuple((mine[x.source], proof(x.source)) for x in rec.inputs if not x.external)
        p = self.program
        one_step = OneStepProof("template", self.claim, rec, proof(rec.index), identity=p.identity,
                                program_tree_root=p.templates.root, eos_token_id=p.eos_token_id,
                                template=p.template(rec.index), template_proof=p.prove_template(rec.index),
                                task=self.task, tokens=self.tokens, sources=sources)
        return template_evidence(one_step)

    @staticmethod
    def _record_index(sys: GameSystem, gid: int) -> int:
        return sys.last_event("RecordRevealed", gid)["index"]


def pin_of(claim_trace: Trace, full: Trace, index: int | None = None) -> tuple[int, tuple[bytes, int, list[bytes]], bytes]:
    """What the challenger opens a game with: the pinned record ``index`` of the claim's
    checkpointed trace (default: the first committed output that differs from its own
    ``full`` trace's), that record with its proof, and the tree root of its own full
    prefix ending there."""
    if index is None:
        index = next((i for i, (r, m) in enumerate(zip(claim_trace, full))
                      if r.output != DEFERRED and r.output != m.output), None)
        if index is None:
            raise ValueError("no committed output of the claim differs from this trace's")
    pin = (claim_trace[index].encode(), len(claim_trace), list(claim_trace.prove_record(index).siblings))
    return index, pin, trace_tree_root(prefix(full, index + 1))


def openings_for(record: Any, opened: Any, element: int) -> list[tuple]:
    """The ``Opening`` structs of a compute one-step of ``element`` of ``record``'s
    output, from the challenger's own input tensors (``opened.inputs``), in record order."""
    from refute.verifier.dispute import element_inputs

    shapes = {n: tuple(t.shape) for n, t in opened.inputs.items()}
    need = element_inputs(record.kind, record.attr_dict(), shapes, tuple(opened.output.shape), element)
    if record.kind == "embedding":
        dim = opened.output.shape[-1]
        tid = int(opened.inputs["ids"].reshape(-1)[element // dim])
        need["table"] = (tid * dim + element % dim, tid * dim + element % dim + 1)
    return range_openings(record, opened.inputs, need)


# --------------------------------------------------------------------------- the game loop


@dataclass
class GameResult:
    """How a game ended: the final state, the record and element it stood on, the moves
    (kind, sender, gas) and every transaction's fee by sender."""

    state: State
    record: int | None
    element: int | None
    moves: list[tuple[str, str, int]]
    fees: dict[str, int]
    reason: str
    failures: list[str]

    @property
    def defendant_won(self) -> bool:
        return self.state == State.DEFENDANT_WON

    @property
    def gas(self) -> int:
        return sum(g for _, _, g in self.moves)


def play(sys: GameSystem, gid: int, defendant: Defendant, challenger: Challenger, *, referee_account: Any = None,
         max_moves: int = 200, stop_at: State | None = None) -> GameResult:
    """Play game ``gid`` to its end (or until state ``stop_at``). A party whose move
    reverts or who has no move lets its clock run out; the other party then calls
    :meth:`GameSystem.timeout`."""
    moves: list[tuple[str, str, int]] = []
    fees: dict[str, int] = {}
    failures: list[str] = []
    record = element = None
    for _ in range(max_moves):
        g = sys.game(gid)
        st = g["state"]
        if st in FINAL_STATES or st == stop_at:
            break
        if st in (State.HEADER_D,):
            record = g["index"]
        d = st in DEFENDANT_STATES
        player = defendant if d else challenger
        try:
            tx = player.move(sys, gid, g)
            moves.append((st.name, player.account, tx.gas_used))
            fees[player.account] = fees.get(player.account, 0) + tx.fee
        except (ContractError, CannotMove) as e:
            failures.append(f"{st.name}: {e}")
            _, _, left = sys.turn(gid)
            sys.chain.advance_time(left + 1)
            other = challenger if d else defendant
            tx = sys.timeout(other.account, gid)
            moves.append(("TIMEOUT", other.account, tx.gas_used))
            fees[other.account] = fees.get(other.account, 0) + tx.fee
    g = sys.game(gid)
    if g["state"] in (State.ONE_STEP, State.DEFENDANT_WON, State.CHALLENGER_WON) and _found(sys, gid):
        element = g["index"]
    try:
        record = sys.last_event("RecordRevealed", gid)["index"]
    except ChainError:
        pass
    reason = ""
    res = [e for e in sys.events("GameResolved", gid)]
    if res:
        reason = res[-1]["reason"]
    return GameResult(g["state"], record, element, moves, fees, reason, failures)


def take_turn(sys: GameSystem, gid: int, player: Defendant | Challenger) -> str:
    """One look at game ``gid`` by ``player`` (each party in its own process calls
    this in a loop): move if it is its turn, claim the win if the other party's
    clock has run out, else wait. Returns ``"final"``, ``"moved STATE"``,
    ``"timeout"``, ``"waiting"`` or ``"stuck STATE: why"`` (no valid move: the
    player's clock runs; the contract will let the other side win on time).

    The clock left is read at the latest block, which on a quiet chain can be
    old: the wall time since that block is taken off before deciding that the
    other party's clock has run out (a premature ``timeout`` reverts harmlessly)."""
    g = sys.game(gid)
    st = g["state"]
    if st in FINAL_STATES:
        return "final"
    mine = (st in DEFENDANT_STATES) == isinstance(player, Defendant)
    if mine:
        try:
            player.move(sys, gid, g)
            return f"moved {st.name}"
        except (ContractError, CannotMove) as e:
            return f"stuck {st.name}: {e}"
    _, _, left = sys.turn(gid)
    lag = max(0.0, time.time() - sys.chain.timestamp())
    if left - lag <= 0:
        try:
            sys.timeout(player.account, gid)
            return "timeout"
        except ContractError:
            return "waiting"
    return "waiting"


def _found(sys: GameSystem, gid: int) -> bool:
    return bool(sys.events("ElementFound", gid))
