// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IStakeManager} from "./IStakeManager.sol";

/// @title StakeManager
/// @notice ETH stakes of provers and challengers, their unbonding, locks held by open
///         dispute games, slashing by resolved games, and pull payments.
/// @dev Every account's wei is in exactly one of three buckets: `stakeOf` (bonded),
///      `unbondingOf` (leaving, still slashable) or `creditOf` (owed, pulled with
///      `withdraw`). The totals of the buckets are tracked, and the contract's balance
///      equals their sum (`liabilities`) unless someone forces ETH in (selfdestruct).
///      Locks: `lockedOf(a) <= stakeOf(a) + unbondingOf(a).amount` always holds, so a
///      game can always slash what it locked. Unbonding takes longer than the claim
///      registry's challenge window plus the longest game, so a claim posted while
///      stake was bonded can be challenged and its game resolved before that stake
///      leaves. Roles: `owner` (the deployer) sets `gameFactory` once; the factory
///      authorises dispute games; a game may lock any account's free stake and unlock
///      or slash only what it locked itself.
contract StakeManager is IStakeManager {
    // ------------------------------------------------------------------ types

    /// @notice A pending unbonding: `amount` wei may be released at `readyAt`.
    struct Unbonding {
        uint256 amount;
        uint64 readyAt;
    }

    // -------------------------------------------------------------- constants

    /// @notice Basis-point denominator of `slash`'s winner share.
    uint16 public constant BPS = 10_000;

    // ------------------------------------------------------------- immutables

    /// @notice The deployer: its only power is to set the game factory, once.
    address public immutable owner;
    /// @notice Receives (as a credit) the part of every slash that the winner does not.
    address public immutable treasury;
    /// @inheritdoc IStakeManager
    uint64 public immutable override challengeWindow;
    /// @inheritdoc IStakeManager
    uint64 public immutable override maxGameDuration;
    /// @notice Seconds between `requestUnbond` and the earliest `withdrawUnbonded`;
    ///         strictly greater than `challengeWindow + maxGameDuration`.
    uint64 public immutable unbondingDelay;

    // ------------------------------------------------------------------ state

    /// @notice The contract allowed to authorise dispute games (zero until set).
    address public gameFactory;
    /// @inheritdoc IStakeManager
    mapping(address game => bool) public override isGame;

    /// @inheritdoc IStakeManager
    mapping(address account => uint256) public override stakeOf;
    mapping(address account => Unbonding) internal _unbonding;
    /// @notice Wei owed to `account`, pulled with `withdraw`.
    mapping(address account => uint256) public creditOf;
    /// @inheritdoc IStakeManager
    mapping(address account => uint256) public override lockedOf;
    /// @notice Wei of `account` locked by `game` (summed over games: `lockedOf`).
    mapping(address game => mapping(address account => uint256)) public lockedBy;

    /// @notice Sum of `stakeOf` over all accounts.
    uint256 public totalStaked;
    /// @notice Sum of unbonding amounts over all accounts.
    uint256 public totalUnbonding;
    /// @notice Sum of `creditOf` over all accounts.
    uint256 public totalCredits;

    bool private transient _entered;

    // ----------------------------------------------------------------- events

    /// @notice `account` bonded `amount`; its bonded stake is now `stake`.
    event Staked(address indexed account, uint256 amount, uint256 stake);
    /// @notice `account` started unbonding `amount`; all its unbonding (`unbonding`) is released at `readyAt`.
    event UnbondRequested(address indexed account, uint256 amount, uint256 unbonding, uint64 readyAt);
    /// @notice `account`'s matured unbonding `amount` was moved to its credit.
    event Unbonded(address indexed account, uint256 amount);
    /// @notice `account` pulled `amount` of credit.
    event Withdrawn(address indexed account, uint256 amount);
    /// @notice The owner set the game factory.
    event GameFactorySet(address indexed factory);
    /// @notice The game factory authorised `game`.
    event GameAuthorized(address indexed game);
    /// @notice `game` locked `amount` of `account`'s stake.
    event Locked(address indexed game, address indexed account, uint256 amount);
    /// @notice `game` released `amount` of its lock on `account`.
    event Unlocked(address indexed game, address indexed account, uint256 amount);
    /// @notice `game` slashed `amount` of `account`: `toWinner` credited to `winner`, `toTreasury` to the treasury.
    event Slashed(
        address indexed game,
        address indexed account,
        address indexed winner,
        uint256 amount,
        uint256 toWinner,
        uint256 toTreasury
    );

    // ----------------------------------------------------------------- errors

    /// @notice A zero address where a real one is required.
    error ZeroAddress();
    /// @notice A zero amount where a positive one is required.
    error ZeroAmount();
    /// @notice The unbonding delay must exceed `challengeWindow + maxGameDuration` (`minimumExclusive`).
    error UnbondingDelayTooShort(uint256 delay, uint256 minimumExclusive);
    /// @notice `account` has `stake` bonded, less than the `requested` amount.
    error InsufficientStake(address account, uint256 stake, uint256 requested);
    /// @notice `account` has nothing unbonding.
    error NoUnbonding(address account);
    /// @notice `account`'s unbonding is released at `readyAt`; it is `timestamp`.
    error UnbondingNotReady(address account, uint64 readyAt, uint256 timestamp);
    /// @notice Releasing would leave `account` with less slashable stake than its `locked` amount.
    error StakeLocked(address account, uint256 locked);
    /// @notice `account` has no credit to withdraw.
    error NothingToWithdraw(address account);
    /// @notice Sending `amount` to `to` failed.
    error TransferFailed(address to, uint256 amount);
    /// @notice A payout path was re-entered.
    error Reentrancy();
    /// @notice Only the owner may do this; `caller` is not it.
    error NotOwner(address caller);
    /// @notice The game factory is already `factory`.
    error GameFactoryAlreadySet(address factory);
    /// @notice Only the game factory may do this; `caller` is not it.
    error NotGameFactory(address caller);
    /// @notice `game` is already authorised.
    error GameAlreadyAuthorized(address game);
    /// @notice Only an authorised game may do this; `caller` is not one.
    error NotGame(address caller);
    /// @notice `account` has only `free` unlocked slashable stake, less than `requested`.
    error InsufficientFreeStake(address account, uint256 free, uint256 requested);
    /// @notice `game` holds a lock of `locked` on `account`, less than `requested`.
    error ExceedsLock(address game, address account, uint256 locked, uint256 requested);
    /// @notice The winner's share must be below `BPS` (the treasury must get something).
    error InvalidWinnerShare(uint16 winnerShareBps);

    // -------------------------------------------------------------- modifiers

    modifier onlyGame() {
        if (!isGame[msg.sender]) revert NotGame(msg.sender);
        _;
    }

    modifier nonReentrant() {
        if (_entered) revert Reentrancy();
        _entered = true;
        _;
        _entered = false;
    }

    // ------------------------------------------------------------ constructor

    /// @param treasury_ Receives the non-winner part of slashes (nonzero).
    /// @param challengeWindow_ Seconds a posted claim root stays challengeable.
    /// @param maxGameDuration_ Longest possible dispute game, in seconds.
    /// @param unbondingDelay_ Must be greater than `challengeWindow_ + maxGameDuration_`.
    constructor(address treasury_, uint64 challengeWindow_, uint64 maxGameDuration_, uint64 unbondingDelay_) {
        if (treasury_ == address(0)) revert ZeroAddress();
        uint256 minimum = uint256(challengeWindow_) + uint256(maxGameDuration_);
        if (unbondingDelay_ <= minimum) revert UnbondingDelayTooShort(unbondingDelay_, minimum);
        owner = msg.sender;
        treasury = treasury_;
        challengeWindow = challengeWindow_;
        maxGameDuration = maxGameDuration_;
        unbondingDelay = unbondingDelay_;
    }

    // ------------------------------------------------------------------ roles

    /// @notice Set the contract that authorises dispute games. Owner only, once.
    /// @param factory The game factory (an arbiter contract, or for tests any account).
    function setGameFactory(address factory) external {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        if (gameFactory != address(0)) revert GameFactoryAlreadySet(gameFactory);
        if (factory == address(0)) revert ZeroAddress();
        gameFactory = factory;
        emit GameFactorySet(factory);
    }

    /// @notice Authorise `game` to lock, unlock and slash stake. Game factory only.
    /// @param game The dispute-game contract.
    function authorizeGame(address game) external {
        if (msg.sender != gameFactory) revert NotGameFactory(msg.sender);
        if (game == address(0)) revert ZeroAddress();
        if (isGame[game]) revert GameAlreadyAuthorized(game);
        isGame[game] = true;
        emit GameAuthorized(game);
    }

    // ---------------------------------------------------------------- staking

    /// @notice Bond `msg.value` wei as the caller's stake.
    function stake() external payable {
        if (msg.value == 0) revert ZeroAmount();
        uint256 s = stakeOf[msg.sender] + msg.value;
        stakeOf[msg.sender] = s;
        totalStaked += msg.value;
        emit Staked(msg.sender, msg.value, s);
    }

    /// @notice Start unbonding `amount` of the caller's bonded stake. It stays slashable,
    ///         and all of the caller's unbonding is released `unbondingDelay` seconds
    ///         after its latest request.
    /// @param amount Wei to unbond (at most `stakeOf(msg.sender)`).
    function requestUnbond(uint256 amount) external {
        if (amount == 0) revert ZeroAmount();
        uint256 s = stakeOf[msg.sender];
        if (amount > s) revert InsufficientStake(msg.sender, s, amount);
        stakeOf[msg.sender] = s - amount;
        Unbonding storage u = _unbonding[msg.sender];
        u.amount += amount;
        uint64 readyAt = uint64(block.timestamp) + unbondingDelay;
        u.readyAt = readyAt;
        totalStaked -= amount;
        totalUnbonding += amount;
        emit UnbondRequested(msg.sender, amount, u.amount, readyAt);
    }

    /// @notice Move the caller's matured unbonding to its credit. Reverts while that
    ///         would leave less slashable stake than the caller's locks.
    function withdrawUnbonded() external {
        Unbonding memory u = _unbonding[msg.sender];
        if (u.amount == 0) revert NoUnbonding(msg.sender);
        if (block.timestamp < u.readyAt) revert UnbondingNotReady(msg.sender, u.readyAt, block.timestamp);
        uint256 locked = lockedOf[msg.sender];
        if (stakeOf[msg.sender] < locked) revert StakeLocked(msg.sender, locked);
        delete _unbonding[msg.sender];
        totalUnbonding -= u.amount;
        creditOf[msg.sender] += u.amount;
        totalCredits += u.amount;
        emit Unbonded(msg.sender, u.amount);
    }

    /// @notice Pull all of the caller's credit (unbonded stake, slash rewards).
    function withdraw() external nonReentrant {
        uint256 amount = creditOf[msg.sender];
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        creditOf[msg.sender] = 0;
        totalCredits -= amount;
        emit Withdrawn(msg.sender, amount);
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert TransferFailed(msg.sender, amount);
    }

    // ------------------------------------------------------------------ games

    /// @inheritdoc IStakeManager
    function lock(address account, uint256 amount) external override onlyGame {
        if (amount == 0) revert ZeroAmount();
        uint256 locked = lockedOf[account];
        uint256 free = _slashable(account) - locked;
        if (amount > free) revert InsufficientFreeStake(account, free, amount);
        lockedOf[account] = locked + amount;
        lockedBy[msg.sender][account] += amount;
        emit Locked(msg.sender, account, amount);
    }

    /// @inheritdoc IStakeManager
    function unlock(address account, uint256 amount) external override onlyGame {
        if (amount == 0) revert ZeroAmount();
        _releaseLock(account, amount);
        emit Unlocked(msg.sender, account, amount);
    }

    /// @inheritdoc IStakeManager
    /// @dev Takes bonded stake first, then unbonding stake.
    function slash(address account, uint256 amount, address winner, uint16 winnerShareBps)
        external
        override
        onlyGame
        returns (uint256 toWinner, uint256 toTreasury)
    {
        if (amount == 0) revert ZeroAmount();
        if (winner == address(0)) revert ZeroAddress();
        if (winnerShareBps >= BPS) revert InvalidWinnerShare(winnerShareBps);
        _releaseLock(account, amount);

        uint256 s = stakeOf[account];
        uint256 fromStake = amount <= s ? amount : s;
        uint256 fromUnbonding = amount - fromStake; // <= unbonding, by the lock invariant
        if (fromStake != 0) {
            stakeOf[account] = s - fromStake;
            totalStaked -= fromStake;
        }
        if (fromUnbonding != 0) {
            Unbonding storage u = _unbonding[account];
            uint256 left = u.amount - fromUnbonding;
            if (left == 0) delete _unbonding[account];
            else u.amount = left;
            totalUnbonding -= fromUnbonding;
        }

        toWinner = amount * winnerShareBps / BPS;
        toTreasury = amount - toWinner; // > 0 because winnerShareBps < BPS
        creditOf[winner] += toWinner;
        creditOf[treasury] += toTreasury;
        totalCredits += amount;
        emit Slashed(msg.sender, account, winner, amount, toWinner, toTreasury);
    }

    // ------------------------------------------------------------------ views

    /// @notice `account`'s unbonding amount and the time it is released (0, 0 if none).
    function unbondingOf(address account) external view returns (uint256 amount, uint64 readyAt) {
        Unbonding memory u = _unbonding[account];
        return (u.amount, u.readyAt);
    }

    /// @inheritdoc IStakeManager
    function slashableOf(address account) external view override returns (uint256) {
        return _slashable(account);
    }

    /// @notice Slashable stake of `account` not locked by any game.
    function freeOf(address account) external view returns (uint256) {
        return _slashable(account) - lockedOf[account];
    }

    /// @notice What the contract owes: `totalStaked + totalUnbonding + totalCredits`.
    function liabilities() public view returns (uint256) {
        return totalStaked + totalUnbonding + totalCredits;
    }

    /// @notice The contract's balance and its liabilities; equal unless ETH was forced in.
    function solvency() external view returns (uint256 balance, uint256 owed) {
        return (address(this).balance, liabilities());
    }

    /// @notice Whether the balance covers the liabilities.
    function isSolvent() external view returns (bool) {
        return address(this).balance >= liabilities();
    }

    // --------------------------------------------------------------- internal

    function _slashable(address account) internal view returns (uint256) {
        return stakeOf[account] + _unbonding[account].amount;
    }

    function _releaseLock(address account, uint256 amount) internal {
        uint256 mine = lockedBy[msg.sender][account];
        if (amount > mine) revert ExceedsLock(msg.sender, account, mine, amount);
        lockedBy[msg.sender][account] = mine - amount;
        lockedOf[account] -= amount;
    }
}
