"""The real entry points: python -m mailer and the console script, their output and exit codes."""

from __future__ import annotations

import datetime as dt
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mailer import __version__
from mailer.core.address import Address
from tests.conftest import REFERENCE_PAGE, ROOT, SCHEDULE, VALID, run_cli


def test_version_and_help_on_every_command() -> None:
    result = run_cli("--version")
    assert result.code == 0 and result.out.strip() == f"seminar-mailer {__version__}"
    for command in ("check", "preview"):
        result = run_cli(command, "--help")
        assert result.code == 0 and "--schedule" in result.out, command


def test_console_script_is_installed() -> None:
    beside = Path(sys.executable).parent / "seminar-mailer"
    exe = str(beside) if beside.exists() else shutil.which("seminar-mailer")
    if exe is None:
        pytest.skip("LOUD SKIP: the seminar-mailer console script is not on PATH (package not installed?)")
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0 and __version__ in proc.stdout


def test_preview_writes_the_files_and_prints_subject_and_text(tmp_path: Path) -> None:
    result = run_cli("preview", "--date", "2024-01-15", "--out", str(tmp_path))
    assert result.code == 0, result.err
    golden = REFERENCE_PAGE.read_text()
    body = golden.split("---\n", 2)[2]
    assert result.out.startswith("Subject: Learning Machines seminar 2024-01-18 15:00 CET: Serge Belongie")
    assert result.out.endswith(body)
    assert (tmp_path / "announcement.txt").read_text() == body
    assert (tmp_path / "2024-01-18-challenges-in-fine-grained-image-analysis.md").read_text() == golden
    assert (tmp_path / "announcement.html").read_text().startswith("<!doctype html>")
    # The console stays clean: no cssutils warnings, only our one summary line.
    assert [line for line in result.err.splitlines() if not line.startswith("Wrote ")] == []


def test_preview_of_an_empty_week_says_so_and_writes_nothing(tmp_path: Path) -> None:
    result = run_cli("preview", "--date", "2024-01-29", "--out", str(tmp_path / "p"))
    assert result.code == 0
    assert "No Learning Machines seminar in the week of 2024-01-29 to 2024-02-04" in result.out
    assert not (tmp_path / "p").exists()


def test_options_come_from_the_environment(tmp_path: Path) -> None:
    schedule = tmp_path / "s.yaml"
    schedule.write_text(VALID.replace("Serge Belongie", "Ada Lovelace"))
    result = run_cli(
        "preview", "--date", "2024-01-15", "--out", str(tmp_path / "o"), env={"MAILER_SCHEDULE": str(schedule)}
    )
    assert result.code == 0 and "Ada Lovelace" in result.out


def test_bad_date_option_is_an_input_error() -> None:
    result = run_cli("preview", "--date", "2024-13-01")
    assert result.code == 2 and "--date '2024-13-01' is not a date" in result.err
    assert "Traceback" not in result.err


def test_check_ok_on_shipped_data() -> None:
    result = run_cli("check", "--schedule", str(SCHEDULE))
    assert result.code == 0 and "OK, 5 seminars" in result.out


def test_runs_from_another_directory(tmp_path: Path) -> None:
    """Built-in templates are found in the package, not the working directory (the installed wheel's
    case is tests/test_deployment.py)."""
    result = run_cli(
        "preview",
        "--date",
        "2024-01-15",
        "--schedule",
        str(SCHEDULE),
        "--templates",
        str(tmp_path / "none"),
        "--out",
        str(tmp_path / "o"),
        "--recipients",
        str(ROOT / "recipients"),
        "--state",
        str(tmp_path / "state"),
        cwd=tmp_path,
    )
    assert result.code == 0, result.err
    assert result.out.startswith("Subject: Learning Machines seminar 2024-01-18")
    assert (tmp_path / "o" / "announcement.html").read_text().startswith("<!doctype html>")


def test_preview_eml_is_exactly_the_message_for_the_first_subscriber(tmp_path: Path) -> None:
    """Rebuilt with the .eml's own Date as the clock, the message is identical byte for byte."""
    import email.utils

    from mailer.compose.message import build_announcement
    from mailer.compose.render import render
    from mailer.deliver.config import token_key
    from mailer.programme.model import week_of
    from mailer.programme.schedule import load_schedule

    result = run_cli("preview", "--date", "2024-01-15", "--out", str(tmp_path / "o"), "--state", str(tmp_path / "s"))
    assert result.code == 0, result.err
    eml = (tmp_path / "o" / "announcement.eml").read_bytes()
    date = next(line for line in eml.split(b"\r\n") if line.startswith(b"Date: "))[6:].decode()
    schedule = load_schedule(SCHEDULE)
    week = week_of(schedule, dt.date(2024, 1, 15))
    assert week is not None
    template = build_announcement(
        schedule,
        week,
        render(schedule, week),
        now=email.utils.parsedate_to_datetime(date),
        token_key=token_key(tmp_path / "s", {}),
    )
    assert eml == template.personalise(Address("Ada Lovelace", "ada@example.org"))


