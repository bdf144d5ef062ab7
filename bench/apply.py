"""``python -m bench.apply``: CPU per item of a node applying pulled memory entries, in one process, no noise
from other nodes: the apply path alone (decode, version-vector fold, replica store, commit).

A started SQLite worker node (its memory loop stopped, its replica a real file) is handed ``--items`` frames
written by ``--writers`` nodes in batches of ``--batch`` (``MemoryService.apply_frames``, as its sync loop
applies a log read). Most entries are new keys; ``--overwrites`` of them rewrite a key after seeing its value,
and one in ten of those is concurrent with the key's last write (a conflict, settled by latest_wins). Each
round is a fresh node; the median round is reported. ``--events``: a subscriber takes per-item events (as
``mesh-tui --no-ui`` at log level info does; here it only drains them: the printer's JSON lines are not counted).
Prints a line and writes JSON to bench/results/ unless ``--no-save``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from mesh_core.heap import settle_after_start
from mesh_core.memory.resolve import frontier, local_write
from mesh_core.model import MemoryItem
from mesh_testing import Cluster

from .report import machine_pace


def writes(items: int, writers: int, overwrites: float, seed: int = 7) -> list[MemoryItem]:
    """``items`` original writes by ``writers`` nodes, in the order a log delivers them."""
    rnd = random.Random(seed)
    origins = [uuid.UUID(int=rnd.getrandbits(128)).hex for _ in range(writers)]
    now = int(time.time() * 1000) - items  # stamps in the past: the node's clock takes them as they are
    state: dict[str, tuple[MemoryItem, ...]] = {}  # each key's frontier
    before: dict[str, tuple[MemoryItem, ...]] = {}  # and the one before its last write
    out = []
    for i in range(items):
        origin = origins[i % writers]
        if state and rnd.random() < overwrites:
            key = f"k{rnd.randrange(len(state))}"
            seen = before[key] if rnd.random() < 0.1 else state[key]  # one in ten did not see the last write
        else:
            key, seen = f"k{len(state)}", ()
        draft = MemoryItem("bench", key, {"i": i, "t": time.time(), "by": origin[:8]}, {}, (now + i) << 16, origin)
        item = local_write(seen, draft, origin)
        before[key] = state.get(key, ())
        state[key] = frontier([*state.get(key, ()), item])
        out.append(item)
    return out


async def one_round(items: list[MemoryItem], batch: int, events: bool, keep_digests: bool = True
                    ) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-apply-") as root:
        async with Cluster(Path(root), "sqlite") as cluster:
            node = await cluster.node("replica")
            for loop in node.services.ctx.loops:
                if loop.get_name() == "memory":
                    loop.cancel()  # only what this bench hands it is applied
            memory = node.services.memory
            if keep_digests:  # as a running node does from its first anti-entropy round on: its changes follow them
                memory.store.digests()
            frames = [memory.frame_of(item) for item in items]
            taken = 0

            async def drain() -> None:
                nonlocal taken
                async for got in node.services.ctx.events.subscribe_batches(limit=100_000):
                    taken += len(got)
            subscriber = asyncio.create_task(drain()) if events else None
            await asyncio.sleep(0.05)
            settle_after_start()  # as a node process does once started: its heap (and the frames) out of full GC passes
            cpu, wall, changed = time.process_time(), time.perf_counter(), 0
            for start in range(0, len(frames), batch):
                changed += memory.apply_frames(frames[start:start + batch])
                await asyncio.sleep(0)  # the subscriber takes the batch's events, as the loop would let it
            cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
            if subscriber is not None:
                subscriber.cancel()
            return {"cpu_us_per_item": round(cpu / len(frames) * 1e6, 2),
                    "items_per_second": round(len(frames) / wall), "changed": changed, "events_taken": taken}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.apply", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--items", type=int, default=20_000)
    p.add_argument("--writers", type=int, default=5)
    p.add_argument("--overwrites", type=float, default=0.3, help="share of entries that rewrite a key (0.3)")
    p.add_argument("--batch", type=int, default=2000, help="entries per apply (a log read; 2000)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--events", action="store_true", help="a subscriber takes per-item events")
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args(argv)
    pace = machine_pace()
    items = writes(args.items, args.writers, args.overwrites)
    rounds = [asyncio.run(one_round(items, args.batch, args.events)) for _ in range(args.rounds)]
    pace_end = machine_pace()
    cpu = statistics.median(r["cpu_us_per_item"] for r in rounds)
    rate = statistics.median(r["items_per_second"] for r in rounds)
    figures: dict[str, Any] = {
        "options": vars(args), "cpu_us_per_item": cpu, "items_per_second": rate, "rounds": rounds,
        "cpus": os.cpu_count() or 0, "python": platform.python_version(), "load_average": list(os.getloadavg()),
        "pace_us": pace, "pace_us_end": pace_end}
    print(f"memory apply, {args.items} entries from {args.writers} writers ({args.overwrites:.0%} rewrites), "
          f"batches of {args.batch}{', per-item events' if args.events else ''}: {cpu} µs CPU per item, "
          f"{rate:,.0f} items/s (median of {args.rounds}; rounds {[r['cpu_us_per_item'] for r in rounds]} µs); "
          f"machine pace {pace} → {pace_end} µs per unit (bench.report.machine_pace: compare runs in proportion to it)")
    if not args.no_save:
        out = Path(__file__).parent / "results" / f"apply-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
        out.write_text(json.dumps(figures, indent=2))
        print(f"results: {out}")


if __name__ == "__main__":
    main()
