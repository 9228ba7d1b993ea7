"""Traces: record encoding, trace roots, proofs, the tracer, the two task tracers,
determinism across backends and where two traces first diverge."""

import json
import struct

import numpy as np
import pytest
import torch
from Crypto.Hash import keccak
from hypothesis import given, settings
from hypothesis import strategies as st
from test_models_tiny import BERT, LLAMA, bert_batch, llama_prompts, random_bert_weights, random_llama_weights

from refute.compute import trace as T
from refute.compute.bert import BertEncoder
from refute.compute.executor import OPERATORS, Executor
from refute.compute.generate import SamplingParams, generate
from refute.compute.llama import LlamaDecoder
from refute.compute.merkle import tensor_root
from refute.compute.trace import (
    EXTERNAL,
    RecordProof,
    RootCache,
    Trace,
    TraceError,
    TraceInput,
    TraceRecord,
    Tracer,
    diff_records,
    first_divergence,
    record_run,
    replay_record,
    trace_encoder,
    trace_generation,
    verify_record,
)
from refute.kernels import sampling


def k256(b: bytes) -> bytes:
    return keccak.new(digest_bits=256, data=b).digest()


def flip_bit(t: torch.Tensor, index: int, bit: int = 0) -> torch.Tensor:
    """A copy of float32 ``t`` with one bit of element ``index`` flipped."""
    out = t.clone()
    out.view(-1).view(torch.int32)[index] ^= 1 << bit
    return out


PROMPT, GENERATED = [5, 9, 3, 17, 4], [11, 30, 7, 2]


@pytest.fixture(scope="module")
def llama_w():
    return random_llama_weights(LLAMA)


@pytest.fixture(scope="module")
def llama_trace(llama_w):
    return trace_generation(LlamaDecoder(LLAMA, llama_w, Executor("reference")), PROMPT, GENERATED)


def rec(index=3, kind="rms_norm", attrs=None, inputs=None, output=b"\x07" * 32):
    attrs = {"eps": 1e-5} if attrs is None else attrs
    inputs = (TraceInput("x", b"\x01" * 32, 1), TraceInput("weight", b"\x02" * 32)) if inputs is None else inputs
    return TraceRecord(index, kind, attrs, inputs, output)


# --------------------------------------------------------------------------- record encoding


def test_record_encoding_is_the_documented_bytes():
    r = rec()
    want = (
        b"\x20\x01" + (3).to_bytes(8, "big")
        + b"\x08rms_norm"
        + b"\x01" + b"\x03eps" + b"f" + struct.pack(">f", 1e-5)
        + b"\x02"
        + b"\x01x" + (1).to_bytes(8, "big") + b"\x01" * 32
        + b"\x06weight" + b"\xff" * 8 + b"\x02" * 32
        + b"\x07" * 32
    )
    assert r.encode() == want
    assert r.hash() == k256(want)
    # float attributes are binary32: 1e-5 rounds to 0x3727c5ac
    assert r.encode()[24:29] == b"f" + bytes.fromhex("3727c5ac")


def test_attribute_types_and_order_are_canonical():
    r = rec(kind="attention", attrs={"scale": 0.125, "num_heads": 6, "causal": True, "slices": 2, "num_kv_heads": 2},
            inputs=tuple(TraceInput(n, bytes([i]) * 32) for i, n in enumerate(("q", "k", "v", "key_mask", "q_positions",
                                                                                   "k_positions"))))
    assert [k for k, _ in r.attrs] == ["causal", "num_heads", "num_kv_heads", "scale", "slices"]
    enc = r.encode()
    assert b"\x06causalb\x01" in enc
    assert b"\x09num_headsi" + (6).to_bytes(8, "big") in enc
    assert b"\x05scalef" + struct.pack(">f", 0.125) in enc
    # a float differing only beyond binary32 precision is the same attribute; one ulp is not
    same = rec(attrs={"eps": 1e-5 * (1 + 1e-12)})
    other = rec(attrs={"eps": float(struct.unpack(">f", struct.pack(">I", 0x3727C5AD))[0])})
    assert same.hash() == rec().hash() and other.hash() != rec().hash()
    # bool and int are different types, so different bytes
    a = rec(kind="attention", attrs={"scale": 0.125, "num_heads": 6, "causal": 1, "slices": 2, "num_kv_heads": 2},
            inputs=r.inputs)
    assert a.hash() != r.hash() and diff_records(a, r) == ["attrs"]


