"""Recurring slots and whole-term moves, written into the programme file (``programme/edit.py`` keeps the rest
of it byte for byte).

``add`` appends a TBA seminar on each weekday of a span that holds none yet. ``shift`` moves the seminars from a
date on by a number of days, or to another start time. A moved seminar that subscribers were told of keeps its
identity: ``shift`` writes its ``id:`` (the identity ``status`` shows) when it has none, so the next ``send``
sees a move of that seminar and mails its change to those told, and never takes the shifted slots for other
seminars (a weekly series shifted by a week puts every seminar on the date of the next one).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from mailer.core.errors import ConfigError
from mailer.programme.edit import Editor, every, yaml_text
from mailer.programme.model import Seminar
from mailer.programme.schedule import load_schedule
from mailer.programme.yamlfile import Mapping, Scalar
from mailer.run.dispatch import read_ledger
from mailer.run.due_recipients import memory_of
from mailer.run.plan import identities
from mailer.run.request import Request


def add_slots(
    request: Request, *, weekday: int, start: dt.date, until: dt.date, skip: set[dt.date], speaker: str
) -> tuple[list[dt.date], list[dt.date]]:
    """Append a seminar with ``speaker`` (TBA) on every ``weekday`` from ``start`` to ``until``: (added, taken)."""
    if until < start:
        raise ConfigError(f"--until {until} is before --from {start}; wanted the span's last day after its first")
    schedule = load_schedule(request.schedule)
    taken = {s.date for s in (*schedule.seminars, *schedule.drafts)}
    days = every(weekday, start, until, skip)
    if len(days) > 200:
        raise ConfigError(f"{len(days)} seminars from {start} to {until}: wanted a span of at most 200 of them")
    new = [d for d in days if d not in taken]
    if new:
        editor = Editor(request.schedule)
        editor.append([[("date", d.isoformat()), ("speaker", yaml_text(speaker))] for d in new])
        editor.save()
    return new, [d for d in days if d in taken]


@dataclass(frozen=True, slots=True)
class Moved:
    before: Seminar
    after: str  # the new date or time, as written
    pinned: str | None  # the id written so the seminar keeps its identity


def shift(
    request: Request, *, start: dt.date, until: dt.date | None, days: int | None, time: dt.time | None
) -> list[Moved]:
    """Move every seminar from ``start`` (to ``until``) by ``days``, or to the start ``time``."""
    schedule = load_schedule(request.schedule)
    ledger = read_ledger(request.state, schedule.series.list_name)
    memory = memory_of(ledger, schedule.series.list_name)
    told = {
        i.seminar.line: i.key
        for i in identities(schedule, memory)[0]
        if i.remembered is not None and memory.known.get(i.key)
    }
    editor = Editor(request.schedule)
    by_line = {item.line: item for item in editor.items}
    chosen = [
        s
        for s in (*schedule.seminars, *schedule.drafts)
        if s.date >= start and (until is None or s.date <= until) and s.line in by_line
    ]
    moved: list[Moved] = []
    # From the bottom of the file up, so the lines an added id: takes do not move the lines still to edit.
    for seminar in sorted(chosen, key=lambda s: s.line, reverse=True):
        item: Mapping = by_line[seminar.line]
        if days is not None:
            date_node = item.values["date"]
            after = (seminar.date + dt.timedelta(days=days)).isoformat()
            assert isinstance(date_node, Scalar)
            editor.set_scalar(date_node, after)
        else:
            assert time is not None
            after = f'"{time:%H:%M}"'
            if isinstance(time_node := item.values.get("time"), Scalar):
                editor.set_scalar(time_node, after)
            else:
                editor.add_key(item, "time", after)
        pinned = None
        if seminar.id is None and (key := told.get(seminar.line)) is not None:
            editor.add_key(item, "id", key)
            pinned = key
        moved.append(Moved(seminar, after, pinned))
    if moved:
        editor.save()
    return sorted(moved, key=lambda m: m.before.start)
