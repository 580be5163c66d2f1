"""Structural pruning of every family on Torch-Pruning's dependency graph (DepGraph), with the pruned widths
recorded as builder arguments so that a pruned model saves as safetensors + config.json and rebuilds exactly.

:func:`prune` removes channels and heads for real (smaller weight tensors, fewer MACs), not masks:

* **Channels** go through ``torch_pruning``'s :class:`~torch_pruning.DependencyGraph` and ``MetaPruner``: a
  channel is removed from every layer that reads or writes it (residual streams, depthwise convs, norms, the
  MetaFormer res-scale / layer-scale vectors and SLaK's ``gamma``, which the graph sees as parameters). The zoo
  registers a pruner for its own :class:`~zoo.layers.ChannelLayerNorm` (its ``normalized_shape`` follows the cut);
  zoo's scalar parameters (StarReLU's scale and bias, SReT's coefficients) are never pruned.
* **Heads** are removed whole by the family's plan, the graph leaving the attention projections' outputs alone:
  MetaFormer's and SReT's fused ``qkv`` rows of a head and the matching ``proj`` columns; in the language models
  whole KV groups (a key/value head with the query heads that read it), the same number in every layer, so the
  result is still a valid GQA model that ``transformers`` can load.
* **What each family prunes** is its plan's (:class:`zoo.layers.pruning.PrunePlan`, named by the family class's
  ``prune_plan``, in the family's file; this module imports no family): MetaFormer stage widths, MLP widths,
  SepConv widths and attention heads (the classifier head keeps its width); SLaK stage widths and MLP widths (the
  decomposed and the fused large kernels, BatchNorms included; the output classifier kept); SReT heads and MLP /
  NLL widths of every shared block, each pruned once for all its applications (the residual width, fixed by the
  grouped pooling convs and the position embedding, is kept); MobileLLM and the recursive LMs the hidden size
  (embeddings, tied or not, stay tied), KV groups and the MLP width, uniform across layers so that the result is a
  plain Llama-shaped config (:class:`zoo.lm.pruning.DecoderPrunePlan`); a shared block is pruned once for all its
  applications, its per-application LoRA deltas with it, and the Mixture-of-Recursions routers' inputs follow the
  hidden channels kept; ConvNet-D every block's width (its instance norm, a ``GroupNorm`` with one group per
  channel, keeps one group per kept channel; the flattened classifier loses the columns of the removed channels'
  positions). A class without a ``prune_plan`` is refused.
* **Kept widths** are rounded to multiples of ``round_to`` (8 by default: whole SIMD vectors for the CPU GEMM
  kernels and tensor-core tiles on GPU; ``None`` for exact ratios on tiny models).

Targets: ``ratio`` (the fraction of channels and heads removed), or ``target_macs`` / ``target_params``, a count
or a fraction of the dense model's (``0.5`` = half), reached by a short search over the ratio, each candidate
pruned on a copy and counted with :func:`zoo.profile.count_macs` (fvcore with the zoo's handles, the numbers
``zoo.profile`` reports) at ``example_inputs``.

The pruned architecture is data: ``model.pruned_args`` holds the builder arguments that rebuild it (per-block
``mlp_hidden``, ``mixer_hidden``, ``num_heads`` / ``attn_heads``, ``nll_hidden``, the stage ``dims``, ConvNet's
``widths``; for the
language models the config fields, which are also set on ``model.config``). :func:`zoo.publish.export_pretrained`
writes them to config.json's ``model_args``; ``zoo.create_model(folder, pretrained=True)`` rebuilds the model.
"""

import copy
import functools
import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import ChannelLayerNorm
from ..layers.pruning import NEEDS_GRADIENTS, PruneError, PrunePlan
from ..lm.decoder import DecoderLM
from ..lm.routing import LoRA
from ..profile import count_macs, count_params

__all__ = ["IMPORTANCES", "PruneError", "PruneResult", "prune", "pruned_args"]

_logger = logging.getLogger(__name__)


def _tp():
    """Torch-Pruning, imported when pruning starts: an optional dependency (``pip install "zoo[compress]"``)."""
    try:
        import torch_pruning
    except ImportError as e:
        raise ImportError('zoo.prune needs Torch-Pruning: pip install "zoo[compress]" (torch-pruning>=1.5)') from e
    return torch_pruning


