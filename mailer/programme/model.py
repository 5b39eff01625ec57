"""The programme as frozen values (Series, Seminar, Schedule, Week) and the week an announcement covers.

schedule.py makes them from the YAML, reporting every problem (and the planner rebuilds a removed seminar
from its remembered fields); everything else only reads them."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
import zoneinfo
from dataclasses import dataclass
from pathlib import Path

from mailer.core.address import Address


@dataclass(frozen=True, slots=True)
class Reminder:
    """When to remind subscribers of a seminar: at a local time on the day, or some minutes before."""

    at: dt.time | None  # "09:00": on the seminar's day, at this local time
    before: int | None  # "2h", "90m": this many minutes before the start

    def due_at(self, start: dt.datetime) -> dt.datetime:
        """The moment the reminder becomes due for a seminar starting at ``start`` (aware)."""
        if self.at is not None:
            return dt.datetime.combine(start.date(), self.at, tzinfo=start.tzinfo)
        assert self.before is not None
        return (start.astimezone(dt.UTC) - dt.timedelta(minutes=self.before)).astimezone(start.tzinfo)

    def __str__(self) -> str:
        if self.at is not None:
            return f"{self.at:%H:%M} on the day"
        return f"{self.before} minutes before"


WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


@dataclass(frozen=True, slots=True)
class Announce:
    """When a week's announcement goes out at the earliest: a weekday of that week and a local time."""

    weekday: int  # 0 = Monday
    at: dt.time

    def moment(self, monday: dt.date, tz: dt.tzinfo) -> dt.datetime:
        return dt.datetime.combine(monday + dt.timedelta(days=self.weekday), self.at, tzinfo=tz)

    def __str__(self) -> str:
        return f"{WEEKDAYS[self.weekday].capitalize()} {self.at:%H:%M}"


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    signature: str
    timezone: zoneinfo.ZoneInfo
    time: dt.time
    duration: int
    location: str
    zoom: str | None
    info_url: str
    sender: Address
    list_name: str
    upcoming: int
    reply_to: Address | None
    unsubscribe_url: str | None
    unsubscribe_email: Address | None
    reminder: Reminder | None = None
    announce: Announce | None = None  # not before this moment of the week (cron may run send every 15 minutes)
    service_url: str | None = None  # where `seminar-mailer serve` is reachable (behind a proxy), no trailing /
    calendar_url: str | None = None  # where the seminars.ics that `seminar-mailer publish` writes is reachable
    site: str = "html"  # what `publish` writes: "html" (a complete website) or "jekyll" (Markdown pages for Jekyll)
    zoom_public: bool = True  # False: the Zoom link is in the mails only, in no published file
    noindex: bool = False  # True: the published pages ask search engines not to index them
    followup: bool = False  # True: the slides, video and paper are mailed once after the talk, to those told of it
    approval: bool = False  # ``approval: required``: a week is mailed about only as an organiser approved it
    organisers: tuple[Address, ...] = ()  # reminded of what a week's seminars lack, 24 h before its announcement

    @property
    def unsubscribe_address(self) -> Address:
        """Where "unsubscribe" mails go: the configured address, else the sender."""
        return self.unsubscribe_email or self.sender

    @property
    def unsubscribe_page(self) -> str | None:
        """The unsubscribe page: unsubscribe_url wins, else the service's. The footer links to it as
        is; List-Unsubscribe adds the subscriber's token (one click, RFC 8058)."""
        return self.unsubscribe_url or (f"{self.service_url}/unsubscribe" if self.service_url else None)


# Letters that Unicode does not decompose into an ASCII letter and a mark (ø is not o + ◌̸).
_TRANSLITERATE = str.maketrans(
    {"ø": "o", "Ø": "O", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ß": "ss", "đ": "d", "Đ": "D", "ð": "d"}
    | {"Ð": "D", "ł": "l", "Ł": "L", "þ": "th", "Þ": "Th", "ı": "i", "ħ": "h", "Ħ": "H", "ŋ": "ng", "Ŋ": "NG"}
)


@dataclass(frozen=True, slots=True)
class Seminar:
    date: dt.date
    start: dt.datetime  # aware, in the series' zone
    duration: int
    speaker: str
    affiliation: str | None
    title: str | None
    abstract: str | None  # Markdown
    bio: str | None  # Markdown
    location: str
    zoom: str | None
    cancelled: str | None  # None: on; "": cancelled without a reason; else the reason
    line: int
    id: str | None = None  # pinned identity (``id:`` in the YAML); else remembered in the state folder
    notify: bool | None = None  # ``notify:``: True mails even a spelling fix, False mails no edit; None: decide
    slides: str | None = None  # after the talk: links the published pages show (and the series' follow-up mail)
    video: str | None = None
    paper: str | None = None
    draft: bool = False  # ``draft: true``: in no mail and no page until removed (Schedule.drafts)

    @property
    def materials(self) -> tuple[tuple[str, str], ...]:
        """The links added after the talk, as (label, url): slides, video, paper."""
        links = (("Slides", self.slides), ("Video", self.video), ("Paper", self.paper))
        return tuple((label, url) for label, url in links if url)

    @property
    def end(self) -> dt.datetime:
        """Exactly ``duration`` minutes later, also across a clock change (arithmetic in UTC)."""
        end = self.start.astimezone(dt.UTC) + dt.timedelta(minutes=self.duration)
        return end.astimezone(self.start.tzinfo)

    @property
    def tz_label(self) -> str:
        """The zone abbreviation in force at the start: CET in January, CEST in June."""
        return self.start.tzname() or ""

    @property
    def is_cancelled(self) -> bool:
        return self.cancelled is not None

    @property
    def slug(self) -> str:
        text = unicodedata.normalize("NFKD", (self.title or self.speaker).translate(_TRANSLITERATE))
        text = text.encode("ascii", "ignore").decode().lower()
        return re.sub(r"[^a-z0-9]+", "-", text).strip("-")[:60].strip("-") or "seminar"


@dataclass(frozen=True, slots=True)
class Schedule:
    path: Path
    series: Series
    seminars: tuple[Seminar, ...]  # sorted by start; drafts are not among them
    drafts: tuple[Seminar, ...] = ()  # ``draft: true``: validated, matched to announced ones, never told


@dataclass(frozen=True, slots=True)
class Week:
    """What one announcement covers: the week's seminars and the ones listed as upcoming."""

    monday: dt.date
    seminars: tuple[Seminar, ...]
    upcoming: tuple[Seminar, ...]


def week_of(schedule: Schedule, today: dt.date) -> Week | None:
    """Return the announcement for the Monday-to-Sunday week holding ``today``, or None if empty."""
    monday = today - dt.timedelta(days=today.weekday())
    sunday = monday + dt.timedelta(days=6)
    this_week = tuple(s for s in schedule.seminars if monday <= s.date <= sunday)
    if not this_week:
        return None
    later = (s for s in schedule.seminars if s.date > sunday)  # cancelled ones are listed as cancelled
    upcoming = tuple(s for _, s in zip(range(schedule.series.upcoming), later, strict=False))
    return Week(monday=monday, seminars=this_week, upcoming=upcoming)
