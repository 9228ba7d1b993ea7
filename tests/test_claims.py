"""Claims (compute/claims.py; docs/protocol.md "Claims").

* the EIP-712 type strings, type hashes and digests, checked against
  eth-account's own ``encode_typed_data`` / ``sign_typed_data`` from a typed-data
  document written out here by hand (an independent path);
* pinned known-answer vectors (key 0x…01) for the Solidity side to reuse;
* signatures: round trip, wrong key, forged, high-s (malleable), malformed;
* wire and JSON encodings: round trips, every single-byte change to a signed
  wire claim rejected or no longer verifying, truncation, trailing bytes,
  non-canonical words, bad versions, malformed JSON, all as ClaimError;
* round trees: root independent of input order, equal to a separate
  reference implementation, every member's proof verifies, tampered
  siblings/indices/hashes/lengths fail, bad rounds rejected.
"""

from __future__ import annotations

import json
import random

import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_keys import keys as eth_keys
from eth_utils import keccak as eth_keccak
from eth_utils import to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st

from refute.compute.claims import (
    CLAIM_FIELDS,
    CLAIM_TYPE,
    CLAIM_TYPEHASH,
    CLAIM_VERSION,
    EIP712_DOMAIN_TYPEHASH,
    EMPTY,
    LEAF_PREFIX,
    NODE_PREFIX,
    TASKS,
    WIRE_LENGTH,
    WIRE_MAGIC,
    ZERO_ADDRESS,
    Claim,
    ClaimError,
    ClaimRound,
    SignedClaim,
    claim_hash,
    domain_separator,
    eip712_digest,
    encode_claim,
    merkle_root,
    recover_signer,
    sign_claim,
    typed_data,
    verify_inclusion,
    verify_signed_claim,
)

N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

# keys 0x…01, 0x…02, 0x…03 and their addresses
KEYS = [i.to_bytes(32, "big") for i in (1, 2, 3)]
ADDRS = [bytes.fromhex(Account.from_key(k).address[2:]) for k in KEYS]
KEY1, ADDR1 = KEYS[0], ADDRS[0]

# first contract deployed by anvil's/hardhat's default account: a realistic registry
REGISTRY = bytes.fromhex("5FbDB2315678afecb367f032d93F642f64180aa3")


def kat_claim(**kw) -> Claim:
    fields = dict(
        version=1,
        chain_id=31337,
        model_digest=b"\x11" * 32,
        input_digest=b"\x22" * 32,
        output_digest=b"\x33" * 32,
        trace_root=b"\x44" * 32,
        seed=42,
        round=7,
        step=0,
        task=1,
        prover=ADDR1,
    )
    fields.update(kw)
    return Claim(**fields)


# ---------------------------------------------------------------------------
# strategies

