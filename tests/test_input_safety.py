"""Issue 11, case by case: every hostile or unlucky input gets exit 2 at file:line (or the variable's
name) and no traceback; a bug gets one line and exit 70; preview never writes through a link."""

from __future__ import annotations

import io
import os
import stat
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from mailer import cli
from mailer.core.errors import EXIT_SOFTWARE
from tests.conftest import SCHEDULE, VALID, run_cli

# The VALID fixture, by line: 7 zoom, 8 info_url, 9 sender, 11 upcoming, 13 first date, 14 its speaker,
# 15 affiliation, 16 title, 19 second date, 20 its speaker.
UNSUB = "  upcoming: 4\n"


def _after_upcoming(line: str) -> tuple[str, str]:
    return UNSUB, UNSUB + line + "\n"


# (id, replace this, with this, line of the error, words the message must hold)
SCHEDULE_CASES = [
    ("self-referencing anchor", "series:\n", "loop: &a [*a]\nseries:\n", 1, "a loop"),
    ("500-deep nesting", "seminars:\n", "deep: " + "[" * 500 + "]" * 500 + "\nseminars:\n", 12, "nested more than"),
    ("year 9999", "date: 2024-01-18", "date: 9999-01-18", 13, "wanted a year from 1970 to 2999"),
    ("year 0001", "date: 2024-01-25", "date: 0001-01-25", 19, "wanted a year from 1970 to 2999"),
    ("non-ASCII sender", "<learning-machines@ri.se>", "<lärning@ri.se>", 9, "non-ASCII letters before the @"),
    ("non-ASCII reply_to", *_after_upcoming("  reply_to: Örg <örg@ri.se>"), 12, "non-ASCII letters before the @"),
    (
        "time that does not exist",
        "date: 2024-01-18\n",
        'date: 2024-03-31\n    time: "02:30"\n',
        14,
        'the clocks jump from 02:00 to 03:00 that night; wanted a time outside the gap, the nearest being "01:59"',
    ),
    (
        "series time that does not exist on a date",
        "date: 2024-01-25",
        "date: 2024-03-31\n    time: '02:00'",
        20,
        "does not exist in Europe/Stockholm",
    ),
    (
        "unsubscribe_url adding a URI",
        *_after_upcoming("  unsubscribe_url: https://ri.se/u?x=>,<mailto:attacker@evil.example"),
        12,
        "could end the link early in a header",
    ),
    ("unsubscribe_url over http", *_after_upcoming("  unsubscribe_url: http://ri.se/u"), 12, "requires https"),
    ("unsubscribe_url with a fragment", *_after_upcoming("  unsubscribe_url: https://ri.se/u#x"), 12, "#fragment"),
    (
        "zoom URL breaking out of a Markdown link",
        "zoom: https://rise.zoom.us/j/1",
        "zoom: https://rise.zoom.us/j/1)[x](javascript:alert(1))",
        7,
        "'['",
    ),
    ("URL with a user name", "info_url: https://ri.se/lm-sem", "info_url: https://ri.se@evil.example/", 8, "user name"),
    (
        "unquoted colon in a value",
        "title: Challenges in",
        "title: Challenges: in",
        16,
        'wanted the value in quotes: title: "Challenges: in Fine-Grained Image Analysis"',
    ),
    (
        "quote closed on a later line",
        "affiliation: University of Copenhagen",
        'affiliation: "University of Copenhagen\n    note: "x" y',
        15,
        "is not closed on its line",
    ),
    ("unterminated quote", "speaker: Joakim Lindblad", 'speaker: "Joakim Lindblad', 20, 'this " is never closed'),
    ("apostrophe in single quotes", "title: Challenges in", "title: 'Ada's Challenges in", 16, "write an apostrophe"),
    # Issue 20: an indented key was advised quotes, and following the advice gave '"\\"University ...\\""'.
    (
        "key indented two spaces too far",
        "    affiliation: University",
        "      affiliation: University",
        15,
        "15:7: 'affiliation:' is indented more than 'speaker:' on line 14, so YAML reads it as more of the value "
        "of 'speaker'; wanted 'affiliation:' in the same column as 'speaker:' (column 5)",
    ),
    (
        "key indented too far, its value quoted",
        "    affiliation: University of Copenhagen",
        '      affiliation: "University of Copenhagen"',
        15,
        "'affiliation:' is indented more than 'speaker:' on line 14",
    ),
    (
        "key indented too far after a comment",
        "Serge Belongie\n",
        "Serge Belongie  # the speaker\n  ",
        15,
        "15:7: 'affiliation:' is indented more than 'speaker:' on line 14; wanted 'affiliation:' in the same column",
    ),
    (
        "key indented one space too little",
        "    affiliation: University",
        "   affiliation: University",
        15,
        "15:4: 'affiliation:' is indented less than 'speaker:' on line 14; wanted 'affiliation:' in the same column",
    ),
]


