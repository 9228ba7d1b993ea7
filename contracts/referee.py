"""Deploy and call the on-chain referee (``contracts/src/Referee.sol``).

The Referee is the contract twin of :func:`refute.verifier.dispute.check_one_step`.
This module deploys it with its three operator contracts (ElementOps, RowOps,
AttentionOps) on a web3 instance (by default a fresh in-process
``EthereumTesterProvider`` chain), turns a Python
:class:`~refute.verifier.dispute.OneStepProof` into the calldata of the matching
``decide*`` function, and calls it::

    ref = RefereeContract()
    wrong = ref.decide(proof)            # bool, or RefereeError (a revert: bad evidence)
    total, execution = ref.gas_used(proof)

A revert is the contract's way of rejecting evidence that does not verify (the
game charges it to whoever supplied it); :class:`RefereeError` names the custom error.
``compute``, ``template`` (generation claims) and ``sampling`` (greedy and plain
Gumbel-max, compact evidence: two logits) one-steps are decided on chain
(docs/protocol.md, "On-chain referee"); :func:`template_evidence` and
:func:`sampling_evidence` build the ABI evidence of the latter two.
"""

from __future__ import annotations

import ast
import struct
from pathlib import Path
from typing import Any, Final

from eth_abi import encode as abi_encode
from eth_tester.exceptions import TransactionFailed
from web3 import Web3
from web3.exceptions import ContractCustomError, ContractLogicError

from refute.compute.merkle import CHUNK_BYTES, LEAF_PREFIX, NODE_PREFIX, ElementProof, RangeProof, keccak256
from refute.contracts.build import ARTIFACT_DIR, load_artifact
from refute.contracts.client import claim_tuple

__all__ = ["RefereeContract", "RefereeError", "compute_args", "template_evidence", "sampling_evidence", "range_openings",
           "step_openings", "input_heads",
           "element_from_range", "sampling_alternative", "CALL_GAS", "TEMPLATE_EVIDENCE", "SAMPLING_EVIDENCE"]

#: Gas given to every eth_call (free on the in-process chain; far above any one-step).
CALL_GAS: Final = 500_000_000

#: Constructor order of the Referee's operator contracts.
_OPS: Final = ("ElementOps", "RowOps", "AttentionOps", "TemplateOps", "SamplingOps", "ProgramReferee")

_PARAMS: Final = "(uint32,uint32,uint32,uint32,uint32,int64[],int64[])"
_OPENING: Final = "(bytes,uint64,uint64,bytes,bytes32[])"
#: ABI type of ``TemplateOps.Evidence``: identity, templates' trace root, stop word
#: (EOS + 1, 0 for none), template encoding, template count, template siblings,
#: generation task params + tokens, trace count, source records.
TEMPLATE_EVIDENCE: Final = f"(bytes32,bytes32,uint64,bytes,uint64,bytes32[],{_PARAMS},uint64,(bytes,bytes32[])[])"
#: ABI type of ``SamplingOps.Evidence``: identity, templates' trace root, stop word,
#: task params + tokens, last record, record count, record siblings, token index j,
#: alternative token, openings of logits[row, tokens[j]] and logits[row, alt].
SAMPLING_EVIDENCE: Final = f"(bytes32,bytes32,uint64,{_PARAMS},bytes,uint64,bytes32[],uint64,uint64,{_OPENING},{_OPENING})"


class RefereeError(Exception):
    """The Referee reverted: the evidence does not verify (``name`` is the custom error)."""

    def __init__(self, name: str, data: str) -> None:
        super().__init__(f"the referee rejected the evidence: {name} ({data})")
        self.name = name
        self.data = data


def _opening(p: RangeProof | ElementProof) -> tuple[bytes, int, int, bytes, list[bytes]]:
    if isinstance(p, ElementProof):
        return (p.header.encode(), p.index, p.index + 1, p.chunk, list(p.siblings))
    return (p.header.encode(), p.start, p.stop, p.chunks, list(p.siblings))


def _element_bytes(p: ElementProof) -> bytes:
    size = p.header.itemsize
    off = p.index * size - p.index * size // CHUNK_BYTES * CHUNK_BYTES
    return p.chunk[off : off + size]


