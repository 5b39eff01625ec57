"""Several series in one project: every data/*.yaml with a series: block is one, each with its own list, and one
`send` from the project root covers them all (--series narrows to one).

seminar-mailer runs as its own process from the project folder (no path options: the defaults of a real
project) against aiosmtpd on 127.0.0.1 with STARTTLS and AUTH; the clock is passed in with --now, the dates
in 2030; every message is parsed back.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.conftest import SERIES
from tests.smtp_server import Server
from tests.test_lifecycle import parse, server

__all__ = ["server"]

LM = (
    SERIES
    + """\
seminars:
  - date: 2030-01-17
    speaker: Serge Belongie
    title: Fine-Grained Image Analysis
"""
)
ML = """\
series:
  name: ML Reading Group
  signature: The Reading Group
  timezone: Europe/Stockholm
  time: "10:00"
  location: {room}
  info_url: https://example.org/ml
  sender: ML Reading Group <ml@example.org>
  list: ml
{extra}
seminars:
  - date: 2030-01-16
    speaker: Grace Hopper
    title: Compilers
"""
MONDAY = "2030-01-14T08:00"


def project(tmp_path: Path, *, room: str = "Room 2", extra: str = "") -> Path:
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "recipients").mkdir(exist_ok=True)
    (tmp_path / "data" / "seminars.yaml").write_text(LM, encoding="utf-8")
    (tmp_path / "data" / "ml.yaml").write_text(ML.format(room=room, extra=extra), encoding="utf-8")
    (tmp_path / "data" / "notes.yaml").write_text("just: some other YAML\n", encoding="utf-8")  # not a programme
    (tmp_path / "recipients" / "learning-machines.txt").write_text("a@example.org\nboth@example.org\n")
    (tmp_path / "recipients" / "ml.txt").write_text("both@example.org\nm@example.org\n")
    return tmp_path


def mailer(folder: Path, server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "mailer", *args],
        cwd=folder,
        env={**os.environ, **server.env()},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def received(server: Server, since: int = 0) -> Counter[tuple[str, str]]:
    return Counter((r.rcpt, str(parse(r)["Subject"])) for r in server.recorder.received[since:])


LM_SUBJECT = "Learning Machines seminar 2030-01-17 15:00 CET: Serge Belongie – Fine-Grained Image Analysis"
ML_SUBJECT = "ML Reading Group seminar 2030-01-16 10:00 CET: Grace Hopper – Compilers"


def test_one_send_announces_each_series_to_its_own_list_once(tmp_path: Path, server: Server) -> None:
    folder = project(tmp_path)
    first = mailer(folder, server, "send", "--now", MONDAY)
    assert first.returncode == 0, first.stderr
    assert received(server) == Counter(
        {
            ("a@example.org", LM_SUBJECT): 1,
            ("both@example.org", LM_SUBJECT): 1,
            ("both@example.org", ML_SUBJECT): 1,
            ("m@example.org", ML_SUBJECT): 1,
        }
    )
    # One summary per series, each under its heading, in the order of the files (data/seminars.yaml first).
    lm = first.stdout.index("== learning-machines (data/seminars.yaml) ==")
    ml = first.stdout.index("== ml (data/ml.yaml) ==")
    assert lm < first.stdout.index("sent now           2") < ml, first.stdout
    assert "(suppressed: seminar-mailer status --series ml)" in first.stdout  # the command that works here
    again = mailer(folder, server, "send", "--now", "2030-01-14T08:15")
    assert again.returncode == 0 and len(server.recorder.received) == 4, again.stdout


def test_a_change_reaches_that_series_told_only_and_an_unsubscription_keeps_the_other_list(
    tmp_path: Path, server: Server
) -> None:
    folder = project(tmp_path)
    assert mailer(folder, server, "send", "--now", MONDAY).returncode == 0
    out = mailer(folder, server, "unsubscribe", "both@example.org", "--series", "learning-machines")
    assert out.returncode == 0 and "unsubscribed from learning-machines" in out.stdout, out.stdout + out.stderr
    project(tmp_path, room="Room Q")  # the reading group moves; nothing changes in Learning Machines
    before = len(server.recorder.received)
    changed = mailer(folder, server, "send", "--now", "2030-01-15T09:00")
    assert changed.returncode == 0, changed.stderr
    got = server.recorder.received[before:]
    assert Counter(r.rcpt for r in got) == Counter(["both@example.org", "m@example.org"])
    assert all(str(parse(r)["Subject"]).startswith("Changed: ") for r in got)
    assert "Room Q" in got[0].data.decode()


def test_an_invalid_programme_stops_every_series_before_anything_is_sent(tmp_path: Path, server: Server) -> None:
    folder = project(tmp_path, extra="  upcoming: many\n")
    out = mailer(folder, server, "send", "--now", MONDAY)
    assert out.returncode == 2, out.stdout + out.stderr
    assert "data/ml.yaml:10:" in out.stderr and "Nothing was sent" in out.stderr, out.stderr
    assert server.recorder.received == []


def test_series_narrows_to_one_and_a_one_series_command_asks_for_it(tmp_path: Path, server: Server) -> None:
    folder = project(tmp_path)
    only = mailer(folder, server, "send", "--now", MONDAY, "--series", "ml")
    assert only.returncode == 0 and "==" not in only.stdout, only.stdout
    assert {r.rcpt for r in server.recorder.received} == {"both@example.org", "m@example.org"}
    unknown = mailer(folder, server, "check", "--series", "colloquium")
    assert unknown.returncode == 2 and "learning-machines (data/seminars.yaml), ml (data/ml.yaml)" in unknown.stderr
    ask = mailer(folder, server, "approve", "--date", "2030-01-16")
    assert ask.returncode == 2 and "wanted --series LIST" in ask.stderr, ask.stderr
    status = mailer(folder, server, "status")  # from a sub-folder too: the project is found upwards
    assert status.returncode == 0 and "== ml (data/ml.yaml) ==" in status.stdout, status.stdout
    (folder / "recipients" / "sub").mkdir()
    below = mailer(folder / "recipients" / "sub", server, "status", "--series", "ml")
    assert below.returncode == 0 and "Grace Hopper" in below.stdout, below.stdout + below.stderr


def test_init_adds_a_series_to_a_project_and_every_command_covers_it(tmp_path: Path, server: Server) -> None:
    made = mailer(tmp_path, server, "init", "--date", "2030-01-07", "dept")
    assert made.returncode == 0, made.stderr
    folder = tmp_path / "dept"
    added = mailer(folder / "recipients", server, "init", "--add-series", "reading-group", "--date", "2030-01-07")
    assert added.returncode == 0, added.stderr
    assert (folder / "data" / "reading-group.yaml").is_file()
    assert (folder / "recipients" / "reading-group.txt").is_file()
    checked = mailer(folder, server, "check")
    assert checked.returncode == 0, checked.stderr
    assert "== reading-group (data/reading-group.yaml) ==" in checked.stdout
    assert "data/reading-group.yaml: OK, 1 seminar of Reading Group" in checked.stdout
    again = mailer(folder, server, "init", "--add-series", "reading-group")
    assert again.returncode == 2 and "already has list: reading-group" in again.stderr, again.stderr
    outside = mailer(tmp_path, server, "init", "--add-series", "other")
    assert outside.returncode == 2 and "in no seminar-mailer project" in outside.stderr
