"""One file per family; importing this package registers every model."""

from . import convnet, metaformer, mobilellm, recursive, slak, sret  # noqa: F401
