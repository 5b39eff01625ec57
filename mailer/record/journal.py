"""The ledger's journal of delivery results: a line appended each event-loop tick, folded into SQLite in bulk.

Every result must be durable before the send goes on: a copy's in-flight mark before its first byte, each
reply as it arrives (ledger.py, deliver/send.py). A SQLite transaction each tick cost about 90 µs a message,
the largest part of a send's CPU after the kernel's. An append to a file is as durable against a kill -9
(write(2) returns once the kernel holds the bytes; only a power loss can undo it, as it can an unsynced WAL
commit) and costs a few µs. Every ``window`` seconds (then a synced checkpoint bounds what a power loss can
undo, as before), and when the run ends, the sender folds the new lines into ``deliveries`` in one
transaction, which also records how many lines of that journal are folded (table ``folded``): a fold cut
short at any point is neither lost nor applied twice.

One file per sending process, ``state/ledger-journal-<id>``, under an exclusive flock for the process's life
(the kernel drops it even on kill -9). Each line is a JSON array of result rows; a line without its newline
(a write cut short by a kill or a full disk) is not a result, and nothing was sent on it. A writable ledger
folds, when it opens, every journal whose lock is free (its sender died); a read-only one (status, a dry run)
reads every journal over a private copy of the deliveries, so it sees what a running send has recorded.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import secrets
import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

PREFIX = "ledger-journal-"
ROTATE = 4 << 20  # bytes: past this, the file is folded and a fresh one begins (what a kill leaves stays small)

Row = tuple[str, str, str, int, int, str, str, str]  # message, recipient, state, attempts, doubt, id, detail, at

FOLDED = "CREATE TABLE IF NOT EXISTS folded (journal TEXT PRIMARY KEY, lines INTEGER NOT NULL) WITHOUT ROWID"

# The latest result wins, but 'sent' is final: a copy the server took stays taken. (A 'failed' recipient is
# tried again only once unsuppressed; then its new result counts.)
UPSERT = """INSERT INTO deliveries VALUES (?, ?, ?, ?, ?, ?, ?, ?)
   ON CONFLICT (message, recipient) DO UPDATE SET
     state = excluded.state, attempts = deliveries.attempts + excluded.attempts,
     doubts = deliveries.doubts + excluded.doubts,
     message_id = excluded.message_id, detail = excluded.detail, at = excluded.at
   WHERE deliveries.state != 'sent'"""

Transaction = Callable[[], AbstractContextManager[None]]


class Journal:
    """This process's journal (its file made at the first line), and what of it the ledger holds."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.id = ""
        self._fd = -1
        self._size = 0
        self.lines: list[list[Row]] = []  # the current file's lines not yet folded
        self._folded = 0  # lines of the current file already folded
        self._gone: list[str] = []  # journals folded and removed: their ``folded`` rows can go
        self._broken = ""  # a line cut short that could not be cut back: no line may follow it

    @property
    def unfolded(self) -> bool:
        return bool(self.lines)

    def append(self, rows: list[Row]) -> None:
        """One line, one write; on a failure (a full disk) the file is cut back to its last whole line."""
        if self._broken:
            raise OSError(errno.EIO, self._broken)
        if self._fd < 0:
            self.id = secrets.token_hex(8)
            # O_APPEND: after a write cut back (below) the next line goes at the new end, not after a hole
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND
            self._fd = os.open(self.state / f"{PREFIX}{self.id}", flags, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)
            self._size = 0
        data = (json.dumps(rows, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError:
            try:
                os.ftruncate(self._fd, self._size)  # (a line cut short would end every later one)
            except OSError as err:
                self._broken = f"a line of the journal was cut short and cannot be cut back ({err.strerror})"
            raise
        self._size += len(data)
        self.lines.append(rows)

    def fold(self, db: sqlite3.Connection, transaction: Transaction) -> None:
        """Apply the unfolded lines in one transaction that also records how far this journal is folded."""
        if not self.lines and not self._gone:
            return
        with transaction():
            if self.lines:
                _apply(db, self.id, self.lines, self._folded + len(self.lines))
            db.executemany("DELETE FROM folded WHERE journal = ?", [(g,) for g in self._gone])
        self._folded += len(self.lines)
        self.lines, self._gone = [], []
        if self._size > ROTATE:
            self._remove()

    def close(self, *, folded: bool) -> None:
        """End this process's journal: removed when all of it is folded, else left for the next run to fold."""
        if self._fd >= 0:
            if folded and not self.lines:  # (lines not folded stay in the file: never only in memory)
                self._remove()
            else:
                os.close(self._fd)
                self._fd = -1

    def _remove(self) -> None:
        (self.state / f"{PREFIX}{self.id}").unlink()
        os.close(self._fd)  # (after the unlink: a reader that waited for the lock finds no file, see recover)
        self._fd, self._folded, self._gone = -1, 0, [*self._gone, self.id]


def read_lines(data: bytes) -> list[list[Row]]:
    """The whole lines of a journal: up to the first one cut short (no newline, or not a JSON array of rows)."""
    out: list[list[Row]] = []
    for line in data.split(b"\n")[:-1]:
        try:
            rows = json.loads(line)
        except ValueError:
            break
        if not isinstance(rows, list) or not all(isinstance(r, list) and len(r) == 8 for r in rows):
            break
        out.append([tuple(r) for r in rows])
    return out


def recover(state: Path, db: sqlite3.Connection, transaction: Transaction) -> int:
    """Fold every journal whose sender is gone (its lock is free) into the ledger, then remove it; return how
    many rows were applied. A journal of a running send is its own to fold."""
    applied = 0
    for path in sorted(state.glob(f"{PREFIX}*")):
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # (folded and removed by its sender meanwhile)
        try:
            applied += fold_dead(path, fd, db, transaction)
        finally:
            os.close(fd)
    return applied


def fold_dead(path: Path, fd: int, db: sqlite3.Connection, transaction: Transaction) -> int:
    """Fold the journal open at ``fd`` if its sender is gone, then remove it; the rows applied. None while its
    sender holds its lock, and none if another command folded and removed it while this one opened it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0
    if os.fstat(fd).st_nlink == 0:
        return 0  # (its ``folded`` count may be gone too: folding it again would apply it twice)
    name = path.name[len(PREFIX) :]
    lines = read_lines(_read(fd))
    with transaction():
        row = db.execute("SELECT lines FROM folded WHERE journal = ?", (name,)).fetchone()
        applied = _apply(db, name, lines[row[0] if row else 0 :], len(lines))
    path.unlink()
    with transaction():
        db.execute("DELETE FROM folded WHERE journal = ?", (name,))
    return applied


def _apply(db: sqlite3.Connection, journal: str, lines: list[list[Row]], folded: int) -> int:
    """Upsert ``lines`` into the deliveries and record that ``folded`` lines of ``journal`` are in them, in the
    caller's transaction; the rows applied."""
    rows = [row for line in lines for row in line]
    db.executemany(UPSERT, rows)
    db.execute("INSERT OR REPLACE INTO folded VALUES (?, ?)", (journal, folded))
    return len(rows)


def overlay(state: Path, db: sqlite3.Connection, deliveries_table: str) -> None:
    """For a read-only ledger: the journals' results not yet folded, over a private (TEMP) copy of
    ``deliveries`` that shadows the file's own for this connection. Nothing is written to the state folder."""
    paths = sorted(state.glob(f"{PREFIX}*"))
    if not paths:
        return
    db.execute("BEGIN")  # (one snapshot: a line folded before it is in it, with its count in ``folded``)
    try:
        try:
            folded = dict(db.execute("SELECT journal, lines FROM folded").fetchall())
        except sqlite3.OperationalError:  # (a ledger from before the journal)
            folded = {}
        rows: list[Row] = []
        for path in paths:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            lines = read_lines(data)
            rows += [r for line in lines[folded.get(path.name[len(PREFIX) :], 0) :] for r in line]
        if rows:
            db.execute(deliveries_table.replace("CREATE TABLE IF NOT EXISTS", "CREATE TEMP TABLE", 1))
            db.execute("INSERT INTO temp.deliveries SELECT * FROM main.deliveries")
            db.executemany(UPSERT, rows)
    finally:
        db.execute("COMMIT")


def _read(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)
