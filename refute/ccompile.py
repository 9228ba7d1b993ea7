"""Small C libraries compiled on first use with the system C compiler.

refute's hot loops that numpy cannot fuse (keccak trees, the reference
backend's exact reductions and math programs) are written as C source strings
beside their Python twins, compiled once per source text, compiler and flags,
and cached under ``$REFUTE_CACHE_DIR``, else ``$XDG_CACHE_HOME/refute``, else
``~/.cache/refute``. Callers fall back to their pure-Python path when this
raises :class:`OSError` (no compiler, or a failed build).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path


def cache_dir() -> Path:
    """Where compiled libraries are kept."""
    if "REFUTE_CACHE_DIR" in os.environ:
        return Path(os.environ["REFUTE_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "refute"


def compile_library(stem: str, source: str, cflags: Sequence[str]) -> Path:
    """The path of the shared library built from ``source`` with ``cflags``
    (built now unless a cached build of the same inputs exists)."""
    compiler = os.environ.get("CC", "cc")
    flags = [*cflags, "-shared", "-fPIC"]
    key = hashlib.sha256("\0".join([source, compiler, *flags, sys.platform]).encode()).hexdigest()[:16]
    path = cache_dir() / f"{stem}-{key}.so"
    if not path.exists():
        if shutil.which(compiler) is None:
            raise OSError(f"no C compiler ({compiler!r} not found)")
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            src, lib = Path(tmp) / f"{stem}.c", Path(tmp) / f"{stem}.so"
            src.write_text(source)
            done = subprocess.run([compiler, *flags, "-o", str(lib), str(src)], capture_output=True, text=True)
            if done.returncode != 0:
                raise OSError(f"{compiler} failed: {done.stderr.strip()[:2000]}")
            os.replace(lib, path)  # atomic: concurrent processes may race to the same file
    return path
