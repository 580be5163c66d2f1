"""Building blocks shared by more than one family."""

from .activations import GELU, SquaredReLU, StarReLU, needs_grad
from .args import check_known_keys
from .backbone import VisionBackbone, imagenet_cfg
from .features import StagePruningMixin, check_drop_rates, check_head_args, take_indices
from .large_kernel import BN_EPS, ConvBN, DecomposedLargeKernel, FusedLargeKernel, fold_batchnorm
from .linear import Linear, save_as_conv1x1
from .mlp import Mlp
from .norm import ChannelLayerNorm, SpatialLayerNorm, spatial_stats
from .recursion import RecursiveStack, cycle_schedule, recursion_indices, sequence_schedule
from .residual import drop_path_gain, residual_add

__all__ = [
    "BN_EPS",
    "Mlp",
    "VisionBackbone",
    "check_known_keys",
    "fold_batchnorm",
    "imagenet_cfg",
    "ChannelLayerNorm",
    "ConvBN",
    "DecomposedLargeKernel",
    "FusedLargeKernel",
    "RecursiveStack",
    "GELU",
    "Linear",
    "SpatialLayerNorm",
    "SquaredReLU",
    "StagePruningMixin",
    "StarReLU",
    "check_drop_rates",
    "check_head_args",
    "cycle_schedule",
    "drop_path_gain",
    "needs_grad",
    "recursion_indices",
    "residual_add",
    "save_as_conv1x1",
    "sequence_schedule",
    "spatial_stats",
    "take_indices",
]
