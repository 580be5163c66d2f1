"""What differs between image classification and language modelling: data, model, loss, evaluation.

The loop in :mod:`zoo.train.loop` drives either task through the same small interface.
"""
import contextlib
import logging
import math
import random
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np
from fvcore.nn import FlopCountAnalysis
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data import text
from ..data.images import build_image_dataset
from ..factory import create_model
from ..profile import count_params, profile
from .config import Recipe, RecipeError
from .distributed import DistState, all_reduce_sum, barrier, shard_indices

__all__ = ["ImageTask", "LMTask", "SeededTransformDataset", "build_task", "classification_metrics",
           "classification_sums", "lm_logits", "lm_metrics", "lm_sums", "profile_classifier", "profile_lm"]

_logger = logging.getLogger(__name__)


def _sample_seed(seed: int, epoch: int, index: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919 + index * 104_729) % (2 ** 31)


class SeededTransformDataset(Dataset):
    """Applies a random transform with RNGs seeded by (seed, epoch, index), leaving the global RNGs as they were.

    Augmentations then depend only on the sample and epoch, not on which process or worker loads it or where a
    resumed run restarts, which is what makes resumed and many-process runs repeat exactly.
    """

    def __init__(self, base: Dataset, transform: Optional[Callable], seed: int, uses_numpy: bool = True):
        self.base, self.transform, self.seed, self.epoch = base, transform, seed, 0
        self.uses_numpy = uses_numpy  # numpy's RNG is slow to save and restore: only when the transform draws from it

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        img, label = self.base[i]
        if self.transform is None:
            return img, label
        s = _sample_seed(self.seed, self.epoch, int(i))
        py_state, torch_state = random.getstate(), torch.default_generator.get_state()
        np_state = np.random.get_state() if self.uses_numpy else None
        try:
            random.seed(s)
            torch.default_generator.manual_seed(s)
            if self.uses_numpy:
                np.random.seed(s)
            out = self.transform(img)
        finally:
            random.setstate(py_state)
            torch.default_generator.set_state(torch_state)
            if np_state is not None:
                np.random.set_state(np_state)
        return out, label


def lm_logits(out: Any) -> torch.Tensor:
    """Logits from a language model's output: a tensor, an object with ``.logits``, or a tuple (logits first)."""
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "logits"):
        return out.logits
    if isinstance(out, (tuple, list)):
        return out[0]
    if isinstance(out, dict) and "logits" in out:
        return out["logits"]
    raise TypeError(f"cannot find logits in a model output of type {type(out).__name__}")


@torch.no_grad()
def classification_sums(model: nn.Module, batches, k: int, amp_ctx=contextlib.nullcontext,
                        max_batches: Optional[int] = None) -> torch.Tensor:
    """(loss sum, top-1 hits, top-k hits, count) of ``model`` over ``(x, y)`` batches already on its device."""
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64)
    for i, (x, y) in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        with amp_ctx():
            logits = model(x)
        logits = logits.float()
        sums[0] += F.cross_entropy(logits, y, reduction="sum").item()
        top = logits.topk(k, dim=1).indices
        sums[1] += (top[:, 0] == y).sum().item()
        sums[2] += (top == y[:, None]).any(dim=1).sum().item()
        sums[3] += y.numel()
    return sums


def classification_metrics(sums: torch.Tensor) -> Dict[str, float]:
    n = max(sums[3].item(), 1)
    return {"top1": 100.0 * sums[1].item() / n, "top5": 100.0 * sums[2].item() / n, "loss": sums[0].item() / n,
            "samples": int(n)}


@torch.no_grad()
def lm_sums(model: nn.Module, batches, amp_ctx=contextlib.nullcontext,
            max_batches: Optional[int] = None) -> torch.Tensor:
    """(next-token NLL sum, token count) of ``model`` over rows of token ids already on its device."""
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64)
    for i, batch in enumerate(batches):
        if max_batches is not None and i >= max_batches:
            break
        with amp_ctx():
            logits = lm_logits(model(batch[:, :-1]))
        sums[0] += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1),
                                   reduction="sum").item()
        sums[1] += batch[:, 1:].numel()
    return sums


