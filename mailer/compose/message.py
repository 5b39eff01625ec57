"""Build the announcement email once, then personalise it per recipient in microseconds.

The MIME body (text, HTML, calendar) is the same for every subscriber, so it is built and
serialised once. Only three header lines differ: To, Message-ID and List-Unsubscribe, and inside
the invitation the recipient's ATTENDEE line. They are written here from validated, encoded parts,
so no recipient name can add a header or a recipient.

Structure, and why (docs/invitations.md): CalConnect's iMIP best practice, which is also what
Google Calendar and Exchange send themselves:
``multipart/mixed`` [ ``multipart/alternative`` [text/plain, text/html,
``text/calendar; method=REQUEST|CANCEL``], ``application/ics`` attachment invite.ics ].
Outlook applies an invitation only from the inline text/calendar part (MS-STANOICAL: an
"attachment" is not iMIP to it); clients that only import attachments take invite.ics. Both calendar
parts are quoted-printable, so the recipient's ATTENDEE line is one more substitution like To:.
"""

from __future__ import annotations

import datetime as dt
import email.policy
import email.quoprimime
import email.utils
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import EmailMessage

from mailer.compose.invite import ATTENDEE_PLACEHOLDER, Event, attendee_property, build_invite, method
from mailer.compose.render import MANAGE_LINK, Rendered
from mailer.core.address import Address, format_address, header_text
from mailer.core.tokens import manage_token, unsubscribe_query, unsubscribe_token
from mailer.programme.model import Schedule, Week

_POLICY = email.policy.SMTP  # CRLF line ends, as transmitted


@dataclass(frozen=True, slots=True)
class MessageTemplate:
    """A complete message but for the recipient's own header lines and ATTENDEE lines."""

    announcement: str  # the message key (ledger); seeds each recipient's Message-ID
    head: bytes  # shared header lines, CRLF-terminated, ending with the MIME headers
    body: tuple[bytes, ...]  # CRLF, the blank line and the MIME body, cut where each ATTENDEE line goes
    wire_rest: tuple[bytes, ...]  # head + body as SMTP DATA carries them: dot-stuffed, ending in CRLF "." CRLF
    list_name: str
    id_domain: str
    token_key: bytes
    unsubscribe_mailto: str
    unsubscribe_url: str | None
    thread: str | None = None  # the key of the announcement this message follows up
    # The same message rendered for readers in other zones (its times also in theirs): zone -> template, and
    # each reader's zone by address key. Built once per distinct zone of a run, never once per reader.
    variants: Mapping[str, MessageTemplate] | None = None
    zone_of: Mapping[str, str] | None = None
    slots: tuple[bytes, ...] = ()  # what goes between the body's pieces, when not only ATTENDEE lines
    manage_url: str | None = None  # the manage page (the series' service_url): each footer links it with a token

    def manage_link(self, recipient: Address) -> str | None:
        """The recipient's own link to the manage page (all lists of the project, their zone)."""
        if self.manage_url is None:
            return None
        return f"{self.manage_url}?t={manage_token(self.token_key, recipient.key)}"

    def _join(self, pieces: tuple[bytes, ...], recipient: Address) -> bytes:
        """The pieces with the recipient's own lines between them."""
        if not self.slots:
            return self._attendee(recipient).join(pieces)
        link = self.manage_link(recipient) or ""
        fills = {
            ATTENDEE_PLACEHOLDER.encode(): self._attendee(recipient),
            MANAGE_LINK.encode(): _qp(link),
            b'href=3D"' + MANAGE_LINK.encode() + b'"': _qp(f'href="{link}"'),
        }
        out = [pieces[0]]
        for slot, piece in zip(self.slots, pieces[1:], strict=True):
            out += [fills[slot], piece]
        return b"".join(out)

    def variant(self, recipient: Address) -> MessageTemplate:
        """The template for this recipient's zone (itself when it has none)."""
        if self.variants and self.zone_of and (zone := self.zone_of.get(recipient.key)) is not None:
            return self.variants.get(zone, self)
        return self

    def message_id(self, recipient: Address, key: str | None = None) -> str:
        """Deterministic per (list, message, recipient): a resent copy has the same id."""
        seed = f"{self.list_name}\0{key or self.announcement}\0{recipient.key}".encode()
        return f"<{hashlib.sha256(seed).hexdigest()[:40]}@{self.id_domain}>"

    def token(self, recipient: Address) -> str:
        """Unsubscribe token: an HMAC of list and address, not guessable without the key (tokens.py)."""
        return unsubscribe_token(self.token_key, self.list_name, recipient.key)

    def unsubscribe_link(self, recipient: Address) -> str | None:
        if self.unsubscribe_url is None:
            return None
        join = "&" if "?" in self.unsubscribe_url else "?"
        return f"{self.unsubscribe_url}{join}{unsubscribe_query(self.token_key, self.list_name, recipient.key)}"

    def personal_head(self, recipient: Address, message_id: str | None = None) -> bytes:
        """The recipient's own header lines (``message_id``: theirs, when the caller has it already)."""
        unsubscribe = f"<{self.unsubscribe_mailto}>"
        if (link := self.unsubscribe_link(recipient)) is not None:
            unsubscribe += f",\r\n <{link}>"
        to = format_address(recipient, smtputf8=recipient.needs_smtputf8)
        text = (
            f"To: {to}\r\nMessage-ID: {message_id or self.message_id(recipient)}\r\nList-Unsubscribe: {unsubscribe}\r\n"
        )
        if self.thread is not None:  # threads under the announcement this subscriber received
            parent = self.message_id(recipient, self.thread)
            text += f"In-Reply-To: {parent}\r\nReferences: {parent}\r\n"
        return text.encode("utf-8")

    def personalise(self, recipient: Address) -> bytes:
        """Return the exact message ``recipient`` receives."""
        if (own := self.variant(recipient)) is not self:
            return own.personalise(recipient)
        return self.personal_head(recipient) + self.head + self._join(self.body, recipient)

    def wire(self, recipient: Address, message_id: str | None = None) -> bytes:
        """The message as the DATA stream, prepared once: the personal lines never begin with a dot
        (header names, "ATTENDEE", a folded line's space), so only the shared part needed dot-stuffing."""
        if (own := self.variant(recipient)) is not self:
            return own.wire(recipient, message_id)
        return self.personal_head(recipient, message_id) + self._join(self.wire_rest, recipient)

    def _attendee(self, recipient: Address) -> bytes:
        return attendee_lines(recipient) if len(self.body) > 1 else b""  # (no invitation: nothing to put)


