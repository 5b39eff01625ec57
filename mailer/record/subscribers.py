"""The subscriptions store: who unsubscribed, who subscribed and confirmed, who bounced.

One SQLite file in the state folder (``state/subscribers.sqlite3``, mode 0600 in a 0700 folder),
written by ``serve`` (one-click unsubscribe, confirmed subscriptions), by ``bounces`` and by the
``subscribe``/``unsubscribe`` commands; read by ``send``, which merges it with the organiser's
``recipients/`` files (never rewritten). WAL mode: a send reads while the service writes, and every
write is synced (synchronous=FULL) before the service answers, so an unsubscription that got its
200 survives a power cut. ``StillWanted`` lets a running send notice unsubscriptions made after it
started, within half a second.

States, per list and address key: ``confirmed`` (receives announcements, in addition to the list
file) or ``unsubscribed`` (never receives them, whatever the files say). ``source`` says how it got
there: ``web``, ``one-click``, ``command``, ``bounces: ...``. Pending subscriptions wait in their own
table until their confirmation link is followed, once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from mailer.core.address import Address
from mailer.core.errors import ConfigError
from mailer.core.tokens import CONFIRM_LIFETIME, new_nonce
from mailer.record.state import cut_short

STORE_FILE = "subscribers.sqlite3"
CONFIRMED, UNSUBSCRIBED = "confirmed", "unsubscribed"
HARD, SOFT = "hard", "soft"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS subscriptions (
    list    TEXT NOT NULL,
    key     TEXT NOT NULL,
    addr    TEXT NOT NULL,
    name    TEXT NOT NULL,
    state   TEXT NOT NULL CHECK (state IN ('confirmed', 'unsubscribed')),
    source  TEXT NOT NULL,
    at      TEXT NOT NULL,
    PRIMARY KEY (list, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pending (
    nonce   TEXT PRIMARY KEY,
    list    TEXT NOT NULL,
    key     TEXT NOT NULL,
    addr    TEXT NOT NULL,
    name    TEXT NOT NULL,
    expires INTEGER NOT NULL,
    used_at TEXT
);
CREATE TABLE IF NOT EXISTS renamed (
    old     TEXT PRIMARY KEY,
    new     TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS bounces (
    list       TEXT NOT NULL,
    key        TEXT NOT NULL,
    message_id TEXT NOT NULL,
    kind       TEXT NOT NULL CHECK (kind IN ('hard', 'soft')),
    detail     TEXT NOT NULL,
    at         TEXT NOT NULL,
    PRIMARY KEY (list, key, message_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS left_in_place (
    list    TEXT NOT NULL,
    digest  TEXT NOT NULL,
    why     TEXT NOT NULL,
    at      TEXT NOT NULL,
    PRIMARY KEY (list, digest)
) WITHOUT ROWID;
"""


STORE_VERSION = 1  # PRAGMA user_version of the store this version writes; a newer one is refused
_DAMAGED = (
    "the subscriptions store is damaged, and reading on would forget unsubscriptions; wanted the file "
    "restored from a backup (or, to start with no subscriptions at all, moved away)"
)


def _refuse_missing_or_empty(path: Path) -> None:
    """An empty store, or a write-ahead log whose database is gone, is damage, not a fresh start."""
    wal = path.with_name(path.name + "-wal")
    if not path.exists() and wal.exists():
        raise ConfigError(
            f"{path}: missing, but its write-ahead log {wal.name} is there (the store was moved or deleted "
            f"without it); wanted the store back beside it, or {wal.name} moved away to start with no subscriptions"
        )
    if path.exists() and path.stat().st_size == 0:
        raise ConfigError(f"{path}: empty (0 bytes): {_DAMAGED}")
    if size := cut_short(path):  # (SQLite would take a 1-byte file for a new store: every unsubscription gone)
        raise ConfigError(f"{path}: cut short ({size} bytes): {_DAMAGED}")


