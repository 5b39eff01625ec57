"""Delivery against real SMTP servers on 127.0.0.1: exactly once, through crashes and failures.

seminar-mailer runs as its own process (python -m mailer send), as cron runs it; the server is
aiosmtpd with STARTTLS, AUTH and failure hooks (tests/smtp_server.py). Nothing is patched.
"""

from __future__ import annotations

import email
import email.policy
import mailbox
import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme

from tests import postfix_instance
from tests.conftest import FUTURE_DATE, FUTURE_NOW, future_schedule
from tests.smtp_server import PASSWORD, Server, start_server

DATE = FUTURE_DATE


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path)
    yield srv
    srv.controller.stop()


def make_list(tmp_path: Path, n: int, *, extra: str = "") -> Path:
    folder = tmp_path / "recipients"
    folder.mkdir(exist_ok=True)
    lines = [f"User {i} <user{i}@example.org>" for i in range(n)]
    (folder / "learning-machines.txt").write_text("# test list\n" + "\n".join(lines) + "\n" + extra)
    return folder


def send_command(tmp_path: Path, *more: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mailer",
        "send",
        "--date",
        DATE,
        "--now",
        FUTURE_NOW,
        "--schedule",
        str(future_schedule(tmp_path)),
        "--recipients",
        str(tmp_path / "recipients"),
        "--state",
        str(tmp_path / "state"),
        *more,
    ]


