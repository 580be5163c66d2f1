"""The shared core of dataset condensation: the synthetic set and its folder, the method interface, and the
resumable loop every learned method runs in (the real data as tensors: :mod:`zoo.condense.real`).

A method is a :class:`Method` subclass registered with :func:`register_method`. It gets the real training data
(:class:`RealData`, every image preprocessed and normalised once, kept per class), the images per class and its
options; it sets up its learnable state in ``setup``, takes one optimisation step per ``step(it)`` (returning the
matching loss shown on the progress bar) and hands back a :class:`SyntheticSet` from ``result``. Selection
methods and RDED do all their work in ``setup`` and take no steps.

The loop (:func:`run_method`) saves the method's state every ``save_every`` iterations with the training engine's
checkpoint writer (atomic files with a digest, the newest two kept, RNG states inside), so a killed run resumes
from the last complete state and, with the same seed, ends with the same set as an uninterrupted one.
"""

import json
import logging
import math
import os
import resource
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from .._version import __version__
from ..data.sources import DataSource
from ..data.synthetic import META_FILE, RECORDED_META, TENSOR_FILE, SyntheticData, load_synthetic
from ..factory import create_model
from ..train.checkpoint import (
    capture_rng_state,
    find_checkpoints,
    latest_good_checkpoint,
    load_training_checkpoint,
    restore_rng_state,
    save_training_checkpoint,
)
from . import distributed
from .errors import CondenseError
from .presets import departures
from .real import RealData, load_real, load_real_split
from .real import _fingerprint as _fingerprint  # a set's data fingerprint, checked by the tests

__all__ = [
    "METHODS",
    "CondenseError",
    "ImageMethod",
    "Method",
    "RealData",
    "SyntheticSet",
    "TRANSFORM_BLOCK",
    "compile_real_side",
    "condense",
    "load_real",
    "load_real_split",
    "make_network",
    "real_chunk",
    "real_chunks",
    "register_method",
    "run_method",
]

STATE_DIR = ".condense_state"
_logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------------
# Networks
# ----------------------------------------------------------------------------------------------------------------


def fast_memory_format(device: torch.device | str) -> torch.memory_format:
    """The layout the condensation networks run fastest in: channels-last on the CPU (oneDNN's convolutions,
    GroupNorm and pooling skip their layout reorders), the default elsewhere."""
    return torch.channels_last if torch.device(device).type == "cpu" else torch.contiguous_format


def real_chunk(device: torch.device | str, threads: int | None = None) -> int:
    """Real images per forward (and backward) on a matching method's real side. On the CPU: 16 at one thread
    (``threads``, default torch's), where 16 ConvNet-3 activations (8 MB a layer at MNIST's size) stay in cache and
    in glibc's heap, so each chunk reuses the last one's memory instead of mapping fresh pages (a class of 256 as
    one forward spends a third of its time in page faults); 64 at two threads or more, where each operation's share
    of a chunk of 16 is too small to split well (the cost is memory: a larger peak; the measurements behind both
    counts: ``results/notes/code_figures.md``). 512 elsewhere (accelerators want large batches)."""
    if torch.device(device).type != "cpu":
        return 512
    return 16 if (torch.get_num_threads() if threads is None else threads) < 2 else 64


TRANSFORM_BLOCK = 512  # real images a matching method transforms (DSA) in one call before its chunked passes
COMPILE_FROM = 10  # iterations from which ``compile: null`` compiles the real side on the CPU


def real_chunks(x: torch.Tensor, chunk: int, device: torch.device, transform: Callable[[torch.Tensor], torch.Tensor]):
    """One class's real batch ``x`` on ``device`` in chunks of at most ``chunk`` images, each block of
    :data:`TRANSFORM_BLOCK` images through ``transform`` in one call (a DSA op costs by the call, and the transform
    is the class's one draw, so a block's rows are its chunks' rows)."""
    for block in x.split(max(chunk, TRANSFORM_BLOCK)):
        yield from transform(block.to(device, non_blocking=True)).split(chunk)


