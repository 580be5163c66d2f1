"""``zoo condense``: condense a dataset into a synthetic-set folder from the command line.

On many processes: ``torchrun --nproc-per-node N -m zoo condense ...`` (the same arguments; gloo on the CPU, one
GPU per process on CUDA). The method's work is split across the processes where it allows it and the set equals
the one-process set for the same seed (:mod:`zoo.condense.distributed` says what each method splits); rank 0
prints, shows the progress bars, writes the folder and its checkpoints, and runs ``--eval-runs``.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import yaml

from ..data.sources import add_data_path_argument, cache_dir
from ..data.synthetic import META_FILE
from ..layers.args import device_here
from ..platform.allocator import keep_freed_memory
from ..registry import UnknownModelError, get_entry
from . import distributed
from .augment import dsa_strategy
from .core import (
    METHODS,
    STATE_DIR,
    CondenseError,
    _method_class,
    condense_checked,
    known_method,
    load_real,
    load_real_split,
    pick_device,
)
from .evaluate import EvalSettings, evaluate_set
from .presets import PRESETS, default_preset, estimate_seconds, eval_protocol, method_options, settings_table
from .rded import effective_factor
from .real import image_source
from .sre2l import jitter_settings
from .student import StudentSettings, default_student_batch, evaluate_with_teacher

__all__ = ["add_arguments", "run"]

SETTINGS_FILE = "settings.json"  # in the state folder: what the resumable state was made with


def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument(
        "--data",
        default="digits",
        help="digits | mnist | fashion_mnist | cifar10 | cifar100 | svhn (their files' folder: --data-path, or "
        "NAME:PATH; no path: downloaded into the zoo's cache) | an image folder (root/<class>/*) | a datasets folder",
    )
    add_data_path_argument(p)
    p.add_argument("--method", default="dm", help=f"one of {', '.join(sorted(METHODS))}")
    p.add_argument("--ipc", type=int, default=10, help="images per class (default 10)")
    p.add_argument("--out", default=None, help="the folder to write (default runs/condensed/METHOD_ipcN)")
    p.add_argument(
        "--preset",
        choices=["auto", *PRESETS],
        default="auto",
        help="iteration counts by name: cpu (minutes on a CPU), paper (the authors' counts, for a GPU), quick (a "
        "smoke run); auto (default): paper on CUDA, cpu otherwise",
    )
    p.add_argument("--iterations", type=int, default=None, help="optimisation steps (default: the preset's)")
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="edge the images are condensed at (default: the benchmark "
        "set's own, 28 for mnist / fashion_mnist and 32 for cifar / svhn; 32 for other data)",
    )
    p.add_argument("--teacher", default=None, help="rded, sre2l, herding, kcenter: a trained run or model folder")
    p.add_argument("--model", default=None, help="the matching network (default convnet_d3)")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method option (repeatable), e.g. lr_img=0.5",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--resume", action="store_true", help="continue from the last state saved in --out")
    p.add_argument("--save-every", type=int, default=100, help="save the resumable state every N iterations")
    p.add_argument("--overwrite", action="store_true", help="replace an --out folder that is not a synthetic set")
    p.add_argument(
        "--eval-runs",
        type=int,
        default=0,
        help="then train N ConvNet-3s on the set with the authors' evaluation for the data (rded / sre2l: their "
        "student recipe, relabelled by the teacher); print held-out top-1",
    )
    p.add_argument(
        "--eval-epochs",
        type=int,
        default=None,
        help="epochs of each evaluation run (default: the preset's: paper the authors' (1000 for DM, DSA, MTT, "
        "factorization and DC on MNIST), cpu 300; rded / sre2l students: paper the authors', cpu 100)",
    )
    p.add_argument("--list-options", action="store_true", help="print the method's options and defaults, then exit")
    p.add_argument(
        "--print-settings",
        action="store_true",
        help="print the preset's resolved settings for the method and ipc (with the authors' command and the script "
        "line each value comes from; a preset other than paper lists its departures), then exit",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def _options(args) -> dict:
    options, defaults = {}, METHODS[args.method].defaults
    for item in args.option:
        if "=" not in item:
            raise CondenseError(f"--option takes KEY=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip()
        try:
            options[key] = yaml.safe_load(value)
        except yaml.YAMLError:
            options[key] = value
        _check_type(key, value, options[key], defaults.get(key))
    for key in ("iterations", "teacher", "model"):
        if getattr(args, key) is not None:
            options[key] = getattr(args, key)
    return options


def _check_type(key: str, raw: str, value, default) -> None:
    """A CondenseError for an option whose value is not of its default's kind (a number, true/false)."""
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise CondenseError(f"--option {key}={raw}: {key} takes true or false (default {default})")
    elif isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
            raise CondenseError(f"--option {key}={raw}: {key} takes a number (default {default})")