u64 = st.one_of(st.sampled_from([0, 1, 2**32, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1))
chain_ids = st.one_of(st.sampled_from([1, 31337, 2**256 - 1]), st.integers(1, 2**256 - 1))
b32 = st.binary(min_size=32, max_size=32)
nonzero_addresses = st.binary(min_size=20, max_size=20).filter(lambda b: b != ZERO_ADDRESS)


@st.composite
def claims(draw, prover=nonzero_addresses):
    return Claim(
        version=CLAIM_VERSION,
        chain_id=draw(chain_ids),
        model_digest=draw(b32),
        input_digest=draw(b32),
        output_digest=draw(b32),
        trace_root=draw(b32),
        seed=draw(u64),
        round=draw(u64),
        step=draw(u64),
        task=draw(st.sampled_from(sorted(TASKS))),
        prover=draw(prover),
    )


@st.composite
def wellformed_signatures(draw):
    """Signatures of the right form (not by anyone in particular)."""
    r = draw(st.integers(1, N - 1))
    s = draw(st.integers(1, N // 2))
    v = draw(st.sampled_from([27, 28]))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big") + bytes([v])


registries = st.one_of(st.just(ZERO_ADDRESS), st.just(REGISTRY), st.binary(min_size=20, max_size=20))


# ---------------------------------------------------------------------------
# type strings and hashes


def test_type_strings_and_typehashes():
    assert CLAIM_TYPE == (
        "Claim(uint16 version,uint256 chainId,bytes32 modelDigest,bytes32 inputDigest,"
        "bytes32 outputDigest,bytes32 traceRoot,uint64 seed,uint64 round,uint64 step,"
        "uint8 task,address prover)"
    )
    assert CLAIM_TYPEHASH == eth_keccak(text=CLAIM_TYPE)
    assert EIP712_DOMAIN_TYPEHASH == eth_keccak(
        text="EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
    )
    assert [f[0] for f in CLAIM_FIELDS] == [
        "version", "chain_id", "model_digest", "input_digest", "output_digest",
        "trace_root", "seed", "round", "step", "task", "prover",
    ]  # fmt: skip
    assert dict(TASKS) == {1: "smollm2.generate", 2: "minilm.embed"}
    assert (LEAF_PREFIX, NODE_PREFIX, EMPTY) == (b"\x10", b"\x11", b"\x00" * 32)
    assert WIRE_MAGIC == b"RFCL" and WIRE_LENGTH == 4 + 15 * 32


def test_encode_claim_is_abi_encode_word_by_word():
    c = kat_claim(chain_id=2**256 - 1, seed=2**64 - 1, task=2)
    enc = encode_claim(c)
    assert len(enc) == 12 * 32
    words = [enc[i : i + 32] for i in range(0, len(enc), 32)]
    assert words[0] == CLAIM_TYPEHASH
    assert words[1] == (1).to_bytes(32, "big")
    assert words[2] == b"\xff" * 32
    assert words[3:7] == [b"\x11" * 32, b"\x22" * 32, b"\x33" * 32, b"\x44" * 32]
    assert words[7] == b"\x00" * 24 + b"\xff" * 8
    assert words[8] == (7).to_bytes(32, "big") and words[9] == (0).to_bytes(32, "big")
    assert words[10] == (2).to_bytes(32, "big")
    assert words[11] == b"\x00" * 12 + ADDR1
    assert claim_hash(c) == eth_keccak(enc) == c.hash()


def eip191_hash(sm) -> bytes:
    """The digest eth-account signs for a SignableMessage (EIP-191: 0x19 || version || header || body)."""
    return eth_keccak(b"\x19" + sm.version + sm.header + sm.body)


def handwritten_typed_data(c: Claim, registry: bytes) -> dict:
    """The EIP-712 document written out independently of claims.typed_data."""
    return {
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "Claim": [
                {"name": "version", "type": "uint16"},
                {"name": "chainId", "type": "uint256"},
                {"name": "modelDigest", "type": "bytes32"},
                {"name": "inputDigest", "type": "bytes32"},
                {"name": "outputDigest", "type": "bytes32"},
                {"name": "traceRoot", "type": "bytes32"},
                {"name": "seed", "type": "uint64"},
                {"name": "round", "type": "uint64"},
                {"name": "step", "type": "uint64"},
                {"name": "task", "type": "uint8"},
                {"name": "prover", "type": "address"},
            ],
        },
        "primaryType": "Claim",
        "domain": {
            "name": "refute",
            "version": "1",
            "chainId": c.chain_id,
            "verifyingContract": to_checksum_address(registry),
        },
        "message": {
            "version": c.version,
            "chainId": c.chain_id,
            "modelDigest": c.model_digest,
            "inputDigest": c.input_digest,
            "outputDigest": c.output_digest,
            "traceRoot": c.trace_root,
            "seed": c.seed,
            "round": c.round,
            "step": c.step,
            "task": c.task,
            "prover": to_checksum_address(c.prover),
        },
    }


@settings(max_examples=60)
@given(claims(), registries)
def test_eip712_digest_equals_eth_account(c, registry):
    sm = encode_typed_data(full_message=handwritten_typed_data(c, registry))
    assert sm.version == b"\x01" and sm.header == domain_separator(c.chain_id, registry)
    assert sm.body == claim_hash(c)
    assert eip191_hash(sm) == eip712_digest(c, registry)
    # and our own typed-data document says the same
    assert eip191_hash(encode_typed_data(full_message=typed_data(c, registry))) == eip712_digest(c, registry)


@settings(max_examples=12)
@given(st.data())
def test_sign_recover_round_trip_and_eth_account_agrees(data):
    i = data.draw(st.integers(0, len(KEYS) - 1))
    c = data.draw(claims(prover=st.just(ADDRS[i])))
    registry = data.draw(st.sampled_from([ZERO_ADDRESS, REGISTRY]))
    signed = sign_claim(c, KEYS[i], registry=registry)
    assert recover_signer(signed) == ADDRS[i]
    verify_signed_claim(signed, registry=registry, chain_id=c.chain_id)
    # eth-account, fed the handwritten document, makes the very same (RFC 6979) signature
    theirs = Account.sign_typed_data(KEYS[i], full_message=handwritten_typed_data(c, registry))
    assert theirs.signature == signed.signature
    assert Account.recover_message(encode_typed_data(full_message=handwritten_typed_data(c, registry)),
                                   signature=signed.signature) == to_checksum_address(ADDRS[i])  # fmt: skip
    # low s always
    assert int.from_bytes(signed.signature[32:64], "big") <= N // 2


# ---------------------------------------------------------------------------
# known answers (reuse these in the Solidity tests)

KAT_CLAIM_HASH = "d4bb5242413135b7932bcec86fa6f1a51be18a75f98421f2bfc47f6881626b79"
KAT_DOMAIN_ZERO = "c69eb04efb32bce40070ad170158b16c171fdbbf98871796e54909b45a90c580"
KAT_DIGEST_ZERO = "55347e341e110b15fdeed0e37b75ef264fb2a59aef63340604bb15f2e2241f18"
KAT_SIG_ZERO = (
    "057ed82e902d7228e8043955f075dc966a7dba019c9080ed522d13ec9516f522"
    "67474c7a8c198b358772b67e65e3f9416ff7df8710bd2b03162bb07c70fbf6ca1b"
)
KAT_DOMAIN_REGISTRY = "21fa0c71efc6f5c01e04d6fa27cddf0673a9042610e9785a0fe381c8a34f1139"
KAT_DIGEST_REGISTRY = "dceaf107c465eb8810114e69bda7eb2ff30cdf0dfb6e3304a5cffde5a7aa8967"
KAT_SIG_REGISTRY = (
    "d40bfaf9cb3567ee6b5a8b0f63ab8ccb73083796769ea60239bb617e670d2603"
    "4511e5cd997c611889808de315f0166f1d97461dbdb6eba193ec505a10272e7f1c"
)
KAT_WIRE_KECCAK = "1f837a5595ac09abbe1c63432f019ee6616f9213af218bc8869cf533da69bcfd"
KAT_ROUND_ROOT = "1cbdd7035326fe8803f48893dcd3dbecf22dd9f06d43cbe6613048123e5a5a4e"
KAT_ROUND_PROOF_STEP2 = [
    "0000000000000000000000000000000000000000000000000000000000000000",  # EMPTY (3 leaves, padded)
    "ecfb103a5faaf942e8d861a604807b29ee10a85f9f216786719aadaa06d0e041",
]


def test_known_answer_vector():
    c = kat_claim()
    assert ADDR1 == bytes.fromhex("7E5F4552091A69125d5DfCb7b8C2659029395Bdf")
    assert claim_hash(c).hex() == KAT_CLAIM_HASH
    assert domain_separator(31337, ZERO_ADDRESS).hex() == KAT_DOMAIN_ZERO
    assert eip712_digest(c).hex() == KAT_DIGEST_ZERO
    assert domain_separator(31337, REGISTRY).hex() == KAT_DOMAIN_REGISTRY
    assert eip712_digest(c, REGISTRY).hex() == KAT_DIGEST_REGISTRY
    s0 = sign_claim(c, KEY1)
    assert s0.signature.hex() == KAT_SIG_ZERO
    s1 = sign_claim(c, KEY1, registry=REGISTRY)
    assert s1.signature.hex() == KAT_SIG_REGISTRY
    assert eth_keccak(s1.to_bytes()).hex() == KAT_WIRE_KECCAK
    rnd = ClaimRound([kat_claim(step=i, seed=42 + i) for i in range(3)])
    assert rnd.root.hex() == KAT_ROUND_ROOT
    h2 = claim_hash(kat_claim(step=2, seed=44))
    assert [p.hex() for p in rnd.prove(h2)] == KAT_ROUND_PROOF_STEP2
    assert verify_inclusion(rnd.root, h2, 2, rnd.prove(h2))


# ---------------------------------------------------------------------------
# signatures


def test_sign_with_a_key_that_is_not_the_provers():
    with pytest.raises(ClaimError, match="not the claim's prover"):
        sign_claim(kat_claim(), KEYS[1])
    with pytest.raises(ClaimError, match="invalid private key"):
        sign_claim(kat_claim(), b"\x00" * 32)


@pytest.mark.parametrize("registry", [ZERO_ADDRESS, REGISTRY])
def test_signature_by_another_key_rejected(registry):
    c = kat_claim()
    forged = Account.unsafe_sign_hash(eip712_digest(c, registry), KEYS[1])
    signed = SignedClaim(c, forged.signature, registry)
    assert recover_signer(signed) == ADDRS[1]
    with pytest.raises(ClaimError, match="not by the prover"):
        verify_signed_claim(signed)


def test_signature_bound_to_domain_and_fields():
    good = sign_claim(kat_claim(), KEY1, registry=REGISTRY)
    verify_signed_claim(good)
    with pytest.raises(ClaimError, match="not by the prover"):  # other registry
        verify_signed_claim(SignedClaim(good.claim, good.signature, ZERO_ADDRESS))
    with pytest.raises(ClaimError, match="signed for registry"):
        verify_signed_claim(good, registry=ZERO_ADDRESS)
    with pytest.raises(ClaimError, match="for chain 31337"):
        verify_signed_claim(good, chain_id=1)
    for field, value in [("chain_id", 1), ("seed", 43), ("round", 8), ("step", 1), ("task", 2),
                         ("model_digest", b"\x12" * 32), ("trace_root", b"\x45" * 32)]:  # fmt: skip
        moved = SignedClaim(kat_claim(**{field: value}), good.signature, REGISTRY)
        with pytest.raises(ClaimError):
            verify_signed_claim(moved)


def test_high_s_signature_rejected():
    signed = sign_claim(kat_claim(), KEY1)
    r, s, v = signed.signature[:32], int.from_bytes(signed.signature[32:64], "big"), signed.signature[64]
    high = r + (N - s).to_bytes(32, "big") + bytes([55 - v])  # the other valid signature of the digest
    # it really is a valid signature by the same key, the malleability EIP-2 closes ...
    pub = eth_keys.Signature(vrs=(55 - v - 27, int.from_bytes(r, "big"), N - s)).recover_public_key_from_msg_hash(
        eip712_digest(signed.claim)
    )
    assert pub.to_canonical_address() == ADDR1
    # ... and we refuse it everywhere
    bad = SignedClaim(signed.claim, high)
    for f in (verify_signed_claim, recover_signer, SignedClaim.to_bytes, SignedClaim.to_json):
        with pytest.raises(ClaimError, match="high-s"):
            f(bad)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda sig: sig[:64], "65 bytes"),
        (lambda sig: sig + b"\x00", "65 bytes"),
        (lambda sig: b"", "65 bytes"),
        (lambda sig: sig[:64] + b"\x00", "v must be 27 or 28"),
        (lambda sig: sig[:64] + b"\x01", "v must be 27 or 28"),
        (lambda sig: sig[:64] + b"\x1d", "v must be 27 or 28"),
        (lambda sig: b"\x00" * 32 + sig[32:], "r is out of range"),
        (lambda sig: N.to_bytes(32, "big") + sig[32:], "r is out of range"),
        (lambda sig: b"\xff" * 32 + sig[32:], "r is out of range"),
        (lambda sig: sig[:32] + b"\x00" * 32 + sig[64:], "s is out of range"),
        (lambda sig: sig[:32] + (N // 2 + 1).to_bytes(32, "big") + sig[64:], "high-s"),
    ],
)
def test_malformed_signature_rejected(mutate, message):
    signed = sign_claim(kat_claim(), KEY1)
    bad = SignedClaim(signed.claim, mutate(signed.signature))
    with pytest.raises(ClaimError, match=message):
        verify_signed_claim(bad)


def test_signature_not_on_curve_rejected():
    c = kat_claim()
    # r = 5 is not the x coordinate of any curve point (5**3 + 7 = 132 is a non-residue mod p)
    bad = SignedClaim(c, (5).to_bytes(32, "big") + (1).to_bytes(32, "big") + b"\x1b")
    with pytest.raises(ClaimError):
        verify_signed_claim(bad)


def test_signed_claim_type_checks():
    with pytest.raises(ClaimError, match="must be a Claim"):
        SignedClaim("claim", b"\x00" * 65)
    with pytest.raises(ClaimError, match="signature must be bytes"):
        SignedClaim(kat_claim(), "0x00")
    with pytest.raises(ClaimError, match="expected a SignedClaim"):
        verify_signed_claim(kat_claim())


# ---------------------------------------------------------------------------
# claim validation


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("version", 2, "unsupported claim version 2"),
        ("version", 0, "unsupported claim version 0"),
        ("version", 2**16, "out of range for uint16"),
        ("version", True, "must be an integer, got bool"),
        ("chain_id", 0, "chain_id must be nonzero"),
        ("chain_id", 2**256, "out of range for uint256"),
        ("chain_id", -1, "out of range"),
        ("chain_id", 1.0, "must be an integer, got float"),
        ("chain_id", "1", "must be an integer, got str"),
        ("model_digest", b"\x00" * 31, "model_digest must be exactly 32 bytes, got 31"),
        ("input_digest", b"\x00" * 33, "input_digest must be exactly 32 bytes, got 33"),
        ("output_digest", "0x" + "ab" * 31, "output_digest must be 32 bytes"),
        ("trace_root", "zz" * 32, "trace_root must be 32 bytes"),
        ("trace_root", 5, "trace_root must be bytes or a hex string"),
        ("seed", 2**64, "seed = 18446744073709551616 is out of range for uint64"),
        ("seed", -1, "seed = -1 is out of range"),
        ("round", 2**64, "round .* out of range for uint64"),
        ("step", None, "step must be an integer"),
        ("task", 0, "unknown task id 0"),
        ("task", 3, "unknown task id 3"),
        ("task", 256, "out of range for uint8"),
        ("task", "gpt5.generate", "unknown task 'gpt5.generate'"),
        ("prover", ZERO_ADDRESS, "zero address"),
        ("prover", b"\x01" * 19, "prover must be exactly 20 bytes"),
        ("prover", "0x7e5f4552091a69125d5dfcb7b8c2659029395bdF", "bad EIP-55 checksum"),
    ],
)
def test_claim_field_validation(field, value, message):
    with pytest.raises(ClaimError, match=message):
        kat_claim(**{field: value})


