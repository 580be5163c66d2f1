"""Differentiable siamese augmentation (DSA; Zhao & Bilen, "Dataset Condensation with Differentiable Siamese
Augmentation", ICML 2021) on normalised image batches.

Every op is differentiable in the images, so gradients reach synthetic images through it. The *siamese* part:
one sampled transform (:meth:`DSA.sample`) is applied to the real and to the synthetic batch alike
(:meth:`DSA.apply`), whatever their sizes. Training a network on a set samples one transform per image instead
(``per_sample=True``), as the field's evaluation does.

Exact to the authors' ``DiffAugment`` ("S" mode, VICO-UoE/DatasetCondensation ``utils.py``): the same ops and
strengths (``ParamDiffAug``: ``color`` = brightness 1.0, saturation 2.0, contrast 0.5 in that order; ``crop``, a
translation by up to 0.125 of the side, zeros shifted in; ``cutout``, a zeroed square of half the side; ``flip``,
probability 0.5, left out for digits; ``scale``, each axis by 1/1.2 .. 1.2; ``rotate``, up to 15 degrees), the
same arithmetic (the affine ops' matrices built in float32 from float32 draws, ``affine_grid``/``grid_sample``
with their default ``align_corners=False``, the rotation matrix ``[[cos, -sin], [sin, cos]]``), and the same draws
in the same order from the generator: one op index per call, then the op's values (``torch.rand`` for color in the
images' dtype, ``torch.rand`` in float32 for flip, scale and rotate, ``torch.randint`` for the crop's shifts and
the cutout's centres). Per-image draws (``per_sample=True``) therefore consume a generator exactly as
``DiffAugment(x, strategy, seed=-1)`` consumes torch's global one. The zoo differs on purpose in two ways: the
draws come from an explicit generator (the authors reseed torch's global one from the clock for every siamese
call), and the ops are vectorised where the authors build matrices image by image (the parity tests,
``tests/condense/test_condense_parity.py``, show both give the same images).
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
    """One sampled transform: the op and its draws, one row per image (or one row shared by every image).

    Columns, as the authors draw them: ``color`` (brightness, saturation, contrast) uniforms in [0, 1);
    ``crop`` (row shift, column shift) integers in [-r, r], r = round(0.125 x side); ``cutout`` (centre row,
    centre column) integers in [0, side + 1 - s % 2), s = round(0.5 x side); ``flip`` (u,), flipped if u < 0.5;
    ``scale`` (u_x, u_y) and ``rotate`` (u,) uniforms in [0, 1), float32."""

    op: str
    values: torch.Tensor  # (n, k); n = 1 means the same for every image


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

    def _crop_reach(self, h: int, w: int) -> tuple[int, int]:
        return int(h * self.crop + 0.5), int(w * self.crop + 0.5)

    def _cutout_size(self, h: int, w: int) -> tuple[int, int]:
        return int(h * self.cutout + 0.5), int(w * self.cutout + 0.5)

    def sample(
        self,
        generator: torch.Generator | None = None,
        n: int = 1,
        size: tuple[int, int] | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> DSAParams:
        """Draw one op and its values for ``n`` images of ``size`` (height, width) and ``dtype``, in the authors'
        order and kinds; ``n=1`` for a siamese transform shared by every image of both batches."""
        if size is None and ("crop" in self.ops or "cutout" in self.ops):
            raise ValueError("DSA.sample needs the images' size=(height, width) for crop and cutout")
        g = generator
        op = self.ops[torch.randint(0, len(self.ops), size=(1,), generator=g).item()]
        if op == "color":
            values = torch.stack([torch.rand(n, generator=g, dtype=dtype) for _ in range(3)], 1)
        elif op in ("flip", "rotate"):
            values = torch.rand(n, generator=g)[:, None]
        elif op == "scale":
            values = torch.stack([torch.rand(n, generator=g) for _ in range(2)], 1)
        elif op == "crop":
            reach = self._crop_reach(*size)
            values = torch.stack([torch.randint(-r, r + 1, size=(n,), generator=g) for r in reach], 1)
        else:  # cutout
            cut = self._cutout_size(*size)
            values = torch.stack([torch.randint(0, s + (1 - c % 2), size=(n,), generator=g)
                                  for s, c in zip(size, cut)], 1)  # fmt: skip
        return DSAParams(op, values)

    def __call__(self, x: torch.Tensor, generator: torch.Generator | None = None, per_sample: bool = True):
        """A random transform of ``x`` (one per image with ``per_sample``, else one for the batch)."""
        n = x.shape[0] if per_sample else 1
        return self.apply(x, self.sample(generator, n, tuple(x.shape[-2:]), x.dtype))

    def single(self, x: torch.Tensor) -> torch.Tensor:
        """A random transform of one ``(C, H, W)`` image (a dataset transform; draws from torch's global RNG)."""
        return self(x.unsqueeze(0)).squeeze(0)

    def apply(self, x: torch.Tensor, p: DSAParams) -> torch.Tensor:
        v = p.values.to(x.device)
        if p.op == "color":
            r = v.to(x.dtype)[:, :, None, None, None]
            x = x + (r[:, 0] - 0.5) * self.brightness
            mean = x.mean(dim=1, keepdim=True)
            x = (x - mean) * (r[:, 1] * self.saturation) + mean
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            return (x - mean) * (r[:, 2] + self.contrast) + mean
        if p.op == "flip":
            flip = (v[:, 0] < self.flip)[:, None, None, None]
            return torch.where(flip, x.flip(3), x)
        if p.op == "crop":
            return self._translate(x, v.long())
        if p.op == "cutout":
            return self._cutout(x, v.long())
        if p.op == "scale":  # the matrix in float32 from float32 draws, as the authors build it
            ratio = self.scale
            s = v.float() * (ratio - 1.0 / ratio) + 1.0 / ratio
            zero = torch.zeros_like(s[:, 0])
            theta = torch.stack([torch.stack([s[:, 0], zero, zero], 1), torch.stack([zero, s[:, 1], zero], 1)], 1)
            return self._warp(x, theta)
        if p.op == "rotate":  # [[cos, sin(-a)], [sin, cos]]: anticlockwise for a > 0
            a = (v[:, 0].float() - 0.5) * 2 * self.rotate / 180 * float(math.pi)
            c, s, zero = torch.cos(a), torch.sin(a), torch.zeros_like(a)
            theta = torch.stack([torch.stack([c, torch.sin(-a), zero], 1), torch.stack([s, c, zero], 1)], 1)
            return self._warp(x, theta)
        raise ValueError(f"unknown DSA op {p.op!r}")

    @staticmethod
    def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
        theta = theta.to(x.dtype).expand(x.shape[0], 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, align_corners=False)

    def _translate(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Shift by the drawn (rows, columns), zeros shifted in."""
        h, w = x.shape[-2:]
        rows = torch.arange(h, device=x.device)[None, :] + v[:, 0:1]  # (n, h): source row of each output row
        cols = torch.arange(w, device=x.device)[None, :] + v[:, 1:2]
        keep = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
        rows, cols = rows.clamp(0, h - 1), cols.clamp(0, w - 1)
        n = x.shape[0]
        rows, cols, keep = rows.expand(n, h), cols.expand(n, w), keep.expand(n, h, w)
        idx = (rows[:, :, None] * w + cols[:, None, :]).reshape(n, 1, h * w).expand(n, x.shape[1], h * w)
        out = x.reshape(n, x.shape[1], h * w).gather(2, idx).reshape_as(x)
        return out * keep[:, None].to(x.dtype)

    def _cutout(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Zero the square of ``cutout`` of the side centred at the drawn (row, column)."""
        h, w = x.shape[-2:]
        sh, sw = self._cutout_size(h, w)
        cy, cx = v[:, 0], v[:, 1]
        ys = torch.arange(h, device=x.device)[None, :]
        xs = torch.arange(w, device=x.device)[None, :]
        in_y = (ys >= cy[:, None] - sh // 2) & (ys < cy[:, None] - sh // 2 + sh)
        in_x = (xs >= cx[:, None] - sw // 2) & (xs < cx[:, None] - sw // 2 + sw)
        hole = in_y[:, :, None] & in_x[:, None, :]
        return x * (~hole)[:, None].to(x.dtype)
