"""Nothing half-finished goes out: ``draft: true`` keeps a seminar out of every mail and page, and ``check``
and the dry run name what the coming seminars still lack (absent or TBA), each at its line."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import subprocess
import sys
from pathlib import Path

import pytest

from mailer.compose.checks import is_placeholder, missing_details
from mailer.run.plan import ANNOUNCEMENT, Memory, plan
from tests.run.test_plan import MONDAY, THURSDAY, announced, kinds, schedule
from tests.smtp_server import Server
from tests.test_lifecycle import make_list, send, server, write

__all__ = ["server"]  # (the aiosmtpd fixture)

DRAFT = "  - date: 2030-01-16\n    speaker: Alan Turing\n    title: Computing Machinery\n    draft: true\n"


def cli(tmp_path: Path, *args: str, recipients: bool = True) -> subprocess.CompletedProcess[str]:
    more = ["--recipients", str(tmp_path / "recipients")] if recipients else []
    return subprocess.run(
        [sys.executable, "-m", "mailer", *args, "--schedule", str(tmp_path / "seminars.yaml"),
         "--state", str(tmp_path / "state"), *more],
        capture_output=True, text=True, check=False, cwd=tmp_path, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_a_draft_is_in_no_message_and_no_page(tmp_path: Path) -> None:
    s = schedule(tmp_path, seminars=DRAFT + THURSDAY)
    assert [x.speaker for x in s.seminars] == ["Serge Belongie"] and [x.speaker for x in s.drafts] == ["Alan Turing"]
    p = plan(s, Memory(), now=MONDAY, today=MONDAY.date())
    assert kinds(p) == [ANNOUNCEMENT] and [i.seminar.speaker for i in p.dues[0].seminars] == ["Serge Belongie"]
    only = schedule(tmp_path, seminars=DRAFT)  # a week whose only seminar is a draft announces nothing
    assert kinds(plan(only, Memory(), now=MONDAY, today=MONDAY.date())) == []


def test_an_announced_seminar_cannot_become_a_draft(tmp_path: Path) -> None:
    """Made a draft after its announcement, it must not look removed (that would cancel it): nothing is sent,
    and the problem names its line and what to do."""
    s0 = schedule(tmp_path)
    memory = announced(s0)
    drafted = schedule(tmp_path, seminars=THURSDAY + "    draft: true\n")
    p = plan(drafted, memory, now=MONDAY + dt.timedelta(hours=2), today=MONDAY.date())
    (problem,) = p.problems
    assert problem.line == 11 and problem.column == 5 and "'draft: true' cannot take it back" in problem.message
    assert "cancelled: <reason>" in problem.message


@pytest.mark.parametrize(
    ("text", "placeholder"),
    [("TBA", True), ("tba.", True), ("To be announced", True), ("?", True), ("", True), (None, True),
     ("TBD", True), ("Tbc", True), ("Tabular Bandits", False), ("N/A", True), ("On TBA-free proofs", False)],
)  # fmt: skip
def test_what_counts_as_missing(text: str | None, placeholder: bool) -> None:
    assert is_placeholder(text) is placeholder


def test_check_and_the_dry_run_name_what_the_coming_seminars_lack(tmp_path: Path) -> None:
    seminars = (
        "  - date: 2030-01-17\n    speaker: Serge Belongie\n    title: TBA\n"  # line 12: no title, no abstract
        "  - date: 2030-01-24\n    speaker: TBA\n    title: Vision\n    abstract: Seeing.\n    location: tba\n"
        "  - date: 2030-02-21\n    speaker: Far Away\n"  # three weeks on: not yet
        + DRAFT.replace("2030-01-16", "2030-01-22")
    )
    s = schedule(tmp_path, seminars=seminars, series_extra='  announce: "Monday 08:00"\n')
    found = missing_details(s, dt.date(2030, 1, 14))  # the Monday of its announcement
    assert [(p.line, p.message.split(" has no ")[1].split(" yet")[0]) for p in found] == [
        (12, "title or abstract"),
        (15, "speaker or location"),
    ]
    assert "its announcement goes out Monday 2030-01-14 08:00" in found[0].message
    make_list(tmp_path, 1)
    checked = cli(tmp_path, "check", "--date", "2030-01-14")
    assert checked.returncode == 0, checked.stderr
    assert f"warning: {tmp_path / 'seminars.yaml'}:12: 2030-01-17 (Serge Belongie) has no title or abstract" in (
        checked.stderr
    )
    assert f"note: {tmp_path / 'seminars.yaml'}:22: 2030-01-22 (Alan Turing) is a draft" in checked.stderr
    assert "OK, 3 seminars of Learning Machines (and 1 draft)" in checked.stdout
    dry = cli(tmp_path, "send", "--dry-run", "--now", "2030-01-14T08:00")
    assert dry.returncode == 0 and ":15: 2030-01-24 (TBA) has no speaker or location yet" in dry.stderr, dry.stderr


def test_a_real_send_leaves_the_draft_out_of_the_mail_and_its_upcoming_list(tmp_path: Path, server: Server) -> None:
    make_list(tmp_path, 2)
    write(tmp_path, first_extra="")
    text = (tmp_path / "seminars.yaml").read_text()
    (tmp_path / "seminars.yaml").write_text(text + DRAFT.replace("2030-01-16", "2030-01-31"))
    assert send(tmp_path, server, "2030-01-14T08:00").returncode == 0
    bodies = [email.message_from_bytes(r.data, policy=email.policy.default) for r in server.recorder.received]
    assert len(bodies) == 2
    for message in bodies:
        text_part = message.get_body(("plain",))
        assert text_part is not None
        body = text_part.get_content()
        assert "Joakim Lindblad" in body and "Alan Turing" not in body  # listed upcoming, the draft is not
    site = tmp_path / "site"
    published = cli(tmp_path, "publish", "--out", str(site), "--now", "2030-01-14T09:00", recipients=False)
    assert published.returncode == 0, published.stderr
    pages = "".join(p.read_text() for p in site.iterdir() if p.suffix in (".html", ".ics", ".atom"))
    assert "Joakim Lindblad" in pages and "Alan Turing" not in pages
