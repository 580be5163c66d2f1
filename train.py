"""Train a zoo model from a YAML recipe: ``python train.py --config configs/quickstart_digits.yaml``.

The engine lives in zoo/train/ (recipes, loops, checkpoints, distributed); ``--help`` lists the options.
Many processes: ``torchrun --nproc_per_node N train.py --config ...``.
"""

import sys

from zoo.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
