"""publish in a project of several series: a folder per series, an index of all, one calendar of all.

The project holds two series, Learning Machines (site: html) and the ML Reading Group (site: jekyll), and a
weekly digest of both; seminar-mailer runs as its own process from the project root with no path option,
as an organiser runs it. Each series' folder is compared byte for byte with what publishing that series
alone writes; the index is read by an HTML parser and by headless Chromium (axe-core, a 375 px phone); the
combined calendar by icalendar, vobject (validating) and libical. A screenshot of the index at 375 px goes
to tests/artefacts/.
"""

from __future__ import annotations

import datetime as dt
import filecmp
import os
import re
import urllib.parse
from pathlib import Path

import icalendar
import pytest
import vobject

from mailer.site.all_series import UNNAMED, department
from mailer.site.publish import ATOM, CALENDAR, MANIFEST, PROGRAMME, publish
from mailer.site.website import INDEX
from tests import conftest
from tests.cdp import CHROMIUM, NEEDS_CHROMIUM
from tests.compose.test_browser import AXE, axe_violations, needs_axe, probe, screenshot, without_css
from tests.compose.test_calendar_clients import LIBICAL, _libical
from tests.conftest import ARTEFACTS, Result, run_cli
from tests.site.test_website import _Page

LM = (
    conftest.SERIES
    + """\
  calendar_url: https://seminars.example.org/learning-machines/seminars.ics
seminars:
  - date: 2030-01-10
    speaker: Serge Belongie
    title: Fine-Grained Image Analysis
  - date: 2030-01-17
    speaker: Ada Lovelace
    title: Analytical Engines
    cancelled: the speaker is ill
  - date: 2030-01-24
    speaker: Alan Turing
    affiliation: University of Manchester
"""
)
ML = """\
series:
  name: ML Reading Group
  signature: The Reading Group
  timezone: Europe/London
  time: "10:00"
  location: Room 2
  info_url: https://example.org/ml
  sender: ML Reading Group <ml@example.org>
  list: ml
  site: jekyll
  calendar_url: https://seminars.example.org/ml/seminars.ics
{extra}seminars:
  - date: 2030-01-16
    speaker: Grace Hopper
    title: Compilers
  - date: 2030-01-23
    speaker: Edsger Dijkstra
    title: Shortest Paths
"""
WEEK = """\
digest:
  name: Department Seminars
  sender: Department Seminars <seminars@example.org>
  list: week
  include: [learning-machines, ml]
"""
NOW = "2030-01-15T12:00"  # Belongie is past, Lovelace (cancelled), Hopper and Turing are to come
LM_NEXT = "learning-machines/2030-01-24-alan-turing.html"  # the next that takes place: not the cancelled one
ML_NEXT = "ml/2030-01-16-compilers.html"  # as Jekyll publishes ml/2030-01-16-compilers.md


def project(folder: Path, *, ml: str | None = ML.format(extra=""), digest: bool = True) -> Path:
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "data" / "seminars.yaml").write_text(LM, encoding="utf-8")
    if ml is not None:
        (folder / "data" / "ml.yaml").write_text(ml, encoding="utf-8")
    if digest:
        (folder / "data" / "week.yaml").write_text(WEEK, encoding="utf-8")
    return folder


def publish_cli(folder: Path, *args: str, now: str = NOW) -> Result:
    done = run_cli("publish", "--now", now, *args, cwd=folder)
    assert "Traceback" not in done.err, done.err
    return done


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Result]:
    folder = project(tmp_path_factory.mktemp("department"))
    done = publish_cli(folder, "--out", "site")
    assert done.code == 0, done
    return folder, done


def alone(folder: Path, programme: str, out: Path) -> Path:
    """What publishing that programme alone (a project of one series, before several existed) writes."""
    publish(
        folder / "data" / programme, out=out, state=folder / "state", templates=None, now=dt.datetime(2030, 1, 15, 12)
    )
    return out


