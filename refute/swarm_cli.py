"""``refute node``, ``refute prove --serve`` and ``refute deploy``: the swarm's processes.

A node runs until SIGINT or SIGTERM and then exits 0 after its current step;
configuration errors exit 2 with one line naming the problem.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from refute.verifier.swarm import CHAIN_TIMEOUT_S

#: Chess clock per party of ``refute deploy``'s games: an hour (the contract wants 12 s per possible move).
DEFAULT_CLOCK_S = 3_600


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("hivemind", "web3", "urllib3", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _started(line: str, env: Any) -> None:
    """Print that a node is up, with its peer id and the DHT address others join through."""
    maddrs = " ".join(str(m) for m in env.dht.get_visible_maddrs())
    print(f"{line}; peer {env.peer.peer_id}; DHT {maddrs}", flush=True)


def _deployment(path: str | None, chain: Any) -> dict[str, Any]:
    """The deployment file's contents; with none on an embedded chain, a fresh deployment."""
    from refute.verifier.swarm import read_deployment

    if path:
        return read_deployment(path)
    if chain.url is not None:
        raise ValueError("--deployment is required with --chain-url (run `refute deploy` first)")
    from refute.contracts.game import GameParams, GameSystem

    return GameSystem.deploy(chain, params=GameParams(clock=DEFAULT_CLOCK_S)).describe()


# --------------------------------------------------------------------------- refute node


def cmd_node(args: argparse.Namespace) -> int:
    from refute.verifier.config import ConfigError, config_from_args

    try:
        config = config_from_args(args)
        config.private_key()
    except ConfigError as e:
        print(f"refute node: {e}", file=sys.stderr)
        return 2
    _logging(config.log_level)
    from refute.contracts.client import Chain, ChainError
    from refute.verifier.node import NodeEnv, VerifierNode
    from refute.verifier.nodestate import NodeState
    from refute.verifier.swarm import load_model

    stop = _stop_on_signals()
    try:
        chain = Chain(config.chain_url, timeout=CHAIN_TIMEOUT_S, retry_for=config.chain_retry_s)
        deployment = _deployment(config.deployment, chain)
        env = NodeEnv.connect(chain, deployment, config.initial_peers)
    except (ChainError, ValueError) as e:
        print(f"refute node: {e}", file=sys.stderr)
        return 2
    try:
        node = VerifierNode(config, env, NodeState(config.state_path), load_model(args.model, config.backend))
    except BaseException:
        env.close()  # the DHT runs in a child process: leave nothing behind
        raise
    try:
        url = node.serve_metrics()
        _started(f"refute node: verifier {node.account} on chain {chain.chain_id}; metrics {url}/metrics, "
                 f"health {url}/health", env)
        node.run(stop)
    finally:
        node.close()
    return 0


def add_node_parser(sub: argparse._SubParsersAction) -> None:
    from refute.verifier.config import add_node_arguments
    from refute.verifier.swarm import MODELS

    p = sub.add_parser("node", help="run a verifier node: watch claims, replay, dispute, play games, withdraw",
                       description="A verifier node. Flags override REFUTE_* environment variables, which "
                       "override the TOML file given by --config. The key comes from REFUTE_KEY, "
                       "the TOML file or --key-file, never from the command line.")
    add_node_arguments(p)
    p.add_argument("--model", choices=MODELS, default="smollm2", help="the swarm's model (default smollm2)")
    p.set_defaults(func=cmd_node)


# --------------------------------------------------------------------------- refute prove --serve


