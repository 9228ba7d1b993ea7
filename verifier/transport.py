"""The swarm's transport: signed claim announcements on hivemind's DHT, and
bundles and tensors over hivemind's P2P streams.

**Announcements.** A prover stores each signed claim (its 484-byte wire form,
``compute/claims.py``) in the DHT under key ``refute/claims/<chain id>/<round>``
with subkey ``0x<claim hash>``. :class:`ClaimBoard` reads a round back and
keeps only records that decode strictly, carry a valid signature, belong to the
round and chain asked for, and sit under their own hash; everything else is
dropped and counted in :attr:`ClaimBoard.counters`, never raised.

**Requests.** :class:`SwarmPeer` serves and calls request/response handlers
over hivemind's P2P daemon: one length-prefixed frame each way, a size limit on
both, a timeout on every call. Two handlers carry the verification data:
``refute.bundle`` (claim hash -> bundle JSON) and ``refute.open`` (claim hash
and record indices -> those records' tensors, :func:`encode_opened`).
:class:`RemoteProver` turns them into the ``open(bundle, indices)`` a spot
replay asks of a prover.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, Final

import numpy as np
import torch

from refute.compute.claims import ClaimError, SignedClaim, verify_signed_claim
from refute.compute.merkle import DTYPES
from refute.verifier.prover import Bundle, BundleError, Opened

__all__ = ["ClaimBoard", "SwarmPeer", "RemoteProver", "BackgroundLoop", "TransportError", "encode_opened", "decode_opened",
           "claims_key", "MAX_FRAME_BYTES", "MAX_OPEN_RECORDS"]

log = logging.getLogger(__name__)

#: The largest frame a peer accepts. Opening a record sends its inputs too, weights
#: included: SmolLM2's lm_head record carries its 113 MB tied embedding table, so a
#: sampling dispute's opening of the logits is a 115 MB frame (64 MiB refused it).
MAX_FRAME_BYTES: Final = 256 << 20
_HEADER: Final = 8
_TORCH_TO_NAME: Final = {d.torch_dtype: name for name, d in DTYPES.items()}


class TransportError(RuntimeError):
    """A request failed: timeout, dead peer, oversized or malformed answer."""


def claims_key(chain_id: int, round: int) -> str:
    return f"refute/claims/{chain_id}/{round}"


class ClaimBoard:
    """Signed claims of one chain on a hivemind DHT (see the module docstring)."""

    def __init__(self, dht: Any, chain_id: int) -> None:
        self.dht, self.chain_id = dht, chain_id
        self.counters: Counter[str] = Counter()

    def announce(self, signed: SignedClaim, ttl_s: float = 3600.0) -> bool:
        from hivemind.utils import get_dht_time

        c = signed.claim
        if c.chain_id != self.chain_id:
            raise ClaimError(f"claim is for chain {c.chain_id}, this board is chain {self.chain_id}")
        return bool(self.dht.store(claims_key(self.chain_id, c.round), subkey="0x" + c.hash().hex(),
                                   value=signed.to_bytes(), expiration_time=get_dht_time() + ttl_s))

    def fetch(self, round: int) -> list[SignedClaim]:
        """Every valid claim announced for ``round`` (invalid records counted and dropped)."""
        found = self.dht.get(claims_key(self.chain_id, round), latest=True)
        if found is None:
            return []
        records = found.value if isinstance(found.value, dict) else None
        if records is None:
            self.counters["malformed_key"] += 1
            return []
        out = []
        for subkey, entry in records.items():
            value = getattr(entry, "value", None)
            reason = self._invalid(subkey, value, round)
            if reason:
                self.counters[reason] += 1
                log.info("dropped a claim record under %s: %s", subkey, reason)
            else:
                out.append(SignedClaim.from_bytes(value))
                self.counters["accepted"] += 1
        return out

    def _invalid(self, subkey: Any, value: Any, round: int) -> str | None:
        if not isinstance(value, bytes):
            return "not_bytes"
        try:
            signed = SignedClaim.from_bytes(value)
        except ClaimError:
            return "malformed"
        try:
            verify_signed_claim(signed, chain_id=self.chain_id)
        except ClaimError:
            return "bad_signature"
        if signed.claim.round != round:
            return "wrong_round"
        if subkey != "0x" + signed.claim.hash().hex():
            return "wrong_subkey"
        return None


# --------------------------------------------------------------------------- tensors on the wire

MAX_OPEN_RECORDS: Final = 64
"""Most records one ``refute.open`` request may ask for (a spot replay's segments
and logits are asked for in several)."""


def encode_opened(opened: Mapping[int, Opened]) -> bytes:
    """``u64be(len(header)) || header JSON || raw tensor bytes``; the header lists,
    per record, each tensor's dtype, shape, offset and length."""
    header: dict[str, Any] = {}
    blobs, offset = [], 0
    for index, o in sorted(opened.items()):
        entry: dict[str, Any] = {"inputs": {}}
        for role, name, t in [("inputs", n, t) for n, t in o.inputs.items()] + [("output", None, o.output)]:
            t = t.detach().cpu().contiguous()
            raw = t.view(torch.uint8).numpy().tobytes() if t.numel() else b""
            meta = [_TORCH_TO_NAME[t.dtype], list(t.shape), offset, len(raw)]
            if role == "inputs":
                entry["inputs"][name] = meta
            else:
                entry["output"] = meta
            blobs.append(raw)
            offset += len(raw)
        header[str(index)] = entry
    head = json.dumps(header, separators=(",", ":")).encode()
    return len(head).to_bytes(_HEADER, "big") + head + b"".join(blobs)


