"""Zero false refutations: a thousand honest claims over varied batch
compositions and sampling settings, and claims made on the Triton backend
(the interpreter here) equal to the reference ones. In a file of its own so
that the test runner can give it a worker while the rest of test_verifier.py
runs on another."""

import random

import pytest
from test_models_tiny import LLAMA, random_llama_weights
from test_verifier import KEY, SEED, honest, model, verifier  # noqa: F401 (module fixtures shared with it)

from refute.compute.executor import Executor
from refute.compute.llama import LlamaDecoder
from refute.verifier.prover import Prover
from refute.verifier.tasks import GenerateTask


@pytest.mark.slow
def test_a_thousand_honest_claims_are_never_refuted(model, verifier, honest):
    """1,000 claims from batched generation (batch sizes 1-16, prompt lengths
    1-9, mixed sampling settings), each checked for structure and by spot
    replay, every tenth by full replay too."""
    g = random.Random(5)
    done = bad = 0
    settings_ = [(0.0, 0, 1.0), (3.0, 0, 1.0), (1.5, 5, 1.0), (2.0, 0, 0.8), (1.0, 3, 0.5)]
    while done < 1000:
        t, k, p = g.choice(settings_)
        size = min(g.randint(1, 16), 1000 - done)
        tasks = [GenerateTask(tuple(g.randrange(3, LLAMA.vocab_size) for _ in range(g.randint(1, 9))), 3, t, k, p,
                              g.randrange(2**32)) for _ in range(size)]
        for b in honest.prove_batch(tasks, seed=g.randrange(2**64), round=done):
            ok = verifier.spot_replay(b, honest, 2, g).valid
            if done % 10 == 0:
                ok = ok and verifier.full_replay(b).valid
            bad += not ok
            done += 1
    assert done == 1000 and bad == 0


@pytest.mark.slow
def test_claims_from_the_triton_backend_equal_the_reference_ones(model, verifier, honest):
    """A prover on the Triton backend (the interpreter here) makes the very same
    claims, accepted by a reference verifier (I5)."""
    triton = Prover(LlamaDecoder(LLAMA, random_llama_weights(LLAMA), Executor("triton")), KEY)
    tasks = [GenerateTask((5, 9, 11), 2, 3.0, 0, 1.0, 1), GenerateTask((7,), 2, 3.0, 0, 1.0, 2)]
    tb = triton.prove_batch(tasks, seed=SEED)
    rb = honest.prove_batch(tasks, seed=SEED)
    for a, b in zip(tb, rb):
        assert a.claim == b.claim and a.trace.root == b.trace.root
        assert verifier.full_replay(a).valid
