"""How busy this machine is, for the capacity a worker reports."""

import os
from pathlib import Path

_MEMINFO = Path("/proc/meminfo")
_KIB_PER_MB = 1024


def cpu_count() -> int:
    """Return the CPUs this process may run on (a container's share, not the host's)."""
    return os.process_cpu_count() or 1


def load_1m() -> float:
    """Return the one-minute load average."""
    return os.getloadavg()[0]


def memory_available_mb() -> float:
    """Return the memory available for new work, in MB (0 where the kernel does not say)."""
    try:
        lines = _MEMINFO.read_text(encoding="ascii").splitlines()
    except OSError:
        return 0.0
    for line in lines:
        name, _, value = line.partition(":")
        if name == "MemAvailable":
            return int(value.split()[0]) / _KIB_PER_MB
    return 0.0
