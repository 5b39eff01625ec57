"""Speakers fill in their own details: a signed, expiring link mailed to the speaker (``invite-speaker``), a form on
the web service, what they submit stored as a proposal (never written into the programme by itself), shown as a
difference from the YAML (``proposals``) and written into it by the organiser (``accept``), keeping every other
byte of the file (``programme/edit.py``).

Every value is checked as the YAML's own are (one line of printable text, Markdown without control characters,
an http(s) link), with a length limit; the web service adds its size and rate limits.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import hashlib
from dataclasses import dataclass

from mailer.core.address import Address, format_address, header_text
from mailer.core.errors import ConfigError
from mailer.core.links import normalise_url
from mailer.core.tokens import SPEAKER_LIFETIME, speaker_token
from mailer.programme.edit import Editor, yaml_block, yaml_text
from mailer.programme.model import Schedule, Seminar
from mailer.programme.schedule import CONTROL_RE, load_schedule
from mailer.programme.yamlfile import Mapping
from mailer.record.proposals import Proposal

# (name, label, kind, limit): what a speaker may propose, in the form's order
FIELDS = (
    ("title", "Title", "line", 300),
    ("affiliation", "Affiliation", "line", 200),
    ("abstract", "Abstract (Markdown)", "markdown", 10_000),
    ("bio", "About you (Markdown)", "markdown", 10_000),
    ("slides", "Slides (a link, after the talk)", "url", 2_000),
    ("video", "Video (a link, after the talk)", "url", 2_000),
)


def check_fields(form: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The proposal a form holds (empty fields left out), and what is wrong with it, each in words."""
    fields: dict[str, str] = {}
    wrong: list[str] = []
    for name, label, kind, limit in FIELDS:
        value = form.get(name, "").replace("\r\n", "\n").strip()
        if not value:
            continue
        if len(value) > limit:
            wrong.append(f"{label}: at most {limit} characters")
        elif kind == "line" and CONTROL_RE.search(value):
            wrong.append(f"{label}: one line of plain text")
        elif kind == "markdown" and CONTROL_RE.search(value.replace("\n", "")):
            wrong.append(f"{label}: text without control characters")
        elif kind == "url":
            try:
                fields[name] = normalise_url(value)
            except ValueError as err:
                wrong.append(f"{label}: a web address such as https://example.org/slides.pdf ({err})")
            continue
        else:
            fields[name] = value + ("\n" if kind == "markdown" else "")
    return fields, wrong


def seminar_on(schedule: Schedule, date: str) -> Seminar | None:
    return next((s for s in (*schedule.seminars, *schedule.drafts) if s.date.isoformat() == date), None)


@dataclass(frozen=True, slots=True)
class Invitation:
    seminar: Seminar
    speaker: Address
    link: str
    message: bytes  # the mail, CRLF, ready for DATA (not yet dot-stuffed)


def invitation(schedule: Schedule, date: dt.date, speaker: Address, *, key: bytes, now: dt.datetime) -> Invitation:
    """The mail that gives ``speaker`` the link to the form for the seminar on ``date``."""
    series = schedule.series
    seminar = seminar_on(schedule, date.isoformat())
    if seminar is None:
        raise ConfigError(f"{schedule.path} holds no seminar on {date}; wanted the date of one (add it first)")
    if series.service_url is None:
        raise ConfigError(f"{schedule.path}: the form is on the web service: wanted 'service_url' in the series")
    expires = int(now.timestamp()) + SPEAKER_LIFETIME
    token = speaker_token(key, series.list_name, date.isoformat(), speaker.key, expires)
    link = f"{series.service_url}/speaker?t={token}"
    domain = series.sender.ascii_addr.rpartition("@")[2]
    seed = hashlib.sha256(f"{speaker.key}\0{token}".encode()).hexdigest()[:32]
    until = dt.datetime.fromtimestamp(expires, series.timezone)
    head = [
        f"From: {format_address(series.sender)}",
        *([f"Reply-To: {format_address(series.reply_to)}"] if series.reply_to else []),
        f"To: {format_address(speaker, smtputf8=speaker.needs_smtputf8)}",
        f"Subject: {header_text(f'Your {series.name} seminar on {date}: title, abstract and bio')}",
        f"Date: {email.utils.format_datetime(now.astimezone(series.timezone))}",
        f"Message-ID: <speaker-{seed}@{domain}>",
        "Auto-Submitted: auto-generated",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
    ]
    body = (
        f"Thank you for speaking at the {series.name} seminar on {seminar.start:%A %Y-%m-%d at %H:%M} "
        f"{seminar.tz_label}.\n\nPlease give us the title, abstract and a short bio for the announcement (and, "
        f"after the talk, links to your slides and video) on this page:\n\n{link}\n\n"
        f"The link is yours alone and works until {until:%Y-%m-%d}; what you send reaches the organisers, who "
        f"publish it.\n\n-- {series.signature}\n"
    )
    message = ("\r\n".join(head) + "\r\n\r\n" + body.replace("\n", "\r\n")).encode("utf-8")
    return Invitation(seminar, speaker, link, message)


def differences(seminar: Seminar | None, proposal: Proposal) -> list[tuple[str, str | None, str]]:
    """(field, in the programme now, proposed) for each field the proposal changes."""
    out = []
    for name, _, _, _ in FIELDS:
        if name in proposal.fields:
            now = getattr(seminar, name) if seminar is not None else None
            if (now or "").strip() != proposal.fields[name].strip():
                out.append((name, now, proposal.fields[name]))
    return out


def accept(schedule_path: object, proposal: Proposal) -> list[str]:
    """Write the proposal into the programme (the other bytes as they are); return the fields written."""
    from pathlib import Path

    assert isinstance(schedule_path, Path)
    schedule = load_schedule(schedule_path)
    seminar = seminar_on(schedule, proposal.date)
    if seminar is None:
        raise ConfigError(
            f"{schedule_path} no longer holds a seminar on {proposal.date}: the proposal cannot be placed; "
            "wanted the seminar back, or its date edited in the proposal's place by hand"
        )
    changed = differences(seminar, proposal)
    if not changed:
        return []
    editor = Editor(schedule_path)
    item = next(i for i in editor.items if i.line == seminar.line)
    assert isinstance(item, Mapping)
    # Values in place from the bottom up, then the new keys (inserted after the date line): no edit moves a line
    # that a later edit still has to find.
    order = sorted(changed, key=lambda c: -item.keys[c[0]].line if c[0] in item.keys else 0)
    for name, _, new in order:
        kind = next(k for n, _, k, _ in FIELDS if n == name)
        text = yaml_block(new, " " * (item.keys["date"].column + 1)) if kind == "markdown" else yaml_text(new)
        editor.set_value(item, name, text)
    editor.save()
    return [name for name, _, _ in changed]
