// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Opening} from "./IReferee.sol";

/// @notice An input tensor's header with the data root that completes it to the tensor
///         root: `keccak256(0x03 || keccak256(0x00 || header) || dataRoot)`.
struct InputHead {
    bytes header;
    bytes32 dataRoot;
}

/// @title IProgramReferee
/// @notice Element programs (docs/protocol.md, "Element programs"): an output element
///         whose direct recomputation is too long for one transaction (attention) is
///         split into a fixed sequence of small states `S_0 .. S_n`; the game bisects
///         the defendant's states and the referee runs one step. The twin of
///         `refute.verifier.programs`. Every function is `view`; evidence that does not
///         verify reverts with a custom error.
interface IProgramReferee {
    /// @notice The program of element `element` of `record`'s output. `heads` are the
    ///         record's input headers in record order, each checked against its input
    ///         root. `headerWrong` is true iff `outputHeader` is not the operator's
    ///         output header (the defendant loses); else `steps` is `n` and `start` the
    ///         hash of `S_0`. Reverts `Unsupported` for kinds without a program.
    function programOf(bytes calldata record, bytes calldata outputHeader, uint64 element, InputHead[] calldata heads)
        external
        view
        returns (bool headerWrong, uint64 steps, bytes32 start);

    /// @notice The element bytes (little-endian) that final state `state` gives.
    function programOutput(bytes calldata record, bytes calldata state) external view returns (bytes memory);

    /// @notice Run step `step` of element `element`'s program from state `before`, reading
    ///         the step's input slices `openings` (one per input, record order, each
    ///         verified against its input root and required to be exactly
    ///         `programs.step_inputs`). Returns the hash of the next state.
    function programStep(
        bytes calldata record,
        uint64 element,
        uint64 step,
        bytes calldata before,
        Opening[] calldata openings
    ) external view returns (bytes32 afterHash);
}
