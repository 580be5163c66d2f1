"""Presets: iteration counts and evaluation settings chosen by name (``zoo condense --preset``,
``zoo bench condense --preset``).

- ``paper``: each method's authors' command, as their script runs it (:data:`PAPER`: every value with the script
  and line it comes from; where the README names a per-dataset setting it wins, and the entry says so). Their
  ``--Iteration N`` loops ``range(N + 1)`` and updates the images at every pass, so the set they save has N + 1
  updates: the preset's ``iterations`` (which counts updates) is N + 1. Hours per row on a GPU (``--device cuda``),
  days on a CPU. ``zoo condense --preset paper --print-settings`` prints the table.
- ``cpu``: the counts a 2-core CPU can run on 28x28 MNIST / Fashion-MNIST (ConvNet-3): every method at reduced
  iterations and real batches, evaluated as the papers evaluate (300 epochs at ipc <= 10, 3 sets x 3 networks per
  row in the bench). Its iteration counts are far below the papers', so its accuracies are those of a shorter run
  of the same method; the bench's curves show where each heads.
- ``quick``: a smoke run on the bundled 8x8 digits at 16 px (seconds to a minute per method).

The default of ``zoo condense`` follows the device: ``paper`` on CUDA, ``cpu`` otherwise. An option given by hand
(``--iterations``, ``--option KEY=VALUE``) wins over the preset's.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "PAPER",
    "PRESETS",
    "Preset",
    "Setting",
    "default_preset",
    "departures",
    "estimate_seconds",
    "method_options",
    "settings_table",
]


@dataclass(frozen=True)
class Preset:
    """A named set of counts. ``methods[method]`` holds options for every ipc (``"all"``) and per ipc (an int key,
    the largest one not above the run's ipc applies); ``image_size`` None keeps the data's own size."""

    name: str
    summary: str
    image_size: int | None
    methods: Mapping[str, Mapping[Any, Mapping[str, Any]]]
    eval_epochs: int | None  # None: the authors' (1000 with DSA, 300 without)
    sets: int  # condensed sets per table row (bench)
    nets: int  # evaluation networks per set (bench)
    whole_epochs: int  # the whole-data ceiling's epochs
    teacher_epochs: int  # the BatchNorm ConvNet-3 teacher (rded, sre2l, herding, kcenter)
    student_epochs: int  # the teacher-relabelling student recipe (rded, sre2l, random + teacher)
    curve: tuple[int, ...] = field(default_factory=tuple)  # iterations the bench's accuracy curves evaluate at


@dataclass(frozen=True)
class Setting:
    """One value of an authors' command: the zoo's option (``eval.*``: the evaluation's), its value (a dict: per
    ipc or per dataset), where it comes from, and a note where their README or the zoo differs."""

    key: str
    value: Any
    source: str
    note: str = ""


_DC_REPO = "VICO-UoE/DatasetCondensation@53f63a6"
_MTT_REPO = "GeorgeCazenavette/mtt-distillation"
_DIGITS = "color_crop_cutout_scale_rotate"
_FULL = "color_crop_cutout_flip_scale_rotate"
_DC_LOOPS = "utils.py:275-293 get_loops"
_DC_EVAL_STEP = "utils.py:343 lr_schedule [Epoch//2+1], :351 range(Epoch+1)"

# The authors' commands (DatasetCondensation: README's Table 1 command for DC, its DSA command for DSA, its DM command
# for DM; mtt-distillation: distill.py's and buffer.py's defaults). The zoo's ``paper`` preset is made from this.
PAPER: dict[str, list[Setting]] = {
    "dm": [
        Setting(
            "iterations",
            20001,
            "main_DM.py:22 --Iteration 20000; :106 range(Iteration+1), an update each pass",
            "their evaluation at it == Iteration (:109-124) runs before that pass's update: the reported "
            "accuracy is of the set after 20,000 updates, the saved one (:202-204) after 20,001",
        ),
        Setting("lr_img", 1.0, "main_DM.py:23 (README:176 --lr_img 1)"),
        Setting("momentum", 0.5, "main_DM.py:102"),
        Setting("batch_real", 256, "main_DM.py:25"),
        Setting("init", "real", "main_DM.py:27 (README:176 --init real)"),
        Setting(
            "dsa_strategy",
            _FULL,
            "main_DM.py:28 (README:176)",
            "flips on every dataset, MNIST included, as the script runs; their DSA README (:113, :122) says "
            "not to flip MNIST / SVHN, and the zoo's cpu preset follows that",
        ),
        Setting("eval.epochs", 1000, "main_DM.py:21 --epoch_eval_train 1000; " + _DC_EVAL_STEP),
        Setting("eval.dsa_strategy", _FULL, "main_DM.py:28 (the evaluation augments with args.dsa_strategy)"),
        Setting("eval.lr", 0.01, "main_DM.py:24 --lr_net (utils.py:341)"),
        Setting("eval.batch", 256, "main_DM.py:26 --batch_train (utils.py:348)"),
        Setting(
            "sets x nets",
            "5 x 5",
            "README:176 --num_exp 5 --num_eval 5",
            "the script's defaults are 5 x 20 (main_DM.py:19-20)",
        ),
    ],
    "dc": [
        Setting(
            "iterations",
            1001,
            "main.py:23 --Iteration 1000; :105 range(Iteration+1)",
            "the reported accuracy is of the set after 1,000 updates (evaluated before the last pass)",
        ),
        Setting("lr_img", 0.1, "main.py:24"),
        Setting("momentum", 0.5, "main.py:100"),
        Setting("lr_net", 0.01, "main.py:25"),
        Setting("batch_real", 256, "main.py:26"),
        Setting("batch_train", 256, "main.py:27"),
        Setting(
            "init",
            "noise",
            "main.py:28; README:20 (Table 1, the 91.7 on MNIST ipc 1) passes no --init",
            "the zoo's own default is real",
        ),
        Setting(
            "outer_loop / inner_loop",
            {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)},
            _DC_LOOPS,
        ),  # fmt: skip
        Setting(
            "eval.epochs",
            {"mnist": 1000, "other": 300},
            "main.py:117-123 (get_daparam: crop_scale_rotate on "
            "MNIST, utils.py:439-440, forces 1000; no augmentation, 300); " + _DC_EVAL_STEP,
        ),
        Setting("eval.lr", 0.01, "main.py:25 --lr_net (utils.py:341)"),
        Setting("eval.batch", 256, "main.py:27 --batch_train (utils.py:348)"),
        Setting("sets x nets", "5 x 20", "main.py:20-21"),
    ],
    "dsa": [
        Setting("iterations", 1001, "main.py:23 --Iteration 1000; :105 range(Iteration+1)"),
        Setting("lr_img", 0.1, "main.py:24"),
        Setting("momentum", 0.5, "main.py:100"),
        Setting("lr_net", 0.01, "main.py:25"),
        Setting("batch_real", 256, "main.py:26"),
        Setting("batch_train", 256, "main.py:27"),
        Setting("init", "real", "README:110 --init real (the 88.7 on MNIST ipc 1)", "main.py:28's default is noise"),
        Setting(
            "outer_loop / inner_loop",
            {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)},
            _DC_LOOPS,
        ),  # fmt: skip
        Setting(
            "dsa_strategy",
            {"mnist, svhn": _DIGITS, "other": _FULL},
            "README:110, :113 (per dataset: the README wins)",
            "main.py:29's default is 'None', which turns DSA off",
        ),
        Setting("eval.epochs", 1000, "main.py:111-112 (forced with DSA); " + _DC_EVAL_STEP),
        Setting("eval.dsa_strategy", {"mnist, svhn": _DIGITS, "other": _FULL}, "README:113 (args.dsa_strategy)"),
        Setting("eval.lr", 0.01, "main.py:25 --lr_net (utils.py:341)"),
        Setting("eval.batch", 256, "main.py:27 --batch_train (utils.py:348)"),
        Setting("sets x nets", "5 x 20", "main.py:20-21"),
    ],
    "mtt": [
        Setting("iterations", 5001, "distill.py:431 --Iteration 5000; :185 range(0, Iteration+1)"),
        Setting(
            "syn_steps",
            20,
            "distill.py:456",
            "README's per-dataset commands (CIFAR, Tiny) set their own; none for MNIST",
        ),
        Setting("expert_epochs", 3, "distill.py:455"),
        Setting("max_start_epoch", 25, "distill.py:457"),
        Setting("lr_img", 1000.0, "distill.py:433"),
        Setting("lr_lr", 1e-05, "distill.py:434"),
        Setting("lr_teacher", 0.01, "distill.py:435"),
        Setting("momentum", 0.5, "distill.py:138-139"),
        Setting("init", "real", "distill.py:443 --pix_init real"),
        Setting("num_experts", 100, "buffer.py:116"),
        Setting("train_epochs", 50, "buffer.py:126"),
        Setting("eval.epochs", 1000, "distill.py:430"),
        Setting("sets x nets", "1 x 5", "distill.py:426 --num_eval 5"),
    ],
}
_SOURCES = {"dm": _DC_REPO, "dc": _DC_REPO, "dsa": _DC_REPO, "mtt": _MTT_REPO}
_SETS_NETS = {"dm": (5, 5), "dc": (5, 20), "dsa": (5, 20), "mtt": (1, 5)}


def _paper_methods() -> dict[str, dict[Any, dict[str, Any]]]:
    """The ``paper`` preset's options from :data:`PAPER` (the values a method option takes)."""
    out: dict[str, dict[Any, dict[str, Any]]] = {}
    for method, rows in PAPER.items():
        table: dict[Any, dict[str, Any]] = {"all": {}}
        for r in rows:
            if r.key.startswith("eval.") or r.key == "sets x nets" or isinstance(r.value, dict) and r.key != (
                    "outer_loop / inner_loop"):  # fmt: skip
                continue
            if r.key == "outer_loop / inner_loop":
                for ipc, (outer, inner) in r.value.items():
                    table[ipc] = {"outer_loop": outer, "inner_loop": inner}
            else:
                table["all"][r.key] = r.value
        out[method] = table
    out["dm"]["all"]["dsa_strategy"] = _FULL  # the script's default on every dataset (see PAPER)
    return out


_CPU_TRAJECTORY = {  # MTT and factorization at 28 px on a CPU: 3 short experts on 5,000 images; short unrolls
    "num_experts": 3,
    "train_epochs": 4,
    "expert_epochs": 2,
    "max_start_epoch": 2,
    "expert_images": 5000,
    "syn_steps": 20,
    "iterations": 50,
}

_QUICK_TRAJECTORY = {"iterations": 40, "syn_steps": 5, "expert_epochs": 2, "num_experts": 3, "train_epochs": 6,
                     "max_start_epoch": 3, "lr_img": 100.0}  # fmt: skip

PRESETS: dict[str, Preset] = {
    "paper": Preset(
        name="paper",
        summary="each method's authors' command as their script runs it (hours per row on a GPU)",
        image_size=None,
        methods=_paper_methods(),
        eval_epochs=None,
        sets=5,
        nets=5,
        whole_epochs=50,
        teacher_epochs=50,
        student_epochs=300,
        curve=(0, 500, 1000, 5000, 10000, 20000),
    ),
    "cpu": Preset(
        name="cpu",
        summary="reduced iteration counts for a 2-core CPU, the papers' evaluation (minutes per set at 28 px)",
        image_size=None,
        methods={
            "dm": {"all": {"iterations": 100, "batch_real": 64}},
            "dc": {
                1: {"iterations": 20, "batch_real": 64},
                10: {"iterations": 5, "batch_real": 64, "outer_loop": 10, "inner_loop": 5},
            },
            "dsa": {
                1: {"iterations": 20, "batch_real": 64},
                10: {"iterations": 5, "batch_real": 64, "outer_loop": 10, "inner_loop": 5},
            },
            "mtt": {"all": _CPU_TRAJECTORY},
            "factorization": {"all": _CPU_TRAJECTORY},
            "sre2l": {"all": {"iterations": 200}},
            "herding": {"all": {"train_epochs": 1}},
            "kcenter": {"all": {"train_epochs": 1}},
        },
        eval_epochs=300,
        sets=3,
        nets=3,
        whole_epochs=1,
        teacher_epochs=1,
        student_epochs=100,
        curve=(0, 25, 50, 100, 200),
    ),
    "quick": Preset(
        name="quick",
        summary="a smoke run on small data (the bundled digits at 16 px: seconds per method)",
        image_size=16,
        methods={
            "dm": {"all": {"iterations": 150, "batch_real": 64}},
            "dc": {"all": {"iterations": 10, "batch_real": 64, "outer_loop": 5, "inner_loop": 5}},
            "dsa": {"all": {"iterations": 10, "batch_real": 64, "outer_loop": 5, "inner_loop": 5}},
            "mtt": {"all": _QUICK_TRAJECTORY},
            "factorization": {"all": _QUICK_TRAJECTORY},
            "sre2l": {"all": {"iterations": 200}},
            "herding": {"all": {"train_epochs": 10}},
            "kcenter": {"all": {"train_epochs": 10}},
        },
        eval_epochs=300,
        sets=1,
        nets=3,
        whole_epochs=10,
        teacher_epochs=20,
        student_epochs=100,
        curve=(0, 50, 150),
    ),
}

# Seconds per iteration measured on a 2-core x86 CPU (2 threads) for MNIST (28x28x1, which ConvNet-3 pads to 32x32),
# 10 classes, with the cpu preset's options at ipc 1 and 10. ConvNet-3's cost is its 128-channel layers', so the
# start line scales them by the padded image area, not by the input channels.
_SECONDS_PER_ITERATION = {"dm": (0.7, 1.0), "dc": (3.0, 60.0), "dsa": (3.5, 70.0), "mtt": (0.5, 1.5),
                          "factorization": (1.0, 3.0), "sre2l": (0.05, 0.3)}  # fmt: skip


def default_preset(device: str) -> str:
    """``paper`` where a GPU runs the work, ``cpu`` otherwise."""
    return "paper" if str(device).startswith("cuda") else "cpu"


def method_options(preset: str, method: str, ipc: int) -> dict[str, Any]:
    """The preset's options for ``method`` at ``ipc``: its ``"all"`` entry, then the entry of the largest ipc key
    not above ``ipc`` (the smallest key when ``ipc`` is below all of them)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose from {', '.join(PRESETS)}")
    table = PRESETS[preset].methods.get(method, {})
    out = dict(table.get("all", {}))
    keys = sorted(k for k in table if isinstance(k, int))
    if keys:
        below = [k for k in keys if k <= ipc]
        out.update(table[max(below) if below else keys[0]])
    return out


def estimate_seconds(method: str, ipc: int, iterations: int, image_size: int, classes: int = 10) -> float | None:
    """A rough wall time on a 2-core CPU for ``iterations`` steps of ``method`` on ``image_size`` images (None: no
    estimate)."""
    if method not in _SECONDS_PER_ITERATION or not iterations:
        return None
    small, large = _SECONDS_PER_ITERATION[method]
    per = small if ipc < 10 else large
    edge = 32 if image_size == 28 else image_size  # the authors' 28 -> 32 padding
    return per * iterations * (edge / 32.0) ** 2 * (classes / 10.0)


def _shown(v: Any) -> str:
    if isinstance(v, dict):
        return "; ".join(f"{k}: {_shown(x)}" for k, x in v.items())
    if isinstance(v, tuple):
        return "/".join(str(x) for x in v)
    return f"{v:,}" if isinstance(v, int) and not isinstance(v, bool) else str(v)


def departures(preset: str, method: str, ipc: int, defaults: Mapping[str, Any] | None = None) -> list[str]:
    """``key: paper -> preset`` for each value where ``preset`` departs from the authors' command (``paper``) for
    ``method`` at ``ipc``: the method's options (an option a preset leaves out takes ``defaults``, the method's
    own), the evaluation's epochs and the sets x networks per row."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose from {', '.join(PRESETS)}")
    if preset == "paper" or method not in PAPER:
        return []
    base = dict(defaults or {})
    want, got = {**base, **method_options("paper", method, ipc)}, {**base, **method_options(preset, method, ipc)}
    keys = sorted(set(want) | set(got))
    out = [f"{k}: {_shown(want.get(k, 'the zoo default'))} -> {_shown(got.get(k, 'the zoo default'))}" for k in keys
           if want.get(k) != got.get(k) and not (k in ("outer_loop", "inner_loop") and got.get(k) is None)]  # fmt: skip
    out = [d.replace("-> None", "-> None (every op, no flips on digits)") if d.startswith("dsa_strategy") else d
           for d in out]  # fmt: skip
    p = PRESETS[preset]
    if p.eval_epochs is not None:
        out.append(f"eval.epochs: the authors' -> {p.eval_epochs}")
    sets, nets = _SETS_NETS[method]
    if (p.sets, p.nets) != (sets, nets):
        out.append(f"sets x nets: {sets} x {nets} -> {p.sets} x {p.nets}")
    if p.image_size is not None:
        out.append(f"image_size: the data's -> {p.image_size}")
    return out


def settings_table(preset: str, method: str, ipc: int, defaults: Mapping[str, Any] | None = None) -> str:
    """The authors' command for ``method`` (:data:`PAPER`, with sources) and, for another preset, its departures."""
    lines = [f"{method}, ipc {ipc}: the authors' command ({_SOURCES.get(method, 'no source recorded')})"]
    for r in PAPER.get(method, []):
        lines.append(f"  {r.key} = {_shown(r.value)}    [{r.source}]" + (f"  note: {r.note}" if r.note else ""))
    if method not in PAPER:
        lines.append("  not recorded yet: the zoo's defaults (zoo condense --list-options)")
    opts = method_options(preset, method, ipc)
    lines.append(f"preset {preset}: options " + (", ".join(f"{k}={_shown(v)}" for k, v in opts.items()) or "none"))
    if preset != "paper":
        dep = departures(preset, method, ipc, defaults)
        lines.append(f"departures from paper ({len(dep)}):" + "".join(f"\n  {d}" for d in dep))
    return "\n".join(lines)
