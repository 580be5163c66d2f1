"""DC: gradient matching (Zhao, Mopuri & Bilen, "Dataset Condensation with Gradient Matching", ICLR 2021), and
DSA: the same with differentiable siamese augmentation (Zhao & Bilen, ICML 2021).

Each iteration draws a fresh network (ConvNet-3) and alternates ``outer_loop`` times: for every class, the
gradient of the cross-entropy of a real batch (256 images) and of the class's synthetic images with respect to
the network's weights are compared layer by layer, ``sum over output channels of (1 - cos)`` (biases and norm
parameters left out); the sum over classes and layers is minimised by SGD on the images (lr 0.1, momentum 0.5);
then the network trains ``inner_loop`` epochs on the synthetic set (SGD lr 0.01, batch 256). The authors' loop
counts: ipc 1 -> (1, 1), ipc 10 -> (10, 50), ipc 20 -> (20, 25), ipc 30 -> (30, 20), ipc 40 -> (40, 15),
ipc 50 -> (50, 10). DSA draws one transform per class, applied to the real and synthetic batch alike.

Exact to the authors' iteration (VICO-UoE/DatasetCondensation ``main.py``, ``match_loss``/``distance_wb``,
``get_loops``): on the same network, real batches and siamese draws, :meth:`DC.step` gives their loss (the logged
``loss_avg``: the sum over outer steps / (classes x outer)), image gradient and images, and the network trains between
outer steps as theirs does, its shuffle and per-image DSA drawing from the method's generator what their ``DataLoader``
and ``DiffAugment`` draw from torch's global one (``tests/condense/test_condense_parity.py``, float64, relative error <=
1e-5). Computed as the authors do, class by class (a batched ``vmap`` over classes was slower than the authors' loop on
the CPU and holds every class's activations at once; the measurements: ``results/notes/code_figures.md``), with the real
side's gradient accumulated over chunks of at most :attr:`DC.chunk` images (on the CPU 16 at one thread and 64 at
two or more, :func:`~zoo.condense.core.real_chunk`: activations that stay in cache and reuse their memory; each
chunk runs the authors' operations in their order) and no graph kept, its 2x2 poolings by a kernel with PyTorch's
own bits, its 128-channel convolutions' input and weight gradients by Winograd's F(2x2, 3x3), and a one-channel
first layer plane by plane in oneDNN's own order (:func:`zoo.condense.fast_convs.fast_backward`: the forward keeps the
authors' bits, so every ReLU decides as theirs, and the gradients stay within float32's rounding, in less time:
``results/condense/speed.md``); the real side through ``torch.compile`` is an opt-in (``compile: true``, faster a
class on the CPU): its fused instance norm rounds in another order, and
where a pre-activation sits within a rounding of a ReLU kink the real gradient then differs by far more than a
rounding (measured: 1.6e-3 in one class of MNIST's shape where the authors' own float32 error is 5e-7), so it misses
the float32 bound; the network's updates run on in-memory tensors without a data loader, through the same kernels
with the 128-channel convolutions' forward by F(2x2, 3x3) too (``fast_backward(exact_forward=False)``: the weights
leave the authors' bits at the first update, and drift from theirs by rounding as their own float32 drifts from
their float64; timed in ``results/notes/code_figures.md``); the default memory layout
(channels-last slows the backward passes of convolution and GroupNorm on the CPU). The zoo's draws come from a
seeded generator (the authors' siamese seed comes from the clock, their real batches from numpy), and its default
``init`` is ``real`` (``main.py``'s is ``noise``; its DSA README command passes ``--init real``).
Under torchrun a process computes its block of classes and the images are gathered before the network trains.
"""

import torch
import torch.nn.functional as F

from ..data.dsa import DSA, DSAParams
from .augment import dsa_strategy, loader_batches
from .core import ImageMethod, compile_real_side, real_chunk, real_chunks, register_method
from .fast_convs import fast_backward

__all__ = ["DC", "DSAMethod", "LOOPS", "match_distance"]

LOOPS = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}


def default_loops(ipc: int) -> tuple[int, int]:
    """The authors' (outer, inner) loops for ``ipc``; between their settings, the nearest one below."""
    below = [k for k in LOOPS if k <= ipc]
    return LOOPS[max(below)] if below else LOOPS[1]


def match_distance(g_real: torch.Tensor, g_syn: torch.Tensor) -> torch.Tensor:
    """``sum over output channels of (1 - cos)`` between two gradients of one weight (1-D ones count 0)."""
    if g_real.ndim == 1:
        return g_real.new_zeros(())
    a, b = g_real.reshape(g_real.shape[0], -1), g_syn.reshape(g_syn.shape[0], -1)
    return (1 - (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + 1e-6)).sum()