def test_record_decode_round_trips_and_rejects_every_malformation():
    r = rec()
    assert TraceRecord.decode(r.encode()) == r
    assert TraceRecord.decode(r.encode()).hash() == r.hash()
    enc = r.encode()
    bad = {
        "prefix": b"\x21" + enc[1:],
        "version": enc[:1] + b"\x02" + enc[2:],
        "truncated": enc[:-1],
        "trailing": enc + b"\x00",
        "bad tag": enc[:24] + b"q" + enc[25:],
        "unknown kind": enc[:10] + b"\x08rms_nore" + enc[19:],
    }
    for what, data in bad.items():
        with pytest.raises(TraceError):
            TraceRecord.decode(data)
        assert what  # (named for the failure message)
    # bool byte other than 0/1
    b = rec(kind="attention", attrs={"scale": 0.5, "num_heads": 1, "causal": True, "slices": 2, "num_kv_heads": 1},
            inputs=tuple(TraceInput(n, b"\x05" * 32) for n in ("q", "k", "v", "key_mask", "q_positions", "k_positions")))
    e = b.encode()
    i = e.index(b"causalb\x01") + 7
    with pytest.raises(TraceError, match="bool"):
        TraceRecord.decode(e[:i] + b"\x02" + e[i + 1:])
    # attributes out of order
    swapped = e.replace(b"\x06causalb\x01", b"").replace(b"\x06slicesi", b"\x06causalb\x01\x06slicesi")
    assert swapped != e
    with pytest.raises(TraceError, match="sorted"):
        TraceRecord.decode(swapped)


def test_records_must_match_their_operator_signature():
    with pytest.raises(TraceError, match="unknown operator"):
        rec(kind="conv2d")
    with pytest.raises(TraceError, match="attributes"):
        rec(attrs={})
    with pytest.raises(TraceError, match="attributes"):
        rec(attrs={"eps": 1e-5, "extra": 1})
    with pytest.raises(TraceError, match="subsequence"):
        rec(inputs=(TraceInput("weight", b"\x02" * 32), TraceInput("x", b"\x01" * 32)))
    with pytest.raises(TraceError, match="missing"):
        rec(inputs=(TraceInput("x", b"\x01" * 32),))
    with pytest.raises(TraceError, match="earlier"):
        rec(inputs=(TraceInput("x", b"\x01" * 32, 3), TraceInput("weight", b"\x02" * 32)))
    with pytest.raises(TraceError):
        rec(output=b"\x00" * 31)
    with pytest.raises(TraceError):
        TraceInput("X", b"\x00" * 32)
    with pytest.raises(TraceError):
        rec(attrs={"eps": [1]})
    # a linear's bias is optional, its weight is not
    TraceRecord(0, "linear", {"slices": 2}, (TraceInput("x", b"\x01" * 32), TraceInput("weight", b"\x02" * 32)), b"\x03" * 32)
    assert set(T.OPERATOR_SIGNATURES) == set(OPERATORS)


# --------------------------------------------------------------------------- trees and proofs


