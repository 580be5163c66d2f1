"""What differs between image classification and language modelling, behind one interface (:class:`Task`).

The loop (:mod:`zoo.train.loop`) and ``eval.py`` (:mod:`zoo.evaluate`) drive either task the same way and never
ask which one it is:

* data: ``prepare_data()`` (a training run's splits) or ``prepare_eval_data(model, source)`` (held-out data named
  by :class:`EvalSource`, eval.py's arguments); ``train_set``, ``set_epoch``, ``total_steps``;
* the model: ``build_model()`` with the arguments the data decides (``num_classes``, ``vocab_size``), and
  ``complete_model_kwargs(kwargs, run_dir, weights)`` to rebuild a finished run's model;
* a step: ``build_mixup()``, ``build_loss(mixup)``, ``prepare_batch``, ``forward_loss`` (with a
  :class:`~zoo.train.distill.Distiller`, the distillation loss too), ``model_inputs`` (what the model is fed);
* evaluation: ``evaluate(model, ...)`` and ``eval_description()`` (dataset, split, preprocessing);
* the run's outputs: ``run_metrics()``, ``extra_files()`` (the tokenizer), ``export_kwargs()``, ``profile(model)``.
"""

import contextlib
import functools
import json
import logging
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from timm.data import Mixup, create_transform, resolve_data_config
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..data import text
from ..data.dsa import DSA
from ..data.errors import DataError
from ..data.images import BAD_FILES, DatasetInfo
from ..data.sources import BENCHMARKS, DataSource, parse_split, resolve
from ..data.stream import (
    ImageBatches,
    SampleStream,
    StreamSource,
    TokenRows,
    held_out_images,
    image_stream,
    stack_rows,
    stream_documents,
    stream_name,
    text_stream,
)
from ..data.synthetic import SyntheticDataset, load_synthetic
from ..factory import create_model, resolve_source
from ..hub import download
from ..lm.quant import dequantize_model, model_quantization
from ..registry import UnknownModelError, get_entry
from ..weights import read_state_dict
from .config import Recipe, RecipeError, load_run_args
from .distill import output_logits
from .distributed import DistState, all_reduce_sum, barrier, shard_indices
from .metrics import (
    classification_metrics,
    classification_sums,
    lm_logits,
    lm_metrics,
    lm_sums,
    profile_classifier,
    profile_lm,
)
from .pruning import mean_weighted, per_sample_loss

__all__ = [
    "EvalSource",
    "ImageTask",
    "LMTask",
    "SeededTransformDataset",
    "TASKS",
    "Task",
    "build_task",
    "recorded_label_names",
    "task_class",
    "task_of_model",
]

_logger = logging.getLogger(__name__)


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + index * 104_729) % (2**31)


class SeededTransform:
    """A random transform run with RNGs seeded by (seed, epoch, index), leaving the global RNGs as they were.

    Augmentations then depend only on the sample and epoch, not on which process or worker loads it or where a
    resumed run restarts, which is what makes resumed and many-process runs repeat exactly.
    """

    def __init__(self, transform: Callable, seed: int, uses_numpy: bool = True):
        self.transform, self.seed = transform, seed
        self.uses_numpy = uses_numpy  # numpy's RNG is slow to save and restore: only when the transform draws from it

    def __call__(self, img, epoch: int, index: int):
        s = _sample_seed(self.seed, epoch, int(index))
        py_state, torch_state = random.getstate(), torch.default_generator.get_state()
        np_state = np.random.get_state() if self.uses_numpy else None
        try:
            random.seed(s)
            torch.default_generator.manual_seed(s)
            if self.uses_numpy:
                np.random.seed(s)
            return self.transform(img)
        finally:
            random.setstate(py_state)
            torch.default_generator.set_state(torch_state)
            if np_state is not None:
                np.random.set_state(np_state)


