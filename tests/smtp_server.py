"""A real SMTP server for the tests: aiosmtpd on 127.0.0.1, STARTTLS and AUTH, with failure hooks.

Nothing here patches a client: seminar-mailer runs as a separate process and talks SMTP to this.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import socket
import ssl
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING, AuthResult, LoginPassword, auth_mechanism

USER = "mailer"
PASSWORD = "canary-7f3a9c-NEVER-PRINT"  # searched for in every output and file after each test


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Received:
    rcpt: str
    message_id: str
    data: bytes


@dataclass
class Recorder:
    """Records what arrives; ``rcpt_replies``/``data_actions`` inject failures per recipient, in order."""

    received: list[Received] = field(default_factory=list)
    rcpt_replies: dict[str, list[str]] = field(default_factory=dict)  # address -> replies for its first tries
    data_actions: dict[str, list[str]] = field(default_factory=dict)  # address -> drop, stall, slow or hold
    stall_seconds: float = 3.0
    message_reply: str | None = None  # refuse every message at the end of DATA with this (a content filter)
    max_line: int | None = None  # refuse a message with a longer line, as RFC 5322 servers may ("500 Line too long")
    delay: float = 0.0  # per message, to slow the server down
    auth_attempts: int = 0
    connections: int = 0
    pipelining: bool = True  # advertise PIPELINING, as Postfix, Exim and Gmail do; aiosmtpd reads it fine
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if envelope.mail_from:  # as strict as Postfix: a client must RSET after a failed transaction
            return "503 5.5.1 Error: nested MAIL command"
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        with self.lock:
            replies = self.rcpt_replies.get(address)
            reply = replies.pop(0) if replies else None
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        (rcpt,) = envelope.rcpt_tos
        with self.lock:
            actions = self.data_actions.get(rcpt)
            action = actions.pop(0) if actions else None
        if action == "drop":  # the client has sent the whole message and waits for the reply: none comes
            server.transport.close()
            return "421 closing"
        if action == "stall":  # past the client's timeout; then refuse, as a server that gave up would
            await asyncio.sleep(self.stall_seconds)
            return "451 4.3.0 gave up"
        if action == "slow":  # a slow content filter: past the command timeout, then accepted and stored
            await asyncio.sleep(self.stall_seconds)
        if self.message_reply is not None:
            return self.message_reply
        if action is not None and action[:1] == "5":  # refuse this recipient's copy at the end of DATA
            return action
        if self.max_line is not None and any(len(line) > self.max_line for line in envelope.content.split(b"\r\n")):
            return "500 5.5.0 Line too long"
        if self.delay:
            await asyncio.sleep(self.delay)
        headers = BytesHeaderParser().parsebytes(envelope.content)
        with self.lock:
            self.received.append(Received(rcpt, str(headers["Message-ID"]), envelope.content))
        if action == "hold":  # stored, but the reply is late: a client killed meanwhile never reads it
            await asyncio.sleep(self.stall_seconds)
        return "250 2.0.0 OK queued"

    def count(self) -> Counter[str]:
        with self.lock:
            return Counter(r.rcpt for r in self.received)


class _Authenticator:
    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        self.recorder.auth_attempts += 1
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == USER.encode()
            and auth_data.password == PASSWORD.encode()
        )
        return AuthResult(success=ok, handled=False)


@dataclass
class Server:
    host: str
    port: int
    recorder: Recorder
    ca_file: Path
    controller: Controller

    def env(self, **extra: str) -> dict[str, str]:
        """The environment seminar-mailer needs to send here."""
        return {
            "SMTP_HOST": self.host,
            "SMTP_PORT": str(self.port),
            "SMTP_CA_FILE": str(self.ca_file),
            "SMTP_USERNAME": USER,
            "SMTP_PASSWORD": PASSWORD,
            "SMTP_SECURITY": "starttls",
            "MAILER_BACKOFF": "0.05",
            "MAILER_TIMEOUT": "2",
            "MAILER_CONCURRENCY": "4",
            **extra,
        }


def start_server(
    tmp: Path, *, starttls: bool = True, recorder: Recorder | None = None, auth: bool = True, **options: Any
) -> Server:
    """Start aiosmtpd on 127.0.0.1 with a certificate from a CA made here; STARTTLS and AUTH required."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    recorder = recorder or Recorder()
    tls: dict[str, Any] = (
        {"tls_context": context, "require_starttls": True, "auth_require_tls": True}
        if starttls
        else {"auth_require_tls": False}
    )
    controller = Controller(
        recorder,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=_Authenticator(recorder),
        auth_required=auth,
        ready_timeout=10,
        # aiosmtpd takes every handler attribute named auth_* for a mechanism: not our counter
        auth_exclude_mechanism=["attempts", *options.pop("auth_exclude_mechanism", [])],
        **tls,
        **options,
    )
    controller.start()
    return Server("127.0.0.1", controller.port, recorder, ca_file, controller)


