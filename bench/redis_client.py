"""``python -m bench.redis_client``: one script round trip (``EVALSHA``) through redis-py and through the backend's own
connection (``mesh_core.backends.redis.lean.LeanLine``), one after the other on one private redis-server: wall time
and this process's CPU per call, sequential calls (what a lone submitter or an idle worker does) and a pipelined
burst of concurrent ones. Which path is worth keeping as redis-py changes is this bench's question.
Prints a line per path and round; ``--json`` prints the figures as JSON too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from typing import Any

import redis
import redis.asyncio as aioredis

from mesh_core.backends.redis.lean import LeanLine
from mesh_core.config import RedisConfig
from mesh_testing.redis_server import RedisServer

SCRIPT = "redis.call('SET', KEYS[1], ARGV[1]) return ARGV[1]"


async def _timed(call: Any, n: int, concurrent: int) -> tuple[float, float]:
    """µs of wall time and of this process's CPU per call, ``concurrent`` calls in flight."""
    wall, cpu = time.perf_counter(), time.process_time()
    if concurrent <= 1:
        for _ in range(n):
            await call()
    else:
        for _ in range(n // concurrent):
            await asyncio.gather(*(call() for _ in range(concurrent)))
    return (time.perf_counter() - wall) / n * 1e6, (time.process_time() - cpu) / n * 1e6


async def run(n: int, rounds: int, concurrent: int) -> dict[str, Any]:
    with RedisServer() as server:
        client = aioredis.Redis.from_url(server.url)
        script = client.register_script(SCRIPT)
        line = LeanLine(RedisConfig(url=server.url), None)
        paths = {
            "redis-py": lambda: script(keys=["bench:k"], args=["v"]),
            "lean": lambda: line.script(SCRIPT, ["bench:k"], ["v"]),
        }
        try:
            for call in paths.values():  # connections opened, the script loaded
                await call()
            out: dict[str, Any] = {"redis_py": redis.__version__, "server": server.version, "n": n}
            for shape, width in (("sequential", 1), (f"{concurrent} concurrent", concurrent)):
                for name, call in paths.items():
                    got = [await _timed(call, n, width) for _ in range(rounds)]
                    out[f"{name}, {shape}"] = {"wall_us": round(statistics.median(w for w, _ in got), 1),
                                               "cpu_us": round(statistics.median(c for _, c in got), 1)}
            return out
        finally:
            line.close()
            await client.aclose()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.redis_client", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=5000, help="calls per round (5000)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--concurrent", type=int, default=64, help="calls in flight in the burst shape (64)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    figures = asyncio.run(run(args.n, args.rounds, args.concurrent))
    print(f"EVALSHA round trips, redis-py {figures['redis_py']}, redis-server {figures['server']}, "
          f"median of {args.rounds} rounds of {args.n}:")
    for key, value in figures.items():
        if isinstance(value, dict):
            print(f"  {key:28s} {value['wall_us']:7.1f} µs wall  {value['cpu_us']:7.1f} µs CPU per call")
    if args.json:
        print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
