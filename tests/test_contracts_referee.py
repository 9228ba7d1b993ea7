"""The on-chain referee (contracts/src/Referee.sol, TensorMerkle.sol, RecordCodec.sol)
against its Python twin: compute/merkle.py, compute/trace.py and
verifier/dispute.check_one_step.

* TensorMerkle: openings of hypothesis-drawn tensors verify to the same bytes as
  ``verify_range``; the root of small in-memory data is ``tensor_root``; a tampered
  chunk byte, sibling or index reverts. RecordCodec: decoded fields equal the record's,
  non-canonical encodings revert, record proofs verify against ``Trace`` roots. Both
  libraries are internal, so a small harness contract (source below) is compiled
  for these tests only.
* decideCompute: for every operator kind, honest elements give ``False`` like
  check_one_step (the tiny Llama's records, plus synthetic records of the kinds the
  Llama does not use, with special values); tampered outputs give ``True``; tampered
  or misplaced input openings revert (check_one_step: the challenger loses); the
  catalogue's compute cheats are refuted on chain.
* decideTemplate / decideSampling: the catalogue's template cheats (flipped_weight_bit,
  different_model, skipped_layer, copied_output) and sampling cheat (wrong_seed) are
  refuted on chain like check_one_step; honest records fit their templates and honest
  tokens stand; bad evidence reverts; compact sampling on synthetic logits rows (greedy,
  Gumbel, special values) agrees with check_one_step; top-k / top-p revert Unsupported.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import struct
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from eth_tester.exceptions import TransactionFailed
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_models_tiny import LLAMA, random_llama_weights
from test_verifier import KEY, SEED, TASK, catalogue
from web3 import EthereumTesterProvider, Web3
from web3.exceptions import ContractCustomError, ContractLogicError

from refute.compute.executor import OPERATORS, Executor
from refute.compute.llama import LlamaDecoder
from refute.compute.merkle import RangeProof, TensorTree, tensor_root
from refute.compute.trace import Trace, TraceInput, TraceRecord
from refute.contracts.build import SOURCE_DIR, compile_sources
from refute.contracts.client import claim_tuple
from refute.contracts.referee import (
    RefereeContract,
    RefereeError,
    compute_args,
    element_from_range,
    sampling_evidence,
    template_evidence,
)
from refute.verifier.dispute import OneStepProof, check_one_step, compute_one_step, dispute
from refute.compute.merkle import verify_element
from refute.compute.program import program_of
from refute.verifier.prover import Prover
from refute.verifier.tasks import GenerateTask
from refute.verifier.verify import Verifier

REVERTED = (ContractLogicError, ContractCustomError, TransactionFailed)

HARNESS = """
// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;
import {Opening} from "./IReferee.sol";
import {TensorMerkle} from "./TensorMerkle.sol";
import {RecordCodec} from "./RecordCodec.sol";
contract Harness {
    function verify(bytes32 root, Opening calldata o) external pure returns (bytes memory data) {
        (, data) = TensorMerkle.verifyRange(root, o);
    }
    function rootOf(bytes calldata header, bytes calldata data) external pure returns (bytes32) {
        return TensorMerkle.rootOf(header, data);
    }
    function decode(bytes calldata rec) external pure returns (RecordCodec.Record memory) {
        return RecordCodec.decode(rec);
    }
    function verifyRecord(bytes32 root, bytes32 h, uint64 index, uint64 count, bytes32[] calldata s)
        external pure returns (bool) {
        RecordCodec.verifyRecord(root, h, index, count, s);
        return true;
    }
}
"""


@pytest.fixture(scope="module")
def harness(tmp_path_factory):
    src = tmp_path_factory.mktemp("harness")
    for name in ("TensorMerkle.sol", "RecordCodec.sol", "IReferee.sol", "IProgramReferee.sol", "ClaimRegistry.sol",
                 "IStakeManager.sol"):
        shutil.copy(SOURCE_DIR / name, src / name)
    (src / "Harness.sol").write_text(HARNESS)
    art = compile_sources(src)["Harness"]
    w3 = Web3(EthereumTesterProvider())
    tx = w3.eth.contract(abi=art.abi, bytecode=art.bytecode).constructor().transact({"from": w3.eth.accounts[0]})
    return w3.eth.contract(address=w3.eth.wait_for_transaction_receipt(tx).contractAddress, abi=art.abi)


def _opening(p: RangeProof) -> tuple:
    return (p.header.encode(), p.start, p.stop, p.chunks, list(p.siblings))


def _reverts(fn) -> bool:
    try:
        fn.call({"gas": 100_000_000})
    except REVERTED:
        return True
    return False


DTYPES = {"f32": torch.float32, "i64": torch.int64, "bool": torch.bool, "bf16": torch.bfloat16, "i32": torch.int32}


@st.composite
def tensors(draw, max_numel: int = 300) -> torch.Tensor:
    dtype = DTYPES[draw(st.sampled_from(sorted(DTYPES)))]
    shape = tuple(draw(st.lists(st.integers(1, 12), min_size=1, max_size=3)))
    n = int(np.prod(shape))
    if n > max_numel:
        shape, n = (max_numel,), max_numel
    raw = draw(st.binary(min_size=n * 8, max_size=n * 8))
    t = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    if dtype == torch.bool:
        return (t[:n] & 1).bool().reshape(shape)
    return t.view(dtype)[:n].clone().reshape(shape)


# --------------------------------------------------------------------------- TensorMerkle


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(t=tensors(), data=st.data())
def test_range_openings_verify_to_the_python_bytes(harness, t, data):
    tree = TensorTree.from_tensor(t)
    n = t.numel()
    a = data.draw(st.integers(0, n - 1))
    b = data.draw(st.integers(a + 1, n))
    p = tree.prove_range(a, b)
    from refute.compute.merkle import verify_range

    assert bytes(harness.functions.verify(tree.root, _opening(p)).call()) == verify_range(tree.root, p)
    assert bytes(harness.functions.rootOf(tree.header.encode(), tree.data).call()) == tensor_root(t)
    # Tampering: a chunk byte, a sibling, the range, the header.
    what = data.draw(st.sampled_from(["chunk", "sibling", "start", "header"]))
    h, start, stop, chunks, sib = _opening(p)
    if what == "chunk":
        i = data.draw(st.integers(0, len(chunks) - 1))
        chunks = chunks[:i] + bytes([chunks[i] ^ 1]) + chunks[i + 1 :]
    elif what == "sibling" and sib:
        i = data.draw(st.integers(0, len(sib) - 1))
        sib = sib[:i] + [bytes([sib[i][0] ^ 1]) + sib[i][1:]] + sib[i + 1 :]
    elif what == "sibling":
        sib = [bytes(32)]
    elif what == "start":
        # Moving a range within its chunks is another valid opening; an empty range or
        # one past the end is not.
        start, stop = data.draw(st.sampled_from([(start, start), (start, n + 1)]))
    else:
        h = bytes([h[0] % 6 + 1]) + h[1:]
    assert _reverts(harness.functions.verify(tree.root, (h, start, stop, chunks, sib)))


def test_root_of_empty_and_exact_chunk_tensors(harness):
    for t in (torch.zeros(0, dtype=torch.float32), torch.arange(64, dtype=torch.float32), torch.arange(65, dtype=torch.int64)):
        tree = TensorTree.from_tensor(t)
        assert bytes(harness.functions.rootOf(tree.header.encode(), tree.data).call()) == tree.root


# --------------------------------------------------------------------------- RecordCodec


@st.composite
def records(draw) -> TraceRecord:
    kind = draw(st.sampled_from(["linear", "rotary", "attention", "add", "layer_norm"]))
    index = draw(st.integers(1, 2**40))
    attrs = {
        "linear": lambda: {"slices": draw(st.integers(-(2**63), 2**63 - 1))},
        "rotary": lambda: {"head_dim": draw(st.integers(0, 2**20)), "theta": draw(st.floats(width=32, allow_nan=False))},
        "attention": lambda: {"num_heads": 9, "num_kv_heads": 3, "scale": draw(st.floats(width=32, allow_nan=False)),
                              "causal": draw(st.booleans()), "slices": 2},
        "add": dict,
        "layer_norm": lambda: {"eps": draw(st.floats(width=32, allow_nan=False))},
    }[kind]()
    names = {"linear": ["x", "weight", "bias"], "rotary": ["x", "positions"], "add": ["x", "y"],
             "attention": ["q", "k", "v", "key_mask", "q_positions", "k_positions"], "layer_norm": ["x", "weight", "bias"]}[kind]
    inputs = [TraceInput(n, draw(st.binary(min_size=32, max_size=32)),
                         draw(st.sampled_from([2**64 - 1, 0, index - 1]))) for n in names]
    return TraceRecord(index, kind, attrs, inputs, draw(st.binary(min_size=32, max_size=32)))


def _attr_value(tag: bytes, value: int, v) -> bool:
    if tag == b"i":
        return value == v
    if tag == b"f":
        return value == struct.unpack(">I", struct.pack(">f", v))[0]
    return value == int(v)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(r=records(), data=st.data())
def test_records_decode_to_their_fields_and_tampering_reverts(harness, r, data):
    index, kind, attrs, inputs, output = harness.functions.decode(r.encode()).call()
    assert (index, kind.decode(), bytes(output)) == (r.index, r.kind, r.output)
    assert [a[0].decode() for a in attrs] == [k for k, _ in r.attrs]
    assert all(_attr_value(a[1], a[2] if a[1] != b"i" else a[2] - (1 << 256 if a[2] >> 255 else 0), v)
               for a, (_, v) in zip(attrs, r.attrs))
    assert [(i[0].decode(), i[1], bytes(i[2])) for i in inputs] == [(i.name, i.source, i.root) for i in r.inputs]
    enc = r.encode()
    bad = data.draw(st.sampled_from([enc + b"\x00", enc[:-1], b"\x21" + enc[1:], enc[:1] + b"\x02" + enc[2:],
                                     enc[:10] + b"\x00" + enc[11:]]))
    assert _reverts(harness.functions.decode(bad))


def test_unsorted_attributes_and_bad_bools_revert(harness):
    r = TraceRecord(3, "attention", {"num_heads": 2, "num_kv_heads": 1, "scale": 0.5, "causal": True, "slices": 2},
                    [TraceInput(n, bytes(32)) for n in ("q", "k", "v", "key_mask", "q_positions", "k_positions")], bytes(32))
    enc = r.encode()
    i = enc.index(b"causalb\x01") + 7
    assert _reverts(harness.functions.decode(enc[:i] + b"\x02" + enc[i + 1 :]))
    # Swap the first two attribute entries ("causal" and "num_heads"): unsorted.
    a0 = enc.index(b"\x06causal")
    a1 = enc.index(b"\x09num_heads")
    a2 = enc.index(b"\x0cnum_kv_heads")
    assert _reverts(harness.functions.decode(enc[:a0] + enc[a1:a2] + enc[a0:a1] + enc[a2:]))


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 40), data=st.data())
def test_record_proofs_verify_against_trace_roots(harness, n, data):
    recs = [TraceRecord(i, "add", {}, [TraceInput("x", bytes([i]) * 32), TraceInput("y", bytes(32))], bytes([i + 1]) * 32)
            for i in range(n)]
    trace = Trace(recs)
    i = data.draw(st.integers(0, n - 1))
    p = trace.prove_record(i)
    args = (trace.root, recs[i].hash(), i, n, list(p.siblings))
    assert harness.functions.verifyRecord(*args).call()
    assert _reverts(harness.functions.verifyRecord(trace.root, recs[i].hash(), (i + 1) % n, n, list(p.siblings))) or n == 1
    assert _reverts(harness.functions.verifyRecord(trace.root, bytes(32), i, n, list(p.siblings)))


# --------------------------------------------------------------------------- decideCompute


@pytest.fixture(scope="module")
def referee():
    return RefereeContract()


@pytest.fixture(scope="module")
def model():
    return LlamaDecoder(LLAMA, random_llama_weights(LLAMA), Executor("reference"))


@pytest.fixture(scope="module")
def honest(model):
    return Prover(model, KEY)


@pytest.fixture(scope="module")
def bundle(honest):
    return honest.prove(TASK, seed=SEED)


def _agree(referee, proof) -> bool:
    """The on-chain decision, asserted equal to check_one_step's (a revert is the
    challenger's failed move: check_one_step says False)."""
    want = check_one_step(proof)
    try:
        got = referee.decide(proof)
    except RefereeError as e:
        assert not want.defendant_wrong, (e, want)
        return False
    assert got == want.defendant_wrong, (got, want)
    return got


