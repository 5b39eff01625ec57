"""What was announced stays true: changes, cancellations, moves and reminders, each once per subscriber.

seminar-mailer runs as its own process (as cron runs it) against aiosmtpd on 127.0.0.1 with
STARTTLS and AUTH; the clock is passed in with --now, the dates lie in 2030 (ahead of today). Each
message the server received is parsed back, and its invitation read with icalendar.
"""

from __future__ import annotations

import email
import email.policy
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import icalendar
import pytest

from tests.conftest import SERIES
from tests.smtp_server import Received, Server, start_server

SCHEDULE = (
    SERIES
    + """\
{series_extra}seminars:
  - date: 2030-01-17
    speaker: Serge Belongi
    title: Challenges in Fine-Grained Image Analysis
{first_extra}    abstract: |
      Some abstract.
  - date: 2030-01-24
    speaker: Joakim Lindblad
"""
)
MONDAY = "2030-01-14T08:00"  # local to the series: the week of the 2030-01-17 seminar


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path)
    yield srv
    srv.controller.stop()


def write(tmp_path: Path, *, series_extra: str = "", first_extra: str = "", **replace: str) -> Path:
    """Write the schedule; ``first_extra`` adds keys to the 2030-01-17 seminar, ``replace`` edits text."""
    text = SCHEDULE.format(series_extra=series_extra, first_extra=first_extra)
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / "seminars.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def make_list(tmp_path: Path, n: int) -> list[str]:
    folder = tmp_path / "recipients"
    folder.mkdir(exist_ok=True)
    addresses = [f"user{i}@example.org" for i in range(n)]
    (folder / "learning-machines.txt").write_text("".join(f"User {i} <{a}>\n" for i, a in enumerate(addresses)))
    return addresses


def command(tmp_path: Path, now: str, *more: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mailer",
        "send",
        "--now",
        now,
        "--schedule",
        str(tmp_path / "seminars.yaml"),
        "--recipients",
        str(tmp_path / "recipients"),
        "--state",
        str(tmp_path / "state"),
        *more,
    ]


