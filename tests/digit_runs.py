"""Tiny training runs on real digit scans, shared by the tests of users' own data, the Hub and streaming data.

Models are a PoolFormer-S12 layout cut to one block per stage and widths 8-64 (70K parameters) at 32x32
(``TINY_ARGS`` over configs/quickstart_digits.yaml), and a one-layer MobileLLM-shaped decoder (configs/
quickstart_lm.yaml): each run takes a second or two on one thread. tests/conftest.py's ``image_folder`` fixture
writes :func:`digit_images` as an ImageNet-layout folder of PNGs.
"""

import json
import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ROOT / "configs" / "quickstart_digits.yaml"
LM = ROOT / "configs" / "quickstart_lm.yaml"
TINY_ARGS = [
    "--model_kwargs.depths",
    "[1,1,1,1]",
    "--model_kwargs.dims",
    "[8,16,32,64]",
    "--train.batch_size",
    "8",
    "--train.threads",
    "1",
    "--checkpoint.every_steps",
    "0",
    "--sched.warmup_epochs",
    "0",
    "--no-progress",
]
CLASSES = ["zero", "one", "two"]  # three digit classes: chance is 33%
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def subprocess_env() -> dict:
    """The environment of a train.py / eval.py child process: this checkout importable, one thread, no rank."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return env


def digit_images(split: str):
    """Real scans from scikit-learn's bundled digits (classes 0-2), 8x8 upsampled to 24x24 greyscale PIL images:
    the first 12 of each class for train, the last 6 for the held-out split."""
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    out = []
    for c in range(len(CLASSES)):
        idx = np.flatnonzero(d.target == c)
        for i in idx[:12] if split == "train" else idx[-6:]:
            pixels = np.round(d.images[i] * (255.0 / 16.0)).astype(np.uint8)
            out.append((Image.fromarray(pixels, mode="L").resize((24, 24), Image.NEAREST), c, int(i)))
    return out


def train_digits(out: Path, *args) -> dict:
    """``train.py`` on the digits config at TINY_ARGS (plus args), in this process; its metrics.json."""
    from zoo.train import cli as train_cli

    rc = train_cli.main(["--config", str(DIGITS), "--output_dir", str(out), *TINY_ARGS, *args])
    assert rc == 0
    return json.loads((out / "metrics.json").read_text())


def eval_cli(*args) -> dict:
    """``eval.py`` with ``--json PATH`` among args, in this process; that JSON."""
    from zoo.evaluate import main

    out = Path(args[args.index("--json") + 1])
    assert main(list(args)) == 0
    return json.loads(out.read_text())