def test_claim_normalises_inputs():
    hexed = kat_claim(
        model_digest="11" * 32,
        input_digest="0x" + "22" * 32,
        output_digest=bytearray(b"\x33" * 32),
        prover="0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf",
        task="smollm2.generate",
    )
    assert hexed == kat_claim() and claim_hash(hexed) == claim_hash(kat_claim())
    assert kat_claim(prover="0x7e5f4552091a69125d5dfcb7b8c2659029395bdf") == kat_claim()  # all-lowercase is fine
    assert isinstance(hexed.output_digest, bytes) and hexed.task_name == "smollm2.generate"
    assert Claim.create(**{k: v for k, v in vars(kat_claim()).items() if k != "version"}) == kat_claim()
    with pytest.raises(Exception):  # frozen
        hexed.seed = 1


# ---------------------------------------------------------------------------
# wire and JSON


@settings(max_examples=200)
@given(claims(), wellformed_signatures(), registries)
def test_wire_and_json_round_trip(c, sig, registry):
    sc = SignedClaim(c, sig, registry)
    wire = sc.to_bytes()
    assert len(wire) == WIRE_LENGTH and wire.startswith(WIRE_MAGIC)
    assert wire[4:36] == (1).to_bytes(32, "big")  # the version is the first word
    assert SignedClaim.from_bytes(wire) == sc
    text = sc.to_json()
    assert SignedClaim.from_json(text) == sc
    assert SignedClaim.from_json(text.encode()) == sc
    # key order and whitespace are free
    assert SignedClaim.from_json(json.dumps(json.loads(text), indent=2)) == sc