def _warn_if_cut(count: int, source: "EvalSource") -> None:
    if count >= source.max_samples:
        _logger.warning(
            "%s is a stream: evaluating its first %d samples (raise --max-samples for more)", source.data, count
        )


def _same_rows(rows):
    """A stream's units for images: its rows as they are."""
    return rows


class SeededTransformDataset(Dataset):
    """A map-style dataset with a :class:`SeededTransform` (sample ``i`` of epoch ``epoch``)."""

    def __init__(self, base: Dataset, transform: Callable | None, seed: int, uses_numpy: bool = True):
        self.base, self.epoch = base, 0
        self.transform = SeededTransform(transform, seed, uses_numpy) if transform is not None else None

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        img, label = self.base[i]
        if self.transform is None:
            return img, label
        return self.transform(img, self.epoch, i), label


@dataclass
class EvalSource:
    """Held-out data named outside a recipe (eval.py's arguments), and where a finished run keeps its files."""

    data: str  # what was asked for: digits | pydoc | mnist | KIND:PATH | a path
    kind: str  # its kind (zoo.data.sources.resolve): digits | pydoc | mnist | ... | image_folder | wds | hf_disk | text
    split: str = "validation"
    image_key: str | None = None  # hf_disk columns
    label_key: str | None = None
    text_key: str | None = None
    seq_len: int | None = None  # language models; None: the run's, else 256
    tokenizer: str | None = None  # tokenizer.json or a folder holding one
    run_dir: Path | None = None  # the training run the weights come from (its recipe is the task's)
    weights: str | None = None  # the weights file or folder (a tokenizer may lie beside it)
    model_name: str = ""  # an hf-hub: name brings its tokenizer from the Hub
    bad_files: str = "error"  # an image that does not decode: error (stop, naming it) | skip
    max_samples: int = 10_000  # a stream (hf_stream, wds by URL or pattern): its first samples (text: documents)
    path: str | None = None  # where the data lies (None: bundled data, a benchmark set in the cache, or ``data``)

    def source(self) -> DataSource:
        """The :class:`~zoo.data.sources.DataSource` of ``kind`` at ``path`` (else the path ``data`` names)."""
        if self.path is not None or self.kind in ("digits", "pydoc", *BENCHMARKS):
            return DataSource(self.kind, self.path)
        return DataSource(self.kind, resolve(self.data).path)

    def stream(self) -> StreamSource | None:
        """The held-out stream ``data`` names (``hf_stream:NAME_OR_PATH``, or shards by URL or pattern), or None."""
        src = self.source()
        if src.kind == "hf_stream":
            return StreamSource("hf_stream", src.path, self.split)
        return StreamSource("wds", src.path) if src.stream else None


