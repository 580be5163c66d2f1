"""Image classification: image datasets and streams, timm transforms and mixup, top-k accuracy."""

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from timm.data import Mixup, create_transform, resolve_data_config
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import nn

from ...data.dsa import DSA
from ...data.errors import DataError
from ...data.images import BAD_FILES, DatasetInfo
from ...data.sources import IMAGE_KINDS, DataSource, parse_split, resolve
from ...data.stream import ImageBatches, SampleStream, held_out_images, image_stream
from ...data.synthetic import SyntheticDataset, check_class_order, load_synthetic
from ...registry import get_entry
from ...run_layout import METRICS
from ...weights import read_state_dict
from ..config import RecipeError
from ..data_pruning import mean_weighted, per_sample_loss
from ..distill import output_logits
from ..metrics import classification_metrics, classification_sums, profile_classifier
from .base import EvalSource, SeededTransform, SeededTransformDataset, Task, warn_if_cut

_logger = logging.getLogger(__name__)


def _same_rows(rows):
    """A stream's units for images: its rows as they are."""
    return rows


class ImageTask(Task):
    name = "image-classification"
    throughput_unit = "img/s"
    evaluates_each_epoch = True
    supports_channels_last = True
    data_kinds = tuple(k for k in IMAGE_KINDS if k != "synthetic")  # synthetic: a zoo condense folder, apart
    data_hint = "an image classifier; evaluate it on images (--data digits, mnist, ... or a folder)"
    source: DataSource | None = None  # the data the run reads (zoo.data.sources)

    def total_steps(self, steps_per_epoch: int) -> int:
        t = self.recipe.train
        return min(t.epochs * steps_per_epoch, t.steps) if t.steps else t.epochs * steps_per_epoch

    def prepare_data(self):
        d = self.recipe.data
        if d.name == "synthetic":
            return self._prepare_synthetic()
        if d.name not in self.data_kinds:
            raise RecipeError(
                f"data.name {d.name!r} is not an image dataset: use {', '.join(self.data_kinds)} or synthetic"
            )
        self.source = src = resolve(d.name, d.path)
        if src.stream:
            return self._prepare_stream()
        bad_files = d.bad_files
        if bad_files not in BAD_FILES:
            raise RecipeError(f"data.bad_files must be one of {', '.join(BAD_FILES)}, not {bad_files!r}")
        grey = self._channels() == 1
        self.train_base, self.info = src.open(d.train_split, None, bad_files, d.image_key, d.label_key, grey)
        # the held-out split numbers its classes as the training split does (a class it lacks is fine)
        self.val_base, val_info = src.open(d.val_split, self.info.class_names, bad_files, d.image_key, d.label_key,
                                           grey)  # fmt: skip
        self.split = d.val_split = _split_read(src, d.val_split)  # what was read (a benchmark's test split)
        if val_info.num_classes > self.info.num_classes:  # integer labels without names
            raise DataError(
                f"the {d.val_split} split of {d.path} has labels up to {val_info.num_classes - 1}, the training "
                f"split up to {self.info.num_classes - 1}: the model would not know the extra classes"
            )
        self.dataset_name = self.info.name
        self.topk = min(5, self.info.num_classes)  # top-5, or top-k with k = classes when there are fewer
        self._require_one_batch(len(self.train_base), "images")
        self._warn_single_class()

    def _prepare_stream(self):
        """A stream (zoo.data.stream): read as the epochs go; its held-out rows are read once, here."""
        d = self.recipe.data
        if not d.path:
            raise RecipeError(f"data.name {d.name} needs data.path: a dataset name, a folder, a URL or a pattern")
        self.stream = stream = image_stream(d)
        self.info, self.val_base = stream.info, stream.val
        self.dataset_name = self.info.name
        self.topk = min(5, self.info.num_classes)
        self._require_one_batch(stream.num_samples, "images")

    def _prepare_synthetic(self):
        """A ``zoo condense`` folder: its images (already preprocessed tensors) train; the real held-out split that
        its condense.json names, preprocessed as the set was, evaluates."""
        d = self.recipe.data
        if not d.path:
            raise RecipeError("data.name synthetic needs data.path: a folder written by zoo condense --out")
        self.synthetic = syn = load_synthetic(d.path)
        src, pre = syn.meta["source"], syn.meta["preprocessing"]
        if d.image_size not in (None, pre["image_size"]):
            raise RecipeError(
                f"data.image_size {d.image_size} differs from the synthetic set's {pre['image_size']}: drop it (the "
                "set's images have one size)"
            )
        # the set's preprocessing becomes the run's (the real held-out split, the exported model, eval.py)
        d.image_size, d.crop_pct, d.interpolation = pre["image_size"], 1.0, pre["interpolation"]
        d.mean, d.std = list(pre["mean"]), list(pre["std"])
        self.info = DatasetInfo(f"synthetic {src['name']} ({syn.meta['method']}, ipc {syn.meta['ipc']})",
                                syn.num_classes, syn.class_names)  # fmt: skip
        self.train_base = SyntheticDataset(syn)
        channels = int(syn.images.shape[1])
        if channels != 3:  # a grey set (condensed from MNIST, say): a model of its channels, grey held-out images
            self.recipe.model_kwargs.setdefault("in_chans", channels)
        self.source = real = resolve(src["kind"], src.get("path"))
        check_class_order(syn, real, d.path)  # an older set's condense.json: the names its labels follow
        val_split = src.get("val_split", real.val_split)
        self.val_base, _ = real.open(val_split, class_names=syn.class_names, grey=channels == 1)
        self.split = d.val_split = _split_read(real, val_split)  # the real split the set names
        self.dataset_name = self.info.name
        self.topk = min(5, self.info.num_classes)
        entry_cfg = get_entry(self.recipe.model).pretrained_cfg if self.recipe.model else {}
        if entry_cfg.get("fixed_input_size") and entry_cfg.get("input_size", [0])[-1] != pre["image_size"]:
            # a model built for one size (ConvNet's flattened head) is built for the set's
            self.recipe.model_kwargs.setdefault("img_size", pre["image_size"])
        n, t = len(self.train_base), self.recipe.train
        if t.batch_size > n:  # a few images per class: every step sees the whole set
            _logger.info("train.batch_size %d > the %d synthetic images: using %d", t.batch_size, n, n)
            t.batch_size = n

    def _warn_single_class(self):
        labels = set(self.train_base.targets)
        if len(labels) == 1 and self.dstate.is_main:
            names = self.info.class_names
            only = repr(names[labels.pop()]) if names else "one label"
            _logger.warning(
                "the training split of %s has a single class (%s): every prediction is that class, so accuracy "
                "is 100%% whatever the model learns. Add the other classes' images",
                self.dataset_name,
                only,
            )

    def prepare_eval_data(self, model: nn.Module, source: EvalSource):
        """Labels are the model's classes (its recorded ``label_names``); data classes it does not know are an
        error. A model without names takes the data's classes in their own order, with a warning."""
        self.cfg = self.data_config(model)
        data = source.source()
        known = recorded_label_names(model, source)
        stream = source.stream()
        if stream is not None:  # its first max_samples rows
            self.val_base, self.info = held_out_images(
                stream,
                source.image_key,
                source.label_key,
                known,
                source.max_samples,
                getattr(model, "num_classes", None),
            )
            warn_if_cut(len(self.val_base), source)
        else:
            grey = self.cfg["input_size"][0] == 1
            self.val_base, self.info = data.open(source.split, known, source.bad_files, source.image_key,
                                                 source.label_key, grey)  # fmt: skip
        num_classes = getattr(model, "num_classes", None)
        if num_classes is not None and num_classes < self.info.num_classes:
            raise DataError(
                f"the model has {num_classes} classes but {source.data} has {self.info.num_classes}: evaluate it "
                "on data of the classes it was trained on"
            )
        if known is None and self.info.class_names:
            names = self.info.class_names
            _logger.warning(
                "%s records no class names (label_names): the %d classes of %s are taken as its classes 0..%d in "
                "sorted order (%s%s); the metrics mean nothing unless it was trained in that order. Evaluate the "
                "run folder or exported folder, which records them",
                source.model_name or "the model",
                len(names),
                source.data,
                len(names) - 1,
                ", ".join(names[:5]),
                ", ..." if len(names) > 5 else "",
            )
        self.topk = min(5, num_classes or 5)
        self.val_set = SeededTransformDataset(self.val_base, self._eval_transform(), 0, uses_numpy=False)
        self.dataset_name, self.split = self.info.name, _split_read(data, source.split)

    def build_model(self) -> nn.Module:
        kwargs = dict(self.recipe.model_kwargs)
        kwargs.setdefault("num_classes", self.info.num_classes)
        model = self._create_model(kwargs)
        if getattr(model, "num_classes", self.info.num_classes) != self.info.num_classes:
            raise RecipeError(
                f"the model has {model.num_classes} classes but {self.dataset_name} has "
                f"{self.info.num_classes}; drop num_classes from model_kwargs"
            )
        self._setup_transforms(model)
        return model

    @classmethod
    def complete_model_kwargs(cls, kwargs: dict[str, Any], run_dir: Path, weights: str | None) -> dict[str, Any]:
        """``num_classes`` from the run's metrics.json, else from the last 2-D weight (the head) of ``weights``."""
        kwargs = super().complete_model_kwargs(kwargs, run_dir, weights)
        if "num_classes" in kwargs:
            return kwargs
        metrics = run_dir / METRICS
        n = json.loads(metrics.read_text()).get("num_classes") if metrics.is_file() else None
        if not n and weights:
            heads = [v for k, v in read_state_dict(weights).items() if k.endswith("weight") and v.ndim == 2]
            n = int(heads[-1].shape[0]) if heads else None
        return {**kwargs, "num_classes": n} if n else kwargs

    def data_config(self, model: nn.Module) -> dict[str, Any]:
        """timm's data config: the recipe's preprocessing where it sets one, else the model's pretrained cfg."""
        d = self.recipe.data
        args = {}
        if d.image_size:
            args["input_size"] = (self._channels(), d.image_size, d.image_size)
        for key in ("crop_pct", "interpolation", "mean", "std"):
            if getattr(d, key) is not None:
                args[key] = tuple(getattr(d, key)) if key in ("mean", "std") else getattr(d, key)
        cfg = resolve_data_config(args, model=model)
        c = self._channels()
        if cfg["input_size"][0] != c:  # a model of in_chans channels (model_kwargs): its images have as many
            cfg["input_size"] = (c, *cfg["input_size"][1:])
        src = self.source
        for key in ("mean", "std"):
            if len(cfg[key]) != c:  # the data's constants where they are known (MNIST's), else the model's averaged
                known = getattr(src, key, None) if src is not None else None
                cfg[key] = tuple(known) if known and len(known) == c else (sum(cfg[key]) / len(cfg[key]),) * c
        return cfg

    def _channels(self) -> int:
        """The channels of the model's images: ``model_kwargs.in_chans`` (a grey synthetic set sets it), else 3."""
        return int(self.recipe.model_kwargs.get("in_chans", 3))

    def _eval_transform(self):
        cfg = self.cfg
        return create_transform(
            cfg["input_size"],
            is_training=False,
            interpolation=cfg["interpolation"],
            mean=cfg["mean"],
            std=cfg["std"],
            crop_pct=cfg["crop_pct"],
            crop_mode=cfg.get("crop_mode"),
        )

    def _setup_transforms(self, model: nn.Module):
        a = self.recipe.aug
        self.cfg = cfg = self.data_config(model)
        train_tf = create_transform(
            cfg["input_size"],
            is_training=True,
            scale=tuple(a.scale) if a.scale else None,
            ratio=tuple(a.ratio) if a.ratio else None,
            hflip=a.hflip,
            vflip=a.vflip,
            color_jitter=a.color_jitter,
            auto_augment=a.auto_augment,
            interpolation=a.train_interpolation,
            mean=cfg["mean"],
            std=cfg["std"],
            re_prob=a.re_prob,
            re_mode=a.re_mode,
            re_count=a.re_count,
        )
        if getattr(self, "synthetic", None) is not None:  # tensors: DSA (aug.dsa) or nothing, not PIL transforms
            train_tf = DSA(a.dsa).single if a.dsa else None
        if getattr(self, "stream", None) is not None:
            st, d = self.stream, self.recipe.data
            seeded = SeededTransform(train_tf, self.recipe.seed, uses_numpy=bool(a.auto_augment))
            batches = ImageBatches(st.image_key, st.label_key, st.label_map, seeded, d.bad_files)
            self.train_set = SampleStream(st.train, _same_rows, batches, st.num_samples, self.recipe.seed,
                                          d.shuffle_buffer)  # fmt: skip
        else:
            self.train_set = SeededTransformDataset(
                self.train_base, train_tf, self.recipe.seed, uses_numpy=bool(a.auto_augment)
            )
        self.val_set = SeededTransformDataset(self.val_base, self._eval_transform(), 0, uses_numpy=False)
        self._record_preprocessing(model)

    def _record_preprocessing(self, model: nn.Module):
        """The trained model's preprocessing travels with it (export, eval.py)."""
        cfg = self.cfg
        pc = dict(getattr(model, "pretrained_cfg", None) or {})
        pc.update(
            input_size=tuple(cfg["input_size"]),
            crop_pct=cfg["crop_pct"],
            interpolation=cfg["interpolation"],
            mean=tuple(cfg["mean"]),
            std=tuple(cfg["std"]),
            num_classes=self.info.num_classes,
        )
        if self.info.class_names:
            pc["label_names"] = list(self.info.class_names)
        for k in ("hf_hub_id", "url", "file", "tag"):
            pc.pop(k, None)
        model.pretrained_cfg = pc
        if hasattr(model, "default_cfg"):
            model.default_cfg = pc

    def build_mixup(self):
        a = self.recipe.aug
        if a.mixup > 0 or a.cutmix > 0:
            return Mixup(
                mixup_alpha=a.mixup,
                cutmix_alpha=a.cutmix,
                prob=a.mixup_prob,
                switch_prob=a.mixup_switch_prob,
                mode=a.mixup_mode,
                label_smoothing=a.label_smoothing,
                num_classes=self.info.num_classes,
            )
        return None

    def build_loss(self, mixup) -> Callable:
        if mixup is not None:
            return SoftTargetCrossEntropy()
        if self.recipe.aug.label_smoothing > 0:
            return LabelSmoothingCrossEntropy(self.recipe.aug.label_smoothing)
        return nn.CrossEntropyLoss()

    def prepare_batch(self, batch, device, channels_last: bool):
        x, y = batch
        x = x.to(device, non_blocking=True)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, y.to(device, non_blocking=True)

    def model_inputs(self, batch) -> torch.Tensor:
        return batch[0]

    def forward_loss(self, model, batch, loss_fn, mixup=None, distill=None, index=None, weights=None):
        """(loss, images); with a distiller, its teacher sees the same (mixed) images as the student. With
        per-sample ``weights`` (data pruning): (mean of weight x each image's loss, images, the images' losses
        unweighted and detached), the loss of each image being what ``loss_fn`` averages (mixed targets, label
        smoothing, the distillation mix)."""
        x, y = batch
        if mixup is not None:
            x, y = mixup(x, y)
        out = model(x)
        if weights is not None:
            per_sample = functools.partial(per_sample_loss, loss_fn)
            if distill is not None:
                losses = distill.classification_loss(out, x, y, per_sample, index, reduction="none")
            else:
                losses = per_sample(output_logits(out), y)
            return mean_weighted(losses, weights), x.shape[0], losses.detach()
        if distill is not None:
            return distill.classification_loss(out, x, y, loss_fn, index), x.shape[0]
        return loss_fn(out, y), x.shape[0]

    def eval_sums(self, model, batches, amp_ctx, max_batches: int | None) -> torch.Tensor:
        return classification_sums(model, batches, self.topk, amp_ctx, max_batches)

    def eval_metrics(self, sums: torch.Tensor) -> dict[str, float]:
        return classification_metrics(sums)

    def eval_description(self) -> dict[str, Any]:
        cfg = self.cfg
        return {
            **super().eval_description(),
            "input_size": list(cfg["input_size"]),
            "crop_pct": cfg["crop_pct"],
            "interpolation": cfg["interpolation"],
        }

    def export_kwargs(self) -> dict[str, Any]:
        base = self.arch_kwargs if self.recipe.init_from else self.recipe.model_kwargs
        kwargs = {**base, "num_classes": base.get("num_classes", self.info.num_classes)}
        kwargs.pop("drop_path_rate", None)
        return kwargs

    def run_metrics(self) -> dict[str, Any]:
        metrics = {"num_classes": self.info.num_classes}
        if self.info.class_names:
            metrics["label_names"] = list(self.info.class_names)  # travel with the weights (export_run, Hub)
        return metrics

    def profile(self, model: nn.Module) -> dict[str, Any]:
        return profile_classifier(model, tuple(self.cfg["input_size"]))


def _split_read(source: DataSource, split: str) -> str:
    """The split ``source`` reads for ``split`` (a benchmark set's ``validation`` is its ``test``)."""
    name, _ = parse_split(split)
    if source.benchmark is not None and name in ("validation", "val", "valid"):
        return "test" + split.strip()[len(name) :]
    return split


def recorded_label_names(model: nn.Module, source: EvalSource) -> list[str] | None:
    """The class names a model was trained with: its pretrained cfg's (an exported or Hub folder), its run's
    ``metrics.json``, or the ``config.json`` beside its weights; None when nothing records them."""

    def read(path: Path) -> dict[str, Any]:
        return json.loads(path.read_text()) if path.is_file() else {}

    names = (getattr(model, "pretrained_cfg", None) or {}).get("label_names")
    if not names and source.run_dir is not None:
        names = read(source.run_dir / METRICS).get("label_names")
    if not names and source.weights:
        p = Path(source.weights)
        names = (read((p if p.is_dir() else p.parent) / "config.json").get("pretrained_cfg") or {}).get("label_names")
    return [str(n) for n in names] if names else None
