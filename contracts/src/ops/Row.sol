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

    /// @dev f32s of calldata bytes, read with calldataload (no copy to memory first).
    function f32sCalldata(bytes calldata data) internal pure returns (uint32[] memory w) {
        uint256 n = data.length / 4;
        w = new uint32[](n);
        assembly ("memory-safe") {
            let src := data.offset
            let dst := add(w, 32)
            for { let end := add(dst, shl(5, n)) } lt(dst, end) { dst := add(dst, 32) } {
                let x := shr(224, calldataload(src))
                x := or(or(shl(24, and(x, 0xff)), shl(8, and(x, 0xff00))), or(and(shr(8, x), 0xff00), shr(24, x)))
                mstore(dst, x)
                src := add(src, 4)
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
        assembly ("memory-safe") {
            let p := add(v, 32)
            for { let end := add(p, shl(5, n)) } lt(p, end) { p := add(p, 32) } {
                let a := and(mload(p), ABS)
                if gt(a, maxAbs) { maxAbs := a }
            }
        }
        if (maxAbs >= POS_INF) {
            // A non-finite element: IEEE's sum of the infinities and NaNs (bit 0: +inf
            // seen, bit 1: -inf seen, bit 2: NaN seen); the finite elements do not matter.
            uint256 special;
            assembly ("memory-safe") {
                let p := add(v, 32)
                for { let end := add(p, shl(5, n)) } lt(p, end) { p := add(p, 32) } {
                    let b := mload(p)
                    let a := and(b, ABS)
                    if iszero(lt(a, POS_INF)) {
                        switch eq(a, POS_INF)
                        case 1 { special := or(special, add(1, and(shr(31, b), 1))) }
                        default { special := or(special, 4) }
                    }
                }
            }
            if (special == 1) return uint32(POS_INF);
            if (special == 2) return NEG_INF;
            return NAN; // a NaN, or both infinities
        }
        int256 e = SoftFloat.exponentOf(uint32(maxAbs));
        // image = rne(sig * 2^(field - 150 + k)) with k = F - 1 - e. As in ExactDot,
        // t = sig * 2^32 and r = 182 - k - field (a subnormal's field read as 1);
        // |image| <= 2^40 keeps r >= 15, and r is capped at 58 where t / 2^r < 1/2.
        int256 rBase = 182 - (FRAC_BITS - 1 - e);
        int256 s;
        if (e >= -86) {
            // Every element is finite here. A subnormal (or zero) |v| < 2^-126 has an image
            // below 2^(-126 + k) = 2^(-87 - e) <= 1/2, so it is 0; so is that of
            // (2^23 + m) * 2^-150, the value read when every field-0 element gets the
            // hidden bit. The rounding is exact for every r >= 1 without the cap (for
            // r >= 256 the sum stays below 2^256 and shifts to 0); the signed images go
            // to one two's complement accumulator.
            assembly ("memory-safe") {
                let p := add(v, 32)
                for { let end := add(p, shl(5, n)) } lt(p, end) { p := add(p, 32) } {
                    let b := mload(p)
                    let r := sub(rBase, and(shr(23, b), 0xff))
                    let t := or(and(shl(32, b), 0x7fffff00000000), 0x80000000000000)
                    let img := shr(r, add(add(t, sub(shl(sub(r, 1), 1), 1)), and(shr(r, t), 1)))
                    let sg := sar(255, shl(224, b))
                    s := add(s, sub(xor(img, sg), sg))
                }
            }
        } else {
            uint256 pos;
            uint256 neg;
            assembly ("memory-safe") {
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
            unchecked {
                s = int256(pos) - int256(neg);
            }
        }
        return SoftFloat.fromInt(s).ldexp(e + 1 - FRAC_BITS);
    }

    /// @dev [x_i * x_i] for the binary32 elements of little-endian calldata `x` (4 bytes
    /// each): SoftFloat.mul's fast path (field in [64, 254], so fx + fy >= 128) inlined
    /// in one decoding loop; at an element outside it the loop stops and that element
    /// takes SoftFloat.mul, then the loop goes on.
    function squaresLE(bytes calldata x) internal pure returns (uint32[] memory sq) {
        uint256 n = x.length / 4;
        sq = new uint32[](n);
        uint256 i;
        while (true) {
            assembly ("memory-safe") {
                let dst := add(sq, 32)
                for {} lt(i, n) { i := add(i, 1) } {
                    let v := shr(224, calldataload(add(x.offset, shl(2, i))))
                    v := or(or(shl(24, and(v, 0xff)), shl(8, and(v, 0xff00))), or(and(shr(8, v), 0xff00), shr(24, v)))
                    let f := and(shr(23, v), 0xff)
                    if iszero(lt(sub(f, 64), 191)) { break }
                    let sg := or(and(v, 0x7FFFFF), 0x800000)
                    let m := mul(sg, sg)
                    let sh := add(23, shr(47, m))
                    let q := shr(sh, add(add(m, sub(shl(sub(sh, 1), 1), 1)), and(shr(sh, m), 1)))
                    let bits := add(shl(23, sub(add(shl(1, f), sh), 151)), q)
                    if iszero(lt(bits, 0x7F800000)) { bits := 0x7F800000 }
                    mstore(add(dst, shl(5, i)), bits)
                }
            }
            if (i == n) break;
            uint32 v = f32AtLE(x, i);
            sq[i] = v.mul(v);
            i++;
        }
    }

    /// @dev [(v_i - mu) * (v_i - mu)]: SoftFloat.add's fast path (both fields in [25, 254],
    /// see SoftFloat._addNormal) and mul's (field in [64, 254]) inlined; an element outside
    /// them takes SoftFloat.sub and SoftFloat.mul.
    function diffSquares(uint32[] memory v, uint32 mu) internal pure returns (uint32[] memory sq) {
        uint256 n = v.length;
        sq = new uint32[](n);
        uint256 i;
        uint256 negMu = uint256(mu) ^ 0x80000000;
        while (true) {
            assembly ("memory-safe") {
                // SoftFloat._addNormal, for fields of x and y in [25, 254].
                function addn(x, y) -> c {
                    let ax := and(x, 0x7FFFFFFF)
                    let ay := and(y, 0x7FFFFFFF)
                    if gt(ay, ax) {
                        let tmp := x
                        x := y
                        y := tmp
                        tmp := ax
                        ax := ay
                        ay := tmp
                    }
                    let fx := shr(23, ax)
                    let sx := or(and(ax, 0x7FFFFF), 0x800000)
                    let sy := or(and(ay, 0x7FFFFF), 0x800000)
                    let d := sub(fx, shr(23, ay))
                    if gt(d, 50) {
                        d := 50
                        sy := 1
                    }
                    let m
                    let nb
                    switch and(xor(x, y), 0x80000000)
                    case 0 {
                        m := add(shl(d, sx), sy)
                        nb := add(add(d, 23), iszero(iszero(shr(add(d, 24), m))))
                    }
                    default {
                        m := sub(shl(d, sx), sy)
                        switch lt(d, 2)
                        case 0 { nb := add(add(d, 22), iszero(iszero(shr(add(d, 23), m)))) }
                        default {
                            nb := 0
                            if m {
                                nb := shl(4, lt(0xffff, m))
                                nb := or(nb, shl(3, lt(0xff, shr(nb, m))))
                                nb := or(nb, shl(2, lt(0xf, shr(nb, m))))
                                nb := or(nb, shl(1, lt(0x3, shr(nb, m))))
                                nb := or(nb, lt(0x1, shr(nb, m)))
                            }
                        }
                    }
                    switch m
                    case 0 { c := 0 }
                    default {
                        let q
                        switch gt(nb, 23)
                        case 0 { q := shl(sub(23, nb), m) }
                        default {
                            let sh := sub(nb, 23)
                            q := shr(sh, add(add(m, sub(shl(sub(sh, 1), 1), 1)), and(shr(sh, m), 1)))
                        }
                        let bits := add(shl(23, sub(add(sub(fx, d), nb), 24)), q)
                        if iszero(lt(bits, 0x7F800000)) { bits := 0x7F800000 }
                        c := or(bits, and(x, 0x80000000))
                    }
                }
                let fy := and(shr(23, negMu), 0xff)
                let yok := lt(sub(fy, 25), 230)
                let src := add(v, 32)
                let dst := add(sq, 32)
                for {} lt(i, n) { i := add(i, 1) } {
                    let x := mload(add(src, shl(5, i)))
                    if iszero(and(yok, lt(sub(and(shr(23, x), 0xff), 25), 230))) { break }
                    let d := addn(x, negMu)
                    let f := and(shr(23, d), 0xff)
                    if iszero(lt(sub(f, 64), 191)) { break }
                    let sg := or(and(d, 0x7FFFFF), 0x800000)
                    let m := mul(sg, sg)
                    let sh := add(23, shr(47, m))
                    let q := shr(sh, add(add(m, sub(shl(sub(sh, 1), 1), 1)), and(shr(sh, m), 1)))
                    let bits := add(shl(23, sub(add(shl(1, f), sh), 151)), q)
                    if iszero(lt(bits, 0x7F800000)) { bits := 0x7F800000 }
                    mstore(add(dst, shl(5, i)), bits)
                }
            }
            if (i == n) break;
            uint32 d = v[i].sub(mu);
            sq[i] = d.mul(d);
            i++;
        }
    }

    /// @dev Element `i` of little-endian calldata `data` of 4-byte items (reverts past the end).
    function f32AtLE(bytes calldata data, uint256 i) internal pure returns (uint32 x) {
        bytes4 b = bytes4(data[4 * i:4 * i + 4]);
        x = uint32(uint8(b[0])) | (uint32(uint8(b[1])) << 8) | (uint32(uint8(b[2])) << 16) | (uint32(uint8(b[3])) << 24);
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
