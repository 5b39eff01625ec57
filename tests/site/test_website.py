"""publish as a complete website (site: html): read back by an HTML parser, icalendar and headless Chromium.

The programme has a cancelled seminar, one with slides, video and a paper, and keeps its Zoom link private
(zoom_public: false): the link is in the mail and in no published file. Screenshots of the index and of a
seminar page at 375 and 800 px go to tests/artefacts/ (docs/img/ holds reviewed copies for docs/publishing.md).
"""

from __future__ import annotations

import datetime as dt
import html.parser
import http.server
import subprocess
import threading
import urllib.parse
from pathlib import Path

import icalendar
import pytest

from mailer.compose.render import render
from mailer.programme.model import week_of
from mailer.programme.schedule import load_schedule
from mailer.site.publish import ATOM, CALENDAR, MANIFEST, publish
from mailer.site.website import INDEX
from tests import conftest
from tests.cdp import CHROMIUM, HEADLESS, NEEDS_CHROMIUM
from tests.compose.test_browser import AXE, axe_violations, needs_axe, probe, screenshot, without_css
from tests.conftest import ARTEFACTS, run_cli

ZOOM = "https://rise.zoom.us/j/555000111?pwd=kept-private"
SLIDES, VIDEO, PAPER = "https://example.org/slides.pdf", "https://example.org/video", "https://arxiv.org/abs/2401.00001"
PROGRAMME = (
    conftest.SERIES
    + f"""\
  zoom: {ZOOM}
  zoom_public: false
  calendar_url: https://seminars.example.org/lm/seminars.ics
  service_url: https://seminars.example.org/lm
seminars:
  - date: 2030-01-10
    speaker: Serge Belongie
    affiliation: University of Göttingen
    title: Challenges in Fine-Grained Image Analysis
    abstract: |
      Fine-grained image analysis, with a [link](https://example.org/fgia) and <script>alert(1)</script>.
    bio: Serge Belongie is a professor of Computer Science.
    slides: {SLIDES}
    video: {VIDEO}
    paper: {PAPER}
  - date: 2030-01-17
    speaker: Ada Lovelace
    title: Analytical Engines
    cancelled: the speaker is ill
  - date: 2030-01-24
    speaker: Alan Turing
    affiliation: University of Manchester
"""
)
NOW = dt.datetime(2030, 1, 15, 12, 0)  # Belongie is past, Lovelace (cancelled) and Turing upcoming
BELONGIE = "2030-01-10-challenges-in-fine-grained-image-analysis"
LOVELACE = "2030-01-17-analytical-engines"
TURING = "2030-01-24-alan-turing"


