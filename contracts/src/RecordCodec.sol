// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title RecordCodec: canonical trace records on chain (docs/protocol.md "Record encoding")
/// @notice Parses the version-1 encoding of `refute.compute.trace.TraceRecord.encode`,
/// hashes records, and verifies a record hash against a trace root (`verify_record`).
/// @dev Strict like `TraceRecord.decode` on what the referee relies on: prefix and
/// version, truncation and trailing bytes, name syntax `[a-z_][a-z0-9_]*`, attributes
/// sorted by name and unique, known tags, bools 0/1. Not checked here: string
/// attributes' UTF-8 and the operator signature (the referee checks each kind's input
/// names itself; no operator has a string attribute).
library RecordCodec {
    bytes1 internal constant TAG_INT = 0x69; // 'i'
    bytes1 internal constant TAG_F32 = 0x66; // 'f'
    bytes1 internal constant TAG_BOOL = 0x62; // 'b'
    bytes1 internal constant TAG_STR = 0x73; // 's'
    uint64 internal constant EXTERNAL = type(uint64).max;

    /// @notice One attribute: `value` is the int (two's complement, sign-extended),
    ///         the binary32 bits, or the bool as 0/1; `str` holds a string's bytes.
    struct Attr {
        bytes name;
        bytes1 tag;
        uint256 value;
        bytes str;
    }

    /// @notice One input: producer record index (EXTERNAL for none) and tensor root.
    struct Input {
        bytes name;
        uint64 source;
        bytes32 root;
    }

    /// @notice A decoded record.
    struct Record {
        uint64 index;
        bytes kind;
        Attr[] attrs;
        Input[] inputs;
        bytes32 output;
    }

    /// @notice The encoding is not a canonical version-1 record (`at`: byte offset).
    error BadRecord(uint256 at);
    /// @notice The record has no attribute `name` of the expected tag.
    error MissingAttr(bytes name);
    /// @notice The record proof does not lead to the trace root.
    error BadRecordProof();

    /// @notice keccak256 of the encoding: the record hash.
    function hash(bytes calldata rec) internal pure returns (bytes32) {
        return keccak256(rec);
    }

    function _name(bytes calldata rec, uint256 p) private pure returns (bytes memory name, uint256 q) {
        if (p >= rec.length) revert BadRecord(p);
        uint256 n = uint8(rec[p]);
        if (n == 0 || p + 1 + n > rec.length) revert BadRecord(p);
        name = rec[p + 1:p + 1 + n];
        for (uint256 i = 0; i < n; i++) {
            bytes1 c = name[i];
            bool ok = (c >= 0x61 && c <= 0x7a) || c == 0x5f || (i > 0 && c >= 0x30 && c <= 0x39);
            if (!ok) revert BadRecord(p + 1 + i);
        }
        q = p + 1 + n;
    }

    function _uint(bytes calldata rec, uint256 p, uint256 n) private pure returns (uint256 v) {
        if (p + n > rec.length) revert BadRecord(p);
        for (uint256 i = 0; i < n; i++) {
            v = (v << 8) | uint8(rec[p + i]);
        }
    }

    /// @dev Bytewise a < b (names are ASCII, so this is Python's str order).
    function _less(bytes memory a, bytes memory b) private pure returns (bool) {
        uint256 n = a.length < b.length ? a.length : b.length;
        for (uint256 i = 0; i < n; i++) {
            if (a[i] != b[i]) return a[i] < b[i];
        }
        return a.length < b.length;
    }

    /// @notice Decode a canonical record; reverts `BadRecord` otherwise.
    function decode(bytes calldata rec) internal pure returns (Record memory r) {
        if (rec.length < 11 || rec[0] != 0x20 || rec[1] != 0x01) revert BadRecord(0);
        r.index = uint64(_uint(rec, 2, 8));
        uint256 p;
        (r.kind, p) = _name(rec, 10);
        uint256 n = _uint(rec, p, 1);
        p += 1;
        r.attrs = new Attr[](n);
        for (uint256 i = 0; i < n; i++) {
            Attr memory a = r.attrs[i];
            (a.name, p) = _name(rec, p);
            if (i > 0 && !_less(r.attrs[i - 1].name, a.name)) revert BadRecord(p);
            a.tag = bytes1(uint8(_uint(rec, p, 1)));
            p += 1;
            if (a.tag == TAG_INT) {
                a.value = uint256(int256(int64(uint64(_uint(rec, p, 8)))));
                p += 8;
            } else if (a.tag == TAG_F32) {
                a.value = _uint(rec, p, 4);
                p += 4;
            } else if (a.tag == TAG_BOOL) {
                a.value = _uint(rec, p, 1);
                if (a.value > 1) revert BadRecord(p);
                p += 1;
            } else if (a.tag == TAG_STR) {
                uint256 len = _uint(rec, p, 2);
                if (p + 2 + len > rec.length) revert BadRecord(p);
                a.str = rec[p + 2:p + 2 + len];
                p += 2 + len;
            } else {
                revert BadRecord(p - 1);
            }
        }
        n = _uint(rec, p, 1);
        p += 1;
        r.inputs = new Input[](n);
        for (uint256 i = 0; i < n; i++) {
            Input memory x = r.inputs[i];
            (x.name, p) = _name(rec, p);
            x.source = uint64(_uint(rec, p, 8));
            if (x.source != EXTERNAL && x.source >= r.index) revert BadRecord(p);
            x.root = bytes32(_uint(rec, p + 8, 32));
            p += 40;
        }
        r.output = bytes32(_uint(rec, p, 32));
        if (p + 32 != rec.length) revert BadRecord(p + 32);
    }

    /// @notice Equality of a name with a string literal.
    function eq(bytes memory a, string memory b) internal pure returns (bool) {
        return keccak256(a) == keccak256(bytes(b));
    }

    /// @notice The value of attribute `name` with tag `tag`; reverts `MissingAttr`.
    function attr(Record memory r, string memory name, bytes1 tag) internal pure returns (uint256) {
        for (uint256 i = 0; i < r.attrs.length; i++) {
            if (eq(r.attrs[i].name, name) && r.attrs[i].tag == tag) return r.attrs[i].value;
        }
        revert MissingAttr(bytes(name));
    }

    /// @notice Check that `recordHash` is record `index` of a trace of `count` records
    ///         with root `traceRoot` (`siblings` from the leaf up); reverts otherwise.
    /// @dev leaf = keccak256(0x21 || hash), node = keccak256(0x22 || l || r),
    ///      root = keccak256(0x23 || u64be(count) || treeRoot).
    function verifyRecord(bytes32 traceRoot, bytes32 recordHash, uint64 index, uint64 count, bytes32[] memory siblings)
        internal
        pure
    {
        if (!(index < count && count < type(uint64).max)) revert BadRecordProof();
        uint256 depth;
        while ((uint256(1) << depth) < count) depth++;
        if (siblings.length != depth) revert BadRecordProof();
        bytes32 acc = keccak256(abi.encodePacked(bytes1(0x21), recordHash));
        uint256 i = index;
        for (uint256 k = 0; k < depth; k++) {
            acc = i & 1 == 1
                ? keccak256(abi.encodePacked(bytes1(0x22), siblings[k], acc))
                : keccak256(abi.encodePacked(bytes1(0x22), acc, siblings[k]));
            i >>= 1;
        }
        if (keccak256(abi.encodePacked(bytes1(0x23), count, acc)) != traceRoot) revert BadRecordProof();
    }
}
