"""Timestamps on send's output when it is not a terminal: cron logs tell one run from the next."""

from __future__ import annotations

import datetime as dt
import io
import re
from zoneinfo import ZoneInfo

from mailer.core.logs import Timestamped
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


def test_send_stamps_its_lines_in_the_series_zone_not_the_machines(tmp_path) -> None:
    """The machine in Tokyo (+09:00 all year), the series in Stockholm: the log speaks Stockholm, as status does."""
    stockholm = ZoneInfo("Europe/Stockholm")
    machine = run_cli("send", "--dry-run", "--schedule", "none.yaml", env={"JOURNAL_STREAM": "", "TZ": "Asia/Tokyo"})
    assert machine.code == 2 and machine.err.split(" ", 1)[0].endswith("+09:00"), machine  # no schedule: the machine's
    args = ("send", "--dry-run", "--date", "2024-01-15", "--state", str(tmp_path / "state"))
    piped = run_cli(*args, env={"JOURNAL_STREAM": "", "TZ": "Asia/Tokyo"})
    assert piped.code == 0, piped
    lines = (piped.out + piped.err).splitlines()
    assert lines and all(STAMP.match(line) for line in lines), piped
    for line in lines:
        stamp = dt.datetime.fromisoformat(line.split(" ", 1)[0])
        assert stamp.utcoffset() == stamp.astimezone(stockholm).utcoffset(), line
