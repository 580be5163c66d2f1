"""Bad checkpoints: clear errors, nothing half-loaded, nothing unpickled."""

import os
from pathlib import Path

import pytest
import torch
from model_checks import weights_snapshot, weights_unchanged

import zoo
from zoo.weights import CheckpointError, CheckpointMismatchError, read_state_dict, save_state_dict


def test_mismatched_checkpoint_reports_keys_and_loads_nothing(tmp_path):
    donor = zoo.create_model("identityformer_s12")
    path = save_state_dict(donor, tmp_path / "identity.safetensors")
    model = zoo.create_model("poolformer_s12")
    snap = weights_snapshot(model)
    with pytest.raises(CheckpointMismatchError) as err:
        zoo.load_checkpoint(model, path)
    msg = str(err.value)
    assert str(path) in msg and "nothing was loaded" in msg
    assert "missing keys" in msg and "unexpected keys" in msg
    assert weights_unchanged(model, snap)


def test_shape_mismatch_is_named(tmp_path):
    model = zoo.create_model("poolformer_s12")
    path = save_state_dict(zoo.create_model("poolformer_m36"), tmp_path / "m36.safetensors")
    snap = weights_snapshot(model)
    with pytest.raises(
        CheckpointMismatchError,
        match=r"shape mismatches.*head\.fc\.weight: checkpoint \(1000, 768\) vs model \(1000, 512\)",
    ):
        zoo.load_checkpoint(model, path)
    assert weights_unchanged(model, snap)
    with pytest.raises(CheckpointMismatchError):
        zoo.create_model("poolformer_s12", pretrained=True, pretrained_cfg_overlay={"file": str(path)})


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_truncated_checkpoint_is_refused_with_its_name(tmp_path, suffix):
    model = zoo.create_model("poolformer_s12")
    good = tmp_path / f"good{suffix}"
    if suffix == ".safetensors":
        save_state_dict(model, good)
    else:
        torch.save(model.state_dict(), good)
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="bad" + suffix.replace(".", r"\.")):
        read_state_dict(bad)
    assert set(read_state_dict(good)) == set(model.state_dict())  # the good file is untouched


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned > /dev/null",))


def test_pickled_code_is_never_executed(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": zoo.create_model("poolformer_s12").state_dict(), "x": _Payload()}, path)
    with pytest.raises(CheckpointError, match="does not unpickle arbitrary"):
        zoo.create_model("poolformer_s12", pretrained=True, pretrained_cfg_overlay={"file": str(path)})


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="folder without weights"):
        read_state_dict(tmp_path)
    save_state_dict(zoo.create_model("poolformer_s12"), tmp_path / "model.safetensors")
    assert "stem.conv.weight" in read_state_dict(tmp_path)


def test_ddp_prefix_and_ema_wrappers(tmp_path):
    """timm's rule (``timm.models.load_state_dict``): the EMA weights when the file has them, unless
    ``use_ema=False``; the DDP and torch.compile prefixes removed."""
    sd = zoo.create_model("poolformer_s12").state_dict()
    ema = {k: v + 1 for k, v in sd.items()}
    path = tmp_path / "ckpt.pth"
    torch.save({"model": {"module." + k: v for k, v in sd.items()}, "model_ema": ema}, path)
    assert torch.equal(read_state_dict(path)["stem.conv.weight"], ema["stem.conv.weight"])
    assert torch.equal(read_state_dict(path, use_ema=False)["stem.conv.weight"], sd["stem.conv.weight"])
    torch.save({"state_dict": {"_orig_mod.module." + k: v for k, v in sd.items()}}, path)
    assert torch.equal(read_state_dict(path)["stem.conv.weight"], sd["stem.conv.weight"])


def test_no_weights_known_without_source():
    from zoo.factory import load_pretrained

    with pytest.raises(CheckpointError, match="no pretrained weights are known"):
        load_pretrained(zoo.create_model("poolformer_s12"), {"architecture": "poolformer_s12"})


def test_a_pipe_or_a_device_as_the_weights_file_is_named_not_missing(tmp_path):
    """A FIFO (reading it would block until a writer comes) or ``/dev/zero`` (it never ends) is refused at once,
    as what it is: not a regular file; a path with nothing at it is still "does not exist"."""
    fifo = tmp_path / "weights.safetensors"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        with pytest.raises(CheckpointError, match="is not a regular file"):
            read_state_dict(path)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_state_dict(tmp_path / "nothing.safetensors")
