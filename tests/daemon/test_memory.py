"""glibc's malloc thresholds: set for the process, so large frames are reused from the heap."""

from __future__ import annotations

import subprocess
import sys

# two threads allocating, filling and freeing frame-sized arrays, as camera and pool threads do
_CODE = """
import resource, sys, threading
import numpy as np
from linevision.daemon.memory import keep_large_buffers

if sys.argv[1] == "kept":
    assert keep_large_buffers()
faults = []

def work():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for i in range(40):
        a = np.empty(12 * 2**20 + (i % 3) * 4096, np.uint8)
        a[:] = 1
        b = np.empty(3 * 2**20, np.uint8)
        b[:] = 1
        del a
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)

threads = [threading.Thread(target=work) for _ in range(2)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(max(faults))
"""


def _faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", _CODE, mode], capture_output=True, text=True, timeout=60, check=True
    )
    return int(out.stdout.split()[-1])


def test_large_allocations_stop_mapping_fresh_pages() -> None:
    default, kept = _faults("default"), _faults("kept")
    assert default > 8000
    assert kept < default / 2
