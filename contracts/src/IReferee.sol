// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Claim} from "./ClaimRegistry.sol";
import {IProgramReferee} from "./IProgramReferee.sol";

/// @notice A Merkle-proven slice of a committed tensor: elements `[start, stop)` of the
///         tensor whose header is `header` (`u8 code || u8 ndim || u64be dims`,
///         docs/protocol.md "Header"), given as the consecutive 256-byte chunks that
///         cover them (the last one zero-padded) and the siblings completing those
///         leaves to the data root (the order of `merkle.RangeProof.siblings`).
struct Opening {
    bytes header;
    uint64 start;
    uint64 stop;
    bytes chunks;
    bytes32[] siblings;
}

/// @title IReferee
/// @notice The one-step decisions of a dispute game: the on-chain twin of
///         `refute.verifier.dispute.check_one_step`. Every function is `view`, answers
///         `defendantWrong` for well-formed evidence, and reverts with a custom error
///         on evidence that does not verify (the game treats a revert as the caller's
///         failed move, never as a decision).
interface IReferee {
    /// @notice Decide element `element` of the output of `record` (the defendant's record
    ///         the game's bisection reached, canonical encoding of docs/protocol.md
    ///         "Record encoding"). `outputHeader` is the defendant's output header (proven
    ///         by the game against the record's output root), `committed` the defendant's
    ///         element bytes (little-endian, `itemsize` long, from its revealed chunk),
    ///         `openings` one `Opening` per input of `record`, in record order, each
    ///         verified against that input's root and required to be exactly the slice
    ///         `element` depends on (`verifier.dispute.element_inputs`).
    /// @return defendantWrong True iff the operator gives other bits than `committed`,
    ///         or another output header.
    function decideCompute(
        bytes calldata record,
        bytes calldata outputHeader,
        uint64 element,
        bytes calldata committed,
        Opening[] calldata openings
    ) external view returns (bool defendantWrong);

    /// @notice Decide whether `record` (proven by the caller to be a record of the trace
    ///         with root `traceRoot`) fits its template of the program behind
    ///         `claim.modelDigest` (docs/protocol.md "Programs and the claim's model
    ///         digest"). `traceRoot` is the root the record and the evidence's source
    ///         records are proven under: either `claim.traceRoot` (the claim's lite trace,
    ///         "lite mode": a record's output root must also be nonzero exactly where its
    ///         template marks a checkpoint) or the defendant's full prefix trace root (a
    ///         game's template state: every root real, no checkpoint rule). `evidence`
    ///         carries the digest's preimage, the template and its proof, the task inputs
    ///         and the source records (ABI layout documented by the implementation).
    function decideTemplate(Claim calldata claim, bytes32 traceRoot, bytes calldata record, bytes calldata evidence)
        external
        view
        returns (bool defendantWrong);

    /// @notice Decide a token of a `smollm2.generate` claim whose trace is not in dispute:
    ///         `evidence` opens logits of the trace's last record and the task's preimage
    ///         (ABI layout documented by the implementation).
    function decideSampling(Claim calldata claim, bytes calldata evidence) external view returns (bool defendantWrong);

    /// @notice The element-program referee (`IProgramReferee`) the game uses for elements
    ///         too long to recompute in one transaction.
    function programReferee() external view returns (IProgramReferee);
}