@pytest.mark.parametrize(
    ("old", "new", "line", "words"), [c[1:] for c in SCHEDULE_CASES], ids=[c[0] for c in SCHEDULE_CASES]
)
def test_schedule_case_exits_2_at_its_line(write_schedule, old: str, new: str, line: int, words: str) -> None:
    assert old in VALID
    path = write_schedule(VALID.replace(old, new, 1))
    result = run_cli("check", "--schedule", str(path), "--date", "2024-01-15")
    assert result.code == 2, result
    assert "Traceback" not in result.err and "internal error" not in result.err
    wanted = [e for e in result.err.splitlines() if e.startswith(f"error: {path}:{line}:") and words in e]
    assert wanted, f"expected line {line} with {words!r}, got:\n{result.err}"


# (id, variable, value, words)
ENVIRONMENT_CASES = [
    ("port out of range", "SMTP_PORT", "99999", "too large; wanted a number from 1 to 65535"),
    ("newline in the host", "SMTP_HOST", "smtp.example.org\nRCPT TO:<evil@example.net>", "not a host name"),
    ("timeout not a number", "MAILER_TIMEOUT", "nan", "not a finite number"),
    ("infinite ledger window", "MAILER_LEDGER_WINDOW", "inf", "not a finite number"),
    ("no connections", "MAILER_CONCURRENCY", "0", "too small; wanted a number from 1 to 256"),
    ("CRLF in the bounce address", "MAILER_ENVELOPE_FROM", "b@ri.se\r\nRCPT TO:<evil@example.net>", "plain address"),
    ("name in the bounce address", "MAILER_ENVELOPE_FROM", "Bounces <b@ri.se>", "plain address"),
]


@pytest.mark.parametrize(
    ("name", "value", "words"), [c[1:] for c in ENVIRONMENT_CASES], ids=[c[0] for c in ENVIRONMENT_CASES]
)
def test_environment_case_exits_2_naming_the_variable(tmp_path: Path, name: str, value: str, words: str) -> None:
    env = {"MAILER_ENV_FILE": str(tmp_path / "none.env"), "SMTP_HOST": "smtp.example.org", name: value}
    result = run_cli("check", "--schedule", str(SCHEDULE), "--date", "2024-01-15", env=env)
    assert result.code == 2, result
    assert "Traceback" not in result.err
    errors = [e for e in result.err.splitlines() if e.startswith("error: ")]
    assert len(errors) == 1 and f"{name}=" in errors[0] and words in errors[0], result.err
    assert "\r" not in result.err and "RCPT TO:<evil@example.net>\n" not in result.err


def test_valid_environment_passes_check(tmp_path: Path) -> None:
    env = {"MAILER_ENV_FILE": str(tmp_path / "none.env"), "SMTP_HOST": "smtp.bücher.example", "SMTP_PORT": "2525"}
    result = run_cli("check", "--schedule", str(SCHEDULE), "--date", "2024-01-15", env=env)
    assert result.code == 0, result.err
    assert "SMTP settings: OK, starttls to smtp.xn--bcher-kva.example:2525" in result.out


