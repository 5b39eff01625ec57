"""publish: the pages, the programme, the calendar feed and the Atom feed, read back by real parsers.

The feed is parsed by icalendar and by vobject (an independent implementation), the Atom feed by
feedparser. UIDs, SEQUENCEs and times are compared with the invitations the mails carry: built by the
message path (dispatch.preview) or, after real sends, received by an aiosmtpd server.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import feedparser
import icalendar
import pytest
import vobject

from mailer.compose.render import render
from mailer.core.address import Address
from mailer.programme.model import week_of
from mailer.programme.schedule import load_schedule
from mailer.run.dispatch import preview
from mailer.run.plan import REMOVED
from mailer.run.request import Request
from mailer.site.publish import ATOM, CALENDAR, MANIFEST, PROGRAMME, publish
from tests import conftest
from tests.conftest import REFERENCE_PAGE, SCHEDULE, run_cli
from tests.smtp_server import Server, start_server

UTC = dt.UTC
# These tests read the Jekyll pages and the feeds; tests/site/test_website.py reads the HTML site.
SERIES = conftest.SERIES + "  site: jekyll\n{extra}seminars:\n"

# Around the 2024 clock changes in Stockholm: 31 March 02:00 CET -> 03:00 CEST, 27 October 03:00 CEST -> 02:00 CET.
CLOCK_CHANGES = (
    SERIES.format(extra="")
    + """\
  - date: 2024-03-28
    speaker: Before Spring
  - date: 2024-03-31
    speaker: Spring Sunday
    time: "10:00"
  - date: 2024-04-04
    speaker: After Spring
  - date: 2024-10-24
    speaker: Before Autumn
  - date: 2024-10-27
    speaker: Twice Half Past Two
    time: "02:30"
  - date: 2024-10-31
    speaker: After Autumn
    title: Cancelled talk
    cancelled: the speaker is ill
