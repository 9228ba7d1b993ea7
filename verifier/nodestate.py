"""The verifier node's durable state: claims seen, games played, money withdrawn.

``refute node`` runs for days and is restarted (deploys, crashes, reboots). What
it must not forget across a restart: which claims it has already judged (so it
neither replays them again nor misses one), which dispute games it has open (so
it keeps playing them: a game left unplayed is lost on timeout, with the stake),
what it has withdrawn, and small cursors such as the last chain block scanned.
All of it lives in one SQLite file:

* **WAL journal, ``synchronous=NORMAL``**: readers never block the writer, a
  commit is one sequential append, and a process crash (as opposed to a power
  cut) loses no committed transaction.
* **One transaction per mutation**, opened with ``BEGIN IMMEDIATE`` so the
  read-check-write of a status transition cannot interleave with another
  writer, not even another process on the same file: a crash between two calls
  never leaves a half-written row, and an illegal operation changes nothing.
* **Validated inputs**: hashes are 32 bytes, statuses and game kinds are from
  fixed sets, claim statuses only move along :data:`CLAIM_TRANSITIONS`.
  Anything else is a :class:`StateError` that names the problem.
* **Derived counters**: :meth:`NodeState.counts` is computed from the tables,
  so the numbers the node exports as metrics survive restarts too.

The node calls this from its asyncio loop and from worker threads: one
connection (``check_same_thread=False``) behind a lock serialises them, which is
plenty for a node that writes a few rows per claim.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

__all__ = [
    "CLAIM_STATUSES",
    "CLAIM_TRANSITIONS",
    "GAME_KINDS",
    "GAME_OUTCOMES",
    "SCHEMA_VERSION",
    "ClaimRow",
    "EventRow",
    "GameRow",
    "NodeState",
    "StateError",
]

#: Version of the schema below, kept in SQLite's ``user_version`` header field.
#: A file written by a newer node is refused rather than misread.
SCHEMA_VERSION: Final = 1

#: Every status a claim can have.
CLAIM_STATUSES: Final = ("seen", "skipped", "valid", "refuted", "unavailable", "error", "disputed", "settled")

#: The legal status changes. A claim is ``seen`` when first recorded; the
#: node then decides it once (``skipped``: not sampled; ``unavailable``: the
#: prover did not serve the data; ``error``: the check itself failed). Only a
#: refuted claim goes on: a dispute game opened against it (``disputed``), then
#: the game is over (``settled``). All other statuses are final.
CLAIM_TRANSITIONS: Final[Mapping[str, frozenset[str]]] = {
    "seen": frozenset({"skipped", "valid", "refuted", "unavailable", "error"}),
    "refuted": frozenset({"disputed"}),
    "disputed": frozenset({"settled"}),
}

GAME_KINDS: Final = ("bisection", "sampling")
GAME_OUTCOMES: Final = ("won", "lost")

_INT64_MAX: Final = 2**63 - 1

_SCHEMA: Final = (
    """CREATE TABLE claims (
        claim_hash BLOB PRIMARY KEY CHECK (length(claim_hash) = 32),
        prover TEXT NOT NULL,
        round INTEGER NOT NULL,
        peer TEXT NOT NULL,
        status TEXT NOT NULL,
        reason TEXT NOT NULL DEFAULT '',
        bundle BLOB,
        seen_at REAL NOT NULL,
        checked_at REAL,
        replay_s REAL
    )""",
    "CREATE INDEX claims_by_status ON claims (status)",
    """CREATE TABLE games (
        game_id INTEGER PRIMARY KEY,
        claim_hash BLOB NOT NULL REFERENCES claims (claim_hash),
        prover TEXT NOT NULL,
        kind TEXT NOT NULL,
        state TEXT NOT NULL,
        opened_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        outcome TEXT,
        moves INTEGER NOT NULL DEFAULT 0,
        gas INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL
    )""",
    "CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # Wei amounts overflow SQLite's 64-bit integers: decimal text, summed in Python.
    """CREATE TABLE withdrawals (
        tx_hash BLOB PRIMARY KEY CHECK (length(tx_hash) = 32),
        amount TEXT NOT NULL,
        source TEXT NOT NULL,
        at REAL NOT NULL
    )""",
)


class StateError(ValueError):
    """A bad input, an illegal transition, or a state file this node cannot use."""


@dataclass(frozen=True)
class ClaimRow:
    """One claim as the node last recorded it."""

    claim_hash: bytes
    prover: str
    round: int
    peer: str
    status: str
    reason: str
    bundle: bytes | None  # the bundle's JSON, kept as evidence for a dispute
    seen_at: float
    checked_at: float | None  # when the status first left ``seen``
    replay_s: float | None  # how long the replay took


@dataclass(frozen=True)
class GameRow:
    """One dispute game the node plays; ``outcome is None`` while it is open."""

    game_id: int
    claim_hash: bytes
    prover: str
    kind: str
    state: str
    opened_at: float
    updated_at: float
    outcome: str | None
    moves: int
    gas: int


@dataclass(frozen=True)
class EventRow:
    """One entry of the append-only event log."""

    id: int
    at: float
    kind: str
    detail: dict[str, Any]


_CLAIM_COLUMNS: Final = "claim_hash, prover, round, peer, status, reason, bundle, seen_at, checked_at, replay_s"
_GAME_COLUMNS: Final = "game_id, claim_hash, prover, kind, state, opened_at, updated_at, outcome, moves, gas"


class NodeState:
    """The node's state in one SQLite file (or ``":memory:"`` for tests).

    ``clock`` stamps rows (``seen_at``, ``opened_at``, ...); it defaults to
    :func:`time.time`. Raises :class:`StateError` if the file cannot be opened
    as a database or was written by a newer schema.
    """

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time, busy_timeout_s: float = 10.0):
        self.path = str(path)
        self._clock = clock
        self._lock = threading.RLock()
        try:
            # timeout: the busy timeout; isolation_level=None: no implicit transactions, _tx() opens each one.
            self._conn = sqlite3.connect(
                self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise StateError(f"cannot open node state {self.path!r}: {exc}") from exc
        try:
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.execute("PRAGMA foreign_keys = ON")
            self._migrate()
        except sqlite3.Error as exc:
            self._conn.close()
            raise StateError(f"cannot use node state {self.path!r}: {exc}") from exc
        except StateError:
            self._conn.close()
            raise

    # -- lifecycle ----------------------------------------------------------

    def close(self) -> None:
        """Close the connection (idempotent). Committed data is already on disk."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> NodeState:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed whole, or rolled back whole on any exception.

        SQLite's own errors (a locked or broken file) come out as :class:`StateError`.
        """
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise StateError(f"node state {self.path!r}: {exc}") from exc

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StateError(f"node state {self.path!r}: {exc}") from exc

    def _migrate(self) -> None:
        with self._tx() as conn:
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise StateError(
                    f"node state {self.path!r} has schema version {version}, newer than this node's "
                    f"{SCHEMA_VERSION}: upgrade refute, or point the node at another state file"
                )
            if version == 0:
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @property
    def schema_version(self) -> int:
        """The schema version stored in the file."""
        return int(self._read("PRAGMA user_version")[0][0])

    @property
    def journal_mode(self) -> str:
        """SQLite's journal mode: ``'wal'`` for a file, ``'memory'`` for ``":memory:"``."""
        return str(self._read("PRAGMA journal_mode")[0][0])

    # -- claims -------------------------------------------------------------

    def record_claim(self, claim_hash: bytes, prover: str, round: int, peer: str) -> bool:
        """Record a newly seen claim with status ``seen``.

        Returns False, changing nothing, if the claim is already known: seeing a
        claim again (another peer, a rescan after restart) never overwrites it.
        """
        h = _hash32(claim_hash, "claim_hash")
        _text(prover, "prover")
        _text(peer, "peer", empty=True)
        _nonneg_int(round, "round")
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO claims (claim_hash, prover, round, peer, status, seen_at) "
                "VALUES (?, ?, ?, ?, 'seen', ?)",
                (h, prover, round, peer, self._clock()),
            )
            return cur.rowcount == 1

    def set_claim_status(
        self,
        claim_hash: bytes,
        status: str,
        reason: str = "",
        replay_s: float | None = None,
        bundle: bytes | str | None = None,
    ) -> None:
        """Move a claim to ``status`` along :data:`CLAIM_TRANSITIONS`.

        ``reason`` replaces the stored one; ``replay_s`` and ``bundle`` (the
        bundle's JSON) are stored when given and otherwise kept. The first move
        out of ``seen`` stamps ``checked_at``. An unknown claim or an illegal
        transition raises :class:`StateError` and changes nothing.
        """
        h = _hash32(claim_hash, "claim_hash")
        if status not in CLAIM_STATUSES:
            raise StateError(f"unknown claim status {status!r}; expected one of {', '.join(CLAIM_STATUSES)}")
        if not isinstance(reason, str):
            raise StateError(f"reason must be a string, got {type(reason).__name__}")
        if replay_s is not None:
            replay_s = _nonneg_float(replay_s, "replay_s")
        blob = _bundle_bytes(bundle)
        with self._tx() as conn:
            row = conn.execute("SELECT status FROM claims WHERE claim_hash = ?", (h,)).fetchone()
            if row is None:
                raise StateError(f"unknown claim 0x{h.hex()}")
            current = row[0]
            if status not in CLAIM_TRANSITIONS.get(current, frozenset()):
                allowed = sorted(CLAIM_TRANSITIONS.get(current, ()))
                raise StateError(
                    f"claim 0x{h.hex()}: illegal transition {current} -> {status}"
                    + (f" (from {current}: {', '.join(allowed)})" if allowed else f" ({current} is final)")
                )
            conn.execute(
                "UPDATE claims SET status = ?, reason = ?, "
                "replay_s = coalesce(?, replay_s), bundle = coalesce(?, bundle), "
                "checked_at = coalesce(checked_at, ?) WHERE claim_hash = ?",
                (status, reason, replay_s, blob, self._clock(), h),
            )

    def claim(self, claim_hash: bytes) -> ClaimRow | None:
        """The claim's row, or None if it was never recorded."""
        h = _hash32(claim_hash, "claim_hash")
        rows = self._read(f"SELECT {_CLAIM_COLUMNS} FROM claims WHERE claim_hash = ?", (h,))
        return _claim_row(rows[0]) if rows else None

    def claims(self, status: str | None = None) -> list[ClaimRow]:
        """All claims (or those with ``status``), oldest first."""
        if status is None:
            rows = self._read(f"SELECT {_CLAIM_COLUMNS} FROM claims ORDER BY seen_at, rowid")
        else:
            if status not in CLAIM_STATUSES:
                raise StateError(f"unknown claim status {status!r}; expected one of {', '.join(CLAIM_STATUSES)}")
            rows = self._read(
                f"SELECT {_CLAIM_COLUMNS} FROM claims WHERE status = ? ORDER BY seen_at, rowid", (status,)
            )
        return [_claim_row(r) for r in rows]

    # -- games --------------------------------------------------------------

    def record_game(self, game_id: int, claim_hash: bytes, prover: str, kind: str, state: str) -> bool:
        """Record a dispute game over a known claim; ``state`` is the game's own state name.

        Returns False, changing nothing, if the game is already recorded with
        the same claim, prover and kind (a restarted node re-reading its open
        transaction); a different game under the same id is a :class:`StateError`.
        The claim's status is not touched: move it to ``disputed`` with
        :meth:`set_claim_status`.
        """
        gid = _game_id(game_id)
        h = _hash32(claim_hash, "claim_hash")
        _text(prover, "prover")
        if kind not in GAME_KINDS:
            raise StateError(f"unknown game kind {kind!r}; expected one of {', '.join(GAME_KINDS)}")
        _text(state, "state")
        with self._tx() as conn:
            row = conn.execute("SELECT claim_hash, prover, kind FROM games WHERE game_id = ?", (gid,)).fetchone()
            if row is not None:
                if (bytes(row[0]), row[1], row[2]) == (h, prover, kind):
                    return False
                raise StateError(
                    f"game {gid} is already recorded for claim 0x{bytes(row[0]).hex()} "
                    f"(prover {row[1]}, {row[2]}), not claim 0x{h.hex()} (prover {prover}, {kind})"
                )
            if conn.execute("SELECT 1 FROM claims WHERE claim_hash = ?", (h,)).fetchone() is None:
                raise StateError(f"game {gid}: unknown claim 0x{h.hex()} (record the claim first)")
            now = self._clock()
            conn.execute(
                "INSERT INTO games (game_id, claim_hash, prover, kind, state, opened_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (gid, h, prover, kind, state, now, now),
            )
            return True

    def update_game(
        self, game_id: int, state: str, *, moves_delta: int = 0, gas_delta: int = 0, outcome: str | None = None
    ) -> None:
        """Set an open game's state, add moves and gas, and optionally finish it.

        Giving ``outcome`` (``'won'`` or ``'lost'``) closes the game; a closed
        or unknown game raises :class:`StateError` and changes nothing.
        """
        gid = _game_id(game_id)
        _text(state, "state")
        _nonneg_int(moves_delta, "moves_delta")
        _nonneg_int(gas_delta, "gas_delta")
        if outcome is not None and outcome not in GAME_OUTCOMES:
            raise StateError(f"unknown game outcome {outcome!r}; expected one of {', '.join(GAME_OUTCOMES)}")
        with self._tx() as conn:
            row = conn.execute("SELECT outcome, moves, gas FROM games WHERE game_id = ?", (gid,)).fetchone()
            if row is None:
                raise StateError(f"unknown game {gid}")
            if row[0] is not None:
                raise StateError(f"game {gid} is over ({row[0]}); it cannot be updated")
            if row[1] + moves_delta > _INT64_MAX or row[2] + gas_delta > _INT64_MAX:
                raise StateError(f"game {gid}: moves or gas would overflow")
            conn.execute(
                "UPDATE games SET state = ?, updated_at = ?, outcome = ?, moves = moves + ?, gas = gas + ? "
                "WHERE game_id = ?",
                (state, self._clock(), outcome, moves_delta, gas_delta, gid),
            )

    def game(self, game_id: int) -> GameRow | None:
        """The game's row, or None if it was never recorded."""
        rows = self._read(f"SELECT {_GAME_COLUMNS} FROM games WHERE game_id = ?", (_game_id(game_id),))
        return _game_row(rows[0]) if rows else None

    def games(self) -> list[GameRow]:
        """All games, by id."""
        return [_game_row(r) for r in self._read(f"SELECT {_GAME_COLUMNS} FROM games ORDER BY game_id")]

    def open_games(self) -> list[GameRow]:
        """Games without an outcome, by id: what a restarted node must resume playing."""
        rows = self._read(f"SELECT {_GAME_COLUMNS} FROM games WHERE outcome IS NULL ORDER BY game_id")
        return [_game_row(r) for r in rows]

    # -- events -------------------------------------------------------------

    def log_event(self, kind: str, **detail: Any) -> int:
        """Append an event (``detail`` must be JSON-able); returns its id."""
        _text(kind, "event kind")
        text = _json(detail, f"event {kind!r} detail")
        with self._tx() as conn:
            cur = conn.execute("INSERT INTO events (at, kind, detail) VALUES (?, ?, ?)", (self._clock(), kind, text))
            return int(cur.lastrowid or 0)

    def events(self, since_id: int = 0, limit: int = 1000) -> list[EventRow]:
        """Up to ``limit`` events with ``id > since_id``, oldest first (page with the last id)."""
        _nonneg_int(since_id, "since_id")
        _nonneg_int(limit, "limit")
        rows = self._read(
            "SELECT id, at, kind, detail FROM events WHERE id > ? ORDER BY id LIMIT ?", (since_id, limit)
        )
        return [EventRow(r[0], r[1], r[2], json.loads(r[3])) for r in rows]

    # -- key/value ----------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """The JSON value stored under ``key``, or ``default``."""
        _text(key, "key")
        rows = self._read("SELECT value FROM kv WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else default

    def set(self, key: str, value: Any) -> None:
        """Store a small JSON-able ``value`` under ``key`` (replacing any previous one)."""
        _text(key, "key")
        text = _json(value, f"value for key {key!r}")
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, text),
            )

    def set_many(self, values: Mapping[str, Any]) -> None:
        """Store several keys in one transaction (they change together or not at all)."""
        texts = {}
        for key, value in values.items():
            _text(key, "key")
            texts[key] = _json(value, f"value for key {key!r}")
        with self._tx() as conn:
            conn.executemany(
                "INSERT INTO kv (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                list(texts.items()),
            )

    # -- withdrawals --------------------------------------------------------

    def record_withdrawal(self, tx_hash: bytes, amount: int, source: str) -> bool:
        """Record a withdrawal of ``amount`` wei by transaction ``tx_hash``.

        Returns False, changing nothing, if that transaction is already recorded.
        """
        h = _hash32(tx_hash, "tx_hash")
        _nonneg_int(amount, "amount", limit=None)
        _text(source, "source")
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT OR IGNORE INTO withdrawals (tx_hash, amount, source, at) VALUES (?, ?, ?, ?)",
                (h, str(amount), source, self._clock()),
            )
            return cur.rowcount == 1

    def withdrawn_total(self) -> int:
        """Everything withdrawn so far, in wei."""
        return sum(int(r[0]) for r in self._read("SELECT amount FROM withdrawals"))

    # -- counters -----------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Totals for the node's metrics, derived from the tables.

        ``claims_seen`` is every claim recorded; ``claims_checked`` those
        replayed to a verdict or an attempt (not ``seen``, not ``skipped``);
        ``claims_refuted`` includes refuted claims since disputed or settled.
        """
        by_status = dict.fromkeys(CLAIM_STATUSES, 0)
        by_status.update(self._read("SELECT status, count(*) FROM claims GROUP BY status"))
        games = dict(self._read(
            "SELECT coalesce(outcome, 'open'), count(*) FROM games GROUP BY coalesce(outcome, 'open')"
        ))
        return {
            "claims_seen": sum(by_status.values()),
            "claims_checked": sum(by_status.values()) - by_status["seen"] - by_status["skipped"],
            "claims_valid": by_status["valid"],
            "claims_refuted": by_status["refuted"] + by_status["disputed"] + by_status["settled"],
            "claims_skipped": by_status["skipped"],
            "claims_unavailable": by_status["unavailable"],
            "claims_error": by_status["error"],
            "games_open": games.get("open", 0),
            "games_won": games.get("won", 0),
            "games_lost": games.get("lost", 0),
        }


# -- validation and row decoding ---------------------------------------------


def _hash32(value: object, name: str) -> bytes:
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise StateError(f"{name} must be 32 bytes, got {type(value).__name__}")
    b = bytes(value)
    if len(b) != 32:
        raise StateError(f"{name} must be 32 bytes, got {len(b)}")
    return b


def _text(value: object, name: str, *, empty: bool = False) -> None:
    if not isinstance(value, str):
        raise StateError(f"{name} must be a string, got {type(value).__name__}")
    if not empty and not value:
        raise StateError(f"{name} must not be empty")


def _nonneg_int(value: object, name: str, *, limit: int | None = _INT64_MAX) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise StateError(f"{name} must be an integer, got {type(value).__name__}")
    if value < 0 or (limit is not None and value > limit):
        raise StateError(f"{name} {value} is out of range")


def _nonneg_float(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StateError(f"{name} must be a number, got {type(value).__name__}")
    f = float(value)
    if not 0.0 <= f < float("inf"):
        raise StateError(f"{name} {value} must be a finite number >= 0")
    return f


def _game_id(value: object) -> int:
    _nonneg_int(value, "game_id")
    return value  # type: ignore[return-value]  # checked just above


def _bundle_bytes(bundle: object) -> bytes | None:
    if bundle is None:
        return None
    if isinstance(bundle, str):
        return bundle.encode()
    if isinstance(bundle, (bytes, bytearray, memoryview)):
        return bytes(bundle)
    raise StateError(f"bundle must be its JSON as str or bytes, got {type(bundle).__name__}")


def _json(value: Any, what: str) -> str:
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise StateError(f"{what} is not JSON-able: {exc}") from exc


def _claim_row(r: tuple[Any, ...]) -> ClaimRow:
    return ClaimRow(bytes(r[0]), r[1], r[2], r[3], r[4], r[5], None if r[6] is None else bytes(r[6]), r[7], r[8], r[9])


def _game_row(r: tuple[Any, ...]) -> GameRow:
    return GameRow(r[0], bytes(r[1]), r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9])
