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
- With PIPELINING the message itself and the next transaction's MAIL, RCPT and DATA go out in one
  write (RFC 2920 3.1: message content may be the first "command" of a group): one write and one
  read a message. The caller names that next transaction (``ahead``) just before the message goes.
- After the server said 354 the message waits for the caller's ``ready`` before its first byte goes:
  the sender's ledger commits its in-flight mark (and the replies that came before) in the same
  commit as the other connections' marks of that event-loop tick.

Errors are aiosmtplib's exception types, so callers classify one family of errors.

With SMTP_AUTH=xoauth2 the login is OAuth2 (XOAUTH2, or OAUTHBEARER, RFC 7628, when the server
offers only that) with a token from ``settings.oauth``. A server that turns a login down mid-run
(``login_refusal``: the token expired) makes the connection unusable and the token invalid, so the
caller reconnects with a fresh one.
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from collections import deque
from collections.abc import Callable

import aiosmtplib
from aiosmtplib import SMTPResponse

from mailer.core.address import Address
from mailer.core.errors import ConfigError, DeliveryError, MailerError
from mailer.deliver.config import SmtpSettings, is_loopback
from mailer.deliver.oauth import TokenSource

Report = Callable[[str, str], None]  # (step, what happened): connect, EHLO, STARTTLS, token, AUTH

MAX_LINE = 8192  # as aiosmtplib: bounds memory if a server streams without line ends
MAX_REPLY = MAX_LINE * 4
_MARKS = frozenset((b" ", b"-", b"\r", b""))  # what may follow a reply's code: its text, "more lines", its end
_NOT_SENT = SMTPResponse(-1, "not sent: an earlier command of the transaction failed")


class EndOfDataRefused(aiosmtplib.SMTPDataError):
    """The server refused at the end of the message (not at DATA): the message itself, or this
    recipient (a full mailbox, a per-recipient policy), as the caller decides."""


class Withheld(aiosmtplib.SMTPException):
    """The caller withheld the message after the server said 354 (``ready`` was False): the connection was
    closed with the message unfinished, so the server took nothing."""


Envelope = tuple[bytes, bytes, bytes]  # MAIL FROM's address, RCPT TO's address, MAIL FROM's options


class ReplyUncertain(aiosmtplib.SMTPException):
    """The whole message was transmitted but its final reply never came (timeout, hang-up).

    The server may have stored it: sending it again may duplicate it (RFC 5321 4.5.3.2 and 6.3).
    """


def _lapsed(code: int, message: str) -> bool:
    if code in (454, 530, 535):  # RFC 4954: temporary authentication failure, authentication required, failed
        return True
    return message.startswith("4.7.") and re.search(r"auth|token|credential|log ?in", message, re.I) is not None


