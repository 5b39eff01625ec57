"""Bounces that can be trusted, through the real command.

- Real DSNs of other systems (tests/bounce_samples/, see its README): each read as the right kind, and,
  tied to no delivery of this project, every one of them "not ours" and left in place.
- The real loop: ``send`` through a private Postfix on loopback (tests/postfix_instance.py) that
  delivers to Maildirs and bounces unknown users with its own DSNs (and, relaying to a server that
  answers 452, soft ones), a private Dovecot (tests/dovecot_instance.py) serving the bounce Maildir
  over IMAP with TLS from a test CA, ``bounces`` over IMAP, then a change sent to who is left.
- Forged and stranger DSNs change nothing; unreadable messages are quarantined and the genuine bounce
  after them processed; every mailbox problem has its exit code.
"""

from __future__ import annotations

import imaplib
import re
import shutil
import socket
import sqlite3
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from aiosmtpd.controller import Controller

from mailer.audience.bounces import QUARANTINE_HEADER, read_bounce
from mailer.record.subscribers import Subscribers
from tests import dovecot_instance, postfix_instance
from tests.conftest import FUTURE_NOW, VALID, Result, future_schedule, run_cli
from tests.smtp_server import free_port

SAMPLES = Path(__file__).resolve().parent.parent / "bounce_samples"
HARD = {
    "postfix-hard-5.1.1.eml": ("ada@gone.example.net", "5.1.1"),
    "gmail-hard-5.2.1.eml": ("kijitora-cat@google.example.com", "5.2.1"),
    "exim-dsn-hard-5.0.0.eml": ("kijitora@example.net", "5.0.0"),
    "exim-plain-hard.eml": ("kijitora@example.ed.jp", ""),
    "exchange2007-hard-5.1.1.eml": ("mikeneko@example.co.jp", "5.1.1"),
    "exchange2000-hard-5.1.1.eml": ("userx@example.com", "5.1.1"),
}
SOFT = {
    "postfix-soft-4.2.2.eml": ("alan@full.example.net", "4.2.2"),
    "gmail-soft-5.2.2.eml": ("kijitora@google.example.com", "5.2.2"),  # mailbox full: soft even as 5.x.x
    "exchange2007-soft-4.4.7.eml": ("gwang1@student.mlcsyd.nsw.edu.au", "4.4.7"),
}
NOT_A_BOUNCE = (
    b"From: Ada <ada@example.org>\nTo: lm@ri.se\nSubject: thanks!\nMessage-ID: <x@y>\n\nSee you on Thursday.\n"
)


@pytest.mark.parametrize(("name", "expected"), [*HARD.items(), *SOFT.items()])
def test_each_sample_is_read_as_the_right_kind(name: str, expected: tuple[str, str]) -> None:
    reading = read_bounce((SAMPLES / name).read_bytes())
    assert reading is not None and not reading.warning
    (failure,) = reading.failures
    assert (failure.key, failure.status) == expected
    assert failure.kind == ("hard" if name in HARD else "soft")


def test_the_returned_message_id_is_read_from_the_returned_headers() -> None:
    reading = read_bounce((SAMPLES / "postfix-hard-5.1.1.eml").read_bytes())
    assert reading is not None
    assert reading.returned_id == "<0000000000000000000000000000000000000000@example.org>"


def test_a_delay_warning_and_an_ordinary_message_are_not_failures() -> None:
    warning = read_bounce((SAMPLES / "delayed-warning-4.3.0.eml").read_bytes())
    assert warning is not None and warning.warning and warning.failures == ()
    assert read_bounce(NOT_A_BOUNCE) is None


def maildir(root: Path, messages: dict[str, bytes]) -> Path:
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name, raw in messages.items():
        (root / "new" / name).write_bytes(raw)
    return root


def project(tmp_path: Path) -> list[str]:
    (tmp_path / "seminars.yaml").write_text(VALID)
    return ["--schedule", str(tmp_path / "seminars.yaml"), "--state", str(tmp_path / "state")]


def summary(new: int, *, hard: int = 0, soft: int = 0, warnings: int = 0, not_ours: int = 0, other: int = 0,
            quarantined: int = 0, earlier: int = 0) -> str:  # fmt: skip
    """The first line of ``bounces``."""
    line = (
        f"Read {new} new message{'' if new == 1 else 's'}: {hard} hard bounces, {soft} soft, {warnings} delay "
        f"warnings (not counted), {not_ours} not ours, {other} not bounces (left in place), {quarantined} quarantined"
    )
    return line + (f"; {earlier} left in place by earlier runs (not read again)" if earlier else "")


