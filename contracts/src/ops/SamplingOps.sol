// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ModelDigest} from "./ModelDigest.sol";
import {Claim} from "../ClaimRegistry.sol";
import {Opening} from "../IReferee.sol";
import {TensorMerkle} from "../TensorMerkle.sol";
import {RecordCodec} from "../RecordCodec.sol";
import {SoftFloat} from "../SoftFloat.sol";
import {MathLib} from "../MathLib.sol";
import {Row} from "./Row.sol";
import {GenerateTask} from "./GenerateTask.sol";

/// @title SamplingOps: the compact `sampling` one-step (Referee.decideSampling)
/// @notice The twin of `verifier.dispute._check_sampling` for greedy (temperature 0) and
///         plain Gumbel-max (top_k == 0 or >= V, top_p == 1) generations, on two logits
///         of the trace's last record instead of the whole row: token `j` is wrong iff
///         the alternative `alt` beats it under kernels/sampling.py's definition.
/// @dev Evidence = `abi.encode(Evidence)` (one tuple). `decide` decodes it and calls
///      `check` on itself so that the record and the openings arrive as calldata.
///      Reverts `Unsupported` for top-k / top-p (deciding those needs a proof of the
///      sorted order of the whole row) and for a token whose z = x / T is -inf when the
///      alternative's is -inf too (the row may then be all -inf, whose token is the
///      argmax of x: that needs the whole row). The rules of `generation_valid` come
///      first: length, EOS (from the model digest's preimage: `stop` = EOS + 1) and,
///      once the logits header gives V, vocabulary; breaking one refutes the claim
///      whatever token `j` is.
contract SamplingOps {
    using SoftFloat for uint32;

    /// @notice `identity`, `templatesRoot`, `stop`: the claim's model digest's preimage
    ///         (`ModelDigest`; `stop` = EOS + 1, 0 for none);
    ///         `task`: the task and tokens (checked against the claim's digests);
    ///         `record`: the trace's last record, proven as record `count - 1` of
    ///         `claim.traceRoot` by `siblings`; `j`: the disputed token's index;
    ///         `alt`: the token the challenger says beats it; `tokenOpening` and
    ///         `altOpening`: elements (row, tokens[j]) and (row, alt) of the record's
    ///         output, f32 logits (1, T, V), row = P - 1 + j.
    struct Evidence {
        bytes32 identity;
        bytes32 templatesRoot;
        uint64 stop;
        GenerateTask.Params task;
        bytes record;
        uint64 count;
        bytes32[] siblings;
        uint64 j;
        uint64 alt;
        Opening tokenOpening;
        Opening altOpening;
    }

    uint32 private constant ABS = 0x7FFFFFFF;
    uint32 private constant POS_INF = 0x7F800000;
    uint32 private constant NEG_INF = 0xFF800000;
    uint32 private constant ONE = 0x3F800000;
    uint32 private constant SAMPLING_STREAM = 0x53414D50;
    uint256 private constant M0 = 0xD2511F53;
    uint256 private constant M1 = 0xCD9E8D57;
    uint256 private constant W0 = 0x9E3779B9;
    uint256 private constant W1 = 0xBB67AE85;
    uint256 private constant MASK = 0xFFFFFFFF;

    /// @notice Only generation claims; only greedy and plain Gumbel-max; see the contract notes.
    error Unsupported();
    /// @notice The task's temperature or top_p is not a valid float (negative, NaN, infinite).
    error BadTask();
    /// @notice The opened logits are not the last record's (1, T, V) f32 output at the
    ///         disputed row, or `j` / `alt` are not a token index and another token.
    error BadLogits();

    /// @notice Decide token `j` of a generation claim.
    function decide(Claim calldata claim, bytes calldata evidence) external view returns (bool defendantWrong) {
        if (claim.task != 1) revert Unsupported();
        return this.check(claim, abi.decode(evidence, (Evidence)));
    }

    /// @dev The two contenders of the draw: token t (the claim's) and a (the challenger's).
    struct Draw {
        uint256 v;
        uint256 pos;
        uint256 t;
        uint256 a;
        uint32 xt;
        uint32 xa;
        uint64 seed;
    }

    /// @notice `decide` once the evidence is decoded (reverts on evidence that does not verify).
    function check(Claim calldata claim, Evidence calldata ev) external pure returns (bool defendantWrong) {
        GenerateTask.Params memory p = ev.task;
        GenerateTask.checkDigests(p, claim.inputDigest, claim.outputDigest);
        ModelDigest.check(claim.modelDigest, ev.identity, ev.templatesRoot, ev.stop);
        bytes32 output = _lastOutput(claim.traceRoot, ev);
        uint256 n = p.tokens.length;
        if (n == 0 || n > p.maxNewTokens) return true; // generation_valid: length
        if (ev.stop != 0 && _breaksEos(p.tokens, n, p.maxNewTokens, int64(ev.stop - 1))) return true;
        if (ev.j >= n) revert BadLogits();
        Draw memory d;
        d.seed = claim.seed;
        d.a = ev.alt;
        int64 tok = p.tokens[ev.j];
        if (tok >= 0 && uint256(uint64(tok)) == d.a) revert BadLogits();
        (TensorMerkle.Header memory h, bytes memory xa) = TensorMerkle.verifyRange(output, ev.altOpening);
        d.v = _logitsShape(h, p);
        for (uint256 i = 0; i < n; i++) {
            if (p.tokens[i] < 0 || uint256(uint64(p.tokens[i])) >= d.v) return true; // generation_valid: vocabulary
        }
        d.t = uint256(uint64(tok));
        d.xa = Row.f32At(xa, 0);
        d.xt = _tokenLogit(output, ev, d, p.prompt.length - 1 + ev.j);
        d.pos = p.prompt.length + ev.j;
        return _beats(p, d);
    }

    /// @dev generation_valid's EOS rules: no token after EOS, and fewer than
    /// `maxNewTokens` tokens only if the last is EOS.
    function _breaksEos(int64[] memory tokens, uint256 n, uint256 maxNew, int64 eos) private pure returns (bool) {
        for (uint256 i = 0; i + 1 < n; i++) {
            if (tokens[i] == eos) return true;
        }
        return n < maxNew && tokens[n - 1] != eos;
    }

    /// @dev The last record's output root, after its proof against the trace root.
    function _lastOutput(bytes32 traceRoot, Evidence calldata ev) private pure returns (bytes32) {
        RecordCodec.verifyRecord(traceRoot, keccak256(ev.record), ev.count - 1, ev.count, ev.siblings);
        RecordCodec.Record memory r = RecordCodec.decode(ev.record);
        if (r.index != ev.count - 1) revert RecordCodec.BadRecordProof();
        return r.output;
    }

    /// @dev Check both openings' places and return logits[row, t].
    function _tokenLogit(bytes32 output, Evidence calldata ev, Draw memory d, uint256 row) private pure returns (uint32) {
        _at(ev.altOpening, row * d.v + d.a);
        _at(ev.tokenOpening, row * d.v + d.t);
        if (keccak256(ev.tokenOpening.header) != keccak256(ev.altOpening.header)) revert BadLogits();
        (, bytes memory xt) = TensorMerkle.verifyRange(output, ev.tokenOpening);
        return Row.f32At(xt, 0);
    }

    /// @dev V, after checking the header is f32 (1, T, V).
    function _logitsShape(TensorMerkle.Header memory h, GenerateTask.Params memory p) private pure returns (uint256) {
        if (h.code != 1 || h.shape.length != 3 || h.shape[0] != 1 || h.shape[1] != GenerateTask.seqLen(p)) {
            revert BadLogits();
        }
        return h.shape[2];
    }

    function _at(Opening calldata o, uint256 e) private pure {
        if (o.start != e || o.stop != e + 1) revert BadLogits();
    }

    /// @dev Does token a beat token t in the draw?
    function _beats(GenerateTask.Params memory p, Draw memory d) private pure returns (bool) {
        uint32 temp = p.temperatureBits;
        if (temp & ABS >= POS_INF || (temp & ABS != 0 && temp >> 31 == 1)) revert BadTask();
        // Greedy: row_argmax(x).
        if (temp & ABS == 0) return _order(d.xa, d.a, d.xt, d.t);
        if (!((p.topK == 0 || p.topK >= d.v) && p.topPBits == ONE)) revert Unsupported();
        uint32 zt = d.xt.div(temp);
        uint32 za = d.xa.div(temp);
        // A NaN or +inf z makes the row degenerate: the token is row_argmax(x). An honest
        // token of such a row has a NaN or +inf z itself (x / T is monotone), so a row the
        // two z do not show degenerate is one where the honest token's z is finite.
        if (_degenerate(zt) || _degenerate(za)) return _order(d.xa, d.a, d.xt, d.t);
        if (zt == NEG_INF) {
            if (za == NEG_INF) revert Unsupported(); // possibly an all -inf row: needs the whole row
            return true; // a's score is finite; t's is -inf
        }
        uint32 st = zt.add(_gumbel(d.seed, p.sequence, d.pos, d.t));
        uint32 sa = za.add(_gumbel(d.seed, p.sequence, d.pos, d.a));
        return _order(sa, d.a, st, d.t);
    }

    function _degenerate(uint32 z) private pure returns (bool) {
        return z.isNaN() || z == POS_INF;
    }

    /// @dev row_argmax's order: larger total-order key (NaN largest), ties to the lower index.
    function _order(uint32 va, uint256 a, uint32 vt, uint256 t) private pure returns (bool) {
        int32 ka = va.totalOrderKey();
        int32 kt = vt.totalOrderKey();
        return ka > kt || (ka == kt && a < t);
    }

    /// @dev -log(-log(u)) for vocabulary index i (philox_reference.gumbel / draw_uniforms).
    function _gumbel(uint64 seed, uint32 sequence, uint256 pos, uint256 i) private pure returns (uint32) {
        uint256 w = _philoxWord(i / 4, pos, sequence, seed, i % 4);
        // u = ((w >> 9) + 0.5) * 2^-23 = (2 (w >> 9) + 1) * 2^-24, exact.
        uint32 u = SoftFloat.fromInt(int256(2 * (w >> 9) + 1)).mul(SoftFloat.pow2(-24));
        return MathLib.log(MathLib.log(u).neg()).neg();
    }

    /// @dev Word `k` of Philox4x32-10 of counter (c0, pos, sequence, SAMPLING_STREAM)
    /// under key (seed mod 2^32, seed / 2^32).
    function _philoxWord(uint256 c0, uint256 pos, uint32 sequence, uint64 seed, uint256 k) private pure returns (uint256) {
        if (c0 > MASK || pos > MASK) revert BadLogits();
        uint256[4] memory c = [c0, pos, uint256(sequence), uint256(SAMPLING_STREAM)];
        uint256 k0 = seed & MASK;
        uint256 k1 = seed >> 32;
        unchecked {
            for (uint256 r = 0; r < 10; r++) {
                if (r > 0) {
                    k0 = (k0 + W0) & MASK;
                    k1 = (k1 + W1) & MASK;
                }
                uint256 p0 = c[0] * M0;
                uint256 p1 = c[2] * M1;
                c[0] = (p1 >> 32) ^ c[1] ^ k0;
                c[1] = p1 & MASK;
                c[2] = (p0 >> 32) ^ c[3] ^ k1;
                c[3] = p0 & MASK;
            }
        }
        return c[k];
    }
}
