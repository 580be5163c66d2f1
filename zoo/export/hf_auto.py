"""transformers classes for every zoo language model, registered with ``AutoConfig`` / ``AutoModelForCausalLM``.

A zoo LM folder that stock transformers cannot express (MobileLLM with layer sharing or sliding windows: its
``config.json`` says ``model_type: "mobilellm"``; the recursive LMs: ``"zoo_recursive"``) loads with

    >>> import zoo
    >>> from transformers import AutoModelForCausalLM
    >>> model = AutoModelForCausalLM.from_pretrained(FOLDER)  # no trust_remote_code: the classes are registered
    >>> model.generate(input_ids, max_new_tokens=20, do_sample=False)

A Llama-expressible MobileLLM folder is a stock ``LlamaForCausalLM`` folder and loads as one; nothing here is
involved.

Without ``import zoo`` (a transformers user's own process), such a folder loads with ``trust_remote_code=True``: the
zoo writes ``configuration_zoo.py`` and ``modeling_zoo.py`` into it, named in config.json's ``auto_map``
(:mod:`zoo.models._lm_files`), whose classes subclass the ones here (importing the installed ``zoo``; a missing one
is an ImportError that says ``pip install zoo``). Without ``trust_remote_code`` transformers says the folder holds
custom code and asks for it. A model of these classes saved with transformers' ``save_pretrained`` writes the same
files and ``auto_map``.

The classes come from the registry, named by no family here: every registered text-generation family whose model
class declares a format of its own (``model_type``, ``hf_architecture``; see :class:`zoo.lm.DecoderLM`) gets them.
Per ``model_type`` there is a ``PreTrainedConfig`` subclass carrying the zoo config's fields (transformers' key
names, validated by the zoo's own config dataclass) and ``architecture`` (the registry name), and a
``PreTrainedModel`` + ``GenerationMixin`` subclass that builds the zoo model from it and adopts its submodules, so
its state dict has exactly the zoo's key names and transformers' ``from_pretrained`` reads ``model.safetensors``
as the zoo wrote it. Tied output weights need no tying: a tied zoo model has no ``lm_head`` (logits go through
``model.embed_tokens.weight``), its files hold no ``lm_head.weight``, so ``_tied_weights_keys`` stays empty;
``tie_word_embeddings: false`` models have their own ``lm_head.weight`` in both.

``forward`` runs the zoo model and returns ``CausalLMOutputWithPast``. Generation uses the zoo's own static KV cache
(:class:`zoo.lm.KVCache` / :class:`zoo.lm.routing.RoutedKVCache`, made by ``_prepare_cache_for_generation``
for the whole generation, carried as ``past_key_values``); greedy tokens equal the zoo's ``model.generate``.
Beam search reorders the cache's rows (:meth:`ZooCache.reorder_cache`). Assisted decoding crops a cache, which the
zoo's static cache does not do: it runs without one (``use_cache=False``, the full sequence recomputed each step), as
do the other beam variants and ``generate(use_cache=False)``.
The cache one ``generate`` returns (``return_dict_in_generate=True``) continues in the next, with the whole
sequence and more tokens as input: it grows to the longer conversation (:meth:`ZooCache.ensure`), and the tokens
equal one long generate. ``activation_checkpointing_enable`` / ``gradient_checkpointing_enable`` make the zoo model
recompute its layer runs in training (:meth:`zoo.lm.DecoderLM.set_grad_checkpointing`).

A folder of the zoo's int8/int4 weights (config.json ``quantization``, :mod:`zoo.lm.quant`) builds the zoo's
quantized layers (``quantize_model(..., empty=True)``) before the codes load, so it computes what
``zoo.create_model(FOLDER)`` computes. Its config.json also says what it is in transformers' convention,
``quantization_config`` with ``quant_method: "zoo"``: transformers 5 does not refuse an unknown method but warns that
it "will skip the quantization" (it loads the folder regardless), so :func:`register` registers ``"zoo"`` with
transformers' quantizers (:class:`ZooQuantizationConfig`, :class:`ZooQuantizer`: the weights are already
quantized; nothing is converted), and a loaded model says ``is_quantized`` and ``quantization_method == "zoo"``.

Registration: :func:`register` (idempotent; importing this module calls it). ``import zoo`` does not import
transformers (about a second); :mod:`zoo.export.hf_hook` imports this module once transformers' Auto API is
loaded. Needs transformers >= 5.
"""

