"""Approval (series ``approval: required``): nothing about a week goes out before an organiser approves it as
the file then holds it, once after; an edit of an announced field needs approving again.

Real processes against aiosmtpd on 127.0.0.1, the clock passed in, dates in 2030; the approval goes through the
real ``approve`` command into the real ledger.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.smtp_server import Server
from tests.test_lifecycle import make_list, new_since, parse, send, server, write

__all__ = ["server"]  # (the aiosmtpd fixture)

APPROVAL = "  approval: required\n"


def mailer(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailer", *args, "--schedule", str(tmp_path / "seminars.yaml"),
         "--state", str(tmp_path / "state")],
        capture_output=True, text=True, check=False, cwd=tmp_path, stdin=subprocess.DEVNULL,
        env={**os.environ, "MAILER_ENV_FILE": str(tmp_path / "none.env")},
    )  # fmt: skip


def test_nothing_before_approve_once_after_and_an_edit_waits_for_another(tmp_path: Path, server: Server) -> None:
    people = make_list(tmp_path, 3)
    write(tmp_path, series_extra=APPROVAL)
    held = send(tmp_path, server, "2030-01-14T08:00")
    assert held.returncode == 0 and server.recorder.received == [], held.stdout
    dry = send(tmp_path, server, "2030-01-14T08:05", "--dry-run")
    assert "the week of 2030-01-14 waits for approval" in dry.stdout and "approve --date 2030-01-14" in dry.stdout

    approved = mailer(tmp_path, "approve", "--date", "2030-01-14", "--by", "Ada Lovelace")
    assert approved.returncode == 0, approved.stderr
    assert "Approved by Ada Lovelace: the week of 2030-01-14" in approved.stdout
    assert "2030-01-17 15:00 CET Serge Belongi – Challenges in Fine-Grained Image Analysis" in approved.stdout
    for moment in ("2030-01-14T08:15", "2030-01-14T08:30"):
        assert send(tmp_path, server, moment).returncode == 0
    assert Counter(r.rcpt for r in server.recorder.received) == Counter(people)  # once each

    write(tmp_path, series_extra=APPROVAL, first_extra="    location: Room Q\n")  # an announced field
    before = len(server.recorder.received)
    waiting = send(tmp_path, server, "2030-01-15T09:00")
    assert waiting.returncode == 0 and new_since(server, before) == [], waiting.stdout
    assert "waits for approval" in waiting.stdout
    assert mailer(tmp_path, "approve", "--date", "2030-01-15", "--by", "Ada Lovelace").returncode == 0
    assert send(tmp_path, server, "2030-01-15T09:15").returncode == 0
    got = new_since(server, before)
    assert sorted(r.rcpt for r in got) == sorted(people)
    assert parse(got[0])["Subject"].startswith("Changed: Learning Machines seminar 2030-01-17")

    # An abstract is not an announced field: editing it needs no approval (and mails nobody).
    write(tmp_path, series_extra=APPROVAL, first_extra="    location: Room Q\n", **{"Some abstract.": "Other."})
    assert "waits for approval" not in send(tmp_path, server, "2030-01-15T10:00", "--dry-run").stdout

    status = mailer(tmp_path, "status")
    assert status.returncode == 0 and status.stdout.count("the week of 2030-01-14 by Ada Lovelace") == 2, status.stdout


def test_approve_refuses_what_cannot_be_approved(tmp_path: Path) -> None:
    write(tmp_path)
    plain = mailer(tmp_path, "approve", "--date", "2030-01-14")
    assert plain.returncode == 2 and "does not ask for approval" in plain.stderr
    write(tmp_path, series_extra=APPROVAL)
    forged = mailer(tmp_path, "approve", "--date", "2030-01-14", "--by", "Ada\x1b[2J")
    assert forged.returncode == 2 and "one line of printable text" in forged.stderr
    assert "Traceback" not in plain.stderr + forged.stderr
    assert not (tmp_path / "state" / "ledger.sqlite3").exists()  # nothing recorded
