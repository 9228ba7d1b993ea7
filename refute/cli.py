"""The ``refute`` command line: one entry point for every tool.

Subcommands import their machinery lazily so ``refute --help`` stays instant.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from refute import __version__


def _cmd_demo(args: argparse.Namespace) -> int:
    from refute.demo import run_numeric_core_demo

    return run_numeric_core_demo(seed=args.seed)


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
        help="run the numeric core on every CPU backend and compare output digests",
        description="Run refute's numeric core (math library, exact GEMM, exact reductions, bf16 "
        "conversion) on the reference backend and on Triton (the interpreter on a CPU), "
        "and print each output's digest side by side.",
    )
    demo.add_argument("--seed", type=int, default=0, help="seed for the demo's inputs (default 0)")
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
    __import__("refute.contracts.rpcserver", fromlist=["add_parser"]).add_parser(sub)  # refute chain
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
