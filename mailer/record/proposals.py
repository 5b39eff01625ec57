"""What speakers proposed through their link (``invite-speaker``): kept apart from the programme until the organiser
accepts it (``accept``), which writes it into the YAML. SQLite in the state folder, ``proposals.sqlite3``.

Each proposal is one seminar's fields as the speaker typed them (already checked as the YAML's own values are),
with the speaker's address and when; a later proposal for the same seminar from the same address replaces the
earlier one while both are pending.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from mailer.record.rows import utc_text
from mailer.record.state import private_file, state_folder

PROPOSALS_FILE = "proposals.sqlite3"
PENDING, ACCEPTED = "pending", "accepted"

_SCHEMA = """CREATE TABLE IF NOT EXISTS proposals (
    id       INTEGER PRIMARY KEY,
    list     TEXT NOT NULL,
    date     TEXT NOT NULL,
    speaker  TEXT NOT NULL,
    fields   TEXT NOT NULL,
    state    TEXT NOT NULL,
    at       TEXT NOT NULL
)"""


@dataclass(frozen=True, slots=True)
class Proposal:
    id: int
    date: str
    speaker: str  # the address the link was made for
    fields: dict[str, str]
    state: str
    at: str


class Proposals:
    def __init__(self, state: Path, list_name: str, *, create: bool = True) -> None:
        self.list_name = list_name
        path = state / PROPOSALS_FILE
        if create:
            state_folder(state)
            private_file(path)
            self._db = sqlite3.connect(path, isolation_level=None, timeout=30)
            self._db.execute(_SCHEMA)
        elif path.exists():
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        else:
            self._db = sqlite3.connect(":memory:", isolation_level=None)
            self._db.execute(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Proposals:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def propose(self, date: str, speaker: str, fields: dict[str, str], *, now: dt.datetime) -> int:
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(
                "DELETE FROM proposals WHERE list = ? AND date = ? AND speaker = ? AND state = ?",
                (self.list_name, date, speaker, PENDING),
            )
            cursor = self._db.execute(
                "INSERT INTO proposals (list, date, speaker, fields, state, at) VALUES (?, ?, ?, ?, ?, ?)",
                (self.list_name, date, speaker, json.dumps(fields, ensure_ascii=False), PENDING, utc_text(now)),
            )
            self._db.execute("COMMIT")
        return int(cursor.lastrowid or 0)

    def pending(self) -> list[Proposal]:
        rows = self._db.execute(
            "SELECT id, date, speaker, fields, state, at FROM proposals WHERE list = ? AND state = ? ORDER BY id",
            (self.list_name, PENDING),
        )
        return [Proposal(i, d, s, json.loads(f), st, at) for i, d, s, f, st, at in rows]

    def accepted(self, proposal: int) -> None:
        with self._db:
            self._db.execute(
                "UPDATE proposals SET state = ? WHERE id = ? AND list = ?", (ACCEPTED, proposal, self.list_name)
            )
