"""Who holds a shared SQLite file's write lock, read from the kernel's lock table without opening the file.

Every process on one ``sqlite_local`` file writes under one lock. A process stopped while it holds it (SIGSTOP,
a debugger, a suspended VM) freezes the medium for every node: no heartbeat, claim or result can be written
until it continues or dies, and SQLite cannot take the lock from it. The nodes then say they are cut off; this
module lets them also say which process holds the lock and whether it is stopped, so an operator knows what to
resume or kill.

In WAL mode SQLite's unix VFS takes the write lock as a POSIX lock on byte 120 of the ``-shm`` file. The holder
is read from ``/proc/locks`` (matched by the file's device and inode) rather than with ``fcntl(F_GETLK)``:
opening and closing the ``-shm`` file in a process that has SQLite connections on it would drop that process's
own POSIX locks on it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

WAL_WRITE_LOCK_BYTE = 120  # sqlite3.c: UNIX_SHM_BASE ((22 + SQLITE_SHM_NLOCK) * 4), slot WAL_WRITE_LOCK = 0
STOPPED_STATES = frozenset("Tt")  # /proc/PID/stat: stopped by a signal, or by a tracer


@dataclass(frozen=True)
class LockHolder:
    pid: int
    command: str  # the holder's command line (as far as it can be read), "" when it cannot
    stopped: bool

    def describe(self) -> str:
        what = f"pid {self.pid}" + (f" ({self.command})" if self.command else "")
        if self.stopped:
            return (f"the SQLite write lock is held by {what}, which is stopped: every node waits until it "
                    f"continues (kill -CONT {self.pid}) or is killed")
        return f"the SQLite write lock is held by {what}"


def holders_in(table: str, device: int, inode: int, byte: int) -> list[int]:
    """Pids holding a POSIX write lock that covers ``byte`` of the file (``device``, ``inode``) in ``table``, the
    text of ``/proc/locks``."""
    major, minor, out = os.major(device), os.minor(device), []
    for line in table.splitlines():
        fields = line.split()
        if "->" in fields:  # a waiter, blocked behind the lock on the line above: not a holder
            continue
        try:
            at = fields.index("POSIX")
            kind, pid, where, start, end = fields[at + 2:at + 7]
            dev_major, dev_minor, ino = where.split(":")
            if (kind != "WRITE" or int(ino) != inode or int(dev_major, 16) != major or int(dev_minor, 16) != minor
                    or int(start) > byte or (end != "EOF" and int(end) < byte)):
                continue
            out.append(int(pid))
        except (ValueError, IndexError):
            continue
    return out


def write_lock_holder(path: str) -> LockHolder | None:
    """The process other than this one that holds the write lock of the SQLite file ``path`` (WAL mode), or None:
    none holds it, or it cannot be told here (no ``/proc``, no ``-shm`` file)."""
    try:
        st = os.stat(path + "-shm")
        with open("/proc/locks") as f:
            table = f.read()
    except OSError:
        return None
    pids = [p for p in holders_in(table, st.st_dev, st.st_ino, WAL_WRITE_LOCK_BYTE) if p != os.getpid()]
    if not pids:
        return None
    pid = pids[0]
    return LockHolder(pid, _command(pid), _state(pid) in STOPPED_STATES)


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0]  # the command in parentheses may hold spaces
    except (OSError, IndexError):
        return ""


def _command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\0")
    except OSError:
        return ""
    return " ".join(a.decode(errors="replace") for a in args if a)[:120]
