"""``refute prove`` and ``refute check``: exit 0 valid, 1 refuted, 2 malformed."""

import base64
import json

import numpy as np
import pytest

from refute.cli import main


@pytest.fixture(scope="module")
def minilm_bundle(tmp_path_factory):
    out = tmp_path_factory.mktemp("prove") / "bundle.json"
    assert main(["prove", "minilm", "verifiers replay sampled work", "the liar is slashed", "--out", str(out),
                 "--key", "0x" + "33" * 32]) == 0
    return out


def test_check_accepts_an_honest_bundle(minilm_bundle, capsys):
    assert main(["check", str(minilm_bundle)]) == 0
    assert capsys.readouterr().out.startswith("VALID")
    assert main(["check", str(minilm_bundle), "--mode", "spot", "--ops", "5", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["valid"] and report["findings"] == []


def test_check_refutes_altered_embeddings(minilm_bundle, tmp_path, capsys):
    o = json.loads(minilm_bundle.read_text())
    e = np.frombuffer(base64.b64decode(o["embeddings"]["float32_le_base64"]), dtype="<f4").copy()
    e.view(np.uint32)[17] ^= 1
    o["embeddings"]["float32_le_base64"] = base64.b64encode(e.tobytes()).decode()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(o))
    assert main(["check", str(bad)]) == 1
    assert "REFUTED" in capsys.readouterr().out


def test_check_rejects_a_trace_that_is_not_its_root(minilm_bundle, tmp_path, capsys):
    o = json.loads(minilm_bundle.read_text())
    o["trace"]["records"][-1]["output"] = "0x" + "ab" * 32
    bad = tmp_path / "forged.json"
    bad.write_text(json.dumps(o))
    assert main(["check", str(bad)]) == 2  # the stated root no longer matches its records: malformed
    assert "malformed bundle" in capsys.readouterr().err


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"kind": "refute.bundle"}', b"\xff\xfe"])
def test_check_rejects_malformed_input_with_exit_2(tmp_path, content, capsys):
    p = tmp_path / "x.json"
    p.write_bytes(content)
    assert main(["check", str(p)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("refute check:") and "Traceback" not in err


def test_check_missing_file_and_bad_ops(tmp_path, minilm_bundle, capsys):
    assert main(["check", str(tmp_path / "nope.json")]) == 2
    assert main(["check", str(minilm_bundle), "--mode", "spot", "--ops", "0"]) == 2
    assert "--ops" in capsys.readouterr().err


@pytest.mark.slow
def test_prove_and_check_smollm2(tmp_path, capsys):
    out = tmp_path / "gen.json"
    assert main(["prove", "smollm2", "--prompt", "The capital of France is", "--max-new-tokens", "3",
                 "--temperature", "0.7", "--seed", "5", "--out", str(out), "--key", "0x" + "44" * 32]) == 0
    assert main(["check", str(out), "--mode", "spot", "--ops", "8"]) == 0
    o = json.loads(out.read_text())
    o["claim"]["seed"] = 6  # the signature no longer holds
    bad = tmp_path / "seed.json"
    bad.write_text(json.dumps(o))
    assert main(["check", str(bad)]) == 1
    assert "signature" in capsys.readouterr().out


@pytest.mark.slow
def test_a_claim_proven_on_an_h200_is_valid_on_this_cpu(capsys):
    """bench/gpu_check.sh proved a sampled SmolLM2 generation (24 tokens,
    temperature 0.8, top-k 40, top-p 0.95) with the Triton kernels on an NVIDIA
    H200. Full replay here, on the reference backend, re-derives every token and
    all 483 trace records bit for bit."""
    from pathlib import Path

    bundle = Path(__file__).parent.parent / "bench" / "results" / "gpu" / "smollm2-bundle-nvidia-h200.json"
    assert main(["check", str(bundle), "--mode", "full", "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert verdict["valid"] is True, verdict
