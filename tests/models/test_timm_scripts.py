"""timm's real ``train.py`` and ``validate.py`` on the zoo's models, unchanged, on a tiny image folder (slow).

One model of each vision family is trained by timm's ``train.py`` after ``import zoo`` (its EMA on), validated by
timm's ``validate.py``, and its ``last.pth.tar`` loaded by ``zoo.create_model(checkpoint_path=...)``, which gives the
loss and accuracy validate.py reports. CAFormer-S18, a name timm owns, crosses builds: trained on the zoo's build and
validated by timm's own (a process that never imports the zoo), and the reverse, with equal logits. The scripts are
found by tests/models/timm_scripts.py (``$ZOO_TIMM_SCRIPTS`` or the tests' cache); without them the tests skip, saying
where to put them.
"""

from pathlib import Path

import pytest
import timm
import timm.data
import torch
import torch.nn.functional as F
from timm_scripts import results, run, scripts_dir, validation_loss

import zoo
from zoo.weights import read_state_dict

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

# one model of each family whose name only the zoo has, at the smallest input it takes
FAMILIES = {"slak_tiny": 64, "sret_tiny": 224, "convnet_d3": 32}
NUM_CLASSES = 3  # the image_folder fixture's digit classes
HEAD_EPS_TOLERANCE = dict(rtol=1e-4, atol=1e-4)  # CAFormer's MLP-head LayerNorm: eps 1e-5 (the authors') vs timm's 1e-6


@pytest.fixture(scope="module", autouse=True)
def _scripts():
    folder, why = scripts_dir()
    if folder is None:
        pytest.skip(why)


def _train(build: str, name: str, size: int, data: Path, out: Path) -> Path:
    """One epoch of timm's train.py with an EMA, on ``build``'s ``name``; its ``last.pth.tar``."""
    run(build, "train.py", "--data-dir", str(data), "--train-split", "train", "--val-split", "val",
        "--model", name, "--num-classes", str(NUM_CLASSES), "--input-size", "3", str(size), str(size),
        "--epochs", "1", "--batch-size", "6", "--validation-batch-size", "6", "--workers", "0", "--no-prefetcher",
        "--device", "cpu", "--opt", "adamw", "--lr", "1e-3", "--warmup-epochs", "0", "--model-ema",
        "--model-ema-decay", "0.5", "--checkpoint-hist", "1", "--seed", "0",
        "--output", str(out), "--experiment", f"{build}_{name}", cwd=out)  # fmt: skip
    folder = out / f"{build}_{name}"
    assert (folder / "model_best.pth.tar").is_file()
    return folder / "last.pth.tar"


def _validate(build: str, name: str, size: int, data: Path, checkpoint: Path, out: Path) -> tuple[dict, float]:
    """timm's validate.py (its EMA weights) on ``build``'s ``name``: its results and its mean loss."""
    path = out / f"validate_{build}_{checkpoint.parent.name}.json"
    done = run(build, "validate.py", "--data-dir", str(data), "--split", "val", "--model", name,
               "--num-classes", str(NUM_CLASSES), "--input-size", "3", str(size), str(size),
               "--checkpoint", str(checkpoint), "--use-ema", "--batch-size", "6", "--workers", "0",
               "--no-prefetcher", "--device", "cpu", "--log-freq", "1", "--results-file", str(path),
               "--results-format", "json", cwd=out)  # fmt: skip
    return results(path), validation_loss(done.stdout + done.stderr)


def _val_batch(model, data: Path, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The val split as validate.py prepares it (timm's data config and eval transform)."""
    config = timm.data.resolve_data_config({"input_size": (3, size, size)}, model=model)
    dataset = timm.data.ImageDataset(str(data / "val"), transform=timm.data.create_transform(**config))
    images, labels = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return torch.stack(images), torch.tensor(labels)


def _top1_and_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    return 100.0 * (logits.argmax(1) == labels).float().mean().item(), F.cross_entropy(logits, labels).item()


@pytest.mark.parametrize("name", list(FAMILIES))
def test_train_py_and_validate_py_on_each_family(name, image_folder, tmp_path):
    """train.py writes timm's checkpoint (args, optimizer, state_dict_ema); validate.py takes it; the zoo loads it
    (EMA weights first, as timm does) and gets validate.py's accuracy and loss."""
    size = FAMILIES[name]
    last = _train("zoo", name, size, image_folder, tmp_path)
    found, loss = _validate("zoo", name, size, image_folder, last, tmp_path)
    ema = read_state_dict(last)
    assert not all(torch.equal(v, read_state_dict(last, use_ema=False)[k]) for k, v in ema.items())
    model = zoo.create_model(name, num_classes=NUM_CLASSES, checkpoint_path=str(last)).eval()
    x, y = _val_batch(model, image_folder, size)
    with torch.no_grad():
        top1, mean_loss = _top1_and_loss(model(x), y)
    assert found["top1"] == pytest.approx(top1, abs=1e-3)
    assert loss == pytest.approx(mean_loss, abs=2e-4)  # validate.py logs four decimals


def test_caformer_checkpoints_cross_timms_and_the_zoos_builds(image_folder, tmp_path):
    """Trained by train.py on the zoo's build, validated by timm's own (the zoo never imported) and the zoo's; trained
    on timm's build, validated by both: the same accuracy and loss from validate.py, and the same logits here."""
    name, size = "caformer_s18", 64
    for trained_on in ("zoo", "timm"):
        last = _train(trained_on, name, size, image_folder, tmp_path)
        by_timm, loss_timm = _validate("timm", name, size, image_folder, last, tmp_path)
        by_zoo, loss_zoo = _validate("zoo", name, size, image_folder, last, tmp_path)
        assert by_timm["top1"] == by_zoo["top1"] and by_timm["top5"] == by_zoo["top5"], trained_on
        assert loss_timm == pytest.approx(loss_zoo, abs=2e-4), trained_on
        theirs = timm.create_model(name, num_classes=NUM_CLASSES, checkpoint_path=str(last)).eval()
        assert type(theirs).__module__.startswith("timm."), "timm's own build"
        ours = zoo.create_model(name, num_classes=NUM_CLASSES, checkpoint_path=str(last)).eval()
        x, _ = _val_batch(ours, image_folder, size)
        with torch.no_grad():
            torch.testing.assert_close(ours(x), theirs(x), **HEAD_EPS_TOLERANCE)