# Torch-Pruning's group importance criteria by name; "taylor" and "hessian" need gradients (see ``loss_fn``)
IMPORTANCES: dict[str, Callable[[], Any]] = {
    "magnitude": lambda: _tp().importance.GroupMagnitudeImportance(p=2),
    "l1": lambda: _tp().importance.GroupMagnitudeImportance(p=1),
    "lamp": lambda: _tp().importance.LAMPImportance(p=2),
    "fpgm": lambda: _tp().importance.FPGMImportance(p=2),
    "taylor": lambda: _tp().importance.GroupTaylorImportance(),
    "hessian": lambda: _tp().importance.GroupHessianImportance(),
    "random": lambda: _tp().importance.RandomImportance(),
}


# ------------------------------------------------------------------------------------------------------------------
# The zoo's own layers, as Torch-Pruning sees them
# ------------------------------------------------------------------------------------------------------------------


def _channel_layer_norm_pruner(base: type) -> Any:
    """The pruner of :class:`~zoo.layers.ChannelLayerNorm`, a subclass of ``base``."""

    class ChannelLayerNormPruner(base):
        """:class:`~zoo.layers.ChannelLayerNorm`: weight and bias lose the pruned channels; ``normalized_shape``
        follows (a static shape is what breaks Torch-Pruning's default handling)."""

        TARGET_MODULES = ChannelLayerNorm

        def prune_out_channels(self, layer: ChannelLayerNorm, idxs: Sequence[int]) -> nn.Module:
            keep = torch.tensor(sorted(set(range(layer.weight.shape[0])) - {int(i) for i in idxs}))
            layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 0)
            if layer.bias is not None:
                layer.bias = self._prune_parameter_and_grad(layer.bias, keep, 0)
            layer.normalized_shape = (len(keep),)
            return layer

        prune_in_channels = prune_out_channels

        def get_out_channels(self, layer: ChannelLayerNorm) -> int:
            return layer.weight.shape[0]

        get_in_channels = get_out_channels

    return ChannelLayerNormPruner()


def _lora_pruner(base: type) -> Any:
    """The pruner of :class:`~zoo.lm.routing.LoRA`, a subclass of ``base``."""

    class LoRAPruner(base):
        """:class:`~zoo.lm.routing.LoRA` (``B @ A``, added to a projection): inputs are ``A``'s columns,
        outputs ``B``'s rows; the rank stays."""

        TARGET_MODULES = LoRA

        def prune_out_channels(self, layer: LoRA, idxs: Sequence[int]) -> nn.Module:
            keep = torch.tensor(sorted(set(range(layer.lora_B.shape[0])) - {int(i) for i in idxs}))
            layer.lora_B = self._prune_parameter_and_grad(layer.lora_B, keep, 0)
            return layer

        def prune_in_channels(self, layer: LoRA, idxs: Sequence[int]) -> nn.Module:
            keep = torch.tensor(sorted(set(range(layer.lora_A.shape[1])) - {int(i) for i in idxs}))
            layer.lora_A = self._prune_parameter_and_grad(layer.lora_A, keep, 1)
            return layer

        def get_out_channels(self, layer: LoRA) -> int:
            return layer.lora_B.shape[0]

        def get_in_channels(self, layer: LoRA) -> int:
            return layer.lora_A.shape[1]

    return LoRAPruner()


def _group_norm_pruner(base: type) -> Any:
    """The pruner of ``nn.GroupNorm``, a subclass of ``base``."""

    class GroupNormPruner(base):
        """``nn.GroupNorm``: Torch-Pruning's own keeps ``num_groups`` and prunes the same positions in every group;
        with one group per channel (instance norm, as in ConvNet-D) that would leave nothing to choose, so there
        the channels are free and ``num_groups`` follows the kept ones. Other group counts as Torch-Pruning does."""

        TARGET_MODULES = nn.GroupNorm

        def prune_out_channels(self, layer: nn.GroupNorm, idxs: Sequence[int]) -> nn.Module:
            per_channel = layer.num_groups == layer.num_channels
            keep = sorted(set(range(layer.num_channels)) - {int(i) for i in idxs})
            layer.num_channels = len(keep)
            if per_channel:
                layer.num_groups = len(keep)
            if layer.affine:
                layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 0)
                layer.bias = self._prune_parameter_and_grad(layer.bias, keep, 0)
            return layer

        prune_in_channels = prune_out_channels

        def get_out_channels(self, layer: nn.GroupNorm) -> int:
            return layer.num_channels

        get_in_channels = get_out_channels

        def get_out_channel_groups(self, layer: nn.GroupNorm) -> int:
            return 1 if layer.num_groups == layer.num_channels else layer.num_groups

        get_in_channel_groups = get_out_channel_groups

    return GroupNormPruner()


