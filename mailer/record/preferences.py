"""What each subscriber chose: per list, every message, the digests only, or nothing; and their time zone.

One SQLite file in the state folder (``state/preferences.sqlite3``, 0600), written by the web service's manage
page (the subscriber's own choice) and read by ``send``. The organiser's defaults come from a CSV list's
``delivery`` and ``timezone`` columns; a choice the subscriber made on the manage page wins over them (the
list file is the organiser's, rewritten by nobody; the page is the subscriber's). Who was told what stays in
the ledger alone: a preference only decides who is due a message, never what they were told.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path
from types import TracebackType

from mailer.core.errors import ConfigError
from mailer.record.state import SMALLEST_DATABASE, private_file, state_folder

PREFERENCES_FILE = "preferences.sqlite3"
ALL, DIGEST, NONE = "all", "digest", "none"  # (recipients.DELIVERIES)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (address TEXT NOT NULL, list TEXT NOT NULL, delivery TEXT NOT NULL,
                                       at TEXT NOT NULL, PRIMARY KEY (address, list));
CREATE TABLE IF NOT EXISTS zones (address TEXT PRIMARY KEY, zone TEXT NOT NULL, at TEXT NOT NULL);
"""


_DAMAGED = (
    "reading on would forget who chose the digest only or no mail at all; wanted the file restored from a backup "
    "(or, to start with nobody's choices, moved away)"
)


class Preferences:
    """The subscribers' own choices; an absent file (nobody chose yet) reads as empty."""

    def __init__(self, state: Path, *, create: bool = False) -> None:
        self.path = state / PREFERENCES_FILE
        self._db: sqlite3.Connection | None = None
        if not create and not self.path.exists():
            return
        if self.path.exists() and (size := self.path.stat().st_size) < SMALLEST_DATABASE:
            # (SQLite takes a 0- or 1-byte file for a new store: every "nothing from this list" forgotten)
            raise ConfigError(f"{self.path}: {size} bytes, too short for the preferences; {_DAMAGED}")
        try:
            if create:
                state_folder(state)
                private_file(self.path)
                self._db = sqlite3.connect(self.path, isolation_level=None)
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=FULL")  # a choice that got its page survives a power cut
                self._db.executescript(_SCHEMA)
            else:
                self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
                self._db.execute("SELECT 1 FROM deliveries, zones LIMIT 1").fetchall()  # (a file that is no store)
        except sqlite3.Error as err:
            raise ConfigError(f"{self.path}: cannot open the subscribers' preferences: {err}") from err

    def __enter__(self) -> Preferences:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def deliveries(self, list_name: str) -> dict[str, str]:
        """Address key -> all, digest or none, as the subscribers chose for ``list_name``."""
        if self._db is None:
            return {}
        rows = self._db.execute("SELECT address, delivery FROM deliveries WHERE list = ?", (list_name,))
        return dict(rows.fetchall())

    def zones(self) -> dict[str, str]:
        """Address key -> the IANA zone the subscriber chose."""
        if self._db is None:
            return {}
        return dict(self._db.execute("SELECT address, zone FROM zones").fetchall())

    def choose(self, key: str, deliveries: dict[str, str], zone: str | None, *, now: dt.datetime) -> None:
        """Record a subscriber's choices in one transaction (``zone`` None: no zone, the series' own)."""
        assert self._db is not None, "opened with create=True"
        at = now.astimezone(dt.UTC).isoformat(timespec="seconds")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for list_name, delivery in deliveries.items():
                self._db.execute(
                    "INSERT INTO deliveries VALUES (?, ?, ?, ?) ON CONFLICT (address, list) "
                    "DO UPDATE SET delivery = excluded.delivery, at = excluded.at",
                    (key, list_name, delivery, at),
                )
            if zone is None:
                self._db.execute("DELETE FROM zones WHERE address = ?", (key,))
            else:
                self._db.execute(
                    "INSERT INTO zones VALUES (?, ?, ?) ON CONFLICT (address) DO UPDATE SET zone = excluded.zone, "
                    "at = excluded.at",
                    (key, zone, at),
                )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
