"""The HTML email in a real headless Chromium at phone and desktop widths.

Screenshots are kept in tests/artefacts/ for a person to look at.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mailer.render import render
from mailer.schedule import load_schedule, week_of
from tests.conftest import ARTEFACTS, SCHEDULE

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="LOUD SKIP: no chromium on PATH; .ci/run installs Debian's "
        "chromium, run it or `apt-get install chromium`",
    ),
]

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
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
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


@pytest.mark.parametrize("width", [375, 800])
def test_email_fits_and_shows_the_essentials(html_file: Path, tmp_path: Path, width: int) -> None:
    result = probe(html_file.read_text(), width, tmp_path)
    assert result["scrollWidth"] <= width, f"horizontal overflow at {width}px: {result}"
    assert result["wide"] == [], result
    assert all(result["needles"].values()), result
    assert result["zoomLink"] and result["infoLink"], result

    ARTEFACTS.mkdir(exist_ok=True)
    shot = ARTEFACTS / f"announcement-{width}px.png"
    shot.unlink(missing_ok=True)
    framed = tmp_path / "shot.html"
    framed.write_text(FRAME.replace("SRC", html_file.as_uri()).replace("WIDTH", str(width)), encoding="utf-8")
    chromium(
        f"--window-size={max(width, 500)},1400",
        f"--screenshot={shot}",
        "--virtual-time-budget=3000",
        "--allow-file-access-from-files",
        framed.as_uri(),
        profile=tmp_path / "p2",
    )
    assert shot.exists() and shot.stat().st_size > 10_000


def test_the_probe_catches_overflow_and_hidden_text(tmp_path: Path) -> None:
    """Negative control: a fixed 600 px table and a hidden title must fail the checks above."""
    bad = (
        '<!doctype html><html><body><table style="width:600px"><tr><td>Serge Belongie</td></tr></table>'
        '<p style="display:none">Challenges in Fine-Grained Image Analysis</p></body></html>'
    )
    result = probe(bad, 375, tmp_path)
    assert result["scrollWidth"] > 375 and result["wide"]
    assert result["needles"]["title"] is False and result["zoomLink"] is False
