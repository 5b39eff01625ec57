"""The calendar invitation (RFC 5545/5546): one VEVENT per seminar, times in UTC.

Every message about a seminar carries its invitation under the same ``UID`` (fixed at its first
announcement) with ``SEQUENCE`` = the seminar's revision, so a calendar replaces the event it
holds: a change is METHOD:PUBLISH with a higher SEQUENCE, a cancellation METHOD:CANCEL with
STATUS:CANCELLED.
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


def build_invite(schedule: Schedule, events: Sequence[Event], *, now: dt.datetime) -> bytes:
    """Return the iCalendar file for ``events``."""
    series = schedule.series
    calendar = icalendar.Calendar()
    calendar.add("prodid", "-//seminar-mailer//seminar-mailer//EN")
    calendar.add("version", "2.0")
    calendar.add("method", method([e.seminar for e in events]))
    for ev in events:
        seminar = ev.seminar
        event = icalendar.Event()
        event.add("uid", ev.uid)
        event.add("dtstamp", now.astimezone(dt.UTC))
        event.add("sequence", ev.sequence)
        event.add("dtstart", seminar.start.astimezone(dt.UTC))
        event.add("dtend", seminar.end.astimezone(dt.UTC))
        title = (
            f"{series.name}: {seminar.title} ({seminar.speaker})"
            if seminar.title
            else f"{series.name}: {seminar.speaker}"
        )
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
        calendar.add_component(event)
    return bytes(calendar.to_ical())
