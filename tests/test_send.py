"""Delivery against real SMTP servers on 127.0.0.1: exactly once, through crashes and failures.

seminar-mailer runs as its own process (python -m mailer send), as cron runs it; the server is
aiosmtpd with STARTTLS, AUTH and failure hooks (tests/smtp_server.py). Nothing is patched.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT, SCHEDULE
from tests.smtp_server import PASSWORD, Server, start_server

DATE = "2024-01-15"


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
    return [sys.executable, "-m", "mailer", "send", "--date", DATE, "--schedule", str(SCHEDULE),
            "--recipients", str(tmp_path / "recipients"), "--state", str(tmp_path / "state"), *more]


def run_send(tmp_path: Path, env: dict[str, str], *more: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(send_command(tmp_path, *more), cwd=tmp_path, env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300, check=False, stdin=subprocess.DEVNULL)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def ledger_rows(tmp_path: Path) -> dict[str, str]:
    with sqlite3.connect(tmp_path / "state" / "ledger.sqlite3") as db:
        return dict(db.execute("SELECT recipient, state FROM deliveries"))


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
    status = subprocess.run([sys.executable, "-m", "mailer", "status", "--date", DATE, "--schedule", str(SCHEDULE),
                             "--state", str(tmp_path / "state")], capture_output=True, text=True, check=False)
    assert status.returncode == 0 and "sent     2000" in status.stdout
    assert_no_canary(tmp_path, first.stdout, first.stderr, again.stdout, again.stderr)


def test_kill_9_at_random_moments_loses_nobody(server: Server, tmp_path: Path, capsys) -> None:
    """Five kill -9s mid-send, then a rerun: nobody missing; a second copy only for those received
    but not yet marked when the process died (the group-commit window), with the same Message-ID."""
    make_list(tmp_path, 2000)
    server.recorder.delay = 0.002  # ~2 s of sending, so each kill lands mid-run
    rng = random.Random(20240118)
    in_window: set[str] = set()  # received by the server but not (yet) marked sent when a kill came
    for _ in range(5):
        proc = subprocess.Popen(send_command(tmp_path), cwd=tmp_path, env={**os.environ, **server.env()},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.6, 1.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(0.1)  # let the server finish a transaction it had already received
        received = {r.rcpt for r in server.recorder.received}
        marked = {k for k, state in ledger_rows(tmp_path).items() if state == "sent"} \
            if (tmp_path / "state" / "ledger.sqlite3").exists() else set()
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
        print(f"\nkill -9 x5: 0 missing, {sum(duplicates.values()) - len(duplicates)} duplicate copies "
              f"to {len(duplicates)} recipients, all with their original Message-ID")
