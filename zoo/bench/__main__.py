"""python -m zoo.bench: the benchmarks (see zoo/bench/__init__.py)."""

import sys

from . import main

sys.exit(main())
