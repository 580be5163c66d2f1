"""The field's evaluation of a synthetic set: train fresh networks on it, test them on the real held-out split.

Exact to the authors' ``evaluate_synset`` and ``epoch`` (VICO-UoE/DatasetCondensation ``utils.py``): SGD with
momentum 0.9 and weight decay 5e-4 on every parameter, lr 0.01, batch 256, ``epochs + 1`` passes over the set
(their ``range(Epoch + 1)``), a new optimiser at lr x 0.1 after pass ``epochs // 2 + 1``; each batch augmented
with DSA (one op per batch, its values drawn per image) or, for DC without DSA, with their ``augment``. The draws
are the authors': the shuffle consumes the generator as ``DataLoader(shuffle=True)`` consumes torch's global one
(:func:`zoo.condense.augment.loader_batches`), DSA as ``DiffAugment`` does, DC's augmentation takes a numpy
``RandomState`` seeded from the generator; so a seeded generator here and ``torch.manual_seed`` there reach the
same weights (``tests/condense/test_condense_parity.py``). The zoo differs on purpose in: the set stays in memory (no
data loader), a set with soft labels trains on them (soft-target cross-entropy), and a generated set (a method whose
``eval_sampler`` returns a callable, e.g. factorization) makes each batch's images afresh at each read; and on a CPU
the training runs through :func:`zoo.condense.fast_convs.fast_backward` (``exact_forward=False``): 3x3 convolutions by
Winograd's F(2x2, 3x3) forward and backward, the fused instance norm, ReLU and pooling backward, a one-channel first
layer plane by plane. Its weights then round in another order than the authors' and drift from theirs as their own
float32 drifts from their float64; the float32 parity test holds them to that bound.

The protocol follows the data and the method (:meth:`EvalSettings.for_data`), as the authors' scripts do: DSA
with flips for CIFAR and Fashion-MNIST, without for MNIST and SVHN (README), 1000 epochs; DC without DSA
evaluates with ``get_daparam``'s augmentation (``crop_scale_rotate`` for MNIST, 1000 epochs; none and 300 epochs
elsewhere). ``train_network`` is also how experts are trained on real data (MTT's buffer), with a callback after
every epoch.
"""

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from ..data.dsa import DSA
from .augment import dc_augment, dc_augment_strategy, dsa_strategy, loader_batches
from .core import METHODS, RealData, SyntheticSet, make_network
from .fast_convs import fast_backward
from .presets import eval_protocol

__all__ = ["EvalSettings", "accuracy", "evaluate_set", "train_network"]

Sampler = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


