"""DM: distribution matching (Zhao & Bilen, "Dataset Condensation with Distribution Matching", WACV 2023).

Each iteration draws a freshly initialised network (ConvNet-3 by default) and never trains it; for every class, the
squared distance between the mean embedding (the features before the classifier) of a real batch and of the
class's synthetic images, both under the same sampled DSA transform, is summed over classes and minimised by SGD on
the synthetic images (lr 1.0, momentum 0.5; the authors' defaults, 20,000 iterations, 256 real images per class).
Images start from random real ones.

Same loss as the authors' loop, batched differently: the real images of every class go through the network in one
forward without autograd (they only give targets), the synthetic ones in one forward, each class keeping its own
transform (:mod:`zoo.condense.augment`); the network's parameters never require gradients. On a 2-core CPU this is
slower than the authors' per-class loop (``python -m zoo.bench.condense --speed``: 0.53x at 32 px, ipc 10).
"""

import torch

from ..data.dsa import DSA
from .augment import dsa_strategy, sample_class_transforms
from .core import ImageMethod, register_method

__all__ = ["DM"]


def embed(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Penultimate features: ``forward_head(..., pre_logits=True)`` (ConvNet's flattened map)."""
    return net.forward_head(net.forward_features(x), pre_logits=True)


@register_method
class DM(ImageMethod):
    name = "dm"
    defaults = {
        "iterations": 20000,
        "lr_img": 1.0,
        "momentum": 0.5,
        "batch_real": 256,
        "model": "convnet_d3",
        "dsa": True,
        "dsa_strategy": None,  # None: every op, flips left out for digits
        "init": "real",
    }

    def setup(self) -> None:
        o = self.options
        self.init_images()
        self.opt = torch.optim.SGD([self.images], lr=o["lr_img"], momentum=o["momentum"])
        self.dsa = DSA(dsa_strategy(self.real, o["dsa_strategy"])) if o["dsa"] else None

    def step(self, it: int) -> float:
        o, k = self.options, self.real.num_classes
        net = self.network().train().requires_grad_(False)
        reals = [self.real.class_images(c, o["batch_real"], self.generator) for c in range(k)]
        real_rows = torch.cat([torch.full((len(r),), c, dtype=torch.long) for c, r in enumerate(reals)])
        real = torch.cat(reals).to(self.device)
        syn = self.images
        if self.dsa is not None:
            t = sample_class_transforms(self.dsa, k, self.generator)
            real = t.apply(real, real_rows)
            syn = t.apply(syn, self.labels)
        with torch.no_grad():
            f_real = embed(net, real)
        f_syn = embed(net, syn)
        mean_real = torch.zeros(k, f_real.shape[1], device=self.device).index_add_(0, real_rows.to(self.device), f_real)
        mean_real = mean_real / torch.bincount(real_rows, minlength=k).to(self.device).unsqueeze(1)
        mean_syn = torch.zeros(k, f_syn.shape[1], device=self.device).index_add(0, self.labels, f_syn) / self.ipc
        loss = ((mean_real - mean_syn) ** 2).sum()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.item()