def test_real_bounces_of_mail_we_never_sent_are_not_ours_and_change_nothing(tmp_path: Path) -> None:
    """Issue 18, 1: a DSN naming an address is believed only for a delivery of ours to it."""
    paths = project(tmp_path)
    messages = {p.name: p.read_bytes() for p in SAMPLES.glob("*.eml")}
    box = maildir(tmp_path / "Maildir", {**messages, "hello.eml": NOT_A_BOUNCE})
    result = run_cli("bounces", "--maildir", str(box), *paths)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == summary(11, not_ours=10, other=1)
    assert (
        "not ours: postfix-hard-5.1.1.eml claims ada@gone.example.net hard 5.1.1, but names no delivery" in result.out
    )
    with Subscribers(tmp_path / "state", "learning-machines") as store:
        assert store.unsubscribed_keys() == set()
    assert len(list((box / "new").iterdir())) == 11  # all left in place
    again = run_cli("bounces", "--maildir", str(box), *paths)
    assert again.out.splitlines() == [summary(0, earlier=11)]  # issue 18, 9: "Read N" counts new mail only


# --- the real loop -------------------------------------------------------------------------------------

USERS = ("ann", "bob", "cy", "dee")
GONE = ("gone1", "gone2")  # unknown to Postfix: accepted, then bounced with its own DSN
FULL = "fay@full.example.net"  # relayed to a server that answers 452: a soft DSN
PASSWORD = "imap-secret-4711"


class _Full:
    async def handle_RCPT(
        self, server: object, session: object, envelope: object, address: str, options: list[str]
    ) -> str:
        return f"452 4.2.2 <{address}>: Mailbox full, try again later"


@dataclass
class Loop:
    postfix: postfix_instance.Postfix
    dovecot: dovecot_instance.Dovecot
    ca: Path
    root: Path  # the organiser's project folder
    env: dict[str, str]  # send's and bounces' settings
    runs: list[Result]  # send, bounces, send (the change), bounces
    dsns: list[bytes]  # the real DSNs Postfix returned, as bounces read them

    def args(self, state: Path | None = None) -> list[str]:
        return [
            "--schedule", str(self.root / "seminars-2030.yaml"), "--recipients", str(self.root / "recipients"),
            "--state", str(state or self.root / "state"),
        ]  # fmt: skip

    def imap(self, user: str = "bounces", **more: str) -> dict[str, str]:
        return {
            **self.env,
            "BOUNCES_IMAP_HOST": "127.0.0.1",
            "BOUNCES_IMAP_PORT": str(self.dovecot.tls_port),
            "BOUNCES_IMAP_SECURITY": "tls",
            "BOUNCES_IMAP_USERNAME": user,
            "BOUNCES_IMAP_PASSWORD": PASSWORD,
            "BOUNCES_IMAP_CA_FILE": str(self.ca),
            **more,
        }

    def client(self, user: str) -> imaplib.IMAP4_SSL:
        client = imaplib.IMAP4_SSL(
            "127.0.0.1", self.dovecot.tls_port, ssl_context=ssl.create_default_context(cafile=str(self.ca))
        )
        client.login(user, PASSWORD)
        return client

    def folder(self, user: str, folder: str = "INBOX") -> list[bytes]:
        """Every message of ``user``'s ``folder``, as the server has it."""
        client = self.client(user)
        try:
            client.select(folder, readonly=True)
            _, data = client.uid("SEARCH", "ALL")
            found = []
            for uid in data[0].split():
                _, parts = client.uid("FETCH", uid, "(BODY.PEEK[])")
                found += [p[1] for p in parts if isinstance(p, tuple)]
            return found
        finally:
            client.logout()

    def append(self, user: str, messages: list[bytes]) -> None:
        client = self.client(user)
        try:
            for raw in messages:
                status, said = client.append("INBOX", None, None, raw)
                assert status == "OK", said
        finally:
            client.logout()


def _wait_for(what: str, count: int, found: object) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert callable(found)
        if found() >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"{what}: {found()} of {count} after 60 s")


def _new_mail(path: Path) -> int:
    return len(list((path / "new").iterdir())) if (path / "new").is_dir() else 0


def _run(args: list[str], env: dict[str, str]) -> Result:
    result = run_cli(*args, env=env)
    assert "Traceback" not in result.err, result.err
    return result


