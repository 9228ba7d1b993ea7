// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {SoftFloat} from "../SoftFloat.sol";
import {MathLib} from "../MathLib.sol";
import {ExactDot} from "../ExactDot.sol";
import {Row} from "./Row.sol";

/// @title AttentionOps: one output element of grouped-query attention
/// @notice kernels/attention_reference.py for one query head and one column: exact-GEMM
/// scores times scale, masked softmax (exact max and fixed-point sum), per-key value
/// exponents g_k, P' = ldexp(p, g_k - G), V' = ldexp(v, -g_k), C = exact GEMM of P' and
/// the V' column with the pinning key appended, out = ldexp(C, G). Cost grows linearly
/// with the number of keys (one 64-term exact dot, one exp per key).
contract AttentionOps {
    using SoftFloat for uint32;

    uint32 private constant NEG_INF = 0xFF800000;
    uint32 private constant NAN = 0x7FC00000;
    uint32 private constant ONE = 0x3F800000;
    int256 private constant NONFINITE_EXP = 128;
    int256 private constant NO_KEY_EXP = -127;

    /// @notice The static part of one element's problem.
    struct Params {
        uint256 keys; // S
        uint256 kvWidth; // num_kv_heads * head_dim
        uint256 headDim;
        uint256 group; // the kv head the query head reads
        uint256 col; // column within the head
        uint32 scale;
        bool causal;
        uint256 slices;
        uint256 maskItemsize;
        int64 qPos;
    }

    /// @notice Element `p.col` of query head `q` (head_dim values) against the keys and
    ///         values `k`, `v` (S x kvWidth) of its batch row, `keyMask` (S) and
    ///         `kPositions` (S int64).
    function attention(
        Params calldata p,
        bytes calldata q,
        bytes calldata k,
        bytes calldata v,
        bytes calldata keyMask,
        bytes calldata kPositions
    ) external pure returns (uint32) {
        Params memory pm = p;
        return _run(pm, Row.f32s(q), Row.f32s(k), Row.f32s(v), _keep(pm, keyMask, kPositions));
    }

    function _run(Params memory p, uint32[] memory qv, uint32[] memory kv, uint32[] memory vv, bool[] memory keep)
        private
        pure
        returns (uint32)
    {
        uint32[] memory e = _scores(p, qv, kv, keep);
        (int256[] memory g, int256 big) = _exponents(p, vv, keep);
        uint32 c = ExactDot.dotElement(_weights(e, g, big, keep), _column(p, vv, g), p.slices, false, 0).ldexp(big);
        return SoftFloat.isNaN(c) ? NAN : c;
    }

    /// @dev P'_j = ldexp(e_j / sum(e), g_j - G) for kept keys (NaN if G marks a
    /// non-finite value), 0 otherwise, and 0 for the pinning key.
    function _weights(uint32[] memory e, int256[] memory g, int256 big, bool[] memory keep)
        private
        pure
        returns (uint32[] memory pp)
    {
        uint32 total = Row.exactSum(e);
        pp = new uint32[](e.length + 1);
        for (uint256 j = 0; j < e.length; j++) {
            if (keep[j]) pp[j] = big == NONFINITE_EXP ? NAN : e[j].div(total).ldexp(g[j] - big);
        }
    }

    /// @dev V'_j = ldexp(v_j[col], -g_j) (0 for a non-finite key), then the pin 1.0.
    function _column(Params memory p, uint32[] memory vv, int256[] memory g) private pure returns (uint32[] memory vc) {
        vc = new uint32[](p.keys + 1);
        uint256 off = p.group * p.headDim + p.col;
        for (uint256 j = 0; j < p.keys; j++) {
            vc[j] = g[j] == NONFINITE_EXP ? uint32(0) : vv[j * p.kvWidth + off].ldexp(-g[j]);
        }
        vc[p.keys] = ONE;
    }

    /// @dev e_j = exp(score_j - m) for kept keys (+0 otherwise), score_j the exact dot of
    /// q and key j times scale, m the max kept score.
    function _scores(Params memory p, uint32[] memory qv, uint32[] memory kv, bool[] memory keep)
        private
        pure
        returns (uint32[] memory score)
    {
        uint256 s = p.keys;
        score = new uint32[](s);
        uint32[] memory krow = new uint32[](p.headDim);
        uint32 m = NEG_INF;
        for (uint256 j = 0; j < s; j++) {
            uint256 base = j * p.kvWidth + p.group * p.headDim;
            for (uint256 d = 0; d < p.headDim; d++) {
                krow[d] = kv[base + d];
            }
            score[j] = ExactDot.dotElement(qv, krow, p.slices, false, 0).mul(p.scale);
            if (keep[j]) m = SoftFloat.max(m, score[j]);
        }
        for (uint256 j = 0; j < s; j++) {
            score[j] = keep[j] ? MathLib.exp(score[j].sub(m)) : uint32(0);
        }
    }

    /// @dev keep_j = key_mask[j] and (not causal or k_pos[j] <= q_pos).
    function _keep(Params memory p, bytes calldata keyMask, bytes calldata kPositions)
        private
        pure
        returns (bool[] memory keep)
    {
        keep = new bool[](p.keys);
        bytes memory mask = keyMask;
        bytes memory kp = kPositions;
        for (uint256 j = 0; j < p.keys; j++) {
            keep[j] = Row.kept(mask, p.maskItemsize, j) && (!p.causal || Row.i64At(kp, j) <= p.qPos);
        }
    }

    /// @dev g_k = exponent_of(max |v_k| of the kv head) and G = max over kept keys.
    function _exponents(Params memory p, uint32[] memory vv, bool[] memory keep)
        private
        pure
        returns (int256[] memory g, int256 big)
    {
        g = new int256[](p.keys);
        big = NO_KEY_EXP;
        for (uint256 j = 0; j < p.keys; j++) {
            g[j] = SoftFloat.exponentOf(Row.maxAbsBits(vv, j * p.kvWidth + p.group * p.headDim, p.headDim));
            if (keep[j] && g[j] > big) big = g[j];
        }
    }
}
