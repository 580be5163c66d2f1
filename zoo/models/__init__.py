"""One file per family; importing this package registers every model."""

from . import metaformer, mobilellm, recursive, slak, sret  # noqa: F401
