"""Rendering: the reference announcement byte for byte, safe HTML, offline, template overrides."""

from __future__ import annotations

import dataclasses
import datetime as dt
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailer.compose.render import Rendered, render, render_change
from mailer.core.errors import TemplateError
from mailer.programme.model import Schedule, Seminar, week_of
from mailer.programme.revisions import Change
from mailer.programme.schedule import load_schedule
from tests.conftest import REFERENCE_PAGE, SCHEDULE, VALID, check_golden


def rendered_for(path: Path, day: dt.date, templates: Path | None = None):  # type: ignore[no-untyped-def]
    schedule = load_schedule(path)
    week = week_of(schedule, day)
    assert week is not None
    return render(schedule, week, templates=templates)


NEW_ZOOM = "https://rise.zoom.us/j/998877665?pwd=bmV3IGxpbmsgZm9yIHRoZSBzZW1pbmFyIGFmdGVyIHRoZSBjaGFuZ2U"
CALENDAR_URL = "https://seminars.example.org/lm/seminars.ics"


def corrections(folder: Path) -> tuple[Schedule, dict[str, tuple[Seminar, Rendered]]]:
    """The shipped programme with ``calendar_url``, and its 2024-01-18 seminar changed (time, room and
    Zoom link) and then cancelled: each kind with the seminar as it now is and its rendering."""
    path = folder / "seminars.yaml"
    text = SCHEDULE.read_text(encoding="utf-8")
    path.write_text(
        text.replace("  upcoming: 4\n", f"  upcoming: 4\n  calendar_url: {CALENDAR_URL}\n"), encoding="utf-8"
    )
    schedule = load_schedule(path)
    week = week_of(schedule, dt.date(2024, 1, 15))
    assert week is not None
    seminar = week.seminars[0]
    moved = dataclasses.replace(
        seminar, start=seminar.start.replace(hour=16), location="Room 2, Scheelevägen 17", zoom=NEW_ZOOM
    )
    changes = [
        Change("Time", "15:00 CET", "16:00 CET"),
        Change("Location", seminar.location, moved.location),
        Change("Zoom link", str(seminar.zoom), NEW_ZOOM),
    ]
    cancelled = dataclasses.replace(moved, cancelled="The speaker is ill")
    status = [Change("Status", "on", "cancelled")]
    return schedule, {
        "change": (moved, render_change(schedule, moved, changes, kind="change")),
        "cancellation": (cancelled, render_change(schedule, cancelled, status, kind="cancellation")),
    }


@pytest.fixture(scope="module")
def shipped():  # type: ignore[no-untyped-def]
    return rendered_for(SCHEDULE, dt.date(2024, 1, 15))


def test_page_equals_the_reference_byte_for_byte(shipped) -> None:
    assert shipped.page.encode() == REFERENCE_PAGE.read_bytes()
    assert shipped.page_name == "2024-01-18-challenges-in-fine-grained-image-analysis.md"


def test_text_equals_the_reference_without_front_matter(shipped) -> None:
    golden = REFERENCE_PAGE.read_text(encoding="utf-8")
    body = golden.split("---\n", 2)[2]
    assert shipped.text == body


def test_golden_subject_and_html(shipped, update_golden: bool) -> None:
    check_golden("subject-2024-01-18.txt", shipped.subject + "\n", update_golden)
    check_golden("announcement-2024-01-18.html", shipped.html, update_golden)


def test_html_is_inlined_responsive_and_small(shipped) -> None:
    html = shipped.html
    assert len(html.encode()) < 102 * 1024  # Gmail clips larger messages
    assert "@media" in html  # MJML's responsive column rules survive inlining
    assert 'href="https://rise.zoom.us/j/208117140?pwd=c2U5RDR0WnpzU041dGNISVdhNUkyQT09"' in html
    assert 'href="https://ri.se/lm-sem"' in html
    assert "<mj-" not in html and "googleapis" not in html and "@import" not in html
    assert 'style="' in html and "15:00 CET" in html


