"""The field's evaluation of a synthetic set: train fresh networks on it, test them on the real held-out split.

The authors' protocol (DatasetCondensation ``evaluate_synset``): SGD with momentum 0.9 and weight decay 5e-4 on
every parameter, lr 0.01, batch 256, the learning rate x 0.1 once after half of the epochs; 300 epochs without
augmentation, 1000 with DSA (one op per batch, drawn per image). A set with soft labels trains on them (soft-target
cross-entropy); one without, on its hard labels. ``train_network`` is also how experts are trained on real data
(MTT's buffer), with a callback after every epoch.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..data.dsa import DSA
from .core import RealData, SyntheticSet, make_network

__all__ = ["EvalSettings", "accuracy", "evaluate_set", "train_network"]


@dataclass
class EvalSettings:
    """The protocol's settings (the authors' defaults); ``epochs`` is 1000 with DSA in the papers."""

    model: str = "convnet_d3"
    epochs: int = 1000
    lr: float = 0.01
    batch: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    dsa: bool = True
    dsa_strategy: str = "color_crop_cutout_scale_rotate"  # no flips: digits are not mirror-symmetric
    model_kwargs: dict | None = None


def _loss(logits: torch.Tensor, y: torch.Tensor, soft: torch.Tensor | None) -> torch.Tensor:
    if soft is None:
        return F.cross_entropy(logits, y)
    return -(soft * F.log_softmax(logits, dim=1)).sum(1).mean()


def train_network(
    net: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    epochs: int,
    settings: EvalSettings | None = None,
    soft: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    on_epoch: Callable[[int, nn.Module], None] | None = None,
    decay: bool = True,
) -> nn.Module:
    """Train ``net`` on in-memory ``images`` for ``epochs`` with the protocol's optimiser and schedule."""
    s = settings or EvalSettings()
    device = next(net.parameters()).device
    images, labels = images.to(device), labels.to(device)
    soft = soft.to(device) if soft is not None else None
    opt = torch.optim.SGD(net.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    dsa = DSA(s.dsa_strategy) if s.dsa else None
    n = images.shape[0]
    net.train()
    for ep in range(epochs):
        if decay and ep == epochs // 2 + 1:  # the authors' single step at half the epochs (a new optimiser)
            opt = torch.optim.SGD(net.parameters(), lr=s.lr * 0.1, momentum=s.momentum, weight_decay=s.weight_decay)
        perm = torch.randperm(n, generator=generator).to(device)
        for i in range(0, n, s.batch):
            idx = perm[i : i + s.batch]
            x = images[idx]
            if dsa is not None:
                x = dsa(x, generator, per_sample=True)
            loss = _loss(net(x), labels[idx], None if soft is None else soft[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if on_epoch is not None:
            on_epoch(ep, net)
    return net


@torch.no_grad()
def accuracy(net: nn.Module, test: RealData, batch: int = 1000) -> float:
    """Top-1 accuracy (%) of ``net`` on ``test``."""
    net.eval()
    device = next(net.parameters()).device
    correct = 0
    for i in range(0, test.images.shape[0], batch):
        x, y = test.images[i : i + batch].to(device), test.labels[i : i + batch].to(device)
        correct += int((net(x).argmax(1) == y).sum())
    return 100.0 * correct / test.images.shape[0]


def evaluate_set(
    synset: SyntheticSet | tuple[torch.Tensor, torch.Tensor],
    test: RealData,
    settings: EvalSettings | None = None,
    runs: int = 5,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> list[float]:
    """Top-1 (%) of ``runs`` fresh networks trained on ``synset`` (or ``(images, labels)``), tested on ``test``."""
    s = settings or EvalSettings()
    if isinstance(synset, SyntheticSet):
        images, labels, soft = synset.images, synset.labels, synset.soft_labels
    else:
        (images, labels), soft = synset, None
    accs = []
    for r in tqdm(range(runs), desc=f"evaluating on {s.model}", disable=not progress, leave=False):
        g = torch.Generator().manual_seed(seed * 1000 + r)
        net = make_network(s.model, test.shape, test.num_classes, g, **(s.model_kwargs or {})).to(device)
        train_network(net, images, labels, s.epochs, s, soft, g)
        accs.append(accuracy(net, test))
    return accs
