"""Publishing: a publishable folder (``model.safetensors``, ``config.json``, model card) and the upload to the Hub.

:func:`export_pretrained`, :func:`export_run`, :func:`publish_run`, :func:`push_to_hub` and ``zoo publish`` write
``model.safetensors``, ``config.json`` (timm's schema for vision models, the model's own config for language
models) and a model card (``README.md``, :mod:`zoo.cards`), then upload the folder with ``HfApi.upload_folder``.
A folder written here loads back with ``zoo.create_model(FOLDER, pretrained=True)`` for every family.
"""

import copy
import dataclasses
import json
import logging
import os
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import HfHubHTTPError
from timm.models._hub import save_config_for_hf
from tokenizers import Tokenizer
from torch import nn

from ._version import __version__
from .cards import render_published_card
from .data.lm_tokenizer import CHAT_TEMPLATE_FILE, TOKENIZER_CONFIG, tokenizer_config
from .data.text import special_token_ids
from .factory import create_model
from .hub import CONFIG_NAME, WEIGHTS_NAME, bounded_call, endpoint_reachable, offline_mode
from .layers.saving import register_hub_functions, write_file
from .models._lm_files import CONFIGURATION_FILE, MODELING_FILE
from .profile import count_params, measure_latency, profile
from .registry import get_entry
from .run_layout import ARGS, METRICS
from .weights import load_checkpoint, save_state_dict, sha256_file

__all__ = [
    "PublishError",
    "export_pretrained",
    "export_run",
    "publish_run",
    "push_to_hub",
    "upload_folder",
]

_logger = logging.getLogger(__name__)


class PublishError(RuntimeError):
    """Exporting or uploading to the Hub failed; the message says why and what to do."""


# ------------------------------------------------------------------------------------------------------------------
# Publishing: export a model (weights, config.json, model card) and upload it
# ------------------------------------------------------------------------------------------------------------------

CARD_NAME = "README.md"
# training-only options and build-time switches: not part of the architecture (timm leaves drop rates out too)
_TRAINING_ONLY_ARGS = (
    "drop_rate",
    "drop_path_rate",
    "drop_block_rate",
    "pretrained",
    "checkpoint_path",
    "pretrained_cfg",
    "pretrained_cfg_overlay",
    "pretrained_strict",
    "cache_dir",
    "features_only",
    "out_indices",
    "feature_cls",
    "norm",
    # how this machine runs or loads the model, not what it is
    "onednn_linear",
    "large_kernel_impl",
    "allow_architecture_mismatch",
    "allow_nonfinite",
)


def _unwrap_model(model: nn.Module) -> nn.Module:
    """The module itself, out of DDP / DataParallel / torch.compile wrappers."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def _architecture_args(model_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    args = {}
    for k, v in (model_kwargs or {}).items():
        if k in _TRAINING_ONLY_ARGS or k.endswith("_drop_rate"):
            continue
        args[k] = list(v) if isinstance(v, tuple) else v
    return args


def _json_default(value):
    if isinstance(value, torch.dtype):
        return str(value).replace("torch.", "")
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _config_dict(config) -> dict[str, Any] | None:
    """A model's ``config`` (dataclass, dict, or object with ``to_dict``) as a plain dict."""
    if config is None:
        return None
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return dataclasses.asdict(config)
    if isinstance(config, dict):
        return dict(config)
    if callable(getattr(config, "to_dict", None)):
        return dict(config.to_dict())
    return None


def _vision_config(
    model: nn.Module, model_name: str, model_args: dict[str, Any], data_config: dict[str, Any] | None, out_dir: Path
) -> dict[str, Any]:
    """timm's config.json for the model as it is now (timm writes it), with the architecture's registry cfg."""

    if not isinstance(getattr(model, "pretrained_cfg", None), dict) or not hasattr(model, "num_classes"):
        raise PublishError(
            f"{type(model).__name__} has no timm pretrained_cfg / num_classes; build it with "
            f"zoo.create_model({model_name!r}, ...) (features_only models cannot be published)"
        )
    fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=".config.", suffix=".json")
    os.close(fd)
    try:
        save_config_for_hf(model, tmp, model_args=model_args, data_config=data_config)
        with open(tmp) as f:
            config = json.load(f)
    except ValueError as e:  # an argument that disagrees with the model or is not serializable
        raise PublishError(f"cannot describe {model_name} in config.json: {e}") from e
    finally:
        os.unlink(tmp)
    config["architecture"] = model_name
    cfg = config.setdefault("pretrained_cfg", {})
    for k in ("notes", "tag", "description", "hf_hub_id", "hf_hub_filename", "url", "file", "source"):
        cfg.pop(k, None)  # these described the architecture's registered weights, not these
    return config


