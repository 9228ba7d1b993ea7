"""``refute demo`` (``make demo``): the whole loop on one machine.

An embedded chain (``refute chain``'s server, or ``--rpc-url``), the contracts
deployed, three prover nodes (one of them lying in a catalogue way picked at
random) and one verifier node, each a separate ``refute`` process talking over
hivemind on 127.0.0.1. The provers post rounds of SmolLM2 generation claims;
the verifier checks them, refutes the liar on chain and plays the game to the
end; this process only sets up, watches (the chain's events and the verifier's
database) and prints. On the embedded chain a game whose defendant has stopped
moving is fast-forwarded past its clock instead of waiting it out in real time
(the demo says so when it happens).

Exit status 0 when the dishonest prover was slashed, no honest prover was, and
every claim was checked before the deadline; 1 otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from eth_account import Account
from eth_utils import keccak
from web3.logs import DISCARD

from refute.contracts.client import ChainError

__all__ = ["DemoOptions", "run_demo"]

#: Chess clock per party in the demo's games (seconds of chain time).
DEMO_CLOCK_S: Final = 3_600
#: A defendant silent this long (wall seconds) gets its clock fast-forwarded on the embedded chain.
STALL_S: Final = 20.0
ETH: Final = 10**18
PROVER_STAKE: Final = 3 * ETH
FUNDING: Final = 10 * ETH

_GAME_EVENTS: Final = ("GameOpened", "Responded", "ChildrenRevealed", "RecordRevealed", "HeaderRevealed",
                       "ChunkRevealed", "ElementFound", "ProgramOpened", "ProgramEndPosted", "ProgramHashesPosted",
                       "ProgramNarrowed", "GameResolved", "SamplingRefuted", "TemplateRefuted")


@dataclass
class DemoOptions:
    rpc_url: str | None = None
    model: str = "smollm2"
    rounds: int = 2
    cheat: str | None = None
    seed: int | None = None
    json: bool = False
    workdir: str | None = None
    provers: int = 3
    claims_per_round: int = 1
    deadline_s: float = 285.0


@dataclass
class _Peer:
    name: str
    role: str
    key: str
    honest: bool = True
    cheat: str | None = None
    proc: subprocess.Popen | None = None
    log: Path | None = None
    stake_before: int = 0
    balance_before: int = 0

    @property
    def address(self) -> str:
        return Account.from_key(self.key).address


@dataclass
class _Watch:
    """What the demo has printed so far."""

    event_id: int = 0
    block: int = 0
    last_move: dict[int, float] = field(default_factory=dict)
    games: dict[int, dict[str, Any]] = field(default_factory=dict)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _eth(wei: int) -> str:
    return f"{wei / ETH:.4f}"


class _Demo:
    def __init__(self, opts: DemoOptions) -> None:
        from refute.verifier.cheats import CATALOGUE

        self.opts = opts
        self.rng = random.Random(opts.seed)
        self.cheat = opts.cheat or self.rng.choice(sorted(CATALOGUE))
        self.villain = self.rng.randrange(opts.provers)
        self.tag = self.rng.randbytes(16)
        self.workdir = Path(opts.workdir or tempfile.mkdtemp(prefix="refute-demo-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.started = time.monotonic()
        self.quiet = opts.json
        self.watch = _Watch()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)

    def key(self, i: int) -> str:
        return "0x" + keccak(b"refute.demo" + self.tag + i.to_bytes(4, "big")).hex()

    # ------------------------------------------------------------------ set-up

    def chain_up(self, stack: ExitStack) -> None:
        from refute.contracts.client import Chain
        from refute.contracts.game import GameParams, GameSystem
        from refute.contracts.rpcserver import ChainServer
        from refute.verifier.swarm import CHAIN_TIMEOUT_S, write_deployment

        if self.opts.rpc_url is None:
            server = ChainServer().start()
            stack.callback(server.stop)
            self.url = server.url
            self.say(f"embedded chain (py-evm) serving JSON-RPC on {self.url}")
        else:
            self.url = self.opts.rpc_url
            self.say(f"using the chain at {self.url}")
        self.chain = Chain(self.url, timeout=CHAIN_TIMEOUT_S, retry_for=60.0)
        self.deployer = self.chain.accounts[0]
        self.treasury = Account.from_key(self.key(999)).address
        self.system = GameSystem.deploy(self.chain, params=GameParams(clock=DEMO_CLOCK_S), deployer=self.deployer,
                                        treasury=self.treasury, challenge_window=3600)
        self.deployment = self.workdir / "deployment.json"
        write_deployment(self.deployment, self.system.describe())
        d = self.system.describe()
        self.say(f"deployed StakeManager {d['stake_manager']}, ClaimRegistry {d['registry']}, "
                 f"DisputeGames {d['games']}, Referee {d['referee']}")

    def dht_up(self, stack: ExitStack) -> None:
        import hivemind

        self.dht = hivemind.DHT(start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"])
        stack.callback(self.dht.shutdown)
        self.initial_peers = [str(m) for m in self.dht.get_visible_maddrs()]
        self.say(f"DHT bootstrap peer {self.initial_peers[0]}")

    def peers_up(self, stack: ExitStack) -> None:
        from refute.verifier.cheats import SWARM_CHEATS

        o = self.opts
        self.peers: list[_Peer] = []
        for i in range(o.provers):
            bad = i == self.villain
            self.peers.append(_Peer(f"prover-{i}", "prover", self.key(i), honest=not bad,
                                    cheat=self.cheat if bad else None))
        self.verifier = _Peer("verifier", "verifier", self.key(100))
        self.peers.append(self.verifier)
        for p in self.peers:
            self.chain.transfer(self.deployer, p.address, FUNDING)
        stack.callback(self.stop_all)
        common = ["--chain-url", self.url, "--deployment", str(self.deployment)]
        for peer in self.initial_peers:
            common += ["--initial-peers", peer]
        self.metrics_port = _free_port()
        self.db = self.workdir / "node.sqlite"
        self.spawn(self.verifier, ["node", *common, "--model", o.model, "--state", str(self.db),
                                   "--metrics-port", str(self.metrics_port), "--poll-interval", "0.5",
                                   "--sampling-rate", "1", "--replay-mode", "full"], {"REFUTE_KEY": self.verifier.key})
        for i, p in enumerate(self.peers[:-1]):
            args = ["prove", "--serve", *common, "--model", o.model, "--peer-index", str(i),
                    "--rounds", str(o.rounds), "--claims-per-round", str(o.claims_per_round),
                    "--round-interval", "10", "--stake", str(PROVER_STAKE)]
            if p.cheat:
                args += ["--cheat", p.cheat]
            self.spawn(p, args, {"REFUTE_PROVER_KEY": p.key})
        lie = SWARM_CHEATS[self.cheat].__doc__.strip().splitlines()[0]
        self.say(f"started {o.provers} provers and 1 verifier; {self.peers[self.villain].name} is dishonest: "
                 f"{self.cheat} ({lie})")

    def spawn(self, peer: _Peer, args: list[str], env: dict[str, str]) -> None:
        peer.log = self.workdir / f"{peer.name}.log"
        out = open(peer.log, "wb")
        peer.proc = subprocess.Popen([sys.executable, "-m", "refute", *args], stdout=out, stderr=subprocess.STDOUT,
                                     env={**os.environ, **env}, start_new_session=True)
        out.close()

    def stop_all(self) -> None:
        for p in self.peers:
            if p.proc is not None and p.proc.poll() is None:
                p.proc.terminate()
        for p in self.peers:
            if p.proc is not None:
                try:
                    p.proc.wait(15)
                except subprocess.TimeoutExpired:
                    pass
                # Whatever is left of its group (a DHT child, a p2p daemon) goes too.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.proc.pid, signal.SIGKILL)
                p.proc.wait(15)

    def balances(self) -> dict[str, tuple[int, int]]:
        dep = self.system.dep
        return {p.name: (dep.stake_of(p.address), self.chain.balance(p.address)) for p in self.peers}

    # ------------------------------------------------------------------ watching

    def node_events(self) -> list[tuple[int, str, dict[str, Any]]]:
        if not self.db.exists():
            return []
        try:
            con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=2)
            try:
                rows = con.execute("SELECT id, kind, detail FROM events WHERE id > ? ORDER BY id",
                                   (self.watch.event_id,)).fetchall()
            finally:
                con.close()
        except sqlite3.Error:
            return []  # the node has not created its schema yet
        return [(i, k, json.loads(d) if d else {}) for i, k, d in rows]

    def node_counts(self) -> dict[str, int]:
        try:
            con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=2)
            try:
                rows = con.execute("SELECT status, COUNT(*) FROM claims GROUP BY status").fetchall()
                open_games = con.execute("SELECT COUNT(*) FROM games WHERE outcome IS NULL").fetchone()[0]
                given_up = con.execute("SELECT COUNT(*) FROM kv WHERE key LIKE 'undisputable:%'").fetchone()[0]
            finally:
                con.close()
        except sqlite3.Error:
            return {}
        out = dict(rows)
        out["open_games"] = open_games
        out["undisputable"] = given_up
        return out

    def name_of(self, address: str) -> str:
        for p in self.peers:
            if p.address.lower() == str(address).lower():
                return p.name
        return str(address)[:10]

    def show_node_events(self) -> None:
        for i, kind, d in self.node_events():
            self.watch.event_id = i
            claim = d.get("claim", "")[:14]
            if kind == "checked":
                verdict = d["verdict"].upper()
                self.say(f"verifier checked claim {claim}… of {self.name_of(d['prover'])}: {verdict} "
                         f"(full replay {d['replay_s']:.2f} s){'  ' + d['reason'][:100] if d.get('reason') else ''}")
            elif kind == "dispute":
                self.say(f"verifier plans a {d['one_step']} dispute of {claim}… at record {d['record']}")
            elif kind == "game_opened":
                self.say(f"verifier opened game {d['game']} against {self.name_of(d['prover'])}, pinned at "
                         f"checkpoint {d['pinned']} ({d['gas']:,} gas)")
            elif kind == "sampling_refuted":
                self.say(f"verifier refuted {claim}… in one call: a token the committed logits and seed do not "
                         f"give ({d['gas']:,} gas)")
            elif kind == "template_refuted":
                self.say(f"verifier refuted {claim}… in one call: record {d['record']} is not the model's program "
                         f"({d['gas']:,} gas)")
            elif kind in ("stuck", "dispute_rejected", "round_unavailable"):
                self.say(f"verifier: {kind}: {d}")
            elif kind == "withdrawn":
                self.say(f"verifier withdrew {_eth(int(d['wei']))} ETH from {d['source']}")

    def show_chain_events(self) -> None:
        latest = self.chain.w3.eth.block_number
        if latest < self.watch.block:
            return
        # one eth_getLogs per contract per poll (the embedded chain serves every process through one lock)
        raw = self.chain.w3.eth.get_logs({"fromBlock": self.watch.block, "toBlock": latest,
                                          "address": [self.system.games.address,
                                                      self.system.dep.stake_manager.address]})
        self.watch.block = latest + 1
        logs, slashes = [], []
        for entry in raw:
            if entry["address"] == self.system.dep.stake_manager.address:
                slashes += self.system.dep.stake_manager.events.Slashed().process_receipt(
                    {"logs": [entry]}, errors=DISCARD)
                continue
            for name in _GAME_EVENTS:
                decoded = getattr(self.system.games.events, name)().process_receipt({"logs": [entry]}, errors=DISCARD)
                if decoded:
                    logs.append((name, decoded[0]))
                    break
        logs.sort(key=lambda x: (x[1]["blockNumber"], x[1]["logIndex"]))
        for name, log in logs:
            a = log["args"]
            gid = a.get("gameId")
            if gid is not None:
                self.watch.last_move[gid] = time.monotonic()
            if name == "GameOpened":
                self.watch.games[gid] = {"prover": a["prover"], "moves": 0}
                continue  # the verifier's own event says it
            if gid in self.watch.games:
                self.watch.games[gid]["moves"] += 1
            if name == "Responded":
                self.say(f"  game {gid}: the prover answers with its full trace of records 0..{a['count'] - 1}")
            elif name == "ChildrenRevealed":
                self.say(f"  game {gid}: {self.name_of(a['party'])} reveals level {a['level']} node {a['index']}")
            elif name == "RecordRevealed":
                self.say(f"  game {gid}: the first disputed record is #{a['index']}")
            elif name == "HeaderRevealed":
                self.say(f"  game {gid}: {self.name_of(a['party'])} reveals the output tensor's header")
            elif name == "ChunkRevealed":
                self.say(f"  game {gid}: chunk {a['index']} of the output revealed")
            elif name == "ElementFound":
                self.say(f"  game {gid}: bisection done: element {a['element']} — the referee recomputes it")
            elif name == "ProgramOpened":
                self.say(f"  game {gid}: the verifier splits the element into its program of {a['steps']} steps")
            elif name == "ProgramEndPosted":
                self.say(f"  game {gid}: the prover posts the program's final state")
            elif name == "ProgramHashesPosted":
                self.say(f"  game {gid}: the prover posts state hashes cutting steps {a['lo']}..{a['hi']}")
            elif name == "ProgramNarrowed":
                self.say(f"  game {gid}: the verifier disputes steps {a['lo']}..{a['hi']}")
            elif name == "GameResolved":
                who = "the prover" if a["defendantWon"] else "the verifier"
                self.say(f"  game {gid}: RESOLVED, {who} wins ({a['reason']})")
            elif name == "SamplingRefuted":
                self.say(f"  sampling refutation of {self.name_of(a['prover'])}'s claim accepted on chain")
            elif name == "TemplateRefuted":
                self.say(f"  template refutation of {self.name_of(a['prover'])}'s record {a['index']} accepted on chain")
        for log in slashes:
            a = log["args"]
            self.say(f"  SLASHED {self.name_of(a['account'])}: {_eth(a['amount'])} ETH "
                     f"({_eth(a['toWinner'])} to {self.name_of(a['winner'])}, {_eth(a['toTreasury'])} to the treasury)")

    def fast_forward_stalled(self) -> None:
        from refute.contracts.game import DEFENDANT_STATES, FINAL_STATES

        for gid in list(self.watch.games):
            st, party, left = self.system.turn(gid)
            if st in FINAL_STATES:
                self.watch.games.pop(gid)
                continue
            quiet = time.monotonic() - self.watch.last_move.get(gid, time.monotonic())
            if st in DEFENDANT_STATES and quiet > STALL_S:
                self.say(f"  game {gid}: the prover has not moved for {quiet:.0f} s; the dev chain fast-forwards "
                         f"its clock by {left + 1} s")
                self.chain.advance_time(left + 1)
                self.watch.last_move[gid] = time.monotonic()

    def finished(self) -> bool:
        o = self.opts
        want = o.provers * o.rounds * o.claims_per_round
        c = self.node_counts()
        done = sum(c.get(s, 0) for s in ("valid", "settled", "skipped", "unavailable", "error"))
        waiting = c.get("refuted", 0) - c.get("undisputable", 0)
        return done >= want and not c.get("open_games") and waiting <= 0 and not c.get("disputed")

    def dead(self) -> list[_Peer]:
        return [p for p in self.peers if p.proc is not None and p.proc.poll() is not None]

    # ------------------------------------------------------------------ the run

    def run(self) -> int:
        o = self.opts
        with ExitStack() as stack:
            self.say(f"refute demo: {o.provers} provers, 1 verifier, model {o.model}, {o.rounds} round(s); "
                     f"logs in {self.workdir}")
            self.chain_up(stack)
            self.dht_up(stack)
            self.peers_up(stack)
            provers = [p for p in self.peers if p.role == "prover"]
            while any(self.system.dep.stake_of(p.address) < PROVER_STAKE for p in provers):
                if self.dead() or time.monotonic() - self.started > o.deadline_s:
                    break
                time.sleep(0.5)
            before = self.balances()
            self.say("provers staked " + ", ".join(f"{p.name} {_eth(before[p.name][0])} ETH" for p in provers))
            ok_deadline = False
            while time.monotonic() - self.started < o.deadline_s:
                self.show_node_events()
                try:
                    self.show_chain_events()
                    self.fast_forward_stalled()
                except ChainError:
                    pass  # the chain is busy (a one-step executing): look again on the next poll
                dead = self.dead()
                if dead:
                    for p in dead:
                        self.say(f"{p.name} exited with status {p.proc.returncode}; its log:\n"
                                 + p.log.read_text()[-3000:])
                    break
                if self.finished():
                    ok_deadline = True
                    break
                time.sleep(1.0)
            self.show_node_events()
            try:
                self.show_chain_events()
            except ChainError:
                pass
            after = self.balances()
            counts = self.node_counts()
            self.stop_all()
        return self.report(before, after, counts, ok_deadline)

    def report(self, before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]],
               counts: dict[str, int], in_time: bool) -> int:
        runtime = time.monotonic() - self.started
        rows = []
        for p in self.peers:
            (s0, b0), (s1, b1) = before[p.name], after[p.name]
            rows.append({"name": p.name, "role": p.role, "address": p.address, "honest": p.honest,
                         "cheat": p.cheat, "slashed": s1 < s0, "stake_before": s0, "stake_after": s1,
                         "balance_before": b0, "balance_after": b1})
        print()
        print(f"{'peer':<11} {'role':<9} {'honest':<7} {'slashed':<8} {'stake before':>13} {'stake after':>12} "
              f"{'balance before':>15} {'balance after':>14}")
        for r in rows:
            print(f"{r['name']:<11} {r['role']:<9} {str(r['honest']).lower():<7} {str(r['slashed']).lower():<8} "
                  f"{_eth(r['stake_before']):>13} {_eth(r['stake_after']):>12} {_eth(r['balance_before']):>15} "
                  f"{_eth(r['balance_after']):>14}")
        villain = rows[self.villain]
        honest_ok = all(not r["slashed"] for r in rows if r["honest"])
        ok = in_time and villain["slashed"] and honest_ok
        statuses = {k: v for k, v in counts.items() if k not in ("open_games", "undisputable")}
        print(f"\nclaims: {sum(statuses.values())} seen, " + ", ".join(f"{v} {k}" for k, v in sorted(statuses.items())))
        print(f"{'OK' if ok else 'FAILED'}: the dishonest prover ({villain['name']}, {self.cheat}) "
              f"{'was' if villain['slashed'] else 'was NOT'} slashed; honest provers "
              f"{'untouched' if honest_ok else 'SLASHED'}; {runtime:.0f} s"
              + ("" if in_time else " (stopped before every claim was settled)"))
        if self.opts.json:
            print(json.dumps({"ok": ok, "runtime_s": round(runtime, 1), "cheat": self.cheat, "model": self.opts.model,
                              "chain": self.url, "claims": counts, "workdir": str(self.workdir),
                              "peers": [{k: (str(v) if isinstance(v, int) and not isinstance(v, bool) else v)
                                         for k, v in r.items()} for r in rows]}))
        return 0 if ok else 1


def run_demo(opts: DemoOptions) -> int:
    """Run the demo (module docstring); its exit status."""
    from refute.verifier.swarm import MODELS

    if opts.model not in MODELS:
        raise ValueError(f"unknown model {opts.model!r}")
    if opts.rounds < 1:
        raise ValueError("--rounds must be at least 1")
    return _Demo(opts).run()
