"""The calendar invitation (RFC 5545/5546, iMIP RFC 6047): one VEVENT per seminar, times in UTC.

Every message about a seminar carries its invitation under the same ``UID`` (fixed at its first
announcement) with ``SEQUENCE`` = the seminar's revision, so a calendar replaces the event it
holds. The announcement, every change and every reminder are METHOD:REQUEST (what Gmail, Outlook
and Apple apply to the event they hold; PUBLISH is imported as a new file by Outlook and Google);
a cancellation is METHOD:CANCEL with STATUS:CANCELLED. Every invitation names the series as
ORGANIZER (the From address, where iTIP replies go) and the recipient as the one ATTENDEE
(RSVP=FALSE): ``message.py`` writes that line per recipient in place of ``ATTENDEE_PLACEHOLDER``.
A reminder carries the current revision: it raises no SEQUENCE.
The series' published calendar (``build_feed``, written by ``publish``) holds the very same VEVENTs
without METHOD, ORGANIZER and ATTENDEE (RFC 4791 stored objects carry no METHOD).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

import icalendar

from mailer.core.address import Address
from mailer.core.links import plain
from mailer.programme.model import Schedule, Seminar


@dataclass(frozen=True, slots=True)
class Event:
    """One seminar as a calendar event: its identity and revision."""

    seminar: Seminar
    uid: str
    sequence: int
    schedule: Schedule | None = None  # its own series, when the message is another's (a digest): its ORGANIZER


# Stands for the recipient's ATTENDEE line until ``message.py`` writes it: no "=" and short, so
# quoted-printable leaves it alone on its own line; a line of ours, never a folded continuation.
ATTENDEE_PLACEHOLDER = "ATTENDEE:mailto:recipient@attendee.invalid"

# Subscribers are told, not asked: an optional participant whose answer nobody expects.
_ATTENDEE_PREFIX = "ATTENDEE;CUTYPE=INDIVIDUAL;ROLE=OPT-PARTICIPANT;PARTSTAT=NEEDS-ACTION;RSVP=FALSE:"


def method(seminars: Sequence[Seminar]) -> str:
    """CANCEL when every seminar of the message is cancelled, else REQUEST."""
    return "CANCEL" if all(s.is_cancelled for s in seminars) else "REQUEST"


def _mailto(address: Address) -> str:
    """A calendar user address (RFC 5545 CAL-ADDRESS): a mailto URI, non-ASCII percent-encoded."""
    return "mailto:" + quote(address.ascii_addr, safe="@!$&'*+=^_`{|}~.-")  # "?" would start a query (RFC 6068)


def organizer(schedule: Schedule) -> icalendar.vCalAddress:
    """The series as ORGANIZER: its name, its From address (where replies to a REQUEST go)."""
    value = icalendar.vCalAddress(_mailto(schedule.series.sender))
    value.params["CN"] = schedule.series.name
    return value


def attendee_property(recipient: Address) -> str:
    """The recipient's ATTENDEE content line, unfolded: ASCII only (the address percent-encoded)."""
    return _ATTENDEE_PREFIX + _mailto(recipient)


def _calendar() -> icalendar.Calendar:
    calendar = icalendar.Calendar()
    calendar.add("prodid", "-//seminar-mailer//seminar-mailer//EN")
    calendar.add("version", "2.0")
    return calendar


def build_invite(schedule: Schedule, events: Sequence[Event], *, now: dt.datetime) -> bytes:
    """Return the iTIP message for ``events`` with ``ATTENDEE_PLACEHOLDER`` for the recipient's line.

    A REQUEST holds the seminars that take place (a REQUEST's STATUS is never CANCELLED); a seminar
    of the week cancelled before it was announced is in no calendar, and the mail says so."""
    kind = method([e.seminar for e in events])
    calendar = _calendar()
    calendar.add("method", kind)
    for ev in events:
        if kind == "CANCEL" or not ev.seminar.is_cancelled:
            own = ev.schedule or schedule  # a digest's events keep their series as ORGANIZER: updates then match
            event = vevent(own, ev, stamp=now)
            event.add("organizer", organizer(own))
            calendar.add_component(event)
    # icalendar sorts properties; the placeholder goes right after ORGANIZER, on a line of its own.
    text = bytes(calendar.to_ical())
    return re.sub(
        rb"(\r\nORGANIZER[^\r]*(?:\r\n [^\r]*)*\r\n)", rb"\1" + ATTENDEE_PLACEHOLDER.encode() + rb"\r\n", text
    )


def build_feed(schedule: Schedule, events: Sequence[tuple[Event, dt.datetime]], *, refresh: dt.timedelta) -> bytes:
    """Return the series' published calendar (RFC 5545 without METHOD; RFC 7986 refresh): one VEVENT
    per ``(event, stamp)``, the same VEVENT as the invitations carry, ``stamp`` as its DTSTAMP."""
    calendar = feed_calendar(schedule.series.name, refresh=refresh)
    for ev, stamp in events:
        calendar.add_component(vevent(schedule, ev, stamp=stamp))
    return bytes(calendar.to_ical())


def feed_calendar(name: str, *, refresh: dt.timedelta) -> icalendar.Calendar:
    """A published calendar named ``name`` (X-WR-CALNAME) that asks to be fetched again every ``refresh``,
    without events yet."""
    calendar = _calendar()
    calendar.add("x-wr-calname", name)
    calendar.add("refresh-interval", refresh, parameters={"VALUE": "DURATION"})
    calendar.add("x-published-ttl", icalendar.vDuration(refresh))  # Outlook's and Apple's name for it
    return calendar


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
