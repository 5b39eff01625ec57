"""``seminar-mailer bounces``: read the bounce mailbox; act only on our own returned mail.

Bounces (delivery status notifications) go to the envelope sender (MAILER_ENVELOPE_FROM, else the
series' sender). This reads that mailbox, from a local Maildir or mbox or over IMAP with TLS, and
hands each message to flufl.bounce, the detector Mailman uses (RFC 3464 reports and the older
formats of Exim, Exchange, Gmail and others). The bounce address is public (it is in every
announcement's Return-Path), so what a message *says* is not believed on its own. A failure is acted
on only when it is tied to a delivery the ledger recorded, to that very address:

- a **bounce token** (tokens.py: part of the delivery's Message-ID and an HMAC with the project's
  key) in the address the bounce was delivered to (VERP, MAILER_VERP=on: ``bounces+<token>@...``) or
  in the DSN's Original-Envelope-Id (send asks for ``ENVID=<token> RET=HDRS`` when the server offers
  DSN); the failure then belongs to the token's recipient (also when a forwarding address failed);
- or the **returned Message-ID** (the returned headers or message) equals the Message-ID of a
  delivery to the failed address.

Everything else is *not ours*: reported, left in place and not counted again by later runs.

- **Hard bounce** (a permanent failure, status 5.x.x): the address is unsubscribed at once.
- **Soft bounce** (the server gave up on a temporary failure: 4.x.x, or x.2.2 "mailbox full"):
  recorded once per seminar the returned message told of (the ledger's ``told``: an announcement
  and its change count once); at MAILER_SOFT_BOUNCES (default 3) distinct seminars the address is
  unsubscribed.
- **Delay warnings** (Action: delayed) are not failures: the server is still trying. Not counted.

A message that cannot be read (empty, not an email, NUL bytes in its header, parts nested deeper
than ``MAX_NESTING``, larger than ``MAX_SIZE``) is moved to the quarantine folder with a one-line
reason in an added header, and the next message is read. Read bounces and warnings are moved to the
processed folder (Maildir ``.seminar-mailer-processed``, IMAP ``seminar-mailer-processed``, mbox
``<file>.processed``), so a rerun reads only new mail; the store counts each (address, seminar)
once, so a message read twice (a crash between recording and moving) still counts once.
"""

from __future__ import annotations

import email
import email.errors
import email.message
import email.policy
import hashlib
import imaplib
import logging
import mailbox
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from flufl.bounce import all_failures

from mailer.core.address import parse_address
from mailer.core.errors import ConfigError, DeliveryError
from mailer.core.tokens import BOUNCE_TOKEN_RE, check_bounce_token
from mailer.deliver.bounce_config import QUARANTINE_FOLDER, ImapSettings
from mailer.deliver.imap import imap_connect, words
from mailer.record.ledger import Ledger
from mailer.record.subscribers import HARD, SOFT, Subscribers

MAX_SIZE = 10 * 1024 * 1024  # a DSN with RET=HDRS is a few KB; a whole returned announcement about 20 KB
MAX_NESTING = 32  # multipart and message/* parts in one message (a DSN has 3 or 4)
QUARANTINE_HEADER = "X-Seminar-Mailer-Quarantined"
_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>\s]+>)", re.IGNORECASE | re.MULTILINE)
_NESTED = re.compile(rb"^content-type:\s*(?:multipart|message)/", re.IGNORECASE | re.MULTILINE)
_HEADER_LINE = re.compile(rb"[!-9;-~]+:")
_HEADER_END = re.compile(rb"\r?\n\r?\n")
_TOKEN = re.compile(rf"\+({BOUNCE_TOKEN_RE})@", re.IGNORECASE)
_ENVID = re.compile(rf"^\s*({BOUNCE_TOKEN_RE})\s*$", re.IGNORECASE)
_DELIVERED_TO = ("Delivered-To", "X-Original-To", "Envelope-To", "X-Envelope-To", "To")

logging.getLogger("flufl.bounce").setLevel(logging.CRITICAL)  # it logs each detector's crash on bad input


