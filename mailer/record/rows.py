"""What the ledger hands back: frozen values with no SQL in them, and its one format for moments (UTC, microseconds)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


def utc_text(moment: dt.datetime) -> str:
    """The ledger's time format: UTC, ISO 8601 to the microsecond, so text order is time order."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> dt.datetime:
    """A time the ledger recorded (this version's format, or version 1's ISO 8601 with an offset)."""
    moment = dt.datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class Mark:
    """One delivery result."""

    message: str  # message key
    recipient: str  # Address.key
    state: str
    attempts: int
    message_id: str
    detail: str  # the server's reply, or why it failed
    doubt: bool = False  # the message was transmitted but no final reply came


@dataclass(frozen=True, slots=True)
class Remembered:
    """A seminar as the ledger remembers it: identity and the latest announced revision."""

    key: str
    uid: str
    pinned: str | None
    thread: str
    revision: int
    fields: dict[str, object] | None  # the latest revision's fields; None if never recorded (migrated)
    first_at: str


@dataclass(frozen=True, slots=True)
class Knowledge:
    """Who was told which revision of one seminar (see ``Ledger.knowledge``)."""

    sure: dict[str, int]  # recipient -> latest revision a copy reached
    maybe: dict[str, tuple[int, str]]  # recipient -> (latest revision a copy may have reached, its message)
    latest: dict[str, int]  # recipient -> the later of the two: what a later revision is told relative to

    @classmethod
    def of(cls, sure: dict[str, int], maybe: dict[str, tuple[int, str]]) -> Knowledge:
        # A possible copy of a revision someone surely knows, or of an older one, is superseded: nothing
        # follows up on it (else a change they surely had would be sent again relative to it).
        maybe = {r: m for r, m in maybe.items() if m[0] > sure.get(r, -1)}
        latest = dict(sure)
        for recipient, (revision, _) in maybe.items():
            if revision > latest.get(recipient, -1):
                latest[recipient] = revision
        return cls(sure, maybe, latest)


@dataclass(frozen=True, slots=True)
class Suppression:
    recipient: str
    address: str
    reason: str
    message: str
    at: str


@dataclass(frozen=True, slots=True)
class MessageStats:
    """What one message did, for ``status``."""

    key: str
    kind: str
    subject: str
    counts: dict[str, int]
    first: str | None
    last: str | None