import json
import logging
import types
from pathlib import Path
from typing import Any, ClassVar

import torch
import transformers
from torch import nn

try:  # transformers 5's names (PreTrainedConfig, initialization, generate's cache hooks)
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PreTrainedConfig, PreTrainedModel
    from transformers import initialization as init
    from transformers.generation import GenerationMode
    from transformers.modeling_outputs import CausalLMOutputWithPast
    from transformers.quantizers import HfQuantizer
    from transformers.quantizers.auto import AUTO_QUANTIZATION_CONFIG_MAPPING, AUTO_QUANTIZER_MAPPING
    from transformers.utils.quantization_config import QuantizationConfigMixin
except ImportError as e:
    raise ImportError(f"zoo.export.hf_auto needs transformers >= 5, found {transformers.__version__} ({e})") from e

from .. import models  # noqa: F401 - importing the families registers them
from ..layers.saving import write_file
from ..lm import DecoderConfig, DecoderLM, KVCache, LoRA, QuantSpec, RMSNorm, quantize_model
from ..models._lm_files import QUANT_METHOD, auto_map, remote_code, transformers_class_names
from ..registry import get_entry, list_models

# and, per registered family with a format of its own, its two classes (Zoo<Config>, <hf_architecture>): see
# MODEL_TYPES, e.g. ZooMobileLLMConfig / MobileLLMForCausalLM, ZooRecursiveConfig / RecursiveLMForCausalLM
__all__ = ["MODEL_TYPES", "ZooCache", "ZooQuantizationConfig", "ZooQuantizer", "auto_classes", "register"]

_logger = logging.getLogger(__name__)

# generation modes that run forward on the new tokens only, with one cache made for the whole generation (beam
# search reorders its rows, ZooCache.reorder_cache)
_CACHED_MODES = (GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE, GenerationMode.BEAM_SEARCH)
# the modes that may continue a cache an earlier generate returned (a beam search needs its own rows per beam)
_CONTINUING_MODES = (GenerationMode.GREEDY_SEARCH, GenerationMode.SAMPLE)
# the name generate carries a cache under: "cache" from transformers 5.24 on (which still reads the old name, with a
# warning), "past_key_values" before
_CACHE_KEY = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"
_NOT_A_ZOO_CACHE = (
    "past_key_values must hold the zoo model's own cache, ZooCache(model.zoo_model.new_cache(batch, max_length)), "
    "not a {}; generate() makes one itself when none is given"
)


# --------------------------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------------------------


class _ZooLMConfig(PreTrainedConfig):
    """A zoo decoder's config for transformers: the fields of :attr:`zoo_config_class` (checked by it, defaults
    resolved, e.g. ``head_dim``) as attributes, ``architecture`` (the zoo registry name), and transformers' own."""

    zoo_config_class: ClassVar[type[DecoderConfig]] = DecoderConfig
    default_architecture: ClassVar[str] = ""

    def __init__(self, architecture: str | None = None, **kwargs: Any):
        names = self.zoo_config_class.field_names()
        fields = {key: kwargs.pop(key) for key in list(kwargs) if key in names}
        for key, value in self.zoo_config_class(**fields).to_dict().items():  # ValueError for a wrong value
            setattr(self, key, value)
        self.architecture = architecture or self.default_architecture
        kwargs.pop("hf_hub_sha256", None)  # the published file's checksum: stale once transformers saves again
        super().__init__(**kwargs)

    def to_zoo_config(self) -> DecoderConfig:
        """The zoo config dataclass these fields describe."""
        return self.zoo_config_class(**{key: getattr(self, key) for key in self.zoo_config_class.field_names()})


