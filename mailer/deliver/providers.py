"""Provider presets (SMTP_PROVIDER): host, port, security, authentication and limits, each overridable.

A preset only fills variables the organiser left unset, so ``SMTP_PROVIDER=microsoft365`` with
``MAILER_RATE=10`` sends at 10 a minute. The limits are the providers' published ones for a single
mailbox (docs/providers.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from mailer.core.errors import ConfigError

MICROSOFT365 = "microsoft365"
GOOGLE = "google"
RELAY = "relay"

PRESETS: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        # learn.microsoft.com/exchange/troubleshoot/send-emails/smtp-submission-improvements:
        # 3 concurrent connections, 30 messages a minute, 10 000 recipients a day per mailbox.
        MICROSOFT365: MappingProxyType(
            {
                "SMTP_HOST": "smtp.office365.com",
                "SMTP_PORT": "587",
                "SMTP_SECURITY": "starttls",
                "SMTP_AUTH": "xoauth2",
                "MAILER_CONCURRENCY": "3",
                "MAILER_RATE": "30",
                "MAILER_DAILY_LIMIT": "10000",
            }
        ),
        # support.google.com/a/answer/166852: 2 000 messages a day (Workspace; 500 for a free
        # account: set MAILER_DAILY_LIMIT=500). Google publishes no per-minute limit: 20 a minute
        # is our choice, to look like a person rather than a burst.
        GOOGLE: MappingProxyType(
            {
                "SMTP_HOST": "smtp.gmail.com",
                "SMTP_PORT": "587",
                "SMTP_SECURITY": "starttls",
                "SMTP_AUTH": "xoauth2",
                "MAILER_CONCURRENCY": "2",
                "MAILER_RATE": "20",
                "MAILER_DAILY_LIMIT": "2000",
            }
        ),
        # An institution's relay that accepts mail from its own network on port 25 (STARTTLS still
        # required); SMTP_USERNAME/SMTP_PASSWORD if it wants a login. No limits: ask your IT.
        RELAY: MappingProxyType({"SMTP_PORT": "25", "SMTP_SECURITY": "starttls"}),
    }
)


def provider(env: Mapping[str, str]) -> str | None:
    """The SMTP_PROVIDER named in ``env`` (None when unset); an unknown name is a ConfigError."""
    name = (env.get("SMTP_PROVIDER") or "").strip().lower()
    if not name:
        return None
    if name not in PRESETS:
        raise ConfigError(f"SMTP_PROVIDER={name!r} is not known; wanted one of {', '.join(PRESETS)}")
    return name


def with_preset(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with the preset's values under it: every variable the organiser set (non-empty) wins.

    A password set for a provider whose preset uses OAuth2 means password authentication (a Google
    app password, say), so the preset's SMTP_AUTH does not apply then.
    """
    name = provider(env)
    merged = {k: v for k, v in env.items() if v != ""}
    if name is None:
        return merged
    defaults = dict(PRESETS[name])
    if merged.get("SMTP_PASSWORD"):
        defaults.pop("SMTP_AUTH", None)
    return {**defaults, **merged}
