"""Settings from the environment (never from the schedule): state folder, token key, SMTP."""

from __future__ import annotations

import ipaddress
import math
import os
import re
import secrets
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mailer.errors import ConfigError
from mailer.providers import with_preset

if TYPE_CHECKING:
    from mailer.oauth import TokenSource

TOKEN_KEY_FILE = "token.key"  # noqa: S105  (a file name, not a secret)


def token_key(state: Path, env: Mapping[str, str] = os.environ, *, create: bool = True) -> bytes:
    """The secret behind unsubscribe tokens: MAILER_TOKEN_KEY, else state/token.key (made once, 0600).

    The key must stay the same across runs so that a resent message carries the same link. With
    ``create=False`` (preview, dry run) a missing key file is not made: a throw-away key stands in.
    """
    if value := env.get("MAILER_TOKEN_KEY"):
        if len(value) < 16:
            raise ConfigError("MAILER_TOKEN_KEY is too short; wanted at least 16 random characters")
        return value.encode()
    path = state / TOKEN_KEY_FILE
    if not create and not path.exists():
        return secrets.token_hex(32).encode()
    try:
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return path.read_bytes().strip()
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_hex(32))
        return path.read_bytes().strip()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read or create the token key: {err.strerror}") from err


SECURITY_MODES = ("starttls", "tls", "none")


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """How to reach the SMTP server. ``password`` never appears in repr, logs or errors."""

    host: str
    port: int
    security: str  # starttls (required, verified), tls (implicit, 465), none (loopback only)
    username: str | None
    password: str | None = field(repr=False)
    ca_file: Path | None
    timeout: float  # seconds, per SMTP command: a stalled server cannot hang the job
    data_timeout: float  # seconds to wait for the reply to the end of the message (RFC 5321: 10 min)
    concurrency: int  # connections kept open in the pool
    rate: float  # messages per minute, 0 for no limit
    attempts: int  # tries per recipient within one run before it is left deferred
    backoff: float  # seconds before the first retry; doubles each time
    envelope_from: str | None  # bounce address; default the series' sender
    pipelining: bool = True  # RFC 2920, when the server offers it; off for a server that mishandles it
    oauth: TokenSource | None = field(default=None, repr=False, compare=False)  # SMTP_AUTH=xoauth2

    @property
    def tls_context(self) -> ssl.SSLContext:
        """A verifying context: system CAs, or SMTP_CA_FILE; TLS 1.2 at least."""
        context = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context


def read_dotenv(path: Path) -> dict[str, str]:
    """Read KEY=VALUE lines (``export`` and quotes allowed, ``#`` comments); errors carry file:line."""
    values: dict[str, str] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return values
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read: {err}") from err
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        match = re.fullmatch(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*)", text)
        if not match:
            raise ConfigError(f"{path}:{number}:1: not a KEY=value line; wanted e.g. SMTP_HOST=smtp.example.org")
        value = match[2].strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[match[1]] = value
    return values


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _number(
    env: Mapping[str, str], name: str, default: str, kind: type[int] | type[float], low: float, high: float
) -> float:
    """A finite number from ``low`` to ``high``: "nan", "inf" and "1e999" are refused by name."""
    raw = (env.get(name) or default).strip()
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number; wanted e.g. {name}={default}") from None
    wanted = f"wanted a number from {low:g} to {high:g}"
    if not math.isfinite(value):
        raise ConfigError(f"{name}={raw!r} is not a finite number; {wanted}")
    if value < low:
        raise ConfigError(f"{name}={raw!r} is too small; {wanted}")
    if value > high:
        raise ConfigError(f"{name}={raw!r} is too large; {wanted}")
    return value


# A host name (LDH labels, IDNA already applied by the organiser) or an IP address; nothing else can
# reach the socket layer, so a line break or a space in SMTP_HOST is an error, not an SMTP command.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_RE = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?")


def _host(raw: str) -> str:
    host = raw.strip()
    if not host:
        raise ConfigError(
            "SMTP_HOST is not set; wanted the SMTP server's name, e.g. SMTP_HOST=smtp.example.org "
            "(in the environment or in .env)"
        )
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    else:
        return host.strip("[]")
    if not host.isascii():
        from mailer.address import ascii_domain

        try:
            host = ascii_domain(host)
        except ValueError:
            host = raw
    if not _HOST_RE.fullmatch(host):
        raise ConfigError(f"SMTP_HOST={raw!r} is not a host name or IP address; wanted e.g. SMTP_HOST=smtp.example.org")
    return host


def _envelope_from(raw: str | None) -> str | None:
    """MAILER_ENVELOPE_FROM: one bare ASCII address, as MAIL FROM carries it."""
    if not raw:
        return None
    from mailer.address import parse_address

    address = parse_address(raw)
    if address is None or address.name or "<" in raw or address.needs_smtputf8:
        raise ConfigError(
            f"MAILER_ENVELOPE_FROM={raw!r} is not a plain address; wanted one address such as "
            "MAILER_ENVELOPE_FROM=bounces@example.org (no name, no angle brackets, ASCII before the @)"
        )
    return address.ascii_addr


AUTH_MODES = ("password", "xoauth2", "none")


