"""``refute bench compare`` and ``refute bench report``: agreement across
machines, and the pictures and Markdown report of a set of determinism reports."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from refute.benchmark.determinism import REPORT_KIND


class ReportError(ValueError):
    """A file is not a determinism report."""


def load_report(path: str | Path) -> dict[str, Any]:
    try:
        r = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ReportError(f"{path}: {e}") from None
    if not isinstance(r, dict) or r.get("kind") != REPORT_KIND or not isinstance(r.get("results"), list):
        raise ReportError(f"{path}: not a {REPORT_KIND} report")
    for e in r["results"]:
        if not isinstance(e, dict) or not {"case", "backend", "device", "digest"} <= set(e):
            raise ReportError(f"{path}: malformed result {e!r:.80}")
    return r


def _label(report: dict[str, Any], entry: dict[str, Any], name: str) -> str:
    env = report.get("environment", {})
    gpu = (env.get("gpu") or {}).get("name") if entry["device"] == "cuda" else None
    return f"{name}:{entry['backend']}@{gpu or entry['device']}"


def matrix(reports: Sequence[tuple[str, dict[str, Any]]]) -> tuple[list[str], list[str], dict[tuple[str, str], str]]:
    """(columns: machine/backend labels, rows: cases, digest per (column, case))."""
    cells: dict[tuple[str, str], str] = {}
    columns: list[str] = []
    cases: list[str] = []
    for name, r in reports:
        for e in r["results"]:
            if e["digest"] is None:  # the case raised: listed with its error, not in the matrix
                continue
            col = _label(r, e, name)
            if col not in columns:
                columns.append(col)
            if e["case"] not in cases:
                cases.append(e["case"])
            cells[(col, e["case"])] = e["digest"]
    return columns, cases, cells


def disagreements(reports: Sequence[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, str]]]:
    """Cases whose digest is not the same in every column that ran them."""
    columns, cases, cells = matrix(reports)
    out = []
    for case in cases:
        got = {c: cells[(c, case)] for c in columns if (c, case) in cells}
        if len(set(got.values())) > 1:
            out.append((case, got))
    return out


def format_matrix(reports: Sequence[tuple[str, dict[str, Any]]]) -> str:
    columns, cases, cells = matrix(reports)
    width = max(len(c) for c in cases) + 2
    lines = ["case".ljust(width) + "  ".join(f"[{i}]" for i in range(len(columns)))]
    lines += [f"  [{i}] {c}" for i, c in enumerate(columns)]
    for case in cases:
        got = [cells.get((c, case)) for c in columns]
        majority = max(set(g for g in got if g), key=lambda d: got.count(d))
        marks = ["  - " if g is None else " ok " if g == majority else " XX " for g in got]
        lines.append(case.ljust(width) + "".join(marks))
    return "\n".join(lines)


def write_report(reports: Sequence[tuple[str, dict[str, Any]]], out_dir: Path) -> Path:
    """PNG plots (speed ratio vs torch per case; agreement matrix) and a Markdown report embedding them."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    columns, cases, cells = matrix(reports)

    fig, ax = plt.subplots(figsize=(max(6, len(columns) * 1.6), max(4, len(cases) * 0.28)))
    grid = []
    for case in cases:
        got = [cells.get((c, case)) for c in columns]
        present = [g for g in got if g]
        majority = max(set(present), key=present.count)
        grid.append([float("nan") if g is None else 1.0 if g == majority else 0.0 for g in got])
    ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(columns)), columns, rotation=30, ha="right", fontsize=7)
    ax.set_yticks(range(len(cases)), cases, fontsize=7)
    ax.set_title("digest agreement (green: same bits as the majority)")
    fig.tight_layout()
    agreement_png = out_dir / "agreement.png"
    fig.savefig(agreement_png, dpi=110)
    plt.close(fig)

    speed_rows = [(name, e) for name, r in reports for e in r["results"] if "ratio_vs_native" in e]
    speed_png = out_dir / "speed_vs_torch.png"
    if speed_rows:
        fig, ax = plt.subplots(figsize=(8, max(4, len(speed_rows) * 0.22)))
        labels = [f"{e['case']} ({_label(r, e, n)})" for n, e in speed_rows for r in [dict(reports)[n]]]
        ax.barh(range(len(speed_rows)), [e["ratio_vs_native"] for _, e in speed_rows])
        ax.set_yticks(range(len(speed_rows)), labels, fontsize=6)
        ax.set_xscale("log")
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_xlabel("refute time / torch native time (same run; log scale)")
        fig.tight_layout()
        fig.savefig(speed_png, dpi=110)
        plt.close(fig)

    bad = disagreements(reports)
    lines = ["# refute determinism report", ""]
    for name, r in reports:
        env = r.get("environment", {})
        gpu = env.get("gpu")
        lines.append(f"- **{name}**: {env.get('cpu')}, {('GPU ' + gpu['name'] + ' sm_' + gpu['capability'].replace('.', '')) if gpu else 'no GPU'}, "
                     f"torch {env.get('torch')}, triton {env.get('triton')}; {len(r['results'])} results, "
                     f"{r.get('mismatches', 0)} mismatches against the golden digests ({r.get('date')})")
    lines += ["", f"Cases: {len(cases)}; columns: {len(columns)}; disagreements: {len(bad)}.", "",
              "![agreement](agreement.png)", ""]
    if speed_rows:
        lines += ["![speed](speed_vs_torch.png)", "", "| case | backend | refute s | torch s | ratio |", "|---|---|---|---|---|"]
        for n, e in speed_rows:
            lines.append(f"| {e['case']} | {e['backend']}@{e['device']} | {e['seconds']:.2e} | {e['native_seconds']:.2e} | "
                         f"{e['ratio_vs_native']:.2f} |")
    for case, got in bad:
        lines.append(f"- **{case}** disagrees: " + ", ".join(f"{c}: {d[:14]}" for c, d in got.items()))
    for name, r in reports:
        for e in r["results"]:
            if "error" in e:
                lines.append(f"- **{e['case']}** raised on {_label(r, e, name)}: `{e['error'][:300]}`")
    md = out_dir / "report.md"
    md.write_text("\n".join(lines) + "\n")
    return md
