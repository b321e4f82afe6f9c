"""Keep freed memory for the next training step instead of handing it back to the kernel.

Every step allocates and frees buffers the size of a batch's activations. glibc's malloc serves
big ones with fresh mmap()s and returns freed memory at the top of its heap to the kernel, so the
next step faults the same pages in again: about a million minor page faults per LeNet epoch here.
Raising its mmap and trim thresholds makes malloc keep those buffers, as jemalloc and tcmalloc do
(PyTorch's CPU performance guide recommends them for the same reason). The cost: the process
keeps its peak memory until it exits.
"""

import ctypes
import logging
import sys

log = logging.getLogger("cnnbench")

# mallopt() parameters, from glibc's malloc.h
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 1 << 30  # allocations below 1 GiB come from the heap, where freed ones are reused
TRIM_THRESHOLD = 2**31 - 1  # never give back less than 2 GiB of free heap top (mallopt takes an int)

_applied = False


def keep_freed_memory() -> bool:
    """On Linux with glibc, make malloc keep freed memory (once per process); True if it did.
    Elsewhere (macOS, Windows, musl) nothing changes."""
    global _applied
    if _applied or not sys.platform.startswith("linux"):
        return _applied
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    _applied = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    if not _applied:
        log.debug("mallopt refused the thresholds: freed memory goes back to the kernel as usual")
    return _applied