class Unreadable(Exception):
    """A message that cannot be read as email: quarantined with this one-line reason."""


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed recipient as one bounce reports it (not yet believed)."""

    key: str  # Address.key
    addr: str
    kind: str  # HARD or SOFT
    status: str  # the DSN status code, "" when the format has none


@dataclass(frozen=True, slots=True)
class Reading:
    """What one bounce message says, and what in it could tie it to a delivery of ours."""

    failures: tuple[Failure, ...]
    warning: bool  # only a delay warning: no failure
    returned_id: str | None  # the Message-ID of the returned message
    tokens: tuple[str, ...]  # bounce tokens: the VERP address it was delivered to, the DSN's ENVID
    temporary: tuple[str, ...] = ()  # address keys a delay warning names


@dataclass(frozen=True, slots=True)
class Origin:
    """The delivery a failure belongs to."""

    message: str  # ledger message key
    recipient: str  # address key
    seminars: tuple[str, ...]  # what that message told of


def _statuses(message: email.message.Message) -> dict[str, str]:
    """Recipient (lower-case) -> DSN Status, from every message/delivery-status part."""
    found: dict[str, str] = {}
    for part in message.walk():
        if part.get_content_type() != "message/delivery-status" or not part.is_multipart():
            continue
        for block in part.get_payload():
            if not isinstance(block, email.message.Message):
                continue
            status = str(block.get("Status", "")).strip().split(" ")[0]
            for header in ("Original-Recipient", "Final-Recipient"):
                value = str(block.get(header, ""))
                addr = value.partition(";")[2].strip().strip("<>").lower()
                if addr and status:
                    found.setdefault(addr, status)
    return found


def _envids(message: email.message.Message) -> list[str]:
    """The Original-Envelope-Id of every delivery-status part (RFC 3464 2.2.1)."""
    found = []
    for part in message.walk():
        if part.get_content_type() == "message/delivery-status" and part.is_multipart():
            for block in part.get_payload():
                if isinstance(block, email.message.Message) and (
                    match := _ENVID.match(str(block.get("Original-Envelope-Id", "")))
                ):
                    found.append(match[1].lower())
    return found


def _returned_message_id(message: email.message.Message, raw: bytes) -> str | None:
    """The Message-ID of the message that bounced, from the returned headers or body."""
    for part in message.walk():
        kind = part.get_content_type()
        if kind == "message/rfc822" and part.is_multipart():
            inner = part.get_payload(0)
            if isinstance(inner, email.message.Message) and inner.get("Message-ID"):
                return str(inner["Message-ID"]).strip()
        if kind == "text/rfc822-headers":
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes) and (match := _MESSAGE_ID.search(payload)):
                return match[1].decode("ascii", "replace")
    own = str(message.get("Message-ID", "")).strip()
    # A plain-text bounce quotes the original below its own headers: the first Message-ID in the
    # body that is not the bounce's own.
    body = raw.partition(b"\n\n")[2]
    for match in _MESSAGE_ID.finditer(body):
        if match[1].decode("ascii", "replace") != own:
            return match[1].decode("ascii", "replace")
    return None


def _is_soft(status: str) -> bool:
    # RFC 3463: class 4 is transient; X.2.2 (mailbox full) is "usually transient" even as 5.2.2.
    return status.startswith("4.") or status.endswith(".2.2")


def _screen(raw: bytes) -> None:
    """Raise Unreadable for what the parsers must not be given: bound size and nesting first."""
    if not raw.strip():
        raise Unreadable("empty message")
    if len(raw) > MAX_SIZE:
        raise Unreadable(f"larger than {MAX_SIZE // 1024 // 1024} MB ({len(raw)} bytes)")
    head = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]
    if not _HEADER_LINE.match(head.lstrip(b"\r\n")) and not head.startswith(b"From "):
        raise Unreadable("no header fields at the top: not an email message")
    if (at := head.find(b"\0")) >= 0:
        line = head.count(b"\n", 0, at) + 1
        raise Unreadable(f"a NUL byte in the header, on line {line}")
    if (nested := len(_NESTED.findall(raw))) > MAX_NESTING:
        raise Unreadable(f"{nested} nested multipart or message parts; at most {MAX_NESTING} are read")


def read_bounce(raw: bytes) -> Reading | None:
    """Read one message; None when it is not a bounce at all; Unreadable when it cannot be read."""
    _screen(raw)
    # 8-bit bytes in the top header would reach flufl.bounce's detectors as undecoded Header objects,
    # which they cannot read: as "?" the message is still read (our tokens and addresses are ASCII).
    cut = end.end() if (end := _HEADER_END.search(raw)) else len(raw)
    clean = re.sub(rb"[\x80-\xff]", b"?", raw[:cut]) + raw[cut:]
    try:
        message = email.message_from_bytes(clean, policy=email.policy.compat32)
        temporary, permanent = all_failures(message)
        if not temporary and not permanent:
            return None
        statuses = _statuses(message)
        returned = _returned_message_id(message, raw)
        tokens = [
            m[1].lower() for name in _DELIVERED_TO for v in message.get_all(name, []) for m in _TOKEN.finditer(str(v))
        ]
        tokens += _envids(message)
    except (
        email.errors.MessageError,
        LookupError,
        ValueError,
        TypeError,
        AttributeError,  # flufl.bounce's detectors on a header the email package left undecoded
        UnicodeError,
        RecursionError,
    ) as err:
        raise Unreadable(f"cannot be parsed: {type(err).__name__}: {str(err)[:80]}") from None
    failures = []
    for recipient in sorted(permanent):
        address = parse_address(recipient.decode("ascii", "replace"))
        if address is None:  # a pipe or file "recipient" of the remote system, not an address of ours
            continue
        status = statuses.get(address.addr.lower(), "")
        failures.append(Failure(address.key, address.addr, SOFT if _is_soft(status) else HARD, status))
    warned = tuple(a.key for r in sorted(temporary) if (a := parse_address(r.decode("ascii", "replace"))))
    return Reading(tuple(failures), not permanent, returned, tuple(dict.fromkeys(tokens)), warned)


class Judge:
    """Ties what a bounce says to the ledger's deliveries (see the module's docstring)."""

    def __init__(self, ledger: Ledger | None, key: bytes, list_name: str, *, others: tuple[str, ...] = ()) -> None:
        self.ledger = ledger
        self.key = key
        self.list_name = list_name
        self.lists = (list_name, *others)  # a project of several series: a token of any of its lists is ours

    def _origin(self, message: str, recipient: str) -> Origin:
        assert self.ledger is not None
        return Origin(message, recipient, tuple(self.ledger.seminars_told(message)))

    def by_token(self, token: str) -> Origin | None:
        if self.ledger is None:
            return None
        for message, recipient, message_id in self.ledger.deliveries_with_id(f"<{token[:20]}"):
            if any(check_bounce_token(self.key, name, token, message_id) for name in self.lists):
                return self._origin(message, recipient)
        return None

    def by_message_id(self, message_id: str, recipient: str) -> Origin | None:
        if self.ledger is None:
            return None
        for message, to, _ in self.ledger.deliveries_with_id(message_id):
            if to == recipient:
                return self._origin(message, recipient)
        return None

    def origins(self, reading: Reading) -> list[tuple[Failure | None, Origin]]:
        """Each failure (None for a delay warning) that is ours, with its delivery."""
        proven = [o for t in reading.tokens if (o := self.by_token(t)) is not None]
        found: list[tuple[Failure | None, Origin]] = []
        for failure in reading.failures:
            origin = next((o for o in proven if o.recipient == failure.key), None)
            if origin is None and len(reading.failures) == 1 and len({o.recipient for o in proven}) == 1:
                origin = proven[0]  # a forwarding address failed: the token says whose it was
            if origin is None and reading.returned_id:
                origin = self.by_message_id(reading.returned_id, failure.key)
            if origin is not None:
                found.append((failure, origin))
        if reading.warning:
            origin = proven[0] if proven else None
            for key in reading.temporary:
                if origin is None and reading.returned_id:
                    origin = self.by_message_id(reading.returned_id, key)
            if origin is not None:
                found.append((None, origin))
        return found


# --- mailboxes: each yields Mail; done() moves it to the processed folder, quarantine() aside ---------


@dataclass(frozen=True, slots=True)
class Mail:
    """One message of the mailbox, with the two ways out of it."""

    raw: bytes
    name: str  # the file name or IMAP UID, for the report
    done: Callable[[], None]
    quarantine: Callable[[str], None]


def _quarantined(raw: bytes, reason: str) -> bytes:
    line = re.sub(r"[\x00-\x1f\x7f]", " ", reason)[:200]
    return f"{QUARANTINE_HEADER}: {line}\r\n".encode() + raw


def _maildir_folder(path: Path) -> Path:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    (path / "maildirfolder").touch()
    return path


def maildir_source(path: Path, *, done_folder: str) -> Iterator[Mail]:
    """Messages in new/ and cur/; done() renames one into the processed folder (atomic, same disk)."""
    if not (path / "cur").is_dir() or not (path / "new").is_dir():
        raise ConfigError(f"{path}: not a Maildir (no cur/ and new/ in it); wanted the bounce mailbox's Maildir")
    target = _maildir_folder(path / f".{done_folder}")
    aside = _maildir_folder(path / f".{QUARANTINE_FOLDER}")
    for sub in ("new", "cur"):
        for file in sorted((path / sub).iterdir()):
            if file.name.startswith(".") or not file.is_file():
                continue
            name = file.name if sub == "cur" else file.name.split(":", 1)[0] + ":2,"

            def done(file: Path = file, name: str = name) -> None:
                os.rename(file, target / "cur" / name)

            def quarantine(reason: str, file: Path = file, name: str = name) -> None:
                tmp = aside / "tmp" / name
                tmp.write_bytes(_quarantined(file.read_bytes(), reason))
                os.rename(tmp, aside / "cur" / name)
                file.unlink()

            yield Mail(file.read_bytes(), file.name, done, quarantine)


def mbox_source(path: Path) -> Iterator[Mail]:
    """Messages of an mbox file; done() moves one to ``<file>.processed``, quarantine() to ``<file>.quarantine``."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such mbox file; wanted the bounce mailbox")
    box = mailbox.mbox(path, create=False)
    processed = mailbox.mbox(path.with_name(path.name + ".processed"))
    aside = mailbox.mbox(path.with_name(path.name + ".quarantine"))
    box.lock()
    try:
        for n, key in enumerate(list(box.keys()), start=1):
            raw = box.get_bytes(key)

            def done(key: str = key) -> None:
                processed.add(box.get_bytes(key))
                processed.flush()
                box.remove(key)

            def quarantine(reason: str, key: str = key, raw: bytes = raw) -> None:
                aside.add(_quarantined(raw, reason))
                aside.flush()
                box.remove(key)

            yield Mail(raw, f"message {n}", done, quarantine)
        box.flush()
    finally:
        box.unlock()
        box.close()
        processed.close()
        aside.close()


