"""ClaimRegistry (contracts/src/ClaimRegistry.sol) against refute.compute.claims.

* known answers of docs/protocol.md "Claims" reproduced on chain: the claim hash,
  the domain separator and digest for registry 0x5FbDB…0aa3 on chain 31337 (the
  registry is deployed there, by hardhat's default key at nonce 0), the pinned
  signature verifying on chain, the three-claim round's root and proof;
* hypothesis-drawn claims and rounds signed with ``sign_claim`` and posted with
  ``ClaimRound``: every member verifies on chain, and each tampering (any
  changed field, wrong index, wrong sibling, high-s twin, other signer) is
  rejected on chain *and* by Python;
* every custom error of the registry, root posting, finality, events, gas.
"""

from __future__ import annotations

import itertools

import pytest
from eth_account import Account
from eth_utils import to_checksum_address
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from refute.compute.claims import (
    CLAIM_FIELDS,
    EMPTY,
    TASKS,
    Claim,
    ClaimError,
    ClaimRound,
    SignedClaim,
    claim_hash,
    domain_separator,
    eip712_digest,
    sign_claim,
    verify_inclusion,
    verify_signed_claim,
)
from refute.contracts.client import Chain, ChainError, ContractError, Deployment, claim_tuple

N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
CHAIN_ID = 31337
HARDHAT_KEY = "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80"
KAT_REGISTRY = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
KEYS = [i.to_bytes(32, "big") for i in (1, 2, 3)]  # the tester's first three accounts
ADDRS = [Account.from_key(k).address for k in KEYS]
MIN_STAKE = 10**18
WINDOW = 3600

KAT = {
    "claim_hash": "d4bb5242413135b7932bcec86fa6f1a51be18a75f98421f2bfc47f6881626b79",
    "domain": "21fa0c71efc6f5c01e04d6fa27cddf0673a9042610e9785a0fe381c8a34f1139",
    "digest": "dceaf107c465eb8810114e69bda7eb2ff30cdf0dfb6e3304a5cffde5a7aa8967",
    "signature": "d40bfaf9cb3567ee6b5a8b0f63ab8ccb73083796769ea60239bb617e670d26034511e5cd997c611889808de315f0166f1d97461dbdb6eba193ec505a10272e7f1c",
    "round_hashes": [
        "d4bb5242413135b7932bcec86fa6f1a51be18a75f98421f2bfc47f6881626b79",
        "1f7cd9671a140c6ed0939f4a11b8c907d829aad8e152093eacbb1950eba0d575",
        "973bb6dcbfa8bd299e8e4c631babfd1ea4c27ea51c6d081bb96042cc04c4675f",
    ],
    "round_root": "1cbdd7035326fe8803f48893dcd3dbecf22dd9f06d43cbe6613048123e5a5a4e",
    "proof_step2": [EMPTY.hex(), "ecfb103a5faaf942e8d861a604807b29ee10a85f9f216786719aadaa06d0e041"],
}


def kat_claim(**kw) -> Claim:
    fields = dict(
        version=1, chain_id=CHAIN_ID, model_digest=b"\x11" * 32, input_digest=b"\x22" * 32,
        output_digest=b"\x33" * 32, trace_root=b"\x44" * 32, seed=42, round=7, step=0, task=1, prover=ADDRS[0],
    )  # fmt: skip
    fields.update(kw)
    return Claim(**fields)


@pytest.fixture(scope="module")
def env():
    """One chain for the module: the StakeManager deployed by account 0, the registry by
    hardhat's key at nonce 0 (so it lands at the known-answer address), provers staked."""
    chain = Chain()
    deployer = chain.add_key(HARDHAT_KEY)
    chain.transfer(chain.accounts[0], deployer, 10**20)
    sm, sm_tx = chain.deploy_contract("StakeManager", chain.accounts[9], WINDOW, 7200, WINDOW + 7200 + 1)
    reg, reg_tx = chain.deploy_contract("ClaimRegistry", sm.address, MIN_STAKE, sender=deployer)
    assert reg.address == KAT_REGISTRY
    d = Deployment(chain, sm, reg, deploy_txs=(sm_tx, reg_tx))
    for a in ADDRS:
        d.stake(a, MIN_STAKE)
    return d


_rounds = itertools.count(1000)


def fresh_round() -> int:
    """Round numbers not used before in this module (one root per (prover, round))."""
    return next(_rounds)


