"""The servers the stages send to: a private Postfix (its log verifies every run) and smtp-sink."""

from __future__ import annotations

import re
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from tests import postfix_instance
from tests.smtp_server import free_port


class Server:
    """The private Postfix (discard transport) and a reader of its log for verification."""

    def __init__(self) -> None:
        self.postfix = postfix_instance.start(deliver="discard")
        self.port = self.postfix.port
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.postfix.log.stat().st_size if self.postfix.log.exists() else 0

    def drain(self, timeout: float = 60) -> None:
        """Wait until everything accepted so far has left the queue (keeps runs independent)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            accepted, delivered = self.postfix.accepted_by_smtpd(), self.postfix.delivered()
            if accepted <= delivered:
                return
            time.sleep(0.2)
        raise SystemExit(f"Postfix did not drain: {accepted} accepted, {delivered} delivered")

    def recipients_since_mark(self) -> Counter[str]:
        """Recipients delivered (discarded) since mark(): each line is one accepted message."""
        self.drain()
        with self.postfix.log.open(errors="replace") as handle:
            handle.seek(self.offset)
            text = handle.read()
        return Counter(re.findall(r"postfix/discard\[\d+\]: \w+: to=<([^>]+)>.*status=sent", text))

    def queued_since_mark(self) -> Iterator[int]:
        """Messages Postfix has queued since mark(), read from its log as it grows (each next() reads on)."""
        count, offset, rest = 0, self.offset, b""
        while True:
            if self.postfix.log.exists():
                with self.postfix.log.open("rb") as handle:
                    handle.seek(offset)
                    new = handle.read()
                offset += len(new)
                *lines, rest = (rest + new).split(b"\n")
                count += sum(1 for line in lines if b"postfix/cleanup" in line and b"message-id=" in line)
            yield count

    def stop(self) -> None:
        self.postfix.stop()


class SmtpSink:
    """Postfix's smtp-sink on a free port, its message counter in a file."""

    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.log = work / f"smtp-sink-{self.port}.out"

    def __enter__(self) -> SmtpSink:
        self._out = self.log.open("wb")
        self._proc = subprocess.Popen(
            ["/usr/sbin/smtp-sink", "-u", "postfix", "-c", f"127.0.0.1:{self.port}", "256"],
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._proc.terminate()
        self._proc.wait()
        self._out.close()

    def counted(self) -> int | None:
        counted = [int(x) for x in re.findall(r"mesg=(\d+)", self.log.read_text(errors="replace"))]
        return max(counted) if counted else None
