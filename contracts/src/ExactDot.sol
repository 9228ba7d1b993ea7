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
