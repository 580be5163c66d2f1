"""Siamese augmentation of many classes at once: each class draws its own DSA transform (as the authors' per-class
loops do), and the real and the synthetic images of a class get the same one. Grouping the rows by op lets one
network forward serve every class, instead of one forward per class."""

import torch

from ..data.dsa import DEFAULT_STRATEGY, DSA, DSAParams

__all__ = ["ClassTransforms", "dsa_strategy", "sample_class_transforms"]

# digit datasets: a mirrored digit is another shape (or none), so their strategy has no flips
NO_FLIP = ("digits", "mnist", "svhn", "usps")


def dsa_strategy(real, strategy: str | None = None) -> str:
    """``strategy`` as given, else every op, without flips for digit datasets (as the authors do for MNIST)."""
    if strategy:
        return strategy
    name = str(real.source.get("name", "")).lower()
    return DEFAULT_STRATEGY.replace("_flip", "") if any(d in name for d in NO_FLIP) else DEFAULT_STRATEGY


class ClassTransforms:
    """One DSA transform per class; :meth:`apply` transforms a batch whose rows belong to ``row_class``."""

    def __init__(self, dsa: DSA, params: list[DSAParams]):
        self.dsa, self.params = dsa, params

    def apply(self, x: torch.Tensor, row_class: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        ops = {}
        for c, p in enumerate(self.params):
            ops.setdefault(p.op, []).append(c)
        row_class = row_class.to(x.device)
        for op, classes in ops.items():
            rows = torch.nonzero(torch.isin(row_class, torch.tensor(classes, device=x.device))).flatten()
            if rows.numel() == 0:
                continue
            table = torch.stack([self.params[c].values[0] for c in range(len(self.params))])  # (classes, 3)
            values = table.to(x.device)[row_class[rows]]
            out[rows] = self.dsa.apply(x[rows], DSAParams(op, values))
        return out


def sample_class_transforms(dsa: DSA, num_classes: int, generator: torch.Generator) -> ClassTransforms:
    return ClassTransforms(dsa, [dsa.sample(generator, 1) for _ in range(num_classes)])