def spec_root(hashes):
    """The trace root recomputed from docs/protocol.md's text, independently of the module."""
    level = [k256(b"\x21" + h) for h in hashes]
    size = 1
    while size < len(level):
        size *= 2
    empty = b"\x00" * 32
    level += [empty] * (size - len(level))
    while len(level) > 1:
        level = [k256(b"\x22" + level[i] + level[i + 1]) for i in range(0, len(level), 2)]
    return k256(b"\x23" + len(hashes).to_bytes(8, "big") + level[0])


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 9])
def test_trace_root_and_every_proof(n):
    records = [rec(index=i, inputs=(TraceInput("x", bytes([i]) * 32), TraceInput("weight", b"\x02" * 32)),
                   output=bytes([100 + i]) * 32) for i in range(n)]
    t = Trace(records)
    assert t.root == spec_root([r.hash() for r in records])
    for i in range(n):
        p = t.prove_record(i)
        assert len(p.siblings) == (n - 1).bit_length()
        verify_record(t.root, t[i], p)
        verify_record(t.root, t[i].hash(), p)
        assert RecordProof.from_obj(json.loads(json.dumps(p.to_obj()))) == p
    if n > 1:
        p = t.prove_record(n - 1)
        with pytest.raises(TraceError):
            verify_record(t.root, t[0].hash(), p)  # another record at that index
        with pytest.raises(TraceError):
            verify_record(t.root, t[n - 1].hash(), RecordProof(0, n, p.siblings))  # wrong index
        with pytest.raises(TraceError):
            verify_record(t.root, t[n - 1], RecordProof(n - 1, n, p.siblings[:-1]))  # truncated
        sib = list(p.siblings)
        sib[0] = bytes([sib[0][0] ^ 1]) + sib[0][1:]
        with pytest.raises(TraceError):
            verify_record(t.root, t[n - 1], RecordProof(n - 1, n, tuple(sib)))
        with pytest.raises(TraceError):  # the count is committed: a longer trace's proof does not pass
            verify_record(t.root, t[n - 1], RecordProof(n - 1, 2 * n, p.siblings + (b"\x00" * 32,)))
    with pytest.raises(TraceError):
        verify_record(t.root, t[0], RecordProof(n, n, ()))


def test_trace_rejects_misnumbered_or_miswired_records():
    a = rec(index=0, inputs=(TraceInput("x", b"\x01" * 32), TraceInput("weight", b"\x02" * 32)), output=b"\x0a" * 32)
    b = rec(index=1, inputs=(TraceInput("x", b"\x0a" * 32, 0), TraceInput("weight", b"\x02" * 32)))
    Trace([a, b])
    with pytest.raises(TraceError, match="index"):
        Trace([b])
    wrong = rec(index=1, inputs=(TraceInput("x", b"\x0b" * 32, 0), TraceInput("weight", b"\x02" * 32)))
    with pytest.raises(TraceError, match="root"):
        Trace([a, wrong])
    with pytest.raises(TraceError):
        Trace([])


def test_known_answers():
    """The vectors of docs/protocol.md, "Traces" (for the Solidity tests)."""
    assert rec().hash().hex() == "cae71aff37ad959f378adce65d830f6101f11cc535a83490d8b89da8fc7f8cab"
    records = [rec(index=i, inputs=(TraceInput("x", bytes([i]) * 32), TraceInput("weight", b"\x02" * 32)),
                   output=bytes([100 + i]) * 32) for i in range(3)]
    t = Trace(records)
    assert [h.hex()[:8] for h in t.hashes] == ["53bbc4ae", "b9bc09c9", "b3c1ff91"]
    assert t.root.hex() == "8a03f3181b32ab4d895c33555d80388d43d64b58d40ed8e278b41eddc40bb9f2"
    assert t.prove_record(2).siblings == (b"\x00" * 32, bytes.fromhex(
        "6f087c952f3e3bd3ea5484e13cc7983f282fa11cc902305a79d1972b4164c0c1"))


# --------------------------------------------------------------------------- the tracer on a tiny Llama