def signed_round(d: Deployment, key: bytes, n: int, round_: int | None = None, **kw) -> tuple[ClaimRound, list[SignedClaim]]:
    prover = Account.from_key(key).address
    r = fresh_round() if round_ is None else round_
    claims = [kat_claim(prover=prover, round=r, step=i, seed=42 + i, **kw) for i in range(n)]
    return ClaimRound(claims), [sign_claim(c, key, registry=d.registry_address) for c in claims]


def raw_verify(d: Deployment, values: tuple, sig: bytes, index: int, proof) -> bytes:
    fn = d.registry.functions.verifyClaim(values, sig[:32], sig[32:64], sig[64], index, list(proof))
    return bytes(d.chain.call(fn))


def expect(name: str, **args):
    """pytest.raises for a ContractError with this name (and these decoded arguments)."""

    class _Ctx:
        def __enter__(self):
            self.cm = pytest.raises(ContractError)
            self.info = self.cm.__enter__()
            return self.info

        def __exit__(self, *exc):
            r = self.cm.__exit__(*exc)
            e = self.info.value
            assert e.name == name, str(e)
            for k, v in args.items():
                assert e.args_dict[k] == v, (k, str(e))
            return r

    return _Ctx()


# ---------------------------------------------------------------------------
# known answers


def test_known_answers_on_chain(env):
    d = env
    c = kat_claim()
    assert d.claim_hash(c).hex() == KAT["claim_hash"] == claim_hash(c).hex()
    assert d.domain_separator().hex() == KAT["domain"] == domain_separator(CHAIN_ID, KAT_REGISTRY).hex()
    assert d.claim_digest(c).hex() == KAT["digest"] == eip712_digest(c, KAT_REGISTRY).hex()
    signed = sign_claim(c, KEYS[0], registry=KAT_REGISTRY)
    assert signed.signature.hex() == KAT["signature"]
    # the pinned signature verifies on chain once round 7's root (one claim) is posted
    d.post_round(ADDRS[0], ClaimRound([c]))
    assert d.verify_claim(SignedClaim(c, bytes.fromhex(KAT["signature"]), KAT_REGISTRY), proof=[]).hex() == KAT["claim_hash"]
    # the three-claim round: hashes, root and the proof of step 2
    cs = [kat_claim(step=i, seed=42 + i) for i in range(3)]
    assert [d.claim_hash(x).hex() for x in cs] == KAT["round_hashes"]
    rnd = ClaimRound(cs)
    assert rnd.root.hex() == KAT["round_root"]
    proof = [bytes.fromhex(p) for p in KAT["proof_step2"]]
    assert rnd.prove(cs[2].hash()) == proof
    root, h2 = bytes.fromhex(KAT["round_root"]), bytes.fromhex(KAT["round_hashes"][2])
    assert d.chain.call(d.registry.functions.included(root, h2, 2, proof))
    assert not d.chain.call(d.registry.functions.included(root, h2, 1, proof))
    # the registry's own constants
    f = d.registry.functions
    assert d.chain.call(f.CLAIM_TYPEHASH()).hex() == "a93907bea168e26cecf19788ab86ec9b91874cb4cb634956c79e8ed29b62fde8"
    assert d.chain.call(f.EIP712_DOMAIN_TYPEHASH()).hex() == "8b73c3c69bb8fe3d512ecc4cf759cc79239f7b179b0ffacaa9a75d522b39400f"
    assert d.chain.call(f.HALF_N()) == N // 2
    assert d.chain.call(f.eip712Domain()) == [b"\x0f", "refute", "1", CHAIN_ID, KAT_REGISTRY, b"\x00" * 32, []]
    assert d.chain.call(f.minStake()) == MIN_STAKE and d.chain.call(f.challengeWindow()) == WINDOW


# ---------------------------------------------------------------------------
# hypothesis: agreement with Python, and tampering rejected by both

b32 = st.binary(min_size=32, max_size=32)
u64 = st.one_of(st.sampled_from([0, 1, 2**63, 2**64 - 1]), st.integers(0, 2**64 - 1))


@st.composite
def rounds(draw):
    """A signed round of 1..9 hypothesis-drawn claims by one of three provers."""
    k = draw(st.integers(0, len(KEYS) - 1))
    n = draw(st.integers(1, 9))
    r = fresh_round()
    claims = [
        Claim(version=1, chain_id=CHAIN_ID, model_digest=draw(b32), input_digest=draw(b32), output_digest=draw(b32),
              trace_root=draw(b32), seed=draw(u64), round=r, step=i, task=draw(st.sampled_from(sorted(TASKS))),
              prover=ADDRS[k])
        for i in range(n)
    ]  # fmt: skip
    return k, ClaimRound(claims)


