"""Prover, verifier, bisection and the one-step, against the cheating catalogue.

Tiny random Llama models carry the broad tests (every catalogue entry, spot
rates over hundreds of trials; a thousand honest claims in
test_honest_claims.py); the real SmolLM2 and MiniLM run the catalogue end to
end in the slow tests.
"""

import dataclasses
import json
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_models_tiny import LLAMA, random_llama_weights

from refute.compute.executor import OPERATORS, Executor
from refute.compute.llama import LlamaDecoder
from refute.compute.merkle import ElementProof, RangeProof, tensor_root
from refute.compute.trace import DEFERRED
from refute.compute.program import input_binding, program_of
from refute.verifier import cheats
from refute.verifier.dispute import OneStepProof, check_one_step, compute_one_step, dispute, template_one_step
from refute.verifier.prover import Bundle, BundleError, Prover
from refute.verifier.tasks import EmbedTask, GenerateTask, TaskError
from refute.verifier.verify import Verifier, catch_probability, expected_tokens

KEY = "0x" + "11" * 32
TASK = GenerateTask((5, 9, 11, 4), 6, temperature=3.0, top_k=0, top_p=1.0, sequence=3)
SEED = 7


@pytest.fixture(scope="module")
def model():
    return LlamaDecoder(LLAMA, random_llama_weights(LLAMA), Executor("reference"))


@pytest.fixture(scope="module")
def verifier(model):
    return Verifier({"smollm2.generate": model})


@pytest.fixture(scope="module")
def honest(model):
    return Prover(model, KEY)


@pytest.fixture(scope="module")
def bundle(honest):
    return honest.prove(TASK, seed=SEED)


def _first_diff(a: torch.Tensor, b: torch.Tensor) -> int:
    d = (a.reshape(-1).view(torch.int32) != b.reshape(-1).view(torch.int32)).nonzero()
    return int(d[0])


def _first_use(model, root: bytes) -> int:
    return next(t.index for t in program_of(model).templates for i in t.inputs if i.external and i.root == root)


def _wrong_seed(model, task):
    """A seed whose tokens differ from SEED's for ``task`` (so the lie changes something)."""
    want = Prover(model, KEY).compute(task, SEED)
    return next(s for s in range(100, 200) if Prover(model, KEY).compute(task, s) != want)


def catalogue(model, task=TASK, only=None):
    """Every entry (or those named in ``only``) with the (kind, record, element) its
    lie must be pinned to, for ``task``."""
    want = set(cheats.CATALOGUE if only is None else only)
    honest = Prover(model, KEY)
    hb = honest.prove(task, seed=SEED)
    out = {}
    weight = "layers.1.attn.k.weight"
    if "flipped_weight_bit" in want:
        out["flipped_weight_bit"] = (cheats.FlippedWeightBit(model, KEY, weight, 3, 20),
                                     ("template", _first_use(model, tensor_root(model.w[weight])), None))
    if "different_model" in want:
        out["different_model"] = (cheats.DifferentModel(model, KEY), ("template", 0, None))
    if "skipped_layer" in want:
        layer1 = _first_use(model, tensor_root(model.w["layers.1.attn_norm.weight"]))
        out["skipped_layer"] = (cheats.SkippedLayer(model, KEY, 1), ("template", layer1, None))
    if "perturbed_activation" in want:
        out["perturbed_activation"] = (cheats.PerturbedActivation(model, KEY, 10, 7), ("compute", 10, 7))
    if "low_precision_op" in want:
        low = cheats.LowPrecisionOp(model, KEY, 12)
        lb = low.prove(task, seed=SEED)
        e = _first_diff(low.open(lb, [12])[12].output, honest.open(hb, [12])[12].output)
        out["low_precision_op"] = (low, ("compute", 12, e))
    if "native_torch_kernels" in want:
        native = cheats.NativeTorchKernels(model, KEY)
        first_linear = next(r.index for r in hb.trace if r.kind == "linear")
        nb = native.prove(task, seed=SEED)
        e = _first_diff(native.open(nb, [first_linear])[first_linear].output,
                        honest.open(hb, [first_linear])[first_linear].output)
        out["native_torch_kernels"] = (native, ("compute", first_linear, e))
    if "copied_output" in want:
        other = GenerateTask((6,) + task.prompt_ids[1:], task.max_new_tokens, task.temperature, 0, 1.0, task.sequence)
        out["copied_output"] = (cheats.CopiedOutput(model, KEY, other), ("template", 0, None))
    if "wrong_seed" in want:
        ws = cheats.WrongSeed(model, KEY, _wrong_seed(model, task))
        wrong = ws.compute(task, SEED)
        j = next(j for j, (a, b) in enumerate(zip(wrong, hb.tokens)) if a != b)
        out["wrong_seed"] = (ws, ("sampling", len(hb.trace) - 1, j))
    if "forged_trace" in want:
        out["forged_trace"] = (cheats.ForgedTrace(model, KEY, 16, 3), ("compute", 16, 3))
    if "mismatched_serving" in want:
        out["mismatched_serving"] = (cheats.MismatchedServing(model, KEY, 14, 3), ("serving", 14, None))
    assert set(out) == want
    return out