def test_tracer_records_every_operator_with_roots_and_sources(llama_w):
    model = LlamaDecoder(LLAMA, llama_w, Executor("reference"))
    ids, positions, mask = T.generation_inputs(PROMPT, GENERATED)
    seen = []
    model.ex.observers.append(seen.append)
    trace, logits = record_run(model.ex, model.forward, ids, positions, mask)
    assert len(trace) == len(seen) == 1 + 16 * LLAMA.num_layers + 2
    for r, op in zip(trace, seen):
        assert r.kind == op.kind
        assert dict(r.attrs) == {k: float(np.float32(v)) if isinstance(v, float) else v for k, v in op.attrs.items()}
        assert [i.name for i in r.inputs] == list(op.inputs)
        for i in r.inputs:
            assert i.root == tensor_root(op.inputs[i.name])
        assert r.output == tensor_root(op.output)
    assert trace.output == tensor_root(logits)
    # wiring: q's linear reads the first rms_norm; the attention reads the rotaries and v
    assert trace[2].kind == "linear" and trace[2].inputs[0].source == 1 and trace[2].inputs[1].external
    att = next(r for r in trace if r.kind == "attention")
    assert [i.source for i in att.inputs][:3] == [3, 5, 6]
    assert {n for _, n, _ in trace.external_inputs()} == {"ids", "table", "weight", "positions", "key_mask",
                                                         "q_positions", "k_positions"}
    # every weight of the model appears as an external input root
    ext = {root for _, _, root in trace.external_inputs()}
    assert {tensor_root(w) for w in llama_w.values()} <= ext


def test_every_record_replays_from_its_inputs_and_a_lie_does_not(llama_w):
    model = LlamaDecoder(LLAMA, llama_w, Executor("reference"))
    ids, positions, mask = T.generation_inputs(PROMPT, GENERATED)
    seen = []
    model.ex.observers.append(seen.append)
    trace, _ = record_run(model.ex, model.forward, ids, positions, mask)
    for r, op in zip(trace, seen):
        assert replay_record(r, op.inputs)
    r = trace[9]
    lie = TraceRecord(r.index, r.kind, r.attrs, r.inputs, flip_hex_bytes(r.output))
    assert not replay_record(lie, seen[9].inputs)
    with pytest.raises(TraceError):
        replay_record(r, {**seen[9].inputs, "x": seen[8].output if "x" in seen[9].inputs else seen[0].output})
    with pytest.raises(TraceError):
        replay_record(r, {})


def flip_hex_bytes(b: bytes) -> bytes:
    return bytes([b[0] ^ 1]) + b[1:]


def test_trace_is_deterministic_and_does_not_depend_on_the_cache_or_threading(llama_w, llama_trace):
    model = LlamaDecoder(LLAMA, llama_w, Executor("reference"))
    again = trace_generation(model, PROMPT, GENERATED)
    inline = trace_generation(model, PROMPT, GENERATED, cache=RootCache(), background=False)
    assert again.root == llama_trace.root == inline.root
    assert again.hashes == inline.hashes
    assert first_divergence(again, inline) is None


def test_weights_are_hashed_once(llama_w):
    model = LlamaDecoder(LLAMA, llama_w, Executor("reference"))
    cache = RootCache()
    trace_generation(model, PROMPT, GENERATED, cache=cache)
    first = cache.bytes_hashed
    trace_generation(model, PROMPT, GENERATED, cache=cache)
    second = cache.bytes_hashed - first
    weight_bytes = sum(w.numel() * 4 for w in llama_w.values())
    assert first - second == weight_bytes  # the second trace hashed everything but the weights
    assert cache.hits > 0


def test_in_place_weight_change_is_seen_through_the_cache():
    w = random_llama_weights(LLAMA)
    model = LlamaDecoder(LLAMA, w, Executor("reference"))
    cache = RootCache()
    before = trace_generation(model, PROMPT, GENERATED, cache=cache)
    name = "layers.1.ffn.up.weight"
    model.w[name].view(-1).view(torch.int32)[7] ^= 1 << 20  # in place, through a view: bumps the version
    after = trace_generation(model, PROMPT, GENERATED, cache=cache)
    assert after.root != before.root
    i = first_divergence(before, after)
    assert after[i].inputs[1].root == tensor_root(model.w[name])
    assert diff_records(before[i], after[i]) == ["input:weight", "output"]