def _tampered_value(name: str, typ: str, v, data):
    if typ == "bytes32":
        return data.draw(b32.filter(lambda x: x != v), label=name)
    if typ == "address":
        others = [bytes.fromhex(a[2:]) for a in ADDRS if bytes.fromhex(a[2:]) != v]
        return data.draw(st.sampled_from(others + [bytes(19) + b"\x01", bytes(20)]), label=name)
    bits = {"uint16": 16, "uint256": 256, "uint64": 64, "uint8": 8}[typ]
    return data.draw(st.integers(0, 2**bits - 1).filter(lambda x: x != v), label=name)


# no shrinking: every example posts new roots, and a chain example costs ~0.5 s
@settings(max_examples=10, phases=(Phase.explicit, Phase.reuse, Phase.generate), suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(rnd=rounds(), data=st.data())
def test_rounds_agree_with_python_and_tampering_is_rejected(env, rnd, data):
    d = env
    k, round_ = rnd
    d.post_round(ADDRS[k], round_)
    assert d.root_of(ADDRS[k], round_.round)[:2] == (round_.root, len(round_))
    signed = [sign_claim(c, KEYS[k], registry=d.registry_address) for c in round_.claims]
    for s in signed:  # every member verifies on chain and in Python
        proof = round_.prove(s.claim.hash())
        verify_signed_claim(s, registry=d.registry_address, chain_id=CHAIN_ID)
        assert verify_inclusion(round_.root, s.claim.hash(), s.claim.step, proof)
        assert d.verify_claim(s, proof) == s.claim.hash() == d.claim_hash(s.claim)

    s = data.draw(st.sampled_from(signed), label="member")
    c, h, sig = s.claim, s.claim.hash(), s.signature
    proof = round_.prove(h)
    values = claim_tuple(c)

    # any changed field: rejected on chain; Python rejects the signature (or cannot even build the claim)
    i = data.draw(st.integers(0, len(CLAIM_FIELDS) - 1), label="field")
    name, _, typ = CLAIM_FIELDS[i]
    new = _tampered_value(name, typ, getattr(c, name), data)
    bad = list(values)
    bad[i] = to_checksum_address(new) if typ == "address" else new
    with pytest.raises(ContractError) as ei:
        raw_verify(d, tuple(bad), sig, bad[8], proof)
    assert ei.value.name in {"UnsupportedVersion", "WrongChain", "ZeroProver", "SignerMismatch"}, str(ei.value)
    try:
        tampered = Claim(**{n: getattr(c, n) for n, _, _ in CLAIM_FIELDS} | {name: new})
    except ClaimError:
        pass  # Python cannot even represent it (version, task, zero chain or prover)
    else:
        with pytest.raises(ClaimError):
            verify_signed_claim(SignedClaim(tampered, sig, d.registry_address))
        assert not verify_inclusion(round_.root, tampered.hash(), tampered.step, proof)

    # wrong index
    wrong = data.draw(st.integers(0, 2 ** max(1, len(proof)) - 1).filter(lambda x: x != c.step), label="index")
    with expect("IndexMismatch", index=wrong, step=c.step):
        raw_verify(d, values, sig, wrong, proof)
    assert not verify_inclusion(round_.root, h, wrong, proof)

    # wrong sibling (or a proof one level too short / long)
    if proof:
        j = data.draw(st.integers(0, len(proof) - 1), label="sibling")
        bad_proof = list(proof)
        bad_proof[j] = data.draw(b32.filter(lambda x: x != proof[j]), label="new sibling")
        for p in (bad_proof, proof[:-1], proof + [EMPTY]):
            if c.step >> len(p):
                continue  # index too large for this proof: covered by IndexMismatch paths
            with expect("NotIncluded", claimHash=h):
                raw_verify(d, values, sig, c.step, p)
            assert not verify_inclusion(round_.root, h, c.step, p)
    else:
        with expect("NotIncluded"):
            raw_verify(d, values, sig, 0, [EMPTY])
        assert not verify_inclusion(round_.root, h, 0, [EMPTY])

    # the high-s twin recovers the same key but is rejected by both
    r_, s_, v_ = sig[:32], int.from_bytes(sig[32:64], "big"), sig[64]
    twin = r_ + (N - s_).to_bytes(32, "big") + bytes([55 - v_])
    with expect("InvalidSignatureS"):
        raw_verify(d, values, twin, c.step, proof)
    with pytest.raises(ClaimError, match="high-s"):
        verify_signed_claim(SignedClaim(c, twin, d.registry_address))

    # another prover's key, or signed for another registry: SignerMismatch, and Python agrees
    other = sign_claim(Claim(**{n: getattr(c, n) for n, _, _ in CLAIM_FIELDS} | {"prover": ADDRS[(k + 1) % 3]}),
                       KEYS[(k + 1) % 3], registry=d.registry_address)  # fmt: skip
    zero_reg = sign_claim(c, KEYS[k])
    for forged in (other.signature, zero_reg.signature):
        with expect("SignerMismatch", prover=ADDRS[k]):
            raw_verify(d, values, forged, c.step, proof)
        with pytest.raises(ClaimError):
            verify_signed_claim(SignedClaim(c, forged, d.registry_address))


# ---------------------------------------------------------------------------
# every custom error


def test_constructor_rejects_zero_stake_manager(env):
    with expect("ZeroAddress"):
        env.chain.deploy_contract("ClaimRegistry", "0x" + "00" * 20, 1)


def test_post_root_errors(env):
    d = env
    chain = d.chain
    unstaked = chain.accounts[5]
    rnd = fresh_round()
    with expect("StakeTooLow", prover=unstaked, stake=0, minStake=MIN_STAKE):
        d.post_root(unstaked, rnd, b"\x01" * 32, 1)
    d.stake(unstaked, MIN_STAKE - 1)
    with expect("StakeTooLow", stake=MIN_STAKE - 1):
        d.post_root(unstaked, rnd, b"\x01" * 32, 1)
    with expect("ZeroRoot"):
        d.post_root(ADDRS[1], rnd, b"\x00" * 32, 1)
    with expect("EmptyRound"):
        d.post_root(ADDRS[1], rnd, b"\x01" * 32, 0)
    tx = d.post_root(ADDRS[1], rnd, b"\x01" * 32, 1)
    with expect("RootAlreadyPosted", prover=ADDRS[1], round=rnd):
        d.post_root(ADDRS[1], rnd, b"\x02" * 32, 2)
    # the event
    (ev,) = d.registry.events.RootPosted().process_receipt(tx.receipt)
    assert ev.args == {"prover": ADDRS[1], "round": rnd, "root": b"\x01" * 32, "count": 1, "postedAt": tx.timestamp}
    # another prover may use the same round number
    d.post_root(ADDRS[2], rnd, b"\x01" * 32, 1)
    # the client refuses rounds that are not the sender's or not this chain's
    other, _ = signed_round(d, KEYS[0], 1)
    with pytest.raises(ValueError, match="prover"):
        d.post_round(ADDRS[1], other)
    with pytest.raises(ValueError, match="chain"):
        d.post_round(ADDRS[0], ClaimRound([kat_claim(chain_id=1)]))


def test_finality_and_deadline(env):
    d = env
    rnd = fresh_round()
    with expect("RootNotPosted", prover=ADDRS[0], round=rnd):
        d.chain.call(d.registry.functions.challengeDeadline(ADDRS[0], rnd))
    assert not d.is_final(ADDRS[0], rnd)
    assert d.root_of(ADDRS[0], rnd) == (b"\x00" * 32, 0, 0)
    tx = d.post_root(ADDRS[0], rnd, b"\x05" * 32, 3)
    assert d.root_of(ADDRS[0], rnd) == (b"\x05" * 32, 3, tx.timestamp)
    assert d.chain.call(d.registry.functions.challengeDeadline(ADDRS[0], rnd)) == tx.timestamp + WINDOW
    assert not d.is_final(ADDRS[0], rnd)
    deadline = tx.timestamp + WINDOW
    ts = d.chain.advance_time(WINDOW - 1)  # usually exactly deadline - 1
    assert ts >= deadline - 1 and d.is_final(ADDRS[0], rnd) == (ts >= deadline)
    assert d.chain.advance_time(1) >= deadline
    assert d.is_final(ADDRS[0], rnd)


def test_verify_claim_errors(env):
    d = env
    round_, signed = signed_round(d, KEYS[1], 3)
    s = signed[2]
    c, sig = s.claim, s.signature
    proof = round_.prove(c.hash())
    values = claim_tuple(c)
    # before the root is posted
    with expect("RootNotPosted", prover=ADDRS[1], round=c.round):
        d.verify_claim(s, proof)
    d.post_root(ADDRS[1], c.round, round_.root, 2)  # count too small for step 2
    with expect("StepOutOfRange", step=2, count=2):
        d.verify_claim(s, proof)
    assert d.verify_claim(signed[1], round_.prove(signed[1].claim.hash())) == signed[1].claim.hash()

    def with_(i, v):
        t = list(values)
        t[i] = v
        return tuple(t)

    with expect("UnsupportedVersion", version=2):
        raw_verify(d, with_(0, 2), sig, 2, proof)
    with expect("WrongChain", chainId=1, expected=CHAIN_ID):
        raw_verify(d, with_(1, 1), sig, 2, proof)
    with expect("ZeroProver"):
        raw_verify(d, with_(10, "0x" + "00" * 20), sig, 2, proof)
    with expect("InvalidSignatureV", v=29):
        raw_verify(d, values, sig[:64] + b"\x1d", 2, proof)
    with expect("InvalidSignatureV", v=0):
        raw_verify(d, values, sig[:64] + b"\x00", 2, proof)
    with expect("InvalidSignatureR"):
        raw_verify(d, values, b"\x00" * 32 + sig[32:], 2, proof)
    with expect("InvalidSignatureS", s=b"\x00" * 32):
        raw_verify(d, values, sig[:32] + b"\x00" * 32 + sig[64:], 2, proof)
    with expect("InvalidSignatureS"):
        raw_verify(d, values, sig[:32] + (N // 2 + 1).to_bytes(32, "big") + sig[64:], 2, proof)
    # r that is no curve point's x: ecrecover returns 0
    with expect("SignerMismatch", signer="0x" + "00" * 20, prover=ADDRS[1]):
        raw_verify(d, values, (N - 1).to_bytes(32, "big") + sig[32:], 2, proof)
    with expect("IndexMismatch", index=1, step=2):
        raw_verify(d, values, sig, 1, proof)
    # a claim of a round signed for the wrong chain: WrongChain (Python: signed for chain 1)
    c1 = kat_claim(chain_id=1, prover=ADDRS[1], round=c.round, step=0)
    s1 = sign_claim(c1, KEYS[1], registry=d.registry_address)
    with expect("WrongChain", chainId=1):
        d.verify_claim(s1, [])
    with pytest.raises(ClaimError, match="for chain 1"):
        verify_signed_claim(s1, chain_id=CHAIN_ID)
    # a correctly signed claim that is not in the posted root
    stray = sign_claim(kat_claim(prover=ADDRS[1], round=c.round, step=0, seed=999), KEYS[1], registry=d.registry_address)
    with expect("NotIncluded", prover=ADDRS[1], round=c.round, claimHash=stray.claim.hash()):
        d.verify_claim(stray, round_.prove(round_.hashes[0]))
    # proofs longer than 64 or too short for the index
    with expect("NotIncluded"):
        d.verify_claim(signed[0], [EMPTY] * 65)
    assert not d.chain.call(d.registry.functions.included(round_.root, round_.hashes[2], 2, [proof[0]]))
    with pytest.raises(ValueError, match="proof or the claim's round"):
        d.verify_claim(signed[0])
    assert d.verify_claim(signed[0], claim_round=round_) == round_.hashes[0]


def test_contract_error_is_readable(env):
    d = env
    with pytest.raises(ContractError) as ei:
        d.post_root(env.chain.accounts[6], 1, b"\x01" * 32, 1)
    e = ei.value
    assert str(e) == f"StakeTooLow(prover={env.chain.accounts[6]}, stake=0, minStake={MIN_STAKE})"
    assert isinstance(e, ChainError) and e.data[:4] == bytes.fromhex(
        __import__("eth_utils").keccak(text="StakeTooLow(address,uint256,uint256)")[:4].hex()
    )


def test_gas(env, capsys):
    """Gas of the registry's paths (printed; bounded so regressions show)."""
    d = env
    round_, signed = signed_round(d, KEYS[2], 8)
    tx = d.post_round(ADDRS[2], round_)
    s = signed[5]
    proof = round_.prove(s.claim.hash())
    fn = d.registry.functions.verifyClaim(claim_tuple(s.claim), s.signature[:32], s.signature[32:64],
                                          s.signature[64], s.claim.step, proof)  # fmt: skip
    verify_gas = d.chain.send(fn).gas_used  # sent, for the exact figure (estimates carry a margin)
    stake_gas = d.stake(ADDRS[2], 1).gas_used
    sm_deploy, reg_deploy = (t.gas_used for t in d.deploy_txs)
    with capsys.disabled():
        print(f"\ngas: StakeManager deploy {sm_deploy}, ClaimRegistry deploy {reg_deploy}, stake {stake_gas}, "
              f"postRoot {tx.gas_used}, verifyClaim (8 claims, depth 3) {verify_gas}")  # fmt: skip
    assert tx.gas_used < 100_000 and verify_gas < 60_000 and stake_gas < 80_000
    assert sm_deploy < 2_000_000 and reg_deploy < 2_000_000
