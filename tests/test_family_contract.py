"""A new family needs no test edits: a throw-away family registered at run time goes through the generic suite.

The family below is what a family file holds (timm's order): blocks -> model class (the shared vision face,
``zoo.layers.VisionBackbone``) -> builder through ``build_vision_model`` -> ``FAMILY`` / ``default_cfgs`` /
``reference_figures`` -> ``@register_model``. Registered, it is built, trained, loaded, wrapped for features and
created through timm by the very checks (tests/model_checks.py) that tests/test_models.py runs on every registered
model.
"""

import sys
import types

import pytest
import timm
import torch
from model_checks import (
    check_cfg,
    check_features,
    check_interface,
    check_param_count,
    check_regularisation,
    check_train_step,
)
from timm.models import _registry as timm_registry
from torch import nn

import zoo
from zoo.factory import register_in_timm
from zoo.layers import Linear, Mlp, VisionBackbone, imagenet_cfg
from zoo.models._builder import build_vision_model
from zoo.registry import register_model, unregister_model

NAME = "tinynet_t1"
MODULE = "zoo_test_tinynet"


class TinyStage(nn.Module):
    """A (strided) conv, then a residual MLP over channels, channels-first in and out."""

    def __init__(self, in_dim: int, dim: int, stride: int, drop_path: float):
        super().__init__()
        self.downsample = nn.Conv2d(in_dim, dim, 3, stride=stride, padding=1)
        self.blocks = nn.Sequential(nn.Identity())
        self.mlp = Mlp(dim, mlp_ratio=2)
        self.drop_path = drop_path
        self.grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.downsample(x)
        y = self.mlp(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        if self.training and self.drop_path > 0:
            y = y * (torch.rand(x.shape[0], 1, 1, 1) >= self.drop_path) / (1 - self.drop_path)
        return x + y


class TinyNet(VisionBackbone, nn.Module):
    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        dims=(8, 16, 24, 32),
        drop_path_rate: float = 0.0,
        global_pool: str = "avg",
    ):
        super().__init__()
        self.in_chans, self.num_classes, self.global_pool = in_chans, num_classes, global_pool
        self.num_features = self.head_hidden_size = dims[-1]
        self.stem = nn.Module()
        self.stem.conv = nn.Conv2d(in_chans, dims[0], 4, stride=4)
        self.stages = nn.Sequential(
            *[TinyStage(dims[max(i - 1, 0)], d, 2 if i else 1, drop_path_rate) for i, d in enumerate(dims)]
        )
        self.feature_info = [dict(num_chs=d, reduction=4 * 2**i, module=f"stages.{i}") for i, d in enumerate(dims)]
        self.head = nn.Module()
        self.head.norm = nn.LayerNorm(dims[-1])
        self.head.fc = Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()

    def _embed(self, x):
        self.check_input(x)
        return self.stem.conv(x)

    def forward_head(self, x, pre_logits: bool = False):
        if not self.global_pool:
            return x
        x = self.head.norm(x.mean((2, 3)))
        return x if pre_logits else self.head.fc(x)


def _tinynet_t1(pretrained=False, **kwargs):
    return build_vision_model(TinyNet, NAME, pretrained, **kwargs)


def _params(num_classes=1000, dims=(8, 16, 24, 32)):
    model = TinyNet(num_classes=num_classes, dims=dims)
    return sum(p.numel() for p in model.parameters())


@pytest.fixture(scope="module")
def tiny_family():
    module = types.ModuleType(MODULE)
    module.FAMILY = dict(name="tinynet", task="image-classification")
    module.default_cfgs = {NAME: imagenet_cfg(pool_size=(1, 1), license="apache-2.0", paper_name="a test family")}
    module.reference_figures = {NAME: dict(params=_params(), macs=None, gmacs=None, top1=None)}
    sys.modules[MODULE] = module
    builder = _tinynet_t1
    builder.__module__ = MODULE
    register_model(builder, name=NAME)
    register_in_timm()
    yield NAME
    unregister_model(NAME)
    timm_registry._model_entrypoints.pop(NAME, None)
    timm_registry._model_pretrained_cfgs.pop(NAME, None)
    sys.modules.pop(MODULE, None)


def test_a_family_registered_at_run_time_passes_the_generic_suite(tiny_family, tmp_path):
    name = tiny_family
    assert name in zoo.list_models(family="tinynet") and zoo.model_info(name)["family"] == "tinynet"
    for check in (check_param_count, check_cfg, check_train_step, check_features, check_regularisation):
        check(name)
    check_interface(name, tmp_path)


def test_timm_builds_it_through_the_zoo(tiny_family):
    model = timm.create_model(tiny_family, num_classes=5)
    assert isinstance(model, TinyNet) and model.num_classes == 5
    assert zoo.model_info(tiny_family)["timm_owns_name"] is False
