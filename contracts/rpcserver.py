"""An embedded JSON-RPC chain: one in-process py-evm chain shared over HTTP.

:class:`ChainServer` serves JSON-RPC 2.0 over HTTP on ``127.0.0.1`` in front of
an in-process :class:`~refute.contracts.client.Chain` (eth-tester + py-evm), so
several OS processes (prover nodes, a verifier, a demo) can share one chain
through ``Chain(server.url)``::

    with ChainServer() as server:
        chain = Chain(server.url)
        dep = chain.deploy()

``refute chain`` runs one from the command line.

Requests are forwarded to the tester provider (with the tester's request and
result formatting) and the results turned into standard Ethereum JSON-RPC
JSON (quantities and data as ``0x`` hex). A revert answers the JSON-RPC error
``{"code": 3, "message": "execution reverted…", "data": "0x<revert data>"}``
as geth does, so web3 raises ``ContractLogicError`` with ``.data`` and the
client decodes the custom error exactly as on the in-process chain. Batches
(JSON arrays) are answered in order; notifications get no answer. Unknown
methods answer ``-32601``, malformed JSON ``-32700``, invalid requests
``-32600``, bad parameters ``-32602``; nothing a client sends stops the
server.

Dev methods, as anvil and hardhat answer them:

* ``evm_increaseTime [seconds]`` moves the chain clock forward: the next block
  is at least ``seconds`` after the latest one; answers the clock's total
  offset from wall time;
* ``evm_mine []`` mines an empty block now; ``evm_mine [timestamp]`` (or
  ``[{"timestamp": t, "blocks": n}]``) mines at ``timestamp`` (later blocks
  follow on from it); answers ``"0x0"``.

Blocks are mined one per transaction, at once. Their timestamps follow the
wall clock plus the offset that ``evm_increaseTime`` / ``evm_mine
[timestamp]`` set, and always increase by at least one second a block, so game
clocks on this chain run on wall time plus any ``evm_increaseTime``. Views and
gas estimates run at the latest block's timestamp: mine a block
(``Chain.mine``) to bring it up to now.

:meth:`ChainServer.pause` simulates an outage: requests are accepted but not
answered until :meth:`ChainServer.resume` (a dead RPC that hangs; a client
that gave up meanwhile has its request executed all the same, as a real node
would). All access to eth-tester is serialised by :attr:`ChainServer.lock`;
hold it to use :attr:`ChainServer.chain` directly while the server runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import socket
import threading
import time
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from refute.contracts.client import Chain

__all__ = ["ChainServer", "add_parser", "MAX_BODY"]

log = logging.getLogger("refute.chain.server")

#: Largest request body accepted (bytes).
MAX_BODY: Final = 32 * 2**20

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
METHOD_NOT_FOUND: Final = -32601
INVALID_PARAMS: Final = -32602
INTERNAL_ERROR: Final = -32603
SERVER_ERROR: Final = -32000
REVERT: Final = 3


class _RPCError(Exception):
    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data

    def obj(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


def _hex(value: Any) -> Any:
    """A tester result as standard JSON-RPC JSON."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, float)):
        return value
    if isinstance(value, int):
        return hex(value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "0x" + bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): _hex(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_hex(v) for v in value]
    return str(value)


def _quantity(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise _RPCError(INVALID_PARAMS, f"{what} must be a number")
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value, 16) if value.lower().startswith("0x") else int(value)
        except ValueError:
            pass
    raise _RPCError(INVALID_PARAMS, f"{what} must be a number or a 0x quantity, not {value!r}")


def _to_camel_tx(tx: Any) -> Any:
    """Full transactions inside blocks come back with eth-tester's snake_case keys."""
    from web3.providers.eth_tester.middleware import transaction_result_formatter, transaction_result_remapper

    if isinstance(tx, Mapping):
        tx = transaction_result_remapper(transaction_result_formatter(dict(tx)))
        if "y_parity" in tx:
            tx["yParity"] = tx.pop("y_parity")
    return tx


