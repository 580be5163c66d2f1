"""Held-out evaluation: top-1/top-5/loss for image classifiers, perplexity for language models.

``python eval.py --model NAME (--checkpoint PATH | --pretrained) --data DATA`` or ``--model hf-hub:ORG/NAME``.
Images are preprocessed with the model's own pretrained cfg (input size, crop_pct, interpolation, mean/std,
via timm's ``resolve_data_config`` + ``create_transform``); a checkpoint from a training run folder brings the
run's preprocessing and model arguments (its ``args.yaml``). Results are JSON (and CSV for many models), with
params and MACs (zoo.profile) alongside.

DATA: ``digits`` (bundled), ``pydoc`` (bundled text), an image folder (ImageNet layout or class folders), a
``datasets`` folder (``save_to_disk``), or a text file / folder of text files.
"""
import argparse
import csv
import json
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch
from timm.data import create_transform, resolve_data_config
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from .data import text
from .data.images import build_image_dataset
from .factory import create_model
from .hub import download
from .registry import get_entry
from .train.config import load_run_recipe
from .train.tasks import (classification_metrics, classification_sums, lm_metrics, lm_sums, profile_classifier,
                          profile_lm)
from .weights import read_state_dict

__all__ = ["evaluate_model", "main"]


def _run_dir_of(checkpoint: Optional[str]) -> Optional[Path]:
    if not checkpoint:
        return None
    p = Path(checkpoint)
    for cand in (p if p.is_dir() else p.parent, p.parent.parent):
        if (cand / "args.yaml").is_file():
            return cand
    return None


def _data_kind(data: str) -> str:
    if data in ("digits", "pydoc"):
        return data
    p = Path(data)
    if not p.exists():
        raise FileNotFoundError(f"--data {data}: no such file or folder (or use the bundled 'digits' / 'pydoc')")
    if p.is_file():
        return "text"
    if (p / "dataset_dict.json").is_file() or (p / "dataset_info.json").is_file():
        return "hf_disk"
    if any(f.suffix.lower() in (".txt", ".md", ".rst") for f in p.iterdir() if f.is_file()):
        return "text"
    return "image_folder"


def _weights_path(checkpoint: str) -> str:
    p = Path(checkpoint)
    if p.is_dir():
        for name in ("model.safetensors", "checkpoints/last.pt"):
            if (p / name).is_file():
                return str(p / name)
        raise FileNotFoundError(f"{p} holds neither model.safetensors nor checkpoints/last.pt")
    return str(p)


def build_model(name: str, checkpoint: Optional[str], pretrained: bool, model_kwargs: Dict[str, Any],
                num_classes: Optional[int]):
    kwargs = dict(model_kwargs)
    run = _run_dir_of(checkpoint)
    recipe = None
    if run is not None:
        recipe = load_run_recipe(run)
        if name != recipe.model:
            raise ValueError(f"--checkpoint comes from a run of {recipe.model}, not {name}")
        kwargs = {**recipe.model_kwargs, **kwargs}
        if recipe.task == "image-classification" and "num_classes" not in kwargs:
            metrics = run / "metrics.json"
            st = None
            if metrics.is_file():
                st = json.loads(metrics.read_text()).get("num_classes")
            if st:
                kwargs["num_classes"] = st
        if recipe.task == "text-generation" and "vocab_size" not in kwargs and (run / "tokenizer.json").is_file():
            kwargs["vocab_size"] = text.load_tokenizer(run / "tokenizer.json").get_vocab_size()
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if checkpoint and recipe is not None and recipe.task == "image-classification" and "num_classes" not in kwargs:
        sd = read_state_dict(_weights_path(checkpoint))
        head = [v for k, v in sd.items() if k.endswith("weight") and v.ndim == 2]
        if head:
            kwargs["num_classes"] = int(head[-1].shape[0])
    if checkpoint:
        model = create_model(name, checkpoint_path=_weights_path(checkpoint), **kwargs)
    else:
        model = create_model(name, pretrained=pretrained, **kwargs)
    return model, recipe, run


