"""Faults outside the network for the chaos suite: a small disk that fills, a clock that is off.

``SmallDisk`` mounts a tmpfs of a few MB (root only; ``unavailable()`` says why
not) and ``fill()`` takes its last free bytes. ``skewed_clock(seconds)`` is the
command prefix that runs a program with its wall clock moved (Debian's
libfaketime; ``faketime_missing()`` says when it is absent).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


class SmallDisk:
    """A ``size_mb`` tmpfs mounted on a fresh folder; ``with SmallDisk(2) as disk: disk.path``; unmounted on exit."""

    def __init__(self, size_mb: float) -> None:
        self.size_mb = size_mb
        self.path = Path(tempfile.mkdtemp(prefix="mesh-smalldisk-"))
        self.mounted = False

    @staticmethod
    def unavailable() -> str | None:
        """Why a tmpfs cannot be mounted here (None: it can)."""
        if os.geteuid() != 0:
            return "mounting a small tmpfs needs root"
        probe = SmallDisk(1)
        try:
            probe.mount()
        except RuntimeError as exc:
            return str(exc)
        finally:
            probe.close()
        return None

    def mount(self) -> SmallDisk:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={int(self.size_mb * 1024)}k", "tmpfs",
                               str(self.path)], capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"cannot mount a tmpfs: {done.stderr.strip()}")
        self.mounted = True
        return self

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.path).free

    def fill(self, leave: int = 0) -> int:
        """Write a filler file until the disk has at most ``leave`` bytes free; returns the bytes written."""
        written = 0
        try:
            # unbuffered: a write the full disk refused leaves nothing behind for ``close`` to try again (a buffered
            # file raised ENOSPC from its close when the nodes' own writes took the last bytes first)
            f = open(self.path / "filler", "ab", buffering=0)  # noqa: SIM115 (closed below)
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                return 0  # the nodes filled it first: as full as this would make it
            raise
        with f:
            chunk = b"\0" * 65536
            while self.free_bytes() > leave:
                want = min(len(chunk), self.free_bytes() - leave)
                try:
                    n = f.write(chunk[:want])
                except OSError:
                    break
                if not n:
                    break
                written += n
        return written

    def drain(self) -> None:
        """Free the space ``fill`` took."""
        with contextlib.suppress(OSError):
            (self.path / "filler").unlink()

    def close(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True, timeout=30)
            self.mounted = False
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> SmallDisk:
        return self.mount()

    def __exit__(self, *exc: object) -> None:
        self.close()


def libfaketime() -> str | None:
    """Debian's libfaketime (the threaded build when there is one), or None."""
    for name in ("libfaketimeMT.so.1", "libfaketime.so.1"):
        found = sorted(glob.glob(f"/usr/lib/*/faketime/{name}")) + sorted(glob.glob(f"/usr/lib/faketime/{name}"))
        if found:
            return found[0]
    return None


def faketime_missing() -> str | None:
    """Why a skewed clock cannot be made here (None: it can)."""
    return None if libfaketime() else "libfaketime not installed (Debian package faketime)"


def skewed_clock(seconds: float) -> list[str]:
    """The command prefix that runs a program with its wall clock ``seconds`` off (monotonic left alone).

    The library is preloaded by ``env``, which execs the program: the pid the
    harness holds is the program's own, so kill -9 reaches it (the ``faketime``
    wrapper forks, and a signal to it would leave the program running).
    """
    lib = libfaketime()
    if lib is None:
        raise RuntimeError(faketime_missing())
    return ["env", f"LD_PRELOAD={lib}", f"FAKETIME={seconds:+g}s", "FAKETIME_DONT_FAKE_MONOTONIC=1"]
