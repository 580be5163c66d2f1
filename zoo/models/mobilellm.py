"""MobileLLM: sub-billion-parameter Llama-style decoders for on-device use (plus MobileLLM-R1 and -Pro shapes).

Papers: "MobileLLM: Optimizing Sub-billion Parameter Language Models for On-Device Use Cases" (ICML 2024),
https://arxiv.org/abs/2402.14905; MobileLLM-R1 (https://github.com/facebookresearch/MobileLLM-R1);
MobileLLM-Pro, https://arxiv.org/abs/2511.06719.
Original code: https://github.com/facebookresearch/MobileLLM (FAIR Noncommercial Research License; the released
weights carry their license on the Hugging Face Hub). This file is an independent implementation.

Architecture: token embedding -> N pre-norm decoder layers (RMSNorm eps 1e-5, grouped-query attention with
rotate-half RoPE, SwiGLU MLP, no biases) -> RMSNorm -> logits through the *same* embedding matrix (tied). The
state dict uses transformers' Llama key names, so a checkpoint is a rename-free map.

* **Layer sharing** (``*_ls``, the authors' "immediate block-wise repeat"): every layer runs twice in a row,
  ``0,0,1,1,...``. Each run owns its own KV-cache slot (the authors' code lets both runs write one slot, which
  breaks cached decoding); parameters are unchanged.
* **Sliding window** (MobileLLM-Pro): ``layer_types`` lists ``"full_attention"`` / ``"sliding_attention"`` per
  layer (transformers' key) and ``sliding_window`` the local window. The public record gives a 3:1 local:global
  ratio, a 512-token window, and global first and last layers; the exact 30-layer pattern is not published. The
  zoo's choice (:func:`pro_layer_types`): layer ``i`` is global when ``i % 4 == 0`` or it is the last layer, so
  three local layers sit between consecutive global ones (0, 4, ..., 28 and 29 global: 9 global, 21 local).
* **MobileLLM-R1** is registered by shape (dense SwiGLU, Llama-3 vocabulary, tied) with ``rope_theta`` 5e5 and
  no NoPE / QK-norm: the released config was not available to check, so these are the zoo's assumptions.

Loading (``pretrained=True, pretrained_cfg_overlay={"file": PATH}``, ``checkpoint_path=PATH`` or
:meth:`MobileLLM.from_pretrained`): ``model.safetensors``, ``pytorch_model.bin`` (``weights_only=True``),
sharded safetensors, or a folder with ``config.json`` (the authors' MobileLLM config with ``share_embedding`` /
``layer_sharing``, a transformers Llama config, or the zoo's own). The authors' checkpoints have no
``lm_head.weight`` (shared embeddings). The Hub's bot-converted ``model.safetensors`` of MobileLLM-125M/350M
lacks ``model.embed_tokens.weight``; loading it fails with a message that says so (use ``pytorch_model.bin``).

Export (:func:`save_pretrained`): a transformers ``LlamaForCausalLM`` folder (``tie_word_embeddings: true``) for
every model that stock Llama can express (no layer sharing, no sliding window), else a zoo-format folder that
:meth:`MobileLLM.from_pretrained` and ``zoo.create_model`` read back.

Quantized weights (:mod:`zoo.lm.quant`: ``zoo.create_model(NAME, quantize="bf16" | "int8" | "int4")``): a
quantized model saves its codes and scales in a zoo-format folder whose config.json (and safetensors metadata)
records ``quantization`` (bf16 may still be a transformers folder, ``torch_dtype: bfloat16``); loading rebuilds the
same quantized layers. MobileLLM-Pro's int4 QAT checkpoints (float weights beside
``weight_fake_quantizer.scale``) load as int4 codes under their own scales.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config_rules import check_model_args
from ..layers import sequence_schedule
from ..lm import (
    BlockRun,
    DecoderBody,
    DecoderConfig,
    DecoderLM,
    DecoderPrunePlan,
    GenerationConfig,
    KVCache,
    LlamaBlocks,
    LMOutput,
    RotaryEmbedding,
    build_attention_masks,
    model_quantization,
    quantize_model,
)
from ..lm_loading import weights_quantization
from ..registry import register_model
from ..weights import (
    CheckpointError,
    CheckpointMismatchError,
    load_state_dict_checked,
    read_weight_files,
)
from ._builder import build_lm
from ._lm_files import write_lm_folder

__all__ = [
    "LMOutput",
    "MobileLLM",
    "MobileLLMConfig",
    "checkpoint_filter_fn",
    "config_from_dict",
    "pro_layer_types",
    "save_pretrained",
]

FULL, SLIDING = "full_attention", "sliding_attention"


# --------------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------------


@dataclass
class MobileLLMConfig(DecoderConfig):
    """Architecture of a MobileLLM-style decoder, with transformers' (Llama) key names."""

    layer_sharing: bool = False  # every layer runs twice in a row (0,0,1,1,...), each run with its own cache slot
    sliding_window: int | None = None  # window of the "sliding_attention" layers
    layer_types: list[str] | None = None  # per layer: "full_attention" | "sliding_attention"; None: all full

    def __post_init__(self):
        super().__post_init__()
        if self.layer_types is not None:
            self.layer_types = list(self.layer_types)
            if len(self.layer_types) != self.num_hidden_layers:
                raise ValueError(f"layer_types has {len(self.layer_types)} entries for {self.num_hidden_layers} layers")
            bad = sorted(set(self.layer_types) - {FULL, SLIDING})
            if bad:
                raise ValueError(f"layer_types may hold only {FULL!r} and {SLIDING!r}, got {bad}")
            if SLIDING in self.layer_types and not (isinstance(self.sliding_window, int) and self.sliding_window > 0):
                raise ValueError("sliding_attention layers need a positive int sliding_window")

    def layer_windows(self) -> list[int | None]:
        """The attention window of every physical layer (None = global)."""
        types = self.layer_types or [FULL] * self.num_hidden_layers
        return [self.sliding_window if t == SLIDING else None for t in types]

    def schedule(self) -> list[int]:
        """The physical layer run at each step (``0,0,1,1,...`` with layer sharing)."""
        return sequence_schedule(self.num_hidden_layers, 2 if self.layer_sharing else 1)

    @property
    def llama_compatible(self) -> bool:
        """True when stock ``LlamaForCausalLM`` computes exactly this model (no layer sharing, no windows)."""
        return not self.layer_sharing and all(w is None for w in self.layer_windows())


