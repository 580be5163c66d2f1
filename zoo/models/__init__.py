"""One file per family; importing this package registers every model."""
from . import metaformer, sret  # noqa: F401