# --- OAuth2 (XOAUTH2 and OAUTHBEARER) --------------------------------------------------------------

MAILBOX = "seminars@example.org"  # the mailbox the OAuth2 tests log in as


@dataclass
class Issuer:
    """Plays the identity provider: one valid token at a time, written where the token command reads it.

    After ``expire_after`` accepted messages the token expires and a new one is issued, as a one-hour
    token would during a long run.
    """

    folder: Path
    expire_after: int = 0  # messages per token; 0: never expires
    generation: int = 0
    current: str = ""
    accepted: int = 0  # messages accepted under the current token
    issued: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.rotate()

    def rotate(self) -> None:
        self.generation += 1
        self.current = f"ya29.canary-{self.generation}-{secrets.token_urlsafe(24)}"  # looks like a Google token
        self.issued.append(self.current)
        self.accepted = 0
        temporary = self.folder / "current.tmp"
        temporary.write_text(self.current)
        temporary.replace(self.folder / "current")

    def count_message(self) -> None:
        self.accepted += 1
        if self.expire_after and self.accepted >= self.expire_after:
            self.rotate()


@dataclass
class OAuthRecorder(Recorder):
    """A Recorder whose server logs in with XOAUTH2/OAUTHBEARER (aiosmtpd's ``auth_MECHANISM`` hooks),
    accepting only the issuer's current token for MAILBOX. A session whose token has expired gets
    ``on_expiry`` at its next MAIL: a reply such as "454 4.7.0 ...", or "drop" (connection closed)."""

    issuer: Issuer | None = None
    on_expiry: str = "454 4.7.0 Token expired, authenticate again"
    logins: list[tuple[str, str]] = field(default_factory=list)  # (mechanism, token generation or "refused")
    auth_refusal: str | None = None  # refuse every login with this reply (e.g. Microsoft's 535 5.7.139)
    mail_reply: str | None = None  # answer every MAIL with this (e.g. 550 5.7.60 SendAsDenied)

    def _check(self, mechanism: str, user: str, token: str) -> bool:
        assert self.issuer is not None
        with self.lock:
            ok = user == MAILBOX and token == self.issuer.current
            generation = str(self.issuer.issued.index(token) + 1) if token in self.issuer.issued else "?"
            self.logins.append((mechanism, generation if ok else f"refused {generation}"))
            self.auth_attempts += 1
        return ok

    async def _initial(self, server: Any, args: list[str]) -> bytes | None:
        if len(args) == 2:
            return base64.b64decode(args[1])
        blob = await server.challenge_auth("")
        return None if blob is MISSING else bytes(blob)

    @auth_mechanism("XOAUTH2")
    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:
        blob = await self._initial(server, args)
        fields = dict(f.split("=", 1) for f in (blob or b"").decode().split("\x01") if "=" in f)
        token = fields.get("auth", "").removeprefix("Bearer ")
        if self.auth_refusal:
            return AuthResult(success=False, handled=False, message=self.auth_refusal)
        if self._check("XOAUTH2", fields.get("user", ""), token):
            return AuthResult(success=True, auth_data=token)
        await server.challenge_auth(
            json.dumps({"status": "401", "schemes": "Bearer", "scope": "https://mail.google.com/"})
        )
        return AuthResult(success=False, handled=False)

    @auth_mechanism("OAUTHBEARER")
    async def auth_OAUTHBEARER(self, server: Any, args: list[str]) -> AuthResult:
        blob = (await self._initial(server, args) or b"").decode()
        gs2, _, rest = blob.partition("\x01")
        user = next((p[2:] for p in gs2.split(",") if p.startswith("a=")), "").replace("=2C", ",").replace("=3D", "=")
        fields = dict(f.split("=", 1) for f in rest.split("\x01") if "=" in f)
        token = fields.get("auth", "").removeprefix("Bearer ")
        if self._check("OAUTHBEARER", user, token):
            return AuthResult(success=True, auth_data=token)
        answer = await server.challenge_auth(json.dumps({"status": "invalid_token", "scope": "SMTP.Send"}))
        if answer != b"\x01":  # RFC 7628 3.2.3: the client must end the failed exchange with ^A
            await server.push("501 5.5.2 expected ^A after the error challenge")
            return AuthResult(success=False, handled=True)
        return AuthResult(success=False, handled=False)

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        assert self.issuer is not None
        if self.mail_reply:
            return self.mail_reply
        if session.auth_data != self.issuer.current:
            if self.on_expiry == "drop":
                server.transport.close()
                return "421 4.7.0 closing"
            return self.on_expiry
        return await super().handle_MAIL(server, session, envelope, address, options)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        reply = await super().handle_DATA(server, session, envelope)
        if reply.startswith("250"):
            assert self.issuer is not None
            with self.lock:
                self.issuer.count_message()
        return reply


