"""The committed contract artifacts are exactly what solc-js makes of the sources."""

from refute.contracts.build import SOLC_VERSION, check_artifacts, load_artifact, standard_input


def test_committed_artifacts_match_a_fresh_compile():
    assert check_artifacts() == []


def test_artifacts_name_the_compiler_and_the_input():
    a = load_artifact("StakeManager")
    assert a.compiler.startswith(SOLC_VERSION + "+commit.")
    assert a.bytecode.startswith("0x6") and len(a.deployed_bytecode) > 100  # PUSH1/PUSH2: a real constructor
    assert set(standard_input()["sources"]) >= {"StakeManager.sol", "ClaimRegistry.sol", "SoftFloat.sol"}
