"""Where two capabilities meet: one regression test per defect the lifecycle simulation (or the seams issue) found.

Each runs the real command (``python -m mailer``) against aiosmtpd on 127.0.0.1 and reads back what the server
received; none of them passed before its fix.
"""

from __future__ import annotations

import os
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
from tests.test_lifecycle import MONDAY, bodies, invitation, make_list, new_since, parse, send, write


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path)
    yield srv
    srv.controller.stop()


def cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailer", *args, "--schedule", str(tmp_path / "seminars.yaml"),
         "--state", str(tmp_path / "state")],
        capture_output=True, text=True, check=False, cwd=tmp_path, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def add_line(tmp_path: Path, line: str) -> None:
    path = tmp_path / "recipients" / "learning-machines.txt"
    path.write_text(path.read_text() + line + "\n")


def test_an_unsuppressed_address_gets_the_announcement_once_not_every_run(tmp_path: Path, server: Server) -> None:
    """Issue 23 #1: the final 'failed' row swallowed the later 'sent', so b stayed due and got a copy every run."""
    people = make_list(tmp_path, 3)
    b = people[1]
    write(tmp_path)
    server.recorder.rcpt_replies[b] = ["550 5.1.1 mailbox unavailable"]
    first = send(tmp_path, server, MONDAY)
    assert first.returncode == 1 and Counter(r.rcpt for r in server.recorder.received) == Counter(people) - Counter([b])
    assert cli(tmp_path, "unsuppress", b).returncode == 0
    for minute in ("08:15", "08:30", "08:45"):  # three cron runs after the unsuppress
        assert send(tmp_path, server, f"2030-01-14T{minute}").returncode == 0
    assert Counter(r.rcpt for r in server.recorder.received)[b] == 1
    assert all(parse(r)["Subject"].startswith("Learning Machines seminar") for r in server.recorder.received)


def test_a_deferred_subscriber_is_told_the_seminar_as_it_now_is_once(tmp_path: Path, server: Server) -> None:
    """Issue 23 #2: b deferred, the room edited: b got the announcement with the new room *and* the change."""
    people = make_list(tmp_path, 4)
    b = people[2]
    write(tmp_path)
    server.recorder.rcpt_replies[b] = ["451 4.7.1 try again later"] * 3  # every attempt of the run
    assert send(tmp_path, server, MONDAY).returncode == 75
    add_line(tmp_path, "late@example.org")  # joins after the announcement
    write(tmp_path, first_extra="    location: Room Q\n")
    before = len(server.recorder.received)
    edited = send(tmp_path, server, "2030-01-14T09:00")
    assert edited.returncode == 0, edited.stdout + edited.stderr
    got = new_since(server, before)
    assert Counter(r.rcpt for r in got) == Counter([*people, "late@example.org"]), [r.rcpt for r in got]
    for r in got:
        message = parse(r)
        _, event = invitation(message)
        assert str(event["LOCATION"]) == "Room Q" and event.decoded("SEQUENCE") == 1
        first_told = r.rcpt in (b, "late@example.org")
        assert message["Subject"].startswith("Learning Machines seminar" if first_told else "Changed:"), r.rcpt
    before = len(server.recorder.received)
    assert send(tmp_path, server, "2030-01-14T09:15").returncode == 0
    assert new_since(server, before) == []  # nobody is owed "Changed: Room A -> Room Q"


def test_nobody_hears_of_a_seminar_first_by_its_cancellation(tmp_path: Path, server: Server) -> None:
    """Issue 19 (late joiners), issue 23 #2 (a deferred one got two different "Cancelled:" mails)."""
    people = make_list(tmp_path, 3)
    b = people[0]
    write(tmp_path)
    server.recorder.rcpt_replies[b] = ["451 4.7.1 try again later"] * 3
    assert send(tmp_path, server, MONDAY).returncode == 75
    write(tmp_path, first_extra="    cancelled: The speaker is ill.\n")
    add_line(tmp_path, "late@example.org")
    before = len(server.recorder.received)
    assert send(tmp_path, server, "2030-01-14T09:00").returncode == 0
    got = new_since(server, before)
    assert sorted(r.rcpt for r in got) == sorted(set(people) - {b})
    assert all(parse(r)["Subject"].startswith("Cancelled:") for r in got)
    before = len(server.recorder.received)
    assert send(tmp_path, server, "2030-01-14T09:15").returncode == 0
    assert new_since(server, before) == []


