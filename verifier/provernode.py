"""``refute prove --serve``: a prover node.

Each round it runs its generation tasks (``swarm.round_tasks``), signs one
claim per task for the chain's ClaimRegistry, posts the round's Merkle root on
chain, announces the signed claims and its peer record on the DHT, and serves
bundles and regenerated tensors over P2P. It watches the chain for games
opened against its claims and plays the defendant's side of each to the end.

``cheat`` makes it one of the catalogue's dishonest provers
(:func:`refute.verifier.cheats.make_cheater`): the demo's villain. A cheater
plays its games like anyone else; the contract decides.

With ``state_dir`` (``refute prove --serve --state-dir DIR``) the node keeps
its bundles and its place in the chain's game logs on disk
(:class:`refute.verifier.bundlestore.BundleStore`), writing a round's bundles
before it posts the round's root; restarted on the same directory it finds the
games opened while it was down and defends them. Without it, bundles live in
memory only, and a restarted prover loses its earlier claims' games on time
(the fault tests kill a dishonest prover mid-game to show exactly that).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from eth_account import Account

from refute.compute.claims import ClaimRound, sign_claim
from refute.contracts.client import ChainError, ContractError
from refute.contracts.game import Defendant, State, take_turn
from refute.verifier import cheats
from refute.verifier.bundlestore import BundleStore
from refute.verifier.node import NodeEnv
from refute.verifier.prover import Bundle, Opened, Prover
from refute.verifier.swarm import DemoSampling, PeerDirectory, other_task, round_tasks
from refute.verifier.transport import ClaimBoard, serve_prover

__all__ = ["ProverNode", "ProverSettings"]

log = logging.getLogger("refute.prover")

#: Blocks per ``eth_getLogs`` request.
LOG_SPAN: Final = 2_000


@dataclass(frozen=True)
class ProverSettings:
    """What a prover node does: ``rounds`` rounds of ``claims_per_round`` claims,
    one round every ``round_interval`` seconds, as peer number ``peer_index``."""

    model_name: str = "smollm2"
    peer_index: int = 0
    rounds: int = 1
    claims_per_round: int = 1
    round_interval: float = 5.0
    poll_interval: float = 0.5
    stake: int = 3 * 10**18
    cheat: str | None = None
    sampling: DemoSampling = DemoSampling()
    state_dir: str | None = None


class _LockedProver:
    """The prover behind a lock: P2P handlers open tensors on worker threads while
    the main loop proves and defends (the model's executor is not thread-safe)."""

    def __init__(self, prover: Prover, lock: threading.Lock) -> None:
        self.prover, self.lock = prover, lock

    def open(self, bundle: Bundle, indices: Iterable[int]) -> dict[int, Opened]:
        with self.lock:
            return self.prover.open(bundle, indices)


class ProverNode:
    """A prover node (module docstring). :meth:`start`, then :meth:`run` or :meth:`tick`."""

    def __init__(self, env: NodeEnv, model: Any, private_key: Any, settings: ProverSettings) -> None:
        self.env, self.settings = env, settings
        self.key = private_key
        self.account = Account.from_key(private_key).address
        env.chain.add_key(private_key)
        chain_id = env.chain.chain_id
        if settings.cheat:
            self.prover = cheats.make_cheater(settings.cheat, model, private_key,
                                              other=other_task(settings.model_name, settings.sampling),
                                              chain_id=chain_id)
        else:
            self.prover = Prover(model, private_key, chain_id=chain_id)
        self._lock = threading.Lock()
        self.store = BundleStore(settings.state_dir, self.account) if settings.state_dir else None
        self.bundles: dict[bytes, Bundle] = self.store.load() if self.store else {}
        self.rounds_done = 0
        self._next_round_at = 0.0
        scan = self.store.scan_block() if self.store else None
        if scan is None:  # nothing read yet: a fresh node needs no older logs; held bundles might
            scan = 0 if self.bundles else env.chain.w3.eth.block_number
        self._scan_block = scan
        if self.bundles:
            log.info("prover %s: %d bundle(s) from %s; reading game logs from block %d", self.account,
                     len(self.bundles), settings.state_dir, scan)
        self._games: dict[int, Defendant] = {}
        self._opened_at: dict[int, int] = {}  # game id -> block of its GameOpened log
        self._cache: dict[tuple[bytes, int], Opened] = {}

    # ------------------------------------------------------------------ set-up

    def start(self) -> None:
        """Stake, announce the peer record, serve bundles and tensors."""
        dep = self.env.system.dep
        have = dep.stake_of(self.account)
        if have < self.settings.stake:
            dep.stake(self.account, self.settings.stake - have)
        PeerDirectory(self.env.dht, self.env.chain.chain_id).announce(self.key, self.env.peer.peer_id)
        self.env.loop.run(serve_prover(self.env.peer, _LockedProver(self.prover, self._lock), self.bundles))
        log.info("prover %s%s serving as %s", self.account,
                 f" (cheat: {self.settings.cheat})" if self.settings.cheat else "", self.env.peer.peer_id)

    def close(self) -> None:
        self.env.close()

    def run(self, stop: threading.Event | None = None) -> None:
        stop = stop or threading.Event()
        while not stop.is_set():
            self.tick()
            stop.wait(self.settings.poll_interval)

    def tick(self) -> None:
        for step in (self._produce, self._find_games, self._play_games, self._withdraw):
            try:
                step()
            except ContractError as e:
                log.warning("%s: %s", step.__name__.strip("_"), e)
            except ChainError as e:
                log.warning("%s: chain error (retrying next tick): %s", step.__name__.strip("_"), e)
                break
            except Exception as e:  # noqa: BLE001 (a node must outlive any one bad input)
                log.exception("%s failed: %s", step.__name__.strip("_"), e)

    # ------------------------------------------------------------------ claims

    def _next_round(self) -> int:
        """The first round with no root of ours on chain (a restart does not repost)."""
        r = self.rounds_done + 1
        while self.env.system.dep.root_of(self.account, r)[0] != bytes(32):
            r += 1
        return r

    def _produce(self) -> None:
        s = self.settings
        if self.rounds_done >= s.rounds or time.time() < self._next_round_at:
            return
        r = self._next_round()
        tasks = round_tasks(s.model_name, r, s.peer_index, s.claims_per_round, s.sampling)
        registry = self.env.system.dep.registry.address
        bundles = []
        with self._lock:
            for step, task in enumerate(tasks):
                b = self.prover.prove(task, seed=1000 * r + step, round=r, step=step)
                signed = sign_claim(b.claim, self.key, registry=registry)
                bundles.append(Bundle(signed, b.task, b.trace, b.tokens, b.embeddings))
        cr = ClaimRound([b.signed for b in bundles])
        if self.store:  # on disk before the root is on chain: no posted claim without its bundle
            self.store.put(bundles)
        for b in bundles:
            self.bundles[b.claim.hash()] = b
        self.env.system.dep.post_round(self.account, cr)
        board = ClaimBoard(self.env.dht, self.env.chain.chain_id)
        for b in bundles:
            board.announce(b.signed)
        self.rounds_done += 1
        self._next_round_at = time.time() + s.round_interval
        log.info("round %d: posted %d claim(s), root 0x%s", r, len(bundles), cr.root.hex())

    # ------------------------------------------------------------------ games

    def _find_games(self) -> None:
        games = self.env.system.games
        latest = self.env.chain.w3.eth.block_number
        while self._scan_block <= latest:
            end = min(latest, self._scan_block + LOG_SPAN - 1)
            logs = self.env.chain.logs(games.events.GameOpened, self._scan_block, end, prover=self.account)
            for ev in logs:
                gid, h = ev["args"]["gameId"], bytes(ev["args"]["claimHash"])
                bundle = self.bundles.get(h)
                if bundle is None:
                    log.warning("game %d is about claim 0x%s…, which this prover no longer holds", gid, h.hex()[:12])
                    continue
                if gid not in self._games:
                    opener = self._opener(bundle)
                    full = self.prover.full_trace(bundle)  # the game bisects full traces: one forward pass
                    self._games[gid] = Defendant(self.account, full, opener, self.prover.program_states(full, opener))
                    self._opened_at[gid] = ev["blockNumber"]
                    log.info("game %d opened against claim 0x%s… by %s", gid, h.hex()[:12], ev["args"]["challenger"])
            self._scan_block = end + 1
            self._save_progress()

    def _save_progress(self) -> None:
        """Where a restart must read game logs from: the opening block of the oldest
        game still being played (so it is found again), else the first unread block."""
        if self.store:
            self.store.set_scan_block(min(self._opened_at.values(), default=self._scan_block))

    def _opener(self, bundle: Bundle):
        h = bundle.claim.hash()

        def opened(i: int) -> Opened:
            if (h, i) not in self._cache:
                with self._lock:
                    self._cache[(h, i)] = self.prover.open(bundle, [i])[i]
            return self._cache[(h, i)]

        return opened

    def _play_games(self) -> None:
        sys = self.env.system
        for gid, defendant in list(self._games.items()):
            for _ in range(64):
                note = take_turn(sys, gid, defendant)
                if not (note.startswith("moved") or note == "timeout"):
                    break
                log.info("game %d: %s", gid, note)
            if note.startswith("stuck"):
                log.warning("game %d: %s", gid, note)
            st = sys.state(gid)
            if st in (State.DEFENDANT_WON, State.CHALLENGER_WON):
                log.info("game %d resolved: %s", gid, st.name)
                del self._games[gid]
                self._opened_at.pop(gid, None)
                self._save_progress()

    def _withdraw(self) -> None:
        sys = self.env.system
        if sys.credit_of(self.account):
            sys.withdraw(self.account)
