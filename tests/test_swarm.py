"""The swarm end to end on loopback: prover and verifier nodes on the tiny Llama
over a real hivemind DHT, a real JSON-RPC chain (py-evm behind ``refute
chain``'s server) and the real contracts, with the faults of issue 6: a
verifier killed mid-game and restarted, a dishonest prover killed mid-game,
an honest prover killed and restarted on its state directory, the chain's RPC
silent for 30 s, garbage on the DHT and over P2P, two
verifiers on one claim, and peers churning during a round.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from swarm_harness import ETH, PARAMS, Swarm, address, key, wait_for

from refute.compute.claims import ClaimRound, SignedClaim
from refute.contracts.game import State
from refute.verifier.prover import Bundle
from refute.verifier.nodestate import NodeState
from refute.verifier.swarm import PeerDirectory, peers_key
from refute.verifier.transport import ClaimBoard, claims_key

pytestmark = pytest.mark.slow


@pytest.fixture
def swarm(tmp_path):
    s = Swarm(tmp_path)
    yield s
    s.close()


def _stake(swarm, name):
    return swarm.system.dep.stake_of(address(name))


def _metrics(node) -> str:
    with urllib.request.urlopen(node.metrics_server.url + "/metrics", timeout=10) as r:
        return r.read().decode()


def _health(node) -> dict:
    try:
        with urllib.request.urlopen(node.metrics_server.url + "/health", timeout=10) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as e:
        return json.loads(e.read())


def _value(metrics: str, name: str) -> float:
    """The sum over label sets of metric ``refute_<name>`` in a Prometheus exposition."""
    return sum(float(line.split()[-1]) for line in metrics.splitlines()
               if not line.startswith("#") and line.split("{")[0].split()[0] == f"refute_{name}")


# --------------------------------------------------------------------------- the happy path, two verifiers, garbage


def test_two_verifiers_one_game_garbage_and_churn(swarm):
    """An honest and a dishonest prover, two verifiers (one replaying in full, one by
    spot replay of tensors fetched over P2P). Exactly one game, one slash;
    garbage on the DHT and over P2P is dropped and counted; an honest peer that
    leaves mid-round is never refuted; both nodes stay healthy."""
    from hivemind.utils import get_dht_time

    v1 = swarm.verifier("v1")
    v2 = swarm.verifier("v2", replay_mode="spot", spot_ops=64)  # spot replay over P2P (k >= the 35 records)
    swarm.prover("honest", 0)
    swarm.prover("bad", 1, cheat="perturbed_activation")

    # garbage on the DHT under the claims key of round 1 and under the peers key

    exp = get_dht_time() + 600
    swarm.dht.store(claims_key(swarm.chain.chain_id, 1), subkey="0x" + "ab" * 32, value=b"\x00" * 484, expiration_time=exp)
    swarm.dht.store(claims_key(swarm.chain.chain_id, 1), subkey="junk", value=b"not a claim", expiration_time=exp)
    swarm.dht.store(peers_key(swarm.chain.chain_id), subkey=address("nobody"), value=os.urandom(120), expiration_time=exp)

    # a churning honest peer: posts its round, then leaves before anyone can fetch its bundle
    churn = swarm.prover("churn", 2)
    wait_for(lambda: churn.rounds_done == 1, 60, "the churning prover's round")
    swarm.stop(churn)

    def settled():
        rows = [NodeState(v.config.state_path) for v in (v1, v2)]
        try:
            return all(st.counts()["claims_seen"] >= 3 and not st.claims("seen") and not st.claims("refuted")
                       and not st.open_games() for st in rows)
        finally:
            for st in rows:
                st.close()

    wait_for(settled, 240, "both verifiers to settle every claim")
    assert _stake(swarm, "bad") == 3 * ETH - PARAMS.slash_amount  # slashed exactly once
    assert _stake(swarm, "honest") == 3 * ETH and _stake(swarm, "churn") == 3 * ETH
    games = swarm.system.games.events.GameOpened().get_logs(from_block=0)
    assert len(games) == 1, games
    winner = games[0]["args"]["challenger"]
    assert winner in (v1.account, v2.account)
    for v in (v1, v2):
        st = NodeState(v.config.state_path)
        try:
            by_prover = {c.prover: c.status for c in st.claims()}
            assert by_prover[address("honest")] == "valid"
            assert by_prover[address("churn")] in ("valid", "unavailable")  # never refuted
            assert by_prover[address("bad")] == "settled"
            won = [g for g in st.games() if g.outcome == "won"]
            assert len(won) == (1 if v.account == winner else 0)
        finally:
            st.close()
    # rewards are sane: the winner got its bond back plus the loser's bond and half the slash
    w = v1 if v1.account == winner else v2
    reward = 2 * PARAMS.min_bond + PARAMS.slash_amount * PARAMS.winner_share_bps // 10_000
    wait_for(lambda: w.state.withdrawn_total() == reward, 30, "the winner to pull its bonds and its share")
    loser = v2 if w is v1 else v1
    assert loser.state.withdrawn_total() == 0
    # the garbage was dropped and counted, and the nodes are healthy
    assert v1.board.counters["malformed"] >= 2 and v2.board.counters["malformed"] >= 2
    directory = PeerDirectory(swarm.dht, swarm.chain.chain_id)
    assert directory.lookup(address("nobody")) is None
    assert directory.counters["malformed"] + directory.counters["bad_signature"] == 1
    assert _health(v1)["ok"] and _health(v2)["ok"]
    m = _metrics(w)
    assert _value(m, "games_won_total") == 1 and _value(m, "claims_refuted_total") == 1
    assert _value(m, "claims_seen_total") == 3 and _value(m, "peers") >= 2 and _value(m, "games_open") == 0
    assert _value(m, "replay_seconds_count") >= 2


@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
@given(payload=st.binary(max_size=2048), handler=st.sampled_from(["refute.bundle", "refute.open"]))
def _garbage_rpc(loop_peer, target, payload, handler):
    from refute.verifier.transport import TransportError

    loop, peer = loop_peer
    try:
        loop.run(peer.request(target, handler, payload, timeout=10))
    except TransportError:
        pass  # refused or malformed: what a garbage request gets


def test_garbage_p2p_requests_and_dht_records_never_stop_a_prover(swarm):
    """Hypothesis-generated request payloads at a prover's handlers and random DHT
    records: all refused, the prover keeps serving its real bundle."""
    from refute.verifier.transport import BackgroundLoop, SwarmPeer, fetch_bundle

    prover = swarm.prover("p", 0)
    wait_for(lambda: prover.rounds_done == 1, 60, "the round")
    loop = BackgroundLoop()
    try:
        client = loop.run(SwarmPeer.create(swarm.dht))
        _garbage_rpc((loop, client), prover.env.peer.peer_id)

        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
        @given(value=st.binary(max_size=600), subkey=st.text(max_size=70))
        def garbage_dht(value, subkey):
            from hivemind.utils import get_dht_time

            swarm.dht.store(claims_key(swarm.chain.chain_id, 1), subkey=subkey or "-", value=value,
                            expiration_time=get_dht_time() + 600)
            got = ClaimBoard(swarm.dht, swarm.chain.chain_id).fetch(1)
            assert [s.claim.prover for s in got] == [bytes.fromhex(address("p")[2:])]

        garbage_dht()
        bundle = next(iter(prover.bundles.values()))
        got = loop.run(fetch_bundle(client, prover.env.peer.peer_id, bundle.claim.hash()))
        assert got.signed.to_bytes() == bundle.signed.to_bytes()
        assert PeerDirectory(swarm.dht, swarm.chain.chain_id).lookup(address("p")) == prover.env.peer.peer_id
        assert isinstance(SignedClaim.from_bytes(bundle.signed.to_bytes()), SignedClaim)
    finally:
        loop.run(client.p2p.shutdown())
        loop.close()


def test_a_prover_with_broken_wiring_is_refuted_and_slashed_in_one_call(swarm):
    """A bundle no strict parser accepts (an input that is not its source's output):
    the node still holds it, refutes it, and has it slashed by the template decision
    on the wiring check, one transaction and no game."""
    v = swarm.verifier("v")
    swarm.prover("bad", 0, cheat="broken_wiring")
    wait_for(lambda: [e for e in v.state.events() if e.kind == "template_refuted"], 180, "the template refutation")
    assert [(e.detail["one_step"], e.detail["record"]) for e in v.state.events() if e.kind == "dispute"] == [
        ("template", 17)]
    assert v.state.games() == []
    assert _stake(swarm, "bad") == 3 * ETH - PARAMS.slash_amount


def test_an_attention_liar_is_slashed_at_the_last_step_of_the_element_program(swarm):
    """A prover nudges layer 0's attention (its last query, over every key) and
    forges its element program's end state to match: the verifier's game plays
    the program (more than 4 keys), bisects its states to the last step and wins
    there."""
    v = swarm.verifier("v")
    swarm.prover("bad", 0, cheat="forged_attention_end")
    wait_for(lambda: v.state.games() and all(g.outcome for g in v.state.games()), 240, "the game to end")
    assert [g.outcome for g in v.state.games()] == ["won"]
    (d,) = [e.detail for e in v.state.events() if e.kind == "dispute"]
    assert (d["one_step"], d["record"]) == ("game", 16)  # pinned at layer 0's output
    gid = v.state.games()[0].game_id
    assert swarm.system.last_event("RecordRevealed", gid)["index"] == 7  # the attention
    assert [e["reason"] for e in swarm.system.events("GameResolved", gid)] == ["program step"]
    assert _stake(swarm, "bad") == 3 * ETH - PARAMS.slash_amount


# --------------------------------------------------------------------------- the chain goes silent


def test_chain_rpc_silent_for_30_s_loses_nothing(swarm):
    """The RPC stops answering for 30 s while a game is under way (a compute game:
    the prover perturbs an activation): the nodes retry with backoff, the game
    ends with the cheater slashed, and the verifier reports the outage in /health."""
    v = swarm.verifier("v")
    swarm.prover("bad", 0, cheat="perturbed_activation")
    wait_for(lambda: v.state.open_games(), 120, "the game to open")
    swarm.server.pause()
    try:
        time.sleep(28)
        # the node is alive (its endpoint answers) and blocked retrying its chain request
        assert _health(v)["last_tick_s_ago"] > 20
        time.sleep(2)
    finally:
        swarm.server.resume()
    wait_for(lambda: v.state.games() and all(g.outcome for g in v.state.games()), 240, "the game to end")
    assert [g.outcome for g in v.state.games()] == ["won"]
    assert _stake(swarm, "bad") == 3 * ETH - PARAMS.slash_amount
    wait_for(lambda: _health(v)["ok"], 30, "health to recover")


# --------------------------------------------------------------------------- processes killed mid-game


def _moves(db) -> int:
    st = NodeState(db)
    try:
        return sum(g.moves for g in st.games())
    finally:
        st.close()


def _outcomes(db) -> list:
    st = NodeState(db)
    try:
        return [g.outcome for g in st.games()]
    finally:
        st.close()


def test_verifier_killed_mid_game_resumes_and_wins(swarm, tmp_path):
    db = tmp_path / "node.sqlite"
    swarm.fund("v")
    node = ["node"]
    args = ["--model", "tiny", "--state", str(db), "--metrics-port", "0", "--poll-interval", "0.3"]
    v = swarm.spawn_process("verifier", node, args, {"REFUTE_KEY": key("v")})
    swarm.prover("bad", 0, cheat="forged_trace")
    wait_for(lambda: db.exists() and _moves(db) >= 3, 180, "the verifier's third move")
    os.killpg(v.pid, signal.SIGKILL)  # the whole process group: node, DHT child and p2p daemon
    v.wait(30)
    swarm.spawn_process("verifier-2", node, args, {"REFUTE_KEY": key("v")})
    wait_for(lambda: _outcomes(db) == ["won"], 240, "the restarted verifier to win")
    assert _stake(swarm, "bad") == 3 * ETH - PARAMS.slash_amount


def test_dishonest_prover_killed_mid_game_loses_on_time(swarm):
    swarm.fund("bad")
    p = swarm.spawn_process("prover", ["prove", "--serve"], ["--model", "tiny", "--cheat", "low_precision_op",
                                                             "--round-interval", "1"],
                            {"REFUTE_PROVER_KEY": key("bad")})
    v = swarm.verifier("v")
    wait_for(lambda: any(g.moves >= 2 for g in v.state.games()), 180, "the game to get going")
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(30)
    gid = v.state.games()[0].game_id
    wait_for(lambda: swarm.system.turn(gid)[1] == address("bad"), 60, "the dead prover's turn")
    _, _, left = swarm.system.turn(gid)
    swarm.chain.advance_time(left + 1)  # the prover's clock runs out (an hour of chain time, skipped)
    wait_for(lambda: v.state.game(gid).outcome, 120, "the timeout")
    assert v.state.game(gid).outcome == "won"
    assert _stake(swarm, "bad") == 3 * ETH - PARAMS.slash_amount
    reasons = [e["reason"] for e in swarm.system.events("GameResolved", gid)]
    assert reasons == ["timeout"]


def test_honest_prover_restarted_on_its_state_dir_defends_a_claim_challenged_while_it_was_down(swarm, tmp_path):
    state = tmp_path / "prover-state"
    swarm.fund("honest")
    args = ["--model", "tiny", "--state-dir", str(state), "--round-interval", "1"]
    env = {"REFUTE_PROVER_KEY": key("honest")}
    p = swarm.spawn_process("prover", ["prove", "--serve"], args, env)
    wait_for(lambda: swarm.system.dep.root_of(address("honest"), 1)[0] != bytes(32), 180, "the prover's round root")
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(30)

    # While it is down, a liar challenges its claim with a made-up trace.
    (path,) = (state / "bundles").glob("*.json")
    bundle = Bundle.from_json(path.read_bytes())
    swarm.fund("liar")
    swarm.chain.add_key(key("liar"))
    last = len(bundle.trace) - 1  # the logits: a checkpoint the liar pins, with a made-up prefix
    pin = (bundle.trace[last].encode(), len(bundle.trace), list(bundle.trace.prove_record(last).siblings))
    gid, _ = swarm.system.open(address("liar"), bundle.signed, pin, b"\x66" * 32,
                               claim_round=ClaimRound([bundle.signed]))

    swarm.spawn_process("prover-2", ["prove", "--serve"], args, env)
    # The restarted prover finds the game in the logs it had not read, answers from
    # its stored bundle and reveals the first children; then the liar has nothing to say.
    wait_for(lambda: swarm.system.state(gid) == State.RECORD_BISECT_C, 180, "the restarted prover's moves")
    _, party, left = swarm.system.turn(gid)
    assert party == address("liar")
    swarm.chain.advance_time(left + 1)
    swarm.system.timeout(address("liar"), gid)
    assert swarm.system.state(gid) == State.DEFENDANT_WON
    assert _stake(swarm, "honest") == 3 * ETH
    assert "1 bundle(s) from" in (tmp_path / "prover-2.log").read_text()


# --------------------------------------------------------------------------- make demo


def test_demo_json_reports_the_villain_slashed():
    """``refute demo --model tiny --json`` with a prover that cannot serve its own
    commitments (the game ends on its clock, fast-forwarded on the dev chain)."""
    proc = subprocess.run([sys.executable, "-m", "refute", "demo", "--model", "tiny", "--rounds", "1", "--cheat",
                           "mismatched_serving", "--json"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True and summary["cheat"] == "mismatched_serving"
    roles = {p["name"]: p for p in summary["peers"]}
    assert sum(p["role"] == "prover" for p in roles.values()) == 3 and roles["verifier"]["role"] == "verifier"
    for p in summary["peers"]:
        assert p["slashed"] is (not p["honest"]), p
        assert int(p["stake_after"]) == int(p["stake_before"]) - (0 if p["honest"] else PARAMS.slash_amount)
    assert "fast-forwards" in proc.stdout and "RESOLVED, the verifier wins (timeout)" in proc.stdout


def test_demo_on_an_external_chain_with_a_sampling_liar(tmp_path):
    """``refute chain`` in its own process as the "external" chain, and ``refute demo
    --rpc-url`` against it; the liar samples with another seed, so the verifier
    refutes it in one ``openSampling`` call (no game)."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # The chain's output goes to a file, not a pipe nobody drains during the demo (a full pipe would block it).
    chain_log = tmp_path / "chain.log"
    with open(chain_log, "w") as out:
        chain = subprocess.Popen([sys.executable, "-m", "refute", "chain", "--port", str(port)], stdout=out,
                                 stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while "listening on" not in chain_log.read_text():
            assert chain.poll() is None and time.monotonic() < deadline, chain_log.read_text()
            time.sleep(0.2)
        proc = subprocess.run([sys.executable, "-m", "refute", "demo", "--model", "tiny", "--rounds", "1", "--cheat",
                               "wrong_seed", "--rpc-url", f"http://127.0.0.1:{port}", "--json",
                               "--workdir", str(tmp_path)], capture_output=True, text=True, timeout=600)
    finally:
        chain.terminate()
        chain.wait(30)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["ok"] is True and summary["chain"] == f"http://127.0.0.1:{port}"
    assert [p["slashed"] for p in summary["peers"]] == [not p["honest"] for p in summary["peers"]]
    assert "sampling refutation" in proc.stdout and "opened game" not in proc.stdout
