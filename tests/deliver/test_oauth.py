"""OAuth2 sending (mailer/deliver/oauth.py, the SASL exchange in mailer/deliver/smtp.py) against real servers on
127.0.0.1.

The SMTP server is aiosmtpd with XOAUTH2 and OAUTHBEARER (tests/smtp_server.py, ``auth_MECHANISM``
hooks) accepting only the current token of a stand-in identity provider, which can expire it after N
messages. seminar-mailer runs as its own process; the token command is a real program; msal talks
HTTPS to a stand-in Microsoft identity platform (tests/identity_server.py). Nothing is patched.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.deliver.test_send import ledger_rows, make_list, run_send
from tests.identity_server import CLIENT_ID, CLIENT_SECRET, DEVICE_CODE, TENANT, USER_CODE, Identity, start_identity
from tests.smtp_server import (
    MAILBOX,
    VAULT_SECRET,
    Issuer,
    OAuthRecorder,
    Server,
    oauth_env,
    start_oauth_server,
    start_server,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # aiosmtpd's own Session.login_data


@pytest.fixture
def oauth(tmp_path: Path) -> Iterator[tuple[Server, Issuer]]:
    server, issuer = start_oauth_server(tmp_path)
    yield server, issuer
    server.controller.stop()


def token_calls(issuer: Issuer) -> int:
    calls = issuer.folder / "calls"
    return calls.read_text().count("call") if calls.exists() else 0


def assert_secrets_kept(tmp_path: Path, issuer: Issuer, *outputs: str, more: tuple[str, ...] = ()) -> None:
    """No token issued, nor the helper's secret, in any output or any file the run left in its folders."""
    forbidden = [*issuer.issued, VAULT_SECRET, *more]
    for text in outputs:
        for secret in forbidden:
            assert secret not in text
    for folder in (tmp_path / "state", tmp_path / "recipients"):
        for path in folder.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert not any(s.encode() in data for s in forbidden), path


@dataclass
class ProcessWatch:
    """Reads every process's argv (/proc/*/cmdline), as ``ps`` does, until stopped."""

    forbidden: list[str]
    seen_helper: bool = False
    leaks: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set():
            for entry in Path("/proc").iterdir():
                if not entry.name.isdigit():
                    continue
                try:
                    argv = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
                except OSError:
                    continue
                self.seen_helper |= "token-command.py" in argv
                self.leaks += [argv for secret in self.forbidden if secret in argv]
            self.stop.wait(0.01)


def test_token_command_delivers_the_list_and_no_secret_reaches_ps_output_or_files(
    oauth: tuple[Server, Issuer], tmp_path: Path
) -> None:
    server, issuer = oauth
    make_list(tmp_path, 300)
    watch = ProcessWatch([issuer.current, VAULT_SECRET])
    watcher = threading.Thread(target=watch.run)
    watcher.start()
    try:
        result = run_send(tmp_path, oauth_env(server, issuer, TOKEN_HELPER_DELAY="0.5"))
    finally:
        watch.stop.set()
        watcher.join()
    assert result.returncode == 0, result.stderr
    counts = server.recorder.count()
    assert len(counts) == 300 and set(counts.values()) == {1}
    assert set(ledger_rows(tmp_path).values()) == {"sent"}
    assert token_calls(issuer) == 1, "the token is fetched once per run, shared by the pool"
    assert {m for m, _ in server.recorder.logins} == {"XOAUTH2"}
    assert watch.seen_helper, "the watcher never saw the token command running: it proves nothing"
    assert watch.leaks == []
    assert_secrets_kept(tmp_path, issuer, result.stdout, result.stderr)


@pytest.mark.parametrize(
    "on_expiry",
    ["454 4.7.0 Token expired, authenticate again", "535 5.7.3 Authentication unsuccessful", "drop"],
)
def test_a_token_expiring_mid_run_is_fetched_again_and_nobody_is_missed_or_sent_twice(
    tmp_path: Path, on_expiry: str
) -> None:
    """The server expires each token after 40 messages: replies 454/535 at the next MAIL, or drops the
    connection (then the cached token is refused at AUTH and a fresh one fetched)."""
    server, issuer = start_oauth_server(tmp_path, expire_after=40)
    assert isinstance(server.recorder, OAuthRecorder)
    server.recorder.on_expiry = on_expiry
    try:
        make_list(tmp_path, 200)
        result = run_send(tmp_path, oauth_env(server, issuer))
        assert result.returncode == 0, result.stdout + result.stderr
        counts = server.recorder.count()
        assert len(counts) == 200 and set(counts.values()) == {1}
        rows = ledger_rows(tmp_path)
        assert len(rows) == 200 and set(rows.values()) == {"sent"}
        used = {g for _, g in server.recorder.logins if not g.startswith("refused")}
        assert len(used) >= 5, "the run should have needed five tokens"
        assert token_calls(issuer) == len(used), "each token fetched once, whatever the pool size"
        refused = [g for _, g in server.recorder.logins if g.startswith("refused")]
        if on_expiry != "drop":  # the refusal at MAIL retired the token: no stale token is ever offered
            assert refused == []
        assert_secrets_kept(tmp_path, issuer, result.stdout, result.stderr)
    finally:
        server.controller.stop()


