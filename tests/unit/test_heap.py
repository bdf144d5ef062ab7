"""``settle_after_start``: what the process holds is frozen, and garbage made afterwards is still collected."""

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
class Node:
    pass
a, b = Node(), Node()
a.peer, b.peer = b, a  # a cycle made after start: garbage once dropped
del a, b
assert gc.collect() >= 2
assert gc.get_freeze_count() == frozen
print("ok")
"""


def test_settled_heap_is_frozen_and_later_cycles_are_collected() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
