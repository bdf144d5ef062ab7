"""The Celery peer: a no-op task on a Redis broker and a Redis result backend.

Workers: ``celery -A bench.peer_celery worker ...`` with ``BENCH_REDIS_URL`` in the
environment (the bench's private redis-server); the submitter imports the same app.
"""

from __future__ import annotations

import logging
import os

from celery import Celery, signals

URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0")  # never a default-port server
QUEUE = "bench"

app = Celery("bench_peer", broker=URL, backend=URL)
app.conf.update(
    task_serializer="json", result_serializer="json", accept_content=["json"],
    task_default_queue=QUEUE, task_ignore_result=False, task_track_started=False,
    task_acks_late=False, worker_prefetch_multiplier=64, worker_send_task_events=False,
    task_send_sent_event=False, result_extended=False, result_expires=3600,
    broker_connection_retry_on_startup=True, worker_hijack_root_logger=False,
    worker_redirect_stdouts=False, broker_transport_options={"visibility_timeout": 3600},
)


@app.task(name="bench.noop")
def noop(x: object) -> object:
    return x


@signals.after_setup_logger.connect
def _quiet_task_lines(**_: object) -> None:
    # One INFO line per task would measure the log file, not the queue; "ready." still prints.
    for name in ("celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(name).setLevel(logging.WARNING)
