"""This node: identity, status light, backend and loop health, load, process metrics, capabilities, uptime."""

from __future__ import annotations

from collections import deque
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.reactive import var
from textual.widgets import Sparkline, Static

from mesh_core.commands import loop_line, medium_label, troubled_loops

from ..state import STATUS_STYLES, MeshState, age, bar, load_style, push_sample, status_light

HISTORY = 60


def render_local(state: MeshState) -> RenderableType:
    n: dict[str, Any] = dict(state.local)
    m = n.get("metrics") or {}
    grid = Table.grid(padding=(0, 1))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column(overflow="fold")
    status = str(n.get("status", "?"))
    grid.add_row("Name", Text.assemble((str(n.get("name", "-")), "bold"), "  ", (n.get("node_id", "")[:12], "dim")))
    grid.add_row("Type", str(n.get("node_type", "-")))
    observer = n.get("role") == "client"  # mesh-tui --observe: a client that executes nothing
    if observer:
        grid.add_row("Status", Text("👁 OBSERVER · executes nothing", style="cyan"))
    else:
        grid.add_row("Status", Text(f"{status_light(status)} {status.upper()}", style=STATUS_STYLES.get(status, "")))
    backend = n.get("backend") or {}
    healthy = n.get("backend_healthy", n.get("healthy", True))
    health = Text("✔ healthy", style="green") if healthy else Text("⚠ degraded", style="bold red")
    grid.add_row("Backend", Text.assemble(medium_label(n), " ", health))
    if n.get("protocol") == "hybrid" and n.get("backend_reason"):
        grid.add_row("", Text(str(n["backend_reason"]), style="dim"))  # which medium hybrid chose and why
    tls = backend.get("grpc_tls")
    if tls:  # grpc_mesh's mutual TLS: this node's certificate, and a warning from 14 days before it ends
        left = f"EXPIRED {tls['not_after'][:10]}" if tls["expired"] else f"{tls['days_left']:.0f} days left"
        style = "bold red" if tls["expired"] else "yellow" if tls["expiring"] else "green"
        grid.add_row("TLS", Text(f"🔒 {tls['name']} · {left}", style=style))
    elif backend.get("insecure"):
        grid.add_row("TLS", Text("⚠ INSECURE: plaintext on a non-loopback address", style="bold red"))
    if backend.get("path"):
        grid.add_row("", Text(str(backend["path"]), style="dim", overflow="ellipsis", no_wrap=True))
    for loop in troubled_loops(n.get("loops") or []):
        grid.add_row("Loop", Text(loop_line(loop), style="yellow" if loop["state"] == "running" else "bold red"))
    if "load" in n:
        load = float(n["load"])
        count = int(n.get("running", 0)) + int(n.get("queued", 0))
        grid.add_row("Load", Text.assemble((bar(load, 12), load_style(load)),
                                           f" {load * 100:4.1f}% ({count}/{n.get('capacity', '?')})"))
        grid.add_row("CPU · RAM", f"{m.get('cpu_percent', 0):.1f}% · {m.get('memory_mb', 0):.1f} MB")
        grid.add_row("Tasks done", f"{m.get('tasks_done', 0)}  errors {m.get('error_rate', 0) * 100:.1f}%")
        grid.add_row("Avg resp.", f"{m.get('avg_response_ms', 0):.1f} ms")
        grid.add_row("Caps", ", ".join(n.get("capabilities", ())) or "-")
        grid.add_row("Incarn.", f"{n.get('incarnation', '-')}  up {age(n.get('uptime_s'))}")
    if observer:
        return Group(grid, Text("👁 observing the mesh (not a worker)", style="cyan"))
    mesh = Text("🟢 in the mesh", style="green") if state.enabled else Text("⚪ left the mesh", style="grey50")
    return Group(grid, mesh)


class LocalNodePane(Vertical):
    """The node this app runs: everything about it on one card, and its load over the last minute."""

    mesh_state: var[MeshState | None] = var(None, always_update=True)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._history: deque[float] = deque([0.0] * HISTORY, maxlen=HISTORY)
        self._times: list[float] = []
        self._shown: tuple[bool, dict[str, Any]] | None = None

    def compose(self) -> ComposeResult:
        yield Static("starting the node…", id="local-body")
        yield Sparkline(list(self._history), id="local-load", summary_function=max)

    def on_mount(self) -> None:
        self.border_title = "This node"

    def watch_mesh_state(self, state: MeshState | None) -> None:
        if state is None:
            return
        push_sample(self._history, self._times, state.now, float(state.local.get("load", 0.0)))
        shown = (state.enabled, dict(state.local))
        if shown != self._shown:  # skip the repaint when nothing on the card changed
            self._shown = shown
            self.query_one("#local-body", Static).update(render_local(state))
        data = list(self._history)
        sparkline = self.query_one("#local-load", Sparkline)
        if sparkline.data != data:
            sparkline.data = data
        self.border_subtitle = "load history"