class _Page(html.parser.HTMLParser):
    """What a check needs of one page: its tags with attributes, the h1s, the title and the text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self._in: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        self._in.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in self._in:
            del self._in[len(self._in) - 1 - self._in[::-1].index(tag) :]

    def handle_data(self, data: str) -> None:
        if not {"style", "script", "title"} & set(self._in):  # what a reader sees
            self.text.append(data)

    def all(self, tag: str) -> list[dict[str, str]]:
        return [attrs for name, attrs in self.tags if name == tag]

    @property
    def body(self) -> str:
        return " ".join(" ".join(self.text).split())


def build(tmp_path: Path, programme: str = PROGRAMME, **options: object) -> tuple[Path, Path]:
    schedule = tmp_path / "seminars.yaml"
    schedule.write_text(programme, encoding="utf-8")
    out = tmp_path / "site"
    publish(schedule, out=out, state=tmp_path / "state", templates=None, now=NOW, **options)  # type: ignore[arg-type]
    return schedule, out


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("website"))[1]


def pages(out: Path) -> dict[str, _Page]:
    return {p.name: _Page(p.read_text(encoding="utf-8")) for p in sorted(out.glob("*.html"))}


def test_the_site_has_an_index_a_page_and_an_ics_per_seminar_and_the_feeds(site: Path) -> None:
    names = {p.name for p in site.iterdir()}
    seminar_files = {f"{s}.{x}" for s in (BELONGIE, LOVELACE, TURING) for x in ("html", "ics")}
    assert names == {INDEX, CALENDAR, ATOM, MANIFEST} | seminar_files
    assert not list(site.glob("*.md")), "the html format writes no Jekyll pages"


def test_every_local_link_resolves_and_nothing_is_loaded_from_elsewhere(site: Path) -> None:
    for name, page in pages(site).items():
        for tag, attrs in page.tags:
            assert "src" not in attrs, f"{name}: <{tag} src=...> loads something: wanted a self-contained page"
            if tag == "link":
                assert attrs.get("rel") == "alternate", f"{name}: <link rel={attrs.get('rel')}> is loaded by a browser"
            target = attrs.get("href")
            if target is None:
                continue
            scheme = urllib.parse.urlsplit(target).scheme
            if scheme in ("https", "webcal", "mailto"):
                continue
            assert scheme == "", f"{name}: {target}"
            local = urllib.parse.unquote(target.split("#", 1)[0])
            assert (site / local).is_file(), f"{name}: the link {target} leads nowhere"
        raw = (site / name).read_text(encoding="utf-8")
        assert "@import" not in raw and "url(" not in raw, f"{name}: the CSS fetches something"


def test_every_page_is_one_document_with_a_language_a_title_and_one_h1(site: Path) -> None:
    for name, page in pages(site).items():
        assert page.all("html") == [{"lang": "en"}], name
        assert page.all("meta")[0] == {"charset": "utf-8"}, name
        assert len(page.all("h1")) == 1, name
        title = (site / name).read_text(encoding="utf-8").split("<title>", 1)[1].split("</title>", 1)[0]
        assert title.strip() and "Learning Machines" in title, name
        assert not [m for m in page.all("meta") if m.get("name") == "robots"], f"{name}: noindex unasked"


def test_the_index_lists_upcoming_first_then_the_past_by_year(site: Path) -> None:
    index = pages(site)[INDEX]
    links = [a["href"] for a in index.all("a") if a["href"].startswith("2030-")]
    assert links == [f"{LOVELACE}.html", f"{TURING}.html", f"{BELONGIE}.html"]
    body = index.body
    assert body.index("Upcoming") < body.index("Analytical Engines") < body.index("Past seminars")
    assert body.index("Past seminars") < body.index("2030", body.index("Past seminars")) < body.index("Challenges")
    assert "Cancelled : the speaker is ill." in body or "Cancelled: the speaker is ill." in body
    assert [a["href"] for a in index.all("a") if a["href"] in (SLIDES, VIDEO, PAPER)] == [SLIDES, VIDEO, PAPER]


def test_a_seminar_page_says_all_about_it_and_how_to_add_it(site: Path) -> None:
    page = pages(site)[f"{BELONGIE}.html"]
    body = page.body
    for needle in (
        "Challenges in Fine-Grained Image Analysis",
        "Serge Belongie, University of Göttingen",  # UTF-8 declared: no "GÃ¶ttingen"
        "Thursday 10 January 2030, 15:00 CET to 16:00 (60 minutes)",
        "RISE Lund Office",
        "Fine-grained image analysis",
        "<script>alert(1)</script>",  # shown as text, never run
        "Serge Belongie is a professor",
    ):
        assert needle in body, needle
    assert "<script>alert" not in (site / f"{BELONGIE}.html").read_text(encoding="utf-8")
    hrefs = [a["href"] for a in page.all("a")]
    assert {SLIDES, VIDEO, PAPER, "https://example.org/fgia", f"{BELONGIE}.ics"} <= set(hrefs)
    assert "webcal://seminars.example.org/lm/seminars.ics" in hrefs
    assert "https://seminars.example.org/lm/subscribe" in hrefs
    google = next(urllib.parse.urlsplit(h) for h in hrefs if h.startswith("https://calendar.google.com/"))
    query = urllib.parse.parse_qs(google.query)
    assert query["dates"] == ["20300110T140000Z/20300110T150000Z"]  # 15:00 CET in UTC
    assert query["text"] == ["Learning Machines: Challenges in Fine-Grained Image Analysis (Serge Belongie)"]
    outlook = next(urllib.parse.urlsplit(h) for h in hrefs if h.startswith("https://outlook.office.com/"))
    assert urllib.parse.parse_qs(outlook.query)["startdt"] == ["2030-01-10T14:00:00Z"]


def test_a_cancelled_seminar_says_so_with_its_reason_and_offers_no_calendar(site: Path) -> None:
    page = pages(site)[f"{LOVELACE}.html"]
    assert "Cancelled: the speaker is ill." in page.body
    assert not [a for a in page.all("a") if a["href"].startswith("https://calendar.google.com/")]
    event = icalendar.Calendar.from_ical((site / f"{LOVELACE}.ics").read_bytes()).walk("VEVENT")[0]
    assert str(event["STATUS"]) == "CANCELLED"


def test_each_seminars_ics_is_its_event_in_the_feed(site: Path) -> None:
    feed = {str(e["UID"]): e for e in icalendar.Calendar.from_ical((site / CALENDAR).read_bytes()).walk("VEVENT")}
    for stem in (BELONGIE, LOVELACE, TURING):
        calendar = icalendar.Calendar.from_ical((site / f"{stem}.ics").read_bytes())
        assert "METHOD" not in calendar
        (event,) = calendar.walk("VEVENT")
        same = feed[str(event["UID"])]
        for prop in ("DTSTART", "DTEND", "SEQUENCE", "SUMMARY", "STATUS", "DTSTAMP"):
            assert event[prop].to_ical() == same[prop].to_ical(), (stem, prop)


def test_the_private_zoom_link_is_in_the_mail_and_in_no_published_file(tmp_path: Path) -> None:
    schedule, out = build(tmp_path)
    jekyll = tmp_path / "jekyll"
    publish(schedule, out=jekyll, state=tmp_path / "state", templates=None, now=NOW, site_format="jekyll")
    published = [*out.iterdir(), *jekyll.iterdir()]
    assert len([p for p in published if p.suffix == ".md"]) == 4  # the Jekyll pages and programme.md
    for path in published:
        assert b"zoom.us" not in path.read_bytes(), f"{path.name} publishes the Zoom link"
    loaded = load_schedule(schedule)
    week = week_of(loaded, dt.date(2030, 1, 24))
    assert week is not None
    mail = render(loaded, week)
    assert ZOOM in mail.email_text and f'href="{ZOOM}"' in mail.html


def test_with_zoom_public_by_default_the_link_is_published(tmp_path: Path) -> None:
    _, out = build(tmp_path, PROGRAMME.replace("  zoom_public: false\n", ""))
    assert ZOOM in (out / f"{TURING}.html").read_text(encoding="utf-8")
    assert "zoom.us" in (out / CALENDAR).read_text(encoding="utf-8")


def test_noindex_only_when_the_series_asks(tmp_path: Path) -> None:
    _, out = build(tmp_path, PROGRAMME.replace("seminars:\n", "  noindex: true\nseminars:\n", 1))
    for name, page in pages(out).items():
        assert {"name": "robots", "content": "noindex,nofollow"} in page.all("meta"), name


def test_a_second_publish_writes_nothing_and_a_format_change_prunes_only_its_own(tmp_path: Path) -> None:
    schedule, out = build(tmp_path)
    (out / "about.html").write_text("the organiser's own page", encoding="utf-8")
    again = publish(schedule, out=out, state=tmp_path / "state", templates=None, now=NOW)
    assert again.written == () and len(again.unchanged) == 9
    jekyll = publish(schedule, out=out, state=tmp_path / "state", templates=None, now=NOW, site_format="jekyll")
    assert set(jekyll.stale) == {INDEX} | {f"{s}.{x}" for s in (BELONGIE, LOVELACE, TURING) for x in ("html", "ics")}
    pruned = publish(
        schedule, out=out, state=tmp_path / "state", templates=None, now=NOW, site_format="jekyll", prune=True
    )
    assert set(pruned.removed) == set(jekyll.stale)
    assert (out / "about.html").exists() and not (out / INDEX).exists()


def test_the_cli_writes_the_site_and_takes_format(tmp_path: Path) -> None:
    schedule = tmp_path / "seminars.yaml"
    schedule.write_text(PROGRAMME, encoding="utf-8")
    common = ("--schedule", str(schedule), "--state", str(tmp_path / "state"), "--now", "2030-01-15T12:00")
    done = run_cli("publish", *common, "--out", str(tmp_path / "site"))
    assert done.code == 0 and f"wrote   {tmp_path / 'site' / INDEX}" in done.out, done
    jekyll = run_cli("publish", *common, "--out", str(tmp_path / "j"), "--format", "jekyll")
    assert jekyll.code == 0 and (tmp_path / "j" / "programme.md").exists(), jekyll
    wrong = run_cli("publish", *common, "--out", str(tmp_path / "j"), "--format", "hugo")
    assert wrong.code == 2 and "unknown --format 'hugo'; wanted one of: html, jekyll" in wrong.err


# --- in a real browser ------------------------------------------------------------------------------


@pytest.fixture
def served(site: Path):  # type: ignore[no-untyped-def]
    """The site served by Python's http.server, as the docs suggest trying it."""
    handler = lambda *a: http.server.SimpleHTTPRequestHandler(*a, directory=str(site))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason=NEEDS_CHROMIUM[1].kwargs["reason"])