def compile_real_side(fn: Callable, setting: bool | None, device: torch.device, iterations: int) -> Callable:
    """``fn`` (a matching method's real side: one network pass over a chunk, never differentiated twice) through
    ``torch.compile`` when ``setting`` is true, or when it is ``None`` (auto) on a CPU with a C++ compiler from
    :data:`COMPILE_FROM` iterations on, where the first iteration's compilation (seconds, cached across runs) is
    repaid: Inductor fuses the instance norm, ReLU and pooling between oneDNN's convolutions. A fresh network of the
    same architecture reuses the compiled code."""
    if setting is None:
        has_compiler = shutil.which(os.environ.get("CXX", "c++")) is not None
        setting = device.type == "cpu" and has_compiler and iterations >= COMPILE_FROM
    return torch.compile(fn, dynamic=False) if setting else fn


def make_network(
    name: str, real_shape: tuple[int, int, int], num_classes: int, generator: torch.Generator | None = None, **kwargs
) -> nn.Module:
    """A freshly initialised zoo model for images of ``real_shape``: ConvNet-D at the data's size, any other
    registered vision model with its own arguments (``kwargs``). ``generator`` seeds the initialisation."""
    c, h, _ = real_shape
    if name.startswith("convnet_"):
        kwargs = {"in_chans": c, "img_size": h, **kwargs}
    state = torch.random.get_rng_state()
    try:
        if generator is not None:
            torch.manual_seed(int(torch.randint(2**31 - 1, (1,), generator=generator)))
        return create_model(name, num_classes=num_classes, **kwargs)
    finally:
        torch.random.set_rng_state(state)