class _Dropped(Exception):
    """The server stopped while a request was held: close the connection unanswered."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    #: idle keep-alive connections are dropped after this many seconds
    timeout = 300

    def setup(self) -> None:
        super().setup()
        try:  # answers go out at once (no Nagle wait for the client's delayed ACK)
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        self.server.owner._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        finally:
            self.server.owner._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.debug("%s " + format, self.address_string(), *args)

    def _reply(self, status: int, body: bytes) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:  # the client gave up (timed out) meanwhile
            self.close_connection = True

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        owner = self.server.owner
        try:
            length = int(self.headers.get("Content-Length", ""))
            if not 0 <= length <= MAX_BODY:
                raise ValueError
        except ValueError:
            self.close_connection = True
            err = _RPCError(INVALID_REQUEST, "a request needs a Content-Length of at most %d bytes" % MAX_BODY)
            self._reply(400, json.dumps({"jsonrpc": "2.0", "id": None, "error": err.obj()}).encode())
            return
        body = self.rfile.read(length)
        if not owner._wait_running():  # stopped while paused: drop the connection unanswered
            self.close_connection = True
            return
        try:
            out = owner.handle(body)
        except _Dropped:
            self.close_connection = True
            return
        if not owner._wait_running():  # paused while answering: the answer is held (or lost)
            self.close_connection = True
            return
        if out is None:  # notifications only
            self._reply(204, b"")
        else:
            self._reply(200, out)

    def do_GET(self) -> None:  # noqa: N802
        self.close_connection = True
        err = _RPCError(INVALID_REQUEST, "JSON-RPC requests are POSTed")
        self._reply(405, json.dumps({"jsonrpc": "2.0", "id": None, "error": err.obj()}).encode())


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: ChainServer


class ChainServer:
    """JSON-RPC 2.0 over HTTP in front of an in-process py-evm :class:`Chain`.

    ``port=0`` picks a free port; :attr:`url` is the address to give
    ``Chain(url)``. :meth:`start` returns the server (it is also a context
    manager); :meth:`pause` / :meth:`resume` simulate an outage.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, chain_id: int = 31337):
        from refute.contracts import client

        self.host = host
        self.port = port
        self.chain_id = chain_id
        #: serialises every use of eth-tester (it is not thread-safe)
        self.lock = threading.RLock()
        self.chain: Chain = client.Chain(chain_id=chain_id)
        w3 = self.chain.w3
        self._request = w3.provider.request_func(w3, w3.middleware_onion)
        self._offset = 0  # chain clock = wall clock + offset (seconds)
        self._running = threading.Event()
        self._running.set()
        self._pause_on: tuple[str, bool] | None = None
        self._stopping = False
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle -------------------------------------------------------

    def start(self) -> ChainServer:
        """Bind and serve in a daemon thread."""
        if self._httpd is not None:
            return self
        self._stopping = False
        httpd = _HTTPServer((self.host, self.port), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self.port = httpd.server_address[1]
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                                         name=f"refute-chain-{self.port}", daemon=True)
        self._thread.start()
        log.info("refute chain: listening on %s (chain id %d)", self.url, self.chain_id)
        return self

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def stop(self) -> None:
        """Stop serving and close every connection (requests held by a pause are dropped unanswered)."""
        httpd = self._httpd
        if httpd is None:
            return
        self._stopping = True
        self._running.set()  # wake held requests; they see _stopping and drop their connection
        httpd.shutdown()
        httpd.server_close()
        with self._conns_lock:
            conns = list(self._conns)
        for c in conns:  # idle keep-alive connections: the client must see the server gone
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> ChainServer:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def pause(self, *, on: str | None = None, execute: bool = False) -> None:
        """Accept requests but answer none until :meth:`resume` (an outage that hangs).

        ``on``: the outage starts only when a request for that method arrives (it is the
        first request held). ``execute``: that request is executed before the outage
        starts, and only its answer is held: the client times out although the node
        acted on it (a lost answer)."""
        if on is None:
            self._pause_on = None
            self._running.clear()
        else:
            self._pause_on = (on, execute)

    def resume(self) -> None:
        """Answer again, starting with the requests held during the pause."""
        self._pause_on = None
        self._running.set()

    def _trigger(self, method: str) -> None:
        armed = self._pause_on
        if armed is None or armed[0] != method:
            return
        with self.lock:  # one request starts the outage
            if self._pause_on != armed:
                return
            self._pause_on = None
            self._running.clear()
        log.info("outage starts at a request for %s%s", method, " (executed, answer held)" if armed[1] else "")
        if not armed[1] and not self._wait_running():
            raise _Dropped

    @property
    def paused(self) -> bool:
        return not self._running.is_set()

    def _wait_running(self) -> bool:
        self._running.wait()
        return not self._stopping

    def _track(self, conn: socket.socket, alive: bool) -> None:
        with self._conns_lock:
            if alive:
                self._conns.add(conn)
            else:
                self._conns.discard(conn)

    @property
    def accounts(self) -> list[tuple[str, str]]:
        """The funded accounts: (address, private key hex)."""
        with self.lock:
            keys = self.chain.tester.backend.account_keys
            return [(k.public_key.to_checksum_address(), k.to_hex()) for k in keys]

    # -- JSON-RPC ---------------------------------------------------------

    def handle(self, body: bytes) -> bytes | None:
        """Answer one HTTP body (a request or a batch); ``None`` when nothing is to be answered."""
        try:
            req = json.loads(body)
        except (ValueError, UnicodeDecodeError, RecursionError) as e:
            return self._dump(self._error(None, _RPCError(PARSE_ERROR, f"parse error: {e}")))
        if isinstance(req, list):
            if not req:
                return self._dump(self._error(None, _RPCError(INVALID_REQUEST, "empty batch")))
            out = [r for r in (self._one(x) for x in req) if r is not None]
            return self._dump(out) if out else None
        r = self._one(req)
        return None if r is None else self._dump(r)

    @staticmethod
    def _dump(obj: Any) -> bytes:
        return json.dumps(obj, separators=(",", ":")).encode()

    @staticmethod
    def _error(rid: Any, err: _RPCError) -> dict[str, Any]:
        return {"jsonrpc": "2.0", "id": rid, "error": err.obj()}

    def _one(self, req: Any) -> dict[str, Any] | None:
        if not isinstance(req, dict):
            return self._error(None, _RPCError(INVALID_REQUEST, "a request is a JSON object"))
        rid = req.get("id")
        if not isinstance(rid, (str, int, type(None))) or isinstance(rid, bool):
            return self._error(None, _RPCError(INVALID_REQUEST, "id must be a string, a number or null"))
        notification = "id" not in req
        method, params = req.get("method"), req.get("params", [])
        try:
            if not isinstance(method, str) or not method:
                raise _RPCError(INVALID_REQUEST, "method must be a string")
            if req.get("jsonrpc", "2.0") != "2.0":
                raise _RPCError(INVALID_REQUEST, 'jsonrpc must be "2.0"')
            if params is None:
                params = []
            if not isinstance(params, list):
                raise _RPCError(INVALID_PARAMS, "params must be an array")
            self._trigger(method)
            result = self.call(method, params)
        except _RPCError as e:
            return None if notification else self._error(rid, e)
        except _Dropped:
            raise
        except Exception as e:  # never let a request take the server down
            log.exception("internal error answering %s", method)
            err = _RPCError(INTERNAL_ERROR, f"internal error: {type(e).__name__}: {e}")
            return None if notification else self._error(rid, err)
        return None if notification else {"jsonrpc": "2.0", "id": rid, "result": result}

    def call(self, method: str, params: list[Any]) -> Any:
        """Execute one JSON-RPC method; the JSON result (raises ``_RPCError``)."""
        with self.lock:
            self._sync_clock()
            if method == "evm_increaseTime":
                return self._increase_time(params)
            if method == "evm_mine":
                return self._mine(params)
            if method == "net_version":
                return str(self.chain.chain_id)
            try:
                resp = self._request(method, params)
            except _RPCError:
                raise
            except Exception as e:
                raise self._translate(e) from e
        if "error" in resp:
            err = resp["error"]
            code = err.get("code", SERVER_ERROR) if isinstance(err, Mapping) else SERVER_ERROR
            msg = err.get("message", str(err)) if isinstance(err, Mapping) else str(err)
            if code == METHOD_NOT_FOUND or "not been implemented" in msg or "Unknown RPC Endpoint" in msg:
                raise _RPCError(METHOD_NOT_FOUND, f"the method {method} does not exist/is not available")
            raise _RPCError(code, msg)
        result = resp.get("result")
        if method in ("eth_getBlockByNumber", "eth_getBlockByHash") and isinstance(result, Mapping):
            result = dict(result)
            if isinstance(result.get("logsBloom"), int):
                result["logsBloom"] = result["logsBloom"].to_bytes(256, "big")
            if isinstance(result.get("transactions"), (list, tuple)):
                result["transactions"] = [_to_camel_tx(t) for t in result["transactions"]]
        return _hex(result)

    def _translate(self, e: Exception) -> _RPCError:
        from eth_abi import decode as abi_decode
        from eth_utils import ValidationError

        from refute.contracts.client import _ERROR_STRING, _revert_data

        if type(e).__name__ == "TransactionFailed":
            data = _revert_data(e) or b""
            msg = "execution reverted"
            if data[:4] == _ERROR_STRING:
                try:
                    msg += ": " + abi_decode(["string"], data[4:])[0]
                except Exception:
                    pass
            return _RPCError(REVERT, msg, "0x" + data.hex())
        text = str(e) or type(e).__name__
        if isinstance(e, ValidationError):
            low = text.lower()
            if "invalid transaction nonce" in low:  # py-evm: "Expected 1, but got 0"
                try:
                    want, got = (int(x) for x in low.split("expected", 1)[1].replace("but got", ",").split(","))
                    prefix = "nonce too low" if got < want else "nonce too high"
                except ValueError:
                    prefix = "invalid nonce"
                return _RPCError(SERVER_ERROR, f"{prefix}: {text}")
            if "afford" in low or "enough balance" in low:
                return _RPCError(SERVER_ERROR, f"insufficient funds for gas * price + value: {text}")
            return _RPCError(SERVER_ERROR, text)
        if isinstance(e, (TypeError, ValueError, IndexError, KeyError, AttributeError)):
            return _RPCError(INVALID_PARAMS, f"invalid params: {type(e).__name__}: {text}")
        if type(e).__name__ in ("BlockNotFound", "TransactionNotFound", "FilterNotFound"):
            return _RPCError(SERVER_ERROR, text)
        return _RPCError(SERVER_ERROR, f"{type(e).__name__}: {text}")

    # -- the clock ----------------------------------------------------------

    def _backend_chain(self) -> Any:
        return self.chain.tester.backend.chain

    def _sync_clock(self) -> None:
        """Stamp the (empty) pending block with wall time + offset, after its parent."""
        tester = self.chain.tester
        if not tester.auto_mine_transactions:
            return
        chain = self._backend_chain()
        parent = chain.get_canonical_head()
        ts = max(parent.timestamp + 1, int(time.time()) + self._offset)
        if chain.header.timestamp != ts:
            chain.header = chain.header.copy(timestamp=ts)

    def _latest_timestamp(self) -> int:
        return self._backend_chain().get_canonical_head().timestamp

    def _increase_time(self, params: list[Any]) -> Any:
        if len(params) != 1:
            raise _RPCError(INVALID_PARAMS, "evm_increaseTime takes [seconds]")
        s = _quantity(params[0], "seconds")
        if s < 0:
            raise _RPCError(INVALID_PARAMS, "evm_increaseTime cannot go back in time")
        now = int(time.time())
        self._offset = max(self._offset + s, self._latest_timestamp() + s - now)
        self._sync_clock()
        return hex(self._offset)

    def _mine(self, params: list[Any]) -> Any:
        blocks, ts = 1, None
        if len(params) > 1:
            raise _RPCError(INVALID_PARAMS, "evm_mine takes [] or [timestamp]")
        if params and params[0] is not None:
            p = params[0]
            if isinstance(p, Mapping):
                blocks = _quantity(p.get("blocks", 1), "blocks")
                if p.get("timestamp") is not None:
                    ts = _quantity(p["timestamp"], "timestamp")
            else:
                ts = _quantity(p, "timestamp")
        if not 1 <= blocks <= 10_000:
            raise _RPCError(INVALID_PARAMS, "evm_mine mines 1 to 10000 blocks")
        if ts is not None:
            latest = self._latest_timestamp()
            if ts <= latest:
                raise _RPCError(INVALID_PARAMS, f"timestamp {ts} is not after the latest block's ({latest})")
            self._offset = ts - int(time.time())
        for _ in range(blocks):
            self._sync_clock()
            self.chain.tester.mine_blocks(1)
        return "0x0"


