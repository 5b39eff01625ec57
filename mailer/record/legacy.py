"""What version 1 of the ledger left, imported once into version 2 (ledger.py's migration)."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

from mailer.core.address import parse_address
from mailer.record.rows import utc_text

LEGACY_SUPPRESSED_FILE = "suppressed.txt"  # version 1 wrote suppressions here; imported, then renamed


def import_v1(db: sqlite3.Connection, list_name: str) -> None:
    """Version 1 kept one row per (announcement, recipient); an announcement was the week's
    seminar UIDs joined by '+'. Each becomes a message, its UIDs seminars whose announced
    fields are unknown (adopted from the schedule at the next send, never resent)."""
    rows = db.execute("SELECT DISTINCT announcement, min(at) FROM deliveries_v1 GROUP BY announcement")
    for announcement, first in list(rows):
        db.execute(
            "INSERT OR IGNORE INTO messages VALUES (?, ?, 'announcement', '', ?)",
            (announcement, list_name, first),
        )
        for uid in announcement.split("+"):
            db.execute(
                "INSERT OR IGNORE INTO seminars VALUES (?, ?, ?, NULL, ?, 0, ?)",
                (uid, list_name, uid, announcement, first),
            )
            db.execute("INSERT OR IGNORE INTO revisions VALUES (?, 0, NULL, ?)", (uid, first))
            db.execute("INSERT OR IGNORE INTO told VALUES (?, ?, 0)", (announcement, uid))
    db.execute(
        """INSERT INTO deliveries (message, recipient, state, attempts, message_id, detail, at)
           SELECT announcement, recipient, state, attempts, message_id, detail, at FROM deliveries_v1"""
    )
    db.execute("DROP TABLE deliveries_v1")


def import_suppressed_file(db: sqlite3.Connection, state: Path) -> None:
    """Version 1 appended ``addr  # reason`` lines to state/suppressed.txt."""
    path = state / LEGACY_SUPPRESSED_FILE
    if not path.exists():
        return
    now = utc_text(dt.datetime.now(dt.UTC))
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        addr, _, reason = line.partition("  # ")
        if (address := parse_address(addr.strip())) is not None:
            db.execute(
                "INSERT OR IGNORE INTO suppressed VALUES (?, ?, ?, '', ?)",
                (address.key, address.addr, reason.strip() or "imported from suppressed.txt", now),
            )