def login_refusal(err: BaseException) -> str | None:
    """The server's reply when it no longer accepts this connection's login (an OAuth2 token expired), else None.

    Such a reply says nothing about the recipient, so it must not count as their refusal: log in afresh.
    """
    replies = err.recipients if isinstance(err, aiosmtplib.SMTPRecipientsRefused) else [err]
    for reply in replies:
        if isinstance(reply, aiosmtplib.SMTPResponseException) and _lapsed(reply.code, reply.message):
            return f"{reply.code} {reply.message}"
    return None


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
        *complete, self.partial = (self.partial + data if self.partial else data).split(b"\n")
        ready, lines = self.ready, self.lines
        for line in complete:
            mark = line[3:4]
            if len(line) > MAX_LINE or not line[:3].isdigit() or mark not in _MARKS:
                self._fail(aiosmtplib.SMTPResponseException(-1, f"malformed reply {line[:80]!r}"))
                return
            if mark != b"-" and not lines:  # a one-line reply, as nearly all are: nothing to gather
                ready.append(SMTPResponse(int(line[:3]), line[4:].strip(b" \t\r").decode("utf-8", "surrogateescape")))
                continue
            self.size += len(line)
            lines.append(line[4:].strip(b" \t\r"))
            if mark != b"-":
                text = b"\n".join(lines).decode("utf-8", "surrogateescape")
                ready.append(SMTPResponse(int(line[:3]), text))
                lines.clear()
                self.size = 0
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
        self,
        transport: asyncio.Transport,
        extensions: dict[str, str],
        timeout: float,
        *,
        data_timeout: float = 600.0,
        pipelining: bool = True,
        tokens: TokenSource | None = None,
        token: str | None = None,
    ) -> None:
        self.tokens = tokens  # where the login's OAuth2 token came from, to invalidate it if refused
        self.token = token
        self.transport = transport
        self.extensions = frozenset(extensions)
        self.pipelining = pipelining and "pipelining" in extensions
        self.timeout = timeout
        self.data_timeout = data_timeout  # RFC 5321 4.5.3.2.6: 10 minutes for the reply to the final dot
        self.usable = True  # False once a reply was lost or malformed: the caller must reconnect
        self.awaiting_final = False  # the message is out; its final reply has not come yet
        self.pending: bytes | None = None  # the message (and what follows it) waiting for ``ready``
        self.withheld = False  # ``ready`` said no: the message never went out
        self.opened: Envelope | None = None  # a transaction whose MAIL, RCPT and DATA went out with the last message
        self.replies = _Replies()
        self._deadline = 0.0  # (the loop's clock) when the wait on now, or the last one, times out
        self._alarm: asyncio.TimerHandle | None = None  # the timer of the connection's waits (see _arm)
        transport.set_protocol(self.replies)

    def supports(self, extension: str) -> bool:
        return extension.lower() in self.extensions

    async def _reply(self, timeout: float | None = None) -> SMTPResponse:
        replies = self.replies
        while not replies.ready:
            if replies.error is not None:
                self.usable = False
                raise replies.error
            loop = asyncio.get_running_loop()
            waiter = replies.waiter = loop.create_future()
            self._deadline = loop.time() + (timeout or self.timeout)
            if self._alarm is None or self._alarm.when() > self._deadline:
                self._arm(loop)
            try:
                await waiter
            except TimeoutError:
                self.usable = False
                raise aiosmtplib.SMTPReadTimeoutError("timed out waiting for the server's reply") from None
            finally:
                replies.waiter = None
        return replies.ready.popleft()

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        """One timer for the connection's waits, not one a wait (a reply is awaited at least once a message, and
        a timer made and cancelled each time was a twentieth of the send's CPU): it is set for the deadline of
        the wait it was made for, and when it goes off while a later wait is on, it is set again for that one's."""
        if self._alarm is not None:
            self._alarm.cancel()
        self._alarm = loop.call_at(self._deadline, self._ring)

    def _ring(self) -> None:
        self._alarm = None
        waiter = self.replies.waiter
        if waiter is None or waiter.done():
            return  # (no wait on: the next one sets the timer again)
        loop = asyncio.get_running_loop()
        if loop.time() >= self._deadline:
            waiter.set_exception(TimeoutError())
        else:
            self._arm(loop)

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

    async def send(
        self,
        sender: bytes,
        recipient: bytes,
        wire: bytes,
        options: bytes = b"",
        *,
        ready: Callable[[Callable[[bool], None]], None] | None = None,
        ahead: Callable[[], Envelope | None] | None = None,
    ) -> str:
        """One MAIL/RCPT/DATA transaction; ``wire`` is dot-stuffed and ends with CRLF.CRLF.

        Once the server said 354, ``ready`` is handed the function that sends the message, to call it when the
        message may go (with False: withheld, Withheld raised, the connection closed). With PIPELINING, ``ahead`` is
        asked just before the message
        goes out for the next transaction's envelope: its MAIL, RCPT and DATA go in the same write, and the
        next ``send`` of that very envelope reads their replies.

        Returns the server's final reply; raises aiosmtplib's SMTPSenderRefused,
        SMTPRecipientsRefused or SMTPDataError for a refusal (the connection stays usable), and
        SMTPServerDisconnected or SMTPTimeoutError when the connection is gone.
        """
        if self.pipelining:
            opened, self.opened = self.opened, None
            if opened is not None and opened != (sender, recipient, options):
                self.close()  # (the replies on the way are another transaction's: never read them as this one's)
                raise aiosmtplib.SMTPServerDisconnected("another transaction was opened on this connection")
            if opened is None:
                self._write(_commands(sender, recipient, options) + b"DATA\r\n")
            mail_reply, rcpt_reply, data_reply = await self._reply(), await self._reply(), await self._reply()
        else:
            mail = b"MAIL FROM:<" + sender + b">" + options + b"\r\n"
            rcpt = b"RCPT TO:<" + recipient + b">\r\n"
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
                raise self._refused(aiosmtplib.SMTPSenderRefused(mail_reply.code, mail_reply.message, sender.decode()))
            if rcpt_reply.code not in (250, 251):
                refused = aiosmtplib.SMTPRecipientRefused(rcpt_reply.code, rcpt_reply.message, recipient.decode())
                raise self._refused(aiosmtplib.SMTPRecipientsRefused([refused]))
            raise self._refused(aiosmtplib.SMTPDataError(data_reply.code, data_reply.message))
        following = ahead() if ahead is not None and self.pipelining else None  # (before ready: one commit holds both)
        if following is not None:
            wire += _commands(*following) + b"DATA\r\n"
        self.opened, self.pending, self.withheld = following, wire, False
        if ready is None:
            self._transmit(True)
        else:
            ready(self._transmit)
        try:
            final = await self._reply(self.data_timeout)
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError) as err:
            self._unsent(err)
            raise ReplyUncertain(f"no reply after the message was sent ({err})") from err
        except aiosmtplib.SMTPResponseException as err:  # a malformed or oversized reply: it may have been taken
            self._unsent(err)
            raise ReplyUncertain(f"no readable reply after the message was sent ({err.message})") from err
        self.awaiting_final = False  # (stays True if cancelled while waiting: the caller records that)
        if 200 <= final.code < 300:  # 250, or another positive completion: the server has taken it
            return f"{final.code} {final.message}"
        if final.code < 400 or final.code >= 600:
            self.usable = False
            raise ReplyUncertain(f"an unexpected reply after the message was sent: {final.code} {final.message}")
        raise self._refused(EndOfDataRefused(final.code, final.message))

    def _transmit(self, go: bool) -> None:
        """Send the pending message (``go``), or withhold it: close in the middle of DATA, so the server discards it."""
        data, self.pending = self.pending, None
        if data is None:
            return  # (closed meanwhile)
        if not go:
            self.withheld = True
            self.close()
            return
        try:
            self._write(data)
        except aiosmtplib.SMTPServerDisconnected:
            return  # the message did not go: waiting for its reply says the connection is lost
        self.awaiting_final = True

    def _unsent(self, err: aiosmtplib.SMTPException) -> None:
        """After the final reply failed: raise ``err`` as it is (or Withheld) when the message never went out."""
        sent, self.awaiting_final, self.pending = self.awaiting_final, False, None
        if self.withheld:
            raise Withheld("the message was withheld after DATA") from err
        if not sent:
            self.usable = False
            raise err

    def _refused(self, err: aiosmtplib.SMTPException) -> aiosmtplib.SMTPException:
        """When the refusal is of the login itself, retire the connection and the token it used."""
        if login_refusal(err):
            self.usable = False
            if self.tokens is not None and self.token is not None:
                self.tokens.invalidate(self.token)
        return err

    async def try_sender(self, sender: bytes) -> SMTPResponse:
        """MAIL FROM then RSET: would the server let us send from ``sender``? Sends nothing."""
        self._write(b"MAIL FROM:<" + sender + b">\r\n")
        reply = await self._reply()
        await self._reset()
        return reply

    async def quit(self) -> None:
        """Say goodbye politely if the connection still works; close it in any case."""
        try:
            if self.usable and self.opened is None and self.pending is None:  # (else QUIT would be message text)
                self._write(b"QUIT\r\n")
                await self._reply()
        except aiosmtplib.SMTPException:
            pass
        finally:
            self.close()

    def close(self) -> None:
        self.usable, self.pending = False, None
        if self._alarm is not None:
            self._alarm.cancel()
            self._alarm = None
        self.transport.close()


