"""A long-running node process's heap after start: kept out of the cyclic garbage collector's way.

What a node holds once it has started (modules, gRPC and protobuf descriptors, config, handlers) lives as
long as the process. Left in the collector's oldest generation, every full pass walks all of it: 30–60 ms
pauses on this project's 2-core reference machine, each one a latency spike for the tasks and memory
writes in flight. ``settle_after_start`` collects what start-up left behind, then freezes the rest (it is
never scanned again; it is still freed by reference counting).

It also lets the young generation grow to ``YOUNG_OBJECTS`` before a pass (Python's default is 700). Under
load a node allocates a few hundred container objects per task (futures, coroutines, records) that live
for the task's milliseconds in flight: with 700, the collector ran about every 0.2 ms on the benchmark's
submitter at 1,024 tasks in flight, promoted whatever was in flight to the older generations and walked
it there again, 17 % of the process's time (2.8 s of 16 s; 5 % on each worker). With 20,000, a young
pass takes under 10 ms and comes a few times a second at most; nearly everything has died by reference
counting first. Cyclic garbage waits longer to be freed, at most some megabytes of it.

Only the process's owner calls it (the headless node, the cockpit, the benchmark's submitter), never the
library on its own: a program that embeds several nodes or starts them repeatedly chooses for itself.
"""

from __future__ import annotations

import gc

YOUNG_OBJECTS = 20_000  # allocations less deallocations of container objects between young passes


def settle_after_start() -> None:
    """Collect start-up garbage, move every object the process holds now out of the collector's view, and
    let the young generation grow to ``YOUNG_OBJECTS`` between passes (the older ones keep their defaults)."""
    gc.collect()
    gc.freeze()
    young, older, oldest = gc.get_threshold()
    gc.set_threshold(max(YOUNG_OBJECTS, young), older, oldest)
