"""One entry point for every deployment format: resolve the model, write the artefact and the files a deployment
needs beside it (model card, config.json, preprocessing or tokenizer), check the artefact against eager.

A format is a module with ``write(model, folder, spec) -> list[str]`` (the artefact files it wrote, relative to
``folder``) and ``check(model, folder, spec) -> dict`` (what was compared and how far apart: ``max_abs_diff``,
``max_rel_diff`` for tensors, ``tokens_equal`` for generation). Optional dependencies are imported by the format
modules when they run, so ``import zoo`` never needs them.
"""

from __future__ import annotations

import copy
import importlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._version import __version__
from ..data.lm_tokenizer import CHAT_TEMPLATE_FILE, TOKENIZER_CONFIG, load_lm_tokenizer
from ..factory import create_model, resolve_weight_source
from ..hub import CONFIG_NAME, download
from ..lm.decoder import DecoderLM
from ..lm.quant import (
    EXPORT_BACKENDS,
    QuantName,
    QuantSpec,
    lookup,
    model_quantization,
    portable_kernels,
    quantize_model,
)
from ..models._lm_files import CONFIGURATION_FILE, MODELING_FILE
from ..output_folder import OutputFolderError, check_output_folder, write_folder
from ..publish import export_pretrained, export_run
from ..registry import get_entry, list_models
from ..run_layout import export_folder, is_run_folder
from ..weights import CheckpointError

__all__ = ["FORMATS", "ExportError", "ExportResult", "ExportSpec", "export", "format_quantize", "load_source"]

_logger = logging.getLogger(__name__)

# the formats that store the zoo's own quantized weights (the vocabulary's zoo formats, zoo.lm.quant_format: bf16,
# int8, int4 and their activation widths): the program holds the codes and dequantizes them in the graph; the
# other formats quantize their own way (EXPORT_BACKENDS: the names each format reads)
ZOO_QUANTIZED_FORMATS = tuple(f for f, backend in EXPORT_BACKENDS.items() if backend == "zoo")

# format -> (module, what it needs installed, which tasks it takes)
FORMATS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "pt2": ("program", "torch", ("image-classification", "text-generation")),
    "onnx": ("onnx_file", "onnx, onnxscript, onnxruntime", ("image-classification", "text-generation")),
    "pte": ("lm_runtime", "torch (AOTInductor) or executorch", ("text-generation",)),
    "gguf": ("gguf_file", "gguf (llama-cpp-python for --check)", ("text-generation",)),
}
VISION, TEXT = "image-classification", "text-generation"
REPORT_NAME = "export.json"
PREPROCESSING_NAME = "preprocessing.json"
TOKENIZER_NAMES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json")
# what an export folder holds besides its artefact files (export.json lists those)
DEPLOYMENT_NAMES = (
    "README.md",
    CONFIG_NAME,
    PREPROCESSING_NAME,
    REPORT_NAME,
    "generation_config.json",
    *TOKENIZER_NAMES,
)


class ExportError(RuntimeError):
    """An export could not be made or did not match eager; the message says why and what to do."""


@dataclass
class ExportSpec:
    """What to export and how: the fields every format reads."""

    name: str  # the registry name of the architecture
    task: str  # VISION or TEXT
    format: str
    dynamic_batch: bool = True
    dynamic_size: bool = False  # vision: height and width dynamic too (where the architecture allows)
    input_size: tuple[int, int, int] | None = None  # vision: (C, H, W) of the example input
    opset: int = 20
    quantize: str | None = None
    max_seq_len: int = 256  # LMs: the static cache's length (prompt + generated tokens)
    check: bool = False
    seed: int = 0
    tokenizer: str | None = None  # the tokenizer file export() was given (None: the one beside the weights)
    options: dict[str, Any] = field(default_factory=dict)  # format-specific extras

    def example_input(self, model: nn.Module, batch_size: int = 2) -> torch.Tensor:
        """A seeded input of the model's shape: images ``(B, C, H, W)`` or token ids ``(B, T)``."""
        g = torch.Generator().manual_seed(self.seed)
        if self.task == TEXT:
            vocab = model.config.vocab_size
            return torch.randint(0, vocab, (batch_size, min(8, self.max_seq_len)), generator=g)
        return torch.randn(batch_size, *self.input_size, generator=g)


