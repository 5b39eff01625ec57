"""One run of ``send`` (mailer/run/dispatch.py) called in this process: what it delivers to aiosmtpd on
127.0.0.1 (STARTTLS, AUTH), what it reports and what a dry run counts, with the real ledger in tmp_path.

The end-to-end tests (tests/test_lifecycle.py, tests/test_seams.py) run the same code as its own process;
these are the same flows, fast enough to come first when scripts/mutation.py tests dispatch."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailer.audience.recipients import Entry
from mailer.core.address import Address
from mailer.core.errors import ConfigError
from mailer.programme.schedule import load_schedule
from mailer.record.ledger import Ledger
from mailer.record.rows import parse_time
from mailer.run.dispatch import plan_notes, preview, run, send_test
from mailer.run.plan import ANNOUNCEMENT, CANCELLATION, CHANGE, FOLLOWUP, REMINDER
from mailer.run.records import status, unsuppress
from mailer.run.request import Request, Result
from tests.smtp_server import Server, start_server
from tests.test_lifecycle import MONDAY, bodies, invitation, make_list, new_since, parse, write

KEY = "learning-machines-2030-01-17-serge-belongi@ri.se"  # the 2030-01-17 seminar of tests/test_lifecycle.py


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path)
    yield srv
    srv.controller.stop()


def request(
    tmp_path: Path, server: Server | None, now: str, *, dry_run: bool = False, date: str | None = None, **env: str
) -> Request:
    return Request(
        schedule=tmp_path / "seminars.yaml",
        templates=None,
        recipients=tmp_path / "recipients",
        state=tmp_path / "state",
        now=dt.datetime.fromisoformat(now),  # (local to the series, as --now)
        date=dt.date.fromisoformat(date) if date else None,
        dry_run=dry_run,
        env=server.env(**env) if server else dict(env),
        clock_given=True,
    )


def send(tmp_path: Path, server: Server, now: str, *, date: str | None = None, **env: str) -> Result:
    return run(request(tmp_path, server, now, date=date, **env))


def dry(tmp_path: Path, server: Server | None, now: str, *, date: str | None = None, **env: str) -> Result:
    return run(request(tmp_path, server, now, dry_run=True, date=date, **env))


def local(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone(dt.timedelta(hours=1)))  # (Stockholm, winter)


def table(result: Result) -> list[tuple[str, int, int]]:
    """Each message of the result: kind, how many it is due to, how many were told it already."""
    return [(m.kind, m.due, m.already) for m in result.messages]


def contents(folder: Path) -> dict[str, bytes]:
    """Every file's bytes, but SQLite's shared-memory index and an empty write-ahead log (any reader of the
    ledger may make them: they hold nothing)."""
    files = {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.endswith("-shm")}
    return {name: data for name, data in files.items() if data or not name.endswith("-wal")}


def add_line(tmp_path: Path, line: str) -> None:
    path = tmp_path / "recipients" / "learning-machines.txt"
    path.write_text(path.read_text() + line + "\n")


def test_each_subscriber_is_announced_the_week_once(tmp_path: Path, server: Server) -> None:
    people = make_list(tmp_path, 3)
    write(tmp_path)
    first = send(tmp_path, server, MONDAY)
    assert table(first) == [(ANNOUNCEMENT, 3, 0)] and first.messages[0].outcome.sent == 3  # type: ignore[union-attr]
    assert not first.pending and not first.failed and first.stopped is None
    assert not first.cancelled and first.resume_after is None and first.unrecorded == 0
    assert sorted(r.rcpt for r in server.recorder.received) == people
    assert str(invitation(parse(server.recorder.received[0]))[1]["UID"]) == KEY  # each carries its invitation
    ledger = Ledger(tmp_path / "state", "learning-machines", readonly=True)
    try:
        told = ledger.first_told(KEY)
    finally:
        ledger.close()
    assert told is not None and parse_time(told) >= local(MONDAY)  # the run's clock starts at --now, moves on
    again = send(tmp_path, server, "2030-01-14T08:15")
    assert table(again) == [(ANNOUNCEMENT, 0, 3)] and len(server.recorder.received) == 3


def test_an_edit_reaches_those_told_and_a_late_joiner_gets_the_week_as_it_now_is(
    tmp_path: Path, server: Server
) -> None:
    people = make_list(tmp_path, 3)
    write(tmp_path)
    send(tmp_path, server, MONDAY)
    add_line(tmp_path, "late@example.org")
    write(tmp_path, first_extra="    location: Room Q\n")
    files = contents(tmp_path / "state")
    dry = run(request(tmp_path, server, "2030-01-14T09:00", dry_run=True))
    assert table(dry) == [(ANNOUNCEMENT, 1, 3), (CHANGE, 3, 0)] and len(server.recorder.received) == 3
    assert dry.dry_run and not dry.pending  # (a dry run is never "still due": its exit code is 0)
    assert contents(tmp_path / "state") == files
    before = len(server.recorder.received)
    edited = send(tmp_path, server, "2030-01-14T09:00")
    assert table(edited) == table(dry) and not edited.pending
    got = {r.rcpt: parse(r)["Subject"] for r in new_since(server, before)}
    assert got == {**{p: got[people[0]] for p in people}, "late@example.org": got["late@example.org"]}
    assert got[people[0]].startswith("Changed:") and got["late@example.org"].startswith("Learning Machines seminar")
    assert table(send(tmp_path, server, "2030-01-14T09:15")) == [(ANNOUNCEMENT, 0, 4)]
    write(tmp_path, first_extra="    location: Room R\n")  # a second edit: told against the first one
    before = len(server.recorder.received)
    again = send(tmp_path, server, "2030-01-14T10:00")
    assert table(again) == [(ANNOUNCEMENT, 0, 4), (CHANGE, 4, 0)]
    assert [(c.label, c.old, c.new) for c in again.messages[1].changes] == [("Location", "Room Q", "Room R")]
    assert len(new_since(server, before)) == 4


def test_a_cancellation_goes_to_those_told_only_and_once(tmp_path: Path, server: Server) -> None:
    people = make_list(tmp_path, 2)
    write(tmp_path)
    send(tmp_path, server, MONDAY)
    add_line(tmp_path, "late@example.org")
    write(tmp_path, first_extra="    cancelled: The speaker is ill.\n")
    before = len(server.recorder.received)
    cancelled = send(tmp_path, server, "2030-01-14T09:00")
    # (the week's announcement is due to nobody: the late joiner never hears of a seminar by its cancellation)
    assert table(cancelled) == [(ANNOUNCEMENT, 0, 3), (CANCELLATION, 2, 0)]
    assert Counter(r.rcpt for r in new_since(server, before)) == Counter(people)
    assert all(parse(r)["Subject"].startswith("Cancelled:") for r in new_since(server, before))
    assert table(send(tmp_path, server, "2030-01-14T09:15")) == [(ANNOUNCEMENT, 0, 3)]


def test_a_refused_address_is_suppressed_and_the_others_get_the_next_message(tmp_path: Path, server: Server) -> None:
    people = make_list(tmp_path, 3)
    write(tmp_path)
    server.recorder.rcpt_replies[people[1]] = ["550 5.1.1 mailbox unavailable"]
    first = send(tmp_path, server, MONDAY)
    assert first.failed and [a.addr for a, _ in first.messages[0].outcome.failed] == [people[1]]  # type: ignore[union-attr]
    write(tmp_path, first_extra="    location: Room Q\n")
    before = len(server.recorder.received)
    edited = send(tmp_path, server, "2030-01-14T09:00")
    assert [(m.kind, m.due) for m in edited.messages] == [(ANNOUNCEMENT, 0), (CHANGE, 2)]
    assert sorted(r.rcpt for r in new_since(server, before)) == [people[0], people[2]]
    assert edited.counts == {"due": 2, "suppressed": 1}


def test_a_deferred_subscriber_is_pending_and_gets_the_week_at_the_next_run(tmp_path: Path, server: Server) -> None:
    people = make_list(tmp_path, 2)
    write(tmp_path)
    server.recorder.rcpt_replies[people[0]] = ["451 4.7.1 try again later"] * 3
    first = send(tmp_path, server, MONDAY)
    assert first.pending and not first.failed
    before = len(server.recorder.received)
    second = send(tmp_path, server, "2030-01-14T08:15")
    assert table(second) == [(ANNOUNCEMENT, 1, 1)] and not second.pending
    assert [r.rcpt for r in new_since(server, before)] == [people[0]]


def test_the_daily_limit_stops_the_run_and_says_when_it_can_go_on(tmp_path: Path, server: Server) -> None:
    people = make_list(tmp_path, 5)
    write(tmp_path)
    first = send(tmp_path, server, MONDAY, MAILER_DAILY_LIMIT="3")
    assert len(server.recorder.received) == 3 and first.pending
    assert first.resume_after is not None
    sent_at = first.resume_after - dt.timedelta(hours=24)
    assert abs(sent_at - dt.datetime.fromisoformat(MONDAY + "+01:00")) < dt.timedelta(minutes=5)
    blocked = send(tmp_path, server, "2030-01-14T12:00", MAILER_DAILY_LIMIT="3")
    assert len(server.recorder.received) == 3 and blocked.pending and blocked.resume_after == first.resume_after
    later = send(tmp_path, server, "2030-01-15T09:00", MAILER_DAILY_LIMIT="3")
    assert sorted(r.rcpt for r in server.recorder.received) == people and not later.pending


@pytest.mark.parametrize(
    ("people", "env", "note"),
    [
        (5, {}, None),  # no rate, no limit: nothing to estimate
        (5, {"MAILER_RATE": "30"}, "at 30 a minute, 5 messages take one run, about 0 minutes each"),
        (90, {"MAILER_RATE": "1"}, "at 1 a minute, 90 messages take one run, about 1.5 hours each"),
        (60, {"MAILER_RATE": "1"}, "at 1 a minute, 60 messages take one run, about 1.0 hours each"),
        (59, {"MAILER_RATE": "1"}, "at 1 a minute, 59 messages take one run, about 59 minutes each"),
        (600, {"MAILER_RATE": "1"}, "at 1 a minute, 600 messages take one run, about 10.0 hours each"),
        (
            5,
            {"MAILER_RATE": "2", "MAILER_DAILY_LIMIT": "2"},
            "at 2 a minute, at most 2 a day, 5 messages take 3 days (one run a day), about 1 minutes each",
        ),
        (4, {"MAILER_DAILY_LIMIT": "2"}, "at no rate limit, at most 2 a day, 4 messages take 2 days (one run a day)"),
        (2, {"MAILER_DAILY_LIMIT": "2"}, "at no rate limit, at most 2 a day, 2 messages take one run"),
        (
            3,
            {"MAILER_RATE": "2", "MAILER_DAILY_LIMIT": "5"},
            "at 2 a minute, at most 5 a day, 3 messages take one run, about 2 minutes each",
        ),
    ],
)
def test_a_dry_run_says_how_long_the_messages_take_at_the_rate_and_daily_limit(
    tmp_path: Path, server: Server, people: int, env: dict[str, str], note: str | None
) -> None:
    make_list(tmp_path, people)
    write(tmp_path)
    dry = run(request(tmp_path, server, MONDAY, dry_run=True, **env))
    assert table(dry) == [(ANNOUNCEMENT, people, 0)]
    assert [n for n in dry.notes if n.startswith("at ")] == ([note] if note else [])
    assert server.recorder.received == [] and not (tmp_path / "state" / "ledger.sqlite3").exists()


def test_a_confirmation_answered_no_sends_nothing(tmp_path: Path, server: Server) -> None:
    make_list(tmp_path, 2)
    write(tmp_path)
    asked = run(request(tmp_path, server, MONDAY), confirm=lambda reports: False)
    assert asked.cancelled and server.recorder.received == []
    assert table(send(tmp_path, server, "2030-01-14T08:15")) == [(ANNOUNCEMENT, 2, 0)]  # still due, all of it


def test_an_invalid_line_is_warned_of_and_counted_and_the_rest_are_sent(tmp_path: Path, server: Server) -> None:
    people = make_list(tmp_path, 2)
    add_line(tmp_path, "not an address")
    add_line(tmp_path, "User 9 <user9@example.org>")
    write(tmp_path)
    warned: list[Entry] = []
    result = run(request(tmp_path, server, MONDAY), warn=warned.append)
    assert [e.line for e in warned] == [3] and result.counts == {"due": 3, "invalid": 1}
    assert sorted(r.rcpt for r in server.recorder.received) == [*people, "user9@example.org"]


def test_an_empty_list_is_due_nothing_and_told_nothing(tmp_path: Path, server: Server) -> None:
    make_list(tmp_path, 0)
    write(tmp_path)
    assert table(dry(tmp_path, server, MONDAY)) == [(ANNOUNCEMENT, 0, 0)]
    assert table(send(tmp_path, server, MONDAY)) == [(ANNOUNCEMENT, 0, 0)]


TWO_IN_A_WEEK = {"2030-01-24": "2030-01-18"}  # the second seminar moved into the first one's week


def test_an_address_refused_by_one_message_is_not_tried_for_the_next_of_the_run(tmp_path: Path, server: Server) -> None:
    people = make_list(tmp_path, 3)
    write(tmp_path, **TWO_IN_A_WEEK)
    send(tmp_path, server, MONDAY)
    write(
        tmp_path,
        first_extra="    location: Room Q\n",
        **{**TWO_IN_A_WEEK, "Joakim Lindblad": "Joakim Lindblad\n    location: Room Z"},
    )
    server.recorder.rcpt_replies[people[1]] = ["550 5.1.1 mailbox unavailable"]  # (its first try only)
    before = len(server.recorder.received)
    edited = send(tmp_path, server, "2030-01-14T09:00")
    assert [m.kind for m in edited.messages] == [ANNOUNCEMENT, CHANGE, CHANGE]
    assert sorted(r.rcpt for r in new_since(server, before)) == sorted([people[0], people[2]] * 2)


def test_a_deferral_of_a_change_leaves_the_run_pending(tmp_path: Path, server: Server) -> None:
    people = make_list(tmp_path, 2)
    write(tmp_path)
    send(tmp_path, server, MONDAY)
    write(tmp_path, first_extra="    location: Room Q\n")
    server.recorder.rcpt_replies[people[0]] = ["451 4.7.1 try again later"] * 3
    edited = send(tmp_path, server, "2030-01-14T09:00")
    assert table(edited) == [(ANNOUNCEMENT, 0, 2), (CHANGE, 2, 0)] and edited.pending  # (after a report due to none)


def test_the_daily_limit_counts_the_last_24_hours_and_frees_a_slot_24_hours_after_each_send(
    tmp_path: Path, server: Server
) -> None:
    make_list(tmp_path, 1)
    write(tmp_path)
    first = send(tmp_path, server, MONDAY, MAILER_DAILY_LIMIT="2")  # 08:00: one
    assert not first.pending and first.resume_after is None  # (the limit not reached: nothing to wait for)
    add_line(tmp_path, "late1@example.org")
    add_line(tmp_path, "late2@example.org")
    noon = send(tmp_path, server, "2030-01-14T12:00", MAILER_DAILY_LIMIT="2")  # 12:00: one more, then the limit
    assert len(server.recorder.received) == 2 and noon.pending and noon.resume_after is not None
    assert abs(noon.resume_after - local("2030-01-15T08:00")) < dt.timedelta(minutes=5)  # the oldest's slot
    next_day = send(tmp_path, server, "2030-01-15T08:30", MAILER_DAILY_LIMIT="2")  # 08:00's slot is free again
    assert len(server.recorder.received) == 3 and not next_day.pending
    assert next_day.resume_after is not None and abs(next_day.resume_after - local("2030-01-15T12:00")) < dt.timedelta(
        minutes=5
    )


# --- refused before anything is written ------------------------------------------------------------


def test_a_real_send_of_a_week_that_is_over_is_refused_before_anything_is_written(
    tmp_path: Path, server: Server
) -> None:
    make_list(tmp_path, 2)
    write(tmp_path)
    with pytest.raises(ConfigError, match="is in a week that is over"):
        send(tmp_path, server, "2030-01-21T00:00", date="2030-01-17")  # the next Monday, 00:00 local
    assert not (tmp_path / "state").exists() and server.recorder.received == []
    last_minute = send(tmp_path, server, "2030-01-20T23:59", date="2030-01-17")  # the Sunday: that week still
    assert last_minute.messages == [] and last_minute.week is None  # (its seminar has started: nothing to tell)


def test_a_bad_verp_setting_is_refused_before_anything_is_written(tmp_path: Path, server: Server) -> None:
    make_list(tmp_path, 2)
    write(tmp_path)
    with pytest.raises(ConfigError, match="MAILER_VERP=on needs MAILER_ENVELOPE_FROM"):
        send(tmp_path, server, MONDAY, MAILER_VERP="on")
    assert not (tmp_path / "state").exists() and server.recorder.received == []


def test_a_ledger_deleted_after_a_send_is_an_error_for_the_send_and_the_dry_run(tmp_path: Path, server: Server) -> None:
    make_list(tmp_path, 2)
    write(tmp_path)
    send(tmp_path, server, MONDAY)
    for name in ("ledger.sqlite3", "ledger.sqlite3-wal", "ledger.sqlite3-shm"):
        (tmp_path / "state" / name).unlink(missing_ok=True)
    with pytest.raises(ConfigError, match=r"no ledger\.sqlite3"):
        dry(tmp_path, server, "2030-01-14T08:15")
    with pytest.raises(ConfigError, match=r"no ledger\.sqlite3"):
        send(tmp_path, server, "2030-01-14T08:15")
    assert len(server.recorder.received) == 2 and not (tmp_path / "state" / "ledger.sqlite3").exists()


def test_the_announce_time_holds_a_real_send_back_unless_the_week_is_named(tmp_path: Path, server: Server) -> None:
    make_list(tmp_path, 2)
    write(tmp_path, series_extra='  announce: "Monday 09:00"\n')
    early = send(tmp_path, server, MONDAY)  # 08:00
    assert server.recorder.received == [] and any("goes out from" in n for n in early.notes)
    (shown,) = preview(request(tmp_path, server, MONDAY, dry_run=True))[1]  # preview shows the week anyway
    assert shown.kind == ANNOUNCEMENT and not shown.subject.startswith("[TEST]")
    named = send(tmp_path, server, "2030-01-14T08:15", date="2030-01-14")  # --date: the organiser asks for it
    assert table(named) == [(ANNOUNCEMENT, 2, 0)] and len(server.recorder.received) == 2


# --- dry runs ----------------------------------------------------------------------------------------


def test_a_dry_run_without_a_server_warns_and_still_checks_every_other_setting(tmp_path: Path) -> None:
    make_list(tmp_path, 2)
    write(tmp_path)
    result = dry(tmp_path, None, MONDAY)
    assert table(result) == [(ANNOUNCEMENT, 2, 0)]
    assert [w for w in result.warnings if "SMTP_HOST" in w and "(a real send would stop here)" in w]
    with pytest.raises(ConfigError, match="MAILER_RATE"):
        dry(tmp_path, None, MONDAY, MAILER_RATE="fast")
    with pytest.raises(ConfigError, match="SMTP_HOST"):
        run(request(tmp_path, None, MONDAY))  # a real send stops
    assert not (tmp_path / "state").exists()  # (the dry run made no state folder, no token key, no store)


def test_a_dry_run_with_a_file_for_the_state_folder_is_refused(tmp_path: Path, server: Server) -> None:
    make_list(tmp_path, 2)
    write(tmp_path)
    (tmp_path / "state").write_text("not a folder")
    with pytest.raises(ConfigError, match="is a file"):
        dry(tmp_path, server, MONDAY)


@pytest.mark.parametrize(
    ("now", "date", "due"),
    [
        ("2030-01-21T00:00", "2030-01-17", 2),  # a past week, from the moment it is over: as at its Monday
        ("2030-01-20T23:59", "2030-01-17", 0),  # its last minute: as now (the seminar has started)
        ("2030-01-17T16:00", "2030-01-14", 0),  # this week, named: as now
        ("2030-01-17T16:00", None, 0),  # this week: as now
    ],
)
def test_a_dry_run_of_a_past_week_shows_it_as_at_its_start(
    tmp_path: Path, server: Server, now: str, date: str | None, due: int
) -> None:
    make_list(tmp_path, 2)
    write(tmp_path)
    shown = dry(tmp_path, server, now, date=date)
    assert [(m.kind, m.due) for m in shown.messages if m.due] == ([(ANNOUNCEMENT, due)] if due else [])


# --- the other commands of dispatch: check's notes, preview, test copies, status, unsuppress --------------


def test_check_notes_a_removed_announced_seminar_and_says_nothing_without_a_ledger(
    tmp_path: Path, server: Server
) -> None:
    make_list(tmp_path, 2)
    write(tmp_path)
    assert plan_notes(request(tmp_path, server, MONDAY, dry_run=True)) == []
    send(tmp_path, server, MONDAY)
    write(
        tmp_path,
        **{"  - date: 2030-01-17\n    speaker: Serge Belongi\n": "  - date: 2030-01-31\n    speaker: Ada Lovelace\n"},
    )
    notes = plan_notes(request(tmp_path, server, "2030-01-14T09:00", dry_run=True))
    assert [n for n in notes if "Serge Belongi" in n and "no longer in" in n]


def test_a_test_copy_goes_to_one_address_marked_and_is_recorded_nowhere(tmp_path: Path, server: Server) -> None:
    make_list(tmp_path, 2)
    write(tmp_path)
    subjects = send_test(request(tmp_path, server, MONDAY, dry_run=True), Address("Me", "me@example.org"))
    assert len(subjects) == 1 and subjects[0].startswith("[TEST] ")
    assert [(r.rcpt, parse(r)["Subject"]) for r in server.recorder.received] == [("me@example.org", subjects[0])]
    assert table(send(tmp_path, server, "2030-01-14T08:15")) == [(ANNOUNCEMENT, 2, 0)]


def test_status_lists_what_was_sent_and_unsuppress_says_whether_it_did_anything(tmp_path: Path, server: Server) -> None:
    people = make_list(tmp_path, 2)
    write(tmp_path)
    assert status(tmp_path / "state", "learning-machines") == ([], [])
    assert unsuppress(tmp_path / "state", "learning-machines", Address("", people[0])) is False
    server.recorder.rcpt_replies[people[1]] = ["550 5.1.1 mailbox unavailable"]
    send(tmp_path, server, MONDAY)
    seminars, suppressed = status(tmp_path / "state", "learning-machines")
    assert [s.remembered.key for s in seminars] == [KEY]
    assert [(kind, counts.get("sent")) for kind, _, counts, _, _ in seminars[0].messages] == [(ANNOUNCEMENT, 1)]
    assert [x.recipient for x in suppressed] == [people[1]]
    assert unsuppress(tmp_path / "state", "learning-machines", Address("", people[0])) is False
    assert unsuppress(tmp_path / "state", "learning-machines", Address("", people[1])) is True
    assert status(tmp_path / "state", "learning-machines")[1] == []


def test_a_change_nobody_on_the_list_still_wants_does_not_hold_back_the_next(tmp_path: Path, server: Server) -> None:
    """Someone told revision 0 left the list, the others were told revision 1; a second edit is due to both
    groups: the one for revision 0 is due to nobody now, and the one for revision 1 still goes (a `continue`
    turned `break` once stopped at the first)."""
    people = make_list(tmp_path, 3)
    write(tmp_path)
    send(tmp_path, server, MONDAY)
    make_list(tmp_path, 2)  # the third leaves the list, knowing revision 0
    write(tmp_path, first_extra="    location: Room Q\n")
    send(tmp_path, server, "2030-01-14T09:00")
    write(tmp_path, first_extra="    location: Room R\n")
    before = len(server.recorder.received)
    again = send(tmp_path, server, "2030-01-14T10:00")
    assert [(m.kind, m.due) for m in again.messages] == [(ANNOUNCEMENT, 0), (CHANGE, 2)]
    assert [(c.old, c.new) for c in again.messages[1].changes] == [("Room Q", "Room R")]
    assert sorted(r.rcpt for r in new_since(server, before)) == people[:2]


def test_the_reminder_goes_once_to_those_told_before_its_time(tmp_path: Path, server: Server) -> None:
    people = make_list(tmp_path, 2)
    reminder = '  reminder: "09:00"\n'
    write(tmp_path, series_extra=reminder)
    send(tmp_path, server, MONDAY)
    add_line(tmp_path, "early@example.org")
    send(tmp_path, server, "2030-01-17T08:30")  # told the week before the reminder time
    add_line(tmp_path, "late@example.org")
    before = len(server.recorder.received)
    reminded = send(tmp_path, server, "2030-01-17T09:10")  # late@ is told now, after it: no reminder for them
    assert [(m.kind, m.due) for m in reminded.messages] == [(ANNOUNCEMENT, 1), (REMINDER, 3)]
    got = [(r.rcpt, parse(r)["Subject"].startswith("Reminder")) for r in new_since(server, before)]
    assert sorted(got) == sorted([("late@example.org", False), *((p, True) for p in [*people, "early@example.org"])])
    before = len(server.recorder.received)
    again = send(tmp_path, server, "2030-01-17T09:25")
    assert [(m.kind, m.due) for m in again.messages] == [(ANNOUNCEMENT, 0)] and new_since(server, before) == []


def test_the_followup_goes_once_after_the_talk_to_those_told(tmp_path: Path, server: Server) -> None:
    people = make_list(tmp_path, 3)
    followup = "  followup: true\n"
    write(tmp_path, series_extra=followup)
    send(tmp_path, server, MONDAY)
    add_line(tmp_path, "late@example.org")  # never told of the talk
    write(tmp_path, series_extra=followup, first_extra="    slides: https://ri.se/lm/slides.pdf\n")
    assert [m.kind for m in send(tmp_path, server, "2030-01-17T15:45").messages] == []  # the talk is still on
    before = len(server.recorder.received)
    after = send(tmp_path, server, "2030-01-17T16:05")
    assert [(m.kind, m.due) for m in after.messages] == [(FOLLOWUP, 3)]
    assert sorted(r.rcpt for r in new_since(server, before)) == people
    parts = [p.get_content_type() for p in parse(new_since(server, before)[0]).walk()]
    assert "text/calendar" not in parts  # the talk is over: nothing for a calendar to change
    assert [m.kind for m in send(tmp_path, server, "2030-01-17T16:20").messages] == []


def test_a_copy_that_may_not_have_arrived_is_followed_by_the_change_relative_to_it(
    tmp_path: Path, server: Server
) -> None:
    """No reply came after one copy of the announcement was sent (it may have arrived). After an edit that
    subscriber gets the change relative to it, like the others, not the week a second time."""
    people = make_list(tmp_path, 2)
    write(tmp_path)
    server.recorder.data_actions[people[0]] = ["drop"]
    first = send(tmp_path, server, MONDAY)
    assert [a.addr for a, _ in first.messages[0].outcome.uncertain] == [people[0]]  # type: ignore[union-attr]
    write(tmp_path, first_extra="    location: Room Q\n")
    before = len(server.recorder.received)
    edited = send(tmp_path, server, "2030-01-14T09:00")
    assert [(m.kind, m.due) for m in edited.messages] == [(ANNOUNCEMENT, 0), (CHANGE, 2)]
    got = sorted((r.rcpt, parse(r)["Subject"].split(":")[0]) for r in new_since(server, before))
    assert got == [(people[0], "Changed"), (people[1], "Changed")]


def test_a_run_with_results_the_ledger_could_not_take_is_pending_even_for_one(tmp_path: Path) -> None:
    """Exit 75 (run again) when even one result was not recorded (disk full): that recipient may be due still."""
    make_list(tmp_path, 1)
    write(tmp_path)
    schedule = load_schedule(tmp_path / "seminars.yaml")
    result = Result(schedule, None, False, [], {}, [], [], tmp_path / "state", unrecorded=1)
    assert result.pending
    assert not Result(schedule, None, False, [], {}, [], [], tmp_path / "state").pending


def test_the_day_a_request_announces_is_the_date_named_else_today_in_utc(tmp_path: Path) -> None:
    named = request(tmp_path, None, "2030-01-20T23:30", date="2030-01-14")
    assert named.day == dt.date(2030, 1, 14)
    today = dataclasses.replace(named, date=None, now=dt.datetime(2030, 1, 20, 23, 30, tzinfo=dt.UTC))
    assert today.day == dt.date(2030, 1, 20)


def test_a_late_joiner_is_announced_the_seminars_of_the_week_that_are_on(tmp_path: Path, server: Server) -> None:
    """The week's first seminar is cancelled: a late joiner is not told of it (nobody hears of a seminar first
    by its cancellation), but is told of the other one (a `continue` turned `break` at the first once did not)."""
    make_list(tmp_path, 2)
    write(tmp_path, **TWO_IN_A_WEEK)
    send(tmp_path, server, MONDAY)
    add_line(tmp_path, "late@example.org")
    write(tmp_path, first_extra="    cancelled: The speaker is ill.\n", **TWO_IN_A_WEEK)
    before = len(server.recorder.received)
    send(tmp_path, server, "2030-01-14T09:00")
    (late,) = [parse(r) for r in new_since(server, before) if r.rcpt == "late@example.org"]
    assert "Joakim Lindblad" in late["Subject"] and "Serge Belongi" not in late["Subject"]


def test_a_seminar_added_to_an_announced_week_is_announced_alone_to_those_told_the_rest(
    tmp_path: Path, server: Server
) -> None:
    """The week was announced with one seminar; a second is added to it: those told the first get the second
    alone, and a late joiner gets both in one message in this run (it once got the second alone, because it
    lacks that too, and the first only at the next run; and a `continue` turned `break` at the first, known,
    seminar once told nobody)."""
    people = make_list(tmp_path, 2)
    write(tmp_path, **{"  - date: 2030-01-24\n    speaker: Joakim Lindblad\n": ""})
    send(tmp_path, server, MONDAY)
    add_line(tmp_path, "late@example.org")
    write(tmp_path, **TWO_IN_A_WEEK)  # the second seminar, on the 18th
    before = len(server.recorder.received)
    added = send(tmp_path, server, "2030-01-14T09:00")
    # (kind, due to, seminars in it): the added one alone to the two told the first, both to the late joiner
    assert sorted((m.kind, m.due, len(m.key.split("+"))) for m in added.messages) == [
        (ANNOUNCEMENT, 1, 2),
        (ANNOUNCEMENT, 2, 1),
    ]
    got = [(r.rcpt, parse(r)["Subject"]) for r in new_since(server, before)]
    assert sorted(rcpt for rcpt, _ in got) == sorted([*people, "late@example.org"])  # one message each
    subjects = dict(got)
    assert "Joakim Lindblad" in subjects[people[0]] and "Serge Belongi" not in subjects[people[0]]
    assert "Joakim Lindblad" in subjects["late@example.org"] and "Serge Belongi" in subjects["late@example.org"]
    assert not added.pending and table(send(tmp_path, server, "2030-01-14T09:15")) == [(ANNOUNCEMENT, 0, 3)]


def test_a_cancelled_seminar_nobody_was_told_of_does_not_hide_the_rest_of_the_week(
    tmp_path: Path, server: Server
) -> None:
    """Those told the week's one seminar (on the 19th); then a seminar is added on the 18th, and one on the 17th,
    already cancelled, that nobody was told of: they get the 18th's alone (a `continue` turned `break` at the
    cancelled one, first in the week, once told them nothing)."""
    people = make_list(tmp_path, 2)
    serge = "  - date: 2030-01-17\n    speaker: Serge Belongi\n    title: Challenges in Fine-Grained Image Analysis\n"
    write(tmp_path, **{serge: "  - date: 2030-01-10\n    speaker: Serge Belongi\n", "2030-01-24": "2030-01-19"})
    send(tmp_path, server, MONDAY)
    write(
        tmp_path,
        first_extra="    cancelled: The speaker is ill.\n",
        **{"  - date: 2030-01-24\n": "  - date: 2030-01-18\n    speaker: Ada Lovelace\n  - date: 2030-01-19\n"},
    )
    before = len(server.recorder.received)
    send(tmp_path, server, "2030-01-14T09:00")
    got = sorted((r.rcpt, parse(r)["Subject"]) for r in new_since(server, before))
    assert [rcpt for rcpt, _ in got] == sorted(people)
    assert all("Ada Lovelace" in s and "Joakim" not in s and "Serge" not in s for _, s in got), got


def test_a_change_whose_copy_may_not_have_arrived_goes_to_that_subscriber_once_more(
    tmp_path: Path, server: Server
) -> None:
    """No reply came after one copy of a change: the next run sends that very message to that subscriber once
    more, and to nobody else."""
    people = make_list(tmp_path, 2)
    write(tmp_path)
    send(tmp_path, server, MONDAY)
    write(tmp_path, first_extra="    location: Room Q\n")
    server.recorder.data_actions[people[0]] = ["drop"]
    edited = send(tmp_path, server, "2030-01-14T09:00")
    assert [a.addr for a, _ in edited.messages[1].outcome.uncertain] == [people[0]]  # type: ignore[union-attr]
    before = len(server.recorder.received)
    again = send(tmp_path, server, "2030-01-14T09:15")
    assert [(m.kind, m.due) for m in again.messages] == [(ANNOUNCEMENT, 0), (CHANGE, 1)]
    (retry,) = new_since(server, before)
    assert retry.rcpt == people[0] and parse(retry)["Subject"].startswith("Changed:")


def test_after_a_copy_that_may_not_have_arrived_the_next_change_is_told_against_what_surely_came(
    tmp_path: Path, server: Server
) -> None:
    """A subscriber's copy of the change to Room Q may not have arrived; then the speaker's name is respelled
    (for those told Room Q, a spelling fix: no mail). That subscriber is told the change against the
    announcement they surely had (Room Q and the name), once."""
    people = make_list(tmp_path, 2)
    write(tmp_path)
    send(tmp_path, server, MONDAY)
    write(tmp_path, first_extra="    location: Room Q\n")
    server.recorder.data_actions[people[0]] = ["drop"]
    send(tmp_path, server, "2030-01-14T09:00")
    write(tmp_path, first_extra="    location: Room Q\n", **{"Serge Belongi": "Serge Belongie"})
    before = len(server.recorder.received)
    respelled = send(tmp_path, server, "2030-01-14T09:30")
    (change,) = [m for m in respelled.messages if m.kind == CHANGE]
    assert change.due == 1 and [c.label for c in change.changes] == ["Location", "Speaker"]
    assert [r.rcpt for r in new_since(server, before)] == [people[0]]


ORGANISERS = '  announce: "Monday 08:00"\n  organisers: [Ada <ada@ri.se>, grace@ri.se]\n'


def test_the_organisers_reminder_goes_from_a_real_send_and_a_dry_run_only_says_it(
    tmp_path: Path, server: Server
) -> None:
    make_list(tmp_path, 1)
    write(tmp_path, series_extra=ORGANISERS)  # the 2030-01-24 seminar has no title and no abstract
    send(tmp_path, server, MONDAY)  # the week of the 14th announced
    before = len(server.recorder.received)
    said = dry(tmp_path, server, "2030-01-20T09:00")  # 23 hours before the next week's announcement
    assert [n for n in said.notes if "would remind the organisers (ada@ri.se, grace@ri.se)" in n]
    assert new_since(server, before) == []
    real = send(tmp_path, server, "2030-01-20T09:00")
    assert [n for n in real.notes if "reminded the organisers" in n]
    assert sorted(r.rcpt for r in new_since(server, before)) == ["ada@ri.se", "grace@ri.se"]


def test_a_run_stopped_by_the_daily_limit_starts_no_further_message(tmp_path: Path, server: Server) -> None:
    make_list(tmp_path, 2)
    write(tmp_path)
    send(tmp_path, server, MONDAY, MAILER_DAILY_LIMIT="3")  # two of the day's three
    add_line(tmp_path, "late1@example.org")
    add_line(tmp_path, "late2@example.org")
    write(tmp_path, first_extra="    location: Room Q\n")
    before = len(server.recorder.received)
    stopped = send(tmp_path, server, "2030-01-14T09:00", MAILER_DAILY_LIMIT="3")
    assert [(m.kind, m.due) for m in stopped.messages] == [(ANNOUNCEMENT, 2), (CHANGE, 2)]
    assert len(new_since(server, before)) == 1 and stopped.stopped and stopped.pending
    assert stopped.messages[1].outcome is None  # ("Not sent to 2 recipients": never started)


def test_a_subscriber_whose_change_is_retried_gets_no_other_change_of_that_seminar_in_the_run(
    tmp_path: Path, server: Server
) -> None:
    """x was told revision 0 only (deferred at the first edit), then x's copy of the change 0 -> 2 may not have
    arrived, while w was told revision 1 only (deferred at the second edit). The next run retries x's change
    once more and tells w the change 1 -> 2: x gets no change 1 -> 2 besides."""
    x, _y, w = make_list(tmp_path, 3)
    write(tmp_path)
    send(tmp_path, server, MONDAY)
    write(tmp_path, first_extra="    location: Room Q\n")
    server.recorder.rcpt_replies[x] = ["451 4.7.1 try again later"] * 3
    send(tmp_path, server, "2030-01-14T09:00")  # y and w told revision 1
    write(tmp_path, first_extra="    location: Room R\n")
    server.recorder.data_actions[x] = ["drop"]
    server.recorder.rcpt_replies[w] = ["451 4.7.1 try again later"] * 3
    send(tmp_path, server, "2030-01-14T10:00")  # y told revision 2; x's copy uncertain; w deferred
    before = len(server.recorder.received)
    send(tmp_path, server, "2030-01-14T10:15")
    got = sorted((r.rcpt, parse(r)["Subject"].split(":")[0]) for r in new_since(server, before))
    assert got == sorted([(x, "Changed"), (w, "Changed")])


def test_approvals_lists_who_approved_which_week(tmp_path: Path, server: Server) -> None:
    from mailer.run.approval import approve
    from mailer.run.records import approvals

    make_list(tmp_path, 1)
    write(tmp_path, series_extra="  approval: required\n")
    assert approvals(tmp_path / "state", "learning-machines") == []
    held = send(tmp_path, server, MONDAY)
    assert server.recorder.received == [] and [n for n in held.notes if "waits for approval" in n]
    done = approve(request(tmp_path, server, MONDAY), by="Ada")
    ((week, fingerprint, by, _),) = approvals(tmp_path / "state", "learning-machines")
    assert (week, fingerprint, by) == ("2030-01-14", done.fingerprint, "Ada")
    assert table(send(tmp_path, server, "2030-01-14T08:15")) == [(ANNOUNCEMENT, 1, 0)]


SAME_SPEAKER_NEXT_WEEK = {"Joakim Lindblad": "Serge Belongi\n    title: Another Talk"}
FIRST_SEMINAR = (
    "  - date: 2030-01-17\n    speaker: Serge Belongi\n    title: Challenges in Fine-Grained Image Analysis\n"
    "    abstract: |\n      Some abstract.\n"
)


def test_a_seminar_in_the_file_at_the_last_send_is_not_taken_for_a_deleted_one_moved(
    tmp_path: Path, server: Server
) -> None:
    """The week's seminar announced while the speaker's next talk (another week) was in the file too; the first
    is deleted: it is cancelled, and the next talk is not taken for it moved (the send records which seminars
    the file held, and the planner keeps those from being another one's new date or speaker)."""
    people = make_list(tmp_path, 2)
    write(tmp_path, **SAME_SPEAKER_NEXT_WEEK)
    send(tmp_path, server, MONDAY)
    write(tmp_path, **{**SAME_SPEAKER_NEXT_WEEK, FIRST_SEMINAR: ""})
    before = len(server.recorder.received)
    deleted = send(tmp_path, server, "2030-01-14T09:00")
    assert [(m.kind, m.due) for m in deleted.messages] == [(CANCELLATION, 2)]
    got = sorted((r.rcpt, parse(r)["Subject"].split(":")[0]) for r in new_since(server, before))
    assert got == [(p, "Cancelled") for p in people]


def test_the_announcement_says_this_weeks_in_its_week_and_next_weeks_the_week_before(
    tmp_path: Path, server: Server
) -> None:
    make_list(tmp_path, 1)
    write(tmp_path)
    send(tmp_path, server, "2030-01-11T09:00", date="2030-01-14")  # the Friday before, the week named
    send(tmp_path, server, "2030-01-21T08:00")  # the next week's, in its week
    (before_it, in_it) = (bodies(parse(r))[0] for r in server.recorder.received)
    assert "Welcome to next week's Learning Machines seminar" in before_it
    assert "Welcome to this week's Learning Machines seminar" in in_it


def test_a_send_closes_its_ledger_when_done(tmp_path: Path, server: Server) -> None:
    """Once a run returns, its ledger is closed, the write-ahead log folded into the database file (SQLite
    removes it at the last close): nothing of the run waits in the WAL for a power cut, and no connection is
    left open in the process for the garbage collector (the hazard the simulation found with a dry run's)."""
    import gc

    make_list(tmp_path, 2)
    write(tmp_path)
    gc.disable()  # (only what the run closes itself counts, not what a collection would close)
    try:
        send(tmp_path, server, MONDAY)
        assert not (tmp_path / "state" / "ledger.sqlite3-wal").exists()
    finally:
        gc.enable()


def test_a_copy_uncertain_twice_is_not_sent_a_third_time(tmp_path: Path, server: Server) -> None:
    """The announcement's copy to one subscriber got no reply (it may have arrived), and neither did its one retry:
    the ledger then counts it as arrived. A later run sends it no third copy; a change still reaches them."""
    people = make_list(tmp_path, 2)
    write(tmp_path)
    server.recorder.data_actions[people[0]] = ["drop", "drop"]
    send(tmp_path, server, MONDAY)
    send(tmp_path, server, "2030-01-14T08:15")  # (its one retry, as a possible duplicate: no reply again)
    assert [r.rcpt for r in server.recorder.received].count(people[0]) == 0  # (dropped: the server kept nothing)
    before = len(server.recorder.received)
    third = send(tmp_path, server, "2030-01-14T08:30")
    assert sum(m.due for m in third.messages) == 0 and len(server.recorder.received) == before
    write(tmp_path, first_extra="    location: Room Q\n")
    edited = send(tmp_path, server, "2030-01-14T09:00")
    assert [(m.kind, m.due) for m in edited.messages if m.due] == [(CHANGE, 2)]


def test_a_dry_run_closes_its_ledger_when_done(tmp_path: Path, server: Server) -> None:
    """A dry run's read-only ledger is closed when it returns, not left open in the process for the garbage
    collector: the simulation found one left open while a killed send wrote the file, and the next send there
    read the ledger as malformed."""
    import gc
    import os

    make_list(tmp_path, 2)
    write(tmp_path)
    send(tmp_path, server, MONDAY)
    ledger = str(tmp_path / "state" / "ledger.sqlite3")

    def open_on_ledger() -> list[str]:
        found = []
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/self/fd/{fd}").startswith(ledger):
                    found.append(fd)
        return found

    gc.disable()  # (only what the run closes itself counts, not what a collection would close)
    try:
        dry(tmp_path, server, "2030-01-14T09:00")
        assert open_on_ledger() == []
    finally:
        gc.enable()
