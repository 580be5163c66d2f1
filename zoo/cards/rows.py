"""The rows of the cards and the model table: :func:`collect` measures each model (or counts a language model's
params on the meta device) and reads its entry in the registry; :func:`ordered` puts rows in table order; the
families' display names."""

import sys
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from tqdm import tqdm

from ..factory import create_model
from ..profile import count_params, profile
from ..registry import list_models, model_info

# display names (the papers' spelling) and table order; families not listed in FAMILY_ORDER follow, alphabetically
FAMILY_TITLES = {
    "metaformer": "MetaFormer",
    "sret": "SReT",
    "slak": "SLaK",
    "convnet": "ConvNet",
    "mobilellm": "MobileLLM",
    "recursive": "Recursive LMs",
}
FAMILY_ORDER = ("metaformer",)
# image classifiers first, then the language models
_TASK_ORDER = ("image-classification", "text-generation")
# within a family: (variant order, size order) for names shaped "<variant>_<size>"; anything else by params
_VARIANT_SIZE_ORDER = {
    "metaformer": (
        ("poolformer", "identityformer", "randformer", "poolformerv2", "convformer", "caformer"),
        ("s12", "s18", "s24", "s36", "m36", "m48", "b36"),
    ),
}


def collect(names: Iterable[str] | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Row data of each model (default: every registered model), in the given order.

    Image classifiers: params and MACs are measured (``zoo.profile``, batch 1 at the model's cfg input size).
    Language models: params are counted on the meta device (no weights allocated) and the architecture read from
    the built model's config. Reference figures, paper, code, license, weights and preprocessing or tokenizer come
    from ``zoo.model_info``.
    """
    names = list(list_models() if names is None else names)
    rows = []
    for name in tqdm(names, desc="profiling", unit="model", file=sys.stderr, disable=not progress):
        info = model_info(name)
        if info.get("task") == "text-generation":
            rows.append(_lm_row(name, info))
            continue
        ref = info.get("reference") or {}
        cfg = info.get("pretrained_cfg") or {}
        prof = profile(name)
        rows.append(
            {
                "name": name,
                "family": info["family"],
                "task": info.get("task"),
                "params": int(prof.params),
                "trainable_params": int(prof.trainable_params),
                "frozen_params": int(prof.frozen_params),
                "macs": int(prof.macs),
                "flops": int(prof.flops),
                "input_size": [int(s) for s in prof.input_size[1:]],  # (1, C, H, W) -> [C, H, W]
                "ref_params": ref.get("params"),
                "ref_macs": ref.get("macs"),
                "ref_gmacs": ref.get("gmacs"),
                # sparse models: the paper's figures count non-zero weights only (params/macs above are dense)
                "ref_nonzero_params": ref.get("nonzero_params"),
                "ref_nonzero_macs": ref.get("nonzero_macs"),
                "sparsity": ref.get("sparsity"),
                "top1": ref.get("top1"),
                "ref_convention": ref.get("convention"),
                "paper": info.get("paper"),
                "paper_ids": info.get("paper_ids"),
                "code": info.get("code"),
                "license": info.get("license"),
                "timm_owns_name": bool(info.get("timm_owns_name")),
                "hf_hub_id": cfg.get("hf_hub_id"),
                "hf_hub_filename": cfg.get("hf_hub_filename"),
                "weights_notes": [str(n) for n in _as_list(cfg.get("notes"))],
                "num_classes": cfg.get("num_classes"),
                "crop_pct": cfg.get("crop_pct"),
                "crop_mode": cfg.get("crop_mode"),
                "interpolation": cfg.get("interpolation"),
                "mean": _floats(cfg.get("mean")),
                "std": _floats(cfg.get("std")),
                "fixed_input_size": bool(cfg.get("fixed_input_size", False)),
            }
        )
    return rows


def _lm_row(name: str, info: dict[str, Any]) -> dict[str, Any]:
    """A language model's row: unique params counted on the meta device, the architecture from its config."""
    ref = info.get("reference") or {}
    cfg = info.get("pretrained_cfg") or {}
    with torch.device("meta"):
        model = create_model(name)
    counts = count_params(model)
    config = model.config
    arch = {
        key: getattr(config, key, None)
        for key in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "head_dim",
            "max_position_embeddings",
            "tie_word_embeddings",
            "layer_sharing",
            "sliding_window",
            "num_recursion",
            "sharing",
            "kv_sharing",
            "mor",
            "lora_rank",
        )
    }
    layer_types = getattr(config, "layer_types", None)
    arch["global_layers"] = None if not layer_types else sum(t == "full_attention" for t in layer_types)
    return {
        "name": name,
        "family": info["family"],
        "task": info.get("task"),
        "params": int(counts["params"]),
        "non_embedding_params": counts["non_embedding"],
        "kv_cache_bytes_per_token": int(model.kv_cache_bytes_per_token()),
        "arch": arch,
        "ref_params": ref.get("params"),
        "commonsense_avg": ref.get("commonsense_avg"),
        "ref_convention": ref.get("convention"),
        "paper": info.get("paper"),
        "paper_ids": info.get("paper_ids"),
        "code": info.get("code"),
        "license": info.get("license"),
        "license_name": cfg.get("license_name"),
        "context_length": cfg.get("context_length"),
        "tokenizer": cfg.get("tokenizer"),
        "timm_owns_name": False,
        "hf_hub_id": cfg.get("hf_hub_id"),
        "hf_hub_filename": cfg.get("hf_hub_filename"),
        "weights_notes": [str(n) for n in _as_list(cfg.get("notes"))],
    }


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def _floats(value) -> list[float] | None:
    return None if value is None else [float(v) for v in _as_list(value)]


def _sort_key(row: dict[str, Any]):
    task = row.get("task")
    task_rank = _TASK_ORDER.index(task) if task in _TASK_ORDER else len(_TASK_ORDER)
    family = row["family"]
    fam_rank = FAMILY_ORDER.index(family) if family in FAMILY_ORDER else len(FAMILY_ORDER)
    variants, sizes = _VARIANT_SIZE_ORDER.get(family, ((), ()))
    variant, _, size = row["name"].rpartition("_")
    if variant in variants and size in sizes:
        within = (0, variants.index(variant), sizes.index(size), 0, "")
    else:
        within = (1, 0, 0, row["params"], row["name"])
    return (task_rank, fam_rank, family, within)


def ordered(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows in table order: by family, then variant and size (see ``_VARIANT_SIZE_ORDER``), else by params."""
    return sorted(rows, key=_sort_key)


def _family_title(family: str) -> str:
    return FAMILY_TITLES.get(family, family)
