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
"""
import dataclasses
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers import DecoderLayer, KVCache, RMSNorm, RotaryEmbedding, build_attention_masks, sequence_schedule
from ..registry import check_known_keys, register_model

__all__ = ["LMOutput", "MobileLLM", "MobileLLMConfig", "checkpoint_filter_fn", "config_from_dict",
           "pro_layer_types", "save_pretrained"]

FULL, SLIDING = "full_attention", "sliding_attention"


# --------------------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------------------


@dataclass
class MobileLLMConfig:
    """Architecture of a MobileLLM-style decoder, with transformers' (Llama) key names."""
    vocab_size: int = 32000
    hidden_size: int = 576
    intermediate_size: int = 1536
    num_hidden_layers: int = 30
    num_attention_heads: int = 9
    num_key_value_heads: int = 3
    head_dim: Optional[int] = None  # None: hidden_size // num_attention_heads
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = True
    attention_bias: bool = False
    mlp_bias: bool = False
    hidden_act: str = "silu"
    layer_sharing: bool = False  # every layer runs twice in a row (0,0,1,1,...), each run with its own cache slot
    sliding_window: Optional[int] = None  # window of the "sliding_attention" layers
    layer_types: Optional[List[str]] = None  # per layer: "full_attention" | "sliding_attention"; None: all full
    initializer_range: float = 0.02
    bos_token_id: Optional[int] = 1
    eos_token_id: Optional[int] = 2
    pad_token_id: Optional[int] = None

    def __post_init__(self):
        for key in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "max_position_embeddings"):
            value = getattr(self, key)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"MobileLLMConfig.{key} must be a positive int, got {value!r}")
        if self.head_dim is None:
            if self.hidden_size % self.num_attention_heads:
                raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                                 f"{self.num_attention_heads}; give head_dim explicitly")
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                             f"num_key_value_heads ({self.num_key_value_heads})")
        if self.hidden_act != "silu":
            raise ValueError(f"only hidden_act='silu' (SwiGLU) is supported, got {self.hidden_act!r}")
        if not self.rms_norm_eps > 0 or not self.rope_theta > 0:
            raise ValueError("rms_norm_eps and rope_theta must be > 0")
        if self.layer_types is not None:
            self.layer_types = list(self.layer_types)
            if len(self.layer_types) != self.num_hidden_layers:
                raise ValueError(f"layer_types has {len(self.layer_types)} entries for "
                                 f"{self.num_hidden_layers} layers")
            bad = sorted(set(self.layer_types) - {FULL, SLIDING})
            if bad:
                raise ValueError(f"layer_types may hold only {FULL!r} and {SLIDING!r}, got {bad}")
            if SLIDING in self.layer_types and not (isinstance(self.sliding_window, int) and self.sliding_window > 0):
                raise ValueError("sliding_attention layers need a positive int sliding_window")

    def layer_windows(self) -> List[Optional[int]]:
        """The attention window of every physical layer (None = global)."""
        types = self.layer_types or [FULL] * self.num_hidden_layers
        return [self.sliding_window if t == SLIDING else None for t in types]

    def schedule(self) -> List[int]:
        """The physical layer run at each step (``0,0,1,1,...`` with layer sharing)."""
        return sequence_schedule(self.num_hidden_layers, 2 if self.layer_sharing else 1)

    @property
    def llama_compatible(self) -> bool:
        """True when stock ``LlamaForCausalLM`` computes exactly this model (no layer sharing, no windows)."""
        return not self.layer_sharing and all(w is None for w in self.layer_windows())

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


def pro_layer_types(num_layers: int) -> List[str]:
    """MobileLLM-Pro's local/global pattern as the zoo chose it: global at ``i % 4 == 0`` and the last layer."""
    return [FULL if i % 4 == 0 or i == num_layers - 1 else SLIDING for i in range(num_layers)]