def _real_loss(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The cross-entropy of one chunk of a class's real batch (its mean over the chunk)."""
    return F.cross_entropy(net(x), y)


@register_method
class DC(ImageMethod):
    name = "dc"
    defaults = {
        "iterations": 1000,
        "lr_img": 0.1,
        "momentum": 0.5,
        "lr_net": 0.01,
        "batch_real": 256,
        "batch_train": 256,
        "outer_loop": None,  # None: the authors' value for the ipc
        "inner_loop": None,
        "model": "convnet_d3",
        "dsa_strategy": None,  # None: every op, flips left out for digits
        "init": "real",
        "compile": False,  # the real side through torch.compile: faster, but fails the float32 bound (see above)
    }
    use_dsa = False

    shards = "classes"
    chunk: int | None = None  # real images per forward and backward; None: the device's (core.real_chunk)

    def setup(self) -> None:
        o = self.options
        self.init_images()
        self.opt = torch.optim.SGD([self.images], lr=o["lr_img"], momentum=o["momentum"])
        self.dsa = DSA(dsa_strategy(self.real, o["dsa_strategy"])) if self.use_dsa else None
        outer, inner = default_loops(self.ipc)
        self.outer = o["outer_loop"] or outer
        self.inner = o["inner_loop"] or inner
        self.chunk = self.chunk or real_chunk(self.device)
        self._real_loss = compile_real_side(_real_loss, o["compile"], self.device, self.iterations)

    def describe(self):
        return {"outer_loop": self.outer, "inner_loop": self.inner}

    def _siamese(self) -> DSAParams:
        """One class's DSA transform, shared by its real and synthetic batch."""
        return self.dsa.sample(self.generator, 1, tuple(self.images.shape[-2:]), self.images.dtype)

    def _augment(self, x: torch.Tensor, p: DSAParams | None) -> torch.Tensor:
        return x if p is None else self.dsa.apply(x, p)

    def _real_grad(self, net, params: list, x: torch.Tensor, c: int, p: DSAParams | None) -> list[torch.Tensor]:
        """The gradient of class ``c``'s real cross-entropy (the mean over the batch ``x`` under its transform
        ``p``), accumulated over chunks of at most :attr:`chunk` images so the activations stay bounded."""
        n, total = x.shape[0], None
        with fast_backward(net):  # the same forward, the poolings' bits, the convolutions' gradients by Winograd
            for part in real_chunks(x, self.chunk, self.device, lambda block: self._augment(block, p)):
                y = torch.full((part.shape[0],), c, device=self.device)
                g = torch.autograd.grad(self._real_loss(net, part, y) * (part.shape[0] / n), params)
                total = list(g) if total is None else [t + gi for t, gi in zip(total, g)]
        return [t.detach() for t in total]

    def step(self, it: int) -> float:
        o, k = self.options, self.real.num_classes
        net = self.network().train()
        params = list(net.parameters())
        net_opt = torch.optim.SGD(net.parameters(), lr=o["lr_net"])
        mine = set(self.classes)
        total = 0.0
        for ol in range(self.outer):
            # every class's draws in the one-process order (real batches, then the transforms), computed or not
            reals = [self.real.class_batch(c, o["batch_real"], self.generator, gather=c in mine) for c in range(k)]
            transforms = [self._siamese() if self.dsa else None for _ in range(k)]
            loss = self.images.new_zeros(())
            for c in self.classes:
                g_real = self._real_grad(net, params, reals[c], c, transforms[c])
                rows = slice(c * self.ipc, (c + 1) * self.ipc)  # the images are class-contiguous
                syn = self._augment(self.images[rows], transforms[c])
                g_syn = torch.autograd.grad(F.cross_entropy(net(syn), self.labels[rows]), params, create_graph=True)
                loss = loss + sum(match_distance(gr, gs) for gr, gs in zip(g_real, g_syn))
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            total += loss.item()
            if ol == self.outer - 1:
                break
            self.sync_images()  # the network trains on every class's current images
            self._train_net(net, net_opt)
        return total / (k * self.outer)  # the authors' loss_avg (this process's share of it)

    def _train_net(self, net, net_opt) -> None:
        """``inner_loop`` epochs of the network on the current synthetic set (DSA per image when on), shuffled
        as the authors' ``DataLoader`` shuffles."""
        x_all, y_all = self.images.detach(), self.labels
        n, b = x_all.shape[0], self.options["batch_train"]
        with fast_backward(net, exact_forward=False):  # the weights leave the authors' bits at the first update
            for _ in range(self.inner):
                for idx in loader_batches(n, b, self.generator):
                    idx = idx.to(self.device)
                    x = x_all[idx]
                    if self.dsa is not None:
                        x = self.dsa(x, self.generator, per_sample=True)
                    loss = F.cross_entropy(net(x), y_all[idx])
                    net_opt.zero_grad(set_to_none=True)
                    loss.backward()
                    net_opt.step()


@register_method
class DSAMethod(DC):
    name = "dsa"
    defaults = dict(DC.defaults)
    use_dsa = True
