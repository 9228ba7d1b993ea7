"""The executor: runs a model as a sequence of refute operators on one backend.

Models (:mod:`refute.compute.bert`, :mod:`refute.compute.llama`) are written as
ordinary Python that calls the executor's operator methods; the order of those
calls is the model's topological order. Every call goes through
:meth:`Executor.apply`, which dispatches to :mod:`refute.kernels` and, when an
observer is attached, hands it an :class:`OpRecord` with the operator's kind,
attributes, named inputs and output. Commitments and traces (the claims issue)
are built on that hook; nothing else in the models knows about them.

Layout changes (reshape, transpose, slicing) are not operators: they move bits
without computing, and every operator that needs a layout (attention's heads,
say) takes its inputs in the layout its producer wrote them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

import refute.kernels as K
from refute.kernels.backend import check_backend


@dataclass
class OpRecord:
    """One operator application: what ran, on what, and what it produced."""

    index: int
    kind: str
    attrs: dict[str, Any]
    inputs: dict[str, torch.Tensor]
    output: torch.Tensor


class OpObserver(Protocol):
    """Receives every operator application in execution order."""

    def __call__(self, record: OpRecord) -> None: ...


# Every operator kind the executor may record, mapped onto the kernel it runs.
# Replaying a record is ``OPERATORS[kind](**inputs, **attrs, backend=...)``.
def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *, slices: int, backend: str) -> torch.Tensor:
    return K.gemm(x, weight, trans_b=True, bias=bias, slices=slices, backend=backend)


OPERATORS: dict[str, Callable[..., torch.Tensor]] = {
    "embedding": lambda ids, table, *, backend: K.embedding(ids, table, backend=backend),
    "linear": _linear,
    "add": lambda x, y, *, backend: K.add(x, y, backend=backend),
    "mul": lambda x, y, *, backend: K.mul(x, y, backend=backend),
    "layer_norm": lambda x, weight, bias, *, eps, backend: K.layer_norm(x, weight, bias, eps=eps, backend=backend),
    "rms_norm": lambda x, weight, *, eps, backend: K.rms_norm(x, weight, eps=eps, backend=backend),
    "gelu_erf": lambda x, *, backend: K.gelu_erf(x, backend=backend),
    "silu": lambda x, *, backend: K.silu(x, backend=backend),
    "rotary": lambda x, positions, *, head_dim, theta, backend: K.rotary(
        x, positions, head_dim=head_dim, theta=theta, backend=backend
    ),
    "attention": lambda q, k, v, key_mask, q_positions, k_positions, *, num_heads, num_kv_heads, scale, causal, slices, backend: K.attention(
        q, k, v, key_mask=key_mask, q_positions=q_positions, k_positions=k_positions, num_heads=num_heads,
        num_kv_heads=num_kv_heads, scale=scale, causal=causal, slices=slices, backend=backend,
    ),
    "mean_pool": lambda x, mask, *, backend: K.mean_pool(x, mask, backend=backend),
    "l2_normalize": lambda x, *, eps, backend: K.l2_normalize(x, eps=eps, backend=backend),
    "log_softmax": lambda x, *, backend: K.log_softmax(x, backend=backend),
}


@dataclass
class Executor:
    """Runs operators on one backend and device, optionally observed.

    ``slices`` is the exact GEMM's slice count for every matrix product the
    models issue (docs/numerics.md explains the choice of 2).
    """

    backend: str = "reference"
    slices: int = 2
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    observers: list[OpObserver] = field(default_factory=list)
    count: int = 0

    def __post_init__(self) -> None:
        check_backend(self.backend)
        self.device = torch.device(self.device)
        if self.backend == "reference" and self.device.type != "cpu":
            raise ValueError("the reference backend runs on the CPU")

    def apply(self, kind: str, inputs: Mapping[str, torch.Tensor | None], **attrs: Any) -> torch.Tensor:
        """Run operator ``kind`` on named ``inputs`` with attributes ``attrs``."""
        op = OPERATORS[kind]
        output = op(**inputs, **attrs, backend=self.backend)
        if self.observers:
            record = OpRecord(
                self.count, kind, dict(attrs), {k: v for k, v in inputs.items() if v is not None}, output
            )
            for observe in self.observers:
                observe(record)
        self.count += 1
        return output

    # Thin, typed wrappers: the models read as model code.
    def embedding(self, ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
        return self.apply("embedding", {"ids": ids, "table": table})

    def linear(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        return self.apply("linear", {"x": x, "weight": weight, "bias": bias}, slices=self.slices)

    def add(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.apply("add", {"x": x, "y": y})

    def mul(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.apply("mul", {"x": x, "y": y})

    def layer_norm(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
        return self.apply("layer_norm", {"x": x, "weight": weight, "bias": bias}, eps=eps)

    def rms_norm(self, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        return self.apply("rms_norm", {"x": x, "weight": weight}, eps=eps)

    def gelu_erf(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply("gelu_erf", {"x": x})

    def silu(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply("silu", {"x": x})

    def rotary(self, x: torch.Tensor, positions: torch.Tensor, head_dim: int, theta: float) -> torch.Tensor:
        return self.apply("rotary", {"x": x, "positions": positions}, head_dim=head_dim, theta=theta)

    def attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        key_mask: torch.Tensor,
        q_positions: torch.Tensor,
        k_positions: torch.Tensor,
        *,
        num_heads: int,
        num_kv_heads: int,
        scale: float,
        causal: bool,
    ) -> torch.Tensor:
        return self.apply(
            "attention",
            {"q": q, "k": k, "v": v, "key_mask": key_mask, "q_positions": q_positions, "k_positions": k_positions},
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
            scale=scale,
            causal=causal,
            slices=self.slices,
        )

    def mean_pool(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.apply("mean_pool", {"x": x, "mask": mask})

    def l2_normalize(self, x: torch.Tensor, eps: float) -> torch.Tensor:
        return self.apply("l2_normalize", {"x": x}, eps=eps)

    def log_softmax(self, x: torch.Tensor) -> torch.Tensor:
        return self.apply("log_softmax", {"x": x})