def _image_eval(model, recipe, data: str, kind: str, split: str, batch_size: int, max_batches: Optional[int],
                device, image_key=None, label_key=None) -> Dict[str, Any]:
    args = {}
    if recipe is not None:  # the run's preprocessing
        d = recipe.data
        if d.image_size:
            args["input_size"] = (3, d.image_size, d.image_size)
        for key in ("crop_pct", "interpolation", "mean", "std"):
            if getattr(d, key) is not None:
                args[key] = tuple(getattr(d, key)) if key in ("mean", "std") else getattr(d, key)
    cfg = resolve_data_config(args, model=model)
    tf = create_transform(cfg["input_size"], is_training=False, interpolation=cfg["interpolation"],
                          mean=cfg["mean"], std=cfg["std"], crop_pct=cfg["crop_pct"], crop_mode=cfg.get("crop_mode"))
    ds, info = build_image_dataset(kind, split, None if kind == "digits" else data, image_key, label_key)
    num_classes = getattr(model, "num_classes", None)
    if num_classes is not None and num_classes < info.num_classes:
        raise ValueError(f"the model has {num_classes} classes but the data has {info.num_classes}")

    class _T(torch.utils.data.Dataset):
        def __len__(self):
            return len(ds)

        def __getitem__(self, i):
            img, y = ds[i]
            return tf(img), y

    loader = DataLoader(_T(), batch_size=batch_size, shuffle=False, num_workers=0)
    model.eval().to(device)
    batches = ((x.to(device), y.to(device)) for x, y in tqdm(loader, desc="eval", leave=False, file=sys.stderr))
    metrics = classification_metrics(classification_sums(model, batches, min(5, num_classes or 5),
                                                         max_batches=max_batches))
    return {"dataset": info.name, "split": split, **metrics, "input_size": list(cfg["input_size"]),
            "crop_pct": cfg["crop_pct"], "interpolation": cfg["interpolation"]}


def _find_tokenizer(tokenizer: Optional[str], run: Optional[Path], checkpoint: Optional[str], name: str):
    cands = [tokenizer] if tokenizer else []
    if run is not None:
        cands.append(str(run / "tokenizer.json"))
    if checkpoint:
        p = Path(checkpoint)
        cands.append(str((p if p.is_dir() else p.parent) / "tokenizer.json"))
    for c in cands:
        if c and Path(c).exists():
            return text.load_tokenizer(c)
    if name.startswith("hf-hub:"):
        return text.load_tokenizer(download(name[len("hf-hub:"):], "tokenizer.json"))
    raise FileNotFoundError("no tokenizer found: pass --tokenizer PATH (tokenizer.json or a folder holding one)")


def _lm_eval(model, recipe, tokenizer, data: str, kind: str, split: str, seq_len: Optional[int], batch_size: int,
             max_batches: Optional[int], device, text_key=None) -> Dict[str, Any]:
    seq_len = seq_len or (recipe.data.seq_len if recipe is not None else 256)
    if kind == "hf_disk":
        docs = text.load_text_documents("hf_disk", data, split, text_key)
    else:
        docs = text.load_text_documents(kind, None if kind == "pydoc" else data)
        if recipe is not None and (kind == "pydoc" or recipe.data.path == data):  # the run's held-out documents
            docs = text.split_documents(docs, recipe.data.val_fraction)[1 if split != "train" else 0]
    rows = text.pack_tokens(text.encode_documents(tokenizer, docs), seq_len)
    model.eval().to(device)
    batches = (rows[i:i + batch_size].to(device) for i in range(0, rows.shape[0], batch_size))
    metrics = lm_metrics(lm_sums(model, batches, max_batches=max_batches))
    return {"dataset": "pydoc_data.topics" if kind == "pydoc" else Path(data).name, "split": split, **metrics,
            "seq_len": seq_len}


