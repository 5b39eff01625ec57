"""A weekly digest (a data/*.yaml with a digest: block) beside two series in one project: one mail a week of
every seminar of the series it gathers, and afterwards every correction to exactly those told, once each,
whichever list told them.

seminar-mailer runs as its own process from the project folder against aiosmtpd on 127.0.0.1 (STARTTLS,
AUTH), the clock passed in with --now, the dates in 2030; every message is parsed back and its invitation
read with icalendar.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import icalendar
import pytest

from tests.conftest import SERIES
from tests.run.test_series import ML, mailer
from tests.smtp_server import Received, Server
from tests.test_lifecycle import bodies, parse, server

__all__ = ["server"]

LM = (
    SERIES
    + """\
  announce: "Monday 08:00"
seminars:
  - date: 2030-01-17
    speaker: Serge Belongie
    title: Fine-Grained Image Analysis
  - date: 2030-01-24
    speaker: Joakim Lindblad
"""
)
WEEK = """\
digest:
  name: This Week at the Department
  sender: Department Seminars <seminars@example.org>
  list: week
  include: [learning-machines, ml]
  send: "Monday 07:00"
"""


def project(tmp_path: Path, *, room: str = "Room 2") -> Path:
    for folder in ("data", "recipients"):
        (tmp_path / folder).mkdir(exist_ok=True)
    (tmp_path / "data" / "seminars.yaml").write_text(LM, encoding="utf-8")
    (tmp_path / "data" / "ml.yaml").write_text(ML.format(room=room, extra='  announce: "Monday 08:00"\n'))
    (tmp_path / "data" / "week.yaml").write_text(WEEK, encoding="utf-8")
    (tmp_path / "recipients" / "learning-machines.txt").write_text("a@example.org\nlm@example.org\n")
    (tmp_path / "recipients" / "ml.txt").write_text("ml@example.org\n")
    (tmp_path / "recipients" / "week.txt").write_text("d@example.org\na@example.org\n")
    return tmp_path


def events(message: Received) -> dict[str, icalendar.Event]:
    """The invitation's VEVENTs by UID (the text/calendar part)."""
    mail = parse(message)
    part = next(p for p in mail.walk() if p.get_content_type() == "text/calendar")
    calendar = icalendar.Calendar.from_ical(part.get_content())
    return {str(e["UID"]): e for e in calendar.walk("VEVENT")}


def test_the_digest_tells_each_reader_every_seminar_once_and_corrections_reach_all_told_once(
    tmp_path: Path, server: Server
) -> None:
    folder = project(tmp_path)
    early = mailer(folder, server, "send", "--now", "2030-01-14T07:00")  # the digest's time; the series' is 08:00
    assert early.returncode == 0, early.stdout + early.stderr
    got = server.recorder.received
    assert Counter(r.rcpt for r in got) == Counter(["d@example.org", "a@example.org"]), early.stdout
    digest = parse(got[0])
    assert digest["Subject"] == "This Week at the Department, the week of 2030-01-14: 2 seminars"
    assert "Department Seminars <seminars@example.org>" in digest["From"]
    assert "week.example.org" in digest["List-Id"]
    text, html = bodies(digest)
    assert text.index("ML Reading Group: Compilers") < text.index("Learning Machines: Fine-Grained Image Analysis")
    assert "Joakim Lindblad" in text and "Grace Hopper" in html  # the next week in brief, and the HTML part
    invited = events(got[0])
    assert len(invited) == 2
    organizers = {str(e["ORGANIZER"]) for e in invited.values()}
    assert organizers == {"mailto:learning-machines@ri.se", "mailto:ml@example.org"}  # each seminar's own series

    later = mailer(folder, server, "send", "--now", "2030-01-14T08:00")
    assert later.returncode == 0, later.stderr
    announced = server.recorder.received[2:]
    # a@ had the Learning Machines seminar in the digest: its series' announcement does not tell it again.
    assert Counter(r.rcpt for r in announced) == Counter(["lm@example.org", "ml@example.org"]), later.stdout
    assert {uid for r in announced for uid in events(r)} == set(invited)  # one UID per seminar, whoever told it

    project(tmp_path, room="Room Q")  # the reading group moves
    before = len(server.recorder.received)
    moved = mailer(folder, server, "send", "--now", "2030-01-15T09:00")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    changes = server.recorder.received[before:]
    assert Counter(r.rcpt for r in changes) == Counter(["ml@example.org", "d@example.org", "a@example.org"])
    for change in changes:
        assert str(parse(change)["Subject"]).startswith("Changed: ML Reading Group seminar")
        (event,) = events(change).values()
        ml_uid = next(u for u, e in invited.items() if str(e["ORGANIZER"]) == "mailto:ml@example.org")
        assert str(event["UID"]) == ml_uid and int(event["SEQUENCE"]) == 1 and "Room Q" in str(event["LOCATION"])
    again = mailer(folder, server, "send", "--now", "2030-01-15T09:15")
    assert again.returncode == 0 and len(server.recorder.received) == before + 3, again.stdout


