// SPDX-License-Identifier: Apache-2.0
pragma solidity 0.8.28;

import {ModelDigest} from "./ModelDigest.sol";
import {Claim} from "../ClaimRegistry.sol";
import {RecordCodec} from "../RecordCodec.sol";
import {GenerateTask} from "./GenerateTask.sol";

/// @title TemplateOps: the `template` one-step (Referee.decideTemplate)
/// @notice The twin of `verifier.dispute._check_template` for `smollm2.generate` claims:
///         `program.verify_template` (model digest preimage, template record proof over
///         the program's templates), template index == record index, the task and tokens
///         against the claim's digests, then `program.check_against_template` with the
///         roots of the task tensors the template binds computed on chain, then the
///         wiring rule: each internal input's root is its source record's output root,
///         the source record proven under the given trace root. That root is either the
///         claim's (lite trace: non-checkpoint records carry output root zero, so in this
///         "lite mode" the checkpoint rule applies too: a record's output root is nonzero
///         iff its template's is, the program marking checkpoints with a nonzero output
///         root, and an input whose source is deferred carries root zero, which the wiring
///         rule already demands) or a game's full prefix trace root (every root real).
/// @dev Evidence = `abi.encode(Evidence)` (one tuple). `decide` decodes it and calls
///      `check` on itself so that the template arrives as calldata (RecordCodec reads
///      calldata). Embedding claims (task 2) revert `Unsupported`: their task tensors
///      come from the MiniLM tokenizer, which has no on-chain twin.
contract TemplateOps {
    /// @notice `identity`, `templatesRoot` (the templates' trace root,
    ///         `program.templates.root`) and `stop` (EOS + 1, 0 for none) are the model
    ///         digest's preimage (`ModelDigest`); `template`
    ///         (canonical encoding) is proven as record `template.index` of
    ///         `templateCount` with `templateSiblings`; `task` is the task and tokens;
    ///         `sources` are the records producing the disputed record's internal
    ///         inputs, in input order, each proven as a record of the trace of
    ///         `traceCount` records under the decision's trace root.
    struct Evidence {
        bytes32 identity;
        bytes32 templatesRoot;
        uint64 stop;
        bytes template;
        uint64 templateCount;
        bytes32[] templateSiblings;
        GenerateTask.Params task;
        uint64 traceCount;
        Source[] sources;
    }

    /// @notice A source record (canonical encoding) and its siblings under the decision's trace root.
    struct Source {
        bytes record;
        bytes32[] siblings;
    }

    uint64 private constant EXTERNAL = type(uint64).max;

    /// @notice Only generation claims are decided here.
    error Unsupported();
    /// @notice The template is not the disputed record's (indices differ).
    error WrongTemplate(uint64 template, uint64 record);
    /// @notice The evidence gives `given` source records for `needed` internal inputs.
    error SourceCount(uint256 given, uint256 needed);
    /// @notice Source record `got` is not input `input`'s source `want`.
    error WrongSource(uint256 input, uint64 want, uint64 got);

    /// @notice Decide `record` (proven by the caller to be in the trace with root
    ///         `traceRoot`: `claim.traceRoot`, the claim's lite trace, or a game's full
    ///         prefix trace root; see `IReferee.decideTemplate`).
    function decide(Claim calldata claim, bytes32 traceRoot, bytes calldata record, bytes calldata evidence)
        external
        view
        returns (bool defendantWrong)
    {
        if (claim.task != 1) revert Unsupported();
        Evidence memory ev = abi.decode(evidence, (Evidence));
        bool lite = traceRoot == claim.traceRoot;
        return this.check(claim.modelDigest, claim.inputDigest, claim.outputDigest, traceRoot, lite, record, ev);
    }

    /// @notice `decide` once the evidence is decoded (reverts on evidence that does not
    ///         verify). `lite`: `traceRoot` is the claim's lite trace (checkpoint rule on).
    function check(
        bytes32 modelDigest,
        bytes32 inputDigest,
        bytes32 outputDigest,
        bytes32 traceRoot,
        bool lite,
        bytes calldata record,
        Evidence calldata ev
    ) external pure returns (bool defendantWrong) {
        ModelDigest.check(modelDigest, ev.identity, ev.templatesRoot, ev.stop);
        RecordCodec.Record memory t = RecordCodec.decode(ev.template);
        RecordCodec.verifyRecord(ev.templatesRoot, keccak256(ev.template), t.index, ev.templateCount, ev.templateSiblings);
        RecordCodec.Record memory r = RecordCodec.decode(record);
        if (t.index != r.index) revert WrongTemplate(t.index, r.index);
        GenerateTask.Params memory p = ev.task;
        GenerateTask.checkDigests(p, inputDigest, outputDigest);
        if (!_fits(r, t, p, lite)) return true;
        return !_wired(r, traceRoot, ev.traceCount, ev.sources);
    }

    /// @dev The wiring rule (`compute.trace.Trace`): every internal input carries the
    /// output root of the record it names, that record proven under `traceRoot`.
    function _wired(RecordCodec.Record memory r, bytes32 traceRoot, uint64 count, Source[] calldata sources)
        private
        pure
        returns (bool)
    {
        uint256 k = 0;
        for (uint256 i = 0; i < r.inputs.length; i++) {
            if (r.inputs[i].source != EXTERNAL) k++;
        }
        if (sources.length != k) revert SourceCount(sources.length, k);
        k = 0;
        bool ok = true;
        for (uint256 i = 0; i < r.inputs.length; i++) {
            if (r.inputs[i].source == EXTERNAL) continue;
            Source calldata s = sources[k++];
            RecordCodec.Record memory src = RecordCodec.decode(s.record);
            if (src.index != r.inputs[i].source) revert WrongSource(i, r.inputs[i].source, src.index);
            RecordCodec.verifyRecord(traceRoot, keccak256(s.record), src.index, count, s.siblings);
            if (src.output != r.inputs[i].root) ok = false;
        }
        return ok;
    }

    /// @dev check_against_template: kind, attributes (by encoding), input names and
    /// sources, then each input root that differs from the template's (internal roots
    /// read as zero): fine only if the template binds a task input whose root it is.
    /// `lite` adds the checkpoint rule: the record's output root is nonzero iff the
    /// template's is (the program marks checkpoint records with a nonzero output root).
    function _fits(RecordCodec.Record memory r, RecordCodec.Record memory t, GenerateTask.Params memory p, bool lite)
        private
        pure
        returns (bool)
    {
        if (lite && (t.output == bytes32(0)) != (r.output == bytes32(0))) return false;
        if (keccak256(r.kind) != keccak256(t.kind)) return false;
        if (keccak256(abi.encode(r.attrs)) != keccak256(abi.encode(t.attrs))) return false;
        if (r.inputs.length != t.inputs.length) return false;
        for (uint256 i = 0; i < r.inputs.length; i++) {
            if (keccak256(r.inputs[i].name) != keccak256(t.inputs[i].name)) return false;
            if (r.inputs[i].source != t.inputs[i].source) return false;
        }
        for (uint256 i = 0; i < r.inputs.length; i++) {
            bytes32 got = r.inputs[i].source == EXTERNAL ? r.inputs[i].root : bytes32(0);
            bytes32 want = t.inputs[i].root;
            if (got == want) continue;
            uint256 n = _binding(want);
            if (n == 5 || GenerateTask.taskRoot(p, n) != got) return false;
        }
        return true;
    }

    /// @dev Which task input `root` binds (program.input_binding), 5 if none.
    function _binding(bytes32 root) private pure returns (uint256) {
        if (root == keccak256("refute/input/ids")) return 0;
        if (root == keccak256("refute/input/mask")) return 1;
        if (root == keccak256("refute/input/keep")) return 2;
        if (root == keccak256("refute/input/positions")) return 3;
        if (root == keccak256("refute/input/token_types")) return 4;
        return 5;
    }
}