def pro_layer_types(num_layers: int) -> list[str]:
    """MobileLLM-Pro's local/global pattern as the zoo chose it: global at ``i % 4 == 0`` and the last layer."""
    return [FULL if i % 4 == 0 or i == num_layers - 1 else SLIDING for i in range(num_layers)]


_CONFIG_FIELDS = MobileLLMConfig.field_names()


def config_from_dict(data: dict[str, Any], **overrides) -> MobileLLMConfig:
    """A config from a ``config.json`` dict (the authors', transformers' Llama or the zoo's), then ``overrides``.

    The authors' ``share_embedding: true`` means tied output weights whatever ``tie_word_embeddings`` says.
    Settings the zoo cannot compute (RoPE scaling, tensor-parallel splits of the projections) are errors.
    """
    _check_keys(overrides)
    return MobileLLMConfig(**{**_config_kwargs(data), **overrides})


def _config_kwargs(data: dict[str, Any]) -> dict[str, Any]:
    """The config fields a ``config.json`` dict sets (see :func:`config_from_dict`)."""
    data = dict(data)
    if data.get("model_type") not in (None, "llama", "mobilellm"):
        raise ValueError(
            f"config.json describes a {data['model_type']!r} model; the zoo's MobileLLM reads Llama, "
            f"MobileLLM and its own configs"
        )
    rope = data.get("rope_scaling") or {}
    rope_params = data.get("rope_parameters") or {}
    rope_type = rope.get("rope_type", rope.get("type")) or rope_params.get("rope_type", "default")
    if rope_type not in (None, "default"):
        raise ValueError(f"rope scaling {rope_type!r} is not supported by the zoo's MobileLLM (plain RoPE only)")
    if "rope_theta" not in data and "rope_theta" in rope_params:
        data["rope_theta"] = rope_params["rope_theta"]
    if data.get("pretraining_tp", 1) not in (None, 1):
        raise ValueError("pretraining_tp > 1 is not supported")
    if data.get("share_embedding"):
        data["tie_word_embeddings"] = True
    if data.get("layer_types") is not None and SLIDING not in data["layer_types"]:
        data["layer_types"] = None  # all global: the same as no list
    for key in ("eos_token_id", "bos_token_id", "pad_token_id"):
        if isinstance(data.get(key), list):
            data[key] = data[key][0] if data[key] else None
    kwargs = {k: v for k, v in data.items() if k in _CONFIG_FIELDS}
    if kwargs.get("layer_types") is None and kwargs.get("sliding_window") is not None:
        kwargs["sliding_window"] = None  # a window without sliding layers (transformers' default) does nothing
    return kwargs


