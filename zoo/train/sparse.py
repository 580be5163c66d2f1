"""Dynamic sparse training: fixed-density masks that are pruned and regrown while the model trains.

This is the procedure SLaK ("More ConvNets in the 2020s: Scaling up Kernels Beyond 51x51 using Sparsity",
ICLR 2023, https://github.com/VITA-Group/SLaK) trains its 51x51 kernels with, written as a component that works
for any model, optimizer, AMP setting and number of processes:

* **What is sparse.** By default every 2-D or 4-D parameter named ``weight`` (convolutions including the stem and
  downsampling layers, every large-kernel branch, pointwise/linear layers, the head). Biases, norms and layer-scale
  ``gamma`` stay dense. ``only_large_kernels=True`` restricts masks to depthwise convolutions whose kernel is larger
  than ``large_kernel_threshold`` (5) on either axis: SLaK's (K x 5) and (5 x K) branches, not its 5 x 5 one.
  ``include``/``exclude`` take ``fnmatch`` patterns on parameter names, and ``DynamicSparsity(selector=...)``
  takes any predicate ``(name, param, module) -> bool``.
* **Initial layer-wise density** (``init``): ``snip`` (the ``|w * grad|`` scores of one batch, ranked over the
  whole model, give each layer's share of the kept weights; placement within a layer is random, as in SLaK),
  ``erk`` (Erdos-Renyi-Kernel: density proportional to ``sum(shape) / prod(shape)``), ``uniform``, or ``weights``
  (masks are the non-zeros of the current weights, e.g. of a released sparse checkpoint). A layer whose density
  comes out at ``dense_threshold`` (0.99) or more stays dense and leaves the masking.
* **Updates.** Every ``update_frequency`` *optimizer* steps each layer drops ``ceil(prune_rate * nnz)`` of its
  active weights with the smallest magnitude and regrows as many at inactive positions, at random (``random``) or
  where the gradient is largest (``gradient``, RigL). Grown weights, and their optimizer state, start at zero.
  ``prune_rate`` follows a cosine decay to ``final_prune_rate`` over ``total_steps``.
* **After every optimizer step** the weights and every optimizer state tensor of the weight's shape (SGD's
  ``momentum_buffer``, Adam's ``exp_avg``/``exp_avg_sq``, ...) are multiplied by the mask.

Where this differs from the authors' code (``sparse_core.py``), on purpose:

* Layer counts are exact. The authors draw masks and regrowth as independent Bernoulli trials, so a layer's
  density drifts a little at every update; here every layer keeps exactly the number of weights it was given, and
  the ``dense_threshold`` layers are accounted for inside the allocation, so the overall density is the target.
  (``exact_regrowth=False`` regrows with the authors' Bernoulli draw, ``p = n_grow / n_zero``.)
* Mixed precision works. The authors' engine never calls the masking step when AMP is on, so masks stop being
  applied and updated. Here optimizer steps are counted by a hook on the optimizer, so a step that
  ``torch.amp.GradScaler`` skips (non-finite gradients) is not counted, masks are still applied, and a long run of
  calls without any optimizer step raises a warning instead of silently freezing the masks.
* Distributed runs keep identical masks. Random draws come from one seeded generator that is synchronised at
  initialisation, SNIP scores are summed over processes, and every mask change is decided on rank 0 and broadcast.
* Pruning ranks only the active weights (the authors rank all of them and rely on pruned ones sorting first) and
  the prune rate stays at its final value after ``total_steps`` instead of rising again.

Example (a plain training loop; the same calls work with DDP, gradient accumulation and AMP)::

    import torch, torch.nn.functional as F
    from timm.utils import ModelEmaV3
    import zoo
    from zoo.train.sparse import DynamicSparsity, SparseConfig

    model = zoo.create_model("slak_tiny", num_classes=10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-3, weight_decay=0.05)
    sparse = DynamicSparsity(model, optimizer, SparseConfig(sparsity=0.4, init="snip", prune_rate=0.3,
                                                            update_frequency=100), total_steps=len(loader) * epochs)
    sparse.init_masks(batch=next(iter(loader)))      # SNIP needs one (inputs, targets) batch
    ema = ModelEmaV3(model, decay=0.9999)
    for images, targets in loader:
        loss = F.cross_entropy(model(images), targets)
        loss.backward()
        optimizer.step()
        sparse.step()                # right after every optimizer step; prunes and regrows when due
        ema.update(model)
        sparse.apply_to_ema(ema)     # pruned weights are zero in the EMA, grown ones follow the model
        optimizer.zero_grad()
    torch.save({"model": model.state_dict(), "sparse": sparse.state_dict()}, "last.pt")
    # resume: build model, optimizer and DynamicSparsity the same way, then sparse.load_state_dict(ckpt["sparse"])
    # instead of init_masks(); from weights alone: sparse.set_masks(DynamicSparsity.masks_from_weights(model))
"""

