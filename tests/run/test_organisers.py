"""The organisers' reminder (series ``organisers:``): 24 hours before a week's announcement, once, to the organisers
only, listing what that week's seminars lack; nothing when nothing is missing (aiosmtpd on 127.0.0.1, dates in 2030).
"""

from __future__ import annotations

from pathlib import Path

from tests.smtp_server import Server
from tests.test_lifecycle import make_list, new_since, parse, send, server, write

__all__ = ["server"]  # (the aiosmtpd fixture)

ORGANISERS = '  announce: "Monday 08:00"\n  organisers: [Ada <ada@ri.se>, grace@ri.se]\n'


def test_the_organisers_are_reminded_once_of_what_the_coming_week_lacks(tmp_path: Path, server: Server) -> None:
    people = make_list(tmp_path, 2)
    write(tmp_path, series_extra=ORGANISERS)  # 2030-01-17 complete; 2030-01-24 has no title and no abstract
    assert send(tmp_path, server, "2030-01-13T09:00").returncode == 0  # the day before: nothing lacks, no mail
    assert server.recorder.received == []
    assert send(tmp_path, server, "2030-01-14T08:00").returncode == 0
    assert sorted(r.rcpt for r in server.recorder.received) == sorted(people)  # the announcement alone

    before = len(server.recorder.received)
    dry = send(tmp_path, server, "2030-01-20T09:00", "--dry-run")
    assert "would remind the organisers (ada@ri.se, grace@ri.se) of what the week of 2030-01-21 lacks" in dry.stdout
    early = send(tmp_path, server, "2030-01-20T07:45")  # more than 24 hours before Monday 08:00: not yet
    assert early.returncode == 0 and new_since(server, before) == []
    sent = send(tmp_path, server, "2030-01-20T09:00")
    assert sent.returncode == 0 and "reminded the organisers" in sent.stdout, sent.stdout
    got = new_since(server, before)
    assert sorted(r.rcpt for r in got) == ["ada@ri.se", "grace@ri.se"]  # no subscriber
    message = parse(got[0])
    assert message["Subject"] == (
        "Learning Machines: the announcement of the week of 2030-01-21 goes out Monday 08:00 with gaps"
    )
    text = message.get_body(("plain",))
    assert text is not None and "2030-01-24 (Joakim Lindblad) has no title or abstract yet" in text.get_content()
    for moment in ("2030-01-20T09:15", "2030-01-21T07:59"):  # once a week
        assert send(tmp_path, server, moment).returncode == 0
    assert len(new_since(server, before)) == 2
    assert "would remind" not in send(tmp_path, server, "2030-01-21T07:00", "--dry-run").stdout


def test_no_reminder_without_organisers_or_with_nothing_missing(tmp_path: Path, server: Server) -> None:
    make_list(tmp_path, 1)
    write(tmp_path, series_extra='  announce: "Monday 08:00"\n')  # no organisers
    assert send(tmp_path, server, "2030-01-20T09:00").returncode == 0
    write(tmp_path, series_extra=ORGANISERS, **{"    speaker: Joakim Lindblad\n": (
        "    speaker: Joakim Lindblad\n    title: Images\n    abstract: Pixels.\n")})  # fmt: skip
    assert send(tmp_path, server, "2030-01-20T09:30").returncode == 0
    assert [r.rcpt for r in server.recorder.received] == []