class ZooQuantizationConfig(QuantizationConfigMixin):
    """config.json's ``quantization_config`` of a zoo int8/int4 folder: ``quant_method: "zoo"``, ``bits`` and the
    zoo's own record (``method``, ``group_size``, ``scheme``, ``activations``, ``act_bits``; see
    :class:`zoo.lm.QuantSpec`, which checks them)."""

    def __init__(self, method: str, bits: int | None = None, **record: Any):
        record.pop("quant_method", None)
        self.quant_method = QUANT_METHOD
        self.spec = QuantSpec.from_record({"method": method, **record}, "quantization_config")
        self.bits = self.spec.bits
        if bits is not None and bits != self.bits:
            raise ValueError(f"quantization_config says bits {bits} but method {method!r} stores {self.bits}-bit codes")

    def to_dict(self) -> dict[str, Any]:
        return {"quant_method": self.quant_method, "bits": self.bits, **self.spec.to_dict()}


class ZooQuantizer(HfQuantizer):
    """transformers' quantizer for ``quant_method: "zoo"``: the zoo's classes build the quantized layers from the
    config, so the codes load as they are; nothing is converted. Any other model class is refused."""

    requires_calibration = True  # the weights are already quantized: the zoo quantizes, transformers does not

    def _process_model_before_weight_loading(self, model, **kwargs):
        if not isinstance(model, _ZooLMForCausalLM):
            raise ValueError(
                f"quant_method {QUANT_METHOD!r} weights are the zoo's int8/int4 codes, which only the zoo's classes "
                f"read, not {type(model).__name__}; load the folder with AutoModelForCausalLM (trust_remote_code=True) "
                "or zoo.create_model(FOLDER)"
            )
        return model

    def is_serializable(self) -> bool:
        return True

    @property
    def is_trainable(self) -> bool:
        return False


# --------------------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------------------


class ZooCache:
    """The zoo model's static KV cache (:class:`~zoo.lm.KVCache`, or its routed subclass) as transformers'
    ``generate`` carries it in ``past_key_values``: what generate asks of a cache, nothing more. The zoo model
    appends to ``cache`` in place. It is made for the whole generation and grows when a later call carries it
    further (a second ``generate`` continuing the conversation, :meth:`ensure`), and beam search reorders its rows
    (:meth:`reorder_cache`); it does not crop."""

    is_compileable = False
    is_croppable = False
    is_linear = (False,)  # transformers 5.24: no layer keeps a fixed-size (linear-attention) state

    def __init__(self, cache: KVCache):
        self.cache = cache

    def get_seq_length(self, layer_idx: int = 0) -> int:
        """Tokens of the sequence seen so far."""
        return self.cache.seq_length

    def ensure(self, total: int, limit: int) -> None:
        """Room for ``total`` tokens of the sequence: a cache made for a shorter one grows (to twice its length
        or ``total``, whichever is more, at most ``limit``, the model's context), its entries kept. Past the
        context the zoo model's own error says so."""
        needed = max([total, *(n + total - self.cache.seq_length for n in self.cache.lengths)])
        if needed > self.cache.max_length and needed <= limit:
            self.cache.grow(min(limit, max(needed, 2 * self.cache.max_length)))

    def reorder_cache(self, beam_idx: torch.Tensor) -> None:
        """Beam search: row ``i`` continues from row ``beam_idx[i]``."""
        self.cache.reorder(beam_idx)

    def __repr__(self) -> str:
        c = self.cache
        return f"ZooCache({type(c).__name__}, batch={c.batch_size}, seen={c.seq_length}, max_length={c.max_length})"


