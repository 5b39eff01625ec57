"""Who gets no mail, and why, in one vocabulary for status, subscribers and unsuppress; and the roster that
``subscribers`` prints: everyone the next send considers, classified as send classifies them, with where each
address came from (a list file's line, a confirmation, the store)."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mailer.audience.recipients import DUE, DUPLICATE, SUPPRESSED, classify, read_entries
from mailer.record.subscribers import UNSUBSCRIBED, Subscribers

REFUSED = "refused at RCPT"  # the ledger's suppressions: the recipient's server refused it for good
BOUNCED = "bounced"  # bounces: a hard bounce, or soft ones about MAILER_SOFT_BOUNCES seminars
BY_PERSON = "unsubscribed by the person"  # the one-click link or the web page
BY_ORGANISER = "removed by the organiser"  # seminar-mailer unsubscribe, or recipients/unsubscribed.txt


@dataclass(frozen=True, slots=True)
class NoMail:
    """One address that gets no mail: ``reason`` is one of the four above."""

    key: str
    address: str
    reason: str
    detail: str  # the server's words, the bounce, the file line, how
    date: str  # YYYY-MM-DD, "" when unknown (a file line)

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}{f' on {self.date}' if self.date else ''}"


def _store_reason(source: str) -> tuple[str, str]:
    if source.startswith(("bounced", "bounces")):
        return BOUNCED, source.partition(": ")[2] or source
    if source in ("one-click", "web"):
        return BY_PERSON, {"one-click": "the one-click link in a message", "web": "the web page"}[source]
    return BY_ORGANISER, "the unsubscribe command" if source == "command" else source


def no_mail(
    store: Subscribers, refused: Iterable[tuple[str, str, str, str]], files: Iterable[Path]
) -> dict[str, NoMail]:
    """Everyone who gets no mail, by address key (the first reason found wins, as send applies them).

    ``refused``: the ledger's (key, address, the server's reply, when)."""
    found: dict[str, NoMail] = {}
    for key, addr, reply, at in refused:
        found.setdefault(key, NoMail(key, addr, REFUSED, reply, at[:10]))
    for path in files:
        if path.exists():
            for entry in read_entries(path):
                if entry.recipient is not None:
                    where = f"{path}:{entry.line}"
                    found.setdefault(
                        entry.recipient.key, NoMail(entry.recipient.key, entry.recipient.addr, BY_ORGANISER, where, "")
                    )
    for record in store.records():
        if record.state == UNSUBSCRIBED:
            reason, detail = _store_reason(record.source)
            found.setdefault(
                record.address.key, NoMail(record.address.key, record.address.addr, reason, detail, record.at[:10])
            )
    return found


@dataclass(frozen=True, slots=True)
class RosterLine:
    address: str
    state: str  # subscribed, unsubscribed, duplicate, invalid
    source: str  # where the address came from, and why it is unsubscribed


@dataclass(frozen=True, slots=True)
class Roster:
    counts: dict[str, int]
    pending: int
    lines: list[RosterLine]


def roster(
    list_path: Path,
    suppression_files: list[Path],
    store: Subscribers,
    refused: Iterable[tuple[str, str, str, str]] = (),
) -> Roster:
    """Everyone the next send considers, as send classifies them, with where each came from.

    ``refused``: addresses the ledger suppresses (a permanent refusal): (key, address, reply, when)."""
    why = {key: str(entry) for key, entry in no_mail(store, refused, suppression_files).items()}
    records = {r.address.key: r for r in store.records()}
    states = {DUE: "subscribed", SUPPRESSED: "unsubscribed", DUPLICATE: "duplicate"}
    counts: dict[str, int] = {}
    lines = []
    for kind, entry in classify(list_path, suppressed=set(why), done=set(), subscribers=store.confirmed()):
        state = states.get(kind, "invalid")
        counts[state] = counts.get(state, 0) + 1
        if entry.recipient is None:
            lines.append(RosterLine("?", state, str(entry.problem)))
            continue
        key = entry.recipient.key
        record = records.get(key)
        source = (
            f"{list_path}:{entry.line}"
            if entry.line
            else f"confirmed ({record.source}) on {record.at[:10]}"
            if record
            else "the store"
        )
        if state == "unsubscribed":
            source += f"; unsubscribed: {why[key]}"
        lines.append(RosterLine(entry.recipient.addr, state, source))
    return Roster(counts, store.pending_count(now=time.time()), lines)