_CONFIG_FIELDS = {f.name for f in dataclasses.fields(MobileLLMConfig)}
def config_from_dict(data: Dict[str, Any], **overrides) -> MobileLLMConfig:
    """A config from a ``config.json`` dict (the authors', transformers' Llama or the zoo's), then ``overrides``.

    The authors' ``share_embedding: true`` means tied output weights whatever ``tie_word_embeddings`` says.
    Settings the zoo cannot compute (RoPE scaling, tensor-parallel splits of the projections) are errors.
    """
    _check_keys(overrides)
    return MobileLLMConfig(**{**_config_kwargs(data), **overrides})


def _config_kwargs(data: Dict[str, Any]) -> Dict[str, Any]:
    """The config fields a ``config.json`` dict sets (see :func:`config_from_dict`)."""
    data = dict(data)
    if data.get("model_type") not in (None, "llama", "mobilellm"):
        raise ValueError(f"config.json describes a {data['model_type']!r} model; the zoo's MobileLLM reads Llama, "
                         f"MobileLLM and its own configs")
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


def _check_keys(kwargs: Dict[str, Any]):
    check_known_keys(kwargs, _CONFIG_FIELDS, "MobileLLM", "Accepted config keys")


# --------------------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------------------


class LMOutput(NamedTuple):
    logits: torch.Tensor  # (B, T, vocab)
    past_key_values: Optional[KVCache]


class MobileLLMBody(nn.Module):
    """Embedding, the physical decoder layers and the final norm (transformers' ``LlamaModel`` key names)."""

    def __init__(self, config: MobileLLMConfig):
        super().__init__()
        c = config
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size, padding_idx=None)
        self.layers = nn.ModuleList([
            DecoderLayer(c.hidden_size, c.num_attention_heads, c.num_key_value_heads, c.intermediate_size,
                         c.head_dim, c.rms_norm_eps, c.attention_bias, c.mlp_bias, window)
            for window in c.layer_windows()])
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)


