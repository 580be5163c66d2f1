"""Plain rendition of RDED's code (LINs-lab/RDED): the selection and stitching of ``synthesize/utils.py``
(``pad``, ``cross_entropy``, ``selector``, ``mix_images``, ``MultiRandomCrop``) and the student training of
``validation/main.py`` (``train``, its optimiser and schedule from ``main_worker``) with ``validation/utils.py``
(``ShufflePatches``, ``rand_bbox``, ``cutmix``, ``mixup``, ``mix_aug``, ``get_parameters``).

Their structure and arithmetic are kept: the global generators (python's ``random`` for the patch shuffle, numpy's
for cutmix's lambda and box, torch's for crops, flips and the permutation), cutmix writing into the batch it is
given, the student's extra forward without gradients. What is left out: ``.cuda()`` (every tensor stays where it
is), the meters and printing (the top-5 meter would fail with fewer than five classes; the forward that fed it is
kept), DataParallel, the JPEG folders (``SetDataset`` holds the images as tensors in [0, 1] and ``epoch_loader``
stands in for ``DataLoader(shuffle=True, num_workers=0)``, its order a ``randperm`` from the global generator).
``mix_images`` builds three-channel images, as theirs.

The zoo's :mod:`zoo.condense.rded` and :mod:`zoo.condense.student` are checked against these functions in
``tests/condense/test_condense_parity_teacher.py``.
"""

import math
import random

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from torchvision import transforms

__all__ = [
    "MultiRandomCrop",
    "SetDataset",
    "ShufflePatches",
    "cross_entropy",
    "cutmix",
    "epoch_loader",
    "get_parameters",
    "make_optimizer",
    "make_scheduler",
    "mix_aug",
    "mix_images",
    "mixup",
    "pad",
    "rand_bbox",
    "selector",
    "train",
    "train_transform",
]


# ------------------------------------------------------------------------------------------------ synthesize/utils.py


def pad(input_tensor, target_height, target_width=None):
    if target_width is None:
        target_width = target_height
    vertical = target_height - input_tensor.size(2)
    horizontal = target_width - input_tensor.size(3)
    top = vertical // 2
    bottom = vertical - top
    left = horizontal // 2
    right = horizontal - left
    return F.pad(input_tensor, (left, right, top, bottom))


def batched_forward(model, tensor, batch_size):
    outputs = []
    model.eval()
    with torch.no_grad():
        for i in range(0, tensor.size(0), batch_size):
            outputs.append(model(tensor[i : min(i + batch_size, tensor.size(0))]))
    return torch.cat(outputs, dim=0)


