"""zoo.layers.allocator: with the policy on, a large block allocated again after it was freed reuses its pages (a
few minor page faults) where glibc's default maps it anew and faults in every page; off in the test processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = r"""
import ctypes, ctypes.util, importlib.util, json, resource, sys
spec = importlib.util.spec_from_file_location("allocator", sys.argv[1])  # the module alone: no torch to import
allocator = importlib.util.module_from_spec(spec)
spec.loader.exec_module(allocator)
applied = allocator.keep_freed_memory()
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes, libc.memset.argtypes = [ctypes.c_void_p], [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
size = 64 * 2**20  # 64 MB, as a large activation: above glibc's largest mmap threshold (32 MB)
def touch_and_free():
    p = libc.malloc(size)
    libc.memset(p, 1, size)  # every page written, as a tensor's fill does
    libc.free(p)
touch_and_free()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    touch_and_free()
print(json.dumps({"applied": applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _probe(policy: str) -> dict:
    env = {**os.environ, "ZOO_KEEP_FREED_MEMORY": policy, "OMP_NUM_THREADS": "1"}
    module = str(Path(__file__).resolve().parents[1] / "zoo" / "layers" / "allocator.py")
    out = subprocess.run([sys.executable, "-c", PROBE, module], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the policy is glibc's (mallopt)")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    pages = 5 * 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")  # what five fresh 64 MB mappings fault in
    default, kept = _probe("0"), _probe("1")
    assert default["applied"] is False and default["faults"] > pages // 2  # each allocation faults its pages in
    if not kept["applied"]:
        pytest.skip("this C library has no mallopt (not glibc)")
    assert kept["faults"] < pages // 100  # the heap's pages, written once, serve every later allocation


def test_the_test_processes_keep_the_default_policy():
    from zoo.layers import allocator

    assert os.environ["ZOO_KEEP_FREED_MEMORY"] == "0"
    allocator._state.pop("applied", None)
    try:
        assert allocator.keep_freed_memory() is False
    finally:
        allocator._state.pop("applied", None)
