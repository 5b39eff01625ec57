"""SMTP_PROVIDER presets and the token cache (mailer/deliver/providers.py, config.py, oauth.py), in process."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path

import pytest

from mailer.core.errors import ConfigError
from mailer.deliver.config import smtp_settings
from mailer.deliver.oauth import TokenSource

TOKEN_COMMAND = {"SMTP_USERNAME": "seminars@example.org", "SMTP_OAUTH2_TOKEN_COMMAND": "echo t"}


def test_microsoft365_preset_fills_host_and_limits_and_each_variable_overrides(tmp_path: Path) -> None:
    settings = smtp_settings({"SMTP_PROVIDER": "microsoft365", **TOKEN_COMMAND}, state=tmp_path)
    assert (settings.host, settings.port, settings.security) == ("smtp.office365.com", 587, "starttls")
    assert (settings.rate, settings.concurrency) == (30, 3)
    assert settings.oauth is not None and settings.password is None
    mine = smtp_settings(
        {"SMTP_PROVIDER": "Microsoft365", "MAILER_RATE": "10", "SMTP_HOST": "smtp-mail.outlook.com", **TOKEN_COMMAND},
        state=tmp_path,
    )
    assert (mine.host, mine.rate, mine.concurrency) == ("smtp-mail.outlook.com", 10, 3)


def test_google_with_an_app_password_logs_in_with_the_password(tmp_path: Path) -> None:
    env = {"SMTP_PROVIDER": "google", "SMTP_USERNAME": "lm@gmail.com", "SMTP_PASSWORD": "abcd efgh ijkl mnop"}
    settings = smtp_settings(env, state=tmp_path)
    assert (settings.host, settings.rate) == ("smtp.gmail.com", 20)
    assert settings.oauth is None and settings.password == "abcd efgh ijkl mnop"
    assert "abcd" not in repr(settings)


def test_relay_preset_needs_the_host_and_defaults_to_port_25_without_login(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SMTP_HOST is not set"):
        smtp_settings({"SMTP_PROVIDER": "relay"}, state=tmp_path)
    settings = smtp_settings({"SMTP_PROVIDER": "relay", "SMTP_HOST": "mailrelay.uni.example"}, state=tmp_path)
    assert (settings.port, settings.security, settings.username, settings.oauth) == (25, "starttls", None, None)
    assert settings.rate == 0


def _jwt(exp: float) -> str:
    part = base64.urlsafe_b64encode(json.dumps({"exp": exp}).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJub25lIn0.{part}.sig"


def test_token_is_kept_until_five_minutes_before_it_expires_then_fetched_again() -> None:
    """The clock is passed in: no sleeping. An opaque token is assumed to last 50 minutes."""
    now = [1000.0]
    fetched: list[str] = []

    def fetch() -> tuple[str, float | None]:
        fetched.append(f"tok{len(fetched)}")
        return fetched[-1], None

    source = TokenSource(fetch, origin="test", clock=lambda: now[0])

    async def run() -> list[str]:
        seen = [await source.get()]
        now[0] += 2699  # 44 min 59 s: still fine
        seen.append(await source.get())
        now[0] += 1  # 45 min: five minutes before the assumed 50
        seen.append(await source.get())
        source.invalidate("tok0")  # an old token refused: the current one stays
        seen.append(await source.get())
        source.invalidate("tok1")
        seen.append(await source.get())
        return seen

    assert asyncio.run(run()) == ["tok0", "tok0", "tok1", "tok1", "tok2"]


def test_a_jwt_expiry_is_honoured_and_concurrent_callers_share_one_fetch() -> None:
    import time

    calls: list[int] = []

    def fetch() -> tuple[str, float | None]:
        calls.append(1)
        return _jwt(time.time() + 400), None  # 400 s left: refetch after 200 s (half, as it is short)

    now = [0.0]
    source = TokenSource(fetch, origin="test", clock=lambda: now[0])

    async def run() -> None:
        await asyncio.gather(*(source.get() for _ in range(8)))
        assert len(calls) == 1
        now[0] = 150
        await source.get()
        assert len(calls) == 1
        now[0] = 250
        await source.get()
        assert len(calls) == 2

    asyncio.run(run())