def _assert_rejected_or_unverifiable(wire: bytes, original: SignedClaim) -> None:
    try:
        other = SignedClaim.from_bytes(wire)
    except ClaimError:
        return
    assert other != original
    with pytest.raises(ClaimError):
        verify_signed_claim(other)


SIGNED_KAT = sign_claim(kat_claim(), KEY1, registry=REGISTRY)


def test_every_single_byte_flip_of_a_signed_wire_claim_is_caught():
    wire = SIGNED_KAT.to_bytes()
    verify_signed_claim(SignedClaim.from_bytes(wire))
    for pos in range(len(wire)):
        mutated = bytearray(wire)
        mutated[pos] ^= 0x01
        _assert_rejected_or_unverifiable(bytes(mutated), SIGNED_KAT)


@settings(max_examples=150)
@given(st.integers(0, WIRE_LENGTH - 1), st.integers(1, 255), st.sampled_from([0, 1, 2]))
def test_any_single_byte_change_is_caught(pos, delta, which):
    signed = SIGNED_POOL[which]
    wire = bytearray(signed.to_bytes())
    wire[pos] = (wire[pos] + delta) % 256
    _assert_rejected_or_unverifiable(bytes(wire), signed)


SIGNED_POOL = [
    SIGNED_KAT,
    sign_claim(kat_claim(prover=ADDRS[1], chain_id=2**256 - 1, seed=2**64 - 1, task=2), KEYS[1]),
    sign_claim(kat_claim(prover=ADDRS[2], step=2**64 - 1, round=0), KEYS[2], registry=REGISTRY),
]


