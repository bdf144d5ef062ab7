"""One node's services wired together: who holds whom, which loops run, which hooks fire when.

Built once per node by the manager. Dependencies point one way:
context ← membership ← results ← tasks ← worker; membership ← memory ← sync ← primary.
"""

from __future__ import annotations

from ..backends.contracts import Backend
from ..config import MeshConfig
from ..handlers import NodePort
from ..model import NodeRole
from .context import NodeContext
from .membership import MembershipService
from .memory import MemoryService
from .primary import Primary
from .results import Results
from .sync import MemorySync
from .tasks import PRUNE_EVERY_SECONDS, TaskService
from .worker import Worker


class NodeServices:
    """The rooms of one node. The manager starts and stops them; tests may look inside."""

    def __init__(self, config: MeshConfig, role: NodeRole, backend: Backend | None, port: NodePort) -> None:
        self.ctx = ctx = NodeContext(config, role, backend)
        self.members = MembershipService(ctx)
        self.results = Results(ctx)
        self.tasks = TaskService(ctx, self.members, self.results)
        self.worker = Worker(ctx, self.tasks, port)
        self.memory = MemoryService(ctx, self.members)
        self.sync = MemorySync(ctx, self.members, self.memory)
        self.primary = Primary(ctx, self.members, self.tasks, self.results, self.memory, self.sync)
        members = self.members
        members.running = lambda: self.worker.executing  # an outcome being recorded is no load
        members.metric_sources += [self.worker.metrics, self.memory.metrics, ctx.loop_metrics]
        members.heartbeat_hooks.append(self.worker.renew_leases)
        members.sweep_hooks += [(0.0, self.tasks.sweep), (PRUNE_EVERY_SECONDS, self.tasks.prune),
                                (PRUNE_EVERY_SECONDS, self.sync.compact)]
        # A client's own log (grpc_mesh: each node keeps one) holds its writes, which no node reads: what every worker
        # applied is dropped, so a long-running client (an observer, an application) does not keep every write it made.
        members.client_sweep_hooks.append((PRUNE_EVERY_SECONDS, self.sync.compact))
        if config.memory_sync.strategy == "master_slave":
            self.primary.install()
            if ctx.is_worker:
                members.heartbeat_hooks.insert(0, self.primary.elect)

    def spawn_loops(self) -> None:
        """Every long-running loop of this node (a client runs only the view and its results)."""
        ctx = self.ctx
        ctx.spawn(("view", self.members.view_loop), ("results", self.results.loop))
        if ctx.is_worker:
            ctx.spawn(("heartbeat", self.members.heartbeat_loop), ("claim", self.worker.claim_loop),
                      ("memory", self.sync.loop), ("cancel", self.worker.cancel_loop))