def _create(path: Path) -> None:
    """Make the store whole under a private name, then link it into place: it never exists half made."""
    fresh = path.with_name(f"{path.name}.new-{os.getpid()}")
    fresh.unlink(missing_ok=True)
    os.close(os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))  # 0600 before SQLite opens it
    try:
        db = sqlite3.connect(fresh, isolation_level=None)
        try:
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version = {STORE_VERSION}")
        finally:
            db.close()
        with contextlib.suppress(FileExistsError):  # another process made it first: use theirs
            os.link(fresh, path)
    finally:
        fresh.unlink(missing_ok=True)


def _refuse_newer_or_damaged(db: sqlite3.Connection, path: Path) -> None:
    (version,) = db.execute("PRAGMA user_version").fetchone()
    if version > STORE_VERSION:
        raise ConfigError(
            f"{path}: written by a newer seminar-mailer (store version {version}; this one reads up to "
            f"{STORE_VERSION}); wanted that newer seminar-mailer, not this older one"
        )
    (verdict,) = db.execute("PRAGMA quick_check").fetchone()
    if verdict != "ok":
        raise ConfigError(f"{path}: {_DAMAGED} (SQLite: {verdict})")


@dataclass(frozen=True, slots=True)
class Subscription:
    """One address's record in the store."""

    address: Address
    state: str
    source: str
    at: str  # ISO 8601, UTC


def _utc(now: float) -> str:
    return dt.datetime.fromtimestamp(now, dt.UTC).isoformat(timespec="seconds")


def private_state(state: Path) -> None:
    """Create the state folder 0700, or take group and other permissions off an existing one."""
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(state.stat().st_mode)
    if mode & 0o077:
        state.chmod(mode & 0o700)


