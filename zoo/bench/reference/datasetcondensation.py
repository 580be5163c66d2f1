"""Plain renditions of the DatasetCondensation code (Zhao, Mopuri & Bilen; VICO-UoE/DatasetCondensation): the
functions of ``utils.py`` that DC, DSA and DM run on (``ParamDiffAug``, ``set_seed_DiffAug``, ``DiffAugment`` and
its ``rand_*`` ops, ``distance_wb``, ``match_loss``, ``get_loops``, ``TensorDataset``, ``epoch``,
``evaluate_synset``, ``augment``, ``get_daparam``), ``main.py``'s DC/DSA iteration and ``main_DM.py``'s DM
iteration, as the authors' code has them: the same structure, loops over classes and images, draws from torch's
and numpy's global generators, reseeding, and arithmetic. They are the peers of the zoo's parity tests
(``tests/condense/test_condense_parity.py``).

What is not theirs, and why:

- ``DTYPE`` stands where the authors write ``torch.float`` (``TensorDataset``, ``epoch``'s ``.float()``, the affine
  matrices, ``augment``'s canvases). It is float32, as theirs; the parity tests set it to float64 to compare at
  1e-5. The affine ops cast their matrix to the images' dtype before ``affine_grid`` (a no-op in float32).
- Networks, real batches and siamese seeds come in as arguments: ``get_network`` seeds torch from the clock, the
  iterations' ``get_images`` closes over the dataset (:func:`make_get_images` renders it), and the siamese seed is
  ``int(time.time() * 1000) % 100000`` (the default ``next_seed``).
- The siamese copies of the first draw (``randb[:] = randb[0]``) clone it first: current torch refuses the
  self-overlapping copy when the batch holds one image.
- Logging and saving are left out.
"""

import time
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from scipy.ndimage import rotate as scipyrotate
from torch.utils.data import Dataset

__all__ = [
    "AUGMENT_FNS",
    "DTYPE",
    "DiffAugment",
    "ParamDiffAug",
    "TensorDataset",
    "augment",
    "dc_iteration",
    "distance_wb",
    "dm_iteration",
    "epoch",
    "evaluate_synset",
    "get_daparam",
    "get_loops",
    "make_args",
    "make_get_images",
    "match_loss",
]

DTYPE = torch.float32  # the authors' torch.float


def make_args(**kw) -> SimpleNamespace:
    """The ``args`` the functions read, with the authors' defaults (``main.py``)."""
    base = dict(device="cpu", dis_metric="ours", lr_net=0.01, batch_real=256, batch_train=256, epoch_eval_train=300,
                dsa=False, dsa_strategy="None", dsa_param=ParamDiffAug(), dc_aug_param=None, ipc=1,
                outer_loop=1, inner_loop=1)  # fmt: skip
    base.update(kw)
    return SimpleNamespace(**base)


class TensorDataset(Dataset):
    def __init__(self, images, labels):
        self.images = images.detach().to(DTYPE)
        self.labels = labels.detach()

    def __getitem__(self, index):
        return self.images[index], self.labels[index]

    def __len__(self):
        return self.images.shape[0]


def distance_wb(gwr, gws):
    shape = gwr.shape
    if len(shape) == 4:
        gwr = gwr.reshape(shape[0], shape[1] * shape[2] * shape[3])
        gws = gws.reshape(shape[0], shape[1] * shape[2] * shape[3])
    elif len(shape) == 3:
        gwr = gwr.reshape(shape[0], shape[1] * shape[2])
        gws = gws.reshape(shape[0], shape[1] * shape[2])
    elif len(shape) == 2:
        pass
    elif len(shape) == 1:
        gwr = gwr.reshape(1, shape[0])
        gws = gws.reshape(1, shape[0])
        return torch.tensor(0, dtype=DTYPE, device=gwr.device)
    dis_weight = torch.sum(
        1 - torch.sum(gwr * gws, dim=-1) / (torch.norm(gwr, dim=-1) * torch.norm(gws, dim=-1) + 0.000001)
    )
    return dis_weight