# ----------------------------------------------------------------------------------------------------------------
# The synthetic set and its folder
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class SyntheticSet:
    """Condensed images (normalised, ``(N, C, H, W)``), their labels, optional soft labels, what made them
    (``meta``: condense.json) and, for factorization, the tensors that generate them (``extra``)."""

    images: torch.Tensor
    labels: torch.Tensor
    meta: dict[str, Any]
    soft_labels: torch.Tensor | None = None
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["source"]["class_names"])

    @property
    def stored_values(self) -> int:
        """Numbers a user must store to have the set: the images, or for factorization its bases and generators."""
        return int(self.meta.get("storage", {}).get("values", self.images.numel()))

    def denormalized(self) -> torch.Tensor:
        pre = self.meta["preprocessing"]
        m = torch.tensor(pre["mean"]).view(1, -1, 1, 1)
        s = torch.tensor(pre["std"]).view(1, -1, 1, 1)
        return (self.images.detach().cpu() * s + m).clamp(0, 1)

    @classmethod
    def load(cls, folder: str | Path) -> "SyntheticSet":
        d: SyntheticData = load_synthetic(folder)
        return cls(d.images, d.labels, d.meta, d.soft_labels, d.extra)

    def save(self, folder: str | Path, overwrite: bool = False) -> Path:
        """Write the folder (tensors, condense.json, PNGs, card) beside ``folder`` and move it in place in one
        rename; an existing folder is replaced only with ``overwrite`` or when it holds a synthetic set."""
        out = Path(folder)
        if out.exists() and any(p.name != STATE_DIR for p in out.iterdir()):
            if not (overwrite or (out / META_FILE).is_file()):
                raise CondenseError(f"{out} exists and is not a synthetic set: pick a new or empty --out folder")
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
        try:
            os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp's folder is 0700; the set is a folder like any other output
            self._write(tmp)
            state = out / STATE_DIR
            if state.is_dir():  # the resumable state stays with the folder
                shutil.move(str(state), tmp / STATE_DIR)
            old = out.with_name(f".{out.name}.old.{os.getpid()}")
            if out.exists():
                os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return out

    def _write(self, tmp: Path) -> None:
        tensors = {"images": self.images.detach().cpu().float().contiguous(), "labels": self.labels.cpu().long()}
        if self.soft_labels is not None:
            tensors["soft_labels"] = self.soft_labels.detach().cpu().float().contiguous()
        tensors.update({k: v.detach().cpu().contiguous() for k, v in self.extra.items()})
        recorded = {k: json.dumps(self.meta.get(k), sort_keys=True) for k in RECORDED_META}  # checked at load
        metadata = {"format": "zoo-synthetic", "method": self.meta["method"], **recorded}
        save_file(tensors, str(tmp / TENSOR_FILE), metadata=metadata)
        os.chmod(tmp / TENSOR_FILE, 0o666 & ~_umask())  # safetensors writes 0600; the set's other files get the umask's
        (tmp / META_FILE).write_text(json.dumps(self.meta, indent=2) + "\n")
        pixels = (self.denormalized() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        names = self.class_names
        dirs = _class_dirs(names)
        counts: dict[int, int] = {}
        for img, y in zip(pixels, self.labels.tolist()):
            d = tmp / "images" / dirs[y]
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(d / f"{counts.get(y, 0):05d}.png")
            counts[y] = counts.get(y, 0) + 1
        _grid(pixels, self.labels.tolist(), len(names)).save(tmp / "grid.png")
        (tmp / "README.md").write_text(_card(self))


def _umask() -> int:
    """The process's umask (read by setting it, then set back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _safe_dir(name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() or ch in "-_. " else "_" for ch in name).strip(". ")
    return cleaned or "_"


def _class_dirs(names: list[str]) -> list[str]:
    """A folder name per class under ``images/``: the name with what a file system may refuse replaced, and where
    two names come out the same (``a/b`` and ``a?b``) each of those followed by its label, so no class's images
    land in another's folder."""
    safe = [_safe_dir(str(n)) for n in names]
    taken: dict[str, int] = {}
    for d in safe:
        taken[d] = taken.get(d, 0) + 1
    dirs = [f"{d}_{y}" if taken[d] > 1 else d for y, d in enumerate(safe)]
    while len(set(dirs)) < len(dirs):  # a suffixed name met a class that has it as its own: suffix again
        seen: set[str] = set()
        dirs = [f"{d}_{y}" if d in seen or seen.add(d) else d for y, d in enumerate(dirs)]
    return dirs


def _grid(pixels: np.ndarray, labels: list[int], num_classes: int, most: int = 10) -> Image.Image:
    """Classes as rows, up to ``most`` images per row."""
    h, w = pixels.shape[1:3]
    cols = max(1, min(most, max(labels.count(c) for c in range(num_classes))))
    canvas = np.full((num_classes * (h + 2), cols * (w + 2), 3), 255, np.uint8)
    seen = [0] * num_classes
    for img, y in zip(pixels, labels):
        if seen[y] < cols:
            r, c = y * (h + 2), seen[y] * (w + 2)
            canvas[r : r + h, c : c + w] = img
            seen[y] += 1
    scale = max(1, 256 // max(canvas.shape[:2]))
    return Image.fromarray(canvas).resize((canvas.shape[1] * scale, canvas.shape[0] * scale), Image.NEAREST)


def _card(s: SyntheticSet) -> str:
    m = s.meta
    src, pre = m["source"], m["preprocessing"]
    opts = ", ".join(f"{k}={v}" for k, v in sorted(m.get("options", {}).items())) or "defaults"
    lines = [
        f"# Synthetic {src['name']}: {m['method']}, {m['ipc']} image(s) per class",
        "",
        f"Made by `zoo condense` (zoo {m.get('zoo_version', '?')}) from the {src['split']} split of "
        f"`{src['name']}` ({src['size']} images, {len(src['class_names'])} classes, fingerprint "
        f"`{src['fingerprint'][:23]}...`).",
        "",
        "![grid](grid.png)",
        "",
        "| | |",
        "|---|---|",
        f"| method | {m['method']} |",
        f"| images | {len(s)} ({m['ipc']} per class) at {pre['channels']}x{pre['image_size']}x{pre['image_size']} |",
        f"| stored values | {s.stored_values:,} |",
        f"| soft labels | {'yes' if s.soft_labels is not None else 'no'} |",
        f"| network | {m.get('model') or '-'} |",
        f"| options | {opts} |",
        f"| seed | {m['seed']} |",
        f"| wall time | {m.get('wall_time_s', 0):.1f} s |",
        f"| peak memory | {m.get('peak_memory_mb', 0):.0f} MB |",
        "",
        "Train on it: `python train.py --config configs/condensed_digits.yaml --data.path THIS_FOLDER` "
        "(`data.name: synthetic`); the held-out split is the real one named in `condense.json`.",
        "",
    ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Methods and the loop
# ----------------------------------------------------------------------------------------------------------------

METHODS: dict[str, type["Method"]] = {}


def register_method(cls: type["Method"]) -> type["Method"]:
    METHODS[cls.name] = cls
    return cls


class Method:
    """One condensation method. Subclasses set ``name``, ``defaults`` (every option with its default; the
    CLI's ``--option key=value`` may set only these) and ``iterations`` (0 for methods that take no steps)."""

    name = ""
    defaults: dict[str, Any] = {}
    learned = True  # optimises images (the targets' "learned methods")
    needs_teacher = False
    state_dir: Path | None = None  # the run's state folder (set by run_method): methods may keep caches there
    # What a process of a torchrun group computes (zoo.condense.distributed): "" the whole method on every process;
    # "classes": its block of classes (``self.classes``); "batches": its own work units (``row_owner`` says
    # which rows). A method that shards promises that ``step`` updates only its own rows of ``self.images`` while
    # drawing every random number the one process draws, and returns only its share of the loss (summed over the
    # processes for the bar); the loop gathers the rows (``sync_state``) before each checkpoint and at the end.
    shards = ""

    def __init__(self, real: RealData, ipc: int, options: dict[str, Any], seed: int, device: torch.device):
        self.real, self.ipc, self.seed, self.device = real, ipc, seed, device
        self.options = {**self.defaults, **options}
        self.generator = torch.Generator().manual_seed(seed)
        self.rank, self.world = distributed.world() if self.shards else (0, 1)
        # the class indices this process updates: every class in one process (and for methods that run whole)
        self.classes: list[int] = list(distributed.split(real.num_classes, self.world)[self.rank])
        self._rows_of: list[torch.Tensor] | None = None

    @property
    def iterations(self) -> int:
        return int(self.options.get("iterations", 0))

    # -- to implement ------------------------------------------------------------------------------------------------
    def check(self) -> None:
        """Refuse what the data cannot give, in one line (selection methods need ``ipc`` images in every class; a
        learned set may not be larger than the data's largest class, and a class smaller than ``ipc`` is said)."""
        sizes = [len(i) for i in self.real.by_class]
        if self.learned and sizes and self.ipc > max(sizes):
            raise CondenseError(
                f"ipc={self.ipc} is more than any class of the data holds (the largest has {max(sizes)}): lower --ipc"
            )
        if self.learned and sizes and self.ipc > min(sizes):
            c = sizes.index(min(sizes))
            _logger.warning(
                "class %r has %d image(s), fewer than ipc=%d: the rest of its images start from noise",
                self.real.class_names[c],
                sizes[c],
                self.ipc,
            )
        if not self.learned:
            small = [(self.real.class_names[c], len(i)) for c, i in enumerate(self.real.by_class) if len(i) < self.ipc]
            if small:
                name, n = small[0]
                raise CondenseError(
                    f"{self.name} selects real images, and class {name!r} has {n}, fewer than ipc={self.ipc}: lower "
                    "--ipc"
                )

    def setup(self) -> None:
        """Build the learnable state (or, for methods without steps, the whole result)."""

    def step(self, it: int) -> float:
        """One optimisation step; returns the matching loss."""
        raise NotImplementedError

    def result(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor]]:
        """(images, labels, soft labels or None, extra tensors)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        """The state a resumed run needs (tensors and plain values; optimiser states included)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def storage(self) -> dict[str, Any]:
        """Stored values of the result (images by default)."""
        images = self.result()[0]
        return {"values": int(images.numel()), "what": "images"}

    def describe(self) -> dict[str, Any]:
        return {}

    @classmethod
    def eval_sampler(cls, synset: "SyntheticSet") -> "Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None":
        """How the evaluation reads ``synset``'s training images: ``None`` (the default) reads ``synset.images``
        by index; a method whose set is generated (factorization) returns ``f(indices, generator) -> images`` that
        makes the images of those sample indices afresh at each read (the authors' per-sample draw)."""
        return None

    # -- many processes ----------------------------------------------------------------------------------------------
    def split_description(self) -> str:
        """What the processes of a torchrun group share out (condense.json's ``split``)."""
        return self.shards or "none (every process runs it whole)"

    def row_owner(self) -> torch.Tensor:
        """The process that computes each row of ``self.images``: the owner of the row's class (``self.labels``)."""
        owner = torch.empty(self.real.num_classes, dtype=torch.long)
        for r, block in enumerate(distributed.split(self.real.num_classes, self.world)):
            owner[list(block)] = r
        return owner[self.labels.cpu()]

    def _rows(self) -> list[torch.Tensor]:
        if self._rows_of is None:
            owner = self.row_owner()
            self._rows_of = [torch.nonzero(owner == r).flatten() for r in range(self.world)]
        return self._rows_of

    def sync_images(self) -> None:
        """Every process's rows of ``self.images`` to every process (a no-op in one process): call where the next
        computation reads other processes' rows."""
        if self.world > 1:
            distributed.gather_rows_(self.images.data, self._rows())

    def sync_state(self) -> None:
        """:meth:`sync_images`, and the per-row optimiser state of the images (momentum, Adam's moments), so that
        rank 0 holds the whole state a checkpoint stores."""
        if self.world == 1:
            return
        self.sync_images()
        states = []
        for opt in (v for v in vars(self).values() if isinstance(v, torch.optim.Optimizer)):
            for group in opt.param_groups:
                for p in group["params"]:
                    if p is self.images:
                        st = opt.state.get(p, {})
                        states += [st[k] for k in sorted(st) if torch.is_tensor(st[k]) and st[k].shape == p.shape]
        counts = distributed.broadcast_object(len(states))
        if distributed.all_sum(float(len(states) != counts)):
            raise CondenseError(f"{self.name}: the processes hold different optimiser states; run in one process")
        for t in states:
            distributed.gather_rows_(t, self._rows())

    # -- shared helpers ----------------------------------------------------------------------------------------------
    def init_from_real(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``ipc`` random real images per class (the usual start), and their labels."""
        xs, ys = [], []
        for c in range(self.real.num_classes):
            x = self.real.class_images(c, self.ipc, self.generator)
            if x.shape[0] < self.ipc:  # a small class: the rest start from noise
                noise = torch.randn(self.ipc - x.shape[0], *x.shape[1:], generator=self.generator).to(x.device)
                x = torch.cat([x, noise])
            xs.append(x)
            ys.append(torch.full((self.ipc,), c, dtype=torch.long))
        return torch.cat(xs).to(self.device), torch.cat(ys).to(self.device)

    def network(self, name: str | None = None) -> nn.Module:
        """A fresh network (the ``model`` option, ConvNet-3 by default) seeded from the method's generator."""
        return make_network(name or self.options.get("model", "convnet_d3"), self.real.shape, self.real.num_classes,
                            self.generator).to(self.device)  # fmt: skip


class ImageMethod(Method):
    """A method that optimises ``self.images`` (a leaf tensor) with ``self.opt``: their start, result and state."""

    def init_images(self) -> None:
        """``self.images`` from random real images per class (``init: noise``: Gaussian noise), and ``self.labels``."""
        images, labels = self.init_from_real()
        if self.options.get("init", "real") == "noise":
            images = torch.randn(images.shape, generator=self.generator).to(self.device)
        self.images = images.detach().clone().requires_grad_(True)
        self.labels = labels

    def result(self):
        return self.images.detach(), self.labels, None, {}

    def state_dict(self):
        return {"images": self.images.detach().cpu(), "opt": self.opt.state_dict()}

    def load_state_dict(self, state):
        with torch.no_grad():
            self.images.copy_(state["images"].to(self.device))
        self.opt.load_state_dict(state["opt"])


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError):  # no /proc: the process's lifetime peak
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class PeakMemory:
    """Peak resident memory of the process while the block runs (sampled every :attr:`every` seconds by a thread:
    often enough to see a step's peak, seldom enough that reading ``/proc`` takes little from the work), in MB."""

    every = 0.02

    def __enter__(self):
        self.peak, self._stop = _rss_mb(), threading.Event()

        def sample():
            while not self._stop.wait(self.every):
                self.peak = max(self.peak, _rss_mb())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


def run_method(
    method: Method,
    state_dir: Path | None = None,
    save_every: int = 100,
    resume: bool = False,
    progress: bool = True,
    log: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Set the method up, run its iterations with a progress bar showing the loss, saving its state every
    ``save_every`` iterations into ``state_dir``; with ``resume`` continue from the newest complete state there.
    Returns the loss of every iteration run.

    Under torchrun (:mod:`zoo.condense.distributed`) every process runs this loop: rank 0 names the checkpoint to
    resume from and every process reads it; a sharding method's rows are gathered before each save and at the end;
    rank 0 alone shows the bar and writes the states."""
    start = 0
    main = distributed.is_main()
    ckpt = None
    if resume and state_dir is not None:
        ckpt = distributed.broadcast_object(latest_good_checkpoint(state_dir) if main and state_dir.is_dir() else None)
    method.state_dir = state_dir
    method.setup()
    if ckpt is not None:
        if distributed.all_sum(float(not Path(ckpt).is_file())):
            raise CondenseError(f"{ckpt} is not visible to every process: put --out on storage they all share")
        state = load_training_checkpoint(ckpt)
        if state.get("method") != method.name or state.get("fingerprint") != method.real.source["fingerprint"]:
            raise CondenseError(f"{ckpt} was saved by another method or on other data; start again without --resume")
        method.load_state_dict(state["method_state"])
        method.generator.set_state(state["generator"])
        restore_rng_state(state["rng"])
        start = int(state["step"])
    losses = []
    total = method.iterations
    bar = tqdm(range(start, total), initial=start, total=total, desc=method.name,
               disable=not progress or total == 0 or not main)  # fmt: skip
    for it in bar:
        loss = float(method.step(it))
        if method.world > 1:
            loss = distributed.all_sum(loss)  # each process's share of the loss
        if not math.isfinite(loss):
            raise CondenseError(
                f"{method.name}: the matching loss is {loss} at iteration {it}; lower the learning rate"
            )
        losses.append(loss)
        bar.set_postfix(loss=f"{loss:.4g}")
        if log is not None:
            log(it, loss)
        done = it + 1
        if state_dir is not None and save_every and (done % save_every == 0 or done == total):
            method.sync_state()
            if main:
                state = {
                    "method": method.name,
                    "fingerprint": method.real.source["fingerprint"],
                    "method_state": method.state_dict(),
                    "generator": method.generator.get_state(),
                    "rng": capture_rng_state(),
                }
                save_training_checkpoint(state, state_dir, done, keep=2)
    method.sync_state()
    return losses


def known_method(method: str) -> type[Method]:
    """The class registered as ``method``; the one place an unknown name is refused."""
    if method not in METHODS:
        close = [m for m in METHODS if m.startswith(method[:2])] or sorted(METHODS)
        raise CondenseError(
            f"unknown method {method!r}: choose from {', '.join(sorted(METHODS))} (close: {', '.join(close)})"
        )
    return METHODS[method]


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """The device a condensation runs on; the one place ``auto`` is decided: CUDA when present, else the CPU. In a
    torchrun group a bare ``cuda`` is the GPU torchrun assigned to this process."""
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None and distributed.world()[1] > 1:  # one GPU per process
        dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _method_class(method: str, ipc: int, options: dict) -> type[Method]:
    """The class of ``method``, once ``ipc`` and the options are checked (the one place they are)."""
    known_method(method)
    if isinstance(ipc, bool) or not isinstance(ipc, int) or ipc < 1:
        raise CondenseError(f"ipc (images per class) must be a positive int, got {ipc!r}")
    cls = METHODS[method]
    if options.get("iterations") and not cls.defaults.get("iterations"):
        raise CondenseError(
            f"{method} takes no iterations (it selects or crops real images in one pass): drop --iterations"
        )
    unknown = sorted(set(options) - set(cls.defaults))
    if unknown:
        raise CondenseError(
            f"{method} has no option(s) {', '.join(unknown)}; its options: {', '.join(sorted(cls.defaults))}"
        )
    return cls


def _metadata(
    m: Method,
    method: str,
    ipc: int,
    seed: int,
    real: RealData,
    images: int,
    wall: float,
    peak: float,
    dev: torch.device,
    preset: str | None = None,
) -> dict:
    """The synthetic set's metadata: what made it, from what, under which preset (``None``: options as given) and
    where its options and evaluation depart from the authors' command (:func:`zoo.condense.presets.departures`),
    and at what cost."""
    name = str(real.source.get("name", ""))
    options = {k: v for k, v in m.options.items() if _jsonable(v)}
    dep = departures(preset or "paper", method, ipc, type(m).defaults, options, name, type(m).needs_teacher)
    return {
        "format": "zoo-synthetic/1",
        "zoo_version": __version__,
        "method": method,
        "ipc": ipc,
        "options": options,
        "preset": preset,
        "departures": dep,
        "seed": seed,
        "source": real.source,
        "preprocessing": real.preprocessing,
        "model": m.options.get("model") or m.options.get("teacher"),
        "images": images,
        "storage": m.storage(),
        "wall_time_s": round(wall, 2),
        "peak_memory_mb": round(peak, 1),
        "peak_memory_kind": "CUDA max allocated" if dev.type == "cuda" else "process peak RSS",
        "device": str(dev),
        **m.describe(),
    }


def condense(
    data: "str | DataSource | RealData" = "digits",
    method: str = "dm",
    ipc: int = 10,
    out: str | Path | None = None,
    seed: int = 0,
    image_size: int = 32,
    device: str = "auto",
    resume: bool = False,
    save_every: int = 100,
    progress: bool = True,
    overwrite: bool = False,
    preset: str | None = None,
    **options,
) -> SyntheticSet:
    """Condense ``data`` into ``ipc`` images per class with ``method``; write the folder to ``out`` if given.

    ``data``: ``digits``, an image folder, ``hf_disk:PATH`` / a ``datasets`` folder, their resolved
    :class:`~zoo.data.sources.DataSource`, or a :class:`RealData`.
    ``options``: the method's own (``zoo condense --method M --help-options`` lists them), e.g. ``iterations``,
    ``lr_img``, ``model``, ``teacher``. ``preset``: the name the options came from (``zoo condense --preset``), which
    ``condense.json`` records with the departures from the authors' command.

    Called by every process of a torchrun group (:mod:`zoo.condense.distributed`), it splits the method's work
    across them and returns the same set on each; rank 0 alone writes ``out``.
    """
    cls = _method_class(method, ipc, options)
    dev = pick_device(device)
    real = data if isinstance(data, RealData) else load_real(data, image_size=image_size)
    return condense_checked(cls, real, ipc, out, seed, dev, resume, save_every, progress, overwrite, preset, options)


def condense_checked(
    cls: type[Method],
    real: RealData,
    ipc: int,
    out: str | Path | None,
    seed: int,
    dev: torch.device,
    resume: bool,
    save_every: int,
    progress: bool,
    overwrite: bool,
    preset: str | None,
    options: dict,
) -> SyntheticSet:
    """:func:`condense` once its arguments are decided: the method's class (checked with its ipc and options by
    :func:`_method_class`), the real data loaded and the device picked (:func:`pick_device`). ``zoo condense``
    decides them itself and calls this."""
    method = cls.name
    rank, world = distributed.world()
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    m = cls(real.to(dev) if dev.type == "cuda" else real, ipc, options, seed, dev)
    if m.shards == "classes" and world > real.num_classes:
        raise CondenseError(
            f"{method} shares out the classes and the data has {real.num_classes}, fewer than the {world} processes: "
            f"start at most {real.num_classes}"
        )
    m.check()
    state_dir = Path(out) / STATE_DIR if out is not None else None
    if rank == 0 and state_dir is not None and state_dir.is_dir() and not resume:  # a new run: the old states
        for old in [*find_checkpoints(state_dir), state_dir / "last.pt"]:  # are not its own (MTT's experts stay)
            old.unlink(missing_ok=True)
    distributed.barrier()
    with PeakMemory() as mem:
        run_method(m, state_dir, save_every, resume, progress)
        images, labels, soft, extra = m.result()
    wall = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else mem.peak
    meta = _metadata(m, method, ipc, seed, real, int(images.shape[0]), wall, peak, dev, preset)
    if world > 1:
        meta["processes"] = world
        meta["split"] = m.split_description()
    s = SyntheticSet(images.detach().cpu().float(), labels.cpu().long(), meta, None if soft is None else soft.cpu(),
                     {k: v.detach().cpu() for k, v in extra.items()})  # fmt: skip
    if out is not None:
        distributed.on_main(lambda: s.save(out, overwrite=overwrite))
    return s


def _jsonable(v: Any) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False
