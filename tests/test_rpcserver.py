"""The embedded JSON-RPC chain (contracts/rpcserver.py) and Chain's retries.

* ``Chain(server.url)`` deploys, stakes, posts roots, reads views, deploys the
  whole dispute system and reads game events (``eth_getLogs`` with topics);
* a revert over HTTP raises the same ContractError as on the in-process chain
  (sent transactions and views);
* ``advance_time`` (``evm_increaseTime`` + ``evm_mine``) and ``evm_mine
  [timestamp]`` move the chain clock, which then runs on from there;
* locally signed transactions from a key funded by a transfer;
* outages: a paused server (requests accepted, never answered) with
  ``retry_for``: the transaction or read started during it completes once
  it ends, exactly once, also when the node executed the first copy and only
  its answer was lost (raw and unlocked); a 30 s outage (slow);
* without retries: a paused server gives ChainTimeout, a stopped one
  ChainUnavailable; stop() of a paused server does not hang;
* malformed JSON, unknown methods, invalid requests, batches and garbage
  bodies (hypothesis) get JSON-RPC answers and the server keeps serving;
* ``refute chain`` serves until SIGTERM and exits 0.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
import requests
from eth_account import Account
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refute.compute.claims import Claim, ClaimRound, sign_claim
from refute.contracts.client import Chain, ChainTimeout, ChainUnavailable, ContractError
from refute.compute.trace import Trace, TraceInput, TraceRecord
from refute.contracts.game import GameParams, GameSystem
from refute.contracts.rpcserver import ChainServer

ETH = 10**18
LOCAL_KEY = "0x" + "5e" * 32  # not a tester account: funded by a transfer
PROVER_KEY = (2).to_bytes(32, "big")  # the tester's second account


def rpc(url: str, body, timeout: float = 5) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(url, data=data, headers={"Content-Type": "application/json"}, timeout=timeout)


@pytest.fixture(scope="module")
def server():
    with ChainServer() as s:
        yield s


@pytest.fixture(scope="module")
def chain(server):
    return Chain(server.url)


@pytest.fixture(scope="module")
def dep(chain):
    return chain.deploy(challenge_window=3600)


@pytest.fixture
def resumed(server):
    """Whatever a test does, the shared server answers again afterwards."""
    yield server
    server.resume()


def _in_thread(f):
    out: dict = {}

    def run():
        try:
            out["value"] = f()
        except BaseException as e:  # noqa: BLE001 (handed to the test)
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def _result(t: threading.Thread, out: dict, timeout: float = 90):
    t.join(timeout)
    assert not t.is_alive(), "the call did not finish"
    if "error" in out:
        raise out["error"]
    return out["value"]


# --------------------------------------------------------------------------- contracts over HTTP


def test_deploy_stake_post_root_and_views(server, chain, dep):
    a = chain.accounts
    assert chain.chain_id == 31337 and len(a) == 10
    assert a == [addr for addr, _ in server.accounts]
    tx = dep.stake(a[1], 2 * ETH)
    assert tx.gas_used > 0 and tx.fee == tx.gas_used * tx.receipt["effectiveGasPrice"]
    assert dep.stake_of(a[1]) == 2 * ETH
    assert dep.totals()[0] >= 2 * ETH
    root = bytes(range(32))
    tx = dep.post_root(a[1], 5, root, 3)
    assert dep.root_of(a[1], 5) == (root, 3, tx.timestamp)
    assert dep.is_final(a[1], 5) is False
    # a second connection sees the same chain
    other = Chain(server.url).attach(dep.stake_manager.address, dep.registry.address)
    assert other.stake_of(a[1]) == 2 * ETH and other.root_of(a[1], 5)[0] == root


def test_game_system_deploys_and_game_events_come_from_get_logs(chain):
    a = chain.accounts
    params = GameParams()
    sys_ = GameSystem.deploy(chain, params=params, challenge_window=3600, referee=None)
    prover, challenger = Account.from_key(PROVER_KEY).address, a[2]
    assert prover == a[1]
    sys_.dep.stake(prover, 2 * params.slash_amount)
    weight = TraceInput("weight", b"\x02" * 32)
    trace = Trace(TraceRecord(i, "rms_norm", {"eps": 1e-5}, (TraceInput("x", bytes([i]) * 32), weight),
                              bytes([100 + i]) * 32) for i in range(5))
    claim = Claim(version=1, chain_id=chain.chain_id, model_digest=b"\x11" * 32, input_digest=b"\x22" * 32,
                  output_digest=b"\x33" * 32, trace_root=trace.root, seed=1, round=1, step=0, task=1,
                  prover=prover)
    signed = sign_claim(claim, PROVER_KEY, registry=sys_.dep.registry.address)
    cr = ClaimRound([signed])
    sys_.dep.post_round(prover, cr)
    pin = (trace[3].encode(), len(trace), list(trace.prove_record(3).siblings))
    gid, tx = sys_.open(challenger, signed, pin, b"\x55" * 32, claim_round=cr)
    opened = sys_.events("GameOpened", gid)
    assert len(opened) == 1 and opened[0]["challenger"] == challenger and opened[0]["pinned"] == 3
    assert opened[0]["pinnedOutput"] == bytes([103]) * 32
    assert sys_.last_event("GameOpened", gid)["treeRoot"] == b"\x55" * 32
    assert sys_.events("GameOpened", gid + 1) == []  # the topic filter is applied
    assert sys_.game(gid)["challenger"] == challenger
    # StakeManager events by indexed account, over eth_getLogs with topics
    staked = sys_.dep.stake_manager.events.Staked().get_logs(from_block=0, argument_filters={"account": prover})
    assert [e["args"]["amount"] for e in staked] == [2 * params.slash_amount]
    assert sys_.dep.stake_manager.events.Staked().get_logs(from_block=0, argument_filters={"account": a[7]}) == []


def test_revert_over_http_names_the_custom_error_like_the_in_process_chain(chain, dep):
    local = Chain()
    local_dep = local.deploy(challenge_window=3600)
    errors = []
    for c, d in ((local, local_dep), (chain, dep)):
        acct = c.accounts[3]
        d.stake(acct, ETH)
        with pytest.raises(ContractError) as sent:  # a transaction (reverts in gas estimation)
            d.request_unbond(acct, 5 * ETH)
        with pytest.raises(ContractError) as viewed:  # a view: a claim whose round was never posted
            claim = Claim(version=1, chain_id=31337, model_digest=b"\x01" * 32, input_digest=b"\x02" * 32,
                          output_digest=b"\x03" * 32, trace_root=b"\x04" * 32, seed=0, round=99, step=0,
                          task=1, prover=Account.from_key(PROVER_KEY).address)
            signed = sign_claim(claim, PROVER_KEY, registry=d.registry.address)
            d.verify_claim(signed, proof=[])
        errors.append((str(sent.value), viewed.value.name, sorted(viewed.value.args_dict)))
    assert errors[0] == errors[1]
    assert errors[1][0].startswith("InsufficientStake(")
    assert errors[1][1] not in ("UnknownError", "Revert")


def test_advance_time_and_evm_mine_move_the_clock_which_runs_on(server, chain):
    t0 = chain.timestamp()
    t1 = chain.advance_time(3600)
    assert t1 >= t0 + 3600
    time.sleep(2.5)
    chain.mine()  # the clock ran on with the wall clock from there (py-evm alone: t1 + 1)
    t2 = chain.timestamp()
    assert t1 + 2 <= t2 <= t1 + 10
    tx = chain.transfer(chain.accounts[0], chain.accounts[9], 1)
    assert t2 < tx.timestamp <= t2 + 10
    n = chain.w3.eth.block_number
    chain.mine(2)
    assert chain.w3.eth.block_number == n + 2
    target = chain.timestamp() + 10_000
    r = rpc(server.url, {"jsonrpc": "2.0", "id": 1, "method": "evm_mine", "params": [target]}).json()
    assert r["result"] == "0x0" and chain.timestamp() == target
    r = rpc(server.url, {"jsonrpc": "2.0", "id": 2, "method": "evm_mine", "params": [hex(target - 5)]}).json()
    assert r["error"]["code"] == -32602  # not after the latest block
    r = rpc(server.url, {"jsonrpc": "2.0", "id": 3, "method": "evm_increaseTime", "params": [-1]}).json()
    assert r["error"]["code"] == -32602
    assert chain.timestamp() == target


def test_locally_signed_transactions(server, dep):
    c = Chain(server.url, keys=[LOCAL_KEY])
    me = Account.from_key(LOCAL_KEY).address
    assert me not in c.accounts
    c.transfer(c.accounts[0], me, 5 * ETH)
    d = c.attach(dep.stake_manager.address, dep.registry.address)
    nonce = c.w3.eth.get_transaction_count(me)
    before = c.balance(me)
    tx = d.stake(me, ETH)
    t2 = c.transfer(me, c.accounts[8], 1234)
    assert d.stake_of(me) == ETH
    assert c.w3.eth.get_transaction_count(me) == nonce + 2
    assert c.balance(me) == before - ETH - tx.fee - 1234 - t2.fee


# --------------------------------------------------------------------------- outages


def test_outage_with_retries_completes_each_call_exactly_once(resumed, dep, caplog):
    server = resumed
    c = Chain(server.url, timeout=1, retry_for=60)
    d = c.attach(dep.stake_manager.address, dep.registry.address)
    who = c.accounts[4]
    nonce, stake, balance = c.w3.eth.get_transaction_count(who), d.stake_of(who), c.balance(who)
    caplog.set_level(logging.WARNING, logger="refute.chain")
    server.pause()
    t, out = _in_thread(lambda: d.stake(who, ETH))
    r, rout = _in_thread(lambda: c.balance(c.accounts[5]))
    time.sleep(5)
    assert t.is_alive() and r.is_alive()
    server.resume()
    tx = _result(t, out)
    assert _result(r, rout) > 0
    assert c.w3.eth.get_transaction_count(who) == nonce + 1
    assert d.stake_of(who) == stake + ETH
    assert c.balance(who) == balance - ETH - tx.fee
    assert any("retry" in rec.getMessage() for rec in caplog.records if rec.name == "refute.chain")


@pytest.mark.parametrize("local", [True, False], ids=["raw", "unlocked"])
def test_lost_answer_to_a_send_is_not_sent_twice(resumed, dep, local, caplog):
    """The node executes the transaction, its answer is lost, the client resends:
    the resend is recognised as the first copy (raw: its hash; unlocked: its nonce)."""
    server = resumed
    c = Chain(server.url, timeout=1, retry_for=60, keys=[LOCAL_KEY] if local else [])
    who = Account.from_key(LOCAL_KEY).address if local else c.accounts[6]
    if local:
        c.transfer(c.accounts[0], who, 3 * ETH)
    d = c.attach(dep.stake_manager.address, dep.registry.address)
    nonce, stake, balance = c.w3.eth.get_transaction_count(who), d.stake_of(who), c.balance(who)
    caplog.set_level(logging.WARNING, logger="refute.chain")
    server.pause(on="eth_sendRawTransaction" if local else "eth_sendTransaction", execute=True)
    t, out = _in_thread(lambda: d.stake(who, ETH))
    deadline = time.monotonic() + 30
    while not server.paused:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(2.5)
    server.resume()
    tx = _result(t, out)
    assert c.w3.eth.get_transaction_count(who) == nonce + 1
    assert d.stake_of(who) == stake + ETH
    assert c.balance(who) == balance - ETH - tx.fee
    assert any("reached the node" in rec.getMessage() for rec in caplog.records)


@pytest.mark.slow
def test_a_30_second_outage_loses_nothing(resumed, dep):
    """The issue's requirement: the RPC stops answering for 30 s; a stake transaction
    started during the outage completes after it; nothing is lost."""
    server = resumed
    c = Chain(server.url, timeout=2, retry_for=60)
    d = c.attach(dep.stake_manager.address, dep.registry.address)
    who, other = c.accounts[7], c.accounts[8]
    d.stake(other, ETH)
    nonce, stake, balance, totals = c.w3.eth.get_transaction_count(who), d.stake_of(who), c.balance(who), d.totals()
    server.pause()
    start = time.monotonic()
    t, out = _in_thread(lambda: d.stake(who, 2 * ETH))
    time.sleep(30)
    assert t.is_alive()
    server.resume()
    tx = _result(t, out)
    assert time.monotonic() - start >= 30
    assert c.w3.eth.get_transaction_count(who) == nonce + 1
    assert d.stake_of(who) == stake + 2 * ETH and d.stake_of(other) == ETH
    assert d.totals()[0] == totals[0] + 2 * ETH
    assert c.balance(who) == balance - 2 * ETH - tx.fee


def test_without_retries_a_paused_server_times_out_and_a_stopped_one_is_unavailable(resumed):
    server = resumed
    c = Chain(server.url, timeout=1)
    server.pause()
    start = time.monotonic()
    with pytest.raises(ChainTimeout):
        c.balance(c.accounts[0])
    assert time.monotonic() - start < 5
    server.resume()
    assert c.balance(c.accounts[0]) > 0

    with ChainServer() as other:
        c2 = Chain(other.url, timeout=1)
        assert c2.timestamp() > 0  # a pooled keep-alive connection stays open
    start = time.monotonic()
    with pytest.raises(ChainUnavailable):
        c2.timestamp()
    with pytest.raises(ChainUnavailable):
        Chain(other.url, timeout=1)
    assert time.monotonic() - start < 5


def test_retries_give_up_after_retry_for_with_the_last_error():
    s = ChainServer().start()
    url = s.url
    s.stop()
    start = time.monotonic()
    with pytest.raises(ChainUnavailable):
        Chain(url, timeout=1, retry_for=1.5)
    assert 1.4 <= time.monotonic() - start < 10


def test_stopping_a_paused_server_does_not_hang():
    s = ChainServer().start()
    c = Chain(s.url, timeout=20)
    s.pause()
    t, out = _in_thread(lambda: c.balance(c.accounts[0]))
    time.sleep(0.5)
    start = time.monotonic()
    s.stop()
    assert time.monotonic() - start < 5
    t.join(10)
    assert not t.is_alive()
    assert isinstance(out.get("error"), ChainUnavailable)  # the held request's connection is dropped


# --------------------------------------------------------------------------- protocol


def test_malformed_json_unknown_methods_and_batches(server):
    url = server.url
    r = rpc(url, b"{not json")
    assert r.status_code == 200 and r.json()["error"]["code"] == -32700
    r = rpc(url, {"jsonrpc": "2.0", "id": 7, "method": "eth_noSuchThing", "params": []}).json()
    assert r["id"] == 7 and r["error"]["code"] == -32601
    r = rpc(url, {"jsonrpc": "2.0", "id": 8, "method": "db_putString", "params": []}).json()
    assert r["error"]["code"] == -32601
    r = rpc(url, {"jsonrpc": "2.0", "id": 9, "method": 5}).json()
    assert r["error"]["code"] == -32600
    r = rpc(url, {"jsonrpc": "2.0", "id": 10, "method": "eth_getBalance", "params": ["0xzz", "latest"]}).json()
    assert r["error"]["code"] == -32602
    assert rpc(url, []).json()["error"]["code"] == -32600
    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []},
        {"jsonrpc": "2.0", "method": "eth_blockNumber", "params": []},  # a notification: no answer
        {"jsonrpc": "2.0", "id": "2", "method": "net_version", "params": []},
        17,
    ]
    out = rpc(url, batch).json()
    assert [o.get("id") for o in out] == [1, "2", None]
    assert out[0]["result"] == "0x7a69" and out[1]["result"] == "31337" and out[2]["error"]["code"] == -32600
    assert rpc(url, {"jsonrpc": "2.0", "method": "eth_blockNumber"}).status_code == 204
    assert requests.get(url, timeout=5).status_code == 405
    r = rpc(url, {"jsonrpc": "2.0", "id": 11, "method": "eth_getBlockByNumber", "params": ["latest", True]}).json()
    block = r["result"]
    assert block["number"].startswith("0x") and len(block["logsBloom"]) == 2 + 512
    for tx in block["transactions"]:
        assert {"blockNumber", "transactionIndex", "input", "chainId"} <= set(tx) and "block_number" not in tx
    for m in ("eth_gasPrice", "eth_maxPriorityFeePerGas", "eth_blockNumber", "web3_clientVersion", "eth_accounts"):
        assert "result" in rpc(url, {"jsonrpc": "2.0", "id": 1, "method": m, "params": []}).json(), m
    r = rpc(url, {"jsonrpc": "2.0", "id": 1, "method": "eth_feeHistory", "params": ["0x2", "latest", [50]]}).json()
    assert r["result"]["oldestBlock"].startswith("0x")
    assert rpc(url, {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber"}).json()["result"].startswith("0x")


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_methods = st.sampled_from(["eth_getBalance", "eth_call", "eth_getLogs", "eth_getBlockByNumber", "evm_mine",
                            "evm_increaseTime", "eth_sendRawTransaction", "eth_estimateGas", "eth_feeHistory",
                            "eth_getTransactionReceipt", "nope", ""])
_requests = st.fixed_dictionaries({"jsonrpc": st.just("2.0"), "id": st.integers(0, 9), "method": _methods,
                                   "params": st.lists(_json, max_size=3)})


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=64) | _json.map(lambda j: json.dumps(j).encode())
       | _requests.map(lambda r: json.dumps(r).encode()))
def test_garbage_never_crashes_the_server(server, body):
    r = rpc(server.url, body)
    assert r.status_code in (200, 204)
    if r.status_code == 200:
        out = r.json()
        for o in out if isinstance(out, list) else [out]:
            assert o["jsonrpc"] == "2.0" and ("result" in o) != ("error" in o)
            if "error" in o:
                assert isinstance(o["error"]["code"], int) and isinstance(o["error"]["message"], str)
    ok = rpc(server.url, {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId", "params": []}).json()
    assert ok["result"] == "0x7a69"


# --------------------------------------------------------------------------- command line


def test_refute_chain_command_serves_until_sigterm():
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen([sys.executable, "-m", "refute", "chain", "--port", "0", "--chain-id", "1337"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        first = p.stdout.readline()
        assert first.startswith("refute chain: listening on http://127.0.0.1:"), (first, p.stderr.read())
        assert first.rstrip().endswith("(chain id 1337)")
        # Keep reading through the same buffered pipe object: communicate() reads the raw file
        # descriptor, so lines already pulled into p.stdout's buffer would be lost to it.
        banner = []
        while not (line := p.stdout.readline()).startswith("dev methods:"):
            assert line, ("the banner ended early", banner, p.stderr.read())
            banner.append(line)
        url = first.split("listening on ", 1)[1].split(" ")[0]
        c = Chain(url, chain_id=1337)
        accounts = c.accounts
        tx = c.transfer(accounts[0], accounts[1], 1)
        assert tx.block == 1
        assert all(any(a in line for line in banner) for a in accounts), (accounts, banner)
        p.send_signal(signal.SIGTERM)
        rest, _ = p.communicate(timeout=20)
        assert p.returncode == 0
        assert rest.rstrip().endswith("refute chain: stopped"), rest
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
