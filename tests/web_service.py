"""Run the real `seminar-mailer serve` on loopback for a test, and talk HTTP to it (no client patched)."""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import ROOT, SCHEDULE, VALID
from tests.smtp_server import Server, free_port

TOKEN_KEY = "test-token-key-0123456789abcdef"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str


@dataclass
class Service:
    port: int
    process: subprocess.Popen[bytes]
    schedule: Path
    recipients: Path
    state: Path
    env: dict[str, str]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def paths(self) -> list[str]:
        return ["--schedule", str(self.schedule), "--recipients", str(self.recipients), "--state", str(self.state)]

    def request(
        self, method: str, url: str, body: bytes | str | None = None, headers: dict[str, str] | None = None
    ) -> Reply:
        parts = urllib.parse.urlsplit(url if "://" in url else self.url + url)
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            data = body.encode() if isinstance(body, str) else body
            all_headers = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
            connection.request(method, target, body=data, headers=all_headers if data is not None else headers or {})
            response = connection.getresponse()
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode())
        finally:
            connection.close()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)

    def wait_listening(self) -> Service:
        """Return once serve accepts connections; stop it and raise with its log if it exits or never listens."""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited: {self.log.read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"serve did not listen: {self.log.read_text()}")


def start_service(tmp_path: Path, smtp: Server, *, shipped_schedule: bool = False, recipients: str = "") -> Service:
    """Start serve in its own process; the list file holds ``recipients`` (one address a line)."""
    port = free_port()
    schedule = tmp_path / "seminars.yaml"
    # (shipped_schedule: the shipped programme moved to 2030, so that real sends in these tests are ahead of today)
    text = SCHEDULE.read_text().replace("2024-", "2030-") if shipped_schedule else VALID
    schedule.write_text(text.replace("  upcoming: 4\n", f"  upcoming: 4\n  service_url: http://127.0.0.1:{port}\n"))
    folder = tmp_path / "recipients"
    folder.mkdir(exist_ok=True)
    if not (folder / "learning-machines.txt").exists():
        (folder / "learning-machines.txt").write_text(recipients)
    state = tmp_path / "state"
    env = {**os.environ, **smtp.env(), "MAILER_TOKEN_KEY": TOKEN_KEY, "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mailer", "serve", "--listen", f"127.0.0.1:{port}", "--schedule", str(schedule),
             "--state", str(state)],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    return Service(port, process, schedule, folder, state, env, log).wait_listening()
