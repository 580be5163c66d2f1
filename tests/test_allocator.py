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


def _huge_bytes(address: int) -> int:
    """AnonHugePages of the mapping that holds ``address`` in this process, in bytes."""
    inside = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        first = line.split()[0]
        if "-" in first and ":" not in first:
            start, end = (int(a, 16) for a in first.split("-"))
            inside = start <= address < end
        elif inside and first == "AnonHugePages:":
            return int(line.split()[1]) * 1024
    return 0


def _can_collapse() -> bool:
    """Linux 6.1 or later (MADV_COLLAPSE) with transparent huge pages not turned off."""
    try:
        mode = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    except OSError:
        return False
    release = tuple(int(p) for p in os.uname().release.split("-")[0].split(".")[:2])
    return release >= (6, 1) and "[never]" not in mode


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="2 MB pages by MADV_COLLAPSE are Linux's")
def test_huge_pages_keep_addresses_and_values_and_are_said(monkeypatch):
    import torch

    from zoo.layers.allocator import huge_pages

    monkeypatch.delenv("ZOO_HUGE_PAGES", raising=False)
    big = torch.randn(3, 2**20, generator=torch.Generator().manual_seed(0))  # 12 MB
    small = torch.randn(2**16)  # 256 kB: below a quarter of a 2 MB page, left as it is
    want, address = big.clone(), big.data_ptr()
    assert huge_pages([small]) == 0
    monkeypatch.setenv("ZOO_HUGE_PAGES", "0")
    assert huge_pages([big]) == 0
    monkeypatch.delenv("ZOO_HUGE_PAGES")
    done = huge_pages([big, big.view(-1)[5:]])  # a view of the same storage counts once
    assert big.data_ptr() == address and torch.equal(big, want)
    if not _can_collapse():
        assert done == 0
        return
    # every whole 2 MB page inside the 12 MB, at least, and no more than the pages it touches
    assert 10 * 2**20 <= done <= 14 * 2**20
    assert _huge_bytes(address + 6 * 2**20) >= 2 * 2**20
    # again: already on 2 MB pages, the same answer for the pages the tensor fills; the one or two it shares with
    # other allocations may have been split meanwhile (memory freed beside it) and then not collapse again
    assert 10 * 2**20 <= huge_pages([big]) <= done
