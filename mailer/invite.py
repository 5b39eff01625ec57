"""The calendar invitation (RFC 5545): one VEVENT per seminar of the week, times in UTC."""

from __future__ import annotations

import datetime as dt
import re

import icalendar

from mailer.links import plain
from mailer.schedule import Schedule, Seminar, Week


def seminar_uid(schedule: Schedule, seminar: Seminar) -> str:
    """A UID that stays the same when the time, title or room of a seminar changes."""
    speaker = re.sub(r"[^a-z0-9]+", "-", seminar.speaker.lower()).strip("-") or "seminar"
    domain = schedule.series.sender.ascii_addr.rpartition("@")[2]
    return f"{schedule.series.list_name}-{seminar.date.isoformat()}-{speaker}@{domain}"


def method(week: Week) -> str:
    """CANCEL when every seminar of the week is cancelled, else PUBLISH."""
    return "CANCEL" if all(s.is_cancelled for s in week.seminars) else "PUBLISH"


def build_invite(schedule: Schedule, week: Week, *, now: dt.datetime) -> bytes:
    """Return the iCalendar file for the week's seminars."""
    series = schedule.series
    calendar = icalendar.Calendar()
    calendar.add("prodid", "-//seminar-mailer//seminar-mailer//EN")
    calendar.add("version", "2.0")
    calendar.add("method", method(week))
    for seminar in week.seminars:
        event = icalendar.Event()
        event.add("uid", seminar_uid(schedule, seminar))
        event.add("dtstamp", now.astimezone(dt.UTC))
        # A cancellation must outrank the announcement it cancels.
        event.add("sequence", 1 if seminar.is_cancelled else 0)
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