def test_different_input_or_weight_bit_diverges_at_the_first_consumer(llama_w, llama_trace):
    model = LlamaDecoder(LLAMA, llama_w, Executor("reference"))
    # a different token (not the last one: the prefill does not read the last generated token)
    other = trace_generation(model, PROMPT, GENERATED[:2] + [8, GENERATED[3]])
    assert other.root != llama_trace.root
    assert first_divergence(llama_trace, other) == 0
    assert diff_records(llama_trace[0], other[0]) == ["input:ids", "output"]
    same = trace_generation(model, PROMPT, GENERATED[:3] + [9])
    assert same.root == llama_trace.root  # the last token is the claim's output, not the trace's
    for name in ("layers.1.ffn.up.weight", "layers.0.attn_norm.weight", "final_norm.weight", "layers.1.attn.v.weight"):
        w = dict(llama_w)
        w[name] = flip_bit(w[name], 3, bit=20)
        t = trace_generation(LlamaDecoder(LLAMA, w, Executor("reference")), PROMPT, GENERATED)
        assert t.root != llama_trace.root
        i = first_divergence(llama_trace, t)
        flipped = tensor_root(w[name])
        consumers = [r.index for r in t if any(x.root == flipped for x in r.inputs)]
        assert i == consumers[0], name
        assert all(x.root == y.root for x, y in zip(llama_trace[i].inputs, t[i].inputs) if x.name != "weight")
        assert diff_records(llama_trace[i], t[i]) == ["input:weight", "output"]
        assert all(a == b for a, b in zip(llama_trace.hashes[:i], t.hashes[:i]))


class LyingExecutor(Executor):
    """Flips one bit of the output of operator application ``self.lie_at``."""

    lie_at = -1

    def apply(self, kind, inputs, **attrs):
        if self.count != self.lie_at:
            return super().apply(kind, inputs, **attrs)
        saved, self.observers = self.observers, []
        try:
            out = super().apply(kind, inputs, **attrs)
        finally:
            self.observers = saved
        out = flip_bit(out, 0, bit=3)
        from refute.compute.executor import OpRecord

        for observe in self.observers:
            observe(OpRecord(self.count - 1, kind, dict(attrs), {k: v for k, v in inputs.items() if v is not None}, out))
        return out


@pytest.mark.parametrize("lie_at", [0, 7, 20, 34])
def test_a_wrong_output_is_the_first_divergence_with_equal_inputs(llama_w, llama_trace, lie_at):
    ex = LyingExecutor("reference")
    ex.lie_at = lie_at
    liar = trace_generation(LlamaDecoder(LLAMA, llama_w, ex), PROMPT, GENERATED)
    assert first_divergence(llama_trace, liar) == lie_at
    assert first_divergence(liar, llama_trace) == lie_at
    assert diff_records(llama_trace[lie_at], liar[lie_at]) == ["output"]
    # the liar's own trace is consistent: the wrong output feeds its consumers
    consumers = [r for r in liar if any(i.source == lie_at for i in r.inputs)]
    assert consumers or lie_at == len(liar) - 1
    for r in consumers:
        assert any(i.root == liar[lie_at].output for i in r.inputs)


def test_first_divergence_of_prefixes_and_equal_traces(llama_trace):
    short = Trace(llama_trace.records[:10])
    assert first_divergence(llama_trace, short) == 10
    assert first_divergence(short, llama_trace) == 10
    assert first_divergence(llama_trace, Trace(llama_trace.records)) is None


def test_generated_tokens_can_be_rederived_from_the_one_prefill(llama_w):
    model = LlamaDecoder(LLAMA, llama_w, Executor("reference"))
    prompt = llama_prompts((6,))[0]
    params = SamplingParams(temperature=0.8, top_k=10, seed=5)
    (gen,) = generate(model, [prompt], 5, params, sequence_ids=[3], stop_at_eos=False)
    trace, logits = trace_generation(model, prompt, gen.token_ids, return_logits=True)
    assert trace.output == tensor_root(logits)
    p, n = len(prompt), len(gen.token_ids)
    rows = logits[0, p - 1 : p - 1 + n]
    tokens = sampling.sample_tokens(rows, seeds=params.seed, sequences=3, positions=torch.arange(p, p + n),
                                    temperature=params.temperature, top_k=params.top_k, top_p=params.top_p)
    assert tokens.tolist() == gen.token_ids