class DecoderLM(nn.Module):
    """What every zoo decoder shares (MobileLLM, the recursive LMs): Llama's init, tied output weights, parameter
    counting, input checks and cached :meth:`generate`. Subclasses provide ``config``, ``model.embed_tokens``,
    ``lm_head`` (None when tied), ``new_cache`` and ``forward``."""

    # -- weights ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def init_weights(self):
        """transformers' Llama init: N(0, initializer_range) for linear and embedding weights, norms at 1."""
        std = self.config.initializer_range
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                m.weight.normal_(0.0, std)
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()
            elif isinstance(m, RMSNorm):
                m.weight.fill_(1.0)

    @property
    def output_weight(self) -> torch.Tensor:
        return self.model.embed_tokens.weight if self.lm_head is None else self.lm_head.weight

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    def num_params(self, non_embedding: bool = False) -> int:
        n = sum(p.numel() for p in self.parameters())  # tied weights are one parameter: counted once
        return n - self.model.embed_tokens.weight.numel() if non_embedding else n

    def set_grad_checkpointing(self, enable: bool = True):
        self.grad_checkpointing = enable

    def no_weight_decay(self) -> set:
        return {n for n, p in self.named_parameters() if p.ndim < 2}

    # -- input checks -------------------------------------------------------------------------------------------
    def _check_ids(self, input_ids: torch.Tensor):
        if not isinstance(input_ids, torch.Tensor) or input_ids.ndim != 2 or input_ids.dtype not in (
                torch.long, torch.int32, torch.int16, torch.int8, torch.uint8):
            got = (f"{tuple(input_ids.shape)} {input_ids.dtype}" if isinstance(input_ids, torch.Tensor)
                   else type(input_ids).__name__)
            raise ValueError(f"input_ids must be an integer tensor of shape (batch, tokens), got {got}")
        if input_ids.numel() == 0:
            raise ValueError("input_ids is empty: give at least one token")
        if input_ids.device.type == "cpu":  # (elsewhere the embedding's own check fires; no host sync here)
            lo, hi = int(input_ids.min()), int(input_ids.max())
            if lo < 0 or hi >= self.config.vocab_size:
                raise ValueError(f"token ids must lie in [0, {self.config.vocab_size}), got values in [{lo}, {hi}]")

    # -- generation ---------------------------------------------------------------------------------------------
    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int = 20, do_sample: bool = False,
                 temperature: float = 1.0, top_k: Optional[int] = None, top_p: Optional[float] = None,
                 eos_token_id: Optional[Union[int, Sequence[int]]] = None,
                 attention_mask: Optional[torch.Tensor] = None, pad_token_id: Optional[int] = None,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Prompt + up to ``max_new_tokens`` new tokens ``(B, T + n)``, decoding with a static KV cache.

        Greedy by default; ``do_sample`` samples from ``softmax(logits / temperature)`` restricted to the
        ``top_k`` most likely tokens and the smallest set whose probability reaches ``top_p`` (in that order).
        A sequence that emits an ``eos_token_id`` is finished and padded with ``pad_token_id`` (default: the
        first eos id); decoding stops when every sequence has finished. Batches of prompts of different lengths
        are left-padded with ``attention_mask`` marking the real tokens.
        """
        self._check_ids(input_ids)
        if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
        if do_sample:
            if not temperature > 0:
                raise ValueError(f"temperature must be > 0 when sampling, got {temperature}")
            if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
                raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
            if top_p is not None and not 0 < top_p <= 1:
                raise ValueError(f"top_p must lie in (0, 1], got {top_p}")
        eos = [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id or [])
        pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)
        B, T = input_ids.shape
        device = self.model.embed_tokens.weight.device
        input_ids = input_ids.to(device)
        if max_new_tokens == 0:
            return input_ids
        cache = self.new_cache(B, T + max_new_tokens)

        mask = positions = None
        if attention_mask is not None:
            if attention_mask.shape != (B, T):
                raise ValueError(f"attention_mask must have the prompt's shape {(B, T)}, got "
                                 f"{tuple(attention_mask.shape)}")
            if not bool(attention_mask.bool().all()):
                mask = torch.ones(B, T + max_new_tokens, dtype=torch.long, device=device)
                mask[:, :T] = attention_mask.to(device).long()
                positions = (mask[:, :T].cumsum(-1) - 1).clamp_(min=0)
        eos_ids = torch.tensor(eos, device=device) if eos else None
        finished = torch.zeros(B, dtype=torch.bool, device=device)
        out = torch.empty(B, max_new_tokens, dtype=input_ids.dtype, device=device)

        logits = self(input_ids, attention_mask=None if mask is None else mask[:, :T], position_ids=positions,
                      past_key_values=cache, logits_to_keep=1).logits[:, -1]
        n = 0
        for step in range(max_new_tokens):
            if do_sample:
                token = _sample(logits.float(), temperature, top_k, top_p, generator)
            else:
                token = logits.argmax(dim=-1)
            if eos_ids is not None:
                token = torch.where(finished, torch.full_like(token, pad), token)
                finished |= torch.isin(token, eos_ids)
            out[:, step] = token
            n = step + 1
            if n == max_new_tokens or (eos_ids is not None and bool(finished.all())):
                break
            if positions is not None:
                positions = positions[:, -1:] + 1
            logits = self(token[:, None], attention_mask=None if mask is None else mask[:, :T + n],
                          position_ids=positions, past_key_values=cache).logits[:, -1]
        return torch.cat([input_ids, out[:, :n]], dim=1)


class MobileLLM(DecoderLM):
    """A MobileLLM decoder. ``model(input_ids)`` -> logits ``(B, T, vocab)``; :meth:`generate` decodes with a cache.

    Args: a :class:`MobileLLMConfig`, or its fields as keyword arguments.
    """

    def __init__(self, config: Optional[MobileLLMConfig] = None, **kwargs):
        super().__init__()
        if config is None:
            _check_keys(kwargs)
            config = MobileLLMConfig(**kwargs)
        elif kwargs:
            _check_keys(kwargs)
            config = dataclasses.replace(config, **kwargs)
        self.config = config
        self.model = MobileLLMBody(config)
        self.lm_head = None if config.tie_word_embeddings else nn.Linear(config.hidden_size, config.vocab_size,
                                                                         bias=False)
        self.rotary = RotaryEmbedding(config.head_dim, config.rope_theta,
                                      initial_length=min(config.max_position_embeddings, 4096))
        self.schedule = config.schedule()
        self.windows = sorted(set(config.layer_windows()), key=lambda w: -1 if w is None else w)
        self.grad_checkpointing = False
        self.pretrained_cfg: Dict[str, Any] = {}
        self.init_weights()

    # -- cache --------------------------------------------------------------------------------------------------
    def new_cache(self, batch_size: int, max_length: int, dtype: Optional[torch.dtype] = None,
                  device: Optional[Union[str, torch.device]] = None) -> KVCache:
        """A static cache for ``batch_size`` sequences of up to ``max_length`` tokens (one slot per layer run)."""
        p = self.model.embed_tokens.weight
        return KVCache(len(self.schedule), batch_size, self.config.num_key_value_heads, max_length,
                       self.config.head_dim, dtype or p.dtype, device or p.device)

    def kv_cache_bytes_per_token(self, dtype: Optional[torch.dtype] = None) -> int:
        size = torch.empty((), dtype=dtype or self.model.embed_tokens.weight.dtype).element_size()
        return 2 * len(self.schedule) * self.config.num_key_value_heads * self.config.head_dim * size

    # -- forward ------------------------------------------------------------------------------------------------
    def forward(self, input_ids: torch.Tensor, attention_mask: Optional[torch.Tensor] = None,
                position_ids: Optional[torch.Tensor] = None, past_key_values: Optional[KVCache] = None,
                use_cache: bool = False, logits_to_keep: int = 0) -> Union[torch.Tensor, LMOutput]:
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
        self._check_ids(input_ids)
        B, T = input_ids.shape
        cache = past_key_values
        if cache is None and use_cache:
            cache = self.new_cache(B, max(T, min(self.config.max_position_embeddings, 2048)))
        if cache is not None:
            if cache.num_slots != len(self.schedule) or cache.batch_size != B:
                raise ValueError(f"the cache was made for {cache.num_slots} layer runs and batch {cache.batch_size}; "
                                 f"this model has {len(self.schedule)} layer runs and the input batch {B}. "
                                 f"Use model.new_cache(batch_size, max_length).")
        past = cache.seq_length if cache is not None else 0
        x = self.model.embed_tokens(input_ids)
        if position_ids is None:
            rope = self.rotary.slice(past, T, x.device, x.dtype)
        else:
            rope = self.rotary(position_ids.to(x.device).expand(B, T) if position_ids.ndim == 2
                               else position_ids.to(x.device).view(1, T).expand(B, T), x.dtype)
        masks = build_attention_masks(past, T, self.windows, attention_mask, x.device)
        layers = self.model.layers
        use_ckpt = self.grad_checkpointing and cache is None and torch.is_grad_enabled()
        for slot, index in enumerate(self.schedule):
            layer = layers[index]
            mask, causal = masks.get(layer.self_attn.sliding_window)
            if use_ckpt:
                x = checkpoint(layer, x, rope, None, slot, mask, causal, use_reentrant=False)
            else:
                x = layer(x, rope, cache, slot, mask, causal)
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        logits = F.linear(self.model.norm(x), self.output_weight)
        return LMOutput(logits, cache) if use_cache or past_key_values is not None else logits

    # -- files --------------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path: Union[str, os.PathLike], **overrides) -> "MobileLLM":
        """Build from a folder with ``config.json`` and weights (transformers Llama, the authors' or the zoo's)."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} has no config.json; pass a model folder (or use zoo.create_model(NAME, "
                                    f"pretrained=True, pretrained_cfg_overlay={{'file': WEIGHTS}}))")
        data = json.loads((path / "config.json").read_text())
        state_dict = read_weights(path)
        config = config_from_dict(data, **overrides)
        if "lm_head.weight" not in state_dict and not config.tie_word_embeddings:
            config = dataclasses.replace(config, tie_word_embeddings=True)
        model = cls(config)
        model.pretrained_cfg = {"architecture": data.get("architecture") or "mobilellm", "file": str(path)}
        from ..hub import load_state_dict_checked
        load_state_dict_checked(model, state_dict, str(path), filter_fn=checkpoint_filter_fn)
        return model

    def save_pretrained(self, out_dir: Union[str, os.PathLike], format: str = "auto",
                        model_name: Optional[str] = None) -> Path:
        return save_pretrained(self, out_dir, format=format, model_name=model_name)


