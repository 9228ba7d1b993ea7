"""A prover node's durable state (refute.verifier.bundlestore): bundles and chain
progress survive a restart, and whatever else is in the directory is skipped
with a log line, never trusted and never fatal."""

from __future__ import annotations

import json
import logging

import pytest
from eth_account import Account

from refute.verifier.bundlestore import BundleStore
from refute.verifier.prover import Prover
from refute.verifier.swarm import load_model
from refute.verifier.tasks import GenerateTask

KEY = "0x" + "31" * 32
OTHER_KEY = "0x" + "32" * 32
ME = Account.from_key(KEY).address


@pytest.fixture(scope="module")
def bundles():
    model = load_model("tiny")
    mine = [Prover(model, KEY).prove(GenerateTask((5, 9, 11 + i), 3, temperature=2.0, sequence=i), seed=i)
            for i in range(2)]
    theirs = Prover(model, OTHER_KEY).prove(GenerateTask((7, 8), 2, temperature=2.0), seed=9)
    return mine, theirs


def test_bundles_and_progress_survive_a_new_store_object(tmp_path, bundles):
    mine, _ = bundles
    store = BundleStore(tmp_path, ME)
    assert store.load() == {} and store.scan_block() is None
    store.put(mine)
    store.set_scan_block(1234)
    again = BundleStore(tmp_path, ME)
    loaded = again.load()
    assert sorted(loaded) == sorted(b.claim.hash() for b in mine)
    for b in mine:
        assert loaded[b.claim.hash()].to_json() == b.to_json()
    assert again.scan_block() == 1234
    assert not list(tmp_path.rglob("*.tmp"))  # every write was renamed into place


def test_foreign_torn_and_misnamed_files_are_skipped_with_a_log(tmp_path, bundles, caplog):
    mine, theirs = bundles
    store = BundleStore(tmp_path, ME)
    store.put(mine[:1])
    d = tmp_path / "bundles"
    (d / f"{theirs.claim.hash().hex()}.json").write_text(theirs.to_json())  # another prover's claim
    (d / f"{'ab' * 32}.json").write_text(mine[1].to_json())  # a file named for another claim
    good = mine[0].to_json()
    (d / f"{'cd' * 32}.json").write_text(good[: len(good) // 2])  # torn
    (d / f"{'ef' * 32}.json").write_bytes(b"\xff\x00 not json")
    with caplog.at_level(logging.WARNING, logger="refute.prover"):
        loaded = store.load()
    assert list(loaded) == [mine[0].claim.hash()]
    text = caplog.text
    assert "not ours" in text and "holds claim" in text and text.count("unreadable") == 2
    assert len(list(d.glob("*.json"))) == 5  # skipped files are left for the operator


@pytest.mark.parametrize("content", [b"", b"{", b"[]", b'{"scan_block": -1}', b'{"scan_block": "7"}',
                                     b'{"scan_block": true}', b'{"other": 7}'])
def test_unreadable_progress_means_rescan(tmp_path, content, caplog):
    store = BundleStore(tmp_path, ME)
    (tmp_path / "progress.json").write_bytes(content)
    with caplog.at_level(logging.WARNING, logger="refute.prover"):
        assert store.scan_block() is None
    assert "rescanning from block 0" in caplog.text
    store.set_scan_block(5)
    assert json.loads((tmp_path / "progress.json").read_text()) == {"scan_block": 5}
    assert store.scan_block() == 5