TOKEN_COMMAND = """\
import os, sys, time
from pathlib import Path
folder = Path(sys.argv[1])
if os.environ.get("VAULT_SECRET") != "vault-canary-5d1e-NEVER-IN-ARGV":
    sys.exit("token helper: VAULT_SECRET missing from my environment")
with open(folder / "calls", "a") as log:
    log.write("call\\n")
time.sleep(float(os.environ.get("TOKEN_HELPER_DELAY", "0")))  # long enough for the test to look at ps
print((folder / os.environ.get("TOKEN_HELPER_FILE", "current")).read_text())
"""
VAULT_SECRET = "vault-canary-5d1e-NEVER-IN-ARGV"  # reaches the helper through its environment only


def start_oauth_server(
    tmp: Path, *, expire_after: int = 0, mechanisms: tuple[str, ...] = ("XOAUTH2", "OAUTHBEARER")
) -> tuple[Server, Issuer]:
    """An OAuth2 server and its issuer; ``tmp/issuer/token-command.py`` prints the current token."""
    issuer = Issuer(tmp / "issuer", expire_after=expire_after)
    (issuer.folder / "token-command.py").write_text(TOKEN_COMMAND)
    excluded = [m for m in ("XOAUTH2", "OAUTHBEARER") if m not in mechanisms]
    server = start_server(tmp, recorder=OAuthRecorder(issuer=issuer), auth_exclude_mechanism=excluded)
    return server, issuer


def oauth_env(server: Server, issuer: Issuer, **extra: str) -> dict[str, str]:
    """Settings for the OAuth2 server: the token from the helper command, the secret in its environment."""
    command = f"{sys.executable} {issuer.folder / 'token-command.py'} {issuer.folder}"
    settings = {
        "SMTP_USERNAME": MAILBOX,
        "SMTP_PASSWORD": "",
        "SMTP_AUTH": "xoauth2",
        "SMTP_OAUTH2_TOKEN_COMMAND": command,
        "VAULT_SECRET": VAULT_SECRET,
    }
    return server.env(**{**settings, **extra})