def decode_opened(data: bytes) -> dict[int, Opened]:
    """Strict inverse of :func:`encode_opened`; :class:`TransportError` on anything else."""
    try:
        n = int.from_bytes(data[:_HEADER], "big")
        header = json.loads(data[_HEADER : _HEADER + n])
        body = memoryview(data)[_HEADER + n :]
        if not isinstance(header, dict):
            raise ValueError("header is not an object")

        def tensor(meta: Any) -> torch.Tensor:
            dtype, shape, off, length = meta
            d = DTYPES[dtype]
            shape = [int(s) for s in shape]
            if any(s < 0 for s in shape) or int(np.prod(shape, dtype=np.int64)) * d.itemsize != length:
                raise ValueError("shape and length disagree")
            if not 0 <= off <= off + length <= len(body):
                raise ValueError("tensor outside the payload")
            raw = bytearray(body[off : off + length])
            return torch.frombuffer(raw, dtype=torch.uint8).view(d.torch_dtype).reshape(shape) if length else \
                torch.empty(shape, dtype=d.torch_dtype)

        out = {}
        for key, entry in header.items():
            if set(entry) != {"inputs", "output"} or not isinstance(entry["inputs"], dict):
                raise ValueError("record entry malformed")
            out[int(key)] = Opened({str(k): tensor(v) for k, v in entry["inputs"].items()}, tensor(entry["output"]))
        return out
    except (ValueError, KeyError, TypeError, RuntimeError) as e:
        raise TransportError(f"malformed tensor payload: {e}") from None


# --------------------------------------------------------------------------- request/response over P2P


Handler = Callable[[bytes], Awaitable[bytes]]


class BackgroundLoop:
    """An asyncio loop on a daemon thread: hivemind's P2P is async, the nodes'
    main loops are plain threads that hand it coroutines."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="refute-p2p", daemon=True)
        self._thread.start()

    def run(self, coro: Awaitable[Any], timeout: float | None = 120.0) -> Any:
        """Run ``coro`` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


async def _read_frame(reader: asyncio.StreamReader, limit: int) -> bytes:
    n = int.from_bytes(await reader.readexactly(_HEADER), "big")
    if n > limit:
        raise TransportError(f"frame of {n} bytes exceeds the limit of {limit}")
    return await reader.readexactly(n)