# --------------------------------------------------------------------------- JSON


def test_json_round_trip(llama_trace):
    text = llama_trace.to_json()
    back = Trace.from_json(text)
    assert back.root == llama_trace.root and back.hashes == llama_trace.hashes
    assert back.records == llama_trace.records
    assert Trace.from_json(text.encode()).root == llama_trace.root
    assert back.to_json() == text


def test_json_tampering_is_rejected(llama_trace):
    compact = llama_trace.to_json()

    def mutate(f):
        c = json.loads(compact)
        f(c)
        return json.dumps(c, separators=(",", ":"))

    def flip_hex(h):
        return h[:-1] + ("0" if h[-1] != "0" else "1")

    cases = {
        "output root": lambda c: c["records"][5].__setitem__("output", flip_hex(c["records"][5]["output"])),
        "external input": lambda c: c["records"][0]["inputs"][1].__setitem__("root", flip_hex(c["records"][0]["inputs"][1]["root"])),
        "stated root": lambda c: c.__setitem__("root", flip_hex(c["root"])),
        "attr value": lambda c: c["records"][1]["attrs"]["eps"].__setitem__("f32", "0x3727c5ad"),
        "attr as float": lambda c: c["records"][1]["attrs"].__setitem__("eps", {"f32": 1e-5}),
        "attr type": lambda c: c["records"][1]["attrs"].__setitem__("eps", {"int": 1}),
        "uppercase hex": lambda c: c["records"][5].__setitem__("output", c["records"][5]["output"].upper().replace("0X", "0x")),
        "extra key": lambda c: c["records"][5].__setitem__("note", 1),
        "missing key": lambda c: c["records"][5].pop("output"),
        "index": lambda c: c["records"][5].__setitem__("index", 6),
        "index as float": lambda c: c["records"][5].__setitem__("index", 5.0),
        "source": lambda c: c["records"][5]["inputs"][0].__setitem__("source", 2),
        "kind": lambda c: c.__setitem__("kind", "refute.claim"),
        "version": lambda c: c.__setitem__("version", 2),
        "op": lambda c: c["records"][5].__setitem__("op", "relu"),
        "dropped record": lambda c: c["records"].pop(),
        "bool as int": lambda c: c["records"][1]["attrs"].__setitem__("eps", {"bool": 1}),
    }
    for what, f in cases.items():
        text = mutate(f)
        assert text != compact, what
        with pytest.raises(TraceError):
            Trace.from_json(text)
    assert '"version":1,' in compact
    for text in ("[]", "{", compact.replace('"version":1', '"version":1,"version":1'),
                 compact.replace('"version":1', '"version":NaN'), compact.replace('"version":1', '"version":1.0'),
                 b"\xff", compact.encode("utf-16")):
        with pytest.raises(TraceError):
            Trace.from_json(text)


# --------------------------------------------------------------------------- backends and BERT


def test_triton_interpreter_gives_the_reference_trace_root(llama_w, llama_trace):
    tri = trace_generation(LlamaDecoder(LLAMA, llama_w, Executor("triton")), PROMPT, GENERATED)
    assert first_divergence(llama_trace, tri) is None
    assert tri.root == llama_trace.root


def test_bert_trace_reference_equals_triton_and_mask_changes_diverge():
    w = random_bert_weights(BERT)
    ids, mask = bert_batch((5, 3))
    ref, emb = trace_encoder(BertEncoder(BERT, w, Executor("reference")), ids, mask, return_embeddings=True)
    tri = trace_encoder(BertEncoder(BERT, w, Executor("triton")), ids, mask)
    assert ref.root == tri.root and len(ref) == 6 + 12 * BERT.num_layers + 2
    assert ref.output == tensor_root(emb)
    assert ref[-1].kind == "l2_normalize" and ref[-2].kind == "mean_pool"
    assert {i.name for i in ref[-2].inputs if i.external} == {"mask"}
    # dropping a token from the second text changes the mask: the first consumer is the first attention
    mask2 = mask.clone()
    mask2[1, 2] = 0
    other = trace_encoder(BertEncoder(BERT, w, Executor("reference")), ids, mask2)
    i = first_divergence(ref, other)
    assert ref[i].kind == "attention" and diff_records(ref[i], other[i]) == ["input:key_mask", "output"]


