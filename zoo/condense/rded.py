"""RDED: realistic, diverse and efficient dataset distillation (Sun, Shi, Zhu, Yang, Wang; CVPR 2024,
LINs-lab/RDED). No optimisation: real patches, chosen by a trained observer (the teacher), stitched together.

Per class (the authors' ``synthesize``):

1. up to ``n_candidates`` (300) random real images of the class;
2. ``n_crops`` (5) random resized crops of each (square, scale in ``crop_scale`` = (0.08, 1), resized to
   ``image_size // factor``);
3. each crop is scored by the teacher's cross-entropy to the class (zero-padded back to the full size, in the
   normalised space, as the authors pad); every image keeps its lowest-loss crop ("most realistic");
4. the ``ipc x factor^2`` images with the lowest best-crop loss give their crops, ranked;
5. ``factor x factor`` crops are stitched per image: grid cell ``k`` of image ``j`` holds the crop ranked
   ``k * ipc + j`` (cells are ``size // factor`` wide, the first ``size % factor`` rows/columns one pixel more);
6. every image is relabelled with the teacher's soft labels, softmax at ``temperature``, stored as probabilities
   (``soft_labels``) next to the hard class labels.

Choices the zoo makes:

- ``factor`` defaults to 2 (the authors' ImageNet setting; their CIFAR-10 ConvNet script uses 1). Patches smaller
  than ``min_patch`` (8) pixels are useless for the teacher, so on tiny images the factor is lowered until each
  patch has at least that many pixels a side (16x16 digits: factor 2, 8x8 patches; 8x8 images: factor 1); the
  factor used is recorded (``rded_factor`` in condense.json).
- When a class has fewer than ``ipc x factor^2`` candidate images, the rest of the patches are the next-best crops
  of the same images (the authors' loader always has 300 images); fewer crops than that in all is refused.
- The authors relabel on the fly while the student trains (per augmented batch, temperature 20 with cutmix on
  both student and teacher). A stored set holds one probability row per image, which the zoo's evaluation
  matches with a soft-target cross-entropy at temperature 1; so ``temperature`` defaults to 1 here.
"""

import math

import torch
import torch.nn.functional as F

from .core import CondenseError, Method, register_method
from .teacher import load_teacher

__all__ = ["RDED", "random_resized_crops", "stitch"]


