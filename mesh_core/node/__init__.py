"""One node's services: context, membership, tasks, worker, results, memory, sync, primary.

``AgentMeshManager`` (``mesh_core.manager``) builds them through ``NodeServices``
and is the only front door; nothing outside this package reaches inside.
"""
