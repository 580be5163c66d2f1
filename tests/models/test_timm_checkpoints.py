"""Checkpoints cross between timm and the zoo with no zoo knowledge on timm's side.

Every name both register (``caformer_*``, ``convformer_*``, ``poolformer_*``, ``poolformerv2_*``) saves timm's keys
and shapes, so ``load_state_dict`` takes either build's weights, strict, in either direction (``torch.save``,
safetensors); timm's training checkpoints (``last.pth.tar`` with ``args``, ``optimizer``, ``state_dict_ema``) load
through ``zoo.create_model(checkpoint_path=...)`` and ``pretrained_cfg_overlay={"file": ...}`` with only
``argparse.Namespace`` allowed besides tensors, EMA weights first as in timm. timm's own ``train.py`` and
``validate.py`` on such checkpoints: tests/models/test_timm_scripts.py (slow).
"""

import argparse
import pathlib

import pytest
import timm
import torch
from model_groups import series, smallest_of_each
from safetensors.torch import load_file, save_file
from timm.utils import CheckpointSaver, ModelEmaV3

import zoo
from zoo.registry import get_entry
from zoo.weights import CheckpointError, read_state_dict

pytestmark = pytest.mark.usefixtures("one_thread")

SHARED = [n for n in zoo.list_models(task="image-classification") if get_entry(n).timm_owns_name]
# the layout check builds timm's model too (most of a second for the larger ones, even on the meta device): the
# smallest of each series by default, the others under -m slow
SHARED_BY_DEFAULT = smallest_of_each(SHARED, series)
# the MLP head's LayerNorm: eps 1e-5 in the zoo (the authors'), 1e-6 in timm; the rest is the same arithmetic
HEAD_EPS_TOLERANCE = dict(rtol=1e-4, atol=1e-4)


def test_the_shared_names_are_the_metaformers_timm_registers():
    """Read from both registries, so a name timm adds (or drops) changes the list the layout test covers."""
    timm_names = set(timm.list_models(module="metaformer"))
    assert set(SHARED) == timm_names & set(zoo.list_models())
    assert {n.split("_")[0] for n in SHARED} == {"caformer", "convformer", "poolformer", "poolformerv2"}


@pytest.mark.parametrize(
    "name", [n if n in SHARED_BY_DEFAULT else pytest.param(n, marks=pytest.mark.slow) for n in SHARED]
)
def test_state_dict_has_timms_keys_and_shapes(name):
    with torch.device("meta"):  # shapes only
        ours, theirs = zoo.create_model(name), timm.create_model(name)
    assert type(theirs).__module__.startswith("timm."), "timm's own build, not the zoo's"
    got = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    want = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert got.keys() == want.keys(), (sorted(got.keys() - want.keys())[:5], sorted(want.keys() - got.keys())[:5])
    differ = [f"{k}: {got[k]} vs timm {want[k]}" for k in got if got[k] != want[k]]
    assert not differ, differ[:5]