def test_a_reader_who_joins_the_digest_later_gets_the_week_once_and_no_week_without_seminars_is_mailed(
    tmp_path: Path, server: Server
) -> None:
    folder = project(tmp_path)
    assert mailer(folder, server, "send", "--now", "2030-01-14T08:00").returncode == 0
    first = len(server.recorder.received)
    (folder / "recipients" / "week.txt").write_text("d@example.org\na@example.org\nnew@example.org\n")
    joined = mailer(folder, server, "send", "--now", "2030-01-15T08:00")
    assert joined.returncode == 0, joined.stderr
    assert [r.rcpt for r in server.recorder.received[first:]] == ["new@example.org"]
    quiet = mailer(folder, server, "send", "--now", "2030-01-28T08:00")  # a week with no seminar of either series
    assert quiet.returncode == 0 and "Digest:" not in quiet.stdout, quiet.stdout
    assert len(server.recorder.received) == first + 1


def test_check_status_preview_and_subscribers_cover_the_digest(tmp_path: Path, server: Server) -> None:
    folder = project(tmp_path)
    checked = mailer(folder, server, "check")
    assert checked.returncode == 0, checked.stderr
    assert "data/week.yaml: OK, This Week at the Department, a weekly digest of learning-machines, ml" in checked.stdout
    assert "recipients/week.txt: OK, 2 recipients" in checked.stdout
    assert mailer(folder, server, "send", "--now", "2030-01-14T07:00").returncode == 0
    status = mailer(folder, server, "status", "--series", "week")
    assert status.returncode == 0, status.stderr
    assert status.stdout.count("Digest        sent to 2 of 2") == 2, status.stdout  # listed under each seminar
    shown = mailer(folder, server, "preview", "--date", "2030-01-14")
    assert shown.returncode == 0, shown.stderr
    assert (folder / "preview" / "week" / "digest.html").is_file()
    assert (folder / "preview" / "ml" / "announcement.html").is_file()
    listed = mailer(folder, server, "subscribers", "--series", "week", "--counts")
    assert listed.returncode == 0 and "week: 2 receive" in listed.stdout, listed.stdout + listed.stderr


def test_an_include_that_names_no_series_is_an_error_at_its_line_and_nothing_is_sent(
    tmp_path: Path, server: Server
) -> None:
    folder = project(tmp_path)
    (folder / "data" / "week.yaml").write_text(WEEK.replace("[learning-machines, ml]", "[learning-machines, mlx]"))
    out = mailer(folder, server, "send", "--now", "2030-01-14T08:00")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "data/week.yaml:5:" in out.stderr and "'mlx'" in out.stderr and "ml" in out.stderr, out.stderr
    assert server.recorder.received == []


def test_a_hard_bounce_of_the_digest_unsubscribes_the_address_from_every_list_and_one_run_reads_the_box(
    tmp_path: Path, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mailer.core.tokens import bounce_token
    from tests.audience.test_bounces import _dsn, maildir

    monkeypatch.setenv("MAILER_TOKEN_KEY", "k" * 32)
    folder = project(tmp_path)
    assert mailer(folder, server, "send", "--now", "2030-01-14T07:00").returncode == 0
    digest_to_a = next(r for r in server.recorder.received if r.rcpt == "a@example.org")
    token = bounce_token(("k" * 32).encode(), "week", digest_to_a.message_id)  # signed for the digest's list
    box = maildir(
        folder / "Maildir",
        {
            "a.eml": _dsn(["a@example.org"], to=f"bounces+{token}@example.org"),
            "forged.eml": _dsn(["lm@example.org"], to="bounces+0123456789abcdef@example.org"),
        },
    )
    read = mailer(folder, server, "bounces", "--maildir", str(box))
    assert read.returncode == 0, read.stdout + read.stderr
    assert "1 hard bounces" in read.stdout and "1 not ours" in read.stdout and "==" not in read.stdout, read.stdout
    for series in ("learning-machines", "week"):
        listing = mailer(folder, server, "subscribers", "--series", series).stdout
        assert "a@example.org\tunsubscribed" in listing, listing
    assert "lm@example.org\tsubscribed" in mailer(folder, server, "subscribers", "--series", "learning-machines").stdout
