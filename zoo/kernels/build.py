"""Building the package's C++ kernels at first use: ``torch.utils.cpp_extension`` with the system's compiler, the
build cached in torch's extension folder under a name keyed by the sources, the flags and the torch built against (a
changed source builds afresh; an unchanged one loads in milliseconds)."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import warnings
from collections.abc import Callable

import torch

__all__ = ["build", "build_name", "build_or_warn", "built_once"]


def build_or_warn(
    prefix: str, source_dir: str, files: tuple[str, ...], flags: list[str], switch: str, what: str, instead: str
) -> str | None:
    """:func:`build`, or ``None`` where the kernels cannot run here: the environment variable ``switch`` set to
    ``0``, a CPU without AVX2, or a build that fails (no compiler, or one that cannot build them), which warns once
    in one line naming ``what`` was not built and what runs ``instead``."""
    if os.environ.get(switch, "1") == "0":
        return None
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return None
    try:
        return build(prefix, source_dir, files, flags)
    except Exception as e:
        warnings.warn(
            f"the zoo's {what} could not be built ({type(e).__name__}: {str(e)[:300]}); {instead}. Install a C++ "
            f"compiler (g++) for them, or set {switch}=0 to skip the build",
            stacklevel=4,
        )
        return None


def built_once(state: dict, lock: threading.Lock, build: Callable[[], bool]) -> bool:
    """``state["ok"]``: whether a kernel library runs here, ``build()``'s answer, asked once per process (the first
    caller builds under ``lock``, a concurrent one waits for it)."""
    if "ok" not in state:
        with lock:
            if "ok" not in state:
                state["ok"] = build()
    return state["ok"]


def build_name(prefix: str, source: str, flags: list[str]) -> str:
    """The build's name and folder in torch's extension cache: ``{prefix}_{digest}`` of the source, the flags and the
    torch it is built against (its version and folder, whose headers it includes). Two environments that share the
    cache (a CI checkout's virtual environment and a developer's, say) so keep a build each, rather than rebuilding
    over each other's at every first use (tens of seconds a library)."""
    here = os.path.dirname(os.path.abspath(torch.__file__))
    digest = hashlib.sha256("\n".join([source, " ".join(flags), torch.__version__, here]).encode()).hexdigest()
    return f"{prefix}_{digest[:12]}"


def _compiler_driver():
    """``torch.utils.cpp_extension``, imported only when kernels are built. Its import looks for a CUDA toolkit and,
    with a CUDA build of torch on a machine without a GPU, warns "No CUDA runtime is found": the zoo's kernels are
    CPU code, so that line says nothing to a user of them and is kept out of their output."""
    quiet = logging.getLogger("torch.utils.cpp_extension")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        quiet.setLevel(level)
    return cpp_extension


def build(prefix: str, source_dir: str, files: tuple[str, ...], flags: list[str]) -> str:
    """Build and load ``files`` (in ``source_dir``; the first is compiled, the others are included by it) as the
    operator library ``{prefix}_{digest}``; returns the build folder, under ``TORCH_EXTENSIONS_DIR`` where it is set
    (as torch's own builds), else torch's extension cache. The library is compiled from the copies of the sources
    written into that folder, never from ``source_dir``: a folder's library is always the build of the texts its
    name was hashed from, wherever the package's sources lie. Raises what the compiler driver raises."""
    cpp_extension = _compiler_driver()

    texts = {}
    for name in files:
        with open(os.path.join(source_dir, name), encoding="utf-8") as f:
            texts[name] = f.read()
    name = build_name(prefix, "".join(texts.values()), flags)
    root = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()  # torch's own override
    folder = os.path.join(root, name)
    os.makedirs(folder, exist_ok=True)
    for file, text in texts.items():
        path = os.path.join(folder, file)
        if not os.path.exists(path):
            with open(path + f".{os.getpid()}", "w") as f:
                f.write(text)
            os.replace(path + f".{os.getpid()}", path)  # whole, for a concurrent build beside this one
    cpp_extension.load(
        name, [os.path.join(folder, files[0])], extra_cflags=flags, build_directory=folder, is_python_module=False
    )
    return folder
