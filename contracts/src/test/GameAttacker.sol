// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Claim} from "../ClaimRegistry.sol";
import {RecordProof} from "../DisputeGames.sol";

/// @notice The subset of DisputeGames the attacker drives.
interface IDisputeGamesPayouts {
    function open(
        Claim calldata claim,
        bytes32 r,
        bytes32 s,
        uint8 v,
        bytes32[] calldata proof,
        RecordProof calldata pin,
        bytes32 treeRoot
    ) external payable returns (uint256);
    function withdraw() external;
}

/// @title GameAttacker (test only)
/// @notice A contract challenger that opens a game and, when paid out, tries to re-enter
///         `withdraw` from its `receive` hook. Modes: 0 accept quietly; 1 re-enter and let
///         the inner revert bubble up; 2 re-enter and swallow the inner revert.
contract GameAttacker {
    IDisputeGamesPayouts public immutable target;
    uint8 public mode;
    uint256 public received;
    uint256 public reentries;

    /// @notice A re-entry attempt came back (`ok`: the inner call succeeded).
    event Reentered(bool ok);

    /// @param target_ The DisputeGames contract.
    constructor(IDisputeGamesPayouts target_) {
        target = target_;
    }

    /// @notice Choose how `receive` behaves.
    function setMode(uint8 mode_) external {
        mode = mode_;
    }

    /// @notice Open a game as the challenger, bonding `msg.value`.
    function open(
        Claim calldata claim,
        bytes32 r,
        bytes32 s,
        uint8 v,
        bytes32[] calldata proof,
        RecordProof calldata pin,
        bytes32 treeRoot
    ) external payable returns (uint256) {
        return target.open{value: msg.value}(claim, r, s, v, proof, pin, treeRoot);
    }

    /// @notice Pull this contract's credit.
    function withdraw() external {
        target.withdraw();
    }

    receive() external payable {
        received += msg.value;
        if (mode == 1) {
            reentries += 1;
            target.withdraw();
        } else if (mode == 2) {
            reentries += 1;
            try target.withdraw() {
                emit Reentered(true);
            } catch {
                emit Reentered(false);
            }
        }
    }
}