def same_folders(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    if names != sorted(p.name for p in b.iterdir()):
        return False
    return filecmp.cmpfiles(a, b, names, shallow=False)[0] == names


def test_publish_from_the_root_writes_each_series_in_its_folder_as_it_alone_is_published(
    published: tuple[Path, Result], tmp_path: Path
) -> None:
    folder, done = published
    site = folder / "site"
    assert {p.name for p in site.iterdir()} == {INDEX, CALENDAR, MANIFEST, "learning-machines", "ml"}
    assert same_folders(site / "learning-machines", alone(folder, "seminars.yaml", tmp_path / "lm"))
    assert same_folders(site / "ml", alone(folder, "ml.yaml", tmp_path / "ml"))
    assert (site / "learning-machines" / INDEX).is_file() and (site / "ml" / PROGRAMME).is_file()
    assert (site / MANIFEST).read_text() == f"{INDEX}\n{CALENDAR}\n"  # the index's folder lists only its own
    out = done.out
    assert "Skipped 1 digest, week (data/week.yaml): a digest has no pages of its own." in out
    lm, ml, every = (out.index(h) for h in ("== learning-machines (", "== ml (", "== every series (2 series) =="))
    assert lm < out.index("site/learning-machines: 3 seminars") < ml < out.index("site/ml: 2 seminars") < every
    assert f"wrote   site/{INDEX}" in out[every:] and f"wrote   site/{CALENDAR}" in out[every:], out


def test_every_local_link_of_the_index_resolves_and_it_loads_nothing_from_elsewhere(
    published: tuple[Path, Result],
) -> None:
    site = published[0] / "site"
    index = _Page((site / INDEX).read_text(encoding="utf-8"))
    local = []
    for tag, attrs in index.tags:
        assert "src" not in attrs, f"<{tag} src=...> loads something: wanted a self-contained page"
        if tag == "link":
            assert attrs.get("rel") == "alternate", f"<link rel={attrs.get('rel')}> is loaded by a browser"
        if (target := attrs.get("href")) is None or urllib.parse.urlsplit(target).scheme in ("https", "webcal"):
            continue
        assert urllib.parse.urlsplit(target).scheme == "", target
        path = site / urllib.parse.unquote(target.split("#", 1)[0])
        jekyll = path.parent.name == "ml" and path.suffix == ".html"  # Jekyll makes X.html of X.md
        assert (path.with_suffix(".md") if jekyll else path).is_file(), f"the link {target} leads nowhere"
        local.append(target)
    raw = (site / INDEX).read_text(encoding="utf-8")
    assert "@import" not in raw and "url(" not in raw, "the CSS fetches something"
    assert index.all("html") == [{"lang": "en"}] and len(index.all("h1")) == 1
    for series in ("learning-machines", "ml"):
        assert {f"{series}/{CALENDAR}", f"{series}/{ATOM}"} <= set(local), local
    assert {"learning-machines/index.html", "ml/programme.html", LM_NEXT, ML_NEXT, CALENDAR} <= set(local), local
    hrefs = [a["href"] for a in index.all("a")]
    assert "webcal://seminars.example.org/learning-machines/seminars.ics" in hrefs
    assert "webcal://seminars.example.org/seminars.ics" in hrefs  # the combined one, beside the series' folders
    body = index.body
    assert body.index("Learning Machines") < body.index("Alan Turing") < body.index("ML Reading Group")
    assert body.index("ML Reading Group") < body.index("Wednesday 16 January 2030, 10:00 GMT") < body.index("Compilers")
    assert "Analytical Engines" not in body and "Shortest Paths" not in body  # only the next of each


def vevents(raw: bytes) -> dict[str, bytes]:
    """UID -> the VEVENT's lines as written."""
    found = {}
    for block in re.findall(rb"BEGIN:VEVENT\r\n.*?END:VEVENT\r\n", raw, re.S):
        uid = re.search(rb"\r\nUID:([^\r\n]*)\r\n", block)
        assert uid and uid[1].decode() not in found
        found[uid[1].decode()] = block
    return found


def libical_errors(raw: bytes) -> list[str]:
    """What libical's parser flags (X-LIC-ERROR) reading ``raw``."""
    lib = _libical()
    component = lib.icalparser_parse_string(raw)
    assert component, "libical could not parse the calendar"
    try:
        text = lib.icalcomponent_as_ical_string(component).decode()
    finally:
        lib.icalcomponent_free(component)
    return re.findall(r"X-LIC-ERROR[^\r\n]*(?:\r\n [^\r\n]*)*", text)


def test_the_combined_calendar_holds_every_series_events_as_their_own_feeds_do(
    published: tuple[Path, Result],
) -> None:
    site = published[0] / "site"
    raw = (site / CALENDAR).read_bytes()
    lm, ml = (
        vevents((site / "learning-machines" / CALENDAR).read_bytes()),
        vevents((site / "ml" / CALENDAR).read_bytes()),
    )
    assert len(lm) == 3 and len(ml) == 2
    assert vevents(raw) == {**lm, **ml}  # the same UIDs, and each event line for line as its series' feed has it
    calendar = icalendar.Calendar.from_ical(raw)
    assert str(calendar["X-WR-CALNAME"]) == "Department Seminars"  # the digest's name: the department's
    assert "METHOD" not in calendar and str(calendar["VERSION"]) == "2.0" and str(calendar["PRODID"])
    assert str(calendar["REFRESH-INTERVAL"].to_ical(), "ascii") == "PT12H"
    assert calendar.to_ical() == raw  # icalendar reads and writes it back unchanged
    # RFC 5545 as an independent implementation validates it (VERSION, PRODID, each event's UID, DTSTAMP ...)
    parsed = vobject.readOne(raw.decode("utf-8"), validate=True)
    assert {str(e.uid.value) for e in parsed.vevent_list} == set(lm) | set(ml)
    assert raw.endswith(b"END:VCALENDAR\r\n") and b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 75  # folded at 75 octets
    if LIBICAL is not None:
        assert libical_errors(raw) == []
        assert libical_errors(raw.replace(b"DTSTART:2030", b"DTSTART:x2030", 1)) != []  # (the check is a real one)


def test_the_calendar_is_named_by_the_one_digest_else_seminars(tmp_path: Path) -> None:
    folder = project(tmp_path)
    assert department([folder / "data" / "week.yaml"]) == "Department Seminars"
    assert department([]) == UNNAMED == "Seminars"
    (folder / "data" / "two.yaml").write_text(WEEK.replace("list: week", "list: two"), encoding="utf-8")
    assert department([folder / "data" / "week.yaml", folder / "data" / "two.yaml"]) == "Seminars"  # which one?
    bare = project(tmp_path / "bare", digest=False)
    assert publish_cli(bare, "--out", "site").code == 0
    assert str(icalendar.Calendar.from_ical((bare / "site" / CALENDAR).read_bytes())["X-WR-CALNAME"]) == "Seminars"
    assert "<h1>Seminars</h1>" in (bare / "site" / INDEX).read_text(encoding="utf-8")


def _mtimes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


def test_a_second_publish_writes_nothing(tmp_path: Path) -> None:
    folder = project(tmp_path)
    assert publish_cli(folder, "--out", "site").code == 0
    for path in (folder / "site").rglob("*"):  # far in the past: a rewrite, however quick, would show
        if path.is_file():
            os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    before = _mtimes(folder / "site")
    again = publish_cli(folder, "--out", "site", now="2030-01-15T13:00")  # an hour later: no stamp moves either
    assert again.code == 0 and _mtimes(folder / "site") == before
    assert again.out.count(" 0 files written,") == 3 and "wrote" not in again.out, again.out


def test_series_publishes_that_one_series_into_the_folder_itself(tmp_path: Path) -> None:
    folder = project(tmp_path)
    only = publish_cli(folder, "--out", "only", "--series", "ml")
    assert only.code == 0 and "==" not in only.out and "digest" not in only.out, only
    assert same_folders(folder / "only", alone(folder, "ml.yaml", tmp_path / "ml"))
    assert not (folder / "only" / INDEX).exists()


def test_one_series_and_its_digest_publish_as_one_series_does(tmp_path: Path) -> None:
    folder = project(tmp_path, ml=None)
    (folder / "data" / "week.yaml").write_text(WEEK.replace(", ml]", "]"), encoding="utf-8")
    done = publish_cli(folder, "--out", "site")
    assert done.code == 0 and "==" not in done.out and "Skipped 1 digest" in done.out, done
    assert same_folders(folder / "site", alone(folder, "seminars.yaml", tmp_path / "lm"))


def test_a_project_of_digests_alone_has_nothing_to_publish(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "week.yaml").write_text(WEEK, encoding="utf-8")
    (tmp_path / "data" / "two.yaml").write_text(WEEK.replace("list: week", "list: two"), encoding="utf-8")
    done = publish_cli(tmp_path, "--out", "site")
    assert done.code == 2 and "nothing to publish: the project's programmes are all digests" in done.err, done
    assert not (tmp_path / "site").exists()


def test_an_invalid_programme_stops_every_series_before_anything_is_written(tmp_path: Path) -> None:
    folder = project(tmp_path, ml=ML.format(extra="  upcoming: many\n"))
    done = publish_cli(folder, "--out", "site")
    assert done.code == 2 and "data/ml.yaml:12:" in done.err, done
    assert not (folder / "site").exists()  # not even the valid series before it
    (folder / "data" / "seminars.yaml").write_text(LM.replace("2030-01-24", "2030-01-32"), encoding="utf-8")
    both = publish_cli(folder, "--out", "site")  # the problems of every programme at once
    assert both.code == 2 and "data/seminars.yaml:" in both.err and "data/ml.yaml:12:" in both.err, both
    assert not (folder / "site").exists()


def test_a_project_that_grows_a_second_series_keeps_the_old_pages_until_prune(tmp_path: Path) -> None:
    folder = project(tmp_path, ml=None, digest=False)
    assert publish_cli(folder, "--out", "site").code == 0  # one series: its pages in site/ itself
    old = {p.name for p in (folder / "site").iterdir()} - {INDEX, CALENDAR, MANIFEST}
    assert ATOM in old and len(old) == 7
    project(tmp_path, digest=False)
    grown = publish_cli(folder, "--out", "site")
    assert grown.code == 0 and f"kept    site/{ATOM} (publish no longer writes it here; --prune" in grown.out, grown
    assert old <= {p.name for p in (folder / "site").iterdir()}
    pruned = publish_cli(folder, "--out", "site", "--prune")
    assert pruned.code == 0 and f"removed site/{ATOM}" in pruned.out, pruned
    names = {p.name for p in (folder / "site").iterdir()}
    assert names == {INDEX, CALENDAR, MANIFEST, "learning-machines", "ml"}


def test_the_index_template_is_overridden_as_the_others_are(tmp_path: Path) -> None:
    folder = project(tmp_path)
    (folder / "templates" / "email").mkdir(parents=True)
    (folder / "templates" / "email" / "site-all-series.html.j2").write_text(
        "{% for item in listed %}{{ item.series.name }} at {{ item.home }};{% endfor %}\n", encoding="utf-8"
    )
    assert publish_cli(folder, "--out", "site").code == 0
    text = (folder / "site" / INDEX).read_text(encoding="utf-8")
    assert text == "Learning Machines at learning-machines/index.html;ML Reading Group at ml/programme.html;"


# --- in a real browser ------------------------------------------------------------------------------


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason=NEEDS_CHROMIUM[1].kwargs["reason"])
def test_the_index_fits_a_phone_without_sideways_scroll(published: tuple[Path, Result], tmp_path: Path) -> None:
    page = published[0] / "site" / INDEX
    result = probe(page.read_text(encoding="utf-8"), 375, tmp_path)
    assert result["scrollWidth"] <= 375 and result["wide"] == [], result
    screenshot(page, ARTEFACTS / "site-all-series-375px.png", width=375, height=1000, tmp_path=tmp_path)


@pytest.mark.browser
@pytest.mark.skipif(CHROMIUM is None, reason=NEEDS_CHROMIUM[1].kwargs["reason"])
@needs_axe
@pytest.mark.parametrize("css", [True, False], ids=["with-css", "without-css"])
def test_axe_core_finds_no_wcag_a_or_aa_violation_on_the_index(
    published: tuple[Path, Result], tmp_path: Path, css: bool
) -> None:
    assert AXE.exists()
    html = (published[0] / "site" / INDEX).read_text(encoding="utf-8")
    assert axe_violations(html if css else without_css(html), tmp_path, "all-series") == []
