"""What a weekly digest has due at a moment: a pure function of the digest and its series' own plans.

A digest tells its readers of the week's seminars of the series it gathers, as an announcement tells a
series' subscribers: each reader gets, once, the seminars they were not told yet (so someone also on a
series' list who had that series' announcement first finds the others in the digest, and the other way
round: every seminar reaches everyone once). The week's seminars are those the series' own plans would
announce (drafts never, a week waiting for approval not yet), from the digest's ``send`` time, else from
the earliest announcement time of the week among its series. Everything else due in those series
(changes, cancellations, reminders, follow-ups) is due to the digest's readers too, under the very same
message keys, so whoever is on several lists gets each once, through the one ledger.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from mailer.programme.digest import Digest
from mailer.programme.model import Schedule, Seminar, Series
from mailer.run.plan import ANNOUNCEMENT, DIGEST, Due, Identity, Plan, digest_key


@dataclass(frozen=True, slots=True)
class DigestPlan:
    monday: dt.date
    week: Due | None  # the digest of the week (every reader: what they lack of it)
    owner: dict[str, Schedule]  # seminar key -> its series
    upcoming: tuple[tuple[Series, Seminar], ...]  # the next weeks in brief
    others: tuple[Due, ...]  # the series' other messages, due to the digest's readers told of their seminar
    notes: tuple[str, ...]


def plan_digest(
    digest: Digest,
    gathered: Sequence[tuple[Schedule, Plan]],
    *,
    now: dt.datetime,
    today: dt.date,
    explicit: bool = False,
) -> DigestPlan:
    """``gathered``: each included series with its plan made for the whole week (``explicit``), so that its
    announcement's seminars are known whatever the series' own announce time. ``explicit``: the organiser
    named the week (--date), so the digest's send time does not hold it back."""
    zone = digest.timezone or gathered[0][0].series.timezone
    monday = today - dt.timedelta(days=today.weekday())
    # (a seminar removed from its file is in no identity, only in its cancellation's due: its series all the same)
    owner = {
        i.key: schedule for schedule, p in gathered for i in (*p.identities, *(j for d in p.dues for j in d.seminars))
    }
    week: list[Identity] = []
    gates = []
    for schedule, p in gathered:
        announced = next((d for d in p.dues if d.kind == ANNOUNCEMENT and d.seminars), None)
        if announced is None:
            continue
        week += announced.seminars
        gate = schedule.series.announce
        tz = schedule.series.timezone
        gates.append(gate.moment(monday, tz) if gate else dt.datetime.combine(monday, dt.time(0, 0), tzinfo=tz))
    week.sort(key=lambda i: i.seminar.start)
    notes = []
    due = None
    if week:
        start = digest.send.moment(monday, zone) if digest.send else min(gates)
        if now < start and not explicit:
            notes.append(f"this week's digest goes out from {start:%A %H:%M} {start.tzname()}, not before")
        else:
            due = Due(DIGEST, digest_key(digest.list_name, tuple(week)), tuple(week))
    return DigestPlan(
        monday=monday,
        week=due,
        owner=owner,
        upcoming=_upcoming(digest, [s for s, _ in gathered], monday),
        others=tuple(d for _, p in gathered for d in p.dues if d.kind != ANNOUNCEMENT),
        notes=tuple(notes),
    )


def _upcoming(digest: Digest, schedules: Sequence[Schedule], monday: dt.date) -> tuple[tuple[Series, Seminar], ...]:
    """The seminars of the ``digest.upcoming`` weeks after this one, of every series, by start."""
    first, end = monday + dt.timedelta(days=7), monday + dt.timedelta(days=7 * (1 + digest.upcoming))
    later = [(s.series, seminar) for s in schedules for seminar in s.seminars if first <= seminar.date < end]
    return tuple(sorted(later, key=lambda pair: pair[1].start))
