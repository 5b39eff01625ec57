"""OAuth2 access tokens for SMTP (XOAUTH2/OAUTHBEARER): fetched once per run, cached until near expiry.

Where a token comes from, in this order (docs/providers.md):
1. ``SMTP_OAUTH2_TOKEN_COMMAND``: a command whose standard output is the token, as msmtp's
   ``passwordeval``. It runs through ``/bin/sh -c`` with seminar-mailer's environment (``.env``
   included), so secrets reach it in its environment, never in anyone's argv. Its standard error
   passes through to ours untouched; its output is never shown.
2. Microsoft 365 with msal: client credentials of an app registration (``SMTP_OAUTH2_TENANT``,
   ``SMTP_OAUTH2_CLIENT_ID``, ``SMTP_OAUTH2_CLIENT_SECRET``), or the refresh token that
   ``seminar-mailer login microsoft`` (device code) keeps in ``state/microsoft-token.json`` (0600).

A token is never printed, logged or written anywhere but msal's cache in the state folder. It is
fetched again when it is about to expire, and when the server turns it down (``invalidate``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mailer.core.errors import ConfigError, DeliveryError
from mailer.deliver.providers import GOOGLE, MICROSOFT365, provider

MICROSOFT_AUTHORITY = "https://login.microsoftonline.com"
MICROSOFT_APP_SCOPE = "https://outlook.office365.com/.default"  # client credentials: the app's SMTP.SendAsApp
MICROSOFT_USER_SCOPE = "https://outlook.office.com/SMTP.Send"  # delegated: the signed-in mailbox
MICROSOFT_CACHE = "microsoft-token.json"
COMMAND_TIMEOUT = 120.0  # seconds: a helper may have to refresh its own token over the network
ASSUMED_LIFETIME = 3000.0  # seconds, when neither the source nor the token says (Google and Microsoft: 3600)
MARGIN = 300.0  # refetch this long before expiry, so a connection never starts with a dying token
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")  # RFC 6750 b64token: what a Bearer token may contain

Fetch = Callable[[], tuple[str, float | None]]  # returns the token and its lifetime in seconds, if known


@dataclass(frozen=True, slots=True)
class Fetched:
    value: str
    expires: float  # on the monotonic clock


class TokenSource:
    """Hands out a valid access token; fetches it once, again near expiry or after ``invalidate``."""

    def __init__(self, fetch: Fetch, *, origin: str, clock: Callable[[], float] = time.monotonic) -> None:
        self._fetch = fetch
        self.origin = origin  # where the token comes from, for messages: never the token itself
        self._clock = clock
        self._current: Fetched | None = None
        self._lock: asyncio.Lock | None = None
        self.fetches = 0  # how many times a token was fetched in this run

    def __repr__(self) -> str:
        return f"TokenSource({self.origin})"

    async def get(self) -> str:
        """A token valid for at least a few minutes more; concurrent callers share one fetch."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            current = self._current
            if current is None or self._clock() >= current.expires:
                value, lifetime = await asyncio.to_thread(self._fetch)
                self.fetches += 1
                lifetime = lifetime if lifetime is not None else _jwt_lifetime(value, time.time())
                lifetime = ASSUMED_LIFETIME if lifetime is None else lifetime
                current = self._current = Fetched(value, self._clock() + lifetime - min(MARGIN, lifetime / 2))
            return current.value

    def invalidate(self, token: str) -> None:
        """The server turned ``token`` down: the next ``get`` fetches a new one (once, for all callers)."""
        if self._current is not None and self._current.value == token:
            self._current = None


