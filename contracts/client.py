"""web3.py client for refute's contracts: StakeManager and ClaimRegistry.

:class:`Chain` is a connection: by default an in-process py-evm chain
(eth-tester, chain id 31337 like anvil/hardhat, ten funded accounts with keys
``0x…01`` … ``0x…0a``), or any JSON-RPC endpoint (``Chain("http://…")``).
:meth:`Chain.deploy` deploys a StakeManager and a ClaimRegistry wired to it
and returns a :class:`Deployment`, whose methods stake, unbond, withdraw, post
a :class:`~refute.compute.claims.ClaimRound`'s root, verify a
:class:`~refute.compute.claims.SignedClaim` on chain and read balances.

Errors are Python exceptions that say what happened:

* a revert raises :class:`ContractError` whose message is the custom error
  and its decoded arguments, e.g. ``StakeLocked(account=0x7E5F…5Bdf,
  locked=100)`` (the revert data is decoded against the error selectors of
  every contract this chain has deployed or attached, plus ``Error(string)``
  and ``Panic(uint256)``);
* an endpoint that does not answer within ``timeout`` seconds raises
  :class:`ChainTimeout`, one that refuses connections :class:`ChainUnavailable`.

``Chain(url, retry_for=seconds)`` rides out outages: every JSON-RPC request
that fails so (no answer, refused or dropped connection) is retried with
exponential backoff (0.25 s doubling to 5 s, with jitter) until ``retry_for``
seconds have passed, then the last error is raised; each retry is logged at
WARNING on the ``refute.chain`` logger. Sending stays safe to retry: a raw
signed transaction has a fixed hash, and transactions from unlocked accounts
are sent with an explicit nonce, so a resend whose first copy did reach the
node (answered "already known" / "nonce too low") is recognised as that copy
and its receipt awaited, never sent twice.

Transactions are sent from unlocked accounts (the tester's, or a node's) or,
for keys added with :meth:`Chain.add_key`, signed locally and sent raw.
Every transaction returns a :class:`Tx` with its gas and fee, so callers can
account for ETH exactly.
"""

from __future__ import annotations

import ast
import logging
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from eth_abi import decode as abi_decode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import function_abi_to_4byte_selector, keccak, to_checksum_address
from hexbytes import HexBytes
from web3 import HTTPProvider, Web3
from web3.contract import Contract
from web3.exceptions import TimeExhausted

from refute.compute.claims import Claim, ClaimRound, SignedClaim
from refute.contracts.build import load_artifact

__all__ = [
    "TESTER_CHAIN_ID",
    "DEFAULT_TIMEOUT",
    "RETRY_FIRST",
    "RETRY_CAP",
    "ChainError",
    "ContractError",
    "ChainTimeout",
    "ChainUnavailable",
    "Tx",
    "Chain",
    "Deployment",
    "claim_tuple",
    "decode_revert",
]

#: Chain id of the in-process tester chain (anvil's and hardhat's; the claims' known answers use it).
TESTER_CHAIN_ID: Final = 31337
#: Seconds a JSON-RPC request may take before :class:`ChainTimeout`.
DEFAULT_TIMEOUT: Final = 10.0
#: Seconds before the first retry of a failed request (``retry_for`` > 0); each retry doubles it ...
RETRY_FIRST: Final = 0.25
#: ... up to this many seconds.
RETRY_CAP: Final = 5.0

log = logging.getLogger("refute.chain")

_ERROR_STRING: Final = keccak(text="Error(string)")[:4]
_PANIC: Final = keccak(text="Panic(uint256)")[:4]

T = TypeVar("T")
Address = str | bytes


class ChainError(RuntimeError):
    """Something went wrong talking to the chain."""


class ContractError(ChainError):
    """A contract reverted. ``str(e)`` is ``Name(arg=value, …)``; ``name`` and
    ``args_dict`` carry the decoded error, ``data`` the raw revert data."""

    def __init__(self, name: str, args: dict[str, Any], data: bytes):
        self.name = name
        self.args_dict = args
        self.data = data
        super().__init__(f"{name}({', '.join(f'{k}={_fmt(v)}' for k, v in args.items())})")


