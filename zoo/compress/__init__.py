"""Compression: structural pruning (:mod:`zoo.compress.prune`, on Torch-Pruning's dependency graph)."""

from .prune import IMPORTANCES, PruneError, PruneResult, prune, pruned_args

__all__ = ["IMPORTANCES", "PruneError", "PruneResult", "prune", "pruned_args"]