REASONS = (postfix_instance.available(), dovecot_instance.available())
needs_the_loop = pytest.mark.skipif(any(REASONS), reason=f"LOUD SKIP: {[r for r in REASONS if r]}")


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loop]:
    """Send an announcement to 4 real mailboxes, 2 unknown users and 1 full one; read the DSNs over
    IMAP; send a change of the seminar; read again. Once per module: the tests below read the results."""
    root = tmp_path_factory.mktemp("loop")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    for name, pem in (
        ("cert.pem", cert.cert_chain_pems[0]),
        ("key.pem", cert.private_key_pem),
        ("ca.pem", ca.cert_pem),
    ):
        pem.write_to_path(str(root / name))
    remote = Controller(_Full(), hostname="127.0.0.1", port=free_port())
    remote.start()
    users = ("bounces", "forged", "malformed", *USERS)
    postfix = postfix_instance.start(deliver="maildirs", users=users)
    dovecot = None
    try:
        conf = postfix.root / "conf"
        (conf / "transport").write_text(f"full.example.net smtp:[127.0.0.1]:{remote.port}\n")
        with (conf / "main.cf").open("a") as main:
            main.write(
                f"transport_maps = texthash:{conf}/transport\nrelay_domains = full.example.net\n"
                "maximal_queue_lifetime = 0\nbounce_queue_lifetime = 0\nsmtp_tls_security_level = none\n"
            )
        postfix._postfix("reload")
        dovecot = dovecot_instance.start(
            mail=postfix.mailbox.parent,
            users=dict.fromkeys(users, PASSWORD),
            cert=root / "cert.pem",
            key=root / "key.pem",
        )
        schedule = future_schedule(root)
        (root / "recipients").mkdir()
        people = [f"{u}@example.org" for u in (*USERS, *GONE)] + [FULL]
        (root / "recipients" / "learning-machines.txt").write_text("\n".join(people) + "\n")
        env = {
            "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(postfix.port), "SMTP_SECURITY": "none",
            "SMTP_USERNAME": "", "SMTP_PASSWORD": "", "MAILER_ENV_FILE": "/nonexistent",
            "MAILER_ENVELOPE_FROM": "bounces@example.org", "MAILER_VERP": "on", "MAILER_TOKEN_KEY": "k" * 32,
        }  # fmt: skip
        made = Loop(postfix, dovecot, root / "ca.pem", root, env, [], [])
        bounces = postfix.maildir("bounces")
        made.runs.append(_run([*made.args(), "send", "--now", FUTURE_NOW], env))
        _wait_for("DSNs of the announcement", 3, lambda: _new_mail(bounces))
        made.dsns += [p.read_bytes() for p in sorted((bounces / "new").iterdir())]
        made.runs.append(_run([*made.args(), "bounces"], made.imap()))
        text = schedule.read_text(encoding="utf-8")
        schedule.write_text(
            text.replace(
                "affiliation: University of Copenhagen\n",
                "affiliation: University of Copenhagen\n    location: Room 2\n",
                1,
            ),
            encoding="utf-8",
        )
        made.runs.append(_run([*made.args(), "send", "--now", "2030-01-15T09:00"], env))
        _wait_for("the soft DSN of the change", 1, lambda: _new_mail(bounces))
        made.dsns += [p.read_bytes() for p in sorted((bounces / "new").iterdir())]
        made.runs.append(_run([*made.args(), "bounces"], made.imap()))
        yield made
    finally:
        if dovecot is not None:
            dovecot.stop()
        postfix.stop()
        remote.stop()


@needs_the_loop
def test_the_real_loop_unsubscribes_hard_bounces_and_the_change_reaches_only_the_others(loop: Loop) -> None:
    sent, read, change, read_again = loop.runs
    assert sent.code == 0, sent.out + sent.err
    assert read.code == 0, read.out + read.err
    first, *rest = read.out.splitlines()
    assert first == summary(3, hard=2, soft=1)
    assert sorted(rest) == [  # in the order the DSNs arrived
        "unsubscribed: gone1@example.org (bounced: hard 5.1.1)",
        "unsubscribed: gone2@example.org (bounced: hard 5.1.1)",
    ]
    assert change.code == 0, change.out + change.err
    for user in USERS:  # the announcement and the change, once each
        got = [p.read_bytes() for p in (loop.postfix.maildir(user) / "new").iterdir()]
        assert len(got) == 2 and sum(b"Room 2" in raw for raw in got) == 1, user
    log = loop.postfix.log.read_text()
    assert log.count("to=<gone1@example.org>") == 1 and log.count("to=<gone2@example.org>") == 1  # no change
    # Issue 18, 7: the full mailbox bounced the announcement and its change: one seminar, counted once.
    assert read_again.out.splitlines() == [summary(1, soft=1)], read_again.out + read_again.err
    with Subscribers(loop.root / "state", "learning-machines") as store:
        assert store.unsubscribed_keys() == {"gone1@example.org", "gone2@example.org"}
    with sqlite3.connect(loop.root / "state" / "subscribers.sqlite3") as db:
        rows = db.execute("SELECT message_id, kind FROM bounces WHERE key = ?", (FULL,)).fetchall()
    assert len(rows) == 1 and rows[0][0].startswith("seminar ") and rows[0][1] == "soft"
    # Read bounces were moved to the processed folder; nothing is left in the inbox.
    assert loop.folder("bounces") == [] and len(loop.folder("bounces", "seminar-mailer-processed")) == 4


@needs_the_loop
def test_each_delivery_had_its_own_envelope_and_the_dsns_return_headers_only(loop: Loop) -> None:
    """VERP (MAILER_VERP=on) and, since Postfix offers DSN, ENVID and RET=HDRS on MAIL FROM."""
    tokens = set()
    for raw in loop.dsns:
        (to,) = re.findall(rb"^To: bounces\+([0-9a-f]{36})@example\.org$", raw, re.MULTILINE)
        (envid,) = re.findall(rb"^Original-Envelope-Id: ([0-9a-f]{36})$", raw, re.MULTILINE)
        assert to == envid
        tokens.add(to)
        assert b"text/rfc822-headers" in raw and b"text/html" not in raw and len(raw) < 6000
    assert len(tokens) == 4  # gone1, gone2, fay's announcement, fay's change


