"""Property-based: random text in any schedule field or recipients line never crashes, never breaks a header.

For every example: ``check`` exits 0 or 2 (never 70, never a traceback); when it passes, ``preview``
renders too, and the message it writes has no header line over 998 octets, exactly the expected
header fields, and one recipient in To. The examples are fixed (derandomised) so that CI is
reproducible; ``MAILER_PROPERTY_EXAMPLES=2000 pytest tests/test_property.py`` explores fresh ones.
"""

from __future__ import annotations

import datetime as dt
import email.parser
import email.policy
import email.utils
import functools
import io
import json
import os
import tempfile
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mailer import cli
from mailer.compose.message import MessageTemplate

SERIES = {
    "name": "Learning Machines",
    "signature": "The Learning Machines Team",
    "timezone": "Europe/Stockholm",
    "time": '"15:00"',
    "duration": "60",
    "location": "RISE Lund Office",
    "zoom": "https://rise.zoom.us/j/1",
    "info_url": "https://ri.se/lm-sem",
    "sender": "Learning Machines <learning-machines@ri.se>",
    "list": "learning-machines",
    "upcoming": "4",
    "reply_to": "Organisers <lm-org@ri.se>",
    "unsubscribe_url": "https://ri.se/lm-unsub",
    "unsubscribe_email": "lm-unsub@ri.se",
}
SEMINAR = {
    "date": "2024-01-18",
    "speaker": "Serge Belongie",
    "affiliation": "University of Copenhagen",
    "title": "Challenges in Fine-Grained Image Analysis",
    "abstract": "|\n      Some *abstract*.",
    "bio": "|\n      A bio.",
    "time": '"15:00"',
    "duration": "60",
    "location": "Room 1",
    "zoom": "https://rise.zoom.us/j/2",
    "cancelled": "false",
}
FIELDS = [("series", k) for k in SERIES] + [("seminar", k) for k in SEMINAR]

# Fragments an attacker or an unlucky organiser would type, mixed into arbitrary text.
FRAGMENTS = [
    "\r\n", "\n", "\r", "\t", "\x00", "\x1b[2J", "\u2028", "\u202e", "=?utf-8?q?x=0D=0ABcc:_a@b?=",
    "Bcc: x@evil.example",
    ">,<mailto:attacker@evil.example>", "[x](javascript:alert(1))", ")[x](javascript:a)", "<script>", "{{ 7*7 }}",
    "{% raw %}", "&a", "*a", "!!python/object:os.system", ": ", "'", '"', "#", "- ", "[", "{", "ø", "日本", "💥",
    "https://", "@", "<a@b.c>", "02:30", "9999-12-31", "2024-03-31", "x" * 120, "y " * 300,
]  # fmt: skip
TEXT = st.lists(st.one_of(st.text(max_size=20), st.sampled_from(FRAGMENTS)), max_size=6).map("".join)
EXPECTED_HEADERS = {
    "to", "message-id", "list-unsubscribe", "from", "reply-to", "subject", "date", "list-id",
    "list-unsubscribe-post", "precedence", "auto-submitted", "mime-version", "content-type",
}  # fmt: skip


def _value(text: str, style: str, key: str) -> str:
    if style == "quoted":
        return json.dumps(text)  # a YAML double-quoted scalar
    if style == "block" or key in ("abstract", "bio"):
        return "|\n" + "".join(f"      {line}\n" for line in text.split("\n")).rstrip("\n")
    return text  # raw: the text is YAML source, as an organiser might type it


def _schedule(section: str, key: str, value: str) -> str:
    series = {**SERIES, key: value} if section == "series" else SERIES
    seminar = {**SEMINAR, key: value} if section == "seminar" else SEMINAR
    lines = ["series:", *(f"  {k}: {v}" for k, v in series.items()), "seminars:"]
    lines += ["  - " + "\n    ".join(f"{k}: {v}" for k, v in seminar.items())]
    lines += ["  - date: 2024-01-25", "    speaker: Joakim Lindblad"]
    return "\n".join(lines) + "\n"


def _run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = cli.main(list(argv))
    return code, out.getvalue(), err.getvalue()


def _settings(examples: int) -> settings:
    explore = os.environ.get("MAILER_PROPERTY_EXAMPLES")
    return settings(
        max_examples=int(explore) if explore else examples,
        derandomize=not explore,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],  # monkeypatch only sets constant variables
    )