# -- command line -------------------------------------------------------------


def _cmd_chain(args: argparse.Namespace) -> int:
    import signal

    server = ChainServer(host=args.host, port=args.port, chain_id=args.chain_id).start()
    done = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        done.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        print(f"refute chain: listening on {server.url} (chain id {server.chain_id})")
        print("funded accounts (address, private key):")
        for i, (addr, key) in enumerate(server.accounts):
            print(f"  ({i}) {addr} {key}")
        print("dev methods: evm_increaseTime, evm_mine; Ctrl-C stops", flush=True)
        while not done.wait(0.5):
            pass
    finally:
        server.stop()
        for s, h in old.items():
            signal.signal(s, h)
    print("refute chain: stopped", flush=True)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``refute chain``."""
    p = sub.add_parser(
        "chain",
        help="serve an in-process py-evm chain over JSON-RPC (for several processes to share)",
        description="Serve one in-process py-evm chain (eth-tester, ten funded accounts) over JSON-RPC 2.0 "
        "on HTTP until SIGINT/SIGTERM. Blocks are mined per transaction at wall-clock time plus any "
        "evm_increaseTime; evm_mine mines one.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8545, help="port (default 8545; 0 picks a free one)")
    p.add_argument("--chain-id", type=int, default=31337, help="chain id (default 31337)")
    p.set_defaults(func=_cmd_chain)
