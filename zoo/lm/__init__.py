"""The decoder-LM wing: everything a language-model family builds on, importable from here.

A family file (``zoo/models/<family>.py``) subclasses the config and the model and imports nothing else of the
LM runtime; read this package in this order:

=========================  ===========================================================================================
``decoder``                :class:`DecoderConfig` (Llama's fields, transformers' key names, checks),
                           :class:`DecoderBody` (embedding, layers, final norm) and :class:`DecoderLM` (init, tied
                           output, forward plumbing, ``generate``), :class:`LMOutput`, :class:`PassStart`
``blocks``                 :class:`RMSNorm`, :class:`RotaryEmbedding` (:func:`apply_rotary`), :class:`SwiGLU`,
                           :class:`GroupedQueryAttention`, :class:`DecoderLayer`; masks on sequence indices
                           (:func:`attention_mask`, :func:`build_attention_masks`); shapes in comments
``cache``                  :class:`KVCache`: one static cache, a slot per application of an attention layer
``routing``                what recursion and routing add: :class:`RoutedKVCache`, :class:`LoRA`, :class:`Router`,
                           :class:`LayerOps` / :func:`layer_forward` (one layer's steps, shared with the exports)
``generation``             :class:`GenerationMixin` (``model.generate``), :class:`GenerationConfig`, streamers,
                           ``decoding`` (sampling, the decode loop), ``sessions`` (other generation backends)
``quant``                  weight quantization: :class:`QuantSpec`, :func:`quantize_model`,
                           :class:`QuantizedLinear`, :func:`model_quantization` (``quant_format``, ``quant_layer``,
                           ``quant_model`` behind it)
``pruning``                :class:`DecoderPrunePlan`, the prune plan of a Llama-shaped decoder (``zoo prune``)
``llama_blocks``           :class:`LlamaBlocks` / :class:`BlockRun` / :class:`NoLlamaForm`: the model as a plain
                           stack of Llama blocks, what the GGUF writer reads
``static_decoder``         :class:`StaticDecoder`: the decode step with static shapes (``torch.compile``, exports);
                           ``compiled`` runs it
=========================  ===========================================================================================

The CPU kernels that the quantized layers, the one-token attention and the compiled step call (C++, built at first
use, never at import) live a floor below, in :mod:`zoo.kernels` (:mod:`zoo.kernels.gemv`).
"""

from .blocks import (
    AttentionMasks,
    DecoderLayer,
    GroupedQueryAttention,
    RMSNorm,
    RotaryEmbedding,
    SwiGLU,
    apply_rotary,
    attention_mask,
    build_attention_masks,
    rotate_half,
)
from .cache import KVCache
from .decoder import DecoderBody, DecoderConfig, DecoderLM, LMOutput, PassStart
from .generation import GenerationMixin
from .generation_config import GenerationConfig
from .llama_blocks import BlockRun, LlamaBlocks, NoLlamaForm
from .pruning import DecoderPrunePlan
from .quant import QuantizedLinear, QuantSpec, model_quantization, quantize_model
from .routing import (
    AddAuxiliaryLoss,
    LayerOps,
    LoRA,
    RoutedKVCache,
    Router,
    extend,
    gather_active,
    layer_forward,
    routed_attention_mask,
)
from .static_decoder import StaticDecoder
from .streamers import TextIteratorStreamer, TextStreamer

__all__ = [
    # config and decoder
    "DecoderConfig",
    "DecoderBody",
    "DecoderLM",
    "LMOutput",
    "PassStart",
    # blocks
    "RMSNorm",
    "RotaryEmbedding",
    "apply_rotary",
    "rotate_half",
    "SwiGLU",
    "GroupedQueryAttention",
    "DecoderLayer",
    "AttentionMasks",
    "attention_mask",
    "build_attention_masks",
    # cache
    "KVCache",
    # recursion and routing
    "RoutedKVCache",
    "LoRA",
    "Router",
    "LayerOps",
    "layer_forward",
    "AddAuxiliaryLoss",
    "extend",
    "gather_active",
    "routed_attention_mask",
    # generation
    "GenerationMixin",
    "GenerationConfig",
    "TextStreamer",
    "TextIteratorStreamer",
    # quantization
    "QuantSpec",
    "QuantizedLinear",
    "quantize_model",
    "model_quantization",
    # prune plan, llama.cpp form, static decoder
    "DecoderPrunePlan",
    "LlamaBlocks",
    "BlockRun",
    "NoLlamaForm",
    "StaticDecoder",
]
