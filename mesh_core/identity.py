"""Node identity kept in the state folder: ``<state_dir>/nodes/<name>/node.json``.

A name is held by a lock file while its node runs. Started with a name, a
node resumes that name's id with a higher incarnation; started without one,
it takes the first free ``<host>-<n>`` slot, so two instances in one folder
become two nodes and a restart takes its old slot back. The folders are 0700
and the files 0600 whatever the umask (``mesh_core.files``).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .errors import IdentityError
from .files import PRIVATE_DIR, make_dirs, open_file, write_file

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")


def short_host() -> str:
    return (socket.gethostname().split(".")[0] or "node")[:16]


@dataclass
class Identity:
    node_id: str
    name: str
    incarnation: int
    folder: Path | None
    _lock_fd: int | None = field(default=None, repr=False)

    @property
    def replica_path(self) -> str | None:
        return str(self.folder / "memory.db") if self.folder else None

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def bump(self) -> int:
        """Rejoin as a new life of the same node (after a leave); persisted."""
        self.incarnation += 1
        if self.folder:
            _write(self.folder / "node.json", self)
        return self.incarnation


def _write(path: Path, ident: Identity) -> None:
    data = {"node_id": ident.node_id, "name": ident.name, "incarnation": ident.incarnation}
    write_file(path, json.dumps(data).encode())  # 0600, atomically


def _try_lock(folder: Path) -> int | None:
    make_dirs(folder.parent, PRIVATE_DIR, own_leaf=True)  # <state_dir>/nodes, and the state folder if new
    make_dirs(folder, PRIVATE_DIR, own_leaf=True)
    fd = open_file(folder / "node.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def _load(folder: Path, name: str, fd: int) -> Identity:
    path = folder / "node.json"
    try:
        data = json.loads(path.read_text()) if path.exists() else None
    except (OSError, ValueError):
        data = None
    if data and isinstance(data.get("node_id"), str):
        ident = Identity(data["node_id"], name, int(data.get("incarnation", 0)) + 1, folder, fd)
    else:
        ident = Identity(uuid.uuid4().hex, name, 1, folder, fd)
    _write(path, ident)
    return ident


def acquire(state_dir: str, name: str | None = None) -> Identity:
    """Take this process's identity from the state folder (see module docstring)."""
    root = Path(state_dir) / "nodes"
    try:
        if name is not None:
            if not NAME_RE.match(name):
                raise IdentityError(f"node name {name!r} is not allowed",
                                    hint="use letters, digits, '.', '_' or '-', up to 63 characters")
            folder = root / name
            fd = _try_lock(folder)
            if fd is None:
                pid = (folder / "node.lock").read_text().strip() or "?"
                raise IdentityError(f"a node named {name!r} is already running from {state_dir} (pid {pid})",
                                    hint="pick another --name or --state-dir")
            return _load(folder, name, fd)
        host = short_host()
        for n in range(1, 10_000):
            slot = f"{host}-{n}"
            fd = _try_lock(root / slot)
            if fd is not None:
                return _load(root / slot, slot, fd)
    except OSError as exc:
        raise IdentityError(f"cannot use state folder {state_dir}: {exc.strerror}") from None
    raise IdentityError(f"no free node slot in {state_dir}")


def ephemeral(prefix: str = "cli") -> Identity:
    """A short-lived identity for one-shot commands; nothing on disk."""
    return Identity(uuid.uuid4().hex, f"{prefix}-{os.getpid()}", 1, None)