def _jwt_lifetime(token: str, now: float) -> float | None:
    """Seconds left by a JWT's ``exp`` claim (Microsoft's tokens are JWTs); None for opaque tokens."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        return float(claims["exp"]) - now if isinstance(claims, dict) else None
    except (ValueError, KeyError, TypeError, binascii.Error):
        return None


def _checked(token: str, origin: str) -> str:
    token = token.strip()
    if not token:
        raise ConfigError(f"{origin} gave no access token; wanted the token alone on standard output")
    if not _TOKEN.fullmatch(token):
        raise ConfigError(
            f"{origin} gave something that is not an access token (more than one line, spaces or JSON?); "
            "wanted the token alone on standard output, e.g. az ... --query accessToken -o tsv"
        )
    return token


def command_fetch(command: str, env: Mapping[str, str]) -> Fetch:
    """Run ``command`` through /bin/sh with ``env`` as its environment; its stdout is the token."""
    origin = "SMTP_OAUTH2_TOKEN_COMMAND"

    def fetch() -> tuple[str, float | None]:
        try:
            proc = subprocess.run(  # noqa: S603 (the organiser's own command, as msmtp's passwordeval)
                ["/bin/sh", "-c", command],
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=None,  # the helper's own messages reach the organiser as they are
                timeout=COMMAND_TIMEOUT,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise ConfigError(
                f"{origin} did not finish within {COMMAND_TIMEOUT:g} s; wanted a command that prints "
                "a token without asking anything"
            ) from None
        except OSError as err:
            raise ConfigError(f"{origin} could not be started: {err.strerror}") from None
        if proc.returncode != 0:
            raise ConfigError(
                f"{origin} failed with exit status {proc.returncode} (its own messages, if any, are above); "
                "wanted a command that prints the access token and exits 0"
            )
        return _checked(proc.stdout.decode("utf-8", "replace"), origin), None

    return fetch


def _msal_error(result: Mapping[str, Any], what: str) -> ConfigError:
    """msal's error code and description (they name the problem, e.g. AADSTS7000215; no secrets)."""
    description = str(result.get("error_description") or "").splitlines()
    return ConfigError(f"{what}: {result.get('error', 'no token')}: {description[0] if description else ''}".rstrip())


def _authority(env: Mapping[str, str]) -> str:
    tenant = (env.get("SMTP_OAUTH2_TENANT") or "").strip()
    if not tenant:
        raise ConfigError(
            "SMTP_OAUTH2_TENANT is not set; wanted your Microsoft 365 tenant's ID or domain, "
            "e.g. SMTP_OAUTH2_TENANT=contoso.onmicrosoft.com"
        )
    base = (env.get("SMTP_OAUTH2_AUTHORITY") or MICROSOFT_AUTHORITY).rstrip("/")
    if not base.startswith("https://"):
        raise ConfigError(f"SMTP_OAUTH2_AUTHORITY={base!r}; wanted an https:// address, e.g. {MICROSOFT_AUTHORITY}")
    return f"{base}/{tenant}"


def _client_id(env: Mapping[str, str]) -> str:
    client_id = (env.get("SMTP_OAUTH2_CLIENT_ID") or "").strip()
    if not client_id:
        raise ConfigError(
            "SMTP_OAUTH2_CLIENT_ID is not set; wanted the Application (client) ID of your app registration "
            "(README, Microsoft 365)"
        )
    return client_id


def _msal_options(env: Mapping[str, str]) -> dict[str, Any]:
    # Outside the public cloud's login host (a national cloud, or a test's endpoint) msal must not
    # ask login.microsoftonline.com whether the authority is genuine.
    custom = bool(env.get("SMTP_OAUTH2_AUTHORITY"))
    return {"instance_discovery": not custom, "validate_authority": not custom}


def _msal_call(what: str, call: Callable[[], Any]) -> Any:
    """Run an msal call; a network failure is a DeliveryError (try later), a refusal a ConfigError."""
    import requests

    try:
        return call()
    except requests.RequestException as err:
        raise DeliveryError(f"{what}: cannot reach the Microsoft identity platform: {type(err).__name__}") from None
    except ValueError as err:  # msal: authority unknown, discovery document missing
        raise ConfigError(f"{what}: {err}; check SMTP_OAUTH2_TENANT") from None


def microsoft_client_credentials(env: Mapping[str, str]) -> Fetch:
    """Client credentials of an app registration: unattended, the way for cron."""
    authority, client_id, secret = _authority(env), _client_id(env), env["SMTP_OAUTH2_CLIENT_SECRET"]
    what = "Microsoft client credentials (SMTP_OAUTH2_CLIENT_ID, SMTP_OAUTH2_CLIENT_SECRET)"

    def fetch() -> tuple[str, float | None]:
        import msal

        app = _msal_call(
            what,
            lambda: msal.ConfidentialClientApplication(
                client_id, client_credential=secret, authority=authority, **_msal_options(env)
            ),
        )
        result = _msal_call(what, lambda: app.acquire_token_for_client(scopes=[MICROSOFT_APP_SCOPE]))
        if "access_token" not in result:
            raise _msal_error(result, what)
        return _checked(result["access_token"], what), float(result.get("expires_in", 3600))

    return fetch


