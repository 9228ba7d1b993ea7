// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {SoftFloat} from "../SoftFloat.sol";
import {MathLib} from "../MathLib.sol";
import {ExactDot} from "../ExactDot.sol";
import {Row} from "./Row.sol";

/// @title ElementOps: one output element of linear, add, mul, silu and gelu_erf
/// @notice The programs of kernels/gemm_reference.py (through ExactDot) and
/// kernels/elementwise_reference.py on binary32 bits. A separate contract so that the
/// Referee stays under the 24 KiB code limit; slices arrive as canonical
/// little-endian bytes (an ABI `bytes` is copied, a `uint32[]` checked per element).
contract ElementOps {
    using SoftFloat for uint32;

    uint32 private constant HALF = 0x3F000000;
    uint32 private constant ONE = 0x3F800000;
    // elementwise_reference.GELU_C = float32(1/sqrt(2)).
    uint32 private constant GELU_C = 0x3F3504F3;

    /// @notice `linear` element: row `x` . row `weight` with `slices`, plus `bias`
    ///         (4 bytes) when given (empty otherwise).
    function linear(bytes calldata x, bytes calldata weight, bytes calldata bias, uint256 slices)
        external
        pure
        returns (uint32)
    {
        bool hasBias = bias.length == 4;
        return ExactDot.dotElementLE(x, weight, slices, hasBias, hasBias ? Row.f32At(bias, 0) : uint32(0));
    }

    /// @notice `add` (op 0) or `mul` (op 1) of two binary32 values.
    function binary(uint256 op, uint32 a, uint32 b) external pure returns (uint32) {
        return op == 0 ? a.add(b) : a.mul(b);
    }

    /// @notice `silu` (op 0): x * sigmoid(x); `gelu_erf` (op 1): (x * 0.5) * (1 + erf(x * C)).
    function unary(uint256 op, uint32 x) external pure returns (uint32) {
        if (op == 0) return x.mul(MathLib.sigmoid(x));
        return x.mul(HALF).mul(ONE.add(MathLib.erf(x.mul(GELU_C))));
    }
}
