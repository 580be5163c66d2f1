"""The masking engine of dynamic sparse training (:class:`DynamicSparsity`); :mod:`zoo.train.sparse` describes
the procedure and where it differs from SLaK's."""

import logging
import math
import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from .allocation import allocate_densities, cosine, erk_scores, snip_counts
from .comm import broadcast_masks, sync_generator
from .config import Selector, SparseConfig, selected_params, unwrap_model

__all__ = ["DynamicSparsity"]

_logger = logging.getLogger(__name__)

STATE_FORMAT = "zoo.sparse/1"
# step() calls in a row without an optimizer step before a warning says the masks are not being updated
IDLE_WARN_CALLS = 100


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
        self.model = unwrap_model(model)
        self.optimizer = optimizer
        self.process_group = process_group
        self.params = selected_params(self.model, config, selector)
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
        sync_generator(self.generator, self.process_group)
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
            counts = snip_counts(
                self.model, list(self.params.values()), batch, loss_fn, cfg.density, self.process_group
            )
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
        broadcast_masks(masks, None, self.process_group)
        self.masks = masks
        self.initialized = True
        self._pending = 0
        self.apply_masks()
        _logger.info("sparse init %s: %s", cfg.init, self.summary(short=True))
        return self

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
            params = selected_params(model, config, selector)
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
        broadcast_masks(self.masks, None, self.process_group)
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
        return cosine(self.steps if step is None else step, self.total_steps, cfg.prune_rate, cfg.final_prune_rate)

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
            k = math.ceil(rate * int(mask.sum()))
            if k == 0:
                continue
            new_masks[name], grown_all[name] = _prune_and_regrow(name, self.params[name], mask, k, cfg, self.generator)
        broadcast_masks(new_masks, grown_all, self.process_group)
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

    @torch.no_grad()
    def apply_to_ema(self, ema: nn.Module):
        """Make an EMA model follow the masks: pruned weights become zero, weights grown at the last update take
        the model's value (at the update step and the next optimizer step) instead of averaging up from zero.

        ``ema``: timm's ``ModelEmaV2/V3`` (its ``.module`` is used) or a plain copy of the model. Call it after
        every EMA update.
        """
        self._require_init("apply_to_ema")
        module = ema.module if isinstance(getattr(ema, "module", None), nn.Module) else ema
        module = unwrap_model(module)
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
        masks = _checked_masks(state, self.params, self.config)
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


def _prune_and_regrow(
    name: str, p: nn.Parameter, mask: torch.Tensor, k: int, cfg: SparseConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """One layer's new mask and its grown positions: the ``k`` active weights of smallest magnitude pruned, ``k``
    inactive positions regrown (at random, or where the gradient is largest)."""
    flat = mask.flatten()
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
            pick = torch.randperm(zeros.numel(), generator=generator)[:k].to(zeros.device)
            grow[zeros[pick]] = True
        else:
            prob = k / zeros.numel()
            draw = (torch.rand(flat.numel(), generator=generator) < prob).to(flat.device)
            grow = draw & ~pruned
    return (pruned | grow).view_as(mask), grow.view_as(mask)


def _checked_masks(state: Mapping[str, Any], params: dict[str, nn.Parameter], config: SparseConfig):
    """The masks of a saved :meth:`DynamicSparsity.state_dict`, checked against the selected weights (a warning
    when the saved settings differ from ``config``)."""
    if not isinstance(state, Mapping) or state.get("format") != STATE_FORMAT:
        raise ValueError(
            f"not a DynamicSparsity state (expected format {STATE_FORMAT!r}); to rebuild masks from "
            "a checkpoint's zeros use set_masks(DynamicSparsity.masks_from_weights(model))"
        )
    masks = state["masks"]
    bad = [n for n in masks if n not in params]
    if bad:
        raise KeyError(
            f"the sparse state has masks for weights this model does not select: {bad[:5]}; build "
            "DynamicSparsity with the same model and sparse settings as the saved run"
        )
    for n, m in masks.items():
        if tuple(m.shape) != tuple(params[n].shape):
            raise ValueError(f"saved mask {n!r} has shape {tuple(m.shape)}, the weight has {tuple(params[n].shape)}")
    saved = state.get("config", {})
    changed = [k for k in ("density", "init", "growth", "only_large_kernels") if saved.get(k) != getattr(config, k)]
    if changed:
        warnings.warn(
            f"resuming sparse training with different settings {changed}: saved "
            f"{ {k: saved.get(k) for k in changed} }, now { {k: getattr(config, k) for k in changed} }",
            RuntimeWarning,
            stacklevel=3,
        )
    return masks
