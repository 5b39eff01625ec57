"""A real SMTP server for the tests: aiosmtpd on 127.0.0.1, STARTTLS and AUTH, with failure hooks.

Nothing here patches a client: seminar-mailer runs as a separate process and talks SMTP to this.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import threading
from collections import Counter
from dataclasses import dataclass, field
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

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
    data_actions: dict[str, list[str]] = field(default_factory=dict)  # address -> "drop" | "stall"
    stall_seconds: float = 3.0
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
        if self.delay:
            await asyncio.sleep(self.delay)
        headers = BytesHeaderParser().parsebytes(envelope.content)
        with self.lock:
            self.received.append(Received(rcpt, str(headers["Message-ID"]), envelope.content))
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


def start_server(tmp: Path, *, starttls: bool = True) -> Server:
    """Start aiosmtpd on 127.0.0.1 with a certificate from a CA made here; STARTTLS and AUTH required."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file = tmp / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(context)
    recorder = Recorder()
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
        auth_required=True,
        ready_timeout=10,
        **tls,
    )
    controller.start()
    return Server("127.0.0.1", controller.port, recorder, ca_file, controller)