def test_summer_date_says_cest_and_mixed_upcoming_lists_each_time(write_schedule) -> None:
    text = VALID.replace("2024-01-18", "2024-03-28").replace("2024-01-25", "2024-04-04")
    text += "  - date: 2024-04-11\n    speaker: Third Speaker\n"
    winter = rendered_for(write_schedule(text), dt.date(2024, 3, 25))
    # this week's 15:00 is CET, the later ones CEST: no "All seminars are", every line its own zone
    assert "**Date:** 2024-03-28 15:00 CET\n" in winter.text and "All seminars are" not in winter.text
    assert "* 2024-04-04 15:00 CEST: Joakim Lindblad" in winter.text and "15:00 CET" in winter.subject
    summer = rendered_for(write_schedule(text.replace("2024-03-28", "2024-04-02")), dt.date(2024, 4, 1))
    assert "**Date:** 2024-04-02 15:00\n" in summer.text and "* All seminars are 15:00 CEST." in summer.text
    text = VALID.replace("2024-01-18", "2024-03-21").replace("2024-01-25", "2024-03-28")
    text += "  - date: 2024-04-04\n    speaker: Third Speaker\n"
    mixed = rendered_for(write_schedule(text), dt.date(2024, 3, 18))
    assert "* 2024-03-28 15:00 CET: Joakim Lindblad" in mixed.text
    assert "* 2024-04-04 15:00 CEST: Third Speaker" in mixed.text
    assert "All seminars are" not in mixed.text


def test_this_weeks_own_time_is_never_hidden_behind_all_seminars_are(write_schedule) -> None:
    """This week at 16:15, the later ones at 15:00: each line says its time, this week's with its zone."""
    text = VALID.replace("    title: Challenges", '    time: "16:15"\n    title: Challenges')
    text += "  - date: 2024-02-01\n    speaker: Third Speaker\n"
    out = rendered_for(write_schedule(text), dt.date(2024, 1, 15))
    assert "**Date:** 2024-01-18 16:15 CET\n" in out.text and "All seminars are" not in out.text
    assert "* 2024-01-25 15:00 CET: Joakim Lindblad" in out.text and "* 2024-02-01 15:00 CET: Third Speaker" in out.text
    assert "All seminars are" not in out.html and "2024-01-25 15:00 CET" in out.html
    assert "Thursday 2024-01-18, 16:15 CET" in out.html
    assert "**Date:** 2024-01-18 16:15 CET\n" in out.page  # the web page is the text
    alone = rendered_for(
        write_schedule(VALID.replace("  - date: 2024-01-25\n    speaker: Joakim Lindblad\n", "")), dt.date(2024, 1, 15)
    )
    assert "**Date:** 2024-01-18 15:00 CET\n" in alone.text  # nothing listed below: the zone is on the line


def test_an_announcement_sent_the_week_before_says_next_weeks(write_schedule) -> None:
    schedule = load_schedule(write_schedule(VALID))
    week = week_of(schedule, dt.date(2024, 1, 15))
    assert week is not None
    assert render(schedule, week, today=dt.date(2024, 1, 12)).text.startswith("Welcome to next week's Learning")
    assert render(schedule, week, today=dt.date(2024, 1, 15)).text.startswith("Welcome to this week's Learning")


def test_two_seminars_in_a_week_are_both_announced(write_schedule) -> None:
    both = rendered_for(write_schedule(VALID.replace("2024-01-25", "2024-01-19")), dt.date(2024, 1, 15))
    assert "this week's Learning Machines seminars." in both.text
    assert "Serge Belongie" in both.subject and "Joakim Lindblad" in both.subject
    assert both.text.count("**Speaker:**") == 2 and "Upcoming" not in both.text


def test_cancelled_seminar_says_so(write_schedule) -> None:
    text = VALID.replace("    abstract: |", "    cancelled: The speaker is ill.\n    abstract: |")
    out = rendered_for(write_schedule(text), dt.date(2024, 1, 15))
    assert out.subject.startswith("Cancelled: ")
    assert "is cancelled. The speaker is ill." in out.text and "cancelled" in out.html
    no_stop = rendered_for(
        write_schedule(text.replace("The speaker is ill.", "The speaker is ill")), dt.date(2024, 1, 15)
    )
    assert "is cancelled. The speaker is ill.\n" in no_stop.text and "is ill.</p>" in no_stop.html