def _qp(text: str) -> bytes:
    """One line as quoted-printable, soft-wrapped at 76 (a URL's "=" becomes =3D), without its line end."""
    return email.quoprimime.body_encode(text, maxlinelen=76).encode("ascii")


def attendee_lines(recipient: Address) -> bytes:
    """The recipient's ATTENDEE line as the quoted-printable calendar parts carry it, without its
    last CRLF: folded (RFC 5545 3.1) so that each encoded line fits in 75 characters, so no line
    needs a soft break and none decodes to more than 75 octets. The line is ASCII; only "=" is encoded."""
    encoded = attendee_property(recipient).replace("=", "=3D")
    lines, start, width = [], 0, 75
    while len(encoded) - start > width:
        cut = start + width
        cut -= 2 if encoded[cut - 2] == "=" else 1 if encoded[cut - 1] == "=" else 0  # never inside "=3D"
        lines.append(encoded[start:cut])
        start, width = cut, 74  # a continuation line begins with a space
    lines.append(encoded[start:])
    return "\r\n ".join(lines).encode("ascii")


def dot_stuff(message: bytes) -> bytes:
    """RFC 5321 4.5.2: CRLF line ends, a dot doubled at the start of a line, then CRLF "." CRLF."""
    lines = message.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines) + b".\r\n"


def _mime(rendered: Rendered, invite: bytes | None, invite_method: str) -> EmailMessage:
    message = EmailMessage(policy=_POLICY)
    message.set_content(rendered.email_text, subtype="plain", charset="utf-8", cte="quoted-printable")
    message.add_alternative(rendered.html, subtype="html", charset="utf-8", cte="quoted-printable")
    digest = hashlib.sha256(f"{rendered.email_text}\0{rendered.html}\0{invite_method}".encode()).hexdigest()[:32]
    if invite is None:  # (a follow-up: text and HTML alone)
        message.set_boundary(f"=_alt_{digest}")
        return message
    calendar = invite.decode("utf-8")
    params = {"method": invite_method}
    message.add_alternative(calendar, subtype="calendar", charset="utf-8", cte="quoted-printable", params=params)
    message.make_mixed()
    attachment = EmailMessage(policy=_POLICY)  # text content (CRLF lines stay lines), then its real type
    attachment.set_content(calendar, subtype="calendar", charset="utf-8", cte="quoted-printable")
    attachment.replace_header("Content-Type", "application/ics")
    attachment.set_param("name", "invite.ics")
    attachment.set_param("method", invite_method)
    attachment.add_header("Content-Disposition", "attachment", filename="invite.ics")
    message.attach(attachment)
    # Boundaries from the content, not at random: the same announcement gives the same bytes, so
    # preview's .eml is what send transmits. "=_" never occurs in quoted-printable or base64 text.
    message.set_boundary(f"=_mixed_{digest}")
    alternative = next(message.iter_parts())
    assert isinstance(alternative, EmailMessage)
    alternative.set_boundary(f"=_alt_{digest}")
    return message


