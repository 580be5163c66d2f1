"""Presets: iteration counts and evaluation settings chosen by name (``zoo condense --preset``,
``python -m zoo.bench.condense --preset``).

- ``paper``: the authors' counts and settings (DM 20,000 iterations, DC/DSA 1,000, MTT 5,000, factorization 15,000,
  SRe2L 1,000; 1,000 evaluation epochs with DSA, 300 without; experts and teachers trained as in their scripts).
  Hours per row on a GPU (``--device cuda``), days on a CPU.
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

__all__ = ["PRESETS", "Preset", "default_preset", "estimate_seconds", "method_options"]


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
        summary="the authors' iteration counts and evaluation (hours per row on a GPU)",
        image_size=None,
        methods={},
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
