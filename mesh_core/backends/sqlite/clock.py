"""The machine's clocks as the kernel keeps them: one for every process on the machine, whatever their wall clocks.

``machine_clock`` (seconds since boot, ``/proc/uptime``) stamps heartbeats, task leases and retry times;
``wall_reference`` (boot time from ``/proc/stat`` plus uptime) is the kernel's own wall time, which a process
under libfaketime cannot fake, so a node can measure its own wall clock against it.
"""

from __future__ import annotations

import time

# /proc/stat gives boot time in whole seconds (truncated): the true wall time is within half a second of
# btime + uptime + 0.5, give or take uptime's own 10 ms.
BTIME_ERROR = 0.51


def machine_clock() -> float:
    """Seconds since this machine booted, from the kernel: one clock for every process, whatever their wall clocks."""
    try:
        with open("/proc/uptime", "rb") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return time.monotonic()  # elsewhere: the system-wide monotonic clock


def _boot_time() -> int | None:
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def wall_reference() -> tuple[float, float, float] | None:
    """The kernel's wall time, this process's wall clock read with it, and the error of the first (seconds);
    None where the kernel does not say when it booted."""
    booted = _boot_time()
    if booted is None:
        return None
    local = time.time()
    return booted + machine_clock() + 0.5, local, BTIME_ERROR


__all__ = ["machine_clock", "wall_reference"]
