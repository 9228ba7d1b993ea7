"""A loopback swarm for the node tests: an embedded chain served over JSON-RPC,
the contracts, a DHT bootstrap peer, and prover and verifier nodes on the tiny
Llama, either in this process (threads) or as real ``refute`` processes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hivemind
from eth_account import Account
from eth_utils import keccak

from refute.contracts.client import Chain
from refute.contracts.game import GameParams, GameSystem
from refute.contracts.rpcserver import ChainServer
from refute.verifier.config import NodeConfig
from refute.verifier.node import NodeEnv, VerifierNode
from refute.verifier.nodestate import NodeState
from refute.verifier.provernode import ProverNode, ProverSettings
from refute.verifier.swarm import load_model, write_deployment

ETH = 10**18
PARAMS = GameParams(clock=3_600)


def key(name: str) -> str:
    return "0x" + keccak(text=f"refute.test.{name}").hex()


def address(name: str) -> str:
    return Account.from_key(key(name)).address


def wait_for(cond: Callable[[], Any], timeout: float, what: str, every: float = 0.3) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got:
            return got
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Swarm:
    """Chain server, contracts and DHT bootstrap; nodes added by the test."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.server = ChainServer().start()
        self.chain = Chain(self.server.url, retry_for=60.0)
        self.system = GameSystem.deploy(self.chain, params=PARAMS, challenge_window=3600)
        self.deployment = workdir / "deployment.json"
        write_deployment(self.deployment, self.system.describe())
        self.dht = hivemind.DHT(start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"])
        self.peers = [str(m) for m in self.dht.get_visible_maddrs()]
        self._threads: list[tuple[threading.Event, threading.Thread, Any]] = []
        self.procs: list[subprocess.Popen] = []

    def fund(self, name: str, amount: int = 10 * ETH) -> str:
        a = address(name)
        self.chain.transfer(self.chain.accounts[0], a, amount)
        return a

    # ---- in-process nodes

    def env(self) -> NodeEnv:
        return NodeEnv.connect(Chain(self.server.url, retry_for=60.0), self.system.describe(), tuple(self.peers))

    def prover(self, name: str, index: int, cheat: str | None = None, rounds: int = 1, **kw: Any) -> ProverNode:
        self.fund(name)
        settings = ProverSettings(model_name="tiny", peer_index=index, rounds=rounds, cheat=cheat, round_interval=1.0,
                                  poll_interval=0.2, **kw)
        node = ProverNode(self.env(), load_model("tiny"), key(name), settings)
        node.start()
        return self._spawn(node)

    def verifier(self, name: str, **overrides: Any) -> VerifierNode:
        self.fund(name)
        config = NodeConfig(chain_url=self.server.url, key=key(name), state_path=str(self.workdir / f"{name}.sqlite"),
                            metrics_port=0, poll_interval=0.2, **overrides)
        node = VerifierNode(config, self.env(), NodeState(config.state_path), load_model("tiny"))
        node.serve_metrics()
        return self._spawn(node)

    def _spawn(self, node: Any) -> Any:
        stop = threading.Event()
        t = threading.Thread(target=node.run, args=(stop,), daemon=True)
        t.start()
        self._threads.append((stop, t, node))
        return node

    def stop(self, node: Any) -> None:
        for stop, t, n in self._threads:
            if n is node:
                stop.set()
                t.join(60)
                n.close()
        self._threads = [x for x in self._threads if x[2] is not node]

    # ---- processes

    def spawn_process(self, name: str, command: list[str], args: list[str], env: dict[str, str]) -> subprocess.Popen:
        """``refute COMMAND --chain-url … --deployment … --initial-peers … ARGS`` with ``env``."""
        log = open(self.workdir / f"{name}.log", "ab")
        common = ["--chain-url", self.server.url, "--deployment", str(self.deployment)]
        for p in self.peers:
            common += ["--initial-peers", p]
        proc = subprocess.Popen([sys.executable, "-m", "refute", *command, *common, *args], stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for stop, t, node in self._threads:
            stop.set()
        for stop, t, node in self._threads:
            t.join(60)
            try:
                node.close()
            except Exception:  # noqa: BLE001 (teardown goes on)
                pass
        for p in self.procs:
            # The whole process group: a node's DHT is a forked child with its own
            # p2p daemon, and both outlive a node killed alone.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait(30)
        self.dht.shutdown()
        self.server.stop()