class Task:
    """What differs between tasks, so that the loop, evaluation and export do not branch on the task."""

    name: str
    throughput_unit: str = "samples/s"
    evaluates_each_epoch: bool = False  # a held-out evaluation at every epoch's end (else: every N steps)
    supports_channels_last: bool = False
    data_kinds: tuple[str, ...] = ()  # data.name values (and eval.py data kinds) the task reads
    data_hint: str = ""  # what to evaluate the task's models on, for error messages

    def __init__(self, recipe: Recipe, dstate: DistState, run_dir: Path):
        self.recipe, self.dstate, self.run_dir = recipe, dstate, run_dir
        self.train_set: Dataset = None
        self.val_set: Dataset = None
        self.dataset_name = recipe.data.name
        self.split = recipe.data.val_split
        self.arch_kwargs: dict[str, Any] = dict(recipe.model_kwargs)  # what the model was built with
        self._init_args: dict[str, Any] | None = None  # init_from's recorded architecture (read once)
        self._init_config: dict[str, Any] = {}

    # -- data ---------------------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """The training run's splits (``train_set``; ``val_set`` may wait for the model's preprocessing)."""
        raise NotImplementedError

    def prepare_eval_data(self, model: nn.Module, source: EvalSource) -> None:
        """``val_set`` from ``source``, preprocessed as ``model`` (or the run that trained it) expects."""
        raise NotImplementedError

    def set_epoch(self, epoch: int):
        if isinstance(self.train_set, SeededTransformDataset):
            self.train_set.epoch = epoch

    def total_steps(self, steps_per_epoch: int) -> int:
        return self.recipe.train.steps

    def _require_one_batch(self, n: int, what: str, hint: str = "") -> None:
        """DataError unless the training split fills one batch (else a run would take no step)."""
        batch = self.recipe.train.batch_size
        if n < batch:
            raise DataError(
                f"the training split of {self.dataset_name} has {n} {what}, fewer than one batch of "
                f"{batch}: lower train.batch_size to {max(n, 1)} or less{hint}, or add data"
            )

    # -- the model ------------------------------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        raise NotImplementedError

    @classmethod
    def complete_model_kwargs(cls, kwargs: dict[str, Any], run_dir: Path, weights: str | None) -> dict[str, Any]:
        """``kwargs`` with the arguments a finished run's data decided (read from the run folder) filled in."""
        return {**_init_from_args(run_dir), **kwargs}

    def init_from_args(self) -> dict[str, Any]:
        """The architecture arguments ``init_from``'s folder (or Hub repo) records in its config.json, checked to be
        the recipe's architecture."""
        r = self.recipe
        if self._init_args is None:
            source = resolve_source(r.init_from)
            if source.name != r.model:
                raise RecipeError(
                    f"init_from {r.init_from} holds a {source.name} model and the recipe trains {r.model}: set "
                    f"model: {source.name} (the folder decides the architecture)"
                )
            self._init_config = dict(source.config or {})
            self._init_args = dict(self._init_config.get("model_args") or {})
        return self._init_args

    def _create_model(self, kwargs: dict[str, Any]) -> nn.Module:
        r = self.recipe
        if r.train.drop_path is not None:
            kwargs["drop_path_rate"] = r.train.drop_path
        if not r.init_from:
            self.arch_kwargs = dict(kwargs)
            return create_model(r.model, pretrained=r.pretrained, checkpoint_path=r.init_checkpoint, **kwargs)
        # init_from: the folder's architecture and weights; the recipe adds training options (drop rates) and what
        # its data decides (a new number of classes gets a fresh classifier, as any pretrained start)
        recorded = self.init_from_args()
        passed = {}
        for key, value in kwargs.items():
            if key not in recorded or key == "num_classes":
                passed[key] = value
            elif _plain(recorded[key]) != _plain(value):
                fix = (
                    "train with the folder's tokenizer (data.tokenizer)"
                    if key == "vocab_size" and key not in r.model_kwargs
                    else f"drop {key} from model_kwargs"
                )
                where = "model_kwargs" if key in r.model_kwargs else "the data's"
                raise RecipeError(
                    f"{key}={value!r} ({where}) differs from {recorded[key]!r}, which init_from {r.init_from} "
                    f"records: the folder decides the architecture; {fix}"
                )
        self.arch_kwargs = {**recorded, **passed}
        model = create_model(r.init_from, pretrained=True, checkpoint_path=r.init_checkpoint, **passed)
        return _dequantized(model, f"init_from {r.init_from}")

    # -- evaluation -----------------------------------------------------------------------------------------------
    def eval_loader(self, batch_size: int, progress: bool = False):
        idx = shard_indices(len(self.val_set), self.dstate)
        g = torch.Generator()
        g.manual_seed(0)
        loader = DataLoader(
            torch.utils.data.Subset(self.val_set, idx),
            batch_size=batch_size,
            shuffle=False,
            num_workers=self.recipe.data.num_workers,
            generator=g,
        )
        return tqdm(loader, desc="eval", leave=False, file=sys.stderr) if progress else loader

    def evaluate(
        self,
        model: nn.Module,
        batch_size: int,
        device,
        amp_ctx=contextlib.nullcontext,
        channels_last: bool = False,
        max_batches: int | None = None,
        progress: bool = False,
    ) -> dict[str, float]:
        """Held-out metrics of ``model`` on ``val_set`` (summed over processes)."""
        channels_last = channels_last and self.supports_channels_last
        batches = (self.prepare_batch(b, device, channels_last) for b in self.eval_loader(batch_size, progress))
        sums = self.eval_sums(model, batches, amp_ctx, max_batches)
        return self.eval_metrics(all_reduce_sum(sums.to(device), self.dstate).cpu())

    def eval_sums(self, model: nn.Module, batches, amp_ctx, max_batches: int | None) -> torch.Tensor:
        """The task's metric sums over ``batches`` (a tensor, summed over processes by :meth:`evaluate`)."""
        raise NotImplementedError

    def eval_metrics(self, sums: torch.Tensor) -> dict[str, float]:
        """The metrics of the summed :meth:`eval_sums`."""
        raise NotImplementedError

    def eval_description(self) -> dict[str, Any]:
        """What was evaluated: the dataset and split, then the task's preprocessing (input size, seq_len)."""
        return {"dataset": self.dataset_name, "split": self.split}

    # -- what the run writes --------------------------------------------------------------------------------------
    def export_kwargs(self) -> dict[str, Any]:
        """The model arguments the publishable folder records (rebuilding the trained architecture)."""
        return dict(self.recipe.model_kwargs)

    def run_metrics(self) -> dict[str, Any]:
        """What metrics.json records about the data, beside the held-out results."""
        return {}

    def extra_files(self) -> dict[str, str]:
        """Files of the run beside the weights (e.g. the tokenizer), by name."""
        return {}

    def profile(self, model: nn.Module) -> dict[str, Any]:
        """Params and MACs of the trained model for metrics.json and eval.py."""
        raise NotImplementedError