import dataclasses
import difflib
import fnmatch
import logging
import math
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

__all__ = [
    "DynamicSparsity",
    "SparseConfig",
    "allocate_densities",
    "default_selector",
    "erk_scores",
    "large_kernel_selector",
]

_logger = logging.getLogger(__name__)

INITS = ("snip", "erk", "uniform", "weights")
GROWTHS = ("random", "gradient")
STATE_FORMAT = "zoo.sparse/1"
# step() calls in a row without an optimizer step before a warning says the masks are not being updated
IDLE_WARN_CALLS = 100

Selector = Callable[[str, nn.Parameter, nn.Module], bool]


# --------------------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------------------


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@dataclass
class SparseConfig:
    """Settings of dynamic sparse training; the defaults are SLaK's (``main.py`` arguments and README recipes).

    Give ``sparsity`` (fraction of zeros) or ``density`` (fraction kept), not both unless they agree; with neither,
    density is 0.6 (sparsity 0.4). SLaK-T used ``prune_rate=0.5, update_frequency=2000``, S/B ``0.3, 100``.
    """

    sparsity: float | None = None
    density: float | None = None
    init: str = "snip"  # snip | erk | uniform | weights
    growth: str = "random"  # random | gradient
    prune_rate: float = 0.3  # fraction of each layer's active weights replaced per update (start)
    final_prune_rate: float = 0.005  # cosine decay target, reached at total_steps
    update_frequency: int | None = 100  # optimizer steps between mask updates; None: masks stay fixed
    exact_regrowth: bool = True  # False: the authors' Bernoulli regrowth (count only approximate)
    only_large_kernels: bool = False  # mask only depthwise convs with a kernel > large_kernel_threshold
    large_kernel_threshold: int = 5
    include: tuple[str, ...] = ()  # fnmatch patterns on parameter names; empty: everything selected
    exclude: tuple[str, ...] = ()
    dense_threshold: float = 0.99  # layers allocated at least this density stay dense
    erk_power_scale: float = 1.0
    seed: int | None = None  # None: drawn from torch's global generator

    def __post_init__(self):
        for key in ("sparsity", "density"):
            v = getattr(self, key)
            if v is not None and (not _is_number(v) or not 0.0 < v < 1.0):
                raise ValueError(f"SparseConfig.{key} must be a number strictly between 0 and 1, got {v!r}")
        if self.sparsity is None and self.density is None:
            self.density = 0.6
        if self.density is None:
            self.density = 1.0 - self.sparsity
        elif self.sparsity is not None and abs(self.density + self.sparsity - 1.0) > 1e-9:
            raise ValueError(
                f"SparseConfig got sparsity={self.sparsity} and density={self.density}, which do not "
                "add up to 1; give only one of them"
            )
        self.density = float(self.density)
        self.sparsity = 1.0 - self.density
        if self.init not in INITS:
            raise ValueError(f"SparseConfig.init must be one of {INITS}, got {self.init!r}")
        if self.growth not in GROWTHS:
            raise ValueError(f"SparseConfig.growth must be one of {GROWTHS}, got {self.growth!r}")
        if not _is_number(self.prune_rate) or not 0.0 < self.prune_rate <= 1.0:
            raise ValueError(f"SparseConfig.prune_rate must be in (0, 1], got {self.prune_rate!r}")
        if not _is_number(self.final_prune_rate) or not 0.0 <= self.final_prune_rate <= self.prune_rate:
            raise ValueError(
                f"SparseConfig.final_prune_rate must be in [0, prune_rate={self.prune_rate}], "
                f"got {self.final_prune_rate!r}"
            )
        uf = self.update_frequency
        if uf is not None and (not isinstance(uf, int) or isinstance(uf, bool) or uf < 1):
            raise ValueError(
                f"SparseConfig.update_frequency must be a positive integer (optimizer steps between "
                f"mask updates) or None for fixed masks, got {uf!r}"
            )
        for key in ("exact_regrowth", "only_large_kernels"):
            if not isinstance(getattr(self, key), bool):
                raise TypeError(f"SparseConfig.{key} must be true or false, got {getattr(self, key)!r}")
        lk = self.large_kernel_threshold
        if not isinstance(lk, int) or isinstance(lk, bool) or lk < 1:
            raise ValueError(f"SparseConfig.large_kernel_threshold must be a positive integer, got {lk!r}")
        for key in ("include", "exclude"):
            v = getattr(self, key)
            if isinstance(v, str):
                v = (v,)
            if v is None:
                v = ()
            if not isinstance(v, (list, tuple)) or not all(isinstance(p, str) for p in v):
                raise ValueError(f"SparseConfig.{key} must be a list of name patterns (fnmatch), got {v!r}")
            setattr(self, key, tuple(v))
        if not _is_number(self.dense_threshold) or not 0.0 < self.dense_threshold <= 1.0:
            raise ValueError(f"SparseConfig.dense_threshold must be in (0, 1], got {self.dense_threshold!r}")
        if not _is_number(self.erk_power_scale) or self.erk_power_scale < 0:
            raise ValueError(f"SparseConfig.erk_power_scale must be a number >= 0, got {self.erk_power_scale!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise ValueError(f"SparseConfig.seed must be an integer or None, got {self.seed!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "SparseConfig":
        """Build from a mapping (a recipe's ``sparse:`` section); unknown keys are errors naming the closest one."""
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise TypeError(f"sparse settings must be a mapping of SparseConfig fields, got {type(d).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(names)}"
                raise ValueError(f"unknown sparse training setting {key!r}{hint}")
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["include"], d["exclude"] = list(self.include), list(self.exclude)
        return d


# --------------------------------------------------------------------------------------------------------------
# Which parameters get masks
# --------------------------------------------------------------------------------------------------------------


def default_selector(name: str, param: nn.Parameter, module: nn.Module) -> bool:
    """Every 2-D or 4-D parameter named ``weight`` (convs, linears, heads); not biases, norms, gamma, embeddings
    of positions or tokens stored under other names."""
    return param.ndim in (2, 4) and name.rsplit(".", 1)[-1] == "weight"


def large_kernel_selector(threshold: int = 5) -> Selector:
    """Depthwise conv weights whose kernel is larger than ``threshold`` on either axis (SLaK's rectangular
    (K x 5) / (5 x K) branches and square large kernels; not its 5 x 5 branch)."""

    def select(name: str, param: nn.Parameter, module: nn.Module) -> bool:
        if param.ndim != 4 or name.rsplit(".", 1)[-1] != "weight":
            return False
        if isinstance(module, nn.Conv2d):
            depthwise = module.groups > 1 and module.groups == module.in_channels
        else:  # a custom module holding a conv weight: (C_out, C_in / groups, kh, kw)
            depthwise = param.shape[1] == 1
        return depthwise and max(param.shape[-2:]) > threshold

    return select


def _unwrap(model: nn.Module) -> nn.Module:
    """The module under DDP/DataParallel/torch.compile wrappers, so parameter names do not depend on them."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def _select(
    model: nn.Module, selector: Selector, include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> dict[str, nn.Parameter]:
    out: dict[str, nn.Parameter] = {}
    seen = set()
    for mod_name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            name = f"{mod_name}.{p_name}" if mod_name else p_name
            if id(p) in seen or not p.requires_grad:
                continue
            if include and not any(fnmatch.fnmatchcase(name, pat) for pat in include):
                continue
            if any(fnmatch.fnmatchcase(name, pat) for pat in exclude):
                continue
            if selector(name, p, module):
                seen.add(id(p))
                out[name] = p
    return out


# --------------------------------------------------------------------------------------------------------------
# Layer-wise density allocation
# --------------------------------------------------------------------------------------------------------------


def erk_scores(shapes: Sequence[Sequence[int]], power_scale: float = 1.0) -> list[float]:
    """Erdos-Renyi-Kernel raw densities ``(sum(shape) / prod(shape)) ** power_scale``, before scaling."""
    return [(sum(s) / math.prod(s)) ** power_scale for s in shapes]


def allocate_densities(
    raw: Sequence[float], sizes: Sequence[int], density: float, dense_threshold: float = 0.99
) -> list[float]:
    """Per-layer densities ``eps * raw[i]`` whose weighted mean over ``sizes`` is ``density``.

    A layer whose density would reach ``dense_threshold`` is made fully dense and ``eps`` is solved again over
    the others, highest ``raw`` first (the ERK procedure of RigL/SLaK, with the "layers at >= 99% stay dense"
    rule moved inside it so that the dense layers count towards the budget).
    """
    if len(raw) != len(sizes) or not raw:
        raise ValueError("allocate_densities needs one raw score per layer and at least one layer")
    if any(r < 0 or not math.isfinite(r) for r in raw):
        raise ValueError(f"layer scores must be finite and >= 0, got {list(raw)}")
    budget = density * sum(sizes)
    dense: set = set()
    eps = 0.0
    while True:
        free = [i for i in range(len(raw)) if i not in dense]
        if not free:
            break
        rest = max(budget - sum(sizes[i] for i in dense), 0.0)
        denom = sum(raw[i] * sizes[i] for i in free)
        if denom <= 0:
            if rest > 0:
                raise ValueError(
                    "every remaining layer has a zero score, so no density can be allocated to them "
                    "(for SNIP: the batch gave zero gradients; check the loss and the batch)"
                )
            eps = 0.0
            break
        eps = rest / denom
        top = max(raw[i] for i in free)
        if eps * top < dense_threshold:
            break
        dense.update(i for i in free if raw[i] == top)
    return [1.0 if i in dense else min(eps * raw[i], 1.0) for i in range(len(raw))]


def _cosine(step: int, total: int, start: float, end: float) -> float:
    t = min(max(step, 0), total)
    return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * t / total))


# --------------------------------------------------------------------------------------------------------------
# Distributed helpers (no-ops in a single process)
# --------------------------------------------------------------------------------------------------------------


def _dist_world(group) -> int:
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


def _src_rank(group) -> int:
    return dist.get_global_rank(group, 0) if group is not None else 0


# --------------------------------------------------------------------------------------------------------------
# The masking engine
# --------------------------------------------------------------------------------------------------------------


class DynamicSparsity:
    """Masks for a model's weights, kept at a fixed density and rewired during training.

    Args:
        model: the model (DDP/DataParallel/``torch.compile`` wrappers are looked through; names are the plain
            module's ``named_parameters`` names).
        optimizer: the optimizer that updates ``model``. Its steps are counted with a post-step hook, so steps
            that ``GradScaler`` skips do not count. ``None``: every :meth:`step` call counts as one step.
        config: a :class:`SparseConfig` or a mapping of its fields.
        total_steps: optimizer steps of the whole run (the cosine decay of the prune rate spans them).
        selector: ``(name, param, module) -> bool`` choosing the masked parameters; replaces the config's choice
            (``only_large_kernels``), while ``include``/``exclude`` patterns still apply.
        process_group: the group whose processes must hold identical masks (default: the world).

    Call :meth:`init_masks` (new run) or :meth:`load_state_dict` (resume) before training, :meth:`step` right
    after every optimizer step, and :meth:`apply_to_ema` after every EMA update.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None,
        config: SparseConfig | Mapping[str, Any] | None = None,
        total_steps: int | None = None,
        *,
        selector: Selector | None = None,
        process_group=None,
    ):
        if config is None or isinstance(config, Mapping):
            config = SparseConfig.from_dict(config)
        if not isinstance(config, SparseConfig):
            raise TypeError(f"config must be a SparseConfig or a mapping of its fields, got {type(config).__name__}")
        bad_total = not isinstance(total_steps, int) or isinstance(total_steps, bool) or total_steps < 1
        if config.update_frequency is not None and bad_total:
            raise ValueError(
                f"total_steps must be the positive number of optimizer steps in the run (the prune "
                f"rate decays over it), got {total_steps!r}"
            )
        self.config = config
        self.total_steps = total_steps
        self.model = _unwrap(model)
        self.optimizer = optimizer
        self.process_group = process_group
        if selector is None:
            selector = (
                large_kernel_selector(config.large_kernel_threshold) if config.only_large_kernels else default_selector
            )
        self.params = _select(self.model, selector, config.include, config.exclude)
        if not self.params:
            raise ValueError(
                "no parameter of the model was selected for sparse training (selector, "
                f"only_large_kernels={config.only_large_kernels}, include={config.include}, "
                f"exclude={config.exclude}); check the settings against model.named_parameters()"
            )
        self.masks: dict[str, torch.Tensor] = {}  # bool, only layers that are sparse
        self.steps = 0  # optimizer steps taken
        self.updates = 0  # prune-and-regrow rounds done
        self.skipped = 0  # step() calls that found no optimizer step (e.g. skipped by GradScaler)
        self.initialized = False
        seed = config.seed if config.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
        self.generator = torch.Generator().manual_seed(seed)
        self._fresh: dict[str, torch.Tensor] = {}  # positions grown at the last update (EMA copies the model)
        self._fresh_age = 0
        self._pending = 0
        self._idle = 0
        self._warned = set()
        self._hook = None
        if optimizer is not None and hasattr(optimizer, "register_step_post_hook"):
            ref = weakref.ref(self)

            def _count(opt, args, kwargs):
                obj = ref()
                if obj is not None:
                    obj._pending += 1

            self._hook = optimizer.register_step_post_hook(_count)

    # ----------------------------------------------------------------------------------------------- set-up
    def close(self):
        """Detach from the optimizer (removes the step-counting hook)."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None

    def _require_init(self, what: str):
        if not self.initialized:
            raise RuntimeError(
                f"DynamicSparsity.{what}() needs masks: call init_masks() for a new run or "
                "load_state_dict() when resuming"
            )

    @torch.no_grad()
    def init_masks(self, batch: Any = None, loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None):
        """Draw the initial masks with ``config.init`` and apply them to the weights and optimizer state.

        ``snip`` needs ``batch``: an ``(inputs, targets)`` pair scored with cross-entropy, or anything together with
        ``loss_fn(model, batch) -> loss`` (``model`` is the unwrapped module, so DDP's gradient hooks stay out of
        it). Every process scores its own batch and the scores are summed. The model's buffers (BatchNorm
        statistics) are restored afterwards and existing ``.grad`` fields are untouched.
        """
        if self.initialized:
            raise RuntimeError("masks are already initialised; build a new DynamicSparsity to start over")
        cfg = self.config
        self._sync_generator()
        names = list(self.params)
        sizes = [self.params[n].numel() for n in names]
        if cfg.init == "weights":
            self.set_masks(self.masks_from_weights(self.model, cfg, params=self.params))
            return self
        if cfg.init == "uniform":
            raw = [1.0] * len(names)
        elif cfg.init == "erk":
            raw = erk_scores([tuple(self.params[n].shape) for n in names], cfg.erk_power_scale)
        else:
            if batch is None:
                raise ValueError(
                    "init='snip' scores the weights on one training batch: call "
                    "init_masks(batch=(inputs, targets)) or choose init='erk'/'uniform'"
                )
            counts = self._snip_counts(batch, loss_fn)
            raw = [c / s for c, s in zip(counts, sizes)]
        densities = allocate_densities(raw, sizes, cfg.density, cfg.dense_threshold)
        masks = {}
        for name, size, d in zip(names, sizes, densities):
            if d >= cfg.dense_threshold:
                continue
            n_keep = round(d * size)
            flat = torch.zeros(size, dtype=torch.bool)
            flat[torch.randperm(size, generator=self.generator)[:n_keep]] = True
            masks[name] = flat.view(self.params[name].shape).to(self.params[name].device)
        self._broadcast(masks)
        self.masks = masks
        self.initialized = True
        self._pending = 0
        self.apply_masks()
        _logger.info("sparse init %s: %s", cfg.init, self.summary(short=True))
        return self

    def _sync_generator(self):
        if _dist_world(self.process_group) > 1:
            state = self.generator.get_state()
            dev = self._comm_device()
            buf = state.to(dev)
            dist.broadcast(buf, src=_src_rank(self.process_group), group=self.process_group)
            self.generator.set_state(buf.cpu())

    def _comm_device(self) -> torch.device:
        if dist.get_backend(self.process_group) == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def _snip_counts(self, batch: Any, loss_fn) -> list[int]:
        """Per layer, how many of its weights are among the ``density * N`` largest ``|w * grad|`` of the model."""
        model, params = self.model, list(self.params.values())
        device = params[0].device
        buffers = {k: b.detach().clone() for k, b in model.named_buffers()}
        try:
            with torch.enable_grad():
                if loss_fn is not None:
                    loss = loss_fn(model, batch)
                else:
                    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                        raise ValueError(
                            "init_masks(batch=...) without loss_fn expects an (inputs, targets) pair "
                            "for cross-entropy; pass loss_fn(model, batch) -> loss for other batches"
                        )
                    inputs, targets = (b.to(device) if torch.is_tensor(b) else b for b in batch)
                    loss = F.cross_entropy(model(inputs), targets)
                if not torch.is_tensor(loss) or loss.ndim != 0:
                    raise ValueError("the SNIP loss must be a scalar tensor")
                grads = torch.autograd.grad(loss, params, allow_unused=True)
        finally:
            for k, b in model.named_buffers():
                b.copy_(buffers[k])
        scores = torch.cat(
            [
                (p.detach().float() * g.float()).abs().flatten()
                if g is not None
                else torch.zeros(p.numel(), device=device)
                for p, g in zip(params, grads)
            ]
        )
        if _dist_world(self.process_group) > 1:
            buf = scores.to(self._comm_device())
            dist.all_reduce(buf, group=self.process_group)
            scores = buf.to(device)
        n_total = scores.numel()
        k = int(n_total * self.config.density)
        if k <= 0:
            return [0] * len(params)
        threshold = torch.kthvalue(scores.cpu(), n_total - k + 1).values.item()
        sizes = [p.numel() for p in params]
        chunks = scores.split(sizes)
        above = [int((c > threshold).sum()) for c in chunks]
        ties = [int((c == threshold).sum()) for c in chunks]
        need = k - sum(above)  # weights at exactly the threshold go to the first layers that hold them
        counts = []
        for a, t in zip(above, ties):
            take = min(t, max(need, 0))
            need -= take
            counts.append(a + take)
        return counts

    @classmethod
    def masks_from_weights(
        cls,
        model: nn.Module,
        config: SparseConfig | Mapping[str, Any] | None = None,
        selector: Selector | None = None,
        *,
        params: dict[str, nn.Parameter] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Masks ``weight != 0`` for the selected weights of ``model`` (e.g. loaded from a sparse checkpoint that
        stores exact zeros, as SLaK's releases do). Layers at ``dense_threshold`` density or more are left out."""
        if config is None or isinstance(config, Mapping):
            config = SparseConfig.from_dict(config)
        if params is None:
            if selector is None:
                selector = (
                    large_kernel_selector(config.large_kernel_threshold)
                    if config.only_large_kernels
                    else default_selector
                )
            params = _select(_unwrap(model), selector, config.include, config.exclude)
        masks = {}
        for name, p in params.items():
            m = p.detach() != 0
            if m.float().mean().item() < config.dense_threshold:
                masks[name] = m
        return masks

    @torch.no_grad()
    def set_masks(self, masks: Mapping[str, torch.Tensor]):
        """Use the given boolean masks (names as in ``model.named_parameters()``); layers not named stay dense."""
        for name, m in masks.items():
            if name not in self.params:
                raise KeyError(
                    f"mask for {name!r}, which is not one of the selected weights of this model "
                    f"({len(self.params)} selected, e.g. {next(iter(self.params))!r})"
                )
            if tuple(m.shape) != tuple(self.params[name].shape):
                raise ValueError(
                    f"mask for {name!r} has shape {tuple(m.shape)}, the weight has {tuple(self.params[name].shape)}"
                )
        self.masks = {
            n: masks[n].to(device=self.params[n].device, dtype=torch.bool).clone() for n in self.params if n in masks
        }
        self._broadcast(self.masks)
        self.initialized = True
        self._fresh, self._fresh_age = {}, 0
        self._pending = 0
        self.apply_masks()
        return self

    # ----------------------------------------------------------------------------------------------- training
    def prune_rate(self, step: int | None = None) -> float:
        """The fraction of active weights replaced at an update after ``step`` optimizer steps (cosine decay)."""
        cfg = self.config
        if self.total_steps is None:
            return cfg.prune_rate
        return _cosine(self.steps if step is None else step, self.total_steps, cfg.prune_rate, cfg.final_prune_rate)

    @torch.no_grad()
    def apply_masks(self):
        """Zero the masked-out weights and the matching entries of every same-shaped optimizer state tensor."""
        state = self.optimizer.state if self.optimizer is not None and hasattr(self.optimizer, "state") else {}
        for name, mask in self.masks.items():
            p = self.params[name]
            p.mul_(mask)
            st = state.get(p) if state else None
            if st:
                for v in st.values():
                    if torch.is_tensor(v) and v.shape == p.shape and v.is_floating_point():
                        v.mul_(mask)

    def step(self) -> bool:
        """Call right after every optimizer step (also when GradScaler may have skipped it).

        Applies the masks; when the optimizer really stepped, counts the step and, every ``update_frequency``
        steps, prunes and regrows. Returns True when the masks changed.
        """
        self._require_init("step")
        if self.optimizer is None or self._hook is None:
            n = 1
        else:
            n, self._pending = self._pending, 0
        self.apply_masks()
        if n == 0:
            self.skipped += 1
            self._idle += 1
            if self._idle == IDLE_WARN_CALLS:
                warnings.warn(
                    f"DynamicSparsity.step() was called {IDLE_WARN_CALLS} times in a row without an "
                    "optimizer step: masks are applied but not updated. Either GradScaler skips every "
                    "step (non-finite gradients) or the optimizer given to DynamicSparsity is not the one "
                    "being stepped",
                    RuntimeWarning,
                    stacklevel=2,
                )
            return False
        self._idle = 0
        if n > 1 and "multi" not in self._warned:
            self._warned.add("multi")
            warnings.warn(
                f"the optimizer stepped {n} times since the last DynamicSparsity.step(); call it after "
                "every optimizer step so that pruned weights never take part in a step",
                RuntimeWarning,
                stacklevel=2,
            )
        before = self.steps
        self.steps += n
        self._fresh_age += n
        if self._fresh and self._fresh_age > 1:
            self._fresh = {}
        uf = self.config.update_frequency
        if uf is not None and self.steps // uf > before // uf:
            self.update()
            return True
        return False

    @torch.no_grad()
    def update(self):
        """One prune-and-regrow round on every sparse layer (normally called by :meth:`step`)."""
        self._require_init("update")
        cfg = self.config
        rate = self.prune_rate()
        new_masks, grown_all = {}, {}
        for name, mask in self.masks.items():
            p = self.params[name]
            flat = mask.flatten()
            nnz = int(flat.sum())
            k = math.ceil(rate * nnz)
            if k == 0:
                continue
            # prune: the k active weights of smallest magnitude
            mag = p.detach().abs().float().flatten().masked_fill(~flat, float("inf"))
            drop = torch.topk(mag, k, largest=False, sorted=False).indices
            pruned = flat.clone()
            pruned[drop] = False
            # regrow k weights among the inactive positions (the just-pruned ones included)
            grow = torch.zeros_like(flat)
            if cfg.growth == "gradient":
                if p.grad is None:
                    raise RuntimeError(
                        f"growth='gradient' needs {name}.grad at the update: call sparse.step() "
                        "after optimizer.step() and before optimizer.zero_grad()"
                    )
                g = p.grad.detach().abs().float().flatten().masked_fill(pruned, -1.0)
                grow[torch.topk(g, k, sorted=False).indices] = True
            else:
                zeros = (~pruned).nonzero().squeeze(1)
                if cfg.exact_regrowth:
                    pick = torch.randperm(zeros.numel(), generator=self.generator)[:k].to(zeros.device)
                    grow[zeros[pick]] = True
                else:
                    prob = k / zeros.numel()
                    draw = (torch.rand(flat.numel(), generator=self.generator) < prob).to(flat.device)
                    grow = draw & ~pruned
            new_masks[name] = (pruned | grow).view_as(mask)
            grown_all[name] = grow.view_as(mask)
        self._broadcast(new_masks, grown_all)
        state = self.optimizer.state if self.optimizer is not None and hasattr(self.optimizer, "state") else {}
        for name, new in new_masks.items():
            p, grown = self.params[name], grown_all[name]
            self.masks[name] = new
            p.masked_fill_(grown, 0.0)
            st = state.get(p) if state else None
            if st:
                for v in st.values():
                    if torch.is_tensor(v) and v.shape == p.shape and v.is_floating_point():
                        v.masked_fill_(grown, 0.0)
        fresh = {}
        for n in set(self._fresh) | set(grown_all):
            old, grown = self._fresh.get(n), grown_all.get(n)
            old = None if old is None else old & self.masks[n]
            fresh[n] = grown if old is None else (old if grown is None else old | grown)
        self._fresh = fresh
        self._fresh_age = 0
        self.updates += 1
        self.apply_masks()
        _logger.info(
            "sparse update %d at step %d (prune rate %.4f): %s",
            self.updates,
            self.steps,
            rate,
            self.summary(short=True),
        )

    def _broadcast(self, masks: dict[str, torch.Tensor], extra: dict[str, torch.Tensor] | None = None):
        """Make rank 0's masks (and ``extra`` bool tensors of the same layers) everyone's, in place."""
        if _dist_world(self.process_group) <= 1 or not masks:
            return
        names = sorted(masks)
        code = [masks[n].flatten().to(torch.uint8) for n in names]
        if extra is not None:
            code = [c + 2 * extra[n].flatten().to(torch.uint8) for c, n in zip(code, names)]
        buf = torch.cat(code).to(self._comm_device())
        dist.broadcast(buf, src=_src_rank(self.process_group), group=self.process_group)
        for n, part in zip(names, buf.split([masks[n].numel() for n in names])):
            part = part.to(masks[n].device)
            masks[n] = (part & 1).bool().view_as(masks[n])
            if extra is not None:
                extra[n] = (part & 2).bool().view_as(masks[n])

    @torch.no_grad()
    def apply_to_ema(self, ema: nn.Module):
        """Make an EMA model follow the masks: pruned weights become zero, weights grown at the last update take
        the model's value (at the update step and the next optimizer step) instead of averaging up from zero.

        ``ema``: timm's ``ModelEmaV2/V3`` (its ``.module`` is used) or a plain copy of the model. Call it after
        every EMA update.
        """
        self._require_init("apply_to_ema")
        module = ema.module if isinstance(getattr(ema, "module", None), nn.Module) else ema
        module = _unwrap(module)
        ema_params = dict(module.named_parameters())
        for name, mask in self.masks.items():
            e = ema_params.get(name)
            if e is None or e.shape != mask.shape:
                raise ValueError(
                    f"the EMA model has no parameter {name!r} of shape {tuple(mask.shape)}; pass the "
                    "EMA of the model this DynamicSparsity was built on"
                )
            e.mul_(mask.to(e.device))
            fresh = self._fresh.get(name)
            if fresh is not None:
                value = self.params[name].detach()[fresh]
                e[fresh.to(e.device)] = value.to(device=e.device, dtype=e.dtype)

    # ----------------------------------------------------------------------------------------------- reporting
    def density_report(self) -> dict[str, Any]:
        """Per selected weight: ``nnz``, ``numel``, ``density`` (mask, or 1.0 for layers left dense), ``sparse``
        (has a mask); totals over the selected weights, and over all model parameters: ``params`` (dense count)
        and ``active_params`` (parameters not masked out; the non-zero count of a trained sparse model)."""
        layers = {}
        nnz_sel = numel_sel = 0
        for name, p in self.params.items():
            m = self.masks.get(name)
            nnz = int(m.sum()) if m is not None else p.numel()
            layers[name] = {"nnz": nnz, "numel": p.numel(), "density": nnz / p.numel(), "sparse": m is not None}
            nnz_sel += nnz
            numel_sel += p.numel()
        total = sum(p.numel() for p in self.model.parameters())
        return {
            "layers": layers,
            "selected_nnz": nnz_sel,
            "selected_numel": numel_sel,
            "density": nnz_sel / numel_sel,
            "params": total,
            "active_params": total - (numel_sel - nnz_sel),
            "steps": self.steps,
            "updates": self.updates,
            "skipped": self.skipped,
            "prune_rate": self.prune_rate(),
        }

    def summary(self, short: bool = False) -> str:
        r = self.density_report()
        head = (
            f"{sum(v['sparse'] for v in r['layers'].values())}/{len(r['layers'])} weights masked, density "
            f"{r['density']:.4f} of selected ({r['selected_nnz']:,}/{r['selected_numel']:,}), active params "
            f"{r['active_params']:,}/{r['params']:,}"
        )
        if short:
            return head
        lines = [head] + [
            f"  {n}: {v['nnz']:,}/{v['numel']:,} = {v['density']:.4f}{'' if v['sparse'] else ' (dense)'}"
            for n, v in r["layers"].items()
        ]
        return "\n".join(lines)

    # ----------------------------------------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Masks (bool, CPU), counters, generator state and config; loadable with ``torch.load(weights_only=True)``."""
        return {
            "format": STATE_FORMAT,
            "config": self.config.to_dict(),
            "total_steps": self.total_steps,
            "steps": self.steps,
            "updates": self.updates,
            "skipped": self.skipped,
            "initialized": self.initialized,
            "masks": {n: m.detach().cpu().clone() for n, m in self.masks.items()},
            "fresh": {n: m.detach().cpu().clone() for n, m in self._fresh.items()},
            "fresh_age": self._fresh_age,
            "generator": self.generator.get_state(),
        }

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Any]):
        """Restore masks, step counters and the random generator (resume); masks are applied to the weights."""
        if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
            raise ValueError(
                f"not a DynamicSparsity state (expected format {STATE_FORMAT!r}); to rebuild masks from "
                "a checkpoint's zeros use set_masks(DynamicSparsity.masks_from_weights(model))"
            )
        masks = state["masks"]
        bad = [n for n in masks if n not in self.params]
        if bad:
            raise KeyError(
                f"the sparse state has masks for weights this model does not select: {bad[:5]}; build "
                "DynamicSparsity with the same model and sparse settings as the saved run"
            )
        for n, m in masks.items():
            if tuple(m.shape) != tuple(self.params[n].shape):
                raise ValueError(
                    f"saved mask {n!r} has shape {tuple(m.shape)}, the weight has {tuple(self.params[n].shape)}"
                )
        saved = state.get("config", {})
        changed = [
            k for k in ("density", "init", "growth", "only_large_kernels") if saved.get(k) != getattr(self.config, k)
        ]
        if changed:
            warnings.warn(
                f"resuming sparse training with different settings {changed}: saved "
                f"{ {k: saved.get(k) for k in changed} }, now { {k: getattr(self.config, k) for k in changed} }",
                RuntimeWarning,
                stacklevel=2,
            )
        self.masks = {
            n: masks[n].to(device=self.params[n].device, dtype=torch.bool).clone() for n in self.params if n in masks
        }
        self._fresh = {
            n: m.to(device=self.params[n].device, dtype=torch.bool).clone()
            for n, m in state.get("fresh", {}).items()
            if n in self.params
        }
        self._fresh_age = int(state.get("fresh_age", 0))
        self.steps = int(state["steps"])
        self.updates = int(state["updates"])
        self.skipped = int(state.get("skipped", 0))
        self.generator.set_state(state["generator"])
        self._pending = 0
        self._idle = 0
        self.initialized = bool(state.get("initialized", True))
        if self.initialized:
            self.apply_masks()
        return self
