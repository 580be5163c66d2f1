"""The trade-off picture: ImageNet top-1 against MACs and against measured latency, Pareto front marked."""

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["pareto_front", "plot_tradeoffs"]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of points not dominated by another (lower or equal cost and higher or equal accuracy, one strictly),
    ordered by cost. ``points`` are (cost, accuracy)."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for i in order:
        if points[i][1] > best:
            front.append(i)
            best = points[i][1]
    return front


def plot_tradeoffs(rows: Sequence[dict[str, Any]], path: Path, batch_size: int = 1) -> Path:
    """Two panels (top-1 vs GMACs, top-1 vs latency at ``batch_size``): one colour per family, one marker per
    series within it, Pareto fronts dashed and ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    rows = [r for r in rows if r.get("top1") is not None and int(r["batch_size"]) == batch_size]
    if not rows:
        raise ValueError(f"no rows with a top-1 figure and batch size {batch_size} to plot")
    families = sorted({r["family"] for r in rows})
    colours = {f: plt.get_cmap("tab10")(i % 10) for i, f in enumerate(families)}
    series = sorted({(r["family"], r["series"]) for r in rows})
    markers = {}
    for family in families:  # one marker per series within its family
        for shape, (_, name) in zip("osD^v<>ph*", [s for s in series if s[0] == family]):
            markers[(family, name)] = shape

    fig, axes = plt.subplots(1, 2, figsize=(13, 6.5))
    panels = [
        ("gmacs", "GMACs at the model's input size (fvcore + zoo handles, 1 multiply-add = 1)"),
        ("latency_ms", f"latency (ms, batch {batch_size}, {rows[0]['device']}, {rows[0]['threads']} threads)"),
    ]
    for ax, (key, label) in zip(axes, panels):
        for r in rows:
            ax.scatter(
                float(r[key]),
                float(r["top1"]),
                color=colours[r["family"]],
                marker=markers[(r["family"], r["series"])],
                s=40,
                zorder=3,
            )
            tag = r["model"][len(r["series"]) + 1 :] or r["model"]  # the size (and variant) within the series
            ax.annotate(tag, (float(r[key]), float(r["top1"])), fontsize=6, xytext=(3, 3), textcoords="offset points")
        points = [(float(r[key]), float(r["top1"])) for r in rows]
        front = pareto_front(points)
        ax.plot([points[i][0] for i in front], [points[i][1] for i in front], "k--", lw=1, zorder=2)
        ax.scatter(
            [points[i][0] for i in front],
            [points[i][1] for i in front],
            s=140,
            facecolors="none",
            edgecolors="k",
            lw=1,
            zorder=4,
        )
        ax.set_xscale("log")
        plain = ticker.FuncFormatter(lambda v, _: f"{v:g}")
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel(label)
        ax.set_ylabel("ImageNet-1k top-1 (%, paper)")
        ax.grid(True, which="both", alpha=0.3)
    handles = [
        plt.Line2D([], [], color=colours[f], marker=markers[(f, n)], ls="", label=f"{n} ({f})") for f, n in series
    ]
    handles.append(plt.Line2D([], [], color="k", ls="--", marker="o", mfc="none", label="Pareto front"))
    fig.legend(handles=handles, loc="lower center", ncol=4, frameon=False, fontsize=9)
    fig.suptitle(f"zoo: accuracy vs cost ({rows[0]['torch']}, measured on this machine)")
    fig.tight_layout(rect=(0, 0.02 + 0.035 * math.ceil(len(handles) / 4), 1, 0.95))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
