// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

/// @title SoftFloat: IEEE-754 binary32 on uint32 bit patterns
/// @notice Round-to-nearest-even add, sub, mul, div and sqrt with subnormals, signed
/// zeros and infinities, IEEE comparisons, refute's total order, integer and bf16
/// conversions and the power-of-two helpers of kernels/bits_reference.py.
/// @dev The EVM has no floating point: every operation works on the exact integer
/// significand and rounds once in `_round`. Every NaN result is the canonical quiet
/// NaN 0x7FC00000 (the rule of docs/numerics.md), whatever the NaN operands were.
/// Values are passed as uint32 but held in uint256 inside, which avoids masking.
library SoftFloat {
    uint32 internal constant NAN = 0x7FC00000;
    uint32 internal constant POS_INF = 0x7F800000;
    uint32 internal constant NEG_INF = 0xFF800000;
    uint32 internal constant SIGN = 0x80000000;
    uint32 internal constant ABS = 0x7FFFFFFF;
    uint32 internal constant ONE = 0x3F800000;
    /// @dev refute's total-order key of every NaN (kernels/reduce_reference.py NAN_KEY).
    int32 internal constant NAN_KEY = 0x7FFFFFFF;

    /// @notice The value cannot be converted to the requested integer type (NaN, infinite or out of range).
    error NotConvertible(uint32 x);
    /// @notice pow2 was asked for an exponent outside [-126, 127].
    error Pow2OutOfRange(int256 k);

    // ------------------------------------------------------------------
    // Classification and sign operations
    // ------------------------------------------------------------------

    function isNaN(uint32 x) internal pure returns (bool) {
        return x & ABS > POS_INF;
    }

    function neg(uint32 x) internal pure returns (uint32) {
        return x ^ SIGN;
    }

    function abs(uint32 x) internal pure returns (uint32) {
        return x & ABS;
    }

    // ------------------------------------------------------------------
    // Rounding core
    // ------------------------------------------------------------------

    /// @dev Index of the most significant set bit of x > 0 (branch-free binary search).
    function _msb(uint256 x) private pure returns (uint256 r) {
        assembly {
            r := shl(7, lt(0xffffffffffffffffffffffffffffffff, x))
            r := or(r, shl(6, lt(0xffffffffffffffff, shr(r, x))))
            r := or(r, shl(5, lt(0xffffffff, shr(r, x))))
            r := or(r, shl(4, lt(0xffff, shr(r, x))))
            r := or(r, shl(3, lt(0xff, shr(r, x))))
            r := or(r, shl(2, lt(0xf, shr(r, x))))
            r := or(r, shl(1, lt(0x3, shr(r, x))))
            r := or(r, lt(0x1, shr(r, x)))
        }
    }

    /// @dev The binary32 nearest (ties to even) to m * 2^e, with sign bit `sign`
    /// (0 or SIGN). m > 0. Callers that cannot hold the exact value pass a sticky
    /// bit in bit 0 of m, and make sure it lies at least two places below the
    /// rounding position (so it only decides "above or below the tie").
    function _round(uint256 sign, int256 e, uint256 m) private pure returns (uint32) {
        unchecked {
            int256 n = int256(_msb(m));
            // Keep 24 significant bits, but never a quantum below 2^-149 (subnormals).
            int256 sh = n - 23;
            if (-149 - e > sh) sh = -149 - e;
            uint256 q;
            if (sh <= 0) {
                q = m << uint256(-sh);
            } else if (sh > n + 1) {
                // m < 2^(n+1) <= half the quantum: rounds to zero.
                return uint32(sign);
            } else {
                uint256 s = uint256(sh);
                // Round half to even: adding half - 1 + lsb carries exactly when
                // the remainder is above half, or equal to it with an odd lsb.
                q = (m + (1 << (s - 1)) - 1 + ((m >> s) & 1)) >> s;
            }
            // q * 2^(e + sh): exponent field (e + sh + 150) - 1 plus the hidden bit
            // in q, so a subnormal q (< 2^23) gets field 0 and a rounding carry to
            // 2^24 moves into the exponent by itself.
            uint256 bits = (uint256(e + sh + 149) << 23) + q;
            if (bits >= POS_INF) bits = POS_INF;
            return uint32(bits | sign);
        }
    }

    /// @dev |x| = sig * 2^e for finite nonzero abs bits ax.
    function _unpack(uint256 ax) private pure returns (uint256 sig, int256 e) {
        unchecked {
            uint256 field = ax >> 23;
            if (field == 0) return (ax, -149);
            return ((ax & 0x7FFFFF) | 0x800000, int256(field) - 150);
        }
    }

    // ------------------------------------------------------------------
    // Arithmetic
    // ------------------------------------------------------------------

    /// @dev IEEE a + b. Fast path: both operands normal with exponent fields >= 25
    /// (then no result needs the subnormal quantum: see _addNormal); else _addAny.
    function add(uint32 a, uint32 b) internal pure returns (uint32) {
        unchecked {
            uint256 fx = (uint256(a) >> 23) & 0xFF;
            uint256 fy = (uint256(b) >> 23) & 0xFF;
            if (fx - 25 < 230 && fy - 25 < 230) return _addNormal(a, b);
        }
        return _addAny(a, b);
    }

    /// @dev _addAny for finite a, b with exponent fields in [25, 254], without _unpack,
    /// _msb or _round's subnormal branch. With |x| >= |y| (fields fx >= fy), significands
    /// sx, sy (hidden bit set) and d = fx - fy capped at 50 as in _addAny, m = sx * 2^d +- sy
    /// is the exact (or sticky) sum in units of 2^e, e = fx - d - 150. _round would keep
    /// sh = n - 23 (n = msb(m)): its subnormal clamp -149 - e > sh never fires, since
    /// -149 - e = 1 - fy <= -24 uncapped (and 51 - fx <= -25 capped), while sh >= -23.
    /// n is read off d: a same-sign sum lies in [2^(23+d), 2^(25+d)); an opposite-sign
    /// one with d >= 2 in (2^(22+d), 2^(24+d)); only d < 2 cancellations need _msb.
    /// The result's field is then e + sh + 150 = fx - d + n - 23 (>= 1 here), put in by
    /// adding (fx - d + n - 24) << 23 to the 24-bit q whose hidden bit carries the last 1,
    /// exactly as in _round, including the carry of a rounding up to 2^24 and the
    /// overflow to inf.
    function _addNormal(uint32 a, uint32 b) private pure returns (uint32 c) {
        uint256 x = a;
        uint256 y = b;
        assembly {
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
            let n
            switch and(xor(x, y), 0x80000000)
            case 0 {
                m := add(shl(d, sx), sy)
                n := add(add(d, 23), iszero(iszero(shr(add(d, 24), m))))
            }
            default {
                m := sub(shl(d, sx), sy)
                switch lt(d, 2)
                case 0 { n := add(add(d, 22), iszero(iszero(shr(add(d, 23), m)))) }
                default {
                    // d = 0 or 1: m < 2^25 (0 for x + (-x), which gives +0).
                    n := 0
                    if m {
                        n := shl(4, lt(0xffff, m))
                        n := or(n, shl(3, lt(0xff, shr(n, m))))
                        n := or(n, shl(2, lt(0xf, shr(n, m))))
                        n := or(n, shl(1, lt(0x3, shr(n, m))))
                        n := or(n, lt(0x1, shr(n, m)))
                    }
                }
            }
            switch m
            case 0 { c := 0 }
            default {
                let q
                switch gt(n, 23)
                case 0 { q := shl(sub(23, n), m) }
                default {
                    let sh := sub(n, 23)
                    q := shr(sh, add(add(m, sub(shl(sub(sh, 1), 1), 1)), and(shr(sh, m), 1)))
                }
                let bits := add(shl(23, sub(add(sub(fx, d), n), 24)), q)
                if iszero(lt(bits, 0x7F800000)) { bits := 0x7F800000 }
                c := or(bits, and(x, 0x80000000))
            }
        }
    }

    /// @dev IEEE a + b for any operands (the general program; add's fallback).
    function _addAny(uint32 a, uint32 b) private pure returns (uint32) {
        unchecked {
            uint256 x = a;
            uint256 y = b;
            uint256 ax = x & ABS;
            uint256 ay = y & ABS;
            if (ax >= POS_INF || ay >= POS_INF) {
                if (ax > POS_INF || ay > POS_INF) return NAN;
                if (ax == POS_INF) return (ay == POS_INF && x != y) ? NAN : a; // inf - inf
                return b;
            }
            if (ay == 0) return ax == 0 ? uint32(x & y) : a; // -0 + -0 = -0, else +0
            if (ax == 0) return b;
            if (ay > ax) (x, y, ax, ay) = (y, x, ay, ax); // |x| >= |y|: the result has x's sign
            (uint256 sx, int256 ex) = _unpack(ax);
            (uint256 sy, int256 ey) = _unpack(ay);
            uint256 d = uint256(ex - ey);
            // Beyond 50 places y lies below 2^(ex-27) while the result's quantum is at
            // least 2^(ex-1): only its presence matters, so a sticky 1 replaces it.
            if (d > 50) {
                d = 50;
                sy = 1;
            }
            uint256 m = ((x ^ y) & SIGN == 0) ? (sx << d) + sy : (sx << d) - sy;
            if (m == 0) return 0; // x + (-x) = +0
            return _round(x & SIGN, ex - int256(d), m);
        }
    }

    function sub(uint32 a, uint32 b) internal pure returns (uint32) {
        return add(a, b ^ SIGN);
    }

    /// @dev IEEE a * b. Fast path: both operands normal with fields fx + fy >= 128;
    /// then the product of the significands m is in [2^46, 2^48), n = msb(m) = 46 +
    /// (m >> 47), and _round's subnormal clamp -149 - e > n - 23 (e = fx + fy - 300)
    /// never fires (it needs fx + fy < 174 - n <= 128): _round's rounding at sh = n - 23
    /// and its field e + sh + 150, inlined (a carry to 2^24 and overflow to inf included).
    function mul(uint32 a, uint32 b) internal pure returns (uint32 c) {
        uint256 x = a;
        uint256 y = b;
        unchecked {
            uint256 fx = (x >> 23) & 0xFF;
            uint256 fy = (y >> 23) & 0xFF;
            if (fx - 1 < 254 && fy - 1 < 254 && fx + fy >= 128) {
                assembly {
                    let m := mul(or(and(x, 0x7FFFFF), 0x800000), or(and(y, 0x7FFFFF), 0x800000))
                    let sh := add(23, shr(47, m))
                    let q := shr(sh, add(add(m, sub(shl(sub(sh, 1), 1), 1)), and(shr(sh, m), 1)))
                    let bits := add(shl(23, sub(add(add(fx, fy), sh), 151)), q)
                    if iszero(lt(bits, 0x7F800000)) { bits := 0x7F800000 }
                    c := or(bits, and(xor(x, y), 0x80000000))
                }
                return c;
            }
        }
        return _mulAny(a, b);
    }

    /// @dev IEEE a * b for any operands (the general program; mul's fallback).
    function _mulAny(uint32 a, uint32 b) private pure returns (uint32) {
        unchecked {
            uint256 ax = a & ABS;
            uint256 ay = b & ABS;
            if (ax > POS_INF || ay > POS_INF) return NAN;
            uint256 sign = (uint256(a) ^ b) & SIGN;
            if (ax == POS_INF || ay == POS_INF) {
                return (ax == 0 || ay == 0) ? NAN : uint32(POS_INF | sign); // inf * 0
            }
            if (ax == 0 || ay == 0) return uint32(sign);
            (uint256 sx, int256 ex) = _unpack(ax);
            (uint256 sy, int256 ey) = _unpack(ay);
            return _round(sign, ex + ey, sx * sy);
        }
    }

    function div(uint32 a, uint32 b) internal pure returns (uint32) {
        unchecked {
            uint256 ax = a & ABS;
            uint256 ay = b & ABS;
            if (ax > POS_INF || ay > POS_INF) return NAN;
            uint256 sign = (uint256(a) ^ b) & SIGN;
            if (ax == POS_INF) return ay == POS_INF ? NAN : uint32(POS_INF | sign);
            if (ay == POS_INF) return uint32(sign);
            if (ay == 0) return ax == 0 ? NAN : uint32(POS_INF | sign);
            if (ax == 0) return uint32(sign);
            (uint256 sx, int256 ex) = _unpack(ax);
            (uint256 sy, int256 ey) = _unpack(ay);
            // sx * 2^50 / sy >= 2^26 even for a subnormal numerator: the quotient
            // has >= 27 bits, so the sticky bit below it is >= 4 places under the
            // rounding position.
            uint256 num = sx << 50;
            uint256 q = num / sy;
            uint256 sticky = num % sy == 0 ? 0 : 1;
            return _round(sign, ex - ey - 51, (q << 1) | sticky);
        }
    }

    function sqrt(uint32 a) internal pure returns (uint32) {
        unchecked {
            uint256 ax = a & ABS;
            if (ax > POS_INF) return NAN;
            if (ax == 0) return a; // sqrt(-0) = -0
            if (a & SIGN != 0) return NAN;
            if (ax == POS_INF) return a;
            (uint256 s, int256 e) = _unpack(ax);
            if (e & 1 != 0) {
                s <<= 1;
                e -= 1;
            }
            // sqrt(s * 2^60) >= 2^30, so the root has >= 31 bits and the sticky
            // bit is far below the rounding position.
            uint256 v = s << 60;
            uint256 r = _isqrt(v);
            uint256 sticky = r * r == v ? 0 : 1;
            return _round(0, e / 2 - 31, (r << 1) | sticky);
        }
    }

    /// @dev floor(sqrt(v)) for v > 0: Newton's iteration from above decreases
    /// monotonically to the floor and stops there.
    function _isqrt(uint256 v) private pure returns (uint256 x) {
        unchecked {
            x = 1 << ((_msb(v) >> 1) + 1);
            while (true) {
                uint256 y = (x + v / x) >> 1;
                if (y >= x) return x;
                x = y;
            }
        }
    }

    // ------------------------------------------------------------------
    // Comparisons and the total order
    // ------------------------------------------------------------------

    /// @dev The value's order as a signed integer: -|bits| for negatives, so +0 and -0 tie.
    function _ord(uint32 x) private pure returns (int256) {
        int256 m = int256(uint256(x & ABS));
        return x & SIGN == 0 ? m : -m;
    }

    /// @dev IEEE equality: NaN equals nothing, +0 == -0.
    function eq(uint32 a, uint32 b) internal pure returns (bool) {
        if (isNaN(a) || isNaN(b)) return false;
        return _ord(a) == _ord(b);
    }

    /// @dev IEEE less-than (false when either is NaN).
    function lt(uint32 a, uint32 b) internal pure returns (bool) {
        if (isNaN(a) || isNaN(b)) return false;
        return _ord(a) < _ord(b);
    }

    /// @dev IEEE less-or-equal (false when either is NaN).
    function le(uint32 a, uint32 b) internal pure returns (bool) {
        if (isNaN(a) || isNaN(b)) return false;
        return _ord(a) <= _ord(b);
    }

    function gt(uint32 a, uint32 b) internal pure returns (bool) {
        return lt(b, a);
    }

    function ge(uint32 a, uint32 b) internal pure returns (bool) {
        return le(b, a);
    }

    /// @dev The int32 key of kernels/reduce_reference.total_order_key: IEEE order
    /// with -0 < +0, negatives as bits ^ 0x7FFFFFFF, every NaN NAN_KEY.
    function totalOrderKey(uint32 x) internal pure returns (int32) {
        if (isNaN(x)) return NAN_KEY;
        return int32(x & SIGN == 0 ? x : x ^ ABS);
    }

    /// @dev row_max of the two values: the larger total-order key; any NaN gives NaN.
    function max(uint32 a, uint32 b) internal pure returns (uint32) {
        if (isNaN(a) || isNaN(b)) return NAN;
        return totalOrderKey(a) >= totalOrderKey(b) ? a : b;
    }

    /// @dev The mirror of max: the smaller total-order key (-0 < +0); any NaN gives NaN.
    function min(uint32 a, uint32 b) internal pure returns (uint32) {
        if (isNaN(a) || isNaN(b)) return NAN;
        return totalOrderKey(a) <= totalOrderKey(b) ? a : b;
    }

    // ------------------------------------------------------------------
    // Integer conversions
    // ------------------------------------------------------------------

    /// @dev Any integer to binary32 with one round-to-nearest-even (IEEE convertFromInt).
    function fromInt(int256 v) internal pure returns (uint32) {
        unchecked {
            if (v == 0) return 0;
            if (v > 0) return _round(0, 0, uint256(v));
            return _round(SIGN, 0, uint256(-v));
        }
    }

    /// @dev The integer nearest to x, ties to even, as int256; reverts on NaN and
    /// infinities. Magnitudes are below 2^128.
    function _roundToInt(uint32 x) private pure returns (int256) {
        unchecked {
            uint256 ax = x & ABS;
            if (ax >= POS_INF) revert NotConvertible(x);
            if (ax == 0) return 0;
            (uint256 s, int256 e) = _unpack(ax);
            uint256 m;
            if (e >= 0) {
                m = s << uint256(e);
            } else if (e >= -25) {
                uint256 k = uint256(-e);
                m = (s + (1 << (k - 1)) - 1 + ((s >> k) & 1)) >> k;
            } // else |x| < 2^24 * 2^-26 < 1/2: m = 0
            return x & SIGN == 0 ? int256(m) : -int256(m);
        }
    }

    /// @dev x rounded to the nearest integer, ties to even; reverts unless it fits int64.
    function toInt64(uint32 x) internal pure returns (int64) {
        int256 v = _roundToInt(x);
        if (v < type(int64).min || v > type(int64).max) revert NotConvertible(x);
        return int64(v);
    }

    /// @dev x rounded to the nearest integer, ties to even; reverts unless it fits int32.
    function toInt32(uint32 x) internal pure returns (int32) {
        int256 v = _roundToInt(x);
        if (v < type(int32).min || v > type(int32).max) revert NotConvertible(x);
        return int32(v);
    }

    // ------------------------------------------------------------------
    // bf16 (kernels/bits_reference.fp32_to_bf16_bits / bf16_bits_to_fp32)
    // ------------------------------------------------------------------

    /// @dev Round to nearest even on the bits (overflow carries into inf); a NaN
    /// keeps its sign and top payload bits and gets the quiet bit 0x40.
    function toBF16(uint32 x) internal pure returns (uint16) {
        unchecked {
            uint256 b = x;
            if (isNaN(x)) return uint16((b >> 16) | 0x40);
            return uint16((b + 0x7FFF + ((b >> 16) & 1)) >> 16);
        }
    }

    function fromBF16(uint16 h) internal pure returns (uint32) {
        return uint32(h) << 16;
    }

    // ------------------------------------------------------------------
    // Powers of two (kernels/bits_reference.exponent_of, pow2, ldexp)
    // ------------------------------------------------------------------

    /// @dev The unbiased exponent field of |x|: -127 for zeros and subnormals.
    function exponentOf(uint32 x) internal pure returns (int256) {
        unchecked {
            return int256(uint256((x >> 23) & 0xFF)) - 127;
        }
    }

    /// @dev 2^k from its bits, k in [-126, 127].
    function pow2(int256 k) internal pure returns (uint32) {
        if (k < -126 || k > 127) revert Pow2OutOfRange(k);
        unchecked {
            return uint32(uint256(k + 127) << 23);
        }
    }

    function _clamp(int256 k) private pure returns (int256) {
        return k < -126 ? int256(-126) : (k > 127 ? int256(127) : k);
    }

    /// @dev ((x * 2^k1) * 2^k2) * 2^k3 with k1 = clamp(k), k2 = clamp(k - k1),
    /// k3 = clamp(k - k1 - k2) (clamp to [-126, 127]): the program of bits_reference.ldexp.
    function ldexp(uint32 x, int256 k) internal pure returns (uint32) {
        int256 k1 = _clamp(k);
        int256 k2 = _clamp(k - k1);
        int256 k3 = _clamp(k - k1 - k2);
        // Multiplying by 2^0 = 1 is the identity once x is not NaN (the first
        // product has made any NaN canonical), so those products are skipped.
        uint32 y = mul(x, pow2(k1));
        if (k2 != 0) y = mul(y, pow2(k2));
        if (k3 != 0) y = mul(y, pow2(k3));
        return y;
    }
}