def match_loss(gw_syn, gw_real, args):
    dis = torch.tensor(0.0, dtype=DTYPE).to(args.device)
    if args.dis_metric == "ours":
        for ig in range(len(gw_real)):
            dis += distance_wb(gw_real[ig], gw_syn[ig])
    elif args.dis_metric in ("mse", "cos"):
        real_vec = torch.cat([g.reshape(-1) for g in gw_real], dim=0)
        syn_vec = torch.cat([g.reshape(-1) for g in gw_syn], dim=0)
        if args.dis_metric == "mse":
            dis = torch.sum((syn_vec - real_vec) ** 2)
        else:
            dis = 1 - torch.sum(real_vec * syn_vec, dim=-1) / (
                torch.norm(real_vec, dim=-1) * torch.norm(syn_vec, dim=-1) + 0.000001
            )
    else:
        raise ValueError(f"unknown distance function: {args.dis_metric}")
    return dis


def get_loops(ipc):
    table = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}
    if ipc not in table:
        raise ValueError(f"loop hyper-parameters are not defined for {ipc} ipc")
    return table[ipc]


def epoch(mode, dataloader, net, optimizer, criterion, args, aug):
    loss_avg, acc_avg, num_exp = 0, 0, 0
    net = net.to(args.device)
    criterion = criterion.to(args.device)
    if mode == "train":
        net.train()
    else:
        net.eval()
    for datum in dataloader:
        img = datum[0].to(DTYPE).to(args.device)
        if aug:
            if args.dsa:
                img = DiffAugment(img, args.dsa_strategy, param=args.dsa_param)
            else:
                img = augment(img, args.dc_aug_param, device=args.device)
        lab = datum[1].long().to(args.device)
        n_b = lab.shape[0]
        output = net(img)
        loss = criterion(output, lab)
        acc = np.sum(np.equal(np.argmax(output.cpu().data.numpy(), axis=-1), lab.cpu().data.numpy()))
        loss_avg += loss.item() * n_b
        acc_avg += acc
        num_exp += n_b
        if mode == "train":
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    loss_avg /= num_exp
    acc_avg /= num_exp
    return loss_avg, acc_avg


def evaluate_synset(it_eval, net, images_train, labels_train, testloader, args):
    net = net.to(args.device)
    images_train = images_train.to(args.device)
    labels_train = labels_train.to(args.device)
    lr = float(args.lr_net)
    n_epochs = int(args.epoch_eval_train)
    lr_schedule = [n_epochs // 2 + 1]
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=0.0005)
    criterion = nn.CrossEntropyLoss().to(args.device)
    dst_train = TensorDataset(images_train, labels_train)
    trainloader = torch.utils.data.DataLoader(dst_train, batch_size=args.batch_train, shuffle=True, num_workers=0)
    loss_train = acc_train = acc_test = None
    for ep in range(n_epochs + 1):
        loss_train, acc_train = epoch("train", trainloader, net, optimizer, criterion, args, aug=True)
        if ep in lr_schedule:
            lr *= 0.1
            optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=0.0005)
    if testloader is not None:
        _, acc_test = epoch("test", testloader, net, optimizer, criterion, args, aug=False)
    return net, acc_train, acc_test


def augment(images, dc_aug_param, device):
    if dc_aug_param is not None and dc_aug_param["strategy"] != "none":
        scale = dc_aug_param["scale"]
        crop = dc_aug_param["crop"]
        rotate = dc_aug_param["rotate"]
        noise = dc_aug_param["noise"]
        strategy = dc_aug_param["strategy"]
        shape = images.shape
        mean = []
        for c in range(shape[1]):
            mean.append(float(torch.mean(images[:, c])))

        def cropfun(i):
            im_ = torch.zeros(shape[1], shape[2] + crop * 2, shape[3] + crop * 2, dtype=DTYPE, device=device)
            for c in range(shape[1]):
                im_[c] = mean[c]
            im_[:, crop : crop + shape[2], crop : crop + shape[3]] = images[i]
            r, c = np.random.permutation(crop * 2)[0], np.random.permutation(crop * 2)[0]
            images[i] = im_[:, r : r + shape[2], c : c + shape[3]]

        def scalefun(i):
            h = int((np.random.uniform(1 - scale, 1 + scale)) * shape[2])
            w = int((np.random.uniform(1 - scale, 1 + scale)) * shape[2])
            tmp = F.interpolate(images[i : i + 1], [h, w])[0]
            mhw = max(h, w, shape[2], shape[3])
            im_ = torch.zeros(shape[1], mhw, mhw, dtype=DTYPE, device=device)
            r = int((mhw - h) / 2)
            c = int((mhw - w) / 2)
            im_[:, r : r + h, c : c + w] = tmp
            r = int((mhw - shape[2]) / 2)
            c = int((mhw - shape[3]) / 2)
            images[i] = im_[:, r : r + shape[2], c : c + shape[3]]

        def rotatefun(i):
            im_ = scipyrotate(images[i].cpu().data.numpy(), angle=np.random.randint(-rotate, rotate), axes=(-2, -1),
                              cval=np.mean(mean))  # fmt: skip
            r = int((im_.shape[-2] - shape[-2]) / 2)
            c = int((im_.shape[-1] - shape[-1]) / 2)
            images[i] = torch.tensor(im_[:, r : r + shape[-2], c : c + shape[-1]], dtype=DTYPE, device=device)

        def noisefun(i):
            images[i] = images[i] + noise * torch.randn(shape[1:], dtype=DTYPE, device=device)

        augs = strategy.split("_")
        for i in range(shape[0]):
            choice = np.random.permutation(augs)[0]
            if choice == "crop":
                cropfun(i)
            elif choice == "scale":
                scalefun(i)
            elif choice == "rotate":
                rotatefun(i)
            elif choice == "noise":
                noisefun(i)
    return images


