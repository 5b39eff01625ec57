"""The calendar invitation (RFC 5545/5546): one VEVENT per seminar, times in UTC.

Every message about a seminar carries its invitation under the same ``UID`` (fixed at its first
announcement) with ``SEQUENCE`` = the seminar's revision, so a calendar replaces the event it
holds: a change is METHOD:PUBLISH with a higher SEQUENCE, a cancellation METHOD:CANCEL with
STATUS:CANCELLED.
The series' published calendar (``build_feed``, written by ``publish``) holds the very same VEVENTs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import icalendar

from mailer.links import plain
from mailer.schedule import Schedule, Seminar


@dataclass(frozen=True, slots=True)
class Event:
    """One seminar as a calendar event: its identity and revision."""

    seminar: Seminar
    uid: str
    sequence: int


def method(seminars: Sequence[Seminar]) -> str:
    """CANCEL when every seminar of the message is cancelled, else PUBLISH."""
    return "CANCEL" if all(s.is_cancelled for s in seminars) else "PUBLISH"


def _calendar() -> icalendar.Calendar:
    calendar = icalendar.Calendar()
    calendar.add("prodid", "-//seminar-mailer//seminar-mailer//EN")
    calendar.add("version", "2.0")
    return calendar


def build_invite(schedule: Schedule, events: Sequence[Event], *, now: dt.datetime) -> bytes:
    """Return the iCalendar file for ``events``."""
    calendar = _calendar()
    calendar.add("method", method([e.seminar for e in events]))
    for ev in events:
        calendar.add_component(vevent(schedule, ev, stamp=now))
    return bytes(calendar.to_ical())


def build_feed(schedule: Schedule, events: Sequence[tuple[Event, dt.datetime]], *, refresh: dt.timedelta) -> bytes:
    """Return the series' published calendar (RFC 5545 without METHOD; RFC 7986 refresh): one VEVENT
    per ``(event, stamp)``, the same VEVENT as the invitations carry, ``stamp`` as its DTSTAMP."""
    calendar = _calendar()
    calendar.add("x-wr-calname", schedule.series.name)
    calendar.add("refresh-interval", refresh, parameters={"VALUE": "DURATION"})
    calendar.add("x-published-ttl", icalendar.vDuration(refresh))  # Outlook's and Apple's name for it
    for ev, stamp in events:
        calendar.add_component(vevent(schedule, ev, stamp=stamp))
    return bytes(calendar.to_ical())


def vevent(schedule: Schedule, ev: Event, *, stamp: dt.datetime) -> icalendar.Event:
    """One seminar as a VEVENT: the single definition shared by the invitations and the feed."""
    series = schedule.series
    seminar = ev.seminar
    event = icalendar.Event()
    event.add("uid", ev.uid)
    event.add("dtstamp", stamp.astimezone(dt.UTC))
    event.add("sequence", ev.sequence)
    event.add("dtstart", seminar.start.astimezone(dt.UTC))
    event.add("dtend", seminar.end.astimezone(dt.UTC))
    title = f"{series.name}: {seminar.speaker}"
    if seminar.title:
        title = f"{series.name}: {seminar.title} ({seminar.speaker})"
    event.add("summary", title)
    event.add("location", seminar.location)
    if seminar.zoom:
        event.add("url", seminar.zoom)
    description = [f"Speaker: {seminar.speaker}" + (f", {seminar.affiliation}" if seminar.affiliation else "")]
    if seminar.is_cancelled:
        event.add("status", "CANCELLED")
        description.insert(0, "Cancelled." + (f" {seminar.cancelled}" if seminar.cancelled else ""))
    else:
        event.add("status", "CONFIRMED")
    if seminar.abstract:
        description.append(plain(seminar.abstract))
    if seminar.zoom:
        description.append(f"Zoom: {seminar.zoom}")
    description.append(f"More information: {series.info_url}")
    event.add("description", "\n\n".join(description))
    event.add("transp", "OPAQUE")
    return event