def _dsn(failed: list[str], *, to: str = "bounces@example.org", envid: str = "", returned: str = "") -> bytes:
    """A hand-written RFC 3464 report, as anyone may send one to the public bounce address."""
    blocks = "".join(f"\nFinal-Recipient: rfc822; {a}\nAction: failed\nStatus: 5.1.1\n" for a in failed)
    headers = f"From: someone@evil.test\nTo: {to}\nMessage-ID: {returned}\nSubject: seminar\n" if returned else ""
    return (
        f"From: someone@evil.test\nTo: {to}\nSubject: Undelivered Mail Returned to Sender\nMessage-ID: <f@evil.test>\n"
        'MIME-Version: 1.0\nContent-Type: multipart/report; report-type=delivery-status; boundary="b"\n\n'
        "--b\nContent-Type: text/plain\n\nYour message could not be delivered.\n\n"
        f"--b\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; evil.test\n"
        f"{f'Original-Envelope-Id: {envid}' if envid else 'X-Note: none'}\n{blocks}\n"
        f"--b\nContent-Type: text/rfc822-headers\n\n{headers}\n--b--\n"
    ).encode()


@needs_the_loop
def test_forged_and_stranger_dsns_change_nothing_and_are_left_in_place(loop: Loop, tmp_path: Path) -> None:
    state = tmp_path / "state"
    shutil.copytree(loop.root / "state", state)
    with sqlite3.connect(state / "ledger.sqlite3") as db:
        (ann_id,) = db.execute(
            "SELECT message_id FROM deliveries WHERE recipient = 'ann@example.org' LIMIT 1"
        ).fetchone()
    fake = "0" * 36
    near = ann_id[1:21] + "f" * 16  # ann's delivery, but a MAC we did not make
    forged = [
        _dsn(["ann@example.org"]),  # quotes no message of ours
        _dsn([f"{u}@example.org" for u in USERS]),  # names every subscriber at once
        _dsn(["ann@example.org"], to=f"bounces+{fake}@example.org"),  # a made-up VERP token
        _dsn(["ann@example.org"], envid=near),  # a made-up ENVID for a real delivery
        _dsn(["bob@example.org"], returned=ann_id),  # ann's real Message-ID, claiming bob failed
        *(_dsn([f"stranger{i}@example.net"]) for i in range(3)),  # never on the list
    ]
    loop.append("forged", forged)
    args = loop.args(state)
    result = _run([*args, "bounces"], loop.imap("forged"))
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == summary(8, not_ours=8)
    assert sum(line.startswith("not ours: UID ") for line in lines) == 8
    with Subscribers(state, "learning-machines") as store:
        assert store.unsubscribed_keys() == {"gone1@example.org", "gone2@example.org"}
    with sqlite3.connect(state / "subscribers.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM bounces").fetchone()[0] == 3  # the loop's own, nothing more
    assert len(loop.folder("forged")) == 8  # left in place
    again = _run([*args, "bounces"], loop.imap("forged"))
    assert again.out.splitlines() == [summary(0, earlier=8)]


def _deep(kind: bytes, n: int) -> bytes:
    if kind == b"multipart":
        return (
            b"From: a@b.c\nContent-Type: multipart/mixed; boundary=a\n\n"
            + b"--a\nContent-Type: multipart/mixed; boundary=a\n\n" * n
        )
    return b"From: a@b.c\nContent-Type: message/rfc822\n\n" + b"Content-Type: message/rfc822\n\n" * n


UNREADABLE = {
    "random bytes": (bytes(range(256)) * 20, "no header fields at the top: not an email message"),
    "NUL in From": (
        b"From: ann\x00@example.org\nTo: bounces@example.org\n\nhi\n",
        "a NUL byte in the header, on line 1",
    ),
    "3000-deep multipart": (_deep(b"multipart", 3000), "3001 nested multipart or message parts; at most 32 are read"),
    "3000-deep message/rfc822": (
        _deep(b"message", 3000),
        "3001 nested multipart or message parts; at most 32 are read",
    ),
}