def _profile_summary(
    model: nn.Module,
    task: str,
    input_size: tuple[int, ...] | None,
    latency_runs: int,
    counted: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Params always; MACs and CPU latency (batch 1) from zoo.profile where the model can be profiled. ``counted``
    (a run's ``metrics.json``: ``macs`` at ``macs_input``, from the same zoo.profile) gives the MACs where it counted
    them at this input size: a finished run is profiled once, and its card and its metrics.json give one figure."""
    summary: dict[str, Any] = {"params": int(count_params(model)["params"])}
    if task != "image-classification":
        return summary
    counted = counted or {}
    known = counted.get("macs") is not None and list(counted.get("macs_input") or [])[1:] == list(input_size or [])
    was_training = model.training
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    subject = model if on_cpu else copy.deepcopy(model).cpu()
    try:
        # timed as `zoo bench` times: warm-up passes, then the median of many; the machine's state at the start is
        # recorded beside the figure, since a latency taken while other work shares the cores is not the model's
        load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # 1-minute
        if known:
            size = tuple(input_size)
            latency = measure_latency(subject.eval(), size, runs=latency_runs, warmup=3) if latency_runs > 0 else []
            macs = int(counted["macs"])
        else:
            prof = profile(
                subject,
                input_size=input_size,
                latency=latency_runs > 0,
                runs=max(latency_runs, 1),
                warmup=3 if latency_runs else 0,
            )
            size, latency, macs = tuple(prof.input_size[1:]), prof.latency, int(prof.macs)
        summary.update(macs=macs, input_size=list(size), threads=torch.get_num_threads())
        if latency:
            summary.update(
                latency_ms=float(latency[0]["median_ms"]),
                latency_device="cpu",
                latency_runs=latency_runs,
                load_average=None if load_average is None else round(load_average, 2),
                cores=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            )
    except (RuntimeError, ValueError, TypeError, AssertionError, NotImplementedError) as e:
        # profiling is informative only: the card then leaves MACs and latency out
        _logger.warning("profiling %s failed (%s); the model card leaves MACs and latency out", type(model).__name__, e)
    finally:
        model.train(was_training)
    return summary


def _recipe_text(recipe: None | str | os.PathLike | dict[str, Any]) -> str | None:
    if recipe is None:
        return None
    if isinstance(recipe, dict):
        return yaml.safe_dump(recipe, sort_keys=False, default_flow_style=False)
    if isinstance(recipe, Path) or (
        isinstance(recipe, str) and "\n" not in recipe and recipe.endswith((".yaml", ".yml"))
    ):
        return Path(recipe).read_text()
    return str(recipe)


def _write_weights_and_config(
    model: nn.Module,
    task: str,
    model_name: str,
    model_args: dict[str, Any],
    data_config: dict[str, Any] | None,
    out: Path,
    format: str = "auto",
):
    """(config.json dict, input size or None): timm's schema for vision models; the family's own Hub format where
    its file defines ``save_pretrained`` (e.g. a transformers Llama folder, ``format`` passed on); else the model's
    own config."""
    family_saver = getattr(sys.modules.get(type(model).__module__), "save_pretrained", None)
    if task == "image-classification":
        save_state_dict(model, out / WEIGHTS_NAME, metadata={"architecture": model_name})
        config = _vision_config(model, model_name, model_args, data_config, out)
        return config, tuple(config["pretrained_cfg"].get("input_size") or ()) or None
    if callable(family_saver):
        family_saver(model, out, format=format, model_name=model_name)
        config = json.loads((out / CONFIG_NAME).read_text())
    else:
        save_state_dict(model, out / WEIGHTS_NAME, metadata={"architecture": model_name})
        config = _config_dict(getattr(model, "config", None)) or {}
    config.update(architecture=model_name, model_args=model_args)
    return config, None


def _save_formats(model: nn.Module, task: str) -> tuple[str, ...]:
    """The ``format`` names a model's folder may be written in: its family file's ``SAVE_FORMATS`` (a language
    model's own formats), else ``("auto",)`` (an image classifier's folder is timm's)."""
    if task == "image-classification":
        return ("auto",)
    return tuple(getattr(sys.modules.get(type(model).__module__), "SAVE_FORMATS", ("auto",)))


def _check_format(model, task: str, model_name: str, format: str) -> None:
    formats = _save_formats(model, task)
    if format not in formats:
        raise ValueError(
            f"format={format!r}: {model_name}'s folder is written as {' or '.join(map(repr, formats))}; pass one of "
            "those (or leave format out)"
        )


def _write_files(model, entry, model_name: str, model_args, data_config, out: Path, format: str):
    """The weights and config.json (with the weights' sha256 and the zoo's version); (weights, input size)."""
    config, input_size = _write_weights_and_config(
        model, entry.task, model_name, model_args, data_config, out, format=format
    )
    weights_path = out / WEIGHTS_NAME
    weights = {"file": WEIGHTS_NAME, "size": weights_path.stat().st_size, "sha256": sha256_file(weights_path)}
    config["hf_hub_sha256"] = weights["sha256"]
    config["zoo"] = {"version": __version__, "family": entry.family, "task": entry.task}
    _write_text(out / CONFIG_NAME, json.dumps(config, indent=2, default=_json_default) + "\n")
    return weights, input_size


def _remove_stale(out: Path, earlier, before: dict) -> None:
    """The zoo's files of an earlier save that this one did not write again."""
    after = _file_ids(out)
    for name in sorted(earlier):
        if name in after and after[name] == before.get(name):
            (out / name).unlink()


def export_pretrained(
    model: nn.Module,
    out_dir: str | os.PathLike,
    *,
    format: str = "auto",
    model_name: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    recipe: None | str | os.PathLike | dict[str, Any] = None,
    dataset: str | None = None,
    tokenizer_file: str | os.PathLike | None = None,
    repo_id: str | None = None,
    data_config: dict[str, Any] | None = None,
    license: str | None = None,
    latency_runs: int = 20,
) -> Path:
    """Write a publishable folder: ``model.safetensors``, ``config.json`` and the model card ``README.md``.

    Args:
        model: a zoo model (DDP / compiled wrappers are removed).
        out_dir: the folder to write (created; files of the same names are replaced).
        format: how the weights and config.json are written: ``"auto"``, or one of a language model family's own
            formats (its file's ``SAVE_FORMATS``, e.g. MobileLLM's ``"transformers"`` and ``"zoo"``).
        model_name: its registry name (default: ``model.pretrained_cfg["architecture"]``).
        model_kwargs: the arguments it was built with (``zoo.create_model(model_name, **model_kwargs)``); they
            become ``model_args`` in config.json, without training-only options such as drop rates. A pruned
            model's own ``pruned_args`` (its widths, recorded by ``zoo.prune``) are added and take precedence.
        metrics: held-out results (``metrics.json`` of a run): ``top1``/``top5``/``loss``/``perplexity``, ``dataset``.
        recipe: the training recipe (dict, YAML text or a path to ``args.yaml``), quoted in the card.
        dataset: the training data set's name (default: ``metrics["dataset"]``).
        tokenizer_file: copied next to the weights (language models).
        repo_id: the Hub repo the folder is for (the card's title and usage line).
        data_config: preprocessing the model was trained with (timm keys ``input_size``, ``interpolation``,
            ``mean``, ``std``, ``crop_pct``, ``crop_mode``); recorded in config.json's ``pretrained_cfg``.
        license: the weights' license (default: the architecture's, from ``zoo.model_info``).
        latency_runs: timed CPU passes for the card's latency figure (0: not measured).

    config.json follows timm's schema for vision models (``architecture``, ``num_classes``, ``num_features``,
    ``pretrained_cfg``, ``model_args``). For other models, a family file that defines
    ``save_pretrained(model, out_dir, model_name=...)`` writes its own Hub format (weights and config.json, e.g. a
    transformers Llama folder); otherwise config.json is the model's own ``config`` (a dataclass or dict with
    Hugging Face key names). Either way it carries ``architecture`` and ``model_args`` (what
    ``zoo.create_model("hf-hub:...")`` rebuilds from) and ``hf_hub_sha256``, the weights' sha256 that loading checks.
    """

    model = _unwrap_model(model)
    model_name = model_name or _architecture_name(model)
    entry = get_entry(model_name)  # UnknownModelError (with close names) for a name the registry lacks
    _check_format(model, entry.task, model_name, format)
    metrics = dict(metrics or {})
    dataset = dataset or metrics.get("dataset")
    model_args = _model_args(model, model_kwargs)
    out = Path(out_dir)
    earlier = _earlier_save(out)  # before anything is written: a folder holding a user's config.json is refused
    out.mkdir(parents=True, exist_ok=True)
    before = _file_ids(out)
    users_card = (out / CARD_NAME).is_file() and not _is_zoo_card(out / CARD_NAME)

    weights, input_size = _write_files(model, entry, model_name, model_args, data_config, out, format)

    if tokenizer_file is not None:
        _copy_tokenizer(Path(tokenizer_file), out, model if entry.task == "text-generation" else None)

    summary = _profile_summary(model, entry.task, input_size, latency_runs, counted=metrics)
    card = render_published_card(
        repo_id=repo_id, model_name=model_name, task=entry.task, family=entry.family,
        license=license or entry.pretrained_cfg.get("license"), dataset=dataset, metrics=metrics,
        recipe_text=_recipe_text(recipe), summary=summary, weights=weights, model_args=model_args,
        tokenizer=tokenizer_file is not None,
    )  # fmt: skip
    if users_card:  # as huggingface_hub's mixin keeps a README it did not write
        _logger.warning("%s was not written by the zoo: kept as it is (the zoo's card is not written)", out / CARD_NAME)
    else:
        _write_text(out / CARD_NAME, card)
    _remove_stale(out, earlier, before)
    _logger.info("exported %s to %s (sha256 %s)", model_name, out, weights["sha256"])
    return out


def _file_ids(folder: Path) -> dict[str, tuple[int, int]]:
    """``{name: (inode, mtime)}`` of the files in ``folder``: a file written again (atomically) gets new ones."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()}


def _is_zoo_card(path: Path) -> bool:
    """A README the zoo wrote: its front matter names the zoo as the library."""
    head = path.read_text(errors="replace")[:4000]
    return head.startswith("---") and "\nlibrary_name: zoo\n" in head.split("\n---", 1)[0] + "\n"


def _earlier_save(out: Path) -> set[str]:
    """The zoo's files in ``out`` from an earlier save (to remove those a new save does not write again); a
    PublishError, before anything is written, for a file in the way or a config.json the zoo did not write."""
    if out.exists() and not out.is_dir():
        raise PublishError(f"{out} is a file: save into a folder (new, or one the zoo saved into before)")
    config = out / CONFIG_NAME
    if not config.is_file():
        return set()
    try:
        data = json.loads(config.read_text())
    except (ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("architecture"), str):
        raise PublishError(
            f"{config} was not written by the zoo (it names no architecture), and a save writes its own config.json: "
            "save into another folder, or move that file away first. Nothing was written."
        )
    names = {WEIGHTS_NAME, *_EXPORTED_EXTRAS} | ({CARD_NAME} if (out / CARD_NAME).is_file() and
                                                   _is_zoo_card(out / CARD_NAME) else set())  # fmt: skip
    return {n for n in names if (out / n).is_file()}


def _architecture_name(model: nn.Module) -> str:
    name = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    if not name:
        raise PublishError("model_name is needed: the model carries no pretrained_cfg['architecture']")
    return name


def _model_args(model: nn.Module, model_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """config.json's ``model_args``: ``model_kwargs``, else the arguments ``zoo.create_model`` built the model with
    (``model.model_args``); a pruned model's widths (``model.pruned_args``, from zoo.prune) describe the weights,
    so they win. Training-only options are left out."""
    if model_kwargs is None:
        model_kwargs = getattr(model, "model_args", None)
    return _architecture_args({**(model_kwargs or {}), **(getattr(model, "pruned_args", None) or {})})


def _copy_tokenizer(tokenizer_file: Path, out: Path, lm: nn.Module | None = None) -> None:
    """The tokenizer file, under the name loaders look for (``tokenizer.json``, or ``tokenizer.model`` for a
    SentencePiece model); for a language model (``lm``) also transformers' ``tokenizer_config.json``
    (:func:`write_tokenizer_config`) and the tokenizer folder's ``chat_template.jinja``, if it has one."""
    if not tokenizer_file.is_file():
        raise PublishError(f"tokenizer file {tokenizer_file} does not exist")
    name = "tokenizer.model" if tokenizer_file.suffix == ".model" else "tokenizer.json"
    write_file(out / name, tokenizer_file.read_bytes())  # replaces a link there, never writes through
    if lm is None:
        return
    template = tokenizer_file.parent / CHAT_TEMPLATE_FILE
    if template.is_file():
        write_file(out / CHAT_TEMPLATE_FILE, template.read_bytes())
    write_tokenizer_config(out, lm, tokenizer_file)


def write_tokenizer_config(out: Path, lm: nn.Module, tokenizer_file: Path) -> Path | None:
    """``out/tokenizer_config.json`` for language model ``lm`` and its tokenizer (see
    :func:`zoo.data.lm_tokenizer.tokenizer_config`: bos/eos/pad from the model's config, ``model_max_length`` its
    context, the tokenizer folder's own ``tokenizer_config.json`` kept); None, with a warning, where the tokenizer
    does not load (transformers' AutoTokenizer could not either)."""
    config = getattr(lm, "config", None)
    ids = {k: getattr(config, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}
    base_path = tokenizer_file.parent / TOKENIZER_CONFIG
    try:
        base = (
            json.loads(base_path.read_text()) if base_path.is_file() and base_path != out / TOKENIZER_CONFIG else None
        )
        data = tokenizer_config(
            tokenizer_file,
            **ids,
            model_max_length=getattr(config, "max_position_embeddings", None),
            base=base if isinstance(base, dict) else None,
        )
    except Exception as e:  # tokenizers' own errors included: any failure to load means no config to write
        _logger.warning(
            "%s does not load as a tokenizer (%s: %s): %s is not written, so transformers' AutoTokenizer will "
            "not load this folder",
            tokenizer_file,
            type(e).__name__,
            str(e)[:200],
            TOKENIZER_CONFIG,
        )
        return None
    return write_file(out / TOKENIZER_CONFIG, json.dumps(data, indent=2) + "\n")


def _write_text(path: Path, text: str) -> None:
    """Atomically (temp file + rename), with the mode a new file gets under the umask (mkstemp's is 0600)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def exported_files(folder: Path) -> list[str]:
    """The files of an exported folder that are uploaded: the weights, config.json, the card, and those of
    :data:`_EXPORTED_EXTRAS` it holds; a symbolic link out of the folder is refused (never followed)."""
    missing = [n for n in (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME) if not (folder / n).is_file()]
    if missing:
        raise PublishError(f"{folder} is not an exported model folder: {', '.join(missing)} missing")
    files = [WEIGHTS_NAME, CONFIG_NAME, CARD_NAME] + [n for n in _EXPORTED_EXTRAS if (folder / n).is_file()]
    inside = folder.resolve()
    for name in files:
        path = folder / name
        if path.is_symlink() and not path.resolve().is_relative_to(inside):
            raise PublishError(
                f"{path} is a symbolic link to {path.resolve()}, outside {folder}: nothing was uploaded (only files "
                "inside the folder are). Put the file itself in its place, or export the folder again"
            )
    with open(folder / CONFIG_NAME) as f:
        config = json.load(f)
    if config.get("hf_hub_sha256") and sha256_file(folder / WEIGHTS_NAME) != config["hf_hub_sha256"]:
        raise PublishError(
            f"{folder / WEIGHTS_NAME} no longer matches the sha256 in {folder / CONFIG_NAME}; export the folder again"
        )
    return files


# the files an export writes beside the weights, config.json and card (the tokenizer's, the generation settings):
# the only others that are uploaded
_EXPORTED_EXTRAS = (
    "tokenizer.json",
    "tokenizer.model",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
    # transformers' remote code of a folder stock transformers cannot read (zoo.models._lm_files)
    CONFIGURATION_FILE,
    MODELING_FILE,
)


def _read_run(run_dir: Path) -> tuple[dict[str, Any], str, dict[str, Any]]:
    if not run_dir.is_dir():
        raise PublishError(f"run folder {run_dir} does not exist")
    missing = [n for n in (ARGS, WEIGHTS_NAME) if not (run_dir / n).is_file()]
    if missing:
        raise PublishError(
            f"{run_dir} is not a finished training run: {', '.join(missing)} missing (train.py writes "
            "args.yaml at the start and model.safetensors at the end)"
        )
    recipe_text = (run_dir / ARGS).read_text()
    try:
        args = yaml.safe_load(recipe_text)
    except yaml.YAMLError as e:
        raise PublishError(f"{run_dir / ARGS} is not valid YAML: {e}") from e
    if not isinstance(args, dict) or not isinstance(args.get("model"), str):
        raise PublishError(f"{run_dir / ARGS} names no model (a top-level `model:` registry name)")
    metrics = {}
    if (run_dir / METRICS).is_file():
        try:
            metrics = json.loads((run_dir / METRICS).read_text())
        except ValueError as e:
            raise PublishError(f"{run_dir / METRICS} is not valid JSON: {e}") from e
    else:
        _logger.warning("%s has no metrics.json: the model card will carry no evaluation results", run_dir)
    return args, recipe_text, metrics


def _data_config(args: dict[str, Any], in_chans: int) -> dict[str, Any]:
    """Preprocessing of a run, from ``args.yaml`` (``data:`` section first, then top level), in timm's keys."""
    data = args.get("data") if isinstance(args.get("data"), dict) else {}
    config: dict[str, Any] = {}
    for src in (args, data):
        for key in ("input_size", "img_size", "image_size"):
            size = src.get(key)
            if size is None:
                continue
            size = [size, size] if isinstance(size, int) else list(size)
            config["input_size"] = tuple(size if len(size) == 3 else [in_chans, *size[-2:]])
        for key in ("mean", "std"):
            if src.get(key) is not None:
                config[key] = tuple(src[key]) if isinstance(src[key], (list, tuple)) else (src[key],)
        for key in ("interpolation", "crop_pct", "crop_mode"):
            if src.get(key) is not None:
                config[key] = src[key]
    return config


def export_run(
    run_dir: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    repo_id: str | None = None,
    license: str | None = None,
    latency_runs: int = 20,
) -> Path:
    """Export a training run folder (``args.yaml``, ``model.safetensors``, ``metrics.json``, ``tokenizer.json``)
    with :func:`export_pretrained`; default ``out_dir``: ``RUN_DIR/publish``. The run's weights are loaded into
    a freshly built model first, so weights that do not fit the recipe's architecture are refused here."""

    run_dir = Path(run_dir)
    args, recipe_text, metrics = _read_run(run_dir)
    name, model_kwargs = args["model"], dict(args.get("model_kwargs") or {})
    task = get_entry(name).task
    tokenizer = run_dir / "tokenizer.json"
    # train.py sizes the head from the data and the embeddings from the tokenizer when the recipe leaves them
    # out; metrics.json records both
    if task == "image-classification" and "num_classes" not in model_kwargs and metrics.get("num_classes"):
        model_kwargs["num_classes"] = int(metrics["num_classes"])
    if task == "text-generation" and "vocab_size" not in model_kwargs:
        if metrics.get("vocab_size"):
            model_kwargs["vocab_size"] = int(metrics["vocab_size"])
        elif tokenizer.is_file():
            model_kwargs["vocab_size"] = Tokenizer.from_file(str(tokenizer)).get_vocab_size()
    if task == "text-generation" and tokenizer.is_file():  # generation starts and stops where the tokenizer does
        for key, value in special_token_ids(Tokenizer.from_file(str(tokenizer))).items():
            model_kwargs.setdefault(key, value)
    model = create_model(name, **_architecture_args(model_kwargs))
    load_checkpoint(model, run_dir / WEIGHTS_NAME)
    if metrics.get("label_names") and isinstance(getattr(model, "pretrained_cfg", None), dict):
        model.pretrained_cfg = {
            **model.pretrained_cfg,
            "label_names": list(metrics["label_names"]),
            "num_classes": getattr(model, "num_classes", len(metrics["label_names"])),
        }
    data = args.get("data") if isinstance(args.get("data"), dict) else {}
    dataset = metrics.get("dataset") or data.get("name") or data.get("dataset")
    in_chans = getattr(model, "in_chans", None) or model_kwargs.get("in_chans", 3)
    data_config = _data_config(args, in_chans) if task == "image-classification" else None
    return export_pretrained(
        model,
        Path(out_dir) if out_dir is not None else run_dir / "publish",
        model_name=name,
        model_kwargs=model_kwargs,
        metrics=metrics,
        recipe=recipe_text,
        dataset=dataset,
        tokenizer_file=tokenizer if tokenizer.is_file() else None,
        repo_id=repo_id,
        data_config=data_config,
        license=license,
        latency_runs=latency_runs,
    )


def check_repo_id(repo_id: str) -> None:
    if not isinstance(repo_id, str) or not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id) or ".." in repo_id:
        raise PublishError(f"repo id {repo_id!r} is not of the form ORG/NAME (letters, digits, '-', '_', '.')")


def scrub_token(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


def upload_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Create ``repo_id`` if needed and upload an exported folder with ``HfApi.upload_folder``; the repo's URL.

    Errors name the endpoint and what to do; the token never appears in them.
    """

    folder = Path(folder)
    check_repo_id(repo_id)
    files = exported_files(folder)
    endpoint = constants.ENDPOINT
    if offline_mode():
        raise PublishError(
            f"offline mode is on (HF_HUB_OFFLINE=1): nothing was uploaded to {endpoint}. Unset "
            f"HF_HUB_OFFLINE and publish again; the exported folder is {folder}"
        )
    if not endpoint_reachable(endpoint):
        raise PublishError(
            f"could not reach the Hub at {endpoint}: nothing was uploaded. Connect, or set "
            f"HF_ENDPOINT to a reachable Hub; the exported folder is {folder}"
        )
    api = HfApi(endpoint=endpoint, token=token)
    step = f"creating {repo_id}"
    try:  # each call bounded (hub.bounded_call): a Hub that stops answering is an error, never a wait forever
        url = bounded_call(lambda: api.create_repo(repo_id, private=private, exist_ok=True), step)
        step = f"uploading {len(files)} files to {repo_id}"
        info = bounded_call(
            lambda: api.upload_folder(
                repo_id=repo_id,
                folder_path=folder,
                allow_patterns=files,
                commit_message=commit_message or f"Upload {repo_id} with zoo",
            ),
            step,
        )
    except TimeoutError as e:  # the commit may or may not land later: not reported as done
        raise PublishError(
            f"{e}. The upload is not known to have finished: publish again (files already there are skipped); "
            f"the exported folder is {folder}"
        ) from None
    except HfHubHTTPError as e:
        status = getattr(getattr(e, "response", None), "status_code", None)
        if status in (401, 403):
            raise PublishError(
                f"the Hub at {endpoint} refused {step} (HTTP {status}): the token is missing, invalid or has no "
                f"write access to {repo_id.split('/')[0]}. Pass a write token (token=..., --token-env VAR, "
                f"HF_TOKEN or `hf auth login`)."
            ) from None
        detail = scrub_token(str(e).splitlines()[0] if str(e) else type(e).__name__, token)
        raise PublishError(f"the Hub at {endpoint} failed {step} (HTTP {status}): {detail}") from None
    except Exception as e:  # transport errors (the client's httpx), raised as they are
        if isinstance(e, OSError) or type(e).__module__.split(".")[0].startswith("httpx"):
            raise PublishError(
                f"lost the connection to the Hub at {endpoint} while {step}: "
                f"{scrub_token(str(e), token)}. Check the network or HF_ENDPOINT and publish again "
                f"(uploads of files already there are skipped)."
            ) from None
        raise
    _logger.info("published %s (commit %s)", repo_id, info.oid)
    return str(url)


def save_published_card(folder: Path, repo_id: str, cards_dir: None | str | os.PathLike) -> Path | None:
    """Copy the exported card to ``cards_dir/ORG--NAME.md``; nothing when ``cards_dir`` is None (the default of
    every publish: a card is written only where asked, whatever the working directory)."""
    if cards_dir is None:
        return None
    target = Path(cards_dir)
    target.mkdir(parents=True, exist_ok=True)
    path = target / (repo_id.replace("/", "--") + ".md")
    _write_text(path, (folder / CARD_NAME).read_text())
    return path


def publish_run(
    run_dir: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    out_dir: str | os.PathLike | None = None,
    cards_dir: None | str | os.PathLike = None,
    license: str | None = None,
    latency_runs: int = 20,
) -> str:
    """Export a training run (:func:`export_run`) and upload it to ``repo_id``; returns the repo's URL.

    The card is also written to ``cards_dir/ORG--NAME.md`` when ``cards_dir`` is given (default: nowhere).
    """
    check_repo_id(repo_id)
    folder = export_run(run_dir, out_dir, repo_id=repo_id, license=license, latency_runs=latency_runs)
    url = upload_folder(
        folder, repo_id, private=private, token=token, commit_message=f"Upload {repo_id} from run {Path(run_dir).name}"
    )
    save_published_card(folder, repo_id, cards_dir)
    return url


def push_to_hub(
    model: nn.Module,
    repo_id: str,
    *,
    format: str = "auto",
    model_name: str | None = None,
    model_kwargs: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    recipe: None | str | os.PathLike | dict[str, Any] = None,
    dataset: str | None = None,
    tokenizer_file: str | os.PathLike | None = None,
    data_config: dict[str, Any] | None = None,
    license: str | None = None,
    private: bool = False,
    token: str | None = None,
    out_dir: str | os.PathLike | None = None,
    cards_dir: None | str | os.PathLike = None,
    commit_message: str | None = None,
    latency_runs: int = 20,
) -> str:
    """Publish any zoo model: :func:`export_pretrained` (into ``out_dir``, default a temporary folder), then upload
    to ``repo_id``; returns the repo's URL. ``zoo.create_model("hf-hub:" + repo_id, pretrained=True)`` loads it.

    Pass ``model_kwargs`` when the model was built with arguments beyond ``num_classes`` / ``in_chans`` (sizes,
    depths, ...): they are what rebuilds it. ``cards_dir`` as in :func:`publish_run`.
    """
    check_repo_id(repo_id)
    with tempfile.TemporaryDirectory(prefix="zoo-publish-") as tmp:
        folder = export_pretrained(
            model,
            out_dir if out_dir is not None else tmp,
            format=format,
            model_name=model_name,
            model_kwargs=model_kwargs,
            metrics=metrics,
            recipe=recipe,
            dataset=dataset,
            tokenizer_file=tokenizer_file,
            repo_id=repo_id,
            data_config=data_config,
            license=license,
            latency_runs=latency_runs,
        )
        try:
            url = upload_folder(folder, repo_id, private=private, token=token, commit_message=commit_message)
        except PublishError as e:
            if out_dir is not None:
                raise
            # the temporary folder is gone when the message is read: say what it held instead
            where = "the exported folder (temporary; pass out_dir= to keep it)"
            raise PublishError(str(e).replace(str(folder), where)) from None
        save_published_card(folder, repo_id, cards_dir)
    return url


# every zoo model's save_pretrained / push_to_hub (zoo.layers.saving) are the two functions above
register_hub_functions(export_pretrained, push_to_hub)
