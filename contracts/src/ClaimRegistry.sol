// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IStakeManager} from "./IStakeManager.sol";

/// @notice A prover's signed statement about one computation (docs/protocol.md, "Claims").
/// @dev Member order and types are the EIP-712 type `Claim(...)`; see `CLAIM_TYPEHASH`.
struct Claim {
    uint16 version;
    uint256 chainId;
    bytes32 modelDigest;
    bytes32 inputDigest;
    bytes32 outputDigest;
    bytes32 traceRoot;
    uint64 seed;
    uint64 round;
    uint64 step;
    uint8 task;
    address prover;
}

/// @title ClaimRegistry
/// @notice Per-prover, per-round Merkle roots of claims, their challenge windows, and
///         on-chain verification of a signed claim against a posted root.
/// @dev Mirrors `refute.compute.claims` exactly: `claimHash` is EIP-712 `hashStruct`,
///      signatures are EIP-712 over the domain {name "refute", version "1",
///      block.chainid, this contract}, and round trees use leaf
///      `keccak256(0x10 || claimHash)`, node `keccak256(0x11 || left || right)`,
///      odd levels padded with 32 zero bytes. A claim's leaf index is its `step`.
contract ClaimRegistry {
    // -------------------------------------------------------------- constants

    /// @notice keccak256 of the EIP-712 `encodeType` of `Claim`.
    bytes32 public constant CLAIM_TYPEHASH = keccak256(
        "Claim(uint16 version,uint256 chainId,bytes32 modelDigest,bytes32 inputDigest,bytes32 outputDigest,bytes32 traceRoot,uint64 seed,uint64 round,uint64 step,uint8 task,address prover)"
    );
    /// @notice keccak256 of the EIP-712 domain type.
    bytes32 public constant EIP712_DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant _NAME_HASH = keccak256("refute");
    bytes32 private constant _VERSION_HASH = keccak256("1");
    /// @notice The only claim version defined.
    uint16 public constant CLAIM_VERSION = 1;
    /// @notice secp256k1 order / 2: signatures need `s <= HALF_N` (EIP-2, low s).
    uint256 public constant HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;
    /// @notice Longest inclusion proof (steps are uint64).
    uint256 public constant MAX_PROOF_LENGTH = 64;

    // ------------------------------------------------------------- immutables

    /// @notice Where provers' stakes are held.
    IStakeManager public immutable stakeManager;
    /// @notice Bonded stake a prover needs to post a root.
    uint256 public immutable minStake;
    /// @notice Seconds after posting during which a root can be challenged (the stake manager's).
    uint64 public immutable challengeWindow;
    uint256 private immutable _cachedChainId;
    bytes32 private immutable _cachedDomainSeparator;

    // ------------------------------------------------------------------ state

    /// @notice A posted round root.
    struct RoundRoot {
        bytes32 root;
        uint64 count;
        uint64 postedAt;
    }

    mapping(address prover => mapping(uint64 round => RoundRoot)) internal _roots;

    // ----------------------------------------------------------------- events

    /// @notice `prover` committed to `count` claims of `round` with `root` at `postedAt`.
    event RootPosted(address indexed prover, uint64 indexed round, bytes32 root, uint64 count, uint64 postedAt);

    // ----------------------------------------------------------------- errors

    /// @notice A zero address where a real one is required.
    error ZeroAddress();
    /// @notice `prover` has `stake` bonded, less than `minStake`.
    error StakeTooLow(address prover, uint256 stake, uint256 minStake);
    /// @notice A root of zero was posted.
    error ZeroRoot();
    /// @notice A round must hold at least one claim.
    error EmptyRound();
    /// @notice `prover` already posted a root for `round`.
    error RootAlreadyPosted(address prover, uint64 round);
    /// @notice `prover` posted no root for `round`.
    error RootNotPosted(address prover, uint64 round);
    /// @notice The claim's `version` is not `CLAIM_VERSION`.
    error UnsupportedVersion(uint16 version);
    /// @notice The claim is for chain `chainId`; this is chain `expected`.
    error WrongChain(uint256 chainId, uint256 expected);
    /// @notice The claim's prover is the zero address.
    error ZeroProver();
    /// @notice The signature's `v` is not 27 or 28.
    error InvalidSignatureV(uint8 v);
    /// @notice The signature's `r` is zero.
    error InvalidSignatureR();
    /// @notice The signature's `s` is zero or high (`s > HALF_N`, malleable).
    error InvalidSignatureS(bytes32 s);
    /// @notice The signature recovers to `signer`, not to the claim's `prover` (zero: to no one).
    error SignerMismatch(address signer, address prover);
    /// @notice The proof's `index` is not the claim's `step`.
    error IndexMismatch(uint256 index, uint64 step);
    /// @notice The claim's `step` is not below the round's claim `count`.
    error StepOutOfRange(uint64 step, uint64 count);
    /// @notice The claim `claimHash` is not in `prover`'s root of `round` under the given proof.
    error NotIncluded(address prover, uint64 round, bytes32 claimHash);

    // ------------------------------------------------------------ constructor

    /// @param stakeManager_ The stake manager; its `challengeWindow` is this registry's.
    /// @param minStake_ Bonded stake (wei) a prover needs to post a root.
    constructor(IStakeManager stakeManager_, uint256 minStake_) {
        if (address(stakeManager_) == address(0)) revert ZeroAddress();
        stakeManager = stakeManager_;
        minStake = minStake_;
        challengeWindow = stakeManager_.challengeWindow();
        _cachedChainId = block.chainid;
        _cachedDomainSeparator = _domainSeparator();
    }

    // ------------------------------------------------------------------ roots

    /// @notice Commit to the caller's claims of `round`: `root` of a tree of `count` claims.
    ///         One root per (prover, round); the caller needs `minStake` bonded.
    /// @param round The round (the claims' `round` field).
    /// @param root The round tree's root (`ClaimRound.root` in Python).
    /// @param count The number of claims (steps `0..count-1`).
    function postRoot(uint64 round, bytes32 root, uint64 count) external {
        uint256 s = stakeManager.stakeOf(msg.sender);
        if (s < minStake || s == 0) revert StakeTooLow(msg.sender, s, minStake);
        if (root == bytes32(0)) revert ZeroRoot();
        if (count == 0) revert EmptyRound();
        RoundRoot storage rr = _roots[msg.sender][round];
        if (rr.postedAt != 0) revert RootAlreadyPosted(msg.sender, round);
        uint64 now_ = uint64(block.timestamp);
        rr.root = root;
        rr.count = count;
        rr.postedAt = now_;
        emit RootPosted(msg.sender, round, root, count, now_);
    }

    /// @notice The root `prover` posted for `round` (all zero if none).
    /// @return root The root.
    /// @return count The number of claims under it.
    /// @return postedAt When it was posted.
    function rootOf(address prover, uint64 round) external view returns (bytes32 root, uint64 count, uint64 postedAt) {
        RoundRoot memory rr = _roots[prover][round];
        return (rr.root, rr.count, rr.postedAt);
    }

    /// @notice End of the challenge window of `prover`'s root of `round`.
    /// @dev Reverts with `RootNotPosted` if there is no such root.
    function challengeDeadline(address prover, uint64 round) public view returns (uint256) {
        uint64 postedAt = _roots[prover][round].postedAt;
        if (postedAt == 0) revert RootNotPosted(prover, round);
        return uint256(postedAt) + challengeWindow;
    }

    /// @notice Whether `prover`'s root of `round` is posted and its challenge window is over.
    function isFinal(address prover, uint64 round) external view returns (bool) {
        uint64 postedAt = _roots[prover][round].postedAt;
        return postedAt != 0 && block.timestamp >= uint256(postedAt) + challengeWindow;
    }

    // ----------------------------------------------------------------- EIP-712

    /// @notice EIP-712 `hashStruct(c)`: the claim's name everywhere (leaves, games, logs).
    function claimHash(Claim calldata c) public pure returns (bytes32) {
        return keccak256(
            abi.encode(
                CLAIM_TYPEHASH,
                c.version,
                c.chainId,
                c.modelDigest,
                c.inputDigest,
                c.outputDigest,
                c.traceRoot,
                c.seed,
                c.round,
                c.step,
                c.task,
                c.prover
            )
        );
    }

    /// @notice EIP-712 domain separator: {name "refute", version "1", block.chainid, this}.
    function DOMAIN_SEPARATOR() public view returns (bytes32) {
        return block.chainid == _cachedChainId ? _cachedDomainSeparator : _domainSeparator();
    }

    /// @notice EIP-5267 description of the signing domain.
    function eip712Domain()
        external
        view
        returns (
            bytes1 fields,
            string memory name,
            string memory version,
            uint256 chainId,
            address verifyingContract,
            bytes32 salt,
            uint256[] memory extensions
        )
    {
        return (hex"0f", "refute", "1", block.chainid, address(this), bytes32(0), new uint256[](0));
    }

    /// @notice `keccak256(0x1901 || DOMAIN_SEPARATOR || claimHash(c))`: what the prover signs.
    function claimDigest(Claim calldata c) public view returns (bytes32) {
        return keccak256(abi.encodePacked(hex"1901", DOMAIN_SEPARATOR(), claimHash(c)));
    }

    /// @notice The claim's signer, after checking the claim's version and chain and the
    ///         signature's form (v in {27, 28}, r != 0, 0 < s <= HALF_N). Reverts with
    ///         `SignerMismatch` unless the signer is `c.prover`.
    function recoverSigner(Claim calldata c, bytes32 r, bytes32 s, uint8 v) public view returns (address signer) {
        if (c.version != CLAIM_VERSION) revert UnsupportedVersion(c.version);
        if (c.chainId != block.chainid) revert WrongChain(c.chainId, block.chainid);
        if (c.prover == address(0)) revert ZeroProver();
        if (v != 27 && v != 28) revert InvalidSignatureV(v);
        if (r == bytes32(0)) revert InvalidSignatureR();
        if (s == bytes32(0) || uint256(s) > HALF_N) revert InvalidSignatureS(s);
        signer = ecrecover(claimDigest(c), v, r, s);
        if (signer == address(0) || signer != c.prover) revert SignerMismatch(signer, c.prover);
    }

    // ------------------------------------------------------------ verification

    /// @notice Whether `h` is leaf `index` of the claim tree with `root` (`proof`: siblings
    ///         from the leaf up). Same as `refute.compute.claims.verify_inclusion`.
    function included(bytes32 root, bytes32 h, uint256 index, bytes32[] calldata proof) public pure returns (bool) {
        if (proof.length > MAX_PROOF_LENGTH || index >> proof.length != 0) return false;
        bytes32 acc = keccak256(abi.encodePacked(bytes1(0x10), h));
        for (uint256 k; k < proof.length; ++k) {
            acc = (index >> k) & 1 == 1
                ? keccak256(abi.encodePacked(bytes1(0x11), proof[k], acc))
                : keccak256(abi.encodePacked(bytes1(0x11), acc, proof[k]));
        }
        return acc == root;
    }

    /// @notice Check that `c.prover` signed `c` (signature `r, s, v`) for this registry and
    ///         chain, and that `c` is leaf `index == c.step` of the root `c.prover` posted
    ///         for `c.round`. Reverts with the failing check's error.
    /// @return h The claim hash.
    function verifyClaim(Claim calldata c, bytes32 r, bytes32 s, uint8 v, uint256 index, bytes32[] calldata proof)
        external
        view
        returns (bytes32 h)
    {
        recoverSigner(c, r, s, v);
        if (index != c.step) revert IndexMismatch(index, c.step);
        RoundRoot memory rr = _roots[c.prover][c.round];
        if (rr.postedAt == 0) revert RootNotPosted(c.prover, c.round);
        if (c.step >= rr.count) revert StepOutOfRange(c.step, rr.count);
        h = claimHash(c);
        if (!included(rr.root, h, index, proof)) revert NotIncluded(c.prover, c.round, h);
    }

    // --------------------------------------------------------------- internal

    function _domainSeparator() internal view returns (bytes32) {
        return keccak256(abi.encode(EIP712_DOMAIN_TYPEHASH, _NAME_HASH, _VERSION_HASH, block.chainid, address(this)));
    }
}