def get_daparam(dataset, model, model_eval, ipc):
    dc_aug_param = dict(crop=4, scale=0.2, rotate=45, noise=0.001, strategy="none")
    if dataset == "MNIST":
        dc_aug_param["strategy"] = "crop_scale_rotate"
    if model_eval in ["ConvNetBN"]:
        dc_aug_param["strategy"] = "crop_noise"
    return dc_aug_param


class ParamDiffAug:
    def __init__(self):
        self.aug_mode = "S"
        self.prob_flip = 0.5
        self.ratio_scale = 1.2
        self.ratio_rotate = 15.0
        self.ratio_crop_pad = 0.125
        self.ratio_cutout = 0.5
        self.brightness = 1.0
        self.saturation = 2.0
        self.contrast = 0.5


def set_seed_DiffAug(param):  # noqa: N802 (the authors' name)
    if param.latestseed == -1:
        return
    torch.random.manual_seed(param.latestseed)
    param.latestseed += 1


def DiffAugment(x, strategy="", seed=-1, param=None):  # noqa: N802 (the authors' name)
    if strategy in ("None", "none", ""):
        return x
    param.Siamese = seed != -1
    param.latestseed = seed
    if strategy:
        if param.aug_mode == "M":
            for p in strategy.split("_"):
                for f in AUGMENT_FNS[p]:
                    x = f(x, param)
        elif param.aug_mode == "S":
            pbties = strategy.split("_")
            set_seed_DiffAug(param)
            p = pbties[torch.randint(0, len(pbties), size=(1,)).item()]
            for f in AUGMENT_FNS[p]:
                x = f(x, param)
        else:
            raise ValueError(f"unknown augmentation mode: {param.aug_mode}")
        x = x.contiguous()
    return x


def rand_scale(x, param):
    ratio = param.ratio_scale
    set_seed_DiffAug(param)
    sx = torch.rand(x.shape[0]) * (ratio - 1.0 / ratio) + 1.0 / ratio
    set_seed_DiffAug(param)
    sy = torch.rand(x.shape[0]) * (ratio - 1.0 / ratio) + 1.0 / ratio
    theta = [[[sx[i], 0, 0], [0, sy[i], 0]] for i in range(x.shape[0])]
    theta = torch.tensor(theta, dtype=DTYPE)
    if param.Siamese:
        theta[:] = theta[0].clone()
    grid = F.affine_grid(theta.to(x.dtype), x.shape).to(x.device)
    x = F.grid_sample(x, grid)
    return x


def rand_rotate(x, param):
    ratio = param.ratio_rotate
    set_seed_DiffAug(param)
    theta = (torch.rand(x.shape[0]) - 0.5) * 2 * ratio / 180 * float(np.pi)
    theta = [
        [[torch.cos(theta[i]), torch.sin(-theta[i]), 0], [torch.sin(theta[i]), torch.cos(theta[i]), 0]]
        for i in range(x.shape[0])
    ]
    theta = torch.tensor(theta, dtype=DTYPE)
    if param.Siamese:
        theta[:] = theta[0].clone()
    grid = F.affine_grid(theta.to(x.dtype), x.shape).to(x.device)
    x = F.grid_sample(x, grid)
    return x


