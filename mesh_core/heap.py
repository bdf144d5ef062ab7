"""A long-running node process's heap after start: kept out of the cyclic garbage collector's full passes.

What a node holds once it has started (modules, gRPC and protobuf descriptors, config, handlers) lives as
long as the process. Left in the collector's oldest generation, every full pass walks all of it: 30–60 ms
pauses on this project's 2-core reference machine, each one a latency spike for the tasks and memory
writes in flight. ``settle_after_start`` collects what start-up left behind, then freezes the rest (it is
never scanned again; it is still freed by reference counting). Only the process's owner calls it (the
headless node, the cockpit, the benchmark's submitter), never the library on its own: a program that
embeds several nodes or starts them repeatedly chooses for itself.
"""

from __future__ import annotations

import gc


def settle_after_start() -> None:
    """Collect start-up garbage, then move every object the process holds now out of the collector's view."""
    gc.collect()
    gc.freeze()
