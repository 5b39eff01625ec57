"""Shared fixtures: the repository's paths, a valid schedule to mutate, and the CLI runner."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = Path(__file__).resolve().parent / "golden"
# The real announcement of 2024-01-18, the user's reference: the page must equal it byte for byte. Never regenerated.
REFERENCE_PAGE = Path(__file__).resolve().parent / "reference" / "announcement-2024-01-18.md"
ARTEFACTS = Path(__file__).resolve().parent / "artefacts"
SCHEDULE = ROOT / "data" / "seminars.yaml"

# Tests that really send use the shipped programme moved to 2030 (ahead of today) and pass the clock
# in with --now, so they depend on neither the machine's clock nor the 2024 dates being in the past.
FUTURE_DATE = "2030-01-14"  # a Monday; the week holds the 2030-01-18 seminar (the shipped 2024-01-18 one)
FUTURE_NOW = "2030-01-14T08:00"  # local to the series (Europe/Stockholm)

# A real send refuses --now (mailer/cli/delivery.py) unless this variable is set: a test-only way, named so,
# set here for every test (and bench/, which imports this module) that drives the clock on purpose.
TEST_CLOCK = "SEMINAR_MAILER_TEST_ONLY_SEND_NOW"
os.environ.setdefault(TEST_CLOCK, "1")


def future_schedule(folder: Path) -> Path:
    """Write the shipped schedule with every 2024 date moved to 2030; return its path."""
    path = folder / "seminars-2030.yaml"
    path.write_text(SCHEDULE.read_text(encoding="utf-8").replace("2024-", "2030-"), encoding="utf-8")
    return path


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--update-golden",
        action="store_true",
        help="rewrite the golden files from the current output (review the diff!)",
    )


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))


def check_golden(name: str, actual: str, update: bool) -> None:
    """Compare ``actual`` with tests/golden/NAME; rewrite it only when asked explicitly."""
    path = GOLDEN / name
    if update:
        path.write_text(actual, encoding="utf-8", newline="")
    assert path.exists(), f"no golden file {path}: run pytest --update-golden and review it"
    assert actual == path.read_text(encoding="utf-8"), f"output differs from {path}"


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None, timeout: float = 120) -> Result:
    """Run the real entry point (python -m mailer) in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "mailer", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


# The series of the tests that write their own programme (2030 seminars follow it).
SERIES = """\
series:
  name: Learning Machines
  signature: The Learning Machines Team
  timezone: Europe/Stockholm
  time: "15:00"
  location: RISE Lund Office
  info_url: https://ri.se/lm-sem
  sender: Learning Machines <learning-machines@ri.se>
  list: learning-machines
"""

VALID = """\
series:
  name: Learning Machines
  signature: The Learning Machines Team
  timezone: Europe/Stockholm
  time: "15:00"
  location: RISE Lund Office
  zoom: https://rise.zoom.us/j/1
  info_url: https://ri.se/lm-sem
  sender: Learning Machines <learning-machines@ri.se>
  list: learning-machines
  upcoming: 4
seminars:
  - date: 2024-01-18
    speaker: Serge Belongie
    affiliation: University of Copenhagen
    title: Challenges in Fine-Grained Image Analysis
    abstract: |
      Some *abstract*.
  - date: 2024-01-25
    speaker: Joakim Lindblad
"""


@pytest.fixture
def write_schedule(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Write YAML text to a schedule file and return its path."""

    def write(text: str) -> Path:
        path = tmp_path / "seminars.yaml"
        path.write_text(text, encoding="utf-8")
        return path

    return write