def _gone(settings: ImapSettings, err: BaseException) -> DeliveryError:
    return DeliveryError(
        f"the IMAP server {settings.host}:{settings.port} went away mid-run: {words(err)}; what was read so far "
        "is recorded (a rerun does not count it twice): try again later"
    )


@contextmanager
def _mid_run(settings: ImapSettings) -> Iterator[None]:
    """A lost connection while moving a message: exit 75; a refused move: the folder setting."""
    from imap_tools.errors import UnexpectedCommandStatusError

    try:
        yield
    except (imaplib.IMAP4.abort, OSError) as err:
        raise _gone(settings, err) from None
    except UnexpectedCommandStatusError as err:
        raise ConfigError(
            f"{settings.host} refused to move a message ({err}); wanted folders BOUNCES_IMAP_USERNAME may write: "
            f"BOUNCES_IMAP_DONE={settings.done!r} and {QUARANTINE_FOLDER!r}"
        ) from None


def imap_source(settings: ImapSettings) -> Iterator[Mail]:
    """Messages of BOUNCES_IMAP_FOLDER; done() moves one to BOUNCES_IMAP_DONE, quarantine() aside.

    Each message is fetched as raw bytes (BODY.PEEK[]: its \\Seen flag is left alone) and parsed here,
    never by the IMAP library, so a malformed message is quarantined like any other."""
    box = imap_connect(settings)
    try:
        with _mid_run(settings):
            for folder in (settings.done, QUARANTINE_FOLDER):
                if not box.folder.exists(folder):
                    box.folder.create(folder)
        for uid in box.uids():
            status, data = box.client.uid("FETCH", uid, "(BODY.PEEK[])")
            raw = next((part[1] for part in data if isinstance(part, tuple)), None)
            if status != "OK" or not isinstance(raw, bytes):
                continue  # expunged meanwhile by another client

            def done(uid: str = uid) -> None:
                with _mid_run(settings):
                    box.move(uid, settings.done)

            def quarantine(reason: str, uid: str = uid, raw: bytes = raw) -> None:
                with _mid_run(settings):
                    box.append(_quarantined(raw, reason), QUARANTINE_FOLDER)
                    box.delete(uid)

            yield Mail(raw, f"UID {uid}", done, quarantine)
        box.logout()
    except (imaplib.IMAP4.abort, OSError) as err:  # (ssl.SSLError is an OSError)
        raise _gone(settings, err) from None
    finally:
        try:
            box.client.shutdown()
        except OSError:
            pass


