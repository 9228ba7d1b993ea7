"""``refute run``: run a packaged model deterministically and report digests."""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch


def _executor(backend: str):
    from refute.compute.executor import Executor
    from refute.kernels.backend import interpreter_enabled

    device = "cuda" if backend == "triton" and not interpreter_enabled() else "cpu"
    return Executor(backend=backend, device=device)


def _progress(label: str, enabled: bool):
    start = time.perf_counter()

    def report(done: int, total: int) -> None:
        if enabled:
            rate = done / max(time.perf_counter() - start, 1e-9)
            end = "\n" if done == total else ""
            print(f"\r{label}: {done}/{total} ({rate:.2f}/s)", end=end, file=sys.stderr, flush=True)

    return report


def run_minilm(args: argparse.Namespace) -> int:
    from refute.compute.bert import minilm
    from refute.compute.digest import tensor_digest
    from refute.compute.tokenizer import minilm_tokenizer
    from refute.compute.weights import model_digest

    texts = list(args.texts)
    ex = _executor(args.backend)
    model = minilm(ex)
    ids, mask = minilm_tokenizer().encode_batch(texts)
    embeddings = model.embed(ids, mask).cpu()
    result = {
        "model": "minilm",
        "backend": args.backend,
        "model_digest": model_digest(model.config, model.w),
        "output_digest": tensor_digest(embeddings),
        "texts": texts,
        "token_ids": [[int(t) for t, m in zip(row, mrow) if m] for row, mrow in zip(ids.tolist(), mask.tolist())],
        "embeddings": embeddings.tolist(),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(f"model   minilm  {result['model_digest']}")
        for text, emb in zip(texts, embeddings):
            shown = " ".join(f"{v:+.4f}" for v in emb[:6].tolist())
            print(f"{text[:48]!r:<52} [{shown} ...] (384 dims, unit norm)")
        print(f"output  {result['output_digest']}")
    return 0


def run_smollm2(args: argparse.Namespace) -> int:
    from refute.compute.digest import tensor_digest
    from refute.compute.generate import SamplingParams, generate
    from refute.compute.llama import smollm2
    from refute.compute.tokenizer import smollm2_tokenizer
    from refute.compute.weights import model_digest

    params = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    tok = smollm2_tokenizer()
    ids = prompt_ids(tok, args)
    ex = _executor(args.backend)
    model = smollm2(ex)
    show = not args.json and sys.stderr.isatty() or args.progress
    (gen,) = generate(model, [ids], args.max_new_tokens, params, progress=_progress("tokens", show))
    tokens = torch.tensor(gen.token_ids, dtype=torch.int64)
    text = tok.decode(gen.token_ids)
    result = {
        "model": "smollm2",
        "backend": args.backend,
        "model_digest": model_digest(model.config, model.w),
        "output_digest": tensor_digest(tokens),
        "prompt": args.prompt,
        "prompt_ids": ids,
        "token_ids": gen.token_ids,
        "text": text,
        "sampling": {"temperature": params.temperature, "top_k": params.top_k, "top_p": params.top_p, "seed": params.seed},
    }
    if args.json:
        print(json.dumps(result))
    else:
        print(args.prompt + text)
        print(f"model   smollm2 {result['model_digest']}", file=sys.stderr)
        print(f"output  {result['output_digest']}", file=sys.stderr)
    return 0


def add_generation_args(parser: argparse.ArgumentParser, max_new_tokens: int) -> None:
    """The prompt and sampling options ``refute run smollm2`` and ``refute prove smollm2`` share."""
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    parser.add_argument("--top-k", type=int, default=0, help="0 = off")
    parser.add_argument("--top-p", type=float, default=1.0, help="1 = off")
    parser.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")


def prompt_ids(tok, args: argparse.Namespace) -> list[int]:
    """The prompt's token ids, in the chat template with ``--chat``."""
    return tok.encode_chat([{"role": "user", "content": args.prompt}]) if args.chat else tok.encode(args.prompt)


def add_parser(sub: argparse._SubParsersAction) -> None:
    run = sub.add_parser("run", help="run a packaged model deterministically", description="Run a packaged model with refute's bit-exact operators.")
    models = run.add_subparsers(dest="model", metavar="MODEL", required=True)

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--backend", choices=("reference", "triton"), default="reference", help="operator backend (default reference)")
    common.add_argument("--json", action="store_true", help="print one JSON object")

    m = models.add_parser("minilm", parents=[common], help="sentence embeddings with all-MiniLM-L6-v2")
    m.add_argument("texts", nargs="+", metavar="TEXT")
    m.set_defaults(func=run_minilm)

    s = models.add_parser("smollm2", parents=[common], help="text generation with SmolLM2-135M-Instruct")
    add_generation_args(s, max_new_tokens=32)
    s.add_argument("--progress", action="store_true", help="show progress even when not on a terminal")
    s.set_defaults(func=run_smollm2)
