// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {SoftFloat} from "./SoftFloat.sol";

/// @title ExactDot: one output element of refute's exact GEMM
/// @notice C_ij of kernels/gemm_reference.py (docs/numerics.md, "Exact GEMM"): power-of-two
/// scales from the exact max of |bits| of the whole row of A and the whole column of B,
/// integer images of 7*s bits, an exact integer dot product, one round-to-nearest-even
/// conversion, ldexp back, then the optional bias added with one binary32 addition.
/// @dev The images are computed directly from the bits with an integer round-half-even
/// shift. The reference multiplies by 2^(7s-1-e) in float32 first; that product is
/// exact unless it falls below 2^-126, and then both roads give the integer 0.
library ExactDot {
    using SoftFloat for uint32;

    uint256 private constant SLICE_BITS = 7;
    uint256 private constant MAX_K = 1 << 20;
    uint256 private constant ABS = 0x7FFFFFFF;
    uint256 private constant POS_INF = 0x7F800000;
    uint32 private constant NAN = 0x7FC00000;

    /// @notice The row of A and the column of B have different lengths.
    error LengthMismatch(uint256 xLength, uint256 wLength);
    /// @notice The slice count is not in 1..4.
    error BadSlices(uint256 slices);
    /// @notice K exceeds refute's MAX_K = 2^20 (the bound every exactness argument uses).
    error TooLong(uint256 k);

    /// @dev C = op(A)[i, :] . op(B)[:, j] with `slices` slices, plus `bias` if `hasBias`.
    /// `xRow` is row i of A, `wCol` column j of B (row j of a (N, K) weight matrix).
    /// A row or column holding inf or NaN gives the canonical NaN; P = 0 gives +0.
    function dotElement(uint32[] memory xRow, uint32[] memory wCol, uint256 slices, bool hasBias, uint32 bias)
        internal
        pure
        returns (uint32 c)
    {
        uint256 px;
        uint256 pw;
        assembly {
            px := add(xRow, 0x20)
            pw := add(wCol, 0x20)
        }
        return _element(px, pw, xRow.length, wCol.length, slices, hasBias, bias);
    }

    /// @dev dotElement on calldata rows, copied to memory with calldatacopy (3 gas a
    /// word; the ABI decoder's checked copy costs ~260 gas per element, more than
    /// the arithmetic). Only the low 32 bits of each calldata word are read.
    function dotElementCalldata(
        uint32[] calldata xRow,
        uint32[] calldata wCol,
        uint256 slices,
        bool hasBias,
        uint32 bias
    ) internal pure returns (uint32 c) {
        uint256 k = xRow.length;
        uint256 kw = wCol.length;
        uint256 px;
        uint256 pw;
        assembly {
            px := mload(0x40)
            pw := add(px, shl(5, k))
            calldatacopy(px, xRow.offset, shl(5, k))
            calldatacopy(pw, wCol.offset, shl(5, kw))
            mstore(0x40, add(pw, shl(5, kw)))
        }
        return _element(px, pw, k, kw, slices, hasBias, bias);
    }

    /// @dev dotElement on rows given as canonical little-endian binary32 bytes (an opened
    /// slice as it arrives in calldata): K = x.length / 4, the same checks, the same
    /// result bit for bit. Rows whose largest exponents leave every subnormal image at
    /// 0 (all practical rows) take `_dotLE`, which reads eight elements per calldata
    /// word; the others are decoded to words and take `_dot`.
    function dotElementLE(bytes calldata x, bytes calldata w, uint256 slices, bool hasBias, uint32 bias)
        internal
        pure
        returns (uint32 c)
    {
        uint256 k = x.length / 4;
        uint256 kw = w.length / 4;
        if (kw != k) revert LengthMismatch(k, kw);
        if (slices < 1 || slices > 4) revert BadSlices(slices);
        if (k > MAX_K) revert TooLong(k);
        uint256 ox;
        uint256 ow;
        assembly {
            ox := x.offset
            ow := w.offset
        }
        c = _unbiasedLE(ox, ow, k, slices);
        if (hasBias) c = c.add(bias);
    }

    /// @dev _unbiased on little-endian calldata rows at ox and ow. The largest exponent
    /// field of a row is the field of its largest |bits| (the field is |bits| >> 23),
    /// 0xFF exactly when the row holds inf or NaN.
    function _unbiasedLE(uint256 ox, uint256 ow, uint256 k, uint256 slices) private pure returns (uint32) {
        (uint256 fx, uint256 fw) = _maxFieldsLE(ox, ow, k);
        if (fx == 0xFF || fw == 0xFF) return NAN;
        int256 e = int256(fx) - 127;
        int256 f = int256(fw) - 127;
        int256 shift = int256(SLICE_BITS * slices) - 1;
        uint256 lim = (1 << (SLICE_BITS * slices)) - 1;
        int256 p;
        // |v| < 2^-126 for a subnormal (or zero) v, so its image |v| * 2^(shift - e) is
        // below 2^(shift - e - 126) <= 1/2 when e >= shift - 125: it rounds to 0, and so
        // does (2^23 + m) * 2^-150 * 2^(shift - e) < 2^(shift - e - 126), the value _dotLE
        // reads when it gives every field-0 element the hidden bit.
        if (e >= shift - 125 && f >= shift - 125) {
            p = _dotLE(ox, ow, k, uint256(182 - (shift - e)), uint256(182 - (shift - f)), lim);
        } else {
            (uint256 px, uint256 pw) = _wordsLE(ox, ow, k);
            p = _dot(px, pw, k, shift - e, shift - f, lim);
        }
        return SoftFloat.fromInt(p).ldexp(e + f - 2 * shift);
    }

    /// @dev The largest exponent field of each little-endian row, eight lanes at a time:
    /// each calldata word holds 8 elements, byte-swapped lane-wise into big-endian
    /// binary32 lanes; the fields (bits 0..7 of each 32-bit lane after >> 23) are
    /// maxed lane-wise without borrows ((m | 0x100) - y keeps bit 8 iff m >= y), then
    /// across lanes. Bytes past element k of the last word are masked to zero.
    function _maxFieldsLE(uint256 ox, uint256 ow, uint256 k) private pure returns (uint256 fx, uint256 fw) {
        assembly {
            function swap(v) -> r {
                r := or(shl(8, and(v, 0x00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff)),
                    and(shr(8, v), 0x00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff))
                r := or(shl(16, and(r, 0x0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff)),
                    and(shr(16, r), 0x0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff))
            }
            function lmax(m, v) -> r {
                let y := and(shr(23, v), 0x000000ff000000ff000000ff000000ff000000ff000000ff000000ff000000ff)
                let ge := and(shr(8, sub(or(m, 0x0000010000000100000001000000010000000100000001000000010000000100), y)),
                    0x0000000100000001000000010000000100000001000000010000000100000001)
                let sel := mul(ge, 0xff)
                r := or(and(m, sel), and(y, xor(sel, 0x000000ff000000ff000000ff000000ff000000ff000000ff000000ff000000ff)))
            }
            function lanes(m) -> r {
                for { let j := 0 } lt(j, 256) { j := add(j, 32) } {
                    let v := and(shr(j, m), 0xff)
                    if gt(v, r) { r := v }
                }
            }
            let mx := 0
            let mw := 0
            let end := add(ox, shl(5, shr(3, k)))
            for {} lt(ox, end) {
                ox := add(ox, 32)
                ow := add(ow, 32)
            } {
                mx := lmax(mx, swap(calldataload(ox)))
                mw := lmax(mw, swap(calldataload(ow)))
            }
            let rem := and(k, 7)
            if rem {
                let keep := not(shr(shl(5, rem), not(0)))
                mx := lmax(mx, and(swap(calldataload(ox)), keep))
                mw := lmax(mw, and(swap(calldataload(ow)), keep))
            }
            fx := lanes(mx)
            fw := lanes(mw)
        }
    }

    /// @dev _dot for rows with kScale <= 125 (row max exponent e >= shift - 125), where
    /// every field-0 element's image is 0 (see _unbiasedLE): each element read with the
    /// hidden bit, r = rBase - field uncapped (exact for every r >= 1), the clamp as
    /// gt(i, lim) subtracted, the signed product added to a two's complement accumulator.
    function _dotFast(uint256 px, uint256 pw, uint256 k, uint256 rx, uint256 rw, uint256 lim)
        private
        pure
        returns (int256 p)
    {
        assembly {
            // rBase of x and w in scratch space (the loop's stack is full).
            mstore(0x00, rx)
            mstore(0x20, rw)
            let acc := 0
            for { let end := add(px, shl(5, k)) } lt(px, end) {
                px := add(px, 0x20)
                pw := add(pw, 0x20)
            } {
                let a := mload(px)
                let b := mload(pw)
                let ia := sub(mload(0x00), and(shr(23, a), 0xff))
                {
                    let t := or(and(shl(32, a), 0x7fffff00000000), 0x80000000000000)
                    ia := shr(ia, add(add(t, sub(shl(sub(ia, 1), 1), 1)), and(shr(ia, t), 1)))
                }
                ia := sub(ia, gt(ia, lim))
                let ib := sub(mload(0x20), and(shr(23, b), 0xff))
                {
                    let t := or(and(shl(32, b), 0x7fffff00000000), 0x80000000000000)
                    ib := shr(ib, add(add(t, sub(shl(sub(ib, 1), 1), 1)), and(shr(ib, t), 1)))
                }
                ib := sub(ib, gt(ib, lim))
                let s := sar(255, shl(224, xor(a, b)))
                let pr := mul(ia, ib)
                acc := add(acc, sub(xor(pr, s), s))
            }
            p := acc
        }
    }

    /// @dev _dot on little-endian calldata rows, for rows where every field-0 element's
    /// image is 0 (see _unbiasedLE): eight elements per word, lanes unrolled. Lane j of
    /// a byte-swapped word is the binary32 at bits 224 - 32j; its image is
    /// rne(t / 2^r) with t = (2^23 + mantissa) * 2^32 and r = rBase - field, exact for
    /// every r >= 1 (r >= 28 here; for r >= 256 the sum stays below 2^256 and shifts to
    /// 0). Images are <= lim + 1 (the row max rounds to at most 2^(7s)), so the clamp
    /// subtracts gt(i, lim). The signed product is added to a two's complement
    /// accumulator (|P| < 2^76).
    function _dotLE(uint256 ox, uint256 ow, uint256 k, uint256 rx, uint256 rw, uint256 lim)
        private
        pure
        returns (int256 p)
    {
        assembly {
            function swap(v) -> r {
                r := or(shl(8, and(v, 0x00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff)),
                    and(shr(8, v), 0x00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff00ff))
                r := or(shl(16, and(r, 0x0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff)),
                    and(shr(16, r), 0x0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff0000ffff))
            }
            function group(a, b, cap) -> acc {
                {
                    let ia := sub(mload(0x00), and(shr(247, a), 0xff))
                    {
                        let t := or(and(shr(192, a), 0x7fffff00000000), 0x80000000000000)
                        ia := shr(ia, add(add(t, sub(shl(sub(ia, 1), 1), 1)), and(shr(ia, t), 1)))
                    }
                    ia := sub(ia, gt(ia, cap))
                    let ib := sub(mload(0x20), and(shr(247, b), 0xff))
                    {
                        let t := or(and(shr(192, b), 0x7fffff00000000), 0x80000000000000)
                        ib := shr(ib, add(add(t, sub(shl(sub(ib, 1), 1), 1)), and(shr(ib, t), 1)))
                    }
                    ib := sub(ib, gt(ib, cap))
                    let s := sar(255, xor(a, b))
                    let pr := mul(ia, ib)
                    acc := add(acc, sub(xor(pr, s), s))
                }
                {
                    let ia := sub(mload(0x00), and(shr(215, a), 0xff))
                    {
                        let t := or(and(shr(160, a), 0x7fffff00000000), 0x80000000000000)
                        ia := shr(ia, add(add(t, sub(shl(sub(ia, 1), 1), 1)), and(shr(ia, t), 1)))
                    }
                    ia := sub(ia, gt(ia, cap))
                    let ib := sub(mload(0x20), and(shr(215, b), 0xff))
                    {
                        let t := or(and(shr(160, b), 0x7fffff00000000), 0x80000000000000)
                        ib := shr(ib, add(add(t, sub(shl(sub(ib, 1), 1), 1)), and(shr(ib, t), 1)))
                    }
                    ib := sub(ib, gt(ib, cap))
                    let s := sar(255, shl(32, xor(a, b)))
                    let pr := mul(ia, ib)
                    acc := add(acc, sub(xor(pr, s), s))
                }
                {
                    let ia := sub(mload(0x00), and(shr(183, a), 0xff))
                    {
                        let t := or(and(shr(128, a), 0x7fffff00000000), 0x80000000000000)
                        ia := shr(ia, add(add(t, sub(shl(sub(ia, 1), 1), 1)), and(shr(ia, t), 1)))
                    }
                    ia := sub(ia, gt(ia, cap))
                    let ib := sub(mload(0x20), and(shr(183, b), 0xff))
                    {
                        let t := or(and(shr(128, b), 0x7fffff00000000), 0x80000000000000)
                        ib := shr(ib, add(add(t, sub(shl(sub(ib, 1), 1), 1)), and(shr(ib, t), 1)))
                    }
                    ib := sub(ib, gt(ib, cap))
                    let s := sar(255, shl(64, xor(a, b)))
                    let pr := mul(ia, ib)
                    acc := add(acc, sub(xor(pr, s), s))
                }
                {
                    let ia := sub(mload(0x00), and(shr(151, a), 0xff))
                    {
                        let t := or(and(shr(96, a), 0x7fffff00000000), 0x80000000000000)
                        ia := shr(ia, add(add(t, sub(shl(sub(ia, 1), 1), 1)), and(shr(ia, t), 1)))
                    }
                    ia := sub(ia, gt(ia, cap))
                    let ib := sub(mload(0x20), and(shr(151, b), 0xff))
                    {
                        let t := or(and(shr(96, b), 0x7fffff00000000), 0x80000000000000)
                        ib := shr(ib, add(add(t, sub(shl(sub(ib, 1), 1), 1)), and(shr(ib, t), 1)))
                    }
                    ib := sub(ib, gt(ib, cap))
                    let s := sar(255, shl(96, xor(a, b)))
                    let pr := mul(ia, ib)
                    acc := add(acc, sub(xor(pr, s), s))
                }
                {
                    let ia := sub(mload(0x00), and(shr(119, a), 0xff))
                    {
                        let t := or(and(shr(64, a), 0x7fffff00000000), 0x80000000000000)
                        ia := shr(ia, add(add(t, sub(shl(sub(ia, 1), 1), 1)), and(shr(ia, t), 1)))
                    }
                    ia := sub(ia, gt(ia, cap))
                    let ib := sub(mload(0x20), and(shr(119, b), 0xff))
                    {
                        let t := or(and(shr(64, b), 0x7fffff00000000), 0x80000000000000)
                        ib := shr(ib, add(add(t, sub(shl(sub(ib, 1), 1), 1)), and(shr(ib, t), 1)))
                    }
                    ib := sub(ib, gt(ib, cap))
                    let s := sar(255, shl(128, xor(a, b)))
                    let pr := mul(ia, ib)
                    acc := add(acc, sub(xor(pr, s), s))
                }
                {
                    let ia := sub(mload(0x00), and(shr(87, a), 0xff))
                    {
                        let t := or(and(shr(32, a), 0x7fffff00000000), 0x80000000000000)
                        ia := shr(ia, add(add(t, sub(shl(sub(ia, 1), 1), 1)), and(shr(ia, t), 1)))
                    }
                    ia := sub(ia, gt(ia, cap))
                    let ib := sub(mload(0x20), and(shr(87, b), 0xff))
                    {
                        let t := or(and(shr(32, b), 0x7fffff00000000), 0x80000000000000)
                        ib := shr(ib, add(add(t, sub(shl(sub(ib, 1), 1), 1)), and(shr(ib, t), 1)))
                    }
                    ib := sub(ib, gt(ib, cap))
                    let s := sar(255, shl(160, xor(a, b)))
                    let pr := mul(ia, ib)
                    acc := add(acc, sub(xor(pr, s), s))
                }
                {
                    let ia := sub(mload(0x00), and(shr(55, a), 0xff))
                    {
                        let t := or(and(shr(0, a), 0x7fffff00000000), 0x80000000000000)
                        ia := shr(ia, add(add(t, sub(shl(sub(ia, 1), 1), 1)), and(shr(ia, t), 1)))
                    }
                    ia := sub(ia, gt(ia, cap))
                    let ib := sub(mload(0x20), and(shr(55, b), 0xff))
                    {
                        let t := or(and(shr(0, b), 0x7fffff00000000), 0x80000000000000)
                        ib := shr(ib, add(add(t, sub(shl(sub(ib, 1), 1), 1)), and(shr(ib, t), 1)))
                    }
                    ib := sub(ib, gt(ib, cap))
                    let s := sar(255, shl(192, xor(a, b)))
                    let pr := mul(ia, ib)
                    acc := add(acc, sub(xor(pr, s), s))
                }
                {
                    let ia := sub(mload(0x00), and(shr(23, a), 0xff))
                    {
                        let t := or(and(shl(32, a), 0x7fffff00000000), 0x80000000000000)
                        ia := shr(ia, add(add(t, sub(shl(sub(ia, 1), 1), 1)), and(shr(ia, t), 1)))
                    }
                    ia := sub(ia, gt(ia, cap))
                    let ib := sub(mload(0x20), and(shr(23, b), 0xff))
                    {
                        let t := or(and(shl(32, b), 0x7fffff00000000), 0x80000000000000)
                        ib := shr(ib, add(add(t, sub(shl(sub(ib, 1), 1), 1)), and(shr(ib, t), 1)))
                    }
                    ib := sub(ib, gt(ib, cap))
                    let s := sar(255, shl(224, xor(a, b)))
                    let pr := mul(ia, ib)
                    acc := add(acc, sub(xor(pr, s), s))
                }
            }
            // rBase of x and w in scratch space (the group's stack is full).
            mstore(0x00, rx)
            mstore(0x20, rw)
            let acc := 0
            let end := add(ox, shl(5, shr(3, k)))
            for {} lt(ox, end) {
                ox := add(ox, 32)
                ow := add(ow, 32)
            } {
                acc := add(acc, group(swap(calldataload(ox)), swap(calldataload(ow)), lim))
            }
            let rem := and(k, 7)
            if rem {
                let keep := not(shr(shl(5, rem), not(0)))
                acc := add(acc, group(and(swap(calldataload(ox)), keep), and(swap(calldataload(ow)), keep), lim))
            }
            p := acc
        }
    }

    /// @dev Little-endian calldata rows decoded to k big-endian 32-byte words each, in
    /// fresh memory (the general path of dotElementLE).
    function _wordsLE(uint256 ox, uint256 ow, uint256 k) private pure returns (uint256 px, uint256 pw) {
        assembly {
            px := mload(0x40)
            pw := add(px, shl(5, k))
            mstore(0x40, add(pw, shl(5, k)))
            for { let i := 0 } lt(i, k) { i := add(i, 1) } {
                let x := shr(224, calldataload(add(ox, shl(2, i))))
                x := or(or(shl(24, and(x, 0xff)), shl(8, and(x, 0xff00))), or(and(shr(8, x), 0xff00), shr(24, x)))
                mstore(add(px, shl(5, i)), x)
                x := shr(224, calldataload(add(ow, shl(2, i))))
                x := or(or(shl(24, and(x, 0xff)), shl(8, and(x, 0xff00))), or(and(shr(8, x), 0xff00), shr(24, x)))
                mstore(add(pw, shl(5, i)), x)
            }
        }
    }

    /// @dev The element from rows of k (and kw) 32-byte words in memory at px and pw.
    function _element(
        uint256 px,
        uint256 pw,
        uint256 k,
        uint256 kw,
        uint256 slices,
        bool hasBias,
        uint32 bias
    ) private pure returns (uint32 c) {
        if (kw != k) revert LengthMismatch(k, kw);
        if (slices < 1 || slices > 4) revert BadSlices(slices);
        if (k > MAX_K) revert TooLong(k);
        c = _unbiased(px, pw, k, slices);
        if (hasBias) c = c.add(bias);
    }

    /// @dev ldexp(fl32(P), e + f + 2 - 14s), or NaN for a non-finite row or column.
    function _unbiased(uint256 px, uint256 pw, uint256 k, uint256 slices) private pure returns (uint32) {
        (uint256 xMax, uint256 wMax) = _maxAbsBits(px, pw, k);
        if (xMax >= POS_INF || wMax >= POS_INF) return NAN;
        int256 e = SoftFloat.exponentOf(uint32(xMax));
        int256 f = SoftFloat.exponentOf(uint32(wMax));
        // Images are x * 2^(shift - e): the row max lands in [2^(7s-1), 2^(7s)).
        int256 shift = int256(SLICE_BITS * slices) - 1;
        int256 p = _dot(px, pw, k, shift - e, shift - f, (1 << (SLICE_BITS * slices)) - 1);
        return SoftFloat.fromInt(p).ldexp(e + f - 2 * shift); // 2 - 14s = -2 * shift
    }

    /// @dev Integer max of bits & 0x7FFFFFFF over each row (0 when empty): exact,
    /// order-free, and >= 0x7F800000 exactly when the row holds inf or NaN.
    function _maxAbsBits(uint256 px, uint256 pw, uint256 k) private pure returns (uint256 xm, uint256 wm) {
        assembly {
            for { let end := add(px, shl(5, k)) } lt(px, end) {
                px := add(px, 0x20)
                pw := add(pw, 0x20)
            } {
                let a := and(mload(px), ABS)
                if gt(a, xm) { xm := a }
                let b := and(mload(pw), ABS)
                if gt(b, wm) { wm := b }
            }
        }
    }

    /// @dev Sum_k image(x_k, kx) * image(w_k, kw), exact: |images| <= lim < 2^28,
    /// K <= 2^20, so |P| < 2^76 (two unsigned accumulators, one per product sign).
    ///
    /// image(v, kScale) = clamp(rne(|v| * 2^kScale), lim). With |v| = sig * 2^(field - 150)
    /// (a subnormal's field read as 1, no hidden bit) and t = sig * 2^32, the image is
    /// rne(t / 2^r) for r = 32 - (field - 150 + kScale) = (182 - kScale) - field, which
    /// is >= 4 because images stay below 2^28. r is capped at 58: t < 2^56, so
    /// t / 2^r < 1/4 there and rounds to 0 either way. Branch-free except the caps.
    function _dot(uint256 px, uint256 pw, uint256 k, int256 kx, int256 kw, uint256 lim)
        private
        pure
        returns (int256 p)
    {
        if (kx <= 125 && kw <= 125) return _dotFast(px, pw, k, uint256(182 - kx), uint256(182 - kw), lim);
        uint256 pos;
        uint256 neg;
        assembly {
            let rx := sub(182, kx)
            let rw := sub(182, kw)
            for { let end := add(px, shl(5, k)) } lt(px, end) {
                px := add(px, 0x20)
                pw := add(pw, 0x20)
            } {
                let a := mload(px)
                let b := mload(pw)
                // Round half to even: + half - 1 + lsb carries exactly when the
                // remainder is above half, or equal to it with an odd lsb.
                let field := and(shr(23, a), 0xff)
                let nz := iszero(iszero(field))
                let t := shl(32, or(and(a, 0x7fffff), shl(23, nz)))
                let r := sub(sub(rx, field), iszero(nz))
                if gt(r, 58) { r := 58 }
                let ia := shr(r, add(add(t, sub(shl(sub(r, 1), 1), 1)), and(shr(r, t), 1)))
                if gt(ia, lim) { ia := lim }
                field := and(shr(23, b), 0xff)
                nz := iszero(iszero(field))
                t := shl(32, or(and(b, 0x7fffff), shl(23, nz)))
                r := sub(sub(rw, field), iszero(nz))
                if gt(r, 58) { r := 58 }
                let ib := shr(r, add(add(t, sub(shl(sub(r, 1), 1), 1)), and(shr(r, t), 1)))
                if gt(ib, lim) { ib := lim }
                switch and(xor(a, b), 0x80000000)
                case 0 { pos := add(pos, mul(ia, ib)) }
                default { neg := add(neg, mul(ia, ib)) }
            }
        }
        unchecked {
            p = int256(pos) - int256(neg);
        }
    }
}