def test_served_by_a_plain_web_server_chromium_shows_the_words_right(served: str, tmp_path: Path) -> None:
    assert CHROMIUM is not None
    dom = subprocess.run(
        [CHROMIUM, *HEADLESS, f"--user-data-dir={tmp_path / 'p'}", "--dump-dom", served + f"{BELONGIE}.html"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    ).stdout
    assert "University of Göttingen" in dom and "GÃ¶" not in dom
    assert "Challenges in Fine-Grained Image Analysis</h1>" in dom


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason=NEEDS_CHROMIUM[1].kwargs["reason"])
@pytest.mark.parametrize("width", [375, 800])
@pytest.mark.parametrize("name", ["index", "seminar"])
def test_the_index_and_a_seminar_page_fit_phone_and_desktop(site: Path, tmp_path: Path, name: str, width: int) -> None:
    page = site / (INDEX if name == "index" else f"{BELONGIE}.html")
    result = probe(page.read_text(encoding="utf-8"), width, tmp_path)
    assert result["scrollWidth"] <= width and result["wide"] == [], result
    screenshot(page, ARTEFACTS / f"site-{name}-{width}px.png", width=width, height=1300, tmp_path=tmp_path)


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason=NEEDS_CHROMIUM[1].kwargs["reason"])
@needs_axe
@pytest.mark.parametrize("css", [True, False], ids=["with-css", "without-css"])
@pytest.mark.parametrize("name", [INDEX, f"{BELONGIE}.html", f"{LOVELACE}.html"])
def test_axe_core_finds_no_wcag_a_or_aa_violation_on_the_site(site: Path, tmp_path: Path, name: str, css: bool) -> None:
    assert AXE.exists()
    html = (site / name).read_text(encoding="utf-8")
    assert axe_violations(html if css else without_css(html), tmp_path, name.removesuffix(".html")) == []
