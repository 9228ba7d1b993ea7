"""``refute bench determinism``: every operator and both models on every backend,
digested and checked against the golden digests shipped in the package.

A **case** is one operator (or one model forward) on inputs drawn from a fixed
seed, with a torch-native equivalent timed beside it. Its digest is the tensor
root of its output (docs/protocol.md, "Tensor roots"). The golden digests
(``refute/data/golden_digests.json``) were computed by the reference backend;
a backend agrees with the numeric contract on a case iff its digest is the
golden one. On a mismatch the case is recomputed with the reference backend
here and the first differing element is printed with both values.

Cases marked ``small`` run everywhere, the Triton interpreter included; the
others (the real models, large GEMMs) skip the interpreter, which would take
hours on them.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch

REPORT_KIND = "refute.determinism"
SUITES = ("ops", "minilm", "smollm2")


@dataclass(frozen=True)
class Case:
    """``run(backend, device)`` gives the output; ``native(device)`` is torch's equivalent (timing only)."""

    suite: str
    name: str
    run: Callable[[str, str], torch.Tensor]
    native: Callable[[str], Any] | None
    small: bool = True


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _wide(n: int, seed: int) -> torch.Tensor:
    from refute.numeric_demo import SPECIAL_VALUES

    g = _gen(seed)
    scale = 2.0 ** torch.randint(-30, 30, (n - len(SPECIAL_VALUES),), generator=g).float()
    return torch.cat([torch.tensor(SPECIAL_VALUES), torch.randn(n - len(SPECIAL_VALUES), generator=g) * scale])