def _check_keys(kwargs: dict[str, Any]):
    MobileLLMConfig.check_keys(kwargs, "MobileLLM")


# --------------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------------


class MobileLLM(DecoderLM):
    """A MobileLLM decoder. ``model(input_ids)`` -> logits ``(B, T, vocab)``; :meth:`generate` decodes with a cache.

    Args: a :class:`MobileLLMConfig`, or its fields as keyword arguments.
    """

    prune_plan = DecoderPrunePlan  # zoo.prune: hidden size, whole KV groups and the MLP width, equal in every layer
    config_class = MobileLLMConfig
    model_type = "mobilellm"  # the zoo format's config.json (layer sharing, windows): save_pretrained(format="zoo")
    hf_architecture = "MobileLLMForCausalLM"

    def __init__(self, config: MobileLLMConfig | None = None, **kwargs):
        super().__init__()
        self.config = config = MobileLLMConfig.resolve(config, kwargs, "MobileLLM")
        self.model = DecoderBody(config, config.layer_windows())
        self.lm_head = (
            None if config.tie_word_embeddings else nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        )
        self.rotary = RotaryEmbedding(
            config.head_dim, config.rope_theta, initial_length=min(config.max_position_embeddings, 4096)
        )
        self.schedule = config.schedule()
        self.windows = sorted(set(config.layer_windows()), key=lambda w: -1 if w is None else w)
        self.grad_checkpointing = False
        self.pretrained_cfg: dict[str, Any] = {}
        self.init_weights()

    # -- cache --------------------------------------------------------------------------------------------------
    def new_cache(
        self,
        batch_size: int,
        max_length: int,
        dtype: torch.dtype | None = None,
        device: str | torch.device | None = None,
        windowed: bool = True,
    ) -> KVCache:
        """A static cache for ``batch_size`` sequences of up to ``max_length`` tokens (one slot per layer run);
        the sliding-window layers' slots hold only their window (``windowed=False``: the whole length, e.g. to
        rewind further than a window with ``crop``)."""
        p = self.model.embed_tokens.weight
        layers = self.model.layers
        return KVCache(
            len(self.schedule),
            batch_size,
            self.config.num_key_value_heads,
            max_length,
            self.config.head_dim,
            dtype or p.dtype,
            device or p.device,
            windows=[layers[i].sliding_window for i in self.schedule] if windowed else None,
        )

    def kv_cache_bytes_per_token(self, dtype: torch.dtype | None = None, length: int | None = None) -> float:
        """KV-cache bytes per token of one sequence: of every layer run, or, given ``length``, averaged over a
        sequence of that many tokens with the sliding-window layers holding only their window."""
        size = torch.empty((), dtype=dtype or self.model.embed_tokens.weight.dtype).element_size()
        per_entry = 2 * self.config.num_key_value_heads * self.config.head_dim * size
        if length is None:
            return per_entry * len(self.schedule)
        windows = [self.model.layers[i].sliding_window for i in self.schedule]
        return per_entry * sum(length if w is None else min(w, length) for w in windows) / length

    def llama_blocks(self) -> LlamaBlocks:
        """The model as llama.cpp runs it (GGUF): every run of a layer, in schedule order, with its window; a shared
        layer (MobileLLM-LS) is one block per run."""
        c = self.config
        windows = c.layer_windows()
        runs = [BlockRun(index, windows[index]) for index in self.schedule]
        notes = []
        if c.layer_sharing:
            notes.append(
                f"layer sharing unrolled: {c.num_hidden_layers} layers written as {len(runs)} blocks in schedule "
                f"order (each shared layer's weights stored once per run)"
            )
        return LlamaBlocks(runs, notes)

    # -- forward ------------------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: KVCache | None = None,
        use_cache: bool = False,
        logits_to_keep: int = 0,
    ) -> torch.Tensor | LMOutput:
        """Logits of every position (or the last ``logits_to_keep``).

        Args:
            input_ids: ``(B, T)`` token ids.
            attention_mask: ``(B, past + T)``, 1 for real tokens and 0 for padding (left padding for batches of
                prompts), covering the cached tokens too, as in transformers.
            position_ids: ``(B, T)`` RoPE positions; default ``past, ..., past + T - 1``.
            past_key_values: a :class:`KVCache` (``model.new_cache``); the new keys/values are appended to it.
            use_cache: return ``LMOutput(logits, cache)``; without ``past_key_values`` a fresh cache of
                ``max(T, min(max_position_embeddings, 2048))`` tokens is made.
        """
        x, cache, past, padding, rope, _ = self.start_pass(
            input_ids, attention_mask, position_ids, past_key_values, use_cache
        )
        masks = build_attention_masks(past, input_ids.shape[1], self.windows, padding, x.device)
        layers = self.model.layers
        for slot, index in enumerate(self.schedule):
            layer = layers[index]
            mask, causal = masks.get(layer.self_attn.sliding_window)
            if mask is not None and cache is not None and cache.evicted(slot):
                mask = mask[..., cache.evicted(slot) :]  # the window's cache holds only its last tokens
            if self.checkpoints(slot, cache):
                x = self.checkpoint_fn(layer, x, rope, None, slot, mask, causal)
            else:
                x = layer(x, rope, cache, slot, mask, causal)
        logits = self.finish_pass(x, logits_to_keep)
        return LMOutput(logits, cache) if use_cache or past_key_values is not None else logits

    # -- files --------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides) -> "MobileLLM":
        """Build from a folder with ``config.json`` and weights (transformers Llama, the authors' or the zoo's;
        its ``generation_config.json``, when there is one, becomes ``model.generation_config``); a
        folder of quantized weights (its ``quantization`` entry, or QAT fake-quantizer scales) builds the same
        quantized model."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path} has no config.json; pass a model folder (or use zoo.create_model(NAME, "
                f"pretrained=True, pretrained_cfg_overlay={{'file': WEIGHTS}}))"
            )
        data = json.loads((path / "config.json").read_text())
        state_dict, meta = read_weight_files(path)
        generation = GenerationConfig.from_folder(path)  # checked before anything is built
        state_dict, quantization = weights_quantization(state_dict, str(path), data, meta)
        described = check_model_args(checkpoint_model_args(data, state_dict), str(path / "config.json"), "config")
        config = MobileLLMConfig(**{**described, **overrides})
        model = cls(config)
        model.pretrained_cfg = {"architecture": data.get("architecture") or "mobilellm", "file": str(path)}
        model.generation_config = generation
        if quantization is not None:
            quantize_model(model, quantization, empty=True)
        load_state_dict_checked(model, state_dict, str(path), filter_fn=checkpoint_filter_fn)
        return model

    def _save_plain(self, save_directory: str | os.PathLike, *, format: str, model_name: str | None) -> Path:
        """``model.save_pretrained(folder)`` with nothing to publish: the weights, ``config.json`` and
        ``generation_config.json`` of :func:`save_pretrained` (a transformers folder by default), no card."""
        return save_pretrained(self, save_directory, format=format, model_name=model_name)


# --------------------------------------------------------------------------------------------------------------
# Checkpoints: reading, conversion, export
# --------------------------------------------------------------------------------------------------------------

_EMBED = "model.embed_tokens.weight"


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The authors' / transformers' Llama keys -> the zoo's (the same names; RoPE buffers dropped, tying checked)."""
    sd = {k: v for k, v in state_dict.items() if not k.endswith("rotary_emb.inv_freq")}
    if "embed_tokens.weight" in sd and _EMBED not in sd:  # a bare LlamaModel state dict
        sd = {(k if k == "lm_head.weight" else "model." + k): v for k, v in sd.items()}
    if _EMBED not in sd:
        hint = ""
        if any(k.startswith("model.layers.") for k in sd):
            hint = (
                " This is the known defect of the Hub's bot-converted model.safetensors of "
                "facebook/MobileLLM-125M and -350M (transformers#34759, MobileLLM#16): its embeddings are "
                "missing, so loading it would leave them random. Load the repo's pytorch_model.bin instead "
                "(pretrained_cfg_overlay={'file': '.../pytorch_model.bin'})."
            )
        raise CheckpointError(f"the checkpoint has no {_EMBED}.{hint}")
    config = getattr(model, "config", None)
    tied = getattr(config, "tie_word_embeddings", True)
    if tied and "lm_head.weight" in sd:
        head = sd.pop("lm_head.weight")
        if head.shape != sd[_EMBED].shape or not torch.equal(head, sd[_EMBED]):
            raise CheckpointMismatchError(
                "the checkpoint's lm_head.weight differs from model.embed_tokens.weight (untied output weights), "
                "but the model ties them; build it with tie_word_embeddings=False"
            )
    if not tied and "lm_head.weight" not in sd:
        raise CheckpointMismatchError(
            "the checkpoint has no lm_head.weight (shared embeddings) but the model was "
            "built with tie_word_embeddings=False; build it with tie_word_embeddings=True"
        )
    return sd


