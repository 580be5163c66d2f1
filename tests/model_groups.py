"""Picking one model per group of registered names: the smallest of each series, family or tiny structure, which
the default run checks, and the tiers of a suite's cases (:func:`tiered`): the default run, -m slow (CI), -m sweep."""

import pytest

from zoo.registry import get_entry


def series(name: str) -> str:
    """A model's series: its name up to the first underscore (``caformer_s18`` -> ``caformer``)."""
    return name.split("_", 1)[0]


def smallest_of_each(names, group) -> list[str]:
    """The smallest model of each group of ``names`` (``group(name)`` names its group): the fewest parameters in the
    authors' table, then the first name; sorted by name."""
    groups = {}
    for name in names:
        groups.setdefault(group(name), []).append(name)
    return sorted(min(g, key=lambda n: (get_entry(n).reference.get("params") or 0, n)) for g in groups.values())


def tiered(names, default, slow=()) -> list:
    """``names`` as pytest parameters: those in ``default`` in the default run, those in ``slow`` under -m slow (CI
    runs it), every other under -m sweep (by hand). A generic suite checks each structure by default or in CI: the
    other sizes of a series run the same code on other widths and depths, so they are the sweep's."""
    default, slow = set(default), set(slow)
    mark = {
        n: () if n in default else (pytest.mark.slow,) if n in slow else (pytest.mark.slow, pytest.mark.sweep)
        for n in names
    }
    return [pytest.param(n, marks=mark[n], id=n) for n in names]
