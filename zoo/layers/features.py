"""Feature-extraction helpers shared by the vision families."""

from collections.abc import Sequence

__all__ = ["GLOBAL_POOLS", "PoolingError", "StagePruningMixin", "check_drop_rates", "check_head_args", "take_indices"]

# timm's pooling names the heads take ("": no pooling); the concatenating ones (catavgmax) would double the width
GLOBAL_POOLS = ("avg", "max", "avgmax", "")


class PoolingError(ValueError, AssertionError):
    """A pooling name the head cannot take. An AssertionError too: timm's models refuse concatenating pools
    (``catavgmax``) with one, and timm's callers (its tests, its reset helpers) catch that."""


def check_head_args(num_classes=0, global_pool=None, pools: Sequence[str] = GLOBAL_POOLS) -> None:
    """Clear errors for an impossible classifier size or pooling mode (None = not given; ``pools``: the modes the
    model has, ``""`` being no pooling)."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 0:
        raise ValueError(f"num_classes must be a non-negative int (0 removes the classifier), got {num_classes!r}")
    if global_pool is not None and global_pool not in pools:
        names = " or ".join(repr(p) + (" (no pooling)" if p == "" else "") for p in pools)
        raise PoolingError(f"global_pool must be {names}, got {global_pool!r}")


def check_drop_rates(**rates) -> None:
    """Clear errors for a dropout or stochastic-depth probability outside [0, 1), at build time (not at the first
    training step); call as ``check_drop_rates(drop_rate=..., drop_path_rate=...)``."""
    for name, rate in rates.items():
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
            raise ValueError(f"{name} is a probability in [0, 1) (0 turns it off), got {rate!r}")


def take_indices(num_stages: int, indices: int | Sequence[int] | None) -> list[int]:
    """Absolute stage indices for timm's ``forward_intermediates`` convention: None = all, an int n = the
    last n, a sequence = those indices (negative ones count from the end); out of range raises ValueError."""
    if indices is None:
        return list(range(num_stages))
    if isinstance(indices, int):
        if not 0 < indices <= num_stages:
            raise ValueError(f"indices={indices} asks for the last {indices} stages; the model has {num_stages}")
        return list(range(num_stages - indices, num_stages))
    take = []
    for i in indices:
        if not -num_stages <= i < num_stages:
            raise ValueError(
                f"stage index {i} is out of range for {num_stages} stages "
                f"(valid: 0..{num_stages - 1} or negative from the end)"
            )
        take.append(i % num_stages)
    return take


class StagePruningMixin:
    """timm's ``prune_intermediate_layers`` for models with ``stages``, ``feature_info``, a ``head`` with a
    ``norm`` and ``fc``, ``reset_classifier`` and ``_drop_head_norm``."""

    def prune_intermediate_layers(
        self, indices: int | list[int] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        """Keep the stages up to the last of ``indices`` (what ``forward_intermediates`` needs for them).

        As timm's: when stages go, or ``prune_head``, the classifier and pooling go (``forward`` returns the last
        kept stage's map and ``reset_classifier`` puts a head sized for it back) and so does the final norm, which
        is sized for the last stage; ``prune_norm`` drops the norm alone. ``prune_head=False`` at the last stage
        changes nothing."""
        take = take_indices(len(self.stages), indices)
        last = max(take)
        prune_end = last < len(self.stages) - 1
        self.stages = self.stages[: last + 1]
        if prune_end:
            self.num_features = self.head_hidden_size = self.feature_info[last]["num_chs"]
        if prune_head or prune_end:
            self.reset_classifier(0, "")
        if prune_head or prune_end or prune_norm:
            self._drop_head_norm()
        return take
