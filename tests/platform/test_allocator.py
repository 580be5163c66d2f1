"""zoo.platform.allocator: with the policy on, a large block allocated again after it was freed reuses its pages (a
few minor page faults) where glibc's default maps it anew and faults in every page; after the policy's block, glibc's
defaults again; off in the test processes."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = r"""
import ctypes, ctypes.util, importlib.util, json, os, resource, sys
spec = importlib.util.spec_from_file_location("allocator", sys.argv[1])  # the module alone: no torch to import
allocator = importlib.util.module_from_spec(spec)
spec.loader.exec_module(allocator)
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes, libc.memset.argtypes = [ctypes.c_void_p], [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
size = 64 * 2**20  # 64 MB, as a large activation: above glibc's largest mmap threshold (32 MB)
def touch_and_free(n=size):
    p = libc.malloc(n)
    libc.memset(p, 1, n)  # every page written, as a tensor's fill does
    libc.free(p)
def resident():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
with allocator.keep_freed_memory() as applied:
    touch_and_free()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        touch_and_free()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    touch_and_free(400 * 2**20)
    held = resident()  # the 400 MB block's pages, kept
after = resident()  # the block left: glibc's defaults again, the kept memory handed back
touch_and_free(400 * 2**20)  # and a large block is mapped and unmapped again, as before the block
print(json.dumps({"applied": applied, "faults": faults, "held": held, "after": after, "later": resident()}))
"""


def _probe(policy: str) -> dict:
    env = {**os.environ, "ZOO_KEEP_FREED_MEMORY": policy, "OMP_NUM_THREADS": "1"}
    module = str(Path(__file__).resolve().parents[2] / "zoo" / "platform" / "allocator.py")
    out = subprocess.run([sys.executable, "-c", PROBE, module], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the policy is glibc's (mallopt)")
def test_freed_memory_is_reused_inside_the_block_and_handed_back_after_it():
    """Inside ``with keep_freed_memory()`` a large block allocated again reuses its pages; after the block the
    process is as before (a notebook that ran ``zoo condense`` in-process frees a 400 MB array)."""
    pages = 5 * 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")  # what five fresh 64 MB mappings fault in
    default, kept = _probe("0"), _probe("1")
    assert default["applied"] is False and default["faults"] > pages // 2  # each allocation faults its pages in
    if not kept["applied"]:
        pytest.skip("this C library has no mallopt (not glibc)")
    assert kept["faults"] < pages // 100  # the heap's pages, written once, serve every later allocation
    mb = 2**20
    assert kept["held"] - kept["after"] > 300 * mb, kept  # the kept 400 MB went back when the block ended
    assert kept["later"] - kept["after"] < 50 * mb, kept  # and a freed 400 MB array does not stay resident


HOLD_PROBE = r"""
import ctypes, ctypes.util, importlib.util, json, resource, sys
spec = importlib.util.spec_from_file_location("allocator", sys.argv[1])
allocator = importlib.util.module_from_spec(spec)
spec.loader.exec_module(allocator)
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes, libc.memset.argtypes = [ctypes.c_void_p], [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
def faults_of_five(n=64 * 2**20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(5):
        p = libc.malloc(n)
        libc.memset(p, 1, n)
        libc.free(p)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
with allocator.keep_freed_memory():
    inside = allocator.hold_freed_memory()  # a block's policy stands: nothing held beyond it
unheld = faults_of_five()
held = allocator.hold_freed_memory()
faults_of_five()
with allocator.keep_freed_memory():  # a block that ends leaves the held policy in place
    pass
print(json.dumps({"inside": inside, "unheld": unheld, "held": held, "again": allocator.hold_freed_memory(),
                  "faults": faults_of_five()}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the policy is glibc's (mallopt)")
def test_held_memory_is_reused_for_the_rest_of_the_process():
    """``hold_freed_memory()``: the policy for good (a training loop's), not taken inside a block, not ended by one."""
    pages = 5 * 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    module = str(Path(__file__).resolve().parents[2] / "zoo" / "platform" / "allocator.py")
    for policy in ("1", "0"):
        env = {**os.environ, "ZOO_KEEP_FREED_MEMORY": policy, "OMP_NUM_THREADS": "1"}
        done = subprocess.run([sys.executable, "-c", HOLD_PROBE, module], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-2000:]
        got = json.loads(done.stdout.strip().splitlines()[-1])
        assert got["unheld"] > pages // 2, got  # glibc's default after the block: each allocation faults anew
        if policy == "0":
            assert not got["held"] and not got["again"] and got["faults"] > pages // 2, got
            continue
        if not got["held"]:
            pytest.skip("this C library has no mallopt (not glibc)")
        assert got["inside"] and got["again"] and got["faults"] < pages // 100, got


def test_the_test_processes_keep_the_default_policy():
    from zoo.platform import allocator

    assert os.environ["ZOO_KEEP_FREED_MEMORY"] == "0"
    with allocator.keep_freed_memory() as applied:
        assert applied is False
    assert allocator.hold_freed_memory() is False
    # nothing of the policy left behind (the C library found, kept by huge_pages or an earlier block, may stay)
    assert {k: v for k, v in allocator._state.items() if k not in ("libc", "held")} == {"depth": 0}
    assert allocator._state["held"] is False
