"""A prover node's durable state: its bundles and how far it has read the chain.

A prover must defend every claim it posted for as long as the claim can be
challenged, so it must still hold the claim's bundle after a crash or a
restart. A bundle is small (the signed claim, the task, the trace's records,
the tokens): activations are regenerated on demand, never stored. The store is
a directory:

* ``bundles/<claim hash>.json``: one bundle each, in the bundle JSON form
  (:meth:`refute.verifier.prover.Bundle.to_json`);
* ``progress.json``: ``{"scan_block": N}``, where a restart reads game logs
  from: the opening block of the oldest game the node is still playing, else
  the first block it has not read, so that games in play and games opened
  while it was down are all found again.

Every write goes to a temporary file that is flushed, synced and renamed over
the target (then the directory is synced), so a crash leaves the old file or
the new one, never a torn one. The node writes a round's bundles *before* it
posts the round's root: a claim on chain always has its bundle on disk.

Reading never trusts the directory: a file that does not parse, names another
claim, or holds another prover's claim is logged and skipped (left in place for
its operator), and the node carries on with the rest.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from refute.verifier.prover import Bundle, BundleError

__all__ = ["BundleStore"]

log = logging.getLogger("refute.prover")


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


class BundleStore:
    """The bundles and chain progress of the prover ``account``, under ``root``."""

    def __init__(self, root: str | os.PathLike[str], account: str) -> None:
        self.root = Path(root)
        self.account = account
        self._prover = bytes.fromhex(account.removeprefix("0x"))
        self._bundles = self.root / "bundles"
        self._progress = self.root / "progress.json"
        self._bundles.mkdir(parents=True, exist_ok=True)
        self._written_scan: int | None = None

    def put(self, bundles: Iterable[Bundle]) -> None:
        """Write ``bundles`` durably (each under its claim hash)."""
        for b in bundles:
            _write_atomic(self._bundles / f"{b.claim.hash().hex()}.json", b.to_json().encode())

    def load(self) -> dict[bytes, Bundle]:
        """Every readable bundle of this prover, by claim hash; the rest logged and skipped."""
        out: dict[bytes, Bundle] = {}
        for path in sorted(self._bundles.glob("*.json")):
            try:
                # the prover defends what it signed, even a trace no strict parser accepts
                bundle = Bundle.from_json(path.read_bytes(), check_wiring=False)
            except (OSError, BundleError, ValueError) as e:
                log.warning("bundle store: %s is unreadable, skipped: %s", path.name, e)
                continue
            h = bundle.claim.hash()
            if path.stem != h.hex():
                log.warning("bundle store: %s holds claim 0x%s, skipped", path.name, h.hex())
            elif bundle.claim.prover != self._prover:
                log.warning("bundle store: %s is prover 0x%s's claim, not ours, skipped", path.name,
                            bundle.claim.prover.hex())
            else:
                out[h] = bundle
        return out

    def scan_block(self) -> int | None:
        """Where to read game logs from, or None where none is recorded (or it is unreadable)."""
        try:
            value = json.loads(self._progress.read_bytes())["scan_block"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as e:
            log.warning("bundle store: progress.json is unreadable (%s); rescanning from block 0", e)
            return None
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            log.warning("bundle store: progress.json has scan_block %r; rescanning from block 0", value)
            return None
        return value

    def set_scan_block(self, block: int) -> None:
        """Record where a restart must read game logs from (a synced write only when it moved)."""
        if block != self._written_scan:
            _write_atomic(self._progress, json.dumps({"scan_block": block}).encode())
            self._written_scan = block
