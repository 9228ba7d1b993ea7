"""``refute bench``: determinism across backends and machines, and its report."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_determinism(args: argparse.Namespace) -> int:
    from refute.benchmark.determinism import SUITES, available_backends, run, write_golden

    suites = set(args.suite.split(","))
    if not suites <= set(SUITES):
        print(f"refute bench determinism: unknown suite(s) {sorted(suites - set(SUITES))}; known: {','.join(SUITES)}",
              file=sys.stderr)
        return 2
    if args.write_golden:
        digests = write_golden(Path(args.write_golden), suites)
        print(f"wrote {len(digests)} golden digests to {args.write_golden}")
        return 0
    have = available_backends()
    wanted = args.backends.split(",") if args.backends else [b for b, _ in have]
    unknown = [b for b in wanted if b not in dict(have)]
    if unknown:
        print(f"refute bench determinism: backend(s) {unknown} not available here; available: {[b for b, _ in have]}",
              file=sys.stderr)
        return 2
    only = set(args.only.split(",")) if args.only else None
    skip = set(args.skip.split(",")) if args.skip else set()
    report = run(suites, [(b, d) for b, d in have if b in wanted], time_budget_s=args.time_budget, only=only, skip=skip)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    n, bad = len(report["results"]), report["mismatches"]
    errors = f" ({report['errors']} raised)" if report["errors"] else ""
    print(f"{n - bad}/{n} cases match the golden digests{errors}" + (f"; report: {args.out}" if args.out else ""))
    return 1 if bad else 0


def cmd_compare(args: argparse.Namespace) -> int:
    from refute.benchmark.compare import ReportError, disagreements, format_matrix, load_report

    try:
        reports = [(Path(p).stem, load_report(p)) for p in args.reports]
    except ReportError as e:
        print(f"refute bench compare: {e}", file=sys.stderr)
        return 2
    print(format_matrix(reports))
    bad = disagreements(reports)
    for case, got in bad:
        print(f"DISAGREE {case}: " + ", ".join(f"{c}={d[:18]}" for c, d in got.items()))
    print(f"{len(bad)} disagreeing case(s)")
    return 1 if bad else 0


def cmd_report(args: argparse.Namespace) -> int:
    from refute.benchmark.compare import ReportError, load_report, write_report

    try:
        reports = [(Path(p).stem, load_report(p)) for p in args.reports]
    except ReportError as e:
        print(f"refute bench report: {e}", file=sys.stderr)
        return 2
    md = write_report(reports, Path(args.out_dir))
    print(f"wrote {md} (with agreement.png and speed_vs_torch.png)")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="determinism benchmark across backends and machines")
    kinds = bench.add_subparsers(dest="bench", metavar="KIND", required=True)
    d = kinds.add_parser("determinism", help="digest every operator and model on every backend; compare with the golden digests",
                         description="Exit 0 if every case matches the golden digests shipped in the package, 1 otherwise.")
    d.add_argument("--backends", help="comma-separated: reference,triton (default: every available one)")
    d.add_argument("--suite", default="ops,minilm,smollm2", help="comma-separated: ops,minilm,smollm2")
    d.add_argument("--out", help="write the JSON report here")
    d.add_argument("--only", help="comma-separated case names: run just these")
    d.add_argument("--skip", help="comma-separated case names: leave these out")
    d.add_argument("--time-budget", type=float, default=0.3, help="seconds of timing per case and side (default 0.3)")
    d.add_argument("--write-golden", metavar="PATH", help=argparse.SUPPRESS)  # maintainers: regenerate the golden file
    d.set_defaults(func=cmd_determinism)
    c = kinds.add_parser("compare", help="agreement matrix of several reports (exit 1 on any disagreement)")
    c.add_argument("reports", nargs="+")
    c.set_defaults(func=cmd_compare)
    r = kinds.add_parser("report", help="PNG plots and a Markdown report of several reports")
    r.add_argument("reports", nargs="+")
    r.add_argument("--out-dir", default="bench/results/determinism")
    r.set_defaults(func=cmd_report)
