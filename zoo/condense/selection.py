"""Coreset baselines: ``ipc`` real images per class, chosen, not learned.

- ``random``: a class-balanced random subset, drawn with the run's seed.
- ``herding``: per class, greedy mean matching in an embedding (Welling's herding as DeepCore and DC-BENCH run
  it): the k-th pick is the unselected image that brings the mean of the k picked embeddings closest to the class
  mean, i.e. minimises ``||k * mu - sum(picked) - x||``.
- ``kcenter``: per class, k-center greedy (Sener & Savarese) in the embedding: each pick is the image farthest
  from its nearest picked centre. The first centre is the image closest to the class mean (``first=mean``,
  the default: deterministic given the embedding) or a random one (``first=random``, DeepCore's choice).

The embedding (herding, kcenter) is the penultimate features of a network: the ``teacher`` option when given (a run
or model folder, a registered name with ``teacher_weights``, ``hf-hub:``, or an ``nn.Module``; see
:mod:`zoo.condense.teacher`), otherwise the ``model`` option (ConvNet-3) trained on the real data for
``train_epochs`` epochs (the evaluation protocol's SGD, no augmentation; 0 keeps it random) from the run's seed.
Euclidean distances on the raw features, as DeepCore computes them.

The selected indices (into the real training split) are recorded in ``condense.json`` (``selected``).
"""

import torch

from .core import CondenseError, Method, register_method
from .teacher import load_teacher, train_teacher

__all__ = ["Herding", "KCenter", "RandomSubset", "herding_select", "kcenter_select"]


def herding_select(features: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (in pick order) of ``k`` rows of ``features`` whose running mean follows the mean of all rows."""
    f = features.double()
    mu = f.mean(0)
    picked = torch.zeros(f.shape[0], dtype=torch.bool, device=f.device)
    total = torch.zeros_like(mu)
    order = []
    for i in range(k):
        target = (i + 1) * mu - total
        dist = ((f - target) ** 2).sum(1)
        dist[picked] = float("inf")
        j = int(dist.argmin())
        order.append(j)
        picked[j] = True
        total += f[j]
    return torch.tensor(order, dtype=torch.long)


def kcenter_select(features: torch.Tensor, k: int, first: int) -> torch.Tensor:
    """Indices (in pick order) of ``k`` rows chosen by k-center greedy, starting from row ``first``."""
    f = features.double()
    order = [first]
    nearest = ((f - f[first]) ** 2).sum(1)
    for _ in range(k - 1):
        nearest[order] = -1.0
        j = int(nearest.argmax())
        order.append(j)
        nearest = torch.minimum(nearest, ((f - f[j]) ** 2).sum(1))
    return torch.tensor(order, dtype=torch.long)


class _Selection(Method):
    """Selection methods: everything happens in ``setup``; no iterations."""

    learned = False
    defaults = {"iterations": 0}

    def pick(self, c: int, idx: torch.Tensor) -> torch.Tensor:
        """Positions in ``idx`` (the indices of class ``c``) of the ``ipc`` chosen images."""
        raise NotImplementedError

    def prepare(self) -> None:
        pass

    def setup(self) -> None:
        self.prepare()
        chosen = []
        for c, idx in enumerate(self.real.by_class):
            pos = self.pick(c, idx).to(idx.device)
            chosen.append(idx[pos])
        self.selected = torch.cat(chosen).cpu()
        self.images = self.real.images[self.selected.to(self.real.images.device)].to(self.device)
        self.labels = self.real.labels[self.selected.to(self.real.labels.device)].to(self.device)

    def result(self):
        return self.images, self.labels, None, {}

    def describe(self):
        return {"selected": self.selected.tolist()}


@register_method
class RandomSubset(_Selection):
    name = "random"
    defaults = {"iterations": 0}

    def pick(self, c, idx):
        return torch.randperm(len(idx), generator=self.generator)[: self.ipc]


class _Embedded(_Selection):
    defaults = {
        "iterations": 0,
        "model": "convnet_d3",
        "train_epochs": 20,
        "teacher": "",
        "teacher_weights": None,
        "batch": 512,
    }

    def prepare(self) -> None:
        o = self.options
        if o["teacher"]:
            spec = o["teacher"]
        else:  # the embedding network, trained briefly from the run's seed
            seed = int(torch.randint(2**31 - 1, (1,), generator=self.generator))
            spec = train_teacher(self.real, o["model"], int(o["train_epochs"]), seed, self.device, norm=None)
        self.embedder = load_teacher(spec, self.real, self.device, o.get("teacher_weights"))
        feats = []
        with torch.no_grad():
            for i in range(0, self.real.images.shape[0], o["batch"]):
                x = self.real.images[i : i + o["batch"]].to(self.device)
                feats.append(self.embedder.features(x).float().cpu())
        self.features = torch.cat(feats)

    def describe(self):
        d = super().describe()
        o = self.options
        d["embedding"] = self.embedder.name if o["teacher"] else f"{o['model']} ({o['train_epochs']} epochs)"
        d["model"] = self.embedder.name if o["teacher"] else o["model"]
        return d


@register_method
class Herding(_Embedded):
    name = "herding"

    def pick(self, c, idx):
        return herding_select(self.features[idx.cpu()], self.ipc)


@register_method
class KCenter(_Embedded):
    name = "kcenter"
    defaults = {**_Embedded.defaults, "first": "mean"}

    def check(self) -> None:
        super().check()
        if self.options["first"] not in ("mean", "random"):
            raise CondenseError(f"kcenter's first centre is mean or random, got {self.options['first']!r}")

    def pick(self, c, idx):
        f = self.features[idx.cpu()]
        if self.options["first"] == "mean":
            first = int(((f - f.mean(0)) ** 2).sum(1).argmin())
        else:
            first = int(torch.randint(len(idx), (1,), generator=self.generator))
        return kcenter_select(f, self.ipc, first)