class ChainTimeout(ChainError):
    """The endpoint did not answer (or a transaction was not mined) in time."""


class ChainUnavailable(ChainError):
    """The endpoint cannot be reached."""


def _fmt(v: Any) -> str:
    if isinstance(v, bytes):
        return "0x" + v.hex()
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    return str(v)


def _addr(a: Address) -> str:
    return to_checksum_address(a)


def _abi_type(inp: dict[str, Any]) -> str:
    t = inp["type"]
    if t.startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in inp["components"]) + ")" + t[5:]
    return t


def decode_revert(data: bytes, errors: dict[bytes, dict[str, Any]]) -> ContractError:
    """Decode revert ``data`` against ``errors`` (selector -> ABI entry of a custom error)."""
    sel, body = data[:4], data[4:]
    try:
        if sel == _ERROR_STRING:
            return ContractError("Error", {"reason": abi_decode(["string"], body)[0]}, data)
        if sel == _PANIC:
            return ContractError("Panic", {"code": hex(abi_decode(["uint256"], body)[0])}, data)
        if sel in errors:
            entry = errors[sel]
            types = [_abi_type(i) for i in entry["inputs"]]
            values = abi_decode(types, body)
            names = [i["name"] or f"arg{k}" for k, i in enumerate(entry["inputs"])]
            args = {
                n: (_addr(v) if t == "address" else v) for n, t, v in zip(names, types, values)
            }
            return ContractError(entry["name"], args, data)
    except Exception:  # malformed body: fall through to the raw form
        pass
    if not data:
        return ContractError("Revert", {}, data)
    return ContractError("UnknownError", {"data": data}, data)


_TESTER_BYTES_RE: Final = re.compile(r"""b(['"]).*\1\s*$""", re.S)


def _revert_data(exc: BaseException) -> bytes | None:
    """The revert data carried by a web3 or eth-tester exception, if any."""
    data = getattr(exc, "data", None)
    if isinstance(data, str) and data.startswith("0x"):
        return bytes.fromhex(data[2:])
    if isinstance(data, dict):  # some nodes: {"data": "0x…"} or {"message":…, "data": "0x…"}
        inner = data.get("data")
        if isinstance(inner, str) and inner.startswith("0x"):
            return bytes.fromhex(inner[2:])
    if type(exc).__name__ == "TransactionFailed":  # eth-tester: str of py-evm's Revert(bytes)
        text = str(exc.args[0]) if exc.args else ""
        if isinstance(exc.args[0] if exc.args else None, bytes):
            return exc.args[0]
        m = _TESTER_BYTES_RE.search(text)
        if m:
            try:
                return ast.literal_eval(text[m.start():])
            except (ValueError, SyntaxError):
                return None
        if text:  # eth-tester already decoded Error(string)
            from eth_abi import encode
            return _ERROR_STRING + encode(["string"], [text.removeprefix("execution reverted: ")])
        return b""
    return None


@dataclass(frozen=True)
class Tx:
    """A mined transaction: hash, gas used, fee paid (wei), block number and timestamp."""

    hash: bytes
    gas_used: int
    fee: int
    block: int
    timestamp: int
    receipt: Any


def claim_tuple(c: Claim) -> tuple[Any, ...]:
    """A claim as web3 takes the Solidity ``Claim`` struct."""
    v = list(c.values())
    v[-1] = _addr(c.prover)
    return tuple(v)


#: Answers to a resent transaction that mean its first copy may have reached the node.
_DUPLICATE_RE: Final = re.compile(
    r"already known|known transaction|already imported|nonce too low|invalid transaction nonce", re.I)
#: How many blocks back a resent unlocked transaction's first copy is looked for.
_RESEND_SCAN_BLOCKS: Final = 256


