"""zoo: a model zoo of compact, efficient backbones.

    >>> import zoo
    >>> model = zoo.create_model("poolformer_s12")
    >>> zoo.list_models("caformer_*")

The package is layered: each module imports only from its floor or below. CONTRIBUTING.md's table of the floors
is generated from ``FLOORS`` in tests/library/test_layering.py, which checks every import against it.
"""

from . import export, profile
from ._version import __version__  # noqa: F401  (zoo.__version__)
from .compress import PruneError, prune
from .export.hf_hook import install as _install_transformers_hook
from .factory import create_model
from .publish import PublishError, push_to_hub
from .registry import UnknownModelError, list_families, list_models, list_pretrained, model_info
from .weights import CheckpointError, CheckpointMismatchError, load_checkpoint, save_state_dict

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "PruneError",
    "PublishError",
    "UnknownModelError",
    "create_model",
    "export",
    "list_families",
    "list_models",
    "list_pretrained",
    "load_checkpoint",
    "model_info",
    "profile",
    "prune",
    "push_to_hub",
    "save_state_dict",
]

# transformers' AutoConfig / AutoModelForCausalLM load every zoo LM folder once its Auto API is imported (without
# importing transformers here: see zoo.export.hf_hook)
_install_transformers_hook()
