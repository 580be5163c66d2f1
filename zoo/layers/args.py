"""Argument checks shared by the registry, the model configs and the commands."""

import difflib
import json
from collections.abc import Iterable, Mapping
from typing import Any


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