@pytest.mark.parametrize("mechanism", ["XOAUTH2", "OAUTHBEARER"])
def test_a_wrong_token_exits_2_with_a_clear_message(tmp_path: Path, mechanism: str) -> None:
    server, issuer = start_oauth_server(tmp_path, mechanisms=(mechanism,))
    try:
        (issuer.folder / "wrong").write_text("ya29.stale-token-canary-0000")
        make_list(tmp_path, 20)
        result = run_send(tmp_path, oauth_env(server, issuer, TOKEN_HELPER_FILE="wrong"))
        assert result.returncode == 2, result.stdout + result.stderr
        assert "127.0.0.1 rejected the OAuth2 token from SMTP_OAUTH2_TOKEN_COMMAND" in result.stderr
        assert f"SMTP_USERNAME='{MAILBOX}': 535 5.7.8" in result.stderr
        assert server.recorder.received == []
        assert {m for m, _ in server.recorder.logins} == {mechanism}  # type: ignore[attr-defined]
        assert_secrets_kept(tmp_path, issuer, result.stdout, result.stderr, more=("ya29.stale-token-canary-0000",))
    finally:
        server.controller.stop()


def test_oauthbearer_is_used_when_the_server_offers_only_that(tmp_path: Path) -> None:
    server, issuer = start_oauth_server(tmp_path, mechanisms=("OAUTHBEARER",))
    try:
        make_list(tmp_path, 20)
        result = run_send(tmp_path, oauth_env(server, issuer))
        assert result.returncode == 0, result.stderr
        assert len(server.recorder.count()) == 20
        assert {m for m, _ in server.recorder.logins} == {"OAUTHBEARER"}  # type: ignore[attr-defined]
    finally:
        server.controller.stop()


def test_a_server_without_oauth_is_refused_before_any_token_is_sent(tmp_path: Path) -> None:
    server = start_server(tmp_path)  # PLAIN and LOGIN only
    try:
        make_list(tmp_path, 5)
        env = server.env(SMTP_PASSWORD="", SMTP_AUTH="xoauth2", SMTP_OAUTH2_TOKEN_COMMAND="echo never-used")
        result = run_send(tmp_path, env)
        assert result.returncode == 2
        assert "offers AUTH LOGIN PLAIN, neither XOAUTH2 nor OAUTHBEARER" in result.stderr
        assert server.recorder.auth_attempts == 0 and server.recorder.received == []
    finally:
        server.controller.stop()


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"SMTP_USERNAME": ""}, "SMTP_AUTH=xoauth2 needs SMTP_USERNAME"),
        ({"SMTP_OAUTH2_TOKEN_COMMAND": ""}, "SMTP_AUTH=xoauth2 needs a token: set SMTP_OAUTH2_TOKEN_COMMAND"),
        ({"SMTP_PASSWORD": "x"}, "SMTP_PASSWORD is set but SMTP_AUTH=xoauth2"),
        ({"SMTP_AUTH": "kerberos"}, "SMTP_AUTH='kerberos'; wanted password, xoauth2"),
        ({"SMTP_PROVIDER": "yahoo"}, "SMTP_PROVIDER='yahoo' is not known; wanted one of microsoft365, google, relay"),
        ({"SMTP_PROVIDER": "google", "SMTP_OAUTH2_TOKEN_COMMAND": ""}, "for Google it is the way to get a token"),
        ({"SMTP_PROVIDER": "microsoft365", "SMTP_OAUTH2_TOKEN_COMMAND": ""}, "SMTP_OAUTH2_TENANT is not set"),
        (
            {"SMTP_OAUTH2_TOKEN_COMMAND": "", "SMTP_OAUTH2_TENANT": TENANT},
            "SMTP_OAUTH2_CLIENT_ID is not set; wanted the Application (client) ID",
        ),
        ({"SMTP_OAUTH2_TOKEN_COMMAND": "echo helper failed >&2; exit 3"}, "failed with exit status 3"),
        ({"SMTP_OAUTH2_TOKEN_COMMAND": "true"}, "SMTP_OAUTH2_TOKEN_COMMAND gave no access token"),
        ({"SMTP_OAUTH2_TOKEN_COMMAND": "echo '{\"accessToken\": 1}'"}, "gave something that is not an access token"),
    ],
)
def test_oauth_mistakes_exit_2_naming_the_variable(
    oauth: tuple[Server, Issuer], tmp_path: Path, env: dict[str, str], words: str
) -> None:
    server, issuer = oauth
    make_list(tmp_path, 3)
    result = run_send(tmp_path, oauth_env(server, issuer, **env))
    assert result.returncode == 2, result.stdout + result.stderr
    assert words in result.stderr
    assert server.recorder.received == []


