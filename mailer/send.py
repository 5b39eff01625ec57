"""Deliver personalised messages over a pool of reused SMTP connections, recording each result.

Each worker owns one connection (TLS required and verified, AUTH only after TLS) and keeps it for
many messages: providers throttle one login per message. A token bucket caps the rate. Results:
- 250: marked ``sent`` in the ledger;
- 5xx: marked ``failed`` and never retried (the address joins state/suppressed.txt);
- 4xx, a dropped connection, a timeout: retried with exponential backoff, without holding up the
  other recipients; after ``attempts`` tries marked ``deferred`` for the next run.
Errors that doom every recipient (no STARTTLS, a bad certificate, rejected credentials or sender,
a server that cannot be reached at all) stop the run at once with a DeliveryError or ConfigError.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import aiosmtplib

from mailer.address import Address
from mailer.config import SmtpSettings
from mailer.errors import ConfigError, DeliveryError
from mailer.ledger import DEFERRED, FAILED, SENT, Ledger, Mark
from mailer.message import MessageTemplate
from mailer.smtp import Connection, connect


class _Transient(Exception):
    """Try this recipient again later; ``reconnect`` when the connection is no longer usable."""

    def __init__(self, detail: str, *, reconnect: bool) -> None:
        super().__init__(detail)
        self.reconnect = reconnect


class _Permanent(Exception):
    """This recipient will never accept this message."""


@dataclass
class Outcome:
    """What one run did."""

    sent: int = 0
    deferred: list[tuple[Address, str]] = field(default_factory=list)
    failed: list[tuple[Address, str]] = field(default_factory=list)
    withdrawn: int = 0  # unsubscribed while this send ran, before their message started: not sent, not marked

    @property
    def finished(self) -> int:
        return self.sent + len(self.deferred) + len(self.failed) + self.withdrawn


def _reply(err: aiosmtplib.SMTPResponseException) -> str:
    return f"{err.code} {err.message}".strip()


def _classify(err: Exception) -> Exception:
    """Map an aiosmtplib error for one message to _Transient, _Permanent or a run-stopping error."""
    if isinstance(err, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in err.recipients] or [550]
        detail = "; ".join(_reply(r) for r in err.recipients)
        return _Permanent(detail) if min(codes) >= 500 else _Transient(detail, reconnect=421 in codes)
    if isinstance(err, aiosmtplib.SMTPSenderRefused) and err.code >= 500:
        return ConfigError(
            f"the server refuses the sender {err.sender}: {_reply(err)}; wanted an address "
            "the server lets you send from (series sender or MAILER_ENVELOPE_FROM)"
        )
    if isinstance(err, aiosmtplib.SMTPResponseException):
        if err.code >= 500:
            return _Permanent(_reply(err))
        return _Transient(_reply(err), reconnect=err.code == 421)
    if isinstance(err, aiosmtplib.SMTPTimeoutError | asyncio.TimeoutError):
        return _Transient(f"timed out: {err}", reconnect=True)
    if isinstance(err, aiosmtplib.SMTPServerDisconnected | aiosmtplib.SMTPConnectError | OSError):
        return _Transient(f"connection lost: {err}", reconnect=True)
    return err


class _RateLimit:
    """Space messages evenly: at most ``per_minute`` messages a minute (0: no limit)."""

    def __init__(self, per_minute: float) -> None:
        self.interval = 60.0 / per_minute if per_minute else 0.0
        self.next = 0.0

    async def wait(self) -> None:
        if not self.interval:
            return
        now = asyncio.get_running_loop().time()
        slot = max(now, self.next)
        self.next = slot + self.interval
        if slot > now:
            await asyncio.sleep(slot - now)


async def deliver(
    template: MessageTemplate,
    recipients: Iterable[Address],
    settings: SmtpSettings,
    ledger: Ledger,
    *,
    envelope_from: str,
    progress: Callable[[Outcome], None] = lambda _: None,
    still_wanted: Callable[[str], bool] = lambda _: True,
) -> Outcome:
    """Send ``template`` to each recipient once; record every result in ``ledger``.

    ``still_wanted(key)`` is asked before each message (retries included): False skips that
    recipient (an unsubscription that arrived during the send, subscribers.StillWanted).
    """
    outcome = Outcome()
    sender = envelope_from.encode()
    queue: asyncio.Queue[tuple[Address, int] | None] = asyncio.Queue()
    room = asyncio.Semaphore(settings.concurrency * 64)  # recipients read ahead: memory stays flat
    limiter = _RateLimit(settings.rate)
    loop = asyncio.get_running_loop()
    outstanding = 0
    reading = True
    all_done = asyncio.Event()
    unreachable = 0  # connection attempts failed in a row, across workers

    def finish(recipient: Address, state: str, attempts: int, detail: str) -> None:
        ledger.mark(Mark(recipient.key, state, attempts, template.message_id(recipient), detail))
        if state == SENT:
            outcome.sent += 1
        else:
            (outcome.failed if state == FAILED else outcome.deferred).append((recipient, detail))
        release()

    def release() -> None:
        nonlocal outstanding
        outstanding -= 1
        room.release()
        progress(outcome)
        if not reading and outstanding == 0:
            all_done.set()

    async def send_one(client: Connection, recipient: Address) -> str:
        options = b""
        if recipient.needs_smtputf8:
            if not client.supports("smtputf8"):
                raise _Permanent("the address needs SMTPUTF8, which the server does not offer")
            options = b" SMTPUTF8"
        rcpt = recipient.addr if recipient.needs_smtputf8 else recipient.ascii_addr
        try:
            return await client.send(sender, rcpt.encode(), template.wire(recipient), options)
        except Exception as err:  # classified below; anything unknown is re-raised
            raise _classify(err) from err

    async def worker() -> None:
        nonlocal unreachable
        client: Connection | None = None
        try:
            while (item := await queue.get()) is not None:
                recipient, attempts = item
                if not still_wanted(recipient.key):
                    outcome.withdrawn += 1
                    release()
                    continue
                attempts += 1
                try:
                    if client is None:
                        try:
                            client = await connect(settings)
                        except (TimeoutError, aiosmtplib.SMTPException, OSError) as err:
                            unreachable += 1
                            if unreachable >= settings.attempts + settings.concurrency:
                                raise DeliveryError(
                                    f"cannot reach {settings.host}:{settings.port}: {err}; nothing more was "
                                    "sent, the rest stays due for the next run"
                                ) from None
                            raise _Transient(f"cannot connect: {err}", reconnect=True) from err
                        unreachable = 0
                    await limiter.wait()
                    finish(recipient, SENT, attempts, await send_one(client, recipient))
                except _Permanent as err:
                    finish(recipient, FAILED, attempts, str(err))
                    if client is not None and not client.usable:
                        client.close()
                        client = None
                except _Transient as err:
                    if client is not None and (err.reconnect or not client.usable):
                        client.close()
                        client = None
                    if attempts >= settings.attempts:
                        finish(recipient, DEFERRED, attempts, str(err))
                    else:
                        delay = settings.backoff * 2 ** (attempts - 1) * random.uniform(0.8, 1.2)  # noqa: S311
                        loop.call_later(delay, queue.put_nowait, (recipient, attempts))
        finally:
            if client is not None:
                await client.quit()

    async def producer() -> None:
        nonlocal outstanding, reading
        for recipient in recipients:
            await room.acquire()
            outstanding += 1
            queue.put_nowait((recipient, 0))
        reading = False
        if outstanding == 0:
            all_done.set()
        await all_done.wait()
        for _ in range(settings.concurrency):
            queue.put_nowait(None)

    async def flusher() -> None:
        """Bound the window even when no new mark arrives (e.g. during a retry backoff)."""
        while not all_done.is_set():
            await asyncio.sleep(max(ledger.window, 0.05))
            ledger.flush()

    try:
        async with asyncio.TaskGroup() as group:
            group.create_task(producer())
            group.create_task(flusher())
            for _ in range(settings.concurrency):
                group.create_task(worker())
    except* (DeliveryError, ConfigError) as group_error:
        raise group_error.exceptions[0] from None
    finally:
        ledger.flush()
    return outcome
