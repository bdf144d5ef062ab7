"""``settle_after_start``: what the process holds is frozen, the young generation grows before a pass, and garbage
made afterwards is still collected."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import gc
from mesh_core.heap import settle_after_start
held = [[i] for i in range(5000)]  # start-up state: lives as long as the process
settle_after_start()
frozen = gc.get_freeze_count()
assert frozen >= 5000, frozen
assert gc.get_threshold() == (20_000, 10, 10), gc.get_threshold()  # young passes far apart, the older as default
class Node:
    pass
a, b = Node(), Node()
a.peer, b.peer = b, a  # a cycle made after start: garbage once dropped
del a, b
assert gc.collect() >= 2
assert gc.get_freeze_count() == frozen
import weakref
freed = []
for _ in range(30_000):  # cycles dropped as they are made: the collector's own young passes free them
    a, b = Node(), Node()
    a.peer, b.peer = b, a
    weakref.finalize(a, freed.append, 1)
    del a, b
assert len(freed) >= 20_000, len(freed)
print("ok")
"""


def test_settled_heap_is_frozen_and_later_cycles_are_collected() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
