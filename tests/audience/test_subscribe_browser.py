"""The subscribe flow as a person does it: headless Chromium fills the form and presses the buttons,
aiosmtpd catches the confirmation mail, Chromium follows its link. Screenshots go to tests/artefacts/.

Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe: JSON messages
ending in NUL on file descriptors 3 and 4), so no port is opened and no driver is needed.
"""

from __future__ import annotations

import base64
import email
import email.policy
import json
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cdp import CHROMIUM, HEADLESS, NEEDS_CHROMIUM
from tests.conftest import ARTEFACTS, run_cli
from tests.smtp_server import Server, start_server
from tests.web_service import Service, start_service

pytestmark = NEEDS_CHROMIUM
FLAGS = [
    *HEADLESS,
    "--remote-debugging-pipe",
    "--window-size=800,700",
]


class Browser:
    """Just enough of the DevTools protocol: open a page, navigate, evaluate, wait for loads."""

    def __init__(self, profile: Path) -> None:
        to_chrome_r, self.to_chrome = os.pipe()
        self.from_chrome, from_chrome_w = os.pipe()
        assert CHROMIUM is not None
        script = f'exec "$0" "$@" 3<&{to_chrome_r} 4>&{from_chrome_w} {to_chrome_r}<&- {from_chrome_w}>&-'
        self.process = subprocess.Popen(
            ["bash", "-c", script, CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            pass_fds=(to_chrome_r, from_chrome_w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        self.buffer = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable", session=True)

    def _read(self) -> dict[str, Any]:
        while b"\0" not in self.buffer:
            chunk = os.read(self.from_chrome, 65536)
            if not chunk:
                raise RuntimeError("chromium closed the pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)  # type: ignore[no-any-return]

    def call(self, method: str, *, session: bool = False, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        message: dict[str, Any] = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self.to_chrome, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})  # type: ignore[no-any-return]
            self.events.append(reply)

    def wait_for_load(self) -> None:
        while True:
            if any(e.get("method") == "Page.loadEventFired" for e in self.events):
                self.events.clear()
                return
            self.events.append(self._read())

    def goto(self, url: str) -> None:
        self.events.clear()
        self.call("Page.navigate", session=True, url=url)
        self.wait_for_load()

    def run(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        return result["result"].get("value")

    def submit(self, expression: str) -> None:
        """Run ``expression`` (which submits a form) and wait for the next page."""
        self.events.clear()
        self.run(expression)
        self.wait_for_load()

    def screenshot(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", session=True)["data"]))

    def close(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)
        os.close(self.to_chrome)
        os.close(self.from_chrome)


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[Server]:
    server = start_server(tmp_path)
    yield server
    server.controller.stop()


def test_subscribe_in_chromium_with_the_confirmation_mail_caught_by_aiosmtpd(tmp_path: Path, smtp: Server) -> None:
    service: Service = start_service(tmp_path, smtp, recipients="ada@example.org\n")
    browser = Browser(tmp_path / "profile")
    try:
        browser.goto(f"{service.url}/subscribe")
        assert browser.run("document.title").startswith("Subscribe")
        browser.screenshot(ARTEFACTS / "subscribe-form.png")
        browser.submit(
            "document.getElementById('name').value = 'Katherine Johnson';"
            "document.getElementById('email').value = 'katherine@example.org';"
            "document.querySelector('button').click()"
        )
        assert "Check your inbox" in browser.run("document.body.innerText")
        deadline = time.monotonic() + 30
        while not smtp.recorder.received and time.monotonic() < deadline:
            time.sleep(0.05)
        (mail,) = smtp.recorder.received
        assert mail.rcpt == "katherine@example.org"
        message = email.message_from_bytes(mail.data, policy=email.policy.default)
        assert message["Auto-Submitted"] == "auto-generated"
        assert "Katherine" not in mail.data.decode()  # the form's name text is not mailed to the address
        link = re.search(r"(http://\S+/confirm\?t=\S+)", message.get_body(("plain",)).get_content())[1]
        assert (
            "Would send to 1 recipient."
            in run_cli("send", "--dry-run", "--date", "2024-01-15", *service.paths(), env=service.env).out
        )

        browser.goto(link)
        assert "Confirm your subscription" in browser.run("document.body.innerText")
        browser.submit("document.querySelector('button').click()")
        assert "You are subscribed" in browser.run("document.body.innerText")
        browser.screenshot(ARTEFACTS / "subscribe-confirmed.png")
        assert browser.run("document.cookie") == ""

        browser.goto(link)  # the same link again: it worked once
        browser.submit("document.querySelector('button').click()")
        assert "already" in browser.run("document.body.innerText")
    finally:
        browser.close()
        service.stop()
    dry = run_cli("send", "--dry-run", "--date", "2024-01-15", *service.paths(), env=service.env).out
    assert "Would send to 2 recipients." in dry
    listing = run_cli("subscribers", *service.paths(), env=service.env).out
    assert "katherine@example.org\tsubscribed\tconfirmed (web)" in listing
