"""What the swarm's two node kinds share: models, tasks, the peer directory, the
sampling rule and the deployment file.

**Models.** ``smollm2`` (the packaged SmolLM2-135M-Instruct) or ``tiny`` (the
random-weight Llama of :mod:`refute.compute.tiny`, for fast end-to-end tests).
Both are generation models; every node of a swarm must run the same one.

**Tasks.** A prover node's work in round ``r`` is :func:`round_tasks`: one
generation per claim, prompts taken in turn from a fixed list, plain
temperature sampling (the on-chain referee decides greedy and Gumbel-max
sampling; top-k and top-p are not decided on chain yet).

**Peer directory.** A claim names its prover by Ethereum address; a verifier
needs that prover's hivemind peer id to fetch bundles and tensors. Each
prover stores ``peer id || expiry`` under ``refute/peers/<chain id>``, subkey
its address, signed with its Ethereum key over
``keccak("refute.peer" || u64 chain id || address || u64 expiry || peer id)``.
:class:`PeerDirectory` keeps only records whose signature recovers the subkey's
address and that have not expired; the rest are dropped and counted.

**Sampling.** A verifier checks a claim when :func:`sample_seed` falls under
its sampling rate. The seed is ``keccak("refute.sample" || keccak(verifier key)
|| claim hash || hash of the block that recorded the round's root)``: the
prover cannot compute it when it commits (it knows neither the verifier's key
nor the hash of the block its own transaction lands in), the verifier gets the
same answer after a restart, and the same seed picks the records of a spot
replay.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak, to_checksum_address

from refute.verifier.tasks import GenerateTask

__all__ = ["MODELS", "CHAIN_TIMEOUT_S", "load_model", "round_tasks", "other_task", "PeerDirectory", "sample_seed", "is_sampled",
           "peers_key", "read_deployment", "write_deployment", "DemoSampling"]

log = logging.getLogger(__name__)

MODELS: Final = ("smollm2", "tiny")

#: Seconds a node waits for one JSON-RPC answer. A dev chain (py-evm) executes a
#: one-step decision for tens of seconds, and every other request queues behind it.
CHAIN_TIMEOUT_S: Final = 120.0

#: Prompts a prover node works through, one per claim.
PROMPTS: Final = (
    "The capital of France is",
    "Water boils at a temperature of",
    "The largest planet in the solar system is",
    "A good name for a black cat is",
    "The first person to walk on the moon was",
    "Photosynthesis turns sunlight into",
    "The opposite of hot is",
    "In chess, the piece that moves in an L shape is the",
)
#: The prompt :class:`~refute.verifier.cheats.CopiedOutput` copies from (never in PROMPTS).
OTHER_PROMPT: Final = "Once upon a time there was a"


@dataclass(frozen=True)
class DemoSampling:
    """Sampling settings of the swarm's tasks (plain temperature: decided on chain)."""

    max_new_tokens: int = 4
    temperature: float = 0.8


def load_model(name: str, backend: str = "reference") -> Any:
    """The generation model ``name`` (:data:`MODELS`) on ``backend``."""
    from refute.run import _executor

    if name == "smollm2":
        from refute.compute.llama import smollm2

        return smollm2(_executor(backend))
    if name == "tiny":
        from refute.compute.tiny import tiny_llama

        return tiny_llama(_executor(backend))
    raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")


def _prompt_ids(model_name: str, text: str) -> tuple[int, ...]:
    if model_name == "smollm2":
        from refute.compute.tokenizer import smollm2_tokenizer

        return tuple(smollm2_tokenizer().encode(text))
    # The tiny model has a 41-token vocabulary: a stable hash of the text, ids 3..40.
    return tuple(3 + b % 38 for b in keccak(text=text)[:6])


def round_tasks(model_name: str, round: int, peer_index: int, count: int = 1,
                sampling: DemoSampling = DemoSampling()) -> list[GenerateTask]:
    """The ``count`` generation tasks of prover ``peer_index`` in ``round``."""
    out = []
    for step in range(count):
        text = PROMPTS[(round * 3 + peer_index * 5 + step) % len(PROMPTS)]
        out.append(GenerateTask(_prompt_ids(model_name, text), sampling.max_new_tokens, sampling.temperature,
                                0, 1.0, sequence=step))
    return out


