// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {SoftFloat} from "./SoftFloat.sol";

/// @title MathLib: refute's fp32 transcendentals, bit for bit
/// @notice exp, log, tanh, sigmoid, erf, sin, cos and rsqrt as the same straight-line
/// binary32 programs as kernels/mathlib_reference.py (docs/numerics.md, "The fp32 math
/// library"): same constants (float32 bit patterns), same operation order, same
/// integer Payne-Hanek reduction for sin/cos.
/// @dev Where the reference evaluates both branches and selects, this code evaluates
/// only the selected one: the programs are pure, so the bits are the same. Operands of
/// a single + or * may appear swapped (IEEE + and * are commutative bit for bit on
/// non-NaN operands, and NaN results are canonical).
library MathLib {
    using SoftFloat for uint32;

    uint32 private constant NAN = 0x7FC00000;
    uint32 private constant POS_INF = 0x7F800000;
    uint32 private constant NEG_INF = 0xFF800000;
    uint32 private constant ABS = 0x7FFFFFFF;
    uint32 private constant SIGN = 0x80000000;
    uint32 private constant ZERO = 0;
    uint32 private constant HALF = 0x3F000000;
    uint32 private constant ONE = 0x3F800000;
    uint32 private constant TWO = 0x40000000;
    uint32 private constant MINUS_TWO = 0xC0000000;
    uint32 private constant MIN_NORMAL_BITS = 0x00800000;
    uint32 private constant TWO_POW_23 = 0x4B000000;

    // exp
    uint32 private constant EXP_HI = 0x42B20000; // 89
    uint32 private constant EXP_LO = 0xC2D00000; // -104
    uint32 private constant LOG2E = 0x3FB8AA3B;
    uint32 private constant ROUND_MAGIC = 0x4B400000; // 1.5 * 2^23
    uint32 private constant LN2_HI = 0x3F317200;
    uint32 private constant LN2_LO = 0x35BFBE8E;
    uint32 private constant EXP_P0 = 0x3EFFFFFE;
    uint32 private constant EXP_P1 = 0x3E2AAA48;
    uint32 private constant EXP_P2 = 0x3D2AAC7A;
    uint32 private constant EXP_P3 = 0x3C091D15;
    uint32 private constant EXP_P4 = 0x3AB511DE;

    // log
    uint32 private constant LOG_SQRT_HALF_BITS = 0x3F3504F3;
    uint32 private constant LOG_L0 = 0x3F2AAABD;
    uint32 private constant LOG_L1 = 0x3ECCAF5C;
    uint32 private constant LOG_L2 = 0x3E98F19E;

    // tanh
    uint32 private constant TANH_SPLIT = 0x3F200000; // 0.625
    uint32 private constant TANH_T0 = 0xBEAAAA99;
    uint32 private constant TANH_T1 = 0x3E088393;
    uint32 private constant TANH_T2 = 0xBD5C1E0D;
    uint32 private constant TANH_T3 = 0x3CA91272;
    uint32 private constant TANH_T4 = 0xBBBAECEA;

    // erf
    uint32 private constant ERF_SPLIT = 0x3F800000; // 1
    uint32 private constant ERF_CLAMP = 0x40800000; // 4
    uint32 private constant ERF_CENTER = 0x40200000; // 2.5
    uint32 private constant ERF_E0 = 0x3E0375D4;
    uint32 private constant ERF_E1 = 0xBEC0939F;
    uint32 private constant ERF_E2 = 0x3DE7167B;
    uint32 private constant ERF_E3 = 0xBCDBFC84;
    uint32 private constant ERF_E4 = 0x3BAA02C4;
    uint32 private constant ERF_E5 = 0xBA51FAE1;
    uint32 private constant ERF_E6 = 0x38A4B350;
    uint32 private constant ERF_H0 = 0x3E57DDAD;
    uint32 private constant ERF_H1 = 0xBD982A6C;
    uint32 private constant ERF_H2 = 0x3CCE17F9;
    uint32 private constant ERF_H3 = 0xBBFFBC1C;
    uint32 private constant ERF_H4 = 0x3B00D054;
    uint32 private constant ERF_H5 = 0xBB00A6B8;
    uint32 private constant ERF_H6 = 0xBA51E9F3;
    uint32 private constant ERF_H7 = 0xB9CBEE69;

    // sin / cos: floor(2/pi * 2^195) in five 39-bit limbs, least significant first.
    uint256 private constant TRIG_LIMB_0 = 0x49E21C820F;
    uint256 private constant TRIG_LIMB_1 = 0x5C0DB62959;
    uint256 private constant TRIG_LIMB_2 = 0x6AFA3EA69B;
    uint256 private constant TRIG_LIMB_3 = 0x11054A7F09;
    uint256 private constant TRIG_LIMB_4 = 0x517CC1B727;
    uint256 private constant TRIG_G_MASK = (1 << 62) - 1;
    uint256 private constant TRIG_HALF_QUADRANT = 1 << 59;
    uint32 private constant TRIG_HEAD_MASK = 0xFFFFFF00;
    uint32 private constant TWO_POW_M60 = 0x21800000;
    uint32 private constant PIO4 = 0x3F490FDB;
    uint32 private constant PIO2 = 0x3FC90FDB;
    uint32 private constant PIO2_C1 = 0x3FC90000;
    uint32 private constant PIO2_C2 = 0x39FDAA22;
    uint32 private constant SIN_S0 = 0xBE2AAAA3;
    uint32 private constant SIN_S1 = 0x3C0883B0;
    uint32 private constant SIN_S2 = 0xB94CA72D;
    uint32 private constant COS_C0 = 0x3D2AAAA5;
    uint32 private constant COS_C1 = 0xBAB60619;
    uint32 private constant COS_C2 = 0x37CCF5A4;

    /// @dev e^x. exp(-inf) = +0, exp(+inf) = +inf, NaN -> NaN.
    function exp(uint32 x) internal pure returns (uint32) {
        if (x.isNaN()) return NAN;
        uint32 xc = x.gt(EXP_HI) ? EXP_HI : x;
        if (xc.lt(EXP_LO)) xc = EXP_LO;
        uint32 nf = xc.mul(LOG2E).add(ROUND_MAGIC).sub(ROUND_MAGIC);
        int256 n = nf.toInt32(); // nf is an integer in [-150, 129]: exact
        uint32 r = xc.sub(nf.mul(LN2_HI)).sub(nf.mul(LN2_LO));
        uint32 p = EXP_P3.add(r.mul(EXP_P4));
        p = EXP_P2.add(r.mul(p));
        p = EXP_P1.add(r.mul(p));
        p = EXP_P0.add(r.mul(p));
        uint32 y = ONE.add(r.add(r.mul(r).mul(p)));
        // 2^n in two factors keeps the first product normal (exact) and rounds once.
        int256 n1 = n >> 1;
        return y.mul(SoftFloat.pow2(n1)).mul(SoftFloat.pow2(n - n1));
    }

    /// @dev Natural log. log(+-0) = -inf, log(x < 0) = NaN, log(+inf) = +inf.
    function log(uint32 x) internal pure returns (uint32) {
        if (x.isNaN() || x.lt(ZERO)) return NAN;
        if (x & ABS == 0) return NEG_INF;
        if (x == POS_INF) return POS_INF;
        bool sub = x.lt(MIN_NORMAL_BITS);
        uint32 xs = sub ? x.mul(TWO_POW_23) : x; // subnormals: exact rescale
        // Adding 1 - sqrt(1/2) in bits carries into the exponent exactly when the
        // mantissa is >= sqrt(1/2), so m lands in [sqrt(1/2), sqrt(2)).
        uint256 ix = uint256(xs) + (ONE - LOG_SQRT_HALF_BITS);
        int256 k = int256(ix >> 23) - 127 - (sub ? int256(23) : int256(0));
        uint32 m = uint32((ix & 0x7FFFFF) + LOG_SQRT_HALF_BITS);
        uint32 f = m.sub(ONE);
        uint32 s = f.div(TWO.add(f));
        uint32 z = s.mul(s);
        uint32 rz = z.mul(LOG_L0.add(z.mul(LOG_L1.add(z.mul(LOG_L2)))));
        uint32 hfsq = HALF.mul(f).mul(f);
        uint32 dk = SoftFloat.fromInt(k);
        return s.mul(hfsq.add(rz)).add(dk.mul(LN2_LO)).sub(hfsq).add(f).add(dk.mul(LN2_HI));
    }

    /// @dev Hyperbolic tangent; tanh(-0) = -0, tanh(+-inf) = +-1.
    function tanh(uint32 x) internal pure returns (uint32) {
        if (x.isNaN()) return NAN;
        uint32 a = x & ABS;
        uint32 y;
        if (a.lt(TANH_SPLIT)) {
            uint32 z = a.mul(a);
            uint32 p = TANH_T3.add(z.mul(TANH_T4));
            p = TANH_T2.add(z.mul(p));
            p = TANH_T1.add(z.mul(p));
            p = TANH_T0.add(z.mul(p));
            y = a.add(a.mul(z.mul(p)));
        } else {
            uint32 u = exp(MINUS_TWO.mul(a));
            y = ONE.sub(TWO.mul(u).div(ONE.add(u)));
        }
        return x & SIGN != 0 ? y ^ SIGN : y;
    }

    /// @dev 1/(1 + e^-x) as 1/(1 + e) for x >= 0 and e/(1 + e) below, e = exp(-|x|).
    function sigmoid(uint32 x) internal pure returns (uint32) {
        if (x.isNaN()) return NAN;
        uint32 e = exp((x & ABS) ^ SIGN);
        return (x.ge(ZERO) ? ONE : e).div(ONE.add(e));
    }

    /// @dev Error function; erf(-0) = -0, erf(+-inf) = +-1.
    function erf(uint32 x) internal pure returns (uint32) {
        if (x.isNaN()) return NAN;
        uint32 a = x & ABS;
        uint32 y;
        if (a.lt(ERF_SPLIT)) {
            uint32 z = a.mul(a);
            uint32 p = ERF_E5.add(z.mul(ERF_E6));
            p = ERF_E4.add(z.mul(p));
            p = ERF_E3.add(z.mul(p));
            p = ERF_E2.add(z.mul(p));
            p = ERF_E1.add(z.mul(p));
            p = ERF_E0.add(z.mul(p));
            y = a.add(a.mul(p));
        } else {
            uint32 ac = a.gt(ERF_CLAMP) ? ERF_CLAMP : a;
            uint32 w = ac.sub(ERF_CENTER);
            uint32 h = ERF_H6.add(w.mul(ERF_H7));
            h = ERF_H5.add(w.mul(h));
            h = ERF_H4.add(w.mul(h));
            h = ERF_H3.add(w.mul(h));
            h = ERF_H2.add(w.mul(h));
            h = ERF_H1.add(w.mul(h));
            h = ERF_H0.add(w.mul(h));
            y = ONE.sub(exp(ac.mul(ac) ^ SIGN).mul(h));
        }
        return x & SIGN != 0 ? y ^ SIGN : y;
    }

    /// @dev Sine; NaN for NaN and +-inf, sin(-0) = -0.
    function sin(uint32 x) internal pure returns (uint32) {
        if (x & ABS >= POS_INF) return NAN;
        (uint256 q, uint32 r, uint32 t) = _reducePio2(x & ABS);
        uint32 y = q & 1 != 0 ? _cosKernel(r, t) : _sinKernel(r, t);
        if (q & 2 != 0) y ^= SIGN;
        return x & SIGN != 0 ? y ^ SIGN : y;
    }

    /// @dev Cosine; NaN for NaN and +-inf, cos(+-0) = 1.
    function cos(uint32 x) internal pure returns (uint32) {
        if (x & ABS >= POS_INF) return NAN;
        (uint256 q, uint32 r, uint32 t) = _reducePio2(x & ABS);
        uint32 y = q & 1 != 0 ? _sinKernel(r, t) : _cosKernel(r, t);
        return (q + 1) & 2 != 0 ? y ^ SIGN : y;
    }

    /// @dev 1/sqrt(x) as div(1, sqrt(x)); rsqrt(-0) = -inf, NaN for x < 0.
    function rsqrt(uint32 x) internal pure returns (uint32) {
        if (x.isNaN() || x.lt(ZERO)) return NAN;
        return ONE.div(x.sqrt());
    }

    /// @dev a = |x| finite as q*pi/2 + r + t, |r| <= pi/4 (mathlib_reference._reduce_pio2).
    function _reducePio2(uint32 a) private pure returns (uint256 q, uint32 r, uint32 t) {
        if (a <= PIO4) return (0, a, 0); // non-negative floats order like their bits
        unchecked {
            // a = m * 2^(e-23) with e in [-1, 127] (a > pi/4 and finite, so the
            // reference's clamp of e never acts).
            int256 e = int256(uint256(a >> 23)) - 127;
            uint256 m = (uint256(a) & 0x7FFFFF) | 0x800000;
            // G = floor(a * 2/pi * 2^60) mod 2^62, limb by limb. In uint256 a left
            // shift cannot overflow (m * limb < 2^63, shift <= 125), and masking
            // after it keeps exactly the bits the reference's pre-masked shift keeps.
            uint256 g = _limb(0, m * TRIG_LIMB_0, e - 158);
            g = _limb(g, m * TRIG_LIMB_1, e - 119);
            g = _limb(g, m * TRIG_LIMB_2, e - 80);
            g = _limb(g, m * TRIG_LIMB_3, e - 41);
            g = _limb(g, m * TRIG_LIMB_4, e - 2);
            uint256 n = (g + TRIG_HALF_QUADRANT) >> 60;
            int256 frac = int256(g) - int256(n << 60); // |frac| <= 2^59
            q = n & 3;
            uint32 head = SoftFloat.fromInt(frac) & TRIG_HEAD_MASK; // a 16-bit head, an integer
            uint32 rest = SoftFloat.fromInt(frac - head.toInt64());
            head = head.mul(TWO_POW_M60);
            rest = rest.mul(TWO_POW_M60);
            uint32 hi = head.mul(PIO2_C1); // exact: 16 x 8 bits
            uint32 lo = head.mul(PIO2_C2).add(rest.mul(PIO2));
            r = hi.add(lo);
            t = lo.sub(r.sub(hi)); // Fast2Sum: r + t = hi + lo exactly
        }
    }

    /// @dev (g + p * 2^d) mod 2^62; a right shift (d < 0) truncates.
    function _limb(uint256 g, uint256 p, int256 d) private pure returns (uint256) {
        unchecked {
            uint256 term = d >= 0 ? p << uint256(d) : p >> uint256(-d);
            return (g + term) & TRIG_G_MASK;
        }
    }

    function _sinKernel(uint32 r, uint32 t) private pure returns (uint32) {
        uint32 z = r.mul(r);
        uint32 s = SIN_S0.add(z.mul(SIN_S1.add(z.mul(SIN_S2))));
        return r.add(z.mul(r).mul(s).add(t.sub(HALF.mul(z).mul(t))));
    }

    function _cosKernel(uint32 r, uint32 t) private pure returns (uint32) {
        uint32 z = r.mul(r);
        uint32 hz = HALF.mul(z);
        uint32 w = ONE.sub(hz);
        uint32 c = COS_C0.add(z.mul(COS_C1.add(z.mul(COS_C2))));
        return w.add(ONE.sub(w).sub(hz).add(z.mul(z).mul(c).sub(r.mul(t))));
    }
}