def compute_args(proof: Any) -> tuple[bytes, bytes, int, bytes, list[tuple]]:
    """The arguments of ``decideCompute`` for a ``compute`` one-step: the record's
    encoding, the defendant's output header and element bytes, and the challenger's
    openings in the record's input order. The defendant's element opening is checked
    against the output root by the game, not here."""
    if proof.kind != "compute":
        raise ValueError(f"not a compute one-step: {proof.kind!r}")
    r = proof.record
    missing = [i.name for i in r.inputs if i.name not in proof.input_openings]
    if missing:
        raise ValueError(f"no opening of input(s) {missing}")
    o = proof.output_opening
    if o is None:
        raise ValueError("the defendant did not open the element (decided by the game, not the referee)")
    openings = [_opening(proof.input_openings[i.name]) for i in r.inputs]
    return r.encode(), o.header.encode(), int(proof.element), _element_bytes(o), openings


def range_openings(record: Any, inputs: dict[str, Any], need: dict[str, tuple[int, int]]) -> list[tuple]:
    """The ``Opening`` structs of ``record``'s inputs, in record order: input ``n``'s
    elements ``need[n]`` proven from the whole tensor ``inputs[n]``."""
    from refute.compute.merkle import TensorTree

    return [_opening(TensorTree.from_tensor(inputs[i.name]).prove_range(*need[i.name])) for i in record.inputs]


def step_openings(record: Any, inputs: dict[str, Any], element: int, step: int) -> list[tuple]:
    """The ``Opening`` structs of step ``step`` of element ``element``'s program, from
    whole input tensors ``inputs`` (by name), in record order."""
    from refute.verifier.programs import step_inputs

    shapes = {n: tuple(t.shape) for n, t in inputs.items()}
    return range_openings(record, inputs, step_inputs(record.kind, record.attr_dict(), shapes, element, step))


def input_heads(record: Any, inputs: dict[str, Any]) -> list[tuple[bytes, bytes]]:
    """The ``InputHead`` structs (header, data root) of ``record``'s inputs, record order."""
    from refute.compute.merkle import TensorTree

    trees = [TensorTree.from_tensor(inputs[i.name]) for i in record.inputs]
    return [(t.header.encode(), t.data_root) for t in trees]


def _stop(proof: Any) -> int:
    """The model digest's stop word: EOS + 1, 0 for none (``program.stop_word``)."""
    return 0 if proof.eos_token_id is None else int(proof.eos_token_id) + 1


def _f32_bits(v: float) -> int:
    return struct.unpack(">I", struct.pack(">f", v))[0]


def _params(task: Any, tokens: Any) -> tuple:
    from refute.verifier.tasks import GenerateTask

    if not isinstance(task, GenerateTask):
        raise ValueError("on-chain template and sampling one-steps take smollm2.generate tasks only")
    return (task.max_new_tokens, _f32_bits(task.temperature), task.top_k, _f32_bits(task.top_p), task.sequence,
            list(task.prompt_ids), [int(t) for t in tokens])


def template_evidence(proof: Any) -> bytes:
    """``abi.encode(TemplateOps.Evidence)`` of a ``template`` one-step."""
    if proof.kind != "template":
        raise ValueError(f"not a template one-step: {proof.kind!r}")
    tp = proof.template_proof
    sources = [(record.encode(), list(p.siblings)) for record, p in proof.sources]
    ev = (proof.identity, proof.program_tree_root, _stop(proof), proof.template.encode(), tp.count, list(tp.siblings),
          _params(proof.task, proof.tokens), proof.record_proof.count, sources)
    return abi_encode([TEMPLATE_EVIDENCE], [ev])


