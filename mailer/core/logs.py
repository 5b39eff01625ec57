"""Log lines for unattended runs: when the output is not a terminal, every line gets an ISO 8601 time.

cron appends ``send``'s output to a log file; without a time on each line nobody can tell one
Monday's run from the next. The times are in the series' zone, the zone ``status`` and every date
in the programme use. On a terminal the output stays as it is, and under systemd (which sets
JOURNAL_STREAM) the journal adds its own times.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Callable
from typing import TextIO


def _now(tz: dt.tzinfo | None = None) -> str:
    """Now, to the second, with its UTC offset: in ``tz``, or in the machine's zone without one."""
    return dt.datetime.now(tz).astimezone(tz).isoformat(timespec="seconds")


class _Zone:
    """The zone of the log lines, asked for once, when the first line is written (``find`` may read files)."""

    def __init__(self, find: Callable[[], dt.tzinfo | None]) -> None:
        self.find = find
        self.asked = False
        self.found: dt.tzinfo | None = None

    def __call__(self) -> dt.tzinfo | None:
        if not self.asked:
            self.asked = True  # first: a line written while ``find`` runs gets the machine's zone, not a loop
            self.found = self.find()
        return self.found


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


def timestamp_unless_terminal(zone: Callable[[], dt.tzinfo | None] = lambda: None) -> None:
    """Give sys.stdout and sys.stderr a time on every line unless they are a terminal or the journal.

    The time is in ``zone()``: the series' zone, as ``status`` shows times (None: the machine's, when
    the schedule that names it cannot be read).
    """
    if os.environ.get("JOURNAL_STREAM"):
        return
    tz = _Zone(zone)
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is not None and not stream.isatty():
            setattr(sys, name, Timestamped(stream, lambda: _now(tz())))
