"""One way to load weights: a folder the zoo wrote rebuilds its architecture however it is named.

``zoo.create_model(FOLDER)``, ``"local-dir:" + FOLDER``, a training run's folder (its ``export/``),
``pretrained_cfg_overlay={"file": FOLDER}`` and ``checkpoint_path=FOLDER`` all read the folder's config.json and
build the architecture it describes, for vision and language models alike, through the one source resolution in
``zoo.factory``. A model of one registered family per task is enough here: the path does not branch on family.
"""

import shutil

import pytest
import torch
from small_lms import tiny_lm_args

import zoo
from zoo.publish import export_pretrained
from zoo.registry import get_entry, list_models
from zoo.weights import CheckpointError, CheckpointMismatchError


def _smallest(task):
    """The cheapest registered model of a task (variable input size first, then fewest parameters)."""
    return min(
        list_models(task=task),
        key=lambda n: (
            bool(get_entry(n).pretrained_cfg.get("fixed_input_size")),
            get_entry(n).reference.get("params") or 0,
            n,
        ),
    )


VISION = _smallest("image-classification")
LM = _smallest("text-generation")
# architecture arguments unlike the registered defaults, so that a loader ignoring config.json fails
VISION_ARGS = {"num_classes": 7, "in_chans": 1}
LM_ARGS = tiny_lm_args(LM)  # tests/small_lms.py: only arguments that differ from the registered ones


def _vision_input(model):
    size = model.pretrained_cfg["input_size"][-1] if model.pretrained_cfg.get("fixed_input_size") else 64
    return torch.randn(2, 1, size, size, generator=torch.Generator().manual_seed(0))


CASES = {
    "vision": (VISION, VISION_ARGS, _vision_input),
    "lm": (
        LM,
        LM_ARGS,
        lambda model: torch.randint(0, model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0)),
    ),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def exported(request, tmp_path_factory):
    name, args, make_input = CASES[request.param]
    model = zoo.create_model(name, **args).eval()
    folder = export_pretrained(
        model, tmp_path_factory.mktemp(request.param) / "export", model_name=name, model_kwargs=args, latency_runs=0
    )
    x = make_input(model)
    with torch.no_grad():
        expected = model(x)
    return name, folder, x, expected


def _same(model, x, expected):
    with torch.no_grad():
        assert torch.equal(model.eval()(x), expected)


def test_folder_by_path_and_local_dir(exported):
    name, folder, x, expected = exported
    _same(zoo.create_model(str(folder)), x, expected)  # a folder name implies its weights
    _same(zoo.create_model("local-dir:" + str(folder), pretrained=True), x, expected)


def test_run_folder_stands_for_its_export(exported, tmp_path):
    name, folder, x, expected = exported
    run = tmp_path / "run"
    shutil.copytree(folder, run / "export")
    (run / "args.yaml").write_text(f"model: {name}\n")
    _same(zoo.create_model(str(run)), x, expected)


def test_overlay_file_and_checkpoint_path_read_the_same_folder(exported):
    name, folder, x, expected = exported
    _same(zoo.create_model(name, pretrained=True, pretrained_cfg_overlay={"file": str(folder)}), x, expected)
    _same(zoo.create_model(name, checkpoint_path=str(folder)), x, expected)


def test_caller_arguments_win_over_the_folder(tmp_path):
    """The one deliberate difference: pretrained weights adapt the classifier (timm's rule), a checkpoint must fit."""
    model = zoo.create_model(VISION, **VISION_ARGS)
    folder = export_pretrained(model, tmp_path / "export", model_name=VISION, model_kwargs=VISION_ARGS, latency_runs=0)
    adapted = zoo.create_model(str(folder), num_classes=3)
    assert adapted.num_classes == 3
    assert torch.equal(
        adapted.state_dict()[adapted.pretrained_cfg["first_conv"] + ".weight"],
        model.state_dict()[model.pretrained_cfg["first_conv"] + ".weight"],
    )
    with pytest.raises(CheckpointMismatchError, match="nothing was loaded"):
        zoo.create_model(VISION, checkpoint_path=str(folder), num_classes=3)


def test_folder_without_config_is_refused_with_what_to_do(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="has no config.json"):
        zoo.create_model("local-dir:" + str(tmp_path / "empty"))


def test_unknown_architecture_in_a_folder_is_named(tmp_path):
    (tmp_path / "config.json").write_text('{"architecture": "not_a_zoo_model"}')
    with pytest.raises(CheckpointError, match="not_a_zoo_model"):
        zoo.create_model(str(tmp_path))