def element_from_range(rp: RangeProof, e: int) -> ElementProof:
    """A proof of element ``e`` of a range proof's tensor, derived from the range proof
    alone (the nodes inside the run are recomputed from its chunks)."""
    h, size = rp.header, rp.header.itemsize
    if not rp.start <= e < rp.stop:
        raise ValueError(f"element {e} is not in [{rp.start}, {rp.stop})")
    first = rp.start * size // CHUNK_BYTES
    stop_chunk = -(-rp.stop * size // CHUNK_BYTES)
    nodes = {(0, first + i): keccak256(LEAF_PREFIX + rp.chunks[i * CHUNK_BYTES:(i + 1) * CHUNK_BYTES])
             for i in range(stop_chunk - first)}
    lo, hi, sib = first, stop_chunk, iter(rp.siblings)
    for level in range(h.depth):
        if lo & 1:
            lo -= 1
            nodes[(level, lo)] = next(sib)
        if hi & 1:
            nodes[(level, hi)] = next(sib)
            hi += 1
        for i in range(lo, hi, 2):
            nodes[(level + 1, i // 2)] = keccak256(NODE_PREFIX + nodes[(level, i)] + nodes[(level, i + 1)])
        lo, hi = lo >> 1, hi >> 1
    c = e * size // CHUNK_BYTES
    chunk = rp.chunks[(c - first) * CHUNK_BYTES:(c - first + 1) * CHUNK_BYTES]
    return ElementProof(h, e, chunk, tuple(nodes[(level, (c >> level) ^ 1)] for level in range(h.depth)))


def sampling_alternative(proof: Any) -> int:
    """The token the sampler draws from the proof's logits row if it is not
    ``tokens[j]``; else another token (``tokens[j] + 1`` mod V: an honest token is then
    decided right)."""
    import torch

    from refute.kernels import sampling

    t, j, v = proof.task, proof.element, proof.vocab_size
    raw = proof.logits_row.chunks
    off = proof.logits_row.start * 4 - proof.logits_row.first_chunk * CHUNK_BYTES
    row = torch.frombuffer(bytearray(raw[off:off + 4 * v]), dtype=torch.float32).reshape(1, v)
    want = int(sampling.sample_tokens(row, seeds=proof.claim.seed, sequences=t.sequence,
                                      positions=len(t.prompt_ids) + j, temperature=t.temperature, top_k=t.top_k,
                                      top_p=t.top_p, backend="reference")[0])
    tok = int(proof.tokens[j])
    return want if want != tok else (tok + 1) % v


def sampling_evidence(proof: Any, alt: int | None = None) -> bytes:
    """``abi.encode(SamplingOps.Evidence)`` of a ``sampling`` one-step: the two
    logits of row ``P - 1 + j`` at ``tokens[j]`` and ``alt`` (default
    :func:`sampling_alternative`), opened from the proof's row."""
    if proof.kind != "sampling":
        raise ValueError(f"not a sampling one-step: {proof.kind!r}")
    rp, v, j = proof.logits_row, proof.vocab_size, proof.element
    if alt is None:
        alt = sampling_alternative(proof)
    base = rp.start
    a_open = _opening(element_from_range(rp, base + alt))
    tok = int(proof.tokens[j])
    t_open = _opening(element_from_range(rp, base + tok)) if 0 <= tok < v else a_open
    ev = (proof.identity, proof.program_tree_root, _stop(proof), _params(proof.task, proof.tokens),
          proof.record.encode(), proof.record_proof.count,
          list(proof.record_proof.siblings), j, alt, t_open, a_open)
    return abi_encode([SAMPLING_EVIDENCE], [ev])


class RefereeContract:
    """A deployed Referee (and its operator contracts) and typed calls into it."""

    def __init__(self, w3: Web3 | None = None, *, artifact_dir: Path = ARTIFACT_DIR) -> None:
        """Deploy on ``w3`` (a fresh in-process eth-tester chain when None) from the
        artifacts in ``artifact_dir``."""
        if w3 is None:
            from web3 import EthereumTesterProvider

            w3 = Web3(EthereumTesterProvider())
        self.w3 = w3
        ops = [self._deploy(load_artifact(n, artifact_dir)) for n in _OPS]
        art = load_artifact("Referee", artifact_dir)
        self.address = self._deploy(art, *ops)
        self.contract = w3.eth.contract(address=self.address, abi=art.abi)
        self._program_referee: Any = None
        self._errors = {}
        for name in ("Referee", *_OPS):
            for e in load_artifact(name, artifact_dir).abi:
                if e.get("type") == "error":
                    sig = f"{e['name']}({','.join(i['type'] for i in e['inputs'])})"
                    self._errors["0x" + Web3.keccak(text=sig)[:4].hex().removeprefix("0x")] = e["name"]

    def _deploy(self, art: Any, *args: Any) -> str:
        factory = self.w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
        tx = factory.constructor(*args).transact({"from": self.w3.eth.accounts[0], "gas": 29_000_000})
        return self.w3.eth.wait_for_transaction_receipt(tx).contractAddress

    def _error(self, e: Exception) -> RefereeError:
        """The custom error's name from a revert (web3 and eth-tester carry its data
        as a hex string or as raw bytes, depending on the path)."""
        data = ""
        for a in (getattr(e, "data", None), *getattr(e, "args", ())):
            if isinstance(a, (bytes, bytearray)):
                data = "0x" + bytes(a).hex()
            elif isinstance(a, str) and a.startswith("0x"):
                data = a
            elif isinstance(a, str) and "reverted: b" in a:  # eth-tester: the bytes' repr
                data = "0x" + ast.literal_eval(a.split("reverted: ", 1)[1]).hex()
            if data:
                break
        return RefereeError(self._errors.get(data[:10], "revert"), data or str(e))

    def _fn(self, proof: Any) -> Any:
        if proof.kind == "compute":
            return self.contract.functions.decideCompute(*compute_args(proof))
        if proof.kind == "template":
            # the root the record and its sources are proven under: the claim's (lite) trace
            # root, or the defendant's full prefix trace root in a game's template state
            trace_root = getattr(proof, "trace_root", None) or proof.claim.trace_root
            return self.contract.functions.decideTemplate(claim_tuple(proof.claim), bytes(trace_root),
                                                          proof.record.encode(), template_evidence(proof))
        if proof.kind == "sampling":
            return self.contract.functions.decideSampling(claim_tuple(proof.claim), sampling_evidence(proof))
        raise ValueError(f"no on-chain decision for {proof.kind!r} one-steps yet")

    def decide(self, proof: Any) -> bool:
        """``defendantWrong`` of the on-chain decision; :class:`RefereeError` on a revert."""
        try:
            return bool(self._fn(proof).call({"gas": CALL_GAS}))
        except (ContractLogicError, ContractCustomError, TransactionFailed) as e:
            raise self._error(e) from None

    def _programs(self) -> Any:
        if self._program_referee is None:
            address = self.contract.functions.programReferee().call()
            self._program_referee = self.w3.eth.contract(address=address, abi=load_artifact("ProgramReferee").abi)
        return self._program_referee

    def _call(self, fn: Any) -> Any:
        try:
            return fn.call({"gas": CALL_GAS})
        except (ContractLogicError, ContractCustomError, TransactionFailed) as e:
            raise self._error(e) from None

    def program_of(self, record: Any, output_header: bytes, element: int,
                   heads: list[tuple[bytes, bytes]]) -> tuple[bool, int, bytes]:
        """``ProgramReferee.programOf``: (header wrong, steps, hash of S_0)."""
        return tuple(self._call(self._programs().functions.programOf(record.encode(), output_header, element, heads)))

    def program_output(self, record: Any, state: bytes) -> bytes:
        """``ProgramReferee.programOutput``: the element bytes a final state gives."""
        return bytes(self._call(self._programs().functions.programOutput(record.encode(), state)))

    def program_step(self, record: Any, element: int, step: int, before: bytes, openings: list[tuple]) -> bytes:
        """``ProgramReferee.programStep``: the hash of the state after step ``step``."""
        return bytes(self._call(self._programs().functions.programStep(record.encode(), element, step, before,
                                                                        openings)))

    def program_step_gas(self, record: Any, element: int, step: int, before: bytes, openings: list[tuple]) -> int:
        """Exact transaction gas of ``programStep`` sent as a transaction."""
        fn = self._programs().functions.programStep(record.encode(), element, step, before, openings)
        tx = fn.transact({"from": self.w3.eth.accounts[0], "gas": 29_000_000})
        return int(self.w3.eth.wait_for_transaction_receipt(tx).gasUsed)

    def gas_used(self, proof: Any) -> tuple[int, int]:
        """Exact gas of the decision sent as a transaction: ``(total, execution)``,
        execution = total - 21,000 - calldata (4 gas per zero byte, 16 per nonzero)."""
        tx = self._fn(proof).transact({"from": self.w3.eth.accounts[0], "gas": 29_000_000})
        total = int(self.w3.eth.wait_for_transaction_receipt(tx).gasUsed)
        data = bytes(self.w3.eth.get_transaction(tx)["input"])
        return total, total - 21_000 - sum(4 if b == 0 else 16 for b in data)