def cmd_serve(args: argparse.Namespace) -> int:
    from refute.contracts.client import Chain, ChainError
    from refute.verifier.node import NodeEnv
    from refute.verifier.provernode import ProverNode, ProverSettings
    from refute.verifier.swarm import DemoSampling, load_model

    _logging(args.log_level)
    key = os.environ.get("REFUTE_PROVER_KEY")
    if args.key_file:
        try:
            key = Path(args.key_file).read_text().strip()
        except OSError as e:
            print(f"refute prove --serve: cannot read --key-file: {e.strerror or e}", file=sys.stderr)
            return 2
    if not key:
        print("refute prove --serve: no key (set REFUTE_PROVER_KEY or pass --key-file)", file=sys.stderr)
        return 2
    settings = ProverSettings(model_name=args.serve_model, peer_index=args.peer_index, rounds=args.rounds,
                              claims_per_round=args.claims_per_round, round_interval=args.round_interval,
                              stake=args.stake, cheat=args.cheat, state_dir=args.state_dir,
                              sampling=DemoSampling(max_new_tokens=args.new_tokens, temperature=args.temperature))
    if args.state_dir:
        try:
            Path(args.state_dir, "bundles").mkdir(parents=True, exist_ok=True)
        except OSError as e:
            print(f"refute prove --serve: --state-dir {args.state_dir}: {e.strerror or e}", file=sys.stderr)
            return 2
    stop = _stop_on_signals()
    try:
        chain = Chain(args.chain_url, timeout=CHAIN_TIMEOUT_S, retry_for=args.chain_retry)
        env = NodeEnv.connect(chain, _deployment(args.deployment, chain), tuple(args.initial_peers or ()))
    except (ChainError, ValueError) as e:
        print(f"refute prove --serve: {e}", file=sys.stderr)
        return 2
    try:
        node = ProverNode(env, load_model(args.serve_model, args.backend), key, settings)
        node.start()
        _started(f"refute prove --serve: prover {node.account} on chain {chain.chain_id}", env)
        node.run(stop)
    finally:
        env.close()
    return 0


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """``refute prove --serve`` flags (on the ``prove`` parser itself)."""
    from refute.verifier.cheats import SWARM_CHEATS
    from refute.verifier.swarm import MODELS

    g = p.add_argument_group("prover node (--serve)")
    g.add_argument("--serve", action="store_true", help="run a prover node instead of proving one task")
    g.add_argument("--chain-url", help="JSON-RPC URL (default: an embedded in-process chain)")
    g.add_argument("--deployment", help="deployment file written by `refute deploy` or the demo")
    g.add_argument("--initial-peers", action="append", help="hivemind multiaddr of a DHT peer (repeatable)")
    g.add_argument("--key-file", help="file holding the prover's private key (default: $REFUTE_PROVER_KEY)")
    g.add_argument("--model", dest="serve_model", choices=MODELS, default="smollm2")
    g.add_argument("--peer-index", type=int, default=0, help="which prompts this prover takes (default 0)")
    g.add_argument("--rounds", type=int, default=1)
    g.add_argument("--claims-per-round", type=int, default=1)
    g.add_argument("--round-interval", type=float, default=5.0, help="seconds between rounds")
    g.add_argument("--new-tokens", type=int, default=4, help="tokens generated per claim (default 4)")
    g.add_argument("--temperature", type=float, default=0.8)
    g.add_argument("--stake", type=int, default=3 * 10**18, help="stake to hold, in wei (default 3 ETH)")
    g.add_argument("--cheat", choices=sorted(SWARM_CHEATS), help="lie in this catalogue way (the demo's villain)")
    g.add_argument("--state-dir", help="keep bundles and chain progress in DIR, so a restart can defend earlier "
                   "claims (default: memory only)", metavar="DIR")
    g.add_argument("--serve-backend", dest="backend", choices=("reference", "triton"), default="reference")
    g.add_argument("--chain-retry", type=float, default=60.0, help="seconds to retry an unreachable chain")
    g.add_argument("--log-level", default="INFO")


# --------------------------------------------------------------------------- refute deploy


def cmd_deploy(args: argparse.Namespace) -> int:
    from refute.contracts.client import Chain, ChainError
    from refute.contracts.game import GameParams, GameSystem
    from refute.verifier.swarm import write_deployment

    try:
        chain = Chain(args.rpc_url, timeout=CHAIN_TIMEOUT_S)
        params = GameParams(clock=args.clock)
        system = GameSystem.deploy(chain, params=params, challenge_window=args.challenge_window)
    except ChainError as e:
        print(f"refute deploy: {e}", file=sys.stderr)
        return 2
    info = system.describe()
    write_deployment(args.out, info)
    for k in ("stake_manager", "registry", "games", "referee"):
        print(f"{k:<14} {info[k]}")
    print(f"wrote {args.out}")
    return 0


def add_deploy_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deploy", help="deploy the contracts to a chain and write the deployment file",
                       description="Deploy StakeManager, ClaimRegistry, Referee and DisputeGames from the "
                       "endpoint's first unlocked account.")
    p.add_argument("--rpc-url", required=True)
    p.add_argument("--out", default="deployment.json")
    p.add_argument("--clock", type=int, default=DEFAULT_CLOCK_S, help="seconds of chess clock per party")
    p.add_argument("--challenge-window", type=int, default=24 * 3600)
    p.set_defaults(func=cmd_deploy)
