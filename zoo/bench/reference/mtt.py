"""Plain rendition of the authors' trajectory matching (GeorgeCazenavette/mtt-distillation): ``buffer.py``'s expert
loop with ``utils.epoch``, ``reparam_module.ReparamModule`` and one iteration of ``distill.py``'s main loop.

The structure, the order of the random draws and the arithmetic are the authors':

- an expert trains on a ``DataLoader(TensorDataset, batch_size=batch_train, shuffle=True)`` (the loader draws its
  base seed, then its sampler draws the seed of a fresh generator for the permutation, both from torch's global
  RNG), each batch augmented, ``CrossEntropyLoss``, ``zero_grad`` / ``backward`` / ``step``; after every epoch a
  pass over the test loader (one more base-seed draw) and the parameters recorded;
- the student is a :class:`ReparamModule` (one flat parameter vector, views set as plain attributes); each of
  ``syn_steps`` steps takes ``indices_chunks.pop()`` (the *last* chunk of ``torch.randperm`` cut by ``batch_syn``),
  augments, and appends ``student_params[-1] - syn_lr * grad`` (``create_graph=True``);
- the loss is ``mse_loss(sum)`` to the target over ``mse_loss(sum)`` of the start, both divided by the number of
  parameters, then ``backward`` and both optimisers' steps.

Where this file differs from theirs, on purpose and without changing the arithmetic: the network is passed in (their
``get_network`` reseeds torch's RNG from the clock); ``DiffAugment(x, strategy, param=...)`` is an ``augment``
callable (the same callable is handed to the zoo's side in the parity tests); ``.float()`` casts keep the input's
dtype so that the parity tests can run in float64; the start epoch (``np.random.randint``) and the expert come from
the caller's loop as in theirs; logging, wandb, evaluation and saving are left out.
"""

from collections.abc import Callable
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

__all__ = ["ReparamModule", "TensorDataset", "buffer_expert", "distill_iteration", "epoch"]


class TensorDataset(Dataset):
    def __init__(self, images, labels):
        self.images = images.detach()
        self.labels = labels.detach()

    def __getitem__(self, index):
        return self.images[index], self.labels[index]

    def __len__(self):
        return self.images.shape[0]


