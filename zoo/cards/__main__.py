"""``python -m zoo.cards``: the same as ``zoo cards``."""

import sys

from . import main

sys.exit(main())
