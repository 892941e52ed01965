"""Keep large frame buffers in the heap (glibc), so that freeing and allocating them again
does not map fresh pages each time.

By default glibc serves allocations above its mmap threshold (128 KB, adaptive up to 32 MB)
with their own ``mmap`` and gives them back with ``munmap``, and trims freed heap memory; with
several threads allocating frame-sized arrays (camera copies, strips, screen planes), many
allocations end up mapping fresh pages that fault in again (a 12 MB strip: ~3,000 page
faults), which in the busy daemon costs more than the copy itself. With a threshold above the
largest frame and no trimming below 1 GB, freed frames are reused from the heap
(`tests/daemon/test_memory.py`: 2 threads, 12 MB arrays, page faults cut by more than half). In
``linevision bench`` the effect on latency is within the spread between runs (three 60 s runs:
docs/performance.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
from typing import Final

from linevision.log import get_logger

log = get_logger(__name__)

_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
MMAP_THRESHOLD: Final = 256 * 2**20
TRIM_THRESHOLD: Final = 2**30


def keep_large_buffers() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; False where not glibc."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
    log.info("malloc_thresholds", applied=ok, mmap_mb=MMAP_THRESHOLD // 2**20)
    return ok
