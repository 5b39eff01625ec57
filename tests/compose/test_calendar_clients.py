"""The invitations as real calendar code reads them: libical's iTIP restriction check (the parser of
Evolution), khal importing the sequence into a vdir, a Radicale CalDAV server receiving PUTs, and
icalendar. The messages are the ones a real ``send`` delivers to an aiosmtpd server: the
announcement, a change, the reminder and the cancellation of one seminar, as one subscriber gets them.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import email
import email.policy
import http.client
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path

import icalendar
import pytest

from tests.conftest import SERIES, TEST_CLOCK
from tests.smtp_server import Server, free_port, start_server

SCHEDULE = (
    SERIES
    + """\
  reminder: "09:00"
seminars:
  - date: 2030-01-17
    speaker: Serge Belongie
    title: Challenges in Fine-Grained Image Analysis
{extra}  - date: 2030-01-24
    speaker: Joakim Lindblad
"""
)
CHANGED = '    time: "16:00"\n    location: Room 2, Scheelevägen 17\n'
CANCELLED = CHANGED + "    cancelled: The speaker is ill.\n"
ADA = "ada@example.org"
# (what the schedule holds, when send runs, the subject the message starts with)
STEPS = [
    ("", "2030-01-14T08:00", "Learning Machines seminar 2030-01-17 15:00 CET"),
    (CHANGED, "2030-01-15T08:00", "Changed: "),
    (CHANGED, "2030-01-17T09:05", "Reminder: "),
    (CANCELLED, "2030-01-17T10:00", "Cancelled: "),
]


@dataclass(frozen=True, slots=True)
class Told:
    """One message Ada received: its MIME form and its two calendar parts' bytes."""

    message: EmailMessage
    inline: bytes  # text/calendar inside multipart/alternative
    attached: bytes  # the application/ics attachment invite.ics


