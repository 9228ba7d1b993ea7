"""VerifiedCommunication in a small GenRL-style loop: peers exchange rollouts
through ``all_gather_object``; the dishonest peer is reported by everyone else."""

import json
import threading

import pytest
from test_models_tiny import LLAMA, random_llama_weights

from refute.compute.executor import Executor
from refute.compute.llama import LlamaDecoder
from refute.verifier import cheats
from refute.verifier.communication import VerifiedCommunication
from refute.verifier.prover import Prover
from refute.verifier.tasks import GenerateTask
from refute.verifier.verify import Verifier


class LocalSwarm:
    """An in-memory GenRL-style backend: ``all_gather_object`` returns once every peer has contributed."""

    def __init__(self, n: int):
        self.n, self.barrier, self.lock, self.box = n, threading.Barrier(n), threading.Lock(), {}

    def peer(self, pid: str):
        swarm = self

        class Backend:
            def get_id(self):
                return pid

            def all_gather_object(self, obj):
                with swarm.lock:
                    swarm.box[pid] = json.loads(json.dumps(obj))  # what a wire would carry
                swarm.barrier.wait()
                out = dict(swarm.box)
                swarm.barrier.wait()
                return out

        return Backend()


def rollout_task(pid: str, rnd: int) -> GenerateTask:
    return GenerateTask((3 + rnd, 5 + len(pid), 7), 3, temperature=2.0, sequence=rnd)


@pytest.fixture(scope="module")
def model():
    return LlamaDecoder(LLAMA, random_llama_weights(LLAMA), Executor("reference"))


def test_genrl_style_loop_reports_only_the_dishonest_peer():
    # Each peer is its own process in a real swarm: its own model and executor
    # (an executor's observers are not shared between threads).
    weights = random_llama_weights(LLAMA)
    models = {p: LlamaDecoder(LLAMA, weights, Executor("reference")) for p in ("alice", "bob", "mallory")}
    checkers = {p: LlamaDecoder(LLAMA, weights, Executor("reference")) for p in models}
    keys = {"alice": "0x" + "a1" * 32, "bob": "0x" + "b2" * 32, "mallory": "0x" + "c3" * 32}
    provers = {"alice": Prover(models["alice"], keys["alice"]), "bob": Prover(models["bob"], keys["bob"]),
               "mallory": cheats.PerturbedActivation(models["mallory"], keys["mallory"], record=6, element=2)}
    swarm = LocalSwarm(3)
    comms = {}
    for pid, prover in provers.items():
        cache = {}

        def make_bundle(obj, prover=prover, cache=cache):
            return cache[tuple(obj["tokens"])]

        comms[pid] = VerifiedCommunication(swarm.peer(pid), make_bundle, lambda obj: tuple(obj["tokens"]),
                                           Verifier({"smollm2.generate": checkers[pid]}))
        comms[pid].cache = cache
    results = {pid: [] for pid in provers}

    def run(pid):
        for rnd in range(2):
            bundle = provers[pid].prove(rollout_task(pid, rnd), seed=11, round=rnd)
            comms[pid].cache[bundle.tokens] = bundle
            results[pid].append(comms[pid].all_gather_object({"tokens": list(bundle.tokens)}))

    threads = [threading.Thread(target=run, args=(p,)) for p in provers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    for pid in ("alice", "bob"):
        assert [r.peer for r in comms[pid].refuted] == ["mallory", "mallory"]
        assert all(set(r) == {"alice", "bob"} for r in results[pid])
        assert comms[pid].counters["accepted"] == 2 and comms[pid].counters["refuted"] == 2
    assert comms["mallory"].refuted == []  # honest peers' work passes everyone's checks


def test_malformed_and_mismatched_payloads_are_counted_not_raised(model):
    honest = Prover(model, "0x" + "a1" * 32)
    bundle = honest.prove(rollout_task("x", 0), seed=1)
    payloads = {"me": None, "junk": "not a dict", "badjson": {"obj": {"tokens": [1]}, "bundle": "{"},
                "lie": {"obj": {"tokens": [t + 1 for t in bundle.tokens]}, "bundle": bundle.to_json()},
                "weird": {"obj": 5, "bundle": bundle.to_json()},
                "ok": {"obj": {"tokens": list(bundle.tokens)}, "bundle": bundle.to_json()}}

    class Fixed:
        def get_id(self):
            return "me"

        def all_gather_object(self, obj):
            return dict(payloads, me=obj)

    comm = VerifiedCommunication(Fixed(), lambda obj: bundle, lambda obj: tuple(obj["tokens"]),
                                 Verifier({"smollm2.generate": model}))
    got = comm.all_gather_object({"tokens": list(bundle.tokens)})
    assert set(got) == {"me", "ok"}
    assert sorted(r.peer for r in comm.refuted) == ["badjson", "junk", "lie", "weird"]
    assert comm.counters["malformed"] == 3
