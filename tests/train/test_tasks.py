"""The task interface: what differs between images and text lives in zoo.train.tasks, and both the training loop
and eval.py go through it without asking which task they run."""

import ast
import json
from pathlib import Path

import pytest
import torch

from zoo.data import text
from zoo.evaluate import evaluate_model
from zoo.train import config, tasks
from zoo.weights import save_state_dict

ROOT = Path(__file__).resolve().parents[2]
TINY = {"depths": [1, 1, 1, 1], "dims": [8, 16, 32, 64]}


def test_every_recipe_task_has_a_task_class():
    assert set(tasks.TASKS) == set(config.TASKS)
    for name, cls in tasks.TASKS.items():
        assert cls.name == name and cls.data_kinds and cls.data_hint
    with pytest.raises(ValueError, match="unknown task"):
        tasks.task_class("segmentation")


@pytest.mark.parametrize(
    "path", ["zoo/train/loop.py", "zoo/train/run_setup.py", "zoo/train/run_folder.py", "zoo/evaluate.py"]
)
def test_loop_and_evaluation_do_not_name_a_task(path):
    """No string comparison with a task name, no reference to one task's class."""
    tree = ast.parse((ROOT / path).read_text())
    named = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert not named & set(tasks.TASKS), path
    assert not names & {"ImageTask", "LMTask"}, path


def test_a_runs_data_decides_the_rebuilt_models_arguments(tmp_path):
    image = tasks.ImageTask
    assert image.complete_model_kwargs({"num_classes": 4}, tmp_path, None) == {"num_classes": 4}
    weights = tmp_path / "model.safetensors"
    save_state_dict({"stem.weight": torch.zeros(8, 3, 3, 3), "head.fc.weight": torch.zeros(3, 8)}, weights)
    assert image.complete_model_kwargs({}, tmp_path, str(weights)) == {"num_classes": 3}  # the head's rows
    (tmp_path / "metrics.json").write_text(json.dumps({"num_classes": 7}))
    assert image.complete_model_kwargs({"dims": [8]}, tmp_path, str(weights)) == {"dims": [8], "num_classes": 7}

    lm = tasks.LMTask
    assert lm.complete_model_kwargs({}, tmp_path, None) == {}  # no tokenizer in the folder
    tok = text.train_bpe_tokenizer(list(text.bundled_corpus().values())[:20], 300, tmp_path / "tokenizer.json")
    assert lm.complete_model_kwargs({}, tmp_path, None) == {"vocab_size": tok.get_vocab_size()}
    assert lm.complete_model_kwargs({"vocab_size": 512}, tmp_path, None) == {"vocab_size": 512}


def test_evaluate_model_runs_the_image_task(tmp_path):
    row = evaluate_model("poolformer_s12", "digits", model_kwargs=TINY, batch_size=8, max_batches=2)
    assert list(row)[:4] == ["model", "weights", "dataset", "split"] and row["weights"] == "random"
    assert row["samples"] == 16 and 0.0 <= row["top1"] <= row["top5"] <= 100.0
    assert row["input_size"] == [3, 224, 224] and row["params"] > 0 and row["macs"] > 0  # the model's own cfg
    with pytest.raises(ValueError, match="is an image classifier; evaluate it on images"):
        evaluate_model("poolformer_s12", "pydoc", model_kwargs=TINY, profile=False)