def _word(k: int) -> slice:
    return slice(4 + 32 * k, 4 + 32 * (k + 1))


def test_strict_wire_decoding():
    wire = SIGNED_KAT.to_bytes()
    for n in range(len(wire)):  # every truncation
        with pytest.raises(ClaimError, match="truncated|magic"):
            SignedClaim.from_bytes(wire[:n])
    with pytest.raises(ClaimError, match="1 trailing bytes"):
        SignedClaim.from_bytes(wire + b"\x00")
    with pytest.raises(ClaimError, match="32 trailing bytes"):
        SignedClaim.from_bytes(wire + wire[-32:])
    with pytest.raises(ClaimError, match="bad magic"):
        SignedClaim.from_bytes(b"RFCM" + wire[4:])
    for version in (0, 2, 2**16 - 1):
        w = bytearray(wire)
        w[_word(0)] = version.to_bytes(32, "big")
        with pytest.raises(ClaimError, match=f"unsupported claim version {version}"):
            SignedClaim.from_bytes(bytes(w))
    # a later version may be longer or shorter: the version is reported, not the length
    with pytest.raises(ClaimError, match="unsupported claim version 2"):
        SignedClaim.from_bytes(WIRE_MAGIC + (2).to_bytes(32, "big") + b"\x00" * 1000)
    with pytest.raises(ClaimError, match="must be bytes"):
        SignedClaim.from_bytes(wire.hex())

    def patched(k: int, word: bytes) -> bytes:
        w = bytearray(wire)
        w[_word(k)] = word
        return bytes(w)

    cases = [
        (9, (256).to_bytes(32, "big"), r"word 9 \(task: uint8\) is not canonical"),
        (9, (0).to_bytes(32, "big"), "unknown task id 0"),
        (6, (2**64).to_bytes(32, "big"), r"word 6 \(seed: uint64\)"),
        (0, b"\x01" + b"\x00" * 30 + b"\x01", r"word 0 \(version: uint16\)"),
        (10, b"\x01" + b"\x00" * 11 + ADDR1, r"word 10 \(prover: address\)"),
        (10, b"\x00" * 32, "zero address"),
        (11, b"\xff" * 12 + REGISTRY, r"word 11 \(registry: address\)"),
        (14, (0x11B).to_bytes(32, "big"), r"word 14 \(v: uint8\)"),
        (14, (29).to_bytes(32, "big"), "v must be 27 or 28"),
        (1, (0).to_bytes(32, "big"), "chain_id must be nonzero"),
        (13, N.to_bytes(32, "big"), "s is out of range"),
    ]
    for k, word, message in cases:
        with pytest.raises(ClaimError, match=message):
            SignedClaim.from_bytes(patched(k, word))


