"""``zoo list`` and ``zoo info``: the model table as text and one model's entry as JSON.

Each command is an ``add_*_arguments(parser)`` / ``run_*(args)`` pair; ``zoo/cli.py`` mounts them.
"""

import argparse
import json
import sys

from .registry import list_models, model_info

__all__ = ["add_info_arguments", "add_list_arguments", "run_info", "run_list"]


def add_list_arguments(p: argparse.ArgumentParser) -> None:
    """``zoo list``'s arguments."""
    p.add_argument("pattern", nargs="?", default="*", help="shell-style pattern, e.g. 'caformer_*'")
    p.add_argument("--family", default=None)
    p.add_argument("--pretrained", action="store_true", help="only models with published weights")


def run_list(args: argparse.Namespace) -> int:
    """The matching models with their reference params, MACs and top-1 (and the papers' non-zero counts of sparse
    models); 1 when nothing matches."""
    names = list_models(args.pattern, family=args.family, pretrained=args.pretrained)
    if not names:
        print(f"no model matches {args.pattern!r}", file=sys.stderr)
        return 1
    rows, sparse = [], False
    for name in names:
        ref = model_info(name)["reference"]
        params = f"{ref['params'] / 1e6:.1f}M" if ref.get("params") else "-"
        gmacs = f"{ref['gmacs']:.2f}" if ref.get("gmacs") else "-"
        top1 = f"{ref['top1']:.1f}" if ref.get("top1") else "-"
        nonzero = "-"
        if ref.get("nonzero_params"):  # sparse models: the paper's table counts non-zero weights only
            sparse = True
            nonzero = f"{ref['nonzero_params'] / 1e6:.1f}M / {ref['nonzero_macs'] / 1e9:.2f}"
        rows.append((name, model_info(name)["family"], params, gmacs, top1, nonzero))
    header = ("model", "family", "params", "GMACs", "top-1", "non-zero params / GMACs (paper)")
    if not sparse:
        header, rows = header[:-1], [row[:-1] for row in rows]
    widths = [max(len(str(r[i])) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())
    print(
        "params / GMACs: each family's reference figures for the authors' models at the default input (plain fvcore, "
        "which leaves norms and pooling uncounted); top-1: the paper's. `zoo profile NAME` measures this build: its "
        "MACs add the ops plain fvcore leaves out"
    )
    if sparse:
        print(
            "note: params / GMACs are dense (every weight, zeros included); the papers of sparse models count "
            "only the non-zero weights (last column); `zoo profile NAME` measures both"
        )
    return 0


def add_info_arguments(p: argparse.ArgumentParser) -> None:
    """``zoo info``'s arguments."""
    p.add_argument("model")


def run_info(args: argparse.Namespace) -> int:
    """The model's family, paper, reference figures and pretrained cfg, as JSON."""
    print(json.dumps(model_info(args.model), indent=2, default=str))
    return 0