class _Cache:
    """msal's token cache in state/microsoft-token.json, 0600, replaced atomically when it changes."""

    def __init__(self, state: Path) -> None:
        import msal

        self.path = state / MICROSOFT_CACHE
        self.cache = msal.SerializableTokenCache()
        if self.path.exists():
            try:
                self.cache.deserialize(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise ConfigError(
                    f"{self.path}: cannot read the Microsoft sign-in: {err}; run seminar-mailer login microsoft again"
                ) from None

    def save(self) -> None:
        if not self.cache.has_state_changed:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_suffix(".tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(self.cache.serialize())
            os.replace(temporary, self.path)
        except OSError as err:
            raise ConfigError(f"{self.path}: cannot save the Microsoft sign-in: {err.strerror}") from None


def _public_app(env: Mapping[str, str], cache: _Cache) -> Any:
    import msal

    authority, client_id = _authority(env), _client_id(env)
    return _msal_call(
        "Microsoft sign-in",
        lambda: msal.PublicClientApplication(
            client_id, authority=authority, token_cache=cache.cache, **_msal_options(env)
        ),
    )


def microsoft_signed_in(env: Mapping[str, str], state: Path) -> Fetch:
    """The delegated token of ``seminar-mailer login microsoft``, refreshed from its cached refresh token."""
    username = env.get("SMTP_USERNAME") or ""
    what = f"the Microsoft sign-in in {state / MICROSOFT_CACHE}"

    def fetch() -> tuple[str, float | None]:
        cache = _Cache(state)
        app = _public_app(env, cache)
        accounts = app.get_accounts(username=username) or app.get_accounts()
        if not accounts:
            raise ConfigError(
                f"no Microsoft sign-in for SMTP_USERNAME={username!r} in {state / MICROSOFT_CACHE}; run "
                "seminar-mailer login microsoft once (or set SMTP_OAUTH2_CLIENT_SECRET for an app)"
            )
        result = _msal_call(what, lambda: app.acquire_token_silent([MICROSOFT_USER_SCOPE], account=accounts[0]))
        if not result or "access_token" not in result:
            raise _msal_error(
                result or {"error": "expired", "error_description": "run seminar-mailer login microsoft again"}, what
            )
        cache.save()
        return _checked(result["access_token"], what), float(result.get("expires_in", 3600))

    return fetch


def login_microsoft(env: Mapping[str, str], state: Path, show: Callable[[str], None]) -> str:
    """Device-code sign-in: ``show`` tells the organiser where to go; returns the signed-in account."""
    cache = _Cache(state)
    app = _public_app(env, cache)
    what = "Microsoft sign-in"
    flow = _msal_call(what, lambda: app.initiate_device_flow(scopes=[MICROSOFT_USER_SCOPE]))
    if "user_code" not in flow:
        raise _msal_error(flow, what)
    show(str(flow["message"]))
    result = _msal_call(what, lambda: app.acquire_token_by_device_flow(flow))
    if "access_token" not in result:
        raise _msal_error(result, what)
    cache.save()
    claims = result.get("id_token_claims") or {}
    return str(claims.get("preferred_username") or claims.get("email") or "your account")


def token_source(env: Mapping[str, str], *, state: Path) -> TokenSource:
    """The token source the settings ask for (SMTP_AUTH=xoauth2); a missing piece names its variable."""
    if command := (env.get("SMTP_OAUTH2_TOKEN_COMMAND") or "").strip():
        return TokenSource(command_fetch(command, env), origin="SMTP_OAUTH2_TOKEN_COMMAND")
    name = provider(env)
    if name == MICROSOFT365 or env.get("SMTP_OAUTH2_TENANT"):
        _authority(env), _client_id(env)  # validate now: a missing variable stops the run before it starts
        if env.get("SMTP_OAUTH2_CLIENT_SECRET"):
            return TokenSource(microsoft_client_credentials(env), origin="Microsoft client credentials")
        return TokenSource(microsoft_signed_in(env, state), origin=f"Microsoft sign-in ({state / MICROSOFT_CACHE})")
    if name == GOOGLE:
        raise ConfigError(
            "SMTP_OAUTH2_TOKEN_COMMAND is not set; for Google it is the way to get a token, e.g. "
            "SMTP_OAUTH2_TOKEN_COMMAND='oama access you@example.org' (README, Google)"
        )
    raise ConfigError(
        "SMTP_AUTH=xoauth2 needs a token: set SMTP_OAUTH2_TOKEN_COMMAND (a command that prints it), "
        "or SMTP_PROVIDER=microsoft365 with SMTP_OAUTH2_TENANT and SMTP_OAUTH2_CLIENT_ID"
    )
