"""The HTML email in a real headless Chromium at phone and desktop widths, and axe-core's WCAG 2.1
A/AA rules on the announcement, a change and a cancellation, with their CSS and without it.

Screenshots are kept in tests/artefacts/ for a person to look at (docs/img/ holds reviewed copies).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from mailer.compose.render import render, render_followup
from mailer.programme.model import week_of
from mailer.programme.schedule import load_schedule
from tests.cdp import CHROMIUM, HEADLESS, NEEDS_CHROMIUM
from tests.compose.test_render import NEW_ZOOM, corrections
from tests.conftest import ARTEFACTS, ROOT, SCHEDULE

pytestmark = NEEDS_CHROMIUM

SLIDES = "https://ri.se/lm/belongie-fgia.pdf"
ZOOM = "https://rise.zoom.us/j/208117140?pwd=c2U5RDR0WnpzU041dGNISVdhNUkyQT09"
NEEDLES = {
    "title": "Challenges in Fine-Grained Image Analysis",
    "speaker": "Serge Belongie",
    "date": "2024-01-18, 15:00 CET",
}

# Runs in the page after load and writes its findings into the DOM, which --dump-dom returns.
PROBE = """
<script>
window.addEventListener('load', () => {
  const vw = window.innerWidth;
  const visible = (el) => {
    if (!el) return false;
    const r = el.getBoundingClientRect(), s = getComputedStyle(el);
    return r.width > 0 && r.height > 0 && r.left >= 0 && r.right <= vw + 0.5
        && s.visibility !== 'hidden' && s.display !== 'none' && parseFloat(s.opacity) > 0;
  };
  // The hidden preheader holds the same words: the needle counts if any holder is visible.
  const shown = (needle) => {
    const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
    while (walker.nextNode()) {
      if (walker.currentNode.textContent.includes(needle) && visible(walker.currentNode.parentElement)) return true;
    }
    return false;
  };
  const wide = [...document.body.querySelectorAll('*')]
    .filter(el => el.getBoundingClientRect().right > vw + 0.5).map(el => el.tagName).slice(0, 5);
  const result = {
    viewport: vw,
    scrollWidth: document.documentElement.scrollWidth,
    wide: wide,
    needles: Object.fromEntries(NEEDLES.map(([k, t]) => [k, shown(t)])),
    zoomLink: [...document.querySelectorAll('a[href]')].some(a => a.href === ZOOM && visible(a)),
    infoLink: [...document.querySelectorAll('a[href]')]
      .some(a => a.href.startsWith('https://ri.se/lm-sem') && visible(a)),
  };
  parent.postMessage(JSON.stringify(result), '*');
});
</script>
"""

# Headless Chromium will not size a window below 500 px, so the email is shown the way webmail
# shows it: in an iframe of exactly the width under test. The probe posts its findings up here.
FRAME = """<!doctype html><html><body style="margin:0">
<iframe src="SRC" style="width:WIDTHpx;height:4000px;border:0;display:block"></iframe>
<script>
window.addEventListener('message', (e) => {
  const pre = document.createElement('pre');
  pre.id = 'probe-result';
  pre.textContent = e.data;
  document.body.appendChild(pre);
});
</script></body></html>
"""


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    return subprocess.run(
        [
            CHROMIUM,
            *HEADLESS,
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture(scope="module")
def html_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    schedule = load_schedule(SCHEDULE)
    week = week_of(schedule, dt.date(2024, 1, 15))
    assert week is not None
    path = tmp_path_factory.mktemp("html") / "announcement.html"
    path.write_text(render(schedule, week).html, encoding="utf-8")
    return path


def probe(html: str, width: int, tmp_path: Path) -> dict:  # type: ignore[type-arg]
    """Load ``html`` in an iframe ``width`` px wide; return what the in-page probe measured."""
    script = PROBE.replace("NEEDLES", json.dumps(list(NEEDLES.items()))).replace("ZOOM", json.dumps(ZOOM))
    probed = tmp_path / f"probed-{width}.html"
    probed.write_text(html.replace("</body>", script + "</body>"), encoding="utf-8")
    frame = tmp_path / f"frame-{width}.html"
    frame.write_text(FRAME.replace("SRC", probed.name).replace("WIDTH", str(width)), encoding="utf-8")
    dom = chromium(
        "--window-size=1000,900",
        "--virtual-time-budget=3000",
        "--allow-file-access-from-files",
        "--dump-dom",
        frame.as_uri(),
        profile=tmp_path / f"profile-{width}",
    )
    match = re.search(r'<pre id="probe-result">(.*?)</pre>', dom.stdout, re.S)
    assert match, f"the probe did not run: {dom.stderr[-2000:]}"
    result: dict = json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))  # type: ignore[type-arg]
    assert result["viewport"] == width
    return result


def screenshot(html: Path, shot: Path, *, width: int, height: int, tmp_path: Path) -> None:
    """Shoot ``html`` framed at ``width`` px, as a mail program shows it, into ``shot`` (a real PNG)."""
    shot.parent.mkdir(exist_ok=True)
    shot.unlink(missing_ok=True)
    framed = tmp_path / "shot.html"
    framed.write_text(FRAME.replace("SRC", html.as_uri()).replace("WIDTH", str(width)), encoding="utf-8")
    chromium(
        f"--window-size={max(width, 500)},{height}",
        f"--screenshot={shot}",
        "--virtual-time-budget=3000",
        "--allow-file-access-from-files",
        framed.as_uri(),
        profile=tmp_path / "p2",
    )
    assert shot.exists() and shot.stat().st_size > 10_000


@pytest.mark.parametrize("width", [375, 800])
def test_email_fits_and_shows_the_essentials(html_file: Path, tmp_path: Path, width: int) -> None:
    result = probe(html_file.read_text(), width, tmp_path)
    assert result["scrollWidth"] <= width, f"horizontal overflow at {width}px: {result}"
    assert result["wide"] == [], result
    assert all(result["needles"].values()), result
    assert result["zoomLink"] and result["infoLink"], result

    screenshot(html_file, ARTEFACTS / f"announcement-{width}px.png", width=width, height=1400, tmp_path=tmp_path)


def test_the_probe_catches_overflow_and_hidden_text(tmp_path: Path) -> None:
    """Negative control: a fixed 600 px table and a hidden title must fail the checks above."""
    bad = (
        '<!doctype html><html><body><table style="width:600px"><tr><td>Serge Belongie</td></tr></table>'
        '<p style="display:none">Challenges in Fine-Grained Image Analysis</p></body></html>'
    )
    result = probe(bad, 375, tmp_path)
    assert result["scrollWidth"] > 375 and result["wide"]
    assert result["needles"]["title"] is False and result["zoomLink"] is False


# --- the three kinds of message: screenshots and axe-core ------------------------------------------


def message_html(folder: Path) -> dict[str, str]:
    """The shipped announcement, a change (time, room and Zoom link), a cancellation and a follow-up
    (slides and video after the talk), as HTML."""
    schedule, rendered = corrections(folder)
    week = week_of(schedule, dt.date(2024, 1, 15))
    assert week is not None
    after = dataclasses.replace(week.seminars[0], slides=SLIDES, video="https://video.example.org/watch?v=fgia")
    return {
        "announcement": render(schedule, week).html,
        **{kind: r.html for kind, (_, r) in rendered.items()},
        "followup": render_followup(schedule, after).html,
    }


@pytest.fixture(scope="module")
def messages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return message_html(tmp_path_factory.mktemp("messages"))


def test_a_change_reads_new_then_was_and_shows_the_new_zoom_link_once(messages: dict[str, str]) -> None:
    change = messages["change"]
    assert "<strong>16:00 CET</strong> (was 15:00 CET)" in change and "→" not in change
    assert change.count(f'href="{NEW_ZOOM}"') == 1 and NEW_ZOOM + "<" not in change  # a link, not its URL as text
    assert ZOOM not in change  # the old link is gone, not struck through
    assert "is ill.</p>" in messages["cancellation"] and "ill.." not in messages["cancellation"]
    slides = re.escape(SLIDES)
    assert re.search(rf'Slides:</span> <a href="{slides}"[^>]*>{slides}</a>', messages["followup"])
    for html in messages.values():
        assert 'href="webcal://seminars.example.org/lm/seminars.ics"' in html and ">add to Google Calendar</a>" in html


@pytest.mark.parametrize("width", [375, 800])
@pytest.mark.parametrize("kind", ["announcement", "change", "cancellation", "followup"])
def test_screenshots_of_every_kind_fit(messages: dict[str, str], tmp_path: Path, kind: str, width: int) -> None:
    """Each kind fits the width (no horizontal scroll) and is shot for docs/invitations.md."""
    html = tmp_path / f"{kind}.html"
    html.write_text(messages[kind], encoding="utf-8")
    result = probe(messages[kind], width, tmp_path)
    assert result["scrollWidth"] <= width and result["wide"] == [], result
    height = 1500 if kind == "announcement" else 1100
    screenshot(html, ARTEFACTS / f"{kind}-{width}px.png", width=width, height=height, tmp_path=tmp_path)


AXE = Path(os.environ.get("AXE_CORE_JS", ROOT / "node_modules" / "axe-core" / "axe.min.js"))
AXE_RUN = """
<script>
window.addEventListener('load', () => {
  axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})
    .then((r) => {
      const pre = document.createElement('pre');
      pre.id = 'axe-result';
      const found = r.violations.map(v => ({id: v.id, nodes: v.nodes.map(n => n.html.slice(0, 160))}));
      pre.textContent = JSON.stringify(found);
      document.body.appendChild(pre);
    });
});
</script>
"""


def without_css(html: str) -> str:
    """The message as a client that drops CSS shows it: no style element, no style attribute."""
    html = re.sub(r"<style\b.*?</style>", "", html, flags=re.S | re.I)
    return re.sub(r'\sstyle="[^"]*"', "", html)


def axe_violations(html: str, tmp_path: Path, name: str) -> list[dict]:  # type: ignore[type-arg]
    page = tmp_path / f"{name}.html"
    page.write_text(
        html.replace("</head>", f"<script>{AXE.read_text()}</script></head>", 1).replace(
            "</body>", AXE_RUN + "</body>"
        ),
        encoding="utf-8",
    )
    dom = chromium(
        "--window-size=800,900",
        "--virtual-time-budget=10000",
        "--allow-file-access-from-files",
        "--dump-dom",
        page.as_uri(),
        profile=tmp_path / f"profile-{name}",
    )
    match = re.search(r'<pre id="axe-result">(.*?)</pre>', dom.stdout, re.S)
    assert match, f"axe-core did not report: {dom.stderr[-2000:]}"
    found: list[dict] = json.loads(
        match.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    )  # type: ignore[type-arg]
    return found


needs_axe = pytest.mark.skipif(
    not AXE.exists(), reason=f"LOUD SKIP: axe-core is not at {AXE}; scripts/install-system-deps installs it (npm)"
)


@needs_axe
@pytest.mark.parametrize("css", [True, False], ids=["with-css", "without-css"])
@pytest.mark.parametrize("kind", ["announcement", "change", "cancellation", "followup"])
def test_axe_core_finds_no_wcag_a_or_aa_violation(
    messages: dict[str, str], tmp_path: Path, kind: str, css: bool
) -> None:
    html = messages[kind] if css else without_css(messages[kind])
    assert axe_violations(html, tmp_path, f"{kind}-{css}") == []


@needs_axe
def test_axe_core_catches_white_text_on_a_dark_bgcolor_without_css(tmp_path: Path) -> None:
    """Negative control: the header as MJML left it (bgcolor kept, its white text only in CSS)."""
    bad = (
        '<!doctype html><html lang="en"><head><title>x</title></head><body>'
        '<table role="presentation" bgcolor="#0b3d62"><tr><td><h1 style="color:#ffffff">Learning Machines seminar</h1>'
        "</td></tr></table></body></html>"
    )
    assert axe_violations(bad, tmp_path, "bad-css") == []
    assert [v["id"] for v in axe_violations(without_css(bad), tmp_path, "bad")] == ["color-contrast"]


FIRST_LINE = """
<script>
window.addEventListener('load', () => {
  const pre = document.createElement('pre');
  pre.id = 'first-line';
  pre.textContent = document.body.innerText.trim().split('\\n')[0];
  document.body.appendChild(pre);
});
</script>
"""


@pytest.mark.parametrize("css", [True, False], ids=["with-css", "without-css"])
def test_the_preview_text_is_never_a_stray_first_line(messages: dict[str, str], tmp_path: Path, css: bool) -> None:
    """What a reader sees first is the heading, also where the client drops CSS (the hidden attribute)."""
    for kind, html in messages.items():
        page = tmp_path / f"{kind}-{css}.html"
        page.write_text((html if css else without_css(html)).replace("</body>", FIRST_LINE + "</body>"))
        dom = chromium("--virtual-time-budget=3000", "--dump-dom", page.as_uri(), profile=tmp_path / f"p-{kind}")
        match = re.search(r'<pre id="first-line">(.*?)</pre>', dom.stdout, re.S)
        assert match, dom.stderr[-2000:]
        assert match.group(1).startswith("Learning Machines seminar"), (kind, match.group(1))


def test_the_preview_lines_say_what_changed_in_words(messages: dict[str, str]) -> None:
    def preview(html: str) -> str:
        match = re.search(
            r'<div hidden style="display:none;max-height:0;overflow:hidden;mso-hide:all">(.*?)</div>', html
        )
        assert match, "no hidden preview block"
        return match.group(1)

    assert preview(messages["change"]) == (
        "Time: 16:00 CET (was 15:00 CET). Location: Room 2, Scheelevägen 17 "
        "(was RISE Lund Office (Scheelevägen 17), or online using Zoom.). Zoom link: a new link."
    )
    assert preview(messages["cancellation"]) == "Cancelled: The speaker is ill."
    assert preview(messages["announcement"]).startswith("Serge Belongie: Challenges in Fine-Grained Image Analysis")