def _send(tmp: Path, server: Server, now: str, *more: str, **env: str) -> subprocess.CompletedProcess[str]:
    paths = [
        "--schedule",
        str(tmp / "seminars.yaml"),
        "--recipients",
        str(tmp / "recipients"),
        "--state",
        str(tmp / "state"),
    ]
    return subprocess.run(
        [sys.executable, "-m", "mailer", "send", "--now", now, *paths, *more],
        cwd=tmp,
        env={**os.environ, **server.env(), **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def _calendar_parts(message: EmailMessage) -> tuple[bytes, bytes]:
    inline = [p for p in message.walk() if p.get_content_type() == "text/calendar"]
    attached = [p for p in message.walk() if p.get_content_type() == "application/ics"]
    assert len(inline) == len(attached) == 1
    assert inline[0].get_content_disposition() is None and attached[0].get_filename() == "invite.ics"
    payloads = (inline[0].get_payload(decode=True), attached[0].get_payload(decode=True))
    assert isinstance(payloads[0], bytes) and isinstance(payloads[1], bytes)
    return payloads[0], payloads[1]


@pytest.fixture(scope="module")
def told(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Told]]:
    tmp = tmp_path_factory.mktemp("sequence")
    (tmp / "recipients").mkdir()
    (tmp / "recipients" / "learning-machines.txt").write_text(f"Ada Lovelace <{ADA}>\nAlan Turing <alan@example.org>\n")
    server = start_server(tmp)
    try:
        for extra, now, _ in STEPS:
            (tmp / "seminars.yaml").write_text(SCHEDULE.format(extra=extra), encoding="utf-8")
            result = _send(tmp, server, now)
            assert result.returncode == 0, result.stdout + result.stderr
        messages = [
            email.message_from_bytes(r.data, policy=email.policy.default)
            for r in server.recorder.received
            if r.rcpt == ADA
        ]
        got = []
        for message, (_, _, subject) in zip(messages, STEPS, strict=True):
            assert isinstance(message, EmailMessage) and message["Subject"].startswith(subject), message["Subject"]
            got.append(Told(message, *_calendar_parts(message)))
        yield got
    finally:
        server.controller.stop()


def test_every_message_is_the_itip_its_headers_say(told: list[Told]) -> None:
    """icalendar reads every part: METHOD equals the Content-Type's method=, ORGANIZER is From,
    Ada is the one ATTENDEE, one UID throughout, SEQUENCE 0, 1, 1 (the reminder), 2."""
    sequences, uids = [], set()
    for t in told:
        part = next(p for p in t.message.walk() if p.get_content_type() == "text/calendar")
        attachment = next(p for p in t.message.walk() if p.get_content_type() == "application/ics")
        for raw in (t.inline, t.attached):
            calendar = icalendar.Calendar.from_ical(raw)
            (event,) = calendar.walk("VEVENT")
            assert str(calendar["METHOD"]) == part.get_param("method") == attachment.get_param("method")
            assert str(event["ORGANIZER"]) == "mailto:learning-machines@ri.se"
            assert event["ORGANIZER"].params["CN"] == "Learning Machines"
            assert t.message["From"].addresses[0].addr_spec == "learning-machines@ri.se"
            assert str(event["ATTENDEE"]) == f"mailto:{ADA}" and event["ATTENDEE"].params["RSVP"] == "FALSE"
            uids.add(str(event["UID"]))
        sequences.append(event.decoded("SEQUENCE"))
        assert t.inline == t.attached
    assert [str(icalendar.Calendar.from_ical(t.inline)["METHOD"]) for t in told] == [
        "REQUEST", "REQUEST", "REQUEST", "CANCEL"
    ]  # fmt: skip
    assert sequences == [0, 1, 1, 2] and len(uids) == 1


def test_each_recipient_is_the_attendee_of_their_own_copy(tmp_path: Path) -> None:
    """Two subscribers' copies of one message differ in To, ids and the ATTENDEE lines only."""
    import datetime as dt

    from mailer.compose.message import build_announcement
    from mailer.compose.render import render
    from mailer.core.address import Address
    from mailer.programme.model import week_of
    from mailer.programme.schedule import load_schedule

    path = tmp_path / "seminars.yaml"
    path.write_text(SCHEDULE.format(extra=""), encoding="utf-8")
    schedule = load_schedule(path)
    week = week_of(schedule, dt.date(2030, 1, 14))
    assert week is not None
    template = build_announcement(
        schedule, week, render(schedule, week), now=dt.datetime(2030, 1, 14, 7, tzinfo=dt.UTC), token_key=b"k" * 32
    )
    long = Address("", "a.very.long.local.part.that.folds.and.breaks.lines.x=y@example.org")
    expected = {
        ADA: f"mailto:{ADA}",
        "åsa@bücher.de": "mailto:%C3%A5sa@xn--bcher-kva.de",  # RFC 6068: UTF-8, percent-encoded; the domain IDNA
        long.addr: f"mailto:{long.addr}",
        "q?x@example.org": "mailto:q%3Fx@example.org",  # a bare "?" would start the URI's query
    }
    for who in (Address("Ada", ADA), Address("Åsa", "åsa@bücher.de"), long, Address("", "q?x@example.org")):
        message = email.message_from_bytes(template.personalise(who), policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        for raw in _calendar_parts(message):
            (event,) = icalendar.Calendar.from_ical(raw).walk("VEVENT")
            assert str(event["ATTENDEE"]) == expected[who.addr]
        # what SMTP carries is the same message, dot-stuffed
        wire = template.wire(who)
        assert wire.endswith(b"\r\n.\r\n") and wire[:-3].replace(b"\r\n..", b"\r\n.") == template.personalise(who)


# --- libical -------------------------------------------------------------------------------------

LIBICAL = ctypes.util.find_library("ical")


def _libical() -> ctypes.CDLL:
    lib = ctypes.CDLL(LIBICAL or "libical.so.3")
    lib.icalparser_parse_string.restype = ctypes.c_void_p
    lib.icalparser_parse_string.argtypes = [ctypes.c_char_p]
    lib.icalrestriction_check.argtypes = [ctypes.c_void_p]
    lib.icalcomponent_as_ical_string.restype = ctypes.c_char_p
    lib.icalcomponent_as_ical_string.argtypes = [ctypes.c_void_p]
    lib.icalcomponent_free.argtypes = [ctypes.c_void_p]
    return lib


def restriction_errors(raw: bytes) -> list[str]:
    """libical's ``icalrestriction_check`` (RFC 5546's table per METHOD): the errors it records."""
    lib = _libical()
    component = lib.icalparser_parse_string(raw)
    assert component, "libical could not parse the calendar"
    try:
        passed = lib.icalrestriction_check(component)
        text = lib.icalcomponent_as_ical_string(component).decode()
    finally:
        lib.icalcomponent_free(component)
    errors = [e.replace("\r\n ", "") for e in re.findall(r"X-LIC-ERROR[^\r\n]*(?:\r\n [^\r\n]*)*", text)]
    assert bool(passed) == (not errors)
    return errors


@pytest.mark.skipif(
    LIBICAL is None, reason="LOUD SKIP: libical is not installed (Debian libical-dev, scripts/install-system-deps)"
)
def test_libical_passes_every_kind_of_message(told: list[Told]) -> None:
    for t in told:
        for raw in (t.inline, t.attached):
            assert restriction_errors(raw) == [], t.message["Subject"]


@pytest.mark.skipif(
    LIBICAL is None, reason="LOUD SKIP: libical is not installed (Debian libical-dev, scripts/install-system-deps)"
)
def test_libical_fails_an_invitation_without_organizer(told: list[Told]) -> None:
    """The check is a real one: the same invitation without its ORGANIZER line fails it."""
    for t in (told[0], told[-1]):
        stripped = re.sub(rb"\r\nORGANIZER[^\r]*(\r\n [^\r]*)*", b"", t.inline)
        assert any("ORGANIZER" in e for e in restriction_errors(stripped))


# --- khal ----------------------------------------------------------------------------------------

KHAL = shutil.which("khal")


@pytest.mark.skipif(KHAL is None, reason="LOUD SKIP: khal is not installed (Debian khal, scripts/install-system-deps)")
def test_khal_holds_one_event_updated_in_place_then_cancelled(told: list[Told], tmp_path: Path) -> None:
    assert KHAL is not None
    vdir = tmp_path / "calendar"
    vdir.mkdir()
    config = tmp_path / "khal.conf"
    config.write_text(
        f"[calendars]\n[[seminars]]\npath = {vdir}\ntype = calendar\n"
        "[locale]\ntimeformat = %H:%M\ndateformat = %Y-%m-%d\nlongdateformat = %Y-%m-%d\n"
        "datetimeformat = %Y-%m-%d %H:%M\nlongdatetimeformat = %Y-%m-%d %H:%M\n"
        "local_timezone = Europe/Stockholm\ndefault_timezone = Europe/Stockholm\n"
        f"[sqlite]\npath = {tmp_path / 'khal.db'}\n"
    )
    env = {**os.environ, "HOME": str(tmp_path), "TZ": "Europe/Stockholm"}

    def khal(*args: str) -> str:
        proc = subprocess.run(
            [KHAL, "-c", str(config), *args], capture_output=True, text=True, env=env, check=False, timeout=60
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    def listed() -> str:
        return khal("list", "--format", "{start} {status}{title} @ {location}", "2030-01-01", "2030-12-31").strip()

    seen = []
    for i, t in enumerate(told):
        ics = tmp_path / f"{i}.ics"
        ics.write_bytes(t.attached)
        khal("import", "--batch", "-a", "seminars", str(ics))
        assert len(list(vdir.glob("*.ics"))) == 1, "one seminar is one event in the calendar"
        seen.append(listed())
    title = "Learning Machines: Challenges in Fine-Grained Image Analysis (Serge Belongie)"
    assert seen[0].splitlines()[1:] == [f"2030-01-17 15:00 CONFIRMED {title} @ RISE Lund Office"]
    assert seen[1].splitlines()[1:] == [f"2030-01-17 16:00 CONFIRMED {title} @ Room 2, Scheelevägen 17"]
    assert seen[2] == seen[1]  # the reminder changes nothing
    assert seen[3].splitlines()[1:] == [f"2030-01-17 16:00 CANCELLED {title} @ Room 2, Scheelevägen 17"]


# --- Radicale ------------------------------------------------------------------------------------

try:
    import radicale  # noqa: F401

    RADICALE = True
except ImportError:
    RADICALE = False


@pytest.fixture
def caldav(tmp_path: Path) -> Iterator[int]:
    """A Radicale server on 127.0.0.1 with a temporary storage folder, no authentication."""
    port = free_port()
    config = tmp_path / "radicale.conf"
    config.write_text(
        f"[server]\nhosts = 127.0.0.1:{port}\n[auth]\ntype = none\n[rights]\ntype = owner_only\n"
        f"[storage]\nfilesystem_folder = {tmp_path / 'collections'}\n[logging]\nlevel = warning\n"
    )
    proc = subprocess.Popen([sys.executable, "-m", "radicale", "--config", str(config)], stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=5).request("OPTIONS", "/")
                break
            except OSError:
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "radicale exited"
                assert time.monotonic() < deadline, "Radicale did not start"
                time.sleep(0.1)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _request(port: int, method: str, path: str, body: bytes = b"", **headers: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request(method, path, body=body, headers={"Authorization": "Basic YWRhOg==", **headers})  # ada:
    response = connection.getresponse()
    return response.status, response.read()


@pytest.mark.skipif(
    not RADICALE, reason="LOUD SKIP: radicale is not installed (pip install radicale; pyproject test extra)"
)
def test_radicale_holds_one_object_whose_sequence_rises(told: list[Told], caldav: int) -> None:
    """As a CalDAV client applies each invitation: its VCALENDAR without METHOD (RFC 4791 4.1) PUT
    under the event's UID; the collection ends with one object, SEQUENCE 2, STATUS:CANCELLED."""
    status, _ = _request(caldav, "MKCALENDAR", "/ada/seminars/")
    assert status == 201
    stored = []
    for t in told:
        calendar = icalendar.Calendar.from_ical(t.inline)
        del calendar["METHOD"]
        (event,) = calendar.walk("VEVENT")
        status, body = _request(
            caldav, "PUT", f"/ada/seminars/{event['UID']}.ics", calendar.to_ical(), **{"Content-Type": "text/calendar"}
        )
        assert status in (201, 204), body  # created, then replaced
        status, body = _request(caldav, "GET", "/ada/seminars/")
        assert status == 200
        (back,) = icalendar.Calendar.from_ical(body).walk("VEVENT")
        stored.append((back.decoded("SEQUENCE"), str(back.get("STATUS"))))
    status, body = _request(caldav, "PROPFIND", "/ada/seminars/", **{"Depth": "1"})
    assert status == 207 and len(re.findall(rb"<href>/ada/seminars/[^<]+\.ics</href>", body)) == 1
    assert stored == [(0, "CONFIRMED"), (1, "CONFIRMED"), (1, "CONFIRMED"), (2, "CANCELLED")]


# --- the real clock for real mail ----------------------------------------------------------------


def test_a_real_send_refuses_now_and_a_dry_run_takes_it(tmp_path: Path) -> None:
    server = start_server(tmp_path)
    try:
        (tmp_path / "recipients").mkdir()
        (tmp_path / "recipients" / "learning-machines.txt").write_text(f"{ADA}\n")
        (tmp_path / "seminars.yaml").write_text(SCHEDULE.format(extra=""), encoding="utf-8")
        refused = _send(tmp_path, server, "2030-01-14T08:00", **{TEST_CLOCK: ""})
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "--now 2030-01-14T08:00: a real send uses the real clock" in refused.stderr
        assert "Traceback" not in refused.stderr and server.recorder.received == []
        dry = _send(tmp_path, server, "2030-01-14T08:00", "--dry-run", **{TEST_CLOCK: ""})
        assert dry.returncode == 0, dry.stdout + dry.stderr
        assert "Learning Machines seminar 2030-01-17" in dry.stdout and server.recorder.received == []
    finally:
        server.controller.stop()


@pytest.mark.skipif(
    LIBICAL is None, reason="LOUD SKIP: libical is not installed (Debian libical-dev, scripts/install-system-deps)"
)
@pytest.mark.parametrize(
    ("cancelled", "method", "events"),
    [("", "REQUEST", 2), ("first", "REQUEST", 1), ("both", "CANCEL", 2)],
)
def test_a_week_of_two_seminars_is_one_valid_itip_message(
    tmp_path: Path, cancelled: str, method: str, events: int
) -> None:
    """A REQUEST never carries a cancelled seminar (its STATUS would break RFC 5546); all cancelled: CANCEL."""
    import datetime as dt

    from mailer.compose.message import build_announcement
    from mailer.compose.render import render
    from mailer.core.address import Address
    from mailer.programme.model import week_of
    from mailer.programme.schedule import load_schedule

    text = SCHEDULE.format(extra="").replace("2030-01-24", "2030-01-18")
    if cancelled:
        text = text.replace("    title: Challenges", "    cancelled: true\n    title: Challenges")
    if cancelled == "both":
        text += "    cancelled: true\n"
    path = tmp_path / "seminars.yaml"
    path.write_text(text, encoding="utf-8")
    schedule = load_schedule(path)
    week = week_of(schedule, dt.date(2030, 1, 14))
    assert week is not None and len(week.seminars) == 2
    now = dt.datetime(2030, 1, 14, 7, tzinfo=dt.UTC)
    template = build_announcement(schedule, week, render(schedule, week), now=now, token_key=b"k" * 32)
    message = email.message_from_bytes(template.personalise(Address("", ADA)), policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    inline, _ = _calendar_parts(message)
    calendar = icalendar.Calendar.from_ical(inline)
    assert str(calendar["METHOD"]) == method and len(calendar.walk("VEVENT")) == events
    assert restriction_errors(inline) == []