@needs_the_loop
def test_unreadable_messages_are_quarantined_and_the_bounce_after_them_is_processed(loop: Loop, tmp_path: Path) -> None:
    """Issue 18, 2: over IMAP (the empty message, which IMAP cannot append, in a local Maildir below)."""
    state = tmp_path / "state"
    shutil.copytree(loop.root / "state", state)
    genuine = next(d for d in loop.dsns if b"Status: 5.1.1" in d)  # a real hard bounce of ours (counted once)
    loop.append("malformed", [raw for raw, _ in UNREADABLE.values()] + [genuine])
    result = _run([*loop.args(state), "bounces"], loop.imap("malformed"))
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    # Dovecot stores the NUL as 0x80: then it is a readable message with an odd byte, and no bounce.
    assert lines[0] == summary(5, hard=1, other=1, quarantined=3)
    assert lines[1:] == [f"quarantined: UID {n}: {why}" for n, (_, why) in enumerate(UNREADABLE.values(), 1) if n != 2]
    aside = loop.folder("malformed", "seminar-mailer-quarantine")
    assert aside[0].startswith(f"{QUARANTINE_HEADER}: no header fields at the top".encode())
    assert len(aside) == 3 and len(loop.folder("malformed")) == 1
    assert len(loop.folder("malformed", "seminar-mailer-processed")) == 1
    # A local Maildir: the same, an empty file too, into the same folder names as over IMAP.
    box = maildir(
        tmp_path / "Maildir",
        {"0-empty": b"", **{f"{n}": raw for n, (raw, _) in enumerate(UNREADABLE.values(), 1)}, "9-genuine": genuine},
    )
    local = _run([*loop.args(state), "bounces", "--maildir", str(box)], loop.env)
    assert local.out.splitlines() == [
        summary(6, hard=1, quarantined=5),
        "quarantined: 0-empty: empty message",
        *(f"quarantined: {n}: {why}" for n, (_, why) in enumerate(UNREADABLE.values(), start=1)),
    ]
    assert len(list((box / ".seminar-mailer-quarantine" / "cur").iterdir())) == 5
    assert [p.name for p in (box / ".seminar-mailer-processed" / "cur").iterdir()] == ["9-genuine:2,"]