def build_message(
    schedule: Schedule,
    events: list[Event],
    rendered: Rendered,
    *,
    key: str,
    now: dt.datetime,
    token_key: bytes,
    thread: str | None = None,
) -> MessageTemplate:
    """Build the shared part of every recipient's message ``key`` about ``events`` (none: a message
    without an invitation, such as a follow-up)."""
    series = schedule.series
    invite = build_invite(schedule, events, now=now) if events else None
    invite_method = method([e.seminar for e in events]) if events else ""
    mime = _mime(rendered, invite, invite_method).as_bytes(policy=_POLICY)
    mime_head, _, mime_body = mime.partition(b"\r\n\r\n")
    domain = series.sender.ascii_addr.rpartition("@")[2]
    lines = [
        f"From: {format_address(series.sender)}",
        *([f"Reply-To: {format_address(series.reply_to)}"] if series.reply_to else []),
        f"Subject: {header_text(rendered.subject)}",
        f"Date: {email.utils.format_datetime(now.astimezone(series.timezone))}",
        f"List-Id: {header_text(series.name + ' seminar')} <{series.list_name}.{domain}>",
        *(["List-Unsubscribe-Post: List-Unsubscribe=One-Click"] if series.unsubscribe_page else []),
        "Precedence: bulk",
        "Auto-Submitted: auto-generated",
    ]
    head = ("\r\n".join(lines) + "\r\n").encode("ascii") + mime_head + b"\r\n"
    body = b"\r\n" + mime_body
    cut = ATTENDEE_PLACEHOLDER.encode()
    if invite is not None:
        assert body.count(b"\r\n" + cut + b"\r\n") == 2 * invite.count(cut) > 0  # both calendar parts, every event
    slots: tuple[bytes, ...] = ()
    if series.service_url:  # every place a recipient's own line goes, in order: the footers' manage links too
        slots = tuple(m[0] for m in _SLOT.finditer(body))
    splitter = _SLOT if slots else re.compile(re.escape(cut))
    return MessageTemplate(
        announcement=key,
        head=head,
        body=tuple(splitter.split(body)),
        wire_rest=tuple(splitter.split(dot_stuff(head + body))),
        list_name=series.list_name,
        id_domain=domain,
        token_key=token_key,
        unsubscribe_mailto=f"mailto:{series.unsubscribe_address.ascii_addr}?subject=unsubscribe",
        unsubscribe_url=series.unsubscribe_page,
        thread=thread,
        slots=slots,
        manage_url=f"{series.service_url}/manage" if series.service_url else None,
    )


# The lines a recipient's own text replaces: ATTENDEE, and (quoted-printable) the manage link in each footer.
_SLOT = re.compile(
    re.escape(ATTENDEE_PLACEHOLDER.encode())
    + b"|"
    + re.escape(MANAGE_LINK.encode())
    + b"|"
    + re.escape(b'href=3D"' + MANAGE_LINK.encode() + b'"')
)


def first_events(schedule: Schedule, week: Week) -> list[Event]:
    """The week's seminars as first announced: identities as first assigned, first revisions."""
    from mailer.programme.revisions import derived_uid, first_revision

    return [Event(s, derived_uid(schedule, s), first_revision(s)) for s in week.seminars]


def build_announcement(
    schedule: Schedule, week: Week, rendered: Rendered, *, now: dt.datetime, token_key: bytes
) -> MessageTemplate:
    """The first announcement of ``week``: for tests and checks of a week on its own; ``dispatch``
    builds every message of a real run, with the identities and revisions the ledger remembers."""
    events = first_events(schedule, week)
    return build_message(schedule, events, rendered, key="+".join(e.uid for e in events), now=now, token_key=token_key)
