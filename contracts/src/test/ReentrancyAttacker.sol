// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @notice The subset of StakeManager the attacker drives.
interface IStakeManagerPayouts {
    function stake() external payable;
    function requestUnbond(uint256 amount) external;
    function withdrawUnbonded() external;
    function withdraw() external;
}

/// @title ReentrancyAttacker (test only)
/// @notice Stakes, unbonds and withdraws through a StakeManager, and tries to re-enter
///         `withdraw` from its `receive` hook. Modes: 0 accept the payment quietly;
///         1 re-enter and let the inner revert bubble up; 2 re-enter and swallow the
///         inner revert; 3 refuse every payment.
contract ReentrancyAttacker {
    IStakeManagerPayouts public immutable target;
    uint8 public mode;
    uint256 public reentries;
    uint256 public received;
    bytes public lastInnerError;

    /// @notice Emitted when a re-entry attempt came back (`ok`: the inner call succeeded).
    event Reentered(bool ok);

    constructor(IStakeManagerPayouts target_) {
        target = target_;
    }

    /// @notice Choose how `receive` behaves.
    function setMode(uint8 mode_) external {
        mode = mode_;
    }

    /// @notice Bond `msg.value` in the target.
    function stake() external payable {
        target.stake{value: msg.value}();
    }

    /// @notice Start unbonding `amount` in the target.
    function requestUnbond(uint256 amount) external {
        target.requestUnbond(amount);
    }

    /// @notice Move matured unbonding to credit in the target.
    function withdrawUnbonded() external {
        target.withdrawUnbonded();
    }

    /// @notice Pull this contract's credit from the target.
    function withdraw() external {
        target.withdraw();
    }

    receive() external payable {
        if (mode == 3) revert("refused");
        received += msg.value;
        if (mode == 1) {
            reentries += 1;
            target.withdraw();
        } else if (mode == 2) {
            reentries += 1;
            try target.withdraw() {
                emit Reentered(true);
            } catch (bytes memory err) {
                lastInnerError = err;
                emit Reentered(false);
            }
        }
    }
}