def _sample(logits: torch.Tensor, temperature: float, top_k: Optional[int], top_p: Optional[float],
            generator: Optional[torch.Generator]) -> torch.Tensor:
    """One token per row from ``logits`` (B, V): temperature, then top-k, then top-p (nucleus) filtering."""
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs > top_p  # keep the smallest prefix reaching top_p (always one)
        logits = logits.scatter(-1, order, sorted_logits.masked_fill(drop, float("-inf")))
    probs = logits.softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


# --------------------------------------------------------------------------------------------------------------
# Checkpoints: reading, conversion, export
# --------------------------------------------------------------------------------------------------------------

_EMBED = "model.embed_tokens.weight"


def read_weights(path: Union[str, os.PathLike]) -> Dict[str, torch.Tensor]:
    """Weights from a file, or a folder's ``model.safetensors`` / sharded safetensors / ``pytorch_model.bin``."""
    from ..hub import CheckpointError, read_state_dict
    path = Path(path)
    if path.is_dir():
        index = path / "model.safetensors.index.json"
        if index.is_file() and not (path / "model.safetensors").is_file():
            shards = sorted(set(json.loads(index.read_text()).get("weight_map", {}).values()))
            if not shards:
                raise CheckpointError(f"{index} lists no weight files")
            state_dict = {}
            for shard in shards:
                state_dict.update(read_state_dict(path / shard))
            return state_dict
    return read_state_dict(path)


