"""Sending as another user: what a test of who may talk to a node needs (a process of a second uid)."""

from __future__ import annotations

import os
import socket

NOBODY = 65534  # the uid and gid a test sends as


def send_as(uid: int, address: bytes | str, *datagrams: bytes) -> None:
    """Send ``datagrams`` to the unix datagram socket at ``address`` from a forked process of ``uid`` (and gid): it
    only sends and exits, so forking a process that runs an event loop is safe."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                for datagram in datagrams:
                    sock.sendto(datagram, address)
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"sending as uid {uid} failed")
