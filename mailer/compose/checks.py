"""What ``check`` verifies beyond the schema: plausible dates, and that every coming week renders.

Passing ``check`` should mean the Monday cron job can render and build its message, so every week
from ``today`` on that holds a seminar is rendered with the organiser's templates and turned into a
message whose header lines are measured. Warnings are for what is legal but probably a mistake: a
programme that lies wholly in the past, dates out of order in the file, a date far from all the
others (2025 typed for 2026), a time that happens twice when the clocks go back, and a seminar of
this week or the next whose speaker, title, abstract or room is still missing or TBA.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
from pathlib import Path

from mailer.core.errors import Problem, TemplateError
from mailer.programme.model import Schedule, Seminar, week_of

FAR = dt.timedelta(days=180)  # a seminar this far from every other one is probably a typed year
MAX_HEADER_LINE = 998  # octets, RFC 5322 2.1.1


def _warn(schedule: Schedule, seminar: Seminar, message: str) -> Problem:
    return Problem(schedule.path, seminar.line, None, message)


def date_warnings(schedule: Schedule, today: dt.date) -> list[Problem]:
    """Legal but suspicious dates and times, each at the seminar's line."""
    seminars = schedule.seminars
    warnings: list[Problem] = []
    if not seminars:
        return warnings
    latest = max(seminars, key=lambda s: s.start)
    if latest.date < today - dt.timedelta(days=today.weekday()):
        warnings.append(
            _warn(
                schedule,
                latest,
                f"every seminar is in the past (the latest is {latest.date}, today is {today}); "
                "the next run announces nothing: wanted the coming seminars added",
            )
        )
    in_file = sorted(seminars, key=lambda s: s.line)
    for previous, seminar in itertools.pairwise(in_file):
        if seminar.date < previous.date:
            warnings.append(
                _warn(
                    schedule,
                    seminar,
                    f"{seminar.date} comes after {previous.date} (line {previous.line}) in the file; "
                    "is the date right? Wanted the seminars in date order",
                )
            )
    if len(seminars) >= 3:
        for index, seminar in enumerate(seminars):
            neighbours = [seminars[i] for i in (index - 1, index + 1) if 0 <= i < len(seminars)]
            gap = min(abs(n.start - seminar.start) for n in neighbours)
            if gap > FAR:
                warnings.append(
                    _warn(
                        schedule,
                        seminar,
                        f"{seminar.date} is {gap.days} days from the nearest other seminar; is the year right?",
                    )
                )
    for seminar in seminars:
        other = seminar.start.replace(fold=1)
        if other.utcoffset() != seminar.start.utcoffset():
            warnings.append(
                _warn(
                    schedule,
                    seminar,
                    f"{seminar.start:%Y-%m-%d %H:%M} happens twice when the clocks go back; it is taken as the "
                    f"first, {seminar.start:%H:%M} {seminar.tz_label} (write another time to avoid doubt)",
                )
            )
    return sorted(warnings, key=lambda p: p.line or 0)


PLACEHOLDER = re.compile(r"^\W*(?:tba|tbd|tbc|to be (?:announced|confirmed|decided|determined)|n/?a|\?+)\W*$", re.I)


def is_placeholder(text: str | None) -> bool:
    """Nothing yet: absent, blank, or a placeholder such as TBA, "To be announced", "?"."""
    return text is None or not text.strip() or bool(PLACEHOLDER.match(text.strip()))


def _due_next(seminars: tuple[Seminar, ...], today: dt.date) -> list[Seminar]:
    """The seminars of this week (from today) and the next: those whose announcement is next."""
    until = today - dt.timedelta(days=today.weekday()) + dt.timedelta(days=14)
    return [s for s in seminars if today <= s.date < until and not s.is_cancelled]


def drafts_due(schedule: Schedule, today: dt.date) -> list[Problem]:
    """The drafts among the seminars of this week and the next: no mail or page shows them."""
    return [
        _warn(schedule, s, f"{s.date} ({s.speaker}) is a draft: no mail or page shows it until 'draft' is removed")
        for s in _due_next(schedule.drafts, today)
    ]


def missing_details(schedule: Schedule, today: dt.date) -> list[Problem]:
    """What the seminars of this week and the next still lack (speaker, title, abstract, room: absent or TBA),
    each at its line, saying when its announcement goes out."""
    series = schedule.series
    out: list[Problem] = []
    for seminar in _due_next(schedule.seminars, today):
        week = seminar.date - dt.timedelta(days=seminar.date.weekday())
        gate = series.announce.moment(week, series.timezone) if series.announce else None
        if gate is not None and gate.date() >= today:
            when = f"its announcement goes out {gate:%A %Y-%m-%d %H:%M}"
        elif week > today:
            when = f"its announcement goes out {week:%A %Y-%m-%d}"
        else:
            when = "it is this week's"
        name = f"{seminar.date} ({seminar.speaker})"
        lacking = [
            what
            for what, value in (
                ("speaker", seminar.speaker),
                ("title", seminar.title),
                ("abstract", seminar.abstract),
                ("location", seminar.location),
            )
            if is_placeholder(value)
        ]
        if lacking:
            listed = lacking[0] if len(lacking) == 1 else ", ".join(lacking[:-1]) + " or " + lacking[-1]
            out.append(
                _warn(
                    schedule,
                    seminar,
                    f"{name} has no {listed} yet (absent, or a placeholder such as TBA) and {when}; "
                    "wanted it filled in, or 'draft: true' to hold the seminar back",
                )
            )
    return out


def _header_lines(message: bytes) -> list[bytes]:
    head = message.split(b"\r\n\r\n", 1)[0]
    return head.split(b"\r\n")


def render_coming_weeks(schedule: Schedule, *, today: dt.date, templates: Path | None) -> int:
    """Render and build every week from ``today`` on that has a seminar; return how many.

    Raise TemplateError (or another MailerError) for the first week that would fail on Monday.
    """
    from mailer.compose.message import build_announcement
    from mailer.compose.render import render
    from mailer.core.address import Address

    monday = today - dt.timedelta(days=today.weekday())
    mondays = sorted({s.date - dt.timedelta(days=s.date.weekday()) for s in schedule.seminars if s.date >= monday})
    stand_in = Address(name="", addr="subscriber@example.org")
    for week_start in mondays:
        week = week_of(schedule, week_start)
        assert week is not None
        rendered = render(schedule, week, templates=templates)
        now = dt.datetime.combine(week_start, dt.time(8), tzinfo=schedule.series.timezone)
        template = build_announcement(schedule, week, rendered, now=now, token_key=b"check-only, never sent")
        message = template.personalise(stand_in)
        for line in _header_lines(message):
            if len(line) > MAX_HEADER_LINE:
                name = line.split(b":", 1)[0].decode("ascii", "replace")
                raise TemplateError(
                    f"the {name} header for the week of {week_start} would be {len(line)} octets long; "
                    f"wanted at most {MAX_HEADER_LINE}: shorten the text that goes into it"
                )
    return len(mondays)
