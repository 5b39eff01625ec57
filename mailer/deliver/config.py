"""Every setting, from the environment over .env (never from the schedule): the SETTINGS table (and the
docs page made from it), the .env loader, the state folder, the token key, SMTP, the listen socket of
serve, the ledger window and the daily limit. The bounce settings are in bounce_config.py."""

from __future__ import annotations

import ipaddress
import math
import os
import re
import secrets
import socket
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mailer.core.errors import ConfigError, Problem
from mailer.deliver.providers import with_preset

if TYPE_CHECKING:
    from mailer.deliver.oauth import TokenSource

TOKEN_KEY_FILE = "token.key"  # noqa: S105  (a file name, not a secret)


def token_key(state: Path, env: Mapping[str, str], *, create: bool = True) -> bytes:
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


@dataclass(frozen=True, slots=True)
class Setting:
    """One environment variable: its name, its default (as the docs show it) and what it means."""

    name: str
    default: str
    meaning: str


# Every setting seminar-mailer reads, from the environment or .env: the one table that docs/environment.md
# is generated from (`python -m mailer.deliver.config > docs/environment.md`) and that unknown keys are checked against.
SETTINGS: tuple[Setting, ...] = (
    Setting("SMTP_HOST", "(required to send)", "the SMTP server's host name or IP address"),
    Setting("SMTP_PORT", "587; 465 with tls", "the SMTP server's port"),
    Setting(
        "SMTP_SECURITY",
        "starttls",
        "starttls (STARTTLS required, certificate verified), tls (implicit TLS) or none (plaintext, loopback only)",
    ),
    Setting("SMTP_USERNAME", "(no login)", "the login; set both SMTP_USERNAME and SMTP_PASSWORD, or neither"),
    Setting("SMTP_PASSWORD", "(no login)", "the password, sent only over TLS and never printed"),
    Setting("SMTP_AUTH", "password when a password is set, else the preset's, else none", "password, xoauth2 or none"),
    Setting("SMTP_CA_FILE", "the system's CAs", "a PEM bundle of CAs for a private server certificate"),
    Setting(
        "SMTP_PROVIDER", "(none)", "a preset for microsoft365, google or relay; each value it sets can be overridden"
    ),
    Setting(
        "SMTP_OAUTH2_TOKEN_COMMAND", "(none)", "a command that prints an OAuth2 access token (first choice when set)"
    ),
    Setting("SMTP_OAUTH2_TENANT", "(none)", "Microsoft 365: your tenant's ID or domain"),
    Setting("SMTP_OAUTH2_CLIENT_ID", "(none)", "Microsoft 365: the app registration's application (client) ID"),
    Setting(
        "SMTP_OAUTH2_CLIENT_SECRET",
        "(none: `login microsoft`)",
        "Microsoft 365: the app's secret, for sending as the app",
    ),
    Setting(
        "SMTP_OAUTH2_AUTHORITY",
        "https://login.microsoftonline.com",
        "Microsoft 365: the sign-in host of a national cloud",
    ),
    Setting("MAILER_CONCURRENCY", "4", "SMTP connections kept open in the pool"),
    Setting("MAILER_RATE", "0 (no limit)", "messages per minute"),
    Setting(
        "MAILER_DAILY_LIMIT",
        "0 (no limit; a provider preset sets its own)",
        "messages per rolling 24 hours, across runs",
    ),
    Setting("MAILER_ATTEMPTS", "3", "tries per recipient within one run before it is left deferred"),
    Setting("MAILER_BACKOFF", "2", "seconds before the first retry; doubles each time"),
    Setting("MAILER_TIMEOUT", "30", "seconds per SMTP command: a stalled server cannot hang the run"),
    Setting("MAILER_DATA_TIMEOUT", "600", "seconds to wait for the reply to the end of a message"),
    Setting("MAILER_PIPELINING", "on", "off sends MAIL, RCPT and DATA one at a time (for a server that mishandles it)"),
    Setting(
        "MAILER_LEDGER_WINDOW",
        "1",
        "seconds between the folds of the send's journal into the ledger (what a power loss can undo)",
    ),
    Setting("MAILER_ENVELOPE_FROM", "the series' sender", "the bounce address (MAIL FROM): one plain ASCII address"),
    Setting(
        "MAILER_VERP", "off", "on gives each recipient its own signed bounce address, so a bounce names its recipient"
    ),
    Setting("MAILER_SOFT_BOUNCES", "3", "soft bounces, over distinct announcements, that unsubscribe an address"),
    Setting("MAILER_TOKEN_KEY", "state/token.key (made once)", "the secret behind unsubscribe and confirmation links"),
    Setting("MAILER_SCHEDULE", "data/seminars.yaml in the project", "the programme file (as --schedule)"),
    Setting("MAILER_TEMPLATES", "templates/email in the project", "your template folder (as --templates)"),
    Setting("MAILER_RECIPIENTS", "recipients in the project", "the folder of mailing-list files (as --recipients)"),
    Setting("MAILER_STATE", "state in the project", "the ledger, lock, token key and logs (as --state)"),
    Setting("MAILER_PREVIEW", "preview in the project", "where preview writes its files (as --out)"),
    Setting("MAILER_ENV_FILE", ".env in the project", "the settings file (read from the environment only)"),
    Setting("MAILER_DATE", "today in the series' time zone", "a day in the week to act on (as --date)"),
    Setting("BOUNCES_IMAP_HOST", "(none: --maildir or --mbox)", "the bounce mailbox's IMAP server"),
    Setting("BOUNCES_IMAP_PORT", "993; 143 with starttls", "its port"),
    Setting("BOUNCES_IMAP_SECURITY", "tls", "tls (implicit TLS) or starttls"),
    Setting("BOUNCES_IMAP_USERNAME", "(none)", "the bounce mailbox's login"),
    Setting("BOUNCES_IMAP_PASSWORD", "(none)", "its password, never printed"),
    Setting("BOUNCES_IMAP_CA_FILE", "the system's CAs", "a PEM bundle of CAs for a private IMAP server certificate"),
    Setting("BOUNCES_IMAP_FOLDER", "INBOX", "the folder the bounces arrive in"),
    Setting("BOUNCES_IMAP_DONE", "seminar-mailer-processed", "the folder processed messages are moved to"),
)
KNOWN_SETTINGS = frozenset(s.name for s in SETTINGS)
PREFIXES = ("SMTP_", "MAILER_", "BOUNCES_")
PLACEHOLDER_DOMAINS = ("example.org", "example.com", "example.net")  # RFC 2606: never a real server


