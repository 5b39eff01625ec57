"""The single record of what subscribers were told: SQLite in the state folder (its lock: state.py).

Tables (schema version 2, ``PRAGMA user_version``):

- ``seminars``: every seminar ever announced, under a stable ``key`` (its ``id:`` when pinned, else
  the identity assigned at its first announcement), its calendar ``uid``, the ``thread`` (the seed of
  the announcement's Message-ID, for In-Reply-To) and its latest ``revision``;
- ``revisions``: the announced fields of each revision (date, time, zone label, duration, location,
  Zoom, speaker, title, cancelled); revision N is calendar SEQUENCE N;
- ``messages``: each message that went out (announcement, change, cancellation, reminder) and, in
  ``told``, which revision of which seminar it told;
- ``deliveries``: one row per message and recipient: sent, failed (5xx to RCPT), deferred (4xx, try
  again) or uncertain (the message was transmitted but its final reply never came);
- ``suppressed``: addresses never to be mailed again (a permanent refusal), with the reason;
- ``approvals``: (series ``approval: required``) each week an organiser approved, as the file then held it.

Each result is recorded as its reply arrives, in the sender's journal (journal.py: a line appended, which
survives ``kill -9``), and folded into ``deliveries`` every ``window`` seconds, then a synced checkpoint
bounds what a power loss can undo (WAL, ``synchronous=NORMAL``). So a kill can only duplicate messages whose
reply was in flight. Every read of the deliveries sees the journal's lines: this process's are folded first,
a read-only ledger reads the others' over a private copy.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mailer.core.errors import ConfigError, LedgerError
from mailer.record.journal import FOLDED, Journal, overlay, recover
from mailer.record.legacy import LEGACY_SUPPRESSED_FILE, import_suppressed_file, import_v1
from mailer.record.rows import Knowledge, Mark, MessageStats, Remembered, Suppression, utc_text
from mailer.record.state import LEDGER_FILE, check_file, mark_lock, private_file, state_folder

SENT, FAILED, DEFERRED, UNCERTAIN = "sent", "failed", "deferred", "uncertain"
VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS seminars (
    key       TEXT PRIMARY KEY,
    list      TEXT NOT NULL,
    uid       TEXT NOT NULL,
    pinned    TEXT,
    thread    TEXT NOT NULL,
    revision  INTEGER NOT NULL,
    first_at  TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS revisions (
    seminar   TEXT NOT NULL,
    revision  INTEGER NOT NULL,
    fields    TEXT,
    at        TEXT NOT NULL,
    PRIMARY KEY (seminar, revision)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS messages (
    key       TEXT PRIMARY KEY,
    list      TEXT NOT NULL,
    kind      TEXT NOT NULL,
    subject   TEXT NOT NULL,
    created   TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS told (
    message   TEXT NOT NULL,
    seminar   TEXT NOT NULL,
    revision  INTEGER NOT NULL,
    PRIMARY KEY (message, seminar)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS told_by_seminar ON told (seminar);
CREATE TABLE IF NOT EXISTS deliveries (
    message    TEXT NOT NULL,
    recipient  TEXT NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('sent', 'failed', 'deferred', 'uncertain')),
    attempts   INTEGER NOT NULL,
    doubts     INTEGER NOT NULL DEFAULT 0,
    message_id TEXT NOT NULL,
    detail     TEXT NOT NULL,
    at         TEXT NOT NULL,
    PRIMARY KEY (message, recipient)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS seen (
    list      TEXT NOT NULL,
    uid       TEXT NOT NULL,
    PRIMARY KEY (list, uid)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS approvals (
    list        TEXT NOT NULL,
    week        TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    by          TEXT NOT NULL,
    at          TEXT NOT NULL,
    PRIMARY KEY (list, week, fingerprint)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS suppressed (
    recipient TEXT PRIMARY KEY,
    address   TEXT NOT NULL,
    reason    TEXT NOT NULL,
    message   TEXT NOT NULL,
    at        TEXT NOT NULL
) WITHOUT ROWID;
"""


_DELIVERIES = _SCHEMA[_SCHEMA.index("CREATE TABLE IF NOT EXISTS deliveries") :].split(";")[0]
_SPACE = " (is the disk full? nothing unrecorded was sent; run again when there is space)"


