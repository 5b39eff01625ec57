"""``seminar-mailer bounces``: read the bounce mailbox, find who failed, suppress dead addresses.

Bounces (delivery status notifications) go to the envelope sender (MAILER_ENVELOPE_FROM, else the
series' sender): give the list a mailbox of its own for them. This reads it, from a local Maildir or
mbox, or over IMAP with TLS (imap-tools), and hands each message to flufl.bounce, the detector
Mailman uses (RFC 3464 reports and the older formats of Exim, Exchange, Gmail and others).

- **Hard bounce** (a permanent failure, status 5.x.x): the address is unsubscribed at once.
- **Soft bounce** (the server gave up on a temporary failure: status 4.x.x, or x.2.2 "mailbox
  full"): counted once per announcement (the returned message's Message-ID, which send makes the
  same for every copy of one announcement to one subscriber); at MAILER_SOFT_BOUNCES (default 3)
  distinct announcements the address is unsubscribed.
- **Delay warnings** (Action: delayed) are not failures: the server is still trying. Not counted.
Every message read as a bounce or a warning is moved out of the way (Maildir: the ``.Processed``
folder; mbox: ``<file>.processed``; IMAP: the folder BOUNCES_IMAP_DONE), so a rerun reads only new
ones; the store also counts each (address, announcement) once, so a message read twice (a crash
between recording and moving) still counts once. Anything else stays where it is.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import hashlib
import mailbox
import os
import re
import ssl
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from flufl.bounce import all_failures

from mailer.address import parse_address
from mailer.errors import ConfigError, DeliveryError
from mailer.subscribers import HARD, SOFT, Subscribers

PROCESSED_FOLDER = "Processed"  # Maildir++ folder .Processed, shown by IMAP servers as "Processed"
_MESSAGE_ID = re.compile(rb"^Message-ID:\s*(<[^>\s]+>)", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed recipient found in one bounce."""

    key: str  # Address.key
    kind: str  # HARD or SOFT
    status: str  # the DSN status code, "" when the format has none
    announcement: str  # the returned message's Message-ID (or a stand-in): soft bounces count once per value


@dataclass(frozen=True, slots=True)
class Reading:
    """What one bounce message says: failures, and whether it was only a delay warning."""

    failures: tuple[Failure, ...]
    warning: bool


@dataclass
class Report:
    """What one ``bounces`` run did."""

    read: int = 0
    hard: int = 0
    soft: int = 0
    warnings: int = 0
    other: int = 0  # not bounces: left in place
    suppressed: list[tuple[str, str]] = field(default_factory=list)  # (address key, why)


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