def evaluate_model(name: str, data: str, checkpoint: Optional[str] = None, pretrained: bool = False,
                   model_kwargs: Optional[Dict[str, Any]] = None, split: str = "validation", batch_size: int = 64,
                   max_batches: Optional[int] = None, num_classes: Optional[int] = None,
                   tokenizer: Optional[str] = None, seq_len: Optional[int] = None, device: str = "cpu",
                   profile: bool = True, **keys) -> Dict[str, Any]:
    """Evaluate one model; returns a flat dict of metrics, params and MACs."""
    t0 = time.time()
    model, recipe, run = build_model(name, checkpoint, pretrained, model_kwargs or {}, num_classes)
    task = "text-generation" if hasattr(model, "generate") and not hasattr(model, "forward_head") else None
    if task is None:
        arch = (getattr(model, "pretrained_cfg", None) or {}).get("architecture") or name
        try:
            task = get_entry(arch).task
        except Exception:  # hf-hub names resolve to a registered architecture in the model's cfg
            task = "image-classification"
    kind = _data_kind(data)
    row: Dict[str, Any] = {"model": name, "weights": checkpoint or ("pretrained" if pretrained or
                                                                      name.startswith("hf-hub:") else "random")}
    if task == "text-generation":
        if kind in ("digits", "image_folder"):
            raise ValueError(f"{name} is a language model; evaluate it on text (--data pydoc or a text path)")
        tok = _find_tokenizer(tokenizer, run, checkpoint, name)
        row.update(_lm_eval(model, recipe, tok, data, kind, split, seq_len, batch_size, max_batches, device,
                            keys.get("text_key")))
    else:
        if kind in ("pydoc", "text"):
            raise ValueError(f"{name} is an image classifier; evaluate it on images (--data digits or a folder)")
        row.update(_image_eval(model, recipe, data, kind, split, batch_size, max_batches, device,
                               keys.get("image_key"), keys.get("label_key")))
    if profile:
        try:
            row.update(profile_classifier(model, row["input_size"]) if task == "image-classification"
                       else profile_lm(model, row["seq_len"]))
        except Exception as e:  # profiling is a report, not a reason to lose the evaluation
            print(f"eval.py: warning: profiling {name} failed ({e}); params and MACs left out", file=sys.stderr)
    row["seconds"] = round(time.time() - t0, 2)
    return row


def _parser():
    p = argparse.ArgumentParser(prog="eval.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", "-m", action="append", required=True,
                   help="registered name or hf-hub:ORG/NAME; repeat for many models (CSV)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", help="weights: model.safetensors, a training checkpoint (.pt) or a run folder")
    src.add_argument("--pretrained", action="store_true", help="the model's registered weights (Hub)")
    p.add_argument("--data", required=True, help="digits | pydoc | image folder | datasets folder | text path")
    p.add_argument("--split", default="validation")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--max-batches", type=int, default=None)
    p.add_argument("--num-classes", type=int, default=None)
    p.add_argument("--model-kwargs", default="{}", help='JSON, e.g. \'{"drop_rate": 0.0}\'')
    p.add_argument("--tokenizer", help="tokenizer.json (or a folder with one) for language models")
    p.add_argument("--seq-len", type=int, default=None)
    p.add_argument("--image-key"), p.add_argument("--label-key"), p.add_argument("--text-key")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-profile", action="store_true", help="skip params/MACs")
    p.add_argument("--json", dest="json_out", help="write results to this JSON file")
    p.add_argument("--csv", dest="csv_out", help="write results to this CSV file (one row per model)")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    try:
        kwargs = json.loads(args.model_kwargs)
    except json.JSONDecodeError as e:
        print(f"eval.py: error: --model-kwargs is not valid JSON: {e}", file=sys.stderr)
        return 2
    rows = []
    for name in args.model:
        try:
            rows.append(evaluate_model(
                name, args.data, checkpoint=args.checkpoint, pretrained=args.pretrained, model_kwargs=kwargs,
                split=args.split, batch_size=args.batch_size, max_batches=args.max_batches,
                num_classes=args.num_classes, tokenizer=args.tokenizer, seq_len=args.seq_len, device=args.device,
                profile=not args.no_profile, image_key=args.image_key, label_key=args.label_key,
                text_key=args.text_key))
        except (ValueError, FileNotFoundError, RuntimeError) as e:
            print(f"eval.py: error: {name}: {e}", file=sys.stderr)
            return 2
    out = rows[0] if len(rows) == 1 else rows
    text = json.dumps(out, indent=2)
    print(text)
    if args.json_out:
        Path(args.json_out).write_text(text + "\n")
    if args.csv_out or len(rows) > 1:
        path = Path(args.csv_out or "eval_results.csv")
        fields = list(dict.fromkeys(k for r in rows for k in r))
        with open(path, "w", newline="") as f:
            w = csv.DictWriter(f, fields)
            w.writeheader()
            w.writerows([{k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in r.items()}
                         for r in rows])
        print(f"wrote {path}", file=sys.stderr)
    return 0
