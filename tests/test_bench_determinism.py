"""``refute bench determinism / compare / report``."""

import json

import pytest

from refute.benchmark.determinism import golden_digests
from refute.cli import main


@pytest.fixture(scope="module")
def reference_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("det") / "cpu.json"
    assert main(["bench", "determinism", "--backends", "reference", "--suite", "ops", "--out", str(out),
                 "--time-budget", "0.01"]) == 0
    return out


def test_reference_report_matches_golden_and_records_the_environment(reference_report):
    r = json.loads(reference_report.read_text())
    assert r["mismatches"] == 0 and len(r["results"]) >= 30
    assert {e["case"] for e in r["results"]} <= set(golden_digests())
    assert r["environment"]["torch"] and r["environment"]["cpu"]
    timed = [e for e in r["results"] if "ratio_vs_native" in e]
    assert timed and all(e["native_seconds"] > 0 and e["seconds"] > 0 for e in timed)


def test_compare_flags_a_corrupted_report(reference_report, tmp_path, capsys):
    assert main(["bench", "compare", str(reference_report), str(reference_report)]) == 0
    r = json.loads(reference_report.read_text())
    victim = next(e for e in r["results"] if e["case"] == "gemm_s2")
    victim["digest"] = "0x" + "00" * 32
    r["environment"]["cpu"] = "corrupted machine"
    bad = tmp_path / "corrupted.json"
    bad.write_text(json.dumps(r))
    capsys.readouterr()
    assert main(["bench", "compare", str(reference_report), str(bad)]) == 1
    out = capsys.readouterr().out
    assert "DISAGREE gemm_s2" in out and "1 disagreeing case(s)" in out


def test_a_corrupted_digest_fails_the_determinism_run(monkeypatch, capsys):
    import refute.benchmark.determinism as D

    golden = dict(golden_digests())
    golden["silu"] = "0x" + "11" * 32
    monkeypatch.setattr(D, "golden_digests", lambda: golden)
    report = D.run({"ops"}, [("reference", "cpu")], progress=lambda s: None, time_budget_s=0.0)
    bad = [e for e in report["results"] if not e["match"]]
    assert [e["case"] for e in bad] == ["silu"] and report["mismatches"] == 1
    assert bad[0]["first_difference"] is None  # our bits equal the local reference: the golden file is what is wrong


def test_report_writes_plots_and_markdown(reference_report, tmp_path):
    assert main(["bench", "report", str(reference_report), "--out-dir", str(tmp_path / "rep")]) == 0
    md = (tmp_path / "rep" / "report.md").read_text()
    for png in ("agreement.png", "speed_vs_torch.png"):
        data = (tmp_path / "rep" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and png in md


def test_bad_inputs_exit_2(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    assert main(["bench", "compare", str(tmp_path / "x.json")]) == 2
    assert main(["bench", "determinism", "--suite", "nope"]) == 2
    assert main(["bench", "determinism", "--backends", "tpu"]) == 2


@pytest.mark.slow
def test_determinism_passes_on_both_cpu_backends(tmp_path):
    """Reference on every case, the Triton interpreter on every operator case:
    each has the golden digest. (The interpreter's tiny-model cases are left to
    test_models_tiny, which asserts them equal to the reference bit for bit;
    here they would add a minute.)"""
    for backends, suites in (("reference", "ops,minilm,smollm2"), ("triton", "ops")):
        out = tmp_path / f"{backends}.json"
        assert main(["bench", "determinism", "--backends", backends, "--suite", suites, "--out", str(out),
                     "--time-budget", "0.01"]) == 0
        r = json.loads(out.read_text())
        assert {e["backend"] for e in r["results"]} == {backends} and r["mismatches"] == 0
        assert len(r["results"]) >= 20


def test_a_case_that_raises_is_recorded_and_the_run_goes_on(monkeypatch, tmp_path, capsys):
    """On a new machine one broken kernel must not hide the verdict on the others."""
    import refute.benchmark.determinism as D
    from refute.benchmark.compare import write_report

    cases = D.op_cases()

    def broken(be, dv):
        raise RuntimeError("kernel failed to compile")

    silu = next(c for c in cases if c.name == "silu")
    monkeypatch.setattr(D, "all_cases", lambda suites: [D.Case("ops", "silu", broken, silu.native)] +
                        [c for c in cases if c.name in ("add", "mul")])
    report = D.run({"ops"}, [("reference", "cpu")], progress=lambda s: None, time_budget_s=0.0, only={"silu", "add"})
    by_case = {e["case"]: e for e in report["results"]}
    assert set(by_case) == {"silu", "add"}  # mul was not selected
    assert by_case["silu"]["digest"] is None and "kernel failed to compile" in by_case["silu"]["error"]
    assert by_case["add"]["match"] and report["errors"] == 1 and report["mismatches"] == 1
    md = write_report([("m", report)], tmp_path).read_text()
    assert "**silu** raised on m:reference@cpu" in md and "disagreements: 0" in md


def test_only_and_skip_select_cases(tmp_path):
    out = tmp_path / "sel.json"
    assert main(["bench", "determinism", "--backends", "reference", "--suite", "ops", "--only", "add,mul,exp",
                 "--skip", "mul", "--out", str(out), "--time-budget", "0.0"]) == 0
    r = json.loads(out.read_text())
    assert sorted(e["case"] for e in r["results"]) == ["add", "exp"] and r["errors"] == 0
