"""What happens on a bug: the traceback goes to a private file, the terminal gets one line, exit 70.

A cron mail full of Python frames helps no organiser, and exit 1 means "recipients failed"
(docs/exit-codes.md). So an unexpected exception is written, with the command line and version, to
``crash-<time>-<pid>.txt`` in the state folder (where the command has one) or the temp folder, and
``main`` exits with EX_SOFTWARE (70).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
import tempfile
import traceback
from pathlib import Path

from mailer import __version__


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def write_crash_report(error: BaseException, *, folder: Path | None, argv: list[str]) -> Path | None:
    """Write the traceback of ``error`` to a new file; return where, or None when nothing could be written."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    name = f"crash-{stamp}-{os.getpid()}.txt"
    text = (
        f"seminar-mailer {__version__}, Python {sys.version.split()[0]}\n"
        f"command: seminar-mailer {' '.join(argv)}\n\n" + "".join(traceback.format_exception(error))
    )
    for where in (folder, Path(tempfile.gettempdir())):
        if where is None:
            continue
        try:
            where.mkdir(parents=True, exist_ok=True)
            _write_private(where / name, text)
        except OSError:
            continue
        return where / name
    return None
