"""``import``: announcement pages back into a programme, from which ``preview`` writes each page again, byte for
byte: the reference page itself, and an archive of another series written by ``preview`` (several weeks, a
seminar-level room, another time, a short coming list, a cancellation, slides, a two-paragraph abstract)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

REFERENCE = ROOT / "tests" / "reference" / "announcement-2024-01-18.md"

ANOTHER = """\
series:
  name: Physics Colloquium
  signature: The Colloquium Committee
  timezone: Europe/Berlin
  time: "16:15"
  location: Lecture Hall 1
  info_url: https://physics.example.org/colloquium
  sender: Colloquium <colloquium@example.org>
  list: colloquium
  upcoming: 2
  site: jekyll

seminars:
  - date: 2030-01-16
    speaker: Lise Meitner
    affiliation: Kaiser Wilhelm Institute
    title: "Nuclear Fission: a Story"
    abstract: |
      First paragraph, with *emphasis* and a [link](https://example.org).

      Second paragraph.
    slides: https://physics.example.org/meitner.pdf
  - date: 2030-01-23
    speaker: Max Born
    time: "10:15"
    location: Room 2.14
    title: Quantum Mechanics
  - date: 2030-01-30
    speaker: Emmy Noether
    cancelled: The speaker is ill
  - date: 2030-02-06
    speaker: Otto Hahn
    affiliation: KWI
  - date: 2030-02-13
    speaker: Marie Curie
"""


def mailer(cwd: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "mailer", *map(str, args)],
        capture_output=True, text=True, check=False, cwd=cwd, stdin=subprocess.DEVNULL,
        env={**os.environ, "MAILER_ENV_FILE": str(cwd / "none.env")},
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def pages_of(tmp_path: Path, schedule: Path, mondays: list[str], out: str) -> dict[str, bytes]:
    pages: dict[str, bytes] = {}
    for monday in mondays:
        folder = tmp_path / out / monday
        proc = mailer(tmp_path, "preview", "--schedule", schedule, "--date", monday, "--out", folder,
                      "--state", tmp_path / f"state-{out}")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        (page,) = folder.glob("20*.md")
        pages[page.name] = page.read_bytes()
    return pages


def test_the_reference_page_comes_back_byte_for_byte(tmp_path: Path) -> None:
    made = mailer(tmp_path, "import", REFERENCE, "--timezone", "Europe/Stockholm", "--out", tmp_path / "lm.yaml",
                  "--sender", "Learning Machines <learning-machines@ri.se>")  # fmt: skip
    assert made.returncode == 0 and "5 seminars from 1 page" in made.stdout, made.stderr
    assert made.stderr == ""  # nothing it could not read
    checked = mailer(tmp_path, "check", "--schedule", tmp_path / "lm.yaml", "--recipients", tmp_path,
                     "--date", "2024-01-15")  # fmt: skip
    assert "OK, 5 seminars of Learning Machines" in checked.stdout
    again = pages_of(tmp_path, tmp_path / "lm.yaml", ["2024-01-15"], "again")
    assert again == {"2024-01-18-challenges-in-fine-grained-image-analysis.md": REFERENCE.read_bytes()}


def test_an_archive_of_another_series_round_trips_page_for_page(tmp_path: Path) -> None:
    source = tmp_path / "physics.yaml"
    source.write_text(ANOTHER)
    mondays = ["2030-01-14", "2030-01-21", "2030-01-28", "2030-02-04", "2030-02-11"]
    archive = pages_of(tmp_path, source, mondays, "archive")
    assert b"(cancelled: The speaker is ill)" in archive["2030-01-23-quantum-mechanics.md"]
    files = []
    for name, data in archive.items():
        (tmp_path / name).write_bytes(data)
        files.append(tmp_path / name)
    made = mailer(tmp_path, "import", *files, "--timezone", "Europe/Berlin", "--out", tmp_path / "imported.yaml",
                  "--sender", "Colloquium <colloquium@example.org>", "--list", "colloquium")  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert made.stderr == "", made.stderr
    imported = (tmp_path / "imported.yaml").read_text()
    assert "  upcoming: 2\n" in imported and "    location: Room 2.14\n" in imported
    assert pages_of(tmp_path, tmp_path / "imported.yaml", mondays, "again") == archive


def test_import_never_overwrites_and_names_what_it_cannot_read(tmp_path: Path) -> None:
    target = tmp_path / "seminars.yaml"
    target.write_text("mine\n")
    kept = mailer(tmp_path, "import", REFERENCE, "--timezone", "Europe/Stockholm", "--out", target)
    assert kept.returncode == 2 and f"{target} exists; import never overwrites a file" in kept.stderr
    assert target.read_text() == "mine\n"
    odd = tmp_path / "odd.md"
    odd.write_text(REFERENCE.read_text().replace("**Date:** 2024-01-18 15:00", "**Date:** next Thursday"))
    made = mailer(tmp_path, "import", odd, "--timezone", "Europe/Stockholm", "--out", tmp_path / "new.yaml")
    assert f"warning: {odd}:17: cannot read the date 'next Thursday'" in made.stderr
    wrong_zone = mailer(tmp_path, "import", REFERENCE, "--timezone", "America/New_York", "--out", tmp_path / "ny.yaml")
    assert "is EST in America/New_York, the page says CET: is --timezone right?" in wrong_zone.stderr
    assert mailer(tmp_path, "import", REFERENCE, "--timezone", "Europe/Stokholm").returncode == 2
    too_long = mailer(tmp_path, "import", REFERENCE, "--timezone", "x" * 300)  # (zoneinfo: an OSError, not unknown)
    assert too_long.returncode == 2 and "is not a time zone" in too_long.stderr, too_long.stderr


def test_a_calendar_export_becomes_a_programme(tmp_path: Path) -> None:
    """Our own published seminars.ics comes back as the same seminars; another tool's export (a title alone, or
    "Speakers: name (affiliation)" in the description, an all-day event, a cancellation, 90 minutes) too."""
    from mailer.programme.schedule import load_schedule

    bundled = tmp_path / "bundled.yaml"
    bundled.write_text((ROOT / "data" / "seminars.yaml").read_text().replace("  site: jekyll", "  site: html"))
    assert mailer(tmp_path, "publish", "--schedule", bundled, "--state", tmp_path / "s", "--out", tmp_path / "site",
                  "--now", "2024-01-01T00:00").returncode == 0  # fmt: skip
    made = mailer(tmp_path, "import", "--ics", tmp_path / "site" / "seminars.ics", "--timezone", "Europe/Stockholm",
                  "--out", tmp_path / "back.yaml", "--sender", "LM <lm@ri.se>")  # fmt: skip
    assert made.returncode == 0 and "5 seminars from 1 calendar" in made.stdout, made.stderr
    fields = ("date", "start", "duration", "speaker", "affiliation", "title", "location", "zoom", "cancelled")
    want = [[getattr(s, f) for f in fields] for s in load_schedule(bundled).seminars]
    assert [[getattr(s, f) for f in fields] for s in load_schedule(tmp_path / "back.yaml").seminars] == want

    foreign = tmp_path / "indico.ics"
    foreign.write_text(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//CERN//INDICO//EN\r\n"
        "BEGIN:VEVENT\r\nUID:1\r\nDTSTAMP:20300101T000000Z\r\nDTSTART:20300117T130000Z\r\nDTEND:20300117T143000Z\r\n"
        "SUMMARY:Dark Matter Searches\r\nDESCRIPTION:Speakers: Vera Rubin, Carnegie\\n\\nWe look for it.\r\n"
        "LOCATION:Main Auditorium\r\nEND:VEVENT\r\n"
        "BEGIN:VEVENT\r\nUID:2\r\nDTSTAMP:20300101T000000Z\r\nDTSTART:20300124T130000Z\r\nDTEND:20300124T143000Z\r\n"
        "SUMMARY:Open problems\r\nLOCATION:Main Auditorium\r\nSTATUS:CANCELLED\r\nEND:VEVENT\r\n"
        "BEGIN:VEVENT\r\nUID:3\r\nDTSTAMP:20300101T000000Z\r\nDTSTART;VALUE=DATE:20300131\r\n"
        "SUMMARY:Department retreat\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    made = mailer(tmp_path, "import", "--ics", foreign, "--timezone", "Europe/Zurich", "--out", tmp_path / "i.yaml")
    assert made.returncode == 0 and "event 3 (Department retreat): not timed, skipped" in made.stderr, made.stderr
    text = (tmp_path / "i.yaml").read_text()
    assert '  time: "14:00"\n  location: Main Auditorium\n  duration: 90\n' in text
    first, second = load_schedule(tmp_path / "i.yaml").seminars
    assert (first.speaker, first.affiliation, first.title, first.abstract) == (
        "Vera Rubin",
        "Carnegie",
        "Dark Matter Searches",
        "We look for it.\n",
    )
    assert (second.speaker, second.title, second.cancelled) == ("TBA", "Open problems", "")
