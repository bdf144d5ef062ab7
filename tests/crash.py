"""Stop an in-process node the way kill -9 would: no leave, no hand-back, leases left to lapse."""

from __future__ import annotations

from mesh_core import AgentMeshManager


async def crash(mesh: AgentMeshManager) -> None:
    await mesh.stop(graceful=False)
