"""``add`` (a term's TBA slots) and ``shift`` (seminars moved by days or to another time): they write only what
they change, keep the organiser's comments and layout byte for byte, and a shifted announced seminar keeps its
identity, so its change reaches exactly those told, once (real processes, aiosmtpd on 127.0.0.1, dates in 2030)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

from tests.smtp_server import Server
from tests.test_lifecycle import invitation, make_list, new_since, parse, send, server, write

__all__ = ["server"]  # (the aiosmtpd fixture)

PROGRAMME = """\
# The term's programme. Comments stay where they are.
series:
  name: Learning Machines
  signature: The Learning Machines Team
  timezone: Europe/Stockholm
  time: "15:00"              # quoted, as ever
  location: RISE Lund Office
  info_url: https://ri.se/lm-sem
  sender: Learning Machines <learning-machines@ri.se>
  list: learning-machines

seminars:
  - date: 2030-01-17         # the first one
    speaker: Serge Belongie
    title: 'Fine-Grained Image Analysis'
  - date: 2030-01-24
    speaker: Joakim Lindblad
    location: "Room 2"       # quoted too
# next term below
"""


def mailer(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "mailer", *args, "--schedule", str(tmp_path / "seminars.yaml")],
        capture_output=True, text=True, check=False, cwd=tmp_path, stdin=subprocess.DEVNULL,
        env={**os.environ, "MAILER_ENV_FILE": str(tmp_path / "none.env")},
    )  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_add_appends_the_slots_and_keeps_every_other_byte(tmp_path: Path) -> None:
    path = tmp_path / "seminars.yaml"
    path.write_text(PROGRAMME)
    path.chmod(0o640)
    added = mailer(tmp_path, "add", "--every", "thursday", "--from", "2030-01-14", "--until", "2030-02-14",
                   "--skip", "2030-02-07")  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "Added 2 seminars" in added.stdout and "2030-01-31, 2030-02-14" in added.stdout
    assert "Already held a seminar, left as they are: 2030-01-17" in added.stdout
    assert path.read_text() == PROGRAMME + (
        "  - date: 2030-01-31\n    speaker: TBA\n  - date: 2030-02-14\n    speaker: TBA\n"
    )
    assert path.stat().st_mode & 0o777 == 0o640
    checked = mailer(tmp_path, "check", "--date", "2030-01-27", "--recipients", str(tmp_path))
    assert "2030-01-31 (TBA) has no speaker, title or abstract yet" in checked.stderr


def test_add_before_a_later_section_and_into_an_empty_list(tmp_path: Path) -> None:
    path = tmp_path / "seminars.yaml"
    series = PROGRAMME.partition("\nseminars:\n")[0]
    path.write_text("seminars: []\n\n" + series.replace("# The term's programme. Comments stay where they are.\n", ""))
    assert mailer(tmp_path, "add", "--every", "wed", "--from", "2030-01-14", "--until", "2030-01-23").returncode == 0
    text = path.read_text()
    assert text.startswith(
        "seminars:\n  - date: 2030-01-16\n    speaker: TBA\n  - date: 2030-01-23\n    speaker: TBA\n\n"
    )
    assert text.endswith(series.replace("# The term's programme. Comments stay where they are.\n", ""))


def test_bad_input_changes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "seminars.yaml"
    path.write_text(PROGRAMME)
    cases = [
        (["add", "--every", "thorsday", "--from", "2030-01-14", "--until", "2030-02-14"], "is not a weekday"),
        (["add", "--every", "thu", "--from", "2030-02-14", "--until", "2030-01-14"], "is before --from"),
        (["add", "--every", "thu", "--from", "2030-01-14", "--until", "2030-02-30"], "'2030-02-30' is not a date"),
        (["shift", "--from", "2030-01-01", "--by", "a week"], "wanted a number of days"),
        (["shift", "--from", "2030-01-01", "--to-time", "25:00"], "wanted a 24-hour time"),
        # Two seminars on one day and time after the move: refused at the file's own line, nothing written.
        (["shift", "--from", "2030-01-24", "--by=-7d", "--state", str(tmp_path / "state")], "two seminars at"),
    ]
    for args, words in cases:
        proc = mailer(tmp_path, *args)
        assert proc.returncode == 2 and words in proc.stderr, (args, proc.stderr)
    assert path.read_text() == PROGRAMME
    assert [p.name for p in tmp_path.iterdir()] == ["seminars.yaml"]  # no temporary file left behind


def test_a_shifted_announced_seminar_keeps_its_identity_and_its_change_reaches_those_told(
    tmp_path: Path, server: Server
) -> None:
    people = make_list(tmp_path, 3)
    write(tmp_path)
    assert send(tmp_path, server, "2030-01-14T08:00").returncode == 0  # the 2030-01-17 seminar, announced
    (first,) = {invitation(parse(r))[1]["UID"] for r in server.recorder.received}
    before_text = (tmp_path / "seminars.yaml").read_text()
    shifted = mailer(tmp_path, "shift", "--from", "2030-01-15", "--by", "7d", "--state", str(tmp_path / "state"))
    assert shifted.returncode == 0, shifted.stderr
    assert f"2030-01-17 15:00 Serge Belongi -> 2030-01-24  (id: {first} written" in shifted.stdout
    assert "2030-01-24 15:00 Joakim Lindblad -> 2030-01-31\n" in shifted.stdout  # never announced: no id
    after_text = (tmp_path / "seminars.yaml").read_text()
    assert after_text == before_text.replace("2030-01-17\n", f"2030-01-24\n    id: {first}\n", 1).replace(
        "  - date: 2030-01-24\n    speaker: Joakim", "  - date: 2030-01-31\n    speaker: Joakim"
    )
    before = len(server.recorder.received)
    assert send(tmp_path, server, "2030-01-14T09:00").returncode == 0
    got = new_since(server, before)
    assert Counter(r.rcpt for r in got) == Counter(people)  # one message each: the move, not a new seminar
    message = parse(got[0])
    assert message["Subject"].startswith("Changed: Learning Machines seminar 2030-01-24 15:00 CET: Serge Belongi")
    _, event = invitation(message)
    assert event["UID"] == first and int(event["SEQUENCE"]) == 1


def test_two_announced_seminars_shifted_onto_each_others_dates_stay_themselves(tmp_path: Path, server: Server) -> None:
    """Tuesday's seminar shifted onto Thursday, Thursday's onto Saturday: without the ids shift writes, Thursday's
    slot would look like a new speaker of Thursday's seminar, Tuesday's a removal and Saturday's a new seminar
    (a change, a cancellation and an announcement); with them, two moves."""
    people = make_list(tmp_path, 2)
    write(tmp_path, **{"  - date: 2030-01-24\n": "  - date: 2030-01-15\n"})  # Tuesday and Thursday, one week
    assert send(tmp_path, server, "2030-01-14T08:00").returncode == 0
    assert sorted(r.rcpt for r in server.recorder.received) == sorted(people)  # one announcement of both
    shifted = mailer(tmp_path, "shift", "--from", "2030-01-15", "--by", "2d", "--state", str(tmp_path / "state"))
    assert shifted.returncode == 0 and shifted.stdout.count("written: subscribers were told of it") == 2
    before = len(server.recorder.received)
    assert send(tmp_path, server, "2030-01-14T09:00").returncode == 0
    got = new_since(server, before)
    subjects = Counter(parse(r)["Subject"].split(":")[0] for r in got)
    assert subjects == Counter({"Changed": 2 * len(people)}), subjects
