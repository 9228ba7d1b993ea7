// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {Opening} from "./IReferee.sol";
import {IProgramReferee, InputHead} from "./IProgramReferee.sol";
import {TensorMerkle} from "./TensorMerkle.sol";
import {RecordCodec} from "./RecordCodec.sol";
import {SoftFloat} from "./SoftFloat.sol";
import {MathLib} from "./MathLib.sol";
import {ExactDot} from "./ExactDot.sol";
import {Row} from "./ops/Row.sol";

/// @title ProgramReferee: one step of an attention or log_softmax element's program
/// @notice The twin of `refute.verifier.programs` (docs/protocol.md, "Element programs").
/// An attention output element (query head h of token t, column c) is computed in five
/// passes over its batch row's keys, `KEYS_PER_STEP` keys per step, each step
/// recomputing the keys' scores from the proven q head and k rows:
/// pass 0: m = max kept score, G = max kept value exponent; pass 1: flags and largest
/// finite |bits| of e_j = exp(score_j - m); pass 2: the exact-sum images of e_j;
/// pass 3: flags and largest finite |bits| of P'_j = ldexp(e_j / s, g_j - G); pass 4: the
/// exact dot of the GEMM images of P' and the V' column. The state is eight int256 words
/// `(m, G, eFlags, eMax, eSum, pFlags, pMax, pSum)`, hashed as `keccak256(abi.encode(w))`.
/// A log_softmax element (column c of a row) walks its row `ROW_PER_STEP` entries a step in
/// three passes (m, e's flags and scale, e's images) and a last step that reads x_c and
/// stores `(x_c - m) - log(s)` in the last word, which is the output.
contract ProgramReferee is IProgramReferee {
    using SoftFloat for uint32;
    using RecordCodec for RecordCodec.Record;

    /// @notice Keys read by one step (`programs.KEYS_PER_STEP`).
    uint256 public constant KEYS_PER_STEP = 2;
    /// @notice Passes over the keys (`programs.PASSES`).
    uint256 public constant PASSES = 5;
    /// @notice Row entries read by one log_softmax step (`programs.ROW_PER_STEP`).
    uint256 public constant ROW_PER_STEP = 32;
    /// @notice Passes over a log_softmax row before the element's own step (`programs.ROW_PASSES`).
    uint256 public constant ROW_PASSES = 3;

    uint8 private constant F32 = 1;
    uint8 private constant I64 = 4;
    uint8 private constant BOOL = 6;
    uint32 private constant NEG_INF = 0xFF800000;
    uint256 private constant POS_INF = 0x7F800000;
    uint256 private constant ABS = 0x7FFFFFFF;
    uint32 private constant NAN = 0x7FC00000;
    int256 private constant NONFINITE_EXP = 128;
    int256 private constant NO_KEY_EXP = -127;
    int256 private constant FRAC_BITS = 40; // exact_sum's images: rne(x * 2^(F - 1 - e))
    uint256 private constant FLAG_NAN = 1;
    uint256 private constant FLAG_PINF = 2;
    uint256 private constant FLAG_NINF = 4;

    /// @notice The record's kind has no element program, or the element has no keys
    ///         (the direct compute one-step decides it).
    error Unsupported();
    /// @notice The record's inputs are not attention's (q, k, v, key_mask, q_positions, k_positions).
    error WrongInputs();
    /// @notice `got` openings or heads for a record of `want` inputs.
    error OpeningCount(uint256 want, uint256 got);
    /// @notice Input `input`'s header does not fit (dtype, shape, or its root).
    error BadInput(uint256 input);
    /// @notice Input `input` was opened at [start, stop); the step needs [wantStart, wantStop).
    error WrongSlice(uint256 input, uint64 start, uint64 stop, uint256 wantStart, uint256 wantStop);
    /// @notice The element is outside the output, or the step outside the program.
    error BadElement();
    /// @notice A state is not 256 bytes of in-range words.
    error BadState();

    /// @notice The static part of one element's problem.
    struct Problem {
        uint256 keys; // S
        uint256 kvWidth;
        uint256 headDim;
        uint256 group; // kv head of the query head
        uint256 col; // column in the head
        uint256 bt; // flat (batch, token) of the query
        uint256 bi; // batch row
        uint256 qStart;
        uint32 scale;
        bool causal;
        uint256 slices;
        uint256 numel; // of the output (= q)
    }

    /// @notice The values one step reads.
    struct Slice {
        uint32[] q;
        uint32[] k;
        uint32[] v;
        bytes mask;
        bytes kPos;
        int64 qPos;
    }

    // ------------------------------------------------------------------ interface

    /// @inheritdoc IProgramReferee
    function programOf(bytes calldata record, bytes calldata outputHeader, uint64 element, InputHead[] calldata heads)
        external
        pure
        returns (bool headerWrong, uint64 steps, bytes32 start)
    {
        (RecordCodec.Record memory r, bool attention) = _record(record);
        if (!attention) return _logSoftmaxOf(r, outputHeader, element, heads);
        if (heads.length != 6) revert OpeningCount(6, heads.length);
        TensorMerkle.Header[] memory hs = new TensorMerkle.Header[](6);
        for (uint256 i = 0; i < 6; i++) {
            hs[i] = _head(r, heads, i);
        }
        _dtypes(hs);
        if (keccak256(TensorMerkle.encodeHeader(F32, hs[0].shape)) != keccak256(outputHeader)) return (true, 0, 0);
        Problem memory p = _problem(r, hs[0].shape, hs[1].shape, hs[2].shape, element);
        if (p.keys == 0) revert Unsupported();
        steps = uint64(PASSES * _chunks(p));
        start = keccak256(abi.encode(_startState()));
    }

    /// @dev The header of input `i`, checked against its root.
    function _head(RecordCodec.Record memory r, InputHead[] calldata heads, uint256 i)
        private
        pure
        returns (TensorMerkle.Header memory)
    {
        bytes32 root = keccak256(
            abi.encodePacked(bytes1(0x03), TensorMerkle.headerDigest(heads[i].header), heads[i].dataRoot)
        );
        if (root != r.inputs[i].root) revert BadInput(i);
        return TensorMerkle.parseHeader(heads[i].header);
    }

    function _logSoftmaxOf(RecordCodec.Record memory r, bytes calldata outputHeader, uint64 element, InputHead[] calldata heads)
        private
        pure
        returns (bool headerWrong, uint64 steps, bytes32 start)
    {
        if (heads.length != 1) revert OpeningCount(1, heads.length);
        TensorMerkle.Header memory h = _head(r, heads, 0);
        if (h.code != F32 || h.shape.length == 0) revert BadInput(0);
        if (keccak256(TensorMerkle.encodeHeader(F32, h.shape)) != keccak256(outputHeader)) return (true, 0, 0);
        uint256 n = h.shape[h.shape.length - 1];
        if (element >= h.numel || n == 0) revert BadElement();
        steps = uint64(ROW_PASSES * ((n + ROW_PER_STEP - 1) / ROW_PER_STEP) + 1);
        start = keccak256(abi.encode(_startState()));
    }

    /// @inheritdoc IProgramReferee
    function programOutput(bytes calldata record, bytes calldata state) external pure returns (bytes memory out) {
        (RecordCodec.Record memory r, bool attention) = _record(record);
        int256[8] memory w = _decodeState(state);
        uint32 c;
        if (!attention) {
            c = uint32(uint256(w[7]));
        } else if (w[5] != 0) {
            c = NAN;
        } else {
            int256 shift = int256(7 * r.attr("slices", RecordCodec.TAG_INT)) - 1;
            c = SoftFloat.fromInt(w[7]).ldexp(SoftFloat.exponentOf(uint32(uint256(w[6]))) - 2 * shift).ldexp(w[1]);
            if (c.isNaN()) c = NAN;
        }
        out = new bytes(4);
        for (uint256 i = 0; i < 4; i++) {
            out[i] = bytes1(uint8(c >> (8 * i)));
        }
    }

    /// @inheritdoc IProgramReferee
    function programStep(
        bytes calldata record,
        uint64 element,
        uint64 step,
        bytes calldata before,
        Opening[] calldata openings
    ) external pure returns (bytes32 afterHash) {
        (RecordCodec.Record memory r, bool attention) = _record(record);
        if (!attention) return keccak256(abi.encode(_logSoftmaxStep(r, element, step, before, openings)));
        (Problem memory p, uint256 pass, uint256 n, Slice memory s) = _stepInputs(r, element, step, openings);
        int256[8] memory w = _decodeState(before);
        _step(p, pass, n, w, s);
        return keccak256(abi.encode(w));
    }


    /// @dev Decode the record, verify the openings against its input roots and require
    /// exactly the step's slices (`programs.step_inputs`).
    function _stepInputs(RecordCodec.Record memory r, uint64 element, uint64 step, Opening[] calldata openings)
        private
        pure
        returns (Problem memory p, uint256 pass, uint256 n, Slice memory s)
    {
        if (openings.length != 6) revert OpeningCount(6, openings.length);
        TensorMerkle.Header[] memory hs = new TensorMerkle.Header[](6);
        bytes[] memory data = new bytes[](6);
        for (uint256 i = 0; i < 6; i++) {
            (hs[i], data[i]) = TensorMerkle.verifyRange(r.inputs[i].root, openings[i]);
        }
        _dtypes(hs);
        p = _problem(r, hs[0].shape, hs[1].shape, hs[2].shape, element);
        uint256 j0;
        uint256 j1;
        (pass, j0, j1) = _keysOf(p, step);
        n = j1 - j0;
        uint256 row0 = p.bi * p.keys + j0;
        _need(openings, 0, p.qStart, p.qStart + p.headDim);
        _need(openings, 1, row0 * p.kvWidth, (row0 + n) * p.kvWidth);
        _need(openings, 2, row0 * p.kvWidth, (row0 + n) * p.kvWidth);
        _need(openings, 3, row0, row0 + n);
        _need(openings, 4, p.bt, p.bt + 1);
        _need(openings, 5, row0, row0 + n);
        s = Slice(Row.f32s(data[0]), Row.f32s(data[1]), Row.f32s(data[2]), data[3], data[5], Row.i64At(data[4], 0));
    }

    // ------------------------------------------------------------------ problem

    /// @dev Decode the record; `attention` true for attention, false for log_softmax
    /// (input `x`); other kinds revert `Unsupported`.
    function _record(bytes calldata record) private pure returns (RecordCodec.Record memory r, bool attention) {
        r = RecordCodec.decode(record);
        bytes32 kind = keccak256(r.kind);
        if (kind == keccak256("log_softmax")) {
            if (r.inputs.length != 1 || !RecordCodec.eq(r.inputs[0].name, "x")) revert WrongInputs();
            return (r, false);
        }
        if (kind != keccak256("attention")) revert Unsupported();
        attention = true;
        string[6] memory want = ["q", "k", "v", "key_mask", "q_positions", "k_positions"];
        if (r.inputs.length != 6) revert WrongInputs();
        for (uint256 i = 0; i < 6; i++) {
            if (!RecordCodec.eq(r.inputs[i].name, want[i])) revert WrongInputs();
        }
    }

    function _dtypes(TensorMerkle.Header[] memory hs) private pure {
        for (uint256 i = 0; i < 6; i++) {
            uint8 want = i < 3 ? F32 : (i == 3 ? BOOL : I64);
            if (hs[i].code != want) revert BadInput(i);
        }
    }

    /// @dev The element's problem from the record's attributes and the q, k, v shapes.
    function _problem(RecordCodec.Record memory r, uint64[] memory q, uint64[] memory k, uint64[] memory v, uint256 e)
        private
        pure
        returns (Problem memory p)
    {
        uint256 heads = r.attr("num_heads", RecordCodec.TAG_INT);
        uint256 kvHeads = r.attr("num_kv_heads", RecordCodec.TAG_INT);
        if (q.length != 3 || k.length != 3 || v.length != 3) revert BadInput(0);
        if (heads == 0 || kvHeads == 0 || heads % kvHeads != 0 || q[2] % heads != 0) revert BadInput(0);
        if (k[0] != q[0] || v[0] != k[0] || v[1] != k[1] || v[2] != k[2]) revert BadInput(1);
        uint256 wq = q[2];
        p.headDim = wq / heads;
        p.kvWidth = k[2];
        if (p.headDim * kvHeads != p.kvWidth) revert BadInput(1);
        p.keys = k[1];
        p.numel = uint256(q[0]) * q[1] * wq;
        if (e >= p.numel) revert BadElement();
        p.bt = e / wq;
        p.bi = p.bt / q[1];
        uint256 c = e % wq;
        p.qStart = p.bt * wq + (c / p.headDim) * p.headDim;
        p.group = c / p.headDim / (heads / kvHeads);
        p.col = c % p.headDim;
        p.scale = uint32(r.attr("scale", RecordCodec.TAG_F32));
        p.causal = r.attr("causal", RecordCodec.TAG_BOOL) == 1;
        p.slices = r.attr("slices", RecordCodec.TAG_INT);
    }

    function _chunks(Problem memory p) private pure returns (uint256) {
        return (p.keys + KEYS_PER_STEP - 1) / KEYS_PER_STEP;
    }

    function _keysOf(Problem memory p, uint256 step) private pure returns (uint256 pass, uint256 j0, uint256 j1) {
        uint256 chunks = _chunks(p);
        if (step >= PASSES * chunks) revert BadElement();
        pass = step / chunks;
        j0 = (step % chunks) * KEYS_PER_STEP;
        j1 = j0 + KEYS_PER_STEP < p.keys ? j0 + KEYS_PER_STEP : p.keys;
    }

    function _need(Opening[] calldata o, uint256 i, uint256 a, uint256 b) private pure {
        if (o[i].start != a || o[i].stop != b) revert WrongSlice(i, o[i].start, o[i].stop, a, b);
    }

    // ------------------------------------------------------------------ states

    function _startState() private pure returns (int256[8] memory w) {
        w[0] = int256(uint256(NEG_INF));
        w[1] = NO_KEY_EXP;
    }

    function _decodeState(bytes calldata state) private pure returns (int256[8] memory w) {
        if (state.length != 256) revert BadState();
        w = abi.decode(state, (int256[8]));
        if (
            w[0] < 0 || w[0] > int256(uint256(type(uint32).max)) || w[1] < NO_KEY_EXP || w[1] > NONFINITE_EXP || w[2] < 0 || w[2] > 7
                || w[3] < 0 || w[3] > int256(POS_INF) || w[5] < 0 || w[5] > 1 || w[6] < 0 || w[6] > int256(POS_INF)
        ) revert BadState();
    }

    // ------------------------------------------------------------------ the step

    /// @notice What every key of a step shares.
    struct StepContext {
        uint256 pass;
        uint32 total; // exact_sum of the e_j (passes 3 and 4)
        uint32[] krow; // scratch: the key's head
    }

    /// @dev One step: the `n` keys of the slice `s`, pass `pass`, updating `w` in place.
    function _step(Problem memory p, uint256 pass, uint256 n, int256[8] memory w, Slice memory s) private pure {
        StepContext memory c = StepContext(pass, pass >= 3 ? _sumValue(w) : 0, new uint32[](p.headDim));
        for (uint256 r = 0; r < n; r++) {
            _key(p, c, w, s, r);
        }
    }

    /// @dev Key `r` of the step's slice.
    function _key(Problem memory p, StepContext memory c, int256[8] memory w, Slice memory s, uint256 r) private pure {
        bool keep = Row.kept(s.mask, 1, r) && (!p.causal || Row.i64At(s.kPos, r) <= s.qPos);
        uint256 base = r * p.kvWidth + p.group * p.headDim;
        for (uint256 d = 0; d < p.headDim; d++) {
            c.krow[d] = s.k[base + d];
        }
        uint32 score = ExactDot.dotElement(s.q, c.krow, p.slices, false, 0).mul(p.scale);
        int256 g = SoftFloat.exponentOf(Row.maxAbsBits(s.v, base, p.headDim));
        if (c.pass == 0) {
            if (keep) {
                w[0] = int256(uint256(SoftFloat.max(uint32(uint256(w[0])), score)));
                if (g > w[1]) w[1] = g;
            }
            return;
        }
        uint32 e = keep ? MathLib.exp(score.sub(uint32(uint256(w[0])))) : 0;
        if (c.pass == 1) {
            _expStats(w, e);
        } else if (c.pass == 2) {
            if (e & ABS < POS_INF) {
                w[4] += _signedImage(e, FRAC_BITS - 1 - SoftFloat.exponentOf(uint32(uint256(w[3]))), type(uint256).max);
            }
        } else {
            uint32 pp;
            if (keep) pp = w[1] == NONFINITE_EXP ? NAN : e.div(c.total).ldexp(g - w[1]);
            if (c.pass == 3) {
                uint256 a = pp & ABS;
                if (a >= POS_INF) w[5] = 1;
                else if (int256(a) > w[6]) w[6] = int256(a);
            } else if (w[5] == 0) {
                uint32 vc = g == NONFINITE_EXP ? uint32(0) : s.v[base + p.col].ldexp(-g);
                w[7] += _pvTerm(pp, vc, uint32(uint256(w[6])), p.slices);
            }
        }
    }

    /// @dev Image of P'_j (row exponent from the largest |P'|) times image of V'_j
    /// (column exponent 0), as the PV GEMM's exact product.
    function _pvTerm(uint32 pp, uint32 vc, uint32 pMax, uint256 slices) private pure returns (int256) {
        int256 shift = int256(7 * slices) - 1;
        uint256 lim = (uint256(1) << (7 * slices)) - 1;
        return _signedImage(pp, shift - SoftFloat.exponentOf(pMax), lim) * _signedImage(vc, shift, lim);
    }

    /// @dev One log_softmax step from state `before`: the row's entries [j0, j1) (the
    /// element's own entry in the last step).
    function _logSoftmaxStep(
        RecordCodec.Record memory r,
        uint64 element,
        uint64 step,
        bytes calldata before,
        Opening[] calldata openings
    ) private pure returns (int256[8] memory w) {
        if (openings.length != 1) revert OpeningCount(1, openings.length);
        (TensorMerkle.Header memory h, bytes memory data) = TensorMerkle.verifyRange(r.inputs[0].root, openings[0]);
        if (h.code != F32 || h.shape.length == 0) revert BadInput(0);
        uint256 n = h.shape[h.shape.length - 1];
        if (element >= h.numel || n == 0) revert BadElement();
        uint256 chunks = (n + ROW_PER_STEP - 1) / ROW_PER_STEP;
        if (step > ROW_PASSES * chunks) revert BadElement();
        uint256 rowStart = (element / n) * n;
        uint256 pass = step == ROW_PASSES * chunks ? ROW_PASSES : step / chunks;
        uint256 j0 = pass == ROW_PASSES ? element % n : (step % chunks) * ROW_PER_STEP;
        uint256 j1 = pass == ROW_PASSES ? j0 + 1 : (j0 + ROW_PER_STEP < n ? j0 + ROW_PER_STEP : n);
        _need(openings, 0, rowStart + j0, rowStart + j1);
        uint32[] memory x = Row.f32s(data);
        w = _decodeState(before);
        uint32 m = uint32(uint256(w[0]));
        if (pass == ROW_PASSES) {
            uint32 y = x[0].sub(m).sub(MathLib.log(_sumValue(w)));
            w[7] = int256(uint256(y.isNaN() ? NAN : y));
            return w;
        }
        for (uint256 i = 0; i < x.length; i++) {
            if (pass == 0) {
                m = SoftFloat.max(m, x[i]);
                continue;
            }
            uint32 e = MathLib.exp(x[i].sub(m));
            if (pass == 1) _expStats(w, e);
            else if (e & ABS < POS_INF) w[4] += _signedImage(e, FRAC_BITS - 1 - SoftFloat.exponentOf(uint32(uint256(w[3]))), type(uint256).max);
        }
        w[0] = int256(uint256(m));
    }

    /// @dev Pass 1: exact_sum's special-value flags and largest finite magnitude.
    function _expStats(int256[8] memory w, uint32 e) private pure {
        uint256 a = e & ABS;
        if (a < POS_INF) {
            if (int256(a) > w[3]) w[3] = int256(a);
        } else if (a > POS_INF) {
            w[2] |= int256(FLAG_NAN);
        } else {
            w[2] |= int256(e == POS_INF ? FLAG_PINF : FLAG_NINF);
        }
    }

    /// @dev exact_sum of the e_j from the state's flags, largest magnitude and images.
    function _sumValue(int256[8] memory w) private pure returns (uint32) {
        uint256 f = uint256(w[2]);
        if (f & FLAG_NAN != 0 || (f & FLAG_PINF != 0 && f & FLAG_NINF != 0)) return NAN;
        if (f & FLAG_PINF != 0) return uint32(POS_INF);
        if (f & FLAG_NINF != 0) return NEG_INF;
        return SoftFloat.fromInt(w[4]).ldexp(SoftFloat.exponentOf(uint32(uint256(w[3]))) + 1 - FRAC_BITS);
    }

    /// @dev clamp(rne(x * 2^kScale), lim) with x's sign, for finite x, as ExactDot's and
    /// Row.exactSum's images: t = sig * 2^32, r = (182 - kScale) - field (a subnormal's
    /// field read as 1), capped at 58 where t / 2^r < 1/4 rounds to 0 either way.
    function _signedImage(uint32 x, int256 kScale, uint256 lim) private pure returns (int256 img) {
        uint256 b = x;
        uint256 field = (b >> 23) & 0xff;
        uint256 nz = field == 0 ? 0 : 1;
        uint256 t = ((b & 0x7fffff) | (nz << 23)) << 32;
        int256 rs = 182 - kScale - int256(field) - int256(1 - nz);
        uint256 r = rs > 58 ? 58 : uint256(rs);
        uint256 m = (t + (uint256(1) << (r - 1)) - 1 + ((t >> r) & 1)) >> r;
        if (m > lim) m = lim;
        img = b & 0x80000000 == 0 ? int256(m) : -int256(m);
    }
}