@dataclass
class ExportResult:
    """What :func:`export` wrote: the folder, its artefact files, and the check against eager (if asked)."""

    format: str
    folder: Path
    files: list[str]
    check: dict[str, Any] | None = None
    spec: ExportSpec | None = None

    @property
    def path(self) -> Path:
        """The main artefact (the first file written)."""
        return self.folder / self.files[0]

    def to_dict(self) -> dict[str, Any]:
        spec = asdict(self.spec) if self.spec is not None else {}
        return {
            "format": self.format,
            "files": list(self.files),
            "check": self.check,
            "spec": spec,
            "zoo_version": __version__,
            "torch_version": torch.__version__,
        }


def _format_module(fmt: str):
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return importlib.import_module(f".{FORMATS[fmt][0]}", __package__)


def load_source(source: str | os.PathLike, weights: str | os.PathLike | None = None, **kwargs) -> nn.Module:
    """A model from a registry name (random init unless ``weights``), ``hf-hub:ORG/NAME``, a model folder, or a
    training run folder (its ``export/``; a run without one is exported with :func:`zoo.publish.export_run`)."""
    name = os.fspath(source)
    path = Path(name)
    if name not in list_models() and path.is_dir() and is_run_folder(path):
        if not (export_folder(path) / CONFIG_NAME).is_file() and not (path / CONFIG_NAME).is_file():
            export_run(path, export_folder(path), latency_runs=0)
    if weights is not None:
        return create_model(name, pretrained=True, pretrained_cfg_overlay={"file": os.fspath(weights)}, **kwargs)
    return create_model(name, pretrained=name not in list_models(), **kwargs)


def source_model_args(source: str | os.PathLike) -> dict[str, Any]:
    """The ``model_args`` a model folder, run or Hub repo records (empty for a registry name)."""
    name = os.fspath(source)
    if name in list_models():
        return {}
    config = resolve_weight_source(name).config or {}
    args = config.get("model_args")
    return dict(args) if isinstance(args, dict) else {}


def source_tokenizer(source: str | os.PathLike, weights: str | os.PathLike | None = None) -> Path | None:
    """The tokenizer beside what a model was loaded from: the ``weights`` file's folder, or the model folder or run
    a name resolves to (the factory keeps no weight location in the model's cfg). None for registry/Hub names."""
    if weights is not None:
        folder = Path(weights) if Path(weights).is_dir() else Path(weights).parent
    elif os.fspath(source) in list_models():
        return None
    else:
        location = resolve_weight_source(os.fspath(source)).cfg_overlay.get("file")
        if not location:
            return None
        folder = Path(location)
    return tokenizer_file(folder)


def hub_tokenizer(repo_id: str) -> Path | None:
    """The ``tokenizer.json`` of Hub repo ``repo_id`` (downloaded and verified), or None where it has none."""
    try:
        return Path(download(repo_id, "tokenizer.json"))
    except CheckpointError as e:
        _logger.warning("exporting hf-hub:%s without a tokenizer: %s", repo_id, e)
        return None