def test_bare_command_prints_help_with_examples() -> None:
    result = run_cli()
    assert result.code == 0 and result.err == ""
    assert "usage: seminar-mailer" in result.out and "examples:" in result.out
    for command in ("init", "check", "preview", "send", "status", "schema"):
        assert f"    {command} " in result.out, command
        help_text = run_cli(command, "--help")
        assert help_text.code == 0 and f"seminar-mailer {command}" in help_text.out.split("examples:")[1], command


def test_options_before_or_after_the_command(tmp_path: Path) -> None:
    schedule = tmp_path / "s.yaml"
    schedule.write_text(VALID.replace("Serge Belongie", "Ada Lovelace"))
    out = str(tmp_path / "o")
    before = run_cli("--schedule", str(schedule), "--date", "2024-01-15", "preview", "--out", out)
    after = run_cli("preview", "--schedule", str(schedule), "--date", "2024-01-15", "--out", out)
    assert before.code == after.code == 0, before.err + after.err
    assert "Ada Lovelace" in before.out and before.out == after.out


def test_mistyped_command_or_option_gets_a_suggestion() -> None:
    command = run_cli("sned", "--dry-run")
    assert command.code == 2 and "unknown command 'sned'; did you mean 'send'?" in command.err
    option = run_cli("send", "--dryrun")
    assert option.code == 2 and "did you mean '--dry-run'?" in option.err
    nothing_close = run_cli("frobnicate")
    assert nothing_close.code == 2
    commands = "init, check, preview, send, status, unsuppress, approve, rename-list, login,"
    assert f"wanted one of: {commands}" in nothing_close.err


def test_check_renders_your_templates_and_names_the_template_line(tmp_path: Path) -> None:
    templates = tmp_path / "mine"
    templates.mkdir()
    (templates / "subject.txt.j2").write_text("Seminar\n{{ series.nmae }}\n")
    result = run_cli("check", "--templates", str(templates), cwd=ROOT)
    assert result.code == 2
    assert f"error: {templates / 'subject.txt.j2'}:2: " in result.err and "nmae" in result.err
    assert "Traceback" not in result.err
    (templates / "subject.txt.j2").write_text("{{ series.name }} {{ seminars[0].speaker }}\n")
    fixed = run_cli("check", "--templates", str(templates), cwd=ROOT)
    assert fixed.code == 0 and f"{templates}: OK, rendered 5 weeks" in fixed.out
    missing = run_cli("check", "--templates", str(tmp_path / "nope"), cwd=ROOT)
    assert missing.code == 2 and f"{tmp_path / 'nope'}: no such template folder" in missing.err


def test_open_says_when_no_browser_could_be_opened(tmp_path: Path) -> None:
    args = ("preview", "--date", "2024-01-15", "--out", str(tmp_path / "o"), "--open")
    env = {"DISPLAY": "", "WAYLAND_DISPLAY": ""}
    failed = run_cli(*args, env={**env, "BROWSER": "false"})
    assert failed.code == 0
    assert "no web browser could be opened" in failed.err
    assert (tmp_path / "o" / "announcement.html").as_uri() in failed.err
    opened = run_cli(*args, env={**env, "BROWSER": "true"})
    assert opened.code == 0 and "no web browser" not in opened.err


def test_bad_mailer_date_names_the_variable() -> None:
    result = run_cli("preview", env={"MAILER_DATE": "next monday"})
    assert result.code == 2 and "MAILER_DATE='next monday' is not a date" in result.err


@pytest.mark.parametrize(
    "command",
    [["status"], ["subscribers"], ["bounces", "--maildir", "MAILDIR"]],
    ids=["status", "subscribers", "bounces"],
)
def test_a_closed_output_pipe_ends_quietly_without_a_crash_file(tmp_path: Path, command: list[str]) -> None:
    """`seminar-mailer status | head -1`: the reader is gone before the command writes (issue 23 #10)."""
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "maildir" / sub).mkdir(parents=True)
    state = tmp_path / "state"
    command = [str(tmp_path / "maildir") if word == "MAILDIR" else word for word in command]
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailer", "--recipients", str(ROOT / "recipients"), *command, "--state", str(state)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # as head does after its line: every write of the command now meets a closed pipe
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=120) == 141, err  # 128 + SIGPIPE, as git and grep end
    assert err == ""
    assert not list(tmp_path.rglob("crash-*")) and not list(Path(tempfile.gettempdir()).glob(f"crash-*-{proc.pid}.txt"))