def unknown_hint(name: str) -> str | None:
    """For an unknown SMTP_/MAILER_/BOUNCES_ name: what is wrong and the nearest known name; None when fine."""
    if not name.startswith(PREFIXES) or name in KNOWN_SETTINGS:
        return None
    import difflib

    guess = difflib.get_close_matches(name, sorted(KNOWN_SETTINGS), n=1, cutoff=0.6)
    hint = f"did you mean {guess[0]}?" if guess else "wanted one of the settings in docs/environment.md"
    return f"{name} is not a setting seminar-mailer knows; {hint}"


class Environment(dict[str, str]):
    """The settings every command reads: the process environment merged over .env (the environment wins).

    ``origins`` says which line of which file each value from a file came from, for error messages.
    """

    origins: dict[str, tuple[Path, int]]

    def __init__(self, values: Mapping[str, str] = {}, origins: Mapping[str, tuple[Path, int]] | None = None) -> None:
        super().__init__(values)
        self.origins = dict(origins or {})

    def where(self, name: str) -> str | None:
        """``.env:LINE`` for a value read from the file; None for one from the environment (or unset)."""
        if name not in self.origins:
            return None
        path, line = self.origins[name]
        return f"{path}:{line}"

    def locate(self, err: ConfigError) -> ConfigError:
        """``err`` prefixed with ``.env:LINE:`` when the setting it names (``NAME=...``) came from the file."""
        match = re.match(r"([A-Z][A-Z0-9_]*)[= ]", str(err))
        where = self.where(match[1]) if match else None
        if where is None or err.problems:
            return err
        return ConfigError(f"{where}: {err}")


