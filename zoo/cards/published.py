"""The card of a published model (``zoo publish``, ``push_to_hub``, a training run's ``export/``): front matter
built with ``huggingface_hub.ModelCardData`` / ``EvalResult`` from the run's metrics, then markdown."""

import json
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

# metrics.json key -> (metric type, display name) for published cards; other numeric keys keep their own name
_TASK_NAMES = {"image-classification": "Image Classification", "text-generation": "Text Generation"}
_METRICS = {
    "top1": ("accuracy", "top-1"),
    "top5": ("accuracy", "top-5"),
    "perplexity": ("perplexity", "perplexity"),
    "loss": ("loss", "loss"),
}
_NOT_METRICS = {
    "params",
    "macs",
    "flops",
    "dataset",
    "split",
    "num_samples",
    "samples",
    "step",
    "epoch",
    # what train.py's metrics.json records about the run and the data, not results
    "train_steps",
    "train_seconds",
    "num_classes",
    "vocab_size",
    "tokens",
    "train_tokens",
    "val_tokens",
    "unigram_perplexity",
    "seq_len",
    "label_names",
}


def _metric_results(metrics: dict[str, Any], task: str, dataset: str | None):
    results = []
    if not dataset:
        return results
    for key, value in metrics.items():
        if key in _NOT_METRICS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        metric_type, metric_name = _METRICS.get(key, (key, key))
        results.append(
            EvalResult(
                task_type=task,
                task_name=_TASK_NAMES.get(task, task),
                dataset_type=dataset,
                dataset_name=dataset,
                dataset_split=metrics.get("split"),
                metric_type=metric_type,
                metric_name=metric_name,
                metric_value=float(value),
            )
        )
    return results


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _latency_text(summary: dict[str, Any]) -> str:
    """The card's latency line: the figure, how it was taken, and how busy the machine was."""
    text = f"{summary['latency_ms']:.2f} ms median"
    if summary.get("latency_runs"):
        text += f" of {summary['latency_runs']} runs"
    text += f" on CPU, {_plural(int(summary['threads']), 'thread')}"
    load, cores = summary.get("load_average"), summary.get("cores")
    if load is not None and cores:
        text += f", 1-min load average {load:.2f} on {_plural(int(cores), 'core')}"
        if load > cores:  # more runnable work than cores: the timed passes waited for a core
            text += " (taken on a busy machine: the model alone is likely faster)"
    return text + ", at publishing time"


def _published_card_data(
    title: str, task: str, family: str, license: str | None, dataset: str | None, eval_results: list
) -> ModelCardData:
    return ModelCardData(
        model_name=title.split("/")[-1],
        license=license,
        library_name="zoo",
        pipeline_tag=task,
        tags=[t for t in (task, "zoo", family, "timm" if task == "image-classification" else None, "safetensors") if t],
        datasets=[dataset] if dataset else None,
        metrics=sorted({r.metric_type for r in eval_results}) or None,
        eval_results=eval_results or None,
    )


def _published_details(
    model_name: str,
    model_args: dict[str, Any],
    summary: dict[str, Any],
    metrics: dict[str, Any],
    license: str | None,
    weights: dict[str, Any],
) -> list[tuple[str, str]]:
    """The rows of the card's "Model details" table."""
    args_text = f"`{json.dumps(model_args, sort_keys=True)}`" if model_args else "registry defaults"
    details = [
        ("Architecture", f"`{model_name}`"),
        ("Model arguments", args_text),
        ("Params", f"{summary['params']:,}"),
    ]
    if summary.get("macs") is not None:
        size = " x ".join(str(s) for s in summary["input_size"])
        macs = f"{summary['macs'] / 1e6:,.2f} M (fvcore, one multiply-add = 1; FLOPs = 2 x MACs)"
        details.append((f"MACs @ {size}", macs))
    if summary.get("latency_ms") is not None:
        details.append(("Latency (batch 1)", _latency_text(summary)))
    if metrics.get("params") is not None and metrics["params"] != summary["params"]:
        details.append(("Params (metrics.json)", f"{metrics['params']:,}"))
    return details + [
        ("License", license or "-"),
        ("Weights", f"`{weights['file']}`, {weights['size']:,} bytes"),
        ("sha256", f"`{weights['sha256']}`"),
    ]


def _published_usage(repo_id: str | None, task: str, tokenizer: bool, weights: dict[str, Any]) -> list[str]:
    """The card's "Usage" section: loading code, the preprocessing or tokenizer, the sha256 check."""
    name = f"hf-hub:{repo_id}" if repo_id else "path/to/this/folder"
    lines = [
        "",
        "## Usage",
        "",
        "```python",
        "import zoo",
        "",
        f'model = zoo.create_model("{name}", pretrained=True).eval()',
    ]
    if task == "image-classification":
        lines += [
            "",
            "import timm",
            "config = timm.data.resolve_data_config({}, model=model)  # input size, mean/std of training",
            "transform = timm.data.create_transform(**config)",
        ]
    elif tokenizer:  # the tokenizer of these weights is the folder's, whatever repo name the card is read under
        lines += [
            "",
            "from zoo.data.lm_tokenizer import load_lm_tokenizer",
        ]
        if repo_id:
            lines += [
                "from zoo.hub import download",
                f'tokenizer = load_lm_tokenizer(download("{repo_id}", "tokenizer.json"))',
            ]
        else:
            lines.append('tokenizer = load_lm_tokenizer("path/to/this/folder")  # its tokenizer.json')
    check = (
        f"`create_model` checks the downloaded `{weights['file']}` against the sha256 recorded in "
        "`config.json` (`hf_hub_sha256`) before reading it; by hand: `sha256sum model.safetensors`."
    )
    return lines + ["```", "", check]


def render_published_card(
    *,
    repo_id: str | None,
    model_name: str,
    task: str,
    family: str,
    license: str | None,
    dataset: str | None,
    metrics: dict[str, Any],
    recipe_text: str | None,
    summary: dict[str, Any],
    weights: dict[str, Any],
    model_args: dict[str, Any],
    tokenizer: bool = False,
) -> str:
    """The model card (README.md) of a published model: front matter with ModelCardData / EvalResult, then markdown."""

    title = repo_id or model_name
    eval_results = _metric_results(metrics, task, dataset)
    data = _published_card_data(title, task, family, license, dataset, eval_results)
    what = f"`{model_name}` ({family} family, {task.replace('-', ' ')})"
    what += f" trained on `{dataset}` with the zoo's training engine." if dataset else "."
    details = _published_details(model_name, model_args, summary, metrics, license, weights)
    lines = [f"# {title}", "", what, "", "## Model details", "", "| | |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in details]
    if eval_results:
        intro = f"Held-out evaluation on `{dataset}` after training (`metrics.json` of the run):"
        lines += ["", "## Evaluation", "", intro, "", "| metric | value |", "|---|---:|"]
        lines += [f"| {r.metric_name} | {_fmt(r.metric_value)} |" for r in eval_results]
    lines += _published_usage(repo_id, task, tokenizer, weights)
    if recipe_text:
        lines += [
            "",
            "## Training recipe",
            "",
            "The resolved recipe of the run (`args.yaml`):",
            "",
            "```yaml",
            recipe_text.rstrip("\n"),
            "```",
        ]
    content = f"---\n{data.to_yaml().strip()}\n---\n\n" + "\n".join(lines) + "\n"
    ModelCard(content)  # parses the front matter back: malformed metadata fails here, not on the Hub
    return content
