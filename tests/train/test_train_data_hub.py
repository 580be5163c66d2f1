"""Training and evaluation on users' own data (an ImageNet-layout image folder of real PNGs, ``datasets`` folders
saved with ``save_to_disk``), ``train.py --push-to-hub`` and ``eval.py --model hf-hub:ORG/NAME`` against the
stdlib Hub stand-in (tests/fakehub.py), and eval.py's CSV for many models.

The tiny runs and the digit images: tests/digit_runs.py.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from digit_runs import CLASSES, DIGITS, LM, ROOT, TINY_ARGS, digit_images, eval_cli, train_digits

import zoo
from zoo.evaluate import evaluate_model
from zoo.train import cli as train_cli

NAME = "poolformer_s12"
TINY = {"depths": [1, 1, 1, 1], "dims": [8, 16, 32, 64]}


@pytest.fixture(scope="module")
def hf_images(tmp_path_factory):
    """A DatasetDict (train + test) with an ``img`` Image column and a ClassLabel ``label``, via save_to_disk."""
    import datasets

    features = datasets.Features({"img": datasets.Image(), "label": datasets.ClassLabel(names=CLASSES)})
    splits = {}
    for split, name in (("train", "train"), ("val", "test")):
        rows = digit_images(split)
        splits[name] = datasets.Dataset.from_dict(
            {"img": [r[0] for r in rows], "label": [r[1] for r in rows]}, features=features
        )
    root = tmp_path_factory.mktemp("data") / "digits-hf"
    datasets.DatasetDict(splits).save_to_disk(str(root))
    return root


# ------------------------------------------------------------------------------------------------------------
# an image folder of PNGs


@pytest.mark.slow  # 2-7 s (a training run, a compile or a parity sweep): outside the 4-minute default run
def test_image_folder_of_pngs_trains_and_eval_py_reproduces(image_folder, tmp_path):
    run = tmp_path / "run"
    m = train_digits(run, "--data.name", "image_folder", "--data.path", str(image_folder), "--train.steps", "30")
    # the folder's val/ split (the recipe asks for "validation": the first of validation/val/test that exists)
    assert (m["dataset"], m["samples"], m["num_classes"]) == ("digit-pngs", 18, 3)
    assert m["top1"] > 60.0, m  # it learned from the PNGs (chance is 33%)
    args = yaml.safe_load((run / "args.yaml").read_text())
    assert args["data"]["name"] == "image_folder" and args["data"]["path"] == str(image_folder)
    exported = json.loads((run / "export" / "config.json").read_text())
    assert exported["num_classes"] == 3 and exported["pretrained_cfg"]["input_size"] == [3, 32, 32]

    got = eval_cli(
        "--model", NAME, "--checkpoint", str(run), "--data", str(image_folder), "--json", str(tmp_path / "e.json")
    )
    assert (got["dataset"], got["samples"], got["input_size"]) == ("digit-pngs", 18, [3, 32, 32])
    assert got["top1"] == pytest.approx(m["top1"]) and got["loss"] == pytest.approx(m["loss"], rel=1e-5)
    assert got["params"] == m["params"] and got["macs"] == m["macs"]
    # the train/ split, evaluated with the same weights, is another set of images
    train_split = eval_cli(
        "--model",
        NAME,
        "--checkpoint",
        str(run),
        "--data",
        str(image_folder),
        "--split",
        "train",
        "--no-profile",
        "--json",
        str(tmp_path / "t.json"),
    )
    assert train_split["samples"] == 36


@pytest.mark.slow  # 3-15 s (a subprocess, a training run or an export): outside the 4-minute default run
def test_shards_train_exactly_as_their_image_folder(image_folder, tmp_path):
    """zoo data shard writes the folder's splits as shards; a run on them sees the same images in the same order
    (the global batch sampler's positions), so it ends with the very same weights and metrics."""
    from safetensors.torch import load_file

    from zoo.cli import main as zoo_main

    shards = tmp_path / "shards"
    assert zoo_main(["data", "shard", str(image_folder), "--out", str(shards), "--samples-per-shard", "10"]) == 0
    assert sorted(p.name for p in shards.iterdir()) == ["train", "val"]
    steps = ("--train.steps", "6", "--data.num_workers", "2")
    folder_m = train_digits(tmp_path / "a", "--data.name", "image_folder", "--data.path", str(image_folder), *steps)
    shard_m = train_digits(tmp_path / "b", "--data.name", "wds", "--data.path", str(shards), *steps)
    assert shard_m["samples"] == folder_m["samples"] == 18 and shard_m["num_classes"] == 3
    assert shard_m["loss"] == folder_m["loss"] and shard_m["top1"] == folder_m["top1"]
    a, b = load_file(tmp_path / "a" / "model.safetensors"), load_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    got = eval_cli("--model", NAME, "--checkpoint", str(tmp_path / "b"), "--data", str(shards), "--no-profile",
                    "--json", str(tmp_path / "e.json"))  # fmt: skip
    assert got["loss"] == pytest.approx(shard_m["loss"], rel=1e-5)


def test_image_folder_without_the_split_is_named(image_folder, tmp_path):
    from zoo.data.images import build_image_dataset

    with pytest.raises(ValueError, match="has no 'holdout' folder"):
        build_image_dataset("image_folder", "holdout", str(image_folder))
    ds, info = build_image_dataset("image_folder", "train", str(image_folder))
    assert (len(ds), info.num_classes, info.class_names) == (36, 3, sorted(CLASSES))


# ------------------------------------------------------------------------------------------------------------
# datasets folders (save_to_disk)


@pytest.mark.slow  # 2-7 s (a training run, a compile or a parity sweep): outside the 4-minute default run
def test_datasets_folder_of_images_trains_and_evaluates(hf_images, tmp_path):
    run = tmp_path / "run"
    m = train_digits(run, "--data.name", "hf_disk", "--data.path", str(hf_images), "--train.steps", "30")
    assert (m["dataset"], m["samples"], m["num_classes"]) == ("digits-hf", 18, 3)  # the "test" split held out
    assert m["top1"] > 60.0, m
    config = json.loads((run / "export" / "config.json").read_text())
    assert config["pretrained_cfg"]["label_names"] == CLASSES  # the ClassLabel names travel with the weights
    got = eval_cli(
        "--model",
        NAME,
        "--checkpoint",
        str(run / "model.safetensors"),
        "--data",
        str(hf_images),
        "--no-profile",
        "--json",
        str(tmp_path / "e.json"),
    )
    assert got["samples"] == 18 and got["loss"] == pytest.approx(m["loss"], rel=1e-5)

    from zoo.data.images import build_image_dataset

    with pytest.raises(ValueError, match="none of which is 'holdout'"):
        build_image_dataset("hf_disk", "holdout", str(hf_images))
    with pytest.raises(ValueError, match=r"columns \['img', 'label'\].*data.image_key"):
        build_image_dataset("hf_disk", "train", str(hf_images), image_key="picture")


@pytest.mark.slow  # 2-7 s (a training run, a compile or a parity sweep): outside the 4-minute default run
def test_datasets_folder_of_text_trains_a_language_model(tmp_path):
    import datasets

    from zoo.data import text

    docs = list(text.bundled_corpus().values())
    train_docs, val_docs = docs[:60], docs[60:70]
    data = tmp_path / "pydoc-hf"
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": train_docs, "id": list(range(60))}),
            "validation": datasets.Dataset.from_dict({"text": val_docs, "id": list(range(10))}),
        }
    ).save_to_disk(str(data))
    run = tmp_path / "run"
    rc = train_cli.main(
        [
            "--config",
            str(LM),
            "--output_dir",
            str(run),
            "--no-progress",
            "--data.name",
            "hf_disk",
            "--data.path",
            str(data),
            "--data.seq_len",
            "32",
            "--data.vocab_size",
            "300",
            "--train.steps",
            "8",
            "--train.batch_size",
            "8",
            "--model_kwargs.hidden_size",
            "32",
            "--model_kwargs.intermediate_size",
            "64",
            "--model_kwargs.num_hidden_layers",
            "1",
            "--model_kwargs.num_attention_heads",
            "2",
            "--model_kwargs.num_key_value_heads",
            "1",
            "--sched.warmup_steps",
            "2",
            "--checkpoint.every_steps",
            "0",
            "--train.eval_every_steps",
            "0",
            "--export.enabled",
            "false",
        ]
    )
    assert rc == 0
    m = json.loads((run / "metrics.json").read_text())
    # the folder's own validation split is held out (not a hash split of the training text)
    tok = text.load_tokenizer(run / "tokenizer.json")
    val_rows = text.pack_tokens(text.encode_documents(tok, val_docs), 32)
    assert m["dataset"] == "pydoc-hf" and m["val_tokens"] == val_rows[:, 1:].numel() == m["tokens"]
    assert m["vocab_size"] == tok.get_vocab_size() <= 300
    got = eval_cli(
        "--model",
        "mobilellm_125m",
        "--checkpoint",
        str(run),
        "--data",
        str(data),
        "--no-profile",
        "--json",
        str(tmp_path / "e.json"),
    )
    assert got["tokens"] == m["tokens"] and got["perplexity"] == pytest.approx(m["perplexity"], rel=1e-5)
    # the run folder exports with the tokenizer's vocabulary although the recipe leaves vocab_size out
    out = zoo.publish.export_run(run, tmp_path / "publish", latency_runs=0)
    config = json.loads((out / "config.json").read_text())
    assert config["model_args"]["vocab_size"] == m["vocab_size"] and (out / "tokenizer.json").is_file()


