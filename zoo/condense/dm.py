"""DM: distribution matching (Zhao & Bilen, "Dataset Condensation with Distribution Matching", WACV 2023).

Each iteration draws a freshly initialised network (ConvNet-3 by default) and never trains it; for every class, the
squared distance between the mean embedding (the features before the classifier) of a real batch and of the
class's synthetic images, both under the same sampled DSA transform, is summed over classes and minimised by SGD on
the synthetic images (lr 1.0, momentum 0.5; the authors' defaults, 20,000 iterations, 256 real images per class).
Images start from random real ones.

Exact to the authors' iteration (``main_DM.py``, ConvNet branch): on the same network, real batches and siamese draws,
:meth:`DM.step` gives their loss (the logged ``loss_avg``, the sum over classes / classes), image gradient and images
(``tests/test_condense_parity.py``, float64, relative error <= 1e-5). Batched differently: the real images of every
class go through the network in one forward without autograd (they only give targets), the synthetic ones in one
forward, each class keeping its own transform (:mod:`zoo.condense.augment`); the network's parameters never require
gradients. On a 2-core CPU this is slower than the authors' per-class loop (``python -m zoo.bench.condense --speed``:
0.53x at 32 px, ipc 10).
"""

import torch

from ..data.dsa import DSA, DSAParams
from .augment import ClassTransforms, dsa_strategy
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

    def _siamese(self) -> DSAParams:
        """One class's DSA transform, shared by its real and synthetic images."""
        return self.dsa.sample(self.generator, 1, tuple(self.images.shape[-2:]), self.images.dtype)

    def step(self, it: int) -> float:
        o, k = self.options, self.real.num_classes
        net = self.network().train().requires_grad_(False)
        reals = [self.real.class_images(c, o["batch_real"], self.generator) for c in range(k)]
        real_rows = torch.cat([torch.full((len(r),), c, dtype=torch.long) for c, r in enumerate(reals)])
        real = torch.cat(reals).to(self.device)
        syn = self.images
        if self.dsa is not None:
            t = ClassTransforms(self.dsa, [self._siamese() for _ in range(k)])
            real = t.apply(real, real_rows)
            syn = t.apply(syn, self.labels)
        with torch.no_grad():
            f_real = embed(net, real)
        f_syn = embed(net, syn)
        mean_real = f_real.new_zeros(k, f_real.shape[1]).index_add_(0, real_rows.to(self.device), f_real)
        mean_real = mean_real / torch.bincount(real_rows, minlength=k).to(self.device).unsqueeze(1)
        mean_syn = f_syn.new_zeros(k, f_syn.shape[1]).index_add(0, self.labels, f_syn) / self.ipc
        loss = ((mean_real - mean_syn) ** 2).sum()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.item() / k  # the authors' loss_avg