def random_resized_crops(
    x: torch.Tensor, n: int, size: tuple[int, int], scale: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """``n`` square random resized crops of every image of ``x`` (``(B, C, H, W)`` -> ``(B, n, C, *size)``):
    torchvision's ``RandomResizedCrop(size, scale, ratio=(1, 1))``, bilinear with antialiasing."""
    b, c, h, w = x.shape
    out = torch.empty(b, n, c, *size, dtype=x.dtype, device=x.device)
    area = torch.empty(b, n).uniform_(scale[0], scale[1], generator=generator) * h * w
    offs = torch.rand(b, n, 2, generator=generator)
    for i in range(b):
        for k in range(n):
            side = int(min(h, w, max(1, round(math.sqrt(float(area[i, k]))))))
            top = int(offs[i, k, 0] * (h - side + 1))
            left = int(offs[i, k, 1] * (w - side + 1))
            patch = x[i : i + 1, :, top : top + side, left : left + side]
            down = side > size[0]
            out[i, k] = F.interpolate(patch, size=size, mode="bilinear", align_corners=False, antialias=down)[0]
    return out


def _pad_to(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Zero padding around the centre (the authors' ``pad``)."""
    dh, dw = h - x.shape[-2], w - x.shape[-1]
    return F.pad(x, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2))


def _cells(size: int, factor: int) -> list[int]:
    s, rem = divmod(size, factor)
    return [s + 1 if i < rem else s for i in range(factor)]


def stitch(crops: torch.Tensor, n: int, factor: int, size: tuple[int, int]) -> torch.Tensor:
    """``n`` images of ``size`` from ``n * factor^2`` ranked crops: cell ``k`` (row-major) of image ``j`` holds
    crop ``k * n + j`` (the authors' ``mix_images``)."""
    out = torch.zeros(n, crops.shape[1], *size, dtype=crops.dtype, device=crops.device)
    k, top = 0, 0
    for hr in _cells(size[0], factor):
        left = 0
        for wr in _cells(size[1], factor):
            part = crops[k * n : (k + 1) * n]
            if tuple(part.shape[-2:]) != (hr, wr):
                part = F.interpolate(part, size=(hr, wr), mode="bilinear", align_corners=False)
            out[:, :, top : top + hr, left : left + wr] = part
            left += wr
            k += 1
        top += hr
    return out


@register_method
class RDED(Method):
    name = "rded"
    learned = True  # a distillation method (its images are new), though it takes no optimisation steps
    needs_teacher = True
    defaults = {
        "iterations": 0,
        "teacher": "",
        "teacher_weights": None,
        "n_candidates": 300,
        "n_crops": 5,
        "factor": 2,
        "min_patch": 8,
        "crop_scale": [0.08, 1.0],
        "temperature": 1.0,
        "relabel": "patches",
        "batch": 256,
    }

    def effective_factor(self) -> int:
        f = int(self.options["factor"])
        if f < 1:
            raise CondenseError(f"rded's factor must be >= 1, got {f}")
        h = min(self.real.shape[1:])
        while f > 1 and h // f < int(self.options["min_patch"]):
            f -= 1
        return f

    def check(self) -> None:
        o = self.options
        if int(o["n_crops"]) < 1 or int(o["n_candidates"]) < 1:
            raise CondenseError("rded needs n_candidates >= 1 and n_crops >= 1")
        lo, hi = (float(v) for v in o["crop_scale"])
        if not 0 < lo <= hi <= 1:
            raise CondenseError(f"rded's crop_scale must be (min, max) with 0 < min <= max <= 1, got {o['crop_scale']}")
        if not float(o["temperature"]) > 0:
            raise CondenseError(f"rded's temperature must be > 0, got {o['temperature']}")
        if o["relabel"] not in ("patches", "image"):
            raise CondenseError(f"rded's relabel is patches or image, got {o['relabel']!r}")
        f = self.effective_factor()
        need = self.ipc * f * f
        for c, idx in enumerate(self.real.by_class):
            have = min(len(idx), int(o["n_candidates"])) * int(o["n_crops"])
            if have < need:
                raise CondenseError(
                    f"rded needs {need} patches of class {self.real.class_names[c]!r} (ipc {self.ipc} x factor "
                    f"{f}^2) and can cut only {have}: lower --ipc or the factor, or raise n_crops"
                )
        self.teacher = load_teacher(o["teacher"], self.real, self.device, o["teacher_weights"])

    @torch.no_grad()
    def _class_patches(self, c: int, factor: int) -> torch.Tensor:
        o = self.options
        _, h, w = self.real.shape
        psize = (h // factor, w // factor)
        imgs = self.real.class_images(c, int(o["n_candidates"]), self.generator)
        m = int(o["n_crops"])
        crops = random_resized_crops(imgs, m, psize, tuple(o["crop_scale"]), self.generator)  # (n, m, C, ph, pw)
        n = crops.shape[0]
        flat = crops.reshape(n * m, *crops.shape[2:])
        losses = []
        for i in range(0, flat.shape[0], int(o["batch"])):
            x = _pad_to(flat[i : i + int(o["batch"])], h, w).to(self.device)
            y = torch.full((x.shape[0],), c, dtype=torch.long, device=self.device)
            losses.append(F.cross_entropy(self.teacher(x).float(), y, reduction="none").cpu())
        loss = torch.cat(losses).view(n, m)
        order = loss.argsort(dim=1)  # each image's crops, best first
        ranked_loss = loss.gather(1, order)
        need = self.ipc * factor * factor
        # rank 0 of every image first (the authors' selection), then the next-best crops when images run short
        picks = []
        for r in range(m):
            best = ranked_loss[:, r].argsort()
            picks.extend((int(i), int(order[i, r])) for i in best)
            if len(picks) >= need:
                break
        picks = picks[:need]
        return torch.stack([crops[i, k] for i, k in picks])

    def setup(self) -> None:
        if not hasattr(self, "teacher"):
            self.check()
        f = self.effective_factor()
        self.factor = f
        _, h, w = self.real.shape
        images, labels = [], []
        for c in range(self.real.num_classes):
            patches = self._class_patches(c, f)
            images.append(stitch(patches, self.ipc, f, (h, w)))
            labels.append(torch.full((self.ipc,), c, dtype=torch.long))
        self.images = torch.cat(images).to(self.device)
        self.labels = torch.cat(labels).to(self.device)
        self.soft = self._relabel(self.images, f)

    @torch.no_grad()
    def _relabel(self, images: torch.Tensor, factor: int) -> torch.Tensor:
        """Soft labels: of each stitched image, or the mean over its cells, each resized to the full size."""
        t, batch = float(self.options["temperature"]), int(self.options["batch"])
        if factor == 1 or self.options["relabel"] == "image":
            return self.teacher.soft_labels(images, t, batch)
        _, h, w = self.real.shape
        probs, top = 0.0, 0
        for hr in _cells(h, factor):
            left = 0
            for wr in _cells(w, factor):
                cell = images[:, :, top : top + hr, left : left + wr]
                cell = F.interpolate(cell, size=(h, w), mode="bilinear", align_corners=False)
                probs = probs + self.teacher.soft_labels(cell, t, batch)
                left += wr
            top += hr
        return probs / (factor * factor)

    def result(self):
        return self.images, self.labels, self.soft, {}

    def describe(self):
        return {"rded_factor": self.factor, "model": self.teacher.name, "teacher": self.teacher.name}
