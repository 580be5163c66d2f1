"""The C allocator's policy for loops that allocate and free the same large tensors every iteration, and 2 MB pages
for tensors that a loop streams through.

glibc serves an allocation above its mmap threshold (at most 32 MB) from a fresh ``mmap`` and unmaps it when freed,
so a condensation step that builds a 100 MB activation per class faults in every page of it again on each pass, and
the kernel time that costs is a large share of a step on a small CPU.
:func:`keep_freed_memory` makes glibc serve every allocation from its heap and keep freed memory for the next one
(``M_MMAP_MAX`` 0, ``M_TRIM_THRESHOLD`` at its largest): the pages are touched once. It is a context manager: the
policy holds while its block runs (a condensation's loops) and glibc's defaults come back after it, with the memory
kept meanwhile handed back to the system (``malloc_trim``), so a notebook that ran ``zoo condense`` in-process frees
its large arrays as before. :func:`hold_freed_memory` sets the same policy for the rest of the process: a CPU
training loop allocates and frees the same activations at every step, and a zoo vision model in training calls it at
its first step (PyTorch's CUDA allocator keeps freed device memory in the same way).

:func:`huge_pages` puts large tensors' memory on 2 MB pages in place (Linux's ``MADV_COLLAPSE``). A decoded token
reads every weight of the model once: on 4 kB pages, a 125M model at float32 crosses about 120,000 of them per
token, far more than the TLB holds; on 2 MB pages the compiled decode step gains most at float32, where the weights
are largest (the measurement: ``results/notes/code_figures.md``). llama.cpp gets such pages where the page cache
backs its memory-mapped GGUF with them.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the module itself imports no torch (tests/platform/test_allocator.py loads it alone)
    import torch

__all__ = ["hold_freed_memory", "huge_pages", "keep_freed_memory"]

_M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>
_M_MMAP_MAX = -4
_LARGEST = 2**31 - 1  # mallopt takes an int
_DEFAULT_TRIM_THRESHOLD = 128 * 1024  # glibc's defaults (malloc/malloc.c)
_DEFAULT_MMAP_MAX = 65536
_state: dict[str, Any] = {"depth": 0}


def _mallopt(mmap_max: int, trim_threshold: int) -> bool:
    mallopt = getattr(_libc(), "mallopt", None)  # not glibc: macOS, musl without mallopt
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_MAX, mmap_max)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))


@contextlib.contextmanager
def keep_freed_memory() -> Iterator[bool]:
    """While the block runs, serve every allocation from the heap and keep freed memory in the process (glibc);
    yields True where that took effect, False elsewhere (another C library, or ``ZOO_KEEP_FREED_MEMORY=0``). On
    leaving the outermost such block, glibc's default thresholds are set again and the kept memory is returned to
    the system."""
    outermost = _state["depth"] == 0
    if outermost:
        _state["applied"] = _keep_freed()
    _state["depth"] += 1
    try:
        yield _state["applied"]
    finally:
        _state["depth"] -= 1
        if outermost and _state.pop("applied") and not _state.get("held"):
            _mallopt(_DEFAULT_MMAP_MAX, _DEFAULT_TRIM_THRESHOLD)
            trim = getattr(_libc(), "malloc_trim", None)
            if trim is not None:
                trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
                trim(0)


def hold_freed_memory() -> bool:
    """For the rest of the process, :func:`keep_freed_memory`'s policy: every allocation served from the heap and
    freed memory kept for the next one, never handed back. True where it holds; False with
    ``ZOO_KEEP_FREED_MEMORY=0`` or another C library. Inside a :func:`keep_freed_memory` block it does nothing
    (the block's policy, and its end, stand); a block that ends after it leaves it in place. Cheap to call again."""
    if _state["depth"] > 0:
        return _state["applied"]
    if "held" not in _state:
        _state["held"] = _keep_freed()
    return _state["held"]


def _keep_freed() -> bool:
    """The policy set, unless ``ZOO_KEEP_FREED_MEMORY=0``: whether it took effect."""
    return os.environ.get("ZOO_KEEP_FREED_MEMORY", "1") != "0" and _mallopt(0, _LARGEST)


def _libc() -> ctypes.CDLL | None:
    if "libc" not in _state:
        try:
            _state["libc"] = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        except OSError:
            _state["libc"] = None
    return _state["libc"]


_MADV_COLLAPSE = 25  # Linux 6.1's <asm-generic/mman-common.h>


def _huge_page_size() -> int:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 2 << 20


def huge_pages(tensors: Iterable[torch.Tensor]) -> int:
    """Move the memory of large CPU tensors onto 2 MB pages, in place (Linux's ``MADV_COLLAPSE``: the same
    addresses and values). Each 2 MB page that the tensors' storages fill at least half of is collapsed; the rest
    of such a page (other allocations, free heap) becomes resident with it. Returns the bytes now on 2 MB pages: 0
    where the kernel cannot (before Linux 6.1, another OS, a file-backed tensor such as a memory-mapped safetensors
    file, no free 2 MB page) or with ``ZOO_HUGE_PAGES=0``. Pages collapsed before cost a quick check; the first
    collapse of hundreds of MB takes about a second."""
    libc = _libc()
    if not sys.platform.startswith("linux") or libc is None or os.environ.get("ZOO_HUGE_PAGES", "1") == "0":
        return 0
    size = _huge_page_size()
    covered: dict[int, int] = {}  # 2 MB page -> bytes of it that the storages hold
    seen = set()
    for t in tensors:
        if t.device.type != "cpu" or t.is_meta:
            continue
        start, nbytes = t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()
        if start in seen or nbytes < size // 4:
            continue
        seen.add(start)
        for page in range(start // size * size, start + nbytes, size):
            covered[page] = covered.get(page, 0) + min(page + size, start + nbytes) - max(page, start)
    madvise = libc.madvise
    madvise.argtypes, madvise.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
    return sum(
        size for page, n in sorted(covered.items()) if n >= size // 2 and madvise(page, size, _MADV_COLLAPSE) == 0
    )
