"""Training engine: data, loops, optimizers/schedules, sparse training, checkpoints, distributed.

Submodules are imported on use (``from zoo.train import sparse``), so importing ``zoo`` stays light.
"""
