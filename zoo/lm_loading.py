"""What only a language model's weights carry, read in one place: :func:`read_lm_weights`, which ``create_model``
calls for text-generation entries only (an image classifier's load never reads a generation config, asks the Hub
for one, or looks for quantized codes).

* **The quantization record.** A folder of quantized weights records its format in a top-level ``quantization``
  entry of its ``config.json`` (``{"method": "int8_weight_only", "group_size": null}``, ``{"method":
  "int4_weight_only", "group_size": 32, "scheme": "asymmetric"}``, ``{"method": "bf16"}``; see :mod:`zoo.lm.quant`)
  and in its weight file's safetensors metadata, checked by :func:`check_quantization` (unknown fields and values
  are refused by name). :func:`weights_quantization` holds the record against the tensors themselves, so that
  quantized codes never load as float weights and a record never stands for weights it does not describe; a QAT
  checkpoint's fake-quantizer scales become int4 codes there.
* **The generation config**: transformers' ``generation_config.json`` beside the weights (their folder's, their Hub
  repo's) becomes ``model.generation_config``, its values checked before anything is built.

The weights arrive as :class:`zoo.weight_record.Weights` records (read by the floor above); this module reads
their ``state_dict``, ``where``, ``config`` and ``metadata`` and asks for a file beside them with ``beside``.
"""

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .lm.generation_config import GENERATION_CONFIG_NAME, GenerationConfig
from .lm.quant import (
    QuantRecordError,
    QuantRecordMismatch,
    QuantSpec,
    convert_fake_quantized,
    fake_quantized_keys,
    is_quantized_state_dict,
    quantize_model,
)
from .weights import CheckpointError, CheckpointMismatchError

__all__ = ["LMWeights", "check_quantization", "read_generation_config", "read_lm_weights", "weights_quantization"]


@dataclass
class LMWeights:
    """What a language model's load adds to the build: the format its weights are stored in, the caller's
    ``quantize=``, and the generation config that came with the weights."""

    recorded: QuantSpec | None  # the weights' own quantization (reconciled with quantize=): the model is built so
    quantize: QuantSpec | None  # the caller's choice, applied after float weights load
    generation_config: GenerationConfig | None

    def before_load(self, model: nn.Module) -> None:
        """Quantized weights load into a model quantized the same way (their codes, no float copy)."""
        if self.recorded is not None:
            quantize_model(model, self.recorded, empty=True)

    def after_load(self, model: nn.Module) -> None:
        """Float weights quantized as the caller asked; the generation config set."""
        if self.quantize is not None and self.recorded is None:
            quantize_model(model, self.quantize)
        if self.generation_config is not None:
            model.generation_config = self.generation_config


def read_lm_weights(weights: Any, checkpoint: Any, quantize: QuantSpec | None) -> LMWeights:
    """A language model's load: the generation config beside the pretrained ``weights`` and the quantization of
    ``weights`` and ``checkpoint`` (each a :class:`zoo.weight_record.Weights` or None), checked before anything is
    built; QAT scales are converted in the records' state dicts."""
    generation = read_generation_config(weights) if weights is not None else None
    return LMWeights(recorded_quantization(weights, checkpoint, quantize), quantize, generation)


def read_generation_config(weights: Any) -> GenerationConfig | None:
    """The ``generation_config.json`` that came with ``weights`` (their folder's, their Hub repo's), its values
    checked; None when there is none."""
    path = weights.beside(GENERATION_CONFIG_NAME)
    if path is None:
        return None
    try:
        return GenerationConfig.from_pretrained(path)
    except ValueError as e:
        raise CheckpointError(f"{e} Nothing was built.") from e


def recorded_quantization(weights: Any, checkpoint: Any, quantize: QuantSpec | None) -> QuantSpec | None:
    """The quantization of the weights about to load (each source's record held against its tensors; QAT
    fake-quantizer layouts converted in place), reconciled with the caller's ``quantize``: the same weight format
    (its activation setting wins), else refused."""
    found = []
    for source in (weights, checkpoint):
        if source is not None:
            source.state_dict, spec = weights_quantization(
                source.state_dict, source.where, source.config, source.metadata
            )
            found.append((source, spec))
    if len(found) == 2 and (found[0][1] is None) != (found[1][1] is None):
        raise CheckpointError(
            "pretrained weights and checkpoint_path differ in quantization: "
            + " and ".join(f"{s.where} holds {q.describe() if q else 'float'} weights" for s, q in found)
            + ". Nothing was built."
        )
    recorded = next((q for _, q in found if q is not None), None)
    if recorded is None or quantize is None:
        return recorded
    if not recorded.same_weights(quantize):
        where = next(s.where for s, q in found if q is not None)
        raise CheckpointError(
            f"{where} holds {recorded.describe()} weights; they cannot be loaded as {quantize.describe()} "
            "(quantizing quantized codes again compounds their error). Load them as they are (leave quantize out), "
            "or quantize the float weights. Nothing was built."
        )
    # the recorded weights' format, with the caller's run-time choices (activations, the kernels' width)
    return dataclasses.replace(recorded, activations=quantize.activations, act_bits=quantize.act_bits)


