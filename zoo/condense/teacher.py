"""Teachers for the condensation methods that need a trained network (RDED, SRe2L; the embedding of herding and
k-center when one is given).

:func:`load_teacher` takes the ``teacher`` option: a trained zoo run folder or model folder, a registered name (with
``teacher_weights``, or its own pretrained weights), ``hf-hub:ORG/NAME`` (all built by the training engine's
:func:`zoo.train.builders.build_teacher`), an in-memory ``nn.Module`` (API use, tests) or a :class:`Teacher`.
It refuses a teacher whose number of classes differs from the data's.

The condensed images live in the real data's normalisation at its image size (``RealData.preprocessing``); a
teacher trained by ``train.py`` expects its own (``pretrained_cfg``: mean, std, input size, crop_pct). The
:class:`Teacher` wrapper converts on the way in, differentiably (SRe2L's gradients pass through it): back to pixels,
the centre ``crop_pct`` of the image (what the teacher's eval transform showed it), resized to its input size,
normalised with its mean and std. An in-memory module is taken to expect the data's own preprocessing (it was
trained on these tensors); wrap it in a :class:`Teacher` to say otherwise.

:func:`train_teacher` trains a quick teacher on the real data (ConvNet-3 with BatchNorm by default, the evaluation
protocol's optimiser without augmentation); the tests and the bench use it, and so do herding and k-center for
their embedding network.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import get_entry
from ..train.builders import _teacher_label_names, build_teacher
from ..train.distill import DistillConfig
from .core import CondenseError, RealData, make_network
from .evaluate import EvalSettings, train_network

__all__ = ["Teacher", "build_network", "load_teacher", "train_teacher"]


@dataclass
class Teacher:
    """A frozen classifier and the preprocessing it expects: ``mean``/``std`` (per channel, of pixels in
    [0, 1]), ``input_size`` ``(C, H, W)`` and ``crop_pct`` (the centre fraction its eval transform keeps)."""

    model: nn.Module
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_size: tuple[int, int, int]
    crop_pct: float = 1.0
    name: str = "teacher"
    class_names: list[str] | None = None  # what it was trained on, where recorded (its logit i is class i)

    def __post_init__(self):
        self.model.eval().requires_grad_(False)
        self._data_pre: dict[str, Any] | None = None

    def bind(self, real: RealData) -> "Teacher":
        """Take inputs in ``real``'s preprocessing from now on."""
        self._data_pre = dict(real.preprocessing)
        return self

    @property
    def device(self) -> torch.device:
        p = next(self.model.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    def _identity(self, x: torch.Tensor) -> bool:
        pre = self._data_pre
        if pre is None:
            return True
        return (
            tuple(x.shape[1:]) == tuple(self.input_size)
            and self.crop_pct == 1.0
            and [float(v) for v in pre["mean"]] == [float(v) for v in self.mean]
            and [float(v) for v in pre["std"]] == [float(v) for v in self.std]
        )

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        """Images in the data's normalisation -> the teacher's inputs (differentiable)."""
        if self._identity(x):
            return x
        pre = self._data_pre
        m = torch.tensor(pre["mean"], device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        s = torch.tensor(pre["std"], device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        x = x * s + m
        if self.crop_pct < 1.0:
            h, w = x.shape[-2:]
            ch, cw = max(1, round(h * self.crop_pct)), max(1, round(w * self.crop_pct))
            top, left = (h - ch) // 2, (w - cw) // 2
            x = x[..., top : top + ch, left : left + cw]
        c, th, tw = self.input_size
        if tuple(x.shape[-2:]) != (th, tw):
            down = th < x.shape[-2] or tw < x.shape[-1]
            x = F.interpolate(x, size=(th, tw), mode="bilinear", align_corners=False, antialias=down)
        if c != x.shape[1]:
            if c != 1:
                raise CondenseError(f"the teacher {self.name} takes {c}-channel images; the data has {x.shape[1]}")
            x = x.mean(1, keepdim=True)
        tm = torch.tensor(self.mean[:c], device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        ts = torch.tensor(self.std[:c], device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        return (x - tm) / ts

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for images in the data's preprocessing."""
        return self.model(self.adapt(x))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features (``forward_head(..., pre_logits=True)``; the logits for a model without them)."""
        x = self.adapt(x)
        m = self.model
        if hasattr(m, "forward_features") and hasattr(m, "forward_head"):
            return m.forward_head(m.forward_features(x), pre_logits=True).flatten(1)
        return m(x)

    @torch.no_grad()
    def soft_labels(self, images: torch.Tensor, temperature: float = 1.0, batch: int = 256) -> torch.Tensor:
        """Softmax of the logits at ``temperature``: one probability row per image."""
        out = []
        for i in range(0, images.shape[0], batch):
            logits = self(images[i : i + batch].to(self.device)).float()
            out.append(F.softmax(logits / temperature, dim=1))
        return torch.cat(out)

    @torch.no_grad()
    def num_classes(self) -> int:
        p = next(self.model.parameters(), None)
        x = torch.zeros(2, *self.input_size, device=self.device, dtype=p.dtype if p is not None else None)
        return int(self.model(x).shape[-1])

    def has_batchnorm(self) -> bool:
        return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.model.modules())


def _describe(spec: Any) -> str:
    if isinstance(spec, Teacher):
        return spec.name
    if isinstance(spec, nn.Module):
        cfg = getattr(spec, "pretrained_cfg", None) or {}
        return cfg.get("architecture") or type(spec).__name__
    return str(spec)


def load_teacher(
    spec: "str | nn.Module | Teacher",
    real: RealData,
    device: torch.device | str = "cpu",
    weights: str | None = None,
    kwargs: dict[str, Any] | None = None,
) -> Teacher:
    """The ``teacher`` option as a frozen :class:`Teacher` bound to ``real``'s preprocessing, on ``device``;
    refuses one that predicts another number of classes than ``real`` has."""
    if isinstance(spec, Teacher):
        teacher = spec
        teacher.model.to(device)
    elif isinstance(spec, nn.Module):
        pre = real.preprocessing
        teacher = Teacher(
            spec.to(device), tuple(pre["mean"]), tuple(pre["std"]), tuple(real.shape), 1.0, _describe(spec)
        )
    elif isinstance(spec, (str, Path)) and str(spec):
        teacher = _build(str(spec), real, device, weights, kwargs or {})
    else:
        raise CondenseError(
            "this method needs a trained teacher: set the teacher option to a run or model folder, a registered "
            "name (with teacher_weights), hf-hub:ORG/NAME, or pass an nn.Module"
        )
    teacher.bind(real)
    try:
        k = teacher.num_classes()
    except Exception as e:  # a model that cannot take its own input size says so here
        raise CondenseError(f"the teacher {teacher.name} fails on a {tuple(teacher.input_size)} input: {e}") from None
    if k != real.num_classes:
        raise CondenseError(
            f"the teacher {teacher.name} predicts {k} classes and the data has {real.num_classes}: use a teacher "
            "trained on this data"
        )
    _check_class_names(teacher, real)
    return teacher


# the training engine's distill keys and what condensation calls them
_KEYS = (
    ("distill.teacher_weights", "--option teacher_weights"),
    (" (with distill.teacher_kwargs for its arguments)", ""),
    ("distill.teacher", "--teacher"),
)


def _check_class_names(teacher: Teacher, real: RealData) -> None:
    """The teacher's recorded class names (``label_names``) are the data's, in the data's order."""
    names = teacher.class_names
    if names is None:
        names = (getattr(teacher.model, "pretrained_cfg", None) or {}).get("label_names")
    if not names:
        return  # nothing recorded: the count is all there is to check
    theirs, ours = [str(n) for n in names], [str(n) for n in real.class_names]
    if theirs == ours:
        return
    if sorted(theirs) == sorted(ours):
        i = next(i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b)
        how = f"the same classes in another order (its class {i} is {theirs[i]!r}, the data's {ours[i]!r})"
    else:
        other = [n for n in theirs if n not in ours][:3]
        how = f"other classes ({', '.join(map(repr, other))} ... are not the data's)"
    raise CondenseError(
        f"the teacher {teacher.name} was trained on {how}: its logit i must mean the data's class i; use a teacher "
        "trained on this data with its class folders"
    )


def _build(spec: str, real: RealData, device, weights: str | None, kwargs: dict[str, Any]) -> Teacher:
    cfg = DistillConfig(teacher=spec, teacher_weights=weights, teacher_kwargs=dict(kwargs))
    try:
        model = build_teacher(cfg, device, real.num_classes)
    except Exception as e:  # DistillError, CheckpointError, a missing model: one line, the teacher named
        why = str(e).splitlines()[0] if str(e) else repr(e)
        for key, ours in _KEYS:
            why = why.replace(key, ours)  # the training engine's keys, as condensation spells them
        raise CondenseError(f"cannot load the teacher {spec}: {why}") from None
    names = _teacher_label_names(cfg, model)
    pc = getattr(model, "pretrained_cfg", None) or {}
    pre = real.preprocessing
    mean = tuple(float(v) for v in pc.get("mean", pre["mean"]))
    std = tuple(float(v) for v in pc.get("std", pre["std"]))
    size = tuple(int(v) for v in pc.get("input_size", real.shape))
    if len(mean) == 1:
        mean, std = mean * size[0], std * size[0]
    return Teacher(model, mean, std, size, float(pc.get("crop_pct", 1.0) or 1.0), spec, names)


def build_network(name: str, real: RealData, generator: torch.Generator, **kwargs) -> nn.Module:
    """A fresh network for ``real``'s images and classes, seeded by ``generator``: :func:`make_network`, except
    that ``norm`` reaches the architecture: ``create_model`` reads ``norm=`` as its feature wrapper's switch,
    so a ConvNet with another norm is built by its registered builder, seeded alike."""
    if "norm" not in kwargs:
        return make_network(name, real.shape, real.num_classes, generator, **kwargs)
    c, h, _ = real.shape
    if name.startswith("convnet_"):
        kwargs = {"in_chans": c, "img_size": h, **kwargs}
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))
        return get_entry(name).fn(pretrained=False, num_classes=real.num_classes, **kwargs)
    finally:
        torch.random.set_rng_state(state)


def train_teacher(
    real: RealData,
    model: str = "convnet_d3",
    epochs: int = 20,
    seed: int = 0,
    device: torch.device | str | None = None,
    lr: float = 0.01,
    batch: int = 256,
    norm: str | None = "batchnorm",
    **model_kwargs,
) -> nn.Module:
    """A network trained on ``real`` for ``epochs`` (SGD, momentum 0.9, weight decay 5e-4, lr x 0.1 at half the
    epochs; no augmentation): ConvNet-3 with BatchNorm unless ``model``/``norm``/``model_kwargs`` say otherwise
    (``norm="instancenorm"``: the field's GroupNorm ConvNet; ``norm=None``: the model's own default). BatchNorm is
    what RDED's and SRe2L's authors train their ConvNet teachers with (RDED ``synthesize/utils.py:load_model``:
    ``net_norm="batch"``), and SRe2L needs it. Any ``real.shape`` works: 1-channel 28x28 digits build the authors'
    ConvNet (first conv padded by 3, as at 32x32). Its ``pretrained_cfg`` records ``real``'s preprocessing, so it
    stays usable when saved. ``epochs=0`` gives the initialised network."""
    if norm is not None:
        model_kwargs["norm"] = norm
    dev = torch.device(device) if device is not None else real.images.device
    g = torch.Generator().manual_seed(seed)
    net = build_network(model, real, g, **model_kwargs).to(dev)
    settings = EvalSettings(model=model, lr=lr, batch=batch, dsa=False)
    if epochs > 0:
        train_network(net, real.images, real.labels, epochs, settings, generator=g)
    net.eval()
    pre = real.preprocessing
    cfg = dict(getattr(net, "pretrained_cfg", None) or {})
    cfg.update(input_size=tuple(real.shape), mean=tuple(pre["mean"]), std=tuple(pre["std"]), crop_pct=1.0,
               num_classes=real.num_classes, label_names=list(real.class_names))  # fmt: skip
    net.pretrained_cfg = cfg
    return net
