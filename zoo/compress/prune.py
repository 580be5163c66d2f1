"""Structural pruning of every family on Torch-Pruning's dependency graph (DepGraph), with the pruned widths
recorded as builder arguments so that a pruned model saves as safetensors + config.json and rebuilds exactly.

:func:`prune` removes channels and heads for real (smaller weight tensors, fewer MACs), not masks:

* **Channels** go through ``torch_pruning``'s :class:`~torch_pruning.DependencyGraph` and ``MetaPruner``: a
  channel is removed from every layer that reads or writes it (residual streams, depthwise convs, norms, the
  MetaFormer res-scale / layer-scale vectors and SLaK's ``gamma``, which the graph sees as parameters). The zoo
  registers a pruner for its own :class:`~zoo.layers.ChannelLayerNorm` (its ``normalized_shape`` follows the cut);
  zoo's scalar parameters (StarReLU's scale and bias, SReT's coefficients) are never pruned.
* **Heads** are removed whole by the zoo (:func:`_prune_heads`), the graph leaving the attention projections'
  outputs alone: MetaFormer's and SReT's fused ``qkv`` rows of a head and the matching ``proj`` columns; in the
  language models whole KV groups (a key/value head with the query heads that read it), the same number in every
  layer, so the result is still a valid GQA model that ``transformers`` can load.
* **What each family prunes** (:data:`ADAPTERS`): MetaFormer stage widths, MLP widths, SepConv widths and
  attention heads (the classifier head keeps its width); SLaK stage widths and MLP widths (the decomposed and the
  fused large kernels, BatchNorms included; the output classifier kept); SReT heads and MLP / NLL widths of every
  shared block, each pruned once for all its applications (the residual width, fixed by the grouped pooling convs
  and the position embedding, is kept); MobileLLM and the recursive LMs the hidden size (embeddings, tied or not,
  stay tied), KV groups and the MLP width, uniform across layers so that the result is a plain Llama-shaped config;
  a shared block is pruned once for all its applications, its per-application LoRA deltas with it, and the
  Mixture-of-Recursions routers' inputs follow the hidden channels kept; ConvNet-D every block's width (its
  instance norm, a ``GroupNorm`` with one group per channel, keeps one group per kept channel; the flattened
  classifier loses the columns of the removed channels' positions).
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
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import ChannelLayerNorm
from ..layers.large_kernel import DecomposedLargeKernel, FusedLargeKernel
from ..layers.lm import GroupedQueryAttention
from ..lm.decoder import DecoderLM
from ..lm.routing import LoRA
from ..models.convnet import ConvNet
from ..models.metaformer import Attention as MetaFormerAttention
from ..models.metaformer import MetaFormer, MlpHead, SepConv
from ..models.mobilellm import MobileLLM
from ..models.recursive import RecursiveLM
from ..models.slak import SLaK
from ..models.sret import SReT
from ..profile import count_macs, count_params

__all__ = ["IMPORTANCES", "PruneError", "PruneResult", "prune", "pruned_args"]

_logger = logging.getLogger(__name__)


class PruneError(ValueError):
    """The pruning request cannot be met (bad arguments, an unsupported model, a target out of reach)."""


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
_NEEDS_GRADIENTS = ("taylor", "hessian")


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
# Heads: whole heads (and whole KV groups) by the zoo; the graph leaves the attention outputs alone
# ------------------------------------------------------------------------------------------------------------------


def _keep_rows(layer: nn.Linear, rows: torch.Tensor) -> None:
    layer.weight = nn.Parameter(layer.weight.data[rows].clone(), requires_grad=layer.weight.requires_grad)
    if layer.bias is not None:
        layer.bias = nn.Parameter(layer.bias.data[rows].clone(), requires_grad=layer.bias.requires_grad)
    layer.out_features = len(rows)


def _keep_cols(layer: nn.Linear, cols: torch.Tensor) -> None:
    layer.weight = nn.Parameter(layer.weight.data[:, cols].clone(), requires_grad=layer.weight.requires_grad)
    layer.in_features = len(cols)


def _score(weights: Sequence[torch.Tensor], importance: str, generator: torch.Generator) -> torch.Tensor:
    """One score per leading index of each (units, ...) tensor, summed over the tensors: L2 magnitude, or
    |w * grad| (taylor / hessian) where gradients are there, or random."""
    n = weights[0].shape[0]
    if importance == "random":
        return torch.rand(n, generator=generator)
    total = torch.zeros(n)
    for w in weights:
        grad = getattr(w, "_prune_grad", None)
        value = (w * grad).abs() if importance in _NEEDS_GRADIENTS and grad is not None else w.pow(2)
        total += value.detach().float().reshape(n, -1).sum(1).cpu()
    return total


def _kept(n: int, ratio: float) -> int:
    return max(1, min(n, round(n * (1.0 - ratio))))


def _fused_qkv_heads(attn: nn.Module, qkv: nn.Linear, proj: nn.Linear, ratio: float, importance: str, gen) -> int:
    """Keep the best heads of a fused (3, heads, head_dim) qkv and its output projection; returns the count."""
    h, d = attn.num_heads, attn.head_dim
    keep_n = _kept(h, ratio)
    if keep_n == h:
        return h
    w = qkv.weight.reshape(3, h, d, -1).transpose(0, 1)  # (heads, 3, d, in)
    _tag_grad(w, qkv.weight, lambda g: g.reshape(3, h, d, -1).transpose(0, 1))
    wo = proj.weight.reshape(proj.out_features, h, d).transpose(0, 1)  # (heads, out, d)
    _tag_grad(wo, proj.weight, lambda g: g.reshape(proj.out_features, h, d).transpose(0, 1))
    scores = _score([w, wo], importance, gen)
    heads = scores.topk(keep_n).indices.sort().values
    within = (heads[:, None] * d + torch.arange(d)).reshape(-1)  # kept (head, d) positions
    _keep_rows(qkv, torch.cat([s * h * d + within for s in range(3)]))
    _keep_cols(proj, within)
    attn.num_heads = keep_n
    if hasattr(attn, "attention_dim"):
        attn.attention_dim = keep_n * d
    return keep_n


def _tag_grad(view: torch.Tensor, param: torch.Tensor, reshape: Callable) -> None:
    if param.grad is not None:
        view._prune_grad = reshape(param.grad)


def _gqa_groups(
    attn: GroupedQueryAttention, keep_groups: int, importance: str, gen, loras: Sequence[nn.ModuleDict] = ()
) -> None:
    """Keep ``keep_groups`` whole KV groups (the KV head and the query heads that read it) of one layer."""
    kv, h, d = attn.num_kv_heads, attn.num_heads, attn.head_dim
    rep = h // kv
    if keep_groups == kv:
        return
    parts = []
    for proj, heads in ((attn.q_proj, h), (attn.k_proj, kv), (attn.v_proj, kv)):
        w = proj.weight.reshape(kv, heads // kv * d, -1)
        _tag_grad(w, proj.weight, lambda g, heads=heads: g.reshape(kv, heads // kv * d, -1))
        parts.append(w)
    wo = attn.o_proj.weight.reshape(attn.o_proj.out_features, kv, rep * d).transpose(0, 1)
    _tag_grad(wo, attn.o_proj.weight, lambda g: g.reshape(attn.o_proj.out_features, kv, rep * d).transpose(0, 1))
    parts.append(wo)
    groups = _score(parts, importance, gen).topk(keep_groups).indices.sort().values
    q_rows = (groups[:, None] * rep * d + torch.arange(rep * d)).reshape(-1)
    kv_rows = (groups[:, None] * d + torch.arange(d)).reshape(-1)
    _keep_rows(attn.q_proj, q_rows)
    _keep_rows(attn.k_proj, kv_rows)
    _keep_rows(attn.v_proj, kv_rows)
    _keep_cols(attn.o_proj, q_rows)
    attn.num_heads, attn.num_kv_heads = keep_groups * rep, keep_groups
    for deltas in loras:  # the per-application LoRA deltas of a shared block follow its heads
        for name, rows in (("q_proj", q_rows), ("k_proj", kv_rows), ("v_proj", kv_rows)):
            if name in deltas:
                deltas[name].lora_B = nn.Parameter(deltas[name].lora_B.data[rows].clone())
        if "o_proj" in deltas:
            deltas["o_proj"].lora_A = nn.Parameter(deltas["o_proj"].lora_A.data[:, q_rows].clone())


# ------------------------------------------------------------------------------------------------------------------
# Families: what the graph must leave alone, how heads go, how the pruned widths are recorded
# ------------------------------------------------------------------------------------------------------------------


@dataclass
class Adapter:
    """How :func:`prune` treats one family."""

    kinds: tuple[type, ...]
    ignored: Callable[[nn.Module], list[nn.Module]]  # layers whose outputs the graph must not prune
    heads: Callable[..., None]  # whole-head pruning: (model, ratio, importance, generator, ids of kept modules)
    describe: Callable[[nn.Module], dict[str, Any]]  # the builder arguments of the pruned architecture
    ignored_params: Callable[[nn.Module], list[nn.Parameter]] = field(default=lambda m: [])
    forward_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None  # how the graph is traced
    mlps: Callable[[nn.Module], list[nn.Module]] = field(default=lambda m: [])  # MLP input layers (fine steps)


def _classifier(model: nn.Module) -> list[nn.Module]:
    head = getattr(model, "head", None)
    fc = getattr(head, "fc", None)
    return [fc] if isinstance(fc, nn.Module) else []


def _per_block(values: list) -> list | None:
    return values if any(v is not None for v in values) else None


# -- MetaFormer -----------------------------------------------------------------------------------------------------


def _metaformer_blocks(model: MetaFormer) -> list[nn.Module]:
    return [b for stage in model.stages for b in stage.blocks]


def _metaformer_ignored(model: MetaFormer) -> list[nn.Module]:
    attn = [b.token_mixer.qkv for b in _metaformer_blocks(model) if isinstance(b.token_mixer, MetaFormerAttention)]
    return _classifier(model) + attn


def _metaformer_heads(model: MetaFormer, ratio: float, importance: str, gen, kept: set[int]) -> None:
    for b in _metaformer_blocks(model):
        if isinstance(b.token_mixer, MetaFormerAttention) and id(b.token_mixer.qkv) not in kept:
            _fused_qkv_heads(b.token_mixer, b.token_mixer.qkv, b.token_mixer.proj, ratio, importance, gen)


def _metaformer_describe(model: MetaFormer) -> dict[str, Any]:
    blocks = _metaformer_blocks(model)
    dims = [stage.blocks[0].mlp.fc1.in_features for stage in model.stages]
    args: dict[str, Any] = {"dims": dims, "mlp_hidden": [b.mlp.fc1.out_features for b in blocks]}
    mixer = _per_block(
        [b.token_mixer.pwconv1.out_features if isinstance(b.token_mixer, SepConv) else None for b in blocks]
    )
    heads = _per_block(
        [b.token_mixer.num_heads if isinstance(b.token_mixer, MetaFormerAttention) else None for b in blocks]
    )
    if mixer:
        args["mixer_hidden"] = mixer
    if isinstance(model.head.fc, MlpHead):
        args["head_hidden"] = model.head.fc.fc1.out_features
    if heads:
        args["num_heads"] = heads
    return args


def _metaformer_params(model: MetaFormer) -> list[nn.Parameter]:
    # RandFormer's frozen (tokens x tokens) mixing matrices are sized by the token count, not by channels
    return [m.random_matrix for m in model.modules() if hasattr(m, "random_matrix")]


# -- SLaK -------------------------------------------------------------------------------------------------------------


def _slak_describe(model: SLaK) -> dict[str, Any]:
    dims = [stage.blocks[0].norm.weight.shape[0] for stage in model.stages]
    hidden = [b.mlp.fc1.out_features for stage in model.stages for b in stage.blocks]
    return {"dims": dims, "width_factor": 1.0, "mlp_hidden": hidden}


# -- SReT -------------------------------------------------------------------------------------------------------------


def _sret_blocks(model: SReT) -> list[nn.Module]:
    return [b for stage in model.stages for b in stage.stack.blocks]


def _sret_ignored(model: SReT) -> list[nn.Module]:
    # the residual width stays: it is fixed by the grouped pooling convs and the position embedding
    keep = _classifier(model) + [model.stem] + [s.downsample for s in model.stages]
    for stage in model.stages:
        for b in stage.stack.blocks:
            keep += [b.attn.qkv, b.attn.proj, b.mlp.fc2]
        keep += [nll.mlp.fc2 for nll in stage.stack.step_layers]
    return keep


def _sret_heads(model: SReT, ratio: float, importance: str, gen, kept: set[int]) -> None:
    for b in _sret_blocks(model):
        if id(b.attn.qkv) not in kept:
            _fused_qkv_heads(b.attn, b.attn.qkv, b.attn.proj, ratio, importance, gen)


def _sret_describe(model: SReT) -> dict[str, Any]:
    blocks = _sret_blocks(model)
    nlls = [nll for stage in model.stages for nll in stage.stack.step_layers]
    return {
        "attn_heads": [b.attn.num_heads for b in blocks],
        "mlp_hidden": [b.mlp.fc1.out_features for b in blocks],
        "nll_hidden": [nll.mlp.fc1.out_features for nll in nlls],
    }


# -- ConvNet-D --------------------------------------------------------------------------------------------------------


def _convnet_describe(model: ConvNet) -> dict[str, Any]:
    return {"widths": model.widths}


# -- language models --------------------------------------------------------------------------------------------------


def _lm_attention(model: DecoderLM) -> list[GroupedQueryAttention]:
    return [m for m in model.modules() if isinstance(m, GroupedQueryAttention)]


def _lm_ignored(model: DecoderLM) -> list[nn.Module]:
    keep = [model.lm_head] if isinstance(getattr(model, "lm_head", None), nn.Module) else []
    keep += [m for r in getattr(model, "routers", []) for m in r.modules() if isinstance(m, nn.Linear)]
    for attn in _lm_attention(model):
        keep += [attn.q_proj, attn.k_proj, attn.v_proj]
    return keep


def _lm_heads(model: DecoderLM, ratio: float, importance: str, gen, kept: set[int]) -> None:
    skipped = [id(layer.self_attn.q_proj) in kept for layer in model.model.layers]
    if any(skipped):
        if not all(skipped):
            raise PruneError(
                "ignore= holds the attention of some layers only: a language model keeps one head count for every "
                "layer, so ignore every layer's attention (or none)"
            )
        return
    keep = _kept(model.config.num_key_value_heads, ratio)
    for block, layer in enumerate(model.model.layers):
        loras = []
        if isinstance(model, RecursiveLM):  # deltas of every application of this shared block
            loras = [model.lora[str(i)] for i, b in enumerate(model.schedule) if b == block and str(i) in model.lora]
        _gqa_groups(layer.self_attn, keep, importance, gen, loras)


def _lm_forward(model: DecoderLM, ids: torch.Tensor) -> torch.Tensor:
    """The trace of a language model: its output head as a module call (an untied ``lm_head``, whose inputs are
    the hidden channels), or, tied, the final hidden states (the embedding the head shares is in the graph; read
    through ``F.linear`` the shared matrix would tie the hidden channels to the logits' sequence axis)."""
    head = model.lm_head
    routers = list(getattr(model, "routers", []))
    for router in routers:  # scores scale the hidden states by broadcasting, which the graph would read as
        router.__dict__["forward"] = lambda x, net=router.net: net(x).detach()  # channels: see _prune_routers
    # (B, hidden) for the tied case: the graph reads an output's channels on its axis 1
    model.__dict__["logits"] = head if head is not None else (lambda h: h.mean(1))  # shadows the method, this call
    try:
        return model(ids)
    finally:
        del model.__dict__["logits"]
        for router in routers:
            del router.__dict__["forward"]


def _embedding_signature(model: nn.Module) -> torch.Tensor | None:
    """A few embedding rows: their columns identify the hidden channels that pruning keeps (_prune_routers)."""
    if not getattr(model, "routers", None):
        return None
    weight = model.get_input_embeddings().weight.detach()
    rows = torch.randperm(weight.shape[0], generator=torch.Generator().manual_seed(0))[:32]
    return weight[rows].clone(), rows


def _prune_routers(model: nn.Module, signature) -> None:
    """The routers' inputs follow the hidden channels the graph kept (found by matching embedding columns)."""
    if signature is None:
        return
    before, rows = signature
    after = model.get_input_embeddings().weight.detach()[rows]
    if after.shape[1] == before.shape[1]:
        return
    same = (after.T[:, None, :] == before.T[None, :, :]).all(-1)  # (kept, original)
    if not bool((same.sum(1) >= 1).all()):
        raise PruneError("could not match the kept hidden channels for the routers")
    kept = same.float().argmax(1)
    for router in model.routers:
        linears = [m for m in router.net.modules() if isinstance(m, nn.Linear)]
        _keep_cols(linears[0], kept)
        if len(linears) == 2:  # an "mlp" router is dim -> dim -> scores: its inner width follows the hidden
            _keep_rows(linears[0], kept)
            _keep_cols(linears[1], kept)


def _lm_describe(model: DecoderLM) -> dict[str, Any]:
    c = model.config
    layers = _lm_attention(model)
    mlps = [layer.mlp for layer in model.model.layers]
    widths = {m.gate_proj.out_features for m in mlps}
    if len(widths) != 1 or len({a.num_kv_heads for a in layers}) != 1:
        raise PruneError("the language model's layers were pruned to different widths; zoo.prune keeps them equal")
    c.hidden_size = (
        model.get_input_embeddings().weight.shape[1]
        if hasattr(model, "get_input_embeddings")
        else (layers[0].q_proj.in_features)
    )
    c.intermediate_size = widths.pop()
    c.num_attention_heads, c.num_key_value_heads = layers[0].num_heads, layers[0].num_kv_heads
    return {
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "head_dim": c.head_dim,
    }


ADAPTERS: tuple[Adapter, ...] = (
    Adapter(
        (MetaFormer,),
        _metaformer_ignored,
        _metaformer_heads,
        _metaformer_describe,
        _metaformer_params,
        mlps=lambda m: [b.mlp.fc1 for b in _metaformer_blocks(m)],
    ),
    Adapter(
        (SLaK,),
        _classifier,
        lambda *a: None,
        _slak_describe,
        mlps=lambda m: [b.mlp.fc1 for s in m.stages for b in s.blocks],
    ),
    Adapter(
        (SReT,),
        _sret_ignored,
        _sret_heads,
        _sret_describe,
        lambda m: [m.pos_embed],
        mlps=lambda m: [x.mlp.fc1 for s in m.stages for x in (*s.stack.blocks, *s.stack.step_layers)],
    ),
    Adapter((ConvNet,), _classifier, lambda *a: None, _convnet_describe),
    Adapter(
        (MobileLLM, RecursiveLM),
        _lm_ignored,
        _lm_heads,
        _lm_describe,
        forward_fn=_lm_forward,
        mlps=lambda m: [p for layer in m.model.layers for p in (layer.mlp.gate_proj, layer.mlp.up_proj)],
    ),
)


def _adapter(model: nn.Module) -> Adapter:
    for adapter in ADAPTERS:
        if isinstance(model, adapter.kinds):
            return adapter
    families = ", ".join(k.__name__ for a in ADAPTERS for k in a.kinds)
    raise PruneError(
        f"zoo.prune does not know how to prune a {type(model).__name__} (it prunes {families}); pass the model "
        "itself, not a features_only / compiled / DDP wrapper"
    )


def pruned_args(model: nn.Module) -> dict[str, Any]:
    """The builder arguments that rebuild ``model``'s current widths (what :func:`prune` records)."""
    return _adapter(model).describe(model)


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


def _sync_attributes(model: nn.Module) -> None:
    """Attributes that cache a width: the backbone's feature widths, the large kernels' channel counts."""
    for m in model.modules():
        if isinstance(m, (DecomposedLargeKernel, FusedLargeKernel)):
            first = m.vertical.conv if isinstance(m, DecomposedLargeKernel) else m.vertical
            m.dim = first.weight.shape[0]
            if isinstance(m, FusedLargeKernel):
                m._cache.clear()
    info = getattr(model, "feature_info", None)
    if isinstance(model, (MetaFormer, SLaK, SReT)) and info:
        for entry, stage in zip(info, model.stages):
            entry["num_chs"] = _stage_width(model, stage)
        model.num_features = model.head_hidden_size = info[-1]["num_chs"]
    if isinstance(model, ConvNet):
        for entry, width in zip(model.feature_info, model.widths):
            entry["num_chs"] = width
        model.num_features = model.widths[-1]
        model.head_hidden_size = model._head_width(model.global_pool)


def _stage_width(model: nn.Module, stage: nn.Module) -> int:
    if isinstance(model, MetaFormer):
        return stage.blocks[0].mlp.fc1.in_features
    if isinstance(model, SLaK):
        return stage.blocks[0].norm.weight.shape[0]
    return stage.stack.blocks[0].mlp.fc1.in_features


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
    adapter = _adapter(model)
    gen = torch.Generator().manual_seed(0)
    was_training = model.training
    model.eval()
    if ratio <= 0:
        return
    if importance in _NEEDS_GRADIENTS:
        _gradients(model, inputs, loss_fn)
    kept = {id(m) for root in ignore for m in root.modules()}  # ``ignore``: their heads stay too
    adapter.heads(model, ratio, importance, gen, kept)
    signature = _embedding_signature(model)
    ignored = list(adapter.ignored(model)) + list(ignore)
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
            pruning_ratio_dict=None if mlp_ratio is None else dict.fromkeys(adapter.mlps(model), mlp_ratio),
            iterative_steps=iterative_steps,
            ignored_layers=ignored + adapter.ignored_params(model) + scalars,
            round_to=round_to,
            customized_pruners=_custom_pruners(),
            forward_fn=adapter.forward_fn,
        )
        for _ in range(iterative_steps):
            if importance in _NEEDS_GRADIENTS:
                _gradients(model, inputs, loss_fn)
            pruner.step()
    model.zero_grad(set_to_none=True)
    _prune_routers(model, signature)
    _sync_attributes(model)
    model.pruned_args = adapter.describe(model)
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
    _adapter(model)
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