def _check_args(args: argparse.Namespace) -> None:
    """One line for the arguments that cannot run, before any data is read."""
    if args.iterations is not None and args.iterations < 0:
        raise CondenseError(f"--iterations must be 0 or more, got {args.iterations}")
    if args.save_every < 1:
        raise CondenseError(f"--save-every must be 1 or more (iterations between saved states), got {args.save_every}")
    if args.ipc < 1:
        raise CondenseError(f"--ipc (images per class) must be 1 or more, got {args.ipc}")
    if args.eval_runs < 0 or (args.eval_epochs is not None and args.eval_epochs < 1):
        raise CondenseError("--eval-runs must be 0 or more and --eval-epochs 1 or more")
    if args.device != "auto":
        try:
            device_here(args.device)
        except argparse.ArgumentTypeError as e:
            raise CondenseError(f"--device {e} (or auto)") from None
    if args.model is not None:
        try:
            task = get_entry(args.model).task
        except UnknownModelError:
            raise CondenseError(f"--model {args.model} is not a zoo model: `zoo list` shows them") from None
        if task != "image-classification":
            raise CondenseError(
                f"--model {args.model} is a {task} model: condensation matches image classifiers (convnet_d3, the "
                "default, or another image-classification model from `zoo list`)"
            )


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _check_out(out: Path, source, args: argparse.Namespace, options: dict, image_size: int) -> None:
    """--out must be a folder that is not, does not contain and does not lie inside a source of the run (its data
    or teacher): the set is written there and ``--overwrite`` first removes what it holds. A finished set of other
    settings is replaced only with ``--overwrite``."""
    if out.exists() and not out.is_dir():
        raise CondenseError(f"--out {out} is a file: name a folder (new, empty or a synthetic set) to write the set to")
    cache = cache_dir().parent  # the zoo's cache: downloaded datasets, GGUF files, the tests' files
    if _inside(cache, out):
        raise CondenseError(
            f"--out {out} {'is' if out.resolve() == cache.resolve() else 'holds'} the zoo's cache {cache} "
            f"({'--overwrite would remove it' if args.overwrite else 'a set would be written into it'}): choose an "
            "--out folder of its own"
        )
    sources = [("--data", source.path), ("--teacher", args.teacher)]
    for flag, value in sources:
        if not value or not Path(value).exists():
            continue
        path = Path(value)
        if _inside(out, path) or _inside(path, out):
            where = "is" if out.resolve() == path.resolve() else "lies inside" if _inside(out, path) else "contains"
            raise CondenseError(
                f"--out {out} {where} the {flag} folder {path}: the set would be written over what it is made from "
                f"({'--overwrite removes it' if args.overwrite else 'new class folders added to it'}). Choose an "
                "--out outside it"
            )
    given = _settings(args, source, options, image_size)
    state = out / STATE_DIR / SETTINGS_FILE
    if args.resume and state.is_file():
        try:
            saved = json.loads(state.read_text())
        except ValueError:
            saved = None
        if isinstance(saved, dict):
            changed = _changed(saved, given)
            if changed:
                raise CondenseError(
                    f"--resume: the state in {out} was saved with other settings ({changed}); resume with those, or "
                    "start again without --resume"
                )
    meta_path = out / META_FILE
    saved = _saved_states(out)
    if saved and not meta_path.is_file() and not (args.resume or args.overwrite):
        raise CondenseError(
            f"--out {out} holds the saved state of a run that did not finish ({saved[0].name}): add --resume to go "
            "on from it, or --overwrite to start again (which deletes that state)"
        )
    if args.overwrite or args.resume or not meta_path.is_file():
        return
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError:
        return  # not a set this check can read; saving it names the problem
    if not isinstance(meta, dict):
        return
    pre, src = meta.get("preprocessing") or {}, meta.get("source") or {}
    recorded = {"method": meta.get("method"), "ipc": meta.get("ipc"), "seed": meta.get("seed")}
    recorded.update({"image_size": pre.get("image_size"), "data": src.get("kind"), "data path": src.get("path")})
    recorded.update({f"options.{k}": v for k, v in (meta.get("options") or {}).items()})
    changed = _changed(recorded, {k: v for k, v in given.items() if k in recorded})
    if changed:
        raise CondenseError(
            f"--out {out} holds a finished set made with other settings ({changed}): add --overwrite to replace it, "
            "or choose another --out"
        )