@functools.cache
def _template() -> MessageTemplate:
    """The message of the fuzzed schedule as it stands, built once for the recipients property."""
    from mailer.compose.message import build_announcement
    from mailer.compose.render import render
    from mailer.programme.model import week_of
    from mailer.programme.schedule import load_schedule

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "seminars.yaml"
        path.write_text(_schedule("series", "name", SERIES["name"]))
        schedule = load_schedule(path)
    week = week_of(schedule, dt.date(2024, 1, 15))
    assert week is not None
    now = dt.datetime(2024, 1, 15, 8, tzinfo=dt.UTC)
    return build_announcement(schedule, week, render(schedule, week), now=now, token_key=b"k" * 32)


def _assert_clean_message(eml: bytes) -> None:
    head = eml.split(b"\r\n\r\n", 1)[0]
    for line in head.split(b"\r\n"):
        assert len(line) <= 998, line[:80]
    message = email.parser.BytesParser(policy=email.policy.compat32).parsebytes(eml, headersonly=True)
    names = [name.lower() for name in message]
    assert set(names) == EXPECTED_HEADERS and len(names) == len(set(names)), names
    assert len(email.utils.getaddresses(message.get_all("To", []))) == 1


@_settings(120)
@given(field=st.sampled_from(FIELDS), text=TEXT, style=st.sampled_from(["raw", "quoted", "block"]))
def test_random_text_in_any_schedule_field(monkeypatch, field: tuple[str, str], text: str, style: str) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("MAILER_ENV_FILE", "/nonexistent/.env")
    for name in ("SMTP_HOST", "MAILER_TOKEN_KEY"):
        monkeypatch.delenv(name, raising=False)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        schedule = root / "seminars.yaml"
        schedule.write_text(_schedule(*field, _value(text, style, field[1])), encoding="utf-8", errors="replace")
        (root / "recipients").mkdir()
        (root / "recipients" / "learning-machines.txt").write_text("Ada Lovelace <ada@example.org>\n")
        common = ("--schedule", str(schedule), "--recipients", str(root / "recipients"), "--date", "2024-01-15")
        code, _, err = _run("check", *common, "--templates", str(root / "none"))
        assert code in (0, 2), err
        assert "Traceback" not in err and "internal error" not in err
        if code != 0:
            assert err.startswith("error: ") or err.startswith("warning: "), err
            return
        code, out, err = _run("preview", *common, "--out", str(root / "out"), "--state", str(root / "state"))
        assert code == 0, err  # check passed, so Monday's run renders
        if out.startswith("No "):  # the fuzzed date moved the seminar out of the week
            return
        _assert_clean_message((root / "out" / "announcement.eml").read_bytes())


@_settings(150)
@given(lines=st.lists(TEXT, min_size=1, max_size=4), csv=st.booleans())
def test_random_recipients_lines(monkeypatch, lines: list[str], csv: bool) -> None:  # type: ignore[no-untyped-def]
    from mailer.audience.recipients import read_entries

    monkeypatch.setenv("MAILER_ENV_FILE", "/nonexistent/.env")
    monkeypatch.delenv("SMTP_HOST", raising=False)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        path = folder / ("learning-machines.csv" if csv else "learning-machines.txt")
        body = ("email,name\n" if csv else "") + "\n".join(lines) + "\n"
        path.write_bytes(body.encode("utf-8", "surrogatepass"))
        schedule = _schedule("series", "name", "Learning Machines")
        (folder / "seminars.yaml").write_text(schedule)
        # --date after the programme: check reads the list without rendering weeks.
        code, _, err = _run("check", "--schedule", str(folder / "seminars.yaml"), "--recipients", str(folder),
                            "--date", "2024-06-03")  # fmt: skip
        assert code in (0, 2), err
        assert "Traceback" not in err and "internal error" not in err
        try:
            recipients = [e.recipient for e in read_entries(path) if e.recipient is not None]
        except Exception as exc:  # only an input error may stop the list, never anything else
            from mailer.core.errors import MailerError

            assert isinstance(exc, MailerError), exc
            return
        template = _template()
        for recipient in recipients:
            _assert_clean_message(template.personalise(recipient))