def load_env(path: Path, environ: Mapping[str, str]) -> Environment:
    """Read ``path`` with python-dotenv (comments, quotes, ``export``; no ``${}`` expansion, so a password
    may hold ``$``) and merge ``environ`` over it. A line that is not KEY=value, or an unknown
    SMTP_/MAILER_/BOUNCES_ key, is an error at ``path:LINE``."""
    import io

    from dotenv.parser import parse_stream

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Environment(environ)
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read: {err}; wanted a UTF-8 text file of KEY=value lines") from err
    values: dict[str, str] = {}
    origins: dict[str, tuple[Path, int]] = {}
    for binding in parse_stream(io.StringIO(text)):
        line = binding.original.line
        if binding.error or (binding.key is not None and binding.value is None):
            raise ConfigError(f"{path}:{line}:1: not a KEY=value line; wanted e.g. SMTP_HOST=smtp.example.org")
        if binding.key is None or binding.value is None:
            continue  # a comment or a blank line
        if hint := unknown_hint(binding.key):
            raise ConfigError(f"{path}:{line}: {hint}")
        values[binding.key] = binding.value
        origins[binding.key] = (path, line)
    return Environment({**values, **environ}, {k: v for k, v in origins.items() if k not in environ})


def placeholders(env: Environment) -> list[Problem]:
    """Starter values left in .env: an example.org/.com host, an empty password; each at its line."""
    found = []
    for name in ("SMTP_HOST", "BOUNCES_IMAP_HOST"):
        host = env.get(name, "").strip().rstrip(".").lower()
        if name in env.origins and any(host == d or host.endswith("." + d) for d in PLACEHOLDER_DOMAINS):
            path, line = env.origins[name]
            why = f"{name}={host} is a placeholder (example.org is never a real server); wanted your server's name"
            found.append(Problem(path, line, None, why))
    for name in ("SMTP_PASSWORD", "BOUNCES_IMAP_PASSWORD"):
        if name in env.origins and not env[name]:
            path, line = env.origins[name]
            why = f"{name}= is empty; wanted the password, or no {name} line (and no username) for no login"
            found.append(Problem(path, line, None, why))
    return found


