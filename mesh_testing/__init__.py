"""The harness the tests and the benchmarks share: real nodes on a throw-away mesh, and a private redis-server.

A package of its own because both sides need it and neither should lean on the
other: ``bench`` is installed and must not import the (uninstalled) ``tests``,
and the tests should not depend on the benchmark's code. It never imports
textual, so the headless bench stays UI-free.

- ``Cluster``: one mesh (a SQLite file, or a cluster name on a Redis server) with
  ``mesh-tui --no-ui`` processes and in-process nodes on it.
- ``NodeProcess``: one node process: JSON log lines, stdin commands, signals.
- ``JsonLog``: an incremental reader of a JSON-lines log file.
- ``RedisServer``: a private redis-server on a free port in a temporary folder (TLS only with ``ServerTls``).
- ``eventually`` / ``until``: poll a condition (async / sync) with a deadline.
"""

from mesh_testing.cluster import BACKENDS, Cluster, ClusterError, crash
from mesh_testing.process import JsonLog, NodeProcess, clean_env
from mesh_testing.redis_server import NoTlsSupport, RedisServer, ServerTls, free_port, redis_server_binary
from mesh_testing.wait import eventually, until

__all__ = [
    "BACKENDS",
    "Cluster",
    "ClusterError",
    "JsonLog",
    "NoTlsSupport",
    "NodeProcess",
    "RedisServer",
    "ServerTls",
    "clean_env",
    "crash",
    "eventually",
    "free_port",
    "redis_server_binary",
    "until",
]