class _Greeter(threading.Thread):
    """A TCP server on loopback that greets like an IMAP server without STARTTLS, or not at all."""

    def __init__(self, greeting: bytes | None) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.greeting = greeting

    def run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                if self.greeting is None:  # as an implicit-TLS port: waits for a TLS hello, says nothing
                    while conn.recv(1000):
                        pass
                    continue
                conn.sendall(self.greeting)
                while data := conn.recv(1000):
                    tag = data.split(b" ", 1)[0]
                    conn.sendall(b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n" + tag + b" OK done\r\n")


@pytest.fixture(scope="module")
def greeters() -> Iterator[tuple[_Greeter, _Greeter]]:
    plain, silent = _Greeter(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] plain only\r\n"), _Greeter(None)
    plain.start()
    silent.start()
    yield plain, silent
    plain.sock.close()
    silent.sock.close()


PROBLEMS = {
    # name: (settings over the good ones, exit code, words in the error)
    "misspelled folder": ({"BOUNCES_IMAP_FOLDER": "Inbx"}, 2, "has no folder BOUNCES_IMAP_FOLDER='Inbx' (NO "),
    "a private CA not given": ({"BOUNCES_IMAP_CA_FILE": ""}, 2, "BOUNCES_IMAP_CA_FILE=<PEM file> for a private CA"),
    "wrong password": ({"BOUNCES_IMAP_PASSWORD": "nope"}, 2, "rejected the login of BOUNCES_IMAP_USERNAME='bounces'"),
    "tls on the starttls port": ({"PORT": "starttls_port"}, 2, "does not speak BOUNCES_IMAP_SECURITY=tls"),
    "the SMTP port": ({"PORT": "smtp", "BOUNCES_IMAP_SECURITY": "starttls"}, 2, "is not an IMAP server (it said '220 "),
    "no STARTTLS": ({"PORT": "plain", "BOUNCES_IMAP_SECURITY": "starttls"}, 2, "does not offer STARTTLS"),
    "starttls on a tls port": (
        {"PORT": "silent", "BOUNCES_IMAP_SECURITY": "starttls", "MAILER_TIMEOUT": "1"},
        2,
        "sent no IMAP greeting within MAILER_TIMEOUT=1 s",
    ),
    "nothing listens": ({"PORT": "closed"}, 75, "cannot reach the IMAP server"),
    "a bad port setting": ({"BOUNCES_IMAP_PORT": "abc"}, 2, "BOUNCES_IMAP_PORT='abc' is not a number"),
    "a missing CA file": ({"BOUNCES_IMAP_CA_FILE": "/nonexistent.pem"}, 2, "is not a readable file"),
}


def _problem_env(loop: Loop, greeters: tuple[_Greeter, _Greeter], settings: dict[str, str]) -> dict[str, str]:
    more = dict(settings)
    if port := more.pop("PORT", None):
        ports = {
            "starttls_port": loop.dovecot.starttls_port, "smtp": loop.postfix.port,
            "plain": greeters[0].port, "silent": greeters[1].port, "closed": free_port(),
        }  # fmt: skip
        more["BOUNCES_IMAP_PORT"] = str(ports[port])
    return loop.imap(**more)


@needs_the_loop
@pytest.mark.parametrize("problem", PROBLEMS)
def test_each_mailbox_problem_has_its_exit_code_and_the_setting_to_change(
    loop: Loop, greeters: tuple[_Greeter, _Greeter], tmp_path: Path, problem: str
) -> None:
    settings, code, words = PROBLEMS[problem]
    env = _problem_env(loop, greeters, settings)
    result = run_cli(*loop.args(tmp_path / "state"), "bounces", env=env, timeout=20)
    assert (result.code, result.out) == (code, ""), result.err
    assert words in result.err and result.err.startswith("error: ") and result.err.count("\n") == 1, result.err
    assert PASSWORD not in result.err and "Traceback" not in result.err


@needs_the_loop
def test_check_validates_the_bounce_settings_and_check_imap_logs_in_and_selects(
    loop: Loop, greeters: tuple[_Greeter, _Greeter]
) -> None:
    base = [*loop.args(), "check"]
    bad = run_cli(*base, env=loop.imap(BOUNCES_IMAP_PORT="abc"))  # issue 18, 5
    assert bad.code == 2 and "BOUNCES_IMAP_PORT='abc' is not a number" in bad.err, bad.out + bad.err
    good = run_cli(*base, "--imap", env=loop.imap())
    assert good.code == 0, good.out + good.err
    steps = [line.split()[1] for line in good.out.splitlines() if line.startswith("  ok")]
    assert steps == ["connect", "TLS", "LOGIN", "SELECT", "folder"]
    assert f"bounce settings: OK, IMAP tls to 127.0.0.1:{loop.dovecot.tls_port}, folder INBOX" in good.out
    assert "  ok    connect   127.0.0.1:" in good.out and "Dovecot (Debian) ready." in good.out  # its words
    assert "LOGIN     as bounces: OK Logged in" in good.out and "SELECT    INBOX: OK, 0 messages" in good.out, good.out
    assert good.out.splitlines()[-1] == "IMAP: OK, bounces would log in and read this folder"
    folder = run_cli(*base, "--imap", env=loop.imap(BOUNCES_IMAP_FOLDER="Inbx"))
    assert folder.code == 2 and "  FAIL  SELECT    " in folder.out and "wanted one of: INBOX" in folder.out
    assert PASSWORD not in good.out + folder.out


def test_bounces_help_says_it_unsubscribes_and_its_output_goes_through_print(tmp_path: Path) -> None:
    """Issue 18, 8 and 9: the words; ``bounces | head -1`` (a closed pipe) is the CLI's to handle."""
    result = run_cli("bounces", "--help")
    assert "A hard bounce unsubscribes at once" in result.out and "suppress" not in result.out
    assert "read the bounce mailbox and unsubscribe addresses that" in run_cli("--help").out
    assert "seminar-mailer-processed" in result.out and "seminar-mailer-quarantine" in result.out


@needs_the_loop
def test_one_listing_of_who_gets_no_mail_and_one_command_undoes_each(loop: Loop, tmp_path: Path) -> None:
    """Issue 18, 8: refused at RCPT, bounced, unsubscribed by the person, removed by the organiser."""
    import datetime as dt

    from mailer.record.ledger import Ledger

    state, recipients = tmp_path / "state", tmp_path / "recipients"
    shutil.copytree(loop.root / "state", state)
    shutil.copytree(loop.root / "recipients", recipients)
    (recipients / "unsubscribed.txt").write_text("# mine\ndee@example.org\n")
    with Subscribers(state, "learning-machines") as store:
        store.unsubscribe("ann@example.org", "one-click")
        store.unsubscribe("bob@example.org", "command")
    ledger = Ledger(state, "learning-machines")
    ledger.suppress([("cy@example.org", "cy@example.org", "550 5.1.1 no such user", "m")], now=dt.datetime.now(dt.UTC))
    ledger.close()
    args = ["--schedule", str(loop.root / "seminars-2030.yaml"), "--recipients", str(recipients), "--state", str(state)]
    today = dt.datetime.now(dt.UTC).date().isoformat()
    shown = run_cli(*args, "status", env=loop.env)
    listing = shown.out[shown.out.index("Suppressed (") :].splitlines()
    assert listing[0] == "Suppressed (6; `seminar-mailer unsuppress ADDRESS` lets any of them receive mail again):"
    assert sorted(listing[1:]) == sorted([
        "  dee@example.org: " + str(recipients / "unsubscribed.txt") + ":2 (removed by the organiser)",
        f"  gone1@example.org: hard 5.1.1 (bounced on {today})",
        f"  gone2@example.org: hard 5.1.1 (bounced on {today})",
        f"  ann@example.org: the one-click link in a message (unsubscribed by the person on {today})",
        f"  bob@example.org: the unsubscribe command (removed by the organiser on {today})",
        f"  cy@example.org: 550 5.1.1 no such user (refused at RCPT on {today})",
    ])  # fmt: skip
    roster = run_cli(*args, "subscribers", env=loop.env).out
    assert f"gone1@example.org\tunsubscribed\t{recipients}/learning-machines.txt:5; unsubscribed: bounced: " in roster
    for who, was in (
        ("gone1@example.org", f"bounced: hard 5.1.1 on {today}"),
        ("ann@example.org", f"unsubscribed by the person: the one-click link in a message on {today}"),
        ("bob@example.org", f"removed by the organiser: the unsubscribe command on {today}"),
        ("cy@example.org", f"refused at RCPT: 550 5.1.1 no such user on {today}"),
    ):
        undo = run_cli(*args, "unsuppress", who, env=loop.env)
        assert (undo.code, undo.out) == (
            0,
            f"{who} is no longer suppressed (it was {was}): the next send includes it.\n",
        )
    in_file = run_cli(*args, "unsuppress", "dee@example.org", env=loop.env)
    assert in_file.code == 2 and f"dee@example.org is in {recipients}/unsubscribed.txt:2" in in_file.err
    again = run_cli(*args, "unsuppress", "gone1@example.org", env=loop.env)
    assert again.out.startswith("gone1@example.org is not suppressed")
    after = run_cli(*args, "status", env=loop.env).out
    assert after.count("\n  ") - after[: after.index("Suppressed (")].count("\n  ") == 2  # gone2 and dee remain
    with sqlite3.connect(state / "subscribers.sqlite3") as db:  # gone1's bounces are forgotten: counting starts again
        assert db.execute("SELECT count(*) FROM bounces WHERE key = 'gone1@example.org'").fetchone()[0] == 0


@needs_the_loop
def test_soft_bounces_about_the_threshold_of_seminars_unsubscribe(loop: Loop, tmp_path: Path) -> None:
    state = tmp_path / "state"
    shutil.copytree(loop.root / "state", state)
    soft = next(d for d in loop.dsns if b"Status: 4.2.2" in d)
    box = maildir(tmp_path / "Maildir", {"soft": soft})
    result = _run([*loop.args(state), "bounces", "--maildir", str(box)], {**loop.env, "MAILER_SOFT_BOUNCES": "1"})
    assert result.out.splitlines() == [
        summary(1, soft=1),
        f"unsubscribed: {FULL} (bounced: soft about 1 seminars, the last 4.2.2)",
    ]
    bad = _run([*loop.args(state), "bounces", "--maildir", str(box)], {**loop.env, "MAILER_SOFT_BOUNCES": "0"})
    assert (bad.code, bad.err) == (
        2,
        "error: MAILER_SOFT_BOUNCES='0'; wanted a whole number of distinct seminars, from 1 to 1000\n",
    )


class _Vanishing(threading.Thread):
    """An IMAP server over TLS that logs in and lists two messages, then hangs up when one is fetched:
    a server going away mid-run, which a real one does only at a moment a test cannot choose."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__(daemon=True)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.context = context

    def run(self) -> None:
        try:
            raw, _ = self.sock.accept()
        except OSError:
            return
        with self.context.wrap_socket(raw, server_side=True) as conn, conn.makefile("rb") as lines:
            conn.sendall(b"* OK [CAPABILITY IMAP4rev1 AUTH=PLAIN] ready\r\n")
            replies = {
                b"CAPABILITY": b"* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n",
                b"SELECT": b"* 2 EXISTS\r\n",
                b"LIST": b'* LIST () "/" INBOX\r\n',
                b"UID SEARCH": b"* SEARCH 1 2\r\n",
            }
            while line := lines.readline():
                tag, _, command = line.partition(b" ")
                if command.startswith(b"UID FETCH"):
                    return  # gone
                said = next((r for c, r in replies.items() if command.startswith(c)), b"")
                conn.sendall(said + tag + b" OK done\r\n")


@needs_the_loop
def test_a_server_going_away_mid_run_is_exit_75(loop: Loop, tmp_path: Path) -> None:
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    server = _Vanishing(context)
    server.start()
    env = loop.imap(BOUNCES_IMAP_PORT=str(server.port), BOUNCES_IMAP_CA_FILE=str(tmp_path / "ca.pem"))
    result = run_cli(*loop.args(tmp_path / "state"), "bounces", env=env, timeout=20)
    server.sock.close()
    assert (result.code, result.out) == (75, ""), result.err
    assert f"the IMAP server 127.0.0.1:{server.port} went away mid-run" in result.err and "Traceback" not in result.err


@needs_the_loop
def test_an_mbox_moves_ours_and_leaves_the_rest(loop: Loop, tmp_path: Path) -> None:
    import mailbox

    state = tmp_path / "state"
    shutil.copytree(loop.root / "state", state)
    path = tmp_path / "bounces.mbox"
    box = mailbox.mbox(path)
    for raw in (next(d for d in loop.dsns if b"Status: 5.1.1" in d), NOT_A_BOUNCE, b"\0\0\0"):
        box.add(raw)
    box.close()
    result = _run([*loop.args(state), "bounces", "--mbox", str(path)], loop.env)
    assert result.out.splitlines() == [
        summary(3, hard=1, other=1, quarantined=1),
        "quarantined: message 3: no header fields at the top: not an email message",
    ]
    assert len(mailbox.mbox(path)) == 1 and len(mailbox.mbox(tmp_path / "bounces.mbox.processed")) == 1
    assert len(mailbox.mbox(tmp_path / "bounces.mbox.quarantine")) == 1


def test_init_writes_the_bounce_settings_and_the_cron_line_and_says_so(tmp_path: Path) -> None:
    """Issue 18, 6: each setting commented on its own line; uncommented, every line is a valid KEY=value."""
    from dotenv import dotenv_values

    from mailer.deliver.bounce_config import check_bounce_settings

    result = run_cli("init", "--date", "2031-03-01", cwd=tmp_path)
    assert result.code == 0, result.err
    example = (tmp_path / ".env.example").read_text()
    block = example[example.index("# Bounces") :]
    settings = [line[2:] for line in block.splitlines() if re.match(r"# [A-Z_]+=", line)]
    assert [s.split("=")[0] for s in settings] == [
        "MAILER_ENVELOPE_FROM", "MAILER_SOFT_BOUNCES", "BOUNCES_IMAP_HOST", "BOUNCES_IMAP_USERNAME",
        "BOUNCES_IMAP_PASSWORD", "BOUNCES_IMAP_SECURITY", "BOUNCES_IMAP_PORT", "BOUNCES_IMAP_CA_FILE",
        "BOUNCES_IMAP_FOLDER", "BOUNCES_IMAP_DONE",
    ]  # fmt: skip
    uncommented = tmp_path / "uncommented.env"
    uncommented.write_text("\n".join(settings) + "\n")
    values = {k: v or "" for k, v in dotenv_values(uncommented).items()}
    assert len(values) == len(settings) and "MAILER_VERP=on" in block
    values["BOUNCES_IMAP_PASSWORD"] = "x"
    del values["BOUNCES_IMAP_CA_FILE"]  # (an example path)
    assert check_bounce_settings(values) == "bounce settings: OK, IMAP tls to imap.example.org:993, folder INBOX"
    crontab = (tmp_path / "crontab.example").read_text()
    assert re.search(r"^# 40 \* \* \* \*  cd .* bounces >> state/bounces\.log 2>&1$", crontab, re.MULTILINE)
    assert "check --imap" in result.out and "bounces every hour" in result.out


def test_a_server_refusing_verp_senders_is_told_how_to_turn_verp_off(tmp_path: Path) -> None:
    """aiosmtpd offers no DSN: no ENVID or RET on MAIL FROM; the VERP sender is refused by policy."""
    from tests.deliver.test_send import make_list, run_send
    from tests.smtp_server import Recorder, start_server

    senders: list[tuple[str, list[str]]] = []

    class NoPlus(Recorder):
        async def handle_MAIL(
            self, server: object, session: object, envelope: object, address: str, options: list[str]
        ) -> str:
            senders.append((address, options))
            if "+" in address:
                return "553 5.7.1 <" + address + ">: Sender address rejected: not owned by user"
            return await super().handle_MAIL(server, session, envelope, address, options)

    recorder = NoPlus()
    server = start_server(tmp_path, recorder=recorder)
    try:
        make_list(tmp_path, 2)
        env = server.env(MAILER_ENVELOPE_FROM="bounces@example.org", MAILER_TOKEN_KEY="k" * 32)
        refused = run_send(tmp_path, {**env, "MAILER_VERP": "on"}, "--now", FUTURE_NOW)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "with MAILER_VERP=on the sender is bounces+" in refused.stderr and "or MAILER_VERP=off" in refused.stderr
        plain = run_send(tmp_path, env, "--now", FUTURE_NOW)
        assert plain.returncode == 0, plain.stdout + plain.stderr
        assert [s for s in senders if "+" not in s[0]] == [("bounces@example.org", [])] * 2  # no DSN offered: no ENVID
    finally:
        server.controller.stop()


def test_any_bytes_are_read_or_set_aside_never_a_crash() -> None:
    """Random bytes and real DSNs with random bytes spliced in: a Reading, None, or Unreadable."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from mailer.audience.bounces import Unreadable

    names = sorted(p.name for p in SAMPLES.glob("*.eml"))

    @st.composite
    def mutated(draw: st.DrawFn) -> bytes:
        raw = bytearray((SAMPLES / draw(st.sampled_from(names))).read_bytes())
        for _ in range(draw(st.integers(1, 20))):
            at = draw(st.integers(0, len(raw) - 1))
            raw[at : at + draw(st.integers(0, 40))] = draw(st.binary(max_size=40))
        return bytes(raw)

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
    @given(st.one_of(st.binary(max_size=2000), mutated()))
    def check(raw: bytes) -> None:
        try:
            read_bounce(raw)
        except Unreadable:
            pass

    check()
