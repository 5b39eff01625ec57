"""Log lines for unattended runs: when the output is not a terminal, every line gets an ISO 8601 time.

cron appends ``send``'s output to a log file; without a time on each line nobody can tell one
Monday's run from the next. On a terminal the output stays as it is, and under systemd (which sets
JOURNAL_STREAM) the journal adds its own times.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Callable
from typing import TextIO


def _now() -> str:
    return dt.datetime.now().astimezone().isoformat(timespec="seconds")


class Timestamped:
    """A text stream that starts every line with ``clock()`` and a space."""

    def __init__(self, stream: TextIO, clock: Callable[[], str] = _now) -> None:
        self.stream = stream
        self.clock = clock
        self.at_line_start = True

    def write(self, text: str) -> int:
        pieces = []
        for line in text.splitlines(keepends=True):
            if self.at_line_start:
                pieces.append(f"{self.clock()} ")
            pieces.append(line)
            self.at_line_start = line.endswith(("\n", "\r"))
        self.stream.write("".join(pieces))
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False

    def __getattr__(self, name: str) -> object:  # encoding, errors, fileno...: those of the stream
        return getattr(self.stream, name)


def timestamp_unless_terminal() -> None:
    """Give sys.stdout and sys.stderr a time on every line unless they are a terminal or the journal."""
    if os.environ.get("JOURNAL_STREAM"):
        return
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not stream.isatty():
            setattr(sys, name, Timestamped(stream))
