"""The folder both LM families write (``save_pretrained``): weights, ``config.json``, ``generation_config.json``."""

import json
import os
from pathlib import Path
from typing import Any

from ..layers.saving import write_file
from ..lm.decoder import DecoderLM
from ..lm.quant import QuantSpec
from ..weights import save_state_dict

__all__ = ["write_lm_folder"]


def write_lm_folder(
    model: DecoderLM,
    out_dir: str | os.PathLike,
    config: dict[str, Any],
    metadata: dict[str, str],
    quantization: QuantSpec | None,
) -> Path:
    """``model.safetensors`` (with ``metadata``), ``config`` as ``config.json`` and the generation config in
    ``out_dir``; a quantized model's ``quantization`` record goes into both config.json and the weights' metadata."""
    out = Path(out_dir)
    _check_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    if quantization is not None:
        config["quantization"] = quantization.to_dict()
        metadata["quantization"] = json.dumps(config["quantization"], sort_keys=True)
    save_state_dict(model, out / "model.safetensors", metadata=metadata)
    write_file(out / "config.json", json.dumps(config, indent=2) + "\n")
    model.save_generation_config(out)  # transformers' generation_config.json
    return out


def _check_folder(out: Path) -> None:
    """ValueError, before anything is written, for a file given as the folder or a config.json in it that the zoo
    did not write (every zoo config.json names its ``architecture``): a save never replaces a user's file."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file: save into a folder (new, or one the zoo saved into before)")
    config = out / "config.json"
    if not config.exists():
        return
    try:
        data = json.loads(config.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("architecture"), str):
        raise ValueError(
            f"{config} was not written by the zoo (it names no architecture), and a save writes its own config.json: "
            "save into another folder, or move that file away first. Nothing was written."
        )
