"""Dynamic sparse training's settings (:class:`SparseConfig`) and which parameters get masks (the selectors)."""

import dataclasses
import difflib
import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

__all__ = [
    "GROWTHS",
    "INITS",
    "Selector",
    "SparseConfig",
    "default_selector",
    "large_kernel_selector",
    "select_params",
    "selected_params",
    "unwrap_model",
]

INITS = ("snip", "erk", "uniform", "weights")
GROWTHS = ("random", "gradient")

Selector = Callable[[str, nn.Parameter, nn.Module], bool]


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


@dataclass
class SparseConfig:
    """Settings of dynamic sparse training; the defaults are SLaK's (``main.py`` arguments and README recipes).

    Give ``sparsity`` (fraction of zeros) or ``density`` (fraction kept), not both unless they agree; with neither,
    density is 0.6 (sparsity 0.4). SLaK-T used ``prune_rate=0.5, update_frequency=2000``, S/B ``0.3, 100``.
    """

    sparsity: float | None = None
    density: float | None = None
    init: str = "snip"  # snip | erk | uniform | weights
    growth: str = "random"  # random | gradient
    prune_rate: float = 0.3  # fraction of each layer's active weights replaced per update (start)
    final_prune_rate: float = 0.005  # cosine decay target, reached at total_steps
    update_frequency: int | None = 100  # optimizer steps between mask updates; None: masks stay fixed
    exact_regrowth: bool = True  # False: the authors' Bernoulli regrowth (count only approximate)
    only_large_kernels: bool = False  # mask only depthwise convs with a kernel > large_kernel_threshold
    large_kernel_threshold: int = 5
    include: tuple[str, ...] = ()  # fnmatch patterns on parameter names; empty: everything selected
    exclude: tuple[str, ...] = ()
    dense_threshold: float = 0.99  # layers allocated at least this density stay dense
    erk_power_scale: float = 1.0
    seed: int | None = None  # None: drawn from torch's global generator

    def __post_init__(self):
        for key in ("sparsity", "density"):
            v = getattr(self, key)
            if v is not None and (not _is_number(v) or not 0.0 < v < 1.0):
                raise ValueError(f"SparseConfig.{key} must be a number strictly between 0 and 1, got {v!r}")
        if self.sparsity is None and self.density is None:
            self.density = 0.6
        if self.density is None:
            self.density = 1.0 - self.sparsity
        elif self.sparsity is not None and abs(self.density + self.sparsity - 1.0) > 1e-9:
            raise ValueError(
                f"SparseConfig got sparsity={self.sparsity} and density={self.density}, which do not "
                "add up to 1; give only one of them"
            )
        self.density = float(self.density)
        self.sparsity = 1.0 - self.density
        if self.init not in INITS:
            raise ValueError(f"SparseConfig.init must be one of {INITS}, got {self.init!r}")
        if self.growth not in GROWTHS:
            raise ValueError(f"SparseConfig.growth must be one of {GROWTHS}, got {self.growth!r}")
        if not _is_number(self.prune_rate) or not 0.0 < self.prune_rate <= 1.0:
            raise ValueError(f"SparseConfig.prune_rate must be in (0, 1], got {self.prune_rate!r}")
        if not _is_number(self.final_prune_rate) or not 0.0 <= self.final_prune_rate <= self.prune_rate:
            raise ValueError(
                f"SparseConfig.final_prune_rate must be in [0, prune_rate={self.prune_rate}], "
                f"got {self.final_prune_rate!r}"
            )
        uf = self.update_frequency
        if uf is not None and (not isinstance(uf, int) or isinstance(uf, bool) or uf < 1):
            raise ValueError(
                f"SparseConfig.update_frequency must be a positive integer (optimizer steps between "
                f"mask updates) or None for fixed masks, got {uf!r}"
            )
        for key in ("exact_regrowth", "only_large_kernels"):
            if not isinstance(getattr(self, key), bool):
                raise TypeError(f"SparseConfig.{key} must be true or false, got {getattr(self, key)!r}")
        lk = self.large_kernel_threshold
        if not isinstance(lk, int) or isinstance(lk, bool) or lk < 1:
            raise ValueError(f"SparseConfig.large_kernel_threshold must be a positive integer, got {lk!r}")
        for key in ("include", "exclude"):
            v = getattr(self, key)
            if isinstance(v, str):
                v = (v,)
            if v is None:
                v = ()
            if not isinstance(v, (list, tuple)) or not all(isinstance(p, str) for p in v):
                raise ValueError(f"SparseConfig.{key} must be a list of name patterns (fnmatch), got {v!r}")
            setattr(self, key, tuple(v))
        if not _is_number(self.dense_threshold) or not 0.0 < self.dense_threshold <= 1.0:
            raise ValueError(f"SparseConfig.dense_threshold must be in (0, 1], got {self.dense_threshold!r}")
        if not _is_number(self.erk_power_scale) or self.erk_power_scale < 0:
            raise ValueError(f"SparseConfig.erk_power_scale must be a number >= 0, got {self.erk_power_scale!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or isinstance(self.seed, bool)):
            raise ValueError(f"SparseConfig.seed must be an integer or None, got {self.seed!r}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> "SparseConfig":
        """Build from a mapping (a recipe's ``sparse:`` section); unknown keys are errors naming the closest one."""
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise TypeError(f"sparse settings must be a mapping of SparseConfig fields, got {type(d).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(names)}"
                raise ValueError(f"unknown sparse training setting {key!r}{hint}")
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["include"], d["exclude"] = list(self.include), list(self.exclude)
        return d


# --------------------------------------------------------------------------------------------------------------
# Which parameters get masks
# --------------------------------------------------------------------------------------------------------------


def default_selector(name: str, param: nn.Parameter, module: nn.Module) -> bool:
    """Every 2-D or 4-D parameter named ``weight`` (convs, linears, heads); not biases, norms, gamma, embeddings
    of positions or tokens stored under other names."""
    return param.ndim in (2, 4) and name.rsplit(".", 1)[-1] == "weight"


def large_kernel_selector(threshold: int = 5) -> Selector:
    """Depthwise conv weights whose kernel is larger than ``threshold`` on either axis (SLaK's rectangular
    (K x 5) / (5 x K) branches and square large kernels; not its 5 x 5 branch)."""

    def select(name: str, param: nn.Parameter, module: nn.Module) -> bool:
        if param.ndim != 4 or name.rsplit(".", 1)[-1] != "weight":
            return False
        if isinstance(module, nn.Conv2d):
            depthwise = module.groups > 1 and module.groups == module.in_channels
        else:  # a custom module holding a conv weight: (C_out, C_in / groups, kh, kw)
            depthwise = param.shape[1] == 1
        return depthwise and max(param.shape[-2:]) > threshold

    return select


def unwrap_model(model: nn.Module) -> nn.Module:
    """The module under DDP/DataParallel/torch.compile wrappers, so parameter names do not depend on them."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):
            model = model._orig_mod
        else:
            return model


def select_params(
    model: nn.Module, selector: Selector, include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> dict[str, nn.Parameter]:
    out: dict[str, nn.Parameter] = {}
    seen = set()
    for mod_name, module in model.named_modules():
        for p_name, p in module.named_parameters(recurse=False):
            name = f"{mod_name}.{p_name}" if mod_name else p_name
            if id(p) in seen or not p.requires_grad:
                continue
            if include and not any(fnmatch.fnmatchcase(name, pat) for pat in include):
                continue
            if any(fnmatch.fnmatchcase(name, pat) for pat in exclude):
                continue
            if selector(name, p, module):
                seen.add(id(p))
                out[name] = p
    return out


def selected_params(
    model: nn.Module, config: SparseConfig, selector: Selector | None = None
) -> dict[str, nn.Parameter]:
    """The parameters of ``model`` (wrappers looked through) that get masks: ``selector``'s choice, else the
    config's (``only_large_kernels``), within the config's ``include``/``exclude`` patterns."""
    if selector is None:
        selector = (
            large_kernel_selector(config.large_kernel_threshold) if config.only_large_kernels else default_selector
        )
    return select_params(unwrap_model(model), selector, config.include, config.exclude)