def rand_flip(x, param):
    prob = param.prob_flip
    set_seed_DiffAug(param)
    randf = torch.rand(x.size(0), 1, 1, 1, device=x.device)
    if param.Siamese:
        randf[:] = randf[0].clone()
    return torch.where(randf < prob, x.flip(3), x)


def rand_brightness(x, param):
    ratio = param.brightness
    set_seed_DiffAug(param)
    randb = torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device)
    if param.Siamese:
        randb[:] = randb[0].clone()
    x = x + (randb - 0.5) * ratio
    return x


def rand_saturation(x, param):
    ratio = param.saturation
    x_mean = x.mean(dim=1, keepdim=True)
    set_seed_DiffAug(param)
    rands = torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device)
    if param.Siamese:
        rands[:] = rands[0].clone()
    x = (x - x_mean) * (rands * ratio) + x_mean
    return x


def rand_contrast(x, param):
    ratio = param.contrast
    x_mean = x.mean(dim=[1, 2, 3], keepdim=True)
    set_seed_DiffAug(param)
    randc = torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device)
    if param.Siamese:
        randc[:] = randc[0].clone()
    x = (x - x_mean) * (randc + ratio) + x_mean
    return x


def rand_crop(x, param):
    ratio = param.ratio_crop_pad
    shift_x, shift_y = int(x.size(2) * ratio + 0.5), int(x.size(3) * ratio + 0.5)
    set_seed_DiffAug(param)
    translation_x = torch.randint(-shift_x, shift_x + 1, size=[x.size(0), 1, 1], device=x.device)
    set_seed_DiffAug(param)
    translation_y = torch.randint(-shift_y, shift_y + 1, size=[x.size(0), 1, 1], device=x.device)
    if param.Siamese:
        translation_x[:] = translation_x[0].clone()
        translation_y[:] = translation_y[0].clone()
    grid_batch, grid_x, grid_y = torch.meshgrid(
        torch.arange(x.size(0), dtype=torch.long, device=x.device),
        torch.arange(x.size(2), dtype=torch.long, device=x.device),
        torch.arange(x.size(3), dtype=torch.long, device=x.device),
        indexing="ij",
    )
    grid_x = torch.clamp(grid_x + translation_x + 1, 0, x.size(2) + 1)
    grid_y = torch.clamp(grid_y + translation_y + 1, 0, x.size(3) + 1)
    x_pad = F.pad(x, [1, 1, 1, 1, 0, 0, 0, 0])
    x = x_pad.permute(0, 2, 3, 1).contiguous()[grid_batch, grid_x, grid_y].permute(0, 3, 1, 2)
    return x


