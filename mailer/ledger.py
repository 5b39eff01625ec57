"""The durable record of who has been sent what: SQLite in the state folder, plus the run lock.

A recipient is marked ``sent`` only after the server's 250 for its message. Marks are buffered and
committed as a group every ``window`` seconds, 0.1 by default (and at the end), each commit synced to disk
(WAL, synchronous=FULL). After ``kill -9`` the only marks lost are those of the last window: those
recipients get a second copy on the next run, with the same Message-ID. Per-message fsync would
cap throughput at the disk's sync rate (bench/ measures it).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mailer.errors import ConfigError, LockedError

SENT, FAILED, DEFERRED = "sent", "failed", "deferred"
LEDGER_FILE = "ledger.sqlite3"
SUPPRESSED_FILE = "suppressed.txt"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    announcement TEXT NOT NULL,
    recipient    TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('sent', 'failed', 'deferred')),
    attempts     INTEGER NOT NULL,
    message_id   TEXT NOT NULL,
    detail       TEXT NOT NULL,
    at           TEXT NOT NULL,
    PRIMARY KEY (announcement, recipient)
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class Mark:
    recipient: str  # Address.key
    state: str
    attempts: int
    message_id: str
    detail: str  # the server's reply, or why it failed


@dataclass(frozen=True, slots=True)
class Summary:
    counts: dict[str, int]
    first: str | None
    last: str | None
    failures: list[tuple[str, str]]  # (recipient, detail) of permanent failures


class Ledger:
    """One announcement's deliveries. Not thread-safe: use it from the event loop only."""

    def __init__(self, state: Path, announcement: str, *, window: float = 0.1) -> None:
        self.path = state / LEDGER_FILE
        self.announcement = announcement
        self.window = window
        self._pending: list[Mark] = []
        self._last_commit = time.monotonic()
        try:
            state.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as err:
            raise ConfigError(f"{self.path}: cannot open the ledger: {err}") from err

    def done(self) -> set[str]:
        """Recipients that must not be sent to again: sent, or failed permanently."""
        rows = self._db.execute(
            "SELECT recipient FROM deliveries WHERE announcement = ? AND state IN ('sent', 'failed')",
            (self.announcement,),
        )
        return {r for (r,) in rows}

    def mark(self, mark: Mark) -> None:
        """Record a result; it reaches the disk within ``window`` seconds (see flush)."""
        self._pending.append(mark)
        if time.monotonic() - self._last_commit >= self.window:
            self.flush()

    def flush(self) -> None:
        """Commit the buffered marks in one synced transaction."""
        self._last_commit = time.monotonic()
        if not self._pending:
            return
        now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        rows = [
            (self.announcement, m.recipient, m.state, m.attempts, m.message_id, m.detail, now) for m in self._pending
        ]
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            # A later 'sent' or 'failed' wins; 'deferred' never overwrites a final state.
            self._db.executemany(
                """INSERT INTO deliveries VALUES (?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT (announcement, recipient) DO UPDATE SET
                     state = excluded.state, attempts = deliveries.attempts + excluded.attempts,
                     message_id = excluded.message_id, detail = excluded.detail, at = excluded.at
                   WHERE deliveries.state = 'deferred'""",
                rows,
            )
        self._pending.clear()

    def summary(self) -> Summary:
        counts = dict(
            self._db.execute(
                "SELECT state, count(*) FROM deliveries WHERE announcement = ? GROUP BY state", (self.announcement,)
            )
        )
        first, last = self._db.execute(
            "SELECT min(at), max(at) FROM deliveries WHERE announcement = ? AND state = 'sent'", (self.announcement,)
        ).fetchone()
        failures = list(
            self._db.execute(
                "SELECT recipient, detail FROM deliveries WHERE announcement = ? AND state = 'failed' "
                "ORDER BY recipient",
                (self.announcement,),
            )
        )
        return Summary(counts=counts, first=first, last=last, failures=failures)

    def close(self) -> None:
        self.flush()
        self._db.close()


@contextmanager
def run_lock(state: Path, list_name: str) -> Iterator[None]:
    """Hold the list's lock for one send. The kernel drops it when the process dies, even by kill -9."""
    state.mkdir(parents=True, exist_ok=True)
    path = state / f"{list_name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            raise LockedError(
                f"another send for the list {list_name!r} is running (pid {holder}, lock {path}); "
                "nothing was sent by this one: try again when it has finished"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)


def add_suppressed(state: Path, lines: list[str]) -> None:
    """Append permanently failed addresses to state/suppressed.txt (never the organisers' files)."""
    if not lines:
        return
    with (state / SUPPRESSED_FILE).open("a", encoding="utf-8") as handle:
        handle.write("".join(f"{line}\n" for line in lines))
        handle.flush()
        os.fsync(handle.fileno())
