"""Plain rendition of SRe2L's recover step (VILA-Lab/SRe2L): ``BNFeatureHook`` and the cosine policy of
``small_dataset/utils.py``, one iteration of ``small_dataset/recover_cifar.py:get_images`` (roll jitter, CE + BN
statistics, Adam step, clip) and the ImageNet jitter of ``recover/data_synthesis.py``.

Their structure and arithmetic are kept; the roll offsets come from ``rng.randint`` (python's ``random`` module by
default, as theirs: a test passes an object that replays given draws). ``clip`` takes the data's mean and std where
``clip_cifar`` has CIFAR's written in; ``.cuda()`` is left out. The zoo's :mod:`zoo.condense.sre2l` is checked
against these in ``tests/condense/test_condense_parity_teacher.py``.
"""

import random

import numpy as np
import torch
from torch import nn
from torchvision import transforms

__all__ = ["BNFeatureHook", "clip", "imagenet_jitter", "lr_cosine_policy", "recover_iteration"]


class BNFeatureHook:
    def __init__(self, module):
        self.hook = module.register_forward_hook(self.hook_fn)

    def hook_fn(self, module, input, output):
        nch = input[0].shape[1]
        mean = input[0].mean([0, 2, 3])
        var = input[0].permute(1, 0, 2, 3).contiguous().reshape([nch, -1]).var(1, unbiased=False)
        self.r_feature = torch.norm(module.running_var.data - var, 2) + torch.norm(module.running_mean.data - mean, 2)

    def close(self):
        self.hook.remove()


def lr_policy(lr_fn):
    def _alr(optimizer, iteration, epoch):
        lr = lr_fn(iteration, epoch)
        for param_group in optimizer.param_groups:
            param_group["lr"] = lr

    return _alr


def lr_cosine_policy(base_lr, warmup_length, epochs):
    def _lr_fn(iteration, epoch):
        if epoch < warmup_length:
            lr = base_lr * (epoch + 1) / warmup_length
        else:
            e = epoch - warmup_length
            es = epochs - warmup_length
            lr = 0.5 * (1 + np.cos(np.pi * e / es)) * base_lr
        return lr

    return lr_policy(_lr_fn)


def clip(image_tensor, mean, std):
    for c in range(image_tensor.shape[1]):
        m, s = mean[c], std[c]
        image_tensor[:, c] = torch.clamp(image_tensor[:, c], -m / s, (1 - m) / s)
    return image_tensor


def imagenet_jitter(inputs, size, lim, rng=random):
    """``recover/data_synthesis.py``'s jitter: ``RandomResizedCrop(size)`` and a flip for the batch, then the roll."""
    aug_function = transforms.Compose([transforms.RandomResizedCrop(size), transforms.RandomHorizontalFlip()])
    inputs_jit = aug_function(inputs)
    off1 = rng.randint(0, lim)
    off2 = rng.randint(0, lim)
    return torch.roll(inputs_jit, shifts=(off1, off2), dims=(2, 3))


def recover_iteration(
    inputs, targets, model_teacher, hooks, optimizer, lr_scheduler, iteration, args, mean, std, rng=random
):
    """One iteration of the CIFAR ``get_images`` loop; returns the loss."""
    lr_scheduler(optimizer, iteration, iteration)
    off1 = rng.randint(0, args.jitter)
    off2 = rng.randint(0, args.jitter)
    inputs_jit = torch.roll(inputs, shifts=(off1, off2), dims=(2, 3))
    optimizer.zero_grad()
    outputs = model_teacher(inputs_jit)
    loss_ce = nn.CrossEntropyLoss()(outputs, targets)
    rescale = [args.first_bn_multiplier] + [1.0 for _ in range(len(hooks) - 1)]
    loss_r_bn_feature = torch.stack(
        [mod.r_feature.to(loss_ce.device) * rescale[i] for i, mod in enumerate(hooks)]
    ).sum()
    loss = loss_ce + args.r_bn * loss_r_bn_feature
    loss.backward()
    optimizer.step()
    inputs.data = clip(inputs.data, mean, std)
    return loss
