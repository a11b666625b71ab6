"""Process memory as the benchmarks measure it: the kernel's resident-set counters.

``tracemalloc`` does not see torch's allocator, so the benchmarks measure a pass as the growth
of the peak resident set (``VmHWM``) after resetting it (``/proc/self/clear_refs``), in a fresh
process per measurement.
"""

from __future__ import annotations

import os
import resource
from pathlib import Path


def rss_bytes() -> int:
    """The resident set size of this process now, in bytes."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so it covers only what follows."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """The peak resident set (VmHWM) since the last reset, in bytes (ru_maxrss off Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def mib(n: float) -> str:
    """Bytes as ``"12.3 MiB"``."""
    return f"{n / 2**20:.1f} MiB"