def _settings(args: argparse.Namespace, source, options: dict, image_size: int) -> dict:
    """What a run's set depends on, flat: method, ipc, seed, image size, the data and every option."""
    given = {"method": args.method, "ipc": args.ipc, "seed": args.seed, "image_size": image_size, "data": source.kind}
    given["data path"] = str(Path(source.path).resolve()) if source.path else None
    merged = {**METHODS[args.method].defaults, **options}
    given.update({f"options.{k}": v for k, v in sorted(merged.items()) if _jsonable(v)})
    return json.loads(json.dumps(given))  # as a file holds it (tuples as lists)


def _changed(recorded: dict, given: dict) -> str:
    """``key recorded -> given`` for the keys whose values differ (the data path only where both have one)."""
    keys = [
        k
        for k in given
        if recorded.get(k) != given[k] and not (k == "data path" and None in (recorded.get(k), given[k]))
    ]
    shown = [f"{k} {recorded.get(k)!r} -> {given[k]!r}" for k in keys]
    return ", ".join(shown[:6]) + (f" and {len(shown) - 6} more" if len(shown) > 6 else "")


def _write_settings(out: Path, settings: dict) -> list[Path]:
    """The run's settings beside its resumable state, for a later --resume to compare (written atomically).
    Returns the folders it created (removed again by :func:`_remove_settings` if the run stops before a state)."""
    folder = out / STATE_DIR
    made = [p for p in (out, folder) if not p.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{SETTINGS_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(settings, indent=1) + "\n")
    os.replace(tmp, folder / SETTINGS_FILE)
    return made


def _remove_settings(out: Path, made: list[Path]) -> None:
    """The folders :func:`_write_settings` made, if the run left nothing else in them."""
    if (out / STATE_DIR) in made and [p.name for p in (out / STATE_DIR).iterdir()] == [SETTINGS_FILE]:
        (out / STATE_DIR / SETTINGS_FILE).unlink()
    for folder in reversed(made):
        try:
            folder.rmdir()
        except OSError:
            pass  # not empty: the run's own


def _jsonable(v) -> bool:
    try:
        json.dumps(v)
        return True
    except TypeError:
        return False


def _saved_states(out: Path) -> list[Path]:
    """The resumable states an earlier run saved in ``out`` (``step_N.pt``, ``last.pt``)."""
    return [p for p in (out / STATE_DIR).glob("*.pt") if p.name == "last.pt" or p.name.startswith("step_")]


def _resume_hint(out: Path | None) -> str:
    """Where an interrupted run can go on from: the last state saved in ``out``, or none yet."""
    if out is not None and _saved_states(out):
        return f"the last state saved in {out} is kept: run the same command with --resume to go on from it"
    return "no state was saved yet (one is saved every --save-every iterations): run the same command to start over"


def run(args: argparse.Namespace) -> int:
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:  # started by torchrun
        if args.list_options:
            return _run(args) if int(os.environ.get("RANK", "0")) == 0 else 0
        try:
            state = distributed.init(args.device)
        except RuntimeError as e:
            print(f"zoo condense: error: {e}", file=sys.stderr)
            return 2
        try:
            return _run(args, str(state.device), state.is_main, state.world_size)
        finally:
            distributed.finish()
    return _run(args)


def _run(args: argparse.Namespace, device: str | None = None, main: bool = True, processes: int = 1) -> int:
    out = None
    try:
        known_method(args.method)
        if args.list_options:
            for k, v in METHODS[args.method].defaults.items():
                print(f"{k} = {v!r}")
            return 0
        _check_args(args)
        source = image_source(args.data, args.data_path)  # resolved here, once: condense_checked gets its tensors
        dev = pick_device(device or args.device)
        preset = default_preset(dev.type) if args.preset == "auto" else args.preset
        image_size = _image_size(args, preset, source)
        options = {**method_options(preset, args.method, args.ipc), **_options(args)}
        out = Path(args.out or f"runs/condensed/{args.method}_ipc{args.ipc}")
        if not args.print_settings:  # (printing writes nothing: any --out will do)
            _check_out(out, source, args, options, image_size)
        cls = _method_class(args.method, args.ipc, options)
        if args.print_settings:  # after every check a run makes of its arguments: it prints only what would run
            print(_settings_table(args))
            return 0
        made = _write_settings(out, _settings(args, source, options, image_size)) if main else []
        if main:
            print(_start_line(args.method, source, args.ipc, preset, options, image_size), flush=True)
            if processes > 1:
                print(f"zoo condense: {processes} processes, sharing out {_split(args.method)}", flush=True)
        t0 = time.perf_counter()
        try:  # the per-class loops reuse their large tensors' pages instead of faulting them anew (only meanwhile)
            with keep_freed_memory():
                real = load_real(source, image_size=image_size)
                synset = condense_checked(cls, real, args.ipc, out, args.seed, dev, args.resume, args.save_every,
                                          main and not args.no_progress, args.overwrite, preset, options)  # fmt: skip
        except BaseException:
            _remove_settings(out, made)
            raise
    except CondenseError as e:
        if main:  # the same error on every process: rank 0 says it
            print(f"zoo condense: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # states are written atomically: the last saved one is intact
        if main:
            print(f"zoo condense: interrupted; {_resume_hint(out)}", file=sys.stderr)
        return 130
    if not main:
        return 0
    distributed.finish()  # the evaluation runs on rank 0 alone
    m = synset.meta
    print(
        f"wrote {out}: {len(synset)} images ({m['ipc']} per class, {len(synset.class_names)} classes), "
        f"{synset.stored_values:,} stored values, {time.perf_counter() - t0:.1f} s, peak memory "
        f"{m['peak_memory_mb']:.0f} MB"
    )
    if args.eval_runs:
        test = load_real_split(m["source"], m["preprocessing"])
        name = str(m["source"].get("name", ""))
        if METHODS[args.method].needs_teacher:
            epochs = args.eval_epochs or eval_protocol(preset, args.method, name, student=True)["epochs"]
            what = f"students relabelled by the teacher, {epochs} epochs"
            accs = evaluate_with_teacher(synset, test, m["model"] or args.teacher,
                                         StudentSettings.for_data(test, epochs=epochs), runs=args.eval_runs,
                                         seed=args.seed, progress=not args.no_progress)  # fmt: skip
        else:
            settings = EvalSettings.for_preset(preset, name, args.method, m, epochs=args.eval_epochs)
            what = "ConvNet-3, " + (f"DSA {settings.dsa_strategy}" if settings.dsa else settings.dc_aug or "no aug.")
            what += f", {settings.epochs} epochs, lr {settings.lr:g}, preset {preset}"
            accs = evaluate_set(synset, test, settings, runs=args.eval_runs, seed=args.seed,
                                progress=not args.no_progress)  # fmt: skip
        mean = sum(accs) / len(accs)
        std = (sum((a - mean) ** 2 for a in accs) / max(len(accs) - 1, 1)) ** 0.5
        print(f"held-out top-1 ({test.source['split']}, {what}, {args.eval_runs} runs): {mean:.2f} +- {std:.2f}")
    return 0


def _image_size(args: argparse.Namespace, preset: str, source) -> int:
    """The edge a run's images take: ``--image-size``, the preset's, a benchmark's own, else 32."""
    return args.image_size or PRESETS[preset].image_size or (source.native_size if source.benchmark else 32)


def _class_count(source) -> int | None:
    """The classes of a benchmark set or the bundled digits without reading them (None: a folder's, unknown)."""
    b = source.benchmark
    if b is not None and b.class_names:
        return len(b.class_names)
    if source.kind == "cifar100":
        return 100
    return 10 if b is not None or source.kind == "digits" else None


def _auto_values(method: str, o: dict, dataset: str, ipc: int, size: int, classes: int | None) -> dict:
    """What each value a run of ``method`` with options ``o`` (its defaults under the preset's) decides itself
    (``auto`` / None) resolves to on ``dataset`` at ``ipc`` and ``size`` px: the DSA strategy, SRe2L's jitter,
    RDED's factor, a teacher method's student batch."""
    out: dict = {}
    if "dsa_strategy" in o:
        out["dsa_strategy"] = dsa_strategy(dataset, o["dsa_strategy"])
    if method == "sre2l":
        out["jitter_mode"], out["jitter"], out["flip"] = jitter_settings(size, o["jitter_mode"], o["jitter"], o["flip"])
    if method == "rded":
        out["factor"] = effective_factor(o["factor"], size, o["min_patch"])
    if METHODS[method].needs_teacher and classes:
        out["eval.batch"] = default_student_batch(ipc, classes)
    return out


def _settings_table(args: argparse.Namespace) -> str:
    """``--print-settings``: the preset's table for the method, ipc and data, each ``auto`` value beside what it
    resolves to there (``auto (= 10 for mnist ipc 1 at 28 px)``)."""
    preset = args.preset if args.preset != "auto" else default_preset(args.device if args.device != "auto" else "cpu")
    source = image_source(args.data, args.data_path)
    dataset = source.name.replace("-", "_")
    size = _image_size(args, preset, source)
    options = method_options(preset, args.method, args.ipc)  # the preset's, as the table shows them
    defaults = _resolved_defaults(args.method, dataset, args.ipc)
    resolved = _auto_values(args.method, {**defaults, **options}, dataset, args.ipc, size, _class_count(source))
    where = f"for {dataset} ipc {args.ipc} at {size} px"
    student = METHODS[args.method].needs_teacher
    return settings_table(preset, args.method, args.ipc, defaults, dataset, student, resolved, where)


def _resolved_defaults(method: str, dataset: str, ipc: int) -> dict:
    """The method's defaults as a run on ``dataset`` at ``ipc`` takes them (MTT and factorization: their published
    row for the data, below the preset's options)."""
    cls = METHODS[method]
    published = getattr(cls, "published_settings", None)
    return {**cls.defaults, **(published(dataset, ipc)[0] if published is not None else {})}


def _split(method: str) -> str:
    cls = METHODS[method]
    if cls.shards:
        return {"classes": "the classes", "batches": "the batches"}.get(cls.shards, cls.shards)
    if "num_experts" in cls.defaults:
        return "the expert buffer (the distillation runs whole on every process)"
    return "nothing: every process runs the method whole (rank 0 writes)"


def _start_line(method: str, source, ipc: int, preset: str, options: dict, image_size: int) -> str:
    """What is about to run, under which preset, and roughly for how long."""
    cls = METHODS[method]
    iterations = int(options.get("iterations", cls.defaults.get("iterations", 0)) or 0)
    paper = int(cls.defaults.get("iterations", 0) or 0)
    what = f"{iterations:,} iterations" + (f" (the paper's: {paper:,})" if paper and paper != iterations else "")
    if not paper:
        what = "no iterations (selection from the real images)"
    eta = estimate_seconds(method, ipc, iterations, image_size)
    when = f", about {_duration(eta)} on a 2-core CPU" if eta and preset != "paper" else ""
    return f"zoo condense: {method} on {source.spec}, ipc {ipc}, preset {preset}: {what}{when}"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 5400:
        return f"{round(seconds / 60)} min"
    return f"{seconds / 3600:.1f} h"
