"""Who is due each message of a run: the roster it reads (list file, suppressions, store: RunRoster), what
the ledger remembers of each seminar (memory_of, the planner's Memory), and for every message who lacks it or
was told an earlier revision (Audiences.wants, lacking). The planner decides what is due; this, to whom."""

from __future__ import annotations

import datetime as dt
import itertools
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mailer.audience.recipients import DUE, HELD, INVALID, UNSUBSCRIBED, Entry, classify, list_file, read_entries
from mailer.core.address import Address
from mailer.record.ledger import Ledger
from mailer.record.preferences import DIGEST, NONE, Preferences
from mailer.record.rows import Knowledge
from mailer.record.subscribers import Subscribers
from mailer.run.plan import (
    FOLLOWUP,
    REMINDER,
    WEEKLY,
    Due,
    Identity,
    Memory,
    announcement_key,
    narrowed,
)
from mailer.run.request import Request

KEPT = 50_000  # subscribers the counting pass keeps for the send (about 14 MiB); a longer list is read again


@dataclass
class RunRoster:
    """Who is on the list: the organiser's list file and the store's confirmed subscribers, less
    everyone suppressed (recipients/unsubscribed.txt, the store's unsubscriptions, refused addresses)."""

    path: Path
    suppressed: set[str]
    store: Subscribers
    held: set[str] = field(default_factory=set)  # chose the digests only, or nothing, for this list
    extra: tuple[Address, ...] = ()  # a digest's: those who chose it over a list it gathers
    zones: dict[str, str] = field(default_factory=dict)  # address key -> the reader's zone, where one is known
    delivery: dict[str, str] = field(default_factory=dict)  # address key -> all, digest or none, where chosen
    # The subscribers that ``classified`` found due, and the list file's (mtime, size) then: a list of up to
    # KEPT is parsed once a run, not once to count and again to send.
    kept: list[Address] | None = None
    stamp: tuple[int, int] | None = None

    def entries(self) -> Iterator[tuple[str, Entry]]:
        """Every line of the list and every other subscriber (the store's, a digest's extra), classified."""
        return classify(
            self.path,
            suppressed=self.suppressed,
            done=set(),
            subscribers=itertools.chain(self.store.confirmed(), self.extra),
            held=self.held,
        )

    def classified(self) -> Iterator[tuple[str, Entry]]:
        """As ``entries``, keeping the due ones for the send."""
        kept: list[Address] | None = []
        stamp = self._stamp()
        for kind, entry in self.entries():
            if kept is not None and kind == DUE and entry.recipient is not None:
                kept.append(entry.recipient)
                if len(kept) > KEPT:
                    kept = None
            yield kind, entry
        self.kept, self.stamp = kept, stamp

    def subscribers(self) -> Iterator[Address]:
        """Valid, de-duplicated, not suppressed subscribers, streamed: memory stays flat. Those ``classified``
        kept, unless the list file changed since."""
        if self.kept is not None and self.stamp is not None and self.stamp == self._stamp():
            yield from (a for a in self.kept if a.key not in self.suppressed)
            return
        for kind, entry in self.entries():
            if kind == DUE and entry.recipient is not None:
                yield entry.recipient

    def _stamp(self) -> tuple[int, int] | None:
        try:
            info = self.path.stat()
        except OSError:
            return None  # (reading it says why)
        return info.st_mtime_ns, info.st_size


def roster_of(request: Request, list_name: str, ledger: Ledger | None, *, gathers: tuple[str, ...] = ()) -> RunRoster:
    """The list's roster for a run; a digest's (``gathers``: the lists it gathers) with those who chose the digest
    over one of those lists. Delivery choices and zones: the subscriber's own (the manage page) over the CSV's."""
    from mailer.audience.recipients import suppressed_keys

    store = Subscribers(request.state, list_name, create=not request.dry_run)
    keys = suppressed_keys([request.recipients / UNSUBSCRIBED]) | store.unsubscribed_keys()
    keys |= ledger.suppressed_keys() if ledger else set()
    path = list_file(request.recipients, list_name)
    with Preferences(request.state) as chosen:
        deliveries, zones = csv_choices(path)
        deliveries.update(chosen.deliveries(list_name))
        extra: list[Address] = []
        for other in gathers:
            mine = roster_of(request, other, ledger)
            try:
                extra += [
                    e.recipient
                    for kind, e in mine.entries()
                    if kind == HELD and e.recipient is not None and mine.delivery.get(e.recipient.key) == DIGEST
                ]
            finally:  # (read once here: its store is not left open to the garbage collector, as the digest's is used)
                mine.store.close()
            zones.update({k: z for k, z in mine.zones.items() if k not in zones})
        zones.update(chosen.zones())
    # (on a digest's own list, "the digest only" is every message of it: only "none" holds a reader back)
    held = {key for key, delivery in deliveries.items() if delivery == NONE or (delivery == DIGEST and not gathers)}
    return RunRoster(path, keys, store, held, tuple(extra), zones, deliveries)


