// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {TensorMerkle} from "../TensorMerkle.sol";

/// @title GenerateTask: a `smollm2.generate` task and its tokens on chain
/// @notice The twin of `verifier.tasks.GenerateTask`'s digests and `sequence_tensors`:
///         input digest = keccak256(0x40 || u32 maxNewTokens || f32 temperature || u32 topK
///         || f32 topP || u32 sequence || tensor_root(int64 prompt [P])), output digest =
///         tensor_root(int64 tokens [N]); the traced sequence is T = P + N - 1 tokens
///         (prompt || tokens[:-1]; T = P when N = 0) with ids int64 (1, T), mask = keep =
///         ones bool (1, T), positions int64 arange(T) (1, T), token_types int64 zeros (1, T).
/// @dev Roots are computed in memory (TensorMerkle.rootOf): meant for small tasks.
library GenerateTask {
    /// @notice The task's preimage (floats as their binary32 bits) and the claimed tokens.
    struct Params {
        uint32 maxNewTokens;
        uint32 temperatureBits;
        uint32 topK;
        uint32 topPBits;
        uint32 sequence;
        int64[] prompt;
        int64[] tokens;
    }

    uint8 private constant I64 = 4;
    uint8 private constant BOOL = 6;

    /// @notice The task or the tokens do not hash to the claim's input or output digest.
    error DigestMismatch();

    /// @notice Little-endian int64 bytes of `v`.
    function i64Bytes(int64[] memory v) internal pure returns (bytes memory b) {
        b = new bytes(v.length * 8);
        _putI64s(b, 0, v, v.length);
    }

    /// @dev Write the little-endian bytes of v[0..n) into `b` from element `at` on
    /// (8 bytes each, a byte swap of the low 64 bits done with shifts and masks).
    /// Each 32-byte store also writes 24 bytes past its element; the elements are
    /// written in increasing order and the bytes past `b`'s end are cleared after,
    /// so `b`'s padding stays zero. `b` must be the last allocation.
    function _putI64s(bytes memory b, uint256 at, int64[] memory v, uint256 n) private pure {
        assembly ("memory-safe") {
            let dst := add(add(b, 32), shl(3, at))
            let src := add(v, 32)
            for { let end := add(src, shl(5, n)) } lt(src, end) { src := add(src, 32) } {
                let x := and(mload(src), 0xFFFFFFFFFFFFFFFF)
                x := or(shl(8, and(x, 0x00FF00FF00FF00FF)), and(shr(8, x), 0x00FF00FF00FF00FF))
                x := or(shl(16, and(x, 0x0000FFFF0000FFFF)), and(shr(16, x), 0x0000FFFF0000FFFF))
                x := or(shl(32, and(x, 0xFFFFFFFF)), shr(32, x))
                mstore(dst, shl(192, x))
                dst := add(dst, 8)
            }
            mstore(add(add(b, 32), mload(b)), 0)
        }
    }

    function _shape(uint256 rows, uint256 n) private pure returns (uint64[] memory s) {
        if (rows == 0) {
            s = new uint64[](1);
            s[0] = uint64(n);
        } else {
            s = new uint64[](2);
            (s[0], s[1]) = (uint64(rows), uint64(n));
        }
    }

    /// @notice Revert `DigestMismatch` unless `p` is the claim's task and tokens.
    function checkDigests(Params memory p, bytes32 inputDigest, bytes32 outputDigest) internal pure {
        bytes32 prompt = TensorMerkle.rootOf(TensorMerkle.encodeHeader(I64, _shape(0, p.prompt.length)), i64Bytes(p.prompt));
        bytes32 d = keccak256(
            abi.encodePacked(bytes1(0x40), p.maxNewTokens, p.temperatureBits, p.topK, p.topPBits, p.sequence, prompt)
        );
        if (d != inputDigest) revert DigestMismatch();
        bytes32 out = TensorMerkle.rootOf(TensorMerkle.encodeHeader(I64, _shape(0, p.tokens.length)), i64Bytes(p.tokens));
        if (out != outputDigest) revert DigestMismatch();
    }

    /// @notice T, the traced sequence's length.
    function seqLen(Params memory p) internal pure returns (uint256) {
        return p.prompt.length + (p.tokens.length > 0 ? p.tokens.length - 1 : 0);
    }

    /// @notice The root of task input `which` (program.TASK_INPUTS order: 0 ids, 1 mask,
    ///         2 keep, 3 positions, 4 token_types) of the traced sequence.
    function taskRoot(Params memory p, uint256 which) internal pure returns (bytes32) {
        uint256 t = seqLen(p);
        if (which == 1 || which == 2) {
            bytes memory ones = new bytes(t);
            assembly ("memory-safe") {
                let q := add(ones, 32)
                for { let end := add(q, t) } lt(q, end) { q := add(q, 32) } {
                    mstore(q, 0x0101010101010101010101010101010101010101010101010101010101010101)
                }
                mstore(add(add(ones, 32), t), 0)
            }
            return TensorMerkle.rootOf(TensorMerkle.encodeHeader(BOOL, _shape(1, t)), ones);
        }
        bytes memory b = new bytes(t * 8);
        if (which == 0) {
            // prompt || tokens[:t - P] (t >= P: T = P + N - 1, or P when N = 0).
            uint256 np = p.prompt.length;
            _putI64s(b, 0, p.prompt, np);
            _putI64s(b, np, p.tokens, t - np);
        } else if (which == 3) {
            assembly ("memory-safe") {
                let dst := add(b, 32)
                for { let i := 0 } lt(i, t) { i := add(i, 1) } {
                    // i < 2^32 here (memory): its little-endian int64 is its 4 low bytes swapped, then zeros.
                    let x := or(shl(8, and(i, 0x00FF00FF)), and(shr(8, i), 0x00FF00FF))
                    x := or(shl(16, and(x, 0x0000FFFF)), shr(16, x))
                    mstore(dst, shl(224, x))
                    dst := add(dst, 8)
                }
                mstore(add(add(b, 32), mload(b)), 0)
            }
        } // 4: zeros
        return TensorMerkle.rootOf(TensorMerkle.encodeHeader(I64, _shape(1, t)), b);
    }
}
