"""The SMTP connection (mailer/deliver/smtp.py) against a scripted server on 127.0.0.1 that records each read.

A scripted server, not aiosmtpd, because these tests are about the bytes on the wire: which commands
arrive in one read (PIPELINING), replies split at awkward places, and the corner cases of RFC 2920
(DATA accepted although the recipient was refused) that a friendly server never produces.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import aiosmtplib
import pytest

from mailer.deliver.config import smtp_settings
from mailer.deliver.smtp import Connection, ReplyUncertain, Withheld, connect

WIRE = b"Subject: hi\r\n\r\nbody\r\n..dot\r\n.\r\n"  # as MessageTemplate.wire makes it: stuffed, ended


@dataclass
class Script:
    """A tiny SMTP server: ``answer`` maps a command line to its reply; replies to pipelined
    commands are written together once the input is drained, as Postfix does."""

    pipelining: bool = True
    answer: Callable[[bytes], bytes | None] = lambda line: None  # None: the default reply
    split_replies: bool = False  # write replies one byte at a time
    reads: list[bytes] = field(default_factory=list)
    messages: list[bytes] = field(default_factory=list)
    commands: list[bytes] = field(default_factory=list)

    def default(self, line: bytes) -> bytes:
        verb = line[:4].upper()
        if verb == b"EHLO":
            return b"250-script\r\n" + (b"250-PIPELINING\r\n" if self.pipelining else b"") + b"250 8BITMIME\r\n"
        if verb == b"DATA":
            return b"354 go ahead\r\n"
        if verb == b"QUIT":
            return b"221 bye\r\n"
        return b"250 ok\r\n"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 script ready\r\n")
        buffer, in_data, out = b"", False, b""
        while chunk := await reader.read(65536):
            self.reads.append(chunk)
            buffer += chunk
            while True:
                if in_data:
                    # the CRLF that ended the DATA line counts: an empty message is a lone ".\r\n"
                    end = (b"\r\n" + buffer).find(b"\r\n.\r\n")
                    if end == -1:
                        break
                    self.messages.append(buffer[:end])
                    buffer, in_data = buffer[end + 3 :], False
                    reply = self.answer(b"<message>")
                    out += b"250 2.0.0 queued as X\r\n" if reply is None else reply
                    continue
                end = buffer.find(b"\r\n")
                if end == -1:
                    break
                line, buffer = buffer[:end], buffer[end + 2 :]
                self.commands.append(line)
                reply = self.answer(line)
                if reply == b"<close>":
                    writer.close()
                    return
                reply = reply if reply is not None else self.default(line)
                out += reply
                in_data = line.upper() == b"DATA" and reply.startswith(b"354")
            if out:
                for piece in [out[i : i + 1] for i in range(len(out))] if self.split_replies else [out]:
                    writer.write(piece)
                    await writer.drain()
                out = b""
        writer.close()


async def _open(script: Script, timeout: float, **env: str) -> tuple[asyncio.Server, Connection]:
    server = await asyncio.start_server(script.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = smtp_settings(
        {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "SMTP_SECURITY": "none", "MAILER_TIMEOUT": str(timeout)}
        | env
    )
    return server, await connect(settings)


def run(script: Script, body: Callable[[Connection], object], timeout: float = 5, **env: str) -> None:
    async def main() -> None:
        server, conn = await _open(script, timeout, **env)
        try:
            await body(conn)  # type: ignore[misc]
        finally:
            conn.close()
            server.close()

    asyncio.run(main())


def test_pipelining_sends_mail_rcpt_data_in_one_write_and_the_message_intact() -> None:
    script = Script()

    async def body(conn: Connection) -> None:
        assert conn.pipelining
        for i in range(3):
            reply = await conn.send(b"from@example.org", f"to{i}@example.org".encode(), WIRE)
            assert reply == "250 2.0.0 queued as X"
        await conn.quit()

    run(script, body)
    # EHLO; then per message one read with the three commands and one with the data.
    envelope_reads = [r for r in script.reads if r.startswith(b"MAIL")]
    assert envelope_reads == [
        f"MAIL FROM:<from@example.org>\r\nRCPT TO:<to{i}@example.org>\r\nDATA\r\n".encode() for i in range(3)
    ]
    assert script.messages == [WIRE[:-3]] * 3  # the stuffed body, byte for byte, up to the final dot
    assert script.commands[-1] == b"QUIT"


def test_each_message_goes_in_one_write_with_the_next_transactions_commands() -> None:
    """RFC 2920 3.1: message content may be the first "command" of a group. The next send of the envelope
    named by ``ahead`` reads the replies to the commands that went with the message before; nothing twice."""
    script = Script()
    rcpts = [f"to{i}@example.org".encode() for i in range(3)]

    async def body(conn: Connection) -> None:
        for i, rcpt in enumerate(rcpts):
            following = (b"from@example.org", rcpts[i + 1], b"") if i + 1 < len(rcpts) else None
            reply = await conn.send(b"from@example.org", rcpt, WIRE, ahead=lambda following=following: following)
            assert reply == "250 2.0.0 queued as X"
        assert conn.opened is None
        await conn.quit()

    run(script, body)
    message_reads = [r for r in script.reads if r.startswith(b"Subject")]
    assert message_reads[:2] == [
        WIRE + f"MAIL FROM:<from@example.org>\r\nRCPT TO:<to{i}@example.org>\r\nDATA\r\n".encode() for i in (1, 2)
    ]
    assert message_reads[2] == WIRE
    assert script.commands.count(b"DATA") == 3
    assert script.messages == [WIRE[:-3]] * 3
    assert script.commands[-1] == b"QUIT"


def test_a_message_refused_at_its_end_leaves_the_next_opened_transaction_usable() -> None:
    refusals = iter([b"554 5.7.1 not this one\r\n", None])

    def answer(line: bytes) -> bytes | None:
        return next(refusals) if line == b"<message>" else None

    script = Script(answer=answer)

    async def body(conn: Connection) -> None:
        following = (b"a@example.org", b"c@example.org", b"")
        with pytest.raises(aiosmtplib.SMTPDataError) as err:
            await conn.send(b"a@example.org", b"b@example.org", WIRE, ahead=lambda: following)
        assert err.value.code == 554
        assert conn.usable and conn.opened == following
        assert await conn.send(*following[:2], WIRE) == "250 2.0.0 queued as X"

    run(script, body)
    assert script.commands.count(b"RCPT TO:<c@example.org>") == 1
    assert len(script.messages) == 2


def test_the_message_waits_for_ready_and_a_refusal_withholds_it() -> None:
    """``ready`` is handed the sending: called later (the ledger's commit of the tick), the message goes then;
    with False it never goes: the connection closes in the middle of DATA, and the server stores nothing."""
    script = Script()
    calls: list[str] = []

    def later(go: Callable[[bool], None]) -> None:
        calls.append("asked")
        asyncio.get_running_loop().call_soon(go, True)

    async def body(conn: Connection) -> None:
        assert await conn.send(b"a@example.org", b"b@example.org", WIRE, ready=later) == "250 2.0.0 queued as X"
        with pytest.raises(Withheld):
            await conn.send(b"a@example.org", b"c@example.org", WIRE, ready=lambda go: go(False))
        assert not conn.usable

    run(script, body)
    assert calls == ["asked"]
    assert script.messages == [WIRE[:-3]]  # the withheld one never arrived
    assert script.commands[-3:] == [b"MAIL FROM:<a@example.org>", b"RCPT TO:<c@example.org>", b"DATA"]


@pytest.mark.parametrize("offered", [False, True])
def test_without_pipelining_each_command_waits_for_its_reply(offered: bool) -> None:
    """Not offered by the server, or switched off with MAILER_PIPELINING=off."""
    script = Script(pipelining=offered)

    async def body(conn: Connection) -> None:
        assert not conn.pipelining
        await conn.send(b"from@example.org", b"to@example.org", WIRE)

    run(script, body, **({"MAILER_PIPELINING": "off"} if offered else {}))
    assert [r for r in script.reads if r[:4] in (b"MAIL", b"RCPT", b"DATA")] == [
        b"MAIL FROM:<from@example.org>\r\n",
        b"RCPT TO:<to@example.org>\r\n",
        b"DATA\r\n",
    ]


@pytest.mark.parametrize("pipelining", [True, False])
def test_refused_recipient_resets_and_the_connection_carries_on(pipelining: bool) -> None:
    """A server may answer 354 to a pipelined DATA although it refused the only recipient (RFC 2920
    3.1): the client ends that empty message with a lone dot, says RSET, and goes on."""

    def answer(line: bytes) -> bytes | None:
        if line == b"RCPT TO:<bad@example.org>":
            return b"550 5.1.1 no such user\r\n"
        return None

    script = Script(pipelining=pipelining, answer=answer)

    async def body(conn: Connection) -> None:
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as refused:
            await conn.send(b"from@example.org", b"bad@example.org", WIRE)
        assert refused.value.recipients[0].code == 550
        assert conn.usable
        assert await conn.send(b"from@example.org", b"good@example.org", WIRE) == "250 2.0.0 queued as X"

    run(script, body)
    expected = [b"MAIL FROM:<from@example.org>", b"RCPT TO:<bad@example.org>"]
    expected += [b"DATA"] if pipelining else []  # pipelined: sent blind, answered 354, ended empty
    expected += [b"RSET", b"MAIL FROM:<from@example.org>", b"RCPT TO:<good@example.org>", b"DATA"]
    assert script.commands[1:] == expected
    assert script.messages == ([b""] if pipelining else []) + [WIRE[:-3]]


def test_replies_split_byte_by_byte_and_multiline_are_read_in_order() -> None:
    def answer(line: bytes) -> bytes | None:
        if line.startswith(b"MAIL FROM:<refused"):
            return b"550-5.7.1 first line\r\n550-second\r\n550 third\r\n"
        if line.startswith(b"MAIL"):
            return b"250-first line\r\n250-second\r\n250 ok\r\n"
        return None

    script = Script(answer=answer, split_replies=True)

    async def body(conn: Connection) -> None:
        assert await conn.send(b"a@example.org", b"b@example.org", WIRE) == "250 2.0.0 queued as X"
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as refused:
            await conn.send(b"refused@example.org", b"c@example.org", WIRE)
        assert (refused.value.code, refused.value.message) == (550, "5.7.1 first line\nsecond\nthird")
        assert await conn.send(b"a@example.org", b"c@example.org", WIRE) == "250 2.0.0 queued as X"

    run(script, body)
    assert [m for m in script.messages if m] == [WIRE[: -len(b".\r\n")]] * 2  # (the refused one's DATA: empty)


def test_temporary_data_refusal_raises_and_keeps_the_connection() -> None:
    def answer(line: bytes) -> bytes | None:
        return b"451 4.3.0 try later\r\n" if line == b"<message>" else None

    script = Script(answer=answer)

    async def body(conn: Connection) -> None:
        with pytest.raises(aiosmtplib.SMTPDataError) as err:
            await conn.send(b"a@example.org", b"b@example.org", WIRE)
        assert err.value.code == 451
        assert conn.usable

    run(script, body)


def test_sender_refused_is_reported_as_such() -> None:
    def answer(line: bytes) -> bytes | None:
        if line.startswith(b"MAIL"):
            return b"553 5.7.1 not your address\r\n"
        if line.startswith((b"RCPT", b"DATA")):
            return b"503 5.5.1 need MAIL\r\n"
        return None

    script = Script(answer=answer)

    async def body(conn: Connection) -> None:
        with pytest.raises(aiosmtplib.SMTPSenderRefused) as err:
            await conn.send(b"a@example.org", b"b@example.org", WIRE)
        assert err.value.code == 553

    run(script, body)
    assert script.messages == []  # a 503 to DATA: the message was never sent


def test_a_server_that_hangs_up_mid_transaction_retires_the_connection() -> None:
    script = Script(answer=lambda line: b"<close>" if line.startswith(b"RCPT") else None)

    async def body(conn: Connection) -> None:
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await conn.send(b"a@example.org", b"b@example.org", WIRE)
        assert not conn.usable
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await conn.send(b"a@example.org", b"c@example.org", WIRE)

    run(script, body)


def test_a_silent_server_times_out_on_a_command() -> None:
    script = Script(answer=lambda line: b"" if line.startswith(b"MAIL") else None)  # never answers MAIL

    async def body(conn: Connection) -> None:
        with pytest.raises(aiosmtplib.SMTPTimeoutError):
            await conn.send(b"a@example.org", b"b@example.org", WIRE)
        assert not conn.usable
        assert not conn.awaiting_final

    run(script, body, timeout=0.5)


def test_no_reply_to_the_message_itself_is_uncertain_not_a_retryable_timeout() -> None:
    """The whole message went out and the final reply never came: the server may have stored it
    (RFC 5321 4.5.3.2.6), so this is ReplyUncertain, never an ordinary timeout that invites a retry."""
    script = Script(answer=lambda line: b"" if line == b"<message>" else None)

    async def body(conn: Connection) -> None:
        with pytest.raises(ReplyUncertain):
            await conn.send(b"a@example.org", b"b@example.org", WIRE)
        assert not conn.usable

    run(script, body, timeout=0.3, MAILER_DATA_TIMEOUT="0.5")


@pytest.mark.parametrize("final", [b"250OK queued\r\n", b"354 what?\r\n"])
def test_a_malformed_or_unexpected_final_reply_is_uncertain(final: bytes) -> None:
    """The message went out; a reply that is not a reply (or a 3xx) does not say it was refused:
    retrying it in the same run would store it again."""
    script = Script(answer=lambda line: final if line == b"<message>" else None)

    async def body(conn: Connection) -> None:
        with pytest.raises(ReplyUncertain):
            await conn.send(b"a@example.org", b"b@example.org", WIRE)

    run(script, body)


def _delay_end_of_data_replies(script: Script, seconds: float) -> None:
    """Make ``script`` write each end-of-data reply ("250 2.0.0 queued") ``seconds`` late, as a slow filter would."""
    original = script.handle

    async def delayed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        class Slow:
            def write(self, data: bytes) -> None:
                if data.startswith(b"250 2.0.0 queued"):
                    asyncio.get_running_loop().call_later(seconds, writer.write, data)
                else:
                    writer.write(data)

            async def drain(self) -> None:
                await writer.drain()

            def close(self) -> None:
                writer.close()

        await original(reader, Slow())  # type: ignore[arg-type]

    script.handle = delayed  # type: ignore[method-assign]


def test_the_end_of_data_reply_has_its_own_longer_timeout() -> None:
    """A filter that takes longer than the command timeout to accept the message is waited for."""
    slow = Script()
    queued = asyncio.Event()

    async def body(conn: Connection) -> None:
        assert conn.data_timeout == 3 and conn.timeout == 0.3
        reply = await conn.send(b"a@example.org", b"b@example.org", WIRE)
        assert reply.startswith("250")
        queued.set()

    _delay_end_of_data_replies(slow, 1.0)  # > MAILER_TIMEOUT
    run(slow, body, timeout=0.3, MAILER_DATA_TIMEOUT="3")
    assert queued.is_set()


def test_a_command_after_a_long_end_of_data_wait_times_out_at_its_own_deadline() -> None:
    """The connection has one timer for its waits. Set for a message's end-of-data reply (MAILER_DATA_TIMEOUT, an
    hour here) while a slow filter holds it, it is set earlier again for the next command (MAILER_TIMEOUT): a
    server silent after the next MAIL is given up on at the command's deadline, not an hour later."""
    mails: list[bytes] = []

    def answer(line: bytes) -> bytes | None:
        if line.startswith(b"MAIL"):
            mails.append(line)
            return b"" if len(mails) == 2 else None  # the second MAIL: no reply, ever
        return None

    script = Script(pipelining=False, answer=answer)
    _delay_end_of_data_replies(script, 0.8)  # past MAILER_TIMEOUT: the timer goes off during the wait

    async def body(conn: Connection) -> None:
        assert (await conn.send(b"a@example.org", b"b@example.org", WIRE)).startswith("250")
        with pytest.raises(aiosmtplib.SMTPReadTimeoutError):
            # (the guard ends the test if the command were waited for as long as a message: an hour)
            await asyncio.wait_for(conn.send(b"a@example.org", b"c@example.org", WIRE), 60)
        assert not conn.usable

    run(script, body, timeout=0.3, MAILER_DATA_TIMEOUT="3600")


