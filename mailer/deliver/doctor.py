"""``check --smtp`` and ``check --imap``: connect with the real settings, log in, change nothing; explain failures.

SMTP: each step (connect, EHLO, STARTTLS, token, AUTH, MAIL FROM then RSET) is reported with the
server's own words; the step that fails also gets the likely fix, from the replies providers are
known to give (Microsoft 365's 5.7.139 when SMTP AUTH is disabled, Google's 5.7.8 for a refused
login, ...). IMAP (the bounce mailbox): connect, TLS or STARTTLS, LOGIN, SELECT the folder, as
``bounces`` does, each step in the server's words; the failing one with the setting to change.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass

import aiosmtplib

from mailer.core.errors import EXIT_INVALID, EXIT_OK, EXIT_TEMPFAIL, MailerError
from mailer.deliver.bounce_config import ImapSettings
from mailer.deliver.config import SmtpSettings, is_loopback
from mailer.deliver.smtp import connect


@dataclass(frozen=True, slots=True)
class Step:
    name: str
    ok: bool
    detail: str  # what happened, in the server's words where it spoke
    fix: str = ""


@dataclass(frozen=True, slots=True)
class Checkup:
    """What ``check_smtp`` found; ``lines()`` is what ``check --smtp`` prints."""

    target: str
    steps: tuple[Step, ...]
    exit_code: int
    protocol: str = "SMTP"  # or IMAP

    def lines(self) -> list[str]:
        unchanged, verdict = _WORDS[self.protocol]
        out = [f"{self.protocol} {self.target}: connecting with your settings; {unchanged}"]
        for step in self.steps:
            out.append(f"  {'ok  ' if step.ok else 'FAIL'}  {step.name:<9} {step.detail}")
            if step.fix:
                out.append(f"        fix: {step.fix}")
        if self.exit_code == EXIT_OK:
            out.append(f"{self.protocol}: OK, {verdict}")
        return out


_WORDS = {
    "SMTP": ("nothing will be sent", "a send would connect, log in and be allowed to use this sender"),
    "IMAP": ("nothing will be moved", "bounces would log in and read this folder"),
}


def _expected(settings: SmtpSettings) -> list[str]:
    steps = ["connect", "EHLO"]
    if settings.security != "none":
        steps.append("STARTTLS" if settings.security == "starttls" else "TLS")
    if settings.oauth is not None:
        steps.append("token")
    if settings.oauth is not None or settings.password is not None:
        steps.append("AUTH")
    return [*steps, "MAIL FROM"]


_MS_SMTP_AUTH = "https://aka.ms/smtp_auth_disabled"
# (step or "", pattern in the server's words or our message, the likely fix); the first match wins.
_FIXES: tuple[tuple[str, str, str], ...] = (
    (
        "",
        r"5\.7\.139",
        "Microsoft 365 has SMTP AUTH disabled for this mailbox or the whole tenant; an Exchange admin must "
        "enable it for the mailbox: Set-CASMailbox -Identity {user} -SmtpClientAuthenticationDisabled $false "
        f"(see {_MS_SMTP_AUTH}; the tenant-wide switch is Set-TransportConfig -SmtpClientAuthenticationDisabled)",
    ),
    (
        "AUTH",
        r"5\.7\.3\b",
        "Microsoft 365 refused the login. With an app (client credentials) the app needs the Office 365 "
        "Exchange Online permission SMTP.SendAsApp with admin consent, a service principal in Exchange "
        "(New-ServicePrincipal) and rights on the mailbox (Add-MailboxPermission -Identity {user} -User "
        "<service principal id> -AccessRights FullAccess); SMTP_USERNAME must be that mailbox",
    ),
    (
        "AUTH",
        r"5\.7\.9\b|[Aa]pplication-specific password",
        "Google wants an app password (myaccount.google.com/apppasswords) or OAuth2 (SMTP_PROVIDER=google)",
    ),
    (
        "AUTH",
        r"5\.7\.14\b",
        "Google wants you to sign in once in a browser as {user}, then try again; better, use OAuth2",
    ),
    (
        "AUTH",
        r"5\.7\.8\b|BadCredentials|not accepted",
        "the login was refused: with OAuth2 the token must be issued for {user} with the SMTP scope "
        "(Google: https://mail.google.com/, Microsoft: SMTP.Send); with a password check SMTP_USERNAME and "
        "SMTP_PASSWORD (Google needs an app password)",
    ),
    ("AUTH", r"neither XOAUTH2 nor OAUTHBEARER", "this server takes passwords only: SMTP_AUTH=password"),
    (
        "AUTH",
        r"\b535\b",
        "the login was refused: check SMTP_USERNAME and the password or token (whose mailbox, which scope)",
    ),
    (
        "MAIL FROM",
        r"5\.7\.60|SendAsDenied|send as",
        "the mailbox {user} may not send as {sender}: give it Send As rights on that address, or make the "
        "series' sender (or MAILER_ENVELOPE_FROM) the mailbox itself",
    ),
    (
        "MAIL FROM",
        r"\b530\b|5\.7\.57|not authenticated",
        "the server wants a login first: SMTP_USERNAME with SMTP_PASSWORD, or SMTP_AUTH=xoauth2",
    ),
    (
        "MAIL FROM",
        r"^5",
        "the server refuses this sender: set MAILER_ENVELOPE_FROM to an address this account may send from",
    ),
    ("", r"4\.3\.2|[Cc]oncurrent connection", "too many connections at once: lower MAILER_CONCURRENCY (Microsoft: 3)"),
    ("", r"STARTTLS", "use SMTP_SECURITY=tls with SMTP_PORT=465, or ask for STARTTLS on this port"),
    (
        "",
        r"[Cc]ertificate|CERTIFICATE",
        "the certificate is not valid for SMTP_HOST: for your institution's own CA set SMTP_CA_FILE to its PEM "
        "file; otherwise make SMTP_HOST the name the certificate carries",
    ),
    (
        "connect",
        r"[Nn]ame or service not known|nodename|getaddrinfo|Temporary failure in name resolution",
        "SMTP_HOST does not resolve: check its spelling",
    ),
    (
        "connect",
        r"",
        "nothing answers at {host}:{port}: check SMTP_HOST and SMTP_PORT; a firewall may block outgoing port "
        "{port} (try 587, or 465 with SMTP_SECURITY=tls)",
    ),
)


def likely_fix(step: str, text: str, settings: SmtpSettings, sender: str) -> str:
    """The known remedy for ``text`` (a server reply or our message) at ``step``, or nothing."""
    if (
        step == "connect"
        and is_loopback(settings.host)
        and re.search(r"[Rr]efused|Errno 111|Connect call failed", text)
    ):
        # On this machine no firewall is in the way: the port is simply closed.
        return (
            f"nothing listens at {settings.host}:{settings.port} on this machine: start the server there, "
            "or set SMTP_PORT to the port it listens on"
        )
    for where, pattern, fix in _FIXES:
        if where in ("", step) and re.search(pattern, text):
            return fix.format(
                user=settings.username or "<mailbox>", sender=sender, host=settings.host, port=settings.port
            )
    return ""


async def check_smtp(settings: SmtpSettings, sender: str) -> Checkup:
    """Connect, EHLO, STARTTLS, AUTH, ``MAIL FROM:<sender>`` then RSET; stop at the first failure."""
    steps: list[Step] = []
    expected = _expected(settings)
    target = f"{settings.host}:{settings.port} ({settings.security})"

    def failed(text: str, exit_code: int) -> Checkup:
        name = next((n for n in expected if n not in {s.name for s in steps}), expected[-1])
        steps.append(Step(name, False, text, likely_fix(name, text, settings, sender)))
        return Checkup(target, tuple(steps), exit_code)

    try:
        connection = await connect(settings, report=lambda name, detail: steps.append(Step(name, True, detail)))
    except MailerError as err:
        return failed(str(err), EXIT_INVALID if err.exit_code == EXIT_INVALID else EXIT_TEMPFAIL)
    except aiosmtplib.SMTPResponseException as err:
        return failed(f"{err.code} {err.message}", EXIT_TEMPFAIL if err.code < 500 else EXIT_INVALID)
    except (aiosmtplib.SMTPException, ssl.SSLError, OSError, TimeoutError) as err:
        return failed(str(err) or type(err).__name__, EXIT_TEMPFAIL)
    try:
        reply = await connection.try_sender(sender.encode())
    except aiosmtplib.SMTPException as err:
        return failed(f"connection lost: {err}", EXIT_TEMPFAIL)
    finally:
        await connection.quit()
    text = f"<{sender}>: {reply.code} {reply.message}"
    if reply.code != 250:
        return failed(text, EXIT_TEMPFAIL if reply.code < 500 else EXIT_INVALID)
    steps.append(Step("MAIL FROM", True, f"{text} (then RSET)"))
    return Checkup(target, tuple(steps), EXIT_OK)


def check_imap(settings: ImapSettings) -> Checkup:
    """Connect, TLS or STARTTLS, LOGIN and SELECT the bounce folder as ``bounces`` does; move nothing."""
    from mailer.deliver.imap import imap_connect

    steps: list[Step] = []
    target = f"{settings.host}:{settings.port} ({settings.security})"
    expected = ["connect", "TLS" if settings.security == "tls" else "STARTTLS", "LOGIN", "SELECT"]
    try:
        box = imap_connect(settings, report=lambda name, detail: steps.append(Step(name, True, detail)))
    except MailerError as err:
        name = next((n for n in expected if n not in {s.name for s in steps}), expected[-1])
        steps.append(Step(name, False, str(err)))
        return Checkup(target, tuple(steps), err.exit_code, "IMAP")
    try:
        there = box.folder.exists(settings.done)
        steps.append(Step("folder", True, f"{settings.done} {'exists' if there else 'will be created by bounces'}"))
    finally:
        box.logout()
    return Checkup(target, tuple(steps), EXIT_OK, "IMAP")
