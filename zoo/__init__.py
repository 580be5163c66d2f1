"""zoo: a model zoo of compact, efficient backbones.

    >>> import zoo
    >>> model = zoo.create_model("poolformer_s12")
    >>> zoo.list_models("caformer_*")
"""
from .hub import CheckpointError, CheckpointMismatchError, load_checkpoint, push_to_hub, save_state_dict
from .registry import (
    UnknownModelError,
    create_model,
    list_families,
    list_models,
    list_pretrained,
    model_info,
)
from .registry import _ensure_models_imported
from .profile import profile  # noqa: E402  (the function; the module stays importable as zoo.profile)

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "UnknownModelError",
    "create_model",
    "list_families",
    "list_models",
    "list_pretrained",
    "load_checkpoint",
    "model_info",
    "profile",
    "push_to_hub",
    "save_state_dict",
]

_ensure_models_imported()