def lm_metrics(sums: torch.Tensor) -> Dict[str, float]:
    loss = sums[0].item() / max(sums[1].item(), 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": int(sums[1].item())}


def profile_classifier(model: nn.Module, input_size) -> Dict[str, Any]:
    p = profile(model, input_size=tuple(input_size))
    return {"params": p.params, "macs": p.macs, "macs_input": list(p.input_size)}


def profile_lm(model: nn.Module, seq_len: int) -> Dict[str, Any]:
    """fvcore on token ids (one sequence of ``seq_len``)."""
    ids = torch.zeros(1, seq_len, dtype=torch.long, device=next(model.parameters()).device)
    model.eval()
    analysis = FlopCountAnalysis(model, (ids,))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return {"params": count_params(model)["params"], "macs": int(analysis.total()), "macs_input": [1, seq_len]}


class _Task:
    """What differs between tasks, so that the loop, evaluation and export do not branch on the task."""
    name: str
    throughput_unit: str = "samples/s"
    evaluates_each_epoch: bool = False  # a held-out evaluation at every epoch's end (else: every N steps)
    supports_channels_last: bool = False

    def __init__(self, recipe: Recipe, dstate: DistState, run_dir: Path):
        self.recipe, self.dstate, self.run_dir = recipe, dstate, run_dir
        self.train_set: Dataset = None
        self.val_set: Dataset = None
        self.dataset_name = recipe.data.name

    def set_epoch(self, epoch: int):
        if isinstance(self.train_set, SeededTransformDataset):
            self.train_set.epoch = epoch

    def total_steps(self, steps_per_epoch: int) -> int:
        return self.recipe.train.steps

    def export_kwargs(self) -> Dict[str, Any]:
        """The model arguments the publishable folder records (rebuilding the trained architecture)."""
        return dict(getattr(self, "model_kwargs", self.recipe.model_kwargs))

    def run_metrics(self) -> Dict[str, Any]:
        """What metrics.json records about the data, beside the held-out results."""
        return {}

    def extra_files(self) -> Dict[str, str]:
        """Files of the run beside the weights (e.g. the tokenizer), by name."""
        return {}

    def profile(self, model: nn.Module) -> Dict[str, Any]:
        """Params and MACs of the trained model for metrics.json."""
        return profile_classifier(model, self.profile_input())

    def eval_loader(self, batch_size: int) -> DataLoader:
        idx = shard_indices(len(self.val_set), self.dstate)
        g = torch.Generator()
        g.manual_seed(0)
        return DataLoader(torch.utils.data.Subset(self.val_set, idx), batch_size=batch_size, shuffle=False,
                          num_workers=self.recipe.data.num_workers, generator=g)


class ImageTask(_Task):
    name = "image-classification"
    throughput_unit = "img/s"
    evaluates_each_epoch = True
    supports_channels_last = True

    def total_steps(self, steps_per_epoch: int) -> int:
        t = self.recipe.train
        return min(t.epochs * steps_per_epoch, t.steps) if t.steps else t.epochs * steps_per_epoch

    def export_kwargs(self) -> Dict[str, Any]:
        kwargs = {**self.recipe.model_kwargs, "num_classes": self.recipe.model_kwargs.get(
            "num_classes", self.info.num_classes)}
        kwargs.pop("drop_path_rate", None)
        return kwargs

    def run_metrics(self) -> Dict[str, Any]:
        metrics = {"num_classes": self.info.num_classes}
        if self.info.class_names:
            metrics["label_names"] = list(self.info.class_names)  # travel with the weights (export_run, Hub)
        return metrics

    def prepare_data(self):
        d = self.recipe.data
        if d.name not in ("digits", "image_folder", "hf_disk"):
            raise RecipeError(f"data.name {d.name!r} is not an image dataset: use digits, image_folder or hf_disk")
        self.train_base, self.info = build_image_dataset(d.name, d.train_split, d.path, d.image_key, d.label_key)
        self.val_base, _ = build_image_dataset(d.name, d.val_split, d.path, d.image_key, d.label_key)
        self.dataset_name = self.info.name

    def build_model(self) -> nn.Module:
        r = self.recipe
        kwargs = dict(r.model_kwargs)
        if r.train.drop_path is not None:
            kwargs["drop_path_rate"] = r.train.drop_path
        kwargs.setdefault("num_classes", self.info.num_classes)
        model = create_model(r.model, pretrained=r.pretrained, checkpoint_path=r.init_checkpoint, **kwargs)
        if getattr(model, "num_classes", self.info.num_classes) != self.info.num_classes:
            raise RecipeError(f"the model has {model.num_classes} classes but {self.dataset_name} has "
                              f"{self.info.num_classes}; drop num_classes from model_kwargs")
        self._setup_transforms(model)
        return model

    def data_config(self, model: nn.Module) -> Dict[str, Any]:
        from timm.data import resolve_data_config
        d = self.recipe.data
        args = {}
        if d.image_size:
            args["input_size"] = (3, d.image_size, d.image_size)
        for key in ("crop_pct", "interpolation", "mean", "std"):
            if getattr(d, key) is not None:
                args[key] = tuple(getattr(d, key)) if key in ("mean", "std") else getattr(d, key)
        return resolve_data_config(args, model=model)

    def _setup_transforms(self, model: nn.Module):
        from timm.data import create_transform
        a = self.recipe.aug
        cfg = self.data_config(model)
        self.cfg = cfg
        train_tf = create_transform(
            cfg["input_size"], is_training=True, scale=tuple(a.scale) if a.scale else None,
            ratio=tuple(a.ratio) if a.ratio else None, hflip=a.hflip, vflip=a.vflip, color_jitter=a.color_jitter,
            auto_augment=a.auto_augment, interpolation=a.train_interpolation, mean=cfg["mean"], std=cfg["std"],
            re_prob=a.re_prob, re_mode=a.re_mode, re_count=a.re_count)
        eval_tf = create_transform(cfg["input_size"], is_training=False, interpolation=cfg["interpolation"],
                                   mean=cfg["mean"], std=cfg["std"], crop_pct=cfg["crop_pct"],
                                   crop_mode=cfg.get("crop_mode"))
        self.train_set = SeededTransformDataset(self.train_base, train_tf, self.recipe.seed,
                                                uses_numpy=bool(a.auto_augment))
        self.val_set = SeededTransformDataset(self.val_base, eval_tf, 0, uses_numpy=False)
        # the trained model's preprocessing travels with it (export, eval.py)
        pc = dict(getattr(model, "pretrained_cfg", None) or {})
        pc.update(input_size=tuple(cfg["input_size"]), crop_pct=cfg["crop_pct"], interpolation=cfg["interpolation"],
                  mean=tuple(cfg["mean"]), std=tuple(cfg["std"]), num_classes=self.info.num_classes)
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
            from timm.data import Mixup
            return Mixup(mixup_alpha=a.mixup, cutmix_alpha=a.cutmix, prob=a.mixup_prob,
                         switch_prob=a.mixup_switch_prob, mode=a.mixup_mode, label_smoothing=a.label_smoothing,
                         num_classes=self.info.num_classes)
        return None

    def build_loss(self, mixup) -> Callable:
        from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
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

    def forward_loss(self, model, batch, loss_fn, mixup=None) -> Tuple[torch.Tensor, int]:
        x, y = batch
        if mixup is not None:
            x, y = mixup(x, y)
        return loss_fn(model(x), y), x.shape[0]

    def evaluate(self, model, batch_size: int, device, amp_ctx, channels_last: bool = False,
                 max_batches: Optional[int] = None) -> Dict[str, float]:
        batches = (self.prepare_batch(b, device, channels_last) for b in self.eval_loader(batch_size))
        # top-5 (top-k with k = classes when there are fewer)
        sums = classification_sums(model, batches, min(5, self.info.num_classes), amp_ctx, max_batches)
        return classification_metrics(all_reduce_sum(sums.to(device), self.dstate).cpu())

    def profile_input(self):
        return tuple(self.cfg["input_size"])


class _Rows(Dataset):
    def __init__(self, rows: torch.Tensor):
        self.rows = rows

    def __len__(self):
        return self.rows.shape[0]

    def __getitem__(self, i):
        return self.rows[i]


class LMTask(_Task):
    name = "text-generation"
    throughput_unit = "tok/s"

    def run_metrics(self) -> Dict[str, Any]:
        return {**self.token_counts, "vocab_size": self.vocab_size}

    def extra_files(self) -> Dict[str, str]:
        return {"tokenizer": str(self.tokenizer_file)}

    def profile(self, model: nn.Module) -> Dict[str, Any]:
        return profile_lm(model, self.recipe.data.seq_len)

    def prepare_data(self):
        d = self.recipe.data
        if d.name not in ("pydoc", "text", "hf_disk"):
            raise RecipeError(f"data.name {d.name!r} is not a text dataset: use pydoc, text or hf_disk")
        train_docs = val_docs = None
        if d.name == "hf_disk":
            try:
                train_docs = text.load_text_documents("hf_disk", d.path, d.train_split, d.text_key)
                val_docs = text.load_text_documents("hf_disk", d.path, d.val_split, d.text_key)
            except ValueError:
                train_docs = None
        if train_docs is None:
            docs = text.load_text_documents(d.name, d.path, d.train_split, d.text_key)
            train_docs, val_docs = text.split_documents(docs, d.val_fraction)
        self.dataset_name = "pydoc_data.topics" if d.name == "pydoc" else Path(d.path).name
        tok_path = self.run_dir / "tokenizer.json"
        if self.dstate.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if d.tokenizer:
                src = Path(d.tokenizer)
                src = src / "tokenizer.json" if src.is_dir() else src
                if not src.is_file():
                    raise RecipeError(f"data.tokenizer {d.tokenizer} is neither tokenizer.json nor a folder with one")
                if src.resolve() != tok_path.resolve():
                    shutil.copyfile(src, tok_path)
            elif not tok_path.is_file():  # a resumed run keeps the tokenizer it trained
                _logger.info("training a %d-token BPE tokenizer on %d documents", d.vocab_size, len(train_docs))
                text.train_bpe_tokenizer(train_docs, d.vocab_size, tok_path)
        barrier(self.dstate)
        self.tokenizer = text.load_tokenizer(tok_path)
        self.tokenizer_file = tok_path
        self.vocab_size = self.tokenizer.get_vocab_size()
        train_ids = text.encode_documents(self.tokenizer, train_docs)
        val_ids = text.encode_documents(self.tokenizer, val_docs)
        self.train_set = _Rows(text.pack_tokens(train_ids, d.seq_len))
        self.val_set = _Rows(text.pack_tokens(val_ids, d.seq_len))
        self.unigram_perplexity = text.unigram_perplexity(train_ids, self.val_set.rows[:, 1:].reshape(-1),
                                                          self.vocab_size)
        self.token_counts = {"train_tokens": int(train_ids.numel()),
                             "val_tokens": int(self.val_set.rows[:, 1:].numel())}

    def build_model(self) -> nn.Module:
        r = self.recipe
        kwargs = dict(r.model_kwargs)
        vs = kwargs.setdefault("vocab_size", self.vocab_size)
        if vs < self.vocab_size:
            raise RecipeError(f"model_kwargs.vocab_size {vs} is smaller than the tokenizer's {self.vocab_size}")
        if r.train.drop_path is not None:
            kwargs["drop_path_rate"] = r.train.drop_path
        model = create_model(r.model, pretrained=r.pretrained, checkpoint_path=r.init_checkpoint, **kwargs)
        self.model_kwargs = kwargs
        return model

    def build_mixup(self):
        return None

    def build_loss(self, mixup):
        return None

    def prepare_batch(self, batch, device, channels_last: bool):
        return batch.to(device, non_blocking=True)

    def forward_loss(self, model, batch, loss_fn=None, mixup=None):
        inputs, targets = batch[:, :-1], batch[:, 1:]
        logits = lm_logits(model(inputs))
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return loss, targets.numel()

    def evaluate(self, model, batch_size: int, device, amp_ctx, channels_last: bool = False,
                 max_batches: Optional[int] = None) -> Dict[str, float]:
        batches = (b.to(device) for b in self.eval_loader(batch_size))
        sums = lm_sums(model, batches, amp_ctx, max_batches)
        return {**lm_metrics(all_reduce_sum(sums.to(device), self.dstate).cpu()),
                "unigram_perplexity": self.unigram_perplexity}

    def profile_input(self):
        return (self.recipe.data.seq_len,)


def build_task(recipe: Recipe, dstate: DistState, run_dir: Path) -> _Task:
    return (ImageTask if recipe.task == "image-classification" else LMTask)(recipe, dstate, run_dir)