def op_cases() -> list[Case]:
    """The operator suite: every kernel of refute.kernels on drawn inputs."""
    import torch.nn.functional as F

    import refute.kernels as K
    from refute.kernels import philox, sampling

    x = _wide(4096, 1)
    angles = (torch.rand(4096, generator=_gen(2)) - 0.5) * 2.0**17
    pos = torch.rand(4096, generator=_gen(3)) * 2.0 ** torch.randint(-140, 120, (4096,), generator=_gen(4)).float()
    rows = torch.randn(8, 700, generator=_gen(5)) * 10.0 ** torch.randint(-6, 6, (8, 1), generator=_gen(6)).float()
    act = torch.randn(6, 33, 96, generator=_gen(7)) * 3
    act2 = torch.randn(6, 33, 96, generator=_gen(8))
    w96, b96 = 1 + torch.randn(96, generator=_gen(9)) * 0.1, torch.randn(96, generator=_gen(10)) * 0.1
    a, b, bias = torch.randn(3, 37, 300, generator=_gen(11)), torch.randn(300, 45, generator=_gen(12)), torch.randn(45, generator=_gen(13))
    big_a, big_b = torch.randn(512, 512, generator=_gen(14)), torch.randn(512, 512, generator=_gen(15))
    ids = torch.randint(0, 50, (4, 9), generator=_gen(16))
    table = torch.randn(50, 64, generator=_gen(17))
    mask = torch.rand(4, 9, generator=_gen(18)) > 0.3
    logits = torch.randn(5, 300, generator=_gen(19)) * 4
    bt, heads, kv, d = 7, 6, 2, 16
    q = torch.randn(2, bt, heads * d, generator=_gen(20))
    k = torch.randn(2, bt, kv * d, generator=_gen(21))
    v = torch.randn(2, bt, kv * d, generator=_gen(22))
    positions = torch.arange(bt).expand(2, bt)
    key_mask = torch.ones(2, bt, dtype=torch.bool)
    key_mask[1, :2] = False

    placed: dict[tuple[int, str], torch.Tensor] = {}

    def dev(t: torch.Tensor, device: str) -> torch.Tensor:
        """``t`` on ``device``, copied there once: the timings are of the
        operators, not of host-to-device copies (both sides use this)."""
        key = (id(t), device)
        if key not in placed:
            placed[key] = t.to(device)
        return placed[key]

    cases = [Case("ops", f"{fn}", lambda be, dv, fn=fn, t=(angles if fn in ("sin", "cos") else pos if fn == "rsqrt" else x):
                  getattr(K, fn)(dev(t, dv), backend=be),
                  lambda dv, fn=fn, t=(angles if fn in ("sin", "cos") else pos if fn == "rsqrt" else x):
                  getattr(torch, fn)(dev(t, dv)) if fn not in ("erf",) else torch.special.erf(dev(t, dv)))
             for fn in ("exp", "log", "tanh", "sigmoid", "erf", "sin", "cos", "rsqrt")]
    cases.append(Case("ops", "fp32_to_bf16", lambda be, dv: K.fp32_to_bf16(dev(x, dv), backend=be),
                      lambda dv: dev(x, dv).to(torch.bfloat16)))
    for s in (1, 2, 3, 4):
        cases.append(Case("ops", f"gemm_s{s}", lambda be, dv, s=s: K.gemm(dev(a, dv), dev(b, dv), bias=dev(bias, dv), slices=s, backend=be),
                          lambda dv: torch.addmm(dev(bias, dv), dev(a, dv).reshape(-1, 300), dev(b, dv))))
    cases.append(Case("ops", "gemm_s2_512", lambda be, dv: K.gemm(dev(big_a, dv), dev(big_b, dv), slices=2, backend=be),
                      lambda dv: dev(big_a, dv) @ dev(big_b, dv), small=False))
    for fn, native in (("row_sum", lambda t: t.sum(-1)), ("row_sumsq", lambda t: (t * t).sum(-1)),
                       ("row_mean", lambda t: t.mean(-1)), ("row_var", lambda t: t.var(-1, unbiased=False)),
                       ("row_max", lambda t: t.max(-1).values), ("row_argmax", lambda t: t.argmax(-1))):
        cases.append(Case("ops", fn, lambda be, dv, fn=fn: getattr(K, fn)(dev(rows, dv), backend=be),
                          lambda dv, native=native: native(dev(rows, dv))))
    cases += [
        Case("ops", "add", lambda be, dv: K.add(dev(act, dv), dev(act2, dv), backend=be), lambda dv: dev(act, dv) + dev(act2, dv)),
        Case("ops", "mul", lambda be, dv: K.mul(dev(act, dv), dev(act2, dv), backend=be), lambda dv: dev(act, dv) * dev(act2, dv)),
        Case("ops", "gelu_erf", lambda be, dv: K.gelu_erf(dev(act, dv), backend=be), lambda dv: F.gelu(dev(act, dv))),
        Case("ops", "gelu_tanh", lambda be, dv: K.gelu_tanh(dev(act, dv), backend=be),
             lambda dv: F.gelu(dev(act, dv), approximate="tanh")),
        Case("ops", "silu", lambda be, dv: K.silu(dev(act, dv), backend=be), lambda dv: F.silu(dev(act, dv))),
        Case("ops", "layer_norm", lambda be, dv: K.layer_norm(dev(act, dv), dev(w96, dv), dev(b96, dv), eps=1e-12, backend=be),
             lambda dv: F.layer_norm(dev(act, dv), (96,), dev(w96, dv), dev(b96, dv), 1e-12)),
        Case("ops", "rms_norm", lambda be, dv: K.rms_norm(dev(act, dv), dev(w96, dv), eps=1e-5, backend=be),
             lambda dv: F.rms_norm(dev(act, dv), (96,), dev(w96, dv), 1e-5)),
        Case("ops", "l2_normalize", lambda be, dv: K.l2_normalize(dev(act, dv), backend=be), lambda dv: F.normalize(dev(act, dv), dim=-1)),
        Case("ops", "mean_pool", lambda be, dv: K.mean_pool(dev(act[:4, :9], dv), dev(mask, dv), backend=be),
             lambda dv: (dev(act[:4, :9], dv) * dev(mask, dv)[..., None]).sum(1) / dev(mask, dv).sum(1, keepdim=True)),
        Case("ops", "embedding", lambda be, dv: K.embedding(dev(ids, dv), dev(table, dv), backend=be),
             lambda dv: F.embedding(dev(ids, dv), dev(table, dv))),
        Case("ops", "softmax", lambda be, dv: K.softmax(dev(logits, dv), backend=be), lambda dv: torch.softmax(dev(logits, dv), -1)),
        Case("ops", "log_softmax", lambda be, dv: K.log_softmax(dev(logits, dv), backend=be),
             lambda dv: torch.log_softmax(dev(logits, dv), -1)),
        Case("ops", "rotary", lambda be, dv: K.rotary(dev(q, dv), dev(positions, dv), head_dim=d, theta=10000.0, backend=be), None),
        Case("ops", "attention", lambda be, dv: K.attention(
            dev(q, dv), dev(k, dv), dev(v, dv), key_mask=dev(key_mask, dv), q_positions=dev(positions, dv),
            k_positions=dev(positions, dv), num_heads=heads, num_kv_heads=kv, scale=0.25, causal=True, backend=be),
             lambda dv: F.scaled_dot_product_attention(
                 dev(q, dv).reshape(2, bt, heads, d).transpose(1, 2),
                 dev(k, dv).reshape(2, bt, kv, d).transpose(1, 2).repeat_interleave(heads // kv, 1),
                 dev(v, dv).reshape(2, bt, kv, d).transpose(1, 2).repeat_interleave(heads // kv, 1), is_causal=True)),
        Case("ops", "philox_uniforms", lambda be, dv: philox.uniforms(12345, torch.arange(4, device=dv), torch.arange(4, device=dv) + 7,
                                                                     300, backend=be),
             lambda dv: torch.rand(4, 300, device=dv)),
        Case("ops", "sample_tokens", lambda be, dv: sampling.sample_tokens(
            dev(logits, dv), seeds=99, sequences=torch.arange(5, device=dv), positions=torch.arange(5, device=dv) + 3,
            temperature=0.8, top_k=40, top_p=0.9, backend=be),
             lambda dv: torch.multinomial(torch.softmax(dev(logits, dv) / 0.8, -1), 1)),
    ]
    return cases


def _tiny_models() -> tuple[Any, Any, Any, Any]:
    """Tiny random BERT and Llama (fixed seeds): model-shaped work the interpreter can run."""
    from refute.compute.weights import BertConfig, LlamaConfig

    bert = BertConfig(vocab_size=37, hidden_size=30, num_layers=2, num_heads=3, head_dim=10, intermediate_size=43,
                      max_position_embeddings=16, max_seq_length=16)
    llama = LlamaConfig(vocab_size=41, hidden_size=36, num_layers=2, num_heads=6, num_kv_heads=2, head_dim=6,
                        intermediate_size=29, rope_dim=6, rope_theta=10000.0, max_position_embeddings=64,
                        tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)

    def weights(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, torch.Tensor]:
        g = _gen(seed)
        return {k: torch.randn(*s, generator=g) * 0.3 + (1.0 if "norm.weight" in k else 0.0) for k, s in sorted(shapes.items())}

    h, f = bert.hidden_size, bert.intermediate_size
    bs = {"embed.word": (37, h), "embed.position": (16, h), "embed.token_type": (bert.type_vocab_size, h),
          "embed.norm.weight": (h,), "embed.norm.bias": (h,)}
    for i in range(bert.num_layers):
        p = f"layers.{i}."
        for n in ("q", "k", "v", "o"):
            bs[p + f"attn.{n}.weight"], bs[p + f"attn.{n}.bias"] = (h, h), (h,)
        bs[p + "ffn.up.weight"], bs[p + "ffn.up.bias"], bs[p + "ffn.down.weight"], bs[p + "ffn.down.bias"] = (f, h), (f,), (h, f), (h,)
        for n in ("attn_norm", "ffn_norm"):
            bs[p + f"{n}.weight"], bs[p + f"{n}.bias"] = (h,), (h,)
    h, f, d = llama.hidden_size, llama.intermediate_size, llama.head_dim
    ls = {"embed.tokens": (41, h), "final_norm.weight": (h,)}
    for i in range(llama.num_layers):
        p = f"layers.{i}."
        ls |= {p + "attn_norm.weight": (h,), p + "ffn_norm.weight": (h,), p + "attn.q.weight": (6 * d, h),
               p + "attn.k.weight": (2 * d, h), p + "attn.v.weight": (2 * d, h), p + "attn.o.weight": (h, 6 * d),
               p + "ffn.gate.weight": (f, h), p + "ffn.up.weight": (f, h), p + "ffn.down.weight": (h, f)}
    return bert, weights(bs, 30), llama, weights(ls, 31)


def model_cases(suites: set[str]) -> list[Case]:
    from refute.compute.bert import BertEncoder
    from refute.compute.executor import Executor
    from refute.compute.llama import LlamaDecoder

    bert, bw, llama, lw = _tiny_models()
    ids_b = torch.randint(3, 37, (3, 8), generator=_gen(40))
    mask_b = torch.ones(3, 8, dtype=torch.int64)
    mask_b[1, 5:] = 0
    ids_l = torch.randint(3, 41, (2, 9), generator=_gen(41))
    pos_l, mask_l = torch.arange(9).expand(2, 9), torch.ones(2, 9, dtype=torch.bool)
    cases = []

    def on(device: str, backend: str) -> Executor:
        return Executor(backend, device=device)

    built: dict[tuple[str, str, str], Any] = {}

    def model(name: str, build: Callable[[Executor], Any], backend: str, device: str) -> Any:
        """The model ``name`` on (backend, device), built once: its weights move to
        the device once, not on every timed call."""
        key = (name, backend, device)
        if key not in built:
            built[key] = build(on(device, backend))
        return built[key]

    if "minilm" in suites:
        cases.append(Case("minilm", "tiny_bert_embed", lambda be, dv: model(
            "tiny_bert", lambda ex: BertEncoder(bert, bw, ex), be, dv).embed(ids_b, mask_b), None))

        minilm_inputs: list[torch.Tensor] = []  # (ids, mask), tokenized on first use

        def minilm_embed(be: str, dv: str) -> torch.Tensor:
            from refute.compute.bert import minilm
            from refute.compute.corpus import load_corpus
            from refute.compute.tokenizer import minilm_tokenizer

            if not minilm_inputs:
                minilm_inputs.extend(minilm_tokenizer().encode_batch(load_corpus()[:4]))
            return model("minilm", minilm, be, dv).embed(*minilm_inputs)

        cases.append(Case("minilm", "minilm_embed_4", minilm_embed, None, small=False))
    if "smollm2" in suites:
        cases.append(Case("smollm2", "tiny_llama_prefill", lambda be, dv: model(
            "tiny_llama", lambda ex: LlamaDecoder(llama, lw, ex), be, dv).forward(ids_l, pos_l, mask_l, None, "all"), None))
        ids_s = torch.randint(0, 49152, (1, 16), generator=_gen(42))

        def smollm2_prefill(be: str, dv: str) -> torch.Tensor:
            from refute.compute.llama import smollm2

            return model("smollm2", smollm2, be, dv).forward(ids_s, torch.arange(16)[None],
                                                            torch.ones(1, 16, dtype=torch.bool), None, "all")

        cases.append(Case("smollm2", "smollm2_prefill_16", smollm2_prefill, None, small=False))
    return cases


def all_cases(suites: set[str]) -> list[Case]:
    return (op_cases() if "ops" in suites else []) + model_cases(suites)


def environment() -> dict[str, Any]:
    import numpy
    import triton

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    env: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
                           "platform": platform.platform(), "torch": torch.__version__, "triton": triton.__version__,
                           "numpy": numpy.__version__, "cuda": torch.version.cuda, "gpu": None}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        env["gpu"] = {"name": p.name, "capability": f"{p.major}.{p.minor}", "memory_gib": round(p.total_memory / 2**30, 1)}
        try:
            import subprocess

            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=20).stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            env["driver"] = None
    return env


def available_backends() -> list[tuple[str, str]]:
    """``(name, device)`` pairs this machine can run: reference on the CPU; Triton
    on the GPU, or through the interpreter."""
    from refute.kernels.backend import interpreter_enabled

    out = [("reference", "cpu")]
    out.append(("triton", "cpu") if interpreter_enabled() else ("triton", "cuda"))
    return out


def golden_digests() -> dict[str, str]:
    text = resources.files("refute").joinpath("data/golden_digests.json").read_text()
    return json.loads(text)["digests"]


def _digest(t: torch.Tensor) -> str:
    from refute.compute.merkle import tensor_root

    return "0x" + tensor_root(t.detach().cpu()).hex()


def _time(fn: Callable[[], Any], device: str, budget_s: float = 0.5) -> float:
    """Median seconds of ``fn`` over repeats fitting in ``budget_s`` (at least one, after a warm-up)."""
    def once() -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    first = once()
    times = [once() for _ in range(max(1, min(20, int(budget_s / max(first, 1e-6)))))]
    return statistics.median(times)


def first_difference(a: torch.Tensor, b: torch.Tensor) -> dict[str, Any] | None:
    """The first element whose bits differ (flat index and both values), or None."""
    from refute.compute.digest import first_difference as first_index

    if a.shape != b.shape or a.dtype != b.dtype:
        return {"index": None, "ours": f"{a.dtype}{list(a.shape)}", "reference": f"{b.dtype}{list(b.shape)}"}
    i = first_index(a, b)
    if i is None:
        return None
    fa, fb = a.detach().cpu().reshape(-1), b.detach().cpu().reshape(-1)
    bits = [t[i : i + 1].contiguous().view(torch.uint8).numpy().tobytes()[::-1].hex() for t in (fa, fb)]
    return {"index": i, "ours": repr(fa[i].item()), "reference": repr(fb[i].item()),
            "ours_bits": "0x" + bits[0], "reference_bits": "0x" + bits[1]}


def run(suites: set[str], backends: list[tuple[str, str]] | None = None, *, progress: Callable[[str], None] = print,
        time_budget_s: float = 0.3, only: Collection[str] | None = None, skip: Collection[str] = ()) -> dict[str, Any]:
    """Run the suites on ``backends``; the report (JSON-ready).

    ``only``/``skip`` select cases by name. A case that raises is recorded with
    its error (digest ``None``) and the run goes on: on a new machine one broken
    kernel must not hide the verdict on the others.
    """
    golden = golden_digests()
    backends = backends or available_backends()
    results = []
    for backend, device in backends:
        interpreted = backend == "triton" and device == "cpu"
        for case in all_cases(suites):
            if (interpreted and not case.small) or (only is not None and case.name not in only) or case.name in skip:
                continue
            want = golden.get(case.name)
            entry: dict[str, Any] = {"suite": case.suite, "case": case.name, "backend": backend, "device": device,
                                     "golden": want}
            t0 = time.perf_counter()
            try:
                out = case.run(backend, device)
                if device == "cuda":
                    torch.cuda.synchronize()
            except Exception as e:  # noqa: BLE001  (recorded in the report; the run goes on)
                entry |= {"digest": None, "match": False, "error": f"{type(e).__name__}: {e}"[:2000]}
                results.append(entry)
                progress(f"{backend:<9} {device:<4} {case.name:<22} ERROR {entry['error'][:200]}")
                continue
            digest = _digest(out)
            entry |= {"digest": digest, "match": digest == want, "seconds": time.perf_counter() - t0}
            if not interpreted:
                entry["seconds"] = _time(lambda c=case: c.run(backend, device), device, time_budget_s)
                if case.native is not None:
                    entry["native_seconds"] = _time(lambda c=case: c.native(device), device, time_budget_s)
                    entry["ratio_vs_native"] = entry["seconds"] / max(entry["native_seconds"], 1e-9)
            if not entry["match"]:
                entry["first_difference"] = first_difference(out, case.run("reference", "cpu"))
            results.append(entry)
            verdict = "match" if entry["match"] else "MISMATCH" if want else "no golden digest"
            extra = "" if entry["match"] else f"  {entry.get('first_difference')}"
            progress(f"{backend:<9} {device:<4} {case.name:<22} {digest[:18]}  {verdict}{extra}")
    return {"kind": REPORT_KIND, "version": 1, "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "environment": environment(), "suites": sorted(suites), "results": results,
            "mismatches": sum(not r["match"] for r in results), "errors": sum("error" in r for r in results)}


def write_golden(path: Path, suites: set[str] = set(SUITES)) -> dict[str, str]:
    """Recompute every case on the reference backend and write the golden file (maintainers only)."""
    digests = {c.name: _digest(c.run("reference", "cpu")) for c in all_cases(suites)}
    path.write_text(json.dumps({"kind": "refute.golden_digests", "backend": "reference", "digest": "tensor_root",
                                "digests": digests}, indent=1, sort_keys=True) + "\n")
    return digests
