"""The ``refute`` command line: version, help, and the numeric-core demo."""

import os
import subprocess
import sys

import refute
from refute.cli import main


def test_version_flag(capsys):
    try:
        main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert capsys.readouterr().out.strip() == f"refute {refute.__version__}"


def test_help_lists_subcommands(capsys):
    try:
        main(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "ptx", "run", "prove", "check"):
        assert command in out


def test_python_dash_m_is_the_same_program():
    proc = subprocess.run([sys.executable, "-m", "refute", "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"refute {refute.__version__}"


def test_demo_prints_matching_digests_for_both_backends():
    proc = subprocess.run([sys.executable, "-m", "refute", "demo", "--numeric-core", "--seed", "0"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = [line for line in proc.stdout.splitlines() if line.endswith((" yes", " NO"))]
    assert len(rows) >= 19
    for row in rows:
        fields = row.split()
        assert fields[-1] == "yes" and fields[-2] == fields[-3], row
    assert "all outputs bit-identical" in proc.stdout
    assert "Warning" not in proc.stderr


def test_node_and_prover_reject_bad_configuration_with_one_line():
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFUTE_")}
    bad_rate = subprocess.run([sys.executable, "-m", "refute", "node", "--sampling-rate", "2"], capture_output=True,
                              text=True, timeout=120, env={**env, "REFUTE_KEY": "0x" + "11" * 32})
    assert bad_rate.returncode == 2 and "sampling_rate" in bad_rate.stderr and "Traceback" not in bad_rate.stderr
    no_key = subprocess.run([sys.executable, "-m", "refute", "prove", "--serve"], capture_output=True, text=True,
                            timeout=120, env=env)
    assert no_key.returncode == 2 and "REFUTE_PROVER_KEY" in no_key.stderr
    no_model = subprocess.run([sys.executable, "-m", "refute", "prove"], capture_output=True, text=True, timeout=120,
                              env=env)
    assert no_model.returncode == 2 and "choose a MODEL" in no_model.stderr