class _ZooLMForCausalLM(PreTrainedModel, GenerationMixin):
    """A zoo decoder as a transformers causal LM. The zoo model (``self.zoo_model``, built from the config) is not
    a submodule: its submodules, parameters and buffers are registered here under the same names, so the state dict
    keys are the zoo's and ``.to()``, ``eval()`` and loading act on the modules the zoo model runs."""

    config_class = _ZooLMConfig
    zoo_model_class: ClassVar[type[DecoderLM]] = DecoderLM
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["DecoderLayer"]
    _tied_weights_keys = None  # a tied zoo model has no lm_head (see the module doc)
    supports_gradient_checkpointing = True  # the zoo model recomputes its layer runs (_set_gradient_checkpointing)

    def __init__(self, config: _ZooLMConfig):
        quantization = _quantization(config)
        super().__init__(config)
        zoo_model = self.zoo_model_class(config.to_zoo_config())
        zoo_model.pretrained_cfg = {"architecture": config.architecture}
        if quantization is not None and quantization.method != "bf16":
            quantize_model(zoo_model, quantization, empty=True)  # the zoo's int8/int4 layers, codes loaded next
        object.__setattr__(self, "zoo_model", zoo_model)  # a plain attribute: not a submodule (no key prefix)
        for name, child in zoo_model.named_children():
            self.add_module(name, child)
        for name, param in zoo_model.named_parameters(recurse=False):
            self.register_parameter(name, param)
        for name, buffer in zoo_model.named_buffers(recurse=False):
            self.register_buffer(name, buffer, persistent=name not in zoo_model._non_persistent_buffers_set)
        self.post_init()

    # -- weights ------------------------------------------------------------------------------------------------
    def save_pretrained(self, save_directory, *args, **kwargs):
        """transformers' ``save_pretrained``, plus the folder's remote-code files and config.json ``auto_map`` (so
        that the saved folder loads with ``trust_remote_code=True`` where the zoo was never imported)."""
        result = super().save_pretrained(save_directory, *args, **kwargs)
        folder = Path(save_directory)
        config_path = folder / "config.json"
        if config_path.is_file():
            for name, text in remote_code(self.zoo_model_class).items():
                write_file(folder / name, text)
            data = json.loads(config_path.read_text())
            data["auto_map"] = auto_map(self.zoo_model_class)
            write_file(config_path, json.dumps(data, indent=2, sort_keys=True) + "\n")
        return result

    @torch.no_grad()
    def _init_weights(self, module: nn.Module):
        """The zoo's init (transformers' Llama init, zero LoRA deltas) for weights a checkpoint does not hold."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, RMSNorm):
            init.ones_(module.weight)
        elif isinstance(module, LoRA):
            init.kaiming_uniform_(module.lora_A, a=5**0.5)
            init.zeros_(module.lora_B)
        elif module is self:
            for buffer in self._buffers.values():  # e.g. the loss-free routers' bias
                if buffer is not None and buffer.is_floating_point():
                    init.zeros_(buffer)

    def _sync(self):
        """Point the zoo model at this module's own parameters, buffers and mode (loading or ``.to()`` may have
        replaced the tensors registered directly on this module)."""
        zoo_model = self.zoo_model
        for name in zoo_model._parameters:
            zoo_model._parameters[name] = self._parameters[name]
        for name in zoo_model._buffers:
            zoo_model._buffers[name] = self._buffers[name]
        zoo_model.training = self.training

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding):
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear | None:
        return getattr(self, "lm_head", None)  # None when tied (the embedding matrix gives the logits)

    def _set_gradient_checkpointing(
        self, enable: bool = True, gradient_checkpointing_func=None, every_n_layers: int = 1
    ) -> None:
        """transformers' ``activation_checkpointing_enable`` / ``gradient_checkpointing_enable`` (and ``Trainer``'s
        ``gradient_checkpointing=True``) land here: the zoo model recomputes every ``every_n_layers``-th layer run
        in training mode through ``gradient_checkpointing_func`` (``torch.utils.checkpoint.checkpoint`` with the
        caller's ``gradient_checkpointing_kwargs``)."""
        self.zoo_model.set_grad_checkpointing(enable, gradient_checkpointing_func, every_n_layers if enable else 1)
        self.gradient_checkpointing = bool(enable)  # what is_activation_checkpointing reads

    # -- forward ------------------------------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: ZooCache | KVCache | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int = 0,
        labels: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        return_dict: bool | None = None,
        cache: ZooCache | KVCache | None = None,
        **kwargs: Any,
    ) -> CausalLMOutputWithPast | tuple:
        """Logits of ``input_ids`` (``(B, T)``); ``attention_mask`` covers cached + new tokens (1 real, 0 padding).

        ``past_key_values`` is a :class:`ZooCache` (the one ``generate`` makes, or
        ``ZooCache(model.zoo_model.new_cache(batch, max_length))``; a bare zoo cache works too), appended to in
        place; ``use_cache=True`` without one makes one (as the zoo's ``forward`` does) and returns it. ``labels``
        give the shifted causal-LM loss (``-100`` ignored). ``cache`` is ``past_key_values``'s name from
        transformers 5.24 on.
        """
        if cache is not None:
            if past_key_values is not None:
                raise ValueError("give the cache as cache or as past_key_values, not both")
            past_key_values = cache
        if inputs_embeds is not None or input_ids is None:
            raise ValueError(f"{type(self).__name__} takes input_ids (token ids), not inputs_embeds")
        for key in ("output_attentions", "output_hidden_states"):
            if kwargs.get(key):
                raise ValueError(f"{type(self).__name__} does not return {key.removeprefix('output_')}")
        holder = past_key_values if isinstance(past_key_values, ZooCache) else None
        cache = holder.cache if holder is not None else past_key_values
        if cache is not None and not isinstance(cache, KVCache):
            raise ValueError(_NOT_A_ZOO_CACHE.format(type(past_key_values).__name__))
        if isinstance(logits_to_keep, torch.Tensor):
            raise ValueError("logits_to_keep must be an int here (the last n positions)")
        if cache is not None and isinstance(input_ids, torch.Tensor) and input_ids.ndim == 2:
            ZooCache(cache).ensure(cache.seq_length + input_ids.shape[1], self.config.max_position_embeddings)
        self._sync()
        out = self.zoo_model(
            input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=cache,
            use_cache=bool(use_cache),
            logits_to_keep=logits_to_keep,
        )
        logits, cache = (out, None) if isinstance(out, torch.Tensor) else (out[0], out[1])
        if cache is not None and (holder is None or holder.cache is not cache):
            holder = ZooCache(cache)  # a cache the zoo model made (use_cache=True), or a bare one given
        loss = None
        if labels is not None:
            loss = self.loss_function(logits=logits, labels=labels, vocab_size=self.config.vocab_size)
        result = CausalLMOutputWithPast(loss=loss, logits=logits, **{_CACHE_KEY: holder if cache is not None else None})
        return result if return_dict is not False else result.to_tuple()

    # -- generation ---------------------------------------------------------------------------------------------
    def _prepare_cache_for_generation(
        self,
        generation_config,
        model_kwargs: dict[str, Any],
        generation_mode,
        batch_size: int,
        max_cache_length: int,
    ) -> None:
        """The zoo's static cache for the whole generation (greedy / sampling), else no cache (see the module doc).
        A cache given (the one an earlier ``generate`` returned) is grown to this generation's length."""
        given = next((model_kwargs[k] for k in ("cache", "past_key_values") if model_kwargs.get(k) is not None), None)
        if given is not None:
            if not isinstance(given, ZooCache):
                raise ValueError(_NOT_A_ZOO_CACHE.format(type(given).__name__))
            if generation_mode not in _CONTINUING_MODES:
                raise ValueError(
                    f"a cache carried into generate serves greedy decoding and sampling; {generation_mode.value} makes "
                    "its own (one row per beam) or runs without one: call generate on the whole sequence without the "
                    "cache"
                )
            given.ensure(max_cache_length, self.config.max_position_embeddings)
            return
        if generation_config.use_cache is False:
            return
        if generation_mode not in _CACHED_MODES:
            generation_config.use_cache = False  # assisted decoding, constrained or group beams crop or split caches
            return
        rows = max(generation_config.num_beams or 1, generation_config.num_return_sequences or 1) * batch_size
        model_kwargs[_CACHE_KEY] = ZooCache(self.zoo_model.new_cache(rows, max_cache_length))