class ReparamModule(nn.Module):
    """``module`` run on one flat parameter vector: every parameter (``named_modules`` order, each module's own
    parameters) is removed and replaced, at each call, by a view of ``flat_param``."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module
        infos, params = [], []
        for mn, m in self.named_modules():
            for n, p in m.named_parameters(recurse=False):
                if p is not None:
                    infos.append((mn, n))
                    params.append(p.detach())
        self._param_infos = tuple(infos)
        self._param_numels = tuple(p.numel() for p in params)
        self._param_shapes = tuple(p.size() for p in params)
        self.flat_param = nn.Parameter(torch.cat([p.reshape(-1) for p in params], 0))
        for mn, n in self._param_infos:
            delattr(self._module(mn), n)
        self._unflatten(self.flat_param)

    def _module(self, mn):
        m = self
        for part in mn.split(".") if mn else []:
            m = getattr(m, part)
        return m

    def _unflatten(self, flat):
        views = (t.view(s) for t, s in zip(flat.split(self._param_numels), self._param_shapes))
        for (mn, n), v in zip(self._param_infos, views):
            setattr(self._module(mn), n, v)

    @contextmanager
    def unflattened_param(self, flat):
        saved = [getattr(self._module(mn), n) for mn, n in self._param_infos]
        self._unflatten(flat)
        yield
        for (mn, n), p in zip(self._param_infos, saved):
            setattr(self._module(mn), n, p)

    def forward(self, *inputs, flat_param=None):
        flat_param = self.flat_param if flat_param is None else torch.squeeze(flat_param)
        with self.unflattened_param(flat_param):
            return self.module(*inputs)


def epoch(mode, dataloader, net, optimizer, criterion, aug: Callable | None):
    """``utils.epoch``: one pass, augmenting each batch in training; returns (mean loss, accuracy)."""
    loss_avg, acc_avg, num_exp = 0, 0, 0
    net.train() if mode == "train" else net.eval()
    for datum in dataloader:
        img = datum[0]
        lab = datum[1].long()
        if aug is not None:
            img = aug(img)
        n_b = lab.shape[0]
        output = net(img)
        loss = criterion(output, lab)
        acc = np.sum(np.equal(np.argmax(output.detach().cpu().numpy(), axis=-1), lab.cpu().numpy()))
        loss_avg += loss.item() * n_b
        acc_avg += acc
        num_exp += n_b
        if mode == "train":
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return loss_avg / num_exp, acc_avg / num_exp


def buffer_expert(net, images_all, labels_all, test_images, test_labels, train_epochs, lr_teacher=0.01, mom=0.0,
                  l2=0.0, batch_train=256, augment: Callable | None = None, decay=False):  # fmt: skip
    """One expert of ``buffer.py``: the parameters at initialisation and after each epoch (``timestamps``)."""
    criterion = nn.CrossEntropyLoss()
    dst_train = TensorDataset(images_all.detach().clone(), labels_all.detach().clone())
    trainloader = DataLoader(dst_train, batch_size=batch_train, shuffle=True, num_workers=0)
    testloader = DataLoader(TensorDataset(test_images, test_labels), batch_size=256, shuffle=False, num_workers=0)
    net.train()
    lr = lr_teacher
    teacher_optim = torch.optim.SGD(net.parameters(), lr=lr, momentum=mom, weight_decay=l2)
    teacher_optim.zero_grad()
    timestamps = [[p.detach().cpu().clone() for p in net.parameters()]]
    lr_schedule = [train_epochs // 2 + 1]
    for e in range(train_epochs):
        epoch("train", trainloader, net, teacher_optim, criterion, aug=augment)
        with torch.no_grad():
            epoch("test", testloader, net, None, criterion, aug=None)
        timestamps.append([p.detach().cpu().clone() for p in net.parameters()])
        if e in lr_schedule and decay:
            lr *= 0.1
            teacher_optim = torch.optim.SGD(net.parameters(), lr=lr, momentum=mom, weight_decay=l2)
            teacher_optim.zero_grad()
    return timestamps


def distill_iteration(student_net: ReparamModule, expert_trajectory, start_epoch, image_syn, label_syn, syn_lr,
                      optimizer_img, optimizer_lr, syn_steps, expert_epochs, batch_syn,
                      augment: Callable | None = None):  # fmt: skip
    """The body of ``distill.py``'s loop after the expert and ``start_epoch`` are drawn: the unrolled student, the
    normalised loss, ``backward`` and both optimisers' steps (the gradients stay in ``.grad``). Returns the loss."""
    num_params = sum(np.prod(p.size()) for p in student_net.parameters())
    starting_params = expert_trajectory[start_epoch]
    target_params = expert_trajectory[start_epoch + expert_epochs]
    target_params = torch.cat([p.data.reshape(-1) for p in target_params], 0)
    student_params = [torch.cat([p.data.reshape(-1) for p in starting_params], 0).requires_grad_(True)]
    starting_params = torch.cat([p.data.reshape(-1) for p in starting_params], 0)
    criterion = nn.CrossEntropyLoss()
    syn_images = image_syn
    y_hat = label_syn
    indices_chunks = []
    for _step in range(syn_steps):
        if not indices_chunks:
            indices = torch.randperm(len(syn_images))
            indices_chunks = list(torch.split(indices, batch_syn))
        these_indices = indices_chunks.pop()
        x = syn_images[these_indices]
        this_y = y_hat[these_indices]
        if augment is not None:
            x = augment(x)
        x = student_net(x, flat_param=student_params[-1])
        ce_loss = criterion(x, this_y)
        grad = torch.autograd.grad(ce_loss, student_params[-1], create_graph=True)[0]
        student_params.append(student_params[-1] - syn_lr * grad)
    param_loss = torch.tensor(0.0, dtype=starting_params.dtype)
    param_dist = torch.tensor(0.0, dtype=starting_params.dtype)
    param_loss += torch.nn.functional.mse_loss(student_params[-1], target_params, reduction="sum")
    param_dist += torch.nn.functional.mse_loss(starting_params, target_params, reduction="sum")
    param_loss /= num_params
    param_dist /= num_params
    param_loss /= param_dist
    grand_loss = param_loss
    optimizer_img.zero_grad()
    optimizer_lr.zero_grad()
    grand_loss.backward()
    optimizer_img.step()
    optimizer_lr.step()
    return grand_loss
