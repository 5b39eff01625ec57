"""One fault never becomes a mass wrong outcome: refused messages, suppression, STARTTLS without a
login, slow servers, signals, a full disk, odd list files, TLS mistakes.

Each test runs `python -m mailer send` as cron would, against aiosmtpd on 127.0.0.1 scripted to
misbehave (tests/smtp_server.py); dates lie in 2030 and the clock is passed in with --now.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import os
import resource
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.smtp_server import Server, start_server
from tests.test_lifecycle import MONDAY, command, make_list, send, write


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path)
    yield srv
    srv.controller.stop()


def rows(tmp_path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(tmp_path / "state" / "ledger.sqlite3") as db:
        return list(db.execute(sql))


def started_send(tmp_path: Path, server: Server, **env: str) -> subprocess.Popen[str]:
    """A real ``send`` of the Monday, running: for what is done to it (signals) while it sends."""
    return subprocess.Popen(
        command(tmp_path, MONDAY),
        cwd=tmp_path,
        env={**os.environ, **server.env(**env)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def status(tmp_path: Path) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "mailer", "status", "--schedule", str(tmp_path / "seminars.yaml"),
         "--state", str(tmp_path / "state")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr  # (75 would mean a deferred delivery: none in these tests)
    return proc.stdout


# 1. A refusal of the message is not a refusal of the recipients.


def test_a_content_filter_refusing_the_message_fails_and_suppresses_nobody(tmp_path: Path, server: Server) -> None:
    people = make_list(tmp_path, 30)
    write(tmp_path)
    server.recorder.message_reply = "554 5.7.1 content rejected: looks like spam"
    refused = send(tmp_path, server, MONDAY)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "the server refuses the message itself: 554 5.7.1 content rejected" in refused.stderr
    assert rows(tmp_path, "SELECT * FROM deliveries WHERE state = 'failed'") == []
    assert rows(tmp_path, "SELECT * FROM suppressed") == []
    assert server.recorder.received == []
    server.recorder.message_reply = None  # the filter is fixed
    fixed = send(tmp_path, server, MONDAY)
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert Counter(r.rcpt for r in server.recorder.received) == Counter(people)


@pytest.mark.parametrize("reply", ["550 5.7.1 recipient policy: no bulk mail", "552 5.2.2 mailbox full"])
def test_a_refusal_at_the_end_of_data_for_one_recipient_fails_that_one_only(
    tmp_path: Path, server: Server, reply: str
) -> None:
    """After the same message was accepted for others (or with a mailbox code, 5.2.x), a 5xx at the
    end of the message is that recipient's, not the message's: the others all get it."""
    people = make_list(tmp_path, 12)
    write(tmp_path)
    server.recorder.data_actions["user7@example.org"] = [reply]
    result = send(tmp_path, server, MONDAY, MAILER_CONCURRENCY="1")
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"failed: user7@example.org: {reply}" in result.stdout
    assert Counter(r.rcpt for r in server.recorder.received) == Counter(p for p in people if p != "user7@example.org")


def test_a_3000_character_speaker_folds_so_no_line_is_too_long(tmp_path: Path, server: Server) -> None:
    make_list(tmp_path, 3)
    write(tmp_path, **{"Serge Belongi": "Serge" + "x" * 3000})
    server.recorder.max_line = 998  # RFC 5322 2.1.1: a server may refuse longer lines, as "500 Line too long"
    result = send(tmp_path, server, MONDAY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(server.recorder.received) == 3
    message = email.message_from_bytes(server.recorder.received[0].data, policy=email.policy.default)
    assert "x" * 3000 in str(message["Subject"])
    assert max(len(line) for line in server.recorder.received[0].data.split(b"\r\n")) <= 998


# 2. Suppression works, across weeks, and only for the refused address.


def test_a_recipient_refused_in_week_1_is_not_sent_in_week_2_until_unsuppressed(tmp_path: Path, server: Server) -> None:
    people = make_list(tmp_path, 6)
    write(tmp_path)
    # A multi-line refusal that names another subscriber: that one must not be suppressed.
    server.recorder.rcpt_replies["user3@example.org"] = [
        "550-5.1.1 user3@example.org: no such user\r\n550 5.1.1 forwarded from user4@example.org"
    ] * 5
    week1 = send(tmp_path, server, MONDAY)
    assert week1.returncode == 1, week1.stdout
    assert "failed: user3@example.org: 550" in week1.stdout
    shown = status(tmp_path)
    assert "Suppressed (1;" in shown and "user3@example.org: 550 5.1.1 user3@example.org: no such user" in shown
    before = len(server.recorder.received)
    week2 = send(tmp_path, server, "2030-01-21T08:00")  # the next week's announcement
    got = Counter(r.rcpt for r in server.recorder.received[before:])
    assert week2.returncode == 0 and got == Counter(p for p in people if p != "user3@example.org"), week2.stdout
    assert "suppressed         1" in week2.stdout
    # The organiser fixed the address at the other end: let it receive mail again.
    proc = subprocess.run(
        [sys.executable, "-m", "mailer", "unsuppress", "user3@example.org", "--schedule",
         str(tmp_path / "seminars.yaml"), "--state", str(tmp_path / "state")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 0 and "no longer suppressed" in proc.stdout
    server.recorder.rcpt_replies.clear()
    before = len(server.recorder.received)
    assert send(tmp_path, server, "2030-01-21T09:00").returncode == 0
    assert [r.rcpt for r in server.recorder.received[before:]] == ["user3@example.org"]


def test_a_version_1_ledger_and_suppressed_txt_are_migrated_without_resending(tmp_path: Path, server: Server) -> None:
    """State from the first release: nobody who had the announcement gets it again, and the
    addresses its suppressed.txt held (in the "addr  # reason" form it wrote) stay suppressed."""
    people = make_list(tmp_path, 5)
    write(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    uid = "learning-machines-2030-01-17-serge-belongi@ri.se"
    with sqlite3.connect(state / "ledger.sqlite3") as db:
        db.executescript(
            """CREATE TABLE deliveries (announcement TEXT NOT NULL, recipient TEXT NOT NULL, state TEXT NOT NULL
               CHECK (state IN ('sent', 'failed', 'deferred')), attempts INTEGER NOT NULL, message_id TEXT NOT NULL,
               detail TEXT NOT NULL, at TEXT NOT NULL, PRIMARY KEY (announcement, recipient)) WITHOUT ROWID;"""
        )
        db.executemany(
            "INSERT INTO deliveries VALUES (?, ?, 'sent', 1, '<x@ri.se>', '250 ok', '2030-01-14T07:00:00+00:00')",
            [(uid, p) for p in people[:3]],
        )
    (state / "suppressed.txt").write_text("user4@example.org  # 550 5.1.1 no such user (see user0@example.org)\n")
    # A dry run first reads the old ledger as the real send will (a migrated copy in memory) and writes nothing.
    written = {p.name: p.read_bytes() for p in state.iterdir()}
    dry = send(tmp_path, server, MONDAY, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    assert "Would send to 1 recipient." in dry.stdout and "already sent       3" in dry.stdout, dry.stdout
    assert "suppressed         1" in dry.stdout, dry.stdout
    assert {p.name: p.read_bytes() for p in state.iterdir()} == written and server.recorder.received == []
    result = send(tmp_path, server, MONDAY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [r.rcpt for r in server.recorder.received] == ["user3@example.org"]
    shown = status(tmp_path)
    assert "user4@example.org: 550 5.1.1 no such user" in shown
    assert "Announcement  sent to 4 of 4, 2030-01-14 08:00 to 2030-01-14 08:00: (migrated)" in shown, shown
    assert (state / "suppressed.txt.imported").exists() and not (state / "suppressed.txt").exists()
    with contextlib.closing(sqlite3.connect(state / "ledger.sqlite3")) as db:  # the old table is gone, not kept
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert "deliveries_v1" not in tables and {"deliveries", "messages", "told"} <= tables
    # And the migrated seminar is followed like any other: a change reaches all four who were told.
    write(tmp_path, first_extra='    time: "16:00"\n')
    before = len(server.recorder.received)
    assert send(tmp_path, server, "2030-01-15T08:00").returncode == 0
    assert sorted(r.rcpt for r in server.recorder.received[before:]) == sorted(people[:4])


# 3. STARTTLS without a login: EHLO again after STARTTLS.


def test_starttls_without_a_login_says_ehlo_again_and_delivers(tmp_path: Path) -> None:
    srv = start_server(tmp_path, auth=False)  # STARTTLS required, no AUTH; aiosmtpd forgets the EHLO at STARTTLS
    try:
        make_list(tmp_path, 5)
        write(tmp_path)
        result = send(tmp_path, srv, MONDAY, SMTP_USERNAME="", SMTP_PASSWORD="")
        assert result.returncode == 0, result.stdout + result.stderr
        assert len(srv.recorder.received) == 5
    finally:
        srv.controller.stop()


# 4. A slow reply to the message is waited for; it is never resent within a run.


def test_a_server_slower_than_the_command_timeout_gets_the_message_once(tmp_path: Path, server: Server) -> None:
    make_list(tmp_path, 10)
    write(tmp_path)
    server.recorder.data_actions["user2@example.org"] = ["slow"]
    server.recorder.stall_seconds = 3  # MAILER_TIMEOUT is 2: the end-of-data reply has its own (default 600 s)
    result = send(tmp_path, server, MONDAY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert server.recorder.count()["user2@example.org"] == 1 and "possible duplicates" not in result.stdout


def test_recipients_backed_off_for_a_retry_never_hold_up_the_rest_of_the_list(tmp_path: Path, server: Server) -> None:
    """One connection reads 64 recipients ahead; 40 of the first are greylisted and wait out a 10 s backoff. The list
    is read on meanwhile: everyone else is sent before any of the 40 is tried again. (Counting those waiting for
    their retry as taking room made the reader wait for the backoff: every later recipient came after the 40.)"""
    people = make_list(tmp_path, 100)
    write(tmp_path)
    greylisted = people[:40]
    for address in greylisted:
        server.recorder.rcpt_replies[address] = ["451 4.7.1 greylisted, try again later"]
    result = send(tmp_path, server, MONDAY, MAILER_CONCURRENCY="1", MAILER_BACKOFF="10", MAILER_ATTEMPTS="2")
    assert result.returncode == 0, result.stdout + result.stderr
    order = [r.rcpt for r in server.recorder.received]
    assert Counter(order) == Counter(people)
    assert set(order[: len(people) - len(greylisted)]) == set(people) - set(greylisted), order


# 5. Signals stop taking recipients, finish those in flight, record everything.


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_cleanly_with_75_and_no_duplicates(tmp_path: Path, server: Server, sig: signal.Signals) -> None:
    people = make_list(tmp_path, 1500)
    write(tmp_path)
    server.recorder.delay = 0.003
    proc = started_send(tmp_path, server)
    deadline = time.monotonic() + 60
    while len(server.recorder.received) < 200 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert "Traceback" not in err
    assert proc.returncode == 75, out + err
    assert f"Stopped early: stopped by {sig.name}" in out
    received = {r.rcpt for r in server.recorder.received}
    sent = {r for (r,) in rows(tmp_path, "SELECT recipient FROM deliveries WHERE state = 'sent'")}
    assert sent == received, "every message the server took is recorded, nothing else"
    assert 0 < len(sent) < len(people)
    assert f"sent now           {len(sent)}" in out and f"not sent yet       {len(people) - len(sent)}" in out
    final = send(tmp_path, server, MONDAY)
    assert final.returncode == 0, final.stdout
    assert server.recorder.count() == Counter(people), "no one missing, no one twice"


def test_a_second_signal_abandons_the_copy_in_flight_as_uncertain(tmp_path: Path, server: Server) -> None:
    """The first SIGTERM finishes what is in flight; a second one does not wait: a copy whose end-of-data
    reply has not come (the server's content filter takes 30 s) is left recorded as uncertain, retried once later
    as a possible duplicate, and the run stops with 75. (Waiting, as after one signal, would record it sent.)"""
    make_list(tmp_path, 3)
    write(tmp_path)
    server.recorder.data_actions["user0@example.org"] = ["slow"]
    server.recorder.stall_seconds = 30
    proc = started_send(tmp_path, server)
    states = "SELECT recipient, state FROM deliveries ORDER BY recipient"
    wanted = [("user0@example.org", "uncertain"), ("user1@example.org", "sent"), ("user2@example.org", "sent")]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # (until the two others are recorded sent: only user0's copy is in flight)
        # (the ledger read only once the send has it open and the two copies are in: never in its way at open)
        if len(server.recorder.received) >= 2 and rows(tmp_path, states) == wanted:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    time.sleep(1.5)  # (two signals that arrive before the process runs are one to it: let it take the first)
    proc.send_signal(signal.SIGTERM)  # (once only: after the run, a late one would find the default action)
    out, err = proc.communicate(timeout=120)
    assert "Traceback" not in err
    assert proc.returncode == 75, out + err
    assert "Stopped early: stopped by SIGTERM" in out, out
    assert rows(tmp_path, states) == wanted  # (user0's copy abandoned: still uncertain, not waited for)


def test_a_second_signal_ends_the_run_while_the_list_waits_for_room(tmp_path: Path, server: Server) -> None:
    """One connection and 100 recipients: 64 are read ahead and the list's reader waits for room, which the
    workers a second signal abandons never make. The second signal ends the reader too: exit 75 at once, the copy
    in flight uncertain, nobody else recorded (all still due). (It once waited forever.)"""
    make_list(tmp_path, 100)
    write(tmp_path)
    server.recorder.data_actions["user0@example.org"] = ["slow"]
    server.recorder.stall_seconds = 30
    proc = started_send(tmp_path, server, MAILER_CONCURRENCY="1")
    states = "SELECT recipient, state FROM deliveries ORDER BY recipient"
    in_flight = ("user0@example.org", "uncertain")
    deadline = time.monotonic() + 60
    # (until the filter holds user0's copy, and its in-flight mark is folded into the ledger, read only then)
    while time.monotonic() < deadline and server.recorder.data_actions["user0@example.org"]:
        time.sleep(0.05)
    while time.monotonic() < deadline and in_flight not in rows(tmp_path, states):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    time.sleep(1.5)  # (two signals that arrive before the process runs are one to it: let it take the first)
    proc.send_signal(signal.SIGTERM)
    # (within the filter's 30 s: a run that waited for user0's reply, or forever, ends the test here)
    out, err = proc.communicate(timeout=25)
    assert "Traceback" not in err
    assert proc.returncode == 75, out + err
    assert "Stopped early: stopped by SIGTERM" in out, out
    recorded = dict(rows(tmp_path, states))
    assert recorded.pop("user0@example.org") == "uncertain"
    assert set(recorded.values()) <= {"deferred"}  # (user1's MAIL, RCPT and DATA went with user0's copy: still due)


# 6. A full disk or an unwritable state folder.


def test_a_full_disk_stops_the_send_with_75_and_the_rerun_completes(tmp_path: Path, server: Server) -> None:
    people = make_list(tmp_path, 1500)
    write(tmp_path)
    limit = 400_000  # bytes any file of the process may reach: the ledger's WAL fills it mid-send

    def small_disk() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    proc = subprocess.run(
        command(tmp_path, MONDAY),
        cwd=tmp_path,
        env={**os.environ, **server.env()},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
        preexec_fn=small_disk,
    )
    assert "Traceback" not in proc.stderr
    assert proc.returncode == 75, proc.stdout + proc.stderr
    assert "cannot write the ledger" in proc.stdout and "is the disk full?" in proc.stdout
    first = server.recorder.count()
    assert 0 < len(first) < len(people)
    final = send(tmp_path, server, MONDAY)
    assert final.returncode == 0, final.stdout + final.stderr
    counts = server.recorder.count()
    assert set(counts) == set(people)
    duplicates = sum(counts.values()) - len(people)
    assert duplicates <= 8, f"{duplicates} duplicates: more than the replies in flight when the disk filled"


def test_an_unusable_state_folder_is_an_error_before_anything_is_sent(tmp_path: Path, server: Server) -> None:
    make_list(tmp_path, 3)
    write(tmp_path)
    (tmp_path / "not-a-folder").write_text("")
    proc = subprocess.run(
        [*command(tmp_path, MONDAY)[:-2], "--state", str(tmp_path / "not-a-folder" / "state")],
        cwd=tmp_path, env={**os.environ, **server.env()}, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "not-a-folder/state" in proc.stderr and server.recorder.received == []


def test_state_files_are_private(tmp_path: Path, server: Server) -> None:
    make_list(tmp_path, 2)
    write(tmp_path)
    assert send(tmp_path, server, MONDAY).returncode == 0
    state = tmp_path / "state"
    assert state.stat().st_mode & 0o777 == 0o700
    for name in ("ledger.sqlite3", "learning-machines.lock", "token.key"):
        assert (state / name).stat().st_mode & 0o777 == 0o600, name


# 7. List files with a BOM and CRLF line ends.


def test_a_list_saved_with_a_bom_and_crlf_reaches_the_first_address(tmp_path: Path, server: Server) -> None:
    write(tmp_path)
    folder = tmp_path / "recipients"
    folder.mkdir()
    (folder / "learning-machines.txt").write_bytes("\ufeffAda <ada@example.org>\r\nbob@example.org\r\n".encode())
    result = send(tmp_path, server, MONDAY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(server.recorder.count()) == ["ada@example.org", "bob@example.org"]


# 8. TLS mistakes are configuration errors (2), not "try again later" (75).


def test_an_untrusted_certificate_exits_2(tmp_path: Path, server: Server) -> None:
    make_list(tmp_path, 2)
    write(tmp_path)
    result = send(tmp_path, server, MONDAY, SMTP_CA_FILE="")  # the system CAs do not know the test CA
    assert result.returncode == 2, result.stdout + result.stderr
    assert "TLS with 127.0.0.1 failed" in result.stderr and server.recorder.received == []


# The provider's daily cap (MAILER_DAILY_LIMIT), counted in the ledger across runs; the clock is --now.


def test_the_daily_limit_holds_across_runs_and_the_run_after_the_window_continues(
    tmp_path: Path, server: Server
) -> None:
    people = make_list(tmp_path, 10)
    write(tmp_path)
    first = send(tmp_path, server, "2030-01-14T08:00", MAILER_DAILY_LIMIT="4")
    assert first.returncode == 75, first.stdout + first.stderr
    assert "Stopped early: the daily limit is reached" in first.stdout
    assert "The daily limit frees up from 2030-01-15 08:00" in first.stdout
    assert len(server.recorder.received) == 4
    inside = send(tmp_path, server, "2030-01-14T20:00", MAILER_DAILY_LIMIT="4")  # still inside the 24 hours
    assert inside.returncode == 75 and len(server.recorder.received) == 4, inside.stdout
    after = send(tmp_path, server, "2030-01-15T08:01", MAILER_DAILY_LIMIT="4")
    assert after.returncode == 75 and len(server.recorder.received) == 8, after.stdout
    last = send(tmp_path, server, "2030-01-16T08:02", MAILER_DAILY_LIMIT="4")
    assert last.returncode == 0, last.stdout
    assert server.recorder.count() == Counter(people), "nobody missing, nobody twice"


def test_a_disk_io_error_opening_the_ledger_is_temporary_exit_75(tmp_path: Path, server: Server) -> None:
    """SQLite's "disk I/O error" when the ledger is opened (made real here: its shared-memory file is a FIFO,
    which cannot be sized) is a condition that can heal, as a full disk is: exit 75 (cron tries again), not 2,
    and nothing sent."""
    make_list(tmp_path, 2)
    write(tmp_path)
    assert send(tmp_path, server, MONDAY).returncode == 0  # (announced: the ledger exists, closed cleanly)
    write(tmp_path, first_extra='    time: "16:00"\n')  # (a change is due to both)
    before = len(server.recorder.received)
    os.mkfifo(tmp_path / "state" / "ledger.sqlite3-shm")
    result = send(tmp_path, server, "2030-01-15T08:00")
    assert result.returncode == 75, result.stdout + result.stderr
    assert "cannot open the ledger: disk I/O error" in result.stderr, result.stderr
    assert len(server.recorder.received) == before
    (tmp_path / "state" / "ledger.sqlite3-shm").unlink()  # (the disk heals)
    assert send(tmp_path, server, "2030-01-15T08:00").returncode == 0
    assert len(server.recorder.received) == before + 2


def test_a_ledger_that_cannot_be_opened_for_another_reason_is_exit_2(tmp_path: Path, server: Server) -> None:
    """Not every SQLite error at open can heal: a write-ahead log that is a folder ("unable to open database
    file") is a broken state folder, exit 2, for the organiser to look at (a disk I/O error or a full disk: 75)."""
    make_list(tmp_path, 2)
    write(tmp_path)
    assert send(tmp_path, server, MONDAY).returncode == 0
    (tmp_path / "state" / "ledger.sqlite3-wal").mkdir()
    before = len(server.recorder.received)
    result = send(tmp_path, server, "2030-01-15T08:00")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot open the ledger: unable to open database file" in result.stderr, result.stderr
    assert len(server.recorder.received) == before
