"""mesh_core and the headless path never import textual (the engine is UI-free)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mesh_core_source_never_imports_the_ui() -> None:
    offenders = []
    for path in (ROOT / "mesh_core").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] in ("textual", "mesh_tui")]
    assert offenders == []


def test_importing_engine_and_cli_loads_no_textual() -> None:
    code = ("import sys, mesh_core, mesh_core.manager, mesh_tui.cli, mesh_tui.headless; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'textual'); print(bad); sys.exit(bool(bad))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_headless_node_process_loads_no_textual(tmp_path: Path) -> None:
    """Run a real --no-ui node with -X importtime and read every module it imported."""
    proc = subprocess.Popen(
        [sys.executable, "-X", "importtime", "-m", "mesh_tui", "--no-ui", "--db", str(tmp_path / "m.db"),
         "--state-dir", str(tmp_path / "s"), "--name", "imports"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert "NodeStarted" in proc.stdout.readline()
    proc.terminate()
    _, err = proc.communicate(timeout=15)
    imported = {line.split("|")[-1].strip() for line in err.splitlines() if line.startswith("import time:")}
    assert "mesh_core.manager" in imported
    assert not [m for m in imported if m.split(".")[0] == "textual"]
