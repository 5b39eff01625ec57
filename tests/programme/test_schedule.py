"""Validation of the schedule: every mistake reported at path:line:column, exit 2, no traceback."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from mailer.core.errors import ScheduleError
from mailer.programme.model import week_of
from mailer.programme.schedule import load_schedule
from tests.conftest import SCHEDULE, VALID, run_cli


def problems(path: Path) -> list[str]:
    with pytest.raises(ScheduleError) as info:
        load_schedule(path)
    return info.value.lines()


def test_shipped_schedule_is_valid() -> None:
    schedule = load_schedule(SCHEDULE)
    assert [s.speaker for s in schedule.seminars][:2] == ["Serge Belongie", "Joakim Lindblad"]
    assert schedule.series.timezone.key == "Europe/Stockholm"


def test_valid_fixture_loads(write_schedule) -> None:
    assert len(load_schedule(write_schedule(VALID)).seminars) == 2


# (name, replace this, with this, expected line, words the message must hold)
CASES = [
    ("unquoted time", 'time: "15:00"', "time: 15:00", 5, "number 900"),
    ("unknown key with suggestion", "speaker: Serge", "speakr: Serge", 14, "did you mean 'speaker'"),
    (
        "missing required key",
        "  signature: The Learning Machines Team\n",
        "",
        2,
        "missing the required key 'signature'",
    ),
    ("wrong type", "upcoming: 4", "upcoming: four", 11, "whole number"),
    ("impossible date", "date: 2024-01-18", "date: 2024-02-30", 13, "not a real date"),
    ("unknown timezone", "Europe/Stockholm", "Europe/Stokholm", 4, "did you mean 'Europe/Stockholm'"),
    ("timezone too long for a file name", "Europe/Stockholm", "Europe/" + "x" * 300, 4, "unknown time zone"),
    ("malformed url", "https://ri.se/lm-sem", "htps//ri.se", 8, "not a valid web address"),
    ("malformed address", "<learning-machines@ri.se>", "<learning-machines@>", 9, "not a valid email"),
    ("duplicate key", "  upcoming: 4\n", "  upcoming: 4\n  upcoming: 5\n", 12, "duplicate key 'upcoming'"),
    ("same date and time", "date: 2024-01-25", "date: 2024-01-18", 19, "two seminars at 2024-01-18 15:00"),
    (
        "python tag",
        "title: Challenges",
        "title: !!python/object:os.system Challenges",
        16,
        "tag !!python/object:os.system is not allowed",
    ),
    ("tab indentation", "    speaker: Joakim", "\t  speaker: Joakim", 20, "tab"),
    ("yaml syntax", "title: Challenges in", 'title: "Challenges in', 16, "is never closed"),
    ("boolean where text", "speaker: Joakim Lindblad", "speaker: NO", 20, "boolean false"),
    ("password in yaml", "  upcoming: 4\n", "  upcoming: 4\n  password: hunter2\n", 12, "environment"),
    (
        "line break in title",
        "title: Challenges in Fine-Grained Image Analysis",
        'title: "Challenges\\r\\nBcc: x@y.z"',
        16,
        "line break",
    ),
    (
        "cancelled wrong type",
        "speaker: Joakim Lindblad",
        "speaker: Joakim Lindblad\n    cancelled: 3",
        21,
        "'cancelled' should be text",
    ),
    (
        "seminars not a list",
        "seminars:\n  - date: 2024-01-18",
        "seminars: 7\nx:\n  - date: 2024-01-18",
        12,
        "should be a list",
    ),
]


@pytest.mark.parametrize(("old", "new", "line", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_problem_is_reported_at_its_line(write_schedule, old: str, new: str, line: int, words: str) -> None:
    assert old in VALID
    path = write_schedule(VALID.replace(old, new, 1))
    result = run_cli("check", "--schedule", str(path))
    assert result.code == 2, result
    assert "Traceback" not in result.err
    wanted = [e for e in result.err.splitlines() if e.startswith(f"error: {path}:{line}:") and words in e]
    assert wanted, f"expected line {line} with {words!r}, got:\n{result.err}"


def test_every_problem_is_reported_at_once(write_schedule) -> None:
    text = VALID.replace('"15:00"', "15:00").replace("Europe/Stockholm", "Mars/Olympus")
    text = text.replace("speaker: Joakim", "speekr: Joakim")
    lines = problems(write_schedule(text))
    assert any(":5:" in p and "900" in p for p in lines)
    assert any(":4:" in p and "Mars/Olympus" in p for p in lines)
    assert any(":20:" in p and "'speekr'" in p for p in lines)
    assert any(":19:" in p and "missing the required key 'speaker'" in p for p in lines)


def test_alias_bomb_is_rejected_fast_in_bounded_memory(write_schedule) -> None:
    bomb = ['a0: &a0 ["x","x","x","x","x","x","x","x","x","x"]']
    bomb += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    lines = problems(write_schedule("\n".join(bomb) + "\nseries: *a9\n"))
    assert any("expands to more than" in p for p in lines)


def test_huge_file_is_rejected_before_parsing(write_schedule) -> None:
    lines = problems(write_schedule(VALID + "# " + "x" * 2_000_000 + "\n"))
    assert "bytes; wanted at most" in lines[0]


def test_not_utf8_is_reported_with_position(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_bytes(VALID.replace("RISE Lund", "Scheelev\xe4gen").encode("latin-1"))
    assert any(":6:" in p and "UTF-8" in p for p in problems(path))


def test_missing_file_exits_2_with_clear_message(tmp_path: Path) -> None:
    result = run_cli("check", "--schedule", str(tmp_path / "nope.yaml"))
    assert result.code == 2 and "cannot read the schedule" in result.err and "Traceback" not in result.err


def test_seminar_overrides_and_cancelled(write_schedule) -> None:
    text = VALID.replace(
        "speaker: Joakim Lindblad", 'speaker: Joakim Lindblad\n    time: "10:15"\n    cancelled: Speaker is ill'
    )
    second = load_schedule(write_schedule(text)).seminars[1]
    assert second.start == dt.datetime(2024, 1, 25, 10, 15, tzinfo=second.start.tzinfo)
    assert second.cancelled == "Speaker is ill"


def test_week_selection_monday_to_sunday() -> None:
    schedule = load_schedule(SCHEDULE)
    for day in (dt.date(2024, 1, 15), dt.date(2024, 1, 18), dt.date(2024, 1, 21)):
        week = week_of(schedule, day)
        assert week is not None and [s.speaker for s in week.seminars] == ["Serge Belongie"]
        assert [s.speaker for s in week.upcoming] == [
            "Joakim Lindblad",
            "Liane Guillou",
            "Alexander Mathis",
            "Elise van der Pol",
        ]
    assert week_of(schedule, dt.date(2024, 1, 14)) is None  # the Sunday before
    assert week_of(schedule, dt.date(2024, 1, 29)) is None  # no seminar that week


def test_two_seminars_in_one_week(write_schedule) -> None:
    schedule = load_schedule(write_schedule(VALID.replace("2024-01-25", "2024-01-19")))
    week = week_of(schedule, dt.date(2024, 1, 17))
    assert week is not None and len(week.seminars) == 2 and week.upcoming == ()


def test_tz_label_follows_the_date_not_a_constant(write_schedule) -> None:
    schedule = load_schedule(write_schedule(VALID.replace("2024-01-25", "2024-06-20")))
    winter, summer = schedule.seminars
    assert (winter.tz_label, summer.tz_label) == ("CET", "CEST")
    assert winter.start.utcoffset() == dt.timedelta(hours=1)
    assert summer.start.utcoffset() == dt.timedelta(hours=2)
