"""Process memory policy: freed large buffers go back to the operating system.

A pruned request allocates its kept-weight copies (a few hundred MB on a 1B model) and frees them
when it ends. glibc's malloc raises its mmap threshold each time such a block is freed, so later
blocks of that size come from the heap and stay resident after ``free``: the process keeps the
largest request it has ever run, once per size class (measured: +200 MB on the 121M bench model
after three levels). Fixing the threshold (``mallopt(M_MMAP_THRESHOLD)``, what the environment
variable ``MALLOC_MMAP_THRESHOLD_`` does) keeps every block over 128 KiB on its own mapping, which
``free`` returns at once. Set ``AAPP_KEEP_MALLOC=1`` to leave the allocator alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_MMAP_THRESHOLD = -3
THRESHOLD = 128 * 1024
_done = False


def return_large_blocks_to_os() -> bool:
    """Apply the policy once per process (glibc only); True when it is in force."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux") or os.environ.get("AAPP_KEEP_MALLOC") == "1":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        _done = bool(libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD))
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    return _done


__all__ = ["return_large_blocks_to_os", "trim_heap"]


def trim_heap() -> bool:
    """Give the heap's free pages back to the operating system now (glibc ``malloc_trim(0)``): after a
    large model is freed, malloc keeps the blocks it served from the heap resident. True when done."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return bool(libc.malloc_trim(0))
    except (OSError, AttributeError):
        return False
