"""Argument checks shared by the registry, the model configs and the commands."""

import argparse
import difflib
import json
from collections.abc import Iterable, Mapping
from typing import Any

import torch


def check_known_keys(
    kwargs: Mapping[str, Any], accepted: Iterable[str], what: str, accepted_label: str = "Accepted"
) -> None:
    """TypeError naming every key of ``kwargs`` that ``accepted`` lacks, each with the closest accepted key."""
    accepted = sorted(set(accepted))
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(k, accepted, n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise TypeError(
            f"{what} got unexpected argument(s) {', '.join(hints)}. {accepted_label}: {', '.join(accepted)}"
        )


def parse_json_object(text: str | None, flag: str) -> dict[str, Any]:
    """A command's JSON-object option (``--model-args '{"num_classes": 10}'``); {} when not given; ValueError
    naming ``flag`` otherwise."""
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError as e:
        raise ValueError(f"{flag} must be a JSON object, e.g. '{{\"num_classes\": 10}}' ({e})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object, e.g. '{{\"num_classes\": 10}}'")
    return value


def int_between(low: int, high: int | None = None):
    """An argparse ``type`` for an int in ``low .. high`` (no upper bound for None): a value outside is the
    command's usage error (one line, exit status 2) before any work, not a failure in the middle of it."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"{low}..{high}" if high is not None else f"{low} or more"
            raise argparse.ArgumentTypeError(f"{value} is out of range: give {bound}")
        return value

    parse.__name__ = "int"  # argparse names the type in its messages
    return parse


def device_here(text: str) -> str:
    """An argparse ``type`` for ``--device``: ``cpu`` or ``cuda[:N]``, and a CUDA device only where torch finds one,
    so that a run that cannot start is the command's usage error before anything is built or spawned."""
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device: use cpu or cuda") from None
    if device.type not in ("cpu", "cuda"):
        raise argparse.ArgumentTypeError(f"{text}: the commands run on cpu or cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(
            f"{text}, but torch finds no CUDA device here: run on a GPU machine or use cpu"
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text}, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return text


def add_device(parser: argparse.ArgumentParser) -> None:
    """A command's ``--device`` (cpu, the default, or cuda), checked by :func:`device_here` when it is read."""
    parser.add_argument("--device", type=device_here, default="cpu", help="cpu or cuda (default: cpu)")