def test_honest_elements_of_every_llama_record_kind(referee, bundle, honest):
    rng = random.Random(2)
    opened = honest.open(bundle, range(len(bundle.trace)))
    full = honest.full_trace(bundle)  # a compute one-step is over the defendant's full prefix
    seen: dict[str, int] = {}
    for r in full:
        if seen.get(r.kind, 0) >= 2:
            continue
        o = opened[r.index]
        for e in (0, rng.randrange(o.output.numel()), o.output.numel() - 1):
            p = compute_one_step(bundle, r.index, e, o.output, o, full)
            assert referee.decide(p) is False, (r.kind, e)
            assert not check_one_step(p).defendant_wrong
        seen[r.kind] = seen.get(r.kind, 0) + 1
    assert set(seen) == {"embedding", "rms_norm", "linear", "rotary", "attention", "add", "silu", "mul"}


def test_tampered_outputs_are_wrong_and_tampered_inputs_revert(referee, bundle, honest):
    rng = random.Random(3)
    opened = honest.open(bundle, range(len(bundle.trace)))
    trace = honest.full_trace(bundle)
    for r in trace[:16]:
        o = opened[r.index]
        e = rng.randrange(o.output.numel())
        bad = o.output.clone()
        bad.reshape(-1).view(torch.int32)[e] ^= 1 << rng.randrange(32)
        assert _agree(referee, compute_one_step(bundle, r.index, e, bad, o, trace)) is True
        p = compute_one_step(bundle, r.index, e, o.output, o, trace)
        name = sorted(p.input_openings)[0]
        op = p.input_openings[name]
        flipped = RangeProof(op.header, op.start, op.stop, bytes([op.chunks[0] ^ 1]) + op.chunks[1:], op.siblings)
        p2 = OneStepProof(**{**p.__dict__, "input_openings": {**p.input_openings, name: flipped}})
        with pytest.raises(RefereeError, match="RootMismatch"):
            referee.decide(p2)
        assert not check_one_step(p2).defendant_wrong
        # Another (valid) slice than the element needs: the challenger loses.
        full = TensorTree.from_tensor(o.inputs[name])
        moved = full.prove_range(0, full.header.numel) if (op.start, op.stop) != (0, full.header.numel) else None
        if moved is not None:
            p3 = OneStepProof(**{**p.__dict__, "input_openings": {**p.input_openings, name: moved}})
            with pytest.raises(RefereeError, match="WrongSlice|BadInput"):
                referee.decide(p3)
            assert not check_one_step(p3).defendant_wrong