class ImageTask(Task):
    name = "image-classification"
    throughput_unit = "img/s"
    evaluates_each_epoch = True
    supports_channels_last = True
    data_kinds = ("digits", *BENCHMARKS, "image_folder", "hf_disk", "wds", "hf_stream")
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
        self.source = real = DataSource(src["kind"], src.get("path"))
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
            _warn_if_cut(len(self.val_base), source)
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
        metrics = run_dir / "metrics.json"
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


def _dequantized(model: nn.Module, where: str) -> nn.Module:
    """A model loaded from quantized weights, made trainable (:func:`~zoo.lm.quant.dequantize_model`: frozen
    codes would not train, and the run writes float weights with no quantization record). Said in the log; float
    models pass unchanged."""
    spec = model_quantization(model)
    if spec is None:
        return model
    dequantize_model(model)
    _logger.warning(
        "%s holds %s weights: training their float32 dequantization (the run's weights are float; quantize the "
        "result again, e.g. zoo.create_model(RUN_DIR/export, quantize=%r))",
        where,
        spec.describe(),
        spec.short,
    )
    return model


def _plain(value: Any) -> Any:
    """Lists and tuples alike, for comparing recorded arguments with a recipe's."""
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def _init_from_args(run_dir: Path) -> dict[str, Any]:
    """The architecture arguments a run started with ``init_from`` recorded (``args.yaml``'s resolved
    ``model_args``); {} for other runs."""
    try:
        recipe, resolved = load_run_args(run_dir)
    except RecipeError:
        return {}
    args = resolved.get("model_args") if recipe.init_from else None
    return dict(args) if isinstance(args, dict) else {}


def local_tokenizer(source: str | None) -> Path | None:
    """``tokenizer.json`` of a local model folder or run folder (or its ``export/``); None elsewhere."""
    if not source or source.startswith("hf-hub:"):
        return None
    folder = Path(source[len("local-dir:") :] if source.startswith("local-dir:") else source)
    for cand in (folder / "tokenizer.json", folder / "export" / "tokenizer.json"):
        if cand.is_file():
            return cand
    return None