@functools.cache
def _custom_pruners() -> dict[type, Any]:
    """The zoo's layers that Torch-Pruning's own pruners do not handle, with theirs (classes made here, on
    Torch-Pruning's base class: it is imported only when pruning starts)."""
    base = _tp().pruner.BasePruningFunc
    return {
        ChannelLayerNorm: _channel_layer_norm_pruner(base),
        LoRA: _lora_pruner(base),
        nn.GroupNorm: _group_norm_pruner(base),
    }


# ------------------------------------------------------------------------------------------------------------------
# Families: each names its plan (zoo.layers.pruning.PrunePlan) in its class's ``prune_plan``
# ------------------------------------------------------------------------------------------------------------------


def _plan(model: nn.Module) -> PrunePlan:
    """The plan of ``model``'s family, made for this model (refused: a class that declares none)."""
    plan = getattr(type(model), "prune_plan", None)
    if plan is None:
        raise PruneError(
            f"zoo.prune does not know how to prune a {type(model).__name__}: its class declares no prune_plan "
            "(zoo.layers.pruning.PrunePlan); pass the model itself, not a features_only / compiled / DDP wrapper"
        )
    return plan(model)


def pruned_args(model: nn.Module) -> dict[str, Any]:
    """The builder arguments that rebuild ``model``'s current widths (what :func:`prune` records)."""
    return _plan(model).widths()


# ------------------------------------------------------------------------------------------------------------------
# Pruning at one ratio
# ------------------------------------------------------------------------------------------------------------------


def _is_lm(model: nn.Module) -> bool:
    return isinstance(model, DecoderLM)


def default_inputs(model: nn.Module, image_size: int | None = None, tokens: int = 32) -> torch.Tensor:
    """A small example batch: one image at the model's cfg size (or ``image_size``), or ``tokens`` token ids."""
    if _is_lm(model):
        return torch.randint(0, model.config.vocab_size, (1, tokens), generator=torch.Generator().manual_seed(0))
    size = (getattr(model, "pretrained_cfg", None) or {}).get("input_size") or (3, 224, 224)
    if image_size is not None:
        size = (size[0], image_size, image_size)
    return torch.randn(1, *size, generator=torch.Generator().manual_seed(0))


