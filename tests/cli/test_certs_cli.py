"""``mesh-tui certs init|issue|show`` as a user runs them: subprocesses, real files, exit codes."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes


def run(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("MESH_", "MERNSTA_"))}
    base.update(env or {})
    return subprocess.run([sys.executable, "-m", "mesh_tui", *args], capture_output=True, text=True, timeout=60,
                          env=base, cwd=cwd)


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_init_issue_show(tmp_path: Path) -> None:
    state = tmp_path / "state"
    s = ("--state-dir", str(state))
    done = run(tmp_path, "certs", "issue", "hub", *s)
    assert done.returncode == 2 and "no mesh CA" in error_line(done) and "certs init" in error_line(done)

    init = run(tmp_path, "certs", "init", *s)
    assert init.returncode == 0, init.stderr
    assert init.stdout.startswith("ca    Agent Mesh CA") and "sha256" in init.stdout
    again = run(tmp_path, "certs", "init", *s)
    assert again.returncode == 2 and "already" in error_line(again) and "--force" in error_line(again)

    hub = run(tmp_path, "certs", "issue", "hub", "--host", "hub.example", "--host", "10.0.0.1,::1", *s)
    assert hub.returncode == 0, hub.stderr
    assert "URI:mesh-node:hub, DNS:hub.node.mesh.invalid, DNS:hub.example, IP:10.0.0.1, IP:::1" in hub.stdout
    # --state-dir before the subcommand works too, and so does MESH_STATE_DIR
    w1 = run(tmp_path, "--state-dir", str(state), "certs", "issue", "w1", "--days", "10", "--json")
    assert w1.returncode == 0, w1.stderr
    (issued,) = json.loads(w1.stdout)["certificates"]
    assert issued["name"] == "w1" and issued["days_left"] == 10.0 and issued["signed_by_ca"] is True
    bad = run(tmp_path, "certs", "issue", "w2", "--host", "w2:9901", env={"MESH_STATE_DIR": str(state)})
    assert bad.returncode == 2 and "'w2:9901'" in error_line(bad) and "drop the port" in error_line(bad)

    show = run(tmp_path, "certs", "show", *s)
    assert show.returncode == 0, show.stderr
    assert [line.split()[:2] for line in show.stdout.splitlines() if not line.startswith(" ")] == [
        ["ca", "Agent"], ["node", "hub"], ["node", "w1"]]
    assert "(10 days left: renew soon)" in show.stdout and "(90 days left)" in show.stdout
    data = json.loads(run(tmp_path, "certs", "show", "--json", *s).stdout)
    assert data["folder"] == str(state / "certs")
    by_name = {c["name"]: c for c in data["certificates"]}
    hub_pem = x509.load_pem_x509_certificate((state / "certs" / "hub.pem").read_bytes())
    assert by_name["hub"]["sha256"].replace(":", "").lower() == hub_pem.fingerprint(hashes.SHA256()).hex()
    assert by_name["hub"]["sans"] == ["URI:mesh-node:hub", "DNS:hub.node.mesh.invalid", "DNS:hub.example",
                                      "IP:10.0.0.1", "IP:::1"]

    # no key ever reaches the terminal; every file is 0600 in a 0700 folder
    for done in (init, hub, w1, show):
        assert "PRIVATE KEY" not in done.stdout + done.stderr
    assert stat.S_IMODE((state / "certs").stat().st_mode) == 0o700
    assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in (state / "certs").iterdir()} == {
        name: 0o600 for name in ("ca.pem", "ca.key", "hub.pem", "hub.key", "w1.pem", "w1.key")}


def test_show_before_init_and_a_missing_action(tmp_path: Path) -> None:
    done = run(tmp_path, "certs", "show", "--state-dir", str(tmp_path / "s"))
    assert done.returncode == 2 and "no certificates" in error_line(done)
    done = run(tmp_path, "certs")
    assert done.returncode == 2 and "ACTION" in error_line(done)


def test_state_dir_from_the_config_file(tmp_path: Path) -> None:
    cfg = tmp_path / "mesh.yaml"
    cfg.write_text("agent_mesh:\n  state_dir: from-config\n")
    done = run(tmp_path, "certs", "init", "--config", str(cfg))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "from-config" / "certs" / "ca.pem").is_file()  # relative to the config file's folder