def _perturbed(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every weight moved off its init (norm weights, layer and res scales, StarReLU's scalars matter too)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


@pytest.mark.parametrize("name", ["caformer_s18", "poolformerv2_s12"])
def test_weights_cross_both_ways_strict_with_equal_logits(name, tmp_path):
    """zoo -> timm and timm -> zoo through ``load_state_dict(strict=True)`` alone, in memory, as a ``torch.save``
    file and as safetensors; the same logits. CAFormer covers both layouts (1x1-conv weights in its SepConv stages,
    linear ones in its attention stages), PoolFormerV2 the pooling blocks."""
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    tol = HEAD_EPS_TOLERANCE if name.startswith(("caformer", "convformer")) else dict(rtol=1e-5, atol=1e-5)
    ours = _perturbed(zoo.create_model(name, num_classes=7), seed=1)
    theirs = timm.create_model(name, num_classes=7).eval()
    torch.save(ours.state_dict(), tmp_path / "zoo.pth")
    save_file({k: v.contiguous() for k, v in ours.state_dict().items()}, str(tmp_path / "zoo.safetensors"))
    with torch.no_grad():
        want = ours(x)
        for sd in (ours.state_dict(), torch.load(tmp_path / "zoo.pth", weights_only=True)):
            theirs.load_state_dict(sd, strict=True)
            torch.testing.assert_close(theirs(x), want, **tol)
        theirs.load_state_dict(load_file(str(tmp_path / "zoo.safetensors")), strict=True)
        torch.testing.assert_close(theirs(x), want, **tol)

        _perturbed(theirs, seed=2)  # the reverse: timm's weights into a fresh zoo build
        want = theirs(x)
        torch.save(theirs.state_dict(), tmp_path / "timm.pth")
        back = zoo.create_model(name, num_classes=7).eval()
        back.load_state_dict(torch.load(tmp_path / "timm.pth", weights_only=True), strict=True)
        torch.testing.assert_close(back(x), want, **tol)
        # and round: the zoo saves what it loaded, bit for bit
        assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in back.state_dict().items())


def test_saved_conv_weights_are_views_of_the_parameters():
    """The layout costs no copy: timm's EMA updates ``state_dict()`` tensors in place, and they are the
    parameters' own storage."""
    model = zoo.create_model("caformer_s18")
    fc1 = model.stages[0].blocks[0].mlp.fc1
    saved = model.state_dict()["stages.0.blocks.0.mlp.fc1.weight"]
    assert saved.shape == (*fc1.weight.shape, 1, 1) and saved.data_ptr() == fc1.weight.data_ptr()
    assert fc1.weight.shape == (256, 64)  # the model still computes with its linear layer


def _timm_training_checkpoint(model, folder: pathlib.Path, arch: str, args: argparse.Namespace | None = None):
    """``last.pth.tar`` / ``model_best.pth.tar`` as timm's train.py writes them: its ``CheckpointSaver``, with the
    run's ``args`` (an ``argparse.Namespace``), an optimizer state and an EMA that differs from the model."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    ema = ModelEmaV3(model, decay=0.5)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1)
    ema.update(model, step=10)
    args = args or argparse.Namespace(model=arch, num_classes=4, lr=1e-3, input_size=[3, 32, 32], amp=False)
    saver = CheckpointSaver(model, optimizer, args=args, model_ema=ema, checkpoint_dir=str(folder),
                            recovery_dir=str(folder), max_history=1)  # fmt: skip
    saver.save_checkpoint(epoch=0, metric=0.25)
    return folder / "last.pth.tar", ema.module


@pytest.mark.parametrize("builder", ["timm", "zoo"])
def test_timm_training_checkpoint_loads_its_ema_weights(builder, tmp_path):
    """A checkpoint timm's ``CheckpointSaver`` wrote (timm's build of poolformerv2_s12, or the zoo's build of a name
    only the zoo has) loads in ``zoo.create_model(checkpoint_path=...)`` and as a pretrained file: its ``state_dict_ema``,
    as ``timm.create_model(checkpoint_path=...)`` loads it; ``zoo.load_checkpoint(use_ema=False)`` takes the trained
    weights instead."""
    name = "poolformerv2_s12" if builder == "timm" else "convnet_d3"
    trained = timm.create_model(name, num_classes=4)
    last, ema = _timm_training_checkpoint(trained, tmp_path, name)
    raw = torch.load(last, map_location="cpu", weights_only=False)  # what the file holds (written here, trusted)
    assert isinstance(raw["args"], argparse.Namespace) and {"optimizer", "state_dict_ema", "epoch"} <= set(raw)
    assert (tmp_path / "model_best.pth.tar").is_file()
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    by_hand = zoo.create_model(name, num_classes=4).eval()  # the zoo's build with the EMA weights, loaded by hand
    by_hand.load_state_dict(ema.state_dict(), strict=True)
    with torch.no_grad():
        by_timm = timm.create_model(name, num_classes=4, checkpoint_path=str(last)).eval()(x)
        torch.testing.assert_close(by_timm, ema.eval()(x), rtol=0, atol=0)  # timm takes the EMA weights
        want = by_hand(x)
        for model in (
            zoo.create_model(name, num_classes=4, checkpoint_path=str(last)),
            zoo.create_model(name, num_classes=4, pretrained=True, pretrained_cfg_overlay={"file": str(last)}),
        ):
            torch.testing.assert_close(model.eval()(x), want, rtol=0, atol=0)
        best = read_state_dict(tmp_path / "model_best.pth.tar")  # the same save, under the other name
        assert best.keys() == ema.state_dict().keys()
        assert all(torch.equal(v, ema.state_dict()[k]) for k, v in best.items())
        plain = zoo.create_model(name, num_classes=4).eval()
        zoo.load_checkpoint(plain, last, use_ema=False)
        by_hand.load_state_dict(trained.state_dict(), strict=True)
        torch.testing.assert_close(plain(x), by_hand(x), rtol=0, atol=0)
        assert not torch.allclose(plain(x), want)  # the EMA and the trained weights differ


def test_timm_checkpoint_with_other_objects_is_still_refused(tmp_path):
    """Only ``argparse.Namespace`` is allowed besides tensors and plain containers: a path object in the run's
    ``args`` is not unpickled, and the message says what to do."""
    args = argparse.Namespace(model="convnet_d3", output=pathlib.PurePosixPath("/runs/x"))
    last, _ = _timm_training_checkpoint(timm.create_model("convnet_d3", num_classes=4), tmp_path, "convnet_d3", args)
    with pytest.raises(CheckpointError, match="does not unpickle arbitrary code") as err:
        zoo.create_model("convnet_d3", num_classes=4, checkpoint_path=str(last))
    assert "PurePosixPath" in str(err.value)
