"""The bounce settings: the envelope (MAILER_VERP), the soft-bounce limit, and the bounce mailbox over IMAP
(BOUNCES_IMAP_*), read by the same rules as config.py's; used by bounces, send (VERP), check and check --imap."""

from __future__ import annotations

import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mailer.core.errors import ConfigError
from mailer.deliver.config import ca_file_setting, host_setting, number_setting, switch_setting

if TYPE_CHECKING:
    pass


PROCESSED_FOLDER = "seminar-mailer-processed"  # the same name in a Maildir (.seminar-mailer-processed) and over IMAP


QUARANTINE_FOLDER = "seminar-mailer-quarantine"  # messages that cannot be read, each with its reason


IMAP_SECURITY_MODES = ("tls", "starttls")


@dataclass(frozen=True, slots=True)
class ImapSettings:
    """The bounce mailbox over IMAP. ``password`` never appears in repr, logs or errors."""

    host: str
    port: int
    security: str  # tls (implicit, 993) or starttls (143); certificates always verified
    username: str
    password: str = field(repr=False)
    ca_file: Path | None
    folder: str  # where bounces arrive
    done: str  # where read ones go (created when missing)
    timeout: float  # MAILER_TIMEOUT, per network operation

    @property
    def tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context


def verp(env: Mapping[str, str]) -> bool:
    """MAILER_VERP=on: each recipient's envelope sender is MAILER_ENVELOPE_FROM with ``+<token>`` added."""
    on = switch_setting(env, "MAILER_VERP", default=False)
    if on and not env.get("MAILER_ENVELOPE_FROM"):
        raise ConfigError(
            "MAILER_VERP=on needs MAILER_ENVELOPE_FROM: the bounce mailbox, e.g. "
            "MAILER_ENVELOPE_FROM=bounces@example.org, whose server delivers bounces+anything@example.org "
            "to it (Postfix: recipient_delimiter = +)"
        )
    if on and "+" in env.get("MAILER_ENVELOPE_FROM", "").partition("@")[0]:
        raise ConfigError(
            f"MAILER_ENVELOPE_FROM={env['MAILER_ENVELOPE_FROM']!r} already has a '+'; with MAILER_VERP=on "
            "wanted the plain mailbox (bounces@example.org): the token is added after a '+'"
        )
    return on


def soft_bounce_limit(env: Mapping[str, str]) -> int:
    """MAILER_SOFT_BOUNCES: soft bounces about this many distinct seminars unsubscribe an address."""
    raw = (env.get("MAILER_SOFT_BOUNCES") or "3").strip()
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise ConfigError(f"MAILER_SOFT_BOUNCES={raw!r}; wanted a whole number of distinct seminars, from 1 to 1000")
    return int(raw)


def processed_folder(env: Mapping[str, str]) -> str:
    """BOUNCES_IMAP_DONE: the folder read bounces go to, over IMAP and in a Maildir alike."""
    name = (env.get("BOUNCES_IMAP_DONE") or PROCESSED_FOLDER).strip()
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}", name):
        raise ConfigError(
            f"BOUNCES_IMAP_DONE={name!r}; wanted a plain folder name (letters, digits, - and _), "
            f"e.g. BOUNCES_IMAP_DONE={PROCESSED_FOLDER}"
        )
    return name


def imap_settings(env: Mapping[str, str]) -> ImapSettings:
    """Read and check the BOUNCES_IMAP_* settings (and MAILER_TIMEOUT) without connecting."""
    host, user, password = (
        env.get(n, "").strip() for n in ("BOUNCES_IMAP_HOST", "BOUNCES_IMAP_USERNAME", "BOUNCES_IMAP_PASSWORD")
    )
    missing = [
        n
        for n, v in (("BOUNCES_IMAP_HOST", host), ("BOUNCES_IMAP_USERNAME", user), ("BOUNCES_IMAP_PASSWORD", password))
        if not v
    ]
    if missing:
        raise ConfigError(
            f"{', '.join(missing)} not set; wanted the bounce mailbox's IMAP server and login "
            "(BOUNCES_IMAP_HOST, BOUNCES_IMAP_USERNAME, BOUNCES_IMAP_PASSWORD), or --maildir PATH / --mbox PATH"
        )
    try:
        host = host_setting(host)
    except ConfigError:
        raise ConfigError(
            f"BOUNCES_IMAP_HOST={host!r} is not a host name or IP address; "
            "wanted e.g. BOUNCES_IMAP_HOST=imap.example.org"
        ) from None
    security = (env.get("BOUNCES_IMAP_SECURITY") or "tls").strip().lower()
    if security not in IMAP_SECURITY_MODES:
        raise ConfigError(
            f"BOUNCES_IMAP_SECURITY={security!r}; wanted tls (implicit TLS, port 993) or starttls (port 143)"
        )
    port = int(number_setting(env, "BOUNCES_IMAP_PORT", "993" if security == "tls" else "143", int, 1, 65535))
    ca_file = ca_file_setting(env, "BOUNCES_IMAP_CA_FILE")
    folder = env.get("BOUNCES_IMAP_FOLDER") or "INBOX"
    if any(ord(c) < 32 or c == "\x7f" for c in folder):
        raise ConfigError(f"BOUNCES_IMAP_FOLDER={folder!r} has a control character; wanted a folder name, e.g. INBOX")
    return ImapSettings(
        host=host,
        port=port,
        security=security,
        username=user,
        password=password,
        ca_file=ca_file,
        folder=folder,
        done=processed_folder(env),
        timeout=number_setting(env, "MAILER_TIMEOUT", "30", float, 0.1, 3600),
    )


def check_bounce_settings(env: Mapping[str, str]) -> str | None:
    """Validate every bounce setting that is set (for ``check``); a summary line when IMAP is configured."""
    verp(env)
    soft_bounce_limit(env)
    processed_folder(env)
    if not any(env.get(n) for n in ("BOUNCES_IMAP_HOST", "BOUNCES_IMAP_USERNAME", "BOUNCES_IMAP_PASSWORD")):
        for name in ("BOUNCES_IMAP_PORT", "BOUNCES_IMAP_SECURITY", "BOUNCES_IMAP_CA_FILE"):
            if env.get(name):
                imap_settings(env)  # names what is missing
        return None
    settings = imap_settings(env)
    return f"bounce settings: OK, IMAP {settings.security} to {settings.host}:{settings.port}, folder {settings.folder}"
