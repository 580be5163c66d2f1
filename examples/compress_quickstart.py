"""Compress quickstart: dense -> pruned -> fine-tuned or distilled, on the bundled digits and the quickstart LM.

    python examples/compress_quickstart.py                  # both tasks, runs under runs/
    python examples/compress_quickstart.py --only digits    # one of them
    python examples/compress_quickstart.py --smoke --runs /tmp/cq   # a few steps each: the path, not the figures
    python examples/compress_quickstart.py --rounds 3       # also iterative: 3 x (prune, distill), same steps

An example of the zoo's checkout (it reads the recipes in ``configs/`` beside this folder), built on the installed
package's public pieces: ``zoo.prune``, ``zoo.train``'s loop and recipes, ``zoo.publish.export_pretrained``.

Digits: the quickstart PoolFormer (``configs/quickstart_digits.yaml``; a finished run in ``RUNS/quickstart_digits``
is reused) is pruned to half its MACs with :func:`zoo.prune` and written as a model folder
(``RUNS/quickstart_digits_pruned``: safetensors + config.json), then fine-tuned from that folder with
``configs/quickstart_digits_distill.yaml`` twice, the same steps each: without a teacher (``--distill null``) and
with the dense run as teacher. The LM: the quickstart LM (``configs/quickstart_lm.yaml``) with its MLPs pruned to
half their width, fine-tuned with ``configs/quickstart_lm_distill.yaml`` the same two ways. Every model is
evaluated on the dense run's held-out split (top-1, or perplexity) and the tables are printed and written to
``RUNS/compress_quickstart.json``. The commands it stands for:

    python train.py --config configs/quickstart_digits.yaml
    zoo prune runs/quickstart_digits --target-macs 0.5 --out runs/quickstart_digits_pruned
    python train.py --config configs/quickstart_digits_distill.yaml --distill null --output_dir runs/quickstart_digits_finetune
    python train.py --config configs/quickstart_digits_distill.yaml   # init_from the pruned folder, dense teacher
"""

import argparse
import copy
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from zoo.factory import create_model
from zoo.profile import count_macs
from zoo.publish import export_pretrained
from zoo.train.config import load_recipe, load_run_args, load_run_recipe
from zoo.train.distributed import DistState
from zoo.train.loop import train
from zoo.train.tasks import EvalSource, task_class

try:  # structural pruning (zoo.compress, Torch-Pruning) is an optional part of an install
    from zoo.compress import PruneError, prune
except ImportError:  # pragma: no cover - depends on the install
    prune = None

    class PruneError(ValueError):  # stands in where zoo.compress is missing
        pass


__all__ = ["main", "run_digits", "run_lm"]

_logger = logging.getLogger("compress_quickstart")

CONFIGS = Path(__file__).resolve().parents[1] / "configs"  # the checkout's recipes, beside examples/

# --smoke: a handful of steps per run, tiny LM; checks that the path runs end to end, says nothing about accuracy
_SMOKE_DIGITS = ["--train.steps", "6", "--train.batch_size", "32", "--checkpoint.every_steps", "0"]
_SMOKE_LM = [
    "--train.steps",
    "6",
    "--train.batch_size",
    "4",
    "--data.seq_len",
    "32",
    "--checkpoint.every_steps",
    "0",
    "--train.eval_every_steps",
    "0",
    "--train.eval_max_batches",
    "2",
    "--sched.warmup_steps",
    "1",
]
_SMOKE_LM_ARCH = [
    "--data.vocab_size",
    "300",
    "--model_kwargs.hidden_size",
    "32",
    "--model_kwargs.intermediate_size",
    "64",
    "--model_kwargs.num_hidden_layers",
    "2",
    "--model_kwargs.num_attention_heads",
    "2",
    "--model_kwargs.num_key_value_heads",
    "1",
    "--model_kwargs.max_position_embeddings",
    "32",
]


def _config(name: str) -> str:
    path = CONFIGS / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run from a zoo checkout (the recipes live in configs/)")
    return str(path)


def _finished(run_dir: Path) -> bool:
    return all((run_dir / f).is_file() for f in ("metrics.json", "model.safetensors", "args.yaml"))


def _train(config: str, run_dir: Path, overrides: list[str]) -> Path:
    recipe = load_recipe(_config(config), ["--output_dir", str(run_dir), *overrides])
    train(recipe, overwrite=True, progress=False)
    return run_dir


def _dense(config: str, run_dir: Path, overrides: list[str]) -> Path:
    """The dense quickstart run: reused when the folder holds a finished one."""
    if _finished(run_dir):
        _logger.info("reusing the finished dense run in %s", run_dir)
        return run_dir
    return _train(config, run_dir, overrides)


# -- pruning (zoo.prune) ------------------------------------------------------------------------------------------


def _need_prune():
    if prune is None:
        raise RuntimeError(
            "zoo.prune is not available in this install (zoo.compress, with torch-pruning): install it, or prune "
            "with `zoo prune RUN --out DIR` and fine-tune with --init-from DIR"
        )
    return prune


