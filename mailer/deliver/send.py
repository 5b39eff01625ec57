"""Deliver one message to its recipients over a pool of reused SMTP connections, recording each result.

Each worker owns one connection (TLS required and verified, AUTH only after TLS) and keeps it for
many messages: providers throttle one login per message. A token bucket caps the rate. Results:

- 250: ``sent``;
- 5xx to RCPT: ``failed``, never retried, and the address is suppressed (the recipient is refused);
- 5xx to DATA or to the message itself (content, size, line length): the *message* is refused, no
  recipient is to blame: the run stops at once with the server's words, recipients stay due;
- 4xx, a dropped connection, a timeout before the message was sent: retried with backoff without
  holding up the others; after ``attempts`` tries ``deferred`` for the next run;
- no reply after the whole message went out: ``uncertain`` (the server may have it), retried at
  most once and only by a later run, and counted as a possible duplicate.

Every result is committed to the ledger in the event-loop tick its reply arrived in, and each copy's
in-flight mark before the copy's first byte (while its MAIL, RCPT and DATA are on the wire). With
PIPELINING, each message goes out in one write with the next recipient's MAIL, RCPT and DATA. A stop request
(SIGTERM, SIGINT, a daily limit) stops taking recipients and lets the messages in flight finish.
Errors that doom every recipient (no STARTTLS, a bad certificate, rejected credentials or sender, a
server that cannot be reached) stop the run with a DeliveryError or ConfigError.
"""

from __future__ import annotations

import asyncio
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import aiosmtplib

from mailer.compose.message import MessageTemplate
from mailer.core.address import Address
from mailer.core.errors import ConfigError, DeliveryError, LedgerError, MailerError, MessageRefusedError
from mailer.core.tokens import bounce_token
from mailer.deliver.config import SmtpSettings
from mailer.deliver.smtp import Connection, EndOfDataRefused, Envelope, ReplyUncertain, Withheld, connect, login_refusal
from mailer.record.ledger import DEFERRED, FAILED, SENT, UNCERTAIN, Ledger
from mailer.record.rows import Mark


class _Transient(Exception):
    """Try this recipient again later; ``reconnect`` when the connection is no longer usable."""

    def __init__(self, detail: str, *, reconnect: bool) -> None:
        super().__init__(detail)
        self.reconnect = reconnect


class _Permanent(Exception):
    """This recipient will never accept this message."""


class _Uncertain(Exception):
    """The message went out but its final reply never came."""


def _reply(err: aiosmtplib.SMTPResponseException) -> str:
    return f"{err.code} {err.message}".strip()


_RECIPIENT_CODES = re.compile(r"^5\.[12]\.\d+")  # RFC 3463: 5.1.x addressing, 5.2.x mailbox (full, disabled)


