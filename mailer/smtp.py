"""One SMTP connection: set up by aiosmtplib, then transactions pipelined (RFC 2920) when offered.

aiosmtplib opens the connection, says EHLO, negotiates STARTTLS (verified) and logs in: the part
where security lives stays in the well-tested library. Then the connection carries one transaction
per recipient, and that part is ours, for speed:

- The message bytes arrive already dot-stuffed (MessageTemplate.wire): ``sendmail`` would re-parse
  both addresses with the email package and run two regexes over the whole 26 KB message for every
  recipient, 0.3 ms of CPU a message.
- When the server offers PIPELINING (Postfix, Exim, Gmail and Exchange all do), MAIL, RCPT and
  DATA go out in one write and their three replies come back in one read: two round trips a
  message instead of four, and fewer wake-ups on both sides. aiosmtplib reads one reply per command
  it writes (it drops replies that arrive early), so after set-up the transport is handed to a
  small protocol here that queues replies in order (``asyncio.Transport.set_protocol``).

Errors are aiosmtplib's exception types, so callers classify one family of errors.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque

import aiosmtplib
from aiosmtplib import SMTPResponse

from mailer.config import SmtpSettings, is_loopback
from mailer.errors import ConfigError, DeliveryError

MAX_LINE = 8192  # as aiosmtplib: bounds memory if a server streams without line ends
MAX_REPLY = MAX_LINE * 4
_NOT_SENT = SMTPResponse(-1, "not sent: an earlier command of the transaction failed")


class _Replies(asyncio.Protocol):
    """Parses the server's replies into a queue, however many arrive in one read."""

    def __init__(self) -> None:
        self.partial = b""  # an incomplete last line
        self.lines: list[bytes] = []  # the reply being read, for multi-line replies
        self.size = 0  # bytes of the reply being read
        self.ready: deque[SMTPResponse] = deque()
        self.error: Exception | None = None
        self.waiter: asyncio.Future[None] | None = None

    def data_received(self, data: bytes) -> None:
        *complete, self.partial = (self.partial + data).split(b"\n")
        for line in complete:
            self.size += len(line)
            if len(line) > MAX_LINE or not line[:3].isdigit() or line[3:4] not in (b" ", b"-", b"\r", b""):
                self._fail(aiosmtplib.SMTPResponseException(-1, f"malformed reply {line[:80]!r}"))
                return
            self.lines.append(line[4:].strip(b" \t\r"))
            if line[3:4] != b"-":
                text = b"\n".join(self.lines).decode("utf-8", "surrogateescape")
                self.ready.append(SMTPResponse(int(line[:3]), text))
                self.lines, self.size = [], 0
        if self.size + len(self.partial) > MAX_REPLY:
            self._fail(aiosmtplib.SMTPResponseException(-1, "reply too long"))
            return
        self._wake()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(aiosmtplib.SMTPServerDisconnected(f"connection lost{f': {exc}' if exc else ''}"))

    def eof_received(self) -> bool:
        self._fail(aiosmtplib.SMTPServerDisconnected("the server closed the connection"))
        return False  # close the transport

    def _fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)


