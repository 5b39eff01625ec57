"""Settings from the environment (never from the schedule): state folder, token key, SMTP."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from mailer.errors import ConfigError

TOKEN_KEY_FILE = "token.key"  # noqa: S105  (a file name, not a secret)


def token_key(state: Path, env: dict[str, str] | os._Environ[str] = os.environ) -> bytes:
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