def _quantization(config: _ZooLMConfig) -> QuantSpec | None:
    """The quantization a config records: the zoo's ``quantization`` entry, else transformers'
    ``quantization_config`` (``quant_method: "zoo"``); None for float weights."""
    spec = QuantSpec.from_checkpoint(config)
    if spec is not None:
        return spec
    qc = getattr(config, "quantization_config", None)
    if isinstance(qc, ZooQuantizationConfig):
        return qc.spec
    if isinstance(qc, dict) and qc.get("quant_method") == QUANT_METHOD:
        return ZooQuantizationConfig(**qc).spec
    if qc is not None:
        method = qc.get("quant_method") if isinstance(qc, dict) else getattr(qc, "quant_method", None)
        raise ValueError(f"a zoo model's quantization_config must have quant_method {QUANT_METHOD!r}, got {method!r}")
    return None


# --------------------------------------------------------------------------------------------------------------
# The classes of every registered family, derived from the registry
# --------------------------------------------------------------------------------------------------------------

_derived: dict[type[DecoderLM], tuple[type[_ZooLMConfig], type[_ZooLMForCausalLM]]] = {}


def _new_class(name: str, base: type, attrs: dict[str, Any]) -> type:
    """``class name(base)`` with ``attrs`` in its body (through the base's metaclass, as a class statement)."""
    return types.new_class(name, (base,), exec_body=lambda namespace: namespace.update(attrs))


