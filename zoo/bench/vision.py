"""CPU benchmark of the zoo's MetaFormer models against timm's implementation, on the same weights.

For every model name (default: ``poolformer_s12``, ``convformer_s18``) this builds ``timm.create_model(name)``
and ``zoo.create_model(name)``, gives timm's model deterministic random weights of realistic scale
(weights ~ N(0, 1/fan_in), norm / scale parameters ~ 1 + 0.1 * N(0, 1), biases ~ 0.05 * N(0, 1)) and loads
the very same tensors into the zoo's model through the zoo's timm-checkpoint converter
(``load_state_dict_checked`` with the MetaFormer ``checkpoint_filter_fn``), which fails if anything does not fit.

What is measured, per model and batch size, in fp32, eval mode, under ``torch.inference_mode``, on CPU:

* Throughput (images/s) of the full forward pass: a few warm-up passes, then the median of N timed passes.
  The two implementations are timed in interleaved rounds (timm, zoo, then zoo, timm, ...), so that machine
  noise hits both equally. The ratio reported is zoo / timm.
* Fidelity: the max abs difference of the ``forward_features`` outputs (B, C, H, W) on the same input, and the
  relative difference (max abs diff / max abs value of timm's features). ``--check`` exits non-zero if any
  relative difference exceeds 1e-4.
* The logits difference, for information only: the classification heads intentionally differ. The zoo follows
  the authors: PoolFormer v1 applies GroupNorm to the full final map and then pools (timm pools first), and
  the ConvFormer/CAFormer ``MlpHead`` LayerNorm uses eps 1e-5 (timm: 1e-6).

Targets: zoo >= 1.3x timm on poolformer_s12 at batch 32, >= 1.0x everywhere else.

Run as ``zoo bench vision --models poolformer_s12,convformer_s18``.
"""

from collections.abc import Sequence

import timm
import torch
from torch import nn

from ..factory import create_model
from ..models.metaformer import checkpoint_filter_fn
from ..registry import get_entry
from ..weights import load_state_dict_checked
from .harness import Row, default_runs, output_diff, peer_row, randomize_, time_interleaved

PEER = "timm"
DEFAULT_MODELS = ("poolformer_s12", "convformer_s18")
DEFAULT_BATCH_SIZES = (1, 32)
TOLERANCE = 1e-4  # max relative difference of forward_features


def target_ratio(model: str, batch_size: int) -> float:
    """The zoo/timm throughput the zoo aims for (see the module docstring)."""
    return 1.3 if (model, batch_size) == ("poolformer_s12", 32) else 1.0


def head_note(model: str) -> str:
    """Why the logits of ``model`` intentionally differ from timm's ("" if the heads match)."""
    if model.startswith("poolformer_"):
        return "PoolFormer v1 head: zoo applies GroupNorm to the full map, then pools (authors); timm pools first"
    if model.startswith(("convformer_", "caformer_")):
        return "MlpHead LayerNorm eps: zoo 1e-5 (authors), timm 1e-6"
    return ""


def peer_model(name: str) -> nn.Module:
    """timm's own ``name`` with the comparison's deterministic random weights (:func:`randomize_`), in eval mode."""
    if not get_entry(name).timm_owns_name:  # (names timm lacks are registered there by the zoo itself)
        raise ValueError(f"timm has no {name}: the timm comparison covers the MetaFormer variants timm also has")
    return randomize_(timm.create_model(name)).eval()


def build_pair(name: str) -> tuple[nn.Module, nn.Module]:
    """timm's model with random weights (:func:`peer_model`) and the zoo's model loaded with the same weights, both
    in eval mode."""
    timm_model = peer_model(name)
    zoo_model = create_model(name)
    load_state_dict_checked(zoo_model, timm_model.state_dict(), "timm", filter_fn=checkpoint_filter_fn)
    return timm_model, zoo_model.eval()


def compare(name: str, batch_sizes: Sequence[int], runs=None, warmup: int = 2, img_size: int = 224) -> list[Row]:
    """Throughput and feature differences of zoo vs timm on ``name`` at each batch size."""
    timm_model, zoo_model = build_pair(name)
    rows = []
    for bs in batch_sizes:
        x = torch.randn(bs, 3, img_size, img_size, generator=torch.Generator().manual_seed(bs))
        n = runs or default_runs(bs)
        times = time_interleaved(
            {PEER: lambda x=x: timm_model(x), "zoo": lambda x=x: zoo_model(x)}, n, warmup, desc=f"{name} b{bs}"
        )
        with torch.inference_mode():
            feats = {"timm": timm_model.forward_features(x), "zoo": zoo_model.forward_features(x)}
            logits = output_diff(zoo_model.forward_head(feats["zoo"]), timm_model.forward_head(feats["timm"]))
        rows.append(
            peer_row(
                name,
                f"batch {bs}",
                PEER,
                "zoo",
                "img/s",
                times[PEER],
                times["zoo"],
                n,
                target_ratio(name, bs),
                work=bs,
                **output_diff(feats["zoo"], feats["timm"]),
                extra={"logits max|d|": logits["max_abs_diff"]},
            )
        )
    return rows


def notes(rows: Sequence[Row]) -> list[str]:
    lines = ["features are the like-for-like comparison; logits differ by design:"]
    lines += [f"  {m}: {head_note(m)}" for m in dict.fromkeys(r.model for r in rows) if head_note(m)]
    return lines if len(lines) > 1 else []
