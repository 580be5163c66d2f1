"""Training entry point: not available yet.

The training engine (YAML recipes from configs/, timm data pipelines, checkpoints with resume,
torchrun) is the next milestone. Until it lands this script trains nothing and says so.
"""
import sys

if __name__ == "__main__":
    sys.exit("train.py: training is not implemented yet in this release of zoo; "
             "models can be built and loaded with zoo.create_model (see README.md).")
