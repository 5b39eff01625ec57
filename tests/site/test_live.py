"""preview --serve in a real headless Chromium: the page shows the announcement and reloads on save."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import VALID

pytestmark = pytest.mark.browser
cdp = pytest.importorskip("tests.cdp")
if cdp.CHROMIUM is None:
    pytest.skip("LOUD SKIP: no chromium on PATH; .ci/run installs Debian's chromium", allow_module_level=True)

SUBJECT = "document.querySelector('#subject') && document.querySelector('#subject').textContent"
ERRORS = "document.querySelector('#errors') && document.querySelector('#errors').textContent"


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "seminars.yaml").write_text(VALID, encoding="utf-8")
    (tmp_path / "templates" / "email").mkdir(parents=True)
    return tmp_path


@pytest.fixture
def server(project: Path) -> Iterator[str]:
    """``preview --serve`` as an organiser starts it, from a sub-folder of the project."""
    (project / "notes").mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailer", "preview", "--serve", "--port", "0", "--date", "2024-01-15"],
        cwd=project / "notes",
        env={k: v for k, v in os.environ.items() if not k.startswith("MAILER_")},
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    match = re.search(r"Live preview on (http://127\.0\.0\.1:\d+/)", line)
    try:
        assert match, line + proc.stderr.read()
        yield match[1]
        assert proc.poll() is None, "the server stopped on an error instead of showing it"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stderr.close()


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_live_preview_reloads_on_save_and_shows_errors_in_the_page(project: Path, server: str, tmp_path: Path) -> None:
    schedule = project / "data" / "seminars.yaml"
    browser = cdp.Browser(server, profile=tmp_path / "profile")
    try:
        browser.wait_for(SUBJECT, lambda v: v and "Serge Belongie" in v)
        frames = browser.wait_for(
            "[...document.querySelectorAll('iframe')].map(f => [f.contentWindow.innerWidth,"
            " f.contentDocument && f.contentDocument.body ? f.contentDocument.body.innerText : ''])",
            lambda v: v and all("Challenges in Fine-Grained Image Analysis" in text for _, text in v),
        )
        assert [width for width, _ in frames] == [375, 800]
        assert "Some *abstract*." in browser.evaluate("document.querySelector('#text').textContent")

        # Saving the YAML reloads the page (the marker set in this load is gone) with the new text.
        browser.evaluate("window.loadedBefore = true")
        saved = time.monotonic()
        edit(schedule, "Serge Belongie", "Ada Lovelace")
        browser.wait_for(SUBJECT, lambda v: v and "Ada Lovelace" in v)
        print(f"page showed the saved YAML {time.monotonic() - saved:.2f} s after the save")
        assert browser.evaluate("window.loadedBefore === undefined") is True

        # A mistake is shown in the page at file:line:column, and the server keeps running.
        edit(schedule, 'time: "15:00"', "time: 15:00")
        errors = browser.wait_for(ERRORS, lambda v: v is not None)
        assert f"{schedule}:5:" in errors and "number 900" in errors
        edit(schedule, "time: 15:00", 'time: "15:00"')
        browser.wait_for(SUBJECT, lambda v: v and "Ada Lovelace" in v)

        # So does a template's mistake, at the template's file and line; saving the fix recovers.
        subject = project / "templates" / "email" / "subject.txt.j2"
        saved = time.monotonic()
        subject.write_text("Seminar:\n{{ series.nmae }}\n", encoding="utf-8")
        errors = browser.wait_for(ERRORS, lambda v: v is not None)
        print(f"page showed the template error {time.monotonic() - saved:.2f} s after the save")
        assert f"{subject}:2:" in errors and "nmae" in errors
        subject.write_text("Live {{ series.name }}\n", encoding="utf-8")
        browser.wait_for(SUBJECT, lambda v: v == "Live Learning Machines")
    finally:
        browser.close()


def test_only_its_own_host_name_is_served(server: str) -> None:
    """DNS rebinding: a page at attacker.example, its name pointed at 127.0.0.1, still sends its own Host:."""
    import http.client
    import urllib.parse

    port = urllib.parse.urlsplit(server).port

    def status(host: str, path: str = "/") -> int:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.putrequest("GET", path, skip_host=True)
            connection.putheader("Host", host)
            connection.endheaders()
            return connection.getresponse().status
        finally:
            connection.close()

    assert status(f"127.0.0.1:{port}") == 200 and status(f"localhost:{port}") == 200
    for host in (f"attacker.example:{port}", "attacker.example", f"127.0.0.1:{port + 1}", "127.0.0.1", ""):
        for path in ("/", "/email.html", "/events?seen=0"):
            assert status(host, path) == 400, (host, path)