def prune_vision(model: nn.Module, target_macs: int, example_inputs: torch.Tensor) -> nn.Module:
    """``model`` pruned to ``target_macs`` MACs on ``example_inputs``: widths rounded to multiples of 8 where that
    reaches the target, exact widths where it does not (small models)."""
    fn = _need_prune()
    try:
        return fn(copy.deepcopy(model), target_macs=int(target_macs), example_inputs=example_inputs)
    except PruneError as e:
        _logger.warning("%s; pruning to exact widths instead (round_to=None)", e)
        return fn(model, target_macs=int(target_macs), example_inputs=example_inputs, round_to=None)


def prune_lm_mlp(model: nn.Module, ratio: float, example_inputs: torch.Tensor) -> nn.Module:
    """``model`` with every MLP's hidden width cut by ``ratio``: the attention blocks, the embeddings and the
    residual width are passed as ``ignore`` (kept)."""
    keep = [
        m
        for n, m in model.named_modules()
        if n.endswith("self_attn") or (isinstance(m, (nn.Linear, nn.Embedding)) and not _mlp_in(n))
    ]
    heads = (model.config.num_attention_heads, model.config.num_key_value_heads)
    model = _need_prune()(model, ratio=ratio, example_inputs=example_inputs, ignore=keep)
    if (model.config.num_attention_heads, model.config.num_key_value_heads) != heads:
        _logger.warning(
            "zoo.prune also removed attention heads (%d/%d query/KV heads -> %d/%d): the LM rows then compare more "
            "than an MLP cut",
            *heads,
            model.config.num_attention_heads,
            model.config.num_key_value_heads,
        )
    return model


def _mlp_in(name: str) -> bool:
    return name.endswith(("mlp.gate_proj", "mlp.up_proj"))


def _write_folder(model: nn.Module, out: Path, dense: Path, tokenizer: Path | None = None) -> Path:
    """The pruned model as a model folder (safetensors + config.json) that ``create_model(out)`` rebuilds."""
    config = json.loads((dense / "export" / "config.json").read_text())
    args = {**(config.get("model_args") or {}), **(getattr(model, "pruned_args", None) or {})}  # the pruned widths
    return Path(
        export_pretrained(
            model,
            out,
            model_name=config["architecture"],
            model_kwargs=args,
            tokenizer_file=tokenizer,
            latency_runs=0,
        )
    )


# -- evaluation on the dense run's held-out split -------------------------------------------------------------------


def held_out(model: nn.Module, dense: Path) -> dict[str, Any]:
    """Held-out metrics, params and MACs of ``model`` on the dense run's validation split and preprocessing."""
    recipe = load_run_recipe(dense)
    task = task_class(recipe.task)(recipe, DistState(device="cpu"), dense)
    lm = recipe.task == "text-generation"
    source = EvalSource(
        data=recipe.data.name,
        kind=recipe.data.name,
        split=recipe.data.val_split,
        run_dir=dense,
        seq_len=recipe.data.seq_len if lm else None,
        tokenizer=str(dense / "tokenizer.json") if lm else None,
    )
    task.prepare_eval_data(model, source)
    model.eval()
    metrics = task.evaluate(model, 16 if lm else 64, torch.device("cpu"))
    return {**metrics, **task.profile(model)}


def _row(label: str, folder: Path, dense: Path) -> dict[str, Any]:
    model = create_model(str(folder), pretrained=True)
    return {"model": label, "folder": str(folder), **held_out(model, dense)}


# -- the two tasks ------------------------------------------------------------------------------------------------


def _total_steps(run_dir: Path) -> int:
    return int(load_run_args(run_dir)[1]["total_steps"])


def _rounds(
    runs: Path, prefix: str, config: str, dense: Path, rounds: int, total_steps: int, extra: list[str], prune_once
) -> Path:
    """Iterative pruning: ``rounds`` times prune (``prune_once(model, round) -> model``), then distill from the
    dense model for ``total_steps / rounds`` steps; the last round's run folder."""
    current = dense
    steps = max(math.ceil(total_steps / rounds), 1)
    tokenizer = dense / "tokenizer.json" if (dense / "tokenizer.json").is_file() else None
    for i in range(1, rounds + 1):
        model = create_model(str(current), pretrained=True).eval()
        folder = _write_folder(prune_once(model, i), runs / f"{prefix}_round{i}_pruned", dense, tokenizer)
        current = _train(
            config,
            runs / f"{prefix}_round{i}_distill",
            ["--init-from", str(folder), "--distill.teacher", str(dense), *extra, "--train.steps", str(steps)],
        )
    return current


