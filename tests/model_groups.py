"""Picking one model per group of registered names: the smallest of each series, family or tiny structure, which
the default run checks while -m slow checks the rest."""

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
