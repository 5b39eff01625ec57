"""check --smtp (mailer/deliver/doctor.py) against real servers on 127.0.0.1: each step with the server's words,
the likely fix for the step that fails, nothing sent, no secret shown."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SCHEDULE
from tests.deliver.test_send import make_list
from tests.smtp_server import (
    MAILBOX,
    PASSWORD,
    Issuer,
    OAuthRecorder,
    Server,
    free_port,
    oauth_env,
    start_oauth_server,
    start_server,
)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # aiosmtpd's own Session.login_data


def check_smtp(tmp_path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    recipients = make_list(tmp_path, 3)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailer",
            "check",
            "--smtp",
            "--schedule",
            str(SCHEDULE),
            "--recipients",
            str(recipients),
        ],
        cwd=tmp_path,
        env={**os.environ, "MAILER_STATE": str(tmp_path / "state"), **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


@pytest.fixture
def oauth(tmp_path: Path) -> Iterator[tuple[Server, Issuer, OAuthRecorder]]:
    server, issuer = start_oauth_server(tmp_path)
    assert isinstance(server.recorder, OAuthRecorder)
    yield server, issuer, server.recorder
    server.controller.stop()


def test_every_step_passes_and_nothing_is_sent(oauth: tuple[Server, Issuer, OAuthRecorder], tmp_path: Path) -> None:
    server, issuer, recorder = oauth
    result = check_smtp(tmp_path, oauth_env(server, issuer))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    steps = [line.split()[1] for line in lines if line.startswith("  ok")]
    assert steps == ["connect", "EHLO", "STARTTLS", "token", "AUTH", "MAIL"]
    assert "STARTTLS  TLSv1.3, certificate verified for 127.0.0.1; now offers" in result.stdout
    assert "token     from SMTP_OAUTH2_TOKEN_COMMAND" in result.stdout
    assert f"AUTH      XOAUTH2 as {MAILBOX}: 235 2.7.0 Authentication successful" in result.stdout
    assert "MAIL FROM <learning-machines@ri.se>: 250 OK (then RSET)" in result.stdout
    assert lines[-1].startswith("SMTP: OK")
    assert recorder.received == [] and issuer.current not in result.stdout + result.stderr


def test_smtp_auth_disabled_at_microsoft_gets_the_admin_command(
    oauth: tuple[Server, Issuer, OAuthRecorder], tmp_path: Path
) -> None:
    server, issuer, recorder = oauth
    recorder.auth_refusal = (
        "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. "
        "Visit https://aka.ms/smtp_auth_disabled for more information."
    )
    result = check_smtp(tmp_path, oauth_env(server, issuer))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "FAIL  AUTH" in result.stdout and "535 5.7.139 Authentication unsuccessful" in result.stdout
    assert "fix: Microsoft 365 has SMTP AUTH disabled" in result.stdout
    assert f"Set-CASMailbox -Identity {MAILBOX} -SmtpClientAuthenticationDisabled $false" in result.stdout
    assert "MAIL FROM" not in result.stdout and issuer.current not in result.stdout + result.stderr


def test_a_refused_sender_names_the_address_and_the_way_out(
    oauth: tuple[Server, Issuer, OAuthRecorder], tmp_path: Path
) -> None:
    server, issuer, recorder = oauth
    recorder.mail_reply = "550 5.7.60 SMTP; Client does not have permissions to send as this sender"
    result = check_smtp(tmp_path, oauth_env(server, issuer))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "FAIL  MAIL FROM <learning-machines@ri.se>: 550 5.7.60 SMTP; Client does not have permissions" in (
        result.stdout
    )
    assert f"fix: the mailbox {MAILBOX} may not send as learning-machines@ri.se" in result.stdout


def test_password_login_is_checked_and_the_password_never_shown(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        result = check_smtp(tmp_path, server.env())
        assert result.returncode == 0, result.stdout + result.stderr
        assert "AUTH      as mailer: 235 2.7.0 Authentication successful" in result.stdout
        wrong = check_smtp(tmp_path, server.env(SMTP_PASSWORD="wrong-password-canary"))
        assert wrong.returncode == 2 and "FAIL  AUTH" in wrong.stdout and "535 5.7.8" in wrong.stdout
        assert "fix: the login was refused" in wrong.stdout
        for text in (result.stdout, result.stderr, wrong.stdout, wrong.stderr):
            assert PASSWORD not in text and "wrong-password-canary" not in text
        assert server.recorder.received == []
    finally:
        server.controller.stop()


def test_nothing_listening_exits_75_with_the_port_to_check(tmp_path: Path) -> None:
    port = free_port()
    env = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "SMTP_USERNAME": "", "SMTP_PASSWORD": ""}
    result = check_smtp(tmp_path, env)
    assert result.returncode == 75, result.stdout + result.stderr
    assert "FAIL  connect" in result.stdout
    assert f"fix: nothing listens at 127.0.0.1:{port} on this machine: start the server there" in result.stdout
    assert "firewall" not in result.stdout  # on loopback nothing is in the way: the port is closed


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_no_starttls_says_to_use_implicit_tls(tmp_path: Path) -> None:
    server = start_server(tmp_path, starttls=False)
    try:
        result = check_smtp(tmp_path, server.env())
        assert result.returncode == 75, result.stdout + result.stderr
        assert "FAIL  STARTTLS" in result.stdout and "does not offer STARTTLS" in result.stdout
        assert "fix: use SMTP_SECURITY=tls with SMTP_PORT=465" in result.stdout
        assert server.recorder.auth_attempts == 0
    finally:
        server.controller.stop()
