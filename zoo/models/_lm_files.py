"""The folder both LM families write (``save_pretrained``): weights, ``config.json``, ``generation_config.json``."""

import json
import os
from pathlib import Path
from typing import Any

from ..layers.decoder import DecoderLM
from ..layers.quant import QuantSpec
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
    out.mkdir(parents=True, exist_ok=True)
    if quantization is not None:
        config["quantization"] = quantization.to_dict()
        metadata["quantization"] = json.dumps(config["quantization"], sort_keys=True)
    save_state_dict(model, out / "model.safetensors", metadata=metadata)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    model.save_generation_config(out)  # transformers' generation_config.json
    return out