def test_a_malformed_reply_retires_the_connection() -> None:
    script = Script(answer=lambda line: b"hello there\r\n" if line.startswith(b"RCPT") else None)

    async def body(conn: Connection) -> None:
        with pytest.raises(aiosmtplib.SMTPResponseException, match="malformed reply"):
            await conn.send(b"a@example.org", b"b@example.org", WIRE)
        assert not conn.usable

    run(script, body)


@pytest.mark.parametrize(
    ("reply", "complaint"),
    [
        (b"250-" + b"x" * 9000 + b"\r\n250 ok\r\n", "malformed reply"),  # one line longer than 8192
        (b"250 " + b"x" * 40000, "reply too long"),  # no line end, ever: memory stays bounded
        (b"".join(b"250-%d\r\n" % i for i in range(5000)), "reply too long"),  # endless continuation
    ],
)
def test_an_oversized_reply_is_refused_before_it_fills_memory(reply: bytes, complaint: str) -> None:
    def answer(line: bytes) -> bytes | None:
        return reply if line.startswith(b"RCPT") else b"" if line == b"DATA" else None  # then silence

    script = Script(answer=answer)

    async def body(conn: Connection) -> None:
        with pytest.raises(aiosmtplib.SMTPResponseException, match=complaint):
            await conn.send(b"a@example.org", b"b@example.org", WIRE)
        assert not conn.usable

    run(script, body)
