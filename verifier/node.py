"""``refute node``: a verifier node.

It joins the swarm's DHT, watches the chain for claim roots, reads each
round's signed claims from the DHT, samples them (``swarm.sample_seed``),
fetches the bundles of sampled claims from their provers over P2P, replays
them, refutes on chain what does not replay (a sampling refutation in one
call, or a bisection game that it plays to the end within its clock) and
pulls what it wins.

Every step is driven by :meth:`VerifierNode.tick`, which reads its work from
:class:`~refute.verifier.nodestate.NodeState` (SQLite) and writes results back
before the next step, so a node killed at any point resumes where it stopped:
an open game is rebuilt from the stored bundle (the node's own trace is
recomputed) and played on. A failure in one step (a dead peer, a malformed
bundle, a chain that stops answering) is logged and counted; the step is
retried on a later tick or given up with a recorded reason, and the node
keeps running.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from dataclasses import dataclass
from typing import Any, Final

from eth_account import Account

from refute.compute.claims import ClaimError, ClaimRound, SignedClaim
from refute.compute.trace import Trace, prefix, record_run
from refute.contracts.client import Chain, ChainError, ContractError
from refute.contracts.game import Challenger, GameSystem, State, take_turn, trace_tree_root
from refute.verifier.config import NodeConfig
from refute.verifier.dispute import dispute, open_own, plan_dispute, template_one_step
from refute.verifier.metrics import Metrics, MetricsServer
from refute.verifier.nodestate import NodeState
from refute.verifier.prover import Bundle, BundleError, Opened, traced_forward
from refute.verifier.swarm import PeerDirectory, is_sampled, sample_seed
from refute.verifier.transport import BackgroundLoop, ClaimBoard, RemoteProver, SwarmPeer, TransportError, fetch_bundle
from refute.verifier.verify import Verifier, held_weights

__all__ = ["VerifierNode", "NodeEnv"]

log = logging.getLogger("refute.node")

#: Seconds a round's claims may take to appear in full on the DHT before the round is given up.
ROUND_WAIT_S: Final = 120.0
#: Attempts at fetching a sampled claim's bundle before it is marked unavailable.
FETCH_ATTEMPTS: Final = 5
#: Seconds per tick after which no further claim check starts: the rest wait for the next
#: tick, after this one's games have moved. A check is bounded by its fetch and open timeouts
#: (about two minutes against a peer that never answers), so provers that stall every request
#: cannot keep the node's games from moving for longer than that; without the budget, a
#: tick would check every sampled claim in turn, and a few stalling provers could run its
#: games' clocks out.
CHECK_BUDGET_S: Final = 20.0
#: Blocks per ``eth_getLogs`` request.
LOG_SPAN: Final = 2_000


@dataclass
class NodeEnv:
    """What a node talks to: the chain, the contracts, the DHT and its P2P peer."""

    chain: Chain
    system: GameSystem
    dht: Any
    loop: BackgroundLoop
    peer: SwarmPeer

    @classmethod
    def connect(cls, chain: Chain, deployment: dict[str, Any], initial_peers: tuple[str, ...]) -> NodeEnv:
        import hivemind

        system = GameSystem.attach(chain, deployment)
        dht = hivemind.DHT(initial_peers=list(initial_peers), start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"])
        loop = BackgroundLoop()
        peer = loop.run(SwarmPeer.create(dht))
        return cls(chain, system, dht, loop, peer)

    def close(self) -> None:
        try:
            self.loop.run(self.peer.p2p.shutdown(), timeout=10)
        except Exception as e:  # noqa: BLE001 (closing: report and go on)
            log.debug("p2p shutdown: %s", e)
        try:
            self.dht.shutdown()
        finally:
            self.loop.close()


@dataclass
class _Game:
    """A game this node plays: its challenger (the node's own trace and tensors)."""

    challenger: Challenger
    last_note: str = ""


class VerifierNode:
    """A verifier node (module docstring). Drive it with
    :meth:`run` (or :meth:`tick` in tests), stop with :meth:`close`."""

    def __init__(self, config: NodeConfig, env: NodeEnv, state: NodeState, model: Any, *,
                 metrics: Metrics | None = None) -> None:
        self.config, self.env, self.state = config, env, state
        self.key = config.private_key()
        self.account = Account.from_key(self.key).address
        env.chain.add_key(self.key)
        self.model = model
        self.verifier = Verifier({"smollm2.generate": model}, backend=config.backend, chain_id=env.chain.chain_id)
        self._held_roots: frozenset[bytes] | None = None  # the model's weight roots: provers need not send them
        self.board = ClaimBoard(env.dht, env.chain.chain_id)
        self.directory = PeerDirectory(env.dht, env.chain.chain_id)
        self.metrics = metrics or Metrics()
        self._register_metrics()
        self._games: dict[int, _Game] = {}
        self._fetch_failures: dict[bytes, int] = {}
        self._dispute_failures: dict[bytes, int] = {}
        self._peers: set[str] = set()  # provers whose peer record resolved when last looked up
        self._last_tick = time.time()
        self._chain_ok = True
        self._lock = threading.Lock()  # one tick at a time (the model's executor is not thread-safe)
        self.metrics_server: MetricsServer | None = None

    # ------------------------------------------------------------------ metrics and health

    def _register_metrics(self) -> None:
        m = self.metrics
        for name, text in [("claims_seen_total", "claims read from the DHT whose round root is on chain"),
                           ("claims_checked_total", "sampled claims replayed"),
                           ("claims_refuted_total", "replayed claims found wrong"),
                           ("claims_skipped_total", "claims not sampled"),
                           ("claims_unavailable_total", "sampled claims whose prover did not serve the bundle"),
                           ("games_opened_total", "dispute games opened by this node"),
                           ("games_won_total", "games this node won"),
                           ("games_lost_total", "games this node lost"),
                           ("sampling_refutations_total", "claims refuted on chain in one call (a token)"),
                           ("template_refutations_total", "claims refuted on chain in one call (a record)"),
                           ("moves_total", "game moves sent"),
                           ("withdrawn_wei_total", "wei pulled from the contracts")]:
            m.counter(name, text)
        m.counter("errors_total", "failed steps, by step (retried on a later tick)", labels=("step",))
        m.gauge("games_open", "games in progress")
        m.gauge("peers", "provers whose signed peer record resolved when last looked up")
        m.gauge("chain_ok", "1 when the last chain request succeeded")
        m.histogram("replay_seconds", "time to replay one claim", (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))

    def health(self) -> dict[str, Any]:
        age = time.time() - self._last_tick
        ok = self._chain_ok and age < max(30.0, 10 * self.config.poll_interval)
        return {"ok": ok, "account": self.account, "last_tick_s_ago": round(age, 3), "chain_ok": self._chain_ok,
                "counts": self.state.counts(), "peer_id": self.env.peer.peer_id.to_base58()}

    def serve_metrics(self) -> str:
        server = MetricsServer(self.metrics, self.health, host=self.config.metrics_host, port=self.config.metrics_port)
        server.start()
        self.metrics_server = server
        return server.url

    # ------------------------------------------------------------------ the loop

    def run(self, stop: threading.Event | None = None) -> None:
        """Tick every ``poll_interval`` seconds until ``stop`` is set."""
        stop = stop or threading.Event()
        log.info("verifier %s watching chain %d (mode %s, sampling rate %g)", self.account,
                 self.env.chain.chain_id, self.config.replay_mode, self.config.sampling_rate)
        while not stop.is_set():
            self.tick()
            stop.wait(self.config.poll_interval)

    def tick(self) -> None:
        """One pass over every kind of work; each step's failure is contained."""
        with self._lock:
            for step in (self._scan_roots, self._collect_rounds, self._check_claims, self._dispute_claims,
                         self._play_games, self._withdraw):
                try:
                    step()
                    self._chain_ok = True
                except ContractError as e:  # a revert: this step's input was wrong, the chain is fine
                    self.metrics.inc("errors_total", step=step.__name__.strip("_"))
                    log.warning("%s: %s", step.__name__.strip("_"), e)
                except ChainError as e:
                    self._chain_ok = False
                    self.metrics.inc("errors_total", step=step.__name__.strip("_"))
                    log.warning("%s: chain error (retrying next tick): %s", step.__name__.strip("_"), e)
                    break
                except Exception as e:  # noqa: BLE001 (a node must outlive any one bad input)
                    self.metrics.inc("errors_total", step=step.__name__.strip("_"))
                    log.exception("%s failed: %s", step.__name__.strip("_"), e)
            self.metrics.set("chain_ok", 1 if self._chain_ok else 0)
            self.metrics.set("games_open", len(self.state.open_games()))
            self._last_tick = time.time()

    # ------------------------------------------------------------------ claims

    def _scan_roots(self) -> None:
        """Queue every round root posted since the last scanned block."""
        reg = self.env.system.dep.registry
        latest = self.env.chain.w3.eth.block_number
        start = int(self.state.get("scan_block", 0))
        while start <= latest:
            end = min(latest, start + LOG_SPAN - 1)
            logs = self.env.chain.logs(reg.events.RootPosted, start, end)
            pending = self.state.get("pending_rounds", [])
            for ev in logs:
                a = ev["args"]
                pending.append({"prover": a["prover"], "round": int(a["round"]), "root": a["root"].hex(),
                                "count": int(a["count"]), "block": ev["blockHash"].hex(), "since": time.time()})
                log.info("round %d root of %s posted (%d claims)", a["round"], a["prover"], a["count"])
            # one transaction: the queue and the scan position move together
            self.state.set_many({"pending_rounds": pending, "scan_block": end + 1})
            start = end + 1

    def _collect_rounds(self) -> None:
        """Read each queued round's claims from the DHT; keep them once they rebuild the posted root."""
        pending = self.state.get("pending_rounds", [])
        keep = []
        for r in pending:
            claims = [s for s in self.board.fetch(r["round"]) if s.claim.prover.hex() == r["prover"][2:].lower()]
            try:
                complete = claims and len(claims) == r["count"] and ClaimRound(claims).root.hex() == r["root"]
            except ClaimError:
                complete = False
            if not complete:
                if time.time() - r["since"] > ROUND_WAIT_S:
                    self.state.log_event("round_unavailable", prover=r["prover"], round=r["round"],
                                         found=len(claims))
                    log.warning("round %d of %s: its claims never appeared on the DHT", r["round"], r["prover"])
                else:
                    keep.append(r)
                continue
            self.state.set(f"round:{r['prover']}:{r['round']}",
                           {"block": r["block"], "claims": [s.to_bytes().hex() for s in claims]})
            remote = self._remote(r["prover"])
            peer = remote.peer_id if remote is not None else None
            for s in claims:
                h = s.claim.hash()
                if self.state.record_claim(h, r["prover"], r["round"], peer.to_base58() if peer else ""):
                    self.metrics.inc("claims_seen_total")
        self.state.set("pending_rounds", keep)

    def _round_of(self, prover: str, round: int) -> list[SignedClaim]:
        stored = self.state.get(f"round:{prover}:{round}")
        return [SignedClaim.from_bytes(bytes.fromhex(x)) for x in stored["claims"]]

    def _round_block(self, prover: str, round: int) -> bytes:
        return bytes.fromhex(self.state.get(f"round:{prover}:{round}")["block"].removeprefix("0x"))

    def _signed(self, claim_hash: bytes, prover: str, round: int) -> SignedClaim:
        return next(s for s in self._round_of(prover, round) if s.claim.hash() == claim_hash)

    def _remote(self, prover: str) -> RemoteProver | None:
        pid = self.directory.lookup(prover)
        if pid is None:
            self._peers.discard(prover)
        else:
            self._peers.add(prover)
        self.metrics.set("peers", len(self._peers))
        if self._held_roots is None:
            self._held_roots = frozenset(held_weights(self.model))
        held = self._held_roots
        return None if pid is None else RemoteProver(self.env.peer, pid, self.env.loop.loop, timeout=60.0, held=held)

    def _check_claims(self) -> None:
        deadline = time.monotonic() + CHECK_BUDGET_S
        for row in self.state.claims(status="seen"):
            seed = sample_seed(self.key, row.claim_hash, self._round_block(row.prover, row.round))
            if not is_sampled(seed, self.config.sampling_rate):
                self.state.set_claim_status(row.claim_hash, "skipped", "not sampled")
                self.metrics.inc("claims_skipped_total")
                continue
            if time.monotonic() > deadline:
                log.debug("claim checks: tick budget spent; the rest wait for the next tick")
                return
            self._check_one(row, seed)

    def _check_one(self, row: Any, seed: bytes) -> None:
        h = row.claim_hash
        signed = self._signed(h, row.prover, row.round)
        remote = self._remote(row.prover)
        try:
            if remote is None:
                raise TransportError(f"no peer record for {row.prover}")
            # broken wiring is a lie to refute, not a reason to drop the bundle
            bundle = self.env.loop.run(fetch_bundle(self.env.peer, remote.peer_id, h, check_wiring=False), timeout=90)
            if bundle.signed.to_bytes() != signed.to_bytes():
                raise BundleError("the served bundle's claim is not the announced one")
            started = time.perf_counter()
            if self.config.replay_mode == "full":
                verdict = self.verifier.full_replay(bundle)
            else:  # a prover that left mid-replay is unavailable, not refuted
                verdict = self.verifier.spot_replay(bundle, remote, self.config.spot_ops, random.Random(seed),
                                                    unreachable=(TransportError, TimeoutError))
        except (TransportError, BundleError, TimeoutError) as e:
            n = self._fetch_failures[h] = self._fetch_failures.get(h, 0) + 1
            log.warning("claim 0x%s…: cannot fetch its bundle or tensors (attempt %d): %s", h.hex()[:12], n, e)
            if n >= FETCH_ATTEMPTS:
                self.state.set_claim_status(h, "unavailable", str(e))
                self.metrics.inc("claims_unavailable_total")
            return
        except Exception as e:  # noqa: BLE001 (recorded once; a claim that breaks the replay is not retried forever)
            log.exception("claim 0x%s…: the replay failed", h.hex()[:12])
            self.state.set_claim_status(h, "error", f"{type(e).__name__}: {e}"[:2000])
            self.metrics.inc("errors_total", step="replay")
            return
        took = time.perf_counter() - started
        self.metrics.observe("replay_seconds", took)
        self.metrics.inc("claims_checked_total")
        status = "valid" if verdict.valid else "refuted"
        reason = "; ".join(str(f) for f in verdict.findings)[:2000]
        self.state.set_claim_status(h, status, reason, replay_s=took, bundle=bundle.to_json().encode())
        self.state.log_event("checked", claim="0x" + h.hex(), prover=row.prover, verdict=status,
                             replay_s=round(took, 3), reason=reason[:300])
        log.info("claim 0x%s… of %s: %s in %.2f s%s", h.hex()[:12], row.prover, status.upper(), took,
                 f" ({reason[:160]})" if reason else "")
        if not verdict.valid:
            self.metrics.inc("claims_refuted_total")

    # ------------------------------------------------------------------ disputes

    def _dispute_claims(self) -> None:
        for row in self.state.claims(status="refuted"):
            if self.state.get(f"undisputable:{row.claim_hash.hex()}"):
                continue
            try:
                self._dispute_one(row)
            except ContractError as e:
                # ClaimInDispute: another challenger got there first (its game decides);
                # anything else (the window closed, the claim is not on chain) is final.
                if e.name != "ClaimInDispute":
                    self.state.set(f"undisputable:{row.claim_hash.hex()}", str(e))
                self.state.log_event("dispute_rejected", claim="0x" + row.claim_hash.hex(), error=str(e))
                log.warning("claim 0x%s…: the contract refused the dispute: %s", row.claim_hash.hex()[:12], e)
            except (ChainError, TransportError):
                raise  # the chain or a peer is down: the next tick tries again
            except Exception as e:  # noqa: BLE001 (a claim whose dispute cannot be built is given up once)
                n = self._dispute_failures[row.claim_hash] = self._dispute_failures.get(row.claim_hash, 0) + 1
                log.exception("claim 0x%s…: building the dispute failed (attempt %d)", row.claim_hash.hex()[:12], n)
                if n >= FETCH_ATTEMPTS:
                    self.state.set(f"undisputable:{row.claim_hash.hex()}", f"{type(e).__name__}: {e}")

    def _dispute_one(self, row: Any) -> None:
        h, sys = row.claim_hash, self.env.system
        open_game, slashed, _ = sys.claim_state(h)
        if slashed:
            self.state.set_claim_status(h, "disputed", "already slashed by another challenger")
            self.state.set_claim_status(h, "settled", "already slashed by another challenger")
            return
        if open_game:
            if sys.game(open_game)["challenger"] == self.account:
                # ours, opened just before a crash that lost the record of it: adopt it
                self.state.record_game(open_game, h, row.prover, "bisection", sys.state(open_game).name)
                self.state.set_claim_status(h, "disputed", f"game {open_game}")
                self.state.log_event("game_adopted", game=open_game, claim="0x" + h.hex())
            return  # otherwise someone else's game: wait for its end (a lost one reopens the claim)
        bundle = Bundle.from_json(row.bundle, check_wiring=False)
        signed = self._signed(h, row.prover, row.round)
        cr = ClaimRound(self._round_of(row.prover, row.round))
        plan = plan_dispute(bundle, self.verifier)
        self.state.log_event("dispute", claim="0x" + h.hex(), one_step=plan.kind, record=plan.index, reason=plan.note)
        log.info("claim 0x%s…: the dispute is a %s (record %s)", h.hex()[:12], plan.kind, plan.index)
        if plan.kind in ("claim", "none"):
            self.state.set(f"undisputable:{h.hex()}", plan.note or plan.kind)
            log.warning("claim 0x%s… cannot be disputed on chain: %s", h.hex()[:12], plan.note)
            return
        if plan.kind == "sampling":
            from refute.contracts.referee import sampling_evidence

            remote = self._remote(row.prover)
            d = dispute(bundle, remote if remote is not None else _Silent(), self.verifier, plan)
            if d.kind != "sampling":  # the prover did not serve its logits: try again next tick
                raise TransportError(f"the sampling one-step needs the prover's logits: {d.note}")
            tx = sys.open_sampling(self.account, signed, sampling_evidence(d.proof), claim_round=cr)
            self.state.set_claim_status(h, "disputed", f"sampling refutation, element {d.element}")
            self.state.set_claim_status(h, "settled", f"slashed by a sampling refutation (tx 0x{tx.hash.hex()})")
            self.state.log_event("sampling_refuted", claim="0x" + h.hex(), gas=tx.gas_used)
            self.metrics.inc("sampling_refutations_total")
            return
        if plan.kind == "template":
            from refute.contracts.referee import template_evidence

            evidence = template_evidence(template_one_step(bundle, self.verifier.program(bundle), plan.index))
            tx = sys.open_template(self.account, signed, plan.pin(bundle), evidence, claim_round=cr)
            self.state.set_claim_status(h, "disputed", f"template refutation, record {plan.index}")
            self.state.set_claim_status(h, "settled", f"slashed by a template refutation (tx 0x{tx.hash.hex()})")
            self.state.log_event("template_refuted", claim="0x" + h.hex(), record=plan.index, gas=tx.gas_used)
            self.metrics.inc("template_refutations_total")
            return
        tree_root = trace_tree_root(prefix(plan.full, plan.index + 1))
        gid, tx = sys.open(self.account, signed, plan.pin(bundle), tree_root, claim_round=cr)
        self.state.record_game(gid, h, row.prover, "bisection", State.AWAIT_RESPONSE.name)
        self.state.set_claim_status(h, "disputed", f"game {gid}")
        self.state.log_event("game_opened", game=gid, claim="0x" + h.hex(), prover=row.prover, gas=tx.gas_used,
                             pinned=plan.index)
        self.metrics.inc("games_opened_total")
        log.info("opened game %d against 0x%s… of %s, pinned at checkpoint %d", gid, h.hex()[:12], row.prover,
                 plan.index)

    def _own_trace(self, bundle: Bundle) -> Trace:
        trace, _ = record_run(self.model.ex, traced_forward, self.model, bundle.task, bundle.tokens)
        return trace

    # ------------------------------------------------------------------ games

    def _player(self, game: Any) -> _Game:
        if game.game_id not in self._games:
            row = self.state.claim(game.claim_hash)
            bundle = Bundle.from_json(row.bundle, check_wiring=False)
            # each record's tensors are regenerated once per game (a forward pass each)
            opened = functools.lru_cache(maxsize=None)(lambda i: open_own(self.verifier, bundle, i))
            challenger = Challenger(self.account, self._own_trace(bundle), opened, bundle.claim,
                                    self.verifier.program(bundle), bundle.task, bundle.tokens)
            self._games[game.game_id] = _Game(challenger)
        return self._games[game.game_id]

    def _play_games(self) -> None:
        for game in self.state.open_games():
            self._play_one(game)

    def _play_one(self, game: Any) -> None:
        sys, gid = self.env.system, game.game_id
        g = self._player(game)
        for _ in range(64):  # every move this node can make now, without waiting for the next tick
            note = take_turn(sys, gid, g.challenger)
            if note.startswith("moved") or note == "timeout":
                st = sys.state(gid)
                self.state.update_game(gid, st.name, moves_delta=1)
                self.state.log_event("move", game=gid, by="challenger", move=note, state=st.name)
                self.metrics.inc("moves_total")
                if note == "timeout":
                    log.info("game %d: the prover's clock ran out", gid)
                continue
            if note.startswith("stuck") and note != g.last_note:
                log.warning("game %d: %s", gid, note)
                self.state.log_event("stuck", game=gid, note=note[:300])
            g.last_note = note
            break
        st = sys.state(gid)
        if st in (State.CHALLENGER_WON, State.DEFENDANT_WON):
            won = st == State.CHALLENGER_WON
            reason = (sys.events("GameResolved", gid) or [{"reason": ""}])[-1]["reason"]
            self.state.update_game(gid, st.name, outcome="won" if won else "lost")
            if self.state.claim(game.claim_hash).status == "refuted":  # a crash came between open and this mark
                self.state.set_claim_status(game.claim_hash, "disputed", f"game {gid}")
            self.state.set_claim_status(game.claim_hash, "settled", f"game {gid}: {st.name} ({reason})")
            self.state.log_event("game_resolved", game=gid, outcome="won" if won else "lost", reason=reason)
            self.metrics.inc("games_won_total" if won else "games_lost_total")
            self._games.pop(gid, None)
            log.info("game %d resolved: %s (%s)", gid, st.name, reason)

    # ------------------------------------------------------------------ payouts

    def _withdraw(self) -> None:
        sys = self.env.system
        for source, credit, pull in (("games", sys.credit_of, sys.withdraw),
                                     ("stake_manager", sys.dep.credit_of, sys.dep.withdraw)):
            amount = credit(self.account)
            if amount:
                tx = pull(self.account)
                self.state.record_withdrawal(tx.hash, amount, source)
                self.state.log_event("withdrawn", source=source, wei=str(amount))
                self.metrics.inc("withdrawn_wei_total", amount)
                log.info("withdrew %d wei from %s", amount, source)

    def close(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.stop()
        self.env.close()
        self.state.close()


class _Silent:
    """A prover with no peer record: every open fails (the dispute says so)."""

    def open(self, bundle: Bundle, indices: Any) -> dict[int, Opened]:
        raise TransportError("the prover has no reachable peer")