class Ledger:
    """The state folder's ledger. Not thread-safe: use it from one thread (the event loop)."""

    def __init__(
        self,
        state: Path,
        list_name: str,
        *,
        window: float = 1.0,
        readonly: bool = False,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.path = state / LEDGER_FILE
        self.list_name = list_name
        self.clock = clock  # the time recorded with each result (send --now moves it, for tests)
        self.window = window
        self._pending: list[Mark] = []
        self._journal: Journal | None = None  # (a read-only ledger writes none)
        self._last_checkpoint = time.monotonic()
        check_file(state, list_name)
        try:
            if readonly:
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None)
                self._check_version()
                if self._db.execute("PRAGMA user_version").fetchone()[0] < VERSION:
                    # A dry run or status before the first send of this version: migrate a copy in
                    # memory, so they show what the real send will do (nothing is written).
                    copy = sqlite3.connect(":memory:", isolation_level=None)
                    self._db.backup(copy)
                    self._db.close()
                    self._db = copy
                    self._migrate(state, keep_files=True)
                overlay(state, self._db, _DELIVERIES)
                return
            state_folder(state)
            private_file(self.path)
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            self._check_version()
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._migrate(state)
            recover(state, self._db, self._write)
            self._journal = Journal(state)
            mark_lock(state, list_name)
        except sqlite3.OperationalError as err:
            if "disk" in str(err) or "full" in str(err):  # can heal: exit 75, not 2
                raise LedgerError(f"{self.path}: cannot open the ledger: {err}{_SPACE}") from err
            raise ConfigError(f"{self.path}: cannot open the ledger: {err}") from err
        except sqlite3.Error as err:
            raise ConfigError(
                f"{self.path}: cannot read the ledger: {err}; it is damaged: restore it from a backup (a fresh "
                "ledger would announce everything again to everyone)"
            ) from err

    def _check_version(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > VERSION:
            raise ConfigError(
                f"{self.path}: the ledger was written by a newer seminar-mailer (schema {version}; this one "
                f"knows {VERSION}); wanted the newer version installed: nothing was read or sent"
            )

    # --- schema ---------------------------------------------------------------------------------

    def _migrate(self, state: Path, *, keep_files: bool = False) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        self._db.execute("CREATE TABLE IF NOT EXISTS seen (list TEXT, uid TEXT, PRIMARY KEY (list, uid)) WITHOUT ROWID")
        self._db.execute(_SCHEMA[_SCHEMA.index("CREATE TABLE IF NOT EXISTS approvals") :].split(";")[0])
        self._db.execute(FOLDED)
        if version >= VERSION:
            return
        legacy = self._db.execute("SELECT name FROM sqlite_master WHERE name = 'deliveries'").fetchone()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if legacy is not None and version < VERSION:
                self._db.execute("ALTER TABLE deliveries RENAME TO deliveries_v1")
            for statement in _SCHEMA.split(";"):  # (executescript would commit the transaction)
                if statement.strip():
                    self._db.execute(statement)
            if legacy is not None:
                import_v1(self._db, self.list_name)
            import_suppressed_file(self._db, state)
            self._db.execute(f"PRAGMA user_version = {VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise
        old = state / LEGACY_SUPPRESSED_FILE
        if old.exists() and not keep_files:
            old.rename(old.with_name(LEGACY_SUPPRESSED_FILE + ".imported"))

    # --- what was announced ---------------------------------------------------------------------

    def remembered(self, list_name: str) -> list[Remembered]:
        rows = self._db.execute(
            """SELECT s.key, s.uid, s.pinned, s.thread, s.revision, r.fields, s.first_at
               FROM seminars s JOIN revisions r ON r.seminar = s.key AND r.revision = s.revision
               WHERE s.list = ? ORDER BY s.first_at, s.key""",
            (list_name,),
        )
        return [
            Remembered(key, uid, pinned, thread, revision, json.loads(fields) if fields else None, first)
            for key, uid, pinned, thread, revision, fields, first in rows
        ]

    def lists(self) -> set[str]:
        """The lists the ledger holds seminars of."""
        return {name for (name,) in self._db.execute("SELECT DISTINCT list FROM seminars")}

    def rename_list(self, old: str, new: str) -> int:
        """Carry every record of list ``old`` over to ``new`` (UIDs stay: calendars keep their events);
        return how many seminars moved."""
        with self._write():
            count = self._db.execute("UPDATE seminars SET list = ? WHERE list = ?", (new, old)).rowcount
            self._db.execute("UPDATE messages SET list = ? WHERE list = ?", (new, old))
            self._db.execute("UPDATE OR IGNORE approvals SET list = ? WHERE list = ?", (new, old))
            # The identities the file showed: list-date-speaker@domain, under the new list's name.
            self._db.execute(
                """UPDATE OR IGNORE seen SET list = ?, uid = ? || substr(uid, ?)
                   WHERE list = ? AND substr(uid, 1, ?) = ?""",
                (new, new + "-", len(old) + 2, old, len(old) + 1, old + "-"),
            )
            self._db.execute("UPDATE OR IGNORE seen SET list = ? WHERE list = ?", (new, old))
        return int(count)

    def seen(self, list_name: str) -> frozenset[str]:
        """Identities of the seminars the file held at the last send (see plan.identify)."""
        try:
            return frozenset(u for (u,) in self._db.execute("SELECT uid FROM seen WHERE list = ?", (list_name,)))
        except sqlite3.OperationalError:  # a read-only ledger of this version from before the table existed
            return frozenset()

    def see(self, list_name: str, uids: Iterable[str]) -> None:
        """The file as it is now replaces what was seen before: a seminar moved back to a slot it left is
        recognised as moved, not as one that was there all along."""
        with self._write():
            self._db.execute("DELETE FROM seen WHERE list = ?", (list_name,))
            self._db.executemany("INSERT OR IGNORE INTO seen VALUES (?, ?)", [(list_name, u) for u in uids])

    def approve(self, list_name: str, week: str, fingerprint: str, *, by: str, now: dt.datetime) -> None:
        with self._write():
            self._db.execute(
                "INSERT OR IGNORE INTO approvals VALUES (?, ?, ?, ?, ?)",
                (list_name, week, fingerprint, by, utc_text(now)),
            )

    def approvals(self, list_name: str) -> list[tuple[str, str, str, str]]:
        """Every approval of the list: (week's Monday, fingerprint, by whom, when), oldest first."""
        try:
            rows = self._db.execute(
                "SELECT week, fingerprint, by, at FROM approvals WHERE list = ? ORDER BY at", (list_name,)
            )
            return [(w, f, b, a) for w, f, b, a in rows]
        except sqlite3.OperationalError:  # a read-only ledger of this version from before the table existed
            return []

    def fields_of(self, seminar: str, revision: int) -> dict[str, object] | None:
        row = self._db.execute(
            "SELECT fields FROM revisions WHERE seminar = ? AND revision = ?", (seminar, revision)
        ).fetchone()
        return json.loads(row[0]) if row and row[0] else None

    def remember(self, seminars: Iterable[Remembered], *, list_name: str, now: dt.datetime) -> None:
        """Record new seminars and new revisions (idempotent), in one transaction, before sending."""
        at = utc_text(now)
        with self._write():
            for s in seminars:
                self._db.execute(
                    """INSERT INTO seminars VALUES (?, ?, ?, ?, ?, ?, ?)
                       ON CONFLICT (key) DO UPDATE SET revision = max(revision, excluded.revision),
                         pinned = coalesce(excluded.pinned, pinned)""",
                    (s.key, list_name, s.uid, s.pinned, s.thread, s.revision, s.first_at or at),
                )
                self._db.execute(
                    """INSERT INTO revisions VALUES (?, ?, ?, ?)
                       ON CONFLICT (seminar, revision) DO UPDATE SET fields = coalesce(fields, excluded.fields)""",
                    (s.key, s.revision, json.dumps(s.fields, sort_keys=True) if s.fields is not None else None, at),
                )

    def open_message(
        self, key: str, *, list_name: str, kind: str, subject: str, told: Iterable[tuple[str, int]], now: dt.datetime
    ) -> None:
        """Record a message before its first delivery, with the revisions it tells."""
        with self._write():
            self._db.execute(
                "INSERT OR IGNORE INTO messages VALUES (?, ?, ?, ?, ?)", (key, list_name, kind, subject, utc_text(now))
            )
            self._db.executemany("INSERT OR IGNORE INTO told VALUES (?, ?, ?)", [(key, s, r) for s, r in told])

    def knowledge(self, seminar: str) -> Knowledge:
        """What each recipient was told of ``seminar``: the latest revision a copy reached them (sent, or
        uncertain twice), and the latest whose copy may have reached them (in flight when a run died, or
        uncertain once: its message is retried once, and a later revision is told relative to it)."""
        rows = self._read(
            """SELECT d.recipient, t.revision, d.state, d.doubts, d.message FROM told t
               JOIN deliveries d ON d.message = t.message
               WHERE t.seminar = ? AND d.state IN ('sent', 'uncertain')""",
            (seminar,),
        )
        sure: dict[str, int] = {}
        maybe: dict[str, tuple[int, str]] = {}
        for recipient, revision, state, doubts, message in rows:
            if state == SENT or doubts >= 2:
                if revision > sure.get(recipient, -1):
                    sure[recipient] = revision
            elif revision > maybe.get(recipient, (-1, ""))[0]:
                maybe[recipient] = (revision, message)
        return Knowledge.of(sure, maybe)

    def told_since(self, seminar: str, since: dt.datetime) -> set[str]:
        """Recipients whose first message about ``seminar`` was accepted at or after ``since``."""
        rows = self._read(
            """SELECT d.recipient FROM told t JOIN deliveries d ON d.message = t.message
               WHERE t.seminar = ? AND d.state = 'sent' GROUP BY d.recipient HAVING min(d.at) >= ?""",
            (seminar, utc_text(since)),
        )
        return {r for (r,) in rows}

    def first_told(self, seminar: str) -> str | None:
        """When the first message telling ``seminar`` was accepted by the server."""
        row = self._read(
            """SELECT min(d.at) FROM told t JOIN deliveries d ON d.message = t.message
               WHERE t.seminar = ? AND d.state = 'sent'""",
            (seminar,),
        ).fetchone()
        return row[0] if row else None

    # --- deliveries -----------------------------------------------------------------------------

    def done(self, message: str) -> set[str]:
        """Recipients not to be sent ``message`` again, whichever revision it carried (its key with a
        ``;r...`` suffix): sent, or uncertain twice (one retry only). A refused one is not done: once
        unsuppressed, it is due again."""
        rows = self._read(
            """SELECT recipient FROM deliveries WHERE (message = ? OR (message >= ? AND message < ?))
               AND (state = 'sent' OR (state = 'uncertain' AND doubts >= 2))""",
            (message, message + ";r", message + ";s"),  # (a range: the primary key's index serves it)
        )
        return {r for (r,) in rows}

    def has_message(self, key: str) -> bool:
        return self._db.execute("SELECT 1 FROM messages WHERE key = ?", (key,)).fetchone() is not None

    def accepted(self, message: str) -> bool:
        """Whether the server took ``message`` for anyone yet."""
        row = self._read("SELECT 1 FROM deliveries WHERE message = ? AND state = 'sent' LIMIT 1", (message,))
        return row.fetchone() is not None

    def doubtful(self) -> set[str]:
        """Recipients with a message whose earlier copy is uncertain (no final reply, or in flight when a run
        died): a copy sent now is their one retry, and a possible duplicate."""
        rows = self._read("SELECT DISTINCT recipient FROM deliveries WHERE state = 'uncertain' AND doubts < 2")
        return {r for (r,) in rows}

    def sent_since(self, since: dt.datetime) -> int:
        """Messages the server accepted (or may have) since ``since``, whatever the message: for daily limits."""
        row = self._read(
            "SELECT count(*) FROM deliveries WHERE at >= ? AND state IN ('sent', 'uncertain')", (utc_text(since),)
        ).fetchone()
        return int(row[0])

    def oldest_since(self, since: dt.datetime, skip: int) -> str | None:
        """The time of the (skip+1)-th oldest acceptance after ``since``: when the window frees a slot."""
        row = self._read(
            "SELECT at FROM deliveries WHERE at >= ? AND state IN ('sent', 'uncertain') ORDER BY at LIMIT 1 OFFSET ?",
            (utc_text(since), skip),
        ).fetchone()
        return row[0] if row else None

    def mark(self, mark: Mark) -> None:
        """Buffer a result; ``flush`` commits it (the sender flushes once per event-loop tick)."""
        self._pending.append(mark)

    def flush(self) -> None:
        """Record the buffered marks: a line of the journal (no fsync: survives kill -9); each window, the
        journal folded into the ledger and a synced checkpoint.

        Raises LedgerError when the results cannot be written (disk full, I/O error): the marks
        stay buffered, so the caller can report them.
        """
        if self._pending and self._journal is not None:
            now = utc_text(self.clock())
            rows = [
                (m.message, m.recipient, m.state, m.attempts, int(m.doubt), m.message_id, m.detail, now)
                for m in self._pending
            ]
            try:
                self._journal.append(rows)
            except OSError as err:
                raise LedgerError(f"{self.path}: cannot write the ledger's journal: {err.strerror}{_SPACE}") from err
            self._pending.clear()
        if time.monotonic() - self._last_checkpoint >= self.window:
            self._fold()
            self.checkpoint()

    def _fold(self) -> None:
        if self._journal is not None:
            try:
                self._journal.fold(self._db, self._write)
            except sqlite3.Error as err:
                raise LedgerError(f"{self.path}: cannot record delivery results: {err}") from err

    def _read(self, sql: str, parameters: tuple[object, ...] = ()) -> sqlite3.Cursor:
        """A query of the deliveries, after this process's journal is folded into them."""
        if self._journal is not None and self._journal.unfolded:
            self._fold()
        return self._db.execute(sql, parameters)

    @property
    def unrecorded(self) -> list[Mark]:
        return list(self._pending)

    def checkpoint(self) -> None:
        """Sync the WAL into the database file: what is committed now survives a power loss."""
        self._last_checkpoint = time.monotonic()
        try:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        except sqlite3.Error as err:
            raise LedgerError(f"{self.path}: cannot checkpoint the ledger: {err}") from err

    @contextmanager
    def _write(self) -> Iterator[None]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as err:
            raise LedgerError(f"{self.path}: cannot write the ledger: {err}{_SPACE}") from err
        try:
            yield
            self._db.execute("COMMIT")
        except sqlite3.Error as err:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise LedgerError(f"{self.path}: cannot write the ledger: {err}{_SPACE}") from err
        except BaseException:
            if self._db.in_transaction:  # (SQLite has already rolled back after a failed COMMIT on a full disk)
                self._db.execute("ROLLBACK")
            raise

    # --- suppression ----------------------------------------------------------------------------

    def suppress(self, entries: Iterable[tuple[str, str, str, str]], *, now: dt.datetime) -> None:
        """Suppress (recipient key, address, reason, message) for good; the first reason is kept."""
        rows = [(k, a, r, m, utc_text(now)) for k, a, r, m in entries]
        if not rows:
            return
        try:
            with self._write():
                self._db.executemany("INSERT OR IGNORE INTO suppressed VALUES (?, ?, ?, ?, ?)", rows)
        except sqlite3.Error as err:
            raise LedgerError(f"{self.path}: cannot record suppressed addresses: {err}") from err

    def unsuppress(self, recipient: str) -> bool:
        with self._write():
            cursor = self._db.execute("DELETE FROM suppressed WHERE recipient = ?", (recipient,))
        return cursor.rowcount > 0

    def suppressed(self) -> list[Suppression]:
        rows = self._db.execute("SELECT recipient, address, reason, message, at FROM suppressed ORDER BY at, recipient")
        return [Suppression(*row) for row in rows]

    def suppressed_keys(self) -> set[str]:
        return {r for (r,) in self._db.execute("SELECT recipient FROM suppressed")}

    # --- status ---------------------------------------------------------------------------------

    def messages_about(self, seminar: str) -> list[MessageStats]:
        rows = list(
            self._read(
                """SELECT m.key, m.kind, m.subject FROM messages m JOIN told t ON t.message = m.key
                   WHERE t.seminar = ? ORDER BY m.created, m.key""",
                (seminar,),
            )
        )
        stats = []
        for key, kind, subject in rows:
            counts = dict(self._read("SELECT state, count(*) FROM deliveries WHERE message = ? GROUP BY state", (key,)))
            first, last = self._read(
                "SELECT min(at), max(at) FROM deliveries WHERE message = ? AND state = 'sent'", (key,)
            ).fetchone()
            stats.append(MessageStats(key, kind, subject, counts, first, last))
        return stats

    def close(self) -> None:
        """Commit what is buffered and close. A failure here was already reported by the send that
        hit it (the results it could not record are counted in its summary): closing never raises."""
        try:
            self.flush()
            self._fold()
            if self._journal is not None:
                self._journal.close(folded=True)
                self._fold()  # (the removed journal's row in ``folded``)
            self.checkpoint()
        except (LedgerError, OSError):
            pass
        finally:
            if self._journal is not None:
                self._journal.close(folded=False)  # (after a failure: left for the next run, which folds it)
            self._db.close()

    # --- bounces: which delivery a returned message belongs to (read only) -------------------------

    def deliveries_with_id(self, prefix: str) -> list[tuple[str, str, str]]:
        """(message key, recipient key, Message-ID) of every delivery whose Message-ID starts with ``prefix``."""
        rows = self._read(
            "SELECT message, recipient, message_id FROM deliveries WHERE substr(message_id, 1, ?) = ?",
            (len(prefix), prefix),
        )
        return [(m, r, i) for m, r, i in rows]

    def seminars_told(self, message: str) -> list[str]:
        """The seminars ``message`` told of (at least one for every message since version 2)."""
        return [
            s for (s,) in self._db.execute("SELECT seminar FROM told WHERE message = ? ORDER BY seminar", (message,))
        ]