@settings(max_examples=300)
@given(st.binary(max_size=600))
def test_random_bytes_never_escape_as_other_errors(data):
    for blob in (data, WIRE_MAGIC + data, WIRE_MAGIC + (1).to_bytes(32, "big") + data):
        try:
            SignedClaim.from_bytes(blob)
        except ClaimError:
            pass


def _json_variants():
    d = json.loads(SIGNED_KAT.to_json())
    yield "not json", "not json {", "malformed JSON"
    yield "array", "[1, 2]", "must be an object"
    yield "empty", "", "malformed JSON"
    for key in d:
        e = dict(d)
        del e[key]
        yield f"missing {key}", json.dumps(e), f"missing \\['{key}'\\]"
    yield "extra key", json.dumps({**d, "fee": 1}), r"unexpected \['fee'\]"
    yield "duplicate key", json.dumps(d)[:-1] + ',"seed":43}', "duplicate key 'seed'"
    yield "kind", json.dumps({**d, "kind": "refute.claim"}), "kind must be"
    yield "version 2", json.dumps({**d, "version": 2}), "unsupported claim version 2"
    yield "version bool", json.dumps({**d, "version": True}), "version must be an integer"
    yield "float seed", json.dumps(d).replace('"seed": 42', '"seed": 42.0'), "non-integer number"
    yield "exp seed", json.dumps(d).replace('"seed": 42', '"seed": 4.2e1'), "non-integer number"
    yield "NaN", json.dumps(d).replace('"seed": 42', '"seed": NaN'), "NaN"
    yield "string seed", json.dumps({**d, "seed": "42"}), "seed must be an integer"
    yield "bool task", json.dumps({**d, "task": True}), "task must be an integer"
    yield "negative round", json.dumps({**d, "round": -1}), "out of range"
    yield "huge chain", json.dumps({**d, "chain_id": 2**256}), "out of range for uint256"
    yield "upper hex", json.dumps({**d, "trace_root": "0x" + "AB" * 32}), "lowercase hex"
    yield "upper 0X", json.dumps({**d, "signature": "0X" + d["signature"][2:]}), "lowercase hex"
    yield "no 0x", json.dumps({**d, "model_digest": d["model_digest"][2:]}), "lowercase hex"
    yield "short hex", json.dumps({**d, "input_digest": d["input_digest"][:-2]}), "lowercase hex"
    yield "int digest", json.dumps({**d, "output_digest": 5}), "must be a hex string"
    yield "lowercase address", json.dumps({**d, "prover": d["prover"].lower()}), "EIP-55"
    bad_checksum = d["prover"][:-1] + ("f" if d["prover"][-1] == "F" else "F")
    yield "bad checksum", json.dumps({**d, "prover": bad_checksum}), "EIP-55"
    yield "registry lowercase", json.dumps({**d, "registry": d["registry"].lower()}), "EIP-55"
    yield "short sig", json.dumps({**d, "signature": d["signature"][:-2]}), "130 lowercase hex"
    yield "high v", json.dumps({**d, "signature": d["signature"][:-2] + "1d"}), "v must be 27 or 28"
    yield "oversized", json.dumps({**d, "pad": " " * 5000}), "oversized"
    yield "bad utf8", b"\xff\xfe{}", "not UTF-8"