class MultiRandomCrop(torch.nn.Module):
    """``num_crop`` crops of one image, ``RandomResizedCrop(size // factor, ratio=(1, 1), antialias=True)``."""

    def __init__(self, num_crop=5, size=224, factor=2):
        super().__init__()
        self.num_crop = num_crop
        self.size = size
        self.factor = factor

    def forward(self, image):
        cropper = transforms.RandomResizedCrop(self.size // self.factor, ratio=(1, 1), antialias=True)
        return torch.stack([cropper(image) for _ in range(self.num_crop)], 0)


def cross_entropy(y_pre, y):
    y_pre = F.softmax(y_pre, dim=1)
    return (-torch.log(y_pre.gather(1, y.view(-1, 1))))[:, 0]


def selector(n, model, images, labels, size, m=5):
    """``images``: ``[mipc, m, C, h, w]`` crops of one class; the ``n`` best crops (one per image), best first."""
    with torch.no_grad():
        s = images.shape
        images = images.permute(1, 0, 2, 3, 4)
        images = images.reshape(s[0] * s[1], s[2], s[3], s[4])
        labels = labels.repeat(m)
        preds = batched_forward(model, pad(images, size), s[0])
        dist = cross_entropy(preds, labels)
        dist = dist.reshape(m, s[0])
        index = torch.argmin(dist, 0)
        dist = dist[index, torch.arange(s[0])]
        sa = images.shape
        images = images.reshape(m, s[0], sa[1], sa[2], sa[3])
        images = images[index, torch.arange(s[0])]
    indices = torch.argsort(dist, descending=False)[:n]
    return images[indices].detach()


def mix_images(input_img, out_size, factor, n):
    s = out_size // factor
    remained = out_size % factor
    k = 0
    mixed = torch.zeros((n, 3, out_size, out_size), requires_grad=False, dtype=torch.float)
    h_loc = 0
    for i in range(factor):
        h_r = s + 1 if i < remained else s
        w_loc = 0
        for j in range(factor):
            w_r = s + 1 if j < remained else s
            part = F.interpolate(input_img.data[k * n : (k + 1) * n], size=(h_r, w_r))
            mixed.data[0:n, :, h_loc : h_loc + h_r, w_loc : w_loc + w_r] = part
            w_loc += w_r
            k += 1
        h_loc += h_r
    return mixed


# ------------------------------------------------------------------------------------------------ validation/utils.py


def get_parameters(model):
    decay, no_decay = [], []
    for pname, p in model.named_parameters():
        if pname.find("weight") >= 0 and len(p.size()) > 1:
            decay.append(p)
        else:
            no_decay.append(p)
    return [dict(params=decay), dict(params=no_decay, weight_decay=0.0)]


def rand_bbox(size, lam):
    W = size[2]
    H = size[3]
    cut_rat = np.sqrt(1.0 - lam)
    cut_w = int(W * cut_rat)
    cut_h = int(H * cut_rat)
    cx = np.random.randint(W)
    cy = np.random.randint(H)
    bbx1 = np.clip(cx - cut_w // 2, 0, W)
    bby1 = np.clip(cy - cut_h // 2, 0, H)
    bbx2 = np.clip(cx + cut_w // 2, 0, W)
    bby2 = np.clip(cy + cut_h // 2, 0, H)
    return bbx1, bby1, bbx2, bby2


def cutmix(images, args, rand_index=None, lam=None, bbox=None):
    rand_index = torch.randperm(images.size()[0]).to(images.device)
    lam = np.random.beta(args.cutmix, args.cutmix)
    bbx1, bby1, bbx2, bby2 = rand_bbox(images.size(), lam)
    images[:, :, bbx1:bbx2, bby1:bby2] = images[rand_index, :, bbx1:bbx2, bby1:bby2]
    return images, rand_index.cpu(), lam, [bbx1, bby1, bbx2, bby2]


def mixup(images, args, rand_index=None, lam=None):
    rand_index = torch.randperm(images.size()[0]).to(images.device)
    lam = np.random.beta(args.mixup, args.mixup)
    mixed = lam * images + (1 - lam) * images[rand_index]
    return mixed, rand_index.cpu(), lam, None


def mix_aug(images, args, rand_index=None, lam=None, bbox=None):
    if args.mix_type == "mixup":
        return mixup(images, args, rand_index, lam)
    elif args.mix_type == "cutmix":
        return cutmix(images, args, rand_index, lam, bbox)
    return images, None, None, None


class ShufflePatches(torch.nn.Module):
    def shuffle_weight(self, img, factor):
        h, w = img.shape[1:]
        tw = w // factor
        patches = []
        for i in range(factor):
            i = i * tw
            if i != factor - 1:
                patches.append(img[..., i : i + tw])
            else:
                patches.append(img[..., i:])
        random.shuffle(patches)
        return torch.cat(patches, -1)

    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, img):
        img = self.shuffle_weight(img, self.factor)
        img = img.permute(0, 2, 1)
        img = self.shuffle_weight(img, self.factor)
        return img.permute(0, 2, 1)


# ------------------------------------------------------------------------------------------------ validation/main.py


def train_transform(factor, input_size, mean, std, max_scale_crops=1.0):
    """``main_worker``'s ``augment`` after ``ToTensor``: patch shuffle, random resized crop, flip, normalise."""
    return transforms.Compose(
        [
            ShufflePatches(factor),
            transforms.RandomResizedCrop(size=input_size, scale=(1 / factor, max_scale_crops), antialias=True),
            transforms.RandomHorizontalFlip(),
            transforms.Normalize(mean=mean, std=std),
        ]
    )


class SetDataset(torch.utils.data.Dataset):
    """The synthetic images (pixels in [0, 1]) and labels, each read through ``transform``."""

    def __init__(self, images, labels, transform):
        self.images, self.labels, self.transform = images, labels, transform

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.transform(self.images[index]), self.labels[index]


def epoch_loader(dataset, batch_size):
    """One epoch of batches in an order drawn from torch's global generator (no workers)."""
    order = torch.randperm(len(dataset)).tolist()
    for i in range(0, len(order), batch_size):
        items = [dataset[j] for j in order[i : i + batch_size]]
        yield torch.stack([x for x, _ in items]), torch.stack([torch.as_tensor(y) for _, y in items])


def make_optimizer(student_model, args):
    return torch.optim.AdamW(
        get_parameters(student_model), lr=args.adamw_lr, betas=[0.9, 0.999], weight_decay=args.adamw_weight_decay
    )


def make_scheduler(optimizer, args):
    return LambdaLR(
        optimizer,
        lambda step: 0.5 * (1.0 + math.cos(math.pi * step / args.re_epochs / 2)) if step <= args.re_epochs else 0,
        last_epoch=-1,
    )


def train(epoch, train_loader, teacher_model, student_model, args):
    """Generate soft labels and train (one epoch)."""
    optimizer = args.optimizer
    loss_function_kl = nn.KLDivLoss(reduction="batchmean")
    teacher_model.eval()
    student_model.train()
    for batch_idx, (images, _labels) in enumerate(train_loader):
        with torch.no_grad():
            mix_images, _, _, _ = mix_aug(images, args)
            pred_label = student_model(images)  # noqa: F841  (their accuracy meter's forward)
            soft_mix_label = teacher_model(mix_images)
            soft_mix_label = F.softmax(soft_mix_label / args.temperature, dim=1)
        if batch_idx % args.re_accum_steps == 0:
            optimizer.zero_grad()
        pred_mix_label = student_model(mix_images)
        soft_pred_mix_label = F.log_softmax(pred_mix_label / args.temperature, dim=1)
        loss = loss_function_kl(soft_pred_mix_label, soft_mix_label)
        loss = loss / args.re_accum_steps
        loss.backward()
        if batch_idx % args.re_accum_steps == (args.re_accum_steps - 1):
            optimizer.step()
