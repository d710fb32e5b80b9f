"""SQLite's WAL moved into the database file by a thread of its own, off the request path.

Left to itself, SQLite checkpoints inside whichever commit pushes the WAL past 1,000 pages: that
commit copies the WAL into the database and syncs it, on the event loop, and one request in about
a hundred waited milliseconds for it (the p99 in docs/benchmarks.md). The gateway turns that off
(`Database(..., autocheckpoint=False)`) and runs passive checkpoints here instead: they never block
a writer, and the sqlite3 module releases the GIL while one runs.
"""

from __future__ import annotations

import logging
import sqlite3
import threading

log = logging.getLogger("hanse.storage.checkpoints")

# Short enough that the WAL stays small (a large WAL slows every read), long enough to be idle.
CHECKPOINT_INTERVAL_S = 0.25
# Under steady writes a passive checkpoint never catches up, so the WAL never starts over; past
# this many frames (4 kB each) a RESTART checkpoint holds writers back briefly so that it does.
RESTART_FRAMES = 4096


class WalCheckpointer:
    """A daemon thread running `PRAGMA wal_checkpoint(PASSIVE)` on `path` every `interval_s`,
    and a RESTART checkpoint when the WAL holds more than `RESTART_FRAMES`."""

    def __init__(self, path: str, interval_s: float = CHECKPOINT_INTERVAL_S) -> None:
        self._path = path
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hanse-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def _run(self) -> None:
        connection = sqlite3.connect(self._path, timeout=1.0, check_same_thread=False)
        try:
            while not self._stop.wait(self._interval_s):
                try:
                    _, frames, _ = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    if frames > RESTART_FRAMES:
                        connection.execute("PRAGMA wal_checkpoint(RESTART)").fetchone()
                except sqlite3.Error as exc:  # busy or I/O: the next round tries again
                    log.warning("WAL checkpoint failed: %s", exc)
        finally:
            connection.close()
