"""``hybrid``'s decision (pure, no I/O): which medium to use from what the start-up probes found, and why.

Order: a configured Redis that answered; else a configured gRPC seed that answered the handshake in this
node's protocol version; else ``sqlite_local``. A medium the user did not configure is never chosen for a
network: without ``redis.url`` and ``grpc.seeds`` hybrid stays on this machine and says so. The probes
themselves are in ``mesh_core.backends.hybrid``.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class RedisProbe:
    """What PING to the configured Redis gave: ``url`` as shown (no password), the time it took or why not."""

    url: str
    answered: bool
    ms: float = 0.0
    error: str = ""


class SeedOutcome(enum.Enum):
    ANSWERED = "answered"            # a mesh node speaking our protocol version
    SILENT = "silent"                # no answer in time, connection refused, unreachable
    OTHER_VERSION = "other_version"  # a mesh node speaking another protocol version: does not count
    REFUSED = "refused"              # it answered but refused us (api key, allowlist) or is not a mesh node


@dataclass(frozen=True)
class SeedProbe:
    """What the ``Handshake`` to one seed gave. ``version`` is the seed's protocol version when known."""

    seed: str
    outcome: SeedOutcome
    ms: float = 0.0
    node_name: str = ""
    version: int = 0
    error: str = ""


@dataclass(frozen=True)
class Choice:
    """The protocol hybrid takes and the one line that says why."""

    protocol: str
    reason: str


def _seed(probe: SeedProbe) -> str:
    return f"{probe.seed} ({probe.node_name})" if probe.node_name else probe.seed


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _silent(seeds: Sequence[SeedProbe]) -> list[str]:
    """The seeds that did not answer, together in one phrase with their distinct errors."""
    silent = [p for p in seeds if p.outcome is SeedOutcome.SILENT]
    if not silent:
        return []
    errors = list(dict.fromkeys(p.error for p in silent if p.error))
    detail = f" ({', '.join(errors)})" if errors else ""
    return [f"{'seed' if len(silent) == 1 else 'seeds'} {', '.join(p.seed for p in silent)} did not answer{detail}"]


def _odd(seeds: Sequence[SeedProbe], our_version: int) -> list[str]:
    """One phrase per seed that answered but does not count: another protocol version, or a refusal."""
    phrases = []
    for p in seeds:
        if p.outcome is SeedOutcome.OTHER_VERSION:
            speaks = f"mesh protocol {p.version}" if p.version else "another mesh protocol"
            phrases.append(f"seed {_seed(p)} speaks {speaks}, this node {our_version}: it does not count")
        elif p.outcome is SeedOutcome.REFUSED:
            phrases.append(f"seed {_seed(p)} refused the handshake" + (f" ({p.error})" if p.error else ""))
    return phrases


def decide(redis: RedisProbe | None, seeds: Sequence[SeedProbe], our_version: int) -> Choice:
    """The medium for ``hybrid``. ``redis`` is None when no ``redis.url`` is configured; ``seeds`` holds one
    probe per configured seed, in configuration order (empty: none configured)."""
    if redis is not None and redis.answered:
        return Choice("redis_distributed", f"hybrid chose redis_distributed: {redis.url} answered in {redis.ms:.0f} ms")
    redis_trouble = []
    if redis is not None:
        redis_trouble = [f"{redis.url} did not answer" + (f" ({redis.error})" if redis.error else "")]
    up = [p for p in seeds if p.outcome is SeedOutcome.ANSWERED]
    if up:
        tail = "".join(f"; {note}" for note in redis_trouble + _odd(seeds, our_version))
        return Choice("grpc_mesh", f"hybrid chose grpc_mesh: seed {_seed(up[0])} answered; "
                                   f"{len(up)} of {_plural(len(seeds), 'seed')} up{tail}")
    if redis is None and not seeds:
        return Choice("sqlite_local", "hybrid chose sqlite_local: no redis.url or grpc.seeds configured")
    seed_trouble = _silent(seeds) + _odd(seeds, our_version) if seeds else ["no grpc.seeds configured"]
    parts = (redis_trouble or ["no redis.url configured"]) + seed_trouble
    return Choice("sqlite_local", "hybrid chose sqlite_local: " + "; ".join(parts))