def to_llama_config(config: MobileLLMConfig) -> dict[str, Any]:
    """transformers ``LlamaConfig`` fields of ``config`` (which must be Llama-expressible)."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "head_dim": config.head_dim,
        "max_position_embeddings": config.max_position_embeddings,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": None,
        "tie_word_embeddings": config.tie_word_embeddings,
        "attention_bias": config.attention_bias,
        "mlp_bias": config.mlp_bias,
        "hidden_act": config.hidden_act,
        "initializer_range": config.initializer_range,
        "bos_token_id": config.bos_token_id,
        "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id,
        "attention_dropout": 0.0,
        "pretraining_tp": 1,
        "use_cache": True,
        "torch_dtype": "float32",
    }


# what save_pretrained's format may be (zoo.publish checks it before writing a publishable folder)
SAVE_FORMATS = ("auto", "transformers", "zoo")


def save_pretrained(
    model: MobileLLM, out_dir: str | os.PathLike, format: str = "auto", model_name: str | None = None
) -> Path:
    """Write ``model.safetensors``, ``config.json`` and ``generation_config.json`` to ``out_dir``.

    ``format="transformers"`` writes a ``LlamaForCausalLM`` folder (Llama keys; only ``model.embed_tokens.weight``
    when tied, as transformers itself saves it); ``"zoo"`` writes the zoo's config (layer sharing, windows);
    ``"auto"`` picks transformers whenever stock Llama computes the model. Both carry ``architecture`` (the zoo
    name) so that ``zoo.create_model("hf-hub:...")`` can rebuild either. A quantized model's folder records its
    ``quantization`` (config.json and the safetensors metadata); int8/int4 codes are zoo-format only.
    """
    config = model.config
    quantization = model_quantization(model)
    codes = quantization is not None and quantization.method != "bf16"
    llama_ok = config.llama_compatible and not codes
    if format == "auto":
        format = "transformers" if llama_ok else "zoo"
    if format not in SAVE_FORMATS[1:]:
        raise ValueError(f"format must be 'auto', 'transformers' or 'zoo', got {format!r}")
    if format == "transformers" and codes:
        raise ValueError(
            f"transformers' LlamaForCausalLM cannot read the zoo's {quantization.describe()} codes; use format='zoo' "
            "(zoo.create_model and MobileLLM.from_pretrained read it back)"
        )
    if format == "transformers" and not llama_ok:
        raise ValueError(
            "stock LlamaForCausalLM cannot express layer sharing or sliding-window layers; use format='zoo'"
        )
    name = model_name or (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or "mobilellm"
    if format == "transformers":
        data = {**to_llama_config(config), "architecture": name}
        if quantization is not None:
            data["torch_dtype"] = "bfloat16"
    else:
        data = {
            "architectures": [MobileLLM.hf_architecture],
            "model_type": MobileLLM.model_type,
            "architecture": name,
            **config.to_dict(),
        }
    return write_lm_folder(model, out_dir, data, {}, quantization)


# --------------------------------------------------------------------------------------------------------------
# Pretrained configs and registered models
# --------------------------------------------------------------------------------------------------------------

FAMILY = dict(name="mobilellm", task="text-generation", model_class=MobileLLM)

_PAPER = dict(
    paper_name="MobileLLM: Optimizing Sub-billion Parameter Language Models for On-Device Use Cases",
    paper_ids="arXiv:2402.14905",
    origin_url="https://github.com/facebookresearch/MobileLLM",
    license="other",
    license_name="fair-noncommercial-research-license",
)


def _cfg(hub_repo: str | None = None, **kwargs) -> dict[str, Any]:
    cfg = {**_PAPER, "context_length": 2048, "tokenizer": "LLaMA SentencePiece tokenizer.model (32k)", **kwargs}
    if hub_repo:
        # the Hub's model.safetensors of 125M/350M misses the embeddings: the authors' .bin is the weight file
        cfg.update(
            hf_hub_id=hub_repo,
            hf_hub_filename="pytorch_model.bin",
            notes=(
                "authors' weights under their own license on the Hub (loaded from pytorch_model.bin, "
                "weights_only=True)",
            ),
        )
    return cfg


_R1 = dict(
    paper_name="MobileLLM-R1",
    paper_ids=None,
    origin_url="https://github.com/facebookresearch/MobileLLM-R1",
    context_length=4096,
    tokenizer="Llama-3 tokenizer (128,256)",
    notes=("registered by shape; rope_theta 5e5 and no NoPE/QK-norm are the zoo's assumptions",),
)
_PRO = dict(
    paper_name="MobileLLM-Pro Technical Report",
    paper_ids="arXiv:2511.06719",
    origin_url="https://huggingface.co/facebook/MobileLLM-Pro",
    context_length=131072,
    tokenizer="Llama-4 tokenizer (202,048)",
    notes=(
        "registered by shape; local:global 3:1 pattern (global at i % 4 == 0 and the last layer) and "
        "rope_theta 5e5 are the zoo's choices",
    ),
)

default_cfgs: dict[str, dict[str, Any]] = {
    "mobilellm_125m": _cfg("facebook/MobileLLM-125M"),
    "mobilellm_350m": _cfg("facebook/MobileLLM-350M"),
    "mobilellm_600m": _cfg("facebook/MobileLLM-600M"),
    "mobilellm_1b": _cfg("facebook/MobileLLM-1B"),
    "mobilellm_1.5b": _cfg("facebook/MobileLLM-1.5B"),
    "mobilellm_125m_ls": _cfg("facebook/MobileLLM-125M-layer-share"),
    "mobilellm_350m_ls": _cfg("facebook/MobileLLM-350M-layer-share"),
    "mobilellm_r1_140m": _cfg(**_R1),
    "mobilellm_r1_360m": _cfg(**_R1),
    "mobilellm_r1_950m": _cfg(**_R1),
    "mobilellm_pro_1b": _cfg(**_PRO),
}

# exact params (tied embeddings once) and the authors' zero-shot commonsense average (MobileLLM README)
reference_figures: dict[str, dict[str, Any]] = {
    name: dict(params=params, macs=None, gmacs=None, top1=None, commonsense_avg=avg)
    for name, params, avg in [
        ("mobilellm_125m", 124_635_456, 46.3),
        ("mobilellm_350m", 345_355_200, 51.3),
        ("mobilellm_600m", 603_188_352, 54.3),
        ("mobilellm_1b", 1_005_461_760, 57.3),
        ("mobilellm_1.5b", 1_511_188_800, 59.4),
        ("mobilellm_125m_ls", 124_635_456, 47.0),
        ("mobilellm_350m_ls", 345_355_200, 52.1),
        ("mobilellm_r1_140m", 140_248_512, 44.3),
        ("mobilellm_r1_360m", 359_431_168, 51.0),
        ("mobilellm_r1_950m", 949_685_760, 58.6),
        ("mobilellm_pro_1b", 1_084_453_120, None),
    ]
}


def _arch(layers: int, hidden: int, heads: int, kv: int, ffn: int, vocab: int = 32000, **extra) -> dict[str, Any]:
    return dict(
        num_hidden_layers=layers,
        hidden_size=hidden,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        intermediate_size=ffn,
        vocab_size=vocab,
        **extra,
    )


_R1_EXTRA = dict(rope_theta=500000.0, max_position_embeddings=4096, bos_token_id=128000, eos_token_id=128001)
ARCHS: dict[str, dict[str, Any]] = {
    "mobilellm_125m": _arch(30, 576, 9, 3, 1536),
    "mobilellm_350m": _arch(32, 960, 15, 5, 2560),
    "mobilellm_600m": _arch(40, 1152, 18, 6, 3072),
    "mobilellm_1b": _arch(54, 1280, 20, 5, 3584),
    "mobilellm_1.5b": _arch(54, 1600, 25, 5, 4352),
    "mobilellm_125m_ls": _arch(30, 576, 9, 3, 1536, layer_sharing=True),
    "mobilellm_350m_ls": _arch(32, 960, 15, 5, 2560, layer_sharing=True),
    "mobilellm_r1_140m": _arch(15, 576, 9, 3, 2048, 128256, **_R1_EXTRA),
    "mobilellm_r1_360m": _arch(15, 1024, 16, 4, 4096, 128256, **_R1_EXTRA),
    "mobilellm_r1_950m": _arch(22, 1536, 24, 6, 6144, 128256, **_R1_EXTRA),
    "mobilellm_pro_1b": _arch(
        30,
        1280,
        20,
        4,
        6144,
        202048,
        rope_theta=500000.0,
        max_position_embeddings=131072,
        sliding_window=512,
        layer_types=pro_layer_types(30),
        bos_token_id=None,
        eos_token_id=None,
    ),
}


def checkpoint_model_args(config: dict[str, Any] | None, state_dict: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The architecture a checkpoint describes: its folder's ``config.json`` (the authors', transformers' Llama or
    the zoo's), and tied output weights when it has no ``lm_head.weight`` (the authors' shared embeddings)."""
    args = _config_kwargs(config) if config is not None else {}
    if "lm_head.weight" not in state_dict:
        args["tie_word_embeddings"] = True
    return args


