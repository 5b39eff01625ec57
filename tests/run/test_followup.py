"""The follow-up (series ``followup: true``): a seminar's slides, video and paper, mailed once after it
ended, to exactly those who were told of it, through the ledger like every other message.

seminar-mailer runs as its own process against aiosmtpd on 127.0.0.1 (STARTTLS, AUTH), the clock
passed in with --now, the dates in 2030; every message is parsed back.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

from tests.conftest import run_cli
from tests.smtp_server import Server
from tests.test_lifecycle import bodies, make_list, new_since, parse, send, server, write

__all__ = ["server"]  # (the aiosmtpd fixture)

FOLLOWUP = "  followup: true\n"
SLIDES_AND_VIDEO = "    slides: https://ri.se/lm/slides.pdf\n    video: https://video.example.org/watch?v=lm-2030\n"
THE_TALK = "2030-01-17"  # 15:00 to 16:00 CET
LIST = "learning-machines.txt"


def add_line(tmp_path: Path, name: str, line: str) -> None:
    path = tmp_path / "recipients" / name
    path.write_text((path.read_text() if path.exists() else "") + line + "\n")


def test_the_followup_goes_once_after_the_talk_to_those_told_and_still_subscribed(
    tmp_path: Path, server: Server
) -> None:
    people = make_list(tmp_path, 4)
    write(tmp_path, series_extra=FOLLOWUP)
    assert send(tmp_path, server, "2030-01-14T08:00").returncode == 0
    announced = {r.rcpt: parse(r)["Message-ID"] for r in server.recorder.received}
    assert set(announced) == set(people)

    add_line(tmp_path, LIST, "late@example.org")  # joins after the talk: was never told of it
    add_line(tmp_path, "unsubscribed.txt", people[3])  # was told, then left
    write(tmp_path, series_extra=FOLLOWUP, first_extra=SLIDES_AND_VIDEO)
    before = len(server.recorder.received)
    during = send(tmp_path, server, "2030-01-17T15:45")  # the talk is still on: nothing yet
    assert during.returncode == 0 and new_since(server, before) == [], during.stdout

    dry = send(tmp_path, server, "2030-01-17T16:05", "--dry-run")
    assert dry.returncode == 0 and "Follow-up: Slides and video: Learning Machines seminar" in dry.stdout, dry.stdout
    assert "Would send to 3 recipients" in dry.stdout and new_since(server, before) == []

    after = send(tmp_path, server, "2030-01-17T16:05")
    assert after.returncode == 0, after.stderr
    got = new_since(server, before)
    assert Counter(r.rcpt for r in got) == Counter(people[:3])  # (late@ had the next week's announcement alone)
    message = parse(got[0])
    assert message["Subject"] == (
        "Slides and video: Learning Machines seminar 2030-01-17 15:00 CET: Serge Belongi – "
        "Challenges in Fine-Grained Image Analysis"
    )
    assert message["In-Reply-To"] == announced[got[0].rcpt]  # threads under their announcement
    assert message["List-Unsubscribe"] and message["List-Id"]
    assert not [p for p in message.walk() if p.get_content_type() in ("text/calendar", "application/ics")]
    text, html = bodies(message)
    assert "**Slides:** [https://ri.se/lm/slides.pdf](https://ri.se/lm/slides.pdf)" in text
    assert '<a href="https://video.example.org/watch?v=lm-2030"' in html
    assert re.search(r"From the Learning Machines seminar with Serge Belongi .* on Thursday 2030-01-17", html)

    # Once: later runs, a paper added, the list re-read: nothing more about it.
    write(tmp_path, series_extra=FOLLOWUP, first_extra=SLIDES_AND_VIDEO + "    paper: https://arxiv.org/abs/2401.0\n")
    before = len(server.recorder.received)
    for moment in ("2030-01-17T16:20", "2030-01-18T09:00"):
        assert send(tmp_path, server, moment).returncode == 0
    assert new_since(server, before) == []
    status = run_cli("status", "--schedule", str(tmp_path / "seminars.yaml"), "--state", str(tmp_path / "state"))
    assert status.code == 0 and re.search(r"Follow-up +sent to 3 of 3, .*: Slides and video:", status.out), status.out


def test_no_followup_without_the_key_without_links_or_after_two_weeks(tmp_path: Path, server: Server) -> None:
    make_list(tmp_path, 2)
    write(tmp_path)
    assert send(tmp_path, server, "2030-01-14T08:00").returncode == 0
    before = len(server.recorder.received)
    write(tmp_path, first_extra=SLIDES_AND_VIDEO)  # links, but the series does not ask for a follow-up
    assert send(tmp_path, server, "2030-01-17T16:05").returncode == 0
    assert new_since(server, before) == []

    write(tmp_path, series_extra=FOLLOWUP)  # asked for, but no link yet
    assert send(tmp_path, server, "2030-01-17T16:20").returncode == 0
    assert new_since(server, before) == []

    write(tmp_path, series_extra=FOLLOWUP, first_extra=SLIDES_AND_VIDEO)  # links added 14 days after the end
    late = send(tmp_path, server, "2030-01-31T16:00")
    subjects = [parse(r)["Subject"] for r in new_since(server, before)]
    assert late.returncode == 0 and not [s for s in subjects if s.startswith("Slides")], subjects


def test_a_cancelled_seminar_gets_no_followup(tmp_path: Path, server: Server) -> None:
    make_list(tmp_path, 2)
    write(tmp_path, series_extra=FOLLOWUP)
    assert send(tmp_path, server, "2030-01-14T08:00").returncode == 0
    write(tmp_path, series_extra=FOLLOWUP, first_extra="    cancelled: The speaker is ill\n")
    assert send(tmp_path, server, "2030-01-15T08:00").returncode == 0  # the cancellation
    before = len(server.recorder.received)
    write(tmp_path, series_extra=FOLLOWUP, first_extra="    cancelled: The speaker is ill\n" + SLIDES_AND_VIDEO)
    assert send(tmp_path, server, "2030-01-17T16:05").returncode == 0
    assert new_since(server, before) == []