def _commands(sender: bytes, recipient: bytes, options: bytes) -> bytes:
    return b"MAIL FROM:<" + sender + b">" + options + b"\r\nRCPT TO:<" + recipient + b">\r\n"


def _saslname(username: str) -> str:
    return username.replace("=", "=3D").replace(",", "=2C")  # RFC 5801's escaping for the gs2 header


async def _auth_oauthbearer(client: aiosmtplib.SMTP, username: str, token: str, host: str, port: int) -> SMTPResponse:
    """RFC 7628; on failure the server sends its error as a 334 challenge, answered with a lone ^A."""
    payload = f"n,a={_saslname(username)},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01"
    response = await client.execute_command(b"AUTH", b"OAUTHBEARER", base64.b64encode(payload.encode()))
    if response.code == 334:
        response = await client.execute_command(base64.b64encode(b"\x01"))
    if response.code != 235:
        raise aiosmtplib.SMTPAuthenticationError(response.code, response.message)
    return response


async def _oauth_login(client: aiosmtplib.SMTP, settings: SmtpSettings, tokens: TokenSource, report: Report) -> str:
    """Log in with a token; a cached token refused is replaced once; returns the token that worked."""
    assert settings.username is not None
    offered = client.server_auth_methods
    mechanism = next((m for m in ("xoauth2", "oauthbearer") if m in offered), None)
    if mechanism is None:
        raise ConfigError(
            f"{settings.host} offers AUTH {' '.join(offered).upper() or '(nothing)'}, neither XOAUTH2 nor "
            "OAUTHBEARER; wanted SMTP_AUTH=password with SMTP_PASSWORD for this server"
        )
    for attempt in (1, 2):  # a cached token refused gets one fresh replacement, no more
        fetches = tokens.fetches
        token = await tokens.get()
        fresh = tokens.fetches > fetches
        report("token", f"from {tokens.origin}" + ("" if fresh else " (cached)"))
        try:
            if mechanism == "xoauth2":
                response = await client.auth_xoauth2(settings.username, token)
            else:
                response = await _auth_oauthbearer(client, settings.username, token, settings.host, settings.port)
        except aiosmtplib.SMTPAuthenticationError as err:
            tokens.invalidate(token)
            if attempt == 1 and not fresh:
                continue  # it may have expired early, or been revoked: fetch a new one, then judge
            if err.code < 500:  # 454 4.7.0 temporary authentication failure: a later try may pass
                raise aiosmtplib.SMTPResponseException(err.code, err.message) from None
            raise ConfigError(
                f"{settings.host} rejected the OAuth2 token from {tokens.origin} for SMTP_USERNAME="
                f"{settings.username!r}: {err.code} {err.message}; wanted a valid token for that mailbox "
                "(seminar-mailer check --smtp explains)"
            ) from None
        report("AUTH", f"{mechanism.upper()} as {settings.username}: {response.code} {response.message}")
        return token
    raise AssertionError("unreachable: the second attempt returns or raises")