def _model_name(model: nn.Module, name: str | None) -> str:
    name = name or (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    if not name:
        raise ExportError(
            "cannot tell which architecture this model is: it carries no pretrained_cfg['architecture']; "
            "pass model_name=REGISTERED_NAME"
        )
    get_entry(name)  # UnknownModelError with close names
    return name


def deployable(model: nn.Module) -> nn.Module:
    """The inference form of ``model``, on a copy where it differs (the model itself is left as it is): SLaK's
    re-parameterised form (BatchNorm and small kernels folded into its large kernels)."""
    if callable(getattr(model, "reparameterize", None)) and not getattr(model, "deploy", True):
        return copy.deepcopy(model).reparameterize().eval()
    return model


def format_quantize(format: str, quantize: str | None) -> QuantName | None:
    """The vocabulary's entry for ``quantize=`` of a ``format`` export (its backend's names: ``"q4_0"`` or
    ``"gguf:q4_0"`` for gguf); None for none (and for the zoo's fp32, the float model); an ExportError naming what
    the format takes otherwise."""
    if quantize is None or (isinstance(quantize, str) and quantize.strip().lower() in ("none", "")):
        return None
    try:
        entry = lookup(quantize, EXPORT_BACKENDS[format])
    except ValueError as e:
        raise ExportError(f"{format} export: {e}") from None
    return None if entry.backend == "zoo" and entry.bits == 32 else entry


def _quantized(model: nn.Module, format: str, quantize: QuantName | None, task: str) -> nn.Module:
    """The model with the zoo's quantized weights a ``pt2`` export asks for (a quantized copy; the model itself is
    left as it is); a model already quantized goes only to the formats that store the zoo's codes."""
    done = model_quantization(model)
    wanted = quantize is not None and quantize.backend == "zoo"
    # pte's 8da4w / 8da8w store a zoo model's own int8 / symmetric int4 codes (zoo.export.lm_runtime says which)
    own_grid = quantize is not None and quantize.backend == "pte"
    if done is not None and done.method != "bf16" and format not in ZOO_QUANTIZED_FORMATS and not own_grid:
        raise ExportError(
            f"this model holds {done.describe()} weights, which the {format} format cannot store; export it as pt2, "
            f"or export the float model (its own quantize options: zoo export --help)"
        )
    if not wanted:
        return model
    if task != TEXT:
        raise ExportError(f"quantize={quantize.name!r} is for the language models (the vision models: onnx int8)")
    spec = QuantSpec.parse(quantize.name)
    if done is not None:
        if not done.same_weights(spec):
            raise ExportError(
                f"this model already holds {done.describe()} weights; they cannot be exported as {spec.describe()} "
                "(export the float model with this quantize)"
            )
        return model
    return quantize_model(copy.deepcopy(model), spec).eval()


def _input_size(model: nn.Module, input_size) -> tuple[int, int, int]:
    if input_size is not None:
        size = tuple(int(s) for s in input_size)
        if len(size) == 2:
            size = (int(model.pretrained_cfg.get("input_size", (3,))[0]), *size)
        if len(size) != 3 or min(size) < 1:
            raise ExportError(f"input_size must be (C, H, W) or (H, W) of positive ints, got {input_size}")
        return size
    return tuple(model.pretrained_cfg["input_size"])


def export(
    model: nn.Module | str | os.PathLike,
    format: str,
    out: str | os.PathLike | None = None,
    *,
    model_name: str | None = None,
    weights: str | os.PathLike | None = None,
    dynamic_batch: bool = True,
    dynamic_size: bool = False,
    input_size=None,
    opset: int = 20,
    quantize: str | None = None,
    max_seq_len: int = 256,
    check: bool = False,
    tokenizer: str | os.PathLike | None = None,
    model_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
    **options,
) -> ExportResult:
    """Export ``model`` to a deployment folder.

    Args:
        model: a zoo model, or what ``zoo export`` takes: a registry name, ``hf-hub:ORG/NAME``, a model folder
            or a training run folder.
        format: ``"pt2"`` (torch.export program), ``"onnx"`` (dynamo exporter at ``opset``), ``"pte"`` (the
            language models' compiled prefill + cached decode) or ``"gguf"`` (llama.cpp, Llama-shaped LMs).
        out: the folder to write (default ``./NAME-FORMAT``); files of the same names are replaced.
        dynamic_batch: the batch dimension is dynamic (vision pt2/onnx); ``dynamic_size``: height/width too.
        input_size: vision example input ``(C, H, W)``; default the model's ``pretrained_cfg["input_size"]``.
        quantize: a weight format the artefact stores (format-specific: see ``zoo export --help``).
        max_seq_len: language models: the static KV cache's length in the compiled artefact.
        check: run the artefact on a seeded sample and compare with eager; an artefact that disagrees is an
            :class:`ExportError` (the folder is left for inspection).
        tokenizer: a ``tokenizer.json`` to ship (default: the one beside the model's weights, if any).
        model_kwargs: the arguments the model was built with (recorded in config.json's ``model_args``; default:
            those of the folder or run it was loaded from).
        options: format-specific extras.

    Returns:
        an :class:`ExportResult`; ``export.json`` in the folder records it.
    """
    if format not in FORMATS:
        raise ExportError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    stored = format_quantize(format, quantize)  # refused before the model is loaded
    sources = _source_paths(model, weights)
    if out is not None:
        _output_folder(out, sources)  # refused before the model is loaded
    model, model_kwargs, tokenizer = _resolve_model(model, weights, model_kwargs, tokenizer)
    name = _model_name(model, model_name)
    task = get_entry(name).task
    model = _quantized(model, format, stored, task)
    traced = deployable(model)
    _check_format_fits(model, name, task, format, dynamic_size)
    module = _format_module(format)
    spec = ExportSpec(
        name=name,
        task=task,
        format=format,
        dynamic_batch=dynamic_batch,
        dynamic_size=dynamic_size,
        input_size=_input_size(model, input_size) if task == VISION else None,
        opset=opset,
        quantize=None if stored is None else stored.native,  # as the format's runtime names it
        max_seq_len=max_seq_len,
        check=check,
        seed=seed,
        tokenizer=os.fspath(tokenizer) if tokenizer is not None else None,
        options=dict(options),
    )
    folder = _output_folder(out if out is not None else f"{name}-{format}", sources)
    return _write_folder(module, model, traced, folder, spec, tokenizer, model_kwargs)


def _source_paths(model, weights) -> list[str]:
    """The places on disk an export reads from (its output folder may not hold them)."""
    paths = [os.fspath(weights)] if weights is not None else []
    if isinstance(model, (str, os.PathLike)):
        name = os.fspath(model).removeprefix("local-dir:")
        if name not in list_models() and not name.startswith("hf-hub:") and Path(name).exists():
            paths.append(name)
    return paths


def previous_export(folder: Path) -> bool:
    """``folder`` holds an earlier export and nothing else: its ``export.json`` names a format and the artefact
    files, and every other entry is a deployment file (or hidden: an interrupted write's leftovers)."""
    try:
        report = json.loads((folder / REPORT_NAME).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(report, dict) or report.get("format") not in FORMATS or not isinstance(report.get("files"), list):
        return False
    known = set(DEPLOYMENT_NAMES) | {str(f) for f in report["files"]}
    return all(p.name in known or p.name.startswith(".") for p in folder.iterdir())


def _output_folder(out: str | os.PathLike, sources: list[str]) -> Path:
    try:
        return check_output_folder(out, "zoo export", sources=sources, previous=previous_export, what="folder")
    except OutputFolderError as e:
        raise ExportError(str(e)) from None


def _resolve_model(
    model: nn.Module | str | os.PathLike,
    weights: str | os.PathLike | None,
    model_kwargs: dict[str, Any] | None,
    tokenizer: str | os.PathLike | None,
) -> tuple[nn.Module, dict[str, Any] | None, str | os.PathLike | None]:
    """The module to export, in eval mode (a source string loaded), with its model_kwargs and tokenizer."""
    if not isinstance(model, nn.Module):
        given = dict(model_kwargs or {})
        model_kwargs = {**source_model_args(model), **given}
        source, model = model, load_source(model, weights, **given)
        if tokenizer is None:
            tokenizer = source_tokenizer(source, weights)
        if tokenizer is None and is_language_model(model) and os.fspath(source).startswith("hf-hub:"):
            tokenizer = hub_tokenizer(os.fspath(source)[len("hf-hub:") :])
    elif weights is not None:
        raise ExportError("weights= is for a model named by a string; load them into the module yourself")
    return model.eval(), model_kwargs, tokenizer


def _check_format_fits(model: nn.Module, name: str, task: str, format: str, dynamic_size: bool) -> None:
    """Refuse a format that is not for the model's task, and dynamic sizes for a model with a fixed one."""
    if task not in FORMATS[format][2]:
        takes = ", ".join(f for f, (_, _, tasks) in FORMATS.items() if task in tasks)
        raise ExportError(f"format {format!r} is not for {task} models like {name}; for these, use {takes}")
    if dynamic_size and task == VISION and getattr(model, "fixed_input_size", False):
        raise ExportError(
            f"{name} takes only its configured input size ({tuple(model.pretrained_cfg['input_size'][1:])}): its "
            "token-mixing or position tables (or its flattened classifier) are sized by the input; export without "
            "dynamic_size"
        )


def _write_folder(
    module: Any,
    model: nn.Module,
    traced: nn.Module,
    folder: Path,
    spec: ExportSpec,
    tokenizer: str | os.PathLike | None,
    model_kwargs: dict[str, Any] | None,
) -> ExportResult:
    """Write the format ``module``'s artefact of ``traced`` and the files beside it, check the artefact against
    eager ``model`` when ``spec.check`` asks, and record the result in ``export.json``: all in a temporary folder
    beside ``folder`` that then replaces it whole (:func:`~zoo.output_folder.write_folder`)."""

    def write(tmp: Path) -> ExportResult:
        with torch.no_grad():
            files = module.write(traced, tmp, spec)
        result = ExportResult(spec.format, folder, files, spec=spec)
        usage = getattr(module, "usage", lambda s: "")(spec)
        write_deployment_files(model, tmp, spec, tokenizer, model_kwargs, usage)
        if spec.check:
            # quantized layers compare in the portable form the artefact holds (not eager's bf16-fed CPU kernels)
            with torch.no_grad(), portable_kernels():
                result.check = module.check(model, tmp, spec)
        _write_json(tmp / REPORT_NAME, result.to_dict())
        return result

    try:
        result = write_folder(folder, write)
    except OutputFolderError as e:
        raise ExportError(str(e)) from None
    if spec.check and not result.check.get("ok", False):
        raise ExportError(f"the {spec.format} artefact in {folder} does not match eager: {result.check}")
    return result


# ------------------------------------------------------------------------------------------------------------------
# The files beside the artefact
# ------------------------------------------------------------------------------------------------------------------


def _tokenizer_files(model: nn.Module, tokenizer) -> list[Path]:
    """The tokenizer files to ship: a given one, checked to load as a tokenizer (see :func:`_shipped_name`), or
    those beside the model's weights."""
    if tokenizer is not None:
        path = Path(tokenizer)
        if not path.is_file():
            raise ExportError(f"tokenizer file {path} does not exist")
        try:
            load_lm_tokenizer(path)
        except Exception as e:  # tokenizers' and sentencepiece's own errors: any failure to load means "not one"
            raise ExportError(
                f"--tokenizer {path} is not a tokenizer: it does not load as a tokenizers tokenizer.json or a "
                f"SentencePiece tokenizer.model ({type(e).__name__}: {str(e)[:300]}); give the model's tokenizer.json"
            ) from None
        return [path]
    source = (getattr(model, "pretrained_cfg", None) or {}).get("file")
    if not source:
        return []
    folder = Path(source) if Path(source).is_dir() else Path(source).parent
    return [folder / n for n in TOKENIZER_NAMES if (folder / n).is_file()]


def _shipped_name(path: Path, given: bool) -> str:
    """The name a tokenizer file gets in the folder: a given one the name loaders look for (``tokenizer.json`` or
    ``tokenizer.model``), whatever it was called; those beside the weights their own."""
    if not given:
        return path.name
    return "tokenizer.model" if path.suffix == ".model" else "tokenizer.json"


def tokenizer_file(folder: Path) -> Path | None:
    """The tokenizer a deployment folder carries (``tokenizer.json`` first), if any."""
    for name in ("tokenizer.json", "tokenizer.model"):
        if (folder / name).is_file():
            return folder / name
    return None


def preprocessing(model: nn.Module, spec: ExportSpec) -> dict[str, Any]:
    """What a deployment does to an image before the model: timm's data config keys and the class names."""
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    out = {
        "input_size": list(spec.input_size),
        "interpolation": cfg.get("interpolation", "bicubic"),
        "mean": list(cfg.get("mean", (0.485, 0.456, 0.406))),
        "std": list(cfg.get("std", (0.229, 0.224, 0.225))),
        "crop_pct": cfg.get("crop_pct", 0.875),
        "crop_mode": cfg.get("crop_mode", "center"),
        "layout": "NCHW, float32, RGB in [0, 1] before mean/std",
    }
    if cfg.get("label_names"):
        out["label_names"] = list(cfg["label_names"])
    return out


def write_deployment_files(
    model: nn.Module,
    folder: Path,
    spec: ExportSpec,
    tokenizer=None,
    model_kwargs: dict[str, Any] | None = None,
    module_usage: str = "",
) -> None:
    """The model card (``README.md``) and ``config.json`` of the model, and its preprocessing (vision) or tokenizer
    (language models). The weights themselves are the artefact's; no ``model.safetensors`` is left here."""
    tokenizers = _tokenizer_files(model, tokenizer) if spec.task == TEXT else []
    with tempfile.TemporaryDirectory(dir=folder, prefix=".card-") as tmp:
        given = tokenizer is not None
        first = next((p for p in tokenizers if _shipped_name(p, given) == "tokenizer.json"), None)
        export_pretrained(
            model, tmp, model_name=spec.name, model_kwargs=model_kwargs, latency_runs=0, tokenizer_file=first
        )
        config = json.loads((Path(tmp) / CONFIG_NAME).read_text())
        config.pop("hf_hub_sha256", None)  # describes model.safetensors, which a deployment folder does not carry
        config["zoo"] = {**config.get("zoo", {}), "export_format": spec.format}
        _write_json(folder / CONFIG_NAME, config)
        card = (Path(tmp) / "README.md").read_text()
        # transformers' files: the generation settings, the tokenizer's config (AutoTokenizer) and the remote code
        # config.json's auto_map names (AutoConfig with trust_remote_code)
        for extra in (
            "generation_config.json",
            TOKENIZER_CONFIG,
            CHAT_TEMPLATE_FILE,
            CONFIGURATION_FILE,
            MODELING_FILE,
        ):
            if (Path(tmp) / extra).is_file():
                shutil.copyfile(Path(tmp) / extra, folder / extra)
    (folder / "README.md").write_text(deployment_card(card, spec, module_usage))
    for path in tokenizers:
        if path.name == TOKENIZER_CONFIG and (folder / TOKENIZER_CONFIG).is_file():
            continue  # the one written above holds this one's entries, and the model's special tokens
        shutil.copyfile(path, folder / _shipped_name(path, tokenizer is not None))
    if spec.task == VISION:
        _write_json(folder / PREPROCESSING_NAME, preprocessing(model, spec))


def deployment_card(card: str, spec: ExportSpec, usage: str = "") -> str:
    """The published model card with the weight-file rows and the PyTorch usage replaced by the deployment's."""
    card = card.split("\n## Usage", 1)[0].rstrip() + "\n"
    lines = [line for line in card.splitlines() if not line.startswith(("| Weights |", "| sha256 |"))]
    lines = [f"- {spec.format}" if line == "- safetensors" else line for line in lines]
    return "\n".join(lines) + "\n" + _deployment_section(spec) + (usage.strip() + "\n" if usage else "")


def _deployment_section(spec: ExportSpec) -> str:
    lines = ["", "## Deployment", "", f"This folder holds the `{spec.format}` form of `{spec.name}`"]
    if spec.task == VISION:
        c, h, w = spec.input_size
        batch = "a dynamic batch" if spec.dynamic_batch else "a static batch"
        size = "dynamic height/width" if spec.dynamic_size else f"{h}x{w} inputs"
        lines[-1] += f" ({batch}, {c} channels, {size}); `{PREPROCESSING_NAME}` says how to prepare an image."
    elif spec.format == "pte":
        lines[-1] += f" (prefill and one-token decode with a static KV cache of {spec.max_seq_len} tokens)."
    elif spec.format == "gguf":
        lines[-1] += " for llama.cpp (the tokenizer is inside the file when the model folder had one)."
    else:
        lines[-1] += " (token ids in, the logits of every position out; dynamic batch and length)."
    lines += _stored_types(spec)
    lines += ["", f"`{REPORT_NAME}` records how it was made and how it compared with eager PyTorch.", ""]
    if spec.check:
        lines += ["The export was checked against eager PyTorch on a seeded sample (see `check` there).", ""]
    return "\n".join(lines)


def _stored_types(spec: ExportSpec) -> list[str]:
    """The card's line on the weights' storage: what the artefact holds, counted from what was written where the
    format reports it (a GGUF's tensor types: a q8_0 file whose rows do not fill whole blocks keeps them f16)."""
    types = (spec.options.get("gguf") or {}).get("tensor_types") if spec.format == "gguf" else None
    if not types:
        return [f"Weights stored as `{spec.quantize}`."] if spec.quantize else []
    held = ", ".join(f"{n} `{name.lower()}`" for name, n in sorted(types.items(), key=lambda kv: -kv[1]))
    line = f"Tensors stored as {held} (asked: `{spec.quantize or 'f32'}`; norms stay `f32`)."
    kept = spec.options["gguf"].get("kept_f16") or []
    if kept:
        line += (
            f" {len(kept)} matrices stay `f16`: their rows are not a whole number of `{spec.quantize}` blocks "
            f"({', '.join(kept[:3])}{', ...' if len(kept) > 3 else ''})."
        )
    return [line]


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def compare(want: torch.Tensor, got: torch.Tensor, tolerance: float = 1e-4) -> dict[str, Any]:
    """Max absolute and relative (to the largest eager magnitude) difference; ``ok`` within ``tolerance``."""
    want, got = want.detach().float(), torch.as_tensor(got).detach().float()
    if want.shape != got.shape:
        return {"ok": False, "shape_eager": list(want.shape), "shape_exported": list(got.shape)}
    diff = (want - got).abs().max().item() if want.numel() else 0.0
    rel = diff / max(want.abs().max().item(), 1e-12) if want.numel() else 0.0
    return {"ok": bool(rel <= tolerance), "max_abs_diff": diff, "max_rel_diff": rel, "tolerance": tolerance}


def is_language_model(model: nn.Module) -> bool:
    return isinstance(model, DecoderLM)