@pytest.fixture(scope="module")
def cheat_cases(model):
    return {name: (c, where, c.prove(TASK, seed=SEED)) for name, (c, where) in catalogue(model).items()}


# --------------------------------------------------------------------------- honest


def test_honest_claim_is_valid_in_every_mode(bundle, verifier, honest):
    assert verifier.full_replay(bundle).valid
    assert verifier.spot_replay(bundle, honest, 8, random.Random(0)).valid
    assert dispute(bundle, honest, verifier).kind == "none"


def test_bundle_json_round_trip(bundle):
    again = Bundle.from_json(bundle.to_json())
    assert again.to_json() == bundle.to_json()
    assert again.claim == bundle.claim and again.trace.root == bundle.trace.root and again.tokens == bundle.tokens


@pytest.mark.parametrize("mutate, message", [
    (lambda o: o.pop("trace"), "required"),
    (lambda o: o.update(version=2), "version"),
    (lambda o: o.update(kind="x"), "refute.bundle"),
    (lambda o: o.update(tokens="abc"), "tokens"),
    (lambda o: o["task"].update(max_new_tokens=-1), "max_new_tokens"),
    (lambda o: o["task"].update(top_p=float("nan")), "top_p"),
    (lambda o: o["claim"].update(signature="0x00"), "signature"),
    (lambda o: o["trace"]["records"].pop(), "root"),
    (lambda o: o.update(extra=1), "fields"),
])
def test_malformed_bundles_are_rejected_with_a_reason(bundle, mutate, message):
    o = json.loads(bundle.to_json())
    mutate(o)
    with pytest.raises(BundleError, match=message):
        Bundle.from_json(json.dumps(o))


def test_tampered_signature_fields_are_refuted(bundle, verifier):
    o = json.loads(bundle.to_json())
    o["tokens"][0] = (o["tokens"][0] + 1) % LLAMA.vocab_size
    v = verifier.full_replay(Bundle.from_json(json.dumps(o)))
    assert not v.valid and v.findings[0].kind in ("digest", "generation")


def test_task_validation():
    with pytest.raises(TaskError):
        GenerateTask((), 3)
    with pytest.raises(TaskError):
        GenerateTask((1,), 3, temperature=-1.0)
    with pytest.raises(TaskError):
        EmbedTask(("a", 3))


# --------------------------------------------------------------------------- the catalogue


