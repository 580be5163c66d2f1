"""The decoder-LM blocks and KV cache moved to the LM package: :mod:`zoo.lm.blocks` and :mod:`zoo.lm.cache` (all of
them importable from :mod:`zoo.lm`). This module keeps the old import path working; new code imports from
``zoo.lm``."""

from ..lm.blocks import (
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
from ..lm.cache import KVCache

__all__ = [
    "AttentionMasks",
    "DecoderLayer",
    "GroupedQueryAttention",
    "KVCache",
    "RMSNorm",
    "RotaryEmbedding",
    "SwiGLU",
    "apply_rotary",
    "attention_mask",
    "build_attention_masks",
    "rotate_half",
]
