"""Dataset builders: image folders, Hugging Face datasets on disk, bundled small real data, text corpora."""

from .errors import DataError

__all__ = ["DataError"]