@dataclass
class EvalSettings:
    """The protocol's settings (the authors' defaults). ``epochs`` is the authors' ``epoch_eval_train`` (300
    without augmentation, 1000 with; training makes ``epochs + 1`` passes). ``dsa``: augment with DSA
    (``dsa_strategy``); else ``dc_aug`` names the authors' DC augmentation (``crop_scale_rotate``), or None."""

    model: str = "convnet_d3"
    epochs: int = 1000
    lr: float = 0.01
    batch: int = 256
    momentum: float = 0.9
    weight_decay: float = 5e-4
    dsa: bool = True
    dsa_strategy: str = "color_crop_cutout_scale_rotate"  # no flips: digits are not mirror-symmetric
    dc_aug: str | None = None
    model_kwargs: dict | None = field(default=None)

    @classmethod
    def for_data(cls, dataset: str, method: str = "dsa", epochs: int | None = None, **overrides) -> "EvalSettings":
        """The authors' protocol for ``dataset`` (``RealData.source["name"]``: mnist, fashion_mnist, cifar10, ...)
        and the ``method`` that made the set: ``dc`` evaluates as ``main.py`` without DSA (``get_daparam``:
        crop_scale_rotate and 1000 epochs for MNIST, no augmentation and 300 epochs elsewhere); every other method
        with DSA (flips only where the data allows them), 1000 epochs. ``epochs`` overrides the count."""
        if method == "dc":
            aug = dc_augment_strategy(dataset)
            s = cls(epochs=1000 if aug else 300, dsa=False, dc_aug=aug)
        else:
            s = cls(epochs=1000, dsa=True, dsa_strategy=dsa_strategy(dataset))
        if epochs is not None:
            s = replace(s, epochs=int(epochs))
        return replace(s, **overrides)

    @classmethod
    def for_preset(
        cls, preset: str, dataset: str, method: str = "dsa", meta: dict | None = None, epochs: int | None = None,
        **overrides,
    ) -> "EvalSettings":  # fmt: skip
        """The evaluation ``preset`` names for ``method``'s set on ``dataset``
        (:func:`zoo.condense.presets.eval_protocol`): ``paper`` the authors' (DM's script flips MNIST, MTT and
        factorization train at the set's learned lr, ``meta["eval_lr"]``), other presets the zoo's protocol at their
        epochs. ``epochs`` overrides the count."""
        p = eval_protocol(preset, method, dataset)
        kind, _, strategy = str(p["augment"]).partition(" ")
        s = cls(dsa=kind == "DSA", dsa_strategy=strategy if kind == "DSA" else cls.dsa_strategy,
                dc_aug=strategy if kind == "DC" else None)  # fmt: skip
        lr = p["lr"]
        if lr == "learned":
            lr = (meta or {}).get("eval_lr") or cls.lr
        s = replace(s, epochs=int(p["epochs"] if epochs is None else epochs), lr=float(lr), batch=int(p["batch"]))
        return replace(s, **overrides)


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
    sampler: Sampler | None = None,
) -> nn.Module:
    """Train ``net`` on in-memory ``images`` for ``epochs`` passes with the protocol's optimiser and schedule
    (with ``decay``, lr x 0.1 after pass ``(epochs + 1) // 2``, counted from 0: the authors' ``Epoch // 2 + 1``
    for ``epochs = Epoch + 1``). ``sampler(indices, generator)``, when given, makes each batch's images instead
    of ``images[indices]``."""
    s = settings or EvalSettings()
    device = next(net.parameters()).device
    images, labels = images.to(device), labels.to(device)
    soft = soft.to(device) if soft is not None else None
    opt = torch.optim.SGD(net.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    dsa = DSA(s.dsa_strategy) if s.dsa else None
    rng = None
    if dsa is None and s.dc_aug:  # the authors' augment draws from numpy
        rng = np.random.RandomState(int(torch.randint(2**31 - 1, (1,), generator=generator)))
    n = labels.shape[0]
    lr = s.lr
    net.train()
    for ep in range(epochs):
        with fast_backward(net, exact_forward=False):  # the network's own modules again before on_epoch sees it
            for idx in loader_batches(n, s.batch, generator):
                idx = idx.to(device)
                x = images[idx] if sampler is None else sampler(idx, generator).to(device)
                if dsa is not None:
                    x = dsa(x, generator, per_sample=True)
                elif rng is not None:
                    x = dc_augment(x, s.dc_aug, rng, generator)
                loss = _loss(net(x), labels[idx], None if soft is None else soft[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        if decay and ep == (epochs + 1) // 2:  # the authors' single step at half the epochs (a new optimiser)
            lr *= 0.1
            opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=s.momentum, weight_decay=s.weight_decay)
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


def set_sampler(synset: SyntheticSet) -> Sampler | None:
    """How the evaluation reads ``synset``: its method's ``eval_sampler`` (a generated set), else None (by index)."""
    method = METHODS.get(str(synset.meta.get("method", "")))
    return method.eval_sampler(synset) if method is not None else None


def evaluate_set(
    synset: SyntheticSet | tuple[torch.Tensor, torch.Tensor],
    test: RealData,
    settings: EvalSettings | None = None,
    runs: int = 5,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> list[float]:
    """Top-1 (%) of ``runs`` fresh networks trained on ``synset`` (or ``(images, labels)``), tested on ``test``;
    each trains ``settings.epochs + 1`` passes, as ``evaluate_synset`` does."""
    s = settings or EvalSettings()
    sampler = None
    if isinstance(synset, SyntheticSet):
        images, labels, soft = synset.images, synset.labels, synset.soft_labels
        sampler = set_sampler(synset)
    else:
        (images, labels), soft = synset, None
    accs = []
    for r in tqdm(range(runs), desc=f"evaluating on {s.model}", disable=not progress, leave=False):
        g = torch.Generator().manual_seed(seed * 1000 + r)
        net = make_network(s.model, test.shape, test.num_classes, g, **(s.model_kwargs or {})).to(device)
        train_network(net, images, labels, s.epochs + 1, s, soft, g, sampler=sampler)
        accs.append(accuracy(net, test))
    return accs
