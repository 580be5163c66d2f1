"""Streaming training data (zoo.data.stream): WebDataset shards by URL (a stdlib HTTP server on 127.0.0.1) or by
pattern, and ``datasets`` folders read in streaming mode (data.name: hf_stream), for images and text.

A stream splits across DDP ranks and loader workers without repeats, keeps its order whatever the worker count,
resumes at the recorded micro-batch, and a run on it ends with the same weights whether the shards come over HTTP
or from the disk, interrupted or not.
"""

import functools
import http.server
import io
import json
import shutil
import tarfile
import threading

import pytest
import torch
from digit_runs import LM, ROOT, eval_cli, train_digits
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from zoo.cli import main as zoo_main
from zoo.data.errors import DataError
from zoo.data.stream import SampleStream, StreamSource, expand_braces, is_stream
from zoo.train import cli as train_cli


@pytest.fixture(scope="module")
def shards(image_folder, tmp_path_factory):
    """The image folder (36 train, 18 val PNGs, 3 classes) as indexed tar shards of 5 samples."""
    out = tmp_path_factory.mktemp("streams") / "digit-shards"
    assert zoo_main(["data", "shard", str(image_folder), "--out", str(out), "--samples-per-shard", "5"]) == 0
    return out


@pytest.fixture(scope="module")
def server(shards):
    """http://127.0.0.1:PORT serving the shard folder."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(shards))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


TRAIN = "train/shard-{000000..000007}.tar"  # 8 shards: 36 samples
VAL = "val/shard-{000000..000003}.tar"


def test_shard_patterns_expand_as_webdataset_writes_them():
    assert expand_braces("s-{008..011}.tar") == ["s-008.tar", "s-009.tar", "s-010.tar", "s-011.tar"]
    assert expand_braces("{a,b}/x-{1..2}") == ["a/x-1", "a/x-2", "b/x-1", "b/x-2"]
    with pytest.raises(DataError, match="runs backwards"):
        expand_braces("s-{3..1}.tar")


def test_what_streams(shards):
    assert not is_stream("wds", str(shards))  # zoo data shard's indexed folder: read by position
    assert is_stream("wds", str(shards / TRAIN)) and is_stream("wds", "https://host/s-{0..9}.tar")
    assert is_stream("hf_stream", "org/name") and not is_stream("image_folder", str(shards))


def _keys(rows, epoch, positions):
    return [r["__key__"] for r in rows]


def _read(stream, rank, workers, start=0):
    stream.configure(micro=3, rank=rank, world=2, micro_per_epoch=6)  # 36 samples = 6 steps of 2 x 3
    stream.set_position(epoch=1, start_micro=start)
    return [k for batch in DataLoader(stream, batch_size=None, num_workers=workers) for k in batch]


def test_a_stream_splits_by_rank_and_worker_without_repeats_and_resumes(shards):
    stream = SampleStream(StreamSource("wds", str(shards / TRAIN)), lambda rows: rows, _keys, 36, 0, 8)
    ranks = [_read(stream, r, workers=0) for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == [f"{i:08d}" for i in range(36)]  # every sample once
    assert ranks == [_read(stream, r, workers=2) for r in (0, 1)]  # the same order with two loader workers
    assert _read(stream, 1, workers=2, start=4) == ranks[1][12:]  # resumed after 4 micro-batches of 3
    stream.configure(micro=3, rank=0, world=2, micro_per_epoch=6)
    stream.set_position(epoch=2)
    assert [k for b in stream for k in b] != ranks[0]  # another epoch, another order


STEPS = ("--train.steps", "6", "--data.num_workers", "2", "--checkpoint.every_steps", "2")


def _url_run(server, out, *extra):
    return train_digits(out, "--data.name", "wds", "--data.path", f"{server}/{TRAIN}", "--data.val_path",
                  f"{server}/{VAL}", *STEPS, *extra)  # fmt: skip


# two train.py runs over HTTP and from the disk (about 10 s): -m slow
@pytest.mark.slow
def test_images_stream_over_http_train_as_from_the_disk(shards, server, tmp_path):
    local = train_digits(tmp_path / "local", "--data.name", "wds", "--data.path", str(shards / TRAIN),
                   "--data.val_path", str(shards / VAL), *STEPS)  # fmt: skip
    url = _url_run(server, tmp_path / "url")
    # the class names and the size come from the shards' index (read over HTTP too)
    assert (url["samples"], url["num_classes"], url["label_names"]) == (18, 3, ["one", "two", "zero"])
    assert local["dataset"] == "digit-shards" and url["dataset"] == server.split("//")[1]  # the shards' folder
    assert url["loss"] == local["loss"]
    a, b = load_file(tmp_path / "local" / "model.safetensors"), load_file(tmp_path / "url" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_a_stream_run_resumes_exactly_and_eval_py_reads_it_by_url(server, tmp_path):
    url = _url_run(server, tmp_path / "url")
    b = load_file(tmp_path / "url" / "model.safetensors")
    # killed after the step-4 checkpoint: the resumed run skips what it had read and ends with the same weights
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "url", resumed)
    ck = resumed / "checkpoints"
    for name in ("last.pt", "step_6.pt"):
        (ck / name).unlink(missing_ok=True)
    (ck / "last.pt").hardlink_to(ck / "step_4.pt")
    for name in ("model.safetensors", "metrics.json"):
        (resumed / name).unlink()
    again = _url_run(server, resumed, "--resume", "auto")
    assert again["loss"] == url["loss"]
    c = load_file(resumed / "model.safetensors")
    assert all(torch.equal(b[k], c[k]) for k in b)

    # eval.py reads the held-out shards by URL (the run's class names) as the run's final evaluation did
    got = eval_cli("--model", "poolformer_s12", "--checkpoint", str(resumed), "--data", f"{server}/{VAL}",
                    "--no-profile", "--json", str(tmp_path / "e.json"))  # fmt: skip
    assert got["samples"] == 18 and got["top1"] == url["top1"] and got["loss"] == pytest.approx(url["loss"], rel=1e-5)


def test_hf_stream_reads_a_datasets_folder_of_images(image_folder, tmp_path, capsys):
    base = ("--data.name", "hf_stream", "--data.path", str(image_folder), "--train.steps", "4")
    with pytest.raises(AssertionError):  # a folder records no size: one line, exit 2
        train_digits(tmp_path / "a", *base)
    assert "does not record its size: set data.train_samples" in capsys.readouterr().err
    m = train_digits(tmp_path / "b", *base, "--data.train_samples", "36")
    assert (m["dataset"], m["samples"], m["num_classes"], m["label_names"]) == (
        "digit-pngs",
        18,
        3,
        ["one", "two", "zero"],
    )


def _text_tar(path, docs):
    with tarfile.open(path, "w") as tar:
        for i, doc in enumerate(docs):
            data = doc.encode()
            info = tarfile.TarInfo(f"{i:06d}.txt")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


@pytest.mark.slow  # 2-7 s (a training run, a compile or a parity sweep): outside the 4-minute default run
def test_text_streams_train_a_language_model(tmp_path, capsys):
    import pydoc_data.topics

    docs = [t for t in pydoc_data.topics.topics.values() if t.strip()]
    folder = tmp_path / "jsonl"
    folder.mkdir()
    for split, part in (("train", docs[:-20]), ("validation", docs[-20:])):
        (folder / f"{split}.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in part))
    for split, part in (("train", docs[:-20]), ("val", docs[-20:])):
        _text_tar(tmp_path / f"{split}-000000.tar", part)
    arch = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    tiny = ["--model_kwargs", json.dumps({**arch, "num_key_value_heads": 1, "max_position_embeddings": 64}),
            "--data.seq_len", "32", "--train.steps", "3", "--train.batch_size", "4", "--no-progress",
            "--data.shuffle_buffer", "0", "--data.train_samples", "64", "--data.vocab_size", "300",
            "--data.val_samples", "3"]  # fmt: skip
    runs = {}
    for name, data in (
        ("hf", ["--data.name", "hf_stream", "--data.path", str(folder)]),
        ("wds", ["--data.name", "wds", "--data.path", str(tmp_path / "train-000000.tar"),
                 "--data.val_path", str(tmp_path / "val-000000.tar")]),
    ):  # fmt: skip
        out = tmp_path / name
        assert train_cli.main(["--config", str(LM), "--output_dir", str(out), *tiny, *data]) == 0
        runs[name] = json.loads((out / "metrics.json").read_text())
        assert (out / "tokenizer.json").is_file()
    # the same documents in the same order (stream order: no shuffle buffer) give the same tokenizer and run
    assert (tmp_path / "hf" / "tokenizer.json").read_bytes() == (tmp_path / "wds" / "tokenizer.json").read_bytes()
    assert runs["hf"]["loss"] == runs["wds"]["loss"] and runs["hf"]["train_tokens"] == 64 * 32
    got = eval_cli("--model", "mobilellm_125m", "--checkpoint", str(tmp_path / "hf"), "--data", f"hf_stream:{folder}",
                    "--max-samples", "3", "--no-profile", "--json", str(tmp_path / "e.json"))  # fmt: skip
    assert got["loss"] == pytest.approx(runs["hf"]["loss"], rel=1e-5) and got["tokens"] == runs["hf"]["tokens"]
    unsized = tiny[: tiny.index("--data.train_samples")] + tiny[tiny.index("--data.train_samples") + 2 :]
    rc = train_cli.main(["--config", str(LM), "--output_dir", str(tmp_path / "x"), *unsized, "--data.name",
                         "hf_stream", "--data.path", str(folder)])  # fmt: skip
    assert rc == 2 and "set data.train_samples, the rows of 32 tokens an epoch reads" in capsys.readouterr().err


@pytest.mark.slow
def test_two_gloo_processes_on_a_stream_match_one_process(shards, tmp_path):
    """Rank r of 2 takes every other sample: each step's global batch is one process's two micro-batches."""
    import subprocess
    import sys

    from digit_runs import DIGITS, TINY_ARGS, TORCHRUN, subprocess_env

    def cmd(out, *extra):
        return [sys.executable, "train.py", "--config", str(DIGITS), "--output_dir", str(out), *TINY_ARGS,
                "--data.name", "wds", "--data.path", str(shards / TRAIN), "--data.val_path", str(shards / VAL),
                "--train.steps", "4", "--train.drop_path", "0.0", *extra]  # fmt: skip

    one, two = tmp_path / "one", tmp_path / "two"
    for c in (cmd(one, "--train.grad_accum", "2"), [*TORCHRUN, *cmd(two)[1:]]):
        res = subprocess.run(c, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
    a, b = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-4, worst  # the same samples and gradients; only the order of float sums differs


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data.path", "{shards}/" + TRAIN], "need data.val_path: the held-out shards"),
        (["--data.path", "http://127.0.0.1:9/s-{0..1}.tar", "--data.val_path", "http://127.0.0.1:9/v.tar"],
         "cannot reach http://127.0.0.1:9/s-{0..1}.tar"),
        (["--data.path", "{shards}/" + TRAIN, "--data.val_path", "{shards}/" + VAL, "--data.image_key", "webp"],
         "name its image column with data.image_key"),
        (["--data.path", "{shards}/train/none-*.tar", "--data.val_path", "{shards}/" + VAL], "names no tar shards"),
    ],
)  # fmt: skip
def test_bad_streams_are_one_line(shards, tmp_path, capsys, args, message):
    args = [a.replace("{shards}", str(shards)) for a in args]
    with pytest.raises(AssertionError):  # exit status 2
        train_digits(tmp_path / "run", "--data.name", "wds", *args, "--train.steps", "2")
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_broken_image_in_a_stream_is_named_or_skipped(tmp_path, caplog):
    from PIL import Image

    from zoo.data.stream import ImageBatches

    path = tmp_path / "s-0.tar"
    with tarfile.open(path, "w") as tar:
        for i in range(4):
            buffer = io.BytesIO()
            Image.new("RGB", (4, 4), (60 * i, 0, 0)).save(buffer, format="PNG")
            data = b"not a png" if i == 2 else buffer.getvalue()
            for name, payload in ((f"{i:04d}.png", data), (f"{i:04d}.cls", str(i % 2).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
    rows = list(StreamSource("wds", str(path)).rows())
    with pytest.raises(DataError, match=r"cannot decode image .*s-0.tar:0002 .*data.bad_files: skip"):
        ImageBatches("png", "cls", [0, 1], None, "error")(rows, 0, [0, 1, 2, 3])
    images, labels = ImageBatches("png", "cls", [0, 1], lambda img, e, p: torch.tensor(img.getpixel((0, 0))[0]),
                                  "skip")(rows, 0, [0, 1, 2, 3])  # fmt: skip
    assert images.tolist() == [0, 60, 180, 0] and labels.tolist() == [0, 1, 1, 0]  # its place: the batch's first
    assert "skipping image" in caplog.text