class _RetryingHTTPProvider(HTTPProvider):
    """An HTTPProvider that retries requests the endpoint did not answer (timeouts,
    refused or dropped connections) with exponential backoff for ``retry_for`` seconds,
    and recognises a resent transaction's first copy."""

    def __init__(self, url: str, *, retry_for: float, timeout: float):
        super().__init__(url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None)
        self.retry_for = retry_for

    def make_request(self, method: Any, params: Any) -> Any:
        import requests

        deadline = time.monotonic() + self.retry_for
        delay = RETRY_FIRST
        attempt = 0
        while True:
            attempt += 1
            try:
                response = super().make_request(method, params)
            except (requests.Timeout, requests.ConnectionError) as e:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise
                pause = min(delay * random.uniform(0.75, 1.25), RETRY_CAP, left)
                log.warning("%s: %s failed (%s); retry %d in %.2f s (%.1f s of retry_for left)",
                            self.endpoint_uri, method, type(e).__name__, attempt, pause, left)
                time.sleep(pause)
                delay = min(2 * delay, RETRY_CAP)
                continue
            if attempt > 1 and isinstance(response, dict) and "error" in response:
                return self._resent(method, params, response)
            return response

    def _resent(self, method: Any, params: Any, response: dict[str, Any]) -> dict[str, Any]:
        """A resend after a lost answer was refused as a duplicate: if the first copy is
        on the node, answer its hash as the first copy's answer would have."""
        err = response["error"]
        message = err.get("message", "") if isinstance(err, dict) else str(err)
        if not isinstance(message, str) or not _DUPLICATE_RE.search(message):
            return response
        h: str | None = None
        try:
            if method == "eth_sendRawTransaction":
                h = "0x" + keccak(HexBytes(params[0])).hex()
                found = self.make_request("eth_getTransactionByHash", [h]).get("result")
                h = h if found else None
            elif method == "eth_sendTransaction":
                h = self._find_sent(params[0])
        except Exception as e:  # the lookup failed: keep the node's answer
            log.warning("%s: could not look up the first copy of a resent %s: %s", self.endpoint_uri, method, e)
            return response
        if h is None:
            return response
        log.warning("%s: %s: the first copy (%s) reached the node; not sending it again",
                    self.endpoint_uri, method, h)
        return {"jsonrpc": "2.0", "id": response.get("id"), "result": h}

    def _find_sent(self, tx: Any) -> str | None:
        """The hash of a mined transaction with ``tx``'s sender and nonce, if its
        recipient, value and data are ``tx``'s too."""
        if not isinstance(tx, dict) or tx.get("nonce") is None or not tx.get("from"):
            return None

        def num(v: Any) -> int:
            return int(v, 16) if isinstance(v, str) else int(v or 0)

        def data(v: Any) -> bytes:
            return bytes(HexBytes(v or b""))

        sender, nonce = str(tx["from"]).lower(), num(tx["nonce"])
        to = str(tx.get("to") or "").lower()
        latest = num(self.make_request("eth_blockNumber", []).get("result"))
        for n in range(latest, max(-1, latest - _RESEND_SCAN_BLOCKS), -1):
            block = self.make_request("eth_getBlockByNumber", [hex(n), True]).get("result") or {}
            for t in block.get("transactions") or []:
                if not isinstance(t, dict) or str(t.get("from", "")).lower() != sender or num(t.get("nonce")) != nonce:
                    continue
                same = (str(t.get("to") or "").lower() == to and num(t.get("value")) == num(tx.get("value"))
                        and data(t.get("input")) == data(tx.get("data", tx.get("input"))))
                return t.get("hash") if same else None
        return None


