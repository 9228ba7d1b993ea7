// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Opening} from "./IReferee.sol";

/// @title TensorMerkle: tensor roots on chain (docs/protocol.md "Tensor roots")
/// @notice Header parsing and digest, range/element openings verified against a tensor
/// root, and the root of small in-memory tensors: the twin of `refute.compute.merkle`
/// (`Header`, `_verify_run`, `tensor_root`).
/// @dev Chunks are 256 bytes; leaf = keccak256(0x01 || chunk), node = keccak256(0x02 ||
/// l || r), header digest = keccak256(0x00 || header), root = keccak256(0x03 ||
/// headerDigest || dataRoot); a missing right node at level k is Z[k], the root of
/// 2^k EMPTY (zero) leaves. Hashes are formed in scratch memory above the free
/// memory pointer (never allocated: each one is consumed before the next write).
library TensorMerkle {
    uint256 internal constant CHUNK = 256;
    uint256 private constant MAX_DEPTH = 64;

    /// @notice A parsed header: dtype code, item size, shape and element count.
    struct Header {
        uint8 code;
        uint256 itemsize;
        uint64[] shape;
        uint256 numel;
    }

    /// @notice The header is not `u8 code || u8 ndim || u64be dims` with a known code,
    ///         or its tensor is too large to commit to (more than 2^64 chunks).
    error BadHeader();
    /// @notice Elements `[start, stop)` are not a non-empty range of the tensor.
    error BadRange(uint64 start, uint64 stop, uint256 numel);
    /// @notice The opening carries `got` bytes of chunks where `want` are needed.
    error BadChunks(uint256 want, uint256 got);
    /// @notice The zero padding after the tensor's last byte is not zero.
    error BadPadding();
    /// @notice The opening carries `got` siblings where the range needs `want`.
    error BadSiblings(uint256 want, uint256 got);
    /// @notice The opening does not hash to the committed root.
    error RootMismatch(bytes32 root, bytes32 computed);
    /// @notice In-memory data of the wrong length for its header.
    error BadData(uint256 want, uint256 got);

    /// @notice Item size of dtype `code` (merkle.DTYPES), 0 if unknown.
    function itemsizeOf(uint8 code) internal pure returns (uint256) {
        if (code == 1 || code == 5) return 4; // f32, i32
        if (code == 2 || code == 3) return 2; // bf16, f16
        if (code == 4) return 8; // i64
        if (code == 6) return 1; // bool
        return 0;
    }

    /// @notice Parse a header; reverts `BadHeader` if malformed.
    function parseHeader(bytes memory h) internal pure returns (Header memory out) {
        if (h.length < 2) revert BadHeader();
        out.code = uint8(h[0]);
        out.itemsize = itemsizeOf(out.code);
        uint256 ndim = uint8(h[1]);
        if (out.itemsize == 0 || h.length != 2 + 8 * ndim) revert BadHeader();
        out.shape = new uint64[](ndim);
        uint256 n = 1;
        for (uint256 i = 0; i < ndim; i++) {
            uint256 d;
            assembly {
                d := shr(192, mload(add(add(h, 34), mul(i, 8))))
            }
            out.shape[i] = uint64(d);
            // Python caps n_chunks at 2^64; with dims < 2^64 this product never
            // overflows uint256 before it passes the cap (checked arithmetic anyway).
            n *= d;
            if (n > (CHUNK << MAX_DEPTH)) revert BadHeader();
        }
        out.numel = n;
        if ((n * out.itemsize + CHUNK - 1) / CHUNK > (1 << MAX_DEPTH)) revert BadHeader();
    }

    /// @notice Encode a header: `u8 code || u8 ndim || u64be dims`.
    function encodeHeader(uint8 code, uint64[] memory shape) internal pure returns (bytes memory h) {
        h = abi.encodePacked(code, uint8(shape.length));
        for (uint256 i = 0; i < shape.length; i++) {
            h = abi.encodePacked(h, shape[i]);
        }
    }

    /// @notice keccak256(0x00 || header).
    function headerDigest(bytes memory header) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked(bytes1(0x00), header));
    }

    /// @notice Levels above the leaves of a tree of `nChunks` leaves: ceil(log2(n)).
    function depthOf(uint256 nChunks) internal pure returns (uint256 d) {
        while ((uint256(1) << d) < nChunks) d++;
    }

    function _node(bytes32 a, bytes32 b) private pure returns (bytes32 h) {
        assembly {
            let p := mload(0x40)
            mstore8(p, 0x02)
            mstore(add(p, 1), a)
            mstore(add(p, 33), b)
            h := keccak256(p, 65)
        }
    }

    /// @notice Verify `o` against `root` and return the bytes of elements
    ///         `[o.start, o.stop)` (little-endian, row-major) and the parsed header.
    /// @dev The order of siblings is merkle._sibling_positions: per level bottom-up,
    ///      the left one (if the run starts at an odd index), then the right one.
    function verifyRange(bytes32 root, Opening calldata o) internal pure returns (Header memory h, bytes memory data) {
        h = parseHeader(o.header);
        if (!(o.start < o.stop && o.stop <= h.numel)) revert BadRange(o.start, o.stop, h.numel);
        uint256 size = h.itemsize;
        uint256 first = (uint256(o.start) * size) / CHUNK;
        uint256 stopChunk = (uint256(o.stop) * size + CHUNK - 1) / CHUNK;
        if (o.chunks.length != (stopChunk - first) * CHUNK) revert BadChunks((stopChunk - first) * CHUNK, o.chunks.length);
        uint256 nbytes = h.numel * size;
        uint256 nChunks = (nbytes + CHUNK - 1) / CHUNK;
        if (stopChunk == nChunks) {
            for (uint256 i = nbytes - first * CHUNK; i < o.chunks.length; i++) {
                if (o.chunks[i] != 0) revert BadPadding();
            }
        }
        bytes32 dataRoot = _fold(_leaves(o.chunks), first, stopChunk, depthOf(nChunks), o.siblings);
        bytes32 got = keccak256(abi.encodePacked(bytes1(0x03), headerDigest(o.header), dataRoot));
        if (got != root) revert RootMismatch(root, got);
        uint256 off = uint256(o.start) * size - first * CHUNK;
        data = o.chunks[off:off + (uint256(o.stop) - o.start) * size];
    }

    /// @dev buf[1 + i] = keccak256(0x01 || chunk i); buf[0] and the last slot are
    /// room for a left and a right sibling.
    function _leaves(bytes calldata chunks) private pure returns (bytes32[] memory buf) {
        uint256 cnt = chunks.length / CHUNK;
        buf = new bytes32[](cnt + 2);
        for (uint256 i = 0; i < cnt; i++) {
            bytes32 leaf;
            assembly {
                let p := mload(0x40)
                mstore8(p, 0x01)
                calldatacopy(add(p, 1), add(chunks.offset, mul(i, 256)), 256)
                leaf := keccak256(p, 257)
            }
            buf[i + 1] = leaf;
        }
    }

    /// @dev Hash the run of leaves [lo, hi) in buf[1..] up `depth` levels with the
    /// siblings in merkle._sibling_positions order: per level, the left one (run
    /// starts at an odd index), then the right one (run ends at an odd index).
    function _fold(bytes32[] memory buf, uint256 lo, uint256 hi, uint256 depth, bytes32[] calldata siblings)
        private
        pure
        returns (bytes32)
    {
        uint256 cnt = hi - lo;
        uint256 used;
        for (uint256 level = 0; level < depth; level++) {
            uint256 s = 1;
            uint256 e = 1 + cnt;
            if (lo & 1 == 1) {
                if (used == siblings.length) revert BadSiblings(used + 1, siblings.length);
                buf[0] = siblings[used++];
                s = 0;
                lo -= 1;
            }
            if (hi & 1 == 1) {
                if (used == siblings.length) revert BadSiblings(used + 1, siblings.length);
                buf[e] = siblings[used++];
                e += 1;
                hi += 1;
            }
            cnt = (e - s) / 2;
            // Writes go to index 1 + k, reads come from s + 2k >= k + 1 and later
            // steps read further right: no node is overwritten before it is read.
            for (uint256 k = 0; k < cnt; k++) {
                buf[1 + k] = _node(buf[s + 2 * k], buf[s + 2 * k + 1]);
            }
            lo >>= 1;
            hi >>= 1;
        }
        if (used != siblings.length) revert BadSiblings(used, siblings.length);
        return buf[1];
    }

    /// @notice The tensor root of `data` (canonical bytes) under `header`.
    /// @dev For small tensors (task inputs): every leaf is hashed in memory. Each leaf
    /// preimage 0x01 || chunk is assembled in scratch memory with one mcopy (the last
    /// chunk zero-padded word by word); the levels are folded in place, a missing right
    /// node at level k being Z[k] (kept up to date level by level: Z[k+1] = node(Z[k], Z[k])).
    function rootOf(bytes memory header, bytes memory data) internal pure returns (bytes32) {
        Header memory h = parseHeader(header);
        if (data.length != h.numel * h.itemsize) revert BadData(h.numel * h.itemsize, data.length);
        bytes32 dataRoot;
        assembly ("memory-safe") {
            let len := mload(data)
            let n := shr(8, add(len, 255))
            if n {
                // level[i] at lv + 32 i; scratch above it (never allocated).
                let lv := mload(0x40)
                let p := add(lv, shl(5, n))
                let src := add(data, 32)
                for { let i := 0 } lt(i, n) { i := add(i, 1) } {
                    let off := shl(8, i)
                    let m := sub(len, off)
                    if gt(m, 256) { m := 256 }
                    mstore8(p, 0x01)
                    mcopy(add(p, 1), add(src, off), m)
                    for { let q := add(add(p, 1), m) } lt(q, add(p, 257)) { q := add(q, 32) } { mstore(q, 0) }
                    mstore(add(lv, shl(5, i)), keccak256(p, 257))
                }
                let z := 0
                for {} gt(n, 1) {} {
                    let m := shr(1, add(n, 1))
                    mstore8(p, 0x02)
                    for { let i := 0 } lt(i, m) { i := add(i, 1) } {
                        let l := add(lv, shl(6, i))
                        mstore(add(p, 1), mload(l))
                        switch lt(add(shl(1, i), 1), n)
                        case 1 { mstore(add(p, 33), mload(add(l, 32))) }
                        default { mstore(add(p, 33), z) }
                        mstore(add(lv, shl(5, i)), keccak256(p, 65))
                    }
                    mstore(add(p, 1), z)
                    mstore(add(p, 33), z)
                    z := keccak256(p, 65)
                    n := m
                }
                dataRoot := mload(lv)
            }
        }
        return keccak256(abi.encodePacked(bytes1(0x03), headerDigest(header), dataRoot));
    }
}
