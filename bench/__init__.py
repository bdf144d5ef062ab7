"""End-to-end benchmarks of Agent Mesh: ``python -m bench [tasks|memory|peers|algorithms|all] [--quick]``.

Workers are real ``mesh-tui --no-ui`` processes sharing one temporary SQLite file or the
bench's own redis-server; the submitter/writer is a client-role ``AgentMeshManager`` inside
the bench process. Python task queues (Celery, Huey, Dramatiq, saq, arq, taskiq; Ray) run next
to the mesh on the same redis-server. Results are printed as tables and saved as JSON under
``bench/results/``. See ``bench/README.md``.
"""