def rand_cutout(x, param):
    ratio = param.ratio_cutout
    cutout_size = int(x.size(2) * ratio + 0.5), int(x.size(3) * ratio + 0.5)
    set_seed_DiffAug(param)
    offset_x = torch.randint(0, x.size(2) + (1 - cutout_size[0] % 2), size=[x.size(0), 1, 1], device=x.device)
    set_seed_DiffAug(param)
    offset_y = torch.randint(0, x.size(3) + (1 - cutout_size[1] % 2), size=[x.size(0), 1, 1], device=x.device)
    if param.Siamese:
        offset_x[:] = offset_x[0].clone()
        offset_y[:] = offset_y[0].clone()
    grid_batch, grid_x, grid_y = torch.meshgrid(
        torch.arange(x.size(0), dtype=torch.long, device=x.device),
        torch.arange(cutout_size[0], dtype=torch.long, device=x.device),
        torch.arange(cutout_size[1], dtype=torch.long, device=x.device),
        indexing="ij",
    )
    grid_x = torch.clamp(grid_x + offset_x - cutout_size[0] // 2, min=0, max=x.size(2) - 1)
    grid_y = torch.clamp(grid_y + offset_y - cutout_size[1] // 2, min=0, max=x.size(3) - 1)
    mask = torch.ones(x.size(0), x.size(2), x.size(3), dtype=x.dtype, device=x.device)
    mask[grid_batch, grid_x, grid_y] = 0
    x = x * mask.unsqueeze(1)
    return x


AUGMENT_FNS = {
    "color": [rand_brightness, rand_saturation, rand_contrast],
    "crop": [rand_crop],
    "cutout": [rand_cutout],
    "flip": [rand_flip],
    "scale": [rand_scale],
    "rotate": [rand_rotate],
}


def make_get_images(images_all, indices_class):
    """``main.py``'s ``get_images``: ``n`` random images of class ``c`` (numpy's global generator)."""

    def get_images(c, n):
        idx_shuffle = np.random.permutation(indices_class[c])[:n]
        return images_all[idx_shuffle]

    return get_images


def _clock_seed():
    return int(time.time() * 1000) % 100000


def dc_iteration(net, image_syn, label_syn, optimizer_img, get_images, args, num_classes, next_seed=_clock_seed):
    """One iteration of ``main.py``'s training loop (ConvNet, no BatchNorm) on ``net``, a fresh network; returns
    the logged ``loss_avg``."""
    channel, im_size = image_syn.shape[1], image_syn.shape[2:]
    net.train()
    net_parameters = list(net.parameters())
    optimizer_net = torch.optim.SGD(net.parameters(), lr=args.lr_net)
    optimizer_net.zero_grad()
    criterion = nn.CrossEntropyLoss().to(args.device)
    loss_avg = 0
    args.dc_aug_param = None
    for ol in range(args.outer_loop):
        loss = torch.tensor(0.0, dtype=DTYPE).to(args.device)
        for c in range(num_classes):
            img_real = get_images(c, args.batch_real)
            lab_real = torch.ones((img_real.shape[0],), device=args.device, dtype=torch.long) * c
            img_syn = image_syn[c * args.ipc : (c + 1) * args.ipc].reshape((args.ipc, channel, *im_size))
            lab_syn = torch.ones((args.ipc,), device=args.device, dtype=torch.long) * c
            if args.dsa:
                seed = next_seed()
                img_real = DiffAugment(img_real, args.dsa_strategy, seed=seed, param=args.dsa_param)
                img_syn = DiffAugment(img_syn, args.dsa_strategy, seed=seed, param=args.dsa_param)
            output_real = net(img_real)
            loss_real = criterion(output_real, lab_real)
            gw_real = torch.autograd.grad(loss_real, net_parameters)
            gw_real = list(g.detach().clone() for g in gw_real)
            output_syn = net(img_syn)
            loss_syn = criterion(output_syn, lab_syn)
            gw_syn = torch.autograd.grad(loss_syn, net_parameters, create_graph=True)
            loss += match_loss(gw_syn, gw_real, args)
        optimizer_img.zero_grad()
        loss.backward()
        optimizer_img.step()
        loss_avg += loss.item()
        if ol == args.outer_loop - 1:
            break
        image_syn_train, label_syn_train = image_syn.detach().clone(), label_syn.detach().clone()
        dst_syn_train = TensorDataset(image_syn_train, label_syn_train)
        trainloader = torch.utils.data.DataLoader(dst_syn_train, batch_size=args.batch_train, shuffle=True,
                                                  num_workers=0)  # fmt: skip
        for _ in range(args.inner_loop):
            epoch("train", trainloader, net, optimizer_net, criterion, args, aug=True if args.dsa else False)
    loss_avg /= num_classes * args.outer_loop
    return loss_avg


def dm_iteration(net, image_syn, optimizer_img, get_images, args, num_classes, next_seed=_clock_seed):
    """One iteration of ``main_DM.py``'s training loop (the ConvNet branch) on ``net``, a fresh network; returns
    the logged ``loss_avg``."""
    channel, im_size = image_syn.shape[1], image_syn.shape[2:]
    net.train()
    for param in list(net.parameters()):
        param.requires_grad = False
    embed = net.embed
    loss_avg = 0
    loss = torch.tensor(0.0, dtype=DTYPE).to(args.device)
    for c in range(num_classes):
        img_real = get_images(c, args.batch_real)
        img_syn = image_syn[c * args.ipc : (c + 1) * args.ipc].reshape((args.ipc, channel, *im_size))
        if args.dsa:
            seed = next_seed()
            img_real = DiffAugment(img_real, args.dsa_strategy, seed=seed, param=args.dsa_param)
            img_syn = DiffAugment(img_syn, args.dsa_strategy, seed=seed, param=args.dsa_param)
        output_real = embed(img_real).detach()
        output_syn = embed(img_syn)
        loss += torch.sum((torch.mean(output_real, dim=0) - torch.mean(output_syn, dim=0)) ** 2)
    optimizer_img.zero_grad()
    loss.backward()
    optimizer_img.step()
    loss_avg += loss.item()
    loss_avg /= num_classes
    return loss_avg