@pytest.mark.parametrize("name, text, message", list(_json_variants()), ids=[v[0] for v in _json_variants()])
def test_malformed_json_rejected(name, text, message):
    with pytest.raises(ClaimError, match=message):
        SignedClaim.from_json(text)


def test_json_form():
    d = json.loads(SIGNED_KAT.to_json())
    assert d["kind"] == "refute.signed_claim"
    assert d["prover"] == "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
    assert d["registry"] == "0x5FbDB2315678afecb367f032d93F642f64180aa3"
    assert d["seed"] == 42 and d["chain_id"] == 31337 and d["task"] == 1
    assert d["signature"] == "0x" + SIGNED_KAT.signature.hex()
    assert SIGNED_KAT.to_json() == json.dumps(d, sort_keys=True, separators=(",", ":"))
    with pytest.raises(ClaimError):
        SignedClaim.from_json(None)


# ---------------------------------------------------------------------------
# round trees


def reference_root(claim_hashes: list[bytes]) -> bytes:
    """Written independently: recursive pairing, EMPTY for a missing right child."""
    level = [eth_keccak(b"\x10" + h) for h in claim_hashes]
    while len(level) > 1:
        level = [
            eth_keccak(b"\x11" + level[i] + (level[i + 1] if i + 1 < len(level) else b"\x00" * 32))
            for i in range(0, len(level), 2)
        ]
    return level[0]


@st.composite
def rounds(draw, max_size=33):
    n = draw(st.integers(1, max_size))
    base = draw(claims())
    fields = vars(base)
    cs = [Claim(**{**fields, "step": i, "seed": draw(u64), "output_digest": draw(b32)}) for i in range(n)]
    order = draw(st.permutations(range(n)))
    return [cs[i] for i in order]