# --- processing --------------------------------------------------------------------------------------


@dataclass
class Report:
    """What one ``bounces`` run did."""

    read: int = 0  # new messages
    hard: int = 0
    soft: int = 0
    warnings: int = 0
    not_ours: int = 0  # bounces tied to no delivery of ours: left in place
    other: int = 0  # not bounces: left in place
    earlier: int = 0  # left in place by an earlier run: not read again
    unsubscribed: list[tuple[str, str]] = field(default_factory=list)  # (address key, why)
    strangers: list[tuple[str, str]] = field(default_factory=list)  # (mail, what it claims): not ours
    quarantined: list[tuple[str, str]] = field(default_factory=list)  # (mail, why)


def process(
    source: Iterator[Mail],
    store: Subscribers,
    judge: Judge,
    *,
    soft_limit: int,
    now: float,
    others: tuple[Subscribers, ...] = (),
) -> Report:
    """Record every bounce of ours in ``source``, unsubscribe dead addresses, move what was read. ``others``: the
    stores of the project's other lists: an address that bounces is dead (or full) for every list, so each
    bounce is counted, and an address unsubscribed, in all of them."""
    report = Report()
    for mail in source:
        digest = hashlib.sha256(mail.raw).hexdigest()
        if store.was_left(digest):
            report.earlier += 1
            continue
        report.read += 1
        try:
            reading = read_bounce(mail.raw)
        except Unreadable as err:
            report.quarantined.append((mail.name, str(err)))
            mail.quarantine(str(err))
            continue
        if reading is None:
            report.other += 1
            store.leave(digest, "not a bounce", now=now)
            continue
        ours = judge.origins(reading)
        if not ours:
            report.not_ours += 1
            claims = ", ".join(f"{f.addr} {f.kind} {f.status}".rstrip() for f in reading.failures) or "a delay"
            report.strangers.append((mail.name, claims))
            store.leave(digest, "not ours", now=now)
            continue
        report.warnings += reading.warning
        for failure, origin in ours:
            if failure is None:
                continue
            _record(failure, origin, (store, *others), report, soft_limit=soft_limit, now=now)
        mail.done()
    return report


def _record(
    failure: Failure,
    origin: Origin,
    stores: tuple[Subscribers, ...],
    report: Report,
    *,
    soft_limit: int,
    now: float,
) -> None:
    who = origin.recipient
    if failure.kind == HARD:
        report.hard += 1
        for store in stores:
            store.record_bounce(who, f"message {origin.message}", HARD, f"hard {failure.status}".rstrip(), now=now)
        why = f"bounced: hard {failure.status or 'failure'}"
    else:
        report.soft += 1
        count = 0
        for store in stores:
            for seminar in origin.seminars or (origin.message,):
                status = f"soft {failure.status}".rstrip()
                count = max(count, store.record_bounce(who, f"seminar {seminar}", SOFT, status, now=now))
        if count < soft_limit:
            return
        why = f"bounced: soft about {count} seminars, the last {failure.status or 'failure'}"
    changed = [store.unsubscribe(who, why, now=now) for store in stores]  # (every one: no short cut)
    if any(changed):
        report.unsubscribed.append((who, why))
