"""Element programs (verifier/programs.py, contracts/src/ProgramReferee.sol, the program
phase of DisputeGames).

* the attention and log_softmax programs' final states give the operators' bits, for
  drawn shapes, masks, causal flags and special values (every element of small
  problems);
* ``check_step`` sides with an honest next state and against any other, and decides a
  malformed proof for the defendant;
* on chain, ``programOf``/``programOutput``/``programStep`` equal the Python states, hash
  for hash, and a step at SmolLM2's sizes costs less than 1.5M gas;
* whole games on a tiny Llama whose attention element is disputed: a defendant that
  forges its program's end state is slashed at the step where the forgery begins; an
  honest defendant beats a wrong challenger.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refute.compute.executor import OPERATORS
from refute.compute.merkle import TensorTree, tensor_root
from refute.compute.trace import Trace, TraceInput, TraceRecord
from refute.contracts.referee import RefereeContract, input_heads, step_openings
from refute.verifier import cheats
from refute.verifier import programs as P

#: Moves are sent with a fixed gas limit: no estimate, so each executes once (no move here reverts).
GAS_LIMIT = 20_000_000
SPECIALS = [np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-40, 3e38, -3e38]


@st.composite
def attention_problems(draw):
    """A small attention record's inputs and attributes, special values over-represented."""
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    b, t, s = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 9))
    heads, kv = draw(st.sampled_from([(2, 1), (2, 2), (4, 2)]))
    hd = draw(st.sampled_from([2, 4, 8]))
    scale = draw(st.sampled_from([0.125, 0.5, 3.0]))

    def values(*shape):
        x = (rng.normal(size=shape) * rng.choice([0.5, 2.0, 30.0])).astype(np.float32)
        for _ in range(draw(st.integers(0, 2))):
            x.reshape(-1)[rng.integers(x.size)] = rng.choice(SPECIALS)
        return torch.from_numpy(x)

    mask = torch.from_numpy(rng.random((b, s)) < draw(st.sampled_from([0.0, 0.6, 1.0])))
    qp = torch.from_numpy(rng.integers(0, s + 2, size=(b, t)))
    kp = torch.from_numpy(np.tile(np.arange(s), (b, 1)))
    attrs = dict(causal=draw(st.booleans()), num_heads=heads, num_kv_heads=kv, scale=scale,
                 slices=draw(st.sampled_from([1, 2, 3])))
    inputs = dict(q=values(b, t, heads * hd), k=values(b, s, kv * hd), v=values(b, s, kv * hd), key_mask=mask,
                  q_positions=qp, k_positions=kp)
    return attrs, inputs


def _bits(t: torch.Tensor) -> bytes:
    return t.contiguous().numpy().tobytes()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(attention_problems())
def test_final_state_gives_the_operators_bits(problem):
    attrs, inputs = problem
    out = OPERATORS["attention"](**inputs, **attrs, backend="reference").reshape(-1)
    for e in range(out.numel()):
        states = P.program_states("attention", attrs, inputs, e)
        assert len(states) == P.program_length("attention", attrs, {n: tuple(x.shape) for n, x in inputs.items()},
                                               e) + 1
        assert P.program_output("attention", attrs, states[-1]) == _bits(out[e:e + 1]), e


