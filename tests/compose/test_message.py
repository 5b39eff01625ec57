"""The email as subscribers get it: parsed back with the standard library, header by header."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import os
import re
import shutil
import subprocess
import sys
import time
from email.message import EmailMessage
from pathlib import Path

import icalendar
import pytest

from mailer.compose.message import MessageTemplate, build_announcement
from mailer.compose.render import render
from mailer.core.address import Address, parse_address
from mailer.programme.model import week_of
from mailer.programme.schedule import load_schedule
from tests.conftest import ARTEFACTS, REFERENCE_PAGE, SCHEDULE, VALID, check_golden

NOW = dt.datetime(2024, 1, 15, 7, 0, tzinfo=dt.UTC)
KEY = b"k" * 32
ADA = Address("Ada Lovelace", "ada@example.org")


def template_for(path: Path = SCHEDULE, day: dt.date = dt.date(2024, 1, 15), key: bytes = KEY) -> MessageTemplate:
    schedule = load_schedule(path)
    week = week_of(schedule, day)
    assert week is not None
    return build_announcement(schedule, week, render(schedule, week), now=NOW, token_key=key)


@pytest.fixture(scope="module")
def shipped() -> MessageTemplate:
    return template_for()


def parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def normalise(data: bytes) -> str:
    """Golden form: only Date varies between builds (DTSTAMP is the NOW passed in)."""
    text = re.sub(r"^Date: .*$", "Date: <date>", data.decode(), flags=re.M)
    return text.replace("\r\n", "\n")


def test_structure_text_html_and_invitation(shipped: MessageTemplate) -> None:
    """CalConnect's iMIP layout: the invitation inline, last alternative, and again as invite.ics."""
    message = parse(shipped.personalise(ADA))
    assert message.get_content_type() == "multipart/mixed"
    alternative, attachment = message.get_payload()  # type: ignore[misc]
    assert alternative.get_content_type() == "multipart/alternative"
    text, html, inline = alternative.get_payload()
    assert (text.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    assert text.get_content_charset() == html.get_content_charset() == "utf-8"
    assert inline.get_content_type() == "text/calendar" and inline.get_content_disposition() is None
    assert inline.get_param("method") == "REQUEST" and inline.get_content_charset() == "utf-8"
    assert attachment.get_content_type() == "application/ics" and attachment.get_param("method") == "REQUEST"
    assert attachment.get_filename() == "invite.ics" and attachment.get_content_disposition() == "attachment"
    assert inline.get_payload(decode=True) == attachment.get_payload(decode=True)


def test_bodies_carry_the_announcement_and_the_footer(shipped: MessageTemplate) -> None:
    message = parse(shipped.personalise(ADA))
    text = message.get_body(("plain",)).get_content().replace("\r\n", "\n")  # type: ignore[union-attr]
    reference = REFERENCE_PAGE.read_text().split("---\n", 2)[2]
    assert text.startswith(reference)  # the footer comes below the signature
    footer = text[len(reference) :]
    assert "subscribed to the Learning Machines seminar announcements" in footer
    assert 'write to learning-machines@ri.se with the subject "unsubscribe"' in footer
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "Challenges in Fine-Grained Image Analysis" in html
    assert html.index("The Learning Machines Team") < html.index("You receive this email because")


def test_headers(shipped: MessageTemplate) -> None:
    data = shipped.personalise(ADA)
    message = parse(data)
    assert message["From"] == "Learning Machines <learning-machines@ri.se>"
    assert message["To"] == "Ada Lovelace <ada@example.org>" and len(message["To"].addresses) == 1
    assert message["Subject"] == (
        "Learning Machines seminar 2024-01-18 15:00 CET: Serge Belongie – Challenges in Fine-Grained Image Analysis"
    )
    assert message["Date"].datetime == NOW
    assert message["List-Id"] == "Learning Machines seminar <learning-machines.ri.se>"
    assert message["List-Unsubscribe"] == "<mailto:learning-machines@ri.se?subject=unsubscribe>"
    assert message["List-Unsubscribe-Post"] is None  # only with an https unsubscribe URL
    assert message["Precedence"] == "bulk" and message["Auto-Submitted"] == "auto-generated"
    assert message["Bcc"] is None and message["Cc"] is None
    assert re.fullmatch(r"<[0-9a-f]{40}@ri\.se>", message["Message-ID"])
    assert all(len(line) <= 78 for line in data.split(b"\r\n\r\n")[0].split(b"\r\n"))
    assert b"\n" not in data.replace(b"\r\n", b"")  # CRLF throughout


def test_golden_message(shipped: MessageTemplate, update_golden: bool) -> None:
    check_golden("message-2024-01-18.eml", normalise(shipped.personalise(ADA)), update_golden)


def test_message_id_is_deterministic_per_list_seminar_and_recipient(shipped: MessageTemplate) -> None:
    again = template_for()  # another run: another Date, the same ids
    assert shipped.message_id(ADA) == again.message_id(ADA)
    assert shipped.message_id(ADA) == shipped.message_id(Address("", "ada@EXAMPLE.org"))
    assert shipped.message_id(ADA) != shipped.message_id(Address("", "alan@example.org"))
    other_week = template_for(day=dt.date(2024, 1, 22))
    assert other_week.message_id(ADA) != shipped.message_id(ADA)


def test_one_click_unsubscribe_with_a_secret_token(write_schedule) -> None:
    path = write_schedule(VALID.replace("  upcoming: 4\n", "  upcoming: 4\n  unsubscribe_url: https://ri.se/unsub\n"))
    template = template_for(path)
    message = parse(template.personalise(ADA))
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    mailto, https = [part.strip() for part in message["List-Unsubscribe"].split(",")]
    assert mailto == "<mailto:learning-machines@ri.se?subject=unsubscribe>"
    assert https.startswith("<https://ri.se/unsub?list=learning-machines&r=") and "&t=" in https
    token = https.rsplit("&t=", 1)[1].rstrip(">")
    assert len(token) >= 24 and "ada" not in token.lower()
    assert template_for(path, key=b"another key of 32 bytes........").token(ADA) != token
    assert template.token(Address("", "alan@example.org")) != token


def test_non_ascii_names_round_trip_and_domains_go_out_idna(shipped: MessageTemplate, write_schedule) -> None:
    message = parse(shipped.personalise(Address("Åsa Öberg-Lindström", "asa@bücher.de")))
    assert message["To"].addresses[0].display_name == "Åsa Öberg-Lindström"
    assert message["To"].addresses[0].addr_spec == "asa@xn--bcher-kva.de"
    path = write_schedule(VALID.replace("Serge Belongie", "Åsa Öberg-Lindström"))
    assert "Åsa Öberg-Lindström" in parse(template_for(path).personalise(ADA))["Subject"]


def test_quotes_and_specials_in_names_stay_one_mailbox(shipped: MessageTemplate) -> None:
    for name in ["Lovelace, Ada", 'Ada "The Countess" Lovelace', "Ada (Countess) <x@y.z>", "a\\b"]:
        recipient = Address(name, "ada@example.org")
        to = parse(shipped.personalise(recipient))["To"]
        assert len(to.addresses) == 1 and to.addresses[0].addr_spec == "ada@example.org", name
        assert to.addresses[0].display_name == name


ENCODED_WORD = "=?utf-8?q?x=0D=0ABcc:_a@b?="


def test_encoded_word_in_a_recipient_name_cannot_add_a_header(shipped: MessageTemplate) -> None:
    recipient = parse_address(f"{ENCODED_WORD} <ada@example.org>")
    assert recipient is not None
    data = shipped.personalise(recipient)
    message = parse(data)
    assert message["Bcc"] is None and b"\r\nBcc:" not in data
    assert len(message["To"].addresses) == 1
    assert message["To"].addresses[0].display_name == ENCODED_WORD  # literal text, not decoded


def test_encoded_word_in_a_title_cannot_add_a_header(write_schedule) -> None:
    path = write_schedule(VALID.replace("title: Challenges in Fine-Grained Image Analysis", f"title: '{ENCODED_WORD}'"))
    data = template_for(path).personalise(ADA)
    message = parse(data)
    assert message["Bcc"] is None and b"\r\nBcc:" not in data
    assert ENCODED_WORD in message["Subject"] and "\r" not in message["Subject"] and "\n" not in message["Subject"]


@pytest.mark.parametrize(
    "raw",
    [
        "Ada\r\nBcc: x@y.z <ada@example.org>",
        "ada@example.org\r\nBcc: x@y.z",
        "ada@example.org, bob@example.org",
        "Ada <ada@example.org> <bob@example.org>",
    ],
)
def test_line_breaks_and_extra_addresses_are_rejected(raw: str) -> None:
    assert parse_address(raw) is None


def test_html_part_has_nothing_active(write_schedule) -> None:
    from tests.compose.test_render import HOSTILE

    html = parse(template_for(write_schedule(HOSTILE)).personalise(ADA)).get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "<script" not in html and "onerror=" not in html.replace("onerror=alert(2)&gt;", "")
    assert 'href="javascript' not in html


def ics_of(template: MessageTemplate) -> icalendar.Calendar:
    message = parse(template.personalise(ADA))
    part = next(p for p in message.walk() if p.get_content_type() == "text/calendar")
    return icalendar.Calendar.from_ical(part.get_content())


@pytest.mark.parametrize(("date", "label", "utc_hour"), [("2024-01-18", "CET", 14), ("2024-06-20", "CEST", 13)])
def test_invitation_winter_and_summer(write_schedule, date: str, label: str, utc_hour: int) -> None:
    path = write_schedule(VALID.replace("2024-01-18", date))
    template = template_for(path, day=dt.date.fromisoformat(date))
    assert f"15:00 {label}" in parse(template.personalise(ADA))["Subject"]
    calendar = ics_of(template)
    assert calendar["METHOD"] == "REQUEST" and calendar["VERSION"] == "2.0"
    (event,) = calendar.walk("VEVENT")
    start, end = event.decoded("DTSTART"), event.decoded("DTEND")
    assert start == dt.datetime.fromisoformat(f"{date}T{utc_hour}:00:00+00:00") and start.utcoffset() == dt.timedelta(0)
    assert end - start == dt.timedelta(minutes=60)
    assert event["UID"] == f"learning-machines-{date}-serge-belongie@ri.se"
    assert event.decoded("SEQUENCE") == 0 and isinstance(event.decoded("DTSTAMP"), dt.datetime)
    assert event["SUMMARY"] == "Learning Machines: Challenges in Fine-Grained Image Analysis (Serge Belongie)"
    assert event["LOCATION"] == "RISE Lund Office" and event["URL"] == "https://rise.zoom.us/j/1"
    assert "Some abstract." in event["DESCRIPTION"]


def test_cancelled_seminar_sends_a_cancellation(write_schedule) -> None:
    path = write_schedule(VALID.replace("    abstract: |", "    cancelled: The speaker is ill.\n    abstract: |"))
    template = template_for(path)
    message = parse(template.personalise(ADA))
    assert message["Subject"].startswith("Cancelled: ")
    assert "is cancelled. The speaker is ill." in message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    part = next(p for p in message.walk() if p.get_content_type() == "text/calendar")
    assert part.get_param("method") == "CANCEL"
    calendar = icalendar.Calendar.from_ical(part.get_content())
    (event,) = calendar.walk("VEVENT")
    assert calendar["METHOD"] == "CANCEL" and event["STATUS"] == "CANCELLED" and event.decoded("SEQUENCE") == 1
    # the same UID as the announcement it cancels, so calendars remove that event
    (announced,) = ics_of(template_for(write_schedule(VALID))).walk("VEVENT")
    assert event["UID"] == announced["UID"]


def test_personalising_touches_only_the_recipients_header_and_attendee_lines(shipped: MessageTemplate) -> None:
    a, b = shipped.personalise(ADA), shipped.personalise(Address("", "alan@example.org"))
    tail_a = a[a.index(b"\r\nFrom: ") :]
    tail_b = b[b.index(b"\r\nFrom: ") :]
    assert tail_a != tail_b and tail_a.count(b"mailto:ada@example.org") == 2  # inline and attached invitation
    assert tail_a.replace(b"mailto:ada@example.org", b"mailto:alan@example.org") == tail_b


def correction(kind: str, folder: Path) -> MessageTemplate:
    """The change or the cancellation of tests.compose.test_render.corrections as sent."""
    from mailer.compose.invite import Event
    from mailer.compose.message import build_message
    from tests.compose.test_render import corrections

    schedule, rendered = corrections(folder)
    seminar, message = rendered[kind]
    events = [Event(seminar, "learning-machines-2024-01-18-serge-belongie@ri.se", 1 if kind == "change" else 2)]
    return build_message(schedule, events, message, key=f"{kind}:x", now=NOW, token_key=KEY, thread="x")


SPAMASSASSIN = shutil.which("spamassassin")
MUTT, TMUX = shutil.which("mutt"), shutil.which("tmux")


@pytest.mark.skipif(
    SPAMASSASSIN is None,
    reason="LOUD SKIP: spamassassin is not installed; .ci/run installs "
    "Debian's spamassassin (scripts/install-system-deps)",
)
@pytest.mark.parametrize("kind", ["announcement", "change", "cancellation"])
def test_spamassassin_scores_the_message_below_2(shipped: MessageTemplate, tmp_path: Path, capsys, kind: str) -> None:
    assert SPAMASSASSIN is not None
    template = shipped if kind == "announcement" else correction(kind, tmp_path)
    proc = subprocess.run(
        [SPAMASSASSIN, "-L", "-t"],
        input=template.personalise(ADA),
        capture_output=True,
        env={**os.environ, "HOME": str(tmp_path)},
        timeout=120,
        check=False,
    )
    report = proc.stdout.decode(errors="replace")
    match = re.search(r"Content analysis details:\s+\((-?[\d.]+) points", report)
    assert match, f"no SpamAssassin report:\n{proc.stderr.decode()[-2000:]}"
    rules = report[match.start() :].strip()
    with capsys.disabled():
        print(f"\nSpamAssassin, {kind} (local tests only):\n{rules}\n")
    assert float(match.group(1)) < 2.0, rules
    fired = re.findall(r"^\s*-?[\d.]+\s+([A-Z][A-Z0-9_]+)\s", rules, re.M)
    assert "HTML_MESSAGE" in fired  # the parse worked: the informational rule of every HTML mail
    html_rules = [r for r in fired if (r.startswith("HTML_") and r != "HTML_MESSAGE") or "FONT_" in r]
    assert html_rules == [], rules  # e.g. HTML_FONT_LOW_CONTRAST from a white preheader, FONT_INVIS_MSGID


@pytest.mark.skipif(
    MUTT is None or TMUX is None,
    reason="LOUD SKIP: mutt or tmux is not installed; .ci/run installs them (scripts/install-system-deps)",
)
def test_mutt_shows_the_text_part_and_the_invitation(shipped: MessageTemplate, tmp_path: Path) -> None:
    """A real mail client: mutt reads an mbox in tmux; we read its screen."""
    data = shipped.personalise(ADA).replace(b"\r\n", b"\n")
    data = re.sub(rb"(?m)^(>*From )", rb">\1", data)
    mbox = tmp_path / "mbox"
    mbox.write_bytes(b"From learning-machines@ri.se Mon Jan 15 07:00:00 2024\n" + data + b"\n")
    session = f"mutt-{os.getpid()}"
    settings = f"set mbox_type=mbox; set charset=utf-8; set folder={tmp_path}; set spoolfile={mbox}"
    command = f"env TERM=xterm HOME={tmp_path} {MUTT} -n -F /dev/null -R -e '{settings}' -f {mbox}"

    def screen() -> str:
        return subprocess.run(
            [TMUX, "capture-pane", "-p", "-t", session], capture_output=True, text=True, check=True
        ).stdout

    def wait_for(text: str) -> str:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if text in (shown := screen()):
                return shown
            time.sleep(0.2)
        raise AssertionError(f"{text!r} never appeared on mutt's screen:\n{screen()}")

    subprocess.run([TMUX, "new-session", "-d", "-s", session, "-x", "120", "-y", "50", command], check=True)
    try:
        wait_for("Learning Machines seminar 2024-01-18")  # the index
        subprocess.run([TMUX, "send-keys", "-t", session, "Enter"], check=True)
        pager = wait_for("Welcome to this week's Learning Machines seminar.")
        assert "**Speaker:** Serge Belongie, University of Copenhagen" in pager
        assert "To: Ada Lovelace <ada@example.org>" in pager
        subprocess.run([TMUX, "send-keys", "-t", session, "v"], check=True)
        attachments = wait_for("invite.ics")
        assert "text/plain" in attachments and "text/html" in attachments and "text/calendar" in attachments
        (ARTEFACTS / "mutt-attachments.txt").parent.mkdir(exist_ok=True)
        (ARTEFACTS / "mutt-pager.txt").write_text(pager)
        (ARTEFACTS / "mutt-attachments.txt").write_text(attachments)
    finally:
        subprocess.run([TMUX, "kill-session", "-t", session], check=False, capture_output=True)


@pytest.mark.skipif(
    sys.version_info >= (3, 11, 10),
    reason="this Python has the CVE-2024-6923 fix; the hazard below exists only on older ones (3.11.7 here)",
)
def test_the_stdlib_alone_would_inject_on_this_python() -> None:
    """Why mailer/core/address.py writes header text itself: the same title through EmailMessage adds a Bcc."""
    naive = EmailMessage(policy=email.policy.SMTP)
    naive["Subject"] = ENCODED_WORD
    naive.set_content("x")
    assert parse(naive.as_bytes())["Bcc"] == "a@b"  # the vulnerability is real here...
    assert parse(template_for().personalise(parse_address(f"{ENCODED_WORD} <ada@example.org>")))["Bcc"] is None


def test_attendee_lines_fold_so_quoted_printable_needs_no_soft_break() -> None:
    """Every length and every place of an "=" in the address: each encoded line fits in 75
    characters, none ends in a soft break, and decoding then unfolding gives the property back."""
    import quopri

    from mailer.compose.invite import attendee_property
    from mailer.compose.message import attendee_lines

    for n in range(1, 64):
        for local in ("a" * n, ("a=" * n)[:n], ("=b" * n)[:n]):
            recipient = Address("", f"{local}@example.org")
            encoded = attendee_lines(recipient)
            lines = encoded.split(b"\r\n")
            assert all(len(line) <= 75 and not line.endswith(b"=") for line in lines), lines
            decoded = quopri.decodestring(encoded + b"\r\n")
            assert all(len(line) <= 75 for line in decoded.split(b"\r\n")), decoded
            assert decoded.replace(b"\r\n ", b"").rstrip(b"\r\n").decode() == attendee_property(recipient)