def test_a_wrong_output_header_is_wrong(referee, bundle, honest):
    full = honest.full_trace(bundle)
    i = next(r.index for r in full if r.kind == "rms_norm")
    o = honest.open(bundle, [i])[i]
    p = compute_one_step(bundle, i, 0, o.output[..., :-1].contiguous(), o, full)
    assert _agree(referee, p) is True


def _synthetic(kind: str, attrs: dict, inputs: dict[str, torch.Tensor], e: int) -> OneStepProof:
    """A compute one-step on a one-record trace of ``kind`` on ``inputs`` (honest)."""
    out = OPERATORS[kind](**inputs, **attrs, backend="reference")
    r = TraceRecord(0, kind, attrs, [TraceInput(n, tensor_root(t)) for n, t in inputs.items()], tensor_root(out))
    trace = Trace([r])
    shapes = {n: tuple(t.shape) for n, t in inputs.items()}
    from refute.verifier.dispute import element_inputs

    need = element_inputs(kind, r.attr_dict(), shapes, tuple(out.shape), e)
    if kind == "embedding":
        d = out.shape[-1]
        tid = int(inputs["ids"].reshape(-1)[e // d])
        need["table"] = (tid * d + e % d, tid * d + e % d + 1)
    openings = {n: TensorTree.from_tensor(inputs[n]).prove_range(a, b) for n, (a, b) in need.items()}
    claim = SimpleNamespace(trace_root=trace.root)
    return OneStepProof("compute", claim, r, trace.prove_record(0), element=e,
                        output_opening=TensorTree.from_tensor(out).prove_element(e), input_openings=openings)


def _specials(rng: np.random.Generator, shape: tuple[int, ...], special: bool) -> torch.Tensor:
    x = rng.normal(size=shape).astype(np.float32) * np.float32(rng.choice([1e-30, 1.0, 1e20]))
    if special:
        flat = x.reshape(-1)
        flat[rng.integers(0, flat.size)] = rng.choice([np.inf, -np.inf, np.nan, 0.0, 1e-44, 3e38]).astype(np.float32)
    return torch.from_numpy(x)


@pytest.mark.parametrize("kind", ["layer_norm", "rms_norm", "l2_normalize", "log_softmax", "gelu_erf", "silu", "add",
                                  "mul", "mean_pool", "embedding", "linear", "rotary"])
def test_synthetic_records_of_every_kind(referee, kind):
    """Kinds the tiny Llama lacks, broadcasting, masks of both dtypes and special values."""
    rng = np.random.default_rng(hash(kind) % 2**32)
    for trial in range(3):
        special = trial == 2
        x = _specials(rng, (2, 3, 8), special)
        w, b = _specials(rng, (8,), False), _specials(rng, (8,), False)
        inputs, attrs = {"x": x}, {}
        if kind == "layer_norm":
            inputs, attrs = {"x": x, "weight": w, "bias": b}, {"eps": 1e-5}
        elif kind == "rms_norm":
            inputs, attrs = {"x": x, "weight": w}, {"eps": 1e-6}
        elif kind == "l2_normalize":
            attrs = {"eps": 1e-12}
        elif kind in ("add", "mul"):
            inputs = {"x": x, "y": w if trial == 1 else _specials(rng, (2, 3, 8), special)}
        elif kind == "mean_pool":
            mask = torch.from_numpy(rng.integers(0, 2, (2, 3)))
            inputs = {"x": x, "mask": mask.bool() if trial else mask}
        elif kind == "embedding":
            inputs = {"ids": torch.from_numpy(rng.integers(0, 5, (2, 3))), "table": _specials(rng, (5, 8), special)}
        elif kind == "linear":
            inputs, attrs = {"x": x, "weight": _specials(rng, (4, 8), special), "bias": _specials(rng, (4,), False)}, {"slices": 2}
            if trial == 1:
                del inputs["bias"]
        elif kind == "rotary":
            inputs = {"x": x, "positions": torch.from_numpy(rng.integers(0, 5000, (2, 3)))}
            attrs = {"head_dim": 4, "theta": 10000.0}
        n = OPERATORS[kind](**inputs, **attrs, backend="reference").numel()
        for e in {0, n - 1, int(rng.integers(0, n))}:
            assert _agree(referee, _synthetic(kind, attrs, inputs, e)) is False, (kind, trial, e)


@pytest.mark.parametrize("kind", ["layer_norm", "rms_norm", "l2_normalize"])
def test_norm_rows_mixing_fast_and_general_paths(referee, kind):
    """Rows whose elements leave RowOps' inlined fast paths partway (squares of |x| <
    2^-63, differences with fields < 25, subnormals, zeros, exact x == mean, huge
    values whose squares overflow), at widths that are not multiples of 8."""
    rng = np.random.default_rng(23)
    rows = [
        np.array([1.0, 1e-25, -3.0, 0.0, 1e-44, 2.5, -1e-30, 7.0, 1e-20, -0.0, 4.0, 1e-38, 3.0], np.float32),
        np.full(11, 1.25, np.float32),  # every x - mean = 0
        np.array([2.0, 2.0, 2.0, 2.0 + 2**-22, 2.0, 2.0, 2.0], np.float32),  # tiny differences
        np.array([3e19, -2e19, 1.0, 5e18, 1e-3], np.float32),  # squares overflow to inf
        (rng.normal(size=19) * np.exp2(rng.integers(-70, 40, 19))).astype(np.float32),
        np.array([1e-20, -3e-20, 2e-21, 5e-20, 1e-22, -4e-21], np.float32),  # below the mul fast path
    ]
    for x in rows:
        n = x.size
        t = torch.from_numpy(x.reshape(1, 1, n))
        w = torch.from_numpy(rng.normal(size=n).astype(np.float32))
        b = torch.from_numpy(rng.normal(size=n).astype(np.float32))
        if kind == "layer_norm":
            inputs, attrs = {"x": t, "weight": w, "bias": b}, {"eps": 1e-5}
        elif kind == "rms_norm":
            inputs, attrs = {"x": t, "weight": w}, {"eps": 1e-6}
        else:
            inputs, attrs = {"x": t.reshape(1, n)}, {"eps": 1e-12}
        for e in sorted({0, 1, n - 1, int(rng.integers(0, n))}):
            assert _agree(referee, _synthetic(kind, attrs, inputs, e)) is False, (kind, x, e)


def test_attention_with_padding_and_non_causal(referee):
    rng = np.random.default_rng(5)
    q, k, v = (torch.from_numpy(rng.normal(size=s).astype(np.float32)) for s in ((1, 3, 8), (1, 4, 4), (1, 4, 4)))
    inputs = {"q": q, "k": k, "v": v, "key_mask": torch.tensor([[True, False, True, True]]),
              "q_positions": torch.tensor([[1, 2, 3]]), "k_positions": torch.tensor([[0, 1, 2, 3]])}
    for causal in (True, False):
        attrs = {"num_heads": 2, "num_kv_heads": 1, "scale": 0.5, "causal": causal, "slices": 2}
        for e in range(0, 24, 5):
            assert _agree(referee, _synthetic("attention", attrs, inputs, e)) is False


@pytest.fixture(scope="module")
def cheat_cases(model):
    return {name: (c, where, c.prove(TASK, seed=SEED)) for name, (c, where) in catalogue(model).items()}


def test_catalogue_cheats_are_refuted_on_chain(referee, cheat_cases, model):
    """Every compute, template and sampling cheat of the catalogue: the on-chain
    decision is True, like check_one_step's."""
    verifier = Verifier({"smollm2.generate": model})
    decided: dict[str, int] = {}
    for name, (cheat, (kind, _, _), b) in cheat_cases.items():
        if kind not in ("compute", "template", "sampling"):
            continue
        d = dispute(b, cheat, verifier)
        assert d.kind == kind and d.proof is not None and d.result.defendant_wrong, name
        assert referee.decide(d.proof) is True, name
        decided[kind] = decided.get(kind, 0) + 1
    assert decided == {"compute": 4, "template": 4, "sampling": 1}


def _template_proof(bundle, program, i: int, trace=None, **over) -> OneStepProof:
    """The template one-step of record ``i`` of ``trace`` (default: the bundle's), its
    source records proven under that trace; ``over`` replaces fields."""
    trace = bundle.trace if trace is None else trace
    sources = tuple((trace[x.source], trace.prove_record(x.source)) for x in trace[i].inputs if not x.external)
    base = dict(claim=dataclasses.replace(bundle.claim, trace_root=trace.root), record=trace[i],
                record_proof=trace.prove_record(i), identity=program.identity,
                program_tree_root=program.templates.root, eos_token_id=program.eos_token_id,
                template=program.template(i), template_proof=program.prove_template(i), task=bundle.task,
                tokens=bundle.tokens, sources=sources)
    return OneStepProof("template", **{**base, **over})


def test_honest_records_fit_their_templates(referee, bundle, model):
    """Records binding every kind of external input (ids, weights, positions, the
    mask) fit; bad evidence reverts and check_one_step says False too."""
    program = program_of(model)
    picks, seen = [], set()
    for r in bundle.trace:
        if r.kind not in seen or r.index == len(bundle.trace) - 1:
            picks.append(r.index)
            seen.add(r.kind)
    for i in picks:
        p = _template_proof(bundle, program, i)
        assert referee.decide(p) is False and not check_one_step(p).defendant_wrong, i
    i = picks[1]
    bad = [
        ("WrongTemplate", dict(template=program.template(i + 1), template_proof=program.prove_template(i + 1))),
        ("ModelDigestMismatch", dict(identity=bytes(32))),
        ("BadRecordProof", dict(template_proof=program.prove_template(i + 1))),
        ("DigestMismatch", dict(tokens=bundle.tokens[:-1] + ((bundle.tokens[-1] + 1) % LLAMA.vocab_size,))),
    ]
    for err, over in bad:
        p = _template_proof(bundle, program, i, **over)
        assert not check_one_step(p).defendant_wrong
        with pytest.raises(RefereeError, match=err):
            referee.decide(p)


def test_a_record_with_a_wrong_task_input_misfits(referee, bundle, model):
    """A record whose positions (a task input) are not the task's: True on chain and in Python."""
    program = program_of(model)
    i = next(r.index for r in bundle.trace if r.kind == "rotary")
    r = bundle.trace[i]
    inputs = [TraceInput(x.name, tensor_root(torch.arange(1, 10).reshape(1, 9)) if x.name == "positions" else x.root,
                         x.source) for x in r.inputs]
    recs = list(bundle.trace)
    recs[i] = TraceRecord(r.index, r.kind, r.attrs, inputs, r.output)
    p = _template_proof(bundle, program, i, trace=Trace(recs))
    assert _agree(referee, p) is True


def test_broken_wiring_is_caught_by_the_template_one_step(referee, bundle, model):
    """A record whose internal input is not its source's output (everything else as
    the program says): True on chain and in Python; evidence with missing, misplaced
    or unproven source records reverts (and is False in Python)."""
    program = program_of(model)
    i = next(r.index for r in bundle.trace if r.kind == "linear" and any(not x.external for x in r.inputs))
    r = bundle.trace[i]
    wire = next(x for x in r.inputs if not x.external)
    recs = list(bundle.trace)
    recs[i] = TraceRecord(r.index, r.kind, r.attrs,
                          tuple(TraceInput(x.name, bytes(31) + b"\x01" if x is wire else x.root, x.source)
                                for x in r.inputs), r.output)
    broken = Trace(recs, check_wiring=False)
    p = _template_proof(bundle, program, i, trace=broken)
    assert check_one_step(p).defendant_wrong and "is not record" in check_one_step(p).reason
    assert referee.decide(p) is True
    honest = _template_proof(bundle, program, i)
    assert referee.decide(honest) is False and not check_one_step(honest).defendant_wrong
    other = next(x.index for x in bundle.trace if x.index != wire.source)
    bad = [
        ("SourceCount", dict(sources=())),
        ("WrongSource", dict(sources=((broken[other], broken.prove_record(other)),))),
        ("BadRecordProof", dict(sources=((broken[wire.source], broken.prove_record(other)),))),
    ]
    for err, over in bad:
        q = dataclasses.replace(p, **over)
        assert not check_one_step(q).defendant_wrong, err
        with pytest.raises(RefereeError, match=err):
            referee.decide(q)


#: The tiny model's digest preimage (identity, templates root, EOS), set by the fixture below.
_PREIMAGE: dict = {}


@pytest.fixture(scope="module", autouse=True)
def digest_preimage(model):
    p = program_of(model)
    _PREIMAGE.update(identity=p.identity, program_tree_root=p.templates.root, eos_token_id=p.eos_token_id)
    return _PREIMAGE


def _sampling_proof(bundle, logits: torch.Tensor, j: int, tokens=None) -> OneStepProof:
    last = len(bundle.trace) - 1
    tokens = bundle.tokens if tokens is None else tokens
    v = logits.shape[-1]
    row = len(bundle.task.prompt_ids) - 1 + j
    return OneStepProof("sampling", bundle.claim, bundle.trace[last], bundle.trace.prove_record(last), element=j,
                        logits_row=TensorTree.from_tensor(logits).prove_range(row * v, (row + 1) * v), vocab_size=v,
                        task=bundle.task, tokens=tokens, **_PREIMAGE)


def test_honest_tokens_stand(referee, bundle, honest):
    last = len(bundle.trace) - 1
    logits = honest.open(bundle, [last])[last].output
    v = logits.shape[-1]
    for j in range(len(bundle.tokens)):
        p = _sampling_proof(bundle, logits, j)
        assert referee.decide(p) is False and not check_one_step(p).defendant_wrong, j
        # The row's greedy token as the contender: the Gumbel draw still stands.
        row = logits.reshape(-1, v)[len(bundle.task.prompt_ids) - 1 + j]
        alt = int(torch.argmax(row))
        if alt != bundle.tokens[j]:
            assert referee.contract.functions.decideSampling(
                claim_tuple(bundle.claim), sampling_evidence(p, alt)).call({"gas": 100_000_000}) is False
    p = _sampling_proof(bundle, logits, 0)
    e = p.logits_row.start + 3
    assert verify_element(p.record.output, element_from_range(p.logits_row, e)) == logits.reshape(-1)[e:e + 1].numpy().tobytes()
    # Evidence that does not verify reverts: a logits row of another record.
    other = OneStepProof(**{**p.__dict__, "record": bundle.trace[last - 1], "record_proof": bundle.trace.prove_record(last - 1)})
    with pytest.raises(RefereeError):
        referee.decide(other)


def _synthetic_sampling(bundle, task: GenerateTask, logits: torch.Tensor, tokens: tuple[int, ...], j: int, seed: int):
    """A sampling one-step on a one-record trace whose output is ``logits`` (1, T, V)."""
    r = TraceRecord(0, "add", {}, [TraceInput("x", bytes(32)), TraceInput("y", bytes(32))], tensor_root(logits))
    trace = Trace([r])
    claim = dataclasses.replace(bundle.claim, trace_root=trace.root, input_digest=task.digest(),
                                output_digest=task.output_digest(tokens), seed=seed)
    v = logits.shape[-1]
    row = len(task.prompt_ids) - 1 + j
    return OneStepProof("sampling", claim, r, trace.prove_record(0), element=j,
                        logits_row=TensorTree.from_tensor(logits).prove_range(row * v, (row + 1) * v), vocab_size=v,
                        task=task, tokens=tokens, **_PREIMAGE)


def test_eos_rules_are_decided_on_chain(referee, bundle):
    """Tokens that are each the sampler's (greedy on rows that make them win) but go on
    after EOS or stop short without it: True on chain and in Python; a stop at EOS or
    at the budget stands; a preimage claiming another EOS reverts (False in Python)."""
    eos = _PREIMAGE["eos_token_id"]
    assert eos is not None
    v, prompt = 16, (3, 1)
    task = GenerateTask(prompt, 3, temperature=0.0, sequence=1)
    rng = np.random.default_rng(4)
    for tokens, wrong in [((5, eos, 7), True), ((5, 6), True), ((eos,), False), ((5, eos), False), ((5, 6, 7), False)]:
        x = rng.normal(size=(1, len(prompt) + len(tokens) - 1, v)).astype(np.float32)
        for j, t in enumerate(tokens):
            x[0, len(prompt) - 1 + j, t] = 50.0  # the greedy token
        p = _synthetic_sampling(bundle, task, torch.from_numpy(x), tokens, 0, 1)
        assert _agree(referee, p) is wrong, tokens
    lie = dataclasses.replace(p, eos_token_id=eos + 1)
    assert not check_one_step(lie).defendant_wrong
    with pytest.raises(RefereeError, match="ModelDigestMismatch"):
        referee.decide(lie)


def test_a_truncated_generation_is_refuted_by_a_sampling_one_step(referee, model):
    from refute.verifier import cheats

    liar = cheats.TruncatedGeneration(model, KEY)
    b = liar.prove(TASK, seed=SEED)
    d = dispute(b, liar, Verifier({"smollm2.generate": model}))
    assert d.kind == "sampling" and d.result.defendant_wrong and "without EOS" in d.result.reason, d
    assert referee.decide(d.proof) is True


@pytest.mark.parametrize("temperature", [0.0, 0.7, 3.0])
def test_compact_sampling_on_synthetic_rows(referee, bundle, temperature):
    """Greedy and Gumbel draws on rows with ties, NaN, +-inf and overflowing z: the
    sampler's token stands, any other token falls (where the evidence form decides it)."""
    from refute.kernels import sampling

    rng = np.random.default_rng(int(temperature * 10))
    v, prompt, n = 16, (3, 1), 3
    kinds = ["normal", "ties", "nan", "pinf", "overflow", "neginf"]
    for kind in kinds:
        x = rng.normal(size=(1, len(prompt) + n - 1, v)).astype(np.float32)
        row = x[0, -1]
        if kind == "ties":
            row[:] = np.round(row)
        elif kind == "nan":
            row[[5, 9]] = np.nan
        elif kind == "pinf":
            row[[4, 11]] = np.inf
        elif kind == "overflow":
            row[[2, 7]] = np.float32(3e38)
        elif kind == "neginf":
            row[[0, 1, 2, 3, 4]] = -np.inf
        logits = torch.from_numpy(x)
        task = GenerateTask(prompt, n, temperature=temperature, top_k=v if kind == "ties" else 0, sequence=5)
        seed = int(rng.integers(0, 2**63))
        want = int(sampling.sample_tokens(logits[0, -1:], seeds=seed, sequences=5, positions=len(prompt) + n - 1,
                                          temperature=temperature, backend="reference")[0])
        tokens = (1, 3, want)  # 2 is the model's EOS: not before the last token
        p = _synthetic_sampling(bundle, task, logits, tokens, n - 1, seed)
        assert referee.decide(p) is False and not check_one_step(p).defendant_wrong, kind
        for other in {(want + 1) % v, (want + 7) % v, 0}:
            if other == want:
                continue
            p = _synthetic_sampling(bundle, task, logits, (1, 3, other), n - 1, seed)
            assert _agree(referee, p) is True, (kind, other)


def test_compact_sampling_limits(referee, bundle):
    """top-k / top-p and a possibly all -inf row need the whole row: Unsupported; a
    token outside the vocabulary or too many tokens: wrong."""
    v, prompt = 8, (3, 1)
    x = torch.from_numpy(np.random.default_rng(1).normal(size=(1, 3, v)).astype(np.float32))
    for kw in (dict(top_k=3), dict(top_p=0.5)):
        task = GenerateTask(prompt, 2, temperature=1.0, sequence=0, **kw)
        with pytest.raises(RefereeError, match="Unsupported"):
            referee.decide(_synthetic_sampling(bundle, task, x, (1, 2), 1, 9))
    task = GenerateTask(prompt, 2, temperature=1.0, sequence=0)
    neg = x.clone()
    neg[0, -1] = -float("inf")
    p = _synthetic_sampling(bundle, task, neg, (1, 0), 1, 9)
    assert not check_one_step(p).defendant_wrong
    with pytest.raises(RefereeError, match="Unsupported"):
        referee.decide(p)
    assert _agree(referee, _synthetic_sampling(bundle, task, x, (1, v + 3), 1, 9)) is True
    short = GenerateTask(prompt, 1, temperature=1.0, sequence=0)
    assert _agree(referee, _synthetic_sampling(bundle, short, x, (1, 2), 1, 9)) is True


def test_embedding_claims_and_other_kinds_are_refused(referee, bundle):
    p = OneStepProof("template", bundle.claim, bundle.trace[0], bundle.trace.prove_record(0),
                     task=SimpleNamespace(), tokens=())
    with pytest.raises((ValueError, AttributeError)):
        referee.decide(p)
    with pytest.raises(ValueError):
        compute_args(p)
    with pytest.raises(ValueError, match="no on-chain decision"):
        referee.decide(OneStepProof("other", bundle.claim, bundle.trace[0], bundle.trace.prove_record(0)))
    with pytest.raises(ValueError):
        template_evidence(OneStepProof("sampling", bundle.claim, bundle.trace[0], bundle.trace.prove_record(0)))
    embed = dataclasses.replace(bundle.claim, task=2)
    for fn in (referee.contract.functions.decideTemplate(claim_tuple(embed), embed.trace_root, b"", b""),
               referee.contract.functions.decideSampling(claim_tuple(embed), b"")):
        with pytest.raises(REVERTED) as e:
            fn.call({"gas": 100_000_000})
        assert referee._error(e.value).name == "Unsupported"
