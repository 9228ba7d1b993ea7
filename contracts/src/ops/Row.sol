// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {SoftFloat} from "../SoftFloat.sol";

/// @title Row: decoding of opened slices and refute's exact row reductions
/// @notice `exactSum` and `rowMax` are kernels/reduce_reference.py's `exact_sum` and
/// `row_max` on binary32 bit patterns; `f32s`/`i64At` read canonical little-endian bytes.
library Row {
    using SoftFloat for uint32;

    uint256 private constant ABS = 0x7FFFFFFF;
    uint256 private constant POS_INF = 0x7F800000;
    uint32 private constant NEG_INF = 0xFF800000;
    uint32 private constant NAN = 0x7FC00000;
    // reduce_reference.FRAC_BITS: images are rne(x * 2^(F - 1 - e)), |image| <= 2^F.
    int256 private constant FRAC_BITS = 40;

    /// @dev The binary32 bit patterns of little-endian `data` (4 bytes each).
    function f32s(bytes memory data) internal pure returns (uint32[] memory w) {
        uint256 n = data.length / 4;
        w = new uint32[](n);
        assembly {
            let src := add(data, 32)
            let dst := add(w, 32)
            for { let i := 0 } lt(i, n) { i := add(i, 1) } {
                let x := shr(224, mload(add(src, shl(2, i))))
                x := or(or(shl(24, and(x, 0xff)), shl(8, and(x, 0xff00))), or(and(shr(8, x), 0xff00), shr(24, x)))
                mstore(add(dst, shl(5, i)), x)
            }
        }
    }

    /// @dev Element `i` of little-endian `data` of 4-byte items.
    function f32At(bytes memory data, uint256 i) internal pure returns (uint32 x) {
        uint256 o = 4 * i;
        x = uint32(uint8(data[o])) | (uint32(uint8(data[o + 1])) << 8) | (uint32(uint8(data[o + 2])) << 16)
            | (uint32(uint8(data[o + 3])) << 24);
    }

    /// @dev Element `i` of little-endian int64 `data`.
    function i64At(bytes memory data, uint256 i) internal pure returns (int64) {
        uint256 v;
        for (uint256 k = 8; k > 0; k--) {
            v = (v << 8) | uint8(data[8 * i + k - 1]);
        }
        return int64(uint64(v));
    }

    /// @dev Mask entry `i` (bool: 1 byte, or int64): nonzero means kept.
    function kept(bytes memory mask, uint256 itemsize, uint256 i) internal pure returns (bool) {
        for (uint256 k = 0; k < itemsize; k++) {
            if (mask[itemsize * i + k] != 0) return true;
        }
        return false;
    }

    /// @dev exact_sum: the fixed-point images of the finite elements scaled by the
    /// largest finite magnitude's exponent e, summed exactly, converted with one RNE
    /// rounding and scaled back by ldexp(., e + 1 - F); infinities and NaN by IEEE.
    function exactSum(uint32[] memory v) internal pure returns (uint32) {
        uint256 n = v.length;
        uint256 maxAbs;
        bool pinf;
        bool ninf;
        bool nan;
        for (uint256 i = 0; i < n; i++) {
            uint256 b = v[i];
            uint256 a = b & ABS;
            if (a < POS_INF) {
                if (a > maxAbs) maxAbs = a;
            } else if (a == POS_INF) {
                if (b == POS_INF) pinf = true;
                else ninf = true;
            } else {
                nan = true;
            }
        }
        if (nan || (pinf && ninf)) return NAN;
        if (pinf) return uint32(POS_INF);
        if (ninf) return NEG_INF;
        int256 e = SoftFloat.exponentOf(uint32(maxAbs));
        // image = rne(sig * 2^(field - 150 + k)) with k = F - 1 - e. As in ExactDot,
        // t = sig * 2^32 and r = 182 - k - field (a subnormal's field read as 1);
        // |image| <= 2^40 keeps r >= 15, and r is capped at 58 where t / 2^r < 1/2.
        int256 rBase = 182 - (FRAC_BITS - 1 - e);
        uint256 pos;
        uint256 neg;
        assembly {
            let p := add(v, 32)
            for { let end := add(p, shl(5, n)) } lt(p, end) { p := add(p, 32) } {
                let b := mload(p)
                let field := and(shr(23, b), 0xff)
                if lt(field, 0xff) {
                    let nz := iszero(iszero(field))
                    let t := shl(32, or(and(b, 0x7fffff), shl(23, nz)))
                    let r := sub(sub(rBase, field), iszero(nz))
                    if gt(r, 58) { r := 58 }
                    let img := shr(r, add(add(t, sub(shl(sub(r, 1), 1), 1)), and(shr(r, t), 1)))
                    switch and(b, 0x80000000)
                    case 0 { pos := add(pos, img) }
                    default { neg := add(neg, img) }
                }
            }
        }
        int256 s;
        unchecked {
            s = int256(pos) - int256(neg);
        }
        return SoftFloat.fromInt(s).ldexp(e + 1 - FRAC_BITS);
    }

    /// @dev row_max: the largest total-order key (-0 < +0); any NaN gives NaN.
    function rowMax(uint32[] memory v) internal pure returns (uint32 m) {
        m = NEG_INF;
        for (uint256 i = 0; i < v.length; i++) {
            m = SoftFloat.max(m, v[i]);
        }
    }

    /// @dev Integer max of bits & 0x7FFFFFFF (0 when empty): >= inf bits iff inf/NaN.
    function maxAbsBits(uint32[] memory v, uint256 from, uint256 len) internal pure returns (uint32 m) {
        for (uint256 i = from; i < from + len; i++) {
            uint32 a = v[i] & uint32(ABS);
            if (a > m) m = a;
        }
    }
}