def run_digits(runs: Path, fraction: float = 0.5, smoke: bool = False, rounds: int = 0) -> list[dict[str, Any]]:
    extra = _SMOKE_DIGITS if smoke else []
    dense = _dense("quickstart_digits.yaml", runs / "quickstart_digits", extra)
    model = create_model(str(dense), pretrained=True).eval()
    example = torch.randn(1, *model.pretrained_cfg["input_size"])
    dense_macs, _ = count_macs(model, example)
    pruned = _write_folder(
        prune_vision(model, fraction * dense_macs, example), runs / "quickstart_digits_pruned", dense
    )
    common = ["--init-from", str(pruned), *extra]
    finetuned = _train(
        "quickstart_digits_distill.yaml", runs / "quickstart_digits_finetune", [*common, "--distill", "null"]
    )
    distilled = _train(
        "quickstart_digits_distill.yaml", runs / "quickstart_digits_distill", [*common, "--distill.teacher", str(dense)]
    )
    rows = [
        _row("dense", dense, dense),
        _row(f"pruned to {fraction:.0%} MACs, no fine-tune", pruned, dense),
        _row("pruned + fine-tune", finetuned, dense),
        _row("pruned + distilled", distilled, dense),
    ]
    if rounds:
        last = _rounds(
            runs,
            "quickstart_digits",
            "quickstart_digits_distill.yaml",
            dense,
            rounds,
            _total_steps(distilled),
            extra,
            lambda m, i: prune_vision(m, fraction ** (i / rounds) * dense_macs, example),
        )
        rows.append(_row(f"pruned in {rounds} rounds, each + distilled (same steps)", last, dense))
    return rows


def run_lm(runs: Path, ratio: float = 0.5, smoke: bool = False, rounds: int = 0) -> list[dict[str, Any]]:
    extra = _SMOKE_LM if smoke else []
    dense = _dense("quickstart_lm.yaml", runs / "quickstart_lm", [*extra, *(_SMOKE_LM_ARCH if smoke else [])])
    model = create_model(str(dense), pretrained=True).eval()
    seq_len = load_run_recipe(dense).data.seq_len
    example = torch.randint(0, model.config.vocab_size, (1, seq_len))
    tokenizer = dense / "tokenizer.json"
    pruned = _write_folder(prune_lm_mlp(model, ratio, example), runs / "quickstart_lm_pruned", dense, tokenizer)
    common = ["--init-from", str(pruned), *extra]
    finetuned = _train("quickstart_lm_distill.yaml", runs / "quickstart_lm_finetune", [*common, "--distill", "null"])
    distilled = _train(
        "quickstart_lm_distill.yaml", runs / "quickstart_lm_distill", [*common, "--distill.teacher", str(dense)]
    )
    rows = [
        _row("dense", dense, dense),
        _row(f"MLP width cut {ratio:.0%}, no fine-tune", pruned, dense),
        _row("pruned + fine-tune", finetuned, dense),
        _row("pruned + distilled", distilled, dense),
    ]
    if rounds:
        per_round = 1 - (1 - ratio) ** (1 / rounds)  # the same width left after every round
        last = _rounds(
            runs,
            "quickstart_lm",
            "quickstart_lm_distill.yaml",
            dense,
            rounds,
            _total_steps(distilled),
            extra,
            lambda m, i: prune_lm_mlp(m, per_round, example),
        )
        rows.append(_row(f"MLP cut in {rounds} rounds, each + distilled (same steps)", last, dense))
    return rows


def _table(rows: list[dict[str, Any]], metric: str) -> str:
    lines = [f"| model | params | MACs | {metric} |", "|---|---|---|---|"]
    for r in rows:
        value = r.get(metric)
        shown = f"{value:.2f}" if isinstance(value, float) else "-"
        lines.append(f"| {r['model']} | {r.get('params', 0):,} | {r.get('macs', 0):,} | {shown} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python examples/compress_quickstart.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--only", choices=("digits", "lm"), help="one task (default: both)")
    p.add_argument("--runs", default="runs", help="folder of the run folders (default: runs)")
    p.add_argument("--target-macs", type=float, default=0.5, help="digits: the pruned model's MACs, as a fraction")
    p.add_argument("--mlp-ratio", type=float, default=0.5, help="LM: the share of every MLP's width removed")
    p.add_argument(
        "--rounds", type=int, default=0, help="also prune iteratively: N rounds of prune + distill, same total steps"
    )
    p.add_argument("--smoke", action="store_true", help="a few steps per run: checks the path, not the figures")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not 0 < args.target_macs < 1 or not 0 < args.mlp_ratio < 1:
        p.error("--target-macs and --mlp-ratio are fractions between 0 and 1")
    if args.rounds < 0:
        p.error("--rounds is a count of rounds (0: one-shot pruning only)")
    runs = Path(args.runs)
    results: dict[str, Any] = {}
    if args.only in (None, "digits"):
        results["digits"] = run_digits(runs, args.target_macs, args.smoke, args.rounds)
        print("\nDigits (held-out 360 scans, top-1 %):\n" + _table(results["digits"], "top1"))
    if args.only in (None, "lm"):
        results["lm"] = run_lm(runs, args.mlp_ratio, args.smoke, args.rounds)
        print("\nQuickstart LM (held-out pydoc text):\n" + _table(results["lm"], "perplexity"))
    out = runs / "compress_quickstart.json"
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
