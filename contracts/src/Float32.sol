// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {SoftFloat} from "./SoftFloat.sol";
import {MathLib} from "./MathLib.sol";
import {ExactDot} from "./ExactDot.sol";

/// @title Float32: refute's on-chain binary32 numerics behind an ABI
/// @notice Every SoftFloat primitive, every MathLib program and ExactDot as external pure
/// functions on raw uint32 bit patterns, plus batch variants that map a primitive over
/// arrays, so one eth_call checks thousands of cases. Every NaN result is 0x7FC00000.
/// @dev A thin wrapper: the batch variants share `_map1` / `_map2` through internal
/// function pointers, which keeps the deployed code well under the 24 KiB limit.
contract Float32 {
    using SoftFloat for uint32;

    /// @notice Two batch operands have different lengths.
    error LengthMismatch(uint256 a, uint256 b);

    // ------------------------------------------------------------------
    // Arithmetic
    // ------------------------------------------------------------------
    /// @notice a + b, rounded to nearest even.
    /// @param a binary32 bits
    /// @param b binary32 bits
    /// @return binary32 bits of the result
    function add(uint32 a, uint32 b) external pure returns (uint32) {
        return SoftFloat.add(a, b);
    }

    /// @notice `add` applied elementwise to a[i], b[i].
    /// @param a binary32 bits
    /// @param b binary32 bits, as many as a
    /// @return binary32 bits of the results
    function addBatch(uint32[] calldata a, uint32[] calldata b) external pure returns (uint32[] memory) {
        return _map2(a, b, SoftFloat.add);
    }
    /// @notice a - b, rounded to nearest even.
    /// @param a binary32 bits
    /// @param b binary32 bits
    /// @return binary32 bits of the result
    function sub(uint32 a, uint32 b) external pure returns (uint32) {
        return SoftFloat.sub(a, b);
    }

    /// @notice `sub` applied elementwise to a[i], b[i].
    /// @param a binary32 bits
    /// @param b binary32 bits, as many as a
    /// @return binary32 bits of the results
    function subBatch(uint32[] calldata a, uint32[] calldata b) external pure returns (uint32[] memory) {
        return _map2(a, b, SoftFloat.sub);
    }
    /// @notice a * b, rounded to nearest even.
    /// @param a binary32 bits
    /// @param b binary32 bits
    /// @return binary32 bits of the result
    function mul(uint32 a, uint32 b) external pure returns (uint32) {
        return SoftFloat.mul(a, b);
    }

    /// @notice `mul` applied elementwise to a[i], b[i].
    /// @param a binary32 bits
    /// @param b binary32 bits, as many as a
    /// @return binary32 bits of the results
    function mulBatch(uint32[] calldata a, uint32[] calldata b) external pure returns (uint32[] memory) {
        return _map2(a, b, SoftFloat.mul);
    }
    /// @notice a / b, correctly rounded (nearest even).
    /// @param a binary32 bits
    /// @param b binary32 bits
    /// @return binary32 bits of the result
    function div(uint32 a, uint32 b) external pure returns (uint32) {
        return SoftFloat.div(a, b);
    }

    /// @notice `div` applied elementwise to a[i], b[i].
    /// @param a binary32 bits
    /// @param b binary32 bits, as many as a
    /// @return binary32 bits of the results
    function divBatch(uint32[] calldata a, uint32[] calldata b) external pure returns (uint32[] memory) {
        return _map2(a, b, SoftFloat.div);
    }
    /// @notice The smaller total-order key (-0 < +0); NaN if either is NaN.
    /// @param a binary32 bits
    /// @param b binary32 bits
    /// @return binary32 bits of the result
    function min(uint32 a, uint32 b) external pure returns (uint32) {
        return SoftFloat.min(a, b);
    }

    /// @notice `min` applied elementwise to a[i], b[i].
    /// @param a binary32 bits
    /// @param b binary32 bits, as many as a
    /// @return binary32 bits of the results
    function minBatch(uint32[] calldata a, uint32[] calldata b) external pure returns (uint32[] memory) {
        return _map2(a, b, SoftFloat.min);
    }
    /// @notice The larger total-order key (kernels' row_max); NaN if either is NaN.
    /// @param a binary32 bits
    /// @param b binary32 bits
    /// @return binary32 bits of the result
    function max(uint32 a, uint32 b) external pure returns (uint32) {
        return SoftFloat.max(a, b);
    }

    /// @notice `max` applied elementwise to a[i], b[i].
    /// @param a binary32 bits
    /// @param b binary32 bits, as many as a
    /// @return binary32 bits of the results
    function maxBatch(uint32[] calldata a, uint32[] calldata b) external pure returns (uint32[] memory) {
        return _map2(a, b, SoftFloat.max);
    }
    /// @notice Square root, correctly rounded; sqrt(-0) = -0, NaN for x < 0.
    /// @param x binary32 bits
    /// @return binary32 bits of the result
    function sqrt(uint32 x) external pure returns (uint32) {
        return SoftFloat.sqrt(x);
    }

    /// @notice `sqrt` applied elementwise.
    /// @param x binary32 bits
    /// @return binary32 bits of the results
    function sqrtBatch(uint32[] calldata x) external pure returns (uint32[] memory) {
        return _map1(x, SoftFloat.sqrt);
    }
    /// @notice -x (sign bit flip; NaN payload kept).
    /// @param x binary32 bits
    /// @return binary32 bits of the result
    function neg(uint32 x) external pure returns (uint32) {
        return SoftFloat.neg(x);
    }

    /// @notice `neg` applied elementwise.
    /// @param x binary32 bits
    /// @return binary32 bits of the results
    function negBatch(uint32[] calldata x) external pure returns (uint32[] memory) {
        return _map1(x, SoftFloat.neg);
    }
    /// @notice |x| (sign bit cleared; NaN payload kept).
    /// @param x binary32 bits
    /// @return binary32 bits of the result
    function abs(uint32 x) external pure returns (uint32) {
        return SoftFloat.abs(x);
    }

    /// @notice `abs` applied elementwise.
    /// @param x binary32 bits
    /// @return binary32 bits of the results
    function absBatch(uint32[] calldata x) external pure returns (uint32[] memory) {
        return _map1(x, SoftFloat.abs);
    }
    /// @notice e^x (docs/numerics.md, exp program).
    /// @param x binary32 bits
    /// @return binary32 bits of the result
    function exp(uint32 x) external pure returns (uint32) {
        return MathLib.exp(x);
    }

    /// @notice `exp` applied elementwise.
    /// @param x binary32 bits
    /// @return binary32 bits of the results
    function expBatch(uint32[] calldata x) external pure returns (uint32[] memory) {
        return _map1(x, MathLib.exp);
    }
    /// @notice Natural logarithm (docs/numerics.md, log program).
    /// @param x binary32 bits
    /// @return binary32 bits of the result
    function log(uint32 x) external pure returns (uint32) {
        return MathLib.log(x);
    }

    /// @notice `log` applied elementwise.
    /// @param x binary32 bits
    /// @return binary32 bits of the results
    function logBatch(uint32[] calldata x) external pure returns (uint32[] memory) {
        return _map1(x, MathLib.log);
    }
    /// @notice Hyperbolic tangent (docs/numerics.md, tanh program).
    /// @param x binary32 bits
    /// @return binary32 bits of the result
    function tanh(uint32 x) external pure returns (uint32) {
        return MathLib.tanh(x);
    }

    /// @notice `tanh` applied elementwise.
    /// @param x binary32 bits
    /// @return binary32 bits of the results
    function tanhBatch(uint32[] calldata x) external pure returns (uint32[] memory) {
        return _map1(x, MathLib.tanh);
    }
    /// @notice Logistic function 1/(1 + e^-x) (docs/numerics.md, sigmoid program).
    /// @param x binary32 bits
    /// @return binary32 bits of the result
    function sigmoid(uint32 x) external pure returns (uint32) {
        return MathLib.sigmoid(x);
    }

    /// @notice `sigmoid` applied elementwise.
    /// @param x binary32 bits
    /// @return binary32 bits of the results
    function sigmoidBatch(uint32[] calldata x) external pure returns (uint32[] memory) {
        return _map1(x, MathLib.sigmoid);
    }
    /// @notice Error function (docs/numerics.md, erf program).
    /// @param x binary32 bits
    /// @return binary32 bits of the result
    function erf(uint32 x) external pure returns (uint32) {
        return MathLib.erf(x);
    }

    /// @notice `erf` applied elementwise.
    /// @param x binary32 bits
    /// @return binary32 bits of the results
    function erfBatch(uint32[] calldata x) external pure returns (uint32[] memory) {
        return _map1(x, MathLib.erf);
    }
    /// @notice Sine with exact integer argument reduction (docs/numerics.md, sin program).
    /// @param x binary32 bits
    /// @return binary32 bits of the result
    function sin(uint32 x) external pure returns (uint32) {
        return MathLib.sin(x);
    }

    /// @notice `sin` applied elementwise.
    /// @param x binary32 bits
    /// @return binary32 bits of the results
    function sinBatch(uint32[] calldata x) external pure returns (uint32[] memory) {
        return _map1(x, MathLib.sin);
    }
    /// @notice Cosine with exact integer argument reduction (docs/numerics.md, cos program).
    /// @param x binary32 bits
    /// @return binary32 bits of the result
    function cos(uint32 x) external pure returns (uint32) {
        return MathLib.cos(x);
    }

    /// @notice `cos` applied elementwise.
    /// @param x binary32 bits
    /// @return binary32 bits of the results
    function cosBatch(uint32[] calldata x) external pure returns (uint32[] memory) {
        return _map1(x, MathLib.cos);
    }
    /// @notice 1/sqrt(x) as div(1, sqrt(x)) (docs/numerics.md, rsqrt program).
    /// @param x binary32 bits
    /// @return binary32 bits of the result
    function rsqrt(uint32 x) external pure returns (uint32) {
        return MathLib.rsqrt(x);
    }

    /// @notice `rsqrt` applied elementwise.
    /// @param x binary32 bits
    /// @return binary32 bits of the results
    function rsqrtBatch(uint32[] calldata x) external pure returns (uint32[] memory) {
        return _map1(x, MathLib.rsqrt);
    }
    // ------------------------------------------------------------------
    // Comparisons and the total order
    // ------------------------------------------------------------------

    /// @notice IEEE equality: NaN equals nothing, +0 == -0.
    /// @param a binary32 bits
    /// @param b binary32 bits
    /// @return a == b
    function eq(uint32 a, uint32 b) external pure returns (bool) {
        return a.eq(b);
    }

    /// @notice IEEE less-than: false when either is NaN.
    /// @param a binary32 bits
    /// @param b binary32 bits
    /// @return a < b
    function lt(uint32 a, uint32 b) external pure returns (bool) {
        return a.lt(b);
    }

    /// @notice IEEE less-or-equal: false when either is NaN.
    /// @param a binary32 bits
    /// @param b binary32 bits
    /// @return a <= b
    function le(uint32 a, uint32 b) external pure returns (bool) {
        return a.le(b);
    }

    /// @notice eq, lt and le of a[i], b[i] at once.
    /// @param a binary32 bits
    /// @param b binary32 bits, as many as a
    /// @return flags bit 0: a == b, bit 1: a < b, bit 2: a <= b
    function compareBatch(uint32[] calldata a, uint32[] calldata b) external pure returns (uint8[] memory flags) {
        if (a.length != b.length) revert LengthMismatch(a.length, b.length);
        flags = new uint8[](a.length);
        for (uint256 i; i < a.length; ++i) {
            flags[i] = (a[i].eq(b[i]) ? 1 : 0) | (a[i].lt(b[i]) ? 2 : 0) | (a[i].le(b[i]) ? 4 : 0);
        }
    }

    /// @notice refute's int32 total-order key (kernels/reduce_reference.total_order_key).
    /// @param x binary32 bits
    /// @return key IEEE order with -0 < +0; every NaN gives 0x7FFFFFFF
    function totalOrderKey(uint32 x) external pure returns (int32) {
        return x.totalOrderKey();
    }

    /// @notice `totalOrderKey` applied elementwise.
    /// @param x binary32 bits
    /// @return keys the total-order keys
    function totalOrderKeyBatch(uint32[] calldata x) external pure returns (int32[] memory keys) {
        keys = new int32[](x.length);
        for (uint256 i; i < x.length; ++i) keys[i] = x[i].totalOrderKey();
    }

    // ------------------------------------------------------------------
    // Conversions
    // ------------------------------------------------------------------

    /// @notice int32 to binary32, rounded to nearest even.
    /// @param v the integer
    /// @return binary32 bits
    function fromInt32(int32 v) external pure returns (uint32) {
        return SoftFloat.fromInt(v);
    }

    /// @notice int64 to binary32, rounded to nearest even (one rounding, never through float64).
    /// @param v the integer
    /// @return binary32 bits
    function fromInt64(int64 v) external pure returns (uint32) {
        return SoftFloat.fromInt(v);
    }

    /// @notice `fromInt64` applied elementwise (int32 inputs fit too).
    /// @param v the integers
    /// @return out binary32 bits
    function fromInt64Batch(int64[] calldata v) external pure returns (uint32[] memory out) {
        out = new uint32[](v.length);
        for (uint256 i; i < v.length; ++i) out[i] = SoftFloat.fromInt(v[i]);
    }

    /// @notice x rounded to the nearest integer (ties to even); reverts with
    /// SoftFloat.NotConvertible on NaN, infinities and values outside int32.
    /// @param x binary32 bits
    /// @return the integer
    function toInt32(uint32 x) external pure returns (int32) {
        return x.toInt32();
    }

    /// @notice x rounded to the nearest integer (ties to even); reverts with
    /// SoftFloat.NotConvertible on NaN, infinities and values outside int64.
    /// @param x binary32 bits
    /// @return the integer
    function toInt64(uint32 x) external pure returns (int64) {
        return x.toInt64();
    }

    /// @notice `toInt64` applied elementwise; reverts if any element cannot be converted.
    /// @param x binary32 bits
    /// @return out the integers
    function toInt64Batch(uint32[] calldata x) external pure returns (int64[] memory out) {
        out = new int64[](x.length);
        for (uint256 i; i < x.length; ++i) out[i] = x[i].toInt64();
    }

    /// @notice binary32 to bf16 bits, round to nearest even in integer bit operations;
    /// NaN keeps sign and top payload bits and gets the quiet bit.
    /// @param x binary32 bits
    /// @return bf16 bits
    function toBF16(uint32 x) external pure returns (uint16) {
        return x.toBF16();
    }

    /// @notice `toBF16` applied elementwise.
    /// @param x binary32 bits
    /// @return out bf16 bits
    function toBF16Batch(uint32[] calldata x) external pure returns (uint16[] memory out) {
        out = new uint16[](x.length);
        for (uint256 i; i < x.length; ++i) out[i] = x[i].toBF16();
    }

    /// @notice bf16 bits widened to binary32 (exact).
    /// @param h bf16 bits
    /// @return binary32 bits
    function fromBF16(uint16 h) external pure returns (uint32) {
        return SoftFloat.fromBF16(h);
    }

    // ------------------------------------------------------------------
    // Powers of two
    // ------------------------------------------------------------------

    /// @notice The unbiased exponent field of |x| (-127 for zeros and subnormals).
    /// @param x binary32 bits
    /// @return the exponent
    function exponentOf(uint32 x) external pure returns (int256) {
        return x.exponentOf();
    }

    /// @notice 2^k for k in [-126, 127]; reverts with SoftFloat.Pow2OutOfRange otherwise.
    /// @param k the exponent
    /// @return binary32 bits
    function pow2(int256 k) external pure returns (uint32) {
        return SoftFloat.pow2(k);
    }

    /// @notice x * 2^k as refute's three clamped multiplications (kernels/bits_reference.ldexp).
    /// @param x binary32 bits
    /// @param k the exponent
    /// @return binary32 bits
    function ldexp(uint32 x, int256 k) external pure returns (uint32) {
        return x.ldexp(k);
    }

    /// @notice `ldexp` applied elementwise to x[i], k[i].
    /// @param x binary32 bits
    /// @param k exponents, as many as x
    /// @return out binary32 bits
    function ldexpBatch(uint32[] calldata x, int32[] calldata k) external pure returns (uint32[] memory out) {
        if (x.length != k.length) revert LengthMismatch(x.length, k.length);
        out = new uint32[](x.length);
        for (uint256 i; i < x.length; ++i) out[i] = x[i].ldexp(k[i]);
    }

    // ------------------------------------------------------------------
    // Exact GEMM element
    // ------------------------------------------------------------------

    /// @notice One element of refute's exact GEMM: row x of A times column w of B with
    /// `slices` slices (1..4), plus `bias` when `hasBias` (kernels/gemm_reference.py).
    /// @param xRow the whole row of A (binary32 bits)
    /// @param wCol the whole column of B, i.e. row j of an (N, K) weight (binary32 bits)
    /// @param slices the slice count s in 1..4
    /// @param hasBias whether a bias is added
    /// @param bias the bias bits (ignored unless hasBias)
    /// @return binary32 bits of C_ij
    function dotElement(uint32[] calldata xRow, uint32[] calldata wCol, uint8 slices, bool hasBias, uint32 bias)
        external
        pure
        returns (uint32)
    {
        return ExactDot.dotElementCalldata(xRow, wCol, slices, hasBias, bias);
    }

    /// @notice dotElement on canonical little-endian binary32 bytes (4 per element),
    ///         the form ElementOps reads its opened slices in (ExactDot.dotElementLE).
    function dotElementLE(bytes calldata xRow, bytes calldata wCol, uint8 slices, bool hasBias, uint32 bias)
        external
        pure
        returns (uint32)
    {
        return ExactDot.dotElementLE(xRow, wCol, slices, hasBias, bias);
    }

    // ------------------------------------------------------------------
    // Batch helpers
    // ------------------------------------------------------------------

    function _map1(uint32[] calldata x, function(uint32) pure returns (uint32) f)
        private
        pure
        returns (uint32[] memory out)
    {
        out = new uint32[](x.length);
        for (uint256 i; i < x.length; ++i) out[i] = f(x[i]);
    }

    function _map2(uint32[] calldata a, uint32[] calldata b, function(uint32, uint32) pure returns (uint32) f)
        private
        pure
        returns (uint32[] memory out)
    {
        if (a.length != b.length) revert LengthMismatch(a.length, b.length);
        out = new uint32[](a.length);
        for (uint256 i; i < a.length; ++i) out[i] = f(a[i], b[i]);
    }
}