# ------------------------------------------------------------------------------------------------------------
# the Hub: train.py --push-to-hub, eval.py --model hf-hub:ORG/NAME, CSV for many models


@pytest.fixture
def hub(hub, tmp_path, monkeypatch):
    """conftest.py's Hub stand-in, run from tmp_path: model cards go to ./model_cards/published only in a zoo
    checkout."""
    monkeypatch.chdir(tmp_path)
    return hub


def _hub_env(hub, cache: Path) -> dict:
    """What a fresh process needs to talk to the stand-in: HF_ENDPOINT is read when huggingface_hub is imported."""
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        OMP_NUM_THREADS="1",
        HF_ENDPOINT=hub.endpoint,
        HF_HUB_CACHE=str(cache),
        HF_HUB_DISABLE_XET="1",
    )
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "WORLD_SIZE"):
        env.pop(key, None)
    return env


@pytest.mark.slow
def test_train_py_push_to_hub_then_eval_py_from_the_hub(hub, image_folder, tmp_path):
    run = tmp_path / "run"
    m = train_digits(
        run,
        "--data.name",
        "image_folder",
        "--data.path",
        str(image_folder),
        "--train.steps",
        "20",
        "--export.enabled",
        "false",
        "--push-to-hub",
        "me/digits-tiny",
    )
    served = hub.repos["me/digits-tiny"]
    assert sorted(served) == ["README.md", "config.json", "model.safetensors"]
    assert served["model.safetensors"] == (run / "publish" / "model.safetensors").read_bytes()
    config = json.loads(served["config.json"])
    assert config["architecture"] == NAME and config["num_classes"] == 3
    assert config["pretrained_cfg"]["label_names"] == sorted(p.name for p in (image_folder / "train").iterdir())
    assert config["model_args"]["depths"] == [1, 1, 1, 1] and config["model_args"]["dims"] == [8, 16, 32, 64]
    from huggingface_hub import ModelCard

    card = ModelCard(served["README.md"].decode())
    results = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert results == {"top-1": m["top1"], "top-5": m["top5"], "loss": m["loss"]}  # not the run's bookkeeping
    assert card.data.datasets == ["digit-pngs"] and "image_folder" in card.text  # the recipe, in the card

    # a fresh cache: the published model gives the run's outputs and its held-out metrics
    loaded = zoo.create_model("hf-hub:me/digits-tiny", pretrained=True, cache_dir=tmp_path / "fresh").eval()
    ref = zoo.create_model(NAME, num_classes=3, checkpoint_path=str(run / "model.safetensors"), **TINY).eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(x), ref(x))
    row = evaluate_model("hf-hub:me/digits-tiny", str(image_folder), profile=False)
    assert row["samples"] == 18 and row["input_size"] == [3, 32, 32] and row["weights"] == "pretrained"
    assert row["top1"] == pytest.approx(m["top1"]) and row["loss"] == pytest.approx(m["loss"], rel=1e-5)

    # a second published model, wider, untrained; eval.py in a fresh process evaluates both and writes a CSV
    torch.manual_seed(1)
    wide = zoo.create_model(NAME, num_classes=3, depths=[1, 1, 1, 1], dims=[16, 32, 64, 128])
    zoo.push_to_hub(
        wide,
        "me/digits-wide",
        model_kwargs={"num_classes": 3, "depths": [1, 1, 1, 1], "dims": [16, 32, 64, 128]},
        data_config={"input_size": (3, 32, 32), "crop_pct": 1.0, "interpolation": "bicubic"},
        cards_dir=None,
        latency_runs=0,
    )
    table = tmp_path / "results.csv"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "eval.py"),
            "--model",
            "hf-hub:me/digits-tiny",
            "--model",
            "hf-hub:me/digits-wide",
            "--data",
            str(image_folder),
            "--csv",
            str(table),
        ],
        cwd=tmp_path,
        env=_hub_env(hub, tmp_path / "cache-2"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(table, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["model"] for r in rows] == ["hf-hub:me/digits-tiny", "hf-hub:me/digits-wide"]
    tiny, wide_row = rows
    assert float(tiny["top1"]) == pytest.approx(m["top1"]) and float(tiny["loss"]) == pytest.approx(m["loss"], rel=1e-5)
    assert int(tiny["params"]) == m["params"] == sum(p.numel() for p in ref.parameters())
    assert int(wide_row["params"]) == sum(p.numel() for p in wide.parameters()) > int(tiny["params"])
    assert int(wide_row["macs"]) > int(tiny["macs"]) > 0
    assert all(r["samples"] == "18" and json.loads(r["input_size"]) == [3, 32, 32] for r in rows)
    assert json.loads(proc.stdout)[1]["model"] == "hf-hub:me/digits-wide"  # the JSON list on stdout
    assert (tmp_path / "cache-2" / "models--me--digits-wide").is_dir()  # downloaded by the new process


def test_failed_push_keeps_the_run_and_says_how_to_publish_again(hub, image_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    hub.tokens = {"hf_right"}  # the stand-in refuses writes without this token
    run = tmp_path / "run"
    rc = train_cli.main(
        [
            "--config",
            str(DIGITS),
            "--output_dir",
            str(run),
            *TINY_ARGS,
            "--data.name",
            "image_folder",
            "--data.path",
            str(image_folder),
            "--train.steps",
            "2",
            "--export.enabled",
            "false",
            "--push-to-hub",
            "me/refused",
        ]
    )
    assert rc == 4
    err = capsys.readouterr().err
    assert "HTTP 401" in err and f"zoo publish {run} --repo me/refused" in err
    assert (run / "model.safetensors").is_file() and (run / "metrics.json").is_file()
    assert "me/refused" not in hub.repos
    assert zoo.publish.publish_run(run, "me/refused", token="hf_right", cards_dir=None, latency_runs=0)
    assert sorted(hub.repos["me/refused"]) == ["README.md", "config.json", "model.safetensors"]