"""
)
EXPECTED_UTC = {  # speaker -> (DTSTART, DTEND) in UTC
    "Before Spring": ("2024-03-28 14:00", "2024-03-28 15:00"),  # 15:00 CET
    "Spring Sunday": ("2024-03-31 08:00", "2024-03-31 09:00"),  # 10:00 CEST, hours after the change
    "After Spring": ("2024-04-04 13:00", "2024-04-04 14:00"),  # 15:00 CEST
    "Before Autumn": ("2024-10-24 13:00", "2024-10-24 14:00"),  # 15:00 CEST
    "Twice Half Past Two": ("2024-10-27 00:30", "2024-10-27 01:30"),  # the first 02:30 (CEST), 60 minutes
    "After Autumn": ("2024-10-31 14:00", "2024-10-31 15:00"),  # 15:00 CET
}


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


def invitations(message: bytes) -> list[icalendar.Event]:
    """The VEVENTs of the calendar attachment of a message, parsed back."""
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    found = []
    for part in parsed.walk():
        if part.get_content_type() == "text/calendar":
            found += icalendar.Calendar.from_ical(part.get_payload(decode=True)).walk("VEVENT")
    return found


def feed_events(path: Path) -> dict[str, icalendar.Event]:
    calendar = icalendar.Calendar.from_ical(path.read_bytes())
    events = calendar.walk("VEVENT")
    uids = [str(e["UID"]) for e in events]
    assert len(uids) == len(set(uids)), "one VEVENT per seminar, each UID once"
    return dict(zip(uids, events, strict=True))


def test_the_2024_01_18_page_is_the_reference_byte_for_byte(tmp_path: Path) -> None:
    out = tmp_path / "site"
    publish(SCHEDULE, out=out, state=tmp_path / "state", templates=None, now=dt.datetime(2024, 1, 20, 12, 0))
    page = out / "2024-01-18-challenges-in-fine-grained-image-analysis.md"
    assert page.read_bytes() == REFERENCE_PAGE.read_bytes()
    names = {p.name for p in out.iterdir()}
    assert len([n for n in names if n.endswith(".md") and n != PROGRAMME]) == 5  # one page per seminar
    assert {CALENDAR, ATOM, PROGRAMME, MANIFEST} <= names
    assert not (tmp_path / "state").exists(), "publish reads the state folder, never creates it"


def test_feed_parses_twice_with_the_invitations_times_across_both_clock_changes(tmp_path: Path) -> None:
    schedule = tmp_path / "seminars.yaml"
    schedule.write_text(CLOCK_CHANGES, encoding="utf-8")
    out = tmp_path / "site"
    publish(schedule, out=out, state=tmp_path / "state", templates=None, now=dt.datetime(2024, 3, 1, 9, 0))
    raw = (out / CALENDAR).read_bytes()

    # icalendar
    calendar = icalendar.Calendar.from_ical(raw)
    assert "METHOD" not in calendar, "a published calendar has no METHOD (RFC 5545 3.7.2)"
    assert str(calendar["X-WR-CALNAME"]) == "Learning Machines"
    assert calendar["REFRESH-INTERVAL"].params["VALUE"] == "DURATION"
    assert calendar["REFRESH-INTERVAL"].dt == dt.timedelta(hours=12)
    assert icalendar.vDuration.from_ical(str(calendar["X-PUBLISHED-TTL"])) == dt.timedelta(hours=12)
    by_speaker = {re.search(r"Speaker: ([^,\n]+)", str(e["DESCRIPTION"]))[1]: e for e in calendar.walk("VEVENT")}
    assert len(calendar.walk("VEVENT")) == len(EXPECTED_UTC)
    for speaker, (start, end) in EXPECTED_UTC.items():
        event = by_speaker[speaker]
        assert (event.decoded("DTSTART"), event.decoded("DTEND")) == (_utc(start), _utc(end)), speaker
    assert str(by_speaker["After Autumn"]["STATUS"]) == "CANCELLED"
    assert int(by_speaker["After Autumn"]["SEQUENCE"]) == 1  # as the cancellation notice announces it
    assert {str(e["STATUS"]) for s, e in by_speaker.items() if s != "After Autumn"} == {"CONFIRMED"}

    # vobject, an independent parser, reads the same events and times
    parsed = vobject.readOne(raw.decode("utf-8"))
    assert not hasattr(parsed, "method")
    vevents = parsed.vevent_list
    assert len(vevents) == len(EXPECTED_UTC)
    second = {v.uid.value: (v.dtstart.value, v.dtend.value, int(v.sequence.value)) for v in vevents}
    first = {
        str(e["UID"]): (e.decoded("DTSTART"), e.decoded("DTEND"), int(e["SEQUENCE"])) for e in calendar.walk("VEVENT")
    }
    assert second == first

    # the invitations the mails carry, week by week, built by the message path itself
    parsed_schedule = load_schedule(schedule)
    mondays = sorted({s.date - dt.timedelta(days=s.date.weekday()) for s in parsed_schedule.seminars})
    invited: dict[str, icalendar.Event] = {}
    for monday in mondays:
        request = Request(
            schedule=schedule,
            templates=None,
            recipients=tmp_path / "recipients",
            state=tmp_path / "state",
            now=dt.datetime.combine(monday, dt.time(0, 0), tzinfo=parsed_schedule.series.timezone),
            date=monday,
            dry_run=True,
            env={"MAILER_TOKEN_KEY": "k" * 32},
            clock_given=True,
        )
        for message in preview(request)[1]:
            assert message.template is not None
            for event in invitations(message.template.personalise(Address("", "ada@example.org"))):
                invited[str(event["UID"])] = event
    assert set(invited) == set(first), "the feed and the mails name the same seminars"
    for uid, event in invited.items():
        assert (event.decoded("DTSTART"), event.decoded("DTEND"), int(event["SEQUENCE"])) == first[uid], uid


def test_a_cancelled_seminars_page_says_so_and_the_programme_lists_past_seminars_by_year(tmp_path: Path) -> None:
    schedule = tmp_path / "seminars.yaml"
    schedule.write_text(
        CLOCK_CHANGES + "  - date: 2023-11-30\n    speaker: Last Year\n  - date: 2025-01-16\n    speaker: Next Year\n",
        encoding="utf-8",
    )
    out = tmp_path / "site"
    publish(schedule, out=out, state=tmp_path / "state", templates=None, now=dt.datetime(2024, 10, 25, 12, 0))
    cancelled = (out / "2024-10-31-cancelled-talk.md").read_text(encoding="utf-8")
    assert 'with After Autumn ("Cancelled talk") is cancelled. the speaker is ill' in cancelled
    programme = (out / PROGRAMME).read_text(encoding="utf-8")
    assert programme.startswith('---\nlayout: default\ntitle: "Learning Machines seminars"\n---\n')
    upcoming, past = programme.split("## Past seminars")
    assert [line.split("): ")[1] for line in upcoming.splitlines() if line.startswith("* ")] == [
        "Twice Half Past Two",
        "After Autumn: Cancelled talk (cancelled: the speaker is ill)",
        "Next Year",
    ]
    assert "* [2024-10-27 02:30 CEST](2024-10-27-twice-half-past-two.html)" in upcoming
    assert past.index("### 2024") < past.index("### 2023")
    assert past.index("Before Autumn") < past.index("Before Spring") < past.index("Last Year")
    assert "[seminars.ics](seminars.ics)" in programme and "[announcements.atom](announcements.atom)" in programme


def test_the_atom_feed_is_valid_atom_for_feedparser(tmp_path: Path) -> None:
    schedule = tmp_path / "seminars.yaml"
    schedule.write_text(CLOCK_CHANGES.replace("Before Spring", "Ada <b>Lovelace</b> & co"), encoding="utf-8")
    out = tmp_path / "site"
    publish(schedule, out=out, state=tmp_path / "state", templates=None, now=dt.datetime(2024, 4, 2, 9, 0))
    feed = feedparser.parse((out / ATOM).read_bytes())
    assert not feed.bozo, feed.get("bozo_exception")
    assert feed.version == "atom10"
    assert feed.feed.title == "Learning Machines seminars"
    assert feed.feed.id.startswith("urn:uuid:") and feed.feed.author == "The Learning Machines Team"
    assert feed.feed.link == "https://ri.se/lm-sem"
    # announced so far: the weeks of 25 March and 1 April (their Mondays have come), newest first
    assert [e.title for e in feed.entries] == [
        "2024-04-04 15:00 CEST: After Spring",
        "2024-03-31 10:00 CEST: Spring Sunday",
        "2024-03-28 15:00 CET: Ada <b>Lovelace</b> & co",
    ]
    for entry in feed.entries:
        assert entry.id.startswith("urn:uuid:") and entry.updated_parsed and entry.published_parsed
        assert entry.link.endswith(".html") and entry.content[0].type == "text/html"
    assert feed.entries[0].published == "2024-03-31T22:00:00Z"  # Monday 1 April 00:00 CEST
    assert feed.feed.updated == "2024-03-31T22:00:00Z"
    body = feed.entries[2].content[0].value
    assert "<b>" not in body and "Ada &lt;b&gt;Lovelace&lt;/b&gt; &amp; co" in body  # the name is text, not markup
    assert not [link for link in feed.feed.links if link.rel == "self"]  # no calendar_url: no address to give


def test_with_calendar_url_the_atom_feed_names_itself_and_links_entries_absolutely(tmp_path: Path) -> None:
    """A reader that keeps an entry, or fetches the feed through a proxy, still reaches the page."""
    schedule = tmp_path / "seminars.yaml"
    site = "https://seminars.example.org/lm/"
    text = CLOCK_CHANGES.replace("seminars:\n", f"  calendar_url: {site}{CALENDAR}\nseminars:\n", 1)
    schedule.write_text(text, encoding="utf-8")
    out = tmp_path / "site"
    publish(schedule, out=out, state=tmp_path / "state", templates=None, now=dt.datetime(2024, 4, 2, 9, 0))
    raw = (out / ATOM).read_bytes()
    feed = feedparser.parse(raw)  # parsed without a document address: relative links would stay relative
    assert not feed.bozo
    (self_link,) = [link for link in feed.feed.links if link.rel == "self"]
    assert self_link.href == f"{site}{ATOM}" and self_link.type == "application/atom+xml"
    assert [e.link for e in feed.entries] == [
        f"{site}2024-04-04-after-spring.html",
        f"{site}2024-03-31-spring-sunday.html",
        f"{site}2024-03-28-before-spring.html",
    ]
    assert all((out / e.link.removeprefix(site).replace(".html", ".md")).exists() for e in feed.entries)


def _mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}


def test_a_second_publish_without_a_change_rewrites_nothing(tmp_path: Path) -> None:
    schedule = tmp_path / "seminars.yaml"
    schedule.write_text(CLOCK_CHANGES, encoding="utf-8")
    out = tmp_path / "site"
    first = publish(schedule, out=out, state=tmp_path / "s", templates=None, now=dt.datetime(2024, 3, 26, 9, 0))
    assert len(first.written) == 9 and not first.unchanged
    for path in out.iterdir():  # far in the past: a rewrite, however quick, would show
        os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    before, ics = _mtimes(out), (out / CALENDAR).read_bytes()

    again = publish(schedule, out=out, state=tmp_path / "s", templates=None, now=dt.datetime(2024, 3, 27, 9, 0))
    assert again.written == () and len(again.unchanged) == 9
    assert _mtimes(out) == before
    assert (out / CALENDAR).read_bytes() == ics

    # One change: its page, the feed (that one event gets a new DTSTAMP) and the programme; nothing else.
    schedule.write_text(CLOCK_CHANGES.replace("speaker: After Spring", "speaker: After Spring\n    title: New"))
    changed = publish(schedule, out=out, state=tmp_path / "s", templates=None, now=dt.datetime(2024, 3, 27, 10, 0))
    assert set(changed.written) == {"2024-04-04-new.md", CALENDAR, PROGRAMME}
    assert changed.stale == ("2024-04-04-after-spring.md",)  # the page under its old name stays without --prune
    after = _mtimes(out)
    assert [n for n in before if n not in changed.written and after.get(n) != before[n]] == [MANIFEST]
    stamps = {str(e["UID"]): e.decoded("DTSTAMP") for e in feed_events(out / CALENDAR).values()}
    moved = {uid for uid, stamp in stamps.items() if stamp == dt.datetime(2024, 3, 27, 9, 0, tzinfo=UTC)}
    assert moved == {"learning-machines-2024-04-04-after-spring@ri.se"}
    assert set(stamps.values()) == {
        dt.datetime(2024, 3, 26, 8, 0, tzinfo=UTC),
        dt.datetime(2024, 3, 27, 9, 0, tzinfo=UTC),
    }

    # A change to an announcement already in the Atom feed: that entry alone is updated, at that moment.
    schedule.write_text(CLOCK_CHANGES.replace("speaker: Spring Sunday", "speaker: Spring Sunday\n    title: Later"))
    publish(schedule, out=out, state=tmp_path / "s", templates=None, now=dt.datetime(2024, 3, 28, 9, 0))
    entries = {e.title: e for e in feedparser.parse((out / ATOM).read_bytes()).entries}
    assert entries["2024-03-31 10:00 CEST: Spring Sunday – Later"].updated == "2024-03-28T08:00:00Z"
    assert entries["2024-03-31 10:00 CEST: Spring Sunday – Later"].published == "2024-03-24T23:00:00Z"
    assert entries["2024-03-28 15:00 CET: Before Spring"].updated == "2024-03-24T23:00:00Z"


def test_pages_of_deleted_seminars_go_only_with_prune_and_foreign_files_never(tmp_path: Path) -> None:
    schedule = tmp_path / "seminars.yaml"
    schedule.write_text(CLOCK_CHANGES, encoding="utf-8")
    out = tmp_path / "site"
    now = dt.datetime(2024, 3, 1, 9, 0)
    publish(schedule, out=out, state=tmp_path / "s", templates=None, now=now)
    foreign = out / "2023-05-04-written-by-hand.md"
    foreign.write_text("a page someone else keeps here\n")
    schedule.write_text(CLOCK_CHANGES.replace("  - date: 2024-10-24\n    speaker: Before Autumn\n", ""))

    def publish_cli(*more: str):  # type: ignore[no-untyped-def]
        paths = ("--schedule", str(schedule), "--state", str(tmp_path / "s"), "--out", str(out))
        return run_cli("publish", *paths, "--now", "2024-03-01T10:00", *more)

    kept = publish_cli()
    assert kept.code == 0, kept.err
    assert "kept" in kept.out and "2024-10-24-before-autumn.md" in kept.out and "--prune deletes it" in kept.out
    assert (out / "2024-10-24-before-autumn.md").exists()

    pruned = publish_cli("--prune")
    assert pruned.code == 0, pruned.err
    assert f"removed {out / '2024-10-24-before-autumn.md'}" in pruned.out
    assert not (out / "2024-10-24-before-autumn.md").exists()
    assert foreign.read_text() == "a page someone else keeps here\n"
    assert "2024-10-24" not in (out / MANIFEST).read_text()


def test_publish_reports_bad_input_at_its_line_without_a_traceback(tmp_path: Path) -> None:
    schedule = tmp_path / "seminars.yaml"
    schedule.write_text(CLOCK_CHANGES.replace('time: "02:30"', 'time: "02:3O"'), encoding="utf-8")
    result = run_cli("publish", "--schedule", str(schedule), "--out", str(tmp_path / "site"))
    assert result.code == 2 and "Traceback" not in result.err
    assert f"{schedule}:23:11: " in result.err  # (line 10 is site: jekyll)
    missing = run_cli("publish", "--schedule", str(schedule))
    assert missing.code == 2 and "--out" in missing.err
    assert not (tmp_path / "site").exists()


def test_calendar_url_is_linked_from_the_mail_footer_and_the_page(tmp_path: Path) -> None:
    url = "https://seminars.example.org/lm/seminars.ics"
    path = tmp_path / "seminars.yaml"
    path.write_text(
        SCHEDULE.read_text(encoding="utf-8").replace("  upcoming: 4\n", f"  upcoming: 4\n  calendar_url: {url}\n")
    )
    schedule = load_schedule(path)
    week = week_of(schedule, dt.date(2024, 1, 15))
    assert week is not None
    rendered = render(schedule, week)
    webcal = "webcal://seminars.example.org/lm/seminars.ics"
    google = "https://calendar.google.com/calendar/r?cid=webcal%3A%2F%2Fseminars.example.org%2Flm%2Fseminars.ics"
    outlook = (
        "https://outlook.office.com/calendar/0/addfromweb?url=https%3A%2F%2Fseminars.example.org%2Flm%2Fseminars.ics"
        "&name=Learning%20Machines"
    )
    footer = rendered.email_text[len(rendered.text) :]
    assert f"subscribe (Apple Calendar, Outlook, Thunderbird): {webcal}\n" in footer
    assert f"add to Google Calendar: {google}\n" in footer and f"add to Outlook on the web: {outlook}\n" in footer
    assert f"or the calendar's address, for any other: {url}\n" in footer
    assert url not in rendered.text, "the announcement itself stays the reference text"
    for link in (webcal, google, outlook):
        assert f'<a href="{link.replace("&", "&amp;")}"' in rendered.html, link
    reference = REFERENCE_PAGE.read_text(encoding="utf-8")
    assert (
        rendered.page
        == reference + f"\nEvery seminar in your calendar (subscribe once, stays up to date): [{url}]({url})\n"
    )
    out = tmp_path / "site"
    publish(path, out=out, state=tmp_path / "s", templates=None, now=dt.datetime(2024, 1, 15, 9, 0))
    assert f"[{url}]({url})" in (out / PROGRAMME).read_text(encoding="utf-8")


# --- against real sends -----------------------------------------------------------------------------

ANNOUNCED = (
    SERIES.format(extra="")
    + """\
  - date: 2030-01-15
    speaker: Ada Lovelace
    title: Engines
  - date: 2030-01-16
    speaker: Grace Hopper
  - date: 2030-01-17
    speaker: Alan Turing
  - date: 2030-03-28
    speaker: Before Spring
  - date: 2030-04-04
    speaker: After Spring
