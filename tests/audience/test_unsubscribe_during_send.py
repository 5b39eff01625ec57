"""An unsubscription that arrives in the middle of a 2 000-recipient send is honoured by that send.

Real processes: `seminar-mailer send` delivering to aiosmtpd, `seminar-mailer serve` taking the
one-click POSTs. The SMTP server holds its replies after the 500th message, so "the middle" is a
fact, not a timing: the POSTs are answered (durably recorded) while the send is stalled with 1 500
recipients to go; then the server lets it finish.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mailer.core.tokens import unsubscribe_query
from tests.conftest import FUTURE_DATE, FUTURE_NOW, ROOT
from tests.smtp_server import Server, start_server
from tests.web_service import TOKEN_KEY, Service, start_service

N, HOLD_AT = 2000, 500
LEAVERS = [f"user{i}@example.org" for i in range(1000, 1100)]


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[Server]:
    server = start_server(tmp_path)
    yield server
    server.controller.stop()


def hold_after(server: Server, n: int) -> tuple[threading.Event, threading.Event]:
    """Make the server stop answering DATA after ``n`` messages until ``release`` is set."""
    reached, release = threading.Event(), threading.Event()
    handle_data = server.recorder.handle_DATA

    async def held(srv: Any, session: Any, envelope: Any) -> str:
        while len(server.recorder.received) >= n and not release.is_set():
            reached.set()
            await asyncio.sleep(0.01)
        return await handle_data(srv, session, envelope)

    server.recorder.handle_DATA = held  # type: ignore[method-assign]  (aiosmtpd looks the hook up per call)
    return reached, release


def test_unsubscribed_mid_send_are_not_sent_by_that_send(tmp_path: Path, smtp: Server) -> None:
    people = "".join(f"User {i} <user{i}@example.org>\n" for i in range(N))
    service: Service = start_service(tmp_path, smtp, shipped_schedule=True, recipients=people)
    reached, release = hold_after(smtp, HOLD_AT)
    try:
        send = subprocess.Popen(
            [sys.executable, "-m", "mailer", "send", "--date", FUTURE_DATE, "--now", FUTURE_NOW, *service.paths()],
            cwd=ROOT,
            env={**service.env, "MAILER_TIMEOUT": "60"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert reached.wait(120), "the send never reached the hold"
        for address in LEAVERS:
            query = unsubscribe_query(TOKEN_KEY.encode(), "learning-machines", address)
            assert service.request("POST", f"/unsubscribe?{query}", "List-Unsubscribe=One-Click").status == 200
        sent_before = {r.rcpt for r in smtp.recorder.received}
        assert not sent_before & set(LEAVERS)
        time.sleep(1.0)  # twice StillWanted's interval: the send's next check re-reads the store
        release.set()
        out, err = send.communicate(timeout=300)
    finally:
        release.set()
        service.stop()
    assert send.returncode == 0, err
    received = [r.rcpt for r in smtp.recorder.received]
    assert not set(received) & set(LEAVERS)
    assert len(received) == len(set(received)) == N - len(LEAVERS)
    assert "  sent now           1900" in out and "  unsubscribed       100  (while this send ran" in out, out
    again = subprocess.run(
        [sys.executable, "-m", "mailer", "send", "--dry-run", "--date", FUTURE_DATE, "--now", FUTURE_NOW,
         *service.paths()],
        cwd=ROOT, env=service.env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert "already sent to 1900 recipients." in again.stdout and "suppressed         100" in again.stdout, again.stdout
