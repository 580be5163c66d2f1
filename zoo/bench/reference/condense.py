"""Plain renditions of the authors' DM and DC iterations (VICO-UoE/DatasetCondensation, ``main_DM.py`` and
``main.py``), the peers of ``python -m zoo.bench.condense --speed``.

They keep the authors' structure: a fresh :class:`ReferenceConvNet` per iteration, one loop over classes with a
network forward per class and per side (real, synthetic), the real gradients from ``torch.autograd.grad`` per
class, and DC's network updates through a ``DataLoader`` over a ``TensorDataset`` of the synthetic images. The
siamese augmentation is the zoo's DSA (same ops and strengths), so both sides pay the same for it.
"""

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from ...data.dsa import DSA
from .convnet import ReferenceConvNet

__all__ = ["dc_iteration", "dm_iteration"]


def _class_batch(images, by_class, c, n, generator):
    idx = by_class[c]
    return images[idx[torch.randperm(len(idx), generator=generator)[:n]]]


def dm_iteration(images_real, by_class, image_syn, opt, ipc, batch_real, dsa: DSA, generator, channel=3, size=32):
    net = ReferenceConvNet(channel, len(by_class), im_size=(size, size))
    net.train()
    for p in net.parameters():
        p.requires_grad = False
    loss = torch.tensor(0.0)
    for c in range(len(by_class)):
        img_real = _class_batch(images_real, by_class, c, batch_real, generator)
        img_syn = image_syn[c * ipc : (c + 1) * ipc]
        params = dsa.sample(generator, 1)
        img_real, img_syn = dsa.apply(img_real, params), dsa.apply(img_syn, params)
        output_real = net.embed(img_real).detach()
        output_syn = net.embed(img_syn)
        loss = loss + torch.sum((output_real.mean(0) - output_syn.mean(0)) ** 2)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.item()


def _distance(gwr, gws):
    shape = gwr.shape
    if len(shape) == 1:
        return torch.tensor(0.0)
    gwr, gws = gwr.reshape(shape[0], -1), gws.reshape(shape[0], -1)
    return torch.sum(1 - torch.sum(gwr * gws, dim=-1) / (torch.norm(gwr, dim=-1) * torch.norm(gws, dim=-1) + 1e-6))


def dc_iteration(
    images_real, by_class, image_syn, label_syn, opt, ipc, batch_real, outer, inner, dsa: DSA, generator,
    channel=3, size=32,
):  # fmt: skip
    k = len(by_class)
    net = ReferenceConvNet(channel, k, im_size=(size, size))
    net.train()
    params = list(net.parameters())
    opt_net = torch.optim.SGD(net.parameters(), lr=0.01)
    total = 0.0
    for ol in range(outer):
        loss = torch.tensor(0.0)
        for c in range(k):
            img_real = _class_batch(images_real, by_class, c, batch_real, generator)
            lab_real = torch.full((img_real.shape[0],), c, dtype=torch.long)
            img_syn = image_syn[c * ipc : (c + 1) * ipc]
            lab_syn = torch.full((ipc,), c, dtype=torch.long)
            if dsa is not None:
                p = dsa.sample(generator, 1)
                img_real, img_syn = dsa.apply(img_real, p), dsa.apply(img_syn, p)
            gw_real = torch.autograd.grad(F.cross_entropy(net(img_real), lab_real), params)
            gw_real = [g.detach() for g in gw_real]
            gw_syn = torch.autograd.grad(F.cross_entropy(net(img_syn), lab_syn), params, create_graph=True)
            loss = loss + sum(_distance(a, b) for a, b in zip(gw_real, gw_syn))
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item()
        if ol == outer - 1:
            break
        loader = DataLoader(TensorDataset(image_syn.detach().clone(), label_syn.clone()), batch_size=256, shuffle=True)
        for _ in range(inner):
            for x, y in loader:
                if dsa is not None:
                    x = dsa(x, generator, per_sample=True)
                step_loss = F.cross_entropy(net(x), y)
                opt_net.zero_grad()
                step_loss.backward()
                opt_net.step()
    return total / outer
