"""The :class:`Task` interface and what every task shares: seeded per-sample transforms, the held-out data named
outside a recipe (:class:`EvalSource`), building a model from a recipe or an ``init_from`` folder."""

import contextlib
import logging
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ...data.errors import DataError
from ...data.sources import BENCHMARKS, DataSource, resolve
from ...data.stream import StreamSource
from ...factory import create_model, resolve_weight_source
from ...lm.quant import dequantize_model, model_quantization
from ..config import Recipe, RecipeError, load_run_args
from ..distributed import DistState, all_reduce_sum, shard_indices

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


def warn_if_cut(count: int, source: "EvalSource") -> None:
    if count >= source.max_samples:
        _logger.warning(
            "%s is a stream: evaluating its first %d samples (raise --max-samples for more)", source.data, count
        )


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
        path = self.path
        if path is None and self.kind not in ("digits", "pydoc", *BENCHMARKS):
            path = resolve(self.data).path  # a bare path names the place itself
        return resolve(self.kind, path)

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
            source = resolve_weight_source(r.init_from)
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