@register_model
def mobilellm_125m(pretrained=False, **kwargs):
    return build_lm(MobileLLM, ARCHS, "mobilellm_125m", pretrained, **kwargs)


@register_model
def mobilellm_350m(pretrained=False, **kwargs):
    return build_lm(MobileLLM, ARCHS, "mobilellm_350m", pretrained, **kwargs)


@register_model
def mobilellm_600m(pretrained=False, **kwargs):
    return build_lm(MobileLLM, ARCHS, "mobilellm_600m", pretrained, **kwargs)


@register_model
def mobilellm_1b(pretrained=False, **kwargs):
    return build_lm(MobileLLM, ARCHS, "mobilellm_1b", pretrained, **kwargs)


@register_model(name="mobilellm_1.5b")  # the authors' size name
def mobilellm_1_5b(pretrained=False, **kwargs):
    return build_lm(MobileLLM, ARCHS, "mobilellm_1.5b", pretrained, **kwargs)


@register_model
def mobilellm_125m_ls(pretrained=False, **kwargs):
    return build_lm(MobileLLM, ARCHS, "mobilellm_125m_ls", pretrained, **kwargs)


@register_model
def mobilellm_350m_ls(pretrained=False, **kwargs):
    return build_lm(MobileLLM, ARCHS, "mobilellm_350m_ls", pretrained, **kwargs)


@register_model
def mobilellm_r1_140m(pretrained=False, **kwargs):
    return build_lm(MobileLLM, ARCHS, "mobilellm_r1_140m", pretrained, **kwargs)


@register_model
def mobilellm_r1_360m(pretrained=False, **kwargs):
    return build_lm(MobileLLM, ARCHS, "mobilellm_r1_360m", pretrained, **kwargs)


@register_model
def mobilellm_r1_950m(pretrained=False, **kwargs):
    return build_lm(MobileLLM, ARCHS, "mobilellm_r1_950m", pretrained, **kwargs)


@register_model
def mobilellm_pro_1b(pretrained=False, **kwargs):
    return build_lm(MobileLLM, ARCHS, "mobilellm_pro_1b", pretrained, **kwargs)
