"""Redis connections that write a command in the caller's own task.

redis-py's asyncio ``send_packed_command`` bounds the write with ``asyncio.wait_for`` when the connection has a socket
timeout (the mesh always gives one). On Python 3.11, ``wait_for`` runs what it bounds in a task of its own: the
command leaves in a later event-loop pass, behind whatever else that pass holds, and the caller resumes one pass
after that. Measured on an idle node (``bench tasks --backend redis``): 80–200 µs from the call to the bytes on the
socket, per command, when Redis takes some 50 µs to run it. ``PromptWrites`` bounds the same write with
``asyncio.timeout`` in the caller's task instead: the same limit, the same errors (a write that times out or fails
drops the connection, as redis-py does), no task and no pass. It runs on every Python: from 3.12 on ``wait_for``
makes no task, but redis-py writes with ``StreamWriter.writelines``, which there (3.12.1, 3.13.0) does not pause at
the transport's high-water mark, so ``drain`` returns at once with everything buffered and a stalled write is never
bounded; each part here goes through ``write``, which does pause. Used for a single server and Sentinel; a Redis
Cluster client makes its nodes' connections itself (redis-py's own class).
"""

from __future__ import annotations

import asyncio
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError


class PromptWrites:
    """A mixin for a redis-py asyncio connection class (see the module's docstring)."""

    socket_timeout: float | None
    is_connected: bool
    _writer: Any

    async def send_packed_command(self, command: Any, check_health: bool = True) -> None:
        limit = self.socket_timeout
        if not limit:
            return await super().send_packed_command(command, check_health)  # type: ignore[misc]
        if not self.is_connected:  # connected as redis-py's own method connects
            await self.connect_check_health(check_health=False)  # type: ignore[attr-defined]
        if check_health:
            await self.check_health()  # type: ignore[attr-defined]
        if isinstance(command, str):
            command = command.encode()
        parts = [command] if isinstance(command, bytes) else command
        try:
            async with asyncio.timeout(limit):
                for part in parts:  # not writelines: see the module's docstring
                    self._writer.write(part)
                await self._writer.drain()
        except TimeoutError:
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise RedisTimeoutError("Timeout writing to socket") from None
        except OSError as exc:
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise RedisConnectionError(f"Error while writing to socket: {exc}") from exc
        except BaseException:  # cancelled mid-write: what went out is unknown, so the connection goes
            await self.disconnect(nowait=True)  # type: ignore[attr-defined]
            raise


_MADE: dict[type, type] = {}  # connection class → its subclass with PromptWrites


def prompt(connection_class: type) -> type:
    """``connection_class`` with ``PromptWrites`` (one subclass per class, made once)."""
    if issubclass(connection_class, PromptWrites):
        return connection_class
    made = _MADE.get(connection_class)
    if made is None:
        made = _MADE[connection_class] = type(f"Prompt{connection_class.__name__}", (PromptWrites, connection_class),
                                              {})
    return made