def csv_choices(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """A CSV list's ``delivery`` and ``timezone`` columns, by address key (a text list has neither)."""
    deliveries: dict[str, str] = {}
    zones: dict[str, str] = {}
    if path.suffix != ".csv":
        return deliveries, zones
    for entry in read_entries(path):
        if entry.recipient is not None:
            if entry.delivery:
                deliveries.setdefault(entry.recipient.key, entry.delivery)
            if entry.zone:
                zones.setdefault(entry.recipient.key, entry.zone)
    return deliveries, zones


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
    weeks: dict[int, tuple[tuple[Identity, ...], tuple[dict[str, int], ...], tuple[Identity, ...]]] = field(
        default_factory=dict
    )

    def refresh(self) -> None:
        """Forget what was read: the messages just sent changed who knows what."""
        self.known.clear()
        self.late.clear()
        self.weeks.clear()

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
        latests, fresh = self.week_knowledge(week)
        for latest in latests:
            if key in latest:
                break
        else:
            return fresh  # (told nothing of the week, as nearly everyone is at first: no loop over it)
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

    def week_knowledge(self, week: tuple[Identity, ...]) -> tuple[tuple[dict[str, int], ...], tuple[Identity, ...]]:
        """Who knows something of each of the week's seminars, and what one who knows nothing lacks: read once
        a week, not once a subscriber."""
        cached = self.weeks.get(id(week))
        if cached is None or cached[0] is not week:
            latests = tuple(self.knows(i.key).latest for i in week)
            cached = self.weeks[id(week)] = (week, latests, tuple(i for i in week if not i.seminar.is_cancelled))
        return cached[1], cached[2]

    def follows(self, seminar: str, revision: int) -> bool:
        """Whether a change or cancellation is due to those told ``revision`` of ``seminar``."""
        return any(d.seminars[0].key == seminar and d.from_revision == revision for d in self.dues)

    def wants(self, due: Due, key: str, done: set[str]) -> bool:
        if due.kind in WEEKLY:  # the part of the week this one lacks (not just of this part: one mail a week)
            week = next((d for d in self.dues if d.kind == due.kind), due)
            return self.lacking(week.seminars, key) == due.seminars
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


def count_due(
    roster: RunRoster,
    audiences: Audiences,
    week: Due | None,
    others: list[Due],
    dones: dict[str, set[str]],
    warn: Callable[[Entry], None],
) -> tuple[dict[str, int], dict[str, Due], dict[str, int], set[str]]:
    """One pass over the roster: the figures of each kind of line; the week's announcement split by the part
    of it each subscriber lacks (a Due per distinct part, by its key); how many are due each message; and the
    distinct zones of the readers due (one rendering each). The loop of a million-line list: what can be read
    once is read once, and a subscriber told nothing of the week (nearly everyone, at first) is one test."""
    counts: dict[str, int] = defaultdict(int)
    subsets: dict[str, Due] = {}  # subscribers told of some of the week's seminars get the others only
    tally: dict[str, int] = defaultdict(int)
    zones: set[str] = set()
    zone_of = roster.zones
    latests, fresh = audiences.week_knowledge(week.seminars) if week is not None else ((), ())
    whole_week = announcement_key(week.seminars) if week is not None else ""
    fresh_key, told_nothing = "", 0  # (the Due of those told nothing of the week, and how many they are)
    for kind, entry in roster.classified():
        counts[kind] += 1
        if kind != DUE or entry.recipient is None:
            if kind == INVALID:
                warn(entry)
            continue
        who = entry.recipient.key
        if zone_of and (zone := zone_of.get(who)) is not None:
            zones.add(zone)
        if week is not None:
            for latest in latests:
                if who in latest:
                    lacking = audiences.lacking(week.seminars, who)
                    break
            else:  # (told nothing of it: what they lack is the same for all of them)
                if fresh_key:
                    told_nothing += 1
                    lacking = ()
                else:
                    lacking = fresh
            if lacking:
                subset = whole_week if len(lacking) == len(week.seminars) else announcement_key(lacking)
                if subset not in subsets:  # (a Due made once per part, not once per subscriber)
                    subsets[subset] = narrowed(week, lacking)
                tally[subsets[subset].key] += 1
                if lacking is fresh:
                    fresh_key = subsets[subset].key
        for due in others:
            if audiences.wants(due, who, dones[due.key]):
                tally[due.key] += 1
    if told_nothing:
        tally[fresh_key] += told_nothing
    return dict(counts), subsets, dict(tally), zones


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