def smtp_settings(env: Mapping[str, str], *, state: Path | None = None) -> SmtpSettings:
    """Read the SMTP settings from ``env`` (the process environment merged over .env).

    SMTP_PROVIDER's preset fills what is unset; ``state`` holds a ``login microsoft`` sign-in
    (default MAILER_STATE or state/).
    """
    env = with_preset(env)
    host = _host(env.get("SMTP_HOST", ""))
    security = (env.get("SMTP_SECURITY") or "starttls").strip().lower()
    if security not in SECURITY_MODES:
        raise ConfigError(
            f"SMTP_SECURITY={security!r}; wanted starttls (default), tls (implicit TLS, port 465) "
            "or none (only for a server on this machine)"
        )
    if security == "none" and not is_loopback(host):
        raise ConfigError(
            f"SMTP_SECURITY=none sends in plaintext, allowed only to a server on loopback, not "
            f"{host!r}; wanted starttls or tls"
        )
    port = int(_number(env, "SMTP_PORT", "465" if security == "tls" else "587", int, 1, 65535))
    username = env.get("SMTP_USERNAME") or None
    password = env.get("SMTP_PASSWORD") or None
    auth = (env.get("SMTP_AUTH") or ("password" if username or password else "none")).strip().lower()
    if auth not in AUTH_MODES:
        raise ConfigError(f"SMTP_AUTH={auth!r}; wanted password, xoauth2 (OAuth2: Microsoft 365, Google) or none")
    oauth = None
    if auth == "xoauth2":
        oauth = _oauth(env, username, password, security, state)
    elif auth == "none":
        username = password = None
    elif (username is None) != (password is None):
        raise ConfigError("set both SMTP_USERNAME and SMTP_PASSWORD, or neither")
    if (password is not None or oauth is not None) and security == "none":
        raise ConfigError("SMTP_SECURITY=none would send the credentials in plaintext; wanted starttls or tls")
    ca_file = Path(env["SMTP_CA_FILE"]) if env.get("SMTP_CA_FILE") else None
    if ca_file is not None and not ca_file.is_file():
        raise ConfigError(f"SMTP_CA_FILE={str(ca_file)!r} is not a readable file; wanted a PEM bundle of CAs")
    return SmtpSettings(
        host=host,
        port=port,
        security=security,
        username=username,
        password=password,
        ca_file=ca_file,
        timeout=_number(env, "MAILER_TIMEOUT", "30", float, 0.1, 3600),
        data_timeout=_number(env, "MAILER_DATA_TIMEOUT", "600", float, 0.1, 3600),
        concurrency=int(_number(env, "MAILER_CONCURRENCY", "4", int, 1, 256)),
        rate=_number(env, "MAILER_RATE", "0", float, 0, 1e6),
        attempts=int(_number(env, "MAILER_ATTEMPTS", "3", int, 1, 100)),
        backoff=_number(env, "MAILER_BACKOFF", "2", float, 0, 3600),
        envelope_from=_envelope_from(env.get("MAILER_ENVELOPE_FROM")),
        pipelining=_switch(env, "MAILER_PIPELINING", default=True),
        oauth=oauth,
    )


def _oauth(
    env: Mapping[str, str], username: str | None, password: str | None, security: str, state: Path | None
) -> TokenSource:
    from mailer.oauth import token_source

    if username is None:
        raise ConfigError(
            "SMTP_AUTH=xoauth2 needs SMTP_USERNAME: the mailbox to log in as, e.g. SMTP_USERNAME=seminars@example.org"
        )
    if password is not None:
        raise ConfigError("SMTP_PASSWORD is set but SMTP_AUTH=xoauth2 logs in with a token; wanted one of the two")
    return token_source(env, state=state if state is not None else Path(env.get("MAILER_STATE") or "state"))


def _switch(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("on", "yes", "true", "1"):
        return True
    if raw in ("off", "no", "false", "0"):
        return False
    raise ConfigError(f"{name}={raw!r}; wanted on or off")


def ledger_window(env: Mapping[str, str]) -> float:
    """MAILER_LEDGER_WINDOW: seconds between the ledger's synced checkpoints (what a power loss can undo)."""
    return _number(env, "MAILER_LEDGER_WINDOW", "1", float, 0, 3600)


def daily_limit(env: Mapping[str, str]) -> int:
    """MAILER_DAILY_LIMIT: messages per rolling 24 hours across runs and kinds (0: no limit)."""
    return int(_number(with_preset(env), "MAILER_DAILY_LIMIT", "0", int, 0, 10_000_000))  # (a provider's cap)


# --- bounces: the envelope (VERP) and the bounce mailbox (bounces.py, check, check --imap) ---------

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
    on = _switch(env, "MAILER_VERP", default=False)
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
        host = _host(host)
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
    port = int(_number(env, "BOUNCES_IMAP_PORT", "993" if security == "tls" else "143", int, 1, 65535))
    ca_raw = env.get("BOUNCES_IMAP_CA_FILE") or ""
    ca_file = Path(ca_raw) if ca_raw else None
    if ca_file is not None and not ca_file.is_file():
        raise ConfigError(f"BOUNCES_IMAP_CA_FILE={ca_raw!r} is not a readable file; wanted a PEM bundle of CAs")
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
        timeout=_number(env, "MAILER_TIMEOUT", "30", float, 0.1, 3600),
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
