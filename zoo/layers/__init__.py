"""Building blocks shared by more than one family. The blocks import from here; ``pruning``, ``saving`` and
``tracing`` by their module.

=========================  ===========================================================================================
``backbone``               :class:`VisionBackbone` (timm's face of a staged vision backbone), :func:`imagenet_cfg`
``features``               feature extraction and head checks (:func:`take_indices`, :class:`StagePruningMixin`)
``large_kernel``           :class:`DecomposedLargeKernel` (SLaK) and its fused inference form, :class:`ConvBN`
``depthwise``              :class:`DepthwiseConv2d`: ``nn.Conv2d`` by :mod:`zoo.kernels.vision` (ConvFormer, CAFormer)
``patch_conv``             :class:`PatchConv2d`: ``nn.Conv2d`` whose weights' gradient is one GEMM (downsampling)
``attention``              self-attention over a qkv product by :mod:`zoo.kernels.vision` in training (CAFormer)
``recursion``              :class:`RecursiveStack`: a few shared blocks applied along a schedule
``activations``, ``mlp``,  :class:`StarReLU`, :class:`SquaredReLU`, :class:`GELU`; :class:`Mlp`; channels-last
``norm``, ``linear``,      norms (:class:`ChannelLayerNorm`, :class:`SpatialLayerNorm`); :class:`Linear` (oneDNN on
``residual``               the CPU); :func:`residual_add` (layer scale and stochastic depth in one op)
``args``                   :func:`check_known_keys`: argument checks shared by the registry, configs and commands
``tracing``                eager fast paths kept out of traced and scripted graphs
``pruning``                :class:`~zoo.layers.pruning.PrunePlan`: what a family tells :func:`zoo.compress.prune`
``saving``                 ``save_pretrained`` / ``push_to_hub`` on every model (registered by :mod:`zoo.publish`)
=========================  ===========================================================================================
"""

from .activations import GELU, SquaredReLU, StarReLU, needs_grad
from .args import check_known_keys
from .backbone import VisionBackbone, imagenet_cfg
from .depthwise import DepthwiseConv2d
from .features import StagePruningMixin, check_drop_rates, check_head_args, take_indices
from .large_kernel import BN_EPS, ConvBN, DecomposedLargeKernel, FusedLargeKernel, fold_batchnorm
from .linear import Linear, save_as_conv1x1
from .mlp import Mlp
from .norm import ChannelLayerNorm, SpatialLayerNorm, spatial_stats
from .patch_conv import PatchConv2d
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
    "DepthwiseConv2d",
    "FusedLargeKernel",
    "RecursiveStack",
    "GELU",
    "Linear",
    "PatchConv2d",
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