def checkpoint_filter_fn(state_dict: Dict[str, torch.Tensor], model: nn.Module) -> Dict[str, torch.Tensor]:
    """The authors' / transformers' Llama keys -> the zoo's (the same names; RoPE buffers dropped, tying checked)."""
    from ..hub import CheckpointError, CheckpointMismatchError
    sd = {k: v for k, v in state_dict.items() if not k.endswith("rotary_emb.inv_freq")}
    if "embed_tokens.weight" in sd and _EMBED not in sd:  # a bare LlamaModel state dict
        sd = {(k if k == "lm_head.weight" else "model." + k): v for k, v in sd.items()}
    if _EMBED not in sd:
        hint = ""
        if any(k.startswith("model.layers.") for k in sd):
            hint = (" This is the known defect of the Hub's bot-converted model.safetensors of "
                    "facebook/MobileLLM-125M and -350M (transformers#34759, MobileLLM#16): its embeddings are "
                    "missing, so loading it would leave them random. Load the repo's pytorch_model.bin instead "
                    "(pretrained_cfg_overlay={'file': '.../pytorch_model.bin'}).")
        raise CheckpointError(f"the checkpoint has no {_EMBED}.{hint}")
    config = getattr(model, "config", None)
    tied = getattr(config, "tie_word_embeddings", True)
    if tied and "lm_head.weight" in sd:
        head = sd.pop("lm_head.weight")
        if head.shape != sd[_EMBED].shape or not torch.equal(head, sd[_EMBED]):
            raise CheckpointMismatchError(
                "the checkpoint's lm_head.weight differs from model.embed_tokens.weight (untied output weights), "
                "but the model ties them; build it with tie_word_embeddings=False")
    if not tied and "lm_head.weight" not in sd:
        raise CheckpointMismatchError("the checkpoint has no lm_head.weight (shared embeddings) but the model was "
                                      "built with tie_word_embeddings=False; build it with tie_word_embeddings=True")
    return sd


