"""One run of ``send`` (mailer/run/dispatch.py) called in this process: what it delivers to aiosmtpd on
127.0.0.1 (STARTTLS, AUTH), what it reports and what a dry run counts, with the real ledger in tmp_path.

The end-to-end tests (tests/test_lifecycle.py, tests/test_seams.py) run the same code as its own process;
these are the same flows, fast enough to come first when scripts/mutation.py tests dispatch."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailer.run.dispatch import run
from mailer.run.plan import ANNOUNCEMENT, CANCELLATION, CHANGE
from mailer.run.request import Request, Result
from tests.smtp_server import Server, start_server
from tests.test_lifecycle import MONDAY, make_list, new_since, parse, write


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path)
    yield srv
    srv.controller.stop()


def request(tmp_path: Path, server: Server, now: str, *, dry_run: bool = False, **env: str) -> Request:
    return Request(
        schedule=tmp_path / "seminars.yaml",
        templates=None,
        recipients=tmp_path / "recipients",
        state=tmp_path / "state",
        now=dt.datetime.fromisoformat(now),  # (local to the series, as --now)
        date=None,
        dry_run=dry_run,
        env=server.env(**env),
        clock_given=True,
    )


def send(tmp_path: Path, server: Server, now: str, **env: str) -> Result:
    return run(request(tmp_path, server, now, **env))


def table(result: Result) -> list[tuple[str, int, int]]:
    """Each message of the result: kind, how many it is due to, how many were told it already."""
    return [(m.kind, m.due, m.already) for m in result.messages]


def add_line(tmp_path: Path, line: str) -> None:
    path = tmp_path / "recipients" / "learning-machines.txt"
    path.write_text(path.read_text() + line + "\n")


def test_each_subscriber_is_announced_the_week_once(tmp_path: Path, server: Server) -> None:
    people = make_list(tmp_path, 3)
    write(tmp_path)
    first = send(tmp_path, server, MONDAY)
    assert table(first) == [(ANNOUNCEMENT, 3, 0)] and first.messages[0].outcome.sent == 3  # type: ignore[union-attr]
    assert not first.pending and not first.failed and first.stopped is None
    assert sorted(r.rcpt for r in server.recorder.received) == people
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
    dry = run(request(tmp_path, server, "2030-01-14T09:00", dry_run=True))
    assert table(dry) == [(ANNOUNCEMENT, 1, 3), (CHANGE, 3, 0)] and len(server.recorder.received) == 3
    before = len(server.recorder.received)
    edited = send(tmp_path, server, "2030-01-14T09:00")
    assert table(edited) == table(dry) and not edited.pending
    got = {r.rcpt: parse(r)["Subject"] for r in new_since(server, before)}
    assert got == {**{p: got[people[0]] for p in people}, "late@example.org": got["late@example.org"]}
    assert got[people[0]].startswith("Changed:") and got["late@example.org"].startswith("Learning Machines seminar")
    assert table(send(tmp_path, server, "2030-01-14T09:15")) == [(ANNOUNCEMENT, 0, 4)]


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
