"""Private state: every folder the node makes is 0700 and every file 0600, whatever the process umask.

The umask only takes bits away, so each file is created with ``os.open(..., mode)`` and then given
exactly ``mode`` with ``fchmod`` (which the umask does not touch); a folder likewise with ``chmod``
after ``mkdir``. A SQLite database file is created this way *before* SQLite opens it: SQLite makes
its ``-wal``, ``-shm`` and ``-journal`` files with the database file's own mode, so they follow.
A file or folder that already exists is given the wanted mode when this user owns it (an install
from before this rule had 0644 files); one owned by someone else is left alone.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700
SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")


def folder_mode(file_mode: int) -> int:
    """The mode of a folder holding files of ``file_mode``: whoever may read or write a file may enter the
    folder (``0600`` → ``0700``, ``0640`` → ``0750``, ``0660`` → ``0770``)."""
    mode = PRIVATE_DIR
    for shift in (3, 0):  # group, others
        bits = (file_mode >> shift) & 0o7
        if bits & 0o6:
            mode |= (bits | 0o1) << shift
    return mode


def parse_file_mode(text: str) -> int:
    """An octal file mode such as ``"0660"``; ``ValueError`` unless it is 3 or 4 octal digits, gives the
    owner read and write, and sets no execute, setuid, setgid or sticky bit."""
    digits = text.strip()
    if not 3 <= len(digits) <= 4 or any(c not in "01234567" for c in digits):
        raise ValueError(f"{text!r} is not an octal mode")
    mode = int(digits, 8)
    if mode & ~0o666 or mode & 0o600 != 0o600:
        raise ValueError(f"{text!r} is not a file mode with owner read and write and no execute bits")
    return mode


def _set_mode(path: str | os.PathLike[str], mode: int, st: os.stat_result) -> None:
    """Give an existing file or folder of this user's ``mode``; best effort (a read-only disk keeps it as is)."""
    if stat.S_IMODE(st.st_mode) != mode and st.st_uid == os.geteuid():
        with contextlib.suppress(OSError):
            os.chmod(path, mode)


def make_dirs(path: str | os.PathLike[str], mode: int = PRIVATE_DIR, *, own_leaf: bool = False) -> Path:
    """Make ``path`` and each missing parent with exactly ``mode``. Folders that were there keep their mode,
    except the leaf itself with ``own_leaf`` (a folder only the mesh uses, e.g. ``nodes/<name>``)."""
    folder = Path(os.path.abspath(path))
    missing: list[Path] = []
    probe = folder
    while not probe.exists():
        missing.append(probe)
        if probe.parent == probe:
            break
        probe = probe.parent
    for level in reversed(missing):
        try:
            level.mkdir(mode)
        except FileExistsError:  # another process made it between the look and the mkdir
            continue
        os.chmod(level, mode)  # mkdir's mode went through the umask
    if own_leaf and not missing:
        _set_mode(folder, mode, folder.stat())  # e.g. 0755 from an earlier release
    return folder


def create_file(path: str | os.PathLike[str], mode: int = PRIVATE_FILE) -> None:
    """Make sure ``path`` exists with exactly ``mode``: created empty if missing; an existing one is not opened
    (it may be read-only, and still readable) and only given ``mode`` (see the module docstring)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        _set_mode(path, mode, os.stat(path))
        return
    try:
        os.fchmod(fd, mode)  # the umask took bits away
    finally:
        os.close(fd)


def open_file(path: str | os.PathLike[str], flags: int, mode: int = PRIVATE_FILE) -> int:
    """``os.open(path, flags | O_CREAT, mode)`` with the file given exactly ``mode``; the descriptor."""
    fd = os.open(path, flags | os.O_CREAT, mode)
    try:
        st = os.fstat(fd)
        if stat.S_IMODE(st.st_mode) != mode and st.st_uid == os.geteuid():
            os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_file(path: str | os.PathLike[str], data: bytes, mode: int = PRIVATE_FILE) -> None:
    """Replace ``path`` with ``data`` atomically (a temporary file beside it, then a rename); the new file has
    exactly ``mode`` from its first byte."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    fd = open_file(tmp, os.O_WRONLY | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def prepare_sqlite_file(path: str | os.PathLike[str], mode: int = PRIVATE_FILE, *, own_folder: bool = False) -> None:
    """Before SQLite opens ``path``: its folder made (``folder_mode(mode)``), the file created with exactly
    ``mode``, and journals left from an earlier run given that mode too."""
    make_dirs(os.path.dirname(os.path.abspath(path)), folder_mode(mode), own_leaf=own_folder)
    create_file(path, mode)
    for suffix in SQLITE_SIDE_FILES:
        side = f"{os.fspath(path)}{suffix}"
        with contextlib.suppress(FileNotFoundError):
            _set_mode(side, mode, os.stat(side))


def readable_by_others(path: str | os.PathLike[str]) -> int | None:
    """``path``'s mode when group or others may read it; None when only its owner may (or it cannot be read)."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None
    return mode if mode & 0o044 else None
