"""Command palette (ctrl+p) fed by the one command registry: every command on its palette surface."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, cast

from textual.command import DiscoveryHit, Hit, Hits, Provider

from mesh_core.commands import PALETTE, Command, on_surface

if TYPE_CHECKING:
    from .app import MeshApp


class MeshCommands(Provider):
    """Every ``/mesh_*`` command: one without arguments runs at once, one with arguments fills the command line."""

    @property
    def mesh_app(self) -> MeshApp:
        return cast("MeshApp", self.app)

    def _pick(self, cmd: Command) -> None:
        self.mesh_app.offer_command(cmd.name)

    async def discover(self) -> Hits:
        for cmd in on_surface(PALETTE):
            yield DiscoveryHit(cmd.usage, partial(self._pick, cmd), help=cmd.summary)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for cmd in on_surface(PALETTE):
            score = max(matcher.match(cmd.name), matcher.match(cmd.summary) * 0.8)
            if score > 0:
                yield Hit(score, matcher.highlight(cmd.usage), partial(self._pick, cmd), text=cmd.name,
                          help=cmd.summary)
