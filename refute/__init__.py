"""refute: verifiable compute for machine-learning swarms.

The installed package maps the repository's top-level folders onto
subpackages: ``kernels/`` is :mod:`refute.kernels`, ``compute/`` is
:mod:`refute.compute`, and so on (see ``pyproject.toml``).
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("refute")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
