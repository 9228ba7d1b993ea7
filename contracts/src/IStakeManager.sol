// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title IStakeManager
/// @notice What the claim registry and dispute games need from the stake manager.
/// @dev Role model (docs/protocol.md, "Contracts"): an owner sets a game factory once;
///      the factory authorises game contracts; an authorised game may lock stake of
///      any account, and later unlock or slash only what it locked itself.
interface IStakeManager {
    /// @notice Stake of `account` that is bonded and not being unbonded.
    function stakeOf(address account) external view returns (uint256);

    /// @notice Stake of `account` that is slashable: bonded plus in unbonding.
    function slashableOf(address account) external view returns (uint256);

    /// @notice Total stake of `account` locked by open games.
    function lockedOf(address account) external view returns (uint256);

    /// @notice Seconds during which a posted claim root can be challenged.
    function challengeWindow() external view returns (uint64);

    /// @notice Longest possible dispute game, in seconds.
    function maxGameDuration() external view returns (uint64);

    /// @notice Whether `game` is an authorised dispute game.
    function isGame(address game) external view returns (bool);

    /// @notice Lock `amount` of `account`'s slashable stake for the calling game.
    function lock(address account, uint256 amount) external;

    /// @notice Release `amount` that the calling game locked on `account`.
    function unlock(address account, uint256 amount) external;

    /// @notice Slash `amount` that the calling game locked on `account`: `winnerShareBps`
    ///         basis points of it are credited to `winner`, the rest to the treasury.
    /// @return toWinner The amount credited to `winner`.
    /// @return toTreasury The amount credited to the treasury (always > 0).
    function slash(address account, uint256 amount, address winner, uint16 winnerShareBps)
        external
        returns (uint256 toWinner, uint256 toTreasury);
}
