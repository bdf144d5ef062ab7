"""The machine's clocks as the kernel keeps them: one for every process on the machine, whatever their wall clocks.

``machine_clock`` (seconds since boot: the kernel's boot clock, which ``/proc/uptime`` also shows) stamps
heartbeats, task leases and retry times; ``wall_reference`` (boot time from ``/proc/stat`` plus uptime) is the
kernel's own wall time, which a process under libfaketime cannot fake, so a node can measure its own wall clock
against it.

The boot clock is read with ``clock_gettime(CLOCK_BOOTTIME)`` (a fraction of a microsecond) rather than
``/proc/uptime`` (tens of microseconds: it is on every lease, claim and completion). A preload that fakes the
clocks (libfaketime without ``FAKETIME_DONT_FAKE_MONOTONIC=1``) moves ``CLOCK_BOOTTIME`` too but cannot touch
``/proc/uptime``: so the fast reading is checked against ``/proc/uptime`` at the first call and then at least
once a second, and a process whose boot clock disagrees (by more than ``TRUST_ERROR``) reads ``/proc/uptime``
from then on. Every process thus keeps one clock, the kernel's, immune to wall-clock jumps.
"""

from __future__ import annotations

import threading
import time

# /proc/stat gives boot time in whole seconds (truncated): the true wall time is within half a second of
# btime + uptime + 0.5, give or take uptime's own 10 ms.
BTIME_ERROR = 0.51
TRUST_ERROR = 0.25  # the boot clock and /proc/uptime (10 ms steps) agree within this, or the boot clock is faked
CHECK_SECONDS = 1.0  # the boot clock is checked against /proc/uptime at least this often

_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", None)


def uptime() -> float | None:
    """Seconds since boot as ``/proc/uptime`` says (the kernel's, whatever a preload fakes); None elsewhere."""
    try:
        with open("/proc/uptime", "rb") as f:
            return float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


class _BootClock:
    """``CLOCK_BOOTTIME`` while it agrees with ``/proc/uptime``; ``/proc/uptime`` for good once it does not."""

    def __init__(self) -> None:
        self.trusted = _BOOTTIME is not None
        self.checked_at = -CHECK_SECONDS - 1.0  # boot clock reading of the last check
        self._lock = threading.Lock()

    def __call__(self) -> float:
        if self.trusted:
            now = time.clock_gettime(_BOOTTIME)  # type: ignore[arg-type]
            if 0.0 <= now - self.checked_at < CHECK_SECONDS:
                return now
            return self._check(now)
        return self._slow()

    def _check(self, now: float) -> float:
        with self._lock:
            kernel = uptime()
            if kernel is None:  # no /proc: nothing to check against
                self.checked_at = now
                return now
            # The kernel's reading is taken between two of the boot clock: a process preempted between two reads
            # (a loaded machine) sees them apart by the time it waited, with the kernel's inside the bracket.
            after = time.clock_gettime(_BOOTTIME)  # type: ignore[arg-type]
            if not now - TRUST_ERROR <= kernel <= after + TRUST_ERROR:
                self.trusted = False  # faked (a preload shifts or scales it): the kernel's from now on
                return kernel
            self.checked_at = after
            return after

    def _slow(self) -> float:
        kernel = uptime()
        return kernel if kernel is not None else time.monotonic()  # elsewhere: the system-wide monotonic clock


_CLOCK = _BootClock()


def machine_clock() -> float:
    """Seconds since this machine booted, from the kernel: one clock for every process, whatever their wall clocks."""
    return _CLOCK()


def machine_clock_is_fast() -> bool:
    """Whether this process reads the boot clock directly (False: it reads ``/proc/uptime``, its clocks are faked)."""
    _CLOCK()
    return _CLOCK.trusted


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


__all__ = ["machine_clock", "machine_clock_is_fast", "uptime", "wall_reference"]
