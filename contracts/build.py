"""Compiling refute's Solidity sources, and the committed artifacts runtime uses.

The compiler is solc-js (the npm package ``solc``, pinned in
``contracts/solcjs/package.json``), driven through py-solc-x's
``compile_standard`` by the ``contracts/solcjs/solc`` front end (solc-js
prints a ``>>>`` line before its JSON; the front end drops it). py-solc-x
cannot download native compilers on machines without internet, and solc-js is
the same compiler compiled to WebAssembly, so the bytecode is the same.

``python -m refute.contracts.build`` compiles ``contracts/src/*.sol`` and writes
one JSON artifact per contract to ``contracts/artifacts/`` (ABI, creation and
runtime bytecode, compiler version, keccak256 of the standard-JSON input).
``--check`` recompiles and exits 1 if any committed artifact differs. Runtime
code only ever calls :func:`load_artifact`, which needs no compiler.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from Crypto.Hash import keccak

__all__ = [
    "SOLC_VERSION",
    "SOURCE_DIR",
    "ARTIFACT_DIR",
    "SOLC_FRONTEND",
    "Artifact",
    "BuildError",
    "standard_input",
    "compile_sources",
    "write_artifacts",
    "load_artifact",
    "check_artifacts",
]

_HERE: Final = Path(__file__).resolve().parent
SOURCE_DIR: Final = _HERE / "src"
ARTIFACT_DIR: Final = _HERE / "artifacts"
SOLC_FRONTEND: Final = _HERE / "solcjs" / "solc"

#: The compiler every artifact is built with (``contracts/solcjs/package.json``).
SOLC_VERSION: Final = "0.8.28"
#: Fixed compiler settings: part of the input hash, so any change shows.
OPTIMIZER_RUNS: Final = 200
EVM_VERSION: Final = "cancun"


class BuildError(RuntimeError):
    """Compilation failed, the compiler is missing, or an artifact is absent or stale."""


@dataclass(frozen=True)
class Artifact:
    """One compiled contract, as committed under ``contracts/artifacts/``."""

    name: str
    source: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    compiler: str
    input_hash: str

    def to_json(self) -> str:
        return json.dumps({
            "contractName": self.name,
            "sourceName": self.source,
            "abi": self.abi,
            "bytecode": self.bytecode,
            "deployedBytecode": self.deployed_bytecode,
            "compiler": self.compiler,
            "inputHash": self.input_hash,
        }, indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Artifact:
        o = json.loads(text)
        return cls(o["contractName"], o["sourceName"], o["abi"], o["bytecode"], o["deployedBytecode"],
                   o["compiler"], o["inputHash"])


def _keccak_hex(data: bytes) -> str:
    return "0x" + keccak.new(digest_bits=256, data=data).hexdigest()


def standard_input(source_dir: Path = SOURCE_DIR) -> dict[str, Any]:
    """The solc standard-JSON input: every ``*.sol`` under ``source_dir`` (by
    relative path, sorted) and the fixed settings."""
    files = sorted(source_dir.rglob("*.sol"))
    if not files:
        raise BuildError(f"no Solidity sources under {source_dir}")
    return {
        "language": "Solidity",
        "sources": {p.relative_to(source_dir).as_posix(): {"content": p.read_text()} for p in files},
        "settings": {
            "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
            "evmVersion": EVM_VERSION,
            "metadata": {"bytecodeHash": "none"},
            "outputSelection": {"*": {"*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"]}},
        },
    }


def _input_hash(std_input: dict[str, Any]) -> str:
    return _keccak_hex(json.dumps(std_input, sort_keys=True, separators=(",", ":")).encode())


def compile_sources(source_dir: Path = SOURCE_DIR) -> dict[str, Artifact]:
    """Compile every source with solc-js; the artifacts by contract name.
    Abstract contracts, interfaces and libraries without code are left out."""
    import solcx
    import solcx.wrapper
    from solcx.exceptions import SolcError

    if not SOLC_FRONTEND.exists():
        raise BuildError(f"missing {SOLC_FRONTEND}")
    std_input = standard_input(source_dir)
    try:
        version = solcx.wrapper.get_version_str_from_solc_binary(SOLC_FRONTEND)
        out = solcx.compile_standard(std_input, solc_binary=SOLC_FRONTEND, allow_empty=True)
    except (SolcError, OSError) as e:  # SolcError carries the compiler's messages
        raise BuildError(f"solc-js failed: {e}") from e
    errors = [e for e in out.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise BuildError("\n".join(e.get("formattedMessage", e.get("message", "")) for e in errors))
    if not version.startswith(SOLC_VERSION):
        raise BuildError(f"solc-js is {version}, the artifacts are built with {SOLC_VERSION}: run 'make solc'")
    input_hash = _input_hash(std_input)
    artifacts = {}
    for source, contracts in sorted(out.get("contracts", {}).items()):
        for name, c in sorted(contracts.items()):
            code = c["evm"]["bytecode"]["object"]
            if not code:
                continue
            if name in artifacts:
                raise BuildError(f"two contracts named {name}")
            artifacts[name] = Artifact(name, source, c["abi"], "0x" + code, "0x" + c["evm"]["deployedBytecode"]["object"],
                                       version, input_hash)
    return artifacts


def write_artifacts(artifacts: dict[str, Artifact], artifact_dir: Path = ARTIFACT_DIR) -> None:
    """Write one ``<name>.json`` per artifact and remove artifacts of contracts that are gone."""
    artifact_dir.mkdir(parents=True, exist_ok=True)
    for stale in artifact_dir.glob("*.json"):
        if stale.stem not in artifacts:
            stale.unlink()
    for name, a in artifacts.items():
        (artifact_dir / f"{name}.json").write_text(a.to_json())


def load_artifact(name: str, artifact_dir: Path = ARTIFACT_DIR) -> Artifact:
    """The committed artifact of contract ``name`` (no compiler needed)."""
    path = artifact_dir / f"{name}.json"
    if not path.exists():
        raise BuildError(f"no artifact for contract {name!r} in {artifact_dir}: run 'python -m refute.contracts.build'")
    return Artifact.from_json(path.read_text())


def check_artifacts(source_dir: Path = SOURCE_DIR, artifact_dir: Path = ARTIFACT_DIR) -> list[str]:
    """Recompile and compare with the committed artifacts; the differences, one line each."""
    fresh = compile_sources(source_dir)
    committed = {p.stem for p in artifact_dir.glob("*.json")}
    problems = [f"{n}: committed artifact has no source" for n in sorted(committed - set(fresh))]
    for name, a in sorted(fresh.items()):
        if name not in committed:
            problems.append(f"{name}: no committed artifact")
            continue
        old = load_artifact(name, artifact_dir)
        for field in ("bytecode", "deployed_bytecode", "abi", "compiler", "input_hash"):
            if getattr(old, field) != getattr(a, field):
                problems.append(f"{name}: {field} differs from a fresh compile")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m refute.contracts.build", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="recompile and compare with the committed artifacts")
    args = parser.parse_args(argv)
    try:
        if args.check:
            problems = check_artifacts()
            for p in problems:
                print(p, file=sys.stderr)
            print("artifacts are up to date" if not problems else f"{len(problems)} stale artifact field(s)")
            return 1 if problems else 0
        artifacts = compile_sources()
        write_artifacts(artifacts)
        print(f"wrote {len(artifacts)} artifact(s) to {ARTIFACT_DIR}: {', '.join(sorted(artifacts))}")
        return 0
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