def test_tracer_works_as_a_plain_observer(llama_w):
    tracer = Tracer(background=False)
    model = LlamaDecoder(LLAMA, llama_w, Executor("reference", observers=[tracer]))
    ids, positions, mask = T.generation_inputs(PROMPT, GENERATED)
    model.forward(ids, positions, mask)
    n = len(tracer.records)
    root = tracer.trace_root
    verify_record(root, tracer.records[n // 2], tracer.prove_record(n // 2))
    tracer.reset()
    model.forward(ids, positions, mask)
    assert tracer.trace_root == root and all(r.index == i for i, r in enumerate(tracer.records))


def test_inference_mode_tensors_are_traced_uncached_and_unsupported_dtypes_refused(llama_w, llama_trace):
    model = LlamaDecoder(LLAMA, llama_w, Executor("reference"))
    with torch.inference_mode():
        t = trace_generation(model, PROMPT, GENERATED)
    assert t.root == llama_trace.root
    from refute.compute.executor import OpRecord

    x = torch.ones(3, dtype=torch.float64)
    with pytest.raises(TraceError, match="dtype"):
        Tracer(background=False)(OpRecord(0, "add", {}, {"x": x, "y": x}, x))
    with pytest.raises(TraceError, match="unknown"):
        Tracer()(OpRecord(0, "conv", {}, {"x": x}, x))


def test_generation_inputs_are_the_prefill_over_prompt_and_all_but_the_last_token():
    ids, positions, mask = T.generation_inputs([4, 5], [6, 7, 8])
    assert ids.tolist() == [[4, 5, 6, 7]] and positions.tolist() == [[0, 1, 2, 3]] and mask.all()
    with pytest.raises(ValueError):
        T.generation_inputs([4], [])
    with pytest.raises(ValueError):
        T.generation_inputs([], [4])
    assert EXTERNAL == 2**64 - 1


def test_overhead_benchmark_runs_on_a_tiny_model(llama_w):
    r = T.bench_trace_overhead(LlamaDecoder(LLAMA, llama_w, Executor("reference")), tokens=12, repeats=1)
    assert r["records"] == 1 + 16 * LLAMA.num_layers + 2
    assert r["weight_bytes"] == sum(w.numel() * 4 for w in llama_w.values())
    assert r["activation_bytes"] > 0 and r["untraced_s"] > 0 and r["inline_s"] > 0
    assert set(r["wall_s"]) == {"untraced", "claim", "claim_inline", "inline", "background"}
    # a claim roots its checkpoints (embedding, each layer, logits): far fewer bytes than every output
    assert r["checkpoints"] == 2 + LLAMA.num_layers and 0 < r["claim_bytes"] < r["activation_bytes"] / 4


@pytest.mark.slow
def test_minilm_embedding_trace_on_the_packaged_model():
    from refute.compute.bert import minilm

    model = minilm(Executor("reference"))
    a = T.trace_embedding(model, ["a first sentence", "another, longer sentence to embed"])
    b = T.trace_embedding(model, ["a first sentence", "another, longer sentence to embed"], background=False,
                          cache=RootCache())
    c = T.trace_embedding(model, ["a first sentence", "another, longer sentence to embeds"])
    assert a.root == b.root != c.root
    assert len(a) == 6 + 12 * 6 + 2 and a[-1].kind == "l2_normalize"
    assert first_divergence(a, c) == 0


# --------------------------------------------------------------------------- checkpointed traces


@st.composite
def wirings(draw):
    """A trace of ``add`` records, each reading two earlier records or externals."""
    n = draw(st.integers(1, 24))
    records = []
    for i in range(n):
        ins = []
        for name in ("x", "y"):
            src = draw(st.one_of(st.none(), st.integers(0, i - 1))) if i else None
            root = bytes([200 + i % 50]) * 32 if src is None else bytes([1 + src]) * 32
            ins.append(TraceInput(name, root, EXTERNAL if src is None else src))
        records.append(TraceRecord(i, "add", {}, tuple(ins), bytes([1 + i]) * 32))
    return Trace(records)


@settings(max_examples=200, deadline=None)
@given(trace=wirings(), span=st.integers(1, 8))
def test_cuts_are_exactly_the_records_later_ones_can_be_recomputed_from(trace, span):
    """Record c is a cut iff no record after c reads a record before c (checked edge by
    edge here, independently of the difference array); checkpoints are cuts, start at
    the first, end at the last record, and never skip a cut that was within reach."""
    n = len(trace)
    edges = [(i.source, r.index) for r in trace for i in r.inputs if not i.external]
    cuts = T.checkpoint_cuts(trace)
    for c in range(n):
        crossing = [s for s, j in edges if s < c < j]
        assert (c in cuts) == (not crossing) or c == n - 1, (c, crossing)
    assert cuts[-1] == n - 1
    chosen = T.select_checkpoints(cuts, n, span)
    assert chosen[0] == cuts[0] and chosen[-1] == n - 1 and set(chosen) <= set(cuts)
    assert list(chosen) == sorted(set(chosen))
    for a, b in zip(chosen, chosen[1:]):
        between = [c for c in cuts if a < c < b]
        # b is the farthest cut within span of a, or the very next cut when none is that close
        assert (b - a <= span and not [c for c in cuts if b < c <= a + span]) or (b - a > span and not between)


def test_a_checkpointed_trace_defers_exactly_the_other_outputs_and_their_edges(llama_trace):
    cps = {0, 16, 32, 34}
    lite = T.checkpointed(llama_trace, cps)
    assert len(lite) == len(llama_trace) and lite.root != llama_trace.root
    for full, r in zip(llama_trace, lite):
        assert r.output == (full.output if r.index in cps else T.DEFERRED)
        for a, b in zip(full.inputs, r.inputs):
            deferred = not a.external and a.source not in cps
            assert b.root == (T.DEFERRED if deferred else a.root) and (a.name, a.source) == (b.name, b.source)
    assert T.wiring_faults(lite) == []
    assert T.prefix(llama_trace, 17).root == Trace(llama_trace.records[:17]).root
    with pytest.raises(TraceError):
        T.prefix(llama_trace, len(llama_trace) + 1)


def test_the_tracer_roots_only_the_checkpoints_and_gets_the_same_trace(llama_w):
    """Tracing with checkpoints is the full trace checkpointed, bit for bit, while
    hashing only the checkpoints' bytes (weights cached)."""
    model = LlamaDecoder(LLAMA, llama_w, Executor("reference"))
    ids, positions, mask = T.generation_inputs(PROMPT, GENERATED)
    run = lambda: model.forward(ids, positions, mask, None, "all")  # noqa: E731
    full, _ = record_run(model.ex, run, cache=RootCache(), background=False)
    cps = T.select_checkpoints(T.checkpoint_cuts(full), len(full))
    assert cps == (0, 16, 32, 34)
    cache = RootCache()
    record_run(model.ex, run, cache=cache)  # weights and activations
    before = cache.bytes_hashed
    lite, _ = record_run(model.ex, run, cache=cache, checkpoints=cps)
    outputs = [o for o in _outputs(model, run)]
    want = sum(outputs[i].numel() * 4 for i in cps) + sum(t.numel() * t.element_size() for t in (ids, positions, mask))
    assert lite.root == T.checkpointed(full, cps).root
    assert cache.bytes_hashed - before <= want


def _outputs(model, run):
    got = []
    model.ex.observers.append(lambda op: got.append(op.output))
    try:
        run()
    finally:
        model.ex.observers.pop()
    return got