def _classes_of(model_cls: type[DecoderLM], family: str) -> tuple[type[_ZooLMConfig], type[_ZooLMForCausalLM]]:
    """The transformers config and model classes of a zoo LM class (made once per class): ``Zoo<Config>`` with
    ``model_type`` and the config's fields, and ``<hf_architecture>`` (the name its config.json records)."""
    if model_cls not in _derived:
        config_attrs = dict(
            __module__=__name__,
            __doc__=f"``model_type: {model_cls.model_type!r}``: a zoo {model_cls.__name__} folder, as the family's "
            "``save_pretrained`` writes it.",
            model_type=model_cls.model_type,
            zoo_config_class=model_cls.config_class,
            default_architecture=family,
        )
        config_name, model_name = transformers_class_names(model_cls)  # the names its folders' auto_map gives
        config_cls = _new_class(config_name, _ZooLMConfig, config_attrs)
        model_attrs = dict(
            __module__=__name__,
            __doc__=f"A zoo {model_cls.__name__} as a transformers causal LM.",
            config_class=config_cls,
            zoo_model_class=model_cls,
        )
        model = _new_class(model_name, _ZooLMForCausalLM, model_attrs)
        _derived[model_cls] = (config_cls, model)
    return _derived[model_cls]


def auto_classes() -> dict[str, tuple[type[_ZooLMConfig], type[_ZooLMForCausalLM]]]:
    """``model_type`` -> (config class, model class) of every registered text-generation family whose model class
    declares a format of its own (``model_type`` and ``hf_architecture``; a Llama-expressible model is a stock
    ``LlamaForCausalLM`` and needs none)."""
    found = {}
    for name in list_models(task="text-generation"):
        entry = get_entry(name)
        model_cls = entry.model_class
        if model_cls is None or not (model_cls.model_type and model_cls.hf_architecture):
            continue
        found.setdefault(model_cls.model_type, _classes_of(model_cls, entry.family))
    return found


# every zoo LM model_type -> (config class, model class)
MODEL_TYPES: dict[str, tuple[type[_ZooLMConfig], type[_ZooLMForCausalLM]]] = auto_classes()


def __getattr__(name: str) -> type:
    """The derived classes by name (``hf_auto.MobileLLMForCausalLM``, ``hf_auto.ZooMobileLLMConfig``)."""
    for pair in _derived.values():
        for cls in pair:
            if cls.__name__ == name:
                return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------------------------------

_registered: set[str] = set()


def register() -> list[str]:
    """Register every zoo LM ``model_type`` with ``AutoConfig`` and ``AutoModelForCausalLM`` (idempotent).

    A ``model_type`` that transformers (or another package) already maps to other classes is left to them, with a
    warning. A family registered since this module was imported is added to :data:`MODEL_TYPES` first. Returns the
    model types the zoo's classes serve.
    """
    if QUANT_METHOD not in AUTO_QUANTIZER_MAPPING:  # transformers' quantizers know the zoo's int8/int4 folders
        AUTO_QUANTIZATION_CONFIG_MAPPING[QUANT_METHOD] = ZooQuantizationConfig
        AUTO_QUANTIZER_MAPPING[QUANT_METHOD] = ZooQuantizer
    for model_type, pair in auto_classes().items():
        MODEL_TYPES.setdefault(model_type, pair)
    for model_type, (config_class, model_class) in MODEL_TYPES.items():
        if model_type in _registered:
            continue
        try:
            AutoConfig.register(model_type, config_class)
            AutoModelForCausalLM.register(config_class, model_class)
        except ValueError as e:  # the name is taken
            _logger.warning("zoo: transformers model_type %r is already registered; left as it is (%s)", model_type, e)
            continue
        _registered.add(model_type)
    return sorted(_registered)


register()