def listen_socket(listen: str, *, option: str) -> socket.socket:
    """A listening TCP socket for ``HOST:PORT`` (IPv6 as ``[::1]:PORT``); a malformed address, a port out
    of range or one in use is a ConfigError naming ``option`` (exit 2), not a failure inside the server."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    wanted = f"wanted HOST:PORT with a port from 1 to 65535, such as {option} 127.0.0.1:8080"
    if not host or not port or not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise ConfigError(f"{option} {listen!r} is not a HOST:PORT to listen on; {wanted}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
        sock.listen(128)
    except OSError as err:
        sock.close()
        why = err.strerror or str(err)
        raise ConfigError(
            f"{option} {listen!r}: cannot listen there ({why}); wanted a free port on this machine"
        ) from None
    return sock


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def number_setting(
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


def host_setting(raw: str) -> str:
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
        from mailer.core.address import ascii_domain

        try:
            host = ascii_domain(host)
        except ValueError:
            host = raw
    if not _HOST_RE.fullmatch(host):
        raise ConfigError(f"SMTP_HOST={raw!r} is not a host name or IP address; wanted e.g. SMTP_HOST=smtp.example.org")
    return host


def ca_file_setting(env: Mapping[str, str], name: str) -> Path | None:
    """A CA bundle setting (SMTP_CA_FILE, BOUNCES_IMAP_CA_FILE): a readable file, or unset."""
    raw = env.get(name) or ""
    if raw and not Path(raw).is_file():
        raise ConfigError(f"{name}={raw!r} is not a readable file; wanted a PEM bundle of CAs")
    return Path(raw) if raw else None


def _envelope_from(raw: str | None) -> str | None:
    """MAILER_ENVELOPE_FROM: one bare ASCII address, as MAIL FROM carries it."""
    if not raw:
        return None
    from mailer.core.address import parse_address

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
    host = host_setting(env.get("SMTP_HOST", ""))
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
    port = int(number_setting(env, "SMTP_PORT", "465" if security == "tls" else "587", int, 1, 65535))
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
    ca_file = ca_file_setting(env, "SMTP_CA_FILE")
    return SmtpSettings(
        host=host,
        port=port,
        security=security,
        username=username,
        password=password,
        ca_file=ca_file,
        timeout=number_setting(env, "MAILER_TIMEOUT", "30", float, 0.1, 3600),
        data_timeout=number_setting(env, "MAILER_DATA_TIMEOUT", "600", float, 0.1, 3600),
        concurrency=int(number_setting(env, "MAILER_CONCURRENCY", "4", int, 1, 256)),
        rate=number_setting(env, "MAILER_RATE", "0", float, 0, 1e6),
        attempts=int(number_setting(env, "MAILER_ATTEMPTS", "3", int, 1, 100)),
        backoff=number_setting(env, "MAILER_BACKOFF", "2", float, 0, 3600),
        envelope_from=_envelope_from(env.get("MAILER_ENVELOPE_FROM")),
        pipelining=switch_setting(env, "MAILER_PIPELINING", default=True),
        oauth=oauth,
    )


def _oauth(
    env: Mapping[str, str], username: str | None, password: str | None, security: str, state: Path | None
) -> TokenSource:
    from mailer.deliver.oauth import token_source

    if username is None:
        raise ConfigError(
            "SMTP_AUTH=xoauth2 needs SMTP_USERNAME: the mailbox to log in as, e.g. SMTP_USERNAME=seminars@example.org"
        )
    if password is not None:
        raise ConfigError("SMTP_PASSWORD is set but SMTP_AUTH=xoauth2 logs in with a token; wanted one of the two")
    return token_source(env, state=state if state is not None else Path(env.get("MAILER_STATE") or "state"))


def switch_setting(env: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("on", "yes", "true", "1"):
        return True
    if raw in ("off", "no", "false", "0"):
        return False
    raise ConfigError(f"{name}={raw!r}; wanted on or off")


def ledger_window(env: Mapping[str, str]) -> float:
    """MAILER_LEDGER_WINDOW: seconds between the folds of the journal into the ledger (what a power loss can undo)."""
    return number_setting(env, "MAILER_LEDGER_WINDOW", "1", float, 0, 3600)


def daily_limit(env: Mapping[str, str]) -> int:
    """MAILER_DAILY_LIMIT: messages per rolling 24 hours across runs and kinds (0: no limit)."""
    return int(number_setting(with_preset(env), "MAILER_DAILY_LIMIT", "0", int, 0, 10_000_000))  # (a provider's cap)


def environment_page() -> str:
    """docs/environment.md: every setting of SETTINGS, generated so that the page cannot drift from the code."""
    groups = (
        ("SMTP_", "Sending (SMTP)"),
        ("MAILER_", "The mailer: pool, limits, retries, paths"),
        ("BOUNCES_", "Reading bounces (IMAP)"),
    )
    lines = [
        "# Environment variables",
        "",
        "<!-- Generated from SETTINGS in mailer/deliver/config.py by",
        "     `python -m mailer.deliver.config > docs/environment.md`; tests/deliver/test_config.py fails when",
        "     this page is stale. Edit the table there, not here. -->",
        "",
        "Every setting comes from the process environment or from the project's `.env` file (another file with",
        "`MAILER_ENV_FILE`); the environment wins. Every command reads them through one loader, `serve` included.",
        "",
        "`.env` is read by [python-dotenv](https://pypi.org/project/python-dotenv/): `KEY=value` lines, `#` comments",
        "(on their own line, or after an unquoted value), single or double quotes, an optional `export`. Values are",
        "taken literally (no `${VAR}` expansion), so a password may hold `$`. A line that is not `KEY=value`, or a",
        "`SMTP_*`, `MAILER_*` or `BOUNCES_*` name that is not below, is an error naming `.env:LINE` (with the",
        "nearest known name); in the process environment, where other programs' variables live too, such a name",
        "is a warning of `seminar-mailer check`. `check` also refuses the starter file's placeholders: an",
        "`example.org`/`example.com` host, an empty password. A bad value names its `.env:LINE` when it came",
        "from the file; `send --dry-run` refuses every bad value a real send refuses (only an absent `SMTP_HOST`",
        "is a warning there, so that a dry run needs no server).",
    ]
    for prefix, title in groups:
        lines += ["", f"## {title}", "", "| Variable | Default | Meaning |", "| --- | --- | --- |"]
        lines += [f"| `{s.name}` | {s.default} | {s.meaning} |" for s in SETTINGS if s.name.startswith(prefix)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(environment_page(), end="")
