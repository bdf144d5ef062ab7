"""SQLite WAL checkpoints off the write path, for every file the mesh writes (a replica, a grpc node's store, the
shared ``sqlite_local`` file: each of its processes runs one, and a checkpoint that meets another under way
just tries again next round).

In WAL mode with ``synchronous=NORMAL`` a commit only appends to the ``-wal`` file; the fsyncs come with the
checkpoint that copies the WAL back into the database, which SQLite runs by default inside the commit that takes
the WAL past 1000 pages. That commit then takes several milliseconds, not a fraction of one, and the event loop
waits for it (the mesh's writes run on the loop's thread). A ``Checkpointer`` runs the checkpoints on its own
thread and connection instead, every ``CHECKPOINT_SECONDS`` (``PASSIVE``: it never waits for, nor holds up, a
reader or a writer); ``writes_apart`` raises the writers' own threshold to ``AUTO_CHECKPOINT_PAGES``, so a writer
checkpoints only under writes that leave the thread no pause to finish (then mostly what the thread has not copied
yet), and the WAL stays bounded either way.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

CHECKPOINT_SECONDS = 0.25
# A writer's own checkpoint past this many WAL pages: under writes that never pause, a PASSIVE checkpoint never
# catches up with the WAL's end, so the WAL is only restarted by one of these (a bigger WAL is slower to read).
AUTO_CHECKPOINT_PAGES = 2000

log = logging.getLogger(__name__)


WAL_KEPT_BYTES = 1024 * 1024  # what a restarted WAL file is truncated to


def writes_apart(conn: sqlite3.Connection) -> None:
    """Leave checkpoints to a ``Checkpointer``: ``conn`` (a writer) checkpoints only past a far bigger WAL."""
    conn.execute(f"PRAGMA wal_autocheckpoint={AUTO_CHECKPOINT_PAGES}")
    # The WAL may grow to that size between checkpoints; when it restarts it is cut back, so it does not keep
    # the disk space it once needed (a small or nearly full disk feels the difference).
    conn.execute(f"PRAGMA journal_size_limit={WAL_KEPT_BYTES}")


class Checkpointer:
    """A daemon thread with its own connection to ``path`` that checkpoints its WAL every ``every`` seconds."""

    def __init__(self, path: str, every: float = CHECKPOINT_SECONDS) -> None:
        self.path = path
        self.every = every
        self.runs = 0
        self.failures = 0
        self._stop = threading.Event()
        # Held through each round: ``between_rounds`` holds it too, to act when no checkpoint is under way.
        self.between_rounds = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="mesh-sqlite-checkpoint", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the thread (after the checkpoint it may be running) and close its connection."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join()

    def _run(self) -> None:
        try:
            conn = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:  # the writers' own checkpoints still bound the WAL
            self.failures += 1
            log.warning("WAL checkpoints of %s stay with its writers: %s", self.path, exc)
            return
        try:
            while not self._stop.wait(self.every):
                with self.between_rounds:
                    try:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                        self.runs += 1
                    except sqlite3.Error as exc:  # busy, or the disk refused: the next round tries again
                        self.failures += 1
                        log.debug("WAL checkpoint of %s: %s", self.path, exc)
        finally:
            conn.close()