def recorded_label_names(model: nn.Module, source: EvalSource) -> list[str] | None:
    """The class names a model was trained with: its pretrained cfg's (an exported or Hub folder), its run's
    ``metrics.json``, or the ``config.json`` beside its weights; None when nothing records them."""

    def read(path: Path) -> dict[str, Any]:
        return json.loads(path.read_text()) if path.is_file() else {}

    names = (getattr(model, "pretrained_cfg", None) or {}).get("label_names")
    if not names and source.run_dir is not None:
        names = read(source.run_dir / "metrics.json").get("label_names")
    if not names and source.weights:
        p = Path(source.weights)
        names = (read((p if p.is_dir() else p.parent) / "config.json").get("pretrained_cfg") or {}).get("label_names")
    return [str(n) for n in names] if names else None


class _Rows(Dataset):
    def __init__(self, rows: torch.Tensor):
        self.rows = rows

    def __len__(self):
        return self.rows.shape[0]

    def __getitem__(self, i):
        return self.rows[i]


def find_tokenizer(source: EvalSource):
    """The tokenizer of a model under evaluation: the one named, the run's, the one beside the weights, or the
    Hub repo's (``hf-hub:`` names)."""
    cands = [source.tokenizer] if source.tokenizer else []
    if source.run_dir is not None:
        cands.append(str(source.run_dir / "tokenizer.json"))
    if source.weights:
        p = Path(source.weights)
        cands.append(str((p if p.is_dir() else p.parent) / "tokenizer.json"))
    for c in cands:
        if Path(c).exists():
            return text.load_tokenizer(c), Path(c)
    if source.model_name.startswith("hf-hub:"):
        path = download(source.model_name[len("hf-hub:") :], "tokenizer.json")
        return text.load_tokenizer(path), Path(path)
    raise FileNotFoundError("no tokenizer found: pass --tokenizer PATH (tokenizer.json or a folder holding one)")