def run_send(tmp_path: Path, env: dict[str, str], *more: str, inherit: bool = True) -> subprocess.CompletedProcess[str]:
    """Run send as cron would; ``inherit=False`` starts from an environment without SMTP_/MAILER_."""
    base = {k: v for k, v in os.environ.items() if inherit or not k.startswith(("SMTP_", "MAILER_"))}
    proc = subprocess.run(
        send_command(tmp_path, *more),
        cwd=tmp_path,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def ledger_rows(tmp_path: Path, kind: str = "announcement") -> dict[str, str]:
    """recipient -> state for the messages of ``kind``."""
    with sqlite3.connect(tmp_path / "state" / "ledger.sqlite3") as db:
        return dict(
            db.execute(
                "SELECT recipient, state FROM deliveries JOIN messages ON messages.key = deliveries.message "
                "WHERE messages.kind = ?",
                (kind,),
            )
        )


def assert_no_canary(tmp_path: Path, *outputs: str) -> None:
    """The SMTP password appears in no output and in no file the run left behind."""
    for text in outputs:
        assert PASSWORD not in text
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path


def test_2000_recipients_each_get_exactly_one_copy(server: Server, tmp_path: Path) -> None:
    make_list(tmp_path, 2000, extra="USER7@EXAMPLE.ORG\nuser7@Example.org\nnot an address\n")
    first = run_send(tmp_path, server.env())
    assert first.returncode == 0, first.stderr
    counts = server.recorder.count()
    assert len(counts) == 2000 and set(counts.values()) == {1}
    assert "sent now           2000" in first.stdout and "duplicates         2" in first.stdout
    assert "invalid lines      1" in first.stdout and "not an address" in first.stderr
    assert set(ledger_rows(tmp_path).values()) == {"sent"} and len(ledger_rows(tmp_path)) == 2000
    again = run_send(tmp_path, server.env())
    assert again.returncode == 0 and "already sent to 2000" in again.stdout
    assert sum(server.recorder.count().values()) == 2000
    status = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailer",
            "status",
            "--schedule",
            str(future_schedule(tmp_path)),
            "--state",
            str(tmp_path / "state"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert status.returncode == 0 and "Announcement  sent to 2000 of 2000" in status.stdout, status.stdout
    assert_no_canary(tmp_path, first.stdout, first.stderr, again.stdout, again.stderr)


def test_kill_9_at_random_moments_loses_nobody(server: Server, tmp_path: Path, capsys) -> None:
    """Five kill -9s mid-send, then a rerun: nobody missing; a second copy only for those received
    but not yet marked when the process died (the group-commit window), with the same Message-ID."""
    make_list(tmp_path, 2000)
    server.recorder.delay = 0.002  # ~2 s of sending, so each kill lands mid-run
    rng = random.Random(20240118)
    in_window: set[str] = set()  # received by the server but not (yet) marked sent when a kill came
    for _ in range(5):
        proc = subprocess.Popen(
            send_command(tmp_path),
            cwd=tmp_path,
            env={**os.environ, **server.env()},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        # Kill mid-send, never by luck: once this process has delivered a random number more messages.
        target = len(server.recorder.received) + rng.randint(20, 300)
        deadline = time.monotonic() + 60
        while len(server.recorder.received) < target and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert proc.poll() is None, "the send finished before the kill: the kill would prove nothing"
        assert len({r.rcpt for r in server.recorder.received}) < 2000, "the kill came after the last recipient"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(0.1)  # let the server finish a transaction it had already received
        received = {r.rcpt for r in server.recorder.received}
        marked = (
            {k for k, state in ledger_rows(tmp_path).items() if state == "sent"}
            if (tmp_path / "state" / "ledger.sqlite3").exists()
            else set()
        )
        assert marked <= received, "a recipient was marked sent without the server having it"
        in_window |= received - marked
    final = run_send(tmp_path, server.env())
    assert final.returncode == 0, final.stderr
    counts = server.recorder.count()
    assert len(counts) == 2000, f"missing: {2000 - len(counts)}"
    duplicates = {rcpt: n for rcpt, n in counts.items() if n > 1}
    ids: dict[str, set[str]] = {}
    for r in server.recorder.received:
        ids.setdefault(r.rcpt, set()).add(r.message_id)
    assert all(len(v) == 1 for v in ids.values()), "a resent copy carried a new Message-ID"
    assert set(duplicates) <= in_window, "a duplicate outside the documented window"
    with capsys.disabled():
        print(
            f"\nkill -9 x5: 0 missing, {sum(duplicates.values()) - len(duplicates)} duplicate copies "
            f"to {len(duplicates)} recipients, all with their original Message-ID"
        )


def test_transient_and_permanent_failures(server: Server, tmp_path: Path) -> None:
    """451 for 5% on first try, 550 for 2%, one connection dropped mid-DATA, one stall past the timeout."""
    n = 400
    make_list(tmp_path, n)
    rng = random.Random(7)
    addresses = [f"user{i}@example.org" for i in range(n)]
    shuffled = rng.sample(addresses, n)
    greylisted, rejected = shuffled[:20], shuffled[20:28]
    dropped, stalled = shuffled[28], shuffled[29]
    for a in greylisted:
        server.recorder.rcpt_replies[a] = ["451 4.7.1 greylisted, try again later"]
    for a in rejected:
        server.recorder.rcpt_replies[a] = ["550 5.1.1 no such user"] * 10
    server.recorder.data_actions[dropped] = ["drop"]
    server.recorder.data_actions[stalled] = ["stall"]
    server.recorder.stall_seconds = 3  # MAILER_TIMEOUT is 2
    result = run_send(tmp_path, server.env())
    assert result.returncode == 75, result.stdout + result.stderr  # an uncertain one remains to retry
    counts = server.recorder.count()
    # The dropped one: the whole message went out and no reply came. The server may have it, so it
    # is "uncertain": not retried in this run (no second copy within a run), once by the next.
    assert set(counts) == set(addresses) - set(rejected) - {dropped} and set(counts.values()) == {1}
    rows = ledger_rows(tmp_path)
    assert {a for a, s in rows.items() if s == "sent"} == set(counts)  # nothing wrongly marked sent
    assert {a for a, s in rows.items() if s == "failed"} == set(rejected)
    assert rows[dropped] == "uncertain"
    assert f"uncertain: {dropped}: no reply after the message was sent" in result.stdout
    for a in rejected:
        assert f"failed: {a}: 550 5.1.1 no such user" in result.stdout
    assert (tmp_path / "recipients" / "learning-machines.txt").read_text().count("@") == n  # organisers' file untouched
    # A rerun retries the uncertain one once, counted as a possible duplicate, and no 550: those are final.
    before = len(server.recorder.received)
    again = run_send(tmp_path, server.env())
    assert again.returncode == 0, again.stdout + again.stderr
    assert [r.rcpt for r in server.recorder.received[before:]] == [dropped]
    assert "possible duplicates 1" in again.stdout
    assert all(len(server.recorder.rcpt_replies[a]) == 9 for a in rejected)  # asked exactly once each
    third = run_send(tmp_path, server.env())
    assert third.returncode == 0 and len(server.recorder.received) == before + 1


def test_deferred_recipients_are_retried_on_the_next_run(server: Server, tmp_path: Path) -> None:
    make_list(tmp_path, 50)
    server.recorder.rcpt_replies["user3@example.org"] = ["450 4.2.0 mailbox busy"] * 3  # every try of run 1
    first = run_send(tmp_path, server.env(MAILER_ATTEMPTS="3"))
    assert first.returncode == 75 and "deferred: user3@example.org: 450 4.2.0 mailbox busy" in first.stdout
    assert ledger_rows(tmp_path)["user3@example.org"] == "deferred"
    second = run_send(tmp_path, server.env())
    assert second.returncode == 0 and "sent now           1" in second.stdout
    assert server.recorder.count()["user3@example.org"] == 1 and len(server.recorder.count()) == 50


def test_two_concurrent_sends_one_delivers_the_other_exits_75(server: Server, tmp_path: Path) -> None:
    make_list(tmp_path, 1000)
    server.recorder.delay = 0.005
    env = {**os.environ, **server.env()}
    first = subprocess.Popen(
        send_command(tmp_path),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    lock = tmp_path / "state" / "learning-machines.lock"
    # the lock holds the holder's pid, then " ledger" once its ledger exists (state.mark_lock): wait for the pid
    while not (lock.exists() and lock.read_text().split()[:1] == [str(first.pid)]):
        assert first.poll() is None, first.communicate()
        time.sleep(0.01)
    started = time.monotonic()
    second = run_send(tmp_path, server.env())
    waited = time.monotonic() - started
    assert first.poll() is None, "the second run must not have waited for the first to finish"
    assert second.returncode == 75
    assert "another send for the list 'learning-machines' is running" in second.stderr
    _out, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    counts = server.recorder.count()
    assert len(counts) == 1000 and set(counts.values()) == {1}
    print(f"second run exited 75 after {waited:.3f} s while the first was still sending")


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")  # the server is insecure on purpose
def test_stripped_starttls_stops_before_auth_and_never_shows_the_password(tmp_path: Path) -> None:
    srv = start_server(tmp_path, starttls=False)  # offers AUTH in plaintext, no STARTTLS
    try:
        make_list(tmp_path, 10)
        result = run_send(tmp_path, srv.env())
        assert result.returncode == 75
        assert "does not offer STARTTLS" in result.stderr and "no credentials were given" in result.stderr
        assert "SMTP_SECURITY=none" in result.stderr  # the server is on loopback: say how to test against it
        assert srv.recorder.auth_attempts == 0 and srv.recorder.received == []
        assert_no_canary(tmp_path, result.stdout, result.stderr)
    finally:
        srv.controller.stop()


def test_dry_run_opens_no_connection(tmp_path: Path) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.settimeout(0.2)
    accepted: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(listener.accept())
            except TimeoutError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        make_list(tmp_path, 25)
        env = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(listener.getsockname()[1]), "SMTP_SECURITY": "none"}
        result = run_send(tmp_path, env, "--dry-run")
        assert result.returncode == 0 and "Dry run: no connection opened" in result.stdout
        assert "Would send to 25 recipients" in result.stdout
    finally:
        stop.set()
        thread.join()
        listener.close()
    assert accepted == []
    assert not (tmp_path / "state" / "ledger.sqlite3").exists()


@pytest.mark.parametrize(
    ("env", "words"),
    [
        ({"SMTP_HOST": ""}, "SMTP_HOST is not set"),
        ({"SMTP_SECURITY": "none", "SMTP_HOST": "smtp.example.org"}, "allowed only to a server on loopback"),
        ({"SMTP_SECURITY": "ssl"}, "SMTP_SECURITY='ssl'"),
        ({"SMTP_PORT": "abc"}, "SMTP_PORT='abc' is not a number"),
        ({"SMTP_PASSWORD": ""}, "set both SMTP_USERNAME and SMTP_PASSWORD"),
        ({"SMTP_CA_FILE": "/nonexistent.pem"}, "is not a readable file"),
        ({"MAILER_PIPELINING": "maybe"}, "MAILER_PIPELINING='maybe'; wanted on or off"),
        ({"MAILER_LEDGER_WINDOW": "-1"}, "MAILER_LEDGER_WINDOW='-1' is too small; wanted a number from 0 to 3600"),
        ({"MAILER_TIMEOUT": "nan"}, "MAILER_TIMEOUT='nan' is not a finite number"),
        ({"MAILER_DATA_TIMEOUT": "inf"}, "MAILER_DATA_TIMEOUT='inf' is not a finite number"),
        ({"MAILER_CONCURRENCY": "0"}, "MAILER_CONCURRENCY='0' is too small"),
        ({"MAILER_DAILY_LIMIT": "-5"}, "MAILER_DAILY_LIMIT='-5' is too small"),
        ({"SMTP_PORT": "99999"}, "SMTP_PORT='99999' is too large; wanted a number from 1 to 65535"),
    ],
)
def test_bad_smtp_settings_exit_2_and_send_nothing(
    server: Server, tmp_path: Path, env: dict[str, str], words: str
) -> None:
    make_list(tmp_path, 5)
    result = run_send(tmp_path, server.env(**env))
    assert result.returncode == 2 and words in result.stderr
    assert server.recorder.received == []
    assert_no_canary(tmp_path, result.stdout, result.stderr)


def test_dotenv_file_supplies_settings_and_the_environment_wins(server: Server, tmp_path: Path) -> None:
    make_list(tmp_path, 3)
    settings = server.env()
    (tmp_path / ".env").write_text("# SMTP for the tests\n" + "".join(f"{k}={v}\n" for k, v in settings.items()))
    proc = run_send(tmp_path, {}, inherit=False)
    assert proc.returncode == 0, proc.stderr
    assert len(server.recorder.count()) == 3
    (tmp_path / ".env").write_text("SMTP_HOST smtp.example.org\n")
    bad = run_send(tmp_path, {}, inherit=False)
    assert bad.returncode == 2 and ".env:1:1: not a KEY=value line" in bad.stderr


POSTFIX_MISSING = postfix_instance.available()


@pytest.mark.skipif(POSTFIX_MISSING is not None, reason=f"LOUD SKIP: no real Postfix: {POSTFIX_MISSING}")
def test_real_postfix_delivers_each_subscriber_once_to_the_mailbox(tmp_path: Path) -> None:
    """Debian's Postfix on 127.0.0.1 (its own config, STARTTLS with a certificate made here),
    delivering into a local mbox, parsed back."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    postfix = postfix_instance.start(deliver="mailbox", tls_cert=cert_file, tls_key=key_file)
    try:
        n = 200
        make_list(tmp_path, n)
        env = {
            "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(postfix.port),
            "SMTP_CA_FILE": str(ca_file),
            "SMTP_SECURITY": "starttls",
            "SMTP_USERNAME": "",
            "SMTP_PASSWORD": "",
        }
        result = run_send(tmp_path, env)
        assert result.returncode == 0, result.stdout + result.stderr
        assert postfix.wait_for_delivery(n) == n
        log = postfix.log.read_text()
        assert log.count("TLS connection established from localhost") >= 1  # STARTTLS really happened
        box = mailbox.mbox(str(postfix.mailbox))
        delivered = Counter(str(m["Delivered-To"]) for m in box)
        assert delivered == Counter({f"user{i}@example.org": 1 for i in range(n)})
        first = email.message_from_bytes(box[0].as_bytes(), policy=email.policy.default)
        assert first["Subject"].startswith("Learning Machines seminar 2030-01-18 15:00 CET")
        assert [p.get_content_type() for p in first.walk()][-2:] == ["text/calendar", "application/ics"]
        assert run_send(tmp_path, env).returncode == 0 and postfix.wait_for_delivery(n + 1, timeout=2) == n
        messages = box.values()
        assert len({m["Message-ID"] for m in messages}) == n
    finally:
        postfix.stop()


@pytest.mark.parametrize("pipelining", ["on", "off"])
def test_refusals_do_not_poison_the_connection_and_dots_survive(
    server: Server, tmp_path: Path, pipelining: str
) -> None:
    """After a 550 on one recipient the same connection carries on (RSET, no "503 nested MAIL");
    a body line that starts with a dot arrives intact (dot-stuffing done once, undone by the server).
    Both ways of sending the envelope: pipelined (as aiosmtpd here offers) and one command at a time."""
    schedule = tmp_path / "s.yaml"
    schedule.write_text(
        future_schedule(tmp_path)
        .read_text()
        .replace(
            "      Fine-grained image analysis",
            "      .hidden line\n\n      ..two dots\n\n      Fine-grained image analysis",
            1,
        )
    )
    make_list(tmp_path, 6)
    for i in (1, 3):
        server.recorder.rcpt_replies[f"user{i}@example.org"] = ["550 5.1.1 no such user"]
    env = server.env(MAILER_CONCURRENCY="1", MAILER_PIPELINING=pipelining)
    proc = run_send(tmp_path, env, "--schedule", str(schedule))  # the last --schedule wins
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert sorted(server.recorder.count()) == [f"user{i}@example.org" for i in (0, 2, 4, 5)]
    message = email.message_from_bytes(server.recorder.received[0].data, policy=email.policy.default)
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "**Abstract:** .hidden line" in text and "\n..two dots" in text.replace("\r\n", "\n")
