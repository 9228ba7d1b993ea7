// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title ModelDigest: a claim's model digest from its preimage
/// @notice `modelDigest = keccak256(0x30 || identity || keccak256(0x24 || templatesRoot) || u64be(stop))`
///         (compute/program.py): `identity` the config-and-weights digest, `templatesRoot`
///         the program's templates trace root, `stop` the end-of-sequence token id plus one
///         (0: the model has none).
library ModelDigest {
    /// @notice identity, templatesRoot and stop do not hash to the claim's model digest.
    error ModelDigestMismatch();

    /// @dev Revert unless the preimage hashes to `modelDigest`.
    function check(bytes32 modelDigest, bytes32 identity, bytes32 templatesRoot, uint64 stop) internal pure {
        bytes32 programRoot = keccak256(abi.encodePacked(bytes1(0x24), templatesRoot));
        if (keccak256(abi.encodePacked(bytes1(0x30), identity, programRoot, stop)) != modelDigest) {
            revert ModelDigestMismatch();
        }
    }
}