# (id, file name, content, line, words)
RECIPIENTS_CASES = [
    ("escape sequence in a line", "learning-machines.txt", "ada@example.org\nbob@example.org\x1b[2J\n", 2, "\\x1b"),
    ("two addresses on a line", "learning-machines.txt", "Ada <ada@example.org>, Bob <bob@example.org>\n", 1, "valid"),
    ("line separator in a line", "learning-machines.txt", "a@example.org\u2028Bcc: x@example.net\n", 1, "valid"),
    ("stray CR in a line", "learning-machines.txt", "x@example.org\n a@example.org\rBcc: b@example.net\n", 2, "valid"),
    ("not UTF-8", "learning-machines.txt", "ada@example.org\nbj\xf6rn@example.org\n", 2, "not valid UTF-8"),
    ("newline in a CSV name", "learning-machines.csv", 'email,name\nada@example.org,"Ada\nBcc: x@y.z"\n', 2, "valid"),
    (
        "unclosed CSV quote swallowing rows",
        "learning-machines.csv",
        'email,name\nada@example.org,"Ada\nbob@example.org,Bob\n',
        2,
        "valid",
    ),
    ("stray CR in a CSV row", "learning-machines.csv", 'email,name\nada@example.org,A"d\ra\n', 2, "plain name"),
    ("NUL in a CSV row", "learning-machines.csv", "email,name\nada@example.org,A\x00da\n", 2, "valid"),
    ("CSV field over the limit", "learning-machines.csv", "email,name\na@example.org," + "x" * 200_000, 2, "limit"),
]


@pytest.mark.parametrize(
    ("name", "content", "line", "words"), [c[1:] for c in RECIPIENTS_CASES], ids=[c[0] for c in RECIPIENTS_CASES]
)
def test_recipients_case_exits_2_at_its_line(tmp_path: Path, name: str, content: str, line: int, words: str) -> None:
    folder = tmp_path / "recipients"
    folder.mkdir()
    data = content.encode("latin-1") if "UTF-8" in words else content.encode()
    (folder / name).write_bytes(data)
    result = run_cli(
        "check", "--schedule", str(SCHEDULE), "--date", "2024-01-15", "--recipients", str(folder),
        env={"MAILER_ENV_FILE": str(tmp_path / "none.env")},
    )  # fmt: skip
    assert result.code == 2, result
    assert "Traceback" not in result.err
    assert "\x1b" not in result.err and "\u2028" not in result.err and "\r" not in result.err
    wanted = [e for e in result.err.splitlines() if e.startswith(f"error: {folder / name}:{line}:") and words in e]
    assert wanted, f"expected line {line} with {words!r}, got:\n{result.err}"


# (id, template file, content, line, words)
TEMPLATE_CASES = [
    ("expression that fails", "subject.txt.j2", "Seminar\n{{ 1 / 0 }}\n", 2, "ZeroDivisionError"),
    ("undefined name", "announcement.txt.j2", "Hello\n\n{{ speakers }}\n", 3, "'speakers' is undefined"),
    ("syntax error", "page.md.j2", "{% if x %}\n", 1, "template syntax error"),
    ("control character in the subject", "subject.txt.j2", "Seminar \x1b[2J\n", 0, "control character"),
]


@pytest.mark.parametrize(
    ("name", "content", "line", "words"), [c[1:] for c in TEMPLATE_CASES], ids=[c[0] for c in TEMPLATE_CASES]
)
def test_template_case_exits_2_at_its_line(tmp_path: Path, name: str, content: str, line: int, words: str) -> None:
    (tmp_path / name).write_text(content)
    result = run_cli("check", "--schedule", str(SCHEDULE), "--date", "2024-01-15", "--templates", str(tmp_path))
    assert result.code == 2, result
    assert "Traceback" not in result.err
    where = f"{tmp_path / name}:{line}" if line else name  # 0: the output, not a line, is at fault
    wanted = [e for e in result.err.splitlines() if e.startswith(f"error: {where}") and words in e]
    assert wanted, f"expected line {line} with {words!r}, got:\n{result.err}"