def test_the_helpers_own_messages_pass_through(oauth: tuple[Server, Issuer], tmp_path: Path) -> None:
    server, issuer = oauth
    make_list(tmp_path, 1)
    env = oauth_env(server, issuer, SMTP_OAUTH2_TOKEN_COMMAND="echo 'oama: no refresh token for x' >&2; exit 1")
    result = run_send(tmp_path, env)
    assert result.returncode == 2 and "oama: no refresh token for x" in result.stderr


# --- Microsoft 365 through msal, against the stand-in identity platform ----------------------------


@pytest.fixture
def microsoft(tmp_path: Path) -> Iterator[tuple[Server, Issuer, Identity]]:
    server, issuer = start_oauth_server(tmp_path)
    identity = start_identity(tmp_path, issuer)
    yield server, issuer, identity
    identity.stop()
    server.controller.stop()


def microsoft_env(server: Server, identity: Identity, **extra: str) -> dict[str, str]:
    assert identity.ca_file is not None
    return server.env(
        SMTP_PROVIDER="microsoft365",
        SMTP_USERNAME=MAILBOX,
        SMTP_PASSWORD="",
        SMTP_OAUTH2_TENANT=TENANT,
        SMTP_OAUTH2_CLIENT_ID=CLIENT_ID,
        SMTP_OAUTH2_AUTHORITY=identity.base,
        REQUESTS_CA_BUNDLE=str(identity.ca_file),  # msal's HTTP client (requests) verifies the stand-in's TLS
        MAILER_RATE="0",  # the preset's 30 a minute would make this test take minutes
        **extra,
    )


def test_microsoft_client_credentials_deliver(microsoft: tuple[Server, Issuer, Identity], tmp_path: Path) -> None:
    server, issuer, identity = microsoft
    make_list(tmp_path, 40)
    result = run_send(tmp_path, microsoft_env(server, identity, SMTP_OAUTH2_CLIENT_SECRET=CLIENT_SECRET))
    assert result.returncode == 0, result.stderr
    assert len(server.recorder.count()) == 40
    assert identity.grants == ["client_credentials"], "one token for the whole run"
    assert_secrets_kept(tmp_path, issuer, result.stdout, result.stderr, more=(CLIENT_SECRET,))
    assert not (tmp_path / "state" / "microsoft-token.json").exists()


def test_microsoft_wrong_client_secret_exits_2_with_microsofts_words(
    microsoft: tuple[Server, Issuer, Identity], tmp_path: Path
) -> None:
    server, _issuer, identity = microsoft
    make_list(tmp_path, 5)
    result = run_send(tmp_path, microsoft_env(server, identity, SMTP_OAUTH2_CLIENT_SECRET="wrong-secret-canary"))
    assert result.returncode == 2, result.stderr
    assert "invalid_client: AADSTS7000215: Invalid client secret provided." in result.stderr
    assert "wrong-secret-canary" not in result.stderr + result.stdout
    assert server.recorder.received == []


def test_microsoft_device_code_login_then_unattended_sends(
    microsoft: tuple[Server, Issuer, Identity], tmp_path: Path
) -> None:
    """login shows the code, keeps the sign-in 0600 in the state folder; a later send refreshes the
    (already expired) access token with the stored refresh token and delivers."""
    server, issuer, identity = microsoft
    identity.access_lifetime = 1  # so the send must use the refresh token
    env = {**os.environ, **microsoft_env(server, identity)}
    login = subprocess.run(
        [sys.executable, "-m", "mailer", "login", "microsoft", "--state", str(tmp_path / "state")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert login.returncode == 0, login.stderr
    assert f"enter the code {USER_CODE}" in login.stdout and f"Signed in as {MAILBOX}" in login.stdout
    cache = tmp_path / "state" / "microsoft-token.json"
    assert stat.S_IMODE(cache.stat().st_mode) == 0o600
    assert DEVICE_CODE not in login.stdout + login.stderr
    make_list(tmp_path, 10)
    result = run_send(tmp_path, microsoft_env(server, identity))
    assert result.returncode == 0, result.stderr
    assert len(server.recorder.count()) == 10
    assert identity.grants == ["urn:ietf:params:oauth:grant-type:device_code", "refresh_token"]
    outputs = (login.stdout, login.stderr, result.stdout, result.stderr)
    for text in outputs:
        assert issuer.current not in text and "refresh-" not in text


def test_send_without_a_microsoft_sign_in_says_to_log_in(
    microsoft: tuple[Server, Issuer, Identity], tmp_path: Path
) -> None:
    server, _issuer, identity = microsoft
    make_list(tmp_path, 3)
    result = run_send(tmp_path, microsoft_env(server, identity))
    assert result.returncode == 2
    assert "no Microsoft sign-in for SMTP_USERNAME='seminars@example.org'" in result.stderr
    assert "run seminar-mailer login microsoft once" in result.stderr
