"""Evaluation entry point: not available yet.

ImageNet-style evaluation driven by configs/ arrives with the training engine. Until then this script
evaluates nothing and says so; `zoo run NAME` builds and runs a model on a synthetic batch.
"""
import sys

if __name__ == "__main__":
    sys.exit("eval.py: evaluation is not implemented yet in this release of zoo; "
             "use `zoo run NAME --weights FILE` to run a model on a synthetic batch.")
