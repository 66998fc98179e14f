"""Freed shard-sized arrays go back to the OS once `map_large_blocks` has run (glibc's threshold fixed)."""

from __future__ import annotations

import ctypes
import json
import subprocess
import sys

import pytest

# A pass in miniature: one block of a shard's size is freed (glibc then raises its threshold to that size),
# then shards' arrays are made while small objects pile up after each (the compact state), and freed.
CHILD = """
import json, sys
import numpy as np
if sys.argv[1] == "fixed":
    from sft_trainer.curation.allocator import map_large_blocks
    assert map_large_blocks()
def anon_mb():
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon"):
            return int(line.split()[1]) / 1024
np.ones((10_000, 128), dtype=np.uint32).sum()  # made and freed at once
kept, arrays = [], []
before = anon_mb()
for shard in range(40):
    arrays.append(np.ones((8_000, 128), dtype=np.uint32))  # 4 MB, every page touched
    kept.append([str(i) for i in range(2_000)])  # small objects that outlive the arrays
del arrays
print(json.dumps(anon_mb() - before))
"""


def _held_after_free(mode: str) -> float:
    out = subprocess.run([sys.executable, "-c", CHILD, mode], check=True, capture_output=True, text=True).stdout
    return float(json.loads(out))


# Asked without calling it: collection must not change the allocator of the pytest process itself.
@pytest.mark.skipif(not hasattr(ctypes.CDLL(None), "mallopt"), reason="glibc only (mallopt)")
def test_freed_shard_arrays_are_returned_to_the_os():
    fixed, default = _held_after_free("fixed"), _held_after_free("default")
    # 40 arrays of 4 MB were freed: with the fixed threshold only the small objects stay (~10 MB)...
    assert fixed < 40, f"{fixed:.0f} MB still held after freeing 160 MB of arrays"
    # ...with glibc's default the arrays' pages stay with the process: why the curation sets it.
    assert default > fixed + 80, f"default {default:.0f} MB vs fixed {fixed:.0f} MB"
