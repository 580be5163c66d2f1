"""SReT: Sliced Recursive Transformer.

Paper: "Sliced Recursive Transformer" (ECCV 2022), https://arxiv.org/abs/2111.05297
Original code (Apache-2.0): https://github.com/szq0214/SReT

A PiT-style pyramid of three stages. Each stage applies a few *shared* transformer blocks recursively, every
application followed by its own small non-shared MLP layer ("NLL"): [block0, nll0, block0, nll1, block1, nll2, ...]
(:class:`zoo.layers.RecursiveStack` with a sequence schedule, so ``recursion=k`` applies each block k times).
Residuals are learnable scalar mixes ``c1 * x + c2 * f(x)``. Sliced group self-attention splits the tokens, in
raster order, into contiguous groups (``groups1`` on a block's first application, ``groups2`` on the later
ones); on the later applications with ``groups2 != 1`` the tokens are permuted before grouping and restored after.

Permutations. The authors draw them from the global RNG in eval too, so their model is not deterministic. Here
``token_permutation="seeded"`` (default) uses in eval the permutations that a generator seeded with
``permutation_seed`` gives in forward order (seed 0 reproduces the authors' output after ``torch.manual_seed(0)``),
and fresh ones from the global RNG in training; ``"random"`` always uses the global RNG (the authors' behaviour);
``"identity"`` never permutes. The seeded ones depend only on the seed and the token counts, which the learned
position table fixes, so they are drawn once when the model is built (and again when ``permutation_seed`` is set)
and kept in each attention's ``permutations`` buffer (not persistent: state dicts do not carry them). A forward
then holds no random draw, and ``torch.export`` / ONNX / ``torch.fx`` record them as constants of the graph.

Tracing and scripting. Each forward decides once where its permutations come from, a mode string passed down the
stages (:data:`PERMUTATION_MODES`): ``"recorded"`` (the buffers; seeded eval), ``"random"`` (the global RNG: training,
or ``"random"``), ``"none"`` (``"identity"``). ``torch.fx.symbolic_trace`` (and torchvision's
``create_feature_extractor``, timm's ``feature_cls="fx"``) records the mode of the model's state at trace time:
an eval trace holds the recorded permutations, a training trace draws from the global RNG as eager does.
``torch.jit.script`` keeps the decision at run time. One case is eager's only: a position table replaced by one of
another size after the draw (eager then draws at run time from the seeded generator, mode ``"seeded"``); tracing,
scripting and exporting it ask for ``model.draw_permutations()`` first.
"""

from collections.abc import Sequence
from contextlib import contextmanager

import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from ..layers import Linear, RecursiveStack, drop_path_gain, needs_grad, residual_add, sequence_schedule
from ..layers.backbone import VisionBackbone, global_pool_nchw, imagenet_cfg
from ..layers.features import check_drop_rates, check_head_args
from ..layers.mlp import Mlp
from ..layers.pruning import PrunePlan, classifier_layers, fused_qkv_heads, sync_stage_widths
from ..layers.tracing import is_eager
from ..registry import reference_table, register_model
from ._builder import build_vision_model

__all__ = ["PERMUTATION_MODES", "SReT", "checkpoint_filter_fn"]

# where a forward's token permutations come from (the argument the stages pass down to each attention; the
# scripted methods spell them out, as TorchScript reads no global strings):
RECORDED = "recorded"  # each attention's ``permutations`` buffer, drawn when the model is built (seeded eval)
RANDOM = "random"  # fresh draws from the global RNG (training, or token_permutation="random")
NO_PERMUTATION = "none"  # token_permutation="identity"
SEEDED = "seeded"  # eager only: drawn at run time from the seeded generator (the position table changed size)
PERMUTATION_MODES = (RECORDED, RANDOM, NO_PERMUTATION, SEEDED)


