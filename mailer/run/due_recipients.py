"""Who is due each message of a run: the roster it reads (list file, suppressions, store: RunRoster), what
the ledger remembers of each seminar (memory_of, the planner's Memory), and for every message who lacks it or
was told an earlier revision (Audiences.wants, lacking). The planner decides what is due; this, to whom."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mailer.audience.recipients import DUE, UNSUBSCRIBED, classify, list_file
from mailer.core.address import Address
from mailer.record.ledger import Ledger
from mailer.record.rows import Knowledge
from mailer.record.subscribers import Subscribers
from mailer.run.plan import (
    ANNOUNCEMENT,
    FOLLOWUP,
    REMINDER,
    Due,
    Identity,
    Memory,
)
from mailer.run.request import Request


@dataclass
class RunRoster:
    """Who is on the list: the organiser's list file and the store's confirmed subscribers, less
    everyone suppressed (recipients/unsubscribed.txt, the store's unsubscriptions, refused addresses)."""

    path: Path
    suppressed: set[str]
    store: Subscribers

    def subscribers(self) -> Iterator[Address]:
        """Valid, de-duplicated, not suppressed subscribers, streamed: memory stays flat."""
        for kind, entry in classify(
            self.path, suppressed=self.suppressed, done=set(), subscribers=self.store.confirmed()
        ):
            if kind == DUE and entry.recipient is not None:
                yield entry.recipient


def roster_of(request: Request, series_list: str, ledger: Ledger | None) -> RunRoster:
    from mailer.audience.recipients import suppressed_keys

    store = Subscribers(request.state, series_list, create=not request.dry_run)
    keys = suppressed_keys([request.recipients / UNSUBSCRIBED]) | store.unsubscribed_keys()
    keys |= ledger.suppressed_keys() if ledger else set()
    return RunRoster(list_file(request.recipients, series_list), keys, store)


@dataclass
class Audiences:
    """Picks each due message's recipients from the ledger's record of who was told what.

    A recipient whose copy of a message may have arrived (in flight when a run died, or no final reply) gets
    that same message once more (the same Message-ID: a possible duplicate, counted), and anything later
    relative to it: so a revision, or a revert, reaches them even if that copy did arrive."""

    ledger: Ledger | None
    dues: tuple[Due, ...] = ()  # this run's due messages (whether a possible copy is followed up)
    known: dict[str, Knowledge] = field(default_factory=dict)
    late: dict[str, set[str]] = field(default_factory=dict)

    def refresh(self) -> None:
        """Forget what was read: the messages just sent changed who knows what."""
        self.known.clear()
        self.late.clear()

    def told_late(self, due: Due) -> set[str]:
        """Who was first told of a reminder's seminar after the reminder time: no reminder for them."""
        key = due.seminars[0].key
        if key not in self.late:
            since = due.since or dt.datetime.max.replace(tzinfo=dt.UTC)
            self.late[key] = self.ledger.told_since(key, since) if self.ledger else set()
        return self.late[key]

    def knows(self, seminar: str) -> Knowledge:
        if seminar not in self.known:
            self.known[seminar] = self.ledger.knowledge(seminar) if self.ledger else Knowledge({}, {}, {})
        return self.known[seminar]

    def lacking(self, week: tuple[Identity, ...], key: str) -> tuple[Identity, ...]:
        """The week's seminars this subscriber is to be announced: those not told (never a cancelled one:
        nobody hears of a seminar first by its cancellation), and those whose copy of this very revision
        may not have arrived (retried once, with the same Message-ID)."""
        out = []
        for i in week:
            knowledge = self.knows(i.key)
            if key in knowledge.sure:
                continue
            maybe = knowledge.maybe.get(key)
            if i.seminar.is_cancelled or (maybe is not None and self.follows(i.key, maybe[0])):
                continue  # (a possible copy: what came since is told relative to it)
            out.append(i)  # never told, or its possible copy cannot be followed up: (once more) as it now is
        return tuple(out)

    def follows(self, seminar: str, revision: int) -> bool:
        """Whether a change or cancellation is due to those told ``revision`` of ``seminar``."""
        return any(d.seminars[0].key == seminar and d.from_revision == revision for d in self.dues)

    def wants(self, due: Due, key: str, done: set[str]) -> bool:
        if due.kind == ANNOUNCEMENT:  # the part of the week this subscriber lacks, as _due_messages split it
            week = next((d.seminars for d in self.dues if d.kind == ANNOUNCEMENT), due.seminars)
            return self.lacking(week, key) == due.seminars
        if due.kind == REMINDER:  # only to those told of the seminar, and in time
            told = key in self.knows(due.seminars[0].key).latest
            return told and key not in done and key not in self.told_late(due)
        if due.kind == FOLLOWUP:  # only to those told of the seminar, once
            return key in self.knows(due.seminars[0].key).latest and key not in done
        if key in done:
            return False  # this very message surely reached them
        seminar = due.seminars[0].key
        knowledge = self.knows(seminar)
        maybe = knowledge.maybe.get(key)
        if maybe is None:
            return knowledge.latest.get(key) == due.from_revision
        if maybe[1] == due.key:
            return True  # this very message may not have arrived: once more
        if any(d.key == maybe[1] for d in self.dues):
            return False  # (that retry is due)
        if self.follows(seminar, maybe[0]):  # told relative to the possible copy (a revert corrects it)
            return due.from_revision == maybe[0]
        return due.from_revision == knowledge.sure.get(key)  # nothing follows it: relative to what surely came


def memory_of(ledger: Ledger | None, list_name: str) -> Memory:
    if ledger is None:
        return Memory()
    remembered = tuple(ledger.remembered(list_name))
    # Revisions someone knows, or knows for sure while a later copy is unsettled: that copy's message stays
    # due, to be retried once.
    knowledge = {r.key: ledger.knowledge(r.key) for r in remembered}
    known = {k: frozenset(v.latest.values()) | frozenset(v.sure.values()) for k, v in knowledge.items()}
    fields = {(r.key, rev): ledger.fields_of(r.key, rev) for r in remembered for rev in known[r.key]}
    first = {r.key: ledger.first_told(r.key) for r in remembered}
    approved = frozenset((week, fingerprint) for week, fingerprint, _, _ in ledger.approvals(list_name))
    return Memory(remembered, known, fields, first, ledger.seen(list_name), approved)
