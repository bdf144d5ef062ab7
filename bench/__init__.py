"""End-to-end benchmarks of Agent Mesh: ``python -m bench [tasks|memory|all] [--quick]``.

Workers are real ``mesh-tui --no-ui`` processes sharing one temporary SQLite file;
the submitter/writer is a client-role ``AgentMeshManager`` inside the bench process.
Results are printed as a table and saved as JSON under ``bench/results/``.
"""
