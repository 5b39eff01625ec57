"""Settings from the environment (never from the schedule): state folder, token key, SMTP."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from mailer.errors import ConfigError

TOKEN_KEY_FILE = "token.key"  # noqa: S105  (a file name, not a secret)


def token_key(state: Path, env: Mapping[str, str] = os.environ) -> bytes:
    """The secret behind unsubscribe tokens: MAILER_TOKEN_KEY, else state/token.key (made once, 0600).

    The key must stay the same across runs so that a resent message carries the same link.
    """
    if value := env.get("MAILER_TOKEN_KEY"):
        if len(value) < 16:
            raise ConfigError("MAILER_TOKEN_KEY is too short; wanted at least 16 random characters")
        return value.encode()
    path = state / TOKEN_KEY_FILE
    try:
        state.mkdir(parents=True, exist_ok=True)
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
    concurrency: int  # connections kept open in the pool
    rate: float  # messages per minute, 0 for no limit
    attempts: int  # tries per recipient within one run before it is left deferred
    backoff: float  # seconds before the first retry; doubles each time
    envelope_from: str | None  # bounce address; default the series' sender
    pipelining: bool = True  # RFC 2920, when the server offers it; off for a server that mishandles it

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


def _number(env: Mapping[str, str], name: str, default: str, kind: type[int] | type[float], low: float) -> float:
    raw = env.get(name) or default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number; wanted e.g. {name}={default}") from None
    if value < low:
        raise ConfigError(f"{name}={raw!r} is too small; wanted at least {low:g}")
    return value


def smtp_settings(env: Mapping[str, str]) -> SmtpSettings:
    """Read the SMTP settings from ``env`` (the process environment merged over .env)."""
    host = env.get("SMTP_HOST", "").strip()
    if not host:
        raise ConfigError(
            "SMTP_HOST is not set; wanted the SMTP server's name, e.g. SMTP_HOST=smtp.example.org "
            "(in the environment or in .env)"
        )
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
    port = int(_number(env, "SMTP_PORT", "465" if security == "tls" else "587", int, 1))
    username = env.get("SMTP_USERNAME") or None
    password = env.get("SMTP_PASSWORD") or None
    if (username is None) != (password is None):
        raise ConfigError("set both SMTP_USERNAME and SMTP_PASSWORD, or neither")
    if password is not None and security == "none":
        raise ConfigError("SMTP_SECURITY=none with a password would send it in plaintext; wanted starttls or tls")
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
        timeout=_number(env, "MAILER_TIMEOUT", "30", float, 0.1),
        concurrency=int(_number(env, "MAILER_CONCURRENCY", "4", int, 1)),
        rate=_number(env, "MAILER_RATE", "0", float, 0),
        attempts=int(_number(env, "MAILER_ATTEMPTS", "3", int, 1)),
        backoff=_number(env, "MAILER_BACKOFF", "2", float, 0),
        envelope_from=env.get("MAILER_ENVELOPE_FROM") or None,
        pipelining=_switch(env, "MAILER_PIPELINING", default=True),
    )


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
    """MAILER_LEDGER_WINDOW: seconds between the ledger's synced commits (0: commit every message)."""
    return _number(env, "MAILER_LEDGER_WINDOW", "0.1", float, 0)
