"""The C allocator's policy for loops that allocate and free the same large tensors every iteration.

glibc serves an allocation above its mmap threshold (at most 32 MB) from a fresh ``mmap`` and unmaps it when freed,
so a condensation step that builds a 100 MB activation per class faults in every page of it again on each pass:
on a 2-core CPU about a second of kernel time per DSA iteration at ipc 1 on MNIST, as much as a third of the step.
:func:`keep_freed_memory` makes glibc serve every allocation from its heap and keep freed memory for the next one
(``M_MMAP_MAX`` 0, ``M_TRIM_THRESHOLD`` at its largest): the pages are touched once. The process keeps its peak
heap until it exits, which a command that runs one loop to its end can afford; a library call never changes it.
"""

import ctypes
import ctypes.util
import os

__all__ = ["keep_freed_memory"]

_M_TRIM_THRESHOLD = -1  # glibc's <malloc.h>
_M_MMAP_MAX = -4
_LARGEST = 2**31 - 1  # mallopt takes an int
_state: dict[str, bool] = {}


def keep_freed_memory() -> bool:
    """Serve every allocation from the heap and keep freed memory in the process (glibc); True where it took
    effect, False elsewhere (another C library, or ``ZOO_KEEP_FREED_MEMORY=0``). Applied once per process."""
    if "applied" in _state:
        return _state["applied"]
    applied = False
    if os.environ.get("ZOO_KEEP_FREED_MEMORY", "1") != "0":
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            mallopt = libc.mallopt
        except (OSError, AttributeError):  # not glibc (macOS, musl without mallopt)
            mallopt = None
        if mallopt is not None:
            mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
            applied = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _LARGEST))
    _state["applied"] = applied
    return applied