def check_quantization(value: Any, where: str) -> QuantSpec | None:
    """A config.json's ``quantization`` entry (or the JSON text of a weight file's metadata) as a
    :class:`~zoo.lm.quant.QuantSpec` (:meth:`~zoo.lm.quant.QuantSpec.from_record`); None when absent. A malformed
    entry is a :class:`CheckpointError` naming the field, before anything is built."""
    try:
        return QuantSpec.from_record(value, where)
    except QuantRecordError as e:
        raise CheckpointError(f"{e}. Nothing was built.") from e


def weights_quantization(
    state_dict: dict[str, torch.Tensor], where: str, config: Any = None, metadata: Any = None
) -> tuple[dict[str, torch.Tensor], QuantSpec | None]:
    """The quantization a checkpoint's weights are in, held against what its ``config`` (config.json) and its
    safetensors ``metadata`` record (:meth:`~zoo.lm.quant.QuantSpec.from_checkpoint` reads them); returns
    ``(state_dict, spec)``.

    * A QAT checkpoint (``*.weight_fake_quantizer.scale`` beside float weights, MobileLLM-Pro's int4 layout) is
      converted to int4 codes with its own scales (:func:`zoo.lm.quant.convert_fake_quantized`).
    * Refused, each a :class:`CheckpointMismatchError`: int8/int4 codes (``*.qweight``) that nothing records (the
      format is never guessed); a record of int8/int4 over float weights; a config.json and a file metadata that
      disagree.
    """
    try:
        recorded = QuantSpec.from_checkpoint(config, metadata, where)
    except QuantRecordMismatch as e:
        raise CheckpointMismatchError(f"{e}. Nothing was loaded.") from None
    except QuantRecordError as e:
        raise CheckpointError(f"{e}. Nothing was built.") from e
    if fake_quantized_keys(state_dict):
        return _converted(state_dict, where, recorded)
    codes = is_quantized_state_dict(state_dict)
    if codes and (recorded is None or recorded.method == "bf16"):
        names = [k for k in state_dict if k.endswith(".qweight")][:3]
        raise CheckpointMismatchError(
            f"{where} holds quantized weights ({', '.join(names)}, ...: integer codes with their scales) but "
            + ("records bf16 weights" if recorded is not None else "nothing records how they were quantized")
            + ": its config.json's quantization entry (written with the weights) says that. Load the folder "
            "that came with them; the codes are never read as float weights. Nothing was loaded."
        )
    if recorded is not None and recorded.method != "bf16" and not codes:
        raise CheckpointMismatchError(
            f"{where} records {recorded.describe()} weights but holds float weights (no *.qweight codes): the "
            "record does not describe these weights. Load them as float weights (remove the quantization entry) "
            "and quantize after loading (zoo.create_model(..., quantize=...)). Nothing was loaded."
        )
    return state_dict, recorded


def _converted(
    state_dict: dict[str, torch.Tensor], where: str, recorded: QuantSpec | None
) -> tuple[dict[str, torch.Tensor], QuantSpec]:
    """A QAT checkpoint's float weights and fake-quantizer scales as int4 codes with those scales, held against
    what it records."""
    if recorded is not None and recorded.method != "int4_weight_only":
        raise CheckpointMismatchError(
            f"{where} holds int4 fake-quantizer scales but records {recorded.describe()} weights. Nothing was loaded."
        )
    try:
        state_dict, found = convert_fake_quantized(state_dict)
    except ValueError as e:
        raise CheckpointMismatchError(f"{where}: {e}. Nothing was loaded.") from e
    if recorded is not None and recorded.group_size != found.group_size:
        raise CheckpointMismatchError(
            f"{where} records int4 groups of {recorded.group_size} but its fake-quantizer scales are for groups "
            f"of {found.group_size}. Nothing was loaded."
        )
    return state_dict, found
