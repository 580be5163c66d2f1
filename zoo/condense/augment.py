"""Augmentation as the DatasetCondensation code (VICO-UoE) uses it: the per-dataset DSA strategy, siamese DSA of
many classes at once, the DC evaluation's augmentation (``augment``/``get_daparam``), and a data loader's shuffle.

- :func:`dsa_strategy`: every op, flips left out for digit datasets (the authors' README: "use
  color_crop_cutout_flip_scale_rotate for FashionMNIST CIFAR10/100, and color_crop_cutout_scale_rotate for the
  digit datasets (MNIST and SVHN)").
- :class:`ClassTransforms`: each class draws its own DSA transform (as the authors' per-class loops do), and the
  real and the synthetic images of a class get the same one. Grouping the rows by op lets one network forward
  serve every class, instead of one forward per class (the zoo's batching; the arithmetic per image is the same).
- :func:`dc_augment`: the authors' ``augment`` (DC without DSA evaluates with it; ``get_daparam`` turns it on for
  MNIST as ``crop_scale_rotate``): one of mean-padded crop, nearest-neighbour scale, scipy's cubic rotation, or
  noise per image, the same numpy draws in the same order from a ``numpy.random.RandomState``.
- :func:`loader_batches`: the batches of indices ``DataLoader(..., shuffle=True)`` yields, drawing from a generator
  what the loader draws from torch's global one, so a training loop on in-memory tensors reaches the same weights.
"""

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..data.dsa import DEFAULT_STRATEGY, DSA, DSAParams
from ..data.sources import BENCHMARKS

__all__ = [
    "DC_AUG",
    "ClassTransforms",
    "dc_augment",
    "dc_augment_strategy",
    "dsa_strategy",
    "has_flips",
    "loader_batches",
    "sample_class_transforms",
]

# digit data beyond the benchmark table (whose entries say for themselves): a mirrored digit is another shape or none
NO_FLIP = ("digits", "mnist", "svhn", "usps")
# the strengths of the authors' DC augmentation (get_daparam): crop pad 4 px, scale +-0.2, rotate +-45 deg, noise
DC_AUG = {"crop": 4, "scale": 0.2, "rotate": 45, "noise": 0.001}


def _name(data) -> str:
    name = data if isinstance(data, str) else data.source.get("name", "")
    return str(name).lower()


def has_flips(data) -> bool:
    """Whether the dataset (a name or a :class:`RealData`) is augmented with flips: a benchmark set as the data
    resolver's table says (not ``mnist``, ``svhn``; ``fashion_mnist`` is clothing and keeps them), other data unless
    its name says digits."""
    name = _name(data).replace("-", "_")
    if name in BENCHMARKS:
        return BENCHMARKS[name].hflip
    if "fashion" in name:
        return True
    return not any(d in name for d in NO_FLIP)


def dsa_strategy(real, strategy: str | None = None) -> str:
    """``strategy`` as given, else every op, without flips for digit datasets (as the authors' README says)."""
    if strategy:
        return strategy
    return DEFAULT_STRATEGY if has_flips(real) else DEFAULT_STRATEGY.replace("_flip", "")


def dc_augment_strategy(data) -> str | None:
    """The authors' ``get_daparam`` for ConvNet: ``crop_scale_rotate`` for MNIST, nothing for the others."""
    name = _name(data).replace("-", "_")
    return "crop_scale_rotate" if name == "mnist" else None


