"""Claims: what a prover signs, how it travels, and how a round of them is committed.

A claim says "on chain ``chain_id``, in round ``round``, prover ``prover`` ran task
``task`` of model ``model_digest`` on input ``input_digest`` with sampling seed
``seed`` and got output ``output_digest``, with trace ``trace_root``".
Three encodings, each exact and each mirrored by the Solidity contract:

* **Struct hash** (EIP-712 ``hashStruct``): ``keccak256(abi.encode(CLAIM_TYPEHASH,
  version, chainId, modelDigest, inputDigest, outputDigest, traceRoot, seed,
  round, step, task, prover))`` with :data:`CLAIM_TYPE` below. Every field is a
  static ABI type, so EIP-712's ``encodeData`` *is* Solidity's ``abi.encode``.
  This hash names a claim everywhere: round-tree leaves, dispute games, logs.
* **Signature**: EIP-712 typed data, domain ``{name: "refute", version: "1",
  chainId: claim.chain_id, verifyingContract: registry}``; the contract
  recovers the signer with ``ecrecover`` on ``keccak256(0x1901 ||
  domainSeparator || structHash)``. ``registry`` is the claim-registry
  contract's address, and the zero address while none is deployed (swarm-only
  claims). Signatures are 65 bytes ``r || s || v``, ``v`` in {27, 28}, low ``s``
  (EIP-2: ``s <= n/2``), ``0 < r, s < n``.
* **Wire** (for the swarm): ``WIRE_MAGIC || abi.encode(<claim fields>, address
  registry, bytes32 r, bytes32 s, uint8 v)``, 484 bytes, all words static; and
  a JSON form with the same content. Decoding is strict: anything that does
  not re-encode to the exact input is rejected with :class:`ClaimError`.

A prover commits to its claims of one round with :class:`ClaimRound`: a
keccak256 Merkle tree whose leaf ``i`` is the claim with ``step == i`` (steps of
a round are exactly ``0..n-1``), leaf ``= keccak256(0x10 || claimHash)``, node
``= keccak256(0x11 || left || right)``, odd levels padded with
:data:`EMPTY` (32 zero bytes). docs/protocol.md, section "Claims", is the
normative text; this module is its reference implementation.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Final

from Crypto.Hash import keccak as _keccak_mod
from eth_abi import encode as _abi_encode
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_keys import keys as _keys
from eth_utils import to_checksum_address

__all__ = [
    "CLAIM_VERSION",
    "CLAIM_FIELDS",
    "CLAIM_TYPE",
    "CLAIM_TYPEHASH",
    "DOMAIN_NAME",
    "DOMAIN_VERSION",
    "EIP712_DOMAIN_TYPE",
    "EIP712_DOMAIN_TYPEHASH",
    "EMPTY",
    "LEAF_PREFIX",
    "NODE_PREFIX",
    "TASKS",
    "WIRE_MAGIC",
    "WIRE_LENGTH",
    "JSON_KIND",
    "ZERO_ADDRESS",
    "Claim",
    "ClaimError",
    "ClaimRound",
    "SignedClaim",
    "claim_hash",
    "domain_separator",
    "eip712_digest",
    "encode_claim",
    "recover_signer",
    "sign_claim",
    "typed_data",
    "verify_inclusion",
    "verify_signed_claim",
    "claim_leaf",
    "merkle_root",
]


class ClaimError(ValueError):
    """A claim, signature, encoding or inclusion proof is invalid."""


def keccak256(data: bytes) -> bytes:
    """keccak256 (Ethereum's, not SHA3-256) of ``data``."""
    return _keccak_mod.new(digest_bits=256, data=data).digest()


# ---------------------------------------------------------------------------
# constants

#: The only claim version this build knows. The version is the first field of
#: the struct, so it is covered by the struct hash and the signature, and it is
#: the first word of the wire encoding (decoders dispatch on it).
CLAIM_VERSION: Final = 1

#: Task kinds (``uint8``). 0 is reserved (never valid). A task fixes what the
#: digests mean; see docs/protocol.md "Claims".
TASKS: Final[Mapping[int, str]] = {
    1: "smollm2.generate",
    2: "minilm.embed",
}
_TASK_IDS: Final = {name: tid for tid, name in TASKS.items()}

#: (Python name, EIP-712/Solidity name, ABI type), in struct order.
CLAIM_FIELDS: Final = (
    ("version", "version", "uint16"),
    ("chain_id", "chainId", "uint256"),
    ("model_digest", "modelDigest", "bytes32"),
    ("input_digest", "inputDigest", "bytes32"),
    ("output_digest", "outputDigest", "bytes32"),
    ("trace_root", "traceRoot", "bytes32"),
    ("seed", "seed", "uint64"),
    ("round", "round", "uint64"),
    ("step", "step", "uint64"),
    ("task", "task", "uint8"),
    ("prover", "prover", "address"),
)
_FIELD_TYPES: Final = tuple(t for _, _, t in CLAIM_FIELDS)

#: EIP-712 ``encodeType`` of the claim struct.
CLAIM_TYPE: Final = "Claim(" + ",".join(f"{t} {n}" for _, n, t in CLAIM_FIELDS) + ")"
CLAIM_TYPEHASH: Final = keccak256(CLAIM_TYPE.encode("ascii"))

DOMAIN_NAME: Final = "refute"
DOMAIN_VERSION: Final = "1"
EIP712_DOMAIN_TYPE: Final = (
    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
)
EIP712_DOMAIN_TYPEHASH: Final = keccak256(EIP712_DOMAIN_TYPE.encode("ascii"))

ZERO_ADDRESS: Final = b"\x00" * 20

#: Prefix of the wire encoding: ASCII "RFCL" (refute claim).
WIRE_MAGIC: Final = b"RFCL"
_WIRE_TYPES: Final = _FIELD_TYPES + ("address", "bytes32", "bytes32", "uint8")
_WIRE_NAMES: Final = tuple(n for n, _, _ in CLAIM_FIELDS) + ("registry", "r", "s", "v")
#: Exact length of a version-1 wire encoding: magic + 15 ABI words.
WIRE_LENGTH: Final = len(WIRE_MAGIC) + 32 * len(_WIRE_TYPES)
#: The ``"kind"`` member of the JSON form.
JSON_KIND: Final = "refute.signed_claim"
_JSON_MAX_CHARS: Final = 4096

#: Claim-tree domain separation. Distinct from the tensor tree's prefixes, so a
#: claim-tree node can pass neither for a claim leaf nor for a tensor-tree node.
LEAF_PREFIX: Final = b"\x10"
NODE_PREFIX: Final = b"\x11"
#: Padding for an odd level of the claim tree (no known preimage under either prefix).
EMPTY: Final = b"\x00" * 32
_MAX_PROOF_LENGTH: Final = 64  # steps are uint64

_SECP256K1_N: Final = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_SECP256K1_HALF_N: Final = _SECP256K1_N // 2

_HEX_RE: Final = re.compile(r"[0-9a-fA-F]*")


# ---------------------------------------------------------------------------
# field coercion (constructor inputs: lenient types, strict values)


def _uint(name: str, value: Any, bits: int) -> int:
    if isinstance(value, bool):
        raise ClaimError(f"{name} must be an integer, got bool")
    try:
        v = operator.index(value)
    except TypeError:
        raise ClaimError(f"{name} must be an integer, got {type(value).__name__}") from None
    if not 0 <= v < (1 << bits):
        raise ClaimError(f"{name} = {v} is out of range for uint{bits}")
    return v


def _hex_bytes(name: str, value: str, length: int) -> bytes:
    s = value[2:] if value[:2] in ("0x", "0X") else value
    if len(s) != 2 * length or not _HEX_RE.fullmatch(s):
        raise ClaimError(f"{name} must be {length} bytes ({2 * length} hex digits), got {value!r}")
    return bytes.fromhex(s)


def _bytes_n(name: str, value: Any, length: int) -> bytes:
    if isinstance(value, str):
        return _hex_bytes(name, value, length)
    if isinstance(value, (bytes, bytearray, memoryview)):
        b = bytes(value)
        if len(b) != length:
            raise ClaimError(f"{name} must be exactly {length} bytes, got {len(b)}")
        return b
    raise ClaimError(f"{name} must be bytes or a hex string, got {type(value).__name__}")


def _address(name: str, value: Any) -> bytes:
    b = _bytes_n(name, value, 20)
    if isinstance(value, str):
        s = value[2:] if value[:2] in ("0x", "0X") else value
        mixed = s != s.lower() and s != s.upper()
        if mixed and to_checksum_address(b)[2:] != s:
            raise ClaimError(f"{name} {value!r} has a bad EIP-55 checksum")
    return b


def _task(value: Any) -> int:
    if isinstance(value, str):
        if value not in _TASK_IDS:
            raise ClaimError(f"unknown task {value!r}; known: {sorted(_TASK_IDS)}")
        return _TASK_IDS[value]
    t = _uint("task", value, 8)
    if t not in TASKS:
        raise ClaimError(f"unknown task id {t}; known: {dict(TASKS)}")
    return t


def _hex(b: bytes) -> str:
    return "0x" + b.hex()


# ---------------------------------------------------------------------------
# the claim


@dataclass(frozen=True)
class Claim:
    """One prover's statement about one computation; see the module docstring.

    Constructor inputs may be hex strings (``0x`` optional) or bytes for the
    digests and addresses, and a name from :data:`TASKS` for ``task``; fields
    are stored normalised (``bytes``, ``int``), so equal claims compare equal.

    ``step`` is the claim's index within its prover's round: the claims a
    prover commits to in one round carry steps exactly ``0..n-1``, and a
    claim's leaf index in the round tree is its step. (A multi-step task, e.g.
    generating many tokens, is one claim; its steps are records of the trace.)
    ``seed`` is the sampling seed (0 for tasks that sample nothing).
    """

    version: int
    chain_id: int
    model_digest: bytes
    input_digest: bytes
    output_digest: bytes
    trace_root: bytes
    seed: int
    round: int
    step: int
    task: int
    prover: bytes

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        version = _uint("version", self.version, 16)
        if version != CLAIM_VERSION:
            raise ClaimError(f"unsupported claim version {version} (this build knows {CLAIM_VERSION})")
        set_(self, "version", version)
        chain_id = _uint("chain_id", self.chain_id, 256)
        if chain_id == 0:
            raise ClaimError("chain_id must be nonzero (EIP-155 chain ids start at 1)")
        set_(self, "chain_id", chain_id)
        for name in ("model_digest", "input_digest", "output_digest", "trace_root"):
            set_(self, name, _bytes_n(name, getattr(self, name), 32))
        for name in ("seed", "round", "step"):
            set_(self, name, _uint(name, getattr(self, name), 64))
        set_(self, "task", _task(self.task))
        prover = _address("prover", self.prover)
        if prover == ZERO_ADDRESS:
            raise ClaimError("prover must not be the zero address (ecrecover's failure value)")
        set_(self, "prover", prover)

    @classmethod
    def create(cls, **kw: Any) -> Claim:
        """Keyword constructor with ``version`` defaulting to :data:`CLAIM_VERSION`."""
        kw.setdefault("version", CLAIM_VERSION)
        return cls(**kw)

    def values(self) -> tuple[Any, ...]:
        """The fields in struct order, as eth_abi takes them."""
        return tuple(getattr(self, name) for name, _, _ in CLAIM_FIELDS)

    @property
    def task_name(self) -> str:
        return TASKS[self.task]

    def hash(self) -> bytes:
        """:func:`claim_hash` of this claim."""
        return claim_hash(self)


def encode_claim(claim: Claim) -> bytes:
    """``abi.encode(CLAIM_TYPEHASH, <fields in struct order>)``: the struct hash's preimage."""
    return _abi_encode(("bytes32",) + _FIELD_TYPES, (CLAIM_TYPEHASH,) + claim.values())


def claim_hash(claim: Claim) -> bytes:
    """EIP-712 ``hashStruct(claim)`` = ``keccak256(encode_claim(claim))``."""
    return keccak256(encode_claim(claim))


# ---------------------------------------------------------------------------
# EIP-712


def domain_separator(chain_id: int, registry: bytes | str = ZERO_ADDRESS) -> bytes:
    """EIP-712 domain separator for ``chain_id`` and the registry contract's address."""
    chain_id = _uint("chain_id", chain_id, 256)
    reg = _address("registry", registry)
    return keccak256(
        _abi_encode(
            ("bytes32", "bytes32", "bytes32", "uint256", "address"),
            (
                EIP712_DOMAIN_TYPEHASH,
                keccak256(DOMAIN_NAME.encode()),
                keccak256(DOMAIN_VERSION.encode()),
                chain_id,
                reg,
            ),
        )
    )


def eip712_digest(claim: Claim, registry: bytes | str = ZERO_ADDRESS) -> bytes:
    """``keccak256(0x1901 || domainSeparator || hashStruct(claim))``: what ``ecrecover`` takes."""
    return keccak256(b"\x19\x01" + domain_separator(claim.chain_id, registry) + claim_hash(claim))


def typed_data(claim: Claim, registry: bytes | str = ZERO_ADDRESS) -> dict[str, Any]:
    """The claim as ``eth_signTypedData_v4`` JSON (for wallets and eth-account)."""
    reg = _address("registry", registry)
    message: dict[str, Any] = {}
    for name, sol, typ in CLAIM_FIELDS:
        v = getattr(claim, name)
        if typ == "address":
            v = to_checksum_address(v)
        elif typ == "bytes32":
            v = _hex(v)
        message[sol] = v
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Claim": [{"name": sol, "type": typ} for _, sol, typ in CLAIM_FIELDS],
        },
        "primaryType": "Claim",
        "domain": {
            "name": DOMAIN_NAME,
            "version": DOMAIN_VERSION,
            "chainId": claim.chain_id,
            "verifyingContract": to_checksum_address(reg),
        },
        "message": message,
    }