def to_llama_config(config: MobileLLMConfig) -> Dict[str, Any]:
    """transformers ``LlamaConfig`` fields of ``config`` (which must be Llama-expressible)."""
    return {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "vocab_size": config.vocab_size, "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size, "num_hidden_layers": config.num_hidden_layers,
        "num_attention_heads": config.num_attention_heads, "num_key_value_heads": config.num_key_value_heads,
        "head_dim": config.head_dim, "max_position_embeddings": config.max_position_embeddings,
        "rms_norm_eps": config.rms_norm_eps, "rope_theta": config.rope_theta, "rope_scaling": None,
        "tie_word_embeddings": config.tie_word_embeddings, "attention_bias": config.attention_bias,
        "mlp_bias": config.mlp_bias, "hidden_act": config.hidden_act, "initializer_range": config.initializer_range,
        "bos_token_id": config.bos_token_id, "eos_token_id": config.eos_token_id,
        "pad_token_id": config.pad_token_id, "attention_dropout": 0.0, "pretraining_tp": 1, "use_cache": True,
        "torch_dtype": "float32",
    }


def save_pretrained(model: MobileLLM, out_dir: Union[str, os.PathLike], format: str = "auto",
                    model_name: Optional[str] = None) -> Path:
    """Write ``model.safetensors`` + ``config.json`` to ``out_dir``.

    ``format="transformers"`` writes a ``LlamaForCausalLM`` folder (Llama keys; only ``model.embed_tokens.weight``
    when tied, as transformers itself saves it); ``"zoo"`` writes the zoo's config (layer sharing, windows);
    ``"auto"`` picks transformers whenever stock Llama computes the model. Both carry ``architecture`` (the zoo
    name) so that ``zoo.create_model("hf-hub:...")`` can rebuild either.
    """
    from ..hub import save_state_dict
    config = model.config
    llama_ok = config.llama_compatible
    if format == "auto":
        format = "transformers" if llama_ok else "zoo"
    if format not in ("transformers", "zoo"):
        raise ValueError(f"format must be 'auto', 'transformers' or 'zoo', got {format!r}")
    if format == "transformers" and not llama_ok:
        raise ValueError("stock LlamaForCausalLM cannot express layer sharing or sliding-window layers; "
                         "use format='zoo'")
    name = model_name or (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or "mobilellm"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if format == "transformers":
        data = {**to_llama_config(config), "architecture": name}
    else:
        data = {"architectures": ["MobileLLMForCausalLM"], "model_type": "mobilellm", "architecture": name,
                **config.to_dict()}
    weights = {k: v for k, v in model.state_dict().items()}
    save_state_dict(weights, out / "model.safetensors")
    (out / "config.json").write_text(json.dumps(data, indent=2) + "\n")
    if format == "transformers":
        gen = {k: getattr(config, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id")
               if getattr(config, k) is not None}
        (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    return out


# --------------------------------------------------------------------------------------------------------------
# Pretrained configs and registered models
# --------------------------------------------------------------------------------------------------------------

FAMILY = dict(name="mobilellm", task="text-generation")

_PAPER = dict(paper_name="MobileLLM: Optimizing Sub-billion Parameter Language Models for On-Device Use Cases",
              paper_ids="arXiv:2402.14905", origin_url="https://github.com/facebookresearch/MobileLLM",
              license="other", license_name="fair-noncommercial-research-license")


def _cfg(hub_repo: Optional[str] = None, **kwargs) -> Dict[str, Any]:
    cfg = {**_PAPER, "context_length": 2048, "tokenizer": "LLaMA SentencePiece tokenizer.model (32k)", **kwargs}
    if hub_repo:
        # the Hub's model.safetensors of 125M/350M misses the embeddings: the authors' .bin is the weight file
        cfg.update(hf_hub_id=hub_repo, hf_hub_filename="pytorch_model.bin",
                   notes=("authors' weights under their own license on the Hub (loaded from pytorch_model.bin, "
                          "weights_only=True)",))
    return cfg


_R1 = dict(paper_name="MobileLLM-R1", paper_ids=None, origin_url="https://github.com/facebookresearch/MobileLLM-R1",
           context_length=4096, tokenizer="Llama-3 tokenizer (128,256)",
           notes=("registered by shape; rope_theta 5e5 and no NoPE/QK-norm are the zoo's assumptions",))
_PRO = dict(paper_name="MobileLLM-Pro Technical Report", paper_ids="arXiv:2511.06719",
            origin_url="https://huggingface.co/facebook/MobileLLM-Pro", context_length=131072,
            tokenizer="Llama-4 tokenizer (202,048)",
            notes=("registered by shape; local:global 3:1 pattern (global at i % 4 == 0 and the last layer) and "
                   "rope_theta 5e5 are the zoo's choices",))

default_cfgs: Dict[str, Dict[str, Any]] = {
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
reference_figures: Dict[str, Dict[str, Any]] = {
    name: dict(params=params, macs=None, gmacs=None, top1=None, commonsense_avg=avg)
    for name, params, avg in [
        ("mobilellm_125m", 124_635_456, 46.3), ("mobilellm_350m", 345_355_200, 51.3),
        ("mobilellm_600m", 603_188_352, 54.3), ("mobilellm_1b", 1_005_461_760, 57.3),
        ("mobilellm_1.5b", 1_511_188_800, 59.4), ("mobilellm_125m_ls", 124_635_456, 47.0),
        ("mobilellm_350m_ls", 345_355_200, 52.1), ("mobilellm_r1_140m", 140_248_512, 44.3),
        ("mobilellm_r1_360m", 359_431_168, 51.0), ("mobilellm_r1_950m", 949_685_760, 58.6),
        ("mobilellm_pro_1b", 1_084_453_120, None),
    ]
}


def _arch(layers: int, hidden: int, heads: int, kv: int, ffn: int, vocab: int = 32000, **extra) -> Dict[str, Any]:
    return dict(num_hidden_layers=layers, hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=kv,
                intermediate_size=ffn, vocab_size=vocab, **extra)


_R1_EXTRA = dict(rope_theta=500000.0, max_position_embeddings=4096, bos_token_id=128000, eos_token_id=128001)
ARCHS: Dict[str, Dict[str, Any]] = {
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
    "mobilellm_pro_1b": _arch(30, 1280, 20, 4, 6144, 202048, rope_theta=500000.0, max_position_embeddings=131072,
                              sliding_window=512, layer_types=pro_layer_types(30), bos_token_id=None,
                              eos_token_id=None),
}


def _read_pretrained(cfg: Dict[str, Any], cache_dir: Optional[Union[str, os.PathLike]] = None):
    """(state_dict, config.json dict or None, where) for the weights a pretrained cfg names."""
    from ..hub import CheckpointError, download
    if cfg.get("state_dict") is not None:
        return dict(cfg["state_dict"]), None, "the given state_dict"
    if cfg.get("file"):
        path = Path(cfg["file"])
        folder = path if path.is_dir() else path.parent
        data = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else None
        return read_weights(path), data, str(path)
    if cfg.get("hf_hub_id"):
        repo, filename = cfg["hf_hub_id"], cfg.get("hf_hub_filename") or "model.safetensors"
        try:
            data = json.loads(Path(download(repo, "config.json", cache_dir=cache_dir)).read_text())
        except CheckpointError:
            data = None
        path = download(repo, filename, sha256=cfg.get("hf_hub_sha256"), cache_dir=cache_dir)
        return read_weights(path), data, f"hf-hub:{repo}/{filename}"
    raise CheckpointError(f"no pretrained weights are known for {cfg.get('architecture')}; use pretrained=False, "
                          "or pass pretrained_cfg_overlay={'file': PATH}")


def _create_mobilellm(variant: str, pretrained: bool = False, pretrained_cfg_overlay: Optional[Dict] = None,
                      checkpoint_path: Optional[Union[str, os.PathLike]] = None, **kwargs) -> MobileLLM:
    from ..registry import get_entry
    cache_dir = kwargs.pop("cache_dir", None)
    _check_keys(kwargs)
    cfg = {**get_entry(variant).pretrained_cfg, **(pretrained_cfg_overlay or {}), "architecture": variant}
    arch = dict(ARCHS[variant])
    state_dict = where = None
    if pretrained:
        state_dict, data, where = _read_pretrained(cfg, cache_dir)
        if data is not None:  # the folder's config describes its weights
            arch.update(_config_kwargs(data))
        if "lm_head.weight" not in state_dict:
            arch["tie_word_embeddings"] = True
    model = MobileLLM(MobileLLMConfig(**{**arch, **kwargs}))
    model.pretrained_cfg = {k: v for k, v in cfg.items() if k not in ("state_dict", "hf_hub_sha256")}
    from ..hub import load_checkpoint, load_state_dict_checked
    if state_dict is not None:
        load_state_dict_checked(model, state_dict, where, cfg=cfg, filter_fn=checkpoint_filter_fn)
    if checkpoint_path:
        load_checkpoint(model, read_weights(checkpoint_path), filter_fn=checkpoint_filter_fn)
    return model


@register_model
def mobilellm_125m(pretrained=False, **kwargs):
    return _create_mobilellm("mobilellm_125m", pretrained, **kwargs)


@register_model
def mobilellm_350m(pretrained=False, **kwargs):
    return _create_mobilellm("mobilellm_350m", pretrained, **kwargs)


@register_model
def mobilellm_600m(pretrained=False, **kwargs):
    return _create_mobilellm("mobilellm_600m", pretrained, **kwargs)


@register_model
def mobilellm_1b(pretrained=False, **kwargs):
    return _create_mobilellm("mobilellm_1b", pretrained, **kwargs)


def mobilellm_1_5b(pretrained=False, **kwargs):
    return _create_mobilellm("mobilellm_1.5b", pretrained, **kwargs)


mobilellm_1_5b.__name__ = "mobilellm_1.5b"  # registered under the authors' size name
register_model(mobilellm_1_5b)


@register_model
def mobilellm_125m_ls(pretrained=False, **kwargs):
    return _create_mobilellm("mobilellm_125m_ls", pretrained, **kwargs)


@register_model
def mobilellm_350m_ls(pretrained=False, **kwargs):
    return _create_mobilellm("mobilellm_350m_ls", pretrained, **kwargs)


@register_model
def mobilellm_r1_140m(pretrained=False, **kwargs):
    return _create_mobilellm("mobilellm_r1_140m", pretrained, **kwargs)


@register_model
def mobilellm_r1_360m(pretrained=False, **kwargs):
    return _create_mobilellm("mobilellm_r1_360m", pretrained, **kwargs)


@register_model
def mobilellm_r1_950m(pretrained=False, **kwargs):
    return _create_mobilellm("mobilellm_r1_950m", pretrained, **kwargs)


@register_model
def mobilellm_pro_1b(pretrained=False, **kwargs):
    return _create_mobilellm("mobilellm_pro_1b", pretrained, **kwargs)