@pytest.mark.parametrize("name", list(cheats.CATALOGUE))
def test_catalogue_full_replay_refutes_and_dispute_lands_exactly(name, cheat_cases, verifier):
    cheat, (kind, record, element), b = cheat_cases[name]
    assert not verifier.full_replay(b).valid
    d = dispute(b, cheat, verifier)
    assert (d.kind, d.record, d.element) == (kind, record, element), d
    if kind == "serving":
        assert d.proof is None  # the cheater lost by failing to open its own commitment
    else:
        assert d.result.defendant_wrong, d.result
        assert check_one_step(d.proof).defendant_wrong


def test_forged_attention_end_lies_at_layer_0s_attention_and_forges_only_the_last_state(model, verifier):
    """The swarm's element-program villain, as make_cheater builds it for any Llama:
    full replay refutes it, the dispute lands on record 7 (an attention) at its last
    element, and its program states are the honest ones but for a final state whose
    output is the element it committed (so the game can only end at the last step)."""
    from refute.verifier import programs
    from refute.verifier.swarm import other_task

    cheat = cheats.make_cheater("forged_attention_end", model, KEY, other=other_task("tiny"))
    b = cheat.prove(TASK, seed=SEED)
    assert not verifier.full_replay(b).valid
    rec = b.trace[7]
    assert rec.kind == "attention"
    o = cheat.open(b, [7])[7]
    last = o.output.numel() - 1
    d = dispute(b, cheat, verifier)
    assert (d.kind, d.record, d.element) == ("compute", 7, last)
    honest = programs.program_states("attention", rec.attr_dict(), o.inputs, last)
    forged = cheat.program_states(b.trace, lambda i: cheat.open(b, [i])[i])(7, last)
    assert forged[:-1] == honest[:-1] and forged[-1] != honest[-1]
    committed = o.output.reshape(-1)[last:].numpy().tobytes()
    assert programs.program_output("attention", rec.attr_dict(), forged[-1]) == committed
    assert programs.program_output("attention", rec.attr_dict(), honest[-1]) != committed
    assert Prover(model, KEY).program_states(b.trace, lambda i: cheat.open(b, [i])[i]) is None


@pytest.mark.parametrize("name", list(cheats.CATALOGUE))
def test_spot_replay_catch_rate_matches_the_formula(name, cheat_cases, verifier):
    """Measured over 200 trials of k=3 segments: within 4 standard deviations of
    1 - C(S-m, k)/C(S, k), m counted by recomputing every segment from its served
    boundary tensors."""
    cheat, _, b = cheat_cases[name]
    n, k, trials = len(b.trace), 3, 200
    segments = verifier.program(b).segments
    if verifier.structure(b):
        p = 1.0
    else:
        opened = cheat.open(b, range(n))

        def misopened(r):  # a served tensor that is not its committed root (deferred roots commit nothing)
            o = opened[r.index]
            pairs = [(o.output, r.output)] + [(o.inputs[x.name], x.root) for x in r.inputs]
            return any(root != DEFERRED and tensor_root(t) != root for t, root in pairs)

        def bad(segment):  # a misopened record, or recomputed from its boundary it misses its checkpoint
            if any(misopened(b.trace[i]) for i in segment):
                return True
            ours = {}
            for i in segment:
                r, o = b.trace[i], opened[i]
                ins = {x.name: ours.get(x.source, o.inputs[x.name]) for x in r.inputs}
                ours[i] = OPERATORS[r.kind](**ins, **r.attr_dict(), backend="reference")
            return tensor_root(ours[segment[-1]]) != b.trace[segment[-1]].output

        # a generation's logits are always opened (not recomputed), to re-derive the tokens
        always = misopened(b.trace[n - 1]) or expected_tokens(TASK, b.claim.seed, opened[n - 1].output, len(b.tokens)) != list(b.tokens)
        p = 1.0 if always else catch_probability(len(segments), sum(bad(s) for s in segments), k)
        assert 0 < p

    class Cached:  # the prover's answers are deterministic: ask once, serve every trial
        def __init__(self):
            self.all = cheat.open(b, range(n))

        def open(self, bundle, indices):
            return {i: self.all[i] for i in indices}

    source = Cached()
    caught = sum(not verifier.spot_replay(b, source, k, random.Random(t)).valid for t in range(trials))
    sigma = (p * (1 - p) / trials) ** 0.5
    assert abs(caught / trials - p) <= 4 * sigma + 1e-9, (caught, trials, p)