class Subscribers:
    """The store for one list. ``create=False`` (a dry run) reads an absent store as empty, writing nothing.

    A store that exists but is empty, damaged, only a stray ``-wal``, or from a newer seminar-mailer is
    an error naming the file (exit 2), never a fresh start: that would forget every unsubscription.
    """

    def __init__(self, state: Path, list_name: str, *, create: bool = True) -> None:
        self.path = state / STORE_FILE
        self.list_name = list_name
        try:
            _refuse_missing_or_empty(self.path)
            if create or self.path.exists():
                private_state(state)
                if not self.path.exists():
                    _create(self.path)
                self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
                self._db.execute("PRAGMA busy_timeout = 10000")
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = FULL")
                _refuse_newer_or_damaged(self._db, self.path)
            else:
                self._db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as err:
            raise ConfigError(f"{self.path}: {_DAMAGED} ({err})") from err
        except (OSError, sqlite3.Error) as err:
            raise ConfigError(f"{self.path}: cannot open the subscriptions store: {err}") from err

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Subscribers:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # --- reading ---------------------------------------------------------------------------------

    def is_unsubscribed(self, key: str) -> bool:
        row = self._db.execute(
            "SELECT 1 FROM subscriptions WHERE list = ? AND key = ? AND state = 'unsubscribed'", (self.list_name, key)
        ).fetchone()
        return row is not None

    def unsubscribed_keys(self) -> set[str]:
        """Every address that must not be sent to: unsubscribed by its owner, the organiser or bounces."""
        rows = self._db.execute(
            "SELECT key FROM subscriptions WHERE list = ? AND state = 'unsubscribed'", (self.list_name,)
        )
        return {key for (key,) in rows}

    def confirmed(self) -> Iterator[Address]:
        """Confirmed subscribers, oldest first, streamed."""
        rows = self._db.execute(
            "SELECT name, addr FROM subscriptions WHERE list = ? AND state = 'confirmed' ORDER BY at, key",
            (self.list_name,),
        )
        for name, addr in rows:
            yield Address(name=name, addr=addr)

    def records(self) -> Iterator[Subscription]:
        rows = self._db.execute(
            "SELECT name, addr, state, source, at FROM subscriptions WHERE list = ? ORDER BY key", (self.list_name,)
        )
        for name, addr, state, source, at in rows:
            yield Subscription(Address(name=name, addr=addr), state, source, at)

    def get(self, key: str) -> Subscription | None:
        row = self._db.execute(
            "SELECT name, addr, state, source, at FROM subscriptions WHERE list = ? AND key = ?", (self.list_name, key)
        ).fetchone()
        return Subscription(Address(name=row[0], addr=row[1]), row[2], row[3], row[4]) if row else None

    def pending_count(self, *, now: float) -> int:
        (n,) = self._db.execute(
            "SELECT count(*) FROM pending WHERE list = ? AND used_at IS NULL AND expires >= ?", (self.list_name, now)
        ).fetchone()
        return int(n)

    def data_version(self) -> int:
        """Changes whenever another connection commits (SQLite's PRAGMA data_version): a cheap poll."""
        (version,) = self._db.execute("PRAGMA data_version").fetchone()
        return int(version)

    # --- writing: each call is one synced transaction ---------------------------------------------

    def unsubscribe(self, key: str, source: str, *, address: Address | None = None, now: float | None = None) -> bool:
        """Record that ``key`` must not be sent to. Idempotent: True only when this changed something."""
        at = _utc(time.time() if now is None else now)
        addr, name = (address.addr, address.name) if address else (key, "")
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            cursor = self._db.execute(
                """INSERT INTO subscriptions VALUES (?, ?, ?, ?, 'unsubscribed', ?, ?)
                   ON CONFLICT (list, key) DO UPDATE SET state = 'unsubscribed', source = excluded.source,
                     at = excluded.at
                   WHERE subscriptions.state != 'unsubscribed'""",
                (self.list_name, key, addr, name, source, at),
            )
            return cursor.rowcount > 0

    def subscribe(self, address: Address, source: str, *, now: float | None = None) -> bool:
        """Record a confirmed subscription (also lifting an earlier unsubscription). True when it changed something."""
        at = _utc(time.time() if now is None else now)
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            cursor = self._db.execute(
                """INSERT INTO subscriptions VALUES (?, ?, ?, ?, 'confirmed', ?, ?)
                   ON CONFLICT (list, key) DO UPDATE SET state = 'confirmed', addr = excluded.addr,
                     name = excluded.name, source = excluded.source, at = excluded.at
                   WHERE subscriptions.state != 'confirmed'""",
                (self.list_name, address.key, address.addr, address.name, source, at),
            )
            return cursor.rowcount > 0

    def subscribe_pending(self, address: Address, *, now: float, lifetime: int = CONFIRM_LIFETIME) -> tuple[str, int]:
        """Remember a subscription request until its link is followed; return (nonce, expires)."""
        nonce, expires = new_nonce(), int(now) + lifetime
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            # Forget requests long past their expiry: the table stays small. Used ones are kept a
            # while so that a replayed link is told "already used", not "unknown".
            self._db.execute("DELETE FROM pending WHERE expires < ?", (int(now) - 7 * 86400,))
            self._db.execute(
                "INSERT INTO pending VALUES (?, ?, ?, ?, ?, ?, NULL)",
                (nonce, self.list_name, address.key, address.addr, address.name, expires),
            )
        return nonce, expires

    def confirm(self, nonce: str, *, now: float) -> Address | None:
        """Consume a pending request and subscribe its address; None when unknown, used or expired."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            row = self._db.execute(
                "SELECT name, addr, expires FROM pending WHERE nonce = ? AND list = ? AND used_at IS NULL",
                (nonce, self.list_name),
            ).fetchone()
            if row is None or row[2] < now:
                return None
            self._db.execute("UPDATE pending SET used_at = ? WHERE nonce = ?", (_utc(now), nonce))
            address = Address(name=row[0], addr=row[1])
            self._db.execute(
                """INSERT INTO subscriptions VALUES (?, ?, ?, ?, 'confirmed', 'web', ?)
                   ON CONFLICT (list, key) DO UPDATE SET state = 'confirmed', addr = excluded.addr,
                     name = excluded.name, source = 'web', at = excluded.at""",
                (self.list_name, address.key, address.addr, address.name, _utc(now)),
            )
        return address

    def record_bounce(self, key: str, message_id: str, kind: str, detail: str, *, now: float) -> int:
        """Remember one bounce (once per key and ``message_id``, which names what it counts once:
        ``seminar <key>`` for a soft bounce); return the distinct soft bounces so far."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT OR IGNORE INTO bounces VALUES (?, ?, ?, ?, ?, ?)",
                (self.list_name, key, message_id, kind, detail, _utc(now)),
            )
            (soft,) = self._db.execute(
                "SELECT count(*) FROM bounces WHERE list = ? AND key = ? AND kind = 'soft'", (self.list_name, key)
            ).fetchone()
        return int(soft)

    def readmit(self, key: str, *, listed: bool, now: float | None = None) -> bool:
        """Undo an unsubscription (bounced, by the person, by the organiser) and forget the bounces.

        ``listed``: the address is in the list file, so the store's row goes and the file decides
        again; otherwise it becomes a confirmed subscriber. True when it was unsubscribed."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute("DELETE FROM bounces WHERE list = ? AND key = ?", (self.list_name, key))
            where = "WHERE list = ? AND key = ? AND state = 'unsubscribed'"
            if listed:
                cursor = self._db.execute(f"DELETE FROM subscriptions {where}", (self.list_name, key))  # noqa: S608
            else:
                at = _utc(time.time() if now is None else now)
                cursor = self._db.execute(
                    f"UPDATE subscriptions SET state = 'confirmed', source = 'readmitted', at = ? {where}",  # noqa: S608
                    (at, self.list_name, key),
                )
        return cursor.rowcount > 0

    def was_left(self, digest: str) -> bool:
        """Whether an earlier ``bounces`` run left this message (by its SHA-256) in place."""
        row = self._db.execute(
            "SELECT 1 FROM left_in_place WHERE list = ? AND digest = ?", (self.list_name, digest)
        ).fetchone()
        return row is not None

    def leave(self, digest: str, why: str, *, now: float) -> None:
        """Remember a message left in place (not a bounce, not ours), so later runs do not read it again."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "INSERT OR IGNORE INTO left_in_place VALUES (?, ?, ?, ?)", (self.list_name, digest, why, _utc(now))
            )

    # --- a renamed list ----------------------------------------------------------------------------

    def rename_list(self, new: str) -> int:
        """Carry this list's subscriptions, requests and bounces over to ``new``; its unsubscribe links (signed
        with the old name) keep working. Return how many subscriptions moved."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            moved = self._db.execute(
                "UPDATE OR IGNORE subscriptions SET list = ? WHERE list = ?", (new, self.list_name)
            ).rowcount
            for table in ("pending", "bounces"):
                self._db.execute(f"UPDATE OR IGNORE {table} SET list = ? WHERE list = ?", (new, self.list_name))  # noqa: S608
            self._db.execute("UPDATE renamed SET new = ? WHERE new = ?", (new, self.list_name))
            self._db.execute("INSERT OR REPLACE INTO renamed VALUES (?, ?)", (self.list_name, new))
        return int(moved)

    def former_names(self) -> set[str]:
        """Earlier names of this list (``rename-list``): links signed with them stay valid."""
        return {old for (old,) in self._db.execute("SELECT old FROM renamed WHERE new = ?", (self.list_name,))}


def known_lists(state: Path) -> set[str]:
    """The lists the store holds subscriptions of (read-only: for the renamed-list check)."""
    path = state / STORE_FILE
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return {name for (name,) in db.execute("SELECT DISTINCT list FROM subscriptions")}
        finally:
            db.close()
    except sqlite3.Error:
        return set()  # (a damaged store is reported where it is opened)


class StillWanted:
    """``still_wanted(key)`` for the delivery loop: False once ``key`` is unsubscribed in the store.

    The store is polled at most every ``interval`` seconds, and re-read only when another process
    committed since (PRAGMA data_version), so a call costs a set lookup: an unsubscription is
    honoured by a running send for every message it starts from ``interval`` seconds later on.
    """

    def __init__(self, store: Subscribers, *, interval: float = 0.5, clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.interval = interval
        self.clock = clock
        self._checked = -float("inf")
        self._version: int | None = None
        self._gone: set[str] = set()

    def __call__(self, key: str) -> bool:
        now = self.clock()
        if now - self._checked >= self.interval:
            self._checked = now
            version = self.store.data_version()
            if version != self._version:
                self._version = version
                self._gone = self.store.unsubscribed_keys()
        return key not in self._gone
