"""The manage page as a subscriber uses it: the link in the footer of their announcement, opened in headless
Chromium on the real `seminar-mailer serve` of a project of two series and a digest (one process, each mounted
at its service_url's path); they choose the digest over a list and a time zone, and the next send follows.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.audience.test_subscribe_browser import Browser
from tests.cdp import NEEDS_CHROMIUM
from tests.conftest import ARTEFACTS
from tests.run.test_digest import LM, WEEK
from tests.run.test_series import ML, mailer
from tests.smtp_server import Server, free_port
from tests.test_lifecycle import bodies, parse, server
from tests.web_service import TOKEN_KEY, Service

__all__ = ["server"]
pytestmark = NEEDS_CHROMIUM


def served_project(tmp_path: Path, port: int) -> Path:
    base = f"http://127.0.0.1:{port}"
    for folder in ("data", "recipients"):
        (tmp_path / folder).mkdir(exist_ok=True)
    lm = LM.replace("  announce:", f"  service_url: {base}/lm\n  announce:")
    (tmp_path / "data" / "seminars.yaml").write_text(lm, encoding="utf-8")
    ml = ML.format(room="Room 2", extra=f'  announce: "Monday 08:00"\n  service_url: {base}/ml\n')
    (tmp_path / "data" / "ml.yaml").write_text(ml, encoding="utf-8")
    (tmp_path / "data" / "week.yaml").write_text(WEEK + f"  service_url: {base}/week\n", encoding="utf-8")
    (tmp_path / "recipients" / "learning-machines.txt").write_text("a@example.org\n")
    (tmp_path / "recipients" / "ml.txt").write_text("m@example.org\n")
    (tmp_path / "recipients" / "week.txt").write_text("d@example.org\n")
    return tmp_path


def start_serve(folder: Path, server: Server, port: int) -> Service:
    env = {**os.environ, **server.env(), "MAILER_TOKEN_KEY": TOKEN_KEY, "PYTHONUNBUFFERED": "1"}
    log = folder / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mailer", "serve", "--listen", f"127.0.0.1:{port}"],
            cwd=folder, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    return Service(port, process, folder / "data", folder / "recipients", folder / "state", env, log).wait_listening()


@pytest.fixture
def token_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILER_TOKEN_KEY", TOKEN_KEY)  # the sends sign the links serve checks


def test_choose_the_digest_and_a_zone_in_chromium_and_the_next_send_follows(
    tmp_path: Path, server: Server, token_key: None
) -> None:
    port = free_port()
    folder = served_project(tmp_path, port)
    assert mailer(folder, server, "send", "--now", "2030-01-14T08:00").returncode == 0
    mine = next(parse(r) for r in server.recorder.received if r.rcpt == "a@example.org")
    text, html = bodies(mine)
    link = re.search(r"(http://127\.0\.0\.1:\d+/lm/manage\?t=[\w.-]+)\r?\n", text)
    assert link is not None, text
    assert f'href="{link[1]}"' in html  # the same link in the HTML footer, whole
    service = start_serve(folder, server, port)
    browser = Browser(tmp_path / "profile")
    try:
        forged = service.request("GET", link[1][:-3] + "AAA")
        assert forged.status == 400 and "Nothing was changed" in forged.body
        long_zone = service.request(  # (past the form's maxlength: zoneinfo says OSError, not "unknown")
            "POST", link[1], "zone=" + "x" * 300, {"Content-Type": "application/x-www-form-urlencoded"}
        )
        assert long_zone.status == 400 and "is not a time zone" in long_zone.body, long_zone.body
        browser.goto(link[1])
        assert browser.run("document.querySelectorAll('fieldset').length") == 3  # every list of the project
        assert "only in the weekly digest" in browser.run("document.body.innerText")
        browser.screenshot(ARTEFACTS / "manage-page.png")
        browser.submit(
            "document.querySelector('input[name=list-0][value=digest]').click();"
            "document.getElementById('zone').value = 'America/New_York';"
            "document.querySelector('button').click()"
        )
        assert "Saved" in browser.run("document.title"), browser.run("document.body.innerText")
        assert "only in the weekly digest" in browser.run("document.body.innerText")
        assert browser.run("document.cookie") == ""
    finally:
        browser.close()
        service.stop()
    before = len(server.recorder.received)
    assert mailer(folder, server, "send", "--now", "2030-01-21T08:00").returncode == 0  # Joakim Lindblad's week
    got = {r.rcpt: parse(r) for r in server.recorder.received[before:]}
    assert set(got) == {"a@example.org", "d@example.org"}  # a@ now reads Learning Machines in the digest
    assert str(got["a@example.org"]["Subject"]).startswith("This Week at the Department")
    assert "(09:00 EST your time)" in bodies(got["a@example.org"])[0]
    assert "your time)" not in bodies(got["d@example.org"])[0]
