"""Differentiable siamese augmentation (DSA; Zhao & Bilen, "Dataset Condensation with Differentiable Siamese
Augmentation", ICML 2021) on normalised image batches.

Every op is differentiable in the images, so gradients reach synthetic images through it. The *siamese* part:
one sampled transform (:meth:`DSA.sample`) is applied to the real and to the synthetic batch alike
(:meth:`DSA.apply`), whatever their sizes. Training a network on a set samples one transform per image instead
(``per_sample=True``), as the field's evaluation does.

Ops and strengths are the authors' (``ParamDiffAug``): ``color`` (brightness 1.0, saturation 2.0, contrast 0.5,
applied in that order), ``crop`` (translation by up to 0.125 of the side, zero padded), ``cutout`` (a zeroed square
of half the side), ``flip`` (probability 0.5; left out for digits), ``scale`` (each axis by 1/1.2 .. 1.2) and
``rotate`` (up to 15 degrees). Each call picks one op at random ("S" mode).
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["DEFAULT_STRATEGY", "DSA", "DSAParams"]

DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")


@dataclass
class DSAParams:
    """One sampled transform: the op and its random values (one row per image, or one row for the batch)."""

    op: str
    values: torch.Tensor  # (n, k) uniform draws in [0, 1); n = 1 means the same for every image


class DSA:
    """Differentiable siamese augmentation with the authors' strengths; ``strategy`` names the ops to draw from."""

    def __init__(
        self,
        strategy: str | Sequence[str] = DEFAULT_STRATEGY,
        brightness: float = 1.0,
        saturation: float = 2.0,
        contrast: float = 0.5,
        crop: float = 0.125,
        cutout: float = 0.5,
        flip: float = 0.5,
        scale: float = 1.2,
        rotate: float = 15.0,
    ):
        ops = strategy.split("_") if isinstance(strategy, str) else list(strategy)
        unknown = [o for o in ops if o not in OPS]
        if unknown or not ops:
            raise ValueError(f"unknown DSA op(s) {unknown or ops}: choose from {', '.join(OPS)}")
        self.ops = tuple(ops)
        self.brightness, self.saturation, self.contrast = brightness, saturation, contrast
        self.crop, self.cutout, self.flip, self.scale, self.rotate = crop, cutout, flip, scale, rotate

    @property
    def strategy(self) -> str:
        return "_".join(self.ops)

    def sample(self, generator: torch.Generator | None = None, n: int = 1) -> DSAParams:
        """Draw one op and its values: ``n=1`` for a siamese transform shared by every image of both batches."""
        op = self.ops[int(torch.randint(len(self.ops), (1,), generator=generator))]
        return DSAParams(op, torch.rand(n, 3, generator=generator))

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None, per_sample: bool = True):
        """A random transform of ``x`` (one per image with ``per_sample``, else one for the batch)."""
        return self.apply(x, self.sample(generator, x.shape[0] if per_sample else 1))

    def single(self, x: torch.Tensor) -> torch.Tensor:
        """A random transform of one ``(C, H, W)`` image (a dataset transform; draws from torch's global RNG)."""
        return self(x.unsqueeze(0)).squeeze(0)

    def apply(self, x: torch.Tensor, p: DSAParams) -> torch.Tensor:
        v = p.values.to(x.device, x.dtype)
        if p.op == "color":
            r = v[:, :, None, None, None]
            x = x + (r[:, 0] - 0.5) * self.brightness
            mean = x.mean(dim=1, keepdim=True)
            x = (x - mean) * (r[:, 1] * self.saturation) + mean
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            return (x - mean) * (r[:, 2] + self.contrast) + mean
        if p.op == "flip":
            flip = (v[:, 0] < self.flip)[:, None, None, None]
            return torch.where(flip, x.flip(3), x)
        if p.op == "crop":
            return self._translate(x, v)
        if p.op == "cutout":
            return self._cutout(x, v)
        if p.op == "scale":
            s = v[:, :2] * (self.scale - 1.0 / self.scale) + 1.0 / self.scale
            zero = torch.zeros_like(s[:, 0])
            theta = torch.stack([torch.stack([s[:, 0], zero, zero], 1), torch.stack([zero, s[:, 1], zero], 1)], 1)
            return self._warp(x, theta)
        if p.op == "rotate":
            a = (v[:, 0] - 0.5) * 2 * self.rotate / 180 * math.pi
            c, s, zero = torch.cos(a), torch.sin(a), torch.zeros_like(a)
            theta = torch.stack([torch.stack([c, s, zero], 1), torch.stack([-s, c, zero], 1)], 1)
            return self._warp(x, theta)
        raise ValueError(f"unknown DSA op {p.op!r}")

    @staticmethod
    def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        theta = theta.expand(x.shape[0], 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=True)
        return F.grid_sample(x, grid, align_corners=True)

    def _offsets(self, v: torch.Tensor, h: int, w: int, reach_h: int, reach_w: int) -> tuple[torch.Tensor, ...]:
        oy = torch.floor(v[:, 0] * (2 * reach_h + 1)).long() - reach_h
        ox = torch.floor(v[:, 1] * (2 * reach_w + 1)).long() - reach_w
        return oy, ox

    def _translate(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Shift by up to ``crop`` of each side, zeros shifted in."""
        h, w = x.shape[-2:]
        ry, rx = int(h * self.crop + 0.5), int(w * self.crop + 0.5)
        oy, ox = self._offsets(v, h, w, ry, rx)
        rows = torch.arange(h, device=x.device)[None, :] + oy[:, None]  # (n, h): source row of each output row
        cols = torch.arange(w, device=x.device)[None, :] + ox[:, None]
        keep = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
        rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
        n = x.shape[0]
        rows, cols, keep = rows.expand(n, h), cols.expand(n, w), keep.expand(n, h, w)
        idx = (rows[:, :, None] * w + cols[:, None, :]).reshape(n, 1, h * w).expand(n, x.shape[1], h * w)
        out = x.reshape(n, x.shape[1], h * w).gather(2, idx).reshape_as(x)
        return out * keep[:, None].to(x.dtype)

    def _cutout(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Zero a square of ``cutout`` of the side, centred anywhere in the image."""
        h, w = x.shape[-2:]
        sh, sw = int(h * self.cutout + 0.5), int(w * self.cutout + 0.5)
        cy = torch.floor(v[:, 0] * (h + (1 - sh % 2))).long()
        cx = torch.floor(v[:, 1] * (w + (1 - sw % 2))).long()
        ys = torch.arange(h, device=x.device)[None, :]
        xs = torch.arange(w, device=x.device)[None, :]
        in_y = (ys >= cy[:, None] - sh // 2) & (ys < cy[:, None] - sh // 2 + sh)
        in_x = (xs >= cx[:, None] - sw // 2) & (xs < cx[:, None] - sw // 2 + sw)
        hole = in_y[:, :, None] & in_x[:, None, :]
        return x * (~hole)[:, None].to(x.dtype)
