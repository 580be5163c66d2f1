"""Presets: iteration counts and evaluation settings chosen by name (``zoo condense --preset``,
``zoo bench condense --preset``).

- ``paper``: each method's authors' command, as their script runs it (:data:`PAPER`: every value with the script
  and line it comes from; where the README names a per-dataset setting it wins, and the entry says so). Their
  ``--Iteration N`` loops ``range(N + 1)`` and updates the images at every pass, so the set they save has N + 1
  updates: the preset's ``iterations`` (which counts updates) is N + 1. Hours per row on a GPU (``--device cuda``),
  days on a CPU. ``zoo condense --preset paper --print-settings`` prints the table.
- ``cpu``: the counts a two-core CPU can run on 28x28 MNIST / Fashion-MNIST (ConvNet-3): every method at reduced
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

from .augment import dc_augment_strategy, dsa_strategy

__all__ = [
    "PAPER",
    "PRESETS",
    "Preset",
    "Setting",
    "default_preset",
    "departures",
    "estimate_seconds",
    "eval_protocol",
    "method_options",
    "paper_value",
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
_MTT_REPO = "GeorgeCazenavette/mtt-distillation@50dccea"
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
        Setting(
            "iterations",
            5001,
            "distill.py:431 --Iteration 5000; :185 range(0, Iteration+1), an update each pass",
            "readme.md has no MNIST (or Fashion-MNIST) command: on MNIST the script's defaults are the command",
        ),
        Setting(
            "syn_steps",
            20,
            "distill.py:456",
            "readme.md's two commands: :88 CIFAR-100 ipc 1 and :106 ImageNet subsets, both 20; its full "
            "hyper-parameter table (:93-95) is an image (the zoo's mtt.MTT_TABLE, used without a preset)",
        ),
        Setting("expert_epochs", 3, "distill.py:455", "readme.md:88 3 (CIFAR-100 ipc 1), :106 2 (ImageNet)"),
        Setting("max_start_epoch", 25, "distill.py:457", "readme.md:88 20 (CIFAR-100 ipc 1), :106 10 (ImageNet)"),
        Setting("lr_img", 1000.0, "distill.py:433", "readme.md:88 and :106 1000"),
        Setting("lr_lr", 1e-05, "distill.py:434", "readme.md:88 1e-05, :106 1e-06"),
        Setting("lr_teacher", 0.01, "distill.py:435", "readme.md:88 and :106 0.01"),
        Setting("momentum", 0.5, "distill.py:138-139"),
        Setting("batch_syn", 0, "distill.py:440 --batch_syn None (every image each step)"),
        Setting("init", "real", "distill.py:443 --pix_init real"),
        Setting(
            "dsa_strategy",
            _FULL,
            "distill.py:449, buffer.py:122",
            "flips on every dataset as the scripts run (no README line for digits); the zoo without a preset drops "
            "flips on MNIST / SVHN",
        ),
        Setting("num_experts", 100, "buffer.py:116 (readme.md:80 --num_experts=100)"),
        Setting("train_epochs", 50, "buffer.py:126 (readme.md:80, :82 '50 epochs with the default learning rate')"),
        Setting("expert_lr", 0.01, "buffer.py:117 --lr_teacher"),
        Setting("expert_momentum", 0.0, "buffer.py:129 --mom"),
        Setting("expert_weight_decay", 0.0, "buffer.py:130 --l2"),
        Setting("expert_batch", 256, "buffer.py:118 --batch_train"),
        Setting("eval.epochs", 1000, "distill.py:430 --epoch_eval_train (:49 leaves it, not forced)"),
        Setting("eval.dsa_strategy", _FULL, "distill.py:449 (the evaluation augments with args.dsa_strategy)"),
        Setting("eval.lr", "learned", "distill.py:210 args.lr_net = syn_lr.item() (the set's learned lr)"),
        Setting("eval.batch", 256, "distill.py:441 --batch_train"),
        Setting("sets x nets", "1 x 5", "distill.py:426 --num_eval 5"),
    ],
    "factorization": [
        Setting(
            "iterations",
            15001,
            "distill_fac.py:458 --Iteration 15000; :176 range(0, Iteration+1), an update each pass (:383)",
            "the scripts are CIFAR-10's only (README:42-50: run_cifar10_ipc{1,10,50}_style5.sh): no MNIST command; "
            "other data take the script of the nearest ipc",
        ),
        Setting("n_hal", 5, "run_cifar10_ipc{1,10,50}_style5.sh:4 --n_style=5"),
        Setting("n_bases", 0, "the scripts' --ipc (ipc bases per class, distill_fac.py:102)", "0: ipc bases"),
        Setting(
            "budget",
            False,
            "distill_fac.py:102-104 (hallucinators on top of ipc bases)",
            "the zoo's own default (True) keeps bases + hallucinators within the ipc storage",
        ),  # fmt: skip
        Setting(
            "hal_init",
            "authors",
            "distill_fac.py:103 StyleTranslator (PyTorch's default init)",
            "the zoo's own default is identity",
        ),  # fmt: skip
        Setting("syn_steps", {1: 50, 10: 30, 50: 30}, "run_cifar10_ipc{1,10,50}_style5.sh:5"),
        Setting("expert_epochs", {1: 2, 10: 2, 50: 2}, "run_cifar10_ipc{1,10,50}_style5.sh:6"),
        Setting("max_start_epoch", {1: 2, 10: 20, 50: 20}, "run_cifar10_ipc{1,10,50}_style5.sh:7"),
        Setting("lr_img", {1: 100.0, 10: 100.0, 50: 100.0}, "run_cifar10_ipc{1,10,50}_style5.sh:9"),
        Setting("lr_lr", {1: 1e-07, 10: 1e-05, 50: 1e-05}, "run_cifar10_ipc{1,10,50}_style5.sh:10"),
        Setting("lr_teacher", {1: 0.01, 10: 0.001, 50: 0.01}, "run_cifar10_ipc{1,10,50}_style5.sh:12"),
        Setting("lr_hal", 100.0, "run_cifar10_ipc{1,10,50}_style5.sh:15 --lr_style 100"),
        Setting("lambda_club", 0.1, "run_cifar10_ipc{1,10,50}_style5.sh:16"),
        Setting("lambda_contrast", 0.1, "run_cifar10_ipc{1,10,50}_style5.sh:17"),
        Setting("lambda_cls", 1.0, "run_cifar10_ipc{1,10,50}_style5.sh:18"),
        Setting("lambda_likeli", 0.1, "run_cifar10_ipc{1,10,50}_style5.sh:19", "distill_fac.py:504's default is 1"),
        Setting("momentum", 0.95, "distill_fac.py:123-124 (images and hallucinators)"),
        Setting("lr_momentum", 0.9, "distill_fac.py:126"),
        Setting("extractor_lr", 0.001, "distill_fac.py:125"),
        Setting("extractor_momentum", 0.9, "distill_fac.py:125"),
        Setting("min_syn_lr", 0.001, "distill_fac.py:386 syn_lr.clip(min=0.001)"),
        Setting("temperature", 0.07, "contrastive_loss.py:8 SupConLoss(temperature=0.07)"),
        Setting("batch_syn", 0, "distill_fac.py:467 --batch_syn None"),
        Setting("init", "real", "run_cifar10_ipc{1,10,50}_style5.sh:11 --pix_init real"),
        Setting("dsa_strategy", _FULL, "distill_fac.py:476, buffer.py:121", "flips on every dataset, as run"),
        Setting("num_experts", 100, "README:39 --num_experts=100 (buffer.py:115)"),
        Setting("train_epochs", 50, "README:39 --train_epochs=50 (buffer.py:125)"),
        Setting("expert_lr", 0.01, "buffer.py:116 --lr_teacher"),
        Setting("expert_momentum", 0.0, "buffer.py:73 SGD(momentum=0, weight_decay=0)"),
        Setting("expert_batch", 256, "buffer.py:117 --batch_train"),
        Setting("eval.epochs", 1000, "distill_fac.py:456 --epoch_eval_train"),
        Setting("eval.dsa_strategy", _FULL, "distill_fac.py:476 (the evaluation augments with args.dsa_strategy)"),
        Setting("eval.lr", "learned", "distill_fac.py:201 args.lr_net = syn_lr.item() (the set's learned lr)"),
        Setting("eval.batch", 256, "distill_fac.py:468 --batch_train"),
        Setting("sets x nets", "1 x 5", "distill_fac.py:452 --num_eval 5"),
    ],
    "sre2l": [
        Setting(
            "iterations",
            1000,
            "small_dataset/recover_cifar.sh:8 --iteration 1000 (README_CIFAR.md:26)",
            "CIFAR-100's command (the only small-data one; 4000 at ImageNet, recover/recover.sh:6); no MNIST command",
        ),
        Setting("lr_img", 0.25, "small_dataset/recover_cifar.sh:7 --lr 0.25 (Adam betas 0.5/0.9, recover_cifar.py:69)"),
        Setting("r_bn", 0.01, "small_dataset/recover_cifar.sh:9 --r-bn 0.01"),
        Setting("first_bn_multiplier", 10.0, "small_dataset/recover_cifar.py:216"),
        Setting("batch", 100, "small_dataset/recover_cifar.sh:6 --batch-size 100"),
        Setting("jitter_mode", "cifar", "small_dataset/recover_cifar.py (the roll, no crop or flip)"),
        Setting(
            "jitter",
            4,
            "small_dataset/recover_cifar.py:211 --jitter 4 (at 32 px)",
            "the zoo's own default keeps the proportion (size // 8: 3 px at 28 px)",
        ),  # fmt: skip
        Setting(
            "eval.epochs",
            400,
            "small_dataset/relabel_cifar.sh:2 --epochs 400",
            "the zoo trains the student with RDED's recipe (zoo.condense.student); the authors relabel with FKD",
        ),  # fmt: skip
        Setting("sets x nets", "1 x 1", "relabel_cifar.sh: one student per set"),
    ],
    "rded": [
        Setting(
            "n_candidates",
            300,
            "scripts/cifar10_10ipc_conv3_to_conv3_cr5.sh:6 --mipc 300",
            "CIFAR-10's ConvNet-3 command (the closest to MNIST; the repo has no MNIST command)",
        ),
        Setting("n_crops", 5, "scripts/cifar10_10ipc_conv3_to_conv3_cr5.sh:5 --num-crop 5"),
        Setting(
            "factor", 1, "scripts/cifar10_10ipc_conv3_to_conv3_cr5.sh:4 --factor 1", "argument.py:56's default is 2"
        ),
        Setting("crop_scale", [0.08, 1.0], "argument.py:109, :112 --min/max-scale-crops"),
        Setting("eval.epochs", 300, "scripts/cifar10_10ipc_conv3_to_conv3_cr5.sh:9 --re-epochs 300"),
        Setting("sets x nets", "1 x 1", "main.py: one student per set"),
    ],
}
_SOURCES = {
    "dm": _DC_REPO,
    "dc": _DC_REPO,
    "dsa": _DC_REPO,
    "mtt": _MTT_REPO,
    "factorization": "Huage001/DatasetFactorization@60c9128",
    "sre2l": "VILA-Lab/SRe2L@8d00cba (SRe2L/*small_dataset)",
    "rded": "LINs-lab/RDED@3f6453d",
}
_SETS_NETS = {"dm": (5, 5), "dc": (5, 20), "dsa": (5, 20), "mtt": (1, 5), "factorization": (1, 5), "sre2l": (1, 1),
              "rded": (1, 1)}  # fmt: skip


def _per_ipc(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, int) for k in value)


def _paper_methods() -> dict[str, dict[Any, dict[str, Any]]]:
    """The ``paper`` preset's options from :data:`PAPER`: a row's value, or per ipc (a dict keyed by ipc; the
    outer / inner loop pair splits into its two options). ``eval.*``, ``sets x nets`` and per-dataset rows (a dict
    keyed by dataset names: resolved where the data is known, :func:`paper_value`) are not method options."""
    out: dict[str, dict[Any, dict[str, Any]]] = {}
    for method, rows in PAPER.items():
        table: dict[Any, dict[str, Any]] = {"all": {}}
        for r in rows:
            if r.key.startswith("eval.") or r.key == "sets x nets":
                continue
            if _per_ipc(r.value):
                for ipc, v in r.value.items():
                    if r.key == "outer_loop / inner_loop":
                        table.setdefault(ipc, {}).update(outer_loop=v[0], inner_loop=v[1])
                    else:
                        table.setdefault(ipc, {})[r.key] = v
            elif not isinstance(r.value, dict):
                table["all"][r.key] = r.value
        out[method] = table
    out["dm"]["all"]["dsa_strategy"] = _FULL  # the script's default on every dataset (see PAPER)
    return out


def paper_value(method: str, key: str, dataset: str = "", default: Any = None) -> Any:
    """The value of ``key`` in the authors' command for ``method`` (:data:`PAPER`) on ``dataset``: a per-dataset
    row takes the entry that names the dataset (``"mnist, svhn"``), else ``"other"``; ``default`` where no row."""
    for r in PAPER.get(method, []):
        if r.key != key:
            continue
        if isinstance(r.value, dict) and not _per_ipc(r.value):
            for names, v in r.value.items():
                if dataset and dataset in [n.strip() for n in names.split(",")]:
                    return v
            return r.value.get("other", default)
        return r.value
    return default


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

# Seconds per iteration, two threads, for MNIST (28x28x1, which ConvNet-3 pads to 32x32), 10 classes, with the cpu
# preset's options at ipc 1 and 10: a rough start line, not a benchmark (where they came from:
# results/notes/code_figures.md). ConvNet-3's cost is its 128-channel layers', so the
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
    """A rough wall time on a two-core CPU for ``iterations`` steps of ``method`` on ``image_size`` images (None: no
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


_PATHS = ("teacher", "teacher_weights", "buffer")  # where a run reads from, not a setting


def eval_protocol(preset: str, method: str, dataset: str = "", student: bool = False) -> dict[str, Any]:
    """How a set of ``method`` on ``dataset`` is evaluated under ``preset``: ``epochs``, ``augment`` (``DSA
    <strategy>``, ``DC <strategy>`` or ``none``), ``lr`` (a number, or ``learned``: the set's own, MTT's and
    factorization's ``eval_lr``) and ``batch``. ``paper``: the authors' (:data:`PAPER`'s ``eval.*`` rows; a method
    without them: the zoo's protocol at its authors' epochs). Other presets: the zoo's protocol (DSA without flips on
    digits, DC's augmentation for ``dc``, lr 0.01, batch 256) at the preset's ``eval_epochs``. ``student``: the
    teacher-relabelling student (rded, sre2l), whose epochs are the preset's ``student_epochs`` (``paper``: the
    authors')."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose from {', '.join(PRESETS)}")
    p = PRESETS[preset]
    if student:
        epochs = (
            p.student_epochs if preset != "paper" else paper_value(method, "eval.epochs", dataset, p.student_epochs)
        )
        return {"epochs": epochs, "augment": "the student recipe", "lr": "the student recipe", "batch": "auto"}
    dc = dc_augment_strategy(dataset) if method == "dc" else None
    augment = (f"DC {dc}" if dc else "none") if method == "dc" else f"DSA {dsa_strategy(dataset)}"
    out = {"epochs": 1000 if method != "dc" or dc else 300, "augment": augment, "lr": 0.01, "batch": 256}
    if preset != "paper":
        return {**out, "epochs": p.eval_epochs or out["epochs"]}
    strategy = paper_value(method, "eval.dsa_strategy", dataset)
    if strategy:
        out["augment"] = f"DSA {strategy}"
    for key in ("epochs", "lr", "batch"):
        out[key] = paper_value(method, f"eval.{key}", dataset, out[key])
    return out


def departures(
    preset: str,
    method: str,
    ipc: int,
    defaults: Mapping[str, Any] | None = None,
    options: Mapping[str, Any] | None = None,
    dataset: str = "",
    student: bool = False,
) -> list[str]:
    """``key: paper -> preset`` for each value where ``preset`` departs from the authors' command (``paper``) for
    ``method`` at ``ipc``: the method's options (an option a preset leaves out takes ``defaults``, the method's
    own), the evaluation (:func:`eval_protocol` on ``dataset``) and the sets x networks per row. ``options``: the
    options a run resolved (a set's ``condense.json``: every option, hand-given ones included, against the authors';
    sets x networks, a table row's, are then left out)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose from {', '.join(PRESETS)}")
    if preset == "paper" and options is None:
        return []
    out: list[str] = []
    if method in PAPER:
        base = dict(defaults or {})
        want = {**base, **method_options("paper", method, ipc)}
        got = {**base, **(dict(options) if options is not None else method_options(preset, method, ipc))}
        keys = sorted((set(want) | set(got)) - set(_PATHS))
        out = [f"{k}: {_shown(want.get(k, 'the zoo default'))} -> {_shown(got.get(k, 'the zoo default'))}"
               for k in keys if _differ(want.get(k), got.get(k)) and not _same_there(k, want, got, dataset)
               and not (k in ("outer_loop", "inner_loop") and got.get(k) is None)]  # fmt: skip
        out = [d.replace("-> None", "-> None (every op, no flips on digits)") if d.startswith("dsa_strategy") else d
               for d in out]  # fmt: skip
    want_eval = eval_protocol("paper", method, dataset, student)
    got_eval = eval_protocol(preset, method, dataset, student)
    out += [f"eval.{k}: {_shown(want_eval[k])} -> {_shown(got_eval[k])}" for k in want_eval
            if want_eval[k] != got_eval[k]]  # fmt: skip
    p = PRESETS[preset]
    if options is None and method in _SETS_NETS:
        sets, nets = _SETS_NETS[method]
        if (p.sets, p.nets) != (sets, nets):
            out.append(f"sets x nets: {sets} x {nets} -> {p.sets} x {p.nets}")
    if p.image_size is not None:
        out.append(f"image_size: the data's -> {p.image_size}")
    return out


def _same_there(key: str, want: Mapping[str, Any], got: Mapping[str, Any], dataset: str) -> bool:
    """Whether a DSA strategy left to the zoo (None) resolves, on the named dataset, to the one it is compared with."""
    return (
        key == "dsa_strategy"
        and bool(dataset)
        and dsa_strategy(dataset, want.get(key)) == dsa_strategy(dataset, got.get(key))
    )


def _differ(a: Any, b: Any) -> bool:
    """Values that differ as a results file holds them (a tuple equals the list JSON makes of it)."""
    norm = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
    return norm(a) != norm(b)


def _is_auto(key: str, shown: str, resolved: Mapping[str, Any] | None) -> bool:
    """Whether a shown value is one a run decides itself: ``auto``, or None (with or without its explanation) where
    ``resolved`` names the key (elsewhere None is a value of its own)."""
    word = shown.split(" ", 1)[0]
    return resolved is not None and (word == "auto" or (word == "None" and key in resolved))


def _auto_shown(shown: str, value: Any, context: str) -> str:
    """``auto`` (a shown ``auto`` / ``None``, its explanation kept) with what it resolves to: ``auto (= 10 for mnist
    ipc 1)``; ``value`` None: not known before the run."""
    why = shown.split(" ", 1)[1].strip("()") + "; " if " " in shown else ""
    if value is None:
        return f"auto ({why}resolved when the run reads the data)"
    return f"auto ({why}= {_shown(value)} {context})"


def _with_resolved(key: str, value: Any, resolved: Mapping[str, Any] | None, context: str) -> str:
    shown = _shown(value)
    if not _is_auto(key, shown, resolved):
        return shown
    return _auto_shown(shown, (resolved or {}).get(key), context)


def _departure_resolved(line: str, resolved: Mapping[str, Any] | None, context: str) -> str:
    """A departure ``key: paper -> preset`` whose preset value is ``auto`` / None, with what it resolves to."""
    key, _, rest = line.partition(": ")
    before, arrow, after = rest.rpartition(" -> ")
    if not arrow or not _is_auto(key, after, resolved):
        return line
    return f"{key}: {before} -> {_auto_shown(after, (resolved or {}).get(key), context)}"


def settings_table(
    preset: str,
    method: str,
    ipc: int,
    defaults: Mapping[str, Any] | None = None,
    dataset: str = "",
    student: bool = False,
    resolved: Mapping[str, Any] | None = None,
    context: str = "",
) -> str:
    """The authors' command for ``method`` (:data:`PAPER`, with sources), the preset's options and evaluation on
    ``dataset`` and, for a preset other than ``paper``, its departures. ``resolved``: what each value a run decides
    itself (``auto`` or None: ``jitter``, ``factor``, ``dsa_strategy``, ``eval.batch``, ...) resolves to for this
    data and ipc, shown beside it as ``auto (= VALUE CONTEXT)`` (a key missing: resolved when the run reads the
    data)."""
    lines = [f"{method}, ipc {ipc}: the authors' command ({_SOURCES.get(method, 'no source recorded')})"]
    for r in PAPER.get(method, []):
        lines.append(f"  {r.key} = {_shown(r.value)}    [{r.source}]" + (f"  note: {r.note}" if r.note else ""))
    if method not in PAPER:
        lines.append("  not recorded yet: the zoo's defaults (zoo condense --list-options)")
    opts = method_options(preset, method, ipc)
    shown = [f"{k}={_with_resolved(k, v, resolved, context)}" for k, v in opts.items()]
    lines.append(f"preset {preset}: options " + (", ".join(shown) or "none"))
    ev = eval_protocol(preset, method, dataset, student)
    shown = [f"{k}={_with_resolved(f'eval.{k}', v, resolved, context)}" for k, v in ev.items()]
    lines.append(f"preset {preset}: evaluation on {dataset or 'other data'}: " + ", ".join(shown))
    if preset != "paper":
        dep = [_departure_resolved(d, resolved, context)
               for d in departures(preset, method, ipc, defaults, dataset=dataset, student=student)]  # fmt: skip
        lines.append(f"departures from paper ({len(dep)}):" + "".join(f"\n  {d}" for d in dep))
    return "\n".join(lines)
