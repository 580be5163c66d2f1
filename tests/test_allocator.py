"""zoo.layers.allocator: with the policy on, a large tensor allocated again after it was freed reuses its pages (a
few minor page faults) where glibc's default maps it anew and faults in every page; off in the test processes."""

import json
import os
import subprocess
import sys

import pytest

PROBE = r"""
import json, resource, sys, torch
from zoo.layers.allocator import keep_freed_memory
applied = keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
x = torch.ones(64 * 2**20 // 4)  # 64 MB: above glibc's largest mmap threshold (32 MB)
del x
before = faults()
for _ in range(5):
    x = torch.ones(64 * 2**20 // 4)
    del x
print(json.dumps({"applied": applied, "faults": faults() - before}))
"""


def _probe(policy: str) -> dict:
    env = {**os.environ, "ZOO_KEEP_FREED_MEMORY": policy, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the policy is glibc's (mallopt)")
def test_freed_memory_is_reused_instead_of_faulted_in_again():
    pages = 5 * 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")  # what five fresh 64 MB mappings fault in
    default, kept = _probe("0"), _probe("1")
    assert default["applied"] is False and default["faults"] > pages // 2  # each allocation faults its pages in
    if not kept["applied"]:
        pytest.skip("this C library has no mallopt (not glibc)")
    assert kept["faults"] < pages // 3  # at most one allocation's pages faulted in: the heap's serve the others


def test_the_test_processes_keep_the_default_policy():
    from zoo.layers import allocator

    assert os.environ["ZOO_KEEP_FREED_MEMORY"] == "0"
    allocator._state.pop("applied", None)
    try:
        assert allocator.keep_freed_memory() is False
    finally:
        allocator._state.pop("applied", None)
