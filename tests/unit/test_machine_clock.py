"""``machine_clock`` is the kernel's boot clock in every process: read fast, and never a faked one (libfaketime)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from mesh_core.backends.sqlite.clock import machine_clock, machine_clock_is_fast, uptime
from mesh_testing.faults import faketime_missing, libfaketime, skewed_clock

needs_proc = pytest.mark.skipif(uptime() is None, reason="no /proc/uptime here")
needs_faketime = pytest.mark.skipif(faketime_missing() is not None, reason=str(faketime_missing()))

PROBE = ("import json, time; from mesh_core.backends.sqlite.clock import machine_clock, machine_clock_is_fast, uptime;"
         "a = uptime(); m = machine_clock(); b = uptime();"
         "print(json.dumps({'before': a, 'clock': m, 'after': b, 'fast': machine_clock_is_fast(),"
         " 'wall': time.time()}))")


def _probe(prefix: list[str]) -> dict[str, float]:
    out = subprocess.run([*prefix, sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60,
                         check=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _on_the_kernel_clock(seen: dict[str, float]) -> None:
    # /proc/uptime moves in 10 ms steps: the clock read between two of its readings lies between them, give or take
    assert seen["before"] - 0.02 <= seen["clock"] <= seen["after"] + 0.02, seen


@needs_proc
def test_the_machine_clock_is_the_kernel_boot_clock_read_fast() -> None:
    before = uptime()
    now = machine_clock()
    after = uptime()
    assert before is not None and after is not None
    assert before - 0.02 <= now <= after + 0.02
    assert machine_clock_is_fast()  # no preload here: clock_gettime, not a file read per call
    readings = [machine_clock() for _ in range(1000)]
    assert readings == sorted(readings)  # monotonic across the fast path and its periodic checks


@needs_proc
@needs_faketime
@pytest.mark.parametrize("skew", [300.0, -300.0])
def test_a_skewed_wall_clock_as_the_chaos_suite_makes_it_leaves_the_machine_clock_alone(skew: float) -> None:
    seen = _probe(skewed_clock(skew))  # the chaos suite's "clock ±300 s" nemesis: monotonic clocks not faked
    assert abs(seen["wall"] - time.time() - skew) < 30  # the preload did move the wall clock
    _on_the_kernel_clock(seen)
    assert seen["fast"]  # the boot clock is not faked there: read fast


@needs_proc
@needs_faketime
def test_a_preload_that_fakes_the_boot_clock_too_is_caught_and_the_kernel_read_instead() -> None:
    seen = _probe(["env", f"LD_PRELOAD={libfaketime()}", "FAKETIME=+300s"])  # every clock faked, boot clock too
    _on_the_kernel_clock(seen)
    assert not seen["fast"]


@needs_proc
def test_a_process_held_up_between_two_readings_is_not_taken_for_a_faked_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check reads the kernel's uptime between two readings of the boot clock: a process preempted for longer
    than the tolerance between them (a loaded machine) keeps the fast clock (it was distrusted for good)."""
    from mesh_core.backends.sqlite import clock

    kernel = clock.uptime

    def held_up() -> float | None:
        time.sleep(clock.TRUST_ERROR + 0.15)  # descheduled here
        return kernel()

    check = clock._BootClock()
    monkeypatch.setattr(clock, "uptime", held_up)
    now = check()
    assert check.trusted, "a late read of the kernel's clock was taken for a faked boot clock"
    assert abs(now - (kernel() or 0.0)) < 0.05
