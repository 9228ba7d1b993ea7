"""Deploy and call the ``Float32`` contract: refute's on-chain binary32 numerics.

``Float32`` (``contracts/src/Float32.sol``) exposes the SoftFloat primitives, the
MathLib programs and ExactDot on raw uint32 bit patterns. This helper deploys it on
a web3 instance (by default a fresh in-process ``EthereumTesterProvider`` chain) and
calls it with numpy arrays of bits, in batches of ``batch`` elements per
``eth_call`` so that one call checks thousands of cases::

    f = Float32Contract()
    bits = f.binary("add", a_bits, b_bits)      # uint32 arrays in, uint32 array out
    y = f.unary("exp", x_bits)
    c = f.dot_element(x_row, w_col, slices=2)   # one exact-GEMM element (bits)
    g = f.gas_used("exp", 0x3F800000)            # exact (total, execution) gas

All values are bit patterns: float32 arrays are passed as ``x.view(np.uint32)``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Final

import numpy as np
from web3 import Web3

from refute.contracts.build import load_artifact

__all__ = ["Float32Contract", "BINARY", "UNARY", "CALL_GAS"]

#: Binary primitives with a ``<name>Batch(uint32[], uint32[])`` variant.
BINARY: Final = ("add", "sub", "mul", "div", "min", "max")
#: Unary primitives and math programs with a ``<name>Batch(uint32[])`` variant.
UNARY: Final = ("sqrt", "neg", "abs", "exp", "log", "tanh", "sigmoid", "erf", "sin", "cos", "rsqrt")
#: Gas given to every eth_call: batches are far above a block's gas limit, and an
#: eth_call is free; the in-process chain executes whatever it is given.
CALL_GAS: Final = 2_000_000_000


def _bits(x: Any) -> np.ndarray:
    """Flat uint32 bits of float32 or integer bit-pattern input."""
    a = np.asarray(x)
    if a.dtype == np.float32:
        a = a.view(np.uint32)
    return np.ascontiguousarray(a, dtype=np.uint32).reshape(-1)


def _word_array(v: np.ndarray) -> bytes:
    """ABI encoding of an array's length and elements (each a big-endian 32-byte word;
    negative values sign-extended)."""
    v = np.asarray(v, dtype=np.int64)
    words = np.where(v[:, None] < 0, np.uint8(0xFF), np.uint8(0)).repeat(32, axis=1)
    words[:, 24:] = v.astype(">i8").view(np.uint8).reshape(-1, 8)
    return len(v).to_bytes(32, "big") + words.tobytes()


def _chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


class Float32Contract:
    """A deployed ``Float32`` contract and typed calls into it."""

    def __init__(self, w3: Web3 | None = None, *, address: str | None = None, batch: int = 2048) -> None:
        """Deploy ``Float32`` on ``w3`` (a fresh in-process eth-tester chain when
        None), or attach to an existing deployment at ``address``. ``batch`` is the
        number of elements per eth_call in the batch helpers."""
        if w3 is None:
            from web3 import EthereumTesterProvider

            w3 = Web3(EthereumTesterProvider())
        self.w3 = w3
        self.batch = batch
        art = load_artifact("Float32")
        if address is None:
            factory = w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
            tx = factory.constructor().transact({"from": w3.eth.accounts[0]})
            address = w3.eth.wait_for_transaction_receipt(tx).contractAddress
        self.address = address
        self.contract = w3.eth.contract(address=address, abi=art.abi)

    # -- raw access -------------------------------------------------------

    def call(self, name: str, *args: Any) -> Any:
        """``eth_call`` of function ``name`` with ``args`` (ABI types as declared)."""
        return getattr(self.contract.functions, name)(*args).call({"gas": CALL_GAS})

    def gas(self, name: str, *args: Any) -> int:
        """``estimate_gas`` of a transaction calling ``name(*args)``, including the
        21,000 base cost and the calldata. eth-tester's estimate is a binary search
        with a tolerance (it came out ~14,000 gas high for cheap calls):
        :meth:`gas_used` is exact."""
        fn = getattr(self.contract.functions, name)(*args)
        return int(fn.estimate_gas({"from": self.w3.eth.accounts[0]}))

    def gas_used(self, name: str, *args: Any) -> tuple[int, int]:
        """Exact gas of ``name(*args)`` sent as a transaction: ``(total, execution)``,
        where execution = total - 21,000 - calldata (4 gas per zero byte, 16 per
        nonzero byte): what the computation costs when another contract calls it."""
        fn = getattr(self.contract.functions, name)(*args)
        tx = fn.transact({"from": self.w3.eth.accounts[0], "gas": 29_000_000})
        total = int(self.w3.eth.wait_for_transaction_receipt(tx).gasUsed)
        data = bytes(self.w3.eth.get_transaction(tx)["input"])
        calldata = sum(4 if byte == 0 else 16 for byte in data)
        return total, total - 21_000 - calldata

    # -- batches ------------------------------------------------------------

    def _batch(self, name: str, *arrays: np.ndarray) -> np.ndarray:
        """``name(array...)`` for a batch function whose parameters are all arrays of
        integers and whose result is one array, with numpy doing the ABI encoding and
        decoding (eth_abi's per-element Python costs more than the EVM here). The
        result words are returned as int64 (sign-extended two's complement)."""
        abi = next(e for e in self.contract.abi if e.get("type") == "function" and e["name"] == name)
        signature = f"{name}({','.join(i['type'] for i in abi['inputs'])})"
        selector = bytes(Web3.keccak(text=signature)[:4])
        tails = [_word_array(a) for a in arrays]
        head, offset = b"", 32 * len(arrays)
        for t in tails:
            head += offset.to_bytes(32, "big")
            offset += len(t)
        raw = bytes(self.w3.eth.call({"to": self.address, "data": selector + head + b"".join(tails), "gas": CALL_GAS}))
        n = int.from_bytes(raw[32:64], "big")
        words = np.frombuffer(raw[64 : 64 + 32 * n], dtype=np.uint8).reshape(n, 32)
        return words[:, 24:].copy().view(">i8").reshape(-1).astype(np.int64)

    def unary(self, name: str, x: Any) -> np.ndarray:
        """``name`` of every element of ``x`` (bits or float32) -> uint32 bits."""
        if name not in UNARY:
            raise ValueError(f"unknown unary function {name!r}")
        xb = _bits(x)
        out = np.empty(xb.size, dtype=np.uint32)
        for s in _chunks(xb.size, self.batch):
            out[s] = self._batch(f"{name}Batch", xb[s])
        return out

    def binary(self, name: str, a: Any, b: Any) -> np.ndarray:
        """``name(a[i], b[i])`` for bits or float32 arrays of equal size -> uint32 bits."""
        if name not in BINARY:
            raise ValueError(f"unknown binary function {name!r}")
        ab, bb = _bits(a), _bits(b)
        if ab.size != bb.size:
            raise ValueError(f"operand sizes differ: {ab.size} and {bb.size}")
        out = np.empty(ab.size, dtype=np.uint32)
        for s in _chunks(ab.size, self.batch):
            out[s] = self._batch(f"{name}Batch", ab[s], bb[s])
        return out

    def compare(self, a: Any, b: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """IEEE ``(a == b, a < b, a <= b)`` as three bool arrays."""
        ab, bb = _bits(a), _bits(b)
        flags = np.empty(ab.size, dtype=np.uint8)
        for s in _chunks(ab.size, self.batch):
            flags[s] = self._batch("compareBatch", ab[s], bb[s])
        return (flags & 1) != 0, (flags & 2) != 0, (flags & 4) != 0

    def total_order_key(self, x: Any) -> np.ndarray:
        """refute's int32 total-order keys of ``x``."""
        xb = _bits(x)
        out = np.empty(xb.size, dtype=np.int32)
        for s in _chunks(xb.size, self.batch):
            out[s] = self._batch("totalOrderKeyBatch", xb[s])
        return out

    def from_int64(self, v: Any) -> np.ndarray:
        """int64 (or int32) values -> binary32 bits, one RNE rounding each."""
        vv = np.ascontiguousarray(v, dtype=np.int64).reshape(-1)
        out = np.empty(vv.size, dtype=np.uint32)
        for s in _chunks(vv.size, self.batch):
            out[s] = self._batch("fromInt64Batch", vv[s])
        return out

    def to_int64(self, x: Any) -> np.ndarray:
        """Nearest integers (ties to even) of finite bits in int64 range; the call
        reverts if any element is NaN, infinite or out of range."""
        xb = _bits(x)
        out = np.empty(xb.size, dtype=np.int64)
        for s in _chunks(xb.size, self.batch):
            out[s] = self._batch("toInt64Batch", xb[s])
        return out

    def to_bf16(self, x: Any) -> np.ndarray:
        """bf16 bits (uint16) of binary32 bits, round to nearest even."""
        xb = _bits(x)
        out = np.empty(xb.size, dtype=np.uint16)
        for s in _chunks(xb.size, self.batch):
            out[s] = self._batch("toBF16Batch", xb[s])
        return out

    def ldexp(self, x: Any, k: Any) -> np.ndarray:
        """refute's three-multiplication ldexp of bits ``x`` by int32 ``k``."""
        xb = _bits(x)
        kk = np.ascontiguousarray(k, dtype=np.int32).reshape(-1)
        if xb.size != kk.size:
            raise ValueError(f"operand sizes differ: {xb.size} and {kk.size}")
        out = np.empty(xb.size, dtype=np.uint32)
        for s in _chunks(xb.size, self.batch):
            out[s] = self._batch("ldexpBatch", xb[s], kk[s])
        return out

    # -- exact GEMM ---------------------------------------------------------

    def dot_element(self, x_row: Any, w_col: Any, slices: int = 2, bias: Any = None) -> int:
        """Bits of one exact-GEMM output element: ``x_row`` (row of A) times
        ``w_col`` (column of B), both float32 or bits, plus ``bias`` when given
        (a float value, or an int taken as bits)."""
        args = self._dot_args(x_row, w_col, slices, bias)
        return int(self.call("dotElement", *args))

    def dot_element_gas(self, x_row: Any, w_col: Any, slices: int = 2, bias: Any = None) -> tuple[int, int]:
        """Exact ``(total, execution)`` gas of :meth:`dot_element` as a transaction."""
        return self.gas_used("dotElement", *self._dot_args(x_row, w_col, slices, bias))

    @staticmethod
    def _dot_args(x_row: Any, w_col: Any, slices: int, bias: Any) -> tuple[Any, ...]:
        if bias is None:
            bias_bits = 0
        elif isinstance(bias, (float, np.floating)):
            bias_bits = int(np.float32(bias).view(np.uint32))
        else:
            bias_bits = int(bias)
        return _bits(x_row).tolist(), _bits(w_col).tolist(), int(slices), bias is not None, bias_bits
