"""The model card of one row of :func:`zoo.cards.rows.collect`: an image classifier's here, a language model's in
:mod:`zoo.cards.lm`."""

from typing import Any

from huggingface_hub import EvalResult, ModelCardData

from .lm import render_lm_card
from .rows import _family_title
from .text import (
    _card_description,
    _card_text,
    _cell,
    _gmacs,
    _is_sparse,
    _maybe,
    _nonzero_gmacs,
    _nonzero_params,
    _paper_url,
    _preprocessing,
    _reference_gmacs,
    _rel,
    _size,
    _sparsity,
    _top1,
    _tuple,
    _weights,
)


def _card_data(row: dict[str, Any]):

    eval_results = None
    if row.get("top1") is not None and row.get("task") == "image-classification":
        paper_url = _paper_url(row)
        eval_results = [
            EvalResult(
                task_type="image-classification",
                task_name="Image Classification",
                dataset_type="imagenet-1k",
                dataset_name="ImageNet-1k",
                dataset_split="validation",
                metric_type="accuracy",
                metric_name="top-1",
                metric_value=float(row["top1"]),
                verified=False,
                source_name=f"paper: {row['paper']} ({row['paper_ids']})" if row.get("paper") else "paper",
                source_url=paper_url,
            )
        ]
    return ModelCardData(
        model_name=row["name"],
        license=row.get("license"),
        library_name="zoo",
        pipeline_tag=row.get("task"),
        tags=[t for t in (row.get("task"), "zoo", row["family"]) if t],
        datasets=["imagenet-1k"] if row.get("task") == "image-classification" else None,
        metrics=["accuracy"] if eval_results else None,
        eval_results=eval_results,
    )


def _card_details(row: dict[str, Any], task: str, family: str) -> list[str]:
    size = row["input_size"]
    params = f"{row['params']:,}"
    if row["frozen_params"]:
        params += f" ({row['trainable_params']:,} trainable, {row['frozen_params']:,} frozen)"
    sparse = _is_sparse(row)
    dense = ", dense" if sparse else ""
    details = [
        ("Family", family),
        ("Task", task + (f" ({row['num_classes']} classes)" if row.get("num_classes") else "")),
        (f"Params (measured{dense})", params),
        (f"Params (reference{dense})", "-" if row.get("ref_params") is None else f"{row['ref_params']:,}"),
    ]
    if sparse:
        details.append((f"Params, non-zero (paper, {_sparsity(row)} sparse)", _nonzero_params(row)))
    details += [
        (
            f"GMACs @ {_size(size)} (measured{dense})",
            _gmacs(row["macs"], 3) + _maybe(_rel(row["macs"], row.get("ref_macs")), " ({} vs reference)"),
        ),
        (f"GMACs (reference{dense})", _reference_gmacs(row)),
    ]
    if sparse:
        details.append((f"GMACs, non-zero (paper, {_sparsity(row)} sparse)", _nonzero_gmacs(row)))
    details.append(("GFLOPs (= 2 x MACs, measured)", _gmacs(row["flops"], 3)))
    if row.get("top1") is not None:
        details.append(("ImageNet-1k top-1 (paper)", f"{_top1(row['top1'])}%"))
    details += [
        ("Input size", _size(size) + (" (fixed: the model only runs at this size)" if row["fixed_input_size"] else "")),
        ("Preprocessing (eval)", _preprocessing(row)),
        ("Mean / std", f"{_tuple(row.get('mean'))} / {_tuple(row.get('std'))}"),
        ("Weights", _weights(row)),
    ]
    if row.get("weights_notes"):
        details.append(("Weights origin", "; ".join(row["weights_notes"])))
    details.append(("License", row.get("license") or "-"))
    return ["| | |", "|---|---|"] + [f"| {k} | {_cell(v)} |" for k, v in details]


def _card_usage(name: str, on_hub: bool) -> list[str]:
    return [
        "```python",
        "import timm",
        "import torch",
        "from PIL import Image",
        "",
        "import zoo",
        "",
        (
            f'model = zoo.create_model("{name}", pretrained=True).eval()'
            if on_hub
            else f'model = zoo.create_model("{name}", pretrained=True,  # the authors\' file, downloaded by hand\n'
            f'                         pretrained_cfg_overlay={{"file": "path/to/checkpoint.pth"}}).eval()'
        ),
        "config = timm.data.resolve_data_config({}, model=model)  # input size, crop_pct, interpolation, mean/std",
        "transform = timm.data.create_transform(**config)        # eval transforms: resize, center crop, normalize",
        "",
        'image = Image.open("image.jpg").convert("RGB")',
        "with torch.inference_mode():",
        "    probs = model(transform(image).unsqueeze(0)).softmax(dim=-1)",
        "print(probs.topk(5))",
        "```",
    ]


def _card_measured(row: dict[str, Any]) -> list[str]:
    name, size = row["name"], row["input_size"]
    measured = [
        f'- **Params**: unique parameters of `zoo.create_model("{name}")` (tied or shared weights counted once; '
        "frozen ones included), by `zoo.profile`.",
        f'- **MACs**: fvcore `FlopCountAnalysis` total with the zoo\'s op handles (`zoo.profile("{name}")`), '
        f"batch 1 at {_size(size)}; one multiply-add = 1 MAC; FLOPs = 2 x MACs.",
    ]
    if _is_sparse(row):
        measured.append(
            f"- **Dense vs non-zero**: the authors train with dynamic sparsity and release dense tensors in which "
            f"{_sparsity(row)} of the weights are exact zeros. The measured and reference params and GMACs above are "
            "dense: they count every weight, zeros included. The paper's table counts only the non-zero weights "
            f"({_nonzero_params(row)} params, {_nonzero_gmacs(row)} GMACs), rounded as the paper gives them. "
            f"`zoo.profile` reports both for loaded weights: `nonzero_params` (weights that are not exactly zero) "
            "and `nonzero_macs` (each conv/linear layer's MACs scaled by its weight density)."
        )
    if row.get("ref_convention"):
        measured.append(f"- **Reference figures**: {row['ref_convention']}.")
    if row.get("top1") is not None:
        measured.append("- **Top-1** is the paper's ImageNet-1k figure, quoted, not re-measured here.")
    measured.append(
        "- Tool versions, dates and machine details are not embedded, so the same code gives a "
        "byte-identical card: regenerate with `python tools/cards.py`; `python tools/cards.py --check` "
        "(and `tests/profile/test_cards.py`) fails when this card no longer matches the code."
    )
    return measured


def render_card(row: dict[str, Any]) -> str:
    """The Hugging Face model card (YAML front matter + markdown) of one row of :func:`collect`."""
    if row.get("task") == "text-generation":
        return render_lm_card(row)
    name, family = row["name"], _family_title(row["family"])
    task = row.get("task") or "model"
    return _card_text(
        _card_data(row), name, _card_description(row, task, family), _card_details(row, task, family),
        _card_usage(name, bool(row.get("hf_hub_id"))), _card_measured(row),
    )  # fmt: skip
