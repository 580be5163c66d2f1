"""Building blocks shared by more than one family."""
from .activations import GELU, SquaredReLU, StarReLU, needs_grad
from .norm import ChannelLayerNorm, SpatialLayerNorm, spatial_stats
from .residual import drop_path_gain, residual_add

__all__ = [
    "ChannelLayerNorm",
    "GELU",
    "SpatialLayerNorm",
    "SquaredReLU",
    "StarReLU",
    "drop_path_gain",
    "needs_grad",
    "residual_add",
    "spatial_stats",
]
