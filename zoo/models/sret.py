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
then holds no random draw, and ``torch.export`` / ONNX record them as constants of the graph.
"""

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Linear, RecursiveStack, drop_path_gain, needs_grad, residual_add, sequence_schedule
from ..layers.backbone import VisionBackbone, imagenet_cfg
from ..layers.features import check_drop_rates, check_head_args
from ..layers.mlp import Mlp
from ..layers.pruning import PrunePlan, classifier_layers, fused_qkv_heads, sync_stage_widths
from ..registry import reference_table, register_model
from ._builder import build_vision_model

__all__ = ["SReT", "checkpoint_filter_fn"]

PermutationSource = Callable[[int, torch.device], torch.Tensor]
# a forward's permutation argument that means: each attention's drawn-at-build ``permutations`` buffer
RECORDED = "recorded"


class LearnableCoefficient(nn.Module):
    """A learnable scalar (init 1), stored as ``bias`` as in the authors' checkpoints."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.ones(1))


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
        for conv, bn in ((self.conv1, self.bn1), (self.conv2, self.bn2), (self.conv3, self.bn3)):
            if self.training:
                x = F.relu(bn(conv(x)))
                continue
            # eval: BatchNorm with running statistics folded into the conv (one pass instead of two)
            scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
            weight = conv.weight * scale.view(-1, 1, 1, 1)
            bias = (conv.bias - bn.running_mean) * scale + bn.bias
            x = F.conv2d(x, weight, bias, conv.stride, conv.padding)
            x = F.relu(x) if needs_grad(x) else x.relu_()
        return x


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

    def forward(
        self, x: torch.Tensor, recursion: int = 0, permutation: PermutationSource | str | None = None
    ) -> torch.Tensor:
        B, N, C = x.shape
        groups = self.groups1 if recursion == 0 else self.groups2
        perm = None
        if recursion > 0 and groups != 1 and permutation is not None:
            perm = self.permutations[recursion - 1] if permutation == RECORDED else permutation(N, x.device)
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

    def _gain(self, coefficient: LearnableCoefficient, x: torch.Tensor) -> torch.Tensor:
        mask = drop_path_gain(x, self.drop_path, self.training)
        return coefficient.bias if mask is None else coefficient.bias * mask

    def forward(
        self, x: torch.Tensor, recursion: int = 0, permutation: PermutationSource | str | None = None
    ) -> torch.Tensor:
        branch = self.attn(self.norm1(x), recursion, permutation)
        x = residual_add(x, branch, self._gain(self.coefficient2, x), self.coefficient1.bias)
        return residual_add(x, self.mlp(self.norm2(x)), self._gain(self.coefficient4, x), self.coefficient3.bias)


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

    def forward(self, x: torch.Tensor, permutation: PermutationSource | str | None = None) -> torch.Tensor:
        x = self.downsample(x)
        B, C, H, W = x.shape
        # (B, C, H, W) with channels-last memory <-> (B, H*W, C) tokens in raster order: views, no copies
        x = self.stack(x.permute(0, 2, 3, 1).reshape(B, H * W, C), permutation=permutation)
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

    fixed_input_size = True  # the learned position table is sized by img_size

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
        generator = torch.Generator().manual_seed(self._permutation_seed)
        h, w = self.pos_embed.shape[-2:]
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
                block.attn.permutations = table.to(block.attn.permutations.device)
        self._permutation_grid = tuple(self.pos_embed.shape[-2:])

    def _permutation_source(self) -> PermutationSource | str | None:
        """Where the sliced attention's token permutations come from in this forward (None: identity)."""
        if self.token_permutation == "identity":
            return None
        if self.token_permutation == "random" or self.training:
            return lambda n, device: torch.randperm(n).to(device)  # the global RNG, as the authors do
        if tuple(self.pos_embed.shape[-2:]) == self._permutation_grid:
            return RECORDED
        # pos_embed was replaced by one of another size after the draw: draw at run time, as the recorded ones were
        if torch.compiler.is_exporting() or torch.compiler.is_compiling():
            raise RuntimeError(
                f"SReT's seeded permutations were drawn for a {self._permutation_grid} token grid, its position "
                f"table is now {tuple(self.pos_embed.shape[-2:])}; call model.draw_permutations() before tracing"
            )
        generator = torch.Generator().manual_seed(self._permutation_seed)  # fresh per forward: deterministic eval
        return lambda n, device: torch.randperm(n, generator=generator).to(device)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        size = tuple(x.shape[-2:])
        x = self.stem(x)
        if x.shape[-2:] != self.pos_embed.shape[-2:]:
            raise ValueError(
                f"input {size[0]}x{size[1]} does not fit the position embedding built for img_size={self.img_size}; "
                f"create the model with img_size={size} (pretrained weights then need a resized pos_embed)"
            )
        return self.pos_drop(x + self.pos_embed.contiguous(memory_format=torch.channels_last))

    _stage_context = _permutation_source

    def _run_stage(
        self, stage: nn.Module, x: torch.Tensor, permutation: PermutationSource | str | None
    ) -> torch.Tensor:
        return stage(x, permutation)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool:  # the authors average before the LayerNorm
            x = self.head.norm(x.mean((2, 3)))
            return x if pre_logits else self.head.fc(x)
        x = self.head.norm(x.permute(0, 2, 3, 1))
        return (x if pre_logits else self.head.fc(x)).permute(0, 3, 1, 2)


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