# --------------------------------------------------------------------------- the one-step


def test_one_step_on_honest_elements_sides_with_the_defendant(bundle, honest):
    """Every operator kind: an element recomputed from its proven input slices
    equals the full operator's element (so an honest defendant always wins)."""
    rng = random.Random(1)
    opened = honest.open(bundle, range(len(bundle.trace)))
    full = honest.full_trace(bundle)
    seen = set()
    for r in full:
        o = opened[r.index]
        for e in {0, o.output.numel() - 1, rng.randrange(o.output.numel())}:
            res = check_one_step(compute_one_step(bundle, r.index, e, o.output, o, full))
            assert not res.defendant_wrong, (r.kind, e, res)
        seen.add(r.kind)
    assert seen == {"embedding", "rms_norm", "linear", "rotary", "attention", "add", "silu", "mul"}


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_check_one_step_is_total_and_rejects_tampering(bundle, honest, data):
    """Any tampered part of a valid one-step is decided (never raises) against
    whoever supplied it: a bad input opening or record proof loses for the
    challenger; a bad output opening loses for the defendant."""
    trace = honest.full_trace(bundle)
    i = data.draw(st.integers(0, len(trace) - 1))
    o = honest.open(bundle, [i])[i]
    e = data.draw(st.integers(0, o.output.numel() - 1))
    p = compute_one_step(bundle, i, e, o.output, o, trace)
    part = data.draw(st.sampled_from(["input", "output", "record", "element", "garbage"]))
    if part == "input":
        name = data.draw(st.sampled_from(sorted(p.input_openings)))
        op = p.input_openings[name]
        pos = data.draw(st.integers(0, len(op.chunks) - 1))
        chunks = bytearray(op.chunks)
        chunks[pos] ^= 1 << data.draw(st.integers(0, 7))
        bad = dict(p.input_openings, **{name: RangeProof(op.header, op.start, op.stop, bytes(chunks), op.siblings)})
        res = check_one_step(OneStepProof(**{**p.__dict__, "input_openings": bad}))
        # a flipped byte outside the opened elements is padding of the chunk: still caught by the root
        assert not res.defendant_wrong
    elif part == "output":
        op = p.output_opening
        chunk = bytearray(op.chunk)
        chunk[data.draw(st.integers(0, len(chunk) - 1))] ^= 1 << data.draw(st.integers(0, 7))
        res = check_one_step(OneStepProof(**{**p.__dict__, "output_opening": ElementProof(op.header, op.index, bytes(chunk), op.siblings)}))
        assert res.defendant_wrong
    elif part == "record":
        other = data.draw(st.integers(0, len(trace) - 1).filter(lambda j: j != i))
        res = check_one_step(OneStepProof(**{**p.__dict__, "record_proof": trace.prove_record(other)}))
        assert not res.defendant_wrong
    elif part == "element":
        res = check_one_step(OneStepProof(**{**p.__dict__, "element": data.draw(st.integers(-5, 10**6).filter(lambda x: x != e))}))
        assert not res.defendant_wrong
    else:
        res = check_one_step(data.draw(st.sampled_from([None, 3, "x", OneStepProof("compute", None, None, None)])))
        assert not res.defendant_wrong


def test_template_one_step_accepts_honest_records(bundle, verifier, model):
    prog = program_of(model)
    assert input_binding("ids") in {i.root for i in prog.template(0).inputs}
    for idx in (0, 1, len(bundle.trace) - 1):
        p = template_one_step(bundle, prog, idx)
        res = check_one_step(p)
        assert not res.defendant_wrong and "wired to their sources" in res.reason, res
        wrong = OneStepProof(**{**p.__dict__, "template": prog.template((idx + 1) % len(prog))})
        assert not check_one_step(wrong).defendant_wrong


