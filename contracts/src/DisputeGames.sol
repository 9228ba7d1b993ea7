// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Claim, ClaimRegistry} from "./ClaimRegistry.sol";
import {IStakeManager} from "./IStakeManager.sol";
import {IReferee, Opening} from "./IReferee.sol";
import {IProgramReferee, InputHead} from "./IProgramReferee.sol";

/// @notice A trace record proven as a leaf of a trace tree: `record` (canonical encoding,
///         docs/protocol.md "Record encoding"; its index is read from bytes 2..10,
///         big-endian) is leaf `index` of a tree of `count` records whose trace root is
///         `keccak256(0x23 || u64be(count) || treeRoot)`; `siblings` from the leaf up,
///         exactly ceil(log2(count)) of them.
struct RecordProof {
    bytes record;
    uint64 count;
    bytes32[] siblings;
}

/// @title DisputeGames
/// @notice Every bisection game between a claim's prover (the defendant) and a
///         challenger, in one contract (docs/protocol.md, "Dispute game"). The contract
///         is the StakeManager's game factory and its only authorised game.
/// @dev An explicit state machine per game (`State`), an event on every transition,
///      chess clocks, bonds held here as an internal ledger paid out as credits
///      (`withdraw`, pull), and prover stake locked and slashed through the StakeManager.
///      Solvency: `address(this).balance == totalBonds + totalCredits` (unless ETH is
///      forced in). The referee is only ever `staticcall`ed (its functions are `view`).
///      Bounded work per call: at most `MAX_RECORD_DEPTH` siblings per record proof,
///      `MAX_CHUNK_DEPTH` per chunk proof, 8 words per chunk comparison.
///      Claims commit a checkpointed ("lite") trace: records that are not checkpoints
///      carry output root zero ("deferred"). A game starts from one checkpoint record `i`
///      of the claim's lite trace that the challenger pins, and bisects the two parties'
///      full traces (every root) of the prefix of records 0..i.
contract DisputeGames {
    // ------------------------------------------------------------------ types

    /// @notice Where a game stands; the comment names the party to move.
    enum State {
        None, //                 no such game
        AwaitResponse, //        defendant: post bond, commit its full prefix trace, prove the pinned record in it
        RecordBisectD, //        defendant: reveal the children of its current trace node
        RecordBisectC, //        challenger: reveal both parties' children
        RecordRevealD, //        defendant: reveal its record at the leaf
        RecordRevealC, //        challenger: reveal both records
        Template, //             anyone (challenger's clock): the referee's template decision
        HeaderD, //              defendant: reveal its output header and data root
        HeaderC, //              challenger: reveal its output header and data root
        TensorBisectD, //        defendant: reveal the children of its current data node
        TensorBisectC, //        challenger: reveal both parties' children
        ChunkD, //               defendant: reveal its chunk at the leaf
        ChunkC, //               challenger: reveal both chunks
        ElementD, //             defendant (headers differ): open element 0
        OneStep, //              challenger: the referee's compute decision, or open the element's program
        DefendantWon, //         final
        ChallengerWon, //        final
        ProgramEndD, //          defendant: post its program's final state (its output must be the element)
        ProgramBisectD, //       defendant: post the hashes of its states at the section points
        ProgramBisectC, //       challenger: name the first of them it disputes
        ProgramStep //           challenger: the referee runs the one disputed step
    }

    /// @notice One game. Packed into ten slots.
    struct Game {
        // slot 0
        address prover;
        uint64 lastMoveAt;
        State state;
        uint8 level; // level of nodeD/nodeC in the tree being bisected (0 = leaves)
        uint8 itemsize; // defendant's output dtype itemsize
        // slot 1
        address challenger;
        uint32 clockD; // seconds left on the defendant's clock
        uint32 clockC; // seconds left on the challenger's clock
        // slot 2
        uint64 countD; // records in the defendant's prefix tree (= countC); program phase: lo, the last step both agree on
        uint64 countC; // records in the challenger's prefix tree (pinned index + 1); program phase: hi, the first step in dispute
        uint64 index; // node index on `level`; at the end: record, then chunk, then element
        uint64 numelD; // defendant's output numel
        // slots 3..9
        bytes32 claimHash;
        bytes32 nodeD; // defendant's current node (pinned output root, tree node, output root, data node); program: hash of S_lo
        bytes32 nodeC; // challenger's; program: the defendant's hash of S_hi
        uint128 bondC;
        uint128 bondD;
        bytes32 recordHashD; // keccak256 of the defendant's disputed record
        bytes32 headerHashD; // keccak256 of the defendant's output header
        // record phase and Template: the defendant's full prefix tree root (its trace root
        // is `_traceRoot(countD, committed)`); from `_found` on: the defendant's element
        // bytes, left-aligned, `itemsize` long; program: hash of the posted hashes
        bytes32 committed;
    }

    /// @notice Per claim hash: the open game (id + 1, 0 if none), whether its prover was
    ///         slashed for it, and until when a new game may open after a lost challenge.
    struct ClaimState {
        uint64 openGame;
        bool slashed;
        uint64 reopenUntil;
    }

    // -------------------------------------------------------------- constants

    /// @notice Longest trace accepted: 2^16 records.
    uint8 public constant MAX_RECORD_DEPTH = 16;
    /// @notice Largest output tensor bisected: 2^32 chunks.
    uint8 public constant MAX_CHUNK_DEPTH = 32;
    /// @notice Longest element program accepted: 2^24 steps.
    uint8 public constant MAX_PROGRAM_DEPTH = 24;
    /// @notice A program round splits the disputed steps into this many sections (the
    ///         defendant posts the state hashes at the 15 points between them), so a
    ///         program of n steps takes ceil(log16(n)) rounds.
    uint64 public constant PROGRAM_SECTIONS = 16;
    /// @notice Most moves one party makes in a game (respond or open, record rounds, record
    ///         reveal, header, chunk rounds, chunk, element, one-step or program
    ///         opening and end state, program rounds, program step).
    uint256 public constant MAX_MOVES_PER_PARTY =
        1 + MAX_RECORD_DEPTH + 1 + 1 + MAX_CHUNK_DEPTH + 1 + 1 + 1 + MAX_PROGRAM_DEPTH / 4 + 1;
    /// @notice A clock must allow at least this many seconds per move.
    uint256 public constant MIN_SECONDS_PER_MOVE = 12;
    /// @notice Chunk size of tensor data trees.
    uint256 internal constant CHUNK_BYTES = 256;
    uint256 internal constant MAX_NUMEL_BYTES = uint256(1) << 40; // 2^32 chunks

    // ------------------------------------------------------------- immutables

    /// @notice Stakes, locks and slashes.
    IStakeManager public immutable stakeManager;
    /// @notice Verifies claims and says when their rounds stop being challengeable.
    ClaimRegistry public immutable registry;
    /// @notice The one-step referee (zero: none deployed; decisions revert `NoReferee`).
    IReferee public immutable referee;
    /// @notice Smallest challenger bond; the defendant's bond is exactly this.
    uint256 public immutable minBond;
    /// @notice Prover stake locked by a game and slashed if the prover loses.
    uint256 public immutable slashAmount;
    /// @notice Basis points of a slash credited to the winning challenger (< 10000).
    uint16 public immutable winnerShareBps;
    /// @notice Each party's chess-clock budget, in seconds.
    uint32 public immutable clockBudget;
    /// @notice After a challenger loses, seconds during which a new game on the same
    ///         claim may open even if the round's challenge window is over.
    uint64 public immutable reopenGrace;

    // ------------------------------------------------------------------ state

    /// @notice Games by id (ids start at 1).
    mapping(uint256 gameId => Game) internal _games;
    /// @notice Per-claim bookkeeping.
    mapping(bytes32 claimHash => ClaimState) public claimState;
    /// @notice Wei owed to `account` (bonds won or returned), pulled with `withdraw`.
    mapping(address account => uint256) public creditOf;
    /// @notice Number of games opened.
    uint256 public gameCount;
    /// @notice Sum of bonds held by unresolved games.
    uint256 public totalBonds;
    /// @notice Sum of `creditOf` over all accounts.
    uint256 public totalCredits;

    bool private transient _entered;

    // ----------------------------------------------------------------- events

    /// @notice This contract authorised itself as a game in the StakeManager.
    event Activated(address indexed stakeManager);
    /// @notice `challenger` opened game `gameId` against `claimHash` of `prover`, bonding
    ///         `bond`: it pinned record `pinned` of the claim's lite trace (output root
    ///         `pinnedOutput`) and committed its own full trace of records 0..`pinned`
    ///         under tree root `treeRoot`.
    event GameOpened(
        uint256 indexed gameId,
        bytes32 indexed claimHash,
        address indexed prover,
        address challenger,
        uint256 bond,
        uint64 pinned,
        bytes32 pinnedOutput,
        bytes32 treeRoot
    );
    /// @notice The defendant bonded `bond` and committed its full prefix trace of `count`
    ///         records under tree root `treeRoot`.
    event Responded(uint256 indexed gameId, uint256 bond, uint64 count, bytes32 treeRoot);
    /// @notice Game `gameId` moved from `from` to `to` (every transition).
    event StateChanged(uint256 indexed gameId, State from, State to);
    /// @notice A party revealed the children of its node `index` on `level` (trace or data tree).
    event ChildrenRevealed(uint256 indexed gameId, address indexed party, uint8 level, uint64 index, bytes32 left, bytes32 right);
    /// @notice The bisection now stands on node `index` of `level`.
    event Descended(uint256 indexed gameId, uint8 level, uint64 index);
    /// @notice The defendant revealed its record `index` (the challenger re-supplies it).
    event RecordRevealed(uint256 indexed gameId, uint64 index, bytes record);
    /// @notice The defendant revealed its output header and data root.
    event HeaderRevealed(uint256 indexed gameId, address indexed party, bytes header, bytes32 dataRoot);
    /// @notice The defendant revealed its chunk `index` (the challenger re-supplies it).
    event ChunkRevealed(uint256 indexed gameId, uint64 index, bytes chunk);
    /// @notice The game found element `element`; the defendant committed `committed`.
    event ElementFound(uint256 indexed gameId, uint64 element, bytes committed);
    /// @notice The challenger opened the program of the disputed element: `steps` steps from
    ///         the state hashed `start`.
    event ProgramOpened(uint256 indexed gameId, uint64 steps, bytes32 start);
    /// @notice The defendant posted its final state (after step `step`).
    event ProgramEndPosted(uint256 indexed gameId, uint64 step, bytes state);
    /// @notice The defendant posted its state hashes at the section points of (`lo`, `hi`).
    event ProgramHashesPosted(uint256 indexed gameId, uint64 lo, uint64 hi, bytes32[] hashes);
    /// @notice The program bisection now stands between agreed step `lo` and disputed `hi`.
    event ProgramNarrowed(uint256 indexed gameId, uint64 lo, uint64 hi);
    /// @notice Game `gameId` ended: `defendantWon`, for `reason`.
    event GameResolved(uint256 indexed gameId, bool defendantWon, string reason);
    /// @notice A sampling challenge of `claimHash` by `challenger` succeeded.
    event SamplingRefuted(bytes32 indexed claimHash, address indexed prover, address indexed challenger);
    /// @notice A template challenge of `claimHash` by `challenger` succeeded: record `index`
    ///         of the claim's lite trace does not fit its template.
    event TemplateRefuted(bytes32 indexed claimHash, address indexed prover, address indexed challenger, uint64 index);
    /// @notice `account` was credited `amount`.
    event Credited(address indexed account, uint256 amount);
    /// @notice `account` pulled `amount`.
    event Withdrawn(address indexed account, uint256 amount);

    // ----------------------------------------------------------------- errors

    /// @notice A zero address where a real one is required.
    error ZeroAddress();
    /// @notice Constructor parameter `name` is out of range.
    error BadParameter(bytes32 name);
    /// @notice Two clocks of `clockBudget` exceed the StakeManager's `maxGameDuration`.
    error GameTooLong(uint256 clocks, uint256 maxGameDuration);
    /// @notice No game `gameId`.
    error NoGame(uint256 gameId);
    /// @notice Game `gameId` is in `state`; the call needs `expected`.
    error WrongState(uint256 gameId, State state, State expected);
    /// @notice `caller` is not the party that moves now (`party`).
    error NotParty(address caller, address party);
    /// @notice The mover's clock ran out (`elapsed` > `left`): call `timeout`.
    error ClockExpired(uint256 gameId, uint256 elapsed, uint256 left);
    /// @notice The party to move still has time (`elapsed` <= `left`).
    error ClockRunning(uint256 gameId, uint256 elapsed, uint256 left);
    /// @notice The bond `sent` is not acceptable (`required`: minimum for challengers, exact for defendants).
    error WrongBond(uint256 sent, uint256 required);
    /// @notice The claim's round can no longer be challenged (`deadline` passed).
    error ChallengeWindowOver(bytes32 claimHash, uint256 deadline);
    /// @notice A game over `claimHash` is open (`gameId`).
    error ClaimInDispute(bytes32 claimHash, uint256 gameId);
    /// @notice The prover was already slashed for `claimHash`.
    error AlreadySlashed(bytes32 claimHash);
    /// @notice A trace count of `count` is not in `[1, 2^MAX_RECORD_DEPTH]`.
    error BadCount(uint64 count);
    /// @notice A revealed opening does not hash to the committed node (`what`).
    error BadOpening(bytes32 what);
    /// @notice A record is malformed for its position (`what`).
    error BadRecord(bytes32 what);
    /// @notice A header is malformed or too large (`what`).
    error BadHeader(bytes32 what);
    /// @notice No referee is configured.
    error NoReferee();
    /// @notice The referee's program for the element has `steps` steps (1 to 2^MAX_PROGRAM_DEPTH).
    error BadProgram(uint64 steps);
    /// @notice The given claim is not the game's.
    error WrongClaim(bytes32 claimHash);
    /// @notice The referee did not find the defendant wrong.
    error ChallengeFailed();
    /// @notice This contract is not (yet) the StakeManager's game factory, or already active.
    error NotActivatable();
    /// @notice `account` has no credit.
    error NothingToWithdraw(address account);
    /// @notice Sending `amount` to `to` failed.
    error TransferFailed(address to, uint256 amount);
    /// @notice A payout path was re-entered.
    error Reentrancy();

    // -------------------------------------------------------------- modifiers

    modifier nonReentrant() {
        if (_entered) revert Reentrancy();
        _entered = true;
        _;
        _entered = false;
    }

    // ------------------------------------------------------------ constructor

    /// @param stakeManager_ The StakeManager (its owner must make this contract its game factory).
    /// @param registry_ The ClaimRegistry reading that StakeManager.
    /// @param referee_ The one-step referee (zero if none yet).
    /// @param minBond_ Smallest challenger bond, and the defendant's bond (> 0).
    /// @param slashAmount_ Prover stake locked per game and slashed on loss (> 0).
    /// @param winnerShareBps_ Share of a slash credited to the challenger (< 10000).
    /// @param clockBudget_ Each party's clock, seconds; `2 * clockBudget_` must fit
    ///        `stakeManager_.maxGameDuration()` and allow `MIN_SECONDS_PER_MOVE` per move.
    /// @param reopenGrace_ Seconds a claim stays challengeable after a challenger lost.
    constructor(
        IStakeManager stakeManager_,
        ClaimRegistry registry_,
        IReferee referee_,
        uint256 minBond_,
        uint256 slashAmount_,
        uint16 winnerShareBps_,
        uint32 clockBudget_,
        uint64 reopenGrace_
    ) {
        if (address(stakeManager_) == address(0) || address(registry_) == address(0)) revert ZeroAddress();
        if (address(registry_.stakeManager()) != address(stakeManager_)) revert BadParameter("registry");
        if (minBond_ == 0 || minBond_ >= 2 ** 127) revert BadParameter("minBond");
        if (slashAmount_ == 0) revert BadParameter("slashAmount");
        if (winnerShareBps_ >= 10_000) revert BadParameter("winnerShareBps");
        if (uint256(clockBudget_) < MAX_MOVES_PER_PARTY * MIN_SECONDS_PER_MOVE) revert BadParameter("clockBudget");
        uint256 maxDuration = stakeManager_.maxGameDuration();
        if (2 * uint256(clockBudget_) > maxDuration) revert GameTooLong(2 * uint256(clockBudget_), maxDuration);
        stakeManager = stakeManager_;
        registry = registry_;
        referee = referee_;
        minBond = minBond_;
        slashAmount = slashAmount_;
        winnerShareBps = winnerShareBps_;
        clockBudget = clockBudget_;
        reopenGrace = reopenGrace_;
    }

    /// @notice Authorise this contract as a game in the StakeManager, once the StakeManager's
    ///         owner has made it the game factory. Anyone may call it, once.
    function activate() external {
        if (stakeManager.isGame(address(this))) revert NotActivatable();
        // reverts with the StakeManager's NotGameFactory unless this is the factory
        IStakeManagerFactory(address(stakeManager)).authorizeGame(address(this));
        emit Activated(address(stakeManager));
    }

    // ------------------------------------------------------------------- open

    /// @notice Open a game against `claim` (signed `r, s, v`, leaf `claim.step` of its
    ///         prover's round root under `proof`). `pin` is the defendant's record `i` of
    ///         the claim's lite trace, proven under `claim.traceRoot`; it must be a
    ///         checkpoint (nonzero output root X; a deferred record commits to nothing).
    ///         The caller commits `treeRoot`, the tree root of its own full trace of
    ///         records 0..i (i + 1 records). Bonds `msg.value >= minBond` and locks
    ///         `slashAmount` of the prover's stake. The caller becomes the challenger.
    /// @return gameId The new game's id.
    function open(
        Claim calldata claim,
        bytes32 r,
        bytes32 s,
        uint8 v,
        bytes32[] calldata proof,
        RecordProof calldata pin,
        bytes32 treeRoot
    ) external payable returns (uint256 gameId) {
        if (msg.value < minBond || msg.value >= 2 ** 127) revert WrongBond(msg.value, minBond);
        bytes32 h = _checkChallengeable(claim, r, s, v, proof);
        uint64 i = _verifyRecordProof(claim.traceRoot, pin);
        bytes32 x = _output(pin.record);
        if (x == bytes32(0)) revert BadOpening("deferred");

        gameId = ++gameCount;
        Game storage g = _games[gameId];
        g.prover = claim.prover;
        g.challenger = msg.sender;
        g.lastMoveAt = uint64(block.timestamp);
        g.state = State.AwaitResponse;
        g.clockD = clockBudget;
        g.clockC = clockBudget;
        g.countC = i + 1;
        g.claimHash = h;
        g.nodeD = x;
        g.nodeC = treeRoot;
        g.bondC = uint128(msg.value);
        claimState[h].openGame = uint64(gameId);
        totalBonds += msg.value;

        emit GameOpened(gameId, h, claim.prover, msg.sender, msg.value, i, x, treeRoot);
        emit StateChanged(gameId, State.None, State.AwaitResponse);
        stakeManager.lock(claim.prover, slashAmount); // reverts if the prover's free stake is short
    }

    /// @notice Refute a token of a generation claim whose trace is not in dispute, in one
    ///         call: the referee's `decideSampling(claim, evidence)` is a pure check of
    ///         committed data, so no defendant move and no bond are needed. Reverts with
    ///         `ChallengeFailed` unless the referee finds the prover wrong; on success the
    ///         prover is slashed `slashAmount` (the caller gets `winnerShareBps` of it).
    function openSampling(
        Claim calldata claim,
        bytes32 r,
        bytes32 s,
        uint8 v,
        bytes32[] calldata proof,
        bytes calldata evidence
    ) external {
        bytes32 h = _checkChallengeable(claim, r, s, v, proof);
        if (address(referee) == address(0)) revert NoReferee();
        if (!referee.decideSampling(claim, evidence)) revert ChallengeFailed();
        emit SamplingRefuted(h, claim.prover, msg.sender);
        _slashAtOnce(h, claim.prover);
    }

    /// @notice Refute a record of the claim's lite trace that does not fit its template,
    ///         in one call: `pin` is the defendant's record, proven under `claim.traceRoot`,
    ///         and the referee's `decideTemplate(claim, claim.traceRoot, record, evidence)`
    ///         (lite mode: the wiring and checkpoint rules against the claim's own trace)
    ///         is a pure check of committed data, so no defendant move and no bond are
    ///         needed. Reverts with `ChallengeFailed` unless the referee finds the prover
    ///         wrong; on success the prover is slashed `slashAmount` (the caller gets
    ///         `winnerShareBps` of it).
    function openTemplate(
        Claim calldata claim,
        bytes32 r,
        bytes32 s,
        uint8 v,
        bytes32[] calldata proof,
        RecordProof calldata pin,
        bytes calldata evidence
    ) external {
        bytes32 h = _checkChallengeable(claim, r, s, v, proof);
        if (address(referee) == address(0)) revert NoReferee();
        uint64 i = _verifyRecordProof(claim.traceRoot, pin);
        if (!referee.decideTemplate(claim, claim.traceRoot, pin.record, evidence)) revert ChallengeFailed();
        emit TemplateRefuted(h, claim.prover, msg.sender, i);
        _slashAtOnce(h, claim.prover);
    }

    // ------------------------------------------------------------ defendant

    /// @notice The defendant's answer: bond exactly `minBond`, commit `treeRoot`, the tree
    ///         root of its full trace of the pinned prefix (`countC` records, the pinned
    ///         index + 1), and prove its full `record` at the pinned index (the last leaf)
    ///         under it with `siblings` (leaf up); that record's output root must be the
    ///         pinned one. A `treeRoot` equal to the challenger's ends the game at once for
    ///         the defendant ("same prefix"); else the bisection of the two prefixes starts.
    function respond(uint256 gameId, bytes32 treeRoot, bytes calldata record, bytes32[] calldata siblings)
        external
        payable
    {
        Game storage g = _move(gameId, State.AwaitResponse, true);
        if (msg.value != minBond) revert WrongBond(msg.value, minBond);
        uint64 count = g.countC;
        if (_provenRecord(_traceRoot(count, treeRoot), record, count, siblings) != count - 1) {
            revert BadRecord("index");
        }
        if (_output(record) != g.nodeD) revert BadOpening("pinned output");
        g.bondD = uint128(msg.value);
        totalBonds += msg.value;
        emit Responded(gameId, msg.value, count, treeRoot);
        if (treeRoot == g.nodeC) return _resolve(gameId, g, true, "same prefix");
        g.countD = count;
        g.committed = treeRoot;
        g.nodeD = treeRoot;
        uint8 depth = _depth(count);
        g.level = depth;
        _goto(gameId, g, depth == 0 ? State.RecordRevealD : State.RecordBisectD);
    }

    /// @notice Record or tensor bisection, defendant: reveal the two children of its
    ///         current node (`keccak256(prefix || left || right)` must be that node).
    function revealChildren(uint256 gameId, bytes32 left, bytes32 right) external {
        Game storage g = _games[gameId];
        bool records = g.state == State.RecordBisectD;
        g = _move(gameId, records ? State.RecordBisectD : State.TensorBisectD, true);
        if (_node(records ? bytes1(0x22) : bytes1(0x02), left, right) != g.nodeD) revert BadOpening("children");
        emit ChildrenRevealed(gameId, msg.sender, g.level - 1, g.index * 2, left, right);
        _goto(gameId, g, records ? State.RecordBisectC : State.TensorBisectC);
    }

    /// @notice Record leaf, defendant: reveal its record at the leaf the bisection reached
    ///         (`keccak256(0x21 || keccak256(record))` must be the leaf).
    function revealRecord(uint256 gameId, bytes calldata record) external {
        Game storage g = _move(gameId, State.RecordRevealD, true);
        if (_leaf(record) != g.nodeD) revert BadOpening("record");
        _checkRecord(record, g.index);
        emit RecordRevealed(gameId, g.index, record);
        _goto(gameId, g, State.RecordRevealC);
    }

    /// @notice Tensor phase, defendant: reveal its output `header` and data root
    ///         (`keccak256(0x03 || keccak256(0x00 || header) || dataRoot)` must be its output root).
    function revealHeader(uint256 gameId, bytes calldata header, bytes32 dataRoot) external {
        Game storage g = _move(gameId, State.HeaderD, true);
        bytes32 hh = keccak256(header);
        if (_tensorRoot(header, dataRoot) != g.nodeD) revert BadOpening("output root");
        (uint8 itemsize, uint64 numel) = _parseHeader(header);
        g.headerHashD = hh;
        g.itemsize = itemsize;
        g.numelD = numel;
        g.nodeD = dataRoot;
        emit HeaderRevealed(gameId, msg.sender, header, dataRoot);
        _goto(gameId, g, State.HeaderC);
    }

    /// @notice Tensor leaf, defendant: reveal its chunk at the leaf (`keccak256(0x01 || chunk)`).
    function revealChunk(uint256 gameId, bytes calldata chunk) external {
        Game storage g = _move(gameId, State.ChunkD, true);
        if (chunk.length != CHUNK_BYTES || _chunkLeaf(chunk) != g.nodeD) revert BadOpening("chunk");
        emit ChunkRevealed(gameId, g.index, chunk);
        _goto(gameId, g, State.ChunkC);
    }

    /// @notice Headers differ, defendant: open element 0 of its output (chunk 0 and its
    ///         siblings, leaf up, against its data root).
    function openElement(uint256 gameId, bytes calldata chunk, bytes32[] calldata siblings) external {
        Game storage g = _move(gameId, State.ElementD, true);
        uint8 depth = _chunkDepth(uint256(g.numelD) * g.itemsize);
        if (chunk.length != CHUNK_BYTES || siblings.length != depth) revert BadOpening("element 0");
        bytes32 acc = _chunkLeaf(chunk);
        for (uint256 k; k < depth; ++k) {
            acc = _node(0x02, acc, siblings[k]);
        }
        if (acc != g.nodeD) revert BadOpening("element 0");
        _found(gameId, g, 0, bytes32(chunk[0:32]));
    }

    /// @notice Program phase, defendant: post its final state `state`; the referee's output
    ///         of it must be the element it committed (re-supply the disputed `record`).
    function postProgramEnd(uint256 gameId, bytes calldata record, bytes calldata state) external {
        Game storage g = _move(gameId, State.ProgramEndD, true);
        if (keccak256(record) != g.recordHashD) revert BadOpening("record");
        bytes memory out = referee.programReferee().programOutput(record, state);
        if (keccak256(out) != keccak256(_committedBytes(g))) revert BadOpening("program end");
        g.nodeC = keccak256(state);
        emit ProgramEndPosted(gameId, g.countC, state);
        _goto(gameId, g, g.countC - g.countD == 1 ? State.ProgramStep : State.ProgramBisectD);
    }

    /// @notice Program round, defendant: post the hashes of its states after the steps
    ///         `lo + (hi - lo) * i / m`, `i = 1 .. m - 1`, `m = min(PROGRAM_SECTIONS, hi - lo)`.
    function postProgramHashes(uint256 gameId, bytes32[] calldata hashes) external {
        Game storage g = _move(gameId, State.ProgramBisectD, true);
        if (hashes.length != _sections(g) - 1) revert BadOpening("hash count");
        g.committed = keccak256(abi.encodePacked(hashes));
        emit ProgramHashesPosted(gameId, g.countD, g.countC, hashes);
        _goto(gameId, g, State.ProgramBisectC);
    }

    // ----------------------------------------------------------- challenger

    /// @notice Bisection, challenger: re-supply the defendant's children (`leftD`, `rightD`,
    ///         as revealed) and reveal its own; the game descends left if the left children
    ///         differ, else right.
    function revealChildrenC(uint256 gameId, bytes32 leftD, bytes32 rightD, bytes32 leftC, bytes32 rightC)
        external
    {
        Game storage g = _games[gameId];
        bool records = g.state == State.RecordBisectC;
        g = _move(gameId, records ? State.RecordBisectC : State.TensorBisectC, false);
        bytes1 prefix = records ? bytes1(0x22) : bytes1(0x02);
        if (_node(prefix, leftD, rightD) != g.nodeD) revert BadOpening("defendant's children");
        if (_node(prefix, leftC, rightC) != g.nodeC) revert BadOpening("children");
        emit ChildrenRevealed(gameId, msg.sender, g.level - 1, g.index * 2, leftC, rightC);
        uint8 level = g.level - 1;
        uint64 index;
        if (leftD != leftC) {
            (index, g.nodeD, g.nodeC) = (g.index * 2, leftD, leftC);
        } else {
            (index, g.nodeD, g.nodeC) = (g.index * 2 + 1, rightD, rightC);
        }
        g.level = level;
        g.index = index;
        emit Descended(gameId, level, index);
        if (level != 0) {
            _goto(gameId, g, records ? State.RecordBisectD : State.TensorBisectD);
        } else if (records) {
            if (index >= g.countD) return _padding(gameId, g);
            _goto(gameId, g, State.RecordRevealD);
        } else {
            if (uint256(index) * CHUNK_BYTES >= uint256(g.numelD) * g.itemsize) return _padding(gameId, g);
            _goto(gameId, g, State.ChunkD);
        }
    }

    /// @notice Record leaf, challenger: re-supply the defendant's record and reveal its own.
    ///         Records equal but for the last 32 bytes (the output root) go to the tensor
    ///         phase; records that differ elsewhere go to the template decision.
    function revealRecordC(uint256 gameId, bytes calldata recordD, bytes calldata recordC) external {
        Game storage g = _move(gameId, State.RecordRevealC, false);
        if (_leaf(recordD) != g.nodeD) revert BadOpening("defendant's record");
        if (_leaf(recordC) != g.nodeC) revert BadOpening("record");
        _checkRecord(recordC, g.index);
        g.recordHashD = keccak256(recordD);
        uint256 n = recordD.length;
        if (n == recordC.length && keccak256(recordD[:n - 32]) == keccak256(recordC[:n - 32])) {
            g.nodeD = _output(recordD);
            g.nodeC = _output(recordC);
            _goto(gameId, g, State.HeaderD);
        } else {
            _goto(gameId, g, State.Template);
        }
    }

    /// @notice Tensor phase, challenger: reveal its output header and data root. Headers
    ///         that differ go to the one-step at element 0; equal ones to the data trees.
    function revealHeaderC(uint256 gameId, bytes calldata header, bytes32 dataRoot) external {
        Game storage g = _move(gameId, State.HeaderC, false);
        if (_tensorRoot(header, dataRoot) != g.nodeC) revert BadOpening("output root");
        _parseHeader(header);
        g.nodeC = dataRoot;
        emit HeaderRevealed(gameId, msg.sender, header, dataRoot);
        if (keccak256(header) != g.headerHashD) {
            if (g.numelD == 0) return _found(gameId, g, 0, bytes32(0));
            return _goto(gameId, g, State.ElementD);
        }
        uint8 depth = _chunkDepth(uint256(g.numelD) * g.itemsize);
        g.level = depth;
        g.index = 0;
        _goto(gameId, g, depth == 0 ? State.ChunkD : State.TensorBisectD);
    }

    /// @notice Tensor leaf, challenger: re-supply the defendant's chunk and reveal its own;
    ///         the game finds the first differing element.
    function revealChunkC(uint256 gameId, bytes calldata chunkD, bytes calldata chunkC) external {
        Game storage g = _move(gameId, State.ChunkC, false);
        if (chunkD.length != CHUNK_BYTES || _chunkLeaf(chunkD) != g.nodeD) revert BadOpening("defendant's chunk");
        if (chunkC.length != CHUNK_BYTES || _chunkLeaf(chunkC) != g.nodeC) revert BadOpening("chunk");
        uint256 off;
        while (_word(chunkD, off) == _word(chunkC, off)) off += 32; // stops before 256: the leaves differ
        uint256 size = g.itemsize;
        bytes32 mask = ~bytes32(type(uint256).max >> (size * 8)); // the first `size` bytes
        while (_word(chunkD, off) & mask == _word(chunkC, off) & mask) off += size;
        uint256 element = (uint256(g.index) * CHUNK_BYTES + off) / size;
        bytes32 mine = _word(chunkD, off) & mask;
        if (element >= g.numelD) {
            // padding bytes must be zero: whoever has a nonzero one committed a malformed tensor
            return _resolve(gameId, g, mine == bytes32(0), "nonzero chunk padding");
        }
        _found(gameId, g, uint64(element), mine);
    }

    /// @notice The compute one-step, challenger: re-supply the defendant's disputed
    ///         `record` and output `header`; the referee recomputes the element from
    ///         `openings` (one per input, in record order). A referee revert reverts the
    ///         move (retry within the clock).
    function oneStep(uint256 gameId, bytes calldata record, bytes calldata header, Opening[] calldata openings)
        external
    {
        Game storage g = _oneStepMove(gameId, record, header);
        bytes memory committed = _committedBytes(g);
        bool wrong = referee.decideCompute(record, header, g.index, committed, openings);
        _resolve(gameId, g, !wrong, "compute one-step");
    }

    /// @notice Instead of the compute one-step, challenger: open the disputed element's
    ///         program (for elements too long to recompute in one transaction). Re-supply
    ///         the defendant's `record` and output `header`, and the record's input headers
    ///         `heads`. A wrong output header decides at once; else the defendant posts its
    ///         final state next.
    function openProgram(uint256 gameId, bytes calldata record, bytes calldata header, InputHead[] calldata heads)
        external
    {
        Game storage g = _oneStepMove(gameId, record, header);
        (bool headerWrong, uint64 steps, bytes32 start) =
            referee.programReferee().programOf(record, header, g.index, heads);
        if (headerWrong) return _resolve(gameId, g, false, "program output header");
        if (steps == 0 || steps > (uint64(1) << MAX_PROGRAM_DEPTH)) revert BadProgram(steps);
        (g.countD, g.countC, g.nodeD) = (0, steps, start);
        emit ProgramOpened(gameId, steps, start);
        _goto(gameId, g, State.ProgramEndD);
    }

    /// @notice Program round, challenger: re-supply the defendant's `hashes` and name the
    ///         first one it disputes (`hashes.length` if none); the dispute narrows to the
    ///         section that ends there.
    function judgeProgramHashes(uint256 gameId, bytes32[] calldata hashes, uint256 firstWrong) external {
        Game storage g = _move(gameId, State.ProgramBisectC, false);
        if (keccak256(abi.encodePacked(hashes)) != g.committed) revert BadOpening("hashes");
        if (firstWrong > hashes.length) revert BadOpening("section");
        uint64 lo = g.countD;
        uint64 span = g.countC - lo;
        uint64 m = uint64(hashes.length) + 1;
        if (firstWrong > 0) (g.countD, g.nodeD) = (lo + span * uint64(firstWrong) / m, hashes[firstWrong - 1]);
        if (firstWrong < hashes.length) (g.countC, g.nodeC) = (lo + span * uint64(firstWrong + 1) / m, hashes[firstWrong]);
        emit ProgramNarrowed(gameId, g.countD, g.countC);
        _goto(gameId, g, g.countC - g.countD == 1 ? State.ProgramStep : State.ProgramBisectD);
    }

    /// @notice Program step, challenger: re-supply the `record` and the agreed state
    ///         `before` (step lo); the referee runs step lo on the input slices `openings`,
    ///         and the defendant loses iff the result is not its state at hi.
    function programStep(uint256 gameId, bytes calldata record, bytes calldata before, Opening[] calldata openings)
        external
    {
        Game storage g = _move(gameId, State.ProgramStep, false);
        if (keccak256(record) != g.recordHashD) revert BadOpening("record");
        if (keccak256(before) != g.nodeD) revert BadOpening("state");
        bytes32 next = referee.programReferee().programStep(record, g.index, g.countD, before, openings);
        _resolve(gameId, g, next == g.nodeC, "program step");
    }

    /// @notice The template decision: anyone may call it (the challenger's clock runs);
    ///         re-supply the game's `claim` and the defendant's disputed `record`; the
    ///         referee checks it against the program behind `claim.modelDigest`, with its
    ///         source records proven under the defendant's full prefix trace root.
    function resolveTemplate(uint256 gameId, Claim calldata claim, bytes calldata record, bytes calldata evidence)
        external
    {
        Game storage g = _games[gameId];
        _expect(gameId, g, State.Template);
        _tick(gameId, g, false);
        if (address(referee) == address(0)) revert NoReferee();
        if (registry.claimHash(claim) != g.claimHash) revert WrongClaim(g.claimHash);
        if (keccak256(record) != g.recordHashD) revert BadOpening("record");
        bool wrong = referee.decideTemplate(claim, _traceRoot(g.countD, g.committed), record, evidence);
        _resolve(gameId, g, !wrong, "template one-step");
    }

    // ---------------------------------------------------------------- anyone

    /// @notice End game `gameId` against the party to move if its clock has run out.
    function timeout(uint256 gameId) external {
        Game storage g = _games[gameId];
        State st = g.state;
        if (st == State.None) revert NoGame(gameId);
        if (st == State.DefendantWon || st == State.ChallengerWon) revert WrongState(gameId, st, State.AwaitResponse);
        bool defendantMoves = _defendantMoves(st);
        uint256 elapsed = block.timestamp - g.lastMoveAt;
        uint256 left = defendantMoves ? g.clockD : g.clockC;
        if (elapsed <= left) revert ClockRunning(gameId, elapsed, left);
        _resolve(gameId, g, !defendantMoves, "timeout");
    }

    /// @notice Pull all of the caller's credit.
    function withdraw() external nonReentrant {
        uint256 amount = creditOf[msg.sender];
        if (amount == 0) revert NothingToWithdraw(msg.sender);
        creditOf[msg.sender] = 0;
        totalCredits -= amount;
        emit Withdrawn(msg.sender, amount);
        (bool ok,) = msg.sender.call{value: amount}("");
        if (!ok) revert TransferFailed(msg.sender, amount);
    }

    // ------------------------------------------------------------------ views

    /// @notice The whole record of game `gameId`.
    function gameOf(uint256 gameId) external view returns (Game memory) {
        return _games[gameId];
    }

    /// @notice Game `gameId`'s state, the address to move (zero if final or if anyone may),
    ///         and the seconds left on that party's clock now.
    function turn(uint256 gameId) external view returns (State state, address party, uint256 secondsLeft) {
        Game storage g = _games[gameId];
        state = g.state;
        if (state == State.None || state == State.DefendantWon || state == State.ChallengerWon) return (state, address(0), 0);
        bool d = _defendantMoves(state);
        party = state == State.Template ? address(0) : (d ? g.prover : g.challenger);
        uint256 left = d ? g.clockD : g.clockC;
        uint256 elapsed = block.timestamp - g.lastMoveAt;
        secondsLeft = elapsed >= left ? 0 : left - elapsed;
    }

    /// @notice The contract's balance and what it owes (bonds of open games + credits).
    function solvency() external view returns (uint256 balance, uint256 owed) {
        return (address(this).balance, totalBonds + totalCredits);
    }

    // --------------------------------------------------------------- internal

    function _checkChallengeable(Claim calldata claim, bytes32 r, bytes32 s, uint8 v, bytes32[] calldata proof)
        internal
        view
        returns (bytes32 h)
    {
        h = registry.verifyClaim(claim, r, s, v, claim.step, proof);
        ClaimState memory cs = claimState[h];
        if (cs.slashed) revert AlreadySlashed(h);
        if (cs.openGame != 0) revert ClaimInDispute(h, cs.openGame);
        uint256 deadline = registry.challengeDeadline(claim.prover, claim.round);
        if (block.timestamp >= deadline && block.timestamp >= cs.reopenUntil) {
            revert ChallengeWindowOver(h, deadline > cs.reopenUntil ? deadline : cs.reopenUntil);
        }
    }

    /// @dev A refutation decided in one call (sampling, template): the claim can no longer
    ///      be challenged, and the prover is locked and slashed at once.
    function _slashAtOnce(bytes32 h, address prover) internal {
        claimState[h].slashed = true;
        stakeManager.lock(prover, slashAmount);
        stakeManager.slash(prover, slashAmount, msg.sender, winnerShareBps);
    }

    /// @dev `p.record` is leaf `index` of a trace of `p.count` records with root `traceRoot`.
    function _verifyRecordProof(bytes32 traceRoot, RecordProof calldata p) internal pure returns (uint64 index) {
        return _provenRecord(traceRoot, p.record, p.count, p.siblings);
    }

    /// @dev Check that `record` (prefix, version, index read from it) is leaf `index` of a
    ///      trace of `count` records (1 to 2^MAX_RECORD_DEPTH) with root `traceRoot`,
    ///      `siblings` from the leaf up; returns that index.
    function _provenRecord(bytes32 traceRoot, bytes calldata record, uint64 count, bytes32[] calldata siblings)
        internal
        pure
        returns (uint64 index)
    {
        if (count == 0 || count > (uint64(1) << MAX_RECORD_DEPTH)) revert BadCount(count);
        index = _recordIndex(record);
        if (index >= count) revert BadRecord("index");
        uint8 depth = _depth(count);
        if (siblings.length != depth) revert BadOpening("sibling count");
        bytes32 acc = _leaf(record);
        for (uint256 k; k < depth; ++k) {
            acc = (index >> k) & 1 == 1 ? _node(0x22, siblings[k], acc) : _node(0x22, acc, siblings[k]);
        }
        if (_traceRoot(count, acc) != traceRoot) revert BadOpening("record proof");
    }

    /// @dev The challenger's move in `OneStep` (one-step or program): a referee exists and
    ///      `record` and `header` are the defendant's disputed record and output header.
    function _oneStepMove(uint256 gameId, bytes calldata record, bytes calldata header)
        internal
        returns (Game storage g)
    {
        g = _move(gameId, State.OneStep, false);
        if (address(referee) == address(0)) revert NoReferee();
        if (keccak256(record) != g.recordHashD) revert BadOpening("record");
        if (keccak256(header) != g.headerHashD) revert BadOpening("header");
    }

    /// @dev Sections of a program round: min(PROGRAM_SECTIONS, hi - lo), at least 2 here.
    function _sections(Game storage g) internal view returns (uint256) {
        uint64 span = g.countC - g.countD;
        return span < PROGRAM_SECTIONS ? span : PROGRAM_SECTIONS;
    }

    function _defendantMoves(State st) internal pure returns (bool) {
        return st == State.AwaitResponse || st == State.RecordBisectD || st == State.RecordRevealD
            || st == State.HeaderD || st == State.TensorBisectD || st == State.ChunkD || st == State.ElementD
            || st == State.ProgramEndD || st == State.ProgramBisectD;
    }

    function _expect(uint256 gameId, Game storage g, State expected) internal view {
        State st = g.state;
        if (st == State.None) revert NoGame(gameId);
        if (st != expected) revert WrongState(gameId, st, expected);
    }

    /// @dev Check the state and the mover, and charge the mover's clock.
    function _move(uint256 gameId, State expected, bool defendant) internal returns (Game storage g) {
        g = _games[gameId];
        _expect(gameId, g, expected);
        address party = defendant ? g.prover : g.challenger;
        if (msg.sender != party) revert NotParty(msg.sender, party);
        _tick(gameId, g, defendant);
    }

    function _tick(uint256 gameId, Game storage g, bool defendant) internal {
        uint256 elapsed = block.timestamp - g.lastMoveAt;
        uint256 left = defendant ? g.clockD : g.clockC;
        if (elapsed > left) revert ClockExpired(gameId, elapsed, left);
        if (defendant) g.clockD = uint32(left - elapsed);
        else g.clockC = uint32(left - elapsed);
        g.lastMoveAt = uint64(block.timestamp);
    }

    function _goto(uint256 gameId, Game storage g, State to) internal {
        emit StateChanged(gameId, g.state, to);
        g.state = to;
    }

    function _found(uint256 gameId, Game storage g, uint64 element, bytes32 committed) internal {
        g.index = element;
        g.committed = committed;
        emit ElementFound(gameId, element, _committedBytes(g));
        _goto(gameId, g, State.OneStep);
    }

    function _committedBytes(Game storage g) internal view returns (bytes memory out) {
        uint256 size = g.numelD == 0 ? 0 : g.itemsize;
        out = new bytes(size);
        bytes32 c = g.committed;
        for (uint256 i; i < size; ++i) {
            out[i] = c[i];
        }
    }

    /// @dev The bisection reached a padding leaf: the party whose leaf is not EMPTY
    ///      committed a malformed tree.
    function _padding(uint256 gameId, Game storage g) internal {
        _resolve(gameId, g, g.nodeD == bytes32(0), "padding leaf");
    }

    /// @dev Effects first (state, claim bookkeeping, bonds to credit), then the StakeManager.
    function _resolve(uint256 gameId, Game storage g, bool defendantWon, string memory reason) internal {
        State to = defendantWon ? State.DefendantWon : State.ChallengerWon;
        emit StateChanged(gameId, g.state, to);
        g.state = to;
        bytes32 h = g.claimHash;
        ClaimState storage cs = claimState[h];
        cs.openGame = 0;
        uint256 bonds = uint256(g.bondC) + uint256(g.bondD);
        totalBonds -= bonds;
        address winner = defendantWon ? g.prover : g.challenger;
        creditOf[winner] += bonds;
        totalCredits += bonds;
        emit Credited(winner, bonds);
        emit GameResolved(gameId, defendantWon, reason);
        address prover = g.prover;
        if (defendantWon) {
            uint64 until = uint64(block.timestamp) + reopenGrace;
            if (until > cs.reopenUntil) cs.reopenUntil = until;
            stakeManager.unlock(prover, slashAmount);
        } else if (cs.slashed) {
            stakeManager.unlock(prover, slashAmount);
        } else {
            cs.slashed = true;
            stakeManager.slash(prover, slashAmount, g.challenger, winnerShareBps);
        }
    }

    function _traceRoot(uint64 count, bytes32 treeRoot) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked(bytes1(0x23), count, treeRoot));
    }

    function _node(bytes1 prefix, bytes32 l, bytes32 r) internal pure returns (bytes32 h) {
        assembly ("memory-safe") {
            let p := mload(0x40)
            mstore8(p, shr(248, prefix))
            mstore(add(p, 1), l)
            mstore(add(p, 33), r)
            h := keccak256(p, 65)
        }
    }

    function _leaf(bytes calldata record) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked(bytes1(0x21), keccak256(record)));
    }

    /// @dev The 32 bytes of calldata `b` from `off` (bytes past `b` are whatever follows; callers mask).
    function _word(bytes calldata b, uint256 off) internal pure returns (bytes32 w) {
        assembly ("memory-safe") {
            w := calldataload(add(b.offset, off))
        }
    }

    function _chunkLeaf(bytes calldata chunk) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked(bytes1(0x01), chunk));
    }

    function _tensorRoot(bytes calldata header, bytes32 dataRoot) internal pure returns (bytes32) {
        return keccak256(abi.encodePacked(bytes1(0x03), keccak256(abi.encodePacked(bytes1(0x00), header)), dataRoot));
    }

    /// @dev ceil(log2(n)) for 1 <= n.
    function _depth(uint256 n) internal pure returns (uint8 d) {
        while ((uint256(1) << d) < n) ++d;
    }

    function _chunkDepth(uint256 nbytes) internal pure returns (uint8) {
        uint256 chunks = (nbytes + CHUNK_BYTES - 1) / CHUNK_BYTES;
        return chunks <= 1 ? 0 : _depth(chunks);
    }

    /// @dev A record: prefix 0x20, version 1, index `index`, at least an output root.
    function _checkRecord(bytes calldata record, uint64 index) internal pure {
        if (_recordIndex(record) != index) revert BadRecord("index");
    }

    /// @dev The index of a record (prefix 0x20, version 1, at least an output root).
    function _recordIndex(bytes calldata record) internal pure returns (uint64) {
        if (record.length < 2 + 8 + 32 + 3) revert BadRecord("short");
        if (record[0] != 0x20 || record[1] != 0x01) revert BadRecord("prefix");
        return uint64(bytes8(record[2:10]));
    }

    /// @dev A record's output root: its last 32 bytes (zero: deferred).
    function _output(bytes calldata record) internal pure returns (bytes32) {
        return bytes32(record[record.length - 32:]);
    }

    /// @dev `u8 code || u8 ndim || u64be dims`: itemsize and numel, numel * itemsize <= 2^40.
    function _parseHeader(bytes calldata header) internal pure returns (uint8 itemsize, uint64 numel) {
        if (header.length < 2) revert BadHeader("short");
        uint8 code = uint8(header[0]);
        uint256 ndim = uint8(header[1]);
        if (header.length != 2 + 8 * ndim) revert BadHeader("length");
        if (code == 1 || code == 5) itemsize = 4;
        else if (code == 2 || code == 3) itemsize = 2;
        else if (code == 4) itemsize = 8;
        else if (code == 6) itemsize = 1;
        else revert BadHeader("dtype");
        uint256 n = 1;
        for (uint256 i; i < ndim; ++i) {
            uint256 d = uint64(bytes8(header[2 + 8 * i:10 + 8 * i]));
            if (d == 0) {
                n = 0;
                break;
            }
            n *= d; // n <= 2^40 before, d < 2^64: no overflow
            if (n * itemsize > MAX_NUMEL_BYTES) revert BadHeader("too large");
        }
        numel = uint64(n);
    }
}

/// @notice The StakeManager's factory-only function.
interface IStakeManagerFactory {
    function authorizeGame(address game) external;
}
