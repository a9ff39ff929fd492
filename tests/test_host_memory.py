"""keep_freed_memory: a freed 64 MB block is reused without page faults (own processes:
the allocator policy is process-wide)."""

import os
import subprocess
import sys

from conftest import REPO

PROBE = """
import resource
import numpy as np
from flaxtune.host_memory import keep_freed_memory
applied = keep_freed_memory()
assert keep_freed_memory() == applied  # idempotent
a = np.ones(16 * 2**20, np.float32); del a   # 64 MB touched, then freed
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
b = np.ones(16 * 2**20, np.float32)          # the same size again
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _probe(**env):
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO), **env}, cwd=REPO)
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


def test_freed_block_is_reused_without_page_faults():
    applied, faults = _probe()
    assert applied
    assert faults < 64  # of 16,384 4-KiB pages (glibc's default would mmap it afresh)


def test_flaxtune_malloc_default_leaves_glibc_alone():
    applied, _ = _probe(FLAXTUNE_MALLOC="default")
    assert not applied
