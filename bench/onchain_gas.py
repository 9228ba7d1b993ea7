"""Gas of refute's on-chain numerics (contracts/src/Float32.sol).

Run: ``python bench/onchain_gas.py``. Deploys ``Float32`` on an in-process
eth-tester chain (py-evm, Prague rules), sends each primitive, each math program and
``dotElement`` at SmolLM2's K = 576 and 1536 (s = 2) as a transaction, and prints
the exact gas used: ``total`` (the receipt) and ``execution`` (total minus 21,000
and the calldata at 4/16 gas per zero/nonzero byte; under EIP-7623 a calldata-heavy
transaction pays a floor instead, so for dotElement ``total`` is what an external
caller pays and ``execution`` what the computation costs inside a dispute contract).
Writes ``bench/results/onchain_numerics_gas.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from refute.contracts.float32 import Float32Contract

OUT = Path(__file__).resolve().parent / "results" / "onchain_numerics_gas.json"
PI = 0x40490FDB  # float32(pi)
CASES: list[tuple[str, tuple[int, ...]]] = [
    ("neg", (PI,)),
    ("add", (PI, 0x3F8CCCCD)),
    ("sub", (PI, 0x3F8CCCCD)),
    ("mul", (PI, 0x3F8CCCCD)),
    ("div", (PI, 0x3F8CCCCD)),
    ("sqrt", (PI,)),
    ("lt", (PI, 0x3F8CCCCD)),
    ("max", (PI, 0x3F8CCCCD)),
    ("fromInt64", (123456789012,)),
    ("toInt64", (PI,)),
    ("toBF16", (PI,)),
    ("ldexp", (PI, -140)),
    ("exp", (PI,)),
    ("log", (PI,)),
    ("tanh", (0x3F400000,)),
    ("sigmoid", (PI,)),
    ("erf", (0x3F400000,)),
    ("sin", (PI,)),
    ("cos", (PI,)),
    ("sin", (0x5F000000,)),  # 2^63: the full integer reduction
    ("rsqrt", (PI,)),
]


def main() -> None:
    f = Float32Contract()
    _, baseline = f.gas_used("neg", PI)  # call dispatch, ABI decoding and encoding
    rows = []
    for name, args in CASES:
        total, execution = f.gas_used(name, *args)
        rows.append({"function": name, "args": [hex(a) if a >= 0 else a for a in args], "total": total,
                     "execution": execution, "over_neg": execution - baseline})
    rng = np.random.default_rng(0)
    for k in (576, 1536):
        x = rng.normal(size=k).astype(np.float32)
        w = (rng.normal(size=k) * 0.02).astype(np.float32)
        total, execution = f.dot_element_gas(x, w, 2)
        rows.append({"function": f"dotElement K={k} s=2", "args": [], "total": total, "execution": execution,
                     "over_neg": execution - baseline})
    print(f"{'function':<22} {'args':<26} {'total':>10} {'execution':>10} {'over neg':>9}")
    for r in rows:
        print(f"{r['function']:<22} {' '.join(map(str, r['args'])):<26} {r['total']:>10,} {r['execution']:>10,} {r['over_neg']:>9,}")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"chain": "eth-tester py-evm (prague)", "solc": "0.8.28, optimizer 200 runs, cancun",
                               "rows": rows}, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
