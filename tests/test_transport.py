"""Claims on a real hivemind DHT and bundles/tensors over its P2P streams (127.0.0.1)."""

import asyncio
import random
import threading

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_models_tiny import LLAMA, random_llama_weights

hivemind = pytest.importorskip("hivemind")

from refute.compute.claims import Claim, sign_claim  # noqa: E402
from refute.compute.executor import Executor  # noqa: E402
from refute.compute.llama import LlamaDecoder  # noqa: E402
from refute.verifier.prover import Prover  # noqa: E402
from refute.verifier.tasks import GenerateTask  # noqa: E402
from refute.verifier.transport import (  # noqa: E402
    ClaimBoard,
    RemoteProver,
    SwarmPeer,
    TransportError,
    claims_key,
    decode_opened,
    encode_opened,
    fetch_bundle,
    serve_prover,
)
from refute.verifier import transport  # noqa: E402
from refute.verifier.verify import Verifier, held_weights  # noqa: E402

KEY = "0x" + "5a" * 32
CHAIN = 31337


@pytest.fixture(scope="module")
def dhts():
    a = hivemind.DHT(start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"])
    b = hivemind.DHT(initial_peers=a.get_visible_maddrs(), start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"])
    yield a, b
    b.shutdown()
    a.shutdown()


class Loop:
    """An asyncio loop on a thread (hivemind's P2P is async; tests are not)."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro, timeout=120):
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self, *peers):
        for p in peers:
            self.run(p.p2p.shutdown())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def signed(round_, step, prover_key=KEY):
    from eth_account import Account

    c = Claim.create(chain_id=CHAIN, model_digest=bytes(32), input_digest=bytes([step]) * 32,
                     output_digest=bytes(32), trace_root=bytes([1]) * 32, seed=step, round=round_, step=step,
                     task=1, prover=Account.from_key(prover_key).address)
    return sign_claim(c, prover_key)


def test_claim_board_keeps_valid_claims_and_counts_garbage(dhts):
    a, b = dhts
    from hivemind.utils import get_dht_time

    sender, reader = ClaimBoard(a, CHAIN), ClaimBoard(b, CHAIN)
    good = [signed(7, i) for i in range(3)]
    for s in good:
        assert sender.announce(s)
    exp = get_dht_time() + 60
    key = claims_key(CHAIN, 7)
    forged = bytearray(good[0].to_bytes())
    forged[-40] ^= 1  # inside s: the signature no longer recovers to the prover
    other_round = signed(8, 0)
    a.store(key, subkey="0x" + bytes(32).hex(), value=b"\x00garbage", expiration_time=exp)
    a.store(key, subkey="0xforged", value=bytes(forged), expiration_time=exp)
    a.store(key, subkey="0x" + other_round.claim.hash().hex(), value=other_round.to_bytes(), expiration_time=exp)
    a.store(key, subkey="0xreplayed", value=good[1].to_bytes(), expiration_time=exp)
    a.store(key, subkey="0xnumber", value=12345, expiration_time=exp)
    got = reader.fetch(7)
    assert sorted(s.claim.hash() for s in got) == sorted(s.claim.hash() for s in good)
    c = reader.counters
    assert (c["malformed"], c["wrong_round"], c["wrong_subkey"], c["not_bytes"], c["accepted"]) == (1, 1, 1, 1, 3)
    assert c["bad_signature"] + c["malformed"] == 2  # a flipped s either breaks the form or the signer


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(garbage=st.binary(max_size=700), subkey=st.text(min_size=1, max_size=20))
def test_hypothesis_garbage_is_never_accepted(dhts, garbage, subkey):
    a, b = dhts
    from hivemind.utils import get_dht_time

    round_ = 1000 + random.randrange(10**6)
    a.store(claims_key(CHAIN, round_), subkey=subkey, value=garbage, expiration_time=get_dht_time() + 30)
    board = ClaimBoard(b, CHAIN)
    assert board.fetch(round_) == []
    assert board.counters["accepted"] == 0


def test_opened_tensors_round_trip_and_reject_tampering():
    import torch

    from refute.verifier.prover import Opened

    o = {3: Opened({"x": torch.randn(2, 5), "ids": torch.arange(4)}, torch.randn(2, 5).to(torch.bfloat16)),
         9: Opened({"mask": torch.ones(2, 2, dtype=torch.bool)}, torch.zeros(0, 3))}
    back = decode_opened(encode_opened(o))
    for i in o:
        for n, t in o[i].inputs.items():
            assert back[i].inputs[n].dtype == t.dtype and back[i].inputs[n].view(torch.uint8).equal(t.view(torch.uint8))
        assert back[i].output.shape == o[i].output.shape
    data = encode_opened(o)
    for bad in (data[:20], data[:-1], b"\x00" * 8, data.replace(b'"f32"', b'"f99"', 1)):
        with pytest.raises(TransportError):
            decode_opened(bad)


def test_bundles_and_spot_replay_over_p2p(dhts):
    a, b = dhts
    loop = Loop()
    model = LlamaDecoder(LLAMA, random_llama_weights(LLAMA), Executor("reference"))
    prover = Prover(model, KEY)
    bundle = prover.prove(GenerateTask((4, 8, 15), 3, temperature=1.5), seed=16)
    server, client = loop.run(SwarmPeer.create(a)), loop.run(SwarmPeer.create(b))
    loop.run(serve_prover(server, prover, {bundle.claim.hash(): bundle}))
    got = loop.run(fetch_bundle(client, server.peer_id, bundle.claim.hash()))
    assert got.to_json() == bundle.to_json()
    checker = Verifier({"smollm2.generate": LlamaDecoder(LLAMA, random_llama_weights(LLAMA), Executor("reference"))})
    remote = RemoteProver(client, server.peer_id, loop.loop)
    assert checker.spot_replay(got, remote, 4, random.Random(3)).valid
    # a verifier's weights are not sent; requests are split at MAX_OPEN_RECORDS (8 here)
    held = held_weights(checker.models["smollm2.generate"])
    lean = RemoteProver(client, server.peer_id, loop.loop, held=frozenset(held))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(transport, "MAX_OPEN_RECORDS", 8)
        raw = lean.open(got, range(len(got.trace)))
        assert checker.spot_replay(got, lean, len(checker.program(got).segments), random.Random(4)).valid
    assert sorted(raw) == list(range(len(got.trace)))
    local = prover.open(got, range(len(got.trace)))
    for i, o in raw.items():
        assert set(o.inputs) == {x.name for x in got.trace[i].inputs if x.root not in held}
        back = checker.with_held(got, {i: o})[i]
        assert set(back.inputs) == set(local[i].inputs)
        assert all(back.inputs[n].view(torch.uint8).equal(t.view(torch.uint8)) for n, t in local[i].inputs.items())
    assert any(len(o.inputs) < len(got.trace[i].inputs) for i, o in raw.items())
    # refusals and limits: unknown claim, garbage request, oversized answer
    with pytest.raises(TransportError, match="refused"):
        loop.run(fetch_bundle(client, server.peer_id, bytes(32)))
    with pytest.raises(TransportError, match="refused"):
        loop.run(client.request(server.peer_id, "refute.open", b"{not json"))
    with pytest.raises(TransportError, match="exceeds"):
        loop.run(client.request(server.peer_id, "refute.bundle", bundle.claim.hash(), max_response=100))
    assert server.counters["refute.open:handler_error"] == 1
    assert loop.run(fetch_bundle(client, server.peer_id, bundle.claim.hash())).claim == bundle.claim  # still serving
    loop.close(server, client)


def test_a_dead_peer_times_out_cleanly(dhts):
    a, _ = dhts
    loop = Loop()
    lonely = hivemind.DHT(start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"])
    gone = loop.run(SwarmPeer.create(lonely))
    gone_id = gone.peer_id
    lonely.shutdown()
    client = loop.run(SwarmPeer.create(a))
    with pytest.raises(TransportError):
        loop.run(client.request(gone_id, "refute.bundle", bytes(32), timeout=5))
    loop.close(client)
