// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {SoftFloat} from "../SoftFloat.sol";
import {MathLib} from "../MathLib.sol";
import {Row} from "./Row.sol";

/// @title RowOps: one output element of the row operators
/// @notice rms_norm, layer_norm, l2_normalize (kernels/norm_reference.py), log_softmax
/// (kernels/softmax_reference.py, every entry kept), mean_pool and rotary
/// (kernels/rotary_reference.py) on binary32 bits: exact fixed-point row sums
/// (`Row.exactSum`), refute's rsqrt/exp/log/sin/cos, single IEEE operations elsewhere,
/// in the references' order. Slices arrive as canonical little-endian bytes.
contract RowOps {
    using SoftFloat for uint32;

    // norm_reference.POOL_MIN_COUNT = float32(1e-9).
    uint32 private constant POOL_MIN_COUNT = 0x3089705F;

    /// @notice rms_norm element `col` of row `x`: (x_c * rsqrt(sum(x*x)/n + eps)) * w_c.
    function rmsNorm(bytes calldata x, bytes calldata weight, uint256 col, uint32 eps) external pure returns (uint32) {
        uint32[] memory sq = Row.squaresLE(x);
        uint32 ms = Row.exactSum(sq).div(SoftFloat.fromInt(int256(sq.length)));
        uint32 r = MathLib.rsqrt(ms.add(eps));
        return Row.f32AtLE(x, col).mul(r).mul(Row.f32At(weight, col));
    }

    /// @notice layer_norm element `col`: d = x - mean; ((d_c * rsqrt(sum(d*d)/n + eps)) * w_c) + b_c.
    function layerNorm(bytes calldata x, bytes calldata weight, bytes calldata bias, uint256 col, uint32 eps)
        external
        pure
        returns (uint32)
    {
        return _normalized(x, col, eps).mul(Row.f32At(weight, col)).add(Row.f32At(bias, col));
    }

    /// @dev layer_norm's d_c * rsqrt(var + eps) (a helper: the stack holds three calldata slices).
    function _normalized(bytes calldata x, uint256 col, uint32 eps) private pure returns (uint32) {
        uint32[] memory v = Row.f32sCalldata(x);
        uint32 nf = SoftFloat.fromInt(int256(v.length));
        uint32 mu = Row.exactSum(v).div(nf);
        uint32 var_ = Row.exactSum(Row.diffSquares(v, mu)).div(nf);
        return v[col].sub(mu).mul(MathLib.rsqrt(var_.add(eps)));
    }

    /// @notice l2_normalize element `col`: x_c / max(sqrt(sum(x*x)), eps) (NaN norm stays NaN).
    function l2Normalize(bytes calldata x, uint256 col, uint32 eps) external pure returns (uint32) {
        uint32[] memory sq = Row.squaresLE(x);
        uint32 nrm = Row.exactSum(sq).sqrt();
        uint32 den = nrm.lt(eps) ? eps : nrm;
        return Row.f32AtLE(x, col).div(den);
    }

    /// @notice log_softmax element `col`: (x_c - m) - log(sum(exp(x - m))), m the row max.
    function logSoftmax(bytes calldata x, uint256 col) external pure returns (uint32) {
        uint32[] memory v = Row.f32sCalldata(x);
        uint32 m = Row.rowMax(v);
        uint32 xc = v[col];
        for (uint256 i = 0; i < v.length; i++) {
            v[i] = MathLib.exp(v[i].sub(m));
        }
        return xc.sub(m).sub(MathLib.log(Row.exactSum(v)));
    }

    /// @notice mean_pool element `col` of batch row x (T x D) with its `mask` (T items of
    ///         `maskItemsize` bytes, nonzero = kept): exact sum over kept tokens / max(count, 1e-9).
    function meanPool(bytes calldata x, bytes calldata mask, uint256 maskItemsize, uint256 dim, uint256 col)
        external
        pure
        returns (uint32)
    {
        uint256 t = mask.length / maskItemsize;
        uint32[] memory vals = new uint32[](t);
        bytes memory m = mask;
        bytes memory xm = x;
        int256 cnt;
        for (uint256 i = 0; i < t; i++) {
            // A masked token contributes +0 (its NaN or inf included).
            if (Row.kept(m, maskItemsize, i)) {
                vals[i] = Row.f32At(xm, i * dim + col);
                cnt++;
            }
        }
        uint32 c = SoftFloat.fromInt(cnt);
        uint32 den = c.lt(POOL_MIN_COUNT) ? POOL_MIN_COUNT : c;
        return Row.exactSum(vals).div(den);
    }

    /// @notice rotary element `col` of one head `x` (head_dim values) at position `pos`:
    ///         inv = exp(-((2i / d) * log(theta))), a = float32(pos) * inv, then the
    ///         rotate_half pair (x_i cos a - x_{i+h} sin a, x_{i+h} cos a + x_i sin a).
    function rotary(bytes calldata x, int64 pos, uint256 headDim, uint256 col, uint32 theta)
        external
        pure
        returns (uint32)
    {
        uint256 half = headDim / 2;
        uint256 i = col % half;
        uint32 ratio = SoftFloat.fromInt(int256(2 * i)).div(SoftFloat.fromInt(int256(headDim)));
        uint32 inv = MathLib.exp(ratio.mul(MathLib.log(theta)).neg());
        uint32 a = SoftFloat.fromInt(pos).mul(inv);
        uint32 c = MathLib.cos(a);
        uint32 s = MathLib.sin(a);
        bytes memory xm = x;
        uint32 x1 = Row.f32At(xm, i);
        uint32 x2 = Row.f32At(xm, i + half);
        if (col < half) return x1.mul(c).sub(x2.mul(s));
        return x2.mul(c).add(x1.mul(s));
    }
}
