"""features_only honours timm's feature_cls: 'getter' (default), 'hook', 'dict', 'list' give the same maps.

One model per family (the smallest, from the registry): a wrapper either returns exactly the getter's feature
maps (in its recorded ``output_fmt``) or is refused at build time with a message naming the one that works.
"""

import copy

import pytest
import torch
from model_groups import smallest_of_each

from zoo.factory import create_model, wrap_features
from zoo.registry import get_entry, list_models


@pytest.fixture(scope="module")
def built():
    """One model per name for the wrappers' cases, which wrap copies of it (a SLaK build takes about a second);
    released with the module."""
    return {}


@pytest.mark.parametrize(
    "name", smallest_of_each(list_models(task="image-classification"), lambda n: get_entry(n).family)
)
@pytest.mark.parametrize("feature_cls", ["hook", "dict", "list"])
def test_feature_wrappers_agree_with_the_getter(built, name, feature_cls):
    if name not in built:
        built[name] = create_model(name).eval()
    model = built[name]
    cfg = model.pretrained_cfg
    size = cfg["input_size"][-1] if cfg.get("fixed_input_size") else 64
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = wrap_features(copy.deepcopy(model), name, out_indices=(1, 2))(x)
        try:
            wrapped = wrap_features(copy.deepcopy(model), name, out_indices=(1, 2), feature_cls=feature_cls)
        except ValueError as e:
            assert "feature_cls='getter'" in str(e)
            return
        out = wrapped(x)
    out = list(out.values()) if isinstance(out, dict) else out
    if str(getattr(wrapped, "output_fmt", "NCHW")).endswith("NHWC"):
        out = [t.permute(0, 3, 1, 2) for t in out]
    assert len(out) == len(expected)
    for got, want in zip(out, expected):
        assert got.shape == want.shape and torch.equal(got, want)


def test_unknown_feature_cls_is_named():
    with torch.device("meta"), pytest.raises(ValueError, match="feature_cls='fx2'.*getter, hook, dict, list"):
        create_model(list_models(task="image-classification")[0], features_only=True, feature_cls="fx2")


@pytest.mark.parametrize("out_indices", [(2, 1), (1, 1), (1, -3)])
def test_out_indices_naming_a_stage_twice_or_out_of_order_are_refused(out_indices):
    """The maps come out one per stage in stage order: duplicate or unsorted indices would leave ``feature_info``
    describing other maps than those returned, so they are refused with the order that works."""
    with torch.device("meta"), pytest.raises(ValueError, match=r"twice or out of order.*out_indices=\(1, 2\)|\(1,\)"):
        create_model("caformer_s18", features_only=True, out_indices=out_indices)
    model = create_model("caformer_s18", features_only=True, out_indices=(1, -1), device="meta")
    assert model.feature_info.channels() == [128, 512]  # negative indices, in order, still count from the end