def test_dry_run_refuses_what_a_real_send_refuses(tmp_path: Path) -> None:
    args = ("send", "--dry-run", "--date", "2024-01-15", "--state", str(tmp_path / "state"))
    no_server = run_cli(*args, env={"MAILER_ENV_FILE": str(tmp_path / "none.env"), "SMTP_HOST": ""})
    assert no_server.code == 0, no_server.err  # the demo: no SMTP_HOST is a warning only
    assert "SMTP_HOST is not set" in no_server.err and "a real send would stop here" in no_server.err
    bad = run_cli(
        *args, env={"MAILER_ENV_FILE": str(tmp_path / "none.env"), "SMTP_HOST": "", "MAILER_CONCURRENCY": "0"}
    )
    assert bad.code == 2 and "MAILER_CONCURRENCY='0' is too small" in bad.err
    (tmp_path / "file").write_text("")
    state_file = run_cli("send", "--dry-run", "--date", "2024-01-15", "--state", str(tmp_path / "file"))
    assert state_file.code == 2 and f"--state {tmp_path / 'file'} is a file; wanted the state folder" in state_file.err


# --- issue 20: the first hour of a newcomer --------------------------------------------------------


def test_did_you_mean_offers_only_options_the_command_takes() -> None:
    """`publish --recipients` was answered "did you mean '--recipients'?", an option publish refuses."""
    other = run_cli("publish", "--recipients", "r", "--out", "site")
    assert other.code == 2 and "did you mean" not in other.err
    assert "seminar-mailer publish: error: unrecognized arguments: --recipients r; publish takes no --recipients " in (
        other.err
    )
    assert "(an option of check, preview, send, status, unsuppress, subscribe, unsubscribe, subscribers)" in other.err
    close = run_cli("send", "--prune")  # --dry-run is close in spelling, but --prune is publish's
    assert close.code == 2 and "send takes no --prune (an option of publish)" in close.err
    typo = run_cli("publish", "--prnue", "--out", "site")
    assert typo.code == 2 and "did you mean '--prune'?" in typo.err
    bare = run_cli("--dryrun")
    assert bare.code == 2 and "did you mean 'send --dry-run'?" in bare.err
    choice = run_cli("login", "microsft")
    assert choice.code == 2 and "unknown provider 'microsft'; did you mean 'microsoft'?" in choice.err


def starter_project(tmp_path: Path, name: str = "physics") -> Path:
    """A project as `init` makes it (seminar on 2030-01-24, list empty); return its folder."""
    created = run_cli("init", name, "--date", "2030-01-14", cwd=tmp_path)
    assert created.code == 0, created.err
    return tmp_path / name


def test_dry_run_on_the_starter_project_says_the_list_has_nobody(tmp_path: Path) -> None:
    project = starter_project(tmp_path)
    args = ("send", "--dry-run", "--date", "2030-01-21")
    empty = run_cli(*args, cwd=project, env={"JOURNAL_STREAM": "1"})
    assert empty.code == 0, empty.err
    assert "already sent" not in empty.out
    assert "Nothing to do: nobody is on the list yet: recipients/physics.txt holds no address." in empty.out
    (project / "recipients" / "physics.txt").write_text("not an address\n")
    unusable = run_cli(*args, cwd=project, env={"JOURNAL_STREAM": "1"})
    assert unusable.code == 0, unusable.err
    assert "Nothing to do: nobody on recipients/physics.txt can receive it" in unusable.out


def test_counts_of_one_are_singular(tmp_path: Path) -> None:
    project = starter_project(tmp_path)
    (project / "recipients" / "physics.txt").write_text("ada@example.org\n")
    dry = run_cli("send", "--dry-run", "--date", "2030-01-21", cwd=project, env={"JOURNAL_STREAM": "1"})
    assert dry.code == 0 and "  Would send to 1 recipient.\n" in dry.out, dry


def test_status_hint_after_a_send_works_where_the_send_ran(tmp_path: Path) -> None:
    """From a sub-folder of a project whose path has a space, and outside any project: the printed
    status command, run where send ran, lists the refused address."""
    from tests.smtp_server import start_server

    server = start_server(tmp_path)
    try:
        server.recorder.rcpt_replies["gone@example.org"] = ["550 5.1.1 no such user"] * 3
        project = starter_project(tmp_path, "my seminar")
        (project / "recipients" / "my-seminar.txt").write_text("ada@example.org\ngone@example.org\n")
        inside = project / "notes"
        inside.mkdir()
        outside = tmp_path / "elsewhere"
        outside.mkdir()
        when = ("--date", "2030-01-21", "--now", "2030-01-21T09:00")
        paths = ("--schedule", "../my seminar/data/seminars.yaml", "--recipients", "../my seminar/recipients")
        for cwd, more in ((inside, ()), (outside, (*paths, "--state", "state"))):
            sent = run_cli("send", *when, *more, cwd=cwd, env={**server.env(), "JOURNAL_STREAM": "1"})
            assert sent.code == 1, sent.out + sent.err  # one recipient failed permanently
            (hint,) = re.findall(r"failed permanently 1  \(suppressed: (.*)\)\n", sent.out)
            words = shlex.split(hint)
            assert words[:2] == ["seminar-mailer", "status"], hint
            if cwd == inside:
                assert words == ["seminar-mailer", "status"]  # the project is found from here
            status = run_cli(*words[1:], cwd=cwd)
            assert status.code == 0, (hint, status.err)
            assert "gone@example.org: 550 5.1.1 no such user" in status.out, (hint, status.out)
    finally:
        server.controller.stop()