class LearnableCoefficient(nn.Module):
    """A learnable scalar (init 1), stored as ``bias`` as in the authors' checkpoints."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.ones(1))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.bias)


class ConvStem(nn.Module):
    """Three conv3x3 stride-2 layers with bias, each followed by BatchNorm and ReLU: 3 -> C/2 -> C -> C, stride 8."""

    def __init__(self, in_chans: int, dim: int):
        super().__init__()
        half = dim // 2
        self.conv1, self.bn1 = nn.Conv2d(in_chans, half, 3, 2, 1), nn.BatchNorm2d(half)
        self.conv2, self.bn2 = nn.Conv2d(half, dim, 3, 2, 1), nn.BatchNorm2d(dim)
        self.conv3, self.bn3 = nn.Conv2d(dim, dim, 3, 2, 1), nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)  # the stages run on channels-last memory
        if self.training:
            x = F.relu(self.bn1(self.conv1(x)))
            x = F.relu(self.bn2(self.conv2(x)))
            return F.relu(self.bn3(self.conv3(x)))
        # eval: BatchNorm with running statistics folded into the conv (one pass instead of two); written out, as
        # TorchScript loops over no pairs of modules
        c, b = self.conv1, self.bn1
        x = _folded_conv_relu(x, c.weight, c.bias, b.weight, b.bias, b.running_mean, b.running_var, self.bn1.eps)
        c, b = self.conv2, self.bn2
        x = _folded_conv_relu(x, c.weight, c.bias, b.weight, b.bias, b.running_mean, b.running_var, self.bn2.eps)
        c, b = self.conv3, self.bn3
        return _folded_conv_relu(x, c.weight, c.bias, b.weight, b.bias, b.running_mean, b.running_var, self.bn3.eps)


def _folded_conv_relu(
    x: torch.Tensor,
    conv_weight: torch.Tensor,
    conv_bias: torch.Tensor | None,
    bn_weight: torch.Tensor | None,
    bn_bias: torch.Tensor | None,
    running_mean: torch.Tensor | None,
    running_var: torch.Tensor | None,
    eps: float,
) -> torch.Tensor:
    """ReLU of a stem conv (stride 2, padding 1) with its eval BatchNorm folded into the weight and bias."""
    assert conv_bias is not None and bn_weight is not None and bn_bias is not None  # the stem's layers have them
    assert running_mean is not None and running_var is not None
    scale = bn_weight * torch.rsqrt(running_var + eps)
    weight = conv_weight * scale.view(-1, 1, 1, 1)
    bias = (conv_bias - running_mean) * scale + bn_bias
    x = F.conv2d(x, weight, bias, 2, 1)
    return F.relu(x) if needs_grad(x) else x.relu_()


# a leaf of torch.fx graphs: the folded stem stays one call (a traced copy would lose the type refinements above,
# which TorchScript needs when it scripts the graph)
torch.fx.wrap("_folded_conv_relu")


class GroupAttention(nn.Module):
    """Multi-head self-attention within contiguous token groups (plain MHSA when both group counts are 1)."""

    def __init__(self, dim: int, num_heads: int, groups1: int = 1, groups2: int = 1, kept_heads: int | None = None):
        super().__init__()
        # ``kept_heads``: the heads a pruned model keeps (zoo.prune), each of the original width dim // num_heads
        self.head_dim = dim // num_heads
        self.num_heads = kept_heads or num_heads
        self.attention_dim = self.num_heads * self.head_dim
        self.groups1, self.groups2 = groups1, groups2
        self.qkv = Linear(dim, self.attention_dim * 3)
        self.proj = Linear(self.attention_dim, dim)
        # row r - 1: the seeded eval permutation of the block's r-th re-application (SReT.draw_permutations)
        self.register_buffer("permutations", torch.zeros(0, 0, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor, recursion: int = 0, permutation: str = NO_PERMUTATION) -> torch.Tensor:
        """``recursion``: the block's earlier applications (0: the first); ``permutation``: ``"recorded"`` (the
        ``permutations`` buffer), ``"random"`` (the global RNG) or anything else for none."""
        B, N, C = x.shape
        groups = self.groups1 if recursion == 0 else self.groups2
        perm: torch.Tensor | None = None
        if recursion > 0 and groups != 1:
            if permutation == "recorded":
                perm = self.permutations[recursion - 1]
            elif permutation == "random":
                perm = torch.randperm(N).to(x.device)  # the global RNG, as the authors do
        if perm is not None:
            x = x.index_select(1, perm)
        h = self.num_heads
        # groups fold into the batch: 4-D inputs take SDPA's fused CPU kernel (5-D ones fall back to the math path)
        qkv = self.qkv(x).reshape(B * groups, N // groups, 3, h, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B * groups, heads, N / groups, head_dim)
        x = F.scaled_dot_product_attention(q, k, v)
        x = x.transpose(1, 2).reshape(B, N, self.attention_dim)  # tokens back in (group, position) = raster order
        if perm is not None:
            x = x.index_select(1, torch.argsort(perm))
        return self.proj(x)


class TransformerBlock(nn.Module):
    """``x = c1*x + c2*attn(norm1(x)); x = c3*x + c4*mlp(norm2(x))`` (the shared, recursively applied block)."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        groups1: int,
        groups2: int,
        mlp_ratio: float,
        drop_path: float = 0.0,
        widths: dict | None = None,
    ):
        super().__init__()
        widths = widths or {}  # a pruned model's: attn_heads, mlp_hidden
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = GroupAttention(dim, num_heads, groups1, groups2, kept_heads=widths.get("attn_heads"))
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, widths.get("mlp_hidden") or int(dim * mlp_ratio))
        self.coefficient1, self.coefficient2 = LearnableCoefficient(), LearnableCoefficient()
        self.coefficient3, self.coefficient4 = LearnableCoefficient(), LearnableCoefficient()
        self.drop_path = drop_path

    def _gain(self, coefficient: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        mask = drop_path_gain(x, self.drop_path, self.training)
        return coefficient if mask is None else coefficient * mask

    def forward(self, x: torch.Tensor, recursion: int = 0, mode: str = NO_PERMUTATION) -> torch.Tensor:
        """``recursion``, ``mode``: as :class:`zoo.layers.RecursiveStack` passes them (``mode``: the permutation
        mode of :data:`PERMUTATION_MODES`)."""
        branch = self.attn(self.norm1(x), recursion, mode)
        x = residual_add(x, branch, self._gain(self.coefficient2.bias, x), self.coefficient1.bias)
        return residual_add(x, self.mlp(self.norm2(x)), self._gain(self.coefficient4.bias, x), self.coefficient3.bias)


class NonLinearLayer(nn.Module):
    """The non-shared layer after every application: ``x = c1*x + c2*mlp(norm1(x))`` (authors' ``Non_proj``)."""

    def __init__(self, dim: int, mlp_ratio: float, hidden: int | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, hidden or int(dim * mlp_ratio))  # ``hidden``: a pruned width (zoo.prune)
        self.coefficient1, self.coefficient2 = LearnableCoefficient(), LearnableCoefficient()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return residual_add(x, self.mlp(self.norm1(x)), self.coefficient2.bias, self.coefficient1.bias)


class SReTStage(nn.Module):
    """(Depthwise-style pooling conv) then a recursive stack over the flattened tokens."""

    def __init__(
        self,
        in_dim: int,
        dim: int,
        num_blocks: int,
        recursion: int,
        num_heads: int,
        groups1: int,
        groups2: int,
        mlp_ratio: float,
        nll_ratio: float,
        drop_path: Sequence[float],
        downsample: bool,
        block_widths: Sequence[dict] | None = None,
        nll_hidden: Sequence[int | None] | None = None,
    ):
        super().__init__()
        # conv 3x3 stride 2 with groups=C_in and 2*C_in outputs, with bias (the authors' conv_head_pooling)
        self.downsample = nn.Conv2d(in_dim, dim, 3, 2, 1, groups=in_dim) if downsample else nn.Identity()
        block_widths = block_widths or [{}] * num_blocks
        nll_hidden = nll_hidden or [None] * (num_blocks * recursion)
        blocks = [
            TransformerBlock(dim, num_heads, groups1, groups2, mlp_ratio, drop_path[i], block_widths[i])
            for i in range(num_blocks)
        ]
        nlls = [NonLinearLayer(dim, nll_ratio, nll_hidden[i]) for i in range(num_blocks * recursion)]
        self.stack = RecursiveStack(blocks, sequence_schedule(num_blocks, recursion), step_layers=nlls)

    def forward(self, x: torch.Tensor, permutation: str = NO_PERMUTATION) -> torch.Tensor:
        x = self.downsample(x)
        B, C, H, W = x.shape
        # (B, C, H, W) with channels-last memory <-> (B, H*W, C) tokens in raster order: views, no copies
        x = self.stack(x.permute(0, 2, 3, 1).reshape(B, H * W, C), permutation)
        return x.view(B, H, W, C).permute(0, 3, 1, 2)


def _pruned_widths(recursive_num, recursion, heads, attn_heads, mlp_hidden, nll_hidden):
    """Per shared block ``{attn_heads, mlp_hidden}`` and per NLL ``hidden`` of a pruned model (None: default)."""
    blocks = sum(recursive_num)
    stage_of = [i for i, n in enumerate(recursive_num) for _ in range(n)]
    for name, values, count in (
        ("attn_heads", attn_heads, blocks),
        ("mlp_hidden", mlp_hidden, blocks),
        ("nll_hidden", nll_hidden, blocks * recursion),
    ):
        if values is not None and (
            len(values) != count or any(v is not None and (not isinstance(v, int) or v < 1) for v in values)
        ):
            raise ValueError(f"{name} needs one positive int (or None) per entry ({count}), got {values}")
    for j, h in enumerate(attn_heads or []):
        if h is not None and h > heads[stage_of[j]]:
            raise ValueError(f"attn_heads[{j}]={h} is more than its stage's {heads[stage_of[j]]} heads")
    block_widths = [
        {
            k: v
            for k, v in (
                ("attn_heads", (attn_heads or [None] * blocks)[j]),
                ("mlp_hidden", (mlp_hidden or [None] * blocks)[j]),
            )
            if v
        }
        for j in range(blocks)
    ]
    return block_widths, list(nll_hidden or [None] * (blocks * recursion))


def _make_stages(
    img_size: tuple[int, int],
    grid: list[int],
    dims: Sequence[int],
    heads: Sequence[int],
    recursive_num: Sequence[int],
    recursion: int,
    groups1: Sequence[int],
    groups2: Sequence[int],
    mlp_ratio: float,
    np_mlp_ratio: float,
    drop_path_rate: float,
    widths: tuple[list[dict], list[int | None]],
) -> tuple[nn.ModuleList, list[dict]]:
    """The stages and their feature info. ``grid``: the first stage's token grid; ``widths``: what
    :func:`_pruned_widths` gives. Refuses a stage whose tokens do not divide into its attention groups."""
    # the authors' stochastic depth: rate * i / total over the NLL count, the shared blocks taking the first rates
    total = sum(n * recursion for n in recursive_num)
    stages, feature_info, start = [], [], 0
    blocks_before = [sum(recursive_num[:i]) for i in range(len(dims))]
    for i, dim in enumerate(dims):
        tokens = grid[0] * grid[1]
        for g in {groups1[i], groups2[i]}:
            if tokens % g:
                raise ValueError(
                    f"stage {i} has {tokens} tokens at img_size={img_size}, not divisible into "
                    f"{g} attention groups; use an input size whose /{8 * 2**i} grid divides"
                )
        rates = [drop_path_rate * j / total for j in range(start, start + recursive_num[i] * recursion)]
        start += recursive_num[i] * recursion
        stages.append(
            SReTStage(
                dims[i - 1] if i else dims[0],
                dim,
                recursive_num[i],
                recursion,
                heads[i],
                groups1[i],
                groups2[i],
                mlp_ratio,
                np_mlp_ratio,
                rates,
                downsample=i > 0,
                block_widths=widths[0][blocks_before[i] : blocks_before[i] + recursive_num[i]],
                nll_hidden=widths[1][blocks_before[i] * recursion : (blocks_before[i] + recursive_num[i]) * recursion],
            )
        )
        feature_info.append(dict(num_chs=dim, reduction=8 * 2**i, module=f"stages.{i}"))
        grid = [(s - 1) // 2 + 1 for s in grid]
    return nn.ModuleList(stages), feature_info


class SReTPrunePlan(PrunePlan):
    """zoo.prune on SReT: heads and MLP / NLL widths of every shared block, each pruned once for all its
    applications; the residual width stays (fixed by the grouped pooling convs and the position embedding)."""

    def blocks(self) -> list[nn.Module]:
        return [b for stage in self.model.stages for b in stage.stack.blocks]

    def ignored(self) -> list[nn.Module]:
        model = self.model
        keep = classifier_layers(model) + [model.stem] + [s.downsample for s in model.stages]
        for stage in model.stages:
            for b in stage.stack.blocks:
                keep += [b.attn.qkv, b.attn.proj, b.mlp.fc2]
            keep += [nll.mlp.fc2 for nll in stage.stack.step_layers]
        return keep

    def ignored_params(self) -> list[nn.Parameter]:
        return [self.model.pos_embed]

    def heads(self, ratio: float, importance: str, generator: torch.Generator, kept: set[int]) -> None:
        for b in self.blocks():
            if id(b.attn.qkv) not in kept:
                fused_qkv_heads(b.attn, b.attn.qkv, b.attn.proj, ratio, importance, generator)

    def mlps(self) -> list[nn.Module]:
        return [x.mlp.fc1 for s in self.model.stages for x in (*s.stack.blocks, *s.stack.step_layers)]

    def finish(self) -> None:
        sync_stage_widths(self.model, [stage.stack.blocks[0].mlp.fc1.in_features for stage in self.model.stages])

    def widths(self) -> dict:
        blocks = self.blocks()
        nlls = [nll for stage in self.model.stages for nll in stage.stack.step_layers]
        return {
            "attn_heads": [b.attn.num_heads for b in blocks],
            "mlp_hidden": [b.mlp.fc1.out_features for b in blocks],
            "nll_hidden": [nll.mlp.fc1.out_features for nll in nlls],
        }


class SReT(VisionBackbone, nn.Module):
    """Sliced Recursive Transformer with the timm model interface.

    Args:
        base_dims, heads: per stage; channels are ``base_dims[i] * heads[i]``.
        recursive_num: shared blocks per stage.
        recursion: applications of each shared block (2 in the released models); each gets its own NLL.
        groups1, groups2: attention groups per stage on first / later applications (1 = plain attention).
        mlp_ratio, np_mlp_ratio: hidden ratio of the block MLPs and of the NLLs (widths truncate).
        img_size: the input size the learned position embedding is built for.
        token_permutation, permutation_seed: see the module docstring.
        attn_heads, mlp_hidden: per shared block (all stages in order), the heads and the MLP width of a pruned
            model (``zoo.prune``); nll_hidden: per NLL (all stages in order), its MLP width. None (or a None
            entry) keeps the architecture's own.
    """

    prune_plan = SReTPrunePlan

    def __init__(
        self,
        img_size: int | tuple[int, int] = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        global_pool: str = "avg",
        base_dims: Sequence[int] = (32, 32, 32),
        heads: Sequence[int] = (2, 4, 8),
        recursive_num: Sequence[int] = (2, 5, 3),
        recursion: int = 2,
        groups1: Sequence[int] = (8, 4, 1),
        groups2: Sequence[int] = (2, 1, 1),
        mlp_ratio: float = 3.6,
        np_mlp_ratio: float = 1.0,
        token_permutation: str = "seeded",
        permutation_seed: int = 0,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        onednn_linear: bool | None = None,
        attn_heads: Sequence[int | None] | None = None,
        mlp_hidden: Sequence[int | None] | None = None,
        nll_hidden: Sequence[int | None] | None = None,
    ):
        super().__init__()
        check_head_args(num_classes, global_pool)
        check_drop_rates(drop_rate=drop_rate, drop_path_rate=drop_path_rate)
        if not isinstance(recursion, int) or recursion < 1:
            raise ValueError(f"recursion must be a positive int (applications per shared block), got {recursion!r}")
        widths = _pruned_widths(recursive_num, recursion, heads, attn_heads, mlp_hidden, nll_hidden)
        if token_permutation not in ("seeded", "random", "identity"):
            raise ValueError(f"token_permutation must be 'seeded', 'random' or 'identity', got {token_permutation!r}")
        self.img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.token_permutation = token_permutation
        self._permutation_seed = int(permutation_seed)  # the property's setter redraws; the stages come below
        dims = [b * h for b, h in zip(base_dims, heads)]
        self.num_features = self.head_hidden_size = dims[-1]
        self.grad_checkpointing = False

        self.stem = ConvStem(in_chans, dims[0])
        grid = [(s + 7) // 8 for s in self.img_size]  # three stride-2 convs with padding 1
        self.pos_embed = nn.Parameter(torch.zeros(1, dims[0], *grid))
        self.pos_drop = nn.Dropout(drop_rate)

        self.stages, self.feature_info = _make_stages(
            self.img_size,
            grid,
            dims,
            heads,
            recursive_num,
            recursion,
            groups1,
            groups2,
            mlp_ratio,
            np_mlp_ratio,
            drop_path_rate,
            widths,
        )
        self.head = nn.Module()
        self.head.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head.fc = Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.draw_permutations()
        if onednn_linear is not None:  # else each Linear takes ZOO_ONEDNN_LINEAR (default on)
            self.set_onednn_linear(onednn_linear)

    # ---- what differs from the shared face (zoo.layers.VisionBackbone) ----------------------------------------
    no_weight_decay_keys = ("pos_embed",)
    block_patterns = (r"^stages\.(\d+)\.stack\.blocks\.(\d+)", r"^stages\.(\d+)\.stack\.step_layers\.(\d+)")

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True):
        self.grad_checkpointing = enable
        for stage in self.stages:
            stage.stack.grad_checkpointing = enable

    def _init_family_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.draw_permutations()

    fixed_input_size = True  # the learned position table is sized by img_size
    __jit_unused_properties__ = ["permutation_seed"]  # TorchScript compiles properties; its setter redraws

    @property
    def permutation_seed(self) -> int:
        """The seed of the eval token permutations (``token_permutation="seeded"``); setting it redraws them."""
        return self._permutation_seed

    @permutation_seed.setter
    def permutation_seed(self, seed: int) -> None:
        self._permutation_seed = int(seed)
        self.draw_permutations()

    @torch.no_grad()
    def draw_permutations(self) -> None:
        """Draw the seeded eval permutations for the position table's grid into each attention's ``permutations``
        buffer: the draws a generator seeded with ``permutation_seed`` gives in forward order (stage by stage, each
        stack's schedule in order, one per re-application of a block with ``groups2 != 1``). Called on build and
        when the seed is set; call it again after replacing ``pos_embed`` with one of another size."""
        grid = list(self.pos_embed.shape[-2:])
        for attn, table in self._seeded_permutations(grid).items():
            attn.permutations = table.to(attn.permutations.device)
        self._permutation_grid = grid

    @torch.jit.ignore
    def _seeded_permutations(self, grid: list[int]) -> dict[nn.Module, torch.Tensor]:
        """Per attention, the table (one row per re-application) that a generator seeded with ``permutation_seed``
        gives in forward order for a first stage of ``grid`` tokens (on the CPU)."""
        generator = torch.Generator().manual_seed(self._permutation_seed)
        h, w = grid
        tables = {}
        for i, stage in enumerate(self.stages):
            if i:  # each later stage opens with a stride-2 conv (padding 1)
                h, w = (h - 1) // 2 + 1, (w - 1) // 2 + 1
            stack, drawn = stage.stack, {}
            for block, recursion in zip(stack.schedule, stack.recursion):
                if recursion > 0 and stack.blocks[block].attn.groups2 != 1:
                    drawn[block, recursion] = torch.randperm(h * w, generator=generator)
            for b, block in enumerate(stack.blocks):
                rows = [r for (k, r) in drawn if k == b]
                table = torch.zeros(max(rows, default=0), h * w, dtype=torch.long)
                for r in rows:
                    table[r - 1] = drawn[b, r]
                tables[block.attn] = table
        return tables

    def _position_grid(self) -> list[int]:
        """The position table's token grid (the stem's output size it takes)."""
        if torch.jit.is_scripting():
            return self.pos_embed.shape[-2:]
        # the table itself: under torch.fx tracing the attribute is a proxy, whose shape is not known
        return list(self._parameters["pos_embed"].shape[-2:])

    def _permutation_mode(self) -> str:
        """Where this forward's token permutations come from (:data:`PERMUTATION_MODES`)."""
        if self.token_permutation == "identity":
            return "none"
        if self.token_permutation == "random" or self.training:
            return "random"  # the global RNG, as the authors do
        grid = self._position_grid()
        if grid == self._permutation_grid:
            return "recorded"
        # pos_embed was replaced by one of another size after the draw: eager draws at run time, as the recorded
        # ones were; a graph would have to hold the draw
        if not torch.jit.is_scripting():
            if is_eager() and not (torch.compiler.is_exporting() or torch.compiler.is_compiling()):
                return "seeded"
        raise RuntimeError(
            "SReT's seeded permutations were drawn for another token grid than its position table's; call "
            "model.draw_permutations() before tracing, scripting or exporting"
        )

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        if torch.jit.is_scripting() or is_eager():  # a traced graph takes its input's word
            if not torch.jit.is_scripting():
                self.check_input(x)
            h, w = x.shape[-2], x.shape[-1]
            grid = self.pos_embed.shape[-2:]
            if (h + 7) // 8 != grid[0] or (w + 7) // 8 != grid[1]:  # the stem's three stride-2 convs (padding 1)
                raise ValueError(
                    f"input {h}x{w} does not fit the position embedding built for img_size={self.img_size}; "
                    f"create the model with img_size=({h}, {w}) (pretrained weights then need a resized pos_embed)"
                )
        x = self.stem(x)
        return self.pos_drop(x + self.pos_embed.contiguous(memory_format=torch.channels_last))

    def _run_stages(self, x: torch.Tensor) -> torch.Tensor:
        mode = self._permutation_mode()
        if not torch.jit.is_scripting() and mode == "seeded":  # eager only (the mode is refused elsewhere)
            context = self._stage_context()
            for stage in self.stages:
                x = self._run_stage(stage, x, context)
            return x
        for stage in self.stages:
            x = stage(x, mode)
        return x

    @torch.jit.ignore
    def _stage_context(self) -> tuple[str, dict[nn.Module, torch.Tensor] | None]:
        """(the permutation mode, and in mode ``"seeded"`` each attention's table drawn for this forward)."""
        mode = self._permutation_mode()
        return mode, (self._seeded_permutations(self._position_grid()) if mode == SEEDED else None)

    @torch.jit.ignore
    def _run_stage(self, stage: nn.Module, x: torch.Tensor, context: tuple) -> torch.Tensor:
        mode, tables = context
        if tables is None:
            return stage(x, mode)
        with _permutations_in_place(stage, tables):
            return stage(x, RECORDED)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool != "":  # the authors average before the LayerNorm
            x = self.head.norm(global_pool_nchw(x, self.global_pool, [2, 3]))
            return x if pre_logits else self.head.fc(x)
        x = self.head.norm(x.permute(0, 2, 3, 1))
        return (x if pre_logits else self.head.fc(x)).permute(0, 3, 1, 2)


@contextmanager
def _permutations_in_place(stage: SReTStage, tables: dict[nn.Module, torch.Tensor]):
    """The stage's attentions hold ``tables`` (moved to their buffers' device) in their ``permutations`` buffers
    for the block, their own ones again after it (eager's run-time seeded draw)."""
    attentions = [block.attn for block in stage.stack.blocks]
    kept = [attn.permutations for attn in attentions]
    try:
        for attn, table in zip(attentions, kept):
            attn.permutations = tables[attn].to(table.device)
        yield
    finally:
        for attn, table in zip(attentions, kept):
            attn.permutations = table


# --------------------------------------------------------------------------------------------------------------
# Checkpoint conversion: the authors' layout (shared blocks under two aliases) -> the zoo's (stored once)
# --------------------------------------------------------------------------------------------------------------


def _rename_authors(key: str, recursion: Sequence[int]) -> str:
    key = key.replace("patch_embed.", "stem.")
    key = {
        "norm.weight": "head.norm.weight",
        "norm.bias": "head.norm.bias",
        "head.weight": "head.fc.weight",
        "head.bias": "head.fc.bias",
    }.get(key, key)
    if key.startswith("pools."):  # pool i sits between stages i and i + 1
        stage, rest = key[len("pools.") :].split(".", 1)
        return f"stages.{int(stage) + 1}.downsample.{rest.replace('conv.', '', 1)}"
    if key.startswith("transformers."):
        stage, _, index, rest = key[len("transformers.") :].split(".", 3)
        stage, index = int(stage), int(index)
        application = index // 2  # the authors' list interleaves [block, nll, block, nll, ...]
        if index % 2:
            return f"stages.{stage}.stack.step_layers.{application}.{rest}"
        return f"stages.{stage}.stack.blocks.{application // recursion[stage]}.{rest}"
    return key


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Authors' SReT keys -> the zoo's. Every alias of a shared block maps to the same key; where several
    are present the later one wins, as in the authors' ``load_state_dict``."""
    if not any(k.startswith("transformers.") for k in state_dict):
        return dict(state_dict)
    recursion = [len(stage.stack.schedule) // len(stage.stack.blocks) for stage in model.stages]
    out = {}
    for k, v in state_dict.items():  # checkpoint order: later aliases come later
        out[_rename_authors(k, recursion)] = v
    return out


# --------------------------------------------------------------------------------------------------------------
# Pretrained configs and registered models
# --------------------------------------------------------------------------------------------------------------

FAMILY = dict(name="sret", task="image-classification")


def _cfg(**kwargs) -> dict:
    return imagenet_cfg(
        **{
            "first_conv": "stem.conv1",
            "license": "apache-2.0",
            "paper_name": "Sliced Recursive Transformer",
            "paper_ids": "arXiv:2111.05297",
            "origin_url": "https://github.com/szq0214/SReT",
            "fixed_input_size": True,
            "notes": (
                "ImageNet-1k weights are linked (Google Drive) from the authors' README; download one and pass "
                "pretrained_cfg_overlay={'file': PATH}",
            ),
            **kwargs,
        }
    )


default_cfgs: dict[str, dict] = {
    name: _cfg()
    for name in (
        "sret_tiny",
        "sret_tiny_distill",
        "sret_lt",
        "sret_lt_distill",
        "sret_small",
        "sret_small_distill",
        "sret_tiny_wo_slice",
        "sret_lt_wo_slice",
        "sret_small_wo_slice",
    )
}
default_cfgs["sret_small_wo_slice_384"] = _cfg(input_size=(3, 384, 384), pool_size=(12, 12), crop_pct=1.0)

# params of the authors' models (shared weights once; exact) and fvcore MACs at 224 (384 for the last; exact for
# tiny and small, the README's rounded figure for the rest), and the README's ImageNet-1k top-1 (None: not given)
reference_figures: dict[str, dict] = reference_table(
    [
        ("sret_tiny", 4_755_979, 1_121_665_792, 76.0),
        ("sret_tiny_distill", 4_755_979, 1_121_665_792, 77.6),
        ("sret_lt", 4_988_024, 1_174_000_000, 76.7),
        ("sret_lt_distill", 4_988_024, 1_174_000_000, 77.7),
        ("sret_small", 20_899_692, 4_190_973_192, 81.9),
        ("sret_small_distill", 20_899_692, 4_190_973_192, None),
        ("sret_tiny_wo_slice", 4_755_979, 1_375_000_000, 76.1),
        ("sret_lt_wo_slice", 4_988_024, 1_427_000_000, 76.8),
        ("sret_small_wo_slice", 20_899_692, 4_690_000_000, 82.0),
        ("sret_small_wo_slice_384", 21_091_212, 18_500_000_000, 83.8),
    ]
)

_TINY = dict(base_dims=(32, 32, 32), heads=(2, 4, 8), recursive_num=(2, 5, 3))
_SMALL = dict(base_dims=(42, 42, 42), heads=(3, 6, 12), recursive_num=(2, 5, 3))
_SLICED = dict(groups1=(8, 4, 1), groups2=(2, 1, 1))
_PLAIN = dict(groups1=(1, 1, 1), groups2=(1, 1, 1))


def _create_sret(variant: str, pretrained: bool = False, **kwargs) -> SReT:
    return build_vision_model(SReT, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn, **kwargs)


def _arch(size: dict, slicing: dict, mlp_ratio: float, np_mlp_ratio: float, kwargs: dict) -> dict:
    return {**size, **slicing, "mlp_ratio": mlp_ratio, "np_mlp_ratio": np_mlp_ratio, **kwargs}


@register_model
def sret_tiny(pretrained=False, **kwargs):
    return _create_sret("sret_tiny", pretrained, **_arch(_TINY, _SLICED, 3.6, 1.0, kwargs))


@register_model
def sret_tiny_distill(pretrained=False, **kwargs):
    return _create_sret("sret_tiny_distill", pretrained, **_arch(_TINY, _SLICED, 3.6, 1.0, kwargs))


@register_model
def sret_lt(pretrained=False, **kwargs):
    return _create_sret("sret_lt", pretrained, **_arch(_TINY, _SLICED, 4.0, 1.0, kwargs))


@register_model
def sret_lt_distill(pretrained=False, **kwargs):
    return _create_sret("sret_lt_distill", pretrained, **_arch(_TINY, _SLICED, 4.0, 1.0, kwargs))


@register_model
def sret_small(pretrained=False, **kwargs):
    return _create_sret("sret_small", pretrained, **_arch(_SMALL, _SLICED, 3.0, 2.0, kwargs))


@register_model
def sret_small_distill(pretrained=False, **kwargs):
    return _create_sret("sret_small_distill", pretrained, **_arch(_SMALL, _SLICED, 3.0, 2.0, kwargs))


@register_model
def sret_tiny_wo_slice(pretrained=False, **kwargs):
    return _create_sret("sret_tiny_wo_slice", pretrained, **_arch(_TINY, _PLAIN, 3.6, 1.0, kwargs))


@register_model
def sret_lt_wo_slice(pretrained=False, **kwargs):
    return _create_sret("sret_lt_wo_slice", pretrained, **_arch(_TINY, _PLAIN, 4.0, 1.0, kwargs))


@register_model
def sret_small_wo_slice(pretrained=False, **kwargs):
    return _create_sret("sret_small_wo_slice", pretrained, **_arch(_SMALL, _PLAIN, 3.0, 2.0, kwargs))


@register_model
def sret_small_wo_slice_384(pretrained=False, **kwargs):
    return _create_sret(
        "sret_small_wo_slice_384", pretrained, **_arch(_SMALL, _PLAIN, 3.0, 2.0, {"img_size": 384, **kwargs})
    )