@st.composite
def log_softmax_rows(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rows, n = draw(st.integers(1, 3)), draw(st.integers(1, 100))
    x = (rng.normal(size=(rows, n)) * rng.choice([0.3, 5.0, 80.0])).astype(np.float32)
    for _ in range(draw(st.integers(0, 2))):
        x.reshape(-1)[rng.integers(x.size)] = rng.choice(SPECIALS)
    return torch.from_numpy(x)


@settings(max_examples=40, deadline=None)
@given(log_softmax_rows(), st.data())
def test_log_softmax_final_state_gives_the_operators_bits(x, data):
    out = OPERATORS["log_softmax"](x, backend="reference").reshape(-1)
    for e in data.draw(st.lists(st.integers(0, x.numel() - 1), min_size=1, max_size=6, unique=True)):
        states = P.program_states("log_softmax", {}, {"x": x}, e)
        assert len(states) - 1 == P.ROW_PASSES * -(-x.shape[-1] // P.ROW_PER_STEP) + 1
        assert P.program_output("log_softmax", {}, states[-1]) == _bits(out[e:e + 1]), e


def _record(attrs, inputs, out):
    return TraceRecord(0, "attention", attrs, [TraceInput(n, tensor_root(x)) for n, x in inputs.items()],
                       tensor_root(out))


def _step_proof(attrs, inputs, e, step, before, after_hash):
    out = OPERATORS["attention"](**inputs, **attrs, backend="reference")
    r = _record(attrs, inputs, out)
    trace = Trace([r])
    shapes = {n: tuple(x.shape) for n, x in inputs.items()}
    need = P.step_inputs("attention", attrs, shapes, e, step)
    openings = {n: TensorTree.from_tensor(inputs[n]).prove_range(a, b) for n, (a, b) in need.items()}
    return P.StepProof(trace.root, r, trace.prove_record(0), e, step, before, after_hash, openings)


@settings(max_examples=15, deadline=None)
@given(attention_problems(), st.data())
def test_check_step_decides_the_next_state(problem, data):
    attrs, inputs = problem
    numel = inputs["q"].numel()
    e = data.draw(st.integers(0, numel - 1))
    states = P.program_states("attention", attrs, inputs, e)
    step = data.draw(st.integers(0, len(states) - 2))
    honest = _step_proof(attrs, inputs, e, step, states[step], P.state_hash(states[step + 1]))
    assert not P.check_step(honest).defendant_wrong
    forged = bytearray(states[step + 1])
    forged[data.draw(st.integers(0, len(forged) - 1))] ^= 1 << data.draw(st.integers(0, 7))
    if bytes(forged) != states[step + 1]:
        assert P.check_step(_step_proof(attrs, inputs, e, step, states[step], P.state_hash(bytes(forged)))) \
            .defendant_wrong
    # the challenger's evidence at the wrong step, or a malformed state, decides for the defendant
    other = (step + 1) % (len(states) - 1)
    wrong_slices = _step_proof(attrs, inputs, e, step, states[step], P.state_hash(b"x"))
    moved = P.StepProof(wrong_slices.trace_root, wrong_slices.record, wrong_slices.record_proof, e, step,
                        states[step], wrong_slices.after_hash,
                        _step_proof(attrs, inputs, e, other, states[other], b"").input_openings)
    if P.step_inputs("attention", attrs, {n: tuple(x.shape) for n, x in inputs.items()}, e, other) != \
            P.step_inputs("attention", attrs, {n: tuple(x.shape) for n, x in inputs.items()}, e, step):
        assert not P.check_step(moved).defendant_wrong
    assert not P.check_step(_step_proof(attrs, inputs, e, step, b"short", P.state_hash(b""))).defendant_wrong
    assert not P.check_step("not a proof").defendant_wrong


# --------------------------------------------------------------------------- on chain


@pytest.fixture(scope="module")
def referee():
    return RefereeContract()


def _problem(rng, s, t=2, heads=9, kv=3, hd=64):
    inputs = dict(q=torch.from_numpy(rng.normal(size=(1, t, heads * hd)).astype(np.float32) * 2),
                  k=torch.from_numpy(rng.normal(size=(1, s, kv * hd)).astype(np.float32)),
                  v=torch.from_numpy(rng.normal(size=(1, s, kv * hd)).astype(np.float32)),
                  key_mask=torch.from_numpy(rng.random((1, s)) < 0.9),
                  q_positions=torch.arange(s - t, s).reshape(1, t), k_positions=torch.arange(s).reshape(1, s))
    return dict(causal=True, num_heads=heads, num_kv_heads=kv, scale=0.125, slices=2), inputs


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(attention_problems(), st.data())
def test_chain_states_equal_python(referee, problem, data):
    attrs, inputs = problem
    out = OPERATORS["attention"](**inputs, **attrs, backend="reference")
    r = _record(attrs, inputs, out)
    e = data.draw(st.integers(0, out.numel() - 1))
    states = P.program_states("attention", attrs, inputs, e)
    header = TensorTree.from_tensor(out).header.encode()
    wrong, steps, start = referee.program_of(r, header, e, input_heads(r, inputs))
    assert (wrong, steps, start) == (False, len(states) - 1, P.state_hash(states[0]))
    assert referee.program_output(r, states[-1]) == _bits(out.reshape(-1)[e:e + 1])
    for step in data.draw(st.lists(st.integers(0, steps - 1), min_size=1, max_size=3, unique=True)):
        got = referee.program_step(r, e, step, states[step], step_openings(r, inputs, e, step))
        assert got == P.state_hash(states[step + 1]), step
    # another output header is the defendant's loss, decided before any step
    other = TensorTree.from_tensor(out.reshape(out.shape[0], -1, 1)).header.encode() if out.numel() else header
    if other != header:
        assert referee.program_of(r, other, e, input_heads(r, inputs))[0]


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(log_softmax_rows(), st.data())
def test_chain_log_softmax_states_equal_python(referee, x, data):
    out = OPERATORS["log_softmax"](x, backend="reference")
    r = TraceRecord(0, "log_softmax", {}, [TraceInput("x", tensor_root(x))], tensor_root(out))
    e = data.draw(st.integers(0, x.numel() - 1))
    states = P.program_states("log_softmax", {}, {"x": x}, e)
    wrong, steps, start = referee.program_of(r, TensorTree.from_tensor(out).header.encode(), e,
                                             input_heads(r, {"x": x}))
    assert (wrong, steps, start) == (False, len(states) - 1, P.state_hash(states[0]))
    assert referee.program_output(r, states[-1]) == _bits(out.reshape(-1)[e:e + 1])
    for step in {0, steps - 1, data.draw(st.integers(0, steps - 1))}:
        got = referee.program_step(r, e, step, states[step], step_openings(r, {"x": x}, e, step))
        assert got == P.state_hash(states[step + 1]), step


def test_log_softmax_step_over_smollm2_vocabulary_is_under_the_gas_target(referee):
    """A log-softmax over SmolLM2's 49,152 logits: every kind of step under 1.5M gas."""
    x = torch.from_numpy((np.random.default_rng(9).normal(size=(1, 49152)) * 4).astype(np.float32))
    out = OPERATORS["log_softmax"](x, backend="reference")
    r = TraceRecord(0, "log_softmax", {}, [TraceInput("x", tensor_root(x))], tensor_root(out))
    e = 31337
    states = P.program_states("log_softmax", {}, {"x": x}, e)
    chunks = 49152 // P.ROW_PER_STEP
    for step in (0, chunks + 3, 2 * chunks + 1000, 3 * chunks):
        ops = step_openings(r, {"x": x}, e, step)
        assert referee.program_step(r, e, step, states[step], ops) == P.state_hash(states[step + 1])
        assert referee.program_step_gas(r, e, step, states[step], ops) < 1_500_000
    assert referee.program_output(r, states[-1]) == _bits(out.reshape(-1)[e:e + 1])


def test_one_step_at_smollm2_sizes_is_under_the_gas_target(referee):
    """Every pass's step at SmolLM2's attention (9 heads, 3 kv heads, head_dim 64),
    with 576 keys (a 512 + 64 token context): the step's cost does not grow with keys."""
    attrs, inputs = _problem(np.random.default_rng(5), 576, t=1)
    out = OPERATORS["attention"](**inputs, **attrs, backend="reference")
    r = _record(attrs, inputs, out)
    e = 9 * 64 - 5
    states = P.program_states("attention", attrs, inputs, e)
    chunks = -(-576 // P.KEYS_PER_STEP)
    assert len(states) - 1 == P.PASSES * chunks
    for step in (0, chunks + 7, 2 * chunks + 100, 3 * chunks + 5, 5 * chunks - 1):
        ops = step_openings(r, inputs, e, step)
        assert referee.program_step(r, e, step, states[step], ops) == P.state_hash(states[step + 1])
        assert referee.program_step_gas(r, e, step, states[step], ops) < 1_500_000
    assert referee.program_output(r, states[-1]) == _bits(out.reshape(-1)[e:e + 1])


# --------------------------------------------------------------------------- games


@pytest.fixture(scope="module")
def attention_cases():
    from test_contracts_game import PROVER_KEY, SEED, TASK, Case
    from test_models_tiny import LLAMA, random_llama_weights

    from refute.compute.executor import Executor
    from refute.compute.llama import LlamaDecoder
    from refute.verifier import cheats
    from refute.verifier.prover import Prover
    from refute.verifier.verify import Verifier

    model = LlamaDecoder(LLAMA, random_llama_weights(LLAMA), Executor("reference"))
    verifier = Verifier({"smollm2.generate": model})
    attention = next(i for i, r in enumerate(Prover(model, PROVER_KEY).prove(TASK, seed=SEED, round=1).trace)
                     if r.kind == "attention")
    cheat = cheats.PerturbedActivation(model, PROVER_KEY, attention, 37)
    honest = Prover(model, PROVER_KEY)
    return dict(cheat=Case(cheat, cheat.prove(TASK, seed=SEED, round=1), verifier, model),
                honest=Case(honest, honest.prove(TASK, seed=SEED, round=2), verifier, model),
                attention=attention)


def test_the_attention_lie_reaches_the_layers_checkpoint(attention_cases):
    """Layer 0's attention (record 7) is not a checkpoint: the claim defers its output,
    and a game over it is pinned at layer 0's output (checkpoint 16)."""
    from refute.compute.trace import DEFERRED
    from refute.contracts.game import pin_of

    case, rec = attention_cases["cheat"], attention_cases["attention"]
    assert rec == 7 and case.bundle.trace[rec].output == DEFERRED
    assert pin_of(case.bundle.trace, case.mine)[0] == 16
    assert pin_of(attention_cases["honest"].bundle.trace, case.full)[0] == 16


@pytest.mark.slow
def test_forged_program_end_is_slashed_at_the_last_step(attention_cases):
    from test_contracts_game import PARAMS, PROVER, World

    from refute.contracts.game import Defendant, State, play

    case = attention_cases["cheat"]
    rec = attention_cases["attention"]
    assert case.where.kind == "compute" and (case.where.record, case.where.element) == (rec, 37)
    r = case.full[rec]
    committed = case.served(rec).output.reshape(-1)[37:38].numpy().tobytes()

    def forged(i, element):
        states = P.program_states(r.kind, r.attr_dict(), case.served(i).inputs, element)
        return states[:-1] + [cheats.forge_program_end(r.attr_dict(), states[-1], committed)]

    w = World()
    w.chain.gas_limit = GAS_LIMIT
    gid, _ = w.open(case)
    assert w.sys.events("GameOpened", gid)[0]["pinned"] == 16
    _, c = w.players(case)
    d = Defendant(PROVER, case.full, case.served, program_states=forged)
    res = play(w.sys, gid, d, c)
    kinds = [m[0] for m in res.moves]
    assert res.state == State.CHALLENGER_WON and res.reason == "program step", (res.reason, res.failures)
    assert "PROGRAM_END_D" in kinds and "PROGRAM_STEP" in kinds and not res.failures
    assert (res.record, res.element) == (rec, 37)
    g = w.sys.game(gid)
    assert (g["countD"], g["countC"]) == (len(forged(rec, 37)) - 2, len(forged(rec, 37)) - 1)
    assert w.dep.stake_of(PROVER) == 3 * 10**18 - PARAMS.slash_amount
    assert w.sys.solvency()[0] == w.sys.solvency()[1]


@pytest.mark.slow
def test_honest_defendant_beats_a_wrong_challenger_through_the_program(attention_cases):
    from test_contracts_game import CHALLENGER, PARAMS, PROVER, TASK, World

    from refute.contracts.game import Challenger, State, play

    honest, cheat = attention_cases["honest"], attention_cases["cheat"]
    w = World()
    w.chain.gas_limit = GAS_LIMIT
    gid, _ = w.open(honest, trace=cheat.full)  # the cheat's full trace as the challenger's
    assert w.sys.events("GameOpened", gid)[0]["pinned"] == 16
    d, _ = w.players(honest)
    c = Challenger(CHALLENGER, cheat.full, cheat.served, honest.bundle.claim, program=honest.program, task=TASK,
                   tokens=honest.bundle.tokens)
    res = play(w.sys, gid, d, c)
    assert res.state == State.DEFENDANT_WON and res.reason == "program step", (res.reason, res.failures)
    assert "PROGRAM_BISECT_C" in [m[0] for m in res.moves]
    assert (res.record, res.element) == (attention_cases["attention"], 37)
    assert w.dep.stake_of(PROVER) == 3 * 10**18 and w.dep.locked_of(PROVER) == 0
    assert w.sys.credit_of(PROVER) == 2 * PARAMS.min_bond
