"""The folder both LM families write (``save_pretrained``): weights, ``config.json``, ``generation_config.json``,
and, for a folder that stock transformers cannot read, the code that lets it.

A folder in a zoo format of its own (``model_type`` ``"mobilellm"`` with layer sharing or windows,
``"zoo_recursive"``, any int8/int4 folder) carries transformers' remote-code files: ``configuration_zoo.py`` and
``modeling_zoo.py`` (a few lines each: subclasses of the classes :mod:`zoo.export.hf_auto` derives for the family,
which import the installed ``zoo`` package and say ``pip install zoo`` when it is missing), named in
``config.json``'s ``auto_map``. So ``AutoModelForCausalLM.from_pretrained(FOLDER, trust_remote_code=True)`` loads
it in a process that never ran ``import zoo``. int8/int4 folders also say what they are in transformers'
convention, ``quantization_config`` with ``quant_method: "zoo"`` (beside the zoo's own ``quantization`` record,
which the zoo reads); :mod:`zoo.export.hf_auto` registers that method with transformers' quantizers.
"""

import json
import os
from pathlib import Path
from typing import Any

from ..layers.saving import write_file
from ..lm.decoder import DecoderLM
from ..lm.quant import QuantSpec
from ..weights import save_state_dict

__all__ = [
    "CONFIGURATION_FILE",
    "MODELING_FILE",
    "QUANT_METHOD",
    "auto_map",
    "hf_quantization_config",
    "remote_code",
    "transformers_class_names",
    "write_lm_folder",
]

CONFIGURATION_FILE = "configuration_zoo.py"
MODELING_FILE = "modeling_zoo.py"
QUANT_METHOD = "zoo"  # config.json quantization_config.quant_method of the zoo's int8/int4 folders
_INSTALL_HINT = "pip install zoo"

_CONFIGURATION_TEMPLATE = '''"""transformers' config class of this folder (model_type {model_type!r}), for
AutoConfig.from_pretrained(FOLDER, trust_remote_code=True). Written by the zoo: the class is the zoo's own
(zoo.export.hf_auto.{config_name}), so the installed zoo package is needed."""

try:
    from zoo.export import hf_auto
except ModuleNotFoundError as e:
    if (e.name or "").split(".")[0] != "zoo":
        raise
    raise ImportError(
        f"this model folder's code is the zoo's, and the zoo package is not installed: {install}, then load it "
        f"again ({{e}})"
    ) from None


class {config_name}(hf_auto.{config_name}):
    """zoo.export.hf_auto.{config_name}."""
'''

_MODELING_TEMPLATE = '''"""transformers' model class of this folder (model_type {model_type!r}), for
AutoModelForCausalLM.from_pretrained(FOLDER, trust_remote_code=True). Written by the zoo: the class is the zoo's
own (zoo.export.hf_auto.{model_name}), so the installed zoo package is needed ({install})."""

from .configuration_zoo import {config_name}, hf_auto


class {model_name}(hf_auto.{model_name}):
    """zoo.export.hf_auto.{model_name}."""

    config_class = {config_name}
'''


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
        if quantization.method != "bf16":  # bf16 is a dtype (torch_dtype) to transformers, not a quantization
            config["quantization_config"] = hf_quantization_config(quantization)
    code = remote_code(type(model)) if config.get("model_type") == type(model).model_type else {}
    if code:
        config["auto_map"] = auto_map(type(model))
    save_state_dict(model, out / "model.safetensors", metadata=metadata)
    for name, text in code.items():
        write_file(out / name, text)
    write_file(out / "config.json", json.dumps(config, indent=2) + "\n")
    model.save_generation_config(out)  # transformers' generation_config.json
    return out


def transformers_class_names(model_cls: type[DecoderLM]) -> tuple[str, str]:
    """The names of the transformers config and model classes of a zoo LM class with a format of its own
    (:mod:`zoo.export.hf_auto` derives them under these names): ``Zoo<its config class>``, its ``hf_architecture``."""
    return f"Zoo{model_cls.config_class.__name__}", model_cls.hf_architecture


def remote_code(model_cls: type[DecoderLM]) -> dict[str, str]:
    """``{file name: text}`` of the remote-code files of a folder of ``model_cls`` (empty for a class without a
    format of its own: its folders are stock transformers folders)."""
    if not (model_cls.model_type and model_cls.hf_architecture):
        return {}
    config_name, model_name = transformers_class_names(model_cls)
    names = dict(model_type=model_cls.model_type, config_name=config_name, model_name=model_name, install=_INSTALL_HINT)
    return {
        CONFIGURATION_FILE: _CONFIGURATION_TEMPLATE.format(**names),
        MODELING_FILE: _MODELING_TEMPLATE.format(**names),
    }


def auto_map(model_cls: type[DecoderLM]) -> dict[str, str]:
    """config.json's ``auto_map``: the classes of :func:`remote_code`'s files, for ``trust_remote_code=True``."""
    config_name, model_name = transformers_class_names(model_cls)
    return {
        "AutoConfig": f"{Path(CONFIGURATION_FILE).stem}.{config_name}",
        "AutoModelForCausalLM": f"{Path(MODELING_FILE).stem}.{model_name}",
    }


def hf_quantization_config(quantization: QuantSpec) -> dict[str, Any]:
    """config.json's ``quantization_config`` (transformers' convention) of int8/int4 weights: ``quant_method``
    :data:`QUANT_METHOD`, ``bits``, and the zoo's record (``method``, ``group_size``, ``scheme``, ...)."""
    return {"quant_method": QUANT_METHOD, "bits": quantization.bits, **quantization.to_dict()}


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
