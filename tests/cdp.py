"""A real headless Chromium driven over the DevTools protocol: open a page, evaluate JavaScript in it.

For pages that change while they are open (the live preview reloads itself), which ``--dump-dom``
cannot watch. Only the two protocol methods the tests need; no browser-automation framework.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from websockets.sync.client import ClientConnection, connect

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
# Headless, and quiet on a machine without network: no background connections, updates, sync or QUIC.
HEADLESS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# A module's pytestmark when its tests need Chromium: skipped loudly where it is missing.
NEEDS_CHROMIUM = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="LOUD SKIP: no chromium on PATH; .ci/run installs Debian's chromium, "
        "run it or `apt-get install chromium`",
    ),
]


class Browser:
    """One headless Chromium with one page."""

    def __init__(self, url: str, *, profile: Path) -> None:
        assert CHROMIUM is not None
        self.process = subprocess.Popen(
            [
                CHROMIUM,
                *HEADLESS,
                "--remote-debugging-port=0",
                f"--user-data-dir={profile}",
                "--window-size=1400,1000",
                url,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.ids = itertools.count(1)
        self.stack = contextlib.ExitStack()
        try:
            self.page = self._connect()
        except BaseException:
            self.close()
            raise

    def _connect(self) -> ClientConnection:
        assert self.process.stderr is not None
        for line in self.process.stderr:  # Chromium announces its DevTools port on stderr
            if match := re.search(r"DevTools listening on ws://([^/]+)/", line):
                break
        else:
            raise RuntimeError("Chromium exited before opening its DevTools port")
        # Keep reading its chatter, or a full pipe would stall the browser.
        threading.Thread(target=self.process.stderr.read, daemon=True).start()
        with urllib.request.urlopen(f"http://{match[1]}/json/list", timeout=10) as answer:
            targets = json.load(answer)
        page = next(t for t in targets if t["type"] == "page")
        return self.stack.enter_context(connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10))

    def evaluate(self, expression: str) -> Any:
        """The value of ``expression`` in the page (None while the page is between loads)."""
        number = next(self.ids)
        self.page.send(
            json.dumps(
                {
                    "id": number,
                    "method": "Runtime.evaluate",
                    "params": {"expression": expression, "returnByValue": True},
                }
            )
        )
        while True:
            reply = json.loads(self.page.recv(timeout=30))
            if reply.get("id") == number:
                break
        result = reply.get("result", {})
        if "exceptionDetails" in result:
            return None
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, predicate: Callable[[Any], bool], *, timeout: float = 30) -> Any:
        """Evaluate until ``predicate`` holds; fail with the last value after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        value = None
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if predicate(value):
                return value
            time.sleep(0.05)
        raise AssertionError(f"{expression} never satisfied the condition; last value: {value!r}")

    def close(self) -> None:
        self.stack.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()
