"""SRe2L: squeeze, recover, relabel (Yin, Xing, Shen; "Squeeze, Recover and Relabel: Dataset Condensation at
ImageNet Scale From A New Perspective", NeurIPS 2023; VILA-Lab/SRe2L).

- **Squeeze**: the given teacher, trained on the full data (the ``teacher`` option; see
  :mod:`zoo.condense.teacher`). It must have BatchNorm layers: their running statistics are what the images are
  recovered from (ConvNet-3 with ``norm=batchnorm``, a ResNet, ...).
- **Recover**: the images start from Gaussian noise (in the data's normalised space) and are optimised with Adam
  (lr ``lr_img`` 0.25, betas (0.5, 0.9), cosine decay to 0 over ``iterations``) to minimise
  ``CE(teacher(jitter(x)), class) + r_bn * sum_l w_l (||mu_l(x) - running_mean_l||_2 + ||var_l(x) - running_var_l||_2)``
  where ``mu_l``/``var_l`` are the batch statistics entering BatchNorm layer ``l`` (forward hooks) and ``w_l`` is
  ``first_bn_multiplier`` (10) for the first layer, 1 for the others; ``r_bn`` 0.01. The jitter is the authors'
  ImageNet one: a random resized crop (scale ``min_scale``..1, ratio 3/4..4/3) resized back, a horizontal flip with
  probability 0.5 (``flip``), then a roll by up to ``jitter`` pixels each way (size // 7 by default: 32 at 224), one
  draw per batch. After every step the pixels are clipped to [0, 1]. Batches of ``batch`` (100) images, each holding
  consecutive classes of one image index (the authors' batches); their statistics are separate, one Adam serves all.
- **Relabel**: the teacher's soft labels of the final images (softmax at ``temperature``), stored as probabilities.

Defaults follow the authors' recipes: lr 0.25, r_bn 0.01, batch 100 and no L2/TV priors (``recover.sh``);
1000 iterations, their small-data (CIFAR) script's count (4000 at ImageNet). Simplified: the authors relabel each
random crop while the student trains (FKD); a stored set holds one probability row per image.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from .core import CondenseError, ImageMethod, register_method
from .teacher import load_teacher

__all__ = ["SRe2L"]


def _bn_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


@register_method
class SRe2L(ImageMethod):
    name = "sre2l"
    needs_teacher = True
    defaults = {
        "iterations": 1000,
        "teacher": "",
        "teacher_weights": None,
        "lr_img": 0.25,
        "r_bn": 0.01,
        "first_bn_multiplier": 10.0,
        "batch": 100,
        "min_scale": 0.08,
        "flip": True,
        "jitter": None,
        "temperature": 1.0,
    }

    def check(self) -> None:
        o = self.options
        if int(o["batch"]) < 2:
            raise CondenseError(f"sre2l's batch must be >= 2 (BatchNorm statistics of one image), got {o['batch']}")
        if not 0 < float(o["min_scale"]) <= 1:
            raise CondenseError(f"sre2l's min_scale must be in (0, 1], got {o['min_scale']}")
        if not float(o["temperature"]) > 0:
            raise CondenseError(f"sre2l's temperature must be > 0, got {o['temperature']}")
        self.teacher = load_teacher(o["teacher"], self.real, self.device, o["teacher_weights"])
        if not self.teacher.has_batchnorm():
            raise CondenseError(
                f"sre2l recovers images from the teacher's BatchNorm statistics and {self.teacher.name} has no "
                "BatchNorm layer: use a teacher with BatchNorm, e.g. convnet_d3 with norm=batchnorm"
            )

    def setup(self) -> None:
        if not hasattr(self, "teacher"):
            self.check()
        k = self.real.num_classes
        # image-index-major order: batch b holds image b // k ... of consecutive classes, as the authors' batches
        self.order_labels = torch.arange(k).repeat(self.ipc).to(self.device)
        self.images = torch.randn(self.ipc * k, *self.real.shape, generator=self.generator).to(self.device)
        self.images.requires_grad_(True)
        self.opt = torch.optim.Adam([self.images], lr=float(self.options["lr_img"]), betas=(0.5, 0.9), eps=1e-8)
        pre = self.real.preprocessing
        m = torch.tensor(pre["mean"], device=self.device).view(1, -1, 1, 1)
        s = torch.tensor(pre["std"], device=self.device).view(1, -1, 1, 1)
        self.lo, self.hi = -m / s, (1 - m) / s
        self.bns = _bn_layers(self.teacher.model)
        j = self.options["jitter"]
        self.max_shift = int(j) if j is not None else min(self.real.shape[1:]) // 7

    def _jitter(self, x: torch.Tensor) -> torch.Tensor:
        """One random resized crop (resized back), flip and roll for the whole batch."""
        g = self.generator
        _, _, h, w = x.shape
        r = torch.rand(6, generator=g).tolist()
        area = h * w * (float(self.options["min_scale"]) + r[0] * (1 - float(self.options["min_scale"])))
        ratio = math.exp(math.log(3 / 4) + r[1] * (math.log(4 / 3) - math.log(3 / 4)))
        cw = int(round(math.sqrt(area * ratio)))
        ch = int(round(math.sqrt(area / ratio)))
        if not (0 < cw <= w and 0 < ch <= h):  # torchvision's fallback after failed draws: the whole image
            ch, cw = h, w
        top, left = int(r[2] * (h - ch + 1)), int(r[3] * (w - cw + 1))
        x = x[:, :, top : top + ch, left : left + cw]
        if (ch, cw) != (h, w):
            x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
        if self.options["flip"] and r[4] < 0.5:
            x = x.flip(3)
        if self.max_shift > 0:
            dy, dx = (int(v) for v in torch.randint(0, self.max_shift + 1, (2,), generator=g))
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
        return x

    def step(self, it: int) -> float:
        o = self.options
        lr = 0.5 * (1 + math.cos(math.pi * it / max(1, self.iterations))) * float(o["lr_img"])
        for group in self.opt.param_groups:
            group["lr"] = lr
        stats: list[torch.Tensor] = []

        def hook(module, inputs, output):
            x = inputs[0]
            dims = [0] + list(range(2, x.dim()))
            mean = x.mean(dims)
            var = x.transpose(0, 1).reshape(x.shape[1], -1).var(1, unbiased=False)
            stats.append(torch.norm(module.running_var - var, 2) + torch.norm(module.running_mean - mean, 2))

        handles = [bn.register_forward_hook(hook) for bn in self.bns]
        self.opt.zero_grad(set_to_none=True)
        total, n = 0.0, self.images.shape[0]
        bsz = int(o["batch"])
        try:
            for i in range(0, n, bsz):
                stats.clear()
                x = self._jitter(self.images[i : i + bsz])
                ce = F.cross_entropy(self.teacher(x).float(), self.order_labels[i : i + bsz])
                weights = [float(o["first_bn_multiplier"])] + [1.0] * (len(stats) - 1)
                r_bn = sum(w * s for w, s in zip(weights, stats))
                loss = ce + float(o["r_bn"]) * r_bn
                # the mean over batches is reported; each batch's gradient reaches only its own images
                loss.backward()
                total += float(loss.detach()) * min(bsz, n - i) / n
        finally:
            for h in handles:
                h.remove()
        self.opt.step()
        with torch.no_grad():
            self.images.copy_(torch.maximum(torch.minimum(self.images, self.hi), self.lo))
        return total

    def _class_major(self) -> torch.Tensor:
        return torch.argsort(self.order_labels, stable=True)

    def result(self):
        perm = self._class_major()
        images = self.images.detach()[perm]
        labels = self.order_labels[perm]
        soft = self.teacher.soft_labels(images, float(self.options["temperature"]), int(self.options["batch"]))
        return images, labels, soft, {}

    def describe(self):
        return {"model": self.teacher.name, "teacher": self.teacher.name}