# ---------------------------------------------------------------------------
# signatures


def _split_signature(signature: Any) -> tuple[int, int, int]:
    """(r, s, v) of a well-formed 65-byte signature; ClaimError otherwise."""
    if not isinstance(signature, bytes):
        raise ClaimError(f"signature must be bytes, got {type(signature).__name__}")
    if len(signature) != 65:
        raise ClaimError(f"signature must be 65 bytes (r || s || v), got {len(signature)}")
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:64], "big")
    v = signature[64]
    if v not in (27, 28):
        raise ClaimError(f"signature v must be 27 or 28, got {v}")
    if not 0 < r < _SECP256K1_N:
        raise ClaimError("signature r is out of range (must be 0 < r < n)")
    if not 0 < s <= _SECP256K1_HALF_N:
        raise ClaimError("signature s is out of range (must be 0 < s <= n/2; high-s signatures are malleable)")
    return r, s, v


@dataclass(frozen=True)
class SignedClaim:
    """A claim, the registry it was signed for (zero: none yet), and ``r || s || v``.

    Construction checks types only; :func:`verify_signed_claim` (and the wire
    encoders) check the signature.
    """

    claim: Claim
    signature: bytes
    registry: bytes = ZERO_ADDRESS

    def __post_init__(self) -> None:
        if not isinstance(self.claim, Claim):
            raise ClaimError(f"claim must be a Claim, got {type(self.claim).__name__}")
        if not isinstance(self.signature, (bytes, bytearray, memoryview)):
            raise ClaimError(f"signature must be bytes, got {type(self.signature).__name__}")
        object.__setattr__(self, "signature", bytes(self.signature))
        object.__setattr__(self, "registry", _address("registry", self.registry))

    # -- wire -------------------------------------------------------------

    def to_bytes(self) -> bytes:
        """``WIRE_MAGIC || abi.encode(<claim fields>, registry, r, s, v)`` (484 bytes)."""
        r, s, v = _split_signature(self.signature)
        return WIRE_MAGIC + _abi_encode(
            _WIRE_TYPES,
            self.claim.values() + (self.registry, r.to_bytes(32, "big"), s.to_bytes(32, "big"), v),
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SignedClaim:
        """Strict inverse of :meth:`to_bytes`; any other input raises :class:`ClaimError`.

        Reads the version word first, then checks the length, then every word
        (unused high bytes zero), the fields' ranges and the signature's form,
        and finally that the result re-encodes (eth_abi) to exactly ``data``.
        Checks structure only: call :func:`verify_signed_claim` to check who signed.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ClaimError(f"wire claim must be bytes, got {type(data).__name__}")
        data = bytes(data)
        if data[: len(WIRE_MAGIC)] != WIRE_MAGIC:
            raise ClaimError(f"not a wire claim: bad magic {data[:len(WIRE_MAGIC)]!r} (expected {WIRE_MAGIC!r})")
        body = data[len(WIRE_MAGIC) :]
        if len(body) < 32:
            raise ClaimError(f"wire claim truncated: {len(data)} bytes, need {WIRE_LENGTH}")
        version = int.from_bytes(body[:32], "big")
        if version >> 16:
            raise ClaimError("wire claim word 0 (version: uint16) is not canonical: its 30 high bytes must be zero")
        if version != CLAIM_VERSION:
            raise ClaimError(f"unsupported claim version {version} (this build knows {CLAIM_VERSION})")
        if len(data) < WIRE_LENGTH:
            raise ClaimError(f"wire claim truncated: {len(data)} bytes, need {WIRE_LENGTH}")
        if len(data) > WIRE_LENGTH:
            raise ClaimError(f"wire claim has {len(data) - WIRE_LENGTH} trailing bytes (length must be {WIRE_LENGTH})")
        values = []
        for k, typ in enumerate(_WIRE_TYPES):
            name = _WIRE_NAMES[k]
            word = body[32 * k : 32 * k + 32]
            if typ == "bytes32":
                values.append(word)
                continue
            width = 20 if typ == "address" else int(typ[4:]) // 8
            if any(word[: 32 - width]):
                raise ClaimError(
                    f"wire claim word {k} ({name}: {typ}) is not canonical: its {32 - width} high bytes must be zero"
                )
            values.append(word[32 - width :] if typ == "address" else int.from_bytes(word, "big"))
        *claim_values, registry, r, s, v = values
        claim = Claim(**{name: val for (name, _, _), val in zip(CLAIM_FIELDS, claim_values)})
        signed = cls(claim=claim, signature=r + s + bytes([v]), registry=registry)
        if signed.to_bytes() != data:  # also checks the signature's form
            raise ClaimError("wire claim is not canonical (it does not re-encode to the same bytes)")
        return signed

    # -- JSON -------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        _split_signature(self.signature)
        d: dict[str, Any] = {"kind": JSON_KIND}
        for name, _, typ in CLAIM_FIELDS:
            v = getattr(self.claim, name)
            if typ == "address":
                v = to_checksum_address(v)
            elif typ == "bytes32":
                v = _hex(v)
            d[name] = v
        d["registry"] = to_checksum_address(self.registry)
        d["signature"] = _hex(self.signature)
        return d

    def to_json(self) -> str:
        """Compact JSON with sorted keys: integers as JSON integers, bytes as
        lowercase ``0x`` hex, addresses EIP-55 checksummed."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> SignedClaim:
        """Strict inverse of :meth:`to_json` (whitespace and key order are free;
        every value must be in its canonical form)."""
        if isinstance(text, (bytes, bytearray)):
            try:
                text = bytes(text).decode("utf-8")
            except UnicodeDecodeError as e:
                raise ClaimError(f"JSON claim is not UTF-8: {e}") from None
        if not isinstance(text, str):
            raise ClaimError(f"JSON claim must be str or bytes, got {type(text).__name__}")
        if len(text) > _JSON_MAX_CHARS:
            raise ClaimError(f"JSON claim is oversized: {len(text)} characters (max {_JSON_MAX_CHARS})")
        try:
            obj = json.loads(
                text,
                parse_float=_reject_json("a non-integer number"),
                parse_constant=_reject_json("NaN/Infinity"),
                object_pairs_hook=_no_duplicate_keys,
            )
        except ClaimError:
            raise
        except (ValueError, RecursionError) as e:
            raise ClaimError(f"malformed JSON claim: {e}") from None
        return cls.from_dict(obj)

    @classmethod
    def from_dict(cls, obj: Any) -> SignedClaim:
        if not isinstance(obj, dict):
            raise ClaimError(f"JSON claim must be an object, got {type(obj).__name__}")
        expected = {"kind", "registry", "signature"} | {name for name, _, _ in CLAIM_FIELDS}
        missing, extra = expected - obj.keys(), obj.keys() - expected
        if missing or extra:
            raise ClaimError(f"JSON claim keys: missing {sorted(missing)}, unexpected {sorted(extra)}")
        if obj["kind"] != JSON_KIND:
            raise ClaimError(f"JSON claim kind must be {JSON_KIND!r}, got {obj['kind']!r}")
        version = obj["version"]
        if type(version) is not int:
            raise ClaimError(f"JSON claim version must be an integer, got {type(version).__name__}")
        if version != CLAIM_VERSION:
            raise ClaimError(f"unsupported claim version {version} (this build knows {CLAIM_VERSION})")
        kw: dict[str, Any] = {}
        for name, _, typ in CLAIM_FIELDS:
            v = obj[name]
            if typ.startswith("uint"):
                if type(v) is not int:
                    raise ClaimError(f"JSON claim {name} must be an integer, got {type(v).__name__}")
            elif typ == "bytes32":
                v = _canonical_hex(name, v, 32)
            elif typ == "address":
                v = _canonical_address(name, v)
            kw[name] = v
        signed = cls(
            claim=Claim(**kw),
            signature=_canonical_hex("signature", obj["signature"], 65),
            registry=_canonical_address("registry", obj["registry"]),
        )
        _split_signature(signed.signature)
        return signed


def _reject_json(what: str):
    def reject(s: str) -> Any:
        raise ClaimError(f"JSON claim contains {what}: {s!r}")

    return reject


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for k, v in pairs:
        if k in d:
            raise ClaimError(f"JSON claim has duplicate key {k!r}")
        d[k] = v
    return d


def _canonical_hex(name: str, v: Any, length: int) -> bytes:
    if not isinstance(v, str):
        raise ClaimError(f"JSON claim {name} must be a hex string, got {type(v).__name__}")
    if not (v.startswith("0x") and len(v) == 2 + 2 * length and re.fullmatch(r"[0-9a-f]*", v[2:])):
        raise ClaimError(f"JSON claim {name} must be '0x' + {2 * length} lowercase hex digits, got {v!r}")
    return bytes.fromhex(v[2:])


def _canonical_address(name: str, v: Any) -> bytes:
    b = _canonical_hex(name, v.lower() if isinstance(v, str) else v, 20)
    if v != to_checksum_address(b):
        raise ClaimError(f"JSON claim {name} must be an EIP-55 checksummed address, got {v!r}")
    return b


def sign_claim(claim: Claim, private_key: Any, *, registry: bytes | str = ZERO_ADDRESS) -> SignedClaim:
    """Sign ``claim`` as EIP-712 typed data (eth-account) for ``registry``.

    The key must belong to ``claim.prover``. The signature is checked against
    this module's own digest before it is returned.
    """
    if not isinstance(claim, Claim):
        raise ClaimError(f"claim must be a Claim, got {type(claim).__name__}")
    reg = _address("registry", registry)
    try:
        account = Account.from_key(private_key)
    except Exception:  # never echo the key
        raise ClaimError("invalid private key") from None
    if bytes.fromhex(account.address[2:]) != claim.prover:
        raise ClaimError(
            f"key's address {account.address} is not the claim's prover {to_checksum_address(claim.prover)}"
        )
    sm = account.sign_message(encode_typed_data(full_message=typed_data(claim, reg)))
    signature = sm.r.to_bytes(32, "big") + sm.s.to_bytes(32, "big") + bytes([sm.v])
    signed = SignedClaim(claim=claim, signature=signature, registry=reg)
    verify_signed_claim(signed)  # eth-account's typed-data path must agree with ours
    return signed


def recover_signer(signed: SignedClaim) -> bytes:
    """The 20-byte address whose key made ``signed.signature`` over the claim's
    EIP-712 digest (what Solidity's ``ecrecover`` returns). Malformed or
    malleable (high-s) signatures raise :class:`ClaimError`."""
    if not isinstance(signed, SignedClaim):
        raise ClaimError(f"expected a SignedClaim, got {type(signed).__name__}")
    r, s, v = _split_signature(signed.signature)
    digest = eip712_digest(signed.claim, signed.registry)
    try:
        pub = _keys.Signature(vrs=(v - 27, r, s)).recover_public_key_from_msg_hash(digest)
    except Exception as e:  # eth_keys.exceptions.BadSignature / ValidationError
        raise ClaimError(f"signature does not recover to any key: {e}") from None
    return pub.to_canonical_address()


def verify_signed_claim(
    signed: SignedClaim,
    *,
    registry: bytes | str | None = None,
    chain_id: int | None = None,
) -> None:
    """Raise :class:`ClaimError` unless ``claim.prover`` signed ``signed``.

    ``registry`` / ``chain_id``, when given, must also match what the claim was
    signed for (a verifier passes its own configuration).
    """
    if not isinstance(signed, SignedClaim):
        raise ClaimError(f"expected a SignedClaim, got {type(signed).__name__}")
    if registry is not None and _address("registry", registry) != signed.registry:
        raise ClaimError(
            f"claim was signed for registry {to_checksum_address(signed.registry)}, "
            f"expected {to_checksum_address(_address('registry', registry))}"
        )
    if chain_id is not None and chain_id != signed.claim.chain_id:
        raise ClaimError(f"claim is for chain {signed.claim.chain_id}, expected {chain_id}")
    signer = recover_signer(signed)
    if signer != signed.claim.prover:
        raise ClaimError(
            f"signature is by {to_checksum_address(signer)}, not by the prover "
            f"{to_checksum_address(signed.claim.prover)}"
        )


# ---------------------------------------------------------------------------
# round roots


def claim_leaf(h: bytes) -> bytes:
    """Leaf of the claim tree: ``keccak256(0x10 || claimHash)``."""
    return keccak256(LEAF_PREFIX + h)


def _node(left: bytes, right: bytes) -> bytes:
    return keccak256(NODE_PREFIX + left + right)


def _levels(hashes: Sequence[bytes]) -> list[list[bytes]]:
    level = [claim_leaf(h) for h in hashes]
    levels = [level]
    while len(level) > 1:
        if len(level) % 2:
            level = level + [EMPTY]
            levels[-1] = level
        level = [_node(level[i], level[i + 1]) for i in range(0, len(level), 2)]
        levels.append(level)
    return levels


def merkle_root(hashes: Sequence[bytes]) -> bytes:
    """Root of the claim tree over claim hashes in leaf order (at least one)."""
    if not hashes:
        raise ClaimError("a claim tree needs at least one claim")
    return _levels([_bytes_n("claim hash", h, 32) for h in hashes])[-1][0]


def verify_inclusion(root: bytes, claim_hash: bytes, index: int, proof: Sequence[bytes]) -> bool:
    """Whether ``claim_hash`` is leaf ``index`` of the claim tree with ``root``.

    ``proof`` lists siblings from the leaf up; bit ``k`` of ``index`` says
    whether the running hash is the right (1) or left (0) child at level ``k``.
    ``index`` must be below ``2**len(proof)``. Wrongly typed arguments raise
    :class:`ClaimError`; a wrong proof returns False.
    """
    root = _bytes_n("root", root, 32)
    h = _bytes_n("claim hash", claim_hash, 32)
    index = _uint("index", index, 64)
    if isinstance(proof, (str, bytes)) or not isinstance(proof, Sequence):
        raise ClaimError(f"proof must be a sequence of 32-byte hashes, got {type(proof).__name__}")
    if len(proof) > _MAX_PROOF_LENGTH:
        return False
    siblings = [_bytes_n("proof element", p, 32) for p in proof]
    if index >> len(siblings):
        return False
    acc = claim_leaf(h)
    for k, sib in enumerate(siblings):
        acc = _node(sib, acc) if (index >> k) & 1 else _node(acc, sib)
    return acc == root


class ClaimRound:
    """One prover's claims of one round and their Merkle root.

    Canonical order: by ``step``; the steps must be exactly ``0..n-1`` (so the
    leaf index of a claim is its step, and no step is claimed twice). All
    claims share ``prover``, ``round`` and ``chain_id``. Signatures are not
    checked here (``SignedClaim`` inputs are unwrapped to their claims).
    """

    def __init__(self, claims: Iterable[Claim | SignedClaim]):
        cs = [c.claim if isinstance(c, SignedClaim) else c for c in claims]
        if not cs:
            raise ClaimError("a claim round needs at least one claim")
        for c in cs:
            if not isinstance(c, Claim):
                raise ClaimError(f"ClaimRound takes Claim or SignedClaim, got {type(c).__name__}")
        first = cs[0]
        for c in cs:
            for name in ("prover", "round", "chain_id"):
                if getattr(c, name) != getattr(first, name):
                    raise ClaimError(
                        f"claims of one round must share {name}: {getattr(first, name)!r} != {getattr(c, name)!r}"
                    )
        cs.sort(key=lambda c: c.step)
        for i, c in enumerate(cs):
            if c.step != i:
                if i and cs[i - 1].step == c.step:
                    raise ClaimError(f"two claims with step {c.step} in one round")
                raise ClaimError(f"steps of a round must be 0..{len(cs) - 1}; step {i} is missing")
        self.claims: tuple[Claim, ...] = tuple(cs)
        self.hashes: tuple[bytes, ...] = tuple(claim_hash(c) for c in cs)
        self._index = {h: i for i, h in enumerate(self.hashes)}
        self._levels = _levels(self.hashes)
        self.root: bytes = self._levels[-1][0]

    @property
    def prover(self) -> bytes:
        return self.claims[0].prover

    @property
    def round(self) -> int:
        return self.claims[0].round

    @property
    def chain_id(self) -> int:
        return self.claims[0].chain_id

    def __len__(self) -> int:
        return len(self.claims)

    def index_of(self, claim_hash: bytes) -> int:
        try:
            return self._index[claim_hash]
        except (KeyError, TypeError):
            raise ClaimError(f"claim {claim_hash!r} is not in this round") from None

    def prove(self, claim_hash: bytes) -> list[bytes]:
        """Siblings from the leaf up for ``claim_hash`` (its index is its step)."""
        i = self.index_of(claim_hash)
        proof = []
        for level in self._levels[:-1]:
            proof.append(level[i ^ 1])
            i >>= 1
        return proof