HOSTILE = VALID.replace(
    "title: Challenges in Fine-Grained Image Analysis", 'title: "<b>Bold</b> {{ 7*7 }} {% if 1 %}x{% endif %}"'
).replace(
    "Some *abstract*.",
    "<script>alert(1)</script> <img src=x onerror=alert(2)> [click](javascript:alert(3)) [ok](https://example.org/)",
)


def test_html_in_yaml_never_reaches_the_html_active(write_schedule) -> None:
    out = rendered_for(write_schedule(HOSTILE), dt.date(2024, 1, 15))
    html = out.html
    assert "<script" not in html and "<img" not in html and 'href="javascript' not in html
    assert "&lt;script&gt;" in html and "&lt;b&gt;Bold&lt;/b&gt;" in html
    assert 'href="https://example.org/"' in html  # Markdown links still work
    assert "{{ 7*7 }}" in out.text and "49" not in out.subject and "{% if 1 %}" in out.subject
    assert "<script" not in out.page  # the Jekyll page would pass raw HTML through


class _Counting(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self) -> None:
        _Counting.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Type", "text/css")
        self.end_headers()
        self.wfile.write(b"p { color: red }")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def css_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Counting.hits.clear()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_rendering_never_touches_the_network(tmp_path: Path, css_server: str) -> None:
    """A template that imports a stylesheet and a web font from a live server: no request is made."""
    builtin = (Path(__file__).resolve().parents[2] / "templates/email/announcement.mjml.j2").read_text()
    hostile = builtin.replace(
        "<mj-style>",
        f'<mj-font name="Remote" href="{css_server}/font.css" />\n<mj-style>@import url({css_server}/a.css);',
    ).replace('font-family="Helvetica, Arial, sans-serif"', 'font-family="Remote, Arial"')
    (tmp_path / "announcement.mjml.j2").write_text(hostile)
    out = rendered_for(SCHEDULE, dt.date(2024, 1, 15), templates=tmp_path)
    assert _Counting.hits == []
    assert "@import" not in out.html


def test_user_templates_override_and_fall_back(tmp_path: Path) -> None:
    (tmp_path / "subject.txt.j2").write_text("[{{ series.name }}] {{ seminars[0].speaker }}\n")
    out = rendered_for(SCHEDULE, dt.date(2024, 1, 15), templates=tmp_path)
    assert out.subject == "[Learning Machines] Serge Belongie"
    assert out.text.startswith("Welcome to this week's")  # the built-in text template


def test_template_errors_are_reported_not_raised_raw(tmp_path: Path) -> None:
    (tmp_path / "subject.txt.j2").write_text("{{ series.nmae }}")
    with pytest.raises(TemplateError, match="nmae"):
        rendered_for(SCHEDULE, dt.date(2024, 1, 15), templates=tmp_path)
    (tmp_path / "subject.txt.j2").write_text("{% if %}")
    with pytest.raises(TemplateError, match="syntax error"):
        rendered_for(SCHEDULE, dt.date(2024, 1, 15), templates=tmp_path)


def test_the_manage_link_is_in_the_footer_of_a_project_of_several_lists_only(tmp_path: Path) -> None:
    """A series with a service_url alone in its project mails exactly as before the manage page (no footer line:
    byte for byte the one-series output); beside a second series, its mails (text and HTML) carry the link's slot,
    which message.py fills with each reader's own signed link."""
    from mailer.compose.render import MANAGE_LINK

    (tmp_path / "data").mkdir()
    path = tmp_path / "data" / "seminars.yaml"
    path.write_text(VALID.replace("  upcoming: 4\n", "  upcoming: 4\n  service_url: https://seminars.example.org/lm\n"))
    schedule = load_schedule(path)
    week = week_of(schedule, dt.date(2024, 1, 15))
    alone = render(schedule, week, today=dt.date(2024, 1, 15))
    assert MANAGE_LINK not in alone.email_text and MANAGE_LINK not in alone.html
    assert "Choose what you receive" not in alone.email_text + alone.html
    (tmp_path / "data" / "ml.yaml").write_text(VALID.replace("list: learning-machines", "list: ml"))
    beside = render(schedule, week, today=dt.date(2024, 1, 15))
    assert beside.email_text.count(MANAGE_LINK) == 1 and MANAGE_LINK in beside.html
    change = render_change(schedule, schedule.seminars[0], [], kind="change")
    assert MANAGE_LINK in change.email_text
