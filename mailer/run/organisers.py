"""The organisers' reminder (series ``organisers:``): 24 hours before a week's announcement goes out, the first
``send`` mails the organisers what that week's seminars still lack (title, abstract, speaker, room: absent or a
placeholder such as TBA), once a week, so nothing half-finished goes out unnoticed.

It goes to the organisers only, never to subscribers, and is recorded in the ledger as a message of its own kind
(``organisers:<Monday>``) once the server took it: a failure leaves it due for the next run; a run killed between
the server's reply and that record may send it once more.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import hashlib
from dataclasses import dataclass

import aiosmtplib

from mailer.compose.checks import missing_details
from mailer.core.address import format_address, header_text
from mailer.core.errors import MailerError
from mailer.deliver.config import SmtpSettings
from mailer.deliver.smtp import send_one
from mailer.programme.model import Schedule
from mailer.record.ledger import Ledger
from mailer.run.plan import monday_of

NOTICE = dt.timedelta(hours=24)  # how long before a week's announcement its organisers are reminded
KIND = "organisers"


@dataclass(frozen=True, slots=True)
class Reminder:
    key: str  # the ledger's message key: organisers:<Monday>
    monday: dt.date
    lacking: tuple[str, ...]  # one line per seminar: what it lacks
    subject: str


def reminder_due(schedule: Schedule, now: dt.datetime) -> Reminder | None:
    """The organisers' reminder due at ``now``, if any: the next week to be announced, within 24 hours of its
    announcement, with something missing."""
    series = schedule.series
    if not series.organisers:
        return None
    local = now.astimezone(series.timezone)
    for monday in (monday_of(local.date()), monday_of(local.date()) + dt.timedelta(days=7)):
        gate = (
            series.announce.moment(monday, series.timezone)
            if series.announce
            else dt.datetime.combine(monday, dt.time(0, 0), tzinfo=series.timezone)
        )
        if not gate - NOTICE <= now < gate:
            continue
        week = [p for p in missing_details(schedule, monday) if p.line is not None]
        seminars = {s.line: s for s in schedule.seminars if monday_of(s.date) == monday}
        lacking = tuple(p.message.split(" and its announcement")[0] for p in week if p.line in seminars)
        if lacking:
            subject = f"{series.name}: the announcement of the week of {monday} goes out {gate:%A %H:%M} with gaps"
            return Reminder(f"{KIND}:{monday.isoformat()}", monday, lacking, subject)
    return None


def reminder_mail(schedule: Schedule, reminder: Reminder, *, now: dt.datetime) -> bytes:
    """The reminder as a plain-text mail to every organiser (CRLF lines, not dot-stuffed)."""
    series = schedule.series
    domain = series.sender.ascii_addr.rpartition("@")[2]
    seed = hashlib.sha256(f"{series.list_name}\0{reminder.key}".encode()).hexdigest()[:32]
    head = [
        f"From: {format_address(series.sender)}",
        f"To: {', '.join(format_address(a) for a in series.organisers)}",
        f"Subject: {header_text(reminder.subject)}",
        f"Date: {email.utils.format_datetime(now.astimezone(series.timezone))}",
        f"Message-ID: <{seed}@{domain}>",
        "Auto-Submitted: auto-generated",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
    ]
    body = (
        f"The {series.name} announcement of the week of {reminder.monday} goes out in less than a day, and in "
        f"{schedule.path}:\n\n"
        + "".join(f"  - {line}\n" for line in reminder.lacking)
        + "\nFill them in before then (`seminar-mailer check` lists them), or put 'draft: true' on a seminar to hold "
        "it back. This reminder goes once a week, to the series' organisers only.\n\n-- seminar-mailer\n"
    )
    return ("\r\n".join(head) + "\r\n\r\n" + body.replace("\n", "\r\n")).encode("utf-8")


def remind_organisers(
    schedule: Schedule, ledger: Ledger | None, settings: SmtpSettings | None, now: dt.datetime, *, dry_run: bool
) -> str | None:
    """Send the reminder that is due and not yet sent (a dry run only says it would); the note for the summary."""
    reminder = reminder_due(schedule, now)
    if reminder is None or (ledger is not None and ledger.has_message(reminder.key)):
        return None
    who = ", ".join(a.addr for a in schedule.series.organisers)
    if dry_run or ledger is None or settings is None:
        return f"would remind the organisers ({who}) of what the week of {reminder.monday} lacks"
    message = reminder_mail(schedule, reminder, now=now)
    sender = settings.envelope_from or schedule.series.sender.ascii_addr
    try:
        for organiser in schedule.series.organisers:
            asyncio.run(send_one(settings, sender, organiser, message))
    except (OSError, aiosmtplib.SMTPException, MailerError) as err:  # (the subscribers' mail goes on regardless)
        return f"could not remind the organisers ({who}): {err}; the next run tries again"
    ledger.open_message(reminder.key, list_name=schedule.series.list_name, kind=KIND, subject=reminder.subject,
                        told=[], now=now)  # fmt: skip
    return f"reminded the organisers ({who}) of what the week of {reminder.monday} lacks"
