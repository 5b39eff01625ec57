"""Subscribers choosing what they get: per list every message, the digests only, or nothing (a CSV list's
``delivery`` column, or the subscriber's own choice in the preferences store), and a time zone in which every
time of their announcement and digest is also shown (rendered once per distinct zone).

seminar-mailer runs as its own process from a project folder against aiosmtpd on 127.0.0.1 (STARTTLS, AUTH),
the clock passed in with --now, the dates in 2030; every message is parsed back.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import pytest

from mailer.record.preferences import Preferences
from tests.run.test_digest import project
from tests.run.test_series import mailer
from tests.smtp_server import Server
from tests.test_lifecycle import bodies, parse, server

__all__ = ["server"]

CSV = """\
email,name,delivery,timezone
a@example.org,Ada,all,Europe/London
b@example.org,Bo,digest,
c@example.org,Cy,none,
e@example.org,Ed,,America/New_York
"""


def csv_project(tmp_path: Path, text: str = CSV) -> Path:
    folder = project(tmp_path)
    (folder / "recipients" / "learning-machines.txt").unlink()
    (folder / "recipients" / "learning-machines.csv").write_text(text, encoding="utf-8")
    (folder / "recipients" / "week.txt").write_text("d@example.org\n")
    return folder


def test_digest_only_none_and_zones_decide_who_gets_what_once(tmp_path: Path, server: Server) -> None:
    folder = csv_project(tmp_path)
    out = mailer(folder, server, "send", "--now", "2030-01-14T08:00")
    assert out.returncode == 0, out.stdout + out.stderr
    got = Counter(
        (r.rcpt, str(parse(r)["Subject"]).split(",")[0].split(" seminar")[0]) for r in server.recorder.received
    )
    assert got == Counter(
        {
            ("a@example.org", "Learning Machines"): 1,
            ("e@example.org", "Learning Machines"): 1,
            ("ml@example.org", "ML Reading Group"): 1,
            ("d@example.org", "This Week at the Department"): 1,
            ("b@example.org", "This Week at the Department"): 1,  # chose the digest over the list: it gathers it
        }
    ), out.stdout
    by = {r.rcpt: parse(r) for r in server.recorder.received}
    assert "**Date:** 2030-01-17 15:00 (14:00 GMT your time)" in bodies(by["a@example.org"])[0]  # (All are 15:00 CET)
    assert "09:00 EST your time" in bodies(by["e@example.org"])[1]  # the HTML of the New York variant
    assert "your time" not in bodies(by["d@example.org"])[0]  # no zone: the series' times alone
    assert "digest only or nothing  2" in out.stdout, out.stdout

    (folder / "data" / "seminars.yaml").write_text(
        (folder / "data" / "seminars.yaml").read_text().replace("RISE Lund Office", "Room Z")
    )
    before = len(server.recorder.received)
    moved = mailer(folder, server, "send", "--now", "2030-01-15T09:00")
    assert moved.returncode == 0, moved.stdout + moved.stderr
    changed = Counter(r.rcpt for r in server.recorder.received[before:])
    # Everyone told of the seminar, once, by the list they get it from; c@ (none) never, b@ through the digest.
    assert changed == Counter(["a@example.org", "e@example.org", "d@example.org", "b@example.org"]), moved.stdout


def test_the_subscribers_own_choice_wins_over_the_csv(tmp_path: Path, server: Server) -> None:
    folder = csv_project(tmp_path)
    with Preferences(folder / "state", create=True) as chosen:
        chosen.choose("c@example.org", {"learning-machines": "all"}, "Asia/Tokyo", now=dt.datetime.now(dt.UTC))
        chosen.choose("a@example.org", {"learning-machines": "none"}, None, now=dt.datetime.now(dt.UTC))
    assert mailer(folder, server, "send", "--now", "2030-01-14T08:00", "--series", "learning-machines").returncode == 0
    by = {r.rcpt: parse(r) for r in server.recorder.received}
    assert set(by) == {"c@example.org", "e@example.org"}
    assert "(23:00 JST your time)" in bodies(by["c@example.org"])[0]


def test_a_bad_delivery_or_zone_is_reported_at_its_line(tmp_path: Path, server: Server) -> None:
    folder = csv_project(tmp_path, CSV.replace("b@example.org,Bo,digest,", "b@example.org,Bo,weekly,"))
    checked = mailer(folder, server, "check", "--series", "learning-machines")
    assert checked.returncode == 2 and "learning-machines.csv:3:1: delivery 'weekly'" in checked.stderr, checked.stderr
    folder = csv_project(tmp_path, CSV.replace("America/New_York", "America/Gotham"))
    checked = mailer(folder, server, "check", "--series", "learning-machines")
    assert checked.returncode == 2 and "learning-machines.csv:5:1: timezone 'America/Gotham'" in checked.stderr


def test_check_warns_of_a_digest_choice_no_digest_can_serve(tmp_path: Path, server: Server) -> None:
    folder = csv_project(tmp_path)
    fine = mailer(folder, server, "check", "--series", "learning-machines")
    assert fine.returncode == 0 and "chose delivery digest" not in fine.stderr, fine.stderr
    (folder / "data" / "week.yaml").unlink()
    warned = mailer(folder, server, "check", "--series", "learning-machines")
    assert warned.returncode == 0, warned.stderr
    assert "1 address on learning-machines chose delivery digest, but no digest" in warned.stderr, warned.stderr


def test_a_zone_set_in_a_series_csv_reaches_the_digest_of_a_reader_who_chose_it(tmp_path: Path, server: Server) -> None:
    """b@ chose the digest over the series' list, and the series' CSV gives their zone: the digest, which takes
    them in, states its times in that zone too."""
    folder = csv_project(tmp_path, CSV.replace("b@example.org,Bo,digest,", "b@example.org,Bo,digest,Asia/Tokyo"))
    out = mailer(folder, server, "send", "--now", "2030-01-14T08:00")
    assert out.returncode == 0, out.stdout + out.stderr
    by = {r.rcpt: parse(r) for r in server.recorder.received}
    assert "JST your time" in bodies(by["b@example.org"])[0] and "your time" not in bodies(by["d@example.org"])[0]


@pytest.mark.parametrize("damage", [b"", b"S", b"not a database, but long enough to be one" * 20])
def test_damaged_preferences_are_an_error_naming_the_file_and_nothing_is_sent(
    tmp_path: Path, server: Server, damage: bytes
) -> None:
    """c@ chose no mail. A preferences file emptied, cut to a byte (which SQLite would take for a new, empty
    store, forgetting that choice) or not a database: exit 2 naming it, nobody mailed, no crash."""
    folder = csv_project(tmp_path)
    state = folder / "state"
    Preferences(state, create=True).close()
    (state / "preferences.sqlite3").write_bytes(damage)
    out = mailer(folder, server, "send", "--now", "2030-01-14T08:00")
    assert out.returncode == 2, out.stdout + out.stderr
    assert "preferences.sqlite3" in out.stderr and "internal error" not in out.stderr, out.stderr
    assert server.recorder.received == []