def _offers(client: aiosmtplib.SMTP) -> str:
    return ", ".join(f"{k.upper()} {v}".strip() for k, v in client.esmtp_extensions.items()) or "no extensions"


async def connect(settings: SmtpSettings, *, report: Report = lambda step, detail: None) -> Connection:
    """Open one connection: TLS as configured (never silently plaintext), then AUTH if configured.

    ``report`` hears each step that succeeded, with the server's words (check --smtp prints them).
    """
    context = settings.tls_context if settings.security != "none" else None
    client = aiosmtplib.SMTP(
        hostname=settings.host,
        port=settings.port,
        timeout=settings.timeout,
        use_tls=settings.security == "tls",
        start_tls=False,
        tls_context=context,
    )
    token = None
    try:
        greeting = await client.connect()
        report("connect", f"{settings.host}:{settings.port}: {greeting.code} {greeting.message}")
        await client.ehlo()
        report("EHLO", _offers(client))
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
            await client.starttls(tls_context=context)
            if client.is_ehlo_or_helo_needed:  # RFC 3207: forget what was offered in plaintext, ask again
                await client.ehlo()
        if settings.security != "none":
            tls = client.get_transport_info("ssl_object")
            version = tls.version() if isinstance(tls, ssl.SSLObject) else "TLS"
            report(
                "STARTTLS" if settings.security == "starttls" else "TLS",
                f"{version}, certificate verified for {settings.host}; now offers {_offers(client)}",
            )
        if settings.oauth is not None:
            token = await _oauth_login(client, settings, settings.oauth, report)
        elif settings.username is not None and settings.password is not None:
            response = await client.login(settings.username, settings.password)
            report("AUTH", f"as {settings.username}: {response.code} {response.message}")
    except aiosmtplib.SMTPAuthenticationError as err:
        client.close()
        raise ConfigError(
            f"{settings.host} rejected the login of SMTP_USERNAME={settings.username!r}: "
            f"{err.code} {err.message}; wanted valid SMTP_USERNAME and SMTP_PASSWORD"
        ) from None
    except MailerError:
        client.close()
        raise
    except (ssl.SSLCertVerificationError, aiosmtplib.SMTPConnectError) as err:
        client.close()
        if isinstance(err, ssl.SSLCertVerificationError) or isinstance(err.__cause__, ssl.SSLError):
            # Exit 2, not 75: a certificate does not heal by itself; somebody has to fix the settings.
            raise ConfigError(
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
    return Connection(
        transport,
        client.esmtp_extensions,
        settings.timeout,
        data_timeout=settings.data_timeout,
        pipelining=settings.pipelining,
        tokens=settings.oauth,
        token=token,
    )


async def send_one(settings: SmtpSettings, sender: str, address: Address, message: bytes) -> None:
    """One message (CRLF lines, not yet dot-stuffed) to one address on a connection of its own: the service's
    confirmations and a speaker's invitation, which the ledger does not record."""
    from mailer.compose.message import dot_stuff

    rcpt = address.addr if address.needs_smtputf8 else address.ascii_addr
    client = await connect(settings)
    try:
        options = b" SMTPUTF8" if address.needs_smtputf8 else b""
        await client.send(sender.encode(), rcpt.encode(), dot_stuff(message), options)
    finally:
        await client.quit()
