"""DM: distribution matching (Zhao & Bilen, "Dataset Condensation with Distribution Matching", WACV 2023).

Each iteration draws a freshly initialised network (ConvNet-3 by default) and never trains it; for every class, the
squared distance between the mean embedding (the features before the classifier) of a real batch and of the
class's synthetic images, both under the same sampled DSA transform, is summed over classes and minimised by SGD on
the synthetic images (lr 1.0, momentum 0.5; the authors' defaults, 20,000 iterations, 256 real images per class).
Images start from random real ones.

Exact to the authors' iteration (``main_DM.py``, ConvNet branch): on the same network, real batches and siamese draws,
:meth:`DM.step` gives their loss (the logged ``loss_avg``, the sum over classes / classes), image gradient and images
(``tests/condense/test_condense_parity.py``, float64, relative error <= 1e-5). Computed differently where it is faster:
each class's real batch goes through the network without autograd, in chunks of at most :attr:`DM.chunk` images, and
only its mean embedding is kept; a batch that covers its class reads one cached tensor instead of a gather; the
synthetic images of every class go through one forward, each class under its own transform. Float32 is held to the same
test (``tests/condense/test_condense_parity.py``, 1 channel at 28 px and 3 at 32 px): per class, the zoo's float32 image
gradient is within 4x the authors' own float32-vs-float64 error (plus a few float32 ulps). The synthetic side runs in
the default (contiguous) layout: the channels-last layout there (``channels_last: true``, CPU only) rounds in another
order, lands on other ReLU kinks than the authors' order, and gave image gradients up to 2.7% off in one class where the
authors' float32 was 5e-6 off, so it is an opt-in, not the default. The real side carries no gradient, and on the
CPU it runs channels-last (a copy of the network in that layout), where oneDNN's convolution, GroupNorm and pooling
run without layout reorders, 16 images a forward on the CPU at one thread and 64 at two or more
(:func:`~zoo.condense.core.real_chunk`: the activations stay in cache and their memory is reused instead of mapped
afresh), with its convolutions by :mod:`zoo.condense.fast_convs` where its kernels build (``fast_convs``: the
128-channel ones by Winograd's F(2x2, 3x3), 16 products per 2x2 outputs instead of 36, the one-channel first layer as
a product with its patches), and, in a run of 10 iterations or
more on the CPU, through ``torch.compile`` (``compile``; :func:`~zoo.condense.core.compile_real_side`), which fuses
the instance norm, ReLU and pooling between the convolutions. Its float32 mean embeddings keep the image gradient
within the bound above (the parity tests run this path, compiled, at ConvNet-3's full width too): the real side is
never differentiated, so a rounding that moves a ReLU kink there moves one embedding by a rounding, not a gradient.
Under torchrun a process computes its block of classes (``shards = "classes"``). ``zoo bench condense-speed`` times
it against the authors' loop (``results/condense/speed.md``; what each of these choices gained when it was made:
``results/notes/code_figures.md``).
"""

import copy

import torch

from ..data.dsa import DSA, DSAParams
from ..kernels import winograd
from .augment import dsa_strategy
from .core import ImageMethod, compile_real_side, fast_memory_format, real_chunk, real_chunks, register_method
from .fast_convs import inference_convs

__all__ = ["DM"]


def embed(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Penultimate features: ``forward_head(..., pre_logits=True)`` (ConvNet's flattened map)."""
    return net.forward_head(net.forward_features(x), pre_logits=True)


def _embed_sum(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The sum of the embeddings of ``x``: one chunk of a class's real batch."""
    return embed(net, x).sum(0)


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
        "channels_last": False,  # the synthetic side too (CPU only): faster, but fails the float32 bound (see above)
        "compile": None,  # the real side through torch.compile: None compiles on a CPU from 10 iterations
        "fast_convs": None,  # the real side's convolutions by zoo.condense.fast_convs: None where its kernels build
    }

    shards = "classes"
    chunk: int | None = None  # real images per forward; None: the device's (core.real_chunk: 16 on the CPU)

    def setup(self) -> None:
        o = self.options
        self.memory_format = fast_memory_format(self.device) if o["channels_last"] else torch.contiguous_format
        self.real_format = fast_memory_format(self.device)  # no gradient on the real side: the fast layout
        fast = o["fast_convs"]
        self.fast_convs = (self.device.type == "cpu" and winograd.available()) if fast is None else bool(fast)
        self.chunk = self.chunk or real_chunk(self.device)
        self._embed_sum = compile_real_side(_embed_sum, o["compile"], self.device, self.iterations)
        self.init_images()
        self.opt = torch.optim.SGD([self.images], lr=o["lr_img"], momentum=o["momentum"])
        self.dsa = DSA(dsa_strategy(self.real, o["dsa_strategy"])) if o["dsa"] else None

    def _siamese(self) -> DSAParams:
        """One class's DSA transform, shared by its real and synthetic images."""
        return self.dsa.sample(self.generator, 1, tuple(self.images.shape[-2:]), self.images.dtype)

    def step(self, it: int) -> float:
        o, k = self.options, self.real.num_classes
        net = self.network().train().requires_grad_(False)
        net = net.to(memory_format=self.memory_format)
        # every class's draws in the one-process order (real batches, then the transforms), computed or not
        mine = set(self.classes)
        reals = [self.real.class_batch(c, o["batch_real"], self.generator, gather=c in mine) for c in range(k)]
        params = [self._siamese() if self.dsa is not None else None for _ in range(k)]
        mean_real, syn = [], []
        real_net = net  # the real side's network in its own layout and convolutions (the same weights)
        if self.real_format != self.memory_format:
            real_net = copy.deepcopy(net).to(memory_format=self.real_format)
        if self.fast_convs:
            real_net = inference_convs(real_net, inplace=real_net is not net)
        for c in self.classes:
            mean_real.append(self._real_mean(real_net, reals[c], params[c]))
            rows = self.images[c * self.ipc : (c + 1) * self.ipc]  # the images are class-contiguous
            syn.append(rows if params[c] is None else self.dsa.apply(rows, params[c]))
        f_syn = embed(net, torch.cat(syn).contiguous(memory_format=self.memory_format))
        mean_syn = f_syn.view(len(self.classes), self.ipc, -1).mean(1)
        loss = ((torch.stack(mean_real) - mean_syn) ** 2).sum()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return loss.item() / k  # the authors' loss_avg (this process's share of it)

    @torch.no_grad()
    def _real_mean(self, net: torch.nn.Module, x: torch.Tensor, p: DSAParams | None) -> torch.Tensor:
        """The mean embedding of one class's real batch ``x`` under its transform ``p``, through the network in
        chunks of at most :attr:`chunk` images (:func:`~zoo.condense.core.real_chunks`)."""
        total = None

        def transform(block: torch.Tensor) -> torch.Tensor:
            block = block if p is None else self.dsa.apply(block, p)
            return block.contiguous(memory_format=self.real_format)

        for part in real_chunks(x, self.chunk, self.device, transform):
            f = self._embed_sum(net, part)
            total = f if total is None else total + f
        return total / x.shape[0]