class LMTask(Task):
    name = "text-generation"
    throughput_unit = "tok/s"
    data_kinds = ("pydoc", "text", "hf_disk", "hf_stream", "wds")
    tokenizer_docs = 10_000  # a stream's first documents train the tokenizer when the run brings none
    data_hint = "a language model; evaluate it on text (--data pydoc or a text path)"

    def __init__(self, recipe: Recipe, dstate: DistState, run_dir: Path):
        super().__init__(recipe, dstate, run_dir)
        self.seq_len = recipe.data.seq_len
        self.unigram_perplexity: float | None = None
        self.model_kwargs = dict(recipe.model_kwargs)
        self.inherited_from: str | None = None  # "init_from X" / "distill.teacher X": whose tokenizer the run took

    def _documents(self) -> tuple[list[str], list[str]]:
        """(training, held-out) documents: a datasets folder's own splits, else a fixed hash split."""
        d = self.recipe.data
        if resolve(d.name, d.path).stream:
            self.stream_source, self.text_key, head, held_out = text_stream(d, self.tokenizer_docs)
            return head, held_out
        if d.name == "hf_disk":
            try:
                return (
                    text.load_text_documents("hf_disk", d.path, d.train_split, d.text_key),
                    text.load_text_documents("hf_disk", d.path, d.val_split, d.text_key),
                )
            except ValueError:
                pass
        docs = text.load_text_documents(d.name, d.path, d.train_split, d.text_key)
        return text.split_documents(docs, d.val_fraction)

    def _tokenizer_file(self, train_docs: list[str]) -> tuple[Path, bool]:
        """RUN_DIR/tokenizer.json: the recipe's tokenizer copied, or one trained on the training documents; and
        whether this process wrote it."""
        d = self.recipe.data
        tok_path = self.run_dir / "tokenizer.json"
        written = False  # a new file in the run folder
        if self.dstate.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            inherited = None if d.tokenizer else self._inherited_tokenizer()
            if d.tokenizer or inherited:
                src = Path(d.tokenizer or inherited)
                src = src / "tokenizer.json" if src.is_dir() else src
                if not src.is_file():
                    raise RecipeError(f"data.tokenizer {d.tokenizer} is neither tokenizer.json nor a folder with one")
                try:  # read before it is copied: the run folder never holds a tokenizer that does not load
                    text.load_tokenizer(src)
                except DataError as e:
                    what = "data.tokenizer" if d.tokenizer else f"the tokenizer of {self.inherited_from}"
                    raise DataError(f"{what}: {e}") from None
                if src.resolve() != tok_path.resolve():
                    written = not tok_path.is_file()
                    text.write_atomic(tok_path, src.read_bytes())
            elif not tok_path.is_file():  # a resumed run keeps the tokenizer it trained
                _logger.info("training a %d-token BPE tokenizer on %d documents", d.vocab_size, len(train_docs))
                text.train_bpe_tokenizer(train_docs, d.vocab_size, tok_path)
                written = True
        barrier(self.dstate)
        return tok_path, written

    def _inherited_tokenizer(self) -> Path | None:
        """The tokenizer a run without ``data.tokenizer`` takes from ``init_from`` (a folder, or an ``hf-hub:``
        repo), else from a teacher folder or repo (token ids must mean the same to both models); None where neither
        holds one."""
        r = self.recipe
        for what, source in (("init_from", r.init_from), ("distill.teacher", r.distill.teacher if r.distill else None)):
            found = local_tokenizer(source)
            if found is None and source and source.startswith("hf-hub:"):
                found = Path(download(source[len("hf-hub:") :], "tokenizer.json"))
            if found is not None:
                _logger.info("data.tokenizer unset: using %s, the tokenizer of %s %s", found, what, source)
                self.inherited_from = f"{what} {source}"
                return found
        return None

    def _check_context(self) -> None:
        """Sequences longer than the model's context are a recipe error, found before a tokenizer is trained (the
        architecture is built on the meta device: no memory, no time)."""
        if self.recipe.init_from:  # the folder's architecture
            args = self.init_from_args()
            context = self._init_config.get("max_position_embeddings", args.get("max_position_embeddings"))
            if context is not None and self.seq_len > context:
                raise RecipeError(
                    f"data.seq_len {self.seq_len} is longer than the context of init_from {self.recipe.init_from} "
                    f"({context} tokens); lower data.seq_len"
                )
            return
        kwargs = {"vocab_size": 256, **self.recipe.model_kwargs}
        try:
            with torch.device("meta"):
                config = getattr(create_model(self.recipe.model, **kwargs), "config", None)
        except (UnknownModelError, TypeError, ValueError):
            return  # not an architecture that can be built from these arguments: build_model says why
        context = getattr(config, "max_position_embeddings", None)
        if context is not None and self.seq_len > context:
            raise RecipeError(
                f"data.seq_len {self.seq_len} is longer than {self.recipe.model}'s context of {context} tokens; "
                "lower data.seq_len or raise model_kwargs.max_position_embeddings"
            )

    def prepare_data(self):
        d = self.recipe.data
        if d.name not in self.data_kinds:
            raise RecipeError(f"data.name {d.name!r} is not a text dataset: use pydoc, text, hf_disk, hf_stream or wds")
        if resolve(d.name, d.path).stream and not d.train_samples:
            raise RecipeError(
                f"data.name {d.name} streams text of unknown length: set data.train_samples, the rows of "
                f"{d.seq_len} tokens an epoch reads"
            )
        self._check_context()
        train_docs, val_docs = self._documents()
        self.dataset_name = "pydoc_data.topics" if d.name == "pydoc" else Path(d.path).name
        if getattr(self, "stream_source", None) is not None:
            self.dataset_name = stream_name(self.stream_source)
        self.tokenizer_file, written = self._tokenizer_file(train_docs)
        try:
            self._tokenize(train_docs, val_docs)
        except DataError:
            if written:  # too little text to train on: the run folder stays as it was
                self.tokenizer_file.unlink(missing_ok=True)
            raise

    def _tokenize(self, train_docs: list[str], val_docs: list[str]):
        d = self.recipe.data
        try:
            self.tokenizer = text.load_tokenizer(self.tokenizer_file)
        except DataError as e:  # the run's own copy, damaged since it was written (a resumed run reads it)
            raise DataError(
                f"{e}. It is this run's tokenizer: put back the run's copy (export/tokenizer.json, when the run "
                "exported), or start anew with --overwrite"
            ) from None
        self.vocab_size = self.tokenizer.get_vocab_size()
        self.pad_id = text.special_token_ids(self.tokenizer).get("pad_token_id")
        train_ids = text.encode_documents(self.tokenizer, train_docs)
        val_ids = text.encode_documents(self.tokenizer, val_docs)
        if getattr(self, "stream_source", None) is not None:  # train_docs: the stream's first documents
            rows = TokenRows(self.tokenizer_file, self.text_key, d.seq_len)
            self.train_set = SampleStream(self.stream_source, rows, stack_rows, d.train_samples, self.recipe.seed,
                                          d.shuffle_buffer)  # fmt: skip
            n_train, n_train_tokens = d.train_samples, d.train_samples * d.seq_len
        else:
            self.train_set = _Rows(text.pack_tokens(train_ids, d.seq_len))
            n_train, n_train_tokens = len(self.train_set), int(train_ids.numel())
        self.val_set = _Rows(text.pack_tokens(val_ids, d.seq_len))
        self._require_one_batch(n_train, f"rows of {d.seq_len} tokens", " (or data.seq_len)")
        self.unigram_perplexity = text.unigram_perplexity(
            train_ids, self.val_set.rows[:, 1:].reshape(-1), self.vocab_size
        )
        self.token_counts = {
            "train_tokens": n_train_tokens,
            "val_tokens": int(self.val_set.rows[:, 1:].numel()),
        }

    def prepare_eval_data(self, model: nn.Module, source: EvalSource):
        """Rows of ``seq_len`` tokens; on the run's own data (or pydoc) the run's held-out (or training) part."""
        d = self.recipe.data
        self.seq_len = source.seq_len or d.seq_len
        stream = source.stream()
        if stream is not None:
            docs = stream_documents(stream, source.text_key, source.max_samples)
            _warn_if_cut(len(docs), source)
        elif source.kind == "hf_disk":
            docs = text.load_text_documents("hf_disk", source.data, source.split, source.text_key)
        else:
            docs = text.load_text_documents(source.kind, None if source.kind == "pydoc" else source.data)
            if source.run_dir is not None and (source.kind == "pydoc" or d.path == source.data):
                docs = text.split_documents(docs, d.val_fraction)[0 if source.split == "train" else 1]
        self.tokenizer, self.tokenizer_file = find_tokenizer(source)
        self.val_set = _Rows(text.pack_tokens(text.encode_documents(self.tokenizer, docs), self.seq_len))
        self.dataset_name = "pydoc_data.topics" if source.kind == "pydoc" else Path(source.data).name
        if stream is not None:
            self.dataset_name = stream_name(stream)
        self.split = source.split

    def build_model(self) -> nn.Module:
        kwargs = dict(self.recipe.model_kwargs)
        vs = kwargs.setdefault("vocab_size", self.vocab_size)
        if vs < self.vocab_size:
            raise RecipeError(f"model_kwargs.vocab_size {vs} is smaller than the tokenizer's {self.vocab_size}")
        for key, value in text.special_token_ids(self.tokenizer).items():  # the exported config declares them
            kwargs.setdefault(key, value)
        model = self._create_model(kwargs)
        self.model_kwargs = self.arch_kwargs
        return model

    @classmethod
    def complete_model_kwargs(cls, kwargs: dict[str, Any], run_dir: Path, weights: str | None) -> dict[str, Any]:
        """``vocab_size`` from the run's tokenizer."""
        kwargs = super().complete_model_kwargs(kwargs, run_dir, weights)
        tok = run_dir / "tokenizer.json"
        if "vocab_size" in kwargs or not tok.is_file():
            return kwargs
        return {**kwargs, "vocab_size": text.load_tokenizer(tok).get_vocab_size()}

    def build_mixup(self):
        return None

    def build_loss(self, mixup):
        return None

    def prepare_batch(self, batch, device, channels_last: bool):
        return batch.to(device, non_blocking=True)

    def model_inputs(self, batch) -> torch.Tensor:
        return batch[:, :-1]

    def forward_loss(self, model, batch, loss_fn=None, mixup=None, distill=None, index=None, weights=None):
        """(loss, target tokens); with a distiller, token-level distillation on every position that is not
        padding. With per-sample ``weights`` (data pruning; a sample is a row): (mean of weight x each row's mean
        token loss, target tokens, the rows' losses unweighted and detached)."""
        inputs, targets = batch[:, :-1], batch[:, 1:]
        logits = lm_logits(model(inputs))
        if weights is not None:
            per_token = F.cross_entropy(
                logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="none"
            )
            losses = per_token.reshape(targets.shape).mean(dim=1)
            if distill is not None:
                pad = getattr(self, "pad_id", None)
                mask = targets != pad if pad is not None else None
                losses = distill.lm_loss(logits, inputs, losses, mask, index, reduction="none")
            return mean_weighted(losses, weights), targets.numel(), losses.detach()
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
        if distill is not None:
            pad = getattr(self, "pad_id", None)
            mask = targets != pad if pad is not None else None
            loss = distill.lm_loss(logits, inputs, loss, mask, index)
        return loss, targets.numel()

    def eval_sums(self, model, batches, amp_ctx, max_batches: int | None) -> torch.Tensor:
        return lm_sums(model, batches, amp_ctx, max_batches)

    def eval_metrics(self, sums: torch.Tensor) -> dict[str, float]:
        metrics = lm_metrics(sums)
        if self.unigram_perplexity is not None:  # known when the task read the training text
            metrics["unigram_perplexity"] = self.unigram_perplexity
        return metrics

    def eval_description(self) -> dict[str, Any]:
        return {**super().eval_description(), "seq_len": self.seq_len}

    def export_kwargs(self) -> dict[str, Any]:
        return dict(self.model_kwargs)

    def run_metrics(self) -> dict[str, Any]:
        return {**self.token_counts, "vocab_size": self.vocab_size}

    def extra_files(self) -> dict[str, str]:
        return {"tokenizer": str(self.tokenizer_file)}

    def profile(self, model: nn.Module) -> dict[str, Any]:
        return profile_lm(model, self.seq_len)


TASKS: dict[str, type[Task]] = {ImageTask.name: ImageTask, LMTask.name: LMTask}


def task_class(name: str) -> type[Task]:
    """The :class:`Task` of a recipe's ``task:`` (or a registered model's task tag)."""
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}: one of {', '.join(TASKS)}") from None


def task_of_model(model: nn.Module, name: str) -> type[Task]:
    """The task of a model met outside a training run: its registered architecture's (an hf-hub model names the
    architecture in its pretrained cfg), else what its interface says."""
    if hasattr(model, "generate") and not hasattr(model, "forward_head"):
        return LMTask
    arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or name
    try:
        return task_class(get_entry(arch).task)
    except UnknownModelError:  # a model outside the registry: timm's image classifiers
        return ImageTask


def build_task(recipe: Recipe, dstate: DistState, run_dir: Path) -> Task:
    return task_class(recipe.task)(recipe, dstate, run_dir)
