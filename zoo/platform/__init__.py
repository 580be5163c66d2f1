"""What the process runs on: the machine's name and the C library's memory policy, for the rooms above to ask.

Plain Python over the operating system and the C library (``/proc``, ``ctypes``): no torch at import, no other zoo
module, so the kernels below the model code and the benchmarks above it ask the same questions the same way.

=========================  ===========================================================================================
``machine``                :func:`~zoo.platform.machine.cpu_model`: the CPU's model name (results files' headers, the
                           kernels' calibration key)
``allocator``              :func:`~zoo.platform.allocator.keep_freed_memory` (glibc's ``mallopt`` and
                           ``malloc_trim``: freed memory kept for a loop's next step, given back after it),
                           :func:`~zoo.platform.allocator.hold_freed_memory` (the same for the rest of the process:
                           a CPU training loop) and :func:`~zoo.platform.allocator.huge_pages` (2 MB pages for
                           tensors a loop streams through)
=========================  ===========================================================================================
"""