def test_bisection_rounds_are_the_tree_depth(cheat_cases, verifier):
    """Record rounds: the depth of the full prefix up to the pinned checkpoint (the
    first one after the lie); then the output tensor's depth."""
    cheat, _, b = cheat_cases["perturbed_activation"]
    d = dispute(b, cheat, verifier)
    pinned = next(c for c in verifier.program(b).checkpoints if c >= d.record)
    assert pinned > d.record
    out_numel = cheat.open(b, [d.record])[d.record].output.numel()
    chunks = -(-out_numel * 4 // 256)
    assert d.rounds == pinned.bit_length() + max(chunks - 1, 0).bit_length()


def test_broken_wiring_is_refuted_and_its_template_one_step_decides(model, verifier):
    """A trace whose record reads an input that is not its source's output: strict
    parsing refuses the bundle, a lenient one holds it, full replay reports the
    broken edge, and the dispute goes to the template one-step, whose wiring check
    decides against the prover (the on-chain twin: test_contracts_referee)."""
    checkpoints = set(program_of(model).checkpoints)  # a claim commits only edges from checkpoints
    r = next(r for r in Prover(model, KEY).prove(TASK, seed=SEED).trace
             if next((i.source in checkpoints for i in r.inputs if not i.external), False))
    cheat = cheats.BrokenWiring(model, KEY, r.index, element=5)
    text = cheat.prove(TASK, seed=SEED).to_json()
    with pytest.raises(BundleError, match="another root"):
        Bundle.from_json(text)
    b = Bundle.from_json(text, check_wiring=False)
    verdict = verifier.full_replay(b)
    assert [(f.kind, f.record) for f in verdict.findings] == [("wiring", r.index)]
    d = dispute(b, cheat, verifier)
    assert (d.kind, d.record, d.element) == ("template", r.index, None)
    assert d.result.defendant_wrong and "is not record" in d.result.reason


# --------------------------------------------------------------------------- real models


@pytest.mark.slow
def test_catalogue_on_smollm2():
    """One entry of each dispute kind (compute, template, sampling, serving) against
    the real SmolLM2-135M: full replay refutes, the dispute lands where each lie
    is, the one-step decides against it. (Every entry runs on the tiny model
    above; ``make demo`` runs a random entry on SmolLM2 through the whole swarm.)"""
    from refute.compute.llama import smollm2

    real = smollm2(Executor("reference"))
    v = Verifier({"smollm2.generate": real})
    task = GenerateTask((5, 9, 11, 4), 3, temperature=3.0, sequence=3)
    honest_b = Prover(real, KEY).prove(task, seed=SEED)
    assert v.full_replay(honest_b).valid
    kinds = ("perturbed_activation", "flipped_weight_bit", "wrong_seed", "mismatched_serving")
    for name, (cheat, (kind, record, element)) in catalogue(real, task, only=kinds).items():
        b = cheat.prove(task, seed=SEED)
        assert not v.full_replay(b).valid, name
        d = dispute(b, cheat, v)
        assert (d.kind, d.record, d.element) == (kind, record, element), (name, d)
        assert kind == "serving" or check_one_step(d.proof).defendant_wrong, (name, d.result)


@pytest.mark.slow
def test_minilm_claims_and_a_perturbed_embedding(tmp_path):
    from refute.compute.bert import minilm

    real = minilm(Executor("reference"))
    v = Verifier({"minilm.embed": real})
    task = EmbedTask(("a verifier replays sampled work", "the liar is slashed"))
    b = Prover(real, KEY).prove(task)
    assert v.full_replay(b).valid and v.spot_replay(b, Prover(real, KEY), 6, random.Random(2)).valid
    cheat = cheats.PerturbedActivation(real, KEY, 40, 5)
    cb = cheat.prove(task)
    assert not v.full_replay(cb).valid
    d = dispute(cb, cheat, v)
    assert (d.kind, d.record, d.element) == ("compute", 40, 5) and check_one_step(d.proof).defendant_wrong


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_mutated_bundles_are_rejected_or_refuted_never_crash(bundle, verifier, data):
    """Any single mutation of a bundle's JSON either fails to parse with
    BundleError or parses into a bundle that verification refutes (or that is
    unchanged in meaning); nothing else escapes."""
    text = bundle.to_json()
    kind = data.draw(st.sampled_from(["byte", "cut", "insert"]))
    i = data.draw(st.integers(0, len(text) - 1))
    if kind == "byte":
        mutated = text[:i] + data.draw(st.sampled_from(list('0123456789abcdef"{}[],:x -'))) + text[i + 1:]
    elif kind == "cut":
        mutated = text[:i]
    else:
        mutated = text[:i] + data.draw(st.text(max_size=5)) + text[i:]
    try:
        b = Bundle.from_json(mutated)
    except BundleError:
        return
    v = verifier.full_replay(b)
    same = (b.signed == bundle.signed and b.task == bundle.task and b.tokens == bundle.tokens
            and b.trace.root == bundle.trace.root)
    assert v.valid == same


# --------------------------------------------------------------------------- checkpointed claims


def test_the_program_marks_layer_outputs_as_checkpoints_and_claims_commit_only_them(model, bundle, honest):
    from refute.compute.program import CHECKPOINT, ZERO_ROOT, check_against_template
    from refute.compute.trace import checkpointed

    program = program_of(model)
    assert program.checkpoints == (0, 16, 32, 34)
    assert [(s.start, s.stop) for s in program.segments] == [(0, 1), (1, 17), (17, 33), (33, 35)]
    assert all(t.output == (CHECKPOINT if t.index in program.checkpoints else ZERO_ROOT) for t in program.templates)
    full = honest.full_trace(bundle)
    assert bundle.trace.root == bundle.claim.trace_root == checkpointed(full, program.checkpoints).root
    roots = {k: tensor_root(v) for k, v in TASK.sequence_tensors(bundle.tokens).items()}
    for r in bundle.trace:
        assert check_against_template(r, program.template(r.index), roots) == []
    # the checkpoint rule binds a claim's records, not a dispute's full prefix
    deferred_checkpoint = dataclasses.replace(bundle.trace[16], output=DEFERRED)
    committed_elsewhere = full[15]
    assert check_against_template(deferred_checkpoint, program.template(16), roots) == ["output deferred at a checkpoint"]
    assert check_against_template(committed_elsewhere, program.template(15), roots) == ["output committed off the checkpoints"]
    assert check_against_template(committed_elsewhere, program.template(15), roots, checkpointed=False) == []


def test_a_prover_whose_full_trace_misses_its_own_checkpoint_loses_the_dispute(model, verifier):
    """A perturbed claim whose prover, challenged, hands in the honest full trace: it
    does not end at the checkpoint the claim committed, so it cannot answer the pin."""
    cheat = cheats.PerturbedActivation(model, KEY, 10, 7)
    b = cheat.prove(TASK, seed=SEED)
    honest_full = Prover(model, KEY).full_trace(b)
    cheat.full_trace = lambda bundle: honest_full
    d = dispute(b, cheat, verifier)
    assert (d.kind, d.record) == ("serving", 16) and "checkpoint 16" in d.note


def test_spot_replay_finds_the_record_a_segment_departed_at(model, verifier):
    cheat = cheats.PerturbedActivation(model, KEY, 12, 3)
    b = cheat.prove(TASK, seed=SEED)
    verdict = verifier.spot_replay(b, cheat, len(verifier.program(b).segments), random.Random(0))
    assert [(f.kind, f.record, f.element) for f in verdict.findings] == [("compute", 12, 3)]