def read_bounce(raw: bytes) -> Reading | None:
    """Read one message; None when it is not a bounce at all."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    temporary, permanent = all_failures(message)
    if not temporary and not permanent:
        return None
    statuses = _statuses(message)
    returned = _returned_message_id(message, raw)
    fallback = str(message.get("Message-ID", "")).strip() or "sha256:" + hashlib.sha256(raw).hexdigest()[:32]
    failures = []
    for recipient in sorted(permanent):
        address = parse_address(recipient.decode("ascii", "replace"))
        if address is None:  # a pipe or file "recipient" of the remote system, not an address of ours
            continue
        status = statuses.get(address.addr.lower(), "")
        kind = SOFT if _is_soft(status) else HARD
        failures.append(Failure(address.key, kind, status, returned or fallback))
    return Reading(tuple(failures), warning=not permanent)


# --- mailboxes: each yields (raw bytes, done) where done() moves the message out of the way ------------

Source = Iterator[tuple[bytes, Callable[[], None]]]


def maildir_source(path: Path) -> Source:
    """Messages in new/ and cur/; done() renames one into the .Processed folder (atomic, same disk)."""
    if not (path / "cur").is_dir() or not (path / "new").is_dir():
        raise ConfigError(f"{path}: not a Maildir (no cur/ and new/ in it); wanted the bounce mailbox's Maildir")
    target = path / f".{PROCESSED_FOLDER}"
    for sub in ("cur", "new", "tmp"):
        (target / sub).mkdir(parents=True, exist_ok=True, mode=0o700)
    (target / "maildirfolder").touch()
    for sub in ("new", "cur"):
        for file in sorted((path / sub).iterdir()):
            if file.name.startswith(".") or not file.is_file():
                continue
            name = file.name if sub == "cur" else file.name.split(":", 1)[0] + ":2,"

            def done(file: Path = file, name: str = name) -> None:
                os.rename(file, target / "cur" / name)

            yield file.read_bytes(), done


def mbox_source(path: Path) -> Source:
    """Messages of an mbox file; done() moves one to ``<file>.processed`` (rewritten at the end, locked)."""
    if not path.is_file():
        raise ConfigError(f"{path}: no such mbox file; wanted the bounce mailbox")
    box = mailbox.mbox(path, create=False)
    processed = mailbox.mbox(path.with_name(path.name + ".processed"))
    box.lock()
    try:
        for key in list(box.keys()):
            raw = box.get_bytes(key)

            def done(key: str = key, raw: bytes = raw) -> None:
                processed.add(box[key])
                processed.flush()
                box.remove(key)

            yield raw, done
        box.flush()
    finally:
        box.unlock()
        box.close()
        processed.close()


def imap_source(env: Mapping[str, str]) -> Source:
    """Messages of BOUNCES_IMAP_FOLDER over TLS; done() moves one to BOUNCES_IMAP_DONE."""
    from imap_tools import MailBox, MailBoxStartTls
    from imap_tools.errors import MailboxLoginError

    host = env.get("BOUNCES_IMAP_HOST", "").strip()
    user, password = env.get("BOUNCES_IMAP_USERNAME", ""), env.get("BOUNCES_IMAP_PASSWORD", "")
    if not host or not user or not password:
        raise ConfigError(
            "BOUNCES_IMAP_HOST, BOUNCES_IMAP_USERNAME and BOUNCES_IMAP_PASSWORD are not all set; wanted the "
            "bounce mailbox's IMAP server and login (or --maildir PATH / --mbox PATH for a local mailbox)"
        )
    security = (env.get("BOUNCES_IMAP_SECURITY") or "tls").lower()
    if security not in ("tls", "starttls"):
        raise ConfigError(f"BOUNCES_IMAP_SECURITY={security!r}; wanted tls (port 993) or starttls (port 143)")
    port_raw = env.get("BOUNCES_IMAP_PORT") or ("993" if security == "tls" else "143")
    if not port_raw.isdigit():
        raise ConfigError(f"BOUNCES_IMAP_PORT={port_raw!r} is not a port number; wanted e.g. 993")
    ca_file = env.get("BOUNCES_IMAP_CA_FILE") or None
    if ca_file and not Path(ca_file).is_file():
        raise ConfigError(f"BOUNCES_IMAP_CA_FILE={ca_file!r} is not a readable file; wanted a PEM bundle of CAs")
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    folder = env.get("BOUNCES_IMAP_FOLDER") or "INBOX"
    done_folder = env.get("BOUNCES_IMAP_DONE") or "seminar-mailer-processed"
    box_type = MailBox if security == "tls" else MailBoxStartTls
    try:
        box = box_type(host, port=int(port_raw), ssl_context=context, timeout=30)
        box.login(user, password, initial_folder=folder)
    except MailboxLoginError:
        raise ConfigError(
            f"{host} rejected the login of BOUNCES_IMAP_USERNAME={user!r}; wanted valid BOUNCES_IMAP_USERNAME "
            "and BOUNCES_IMAP_PASSWORD"
        ) from None
    except (OSError, ssl.SSLError) as err:
        raise DeliveryError(f"cannot reach the IMAP server {host}:{port_raw} over TLS: {err}") from None
    with box:
        if not box.folder.exists(done_folder):
            box.folder.create(done_folder)
        for message in box.fetch(mark_seen=False, bulk=50):
            uid = message.uid

            def done(uid: str | None = uid) -> None:
                if uid is not None:
                    box.move(uid, done_folder)

            yield message.obj.as_bytes(policy=email.policy.compat32), done


def process(source: Source, store: Subscribers, *, soft_limit: int, now: float) -> Report:
    """Record every bounce in ``source``, suppress dead addresses, move what was read."""
    report = Report()
    for raw, done in source:
        report.read += 1
        reading = read_bounce(raw)
        if reading is None:
            report.other += 1
            continue
        if reading.warning:
            report.warnings += 1
        for failure in reading.failures:
            detail = f"{failure.kind} bounce {failure.status}".rstrip()
            soft = store.record_bounce(failure.key, failure.announcement, failure.kind, detail, now=now)
            if failure.kind == HARD:
                report.hard += 1
                why = f"bounces: hard {failure.status or 'failure'}"
            else:
                report.soft += 1
                why = f"bounces: {soft} soft, the last {failure.status}"
                if soft < soft_limit:
                    continue
            if store.unsubscribe(failure.key, why, now=now):
                report.suppressed.append((failure.key, why))
        done()
    return report


def soft_limit(env: Mapping[str, str]) -> int:
    raw = env.get("MAILER_SOFT_BOUNCES") or "3"
    if not raw.isdigit() or int(raw) < 1:
        raise ConfigError(f"MAILER_SOFT_BOUNCES={raw!r}; wanted a whole number of announcements, at least 1")
    return int(raw)