class ClassTransforms:
    """One DSA transform per class; :meth:`apply` transforms a batch whose rows belong to ``row_class``."""

    def __init__(self, dsa: DSA, params: list[DSAParams]):
        self.dsa, self.params = dsa, params

    def apply(self, x: torch.Tensor, row_class: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(x)
        ops: dict[str, list[int]] = {}
        for c, p in enumerate(self.params):
            ops.setdefault(p.op, []).append(c)
        row_class = row_class.to(x.device)
        for op, classes in ops.items():
            rows = torch.nonzero(torch.isin(row_class, torch.tensor(classes, device=x.device))).flatten()
            if rows.numel() == 0:
                continue
            slot = torch.full((len(self.params),), -1, dtype=torch.long, device=x.device)
            slot[torch.tensor(classes, device=x.device)] = torch.arange(len(classes), device=x.device)
            table = torch.stack([self.params[c].values[0] for c in classes]).to(x.device)  # (classes of op, k)
            out[rows] = self.dsa.apply(x[rows], DSAParams(op, table[slot[row_class[rows]]]))
        return out


def sample_class_transforms(
    dsa: DSA, num_classes: int, generator: torch.Generator, size: tuple[int, int], dtype: torch.dtype = torch.float32
) -> ClassTransforms:
    return ClassTransforms(dsa, [dsa.sample(generator, 1, size, dtype) for _ in range(num_classes)])


def loader_batches(n: int, batch: int, generator: torch.Generator | None) -> list[torch.Tensor]:
    """The index batches of one pass of ``DataLoader(dataset of n, batch_size=batch, shuffle=True)`` (no workers):
    the loader's iterator draws an int64 base seed, its ``RandomSampler`` an int64 seed for a fresh generator that
    makes the permutation; both draws here come from ``generator`` (torch's global one when None)."""
    torch.empty((), dtype=torch.int64).random_(generator=generator)  # the iterator's base seed (used by workers)
    seed = int(torch.empty((), dtype=torch.int64).random_(generator=generator).item())
    return list(torch.randperm(n, generator=torch.Generator().manual_seed(seed)).split(batch))


def dc_augment(
    images: torch.Tensor,
    strategy: str,
    rng: np.random.RandomState,
    generator: torch.Generator | None = None,
    crop: int = DC_AUG["crop"],
    scale: float = DC_AUG["scale"],
    rotate: int = DC_AUG["rotate"],
    noise: float = DC_AUG["noise"],
) -> torch.Tensor:
    """The authors' ``augment``: per image, one op drawn from ``strategy`` (``crop``, ``scale``, ``rotate``,
    ``noise``), its values from ``rng`` (noise from ``generator``); a new tensor, ``images`` untouched. Not
    differentiable (evaluation only)."""
    if not strategy or strategy == "none":
        return images
    out = images.detach().clone()
    n, ch, h, w = out.shape
    dev, dt = out.device, out.dtype
    mean = [float(torch.mean(out[:, c])) for c in range(ch)]
    augs = strategy.split("_")
    for i in range(n):
        choice = rng.permutation(augs)[0]
        if choice == "crop":
            canvas = torch.zeros(ch, h + crop * 2, w + crop * 2, dtype=dt, device=dev)
            for c in range(ch):
                canvas[c] = mean[c]
            canvas[:, crop : crop + h, crop : crop + w] = out[i]
            r, c = rng.permutation(crop * 2)[0], rng.permutation(crop * 2)[0]
            out[i] = canvas[:, r : r + h, c : c + w]
        elif choice == "scale":
            sh = int(rng.uniform(1 - scale, 1 + scale) * h)
            sw = int(rng.uniform(1 - scale, 1 + scale) * h)  # the authors scale both sides from the height
            tmp = F.interpolate(out[i : i + 1], [sh, sw])[0]
            side = max(sh, sw, h, w)
            canvas = torch.zeros(ch, side, side, dtype=dt, device=dev)
            r, c = int((side - sh) / 2), int((side - sw) / 2)
            canvas[:, r : r + sh, c : c + sw] = tmp
            r, c = int((side - h) / 2), int((side - w) / 2)
            out[i] = canvas[:, r : r + h, c : c + w]
        elif choice == "rotate":
            angle = rng.randint(-rotate, rotate)
            turned = ndimage.rotate(out[i].cpu().numpy(), angle=angle, axes=(-2, -1), cval=np.mean(mean))
            r, c = int((turned.shape[-2] - h) / 2), int((turned.shape[-1] - w) / 2)
            out[i] = torch.tensor(turned[:, r : r + h, c : c + w], dtype=dt, device=dev)
        elif choice == "noise":
            out[i] = out[i] + noise * torch.randn(out.shape[1:], generator=generator, dtype=dt).to(dev)
    return out
