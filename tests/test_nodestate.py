"""The verifier node's SQLite state: round trips, legal transitions only, restarts, concurrency, crashes."""

import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from refute.verifier.nodestate import (
    CLAIM_STATUSES,
    CLAIM_TRANSITIONS,
    SCHEMA_VERSION,
    ClaimRow,
    NodeState,
    StateError,
)


def h(i: int) -> bytes:
    return i.to_bytes(32, "big")


class Clock:
    """A deterministic clock: every reading is one second after the previous."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


@pytest.fixture
def state():
    with NodeState(":memory:", clock=Clock()) as s:
        yield s


def test_claim_round_trip(state):
    assert state.record_claim(h(1), "0xprover", 7, "peerA")
    row = state.claim(h(1))
    assert row == ClaimRow(h(1), "0xprover", 7, "peerA", "seen", "", None, 1001.0, None, None)
    state.set_claim_status(h(1), "refuted", reason="compute: record 3", replay_s=2.5, bundle='{"b": 1}')
    row = state.claim(h(1))
    assert (row.status, row.reason, row.replay_s, row.bundle, row.checked_at) == (
        "refuted", "compute: record 3", 2.5, b'{"b": 1}', 1002.0,
    )
    # Later moves keep the bundle, the replay time and the first check time unless given.
    state.set_claim_status(h(1), "disputed", reason="game 4")
    row = state.claim(h(1))
    assert (row.status, row.reason, row.replay_s, row.bundle, row.checked_at) == (
        "disputed", "game 4", 2.5, b'{"b": 1}', 1002.0,
    )
    assert state.claim(h(2)) is None
    assert [r.claim_hash for r in state.claims()] == [h(1)]
    assert state.claims("seen") == []
    assert [r.claim_hash for r in state.claims("disputed")] == [h(1)]


def test_record_claim_is_idempotent_and_never_overwrites(state):
    assert state.record_claim(h(1), "0xprover", 7, "peerA") is True
    state.set_claim_status(h(1), "valid")
    before = state.claim(h(1))
    assert state.record_claim(h(1), "0xother", 8, "peerB") is False
    assert state.claim(h(1)) == before


@pytest.mark.parametrize("current", CLAIM_STATUSES)
def test_illegal_transitions_rejected_and_state_unchanged(state, current):
    path = {"seen": [], "refuted": ["refuted"], "disputed": ["refuted", "disputed"],
            "settled": ["refuted", "disputed", "settled"]}.get(current, [current])
    state.record_claim(h(1), "0xprover", 1, "p")
    for step in path:
        state.set_claim_status(h(1), step, reason=f"to {step}")
    before = state.claim(h(1))
    assert before.status == current
    for target in CLAIM_STATUSES:
        if target in CLAIM_TRANSITIONS.get(current, ()):
            continue
        with pytest.raises(StateError, match="illegal transition"):
            state.set_claim_status(h(1), target, reason="nope", replay_s=9.0, bundle=b"x")
        assert state.claim(h(1)) == before


def test_bad_inputs_raise_state_error(state):
    state.record_claim(h(1), "0xprover", 1, "p")
    bad_calls = [
        lambda: state.record_claim(b"short", "0xprover", 1, "p"),
        lambda: state.record_claim("00" * 32, "0xprover", 1, "p"),
        lambda: state.record_claim(h(2), "", 1, "p"),
        lambda: state.record_claim(h(2), "0xprover", -1, "p"),
        lambda: state.record_claim(h(2), "0xprover", True, "p"),
        lambda: state.set_claim_status(h(1), "bogus"),
        lambda: state.set_claim_status(h(9), "valid"),
        lambda: state.set_claim_status(h(1), "valid", replay_s=-1.0),
        lambda: state.set_claim_status(h(1), "valid", replay_s=float("nan")),
        lambda: state.set_claim_status(h(1), "valid", bundle={"not": "json text"}),
        lambda: state.claims("bogus"),
        lambda: state.record_game(1, h(9), "0xprover", "bisection", "open"),
        lambda: state.record_game(1, h(1), "0xprover", "chess", "open"),
        lambda: state.record_game(-1, h(1), "0xprover", "bisection", "open"),
        lambda: state.record_game(2**63, h(1), "0xprover", "bisection", "open"),
        lambda: state.update_game(1, "x"),
        lambda: state.log_event("k", obj=object()),
        lambda: state.log_event("k", x=float("inf")),
        lambda: state.set("k", {1, 2}),
        lambda: state.record_withdrawal(h(1), -5, "game"),
        lambda: state.record_withdrawal(b"\x00" * 31, 5, "game"),
    ]
    for call in bad_calls:
        with pytest.raises(StateError):
            call()
    assert [r.status for r in state.claims()] == ["seen"]
    assert state.games() == [] and state.events() == [] and state.withdrawn_total() == 0


def test_games(state):
    state.record_claim(h(1), "0xprover", 1, "p")
    state.set_claim_status(h(1), "refuted")
    assert state.record_game(3, h(1), "0xprover", "bisection", "open") is True
    assert state.record_game(3, h(1), "0xprover", "bisection", "whatever") is False  # same game again
    with pytest.raises(StateError, match="already recorded"):
        state.record_game(3, h(1), "0xprover", "sampling", "open")
    state.update_game(3, "bisecting", moves_delta=2, gas_delta=150_000)
    state.update_game(3, "bisecting", moves_delta=1, gas_delta=90_000)
    g = state.game(3)
    assert (g.state, g.moves, g.gas, g.outcome, g.opened_at < g.updated_at) == ("bisecting", 3, 240_000, None, True)
    assert state.open_games() == [g]
    with pytest.raises(StateError):
        state.update_game(3, "x", outcome="draw")
    state.update_game(3, "resolved", moves_delta=1, outcome="won")
    assert state.open_games() == []
    with pytest.raises(StateError, match="is over"):
        state.update_game(3, "again")
    assert state.game(3).outcome == "won" and state.game(4) is None
    assert [g.game_id for g in state.games()] == [3]


def test_events_kv_withdrawals_counts(state):
    ids = [state.log_event("move", game=3, index=i, side="challenger") for i in range(5)]
    assert ids == sorted(ids)
    assert [e.detail["index"] for e in state.events()] == list(range(5))
    page = state.events(since_id=ids[1], limit=2)
    assert [e.id for e in page] == ids[2:4] and page[0].kind == "move"

    assert state.get("last_block") is None and state.get("last_block", 0) == 0
    state.set("last_block", 12)
    state.set("last_block", 13)
    state.set("peers", {"a": [1, 2]})
    assert state.get("last_block") == 13 and state.get("peers") == {"a": [1, 2]}

    wei = 3 * 10**30  # far beyond int64
    assert state.record_withdrawal(h(1), wei, "game 3")
    assert not state.record_withdrawal(h(1), wei, "game 3")
    assert state.record_withdrawal(h(2), 1, "bond")
    assert state.withdrawn_total() == wei + 1

    for i, status in enumerate(["valid", "skipped", "unavailable", "error", "refuted", "refuted", None]):
        state.record_claim(h(i), "0xp", 0, "")
        if status:
            state.set_claim_status(h(i), status)
    state.set_claim_status(h(5), "disputed")
    state.record_game(1, h(5), "0xp", "bisection", "open")
    state.record_game(2, h(4), "0xp", "sampling", "open")
    state.update_game(2, "done", outcome="lost")
    assert state.counts() == {
        "claims_seen": 7, "claims_checked": 5, "claims_valid": 1, "claims_refuted": 2,
        "claims_skipped": 1, "claims_unavailable": 1, "claims_error": 1,
        "games_open": 1, "games_won": 0, "games_lost": 1,
    }


def test_restart_keeps_everything(tmp_path):
    path = tmp_path / "node.sqlite"
    with NodeState(path) as s:
        assert s.journal_mode == "wal" and s.schema_version == SCHEMA_VERSION
        for i in range(4):
            s.record_claim(h(i), f"0xp{i}", i, "peer")
            s.set_claim_status(h(i), "refuted", reason=f"r{i}", bundle=b"{}")
            s.set_claim_status(h(i), "disputed")
            s.record_game(10 + i, h(i), f"0xp{i}", "bisection", "open")
        s.update_game(10, "over", moves_delta=4, outcome="won")
        s.update_game(12, "over", outcome="lost")
        s.update_game(13, "bisecting", moves_delta=2, gas_delta=7)
        s.set("last_block", 99)
        s.log_event("opened", game=10)
        s.record_withdrawal(h(0), 10**25, "game 10")
        before = (s.claims(), s.games(), s.open_games(), s.events(), s.counts())
    with NodeState(path) as s:
        assert (s.claims(), s.games(), s.open_games(), s.events(), s.counts()) == before
        assert [g.game_id for g in s.open_games()] == [11, 13]
        assert s.open_games()[1].moves == 2
        assert s.get("last_block") == 99 and s.withdrawn_total() == 10**25
        assert s.journal_mode == "wal"
    # Another client sees WAL mode in the file itself.
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()


def test_newer_schema_and_non_database_refused(tmp_path):
    path = tmp_path / "node.sqlite"
    NodeState(path).close()
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.commit()
    raw.close()
    with pytest.raises(StateError, match="newer"):
        NodeState(path)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database, not at all" * 100)
    with pytest.raises(StateError):
        NodeState(junk)
    with pytest.raises(StateError):
        NodeState(tmp_path / "missing-dir" / "node.sqlite")


def test_closed_state_raises_state_error(tmp_path):
    s = NodeState(tmp_path / "node.sqlite")
    s.close()
    s.close()
    with pytest.raises(StateError):
        s.record_claim(h(1), "0xp", 0, "")
    with pytest.raises(StateError):
        s.claims()


def test_concurrent_writers_lose_nothing(tmp_path):
    path = tmp_path / "node.sqlite"
    shared = NodeState(path)
    separate = [NodeState(path) for _ in range(2)]  # other connections on the same file
    threads_n, per_thread = 6, 60
    errors: list[BaseException] = []

    def work(t: int) -> None:
        s = shared if t < 4 else separate[t - 4]
        try:
            for i in range(per_thread):
                k = t * 1000 + i
                assert s.record_claim(h(k), f"0xp{t}", i, "peer")
                s.set_claim_status(h(k), "valid", replay_s=0.1)
                s.log_event("checked", thread=t, i=i)
                s.set(f"thread{t}", i)
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    c = shared.counts()
    assert c["claims_seen"] == c["claims_valid"] == threads_n * per_thread
    assert len(shared.events(limit=10_000)) == threads_n * per_thread
    assert all(shared.get(f"thread{t}") == per_thread - 1 for t in range(threads_n))
    for s in [shared, *separate]:
        s.close()


CRASHING_WRITER = textwrap.dedent(
    """
    import sys
    from refute.verifier.nodestate import NodeState
    s = NodeState(sys.argv[1])
    i = 0
    while True:
        k = i.to_bytes(32, "big")
        s.record_claim(k, "0xprover", i, "peer")
        s.set_claim_status(k, "refuted", reason="r", bundle=b"x" * 4096)
        s.log_event("refuted", i=i)
        print(i, flush=True)
        i += 1
    """
)


def test_survives_sigkill_mid_write(tmp_path):
    path = tmp_path / "node.sqlite"
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHING_WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        committed = -1
        for line in proc.stdout:
            committed = int(line)
            if committed == 40:
                # A second connection reads while the writer keeps writing (WAL: no blocking).
                with NodeState(path) as reader:
                    assert reader.counts()["claims_refuted"] >= 41
            if committed >= 80:
                break
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert committed >= 80
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert raw.execute("PRAGMA foreign_key_check").fetchall() == []
    raw.close()
    with NodeState(path) as s:
        rows = sorted(s.claims(), key=lambda r: r.round)
        # The writer ran on past the last line read until the kill landed. Every claim it
        # wrote is there and whole, in order, except that the one the kill interrupted may
        # be 'seen' (its status change never committed).
        assert len(rows) >= committed + 1
        assert [r.round for r in rows] == list(range(len(rows)))
        for r in rows[:-1]:
            assert (r.status, r.bundle) == ("refuted", b"x" * 4096)
        assert (rows[-1].status, rows[-1].bundle) in (("refuted", b"x" * 4096), ("seen", None))
        assert len(s.events(limit=10_000)) >= committed + 1
        s.record_claim(h(10**6), "0xp", 0, "")  # still writable


class NodeStateMachine(RuleBasedStateMachine):
    """Random sequences of calls against a plain-Python model of the same rules."""

    HASHES = [h(i) for i in range(4)]
    GAME_IDS = [0, 1, 2]

    def __init__(self) -> None:
        super().__init__()
        self.state = NodeState(":memory:")
        self.claims: dict[bytes, dict] = {}
        self.games: dict[int, dict] = {}

    def teardown(self) -> None:
        self.state.close()

    def _unchanged(self, call) -> None:
        before = (self.state.claims(), self.state.games())
        with pytest.raises(StateError):
            call()
        assert (self.state.claims(), self.state.games()) == before

    @rule(k=st.sampled_from(HASHES), prover=st.sampled_from(["0xa", "0xb"]), rnd=st.integers(0, 3))
    def record_claim(self, k, prover, rnd):
        new = k not in self.claims
        assert self.state.record_claim(k, prover, rnd, "peer") is new
        if new:
            self.claims[k] = {"prover": prover, "round": rnd, "status": "seen", "reason": ""}

    @rule(k=st.sampled_from(HASHES), status=st.sampled_from(CLAIM_STATUSES), reason=st.text(max_size=5))
    def set_status(self, k, status, reason):
        model = self.claims.get(k)
        if model is not None and status in CLAIM_TRANSITIONS.get(model["status"], ()):
            self.state.set_claim_status(k, status, reason)
            model.update(status=status, reason=reason)
        else:
            self._unchanged(lambda: self.state.set_claim_status(k, status, reason))

    @rule(gid=st.sampled_from(GAME_IDS), k=st.sampled_from(HASHES), kind=st.sampled_from(["bisection", "sampling"]))
    def record_game(self, gid, k, kind):
        prover = self.claims[k]["prover"] if k in self.claims else "0xa"
        if gid in self.games:
            g = self.games[gid]
            if (g["claim"], g["prover"], g["kind"]) == (k, prover, kind):
                assert self.state.record_game(gid, k, prover, kind, "open") is False
            else:
                self._unchanged(lambda: self.state.record_game(gid, k, prover, kind, "open"))
        elif k not in self.claims:
            self._unchanged(lambda: self.state.record_game(gid, k, prover, kind, "open"))
        else:
            assert self.state.record_game(gid, k, prover, kind, "open") is True
            self.games[gid] = {"claim": k, "prover": prover, "kind": kind, "state": "open",
                               "outcome": None, "moves": 0, "gas": 0}

    @rule(gid=st.sampled_from(GAME_IDS), state=st.sampled_from(["a", "b"]), moves=st.integers(0, 3),
          gas=st.integers(0, 10**6), outcome=st.sampled_from([None, None, "won", "lost"]))
    def update_game(self, gid, state, moves, gas, outcome):
        g = self.games.get(gid)

        def call():
            self.state.update_game(gid, state, moves_delta=moves, gas_delta=gas, outcome=outcome)

        if g is None or g["outcome"] is not None:
            self._unchanged(call)
        else:
            call()
            g.update(state=state, outcome=outcome, moves=g["moves"] + moves, gas=g["gas"] + gas)

    @precondition(lambda self: self.games)
    @rule(data=st.data())
    def negative_delta(self, data):
        gid = data.draw(st.sampled_from(sorted(self.games)))
        self._unchanged(lambda: self.state.update_game(gid, "x", moves_delta=-1))

    @invariant()
    def db_equals_model(self):
        got = {r.claim_hash: {"prover": r.prover, "round": r.round, "status": r.status, "reason": r.reason}
               for r in self.state.claims()}
        assert got == self.claims
        games = {g.game_id: {"claim": g.claim_hash, "prover": g.prover, "kind": g.kind, "state": g.state,
                             "outcome": g.outcome, "moves": g.moves, "gas": g.gas} for g in self.state.games()}
        assert games == self.games
        assert [g.game_id for g in self.state.open_games()] == sorted(
            gid for gid, g in self.games.items() if g["outcome"] is None
        )
        c = self.state.counts()
        assert c["claims_seen"] == len(self.claims)
        assert c["games_won"] == sum(g["outcome"] == "won" for g in self.games.values())


TestNodeStateMachine = NodeStateMachine.TestCase
TestNodeStateMachine.settings = settings(max_examples=40, stateful_step_count=30)
