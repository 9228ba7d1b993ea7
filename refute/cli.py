"""The ``refute`` command line: one entry point for every tool.

Subcommands import their machinery lazily so ``refute --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from refute import __version__


def _cmd_demo(args: argparse.Namespace) -> int:
    if args.numeric_core:
        from refute.numeric_demo import run_numeric_core_demo

        return run_numeric_core_demo(seed=args.seed if args.seed is not None else 0)
    from refute.demo import DemoOptions, run_demo

    return run_demo(DemoOptions(rpc_url=args.rpc_url, model=args.model, rounds=args.rounds, cheat=args.cheat,
                                seed=args.seed, json=args.json, workdir=args.workdir))


def _cmd_ptx(args: argparse.Namespace) -> int:
    import os

    if os.environ.get("TRITON_INTERPRET", "0") not in ("0", ""):
        print("refute ptx: unset TRITON_INTERPRET (or set it to 0): compiled kernels are needed", file=sys.stderr)
        return 2
    os.environ["TRITON_INTERPRET"] = "0"
    from refute.kernels.ptx import main as ptx_main

    return ptx_main()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="refute",
        description="refute: bit-exact, verifiable neural-network compute for untrusted swarms.",
    )
    parser.add_argument("--version", action="version", version=f"refute {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="the whole loop: a chain, 3 provers (one dishonest), a verifier node, a dispute, a slashing",
        description="Start an embedded chain (or use --rpc-url), deploy the contracts, start three prover "
        "nodes (one lying in a catalogue way picked at random) and a verifier node as separate processes "
        "over hivemind on 127.0.0.1, run rounds of generation, and show the checks, the dispute game move "
        "by move, the one-step decision, the slashing and the balances. With --numeric-core: the numeric "
        "core on every CPU backend, digests side by side.",
    )
    from refute.verifier.cheats import SWARM_CHEATS
    from refute.verifier.swarm import MODELS

    demo.add_argument("--rpc-url", help="use this JSON-RPC chain (anvil, hardhat) instead of the embedded one")
    demo.add_argument("--model", choices=MODELS, default="smollm2", help="the swarm's model (default smollm2)")
    demo.add_argument("--rounds", type=int, default=2, help="rounds of claims per prover (default 2)")
    demo.add_argument("--cheat", choices=sorted(SWARM_CHEATS),
                      help="the dishonest prover's lie (default: a random catalogue entry)")
    demo.add_argument("--seed", type=int, help="seed for the random choices (default: random)")
    demo.add_argument("--json", action="store_true", help="print a JSON summary as the last line")
    demo.add_argument("--workdir", help="keep logs, keys and the node's database here (default: a temp dir)")
    demo.add_argument("--numeric-core", action="store_true",
                      help="instead: run the numeric core on every CPU backend and compare digests")
    demo.set_defaults(func=_cmd_demo)

    ptx = sub.add_parser(
        "ptx",
        help="compile every Triton kernel for sm_80/sm_90 and scan the PTX for contract violations",
        description="Ahead-of-time compile every kernel for NVIDIA sm_80 and sm_90 (no GPU needed) and "
        "flag FMA contraction, approximate division/sqrt/transcendentals, flush-to-zero and float atomics.",
    )
    ptx.set_defaults(func=_cmd_ptx)

    from refute.run import add_parser as add_run_parser

    add_run_parser(sub)
    from refute.prove import add_parsers as add_prove_parsers

    add_prove_parsers(sub)
    from refute.benchmark.cli import add_parser as add_bench_parser

    add_bench_parser(sub)
    from refute.swarm_cli import add_deploy_parser, add_node_parser

    add_node_parser(sub)
    add_deploy_parser(sub)
    from refute.contracts.rpcserver import add_parser as add_chain_parser

    add_chain_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return int(args.func(args))
    except (ValueError, TypeError) as exc:
        print(f"refute {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
