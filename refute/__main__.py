"""``python -m refute`` is the ``refute`` console script."""

import sys

from refute.cli import main

sys.exit(main())