def _estimate_gas(state: Any, transaction: Any) -> int:
    """A gas estimate for the in-process chain in two executions instead of py-evm's
    binary search (about a dozen): run at the block gas limit, take the gas consumed
    before refunds plus an eighth (nested calls keep 1/64 of their gas back at each
    level, EIP-150) and 30k, and check that it succeeds; else fall back to the search.
    Errors at the block gas limit raise as py-evm's estimator raises them."""
    from eth.estimators.gas import binary_gas_search_intrinsic_tolerance
    from eth.vm.spoof import SpoofTransaction

    snapshot = state.snapshot()
    try:
        computation = state.apply_transaction(SpoofTransaction(transaction, gas=state.gas_limit, gas_price=0))
        if computation.is_error:
            raise computation.error
        consumed = state.gas_limit - computation.get_gas_remaining()
    finally:
        state.revert(snapshot)
    guess = min(state.gas_limit, consumed + consumed // 8 + 30_000)
    snapshot = state.snapshot()
    try:
        ok = not state.apply_transaction(SpoofTransaction(transaction, gas=guess)).is_error
    finally:
        state.revert(snapshot)
    return guess if ok else binary_gas_search_intrinsic_tolerance(state, transaction)


class Chain:
    """A connection to an EVM chain.

    ``Chain()`` starts an in-process py-evm chain (eth-tester) with chain id
    ``chain_id`` (default :data:`TESTER_CHAIN_ID`); ``Chain(url)`` connects to a
    JSON-RPC endpoint, each request bounded by ``timeout`` seconds.
    ``keys`` are private keys whose transactions are signed locally.
    ``retry_for`` > 0 (endpoints only): requests that time out or cannot connect are
    retried with exponential backoff for that many seconds (see the module's text).
    ``gas_limit``: send every transaction with this gas limit instead of estimating it
    first. An estimate executes the call once more, which doubles the time of a move
    on py-evm; a reverting transaction is then mined (its fee paid) before its error
    is read back, so leave it unset where failed sends must cost nothing.
    """

    def __init__(
        self,
        url: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        chain_id: int | None = None,
        keys: Sequence[Any] = (),
        retry_for: float = 0.0,
        gas_limit: int | None = None,
    ):
        if retry_for < 0:
            raise ValueError("retry_for is a number of seconds, at least 0")
        self.url = url
        self.timeout = timeout
        self.retry_for = float(retry_for)
        self.gas_limit = gas_limit
        #: retries are on: an endpoint with retry_for > 0
        self._retrying = url is not None and retry_for > 0
        self._keys: dict[str, LocalAccount] = {}
        self._errors: dict[bytes, dict[str, Any]] = {}
        self.tester: Any = None
        if url is None:
            self.w3 = self._start_tester(TESTER_CHAIN_ID if chain_id is None else chain_id)
        elif self._retrying:
            self.w3 = Web3(_RetryingHTTPProvider(url, retry_for=self.retry_for, timeout=timeout))
        else:
            provider = HTTPProvider(url, request_kwargs={"timeout": timeout}, exception_retry_configuration=None)
            self.w3 = Web3(provider)
        with self._rpc():
            self.chain_id: int = self.w3.eth.chain_id
        if chain_id is not None and chain_id != self.chain_id:
            raise ChainError(f"endpoint's chain id is {self.chain_id}, expected {chain_id}")
        for k in keys:
            self.add_key(k)

    # -- set-up -----------------------------------------------------------

    def _start_tester(self, chain_id: int) -> Web3:
        from eth_tester import EthereumTester, PyEVMBackend
        from web3 import EthereumTesterProvider
        from web3.providers.eth_tester.defaults import API_ENDPOINTS, static_return

        backend = PyEVMBackend()
        # The tester chain's class is private to this backend; block.chainid and the
        # transactions eth-tester signs read it, eth_chainId is answered by the endpoint table.
        type(backend.chain).chain_id = chain_id
        type(backend.chain).gas_estimator = staticmethod(_estimate_gas)  # chains built later
        backend.chain.gas_estimator = _estimate_gas  # this one, built with py-evm's default
        self.tester = EthereumTester(backend)
        endpoints = {ns: dict(methods) for ns, methods in API_ENDPOINTS.items()}
        endpoints["eth"]["chainId"] = static_return(chain_id)
        return Web3(EthereumTesterProvider(self.tester, api_endpoints=endpoints))

    def add_key(self, private_key: Any) -> str:
        """Sign this key's transactions locally (on the tester, its account is also
        unlocked); its address."""
        acct: LocalAccount = Account.from_key(private_key)
        self._keys[acct.address] = acct
        if self.tester is not None and acct.address not in self.accounts:
            self.tester.add_account("0x" + bytes(acct.key).hex())
        return acct.address

    @property
    def accounts(self) -> list[str]:
        """The node's (or tester's) unlocked accounts."""
        with self._rpc():
            return list(self.w3.eth.accounts)

    # -- errors -----------------------------------------------------------

    @contextmanager
    def _rpc(self) -> Iterator[None]:
        """Translate transport failures into ChainTimeout / ChainUnavailable."""
        import requests

        try:
            yield
        except (requests.Timeout, TimeExhausted) as e:
            raise ChainTimeout(
                f"{self.url or 'tester'} did not answer within {self.timeout} s ({type(e).__name__})"
            ) from e
        except requests.ConnectionError as e:
            raise ChainUnavailable(f"cannot reach {self.url}: {e}") from e

    def register_abi(self, abi: Sequence[dict[str, Any]]) -> None:
        """Learn the custom errors of ``abi`` for decoding reverts."""
        for entry in abi:
            if entry.get("type") == "error":
                self._errors[function_abi_to_4byte_selector(entry)] = entry

    def _decoded(self, exc: BaseException) -> ContractError | None:
        data = _revert_data(exc)
        return None if data is None else decode_revert(data, self._errors)

    def _guard(self, f: Callable[[], T]) -> T:
        with self._rpc():
            try:
                return f()
            except Exception as e:  # web3 ContractLogicError, eth-tester TransactionFailed, ...
                if isinstance(e, ChainError):
                    raise
                err = self._decoded(e)
                if err is None:
                    raise
                raise err from e

    # -- contracts --------------------------------------------------------

    def contract(self, name: str, address: Address) -> Contract:
        """The deployed contract ``name`` (an artifact) at ``address``."""
        art = load_artifact(name)
        self.register_abi(art.abi)
        return self.w3.eth.contract(address=_addr(address), abi=art.abi)

    def deploy_contract(self, name: str, *args: Any, sender: Address | None = None) -> tuple[Contract, Tx]:
        """Deploy artifact ``name`` with constructor ``args`` from ``sender``."""
        art = load_artifact(name)
        self.register_abi(art.abi)
        factory = self.w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
        tx = self.send(factory.constructor(*args), sender)
        return self.w3.eth.contract(address=tx.receipt["contractAddress"], abi=art.abi), tx

    def send(self, fn: Any, sender: Address | None = None, value: int = 0) -> Tx:
        """Send the contract call or constructor ``fn`` from ``sender`` (default: the
        first account). A revert raises :class:`ContractError`."""
        frm = _addr(sender) if sender is not None else self.accounts[0]
        params: dict[str, Any] = {"from": frm, "value": value}
        if self.gas_limit is not None:
            params["gas"] = self.gas_limit

        def submit() -> bytes:
            if frm in self._keys:
                params["nonce"] = self.w3.eth.get_transaction_count(frm, "pending")
                tx = fn.build_transaction(params)
                signed = self._keys[frm].sign_transaction(tx)
                return self.w3.eth.send_raw_transaction(signed.raw_transaction)
            if self._retrying:  # an explicit nonce makes a resend recognisable (see _RetryingHTTPProvider)
                params["nonce"] = self.w3.eth.get_transaction_count(frm, "pending")
            return fn.transact(params)

        return self._mined(self._guard(submit), frm, value)

    def _mined(self, h: bytes, frm: str, value: int) -> Tx:
        with self._rpc():
            wait = max(self.timeout, self.retry_for) if self._retrying else self.timeout
            receipt = self.w3.eth.wait_for_transaction_receipt(h, timeout=wait)
            block = self.w3.eth.get_block(receipt["blockNumber"])
        if receipt["status"] != 1:  # mined but reverted (gas estimate passed, state moved): replay it
            call = {"from": frm, "value": value, "to": receipt.get("to"), "data": self.w3.eth.get_transaction(h)["input"]}
            # Before its block, then after it (the block's own timestamp and earlier transactions:
            # a clock that ran out between estimate and mining shows only there).
            for at in (receipt["blockNumber"] - 1, receipt["blockNumber"]):
                self._guard(lambda at=at: self.w3.eth.call(call, at))
            # Neither replay reverts (out of gas, or a state neither block shows): still a revert
            # of this transaction, not an outage of the chain.
            raise ContractError("RevertedWhenMined", {"tx": bytes(h), "gas_used": receipt["gasUsed"]}, b"")
        return Tx(
            hash=bytes(h),
            gas_used=receipt["gasUsed"],
            fee=receipt["gasUsed"] * receipt["effectiveGasPrice"],
            block=receipt["blockNumber"],
            timestamp=block["timestamp"],
            receipt=receipt,
        )

    def transfer(self, sender: Address, to: Address, amount: int) -> Tx:
        """Send ``amount`` wei from ``sender`` to ``to``."""
        frm = _addr(sender)
        tx: dict[str, Any] = {"from": frm, "to": _addr(to), "value": amount}

        def submit() -> bytes:
            if frm in self._keys:
                tx["nonce"] = self.w3.eth.get_transaction_count(frm, "pending")
                tx["gas"] = self.w3.eth.estimate_gas(tx)
                tx["chainId"] = self.chain_id
                tx["maxFeePerGas"] = 2 * self.w3.eth.get_block("latest")["baseFeePerGas"] + 10**9
                tx["maxPriorityFeePerGas"] = 10**9
                return self.w3.eth.send_raw_transaction(self._keys[frm].sign_transaction(tx).raw_transaction)
            if self._retrying:
                tx["nonce"] = self.w3.eth.get_transaction_count(frm, "pending")
            return self.w3.eth.send_transaction(tx)

        return self._mined(self._guard(submit), frm, 0)

    def call(self, fn: Any, sender: Address | None = None) -> Any:
        """Call the view ``fn``; a revert raises :class:`ContractError`."""
        params = {} if sender is None else {"from": _addr(sender)}
        return self._guard(lambda: fn.call(params))

    def logs(self, event: Any, from_block: int, to_block: int, **argument_filters: Any) -> list[Any]:
        """Decoded logs of ``event`` (``contract.events.Name``) in ``[from_block, to_block]``,
        filtered on indexed arguments; transport failures as :class:`ChainError`."""
        return self._guard(lambda: event().get_logs(from_block=from_block, to_block=to_block,
                                                    argument_filters=argument_filters or None))

    # -- chain state ------------------------------------------------------

    def balance(self, address: Address) -> int:
        """Wei held by ``address``."""
        with self._rpc():
            return self.w3.eth.get_balance(_addr(address))

    def timestamp(self) -> int:
        """Timestamp of the latest block."""
        with self._rpc():
            return self.w3.eth.get_block("latest")["timestamp"]

    def advance_time(self, seconds: int) -> int:
        """Mine a block ``seconds`` after the latest one, or later if the chain's clock is
        already past that (tester: time travel; JSON-RPC: ``evm_increaseTime`` +
        ``evm_mine``, as anvil and hardhat answer); the new block's timestamp. With
        ``retry_for`` > 0 a resent ``evm_increaseTime`` whose first answer was lost may
        move the clock further still."""
        if seconds < 1:
            raise ValueError("advance_time needs at least one second")
        target = self.timestamp() + seconds
        with self._rpc():
            if self.tester is not None:
                # eth-tester mines the block at (argument - 1); its pending block may already be
                # later than the target (py-evm follows the wall clock when the chain is behind it)
                if target >= self.w3.eth.get_block("pending")["timestamp"]:
                    self.tester.time_travel(target + 1)
                else:
                    self.tester.mine_blocks(1)
            else:
                self.w3.provider.make_request("evm_increaseTime", [seconds])
                self.w3.provider.make_request("evm_mine", [])
        return self.timestamp()

    def mine(self, blocks: int = 1) -> None:
        """Mine ``blocks`` empty blocks."""
        with self._rpc():
            if self.tester is not None:
                self.tester.mine_blocks(blocks)
            else:
                for _ in range(blocks):
                    self.w3.provider.make_request("evm_mine", [])

    # -- deployment -------------------------------------------------------

    def deploy(
        self,
        *,
        deployer: Address | None = None,
        treasury: Address | None = None,
        challenge_window: int = 24 * 3600,
        max_game_duration: int = 7 * 24 * 3600,
        unbonding_delay: int | None = None,
        min_stake: int = 10**18,
    ) -> Deployment:
        """Deploy a StakeManager and a ClaimRegistry that reads stakes from it.

        ``unbonding_delay`` defaults to ``challenge_window + max_game_duration + 1 day``;
        ``treasury`` to the deployer. The deployer is the StakeManager's owner.
        """
        frm = _addr(deployer) if deployer is not None else self.accounts[0]
        if unbonding_delay is None:
            unbonding_delay = challenge_window + max_game_duration + 24 * 3600
        sm, tx_sm = self.deploy_contract(
            "StakeManager", _addr(treasury) if treasury is not None else frm,
            challenge_window, max_game_duration, unbonding_delay, sender=frm,
        )
        reg, tx_reg = self.deploy_contract("ClaimRegistry", sm.address, min_stake, sender=frm)
        return Deployment(self, sm, reg, deploy_txs=(tx_sm, tx_reg))

    def attach(self, stake_manager: Address, registry: Address) -> Deployment:
        """A :class:`Deployment` of contracts already on chain."""
        return Deployment(self, self.contract("StakeManager", stake_manager), self.contract("ClaimRegistry", registry))


class Deployment:
    """A StakeManager and the ClaimRegistry wired to it, on a :class:`Chain`.

    Methods taking an ``account`` send the transaction from it; views return ints
    and bytes. Reverts raise :class:`ContractError`.
    """

    def __init__(self, chain: Chain, stake_manager: Contract, registry: Contract, deploy_txs: tuple[Tx, ...] = ()):
        self.chain = chain
        self.stake_manager = stake_manager
        self.registry = registry
        self.deploy_txs = deploy_txs

    @property
    def registry_address(self) -> str:
        return self.registry.address

    # -- StakeManager: transactions --------------------------------------

    def stake(self, account: Address, amount: int) -> Tx:
        """Bond ``amount`` wei of ``account``'s ETH."""
        return self.chain.send(self.stake_manager.functions.stake(), account, value=amount)

    def request_unbond(self, account: Address, amount: int) -> Tx:
        """Start unbonding ``amount`` of ``account``'s bonded stake."""
        return self.chain.send(self.stake_manager.functions.requestUnbond(amount), account)

    def withdraw_unbonded(self, account: Address) -> Tx:
        """Move ``account``'s matured unbonding to its credit."""
        return self.chain.send(self.stake_manager.functions.withdrawUnbonded(), account)

    def withdraw(self, account: Address) -> Tx:
        """Pull all of ``account``'s credit to it."""
        return self.chain.send(self.stake_manager.functions.withdraw(), account)

    def set_game_factory(self, owner: Address, factory: Address) -> Tx:
        """Owner only, once: the account or contract that authorises dispute games."""
        return self.chain.send(self.stake_manager.functions.setGameFactory(_addr(factory)), owner)

    def authorize_game(self, factory: Address, game: Address) -> Tx:
        """Game factory only: let ``game`` lock, unlock and slash."""
        return self.chain.send(self.stake_manager.functions.authorizeGame(_addr(game)), factory)

    def lock(self, game: Address, account: Address, amount: int) -> Tx:
        """As authorised ``game``: lock ``amount`` of ``account``'s free stake."""
        return self.chain.send(self.stake_manager.functions.lock(_addr(account), amount), game)

    def unlock(self, game: Address, account: Address, amount: int) -> Tx:
        """As ``game``: release ``amount`` of its lock on ``account``."""
        return self.chain.send(self.stake_manager.functions.unlock(_addr(account), amount), game)

    def slash(self, game: Address, account: Address, amount: int, winner: Address, winner_share_bps: int) -> Tx:
        """As ``game``: slash ``amount`` it locked on ``account``; the winner gets
        ``winner_share_bps``/10000 of it as credit, the treasury the rest."""
        fn = self.stake_manager.functions.slash(_addr(account), amount, _addr(winner), winner_share_bps)
        return self.chain.send(fn, game)

    # -- StakeManager: views ---------------------------------------------

    def _sm(self, name: str, *args: Any) -> Any:
        return self.chain.call(getattr(self.stake_manager.functions, name)(*args))

    def stake_of(self, account: Address) -> int:
        return self._sm("stakeOf", _addr(account))

    def unbonding_of(self, account: Address) -> tuple[int, int]:
        """(amount, readyAt)."""
        return tuple(self._sm("unbondingOf", _addr(account)))  # type: ignore[return-value]

    def credit_of(self, account: Address) -> int:
        return self._sm("creditOf", _addr(account))

    def locked_of(self, account: Address) -> int:
        return self._sm("lockedOf", _addr(account))

    def locked_by(self, game: Address, account: Address) -> int:
        return self._sm("lockedBy", _addr(game), _addr(account))

    def totals(self) -> tuple[int, int, int]:
        """(totalStaked, totalUnbonding, totalCredits)."""
        return self._sm("totalStaked"), self._sm("totalUnbonding"), self._sm("totalCredits")

    def solvency(self) -> tuple[int, int]:
        """(contract balance, liabilities): equal unless ETH was forced in."""
        return tuple(self._sm("solvency"))  # type: ignore[return-value]

    # -- ClaimRegistry ----------------------------------------------------

    def post_round(self, account: Address, claim_round: ClaimRound) -> Tx:
        """Post ``claim_round``'s root from ``account`` (its prover)."""
        if claim_round.prover != bytes.fromhex(_addr(account)[2:]):
            raise ValueError(f"the round's prover is {_addr(claim_round.prover)}, not {_addr(account)}")
        if claim_round.chain_id != self.chain.chain_id:
            raise ValueError(f"the round's claims are for chain {claim_round.chain_id}, not {self.chain.chain_id}")
        return self.post_root(account, claim_round.round, claim_round.root, len(claim_round))

    def post_root(self, account: Address, round: int, root: bytes, count: int) -> Tx:
        """Post a raw round root (no checks on this side)."""
        return self.chain.send(self.registry.functions.postRoot(round, root, count), account)

    def root_of(self, prover: Address, round: int) -> tuple[bytes, int, int]:
        """(root, count, postedAt); zeros if none."""
        return tuple(self.chain.call(self.registry.functions.rootOf(_addr(prover), round)))  # type: ignore[return-value]

    def is_final(self, prover: Address, round: int) -> bool:
        return self.chain.call(self.registry.functions.isFinal(_addr(prover), round))

    def claim_hash(self, claim: Claim) -> bytes:
        """The contract's ``claimHash`` (EIP-712 hashStruct)."""
        return bytes(self.chain.call(self.registry.functions.claimHash(claim_tuple(claim))))

    def domain_separator(self) -> bytes:
        return bytes(self.chain.call(self.registry.functions.DOMAIN_SEPARATOR()))

    def claim_digest(self, claim: Claim) -> bytes:
        return bytes(self.chain.call(self.registry.functions.claimDigest(claim_tuple(claim))))

    def verify_claim(
        self,
        signed: SignedClaim,
        proof: Sequence[bytes] | None = None,
        claim_round: ClaimRound | None = None,
        index: int | None = None,
    ) -> bytes:
        """Verify ``signed`` on chain: signature, and inclusion under its prover's
        posted root (``proof`` given, or computed from ``claim_round``). Returns the
        claim hash; a failed check raises :class:`ContractError` naming it."""
        if proof is None:
            if claim_round is None:
                raise ValueError("verify_claim needs a proof or the claim's round")
            proof = claim_round.prove(signed.claim.hash())
        sig = signed.signature
        fn = self.registry.functions.verifyClaim(
            claim_tuple(signed.claim), sig[:32], sig[32:64], sig[64],
            signed.claim.step if index is None else index, [bytes(p) for p in proof],
        )
        return bytes(self.chain.call(fn))