def test_a_broken_followup_template_fails_check_when_the_series_sends_followups(tmp_path: Path) -> None:
    """`check` renders the follow-up too (series followup: true, a seminar with slides), so its template's
    mistake shows before the talk, not in the first run after it."""
    schedule = tmp_path / "seminars.yaml"
    text = SCHEDULE.read_text().replace("series:\n", "series:\n  followup: true\n", 1)
    schedule.write_text(
        text.replace("  - date: 2024-01-18\n", "  - date: 2024-01-18\n    slides: https://ri.se/s.pdf\n", 1)
    )
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "followup.txt.j2").write_text("Slides\n{{ slidez }}\n")
    result = run_cli("check", "--schedule", str(schedule), "--date", "2024-01-15", "--templates", str(tmp_path / "t"))
    assert result.code == 2 and f"error: {tmp_path / 't' / 'followup.txt.j2'}:2: 'slidez' is undefined" in result.err
    assert "Traceback" not in result.err


def test_bad_date_option_out_of_range_is_an_input_error() -> None:
    result = run_cli("preview", "--date", "9999-12-31")
    assert result.code == 2 and "--date '9999-12-31' is in the year 9999" in result.err
    assert "Traceback" not in result.err


def test_a_bug_prints_one_line_and_exits_70_with_the_traceback_in_a_private_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forcing a bug needs a command that raises: the only patch here, of our own dispatch table."""

    def broken(args: object) -> int:
        raise RuntimeError("an invariant broke")

    monkeypatch.setitem(cli._COMMANDS, "preview", broken)
    err = io.StringIO()
    with redirect_stdout(io.StringIO()), redirect_stderr(err):
        code = cli.main(["preview", "--state", str(tmp_path / "state")])
    assert code == EXIT_SOFTWARE == 70
    lines = err.getvalue().splitlines()
    assert len(lines) == 1 and "a bug in seminar-mailer" in lines[0] and "Traceback" not in lines[0]
    report = Path(lines[0].split("the full traceback is in ")[1].split(": please")[0])
    assert report.parent == tmp_path / "state"
    assert stat.S_IMODE(report.stat().st_mode) == 0o600
    text = report.read_text()
    assert "Traceback" in text and "RuntimeError: an invariant broke" in text
    assert "command: seminar-mailer preview" in text


def test_preview_never_writes_through_a_symlink(tmp_path: Path) -> None:
    out, outside = tmp_path / "out", tmp_path / "precious.txt"
    out.mkdir()
    outside.write_text("keep me")
    (out / "announcement.txt").symlink_to(outside)
    (out / "announcement.html").symlink_to(tmp_path / "created-outside.html")  # dangling: must not be created
    result = run_cli("preview", "--date", "2024-01-15", "--out", str(out), "--state", str(tmp_path / "s"))
    assert result.code == 0, result.err
    assert outside.read_text() == "keep me"
    assert not (tmp_path / "created-outside.html").exists()
    assert not (out / "announcement.txt").is_symlink() and "Serge Belongie" in (out / "announcement.txt").read_text()
    assert sorted(os.listdir(out)) == [
        "2024-01-18-challenges-in-fine-grained-image-analysis.md",
        "announcement.eml",
        "announcement.html",
        "announcement.txt",
    ]


def test_terminal_output_escapes_control_characters_from_templates(tmp_path: Path) -> None:
    (tmp_path / "announcement.txt.j2").write_text("Seminar \x1b[31mred\x1b[0m \u202egnp.exe\n")
    result = run_cli(
        "preview", "--date", "2024-01-15", "--templates", str(tmp_path), "--out", str(tmp_path / "o"),
        "--state", str(tmp_path / "s"),
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "\x1b" not in result.out and "\u202e" not in result.out
    assert "Seminar \\x1b[31mred\\x1b[0m \\u202egnp.exe" in result.out


def test_summary_escapes_what_the_server_replied(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from mailer.core.address import Address
    from mailer.deliver.send import Outcome
    from mailer.programme.schedule import load_schedule
    from mailer.run.report import print_result
    from mailer.run.request import MessageReport, Result

    outcome = Outcome(sent=0, failed=[(Address("", "a@example.org"), "550 \x1b[2J\x1b]0;owned\x07 no such user")])
    message = MessageReport("announcement", "k", "Seminar \x1b[31m", 1, outcome=outcome)
    schedule = load_schedule(SCHEDULE)
    print_result(Result(schedule, None, False, [message], {}, [], [], tmp_path))
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "failed: a@example.org: 550 \\x1b[2J\\x1b]0;owned\\x07 no such user" in out