@settings(max_examples=60)
@given(rounds())
def test_round_root_and_every_inclusion_proof(cs):
    rnd = ClaimRound(cs)
    by_step = sorted(cs, key=lambda c: c.step)
    hashes = [claim_hash(c) for c in by_step]
    assert rnd.root == reference_root(hashes) == merkle_root(hashes)
    assert rnd.root == ClaimRound(list(reversed(cs))).root  # input order is irrelevant
    assert len(rnd) == len(cs) and rnd.prover == cs[0].prover and rnd.round == cs[0].round
    depth = (len(cs) - 1).bit_length()
    for c in cs:
        h = claim_hash(c)
        proof = rnd.prove(h)
        assert len(proof) == depth and rnd.index_of(h) == c.step
        assert verify_inclusion(rnd.root, h, c.step, proof)
        # tampered sibling, each level
        for k in range(len(proof)):
            bad = list(proof)
            bad[k] = bytes([bad[k][0] ^ 0x80]) + bad[k][1:]
            assert not verify_inclusion(rnd.root, h, c.step, bad)
        # wrong index, wrong hash, wrong root, wrong length
        for j in range(2**depth):
            if j != c.step:
                assert not verify_inclusion(rnd.root, h, j, proof)
        assert not verify_inclusion(rnd.root, h, c.step + 2**depth, proof)
        assert not verify_inclusion(rnd.root, bytes([h[0] ^ 1]) + h[1:], c.step, proof)
        assert not verify_inclusion(bytes([rnd.root[0] ^ 1]) + rnd.root[1:], h, c.step, proof)
        assert not verify_inclusion(rnd.root, h, c.step, proof + [EMPTY])
        if proof:
            assert not verify_inclusion(rnd.root, h, c.step, proof[:-1])


def test_internal_node_is_not_a_claim():
    cs = [kat_claim(step=i) for i in range(4)]
    rnd = ClaimRound(cs)
    hashes = [claim_hash(c) for c in cs]
    left = eth_keccak(b"\x11" + eth_keccak(b"\x10" + hashes[0]) + eth_keccak(b"\x10" + hashes[1]))
    right = rnd.prove(hashes[0])[1]
    assert eth_keccak(b"\x11" + left + right) == rnd.root
    # the left subtree's node, presented as a claim hash with the one-level proof, fails
    assert not verify_inclusion(rnd.root, left, 0, [right])


def test_single_claim_round():
    c = kat_claim()
    rnd = ClaimRound([SignedClaim(c, SIGNED_KAT.signature, REGISTRY)])  # signed claims are unwrapped
    assert rnd.root == eth_keccak(b"\x10" + claim_hash(c))
    assert rnd.prove(claim_hash(c)) == []
    assert verify_inclusion(rnd.root, claim_hash(c), 0, [])
    assert not verify_inclusion(rnd.root, claim_hash(c), 1, [])


def test_bad_rounds_rejected():
    with pytest.raises(ClaimError, match="at least one"):
        ClaimRound([])
    with pytest.raises(ClaimError, match="two claims with step 1"):
        ClaimRound([kat_claim(step=0), kat_claim(step=1), kat_claim(step=1, seed=9)])
    with pytest.raises(ClaimError, match="two claims with step 0"):
        ClaimRound([kat_claim(), kat_claim()])
    with pytest.raises(ClaimError, match="step 1 is missing"):
        ClaimRound([kat_claim(step=0), kat_claim(step=2)])
    with pytest.raises(ClaimError, match="step 0 is missing"):
        ClaimRound([kat_claim(step=1)])
    with pytest.raises(ClaimError, match="share prover"):
        ClaimRound([kat_claim(step=0), kat_claim(step=1, prover=ADDRS[1])])
    with pytest.raises(ClaimError, match="share round"):
        ClaimRound([kat_claim(step=0), kat_claim(step=1, round=8)])
    with pytest.raises(ClaimError, match="share chain_id"):
        ClaimRound([kat_claim(step=0), kat_claim(step=1, chain_id=1)])
    with pytest.raises(ClaimError, match="takes Claim"):
        ClaimRound(["x"])
    rnd = ClaimRound([kat_claim()])
    with pytest.raises(ClaimError, match="not in this round"):
        rnd.prove(b"\x00" * 32)
    with pytest.raises(ClaimError):
        verify_inclusion(rnd.root, b"\x00" * 31, 0, [])
    with pytest.raises(ClaimError):
        verify_inclusion(rnd.root, b"\x00" * 32, 0, b"\x00" * 32)
    with pytest.raises(ClaimError):
        merkle_root([])


def test_random_shuffles_give_one_root():
    cs = [kat_claim(step=i, seed=i * 7) for i in range(11)]
    roots = set()
    rng = random.Random(0)
    for _ in range(5):
        rng.shuffle(cs)
        roots.add(ClaimRound(cs).root)
    assert len(roots) == 1