def test_a_renamed_list_is_refused_until_rename_list_carries_it_over(tmp_path: Path, server: Server) -> None:
    """Issue 23 #4: renaming list: forgot every unsubscription and announced the week again under a new UID."""
    people = make_list(tmp_path, 4)
    write(tmp_path)
    assert send(tmp_path, server, MONDAY).returncode == 0
    uid = str(invitation(parse(server.recorder.received[0]))[1]["UID"])
    gone = people[3]
    assert cli(tmp_path, "unsubscribe", gone, "--recipients", str(tmp_path / "recipients")).returncode == 0
    folder = tmp_path / "recipients"
    (folder / "learning-machines.txt").rename(folder / "lm-seminar.txt")
    write(tmp_path, **{"list: learning-machines": "list: lm-seminar"})
    before = len(server.recorder.received)
    refused = send(tmp_path, server, "2030-01-14T09:00")
    assert refused.returncode == 2 and "rename-list learning-machines lm-seminar" in refused.stderr, refused.stderr
    checked = cli(tmp_path, "check", "--recipients", str(folder))
    assert checked.returncode == 2 and "rename-list" in checked.stderr
    assert new_since(server, before) == []
    renamed = cli(tmp_path, "rename-list", "learning-machines", "lm-seminar")
    assert renamed.returncode == 0, renamed.stderr
    assert send(tmp_path, server, "2030-01-14T09:15").returncode == 0
    assert new_since(server, before) == []  # the week is not announced again
    write(tmp_path, first_extra="    location: Room Q\n", **{"list: learning-machines": "list: lm-seminar"})
    assert send(tmp_path, server, "2030-01-14T09:30").returncode == 0
    got = new_since(server, before)
    assert sorted(r.rcpt for r in got) == sorted(people[:3])  # the unsubscription carried over
    assert {str(invitation(parse(r))[1]["UID"]) for r in got} == {uid}  # one event in each calendar


def test_kill_9_with_a_copy_in_flight_then_the_edit_reverted_corrects_that_copy(tmp_path: Path, server: Server) -> None:
    """Issue 23 #6: the copy in flight when the run died said Room Y; after the revert to Room Z its recipient
    was never corrected (the ledger believed they knew Room Z)."""
    people = make_list(tmp_path, 3)
    slow = people[2]
    write(tmp_path, first_extra="    location: Room Z\n")
    assert send(tmp_path, server, MONDAY).returncode == 0
    write(tmp_path, first_extra="    location: Room Y\n")
    server.recorder.stall_seconds = 8.0
    server.recorder.data_actions[slow] = ["hold"]  # stored at once, its reply held back: the sender dies first
    before = len(server.recorder.received)
    from tests.test_lifecycle import command

    proc = subprocess.Popen(
        command(tmp_path, "2030-01-14T09:00"), cwd=tmp_path, env={**os.environ, **server.env()},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while len(new_since(server, before)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the send finished before the kill: nothing was in flight"
    proc.send_signal(signal.SIGKILL)  # the held copy is stored; its reply has not been sent
    proc.wait()
    assert Counter(r.rcpt for r in new_since(server, before)) == Counter(people)  # Room Y reached all three
    write(tmp_path, first_extra="    location: Room Z\n")  # the organiser reverts
    before = len(server.recorder.received)
    assert send(tmp_path, server, "2030-01-14T09:30").returncode == 0
    got = new_since(server, before)
    assert Counter(r.rcpt for r in got) == Counter(people), [r.rcpt for r in got]
    for r in got:
        assert "Room Y" in bodies(parse(r))[0] and str(invitation(parse(r))[1]["LOCATION"]) == "Room Z"


@pytest.mark.parametrize("damage", ["empty", "one byte", "wal-only", "wal-only, no lock", "newer", "deleted"])
def test_a_damaged_or_missing_ledger_is_an_error_never_a_fresh_start(
    tmp_path: Path, server: Server, damage: str
) -> None:
    """Issue 23 #8: an empty ledger, a stray -wal, a newer schema or a lock without a ledger looked like a fresh
    start: everyone announced to again; so did a ledger cut to one byte, which SQLite takes for a new one. (A -wal
    alone is damage even where no lock file shows a send ran here, as in a state folder restored without its
    lock: a dry run and status must not read it as a fresh start.)"""
    make_list(tmp_path, 2)
    write(tmp_path)
    assert send(tmp_path, server, MONDAY).returncode == 0
    assert send(tmp_path, server, "2030-01-14T08:15").returncode == 0  # (a checkpoint: the WAL is folded in)
    state = tmp_path / "state"
    ledger = state / "ledger.sqlite3"
    if damage == "newer":
        with sqlite3.connect(ledger) as db:
            db.execute("PRAGMA user_version = 99")
    else:
        (state / "ledger.sqlite3-wal").write_bytes(b"x" * 4096 if damage.startswith("wal-only") else b"")
        if damage == "wal-only, no lock":
            for lock in state.glob("*.lock"):
                lock.unlink()
        (state / "ledger.sqlite3-shm").unlink(missing_ok=True)
        if damage == "deleted":
            ledger.unlink()
            (state / "ledger.sqlite3-wal").unlink()
        else:
            if damage == "empty":
                ledger.write_bytes(b"")
            elif damage == "one byte":  # (SQLite alone would take it for a new, empty ledger: a fresh start)
                ledger.write_bytes(b"S")
            else:
                ledger.unlink()
    before = len(server.recorder.received)
    for args in ([], ["--dry-run"]):
        result = send(tmp_path, server, "2030-01-14T09:00", *args)
        assert result.returncode == 2, (damage, args, result.stdout, result.stderr)
        assert "ledger" in result.stderr and "Traceback" not in result.stderr
    assert cli(tmp_path, "status").returncode == 2
    assert new_since(server, before) == []
