"""check's warnings (dates in the past, out of order, far from the others) and clock changes."""

from __future__ import annotations

import datetime as dt

import icalendar

from mailer.compose.checks import date_warnings
from mailer.compose.invite import build_invite
from mailer.compose.message import first_events
from mailer.programme.model import week_of
from mailer.programme.schedule import load_schedule
from tests.conftest import SCHEDULE, VALID, run_cli

THREE = VALID + "  - date: 2024-02-01\n    speaker: Third Speaker\n"  # third seminar: date at line 21


def warnings_for(write_schedule, text: str, today: dt.date) -> list[str]:  # type: ignore[no-untyped-def]
    return [str(w) for w in date_warnings(load_schedule(write_schedule(text)), today)]


def test_a_plausible_schedule_has_no_warnings(write_schedule) -> None:
    assert warnings_for(write_schedule, THREE, dt.date(2024, 1, 15)) == []


def test_a_programme_wholly_in_the_past_is_warned_about_at_check(tmp_path) -> None:
    result = run_cli("check", "--schedule", str(SCHEDULE), "--date", "2024-06-03")
    assert result.code == 0, result.err
    assert f"warning: {SCHEDULE}:41: every seminar is in the past (the latest is 2024-03-07" in result.err
    assert "Traceback" not in result.err


def test_the_week_of_the_last_seminar_is_not_past(write_schedule) -> None:
    assert warnings_for(write_schedule, THREE, dt.date(2024, 2, 4)) == []  # Sunday of the last week


def test_dates_out_of_order_in_the_file(write_schedule) -> None:
    text = THREE.replace("2024-02-01", "2024-01-11")
    assert any(
        w.endswith(":21: 2024-01-11 comes after 2024-01-25 (line 19) in the file; is the date right? "
        "Wanted the seminars in date order") for w in warnings_for(write_schedule, text, dt.date(2024, 1, 8))
    )  # fmt: skip


def test_a_typed_year_far_from_the_others(write_schedule) -> None:
    text = THREE.replace("2024-02-01", "2025-02-01")
    found = warnings_for(write_schedule, text, dt.date(2024, 1, 15))
    assert [w for w in found if ":21: 2025-02-01 is 373 days from the nearest other seminar" in w], found


def test_a_time_that_happens_twice_is_the_first_and_lasts_exactly_its_duration(write_schedule) -> None:
    text = VALID.replace("date: 2024-01-18", 'date: 2024-10-27\n    time: "02:30"')
    schedule = load_schedule(write_schedule(text))
    seminar = next(s for s in schedule.seminars if s.date == dt.date(2024, 10, 27))
    assert seminar.tz_label == "CEST" and seminar.start.utcoffset() == dt.timedelta(hours=2)
    assert seminar.end.astimezone(dt.UTC) - seminar.start.astimezone(dt.UTC) == dt.timedelta(minutes=60)
    assert seminar.end.strftime("%H:%M %Z") == "02:30 CET"
    week = week_of(schedule, dt.date(2024, 10, 21))
    assert week is not None
    invite = build_invite(schedule, first_events(schedule, week), now=dt.datetime(2024, 10, 21, tzinfo=dt.UTC))
    event = next(iter(icalendar.Calendar.from_ical(invite).walk("VEVENT")))
    assert event["DTSTART"].dt == dt.datetime(2024, 10, 27, 0, 30, tzinfo=dt.UTC)
    assert event["DTEND"].dt == dt.datetime(2024, 10, 27, 1, 30, tzinfo=dt.UTC)  # 60 minutes, not 2 hours
    found = warnings_for(write_schedule, text, dt.date(2024, 10, 21))
    assert any("2024-10-27 02:30 happens twice" in w and "taken as the first, 02:30 CEST" in w for w in found), found


def test_the_seminar_before_a_gap_ends_exactly_too(write_schedule) -> None:
    text = VALID.replace("date: 2024-01-18", 'date: 2024-03-31\n    time: "01:30"')
    seminar = next(s for s in load_schedule(write_schedule(text)).seminars if s.date == dt.date(2024, 3, 31))
    assert seminar.end.strftime("%H:%M %Z") == "03:30 CEST"  # 60 minutes across the jump from 02:00 to 03:00