def _classify(err: Exception, *, accepted: bool = False) -> Exception:
    """Map an aiosmtplib error for one message to _Transient, _Permanent, _Uncertain or a run-stopping error.

    A 5xx at the end of the message refuses the message itself (a spam filter, a size or line limit)
    unless it names the mailbox (5.1.x, 5.2.x), or this same message was ``accepted`` for others:
    then it is this recipient's refusal (a full mailbox, a per-recipient policy)."""
    if isinstance(err, EndOfDataRefused) and err.code >= 500 and (accepted or _RECIPIENT_CODES.match(err.message)):
        return _Permanent(_reply(err))
    if isinstance(err, ReplyUncertain):
        return _Uncertain(str(err))
    if reply := login_refusal(err):  # "454 4.7.0 token expired": not about the recipient; log in afresh
        return _Transient(f"the server refused the login: {reply}", reconnect=True)
    if isinstance(err, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in err.recipients] or [550]
        detail = "; ".join(_reply(r) for r in err.recipients)
        return _Permanent(detail) if min(codes) >= 500 else _Transient(detail, reconnect=421 in codes)
    if isinstance(err, aiosmtplib.SMTPSenderRefused) and err.code >= 500:
        return ConfigError(
            f"the server refuses the sender {err.sender}: {_reply(err)}; wanted an address "
            "the server lets you send from (series sender or MAILER_ENVELOPE_FROM)"
        )
    if isinstance(err, aiosmtplib.SMTPDataError) and err.code >= 500:
        return MessageRefusedError(
            f"the server refuses the message itself: {_reply(err)}. No recipient was marked failed: "
            "they all stay due. Fix the message (or ask the server's admin what it objects to), "
            "then run send again"
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


@dataclass(slots=True)
class _Held:
    """A queue item a worker holds: ``admitted`` (and marked in flight) or not yet, and the ``envelope`` of
    the transaction its connection opened for it (PIPELINING), if one did."""

    recipient: Address
    attempts: int
    admitted: bool = False
    envelope: Envelope | None = None

    @staticmethod
    def of(item: tuple[Address, int] | None) -> _Held | None:
        return None if item is None else _Held(*item)


class RateLimit:
    """Space messages evenly: at most ``per_minute`` messages a minute (0: no limit), across messages."""

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


@dataclass
class Stop:
    """Shared by a run's deliveries: why no new recipient may be taken (None: carry on)."""

    reason: str | None = None
    budget: int | None = None  # messages this run may still send (daily limit); None: no limit
    abort: bool = False  # a second signal: abandon the messages in flight too
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def request(self, reason: str, *, abort: bool = False) -> None:
        if self.reason is None:
            self.reason = reason
        self.abort = self.abort or abort
        self.changed.set()

    def take(self) -> bool:
        """Take one message from the budget; False (and stop) when it is spent."""
        if self.reason is not None:
            return False
        if self.budget is not None:
            if self.budget <= 0:
                self.request("the daily limit is reached")
                return False
            self.budget -= 1
        return True


@dataclass
class Outcome:
    """What one message's delivery did in this run."""

    sent: int = 0
    deferred: list[tuple[Address, str]] = field(default_factory=list)
    failed: list[tuple[Address, str]] = field(default_factory=list)
    uncertain: list[tuple[Address, str]] = field(default_factory=list)
    retried_uncertain: int = 0  # sent again after an earlier run's uncertain result: possible duplicates
    withdrawn: int = 0  # unsubscribed while this send ran, before their message started: not sent, not marked

    @property
    def finished(self) -> int:
        return self.sent + len(self.deferred) + len(self.failed) + len(self.uncertain) + self.withdrawn


class Delivery:
    """One message to many recipients: a producer, ``concurrency`` workers and the ledger."""

    def __init__(
        self,
        template: MessageTemplate,
        settings: SmtpSettings,
        ledger: Ledger,
        *,
        envelope_from: str,
        verp: bool = False,
        stop: Stop,
        limiter: RateLimit,
        progress: Callable[[Outcome], None] = lambda _: None,
        doubtful: frozenset[str] = frozenset(),
        wanted: Callable[[str], bool] = lambda _: True,
    ) -> None:
        self.template = template
        self.settings = settings
        self.ledger = ledger
        self.sender = envelope_from.encode()
        self.verp = verp  # MAIL FROM local+<bounce token>@domain: a bounce names the delivery it is about
        self.stop = stop
        self.limiter = limiter
        self.progress = progress
        self.doubtful = doubtful  # recipients whose earlier copy is uncertain: this is their one retry
        self.wanted = wanted  # asked just before sending (an unsubscription arriving mid-send)
        self.outcome = Outcome()
        self.accepted_before = ledger.accepted(template.announcement)  # by an earlier run, for anyone
        self.queue: asyncio.Queue[tuple[Address, int] | None] = asyncio.Queue()
        self.read_ahead = settings.concurrency * 64  # recipients read and not finished: memory stays flat
        self.outstanding = 0
        self.room = asyncio.Event()  # set when the read-ahead has room for half of it again
        self.reading = True
        self.all_done = asyncio.Event()
        self.unreachable = 0  # connection attempts failed in a row, across workers
        self.flush_scheduled: asyncio.Handle | None = None
        self.after_commit: list[Callable[[bool], None]] = []  # messages that go once the tick's marks are committed
        self.ledger_error: LedgerError | None = None
        self.fatal: MailerError | None = None  # stops the run once the messages in flight are done
        self.retries: dict[asyncio.TimerHandle, tuple[Address, int]] = {}
        self.ids: dict[str, str] = {}  # Message-IDs of the recipients taken and not finished

    # --- recording ----------------------------------------------------------------------------

    def _flush(self) -> None:
        if self.flush_scheduled is not None:
            self.flush_scheduled.cancel()  # (when called before its turn: once is enough)
            self.flush_scheduled = None
        try:
            self.ledger.flush()
        except LedgerError as err:
            if self.ledger_error is None:
                self.ledger_error = err
            self.stop.request("results can no longer be recorded")
        waiting, self.after_commit = self.after_commit, []
        for then in waiting:
            then(self.ledger_error is None)

    def _message_id(self, recipient: Address) -> str:
        """The recipient's Message-ID, made once for the four uses of a message (kept until ``finish``)."""
        if (known := self.ids.get(recipient.key)) is None:
            known = self.ids[recipient.key] = self.template.message_id(recipient)
        return known

    def _schedule_flush(self) -> None:
        if self.flush_scheduled is None:  # one commit per loop tick, for every reply that arrived in it
            self.flush_scheduled = asyncio.get_running_loop().call_soon(self._flush)

    def _not_sent(self, recipient: Address, detail: str) -> None:
        """Take back an in-flight mark: the server refused before the message was taken (still due)."""
        mark = Mark(self.template.announcement, recipient.key, DEFERRED, 0, self._message_id(recipient), detail)
        self.ledger.mark(mark)
        self._schedule_flush()

    def in_flight(self, recipient: Address) -> None:
        """Record that a copy to ``recipient`` is about to go out, committed before its first byte (the connection
        sends the message through ``committed``): if the run dies before the reply, the ledger knows this copy may
        have arrived (so a later revision is told relative to it, and the copy is
        retried once, as a possible duplicate)."""
        self.ledger.mark(
            Mark(
                self.template.announcement,
                recipient.key,
                UNCERTAIN,
                0,
                self._message_id(recipient),
                "in flight: no reply yet",
            )
        )
        self._schedule_flush()

    def committed(self, then: Callable[[bool], None]) -> None:
        """Call ``then`` (it sends a message) once what is marked is committed: its in-flight mark and the replies
        that came before it, so a kill never finds more than one copy a connection unrecorded; at once when all
        is, else after this tick's one commit. With False: it cannot be recorded."""
        if self.flush_scheduled is None:
            then(self.ledger_error is None)
        else:
            self.after_commit.append(then)

    def finish(self, recipient: Address, state: str, attempts: int, detail: str) -> None:
        doubt = state == UNCERTAIN
        self.ledger.mark(
            Mark(
                self.template.announcement,
                recipient.key,
                state,
                attempts,
                self.ids.pop(recipient.key, "") or self.template.message_id(recipient),  # (its last use)
                detail,
                doubt,
            )
        )
        self._schedule_flush()
        outcome = self.outcome
        if state == SENT:
            outcome.sent += 1
            if recipient.key in self.doubtful:
                outcome.retried_uncertain += 1
        else:
            {FAILED: outcome.failed, DEFERRED: outcome.deferred, UNCERTAIN: outcome.uncertain}[state].append(
                (recipient, detail)
            )
        self._release()
        self.progress(outcome)

    def _release(self) -> None:
        self.outstanding -= 1
        # The list is read on in batches (a wake-up of the producer per message cost more), once half of the
        # read-ahead is free; recipients backed off for a retry are not waiting for a worker, so not counted.
        if self.outstanding - len(self.retries) <= self.read_ahead // 2:
            self.room.set()
        if not self.reading and self.outstanding == 0:
            self.all_done.set()

    # --- sending ------------------------------------------------------------------------------

    def envelope(self, recipient: Address, *, dsn: bool) -> tuple[bytes, bytes]:
        """MAIL FROM's address and DSN options for ``recipient``.

        The bounce token (tokens.py) ties a returned message to this very delivery: in the envelope
        sender with VERP, and as the DSN ENVID (RFC 3461) when the server offers DSN, which also gets
        RET=HDRS: a bounce returns the headers, not the whole announcement."""
        template = self.template
        token = bounce_token(template.token_key, template.list_name, self._message_id(recipient)).encode()
        sender = self.sender
        if self.verp:
            local, _, domain = sender.rpartition(b"@")
            sender = local + b"+" + token + b"@" + domain
        return sender, b" RET=HDRS ENVID=" + token if dsn else b""

    def _transaction(self, client: Connection, recipient: Address) -> Envelope:
        """MAIL FROM's address, RCPT TO's and MAIL FROM's options for ``recipient`` on ``client``."""
        sender, options = self.envelope(recipient, dsn=client.supports("dsn"))
        if recipient.needs_smtputf8:
            if not client.supports("smtputf8"):
                raise _Permanent("the address needs SMTPUTF8, which the server does not offer")
            options += b" SMTPUTF8"
        rcpt = recipient.addr if recipient.needs_smtputf8 else recipient.ascii_addr
        return sender, rcpt.encode(), options

    def _ahead(self, client: Connection, held: list[_Held | None]) -> Envelope | None:
        """The next recipient's envelope, to open its transaction in the write of this message (PIPELINING):
        taken from the queue if one is waiting, admitted, marked in flight and held for the worker's next turn."""
        if held or self.limiter.interval or self.stop.reason is not None:
            return None  # (with a rate limit the messages are spaced anyway)
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if item is None:
                held.append(None)
                return None
            recipient, attempts = item
            if recipient.needs_smtputf8 and not client.supports("smtputf8"):
                held.append(_Held(recipient, attempts))  # (refused on its own turn)
                return None
            if not self._admit(recipient):
                continue
            envelope = self._transaction(client, recipient)
            self.in_flight(recipient)
            held.append(_Held(recipient, attempts, True, envelope))
            return envelope
        return None

    async def _send_one(
        self,
        client: Connection,
        recipient: Address,
        envelope: Envelope | None,
        held: list[_Held | None],
    ) -> str:
        sender, rcpt, options = envelope or self._transaction(client, recipient)
        try:
            return await client.send(
                sender,
                rcpt,
                self.template.wire(recipient, self._message_id(recipient)),
                options,
                ready=self.committed,
                ahead=lambda: self._ahead(client, held),
            )
        except Exception as err:  # classified below; anything unknown is re-raised
            classified = _classify(err, accepted=self.accepted_before or self.outcome.sent > 0)
            if self.verp and isinstance(err, aiosmtplib.SMTPSenderRefused) and isinstance(classified, ConfigError):
                classified = ConfigError(
                    f"{classified}; with MAILER_VERP=on the sender is {sender.decode()}: wanted a server that "
                    "accepts a '+' in it, or MAILER_VERP=off (bounces are then tied by ENVID or Message-ID)"
                )
            raise classified from err

    async def _connect(self) -> Connection:
        try:
            client = await connect(self.settings)
        except (TimeoutError, aiosmtplib.SMTPException, OSError) as err:
            self.unreachable += 1
            if self.unreachable >= self.settings.attempts + self.settings.concurrency:
                raise DeliveryError(
                    f"cannot reach {self.settings.host}:{self.settings.port}: {err}; nothing more was "
                    "sent, the rest stays due for the next run"
                ) from None
            raise _Transient(f"cannot connect: {err}", reconnect=True) from err
        self.unreachable = 0
        return client

    def _retry_later(self, recipient: Address, attempts: int) -> None:
        delay = self.settings.backoff * 2 ** (attempts - 1) * random.uniform(0.8, 1.2)  # noqa: S311
        handle: asyncio.TimerHandle

        def due() -> None:
            del self.retries[handle]
            self.queue.put_nowait((recipient, attempts))

        handle = asyncio.get_running_loop().call_later(delay, due)
        self.retries[handle] = (recipient, attempts)

    def _admit(self, recipient: Address) -> bool:
        """Whether ``recipient`` is to be sent now; if not, they are let go (withdrawn, or the run is stopping)."""
        if not self.wanted(recipient.key):  # unsubscribed while this send runs: honoured at once
            self.outcome.withdrawn += 1
            self._release()
            self.progress(self.outcome)
            return False
        if not self.stop.take():
            self._release()  # not taken: the run is stopping, nothing recorded, still due
            return False
        return True

    async def worker(self) -> None:
        client: Connection | None = None
        held: list[_Held | None] = []  # what this worker's last message took from the queue to pipeline (one at most)
        try:
            while True:
                entry = held.pop() if held else _Held.of(await self.queue.get())
                if entry is None:
                    break
                recipient, attempts, admitted = entry.recipient, entry.attempts, entry.admitted
                if not admitted and not self._admit(recipient):
                    continue
                attempts += 1
                envelope = entry.envelope
                try:
                    if client is None:
                        client = await self._connect()
                    if not admitted:
                        await self.limiter.wait()
                        self.in_flight(recipient)
                    elif client.opened != envelope:
                        envelope = None  # (another connection now: its MAIL, RCPT and DATA go afresh)
                    reply = await self._send_one(client, recipient, envelope, held)
                    self.finish(recipient, SENT, attempts, reply)
                except Withheld:
                    client = None  # (closed) not sent: the ledger cannot record it (the run is stopping)
                    self._release()
                except _Permanent as err:
                    self.finish(recipient, FAILED, attempts, str(err))
                    if client is not None and not client.usable:
                        client.close()
                        client = None
                except _Uncertain as err:
                    self.finish(recipient, UNCERTAIN, attempts, str(err))
                    if client is not None:
                        client.close()
                        client = None
                except _Transient as err:
                    self._not_sent(recipient, str(err))
                    if self.stop.budget is not None:
                        self.stop.budget += 1  # not sent: the slot is free again
                    if client is not None and (err.reconnect or not client.usable):
                        client.close()
                        client = None
                    if attempts >= self.settings.attempts or self.stop.reason is not None:
                        self.finish(recipient, DEFERRED, attempts, str(err))
                    else:
                        self._retry_later(recipient, attempts)
                except (DeliveryError, ConfigError, MessageRefusedError) as err:
                    # Dooms every recipient: stop taking more, let the other workers' messages finish.
                    self._not_sent(recipient, str(err))
                    self.fatal = self.fatal or err
                    self.stop.request(str(err))
                    self._release()  # not taken: the run is stopping, nothing recorded, still due
                except asyncio.CancelledError:
                    if client is not None and client.awaiting_final:
                        self.finish(recipient, UNCERTAIN, attempts, "abandoned before the server's final reply")
                    for other in held:  # its MAIL, RCPT and DATA went out, never the message: still due
                        if other is not None and other.admitted:
                            self._not_sent(other.recipient, "abandoned before it was sent")
                    raise
        finally:
            if client is not None:
                await client.quit()

    async def watch_stop(self) -> None:
        """On a stop request, send backed-off retries through at once (they are left due), and on
        an abort, cancel the workers (a message whose final reply is pending is recorded uncertain)."""
        while not self.all_done.is_set():
            await self.stop.changed.wait()
            self.stop.changed.clear()
            self.room.set()  # the producer stops reading, even if no room is ever made again
            for handle, item in list(self.retries.items()):
                handle.cancel()
                del self.retries[handle]
                self.queue.put_nowait(item)
            if self.stop.abort:
                for task in self.workers:
                    task.cancel()
                return

    async def producer(self, recipients: Iterable[Address]) -> None:
        for recipient in recipients:
            if self.stop.reason is not None:
                break
            if self.outstanding >= self.read_ahead:
                self.room.clear()
                await self.room.wait()
                if self.stop.reason is not None:
                    break  # (woken by the stop: workers abandoned by a second signal never make room)
            self.outstanding += 1
            self.queue.put_nowait((recipient, 0))
        self.reading = False
        if self.outstanding == 0:
            self.all_done.set()
        await self.all_done.wait()
        for _ in range(self.settings.concurrency):
            self.queue.put_nowait(None)

    async def checkpointer(self) -> None:
        """Bound what a power loss can undo: a synced checkpoint every window, even while idle."""
        while not self.all_done.is_set():
            try:
                await asyncio.wait_for(self.all_done.wait(), max(self.ledger.window, 0.05))
            except TimeoutError:
                self._flush()

    async def run(self, recipients: Iterable[Address]) -> Outcome:
        self.workers: list[asyncio.Task[None]] = []
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self.producer(recipients))
                group.create_task(self.checkpointer())
                watcher = group.create_task(self.watch_stop())
                self.workers = [group.create_task(self.worker()) for _ in range(self.settings.concurrency)]
                await asyncio.gather(*self.workers, return_exceptions=True)
                watcher.cancel()
                self.all_done.set()
        finally:
            self._flush()
        if self.ledger_error is not None:
            raise self.ledger_error
        if self.fatal is not None:
            raise self.fatal
        return self.outcome