class Connection:
    """An open, set-up SMTP connection that sends one message to one recipient at a time."""

    def __init__(
        self, transport: asyncio.Transport, extensions: dict[str, str], timeout: float, *, pipelining: bool = True
    ) -> None:
        self.transport = transport
        self.extensions = frozenset(extensions)
        self.pipelining = pipelining and "pipelining" in extensions
        self.timeout = timeout
        self.usable = True  # False once a reply was lost or malformed: the caller must reconnect
        self.replies = _Replies()
        transport.set_protocol(self.replies)

    def supports(self, extension: str) -> bool:
        return extension.lower() in self.extensions

    async def _reply(self) -> SMTPResponse:
        replies = self.replies
        while not replies.ready:
            if replies.error is not None:
                self.usable = False
                raise replies.error
            replies.waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(self.timeout):
                    await replies.waiter
            except TimeoutError:
                self.usable = False
                raise aiosmtplib.SMTPReadTimeoutError("timed out waiting for the server's reply") from None
            finally:
                replies.waiter = None
        return replies.ready.popleft()

    def _write(self, data: bytes) -> None:
        if self.transport.is_closing() or self.replies.error is not None:
            self.usable = False
            raise aiosmtplib.SMTPServerDisconnected("connection lost")
        self.transport.write(data)

    async def _reset(self) -> None:
        """End a failed transaction (else the next MAIL gets "503 nested MAIL"); on failure, retire."""
        try:
            self._write(b"RSET\r\n")
            if (await self._reply()).code != 250:
                self.usable = False
        except aiosmtplib.SMTPException:
            self.usable = False

    async def send(self, sender: bytes, recipient: bytes, wire: bytes, options: bytes = b"") -> str:
        """One MAIL/RCPT/DATA transaction; ``wire`` is dot-stuffed and ends with CRLF.CRLF.

        Returns the server's final reply; raises aiosmtplib's SMTPSenderRefused,
        SMTPRecipientsRefused or SMTPDataError for a refusal (the connection stays usable), and
        SMTPServerDisconnected or SMTPTimeoutError when the connection is gone.
        """
        mail = b"MAIL FROM:<" + sender + b">" + options + b"\r\n"
        rcpt = b"RCPT TO:<" + recipient + b">\r\n"
        if self.pipelining:
            self._write(mail + rcpt + b"DATA\r\n")
            mail_reply, rcpt_reply, data_reply = await self._reply(), await self._reply(), await self._reply()
        else:
            rcpt_reply = data_reply = _NOT_SENT
            self._write(mail)
            mail_reply = await self._reply()
            if mail_reply.code == 250:
                self._write(rcpt)
                rcpt_reply = await self._reply()
                if rcpt_reply.code in (250, 251):
                    self._write(b"DATA\r\n")
                    data_reply = await self._reply()
        if mail_reply.code != 250 or rcpt_reply.code not in (250, 251) or data_reply.code != 354:
            if self.pipelining and data_reply.code == 354:
                # A server may accept DATA although MAIL or RCPT failed (RFC 2920 3.1): an empty
                # message ends it, and is refused for want of a recipient.
                self._write(b".\r\n")
                await self._reply()
            await self._reset()
            if mail_reply.code != 250:
                raise aiosmtplib.SMTPSenderRefused(mail_reply.code, mail_reply.message, sender.decode())
            if rcpt_reply.code not in (250, 251):
                refused = aiosmtplib.SMTPRecipientRefused(rcpt_reply.code, rcpt_reply.message, recipient.decode())
                raise aiosmtplib.SMTPRecipientsRefused([refused])
            raise aiosmtplib.SMTPDataError(data_reply.code, data_reply.message)
        self._write(wire)
        final = await self._reply()
        if final.code != 250:
            raise aiosmtplib.SMTPDataError(final.code, final.message)
        return f"{final.code} {final.message}"

    async def quit(self) -> None:
        """Say goodbye politely if the connection still works; close it in any case."""
        try:
            if self.usable:
                self._write(b"QUIT\r\n")
                await self._reply()
        except aiosmtplib.SMTPException:
            pass
        finally:
            self.close()

    def close(self) -> None:
        self.usable = False
        self.transport.close()


async def connect(settings: SmtpSettings) -> Connection:
    """Open one connection: TLS as configured (never silently plaintext), then AUTH if configured."""
    context = settings.tls_context if settings.security != "none" else None
    client = aiosmtplib.SMTP(
        hostname=settings.host,
        port=settings.port,
        timeout=settings.timeout,
        use_tls=settings.security == "tls",
        start_tls=False,
        tls_context=context,
    )
    try:
        await client.connect()
        await client.ehlo()
        if settings.security == "starttls":
            if not client.supports_extension("starttls"):
                client.close()
                local = (
                    " For a test server on this machine without TLS: SMTP_SECURITY=none."
                    if is_loopback(settings.host)
                    else ""
                )
                raise DeliveryError(
                    f"{settings.host}:{settings.port} does not offer STARTTLS, so nothing was sent and no "
                    f"credentials were given to it. Fix the server, or SMTP_SECURITY=tls for port 465.{local}"
                )
            await client.starttls(tls_context=context)  # says EHLO again over TLS
        if settings.username is not None and settings.password is not None:
            await client.login(settings.username, settings.password)
    except aiosmtplib.SMTPAuthenticationError as err:
        client.close()
        raise ConfigError(
            f"{settings.host} rejected the login of SMTP_USERNAME={settings.username!r}: "
            f"{err.code}; wanted valid SMTP_USERNAME and SMTP_PASSWORD"
        ) from None
    except (ssl.SSLCertVerificationError, aiosmtplib.SMTPConnectError) as err:
        client.close()
        if isinstance(err, ssl.SSLCertVerificationError) or isinstance(err.__cause__, ssl.SSLError):
            raise DeliveryError(
                f"TLS with {settings.host} failed: {err}; wanted a certificate valid for "
                "that name (SMTP_CA_FILE for a private CA)"
            ) from None
        raise
    except aiosmtplib.SMTPException:
        client.close()
        raise
    transport = client.transport
    if not isinstance(transport, asyncio.Transport) or transport.is_closing():
        client.close()
        raise aiosmtplib.SMTPServerDisconnected("connection lost during set-up")
    return Connection(transport, client.esmtp_extensions, settings.timeout, pipelining=settings.pipelining)
