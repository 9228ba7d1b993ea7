"""refute: verifiable compute for machine-learning swarms.

The installed package maps the repository's top-level folders onto
subpackages: ``kernels/`` is :mod:`refute.kernels`, ``compute/`` is
:mod:`refute.compute`, and so on (see ``pyproject.toml``).
"""

import os
from importlib.metadata import PackageNotFoundError, version

# torch's OpenMP threads otherwise spin for a while after every parallel operator,
# on the very cores the tensor-root hasher's threads need next: with spinning, a
# traced SmolLM2 prefill spent 0.94 s hashing its 199 MiB of activations, without it
# 0.51 s, and the untraced forward ran as fast (bench/claims_cpu.py). libgomp reads
# the variable once, when torch loads, so this acts only where refute is imported
# before torch; an explicit setting always wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    __version__ = version("refute")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
