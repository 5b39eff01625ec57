"""The link policy: URL normalisation, and the same links kept or dropped in HTML, text, page and invitation."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import icalendar
import pytest

from mailer.compose.invite import build_invite
from mailer.compose.message import build_announcement, first_events
from mailer.compose.render import render
from mailer.core.links import normalise_url, plain, sanitise
from mailer.programme.model import week_of
from mailer.programme.schedule import load_schedule
from tests.conftest import VALID

NOW = dt.datetime(2024, 1, 15, 8, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("raw", "wanted"),
    [
        ("https://rise.zoom.us/j/208117140?pwd=c2U5RDR0WnpzU041dGNISVdhNUkyQT09", None),  # unchanged
        ("https://RI.se/lm-sem", "https://ri.se/lm-sem"),
        ("https://bücher.example/för?q=ö#å", "https://xn--bcher-kva.example/f%C3%B6r?q=%C3%B6#%C3%A5"),
        ("https://en.wikipedia.org/wiki/Fold_(higher-order_function)", "https://en.wikipedia.org/wiki/Fold_%28higher-order_function%29"),
        ("https://x.example/a%20b%zz", "https://x.example/a%20b%25zz"),
        ("https://x.example:8443/p", None),
    ],
)  # fmt: skip
def test_urls_are_normalised(raw: str, wanted: str | None) -> None:
    assert normalise_url(raw) == (wanted or raw)


def test_unsubscribe_url_encodes_commas_for_list_unsubscribe() -> None:
    assert normalise_url("https://ri.se/u?a=1,2", https_only=True, for_list_header=True) == "https://ri.se/u?a=1%2C2"


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        ("javascript:alert(1)", "absolute http(s)"),
        ("https://ri.se/u?x=>,<mailto:attacker@evil.example", "could end the link early"),
        ("https://ri.se/a b", "a space"),
        ("https://ri.se/\u202eexe", "control character"),
        ("https://user:pw@ri.se/", "user name"),
        ("https://-bad-.example/", "not a valid domain"),
        ("https://ri.se:99999/", "cannot be parsed"),
        ("https://ri.se/" + "ö" * 200, "characters long once encoded"),
    ],
)
def test_dangerous_urls_are_refused(raw: str, words: str) -> None:
    with pytest.raises(ValueError, match=re.escape(words)):
        normalise_url(raw)


def test_safe_markdown_is_left_byte_for_byte() -> None:
    text = "See [our paper](https://example.org/p), <https://x.example>, **bold** and `code`.\n"
    assert sanitise(text) is text


@pytest.mark.parametrize(
    "hostile",
    [
        "[x](javascript:alert(1))",
        "[x](JaVaScRiPt&#58;alert(1))",
        "<javascript:alert(1)>",
        "![i](data:text/html;base64,PHNjcmlwdD4=)",
        "[x][r]\n\n[r]: vbscript:msgbox(1)",
        "[x](relative/path)",
    ],
)
def test_unsafe_links_lose_their_link_syntax(hostile: str) -> None:
    from mailer.core.links import HTML_MARKDOWN

    safe = sanitise(hostile)
    assert safe != hostile
    html = HTML_MARKDOWN.render(safe)
    assert "<a " not in html and "<img" not in html


def test_plain_keeps_link_targets_as_text_url() -> None:
    text = "See also [our paper](https://example.org/p). Mail <ada@example.org>; <https://x.example>.\n\nNext."
    assert plain(text) == (
        "See also our paper (https://example.org/p). Mail ada@example.org; https://x.example.\n\nNext."
    )
    assert plain("[x](javascript:alert(1))") == "[x](javascript:alert(1))"


def _rendered(write_schedule, abstract: str, *, title: str = "Talk"):  # type: ignore[no-untyped-def]
    text = VALID.replace("Some *abstract*.", abstract).replace(
        "title: Challenges in Fine-Grained Image Analysis", f"title: {title}"
    )
    schedule = load_schedule(write_schedule(text))
    week = week_of(schedule, dt.date(2024, 1, 15))
    assert week is not None
    rendered = render(schedule, week)
    invite = icalendar.Calendar.from_ical(build_invite(schedule, first_events(schedule, week), now=NOW))
    description = str(next(iter(invite.walk("VEVENT")))["DESCRIPTION"])
    return rendered, description


def test_one_policy_for_all_outputs(write_schedule) -> None:
    rendered, description = _rendered(
        write_schedule,
        "Read [our paper](https://example.org/paper) and https://example.org/bare, not [x](javascript:alert(1)).",
    )
    # The unsafe link is shown as the same literal text everywhere, and is a link nowhere.
    assert "javascript:alert(1)" not in rendered.html.split("[x]")[0]
    assert 'href="javascript' not in rendered.html
    for output in (rendered.text, rendered.page):
        assert "\\[x](javascript:alert(1))" in output  # escaped: Markdown shows it as text
    assert "[x](javascript:alert(1))" in description
    # Safe links survive everywhere; bare URLs become links in the HTML.
    assert 'href="https://example.org/bare"' in rendered.html


def test_safe_links_keep_their_targets(write_schedule) -> None:
    rendered, description = _rendered(write_schedule, "Read [our paper](https://example.org/paper), https://ex.org/b.")
    assert "[our paper](https://example.org/paper)" in rendered.text
    assert 'href="https://example.org/paper"' in rendered.html and 'href="https://ex.org/b"' in rendered.html
    assert "Read our paper (https://example.org/paper), https://ex.org/b." in description


def test_unsafe_link_in_a_one_line_field_is_escaped_in_markdown_outputs(write_schedule) -> None:
    rendered, _ = _rendered(write_schedule, "x", title="'[Click](javascript:alert(1))'")
    assert "**Title:** \\[Click](javascript:alert(1))" in rendered.text
    assert "[Click](javascript:alert(1))" in rendered.subject  # a header is not Markdown: left as typed
    assert 'href="javascript' not in rendered.html


def test_page_cannot_run_liquid_or_kramdown_attributes(write_schedule) -> None:
    rendered, _ = _rendered(write_schedule, "{{ site.github }} {% include x %} *hi*{: onmouseover=alert(1)}")
    assert "{{" not in rendered.page and "{%" not in rendered.page and "{:" not in rendered.page
    assert "&#123;{ site.github }}" in rendered.page


def test_slug_transliterates_letters_unicode_does_not_decompose(write_schedule) -> None:
    rendered, _ = _rendered(write_schedule, "x", title="Ørsted, Æbleskiver og Łódź straße")
    assert rendered.page_name == "2024-01-18-orsted-aebleskiver-og-lodz-strasse.md"


def test_cancelled_upcoming_seminar_is_listed_as_cancelled(write_schedule) -> None:
    text = VALID.replace("speaker: Joakim Lindblad", "speaker: Joakim Lindblad\n    cancelled: Speaker is ill")
    schedule = load_schedule(write_schedule(text))
    week = week_of(schedule, dt.date(2024, 1, 15))
    assert week is not None
    rendered = render(schedule, week)
    assert "* 2024-01-25: Joakim Lindblad (cancelled: Speaker is ill)" in rendered.text
    assert "Joakim Lindblad <strong>(cancelled: Speaker is ill)</strong>" in rendered.html


def test_message_with_long_unbreakable_names_keeps_header_lines_short(write_schedule, tmp_path: Path) -> None:
    from mailer.core.address import Address

    text = VALID.replace("Learning Machines <learning", "A" * 300 + " <learning").replace(
        "title: Challenges in Fine-Grained Image Analysis", "title: " + "B" * 1200
    )
    schedule = load_schedule(write_schedule(text))
    week = week_of(schedule, dt.date(2024, 1, 15))
    assert week is not None
    message = build_announcement(schedule, week, render(schedule, week), now=NOW, token_key=b"k" * 32)
    raw = message.personalise(Address("C" * 500 + " D", "ada@example.org"))
    head = raw.split(b"\r\n\r\n")[0]
    assert max(len(line) for line in head.split(b"\r\n")) <= 78 + 260
