"""``refute prove`` and ``refute check``: make a signed, traced claim; verify one.

``refute check`` exits 0 when the claim is valid, 1 when it is refuted (the
reasons are printed), 2 when the input is malformed or cannot be checked
(a clear one-line message, never a traceback).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

#: Anvil/Hardhat's well-known first development key: fine for local runs, never for a real chain.
DEV_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
EXIT_VALID, EXIT_REFUTED, EXIT_MALFORMED = 0, 1, 2


def _key(args: argparse.Namespace) -> str:
    key = args.key or os.environ.get("REFUTE_PROVER_KEY")
    if key:
        return key
    print("refute prove: no --key or REFUTE_PROVER_KEY; signing with the public development key", file=sys.stderr)
    return DEV_KEY


def _model(task_name: str, backend: str):
    from refute.run import _executor
    from refute.verifier.tasks import GENERATE

    if task_name == GENERATE:
        from refute.compute.llama import smollm2

        return smollm2(_executor(backend))
    from refute.compute.bert import minilm

    return minilm(_executor(backend))


def cmd_prove(args: argparse.Namespace) -> int:
    if args.serve:
        print("refute prove: --serve runs a prover node; it takes no MODEL", file=sys.stderr)
        return EXIT_MALFORMED
    from refute.run import prompt_ids
    from refute.verifier.prover import Prover
    from refute.verifier.tasks import EmbedTask, GenerateTask

    if args.model == "smollm2":
        from refute.compute.tokenizer import smollm2_tokenizer

        tok = smollm2_tokenizer()
        task = GenerateTask(tuple(prompt_ids(tok, args)), args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.sequence)
        seed = args.seed
    else:
        task, seed = EmbedTask(tuple(args.texts)), 0
    prover = Prover(_model(task.name, args.backend), _key(args), chain_id=args.chain_id)
    bundle = prover.prove(task, seed=seed, round=args.round, step=args.step)
    Path(args.out).write_text(bundle.to_json())
    c = bundle.claim
    print(f"claim   0x{c.hash().hex()}  ({task.name}, {len(bundle.trace)} records)")
    print(f"trace   0x{c.trace_root.hex()}")
    print(f"output  0x{c.output_digest.hex()}")
    print(f"wrote   {args.out}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from refute.verifier.prover import Bundle, BundleError, Prover
    from refute.verifier.verify import Verifier

    try:
        bundle = Bundle.from_json(Path(args.bundle).read_bytes())
    except OSError as e:
        print(f"refute check: cannot read {args.bundle}: {e.strerror or e}", file=sys.stderr)
        return EXIT_MALFORMED
    except BundleError as e:
        print(f"refute check: malformed bundle: {e}", file=sys.stderr)
        return EXIT_MALFORMED
    if args.ops < 1:
        print("refute check: --ops must be at least 1", file=sys.stderr)
        return EXIT_MALFORMED
    model = _model(bundle.task.name, args.backend)
    verifier = Verifier({bundle.task.name: model}, backend=args.backend)
    if args.mode == "full":
        verdict = verifier.full_replay(bundle)
    else:
        # Offline there is no remote prover: its tensors are regenerated here from
        # the bundle's task by the held model (a swarm verifier asks the prover).
        source = Prover(model, DEV_KEY)
        verdict = verifier.spot_replay(bundle, source, args.ops, random.SystemRandom())
    if args.json:
        print(json.dumps({"valid": verdict.valid, "checked": verdict.checked,
                          "findings": [{"kind": f.kind, "message": f.message, "record": f.record, "element": f.element}
                                       for f in verdict.findings],
                          "claim": "0x" + bundle.claim.hash().hex()}))
    else:
        print(verdict)
    return EXIT_VALID if verdict.valid else EXIT_REFUTED


def _need_model(parser: argparse.ArgumentParser) -> int:
    parser.print_usage(sys.stderr)
    print("refute prove: choose a MODEL (smollm2 or minilm), or --serve", file=sys.stderr)
    return EXIT_MALFORMED


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from refute.run import add_generation_args

    from refute.swarm_cli import add_serve_arguments, cmd_serve

    prove = sub.add_parser("prove", help="run a task and write a signed, traced claim bundle (or, with --serve, "
                           "run a prover node)",
                           description="Run a packaged model, trace every operator, sign an EIP-712 claim, write "
                           "the bundle. With --serve: a prover node that posts claim rounds, serves its data "
                           "over the swarm and defends its claims on chain.")
    add_serve_arguments(prove)
    prove.set_defaults(func=lambda a: cmd_serve(a) if a.serve else _need_model(prove))
    models = prove.add_subparsers(dest="model", metavar="MODEL")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", required=True, help="where to write the bundle (JSON)")
    common.add_argument("--backend", choices=("reference", "triton"), default="reference")
    common.add_argument("--key", help="prover's private key (hex); default $REFUTE_PROVER_KEY, else the public dev key")
    common.add_argument("--chain-id", type=int, default=31337)
    common.add_argument("--round", type=int, default=0)
    common.add_argument("--step", type=int, default=0)
    m = models.add_parser("minilm", parents=[common], help="sentence embeddings")
    m.add_argument("texts", nargs="+", metavar="TEXT")
    m.set_defaults(func=cmd_prove)
    s = models.add_parser("smollm2", parents=[common], help="text generation")
    add_generation_args(s, max_new_tokens=16)
    s.add_argument("--sequence", type=int, default=0, help="sequence id (the sampler's second key word)")
    s.set_defaults(func=cmd_prove)

    check = sub.add_parser("check", help="verify a claim bundle (exit 0 valid, 1 refuted, 2 malformed)",
                           description="Check a bundle's signature, digests and trace structure, then replay it.")
    check.add_argument("bundle")
    check.add_argument("--mode", choices=("full", "spot"), default="full")
    check.add_argument("--ops", type=int, default=16, help="segments (checkpoint to checkpoint) to replay in spot mode (default 16)")
    check.add_argument("--backend", choices=("reference", "triton"), default="reference")
    check.add_argument("--json", action="store_true", help="print one JSON object")
    check.set_defaults(func=cmd_check)
