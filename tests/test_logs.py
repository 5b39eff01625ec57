"""Timestamps on send's output when it is not a terminal: cron logs tell one run from the next."""

from __future__ import annotations

import io
import re

from mailer.logs import Timestamped
from tests.conftest import run_cli

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d ")


def test_every_line_gets_the_time_however_it_is_written() -> None:
    out = io.StringIO()
    stream = Timestamped(out, clock=lambda: "T")
    stream.write("one\ntw")
    stream.write("o\n\nthree")
    stream.write("\n")
    assert out.getvalue() == "T one\nT two\nT \nT three\n"


def test_send_output_is_timestamped_off_a_terminal_but_not_for_the_journal(tmp_path) -> None:
    args = ("send", "--dry-run", "--date", "2024-01-15", "--state", str(tmp_path / "state"))
    piped = run_cli(*args, env={"JOURNAL_STREAM": ""})
    assert piped.code == 0
    lines = (piped.out + piped.err).splitlines()
    assert lines and all(STAMP.match(line) for line in lines), piped
    journal = run_cli(*args, env={"JOURNAL_STREAM": "8:12345"})
    assert journal.code == 0 and journal.out.startswith("Dry run: ")


def test_other_commands_print_plain_lines() -> None:
    result = run_cli("check")
    assert result.code == 0 and result.out.startswith("data/seminars.yaml: OK")