def send(tmp_path: Path, server: Server, now: str, *more: str, **env: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        command(tmp_path, now, *more),
        cwd=tmp_path,
        env={**os.environ, **server.env(**env)},
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def parse(received: Received) -> EmailMessage:
    message = email.message_from_bytes(received.data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def invitation(message: EmailMessage) -> tuple[icalendar.Calendar, icalendar.Event]:
    part = next(p for p in message.walk() if p.get_content_type() == "text/calendar")
    calendar = icalendar.Calendar.from_ical(part.get_payload(decode=True))
    (event,) = calendar.walk("VEVENT")
    return calendar, event


def bodies(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    assert text is not None and html is not None
    return text.get_content(), html.get_content()


def new_since(server: Server, before: int) -> list[Received]:
    return server.recorder.received[before:]


def test_change_then_cancel_each_reach_every_subscriber_once(tmp_path: Path, server: Server) -> None:
    people = make_list(tmp_path, 20)
    write(tmp_path)
    first = send(tmp_path, server, MONDAY)
    assert first.returncode == 0, first.stdout + first.stderr
    announcements = {r.rcpt: parse(r) for r in server.recorder.received}
    assert sorted(announcements) == sorted(people)
    _, announced = invitation(announcements[people[0]])
    uid = str(announced["UID"])
    assert announced.decoded("SEQUENCE") == 0

    # The time and the room change: one "Changed:" each, to exactly those who were told.
    write(tmp_path, first_extra='    time: "16:00"\n    location: Room 2, Scheelevägen 17\n')
    before = len(server.recorder.received)
    changed = send(tmp_path, server, "2030-01-15T08:00")
    assert changed.returncode == 0, changed.stdout + changed.stderr
    got = new_since(server, before)
    assert Counter(r.rcpt for r in got) == Counter(people)
    for r in got:
        message = parse(r)
        assert message["Subject"].startswith("Changed: Learning Machines seminar 2030-01-17 16:00 CET")
        assert message["In-Reply-To"] == announcements[r.rcpt]["Message-ID"]  # threads under the announcement
        assert message["Message-ID"] != announcements[r.rcpt]["Message-ID"]
        text, html = bodies(message)
        assert "Time: 16:00 CET (was 15:00 CET)" in text
        assert "Location: Room 2, Scheelevägen 17 (was RISE Lund Office)" in text
        assert "15:00 CET" in html and "16:00 CET" in html and "Room 2, Scheelevägen 17" in html
        calendar, event = invitation(message)
        assert calendar["METHOD"] == "REQUEST" and str(event["UID"]) == uid and event.decoded("SEQUENCE") == 1
        assert event.decoded("DTSTART").isoformat() == "2030-01-17T15:00:00+00:00"  # 16:00 CET
    assert "Changed: Learning Machines seminar" in changed.stdout and "sent now           20" in changed.stdout

    # A rerun sends nothing.
    before = len(server.recorder.received)
    again = send(tmp_path, server, "2030-01-15T09:00")
    assert again.returncode == 0 and len(server.recorder.received) == before, again.stdout

    # Cancelled: one "Cancelled:" each, METHOD:CANCEL under the same UID, a higher SEQUENCE.
    write(tmp_path, first_extra='    time: "16:00"\n    location: Room 2, Scheelevägen 17\n'
          '    cancelled: The speaker is ill.\n')  # fmt: skip
    cancelled = send(tmp_path, server, "2030-01-15T10:00")
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    got = new_since(server, before)
    assert Counter(r.rcpt for r in got) == Counter(people)
    for r in got:
        message = parse(r)
        assert message["Subject"].startswith("Cancelled: Learning Machines seminar 2030-01-17 16:00 CET")
        text, _ = bodies(message)
        assert "is cancelled. The speaker is ill." in text
        calendar, event = invitation(message)
        assert calendar["METHOD"] == "CANCEL" and event["STATUS"] == "CANCELLED"
        assert str(event["UID"]) == uid and event.decoded("SEQUENCE") == 2

    # An abstract edit mails nobody; nor does fixing the speaker's spelling of a cancelled seminar.
    before = len(server.recorder.received)
    write(tmp_path, first_extra='    time: "16:00"\n    location: Room 2, Scheelevägen 17\n'
          '    cancelled: The speaker is ill.\n', **{"Some abstract.": "A better abstract."})  # fmt: skip
    assert send(tmp_path, server, "2030-01-15T11:00").returncode == 0
    write(tmp_path, first_extra='    time: "16:00"\n    location: Room 2, Scheelevägen 17\n'
          '    cancelled: The speaker is ill.\n', **{"Serge Belongi": "Serge Belongie"})  # fmt: skip
    fixed = send(tmp_path, server, "2030-01-15T12:00")
    assert fixed.returncode == 0 and len(server.recorder.received) == before, fixed.stdout
    status = subprocess.run(
        [sys.executable, "-m", "mailer", "status", "--schedule", str(tmp_path / "seminars.yaml"),
         "--state", str(tmp_path / "state")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    assert f"uid {uid}" in status.stdout  # the same identity after the spelling fix
    assert "Announcement  sent to 20 of 20" in status.stdout
    assert "Change        sent to 20 of 20" in status.stdout and "Cancellation  sent to 20 of 20" in status.stdout


def test_a_speakers_spelling_fix_mails_nobody_and_reaches_calendars_by_the_feed_and_the_reminder(
    tmp_path: Path, server: Server
) -> None:
    """Issue 19: a one-letter fix mailed the whole list "Changed:"; organisers stop fixing typos."""
    make_list(tmp_path, 5)
    write(tmp_path, series_extra='  reminder: "09:00"\n')
    assert send(tmp_path, server, MONDAY).returncode == 0
    _, announced = invitation(parse(server.recorder.received[0]))
    write(tmp_path, series_extra='  reminder: "09:00"\n', **{"Serge Belongi": "Serge Belongie"})
    dry = send(tmp_path, server, "2030-01-14T09:00", "--dry-run")
    assert "Speaker: Serge Belongi -> Serge Belongie: no mail" in dry.stdout and "spelling fix" in dry.stdout
    before = len(server.recorder.received)
    result = send(tmp_path, server, "2030-01-14T09:00")
    assert result.returncode == 0 and new_since(server, before) == [], result.stdout
    published = subprocess.run(
        [sys.executable, "-m", "mailer", "publish", "--out", str(tmp_path / "site"), "--now", "2030-01-14T09:05",
         "--schedule", str(tmp_path / "seminars.yaml"), "--state", str(tmp_path / "state")],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert published.returncode == 0, published.stderr
    feed = icalendar.Calendar.from_ical((tmp_path / "site" / "seminars.ics").read_bytes())
    (event,) = [e for e in feed.walk("VEVENT") if str(e["UID"]) == str(announced["UID"])]
    assert "Serge Belongie" in str(event["SUMMARY"]) and event.decoded("SEQUENCE") == 1
    reminded = send(tmp_path, server, "2030-01-17T09:05")
    got = new_since(server, before)
    assert reminded.returncode == 0 and len(got) == 5
    message = parse(got[0])
    assert message["Subject"].startswith("Reminder:") and "Serge Belongie" in message["Subject"]
    _, event = invitation(message)
    assert str(event["UID"]) == str(announced["UID"]) and event.decoded("SEQUENCE") == 1


def test_notify_true_mails_a_spelling_fix_and_another_speaker_is_always_mailed(tmp_path: Path, server: Server) -> None:
    make_list(tmp_path, 4)
    write(tmp_path)
    assert send(tmp_path, server, MONDAY).returncode == 0
    _, announced = invitation(parse(server.recorder.received[0]))
    write(tmp_path, first_extra="    notify: true\n", **{"Serge Belongi": "Serge Belongie"})
    before = len(server.recorder.received)
    assert send(tmp_path, server, "2030-01-14T09:00").returncode == 0
    got = new_since(server, before)
    assert len(got) == 4 and "Serge Belongi" in bodies(parse(got[0]))[0]
    write(tmp_path, **{"Serge Belongi": "Ada Lovelace"})  # a replacement: another person
    before = len(server.recorder.received)
    assert send(tmp_path, server, "2030-01-14T09:15").returncode == 0
    got = new_since(server, before)
    assert Counter(r.rcpt for r in got) == Counter(f"user{i}@example.org" for i in range(4))
    message = parse(got[0])
    assert message["Subject"].startswith("Changed:")
    assert "Speaker: Ada Lovelace (was Serge Belongie)" in bodies(message)[0]
    _, event = invitation(message)
    assert str(event["UID"]) == str(announced["UID"]) and event.decoded("SEQUENCE") == 2


def test_a_move_to_the_next_week_is_one_change_and_no_second_announcement(tmp_path: Path, server: Server) -> None:
    people = make_list(tmp_path, 8)
    write(tmp_path)
    assert send(tmp_path, server, MONDAY).returncode == 0
    uid = str(invitation(parse(server.recorder.received[0]))[1]["UID"])
    write(tmp_path, **{"2030-01-17": "2030-01-22"})  # Thursday to the next Tuesday
    before = len(server.recorder.received)
    moved = send(tmp_path, server, "2030-01-15T08:00")
    got = new_since(server, before)
    assert moved.returncode == 0 and Counter(r.rcpt for r in got) == Counter(people), moved.stdout
    message = parse(got[0])
    assert message["Subject"].startswith("Changed: Learning Machines seminar 2030-01-22 15:00 CET")
    assert "Date: 2030-01-22 (was 2030-01-17)" in bodies(message)[0]
    _, event = invitation(message)
    assert str(event["UID"]) == uid and event.decoded("SEQUENCE") == 1
    # The next week's Monday: that week holds the moved seminar and Joakim Lindblad's. Everyone knows
    # the moved one already, so the week's announcement tells of Lindblad's alone.
    before = len(server.recorder.received)
    next_week = send(tmp_path, server, "2030-01-21T08:00")
    got = new_since(server, before)
    assert next_week.returncode == 0 and Counter(r.rcpt for r in got) == Counter(people), next_week.stdout
    announced = parse(got[0])
    assert announced["Subject"] == "Learning Machines seminar 2030-01-24 15:00 CET: Joakim Lindblad"
    assert "Serge Belongi" not in bodies(announced)[0].split("Upcoming seminars")[0]
    again = send(tmp_path, server, "2030-01-21T09:00")
    assert again.returncode == 0 and "already sent to 8 recipients" in again.stdout


def test_a_seminar_removed_after_its_announcement_is_cancelled_and_the_dry_run_says_so(
    tmp_path: Path, server: Server
) -> None:
    make_list(tmp_path, 4)
    write(tmp_path)
    assert send(tmp_path, server, MONDAY).returncode == 0
    text = (tmp_path / "seminars.yaml").read_text()
    start = text.index("  - date: 2030-01-17")
    (tmp_path / "seminars.yaml").write_text(text[:start] + text[text.index("  - date: 2030-01-24") :])
    dry = send(tmp_path, server, "2030-01-15T08:00", "--dry-run")
    assert dry.returncode == 0 and "no longer in" in dry.stdout and "told it is cancelled" in dry.stdout
    assert "Cancelled: Learning Machines seminar 2030-01-17 15:00 CET" in dry.stdout
    assert "Would send to 4 recipients." in dry.stdout
    before = len(server.recorder.received)
    assert send(tmp_path, server, "2030-01-15T08:00").returncode == 0
    got = new_since(server, before)
    assert len(got) == 4
    calendar, event = invitation(parse(got[0]))
    assert calendar["METHOD"] == "CANCEL" and "removed from the programme" in str(event["DESCRIPTION"])


def test_the_reminder_goes_once_after_its_time_and_never_after_the_start(tmp_path: Path, server: Server) -> None:
    people = make_list(tmp_path, 6)
    write(tmp_path, series_extra='  reminder: "09:00"\n')
    assert send(tmp_path, server, MONDAY).returncode == 0
    before = len(server.recorder.received)
    early = send(tmp_path, server, "2030-01-17T08:30")  # the seminar's day, before 09:00
    assert early.returncode == 0 and new_since(server, before) == []
    for moment in ("2030-01-17T09:15", "2030-01-17T11:00", "2030-01-17T14:45"):
        assert send(tmp_path, server, moment).returncode == 0
    got = new_since(server, before)
    assert Counter(r.rcpt for r in got) == Counter(people)
    message = parse(got[0])
    assert message["Subject"].startswith("Reminder: Learning Machines seminar 2030-01-17 15:00 CET")
    assert "Reminder: the Learning Machines seminar starts on Thursday 2030-01-17 at 15:00 CET." in bodies(message)[0]
    # Someone who joins after the reminder time gets the announcement, and no reminder a second later.
    (tmp_path / "recipients" / "learning-machines.txt").write_text(
        (tmp_path / "recipients" / "learning-machines.txt").read_text() + "new@example.org\n"
    )
    before = len(server.recorder.received)
    joined = send(tmp_path, server, "2030-01-17T14:50")
    got = [parse(r)["Subject"] for r in new_since(server, before)]
    assert joined.returncode == 0 and len(got) == 1 and got[0].startswith("Learning Machines seminar"), got
    # After the start nothing is sent about it, even for a list that grew.
    (tmp_path / "recipients" / "learning-machines.txt").write_text(
        (tmp_path / "recipients" / "learning-machines.txt").read_text() + "late@example.org\n"
    )
    before = len(server.recorder.received)
    after = send(tmp_path, server, "2030-01-17T15:30")
    assert after.returncode == 0 and new_since(server, before) == [], after.stdout


def test_a_past_week_is_refused_for_a_real_send_and_shown_by_a_dry_run(tmp_path: Path, server: Server) -> None:
    make_list(tmp_path, 3)
    write(tmp_path)
    real = send(tmp_path, server, "2030-02-05T08:00", "--date", "2030-01-14")
    assert real.returncode == 2 and "is in a week that is over" in real.stderr
    assert server.recorder.received == []
    dry = send(tmp_path, server, "2030-02-05T08:00", "--date", "2030-01-14", "--dry-run")
    assert dry.returncode == 0 and "Would send to 3 recipients." in dry.stdout


def test_kill_9_during_a_change_loses_nobody_and_duplicates_only_replies_in_flight(
    tmp_path: Path, server: Server, capsys: pytest.CaptureFixture[str]
) -> None:
    people = make_list(tmp_path, 1500)
    write(tmp_path)
    assert send(tmp_path, server, MONDAY).returncode == 0
    write(tmp_path, first_extra='    time: "16:00"\n')
    server.recorder.delay = 0.002
    before = len(server.recorder.received)
    rng = random.Random(20300117)
    kills = 0
    for _ in range(3):
        proc = subprocess.Popen(
            command(tmp_path, "2030-01-15T08:00"),
            cwd=tmp_path,
            env={**os.environ, **server.env()},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(0.8, 1.6))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
        time.sleep(0.1)
    final = send(tmp_path, server, "2030-01-15T08:00")
    assert final.returncode == 0, final.stdout + final.stderr
    got = new_since(server, before)
    counts = Counter(r.rcpt for r in got)
    assert set(counts) == set(people), f"missing: {len(set(people) - set(counts))}"
    assert all(parse(r)["Subject"].startswith("Changed:") for r in got[:50])
    extra = sum(counts.values()) - len(people)
    assert extra <= kills * 4, f"{extra} duplicates over {kills} kills (pool of 4)"
    ids: dict[str, set[str]] = {}
    for r in got:
        ids.setdefault(r.rcpt, set()).add(r.message_id)
    assert all(len(v) == 1 for v in ids.values()), "a resent change carried a new Message-ID"
    with capsys.disabled():
        print(f"\nkill -9 x{kills} during a change: 0 missing, {extra} duplicate copies (same Message-ID)")


def test_a_test_copy_goes_to_one_address_only_and_is_recorded_nowhere(tmp_path: Path, server: Server) -> None:
    people = make_list(tmp_path, 4)
    write(tmp_path)
    result = send(tmp_path, server, MONDAY, "--to", "Organiser <user2@example.org>")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Test copy sent to user2@example.org: [TEST] Learning Machines seminar 2030-01-17" in result.stdout
    (copy,) = server.recorder.received
    assert copy.rcpt == "user2@example.org" and parse(copy)["Subject"].startswith("[TEST] Learning Machines seminar")
    assert not (tmp_path / "state" / "ledger.sqlite3").exists()
    real = send(tmp_path, server, MONDAY)  # the test copy counted for nothing: everyone still gets it
    assert real.returncode == 0 and Counter(r.rcpt for r in server.recorder.received[1:]) == Counter(people)
