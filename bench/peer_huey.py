"""The Huey peer: ``RedisHuey`` with result notification (BLPOP), so a blocking get wakes at once.

Consumers: ``python -c "from bench.peer_huey import main; main()" N`` — what ``huey_consumer
bench.peer_huey.huey -k thread -w N -n -C`` does, at WARNING level (an INFO line per task would measure
the log file, not the queue) — with ``BENCH_REDIS_URL`` in the environment; the submitter imports the
same instance.
"""

from __future__ import annotations

import os

from huey import RedisHuey

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0")  # never a default-port server

huey = RedisHuey("bench", url=URL, notify_result=True, results=True, store_none=True)


@huey.task(name="bench.noop")
def noop(x: object) -> object:
    return x


def main() -> None:
    """A thread-worker consumer, quiet; prints one readiness line for the bench."""
    import sys

    from huey.consumer_options import ConsumerConfig

    config = ConsumerConfig(workers=int(sys.argv[1]) if len(sys.argv) > 1 else 8, worker_type="thread",
                            periodic=False, check_worker_health=False, verbose=False)
    config.validate()
    config.setup_logger()
    consumer = huey.create_consumer(**config.values)
    print("Huey consumer started", flush=True)
    consumer.run()