def _default_loss(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    """What taylor importance differentiates when no ``loss_fn`` is given: next-token cross-entropy on the
    example ids (LMs), the cross-entropy of the model's own predictions (classifiers)."""
    out = model(inputs)
    logits = out.logits if hasattr(out, "logits") else out
    if _is_lm(model):
        return F.cross_entropy(logits[:, :-1].flatten(0, 1), inputs[:, 1:].flatten())
    return F.cross_entropy(logits, logits.detach().argmax(-1))


def _gradients(model, inputs, loss_fn) -> None:
    model.zero_grad(set_to_none=True)
    with torch.enable_grad():
        (loss_fn or _default_loss)(model, inputs).backward()


def _prune_at(
    model: nn.Module,
    ratio: float,
    importance: str,
    inputs: torch.Tensor,
    ignore: Sequence[nn.Module],
    round_to: int | None,
    iterative_steps: int,
    loss_fn,
    mlp_ratio: float | None = None,
) -> None:
    """Prune ``model`` in place: whole heads at ``ratio``, then channels at ``ratio`` through the graph (the MLP
    widths at ``mlp_ratio`` when given: the fine step of a MACs / params target)."""
    plan = _plan(model)
    gen = torch.Generator().manual_seed(0)
    was_training = model.training
    model.eval()
    if ratio <= 0:
        return
    if importance in NEEDS_GRADIENTS:
        _gradients(model, inputs, loss_fn)
    kept = {id(m) for root in ignore for m in root.modules()}  # ``ignore``: their heads stay too
    plan.heads(ratio, importance, gen, kept)
    plan.start()
    ignored = list(plan.ignored()) + list(ignore)
    scalars = [p for p in model.parameters() if p.numel() == 1]
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(0)  # random importance: the same choice for the same call
        # the graph lists the parameters it sees outside known layers (norm and scale vectors): expected here
        warnings.filterwarnings("ignore", message=r"Unwrapped parameters detected", category=UserWarning)
        warnings.filterwarnings("ignore", message=r"Maximum recursive depth reached", category=UserWarning)
        pruner = _tp().pruner.MetaPruner(
            model,
            example_inputs=inputs,
            importance=IMPORTANCES[importance](),
            pruning_ratio=ratio,
            pruning_ratio_dict=None if mlp_ratio is None else dict.fromkeys(plan.mlps(), mlp_ratio),
            iterative_steps=iterative_steps,
            ignored_layers=ignored + plan.ignored_params() + scalars,
            round_to=round_to,
            customized_pruners=_custom_pruners(),
            forward_fn=plan.trace,
        )
        for _ in range(iterative_steps):
            if importance in NEEDS_GRADIENTS:
                _gradients(model, inputs, loss_fn)
            pruner.step()
    model.zero_grad(set_to_none=True)
    plan.finish()
    model.pruned_args = plan.widths()
    model.train(was_training)


# ------------------------------------------------------------------------------------------------------------------
# The public entry: a ratio, or a MACs / params target reached by search
# ------------------------------------------------------------------------------------------------------------------


@dataclass
class PruneResult:
    """What :func:`prune` did (also kept as ``model.prune_report``)."""

    ratio: float
    mlp_ratio: float | None  # the MLP widths' own ratio, where a target needed a finer step
    importance: str
    round_to: int | None
    params_before: int
    params_after: int
    macs_before: int | None
    macs_after: int | None
    input_size: tuple[int, ...]
    target: dict[str, Any] | None
    args: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _macs(model: nn.Module, inputs: torch.Tensor) -> int:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if _is_lm(model):  # position tables are built outside the count (as zoo.profile does)
                model(inputs)
            return count_macs(model, (inputs,))[0]
    finally:
        model.train(was_training)


def _check_args(ratio, target_macs, target_params, importance, round_to, iterative_steps):
    given = [
        n
        for n, v in (("ratio", ratio), ("target_macs", target_macs), ("target_params", target_params))
        if v is not None
    ]
    if len(given) != 1:
        raise PruneError(
            "give exactly one of ratio= (fraction of channels and heads to remove, e.g. 0.5), target_macs= or "
            f"target_params= (a count, or a fraction of the dense model's such as 0.5); got {given or 'none'}"
        )
    if ratio is not None and not (isinstance(ratio, (int, float)) and 0 < ratio < 1):
        raise PruneError(f"ratio must be a number in (0, 1) (the fraction of channels removed), got {ratio!r}")
    for name, value in (("target_macs", target_macs), ("target_params", target_params)):
        if value is not None and not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
            raise PruneError(f"{name} must be a positive count or a fraction in (0, 1), got {value!r}")
    if importance not in IMPORTANCES:
        raise PruneError(f"unknown importance {importance!r}; choose one of {', '.join(IMPORTANCES)}")
    if round_to is not None and not (isinstance(round_to, int) and round_to >= 1):
        raise PruneError(f"round_to must be a positive int or None, got {round_to!r}")
    if not (isinstance(iterative_steps, int) and iterative_steps >= 1):
        raise PruneError(f"iterative_steps must be a positive int, got {iterative_steps!r}")


def _ignored_modules(model: nn.Module, ignore) -> list[nn.Module]:
    """``ignore`` as modules of ``model``: modules, or their dotted names (``"head"``, ``"stages.0.blocks.1"``);
    anything that is not part of ``model`` is refused (it would silently keep nothing)."""
    if isinstance(ignore, (str, nn.Module)):
        ignore = [ignore]
    names = {id(m): n for n, m in model.named_modules()}
    modules = []
    for item in ignore or []:
        if isinstance(item, str):
            try:
                item = model.get_submodule(item)
            except AttributeError:
                tops = ", ".join(n for n, _ in model.named_children())
                raise PruneError(
                    f"ignore= names {item!r}, which is no module of this {type(model).__name__} (its top-level "
                    f"modules: {tops}; nested ones by dotted name, e.g. 'stages.0')"
                ) from None
        elif not isinstance(item, nn.Module):
            raise PruneError(f"ignore= takes modules of the model or their names, got {type(item).__name__} {item!r}")
        elif id(item) not in names:
            raise PruneError(
                f"ignore= holds a {type(item).__name__} that is not part of this {type(model).__name__} (a module "
                "of another model, or a copy?); pass this model's own modules or their names"
            )
        modules.append(item)
    return modules


def _refuse_quantized(model: nn.Module) -> None:
    """Pruning takes float weights only."""
    if any(not p.is_floating_point() for p in model.parameters()) or any(
        "Quantized" in type(m).__name__ for m in model.modules()
    ):
        raise PruneError("prune the float model, then quantize it (quantized weights cannot be pruned)")


def _ratio_for_target(model, kind, value, dense, importance, inputs, ignore, round_to, steps, loss_fn, tolerance):
    """``(ratio, mlp_ratio, target report)`` reaching ``target_{kind}=value`` (a count, or a fraction of the
    ``dense`` model's when below 1), found by :func:`_search`."""
    goal = value * dense if value < 1 else float(value)
    if goal >= dense:
        raise PruneError(f"target_{kind}={value} is not below the dense model's {dense:,} {kind}: nothing to prune")
    ratio, mlp_ratio = _search(
        model, kind, goal, dense, importance, inputs, ignore, round_to, steps, loss_fn, tolerance
    )
    return ratio, mlp_ratio, {"kind": kind, "value": value, "goal": int(goal)}


def prune(
    model: nn.Module,
    ratio: float | None = None,
    target_macs: float | None = None,
    target_params: float | None = None,
    importance: str = "magnitude",
    example_inputs: torch.Tensor | None = None,
    ignore: Sequence[nn.Module | str] | None = None,
    round_to: int | None = 8,
    iterative_steps: int = 1,
    loss_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
    tolerance: float = 0.01,
) -> nn.Module:
    """Structurally prune a zoo model in place and return it (see the module docstring).

    Args:
        model: a model of a supported family (``zoo.create_model(...)``), float weights.
        ratio: the fraction of channels and heads to remove from every prunable group, in (0, 1).
        target_macs, target_params: instead of ``ratio``, the MACs (at ``example_inputs``) or parameters to reach:
            a count, or a fraction of the dense model's when below 1 (``0.5`` = half). Reached within
            ``tolerance`` (relative) where the rounded widths allow; otherwise the closest ratio found, and a
            :class:`PruneError` when the target lies beyond what pruning can remove.
        importance: ``magnitude`` (L2), ``l1``, ``lamp``, ``fpgm``, ``taylor``, ``hessian`` or ``random``
            (Torch-Pruning's group criteria for channels; heads are ranked by L2 magnitude, by |w * grad| for
            ``taylor`` / ``hessian``, or at random).
        example_inputs: the batch the dependency graph is traced with and MACs are counted at (default: one
            image at the model's cfg size, or 32 token ids).
        ignore: modules whose output channels are kept, or their dotted names in the model (``"head"``).
        round_to: kept widths are multiples of this (8 by default); None for exact ratios.
        iterative_steps: prune channels in this many steps, importance re-estimated between them (whole heads go
            in the first; for fine-tuning between steps, call ``prune`` repeatedly with growing ratios).
        loss_fn: ``loss_fn(model, inputs) -> loss`` for the gradient-based criteria (default: see
            :func:`_default_loss`).

    The result records its architecture in ``model.pruned_args`` and what was done in ``model.prune_report``.
    """
    _check_args(ratio, target_macs, target_params, importance, round_to, iterative_steps)
    _plan(model)
    _refuse_quantized(model)
    inputs = default_inputs(model) if example_inputs is None else example_inputs
    device = next(model.parameters()).device
    inputs = inputs.to(device)
    ignore = _ignored_modules(model, ignore)
    params_before = count_params(model)["params"]
    macs_before = _macs(model, inputs)
    target, mlp_ratio = None, None
    if ratio is None:
        kind, value = ("macs", target_macs) if target_macs is not None else ("params", target_params)
        dense = macs_before if kind == "macs" else params_before
        ratio, mlp_ratio, target = _ratio_for_target(
            model, kind, value, dense, importance, inputs, ignore, round_to, iterative_steps, loss_fn, tolerance
        )
    _prune_at(model, ratio, importance, inputs, ignore, round_to, iterative_steps, loss_fn, mlp_ratio)
    report = PruneResult(
        ratio=float(ratio),
        mlp_ratio=mlp_ratio,
        importance=importance,
        round_to=round_to,
        params_before=params_before,
        params_after=count_params(model)["params"],
        macs_before=macs_before,
        macs_after=_macs(model, inputs),
        input_size=tuple(inputs.shape),
        target=target,
        args=dict(model.pruned_args),
    )
    model.prune_report = report
    return model


def _search(model, kind, goal, dense, importance, inputs, ignore, round_to, steps, loss_fn, tolerance):
    """``(ratio, mlp_ratio)`` whose pruned copy lands closest to ``goal``: secant steps on the measured cost over
    one ratio for everything, then, where rounding makes that too coarse, over the MLP widths' own ratio (the
    largest groups: the finest steps) with everything else at the last ratio above the goal."""

    def cost(r: float, r_mlp: float | None = None) -> float:
        trial = copy.deepcopy(model)
        _prune_at(trial, r, importance, inputs, ignore, round_to, steps, loss_fn, r_mlp)
        c = float(_macs(trial, inputs) if kind == "macs" else count_params(trial)["params"])
        _logger.info("prune search: ratio %.4f, MLP ratio %s -> %s %.0f (goal %.0f)", r, r_mlp, kind, c, goal)
        return c

    r_max = 0.95
    found, lo = _secant(cost, goal, dense, 0.0, 1.0 - math.sqrt(goal / dense), r_max, tolerance)
    if abs(found[1] - goal) <= tolerance * goal:
        return found[0], None
    if lo[0] >= r_max:
        raise PruneError(
            f"target {kind} {goal:,.0f} is out of reach: removing {r_max:.0%} of every prunable group leaves "
            f"{lo[1]:,.0f} of {dense:,} (what is not pruned: stems, classifiers, embeddings' vocabulary, "
            "fixed-width layers). Ask for less."
        )
    base = lo[0]  # everything at the last ratio above the goal; the MLPs go further
    fine, _ = _secant(lambda r: cost(base, r), goal, lo[1], base, min(base + 0.1, r_max), r_max, tolerance)
    best = min((found, fine), key=lambda rc: abs(rc[1] - goal))
    if abs(best[1] - goal) > 0.05 * goal:
        raise PruneError(
            f"could not reach {kind} {goal:,.0f}: the closest was {best[1]:,.0f} (round_to={round_to} makes the "
            "widths coarse; try a smaller round_to, or 0 / None for exact widths)"
        )
    return (found[0], None) if best is found else (base, fine[0])


def _secant(cost, goal, c_start, r_start, r, r_max, tolerance, tries=8):
    """Secant steps on a decreasing ``cost(r)`` from ``(r_start, c_start)`` towards ``goal``.
    Returns ``(best (r, cost), last (r, cost) above the goal)``."""
    lo, hi = (r_start, c_start), None  # (ratio, cost) pairs bracketing the goal
    prev, best, seen = lo, None, set()
    for _ in range(tries):
        r = min(max(r, r_start + 1e-3), r_max)
        c = cost(r)
        if c in seen and hi is not None:  # the same widths again: rounding leaves nothing between the bracket's ends
            break
        seen.add(c)
        if best is None or abs(c - goal) < abs(best[1] - goal):
            best = (r, c)
        if abs(c - goal) <= tolerance * goal:
            break
        if c > goal:
            prev, lo = lo, (r, c)
            if r >= r_max:
                break
        else:
            hi = (r, c)
        if hi is None:  # all above the goal: extrapolate the secant through the last two points (a little further,
            # since the cost falls ever more slowly), or shrink the remaining width by sqrt(goal / cost)
            (ra, ca), (rb, cb) = prev, lo
            step = (cb - goal) * (rb - ra) / (ca - cb) if ca > cb else (1.0 - rb) * (1.0 - math.sqrt(goal / cb))
            r = rb + 1.2 * max(step, 0.01)
            continue
        (r0, c0), (r1, c1) = lo, hi  # secant between the bracket's ends, kept strictly inside it
        if r1 - r0 < 1e-3:
            break
        guess = r0 + (c0 - goal) * (r1 - r0) / max(c0 - c1, 1e-9)
        r = min(max(guess, r0 + 0.1 * (r1 - r0)), r1 - 0.1 * (r1 - r0))
    return best, lo