"""
)
EDITED = (
    ANNOUNCED.replace("    title: Engines\n", '    title: Engines\n    time: "16:00"\n')  # a change
    .replace("  - date: 2030-01-16\n    speaker: Grace Hopper\n", "")  # removed: the mails cancel it
    .replace("    speaker: Alan Turing\n", "    speaker: Alan Turing\n    cancelled: the speaker is ill\n")
)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path)
    yield srv
    srv.controller.stop()


def _send(tmp_path: Path, server: Server, schedule: Path, now: str) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mailer",
            "send",
            "--date",
            "2030-01-14",
            "--now",
            now,
            "--schedule",
            str(schedule),
            "--recipients",
            str(tmp_path / "recipients"),
            "--state",
            str(tmp_path / "state"),
        ],
        cwd=tmp_path,
        env={**os.environ, **server.env()},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr


def test_feed_carries_the_uid_and_sequence_of_the_invitations_after_a_change_and_cancellations(
    tmp_path: Path, server: Server
) -> None:
    (tmp_path / "recipients").mkdir()
    (tmp_path / "recipients" / "learning-machines.txt").write_text("ada@example.org\nbob@example.org\n")
    schedule = tmp_path / "seminars.yaml"
    schedule.write_text(ANNOUNCED, encoding="utf-8")
    out = tmp_path / "site"
    _send(tmp_path, server, schedule, "2030-01-14T08:00")  # announces the three seminars of the week
    schedule.write_text(EDITED, encoding="utf-8")

    # Before the next send the feed already shows the next revision, the one that send will announce.
    publish(schedule, out=out, state=tmp_path / "state", templates=None, now=dt.datetime(2030, 1, 14, 8, 30))
    early = {uid: int(e["SEQUENCE"]) for uid, e in feed_events(out / CALENDAR).items()}

    _send(tmp_path, server, schedule, "2030-01-14T09:00")  # the change and the two cancellations
    latest: dict[str, icalendar.Event] = {}
    for received in server.recorder.received:
        if received.rcpt != "ada@example.org":
            continue
        for event in invitations(received.data):
            uid = str(event["UID"])
            if uid not in latest or int(event["SEQUENCE"]) > int(latest[uid]["SEQUENCE"]):
                latest[uid] = event
    assert len(latest) == 3 and {int(e["SEQUENCE"]) for e in latest.values()} == {1}

    publish(schedule, out=out, state=tmp_path / "state", templates=None, now=dt.datetime(2030, 1, 14, 9, 30))
    feed = feed_events(out / CALENDAR)
    assert len(feed) == 5  # four seminars in the file and the removed one, cancelled
    for uid, mailed in latest.items():
        published = feed[uid]
        for name in ("SEQUENCE", "STATUS", "SUMMARY"):
            assert str(published[name]) == str(mailed[name]), (uid, name)
        for name in ("DTSTART", "DTEND"):
            assert published.decoded(name) == mailed.decoded(name), (uid, name)
        assert early[uid] == int(mailed["SEQUENCE"]), "publish before the send already knew the next SEQUENCE"
    by_speaker = {str(e["SUMMARY"]): e for e in feed.values()}
    ada = by_speaker["Learning Machines: Engines (Ada Lovelace)"]
    assert ada.decoded("DTSTART") == dt.datetime(2030, 1, 15, 15, 0, tzinfo=UTC)  # 16:00 CET
    assert str(by_speaker["Learning Machines: Grace Hopper"]["STATUS"]) == "CANCELLED"
    assert REMOVED in str(by_speaker["Learning Machines: Grace Hopper"]["DESCRIPTION"])
    assert str(by_speaker["Learning Machines: Alan Turing"]["STATUS"]) == "CANCELLED"
    assert int(by_speaker["Learning Machines: Before Spring"]["SEQUENCE"]) == 0  # never announced
    assert (out / "2030-01-16-grace-hopper.md").read_text().count("is cancelled. " + REMOVED) == 1
    assert "Grace Hopper" not in (out / PROGRAMME).read_text()


# --- the README's cron line -------------------------------------------------------------------------


def _git(*args: str, cwd: Path) -> str:
    env = {**os.environ, "GIT_CONFIG_GLOBAL": "/dev/null", "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=True).stdout


def test_the_readme_cron_line_publishes_into_a_site_and_commits_only_changes(tmp_path: Path) -> None:
    from tests.test_deployment import readme_block

    (line,) = [x for x in readme_block("cron", "30 8 * * *").splitlines() if x.strip()]
    project, site, remote = tmp_path / "project", tmp_path / "site", tmp_path / "site.git"
    (project / "data").mkdir(parents=True)
    (project / "state").mkdir()
    (project / "data" / "seminars.yaml").write_text(SCHEDULE.read_text(encoding="utf-8"), encoding="utf-8")
    _git("init", "-q", "--bare", str(remote), cwd=tmp_path)
    _git("init", "-q", str(site), cwd=tmp_path)
    (site / "_config.yml").write_text("title: a Jekyll site\n")
    for args in (
        ("config", "user.name", "Organiser"),
        ("config", "user.email", "organiser@example.org"),
        ("remote", "add", "origin", str(remote)),
        ("add", "-A"),
        ("commit", "-qm", "site"),
        ("push", "-q", "-u", "origin", "HEAD"),
    ):
        _git(*args, cwd=site)
    command = (
        line.split(maxsplit=5)[5]
        .replace("/srv/seminar-mailer", str(project))
        .replace(".venv/bin/seminar-mailer", str(Path(sys.executable).parent / "seminar-mailer"))
        .replace("/srv/lm-site", str(site))
    )
    cron_env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "GIT_CONFIG_GLOBAL": "/dev/null"}

    def cron() -> list[str]:
        ran = subprocess.run(["/bin/sh", "-c", command], env=cron_env, capture_output=True, text=True, check=False)
        assert ran.returncode == 0, ran.stdout + ran.stderr + (project / "state" / "publish.log").read_text()
        return _git("log", "--format=%s", cwd=remote).splitlines()

    assert cron() == ["Seminar programme", "site"]
    published = _git("ls-tree", "-r", "--name-only", "HEAD", cwd=remote).splitlines()
    assert "seminars/seminars.ics" in published and "seminars/programme.md" in published
    assert "seminars/2024-01-18-challenges-in-fine-grained-image-analysis.md" in published
    assert cron() == ["Seminar programme", "site"], "nothing changed: no commit"
    schedule = project / "data" / "seminars.yaml"
    schedule.write_text(schedule.read_text(encoding="utf-8").replace("Joakim Lindblad", "Joakim Lindblad Jr"))
    assert cron() == ["Seminar programme", "Seminar programme", "site"]
    published = _git("ls-tree", "-r", "--name-only", "HEAD", cwd=remote).splitlines()
    assert "seminars/2024-01-25-joakim-lindblad-jr.md" in published  # the renamed page; --prune took the old
    assert "seminars/2024-01-25-joakim-lindblad.md" not in published