async def _write_frame(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(len(data).to_bytes(_HEADER, "big") + data)
    await writer.drain()


class SwarmPeer:
    """Request/response handlers on a hivemind P2P daemon (``await SwarmPeer.create(dht)``)."""

    def __init__(self, p2p: Any) -> None:
        self.p2p = p2p
        self.counters: Counter[str] = Counter()

    @classmethod
    async def create(cls, dht: Any) -> SwarmPeer:
        return cls(await dht.replicate_p2p())

    @property
    def peer_id(self) -> Any:
        return self.p2p.peer_id

    async def serve(self, name: str, handler: Handler, *, max_request: int = 1 << 16) -> None:
        """Answer ``name`` requests with ``handler(request) -> response``; a failing
        handler answers an empty frame (the caller sees a refusal), never crashes the peer."""

        async def on_stream(info: Any, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                request = await asyncio.wait_for(_read_frame(reader, max_request), 30)
                try:
                    response = await handler(request)
                except Exception as e:  # noqa: BLE001 (a bad request must not take the peer down)
                    self.counters[f"{name}:handler_error"] += 1
                    log.warning("%s handler failed: %s: %s", name, type(e).__name__, e)
                    response = b""
                await _write_frame(writer, response)
                self.counters[f"{name}:served"] += 1
            except (TransportError, asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError) as e:
                self.counters[f"{name}:bad_request"] += 1
                log.info("%s: dropped a request: %s", name, e)
            finally:
                writer.close()

        await self.p2p.add_binary_stream_handler(name, on_stream)

    async def request(self, peer_id: Any, name: str, payload: bytes, *, timeout: float = 30.0,
                      max_response: int = MAX_FRAME_BYTES) -> bytes:
        """Send one request; the response (:class:`TransportError` on timeout, refusal or oversize)."""
        try:
            async def call() -> bytes:
                _, reader, writer = await self.p2p.call_binary_stream_handler(peer_id, name)
                try:
                    await _write_frame(writer, payload)
                    return await _read_frame(reader, max_response)
                finally:
                    writer.close()

            response = await asyncio.wait_for(call(), timeout)
        except TransportError:
            raise
        except asyncio.TimeoutError:
            raise TransportError(f"{name} to {peer_id}: no answer in {timeout} s") from None
        except Exception as e:  # the daemon reports dead peers and refused streams in several ways
            raise TransportError(f"{name} to {peer_id}: {type(e).__name__}: {e}") from None
        if not response:
            raise TransportError(f"{name} to {peer_id}: refused")
        return response


async def serve_prover(peer: SwarmPeer, prover: Any, bundles: Mapping[bytes, Bundle]) -> None:
    """Serve ``bundles`` (by claim hash) and their tensors, regenerated by ``prover``."""

    async def bundle(request: bytes) -> bytes:
        b = bundles.get(request)
        return b.to_json().encode() if b is not None else b""

    async def open_(request: bytes) -> bytes:
        o = json.loads(request)
        b = bundles.get(bytes.fromhex(o["claim"]))
        indices = [int(i) for i in o["records"]]
        held = {bytes.fromhex(h) for h in o.get("held", [])}
        if b is None or not all(0 <= i < len(b.trace) for i in indices) or len(indices) > MAX_OPEN_RECORDS:
            return b""
        opened = await asyncio.to_thread(prover.open, b, indices)
        # inputs the verifier holds itself (weights) are not sent: it checks their committed roots
        for i, got in opened.items():
            skip = {x.name for x in b.trace[i].inputs if x.root in held}
            opened[i] = Opened({n: t for n, t in got.inputs.items() if n not in skip}, got.output)
        return encode_opened(opened)

    await peer.serve("refute.bundle", bundle, max_request=32)
    await peer.serve("refute.open", open_)


class RemoteProver:
    """``open(bundle, indices)`` answered by a prover peer over the swarm (for spot replay).
    Called from a worker thread while ``loop`` runs the peer. Asks in requests of at
    most :data:`MAX_OPEN_RECORDS` records; inputs whose committed root is in ``held``
    (the verifier's own weights) are not sent, and the opened records lack them
    (:meth:`Verifier.with_held` puts them back)."""

    def __init__(self, peer: SwarmPeer, peer_id: Any, loop: asyncio.AbstractEventLoop, timeout: float = 60.0,
                 held: frozenset[bytes] = frozenset()) -> None:
        self.peer, self.peer_id, self.loop, self.timeout, self.held = peer, peer_id, loop, timeout, held

    def open(self, bundle: Bundle, indices: Iterable[int]) -> dict[int, Opened]:
        wanted, out = sorted(set(indices)), {}
        for k in range(0, len(wanted), MAX_OPEN_RECORDS):
            batch = wanted[k : k + MAX_OPEN_RECORDS]
            held = sorted({x.root.hex() for i in batch if 0 <= i < len(bundle.trace)
                           for x in bundle.trace[i].inputs if x.root in self.held})
            payload = json.dumps({"claim": bundle.claim.hash().hex(), "records": batch, "held": held}).encode()
            fut = asyncio.run_coroutine_threadsafe(
                self.peer.request(self.peer_id, "refute.open", payload, timeout=self.timeout), self.loop)
            out.update(decode_opened(fut.result(self.timeout + 5)))
        return out


async def fetch_bundle(peer: SwarmPeer, peer_id: Any, claim_hash: bytes, timeout: float = 30.0, *,
                       check_wiring: bool = True) -> Bundle:
    """The bundle of ``claim_hash`` from ``peer_id`` (``check_wiring``: see :meth:`Bundle.from_json`)."""
    data = await peer.request(peer_id, "refute.bundle", claim_hash, timeout=timeout, max_response=MAX_FRAME_BYTES)
    try:
        return Bundle.from_json(data, check_wiring=check_wiring)
    except BundleError as e:
        raise TransportError(f"malformed bundle from {peer_id}: {e}") from None