def other_task(model_name: str, sampling: DemoSampling = DemoSampling()) -> GenerateTask:
    return GenerateTask(_prompt_ids(model_name, OTHER_PROMPT), sampling.max_new_tokens, sampling.temperature, 0, 1.0)


# --------------------------------------------------------------------------- the peer directory


def peers_key(chain_id: int) -> str:
    return f"refute/peers/{chain_id}"


def _peer_message(chain_id: int, address: str, expiry: int, peer_id: bytes) -> bytes:
    return keccak(b"refute.peer" + chain_id.to_bytes(8, "big") + bytes.fromhex(address[2:]) +
                  expiry.to_bytes(8, "big") + peer_id)


#: Largest peer record accepted (a base58 peer id is ~52 bytes).
MAX_PEER_RECORD: Final = 256


class PeerDirectory:
    """Signed ``address -> hivemind peer id`` records on a hivemind DHT."""

    def __init__(self, dht: Any, chain_id: int) -> None:
        self.dht, self.chain_id = dht, chain_id
        self.counters: Counter[str] = Counter()

    def announce(self, private_key: Any, peer_id: Any, ttl_s: float = 3600.0) -> bool:
        from hivemind.utils import get_dht_time

        acct = Account.from_key(private_key)
        pid = peer_id.to_bytes() if hasattr(peer_id, "to_bytes") else bytes(peer_id)
        expiry = int(get_dht_time() + ttl_s)
        sig = acct.sign_message(encode_defunct(_peer_message(self.chain_id, acct.address, expiry, pid))).signature
        value = expiry.to_bytes(8, "big") + bytes(sig) + pid
        return bool(self.dht.store(peers_key(self.chain_id), subkey=acct.address, value=value,
                                   expiration_time=get_dht_time() + ttl_s))

    def lookup(self, address: str | bytes) -> Any | None:
        """The peer id announced by ``address`` (None when there is no valid record)."""
        from hivemind.p2p import PeerID
        from hivemind.utils import get_dht_time

        addr = to_checksum_address(address)
        found = self.dht.get(peers_key(self.chain_id), latest=True)
        entries = found.value if found is not None and isinstance(found.value, dict) else {}
        entry = entries.get(addr)
        value = getattr(entry, "value", None)
        if value is None:
            self.counters["missing"] += 1
            return None
        if not isinstance(value, bytes) or not 8 + 65 < len(value) <= MAX_PEER_RECORD:
            self.counters["malformed"] += 1
            return None
        expiry, sig, pid = int.from_bytes(value[:8], "big"), value[8:73], value[73:]
        if expiry < get_dht_time():
            self.counters["expired"] += 1
            return None
        try:
            signer = Account.recover_message(encode_defunct(_peer_message(self.chain_id, addr, expiry, pid)),
                                             signature=sig)
        except Exception:  # noqa: BLE001 (any undecodable signature is just a bad record)
            signer = None
        if signer != addr:
            self.counters["bad_signature"] += 1
            return None
        try:
            return PeerID(pid)
        except Exception:  # noqa: BLE001
            self.counters["malformed"] += 1
            return None


# --------------------------------------------------------------------------- sampling


def sample_seed(private_key: Any, claim_hash: bytes, block_hash: bytes) -> bytes:
    """The verifier's sampling seed for a claim (module docstring)."""
    secret = keccak(bytes(Account.from_key(private_key).key))
    return keccak(b"refute.sample" + secret + claim_hash + block_hash)


def is_sampled(seed: bytes, rate: float) -> bool:
    """True with probability ``rate`` over seeds (``rate`` in (0, 1])."""
    return int.from_bytes(seed, "big") < rate * 2**256


# --------------------------------------------------------------------------- the deployment file


def write_deployment(path: str | Path, info: dict[str, Any]) -> None:
    """Write :meth:`GameSystem.describe`'s dict (atomically: a reader never sees half a file)."""
    p = Path(path)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(info, indent=2))
    tmp.replace(p)


def read_deployment(path: str | Path) -> dict[str, Any]:
    try:
        info = json.loads(Path(path).read_text())
    except OSError as e:
        raise ValueError(f"cannot read the deployment file {path}: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"the deployment file {path} is not JSON: {e}") from None
    if not isinstance(info, dict):
        raise ValueError(f"the deployment file {path} does not hold an object")
    return info
