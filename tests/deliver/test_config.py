"""Settings: one loader (python-dotenv) for every command, errors at .env:LINE, the one table and its page.

Every test runs the real command in a project folder with a real .env file; none patches the loader.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mailer.deliver.config import SETTINGS, environment_page, load_env
from tests.conftest import ROOT, VALID, Result


def project(folder: Path, env_file: str | None = None) -> Path:
    """A project with the test series, an empty list and, when given, this .env."""
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "seminars.yaml").write_text(VALID, encoding="utf-8")
    (folder / "recipients").mkdir()
    (folder / "recipients" / "learning-machines.txt").write_text("ada@example.org\n")
    if env_file is not None:
        (folder / ".env").write_text(env_file, encoding="utf-8")
    return folder


def cli(folder: Path, *args: str, **env: str) -> Result:
    """The real command in ``folder``, from an environment holding no SMTP_/MAILER_/BOUNCES_ setting but ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SMTP_", "MAILER_", "BOUNCES_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "mailer", *args],
        cwd=folder,
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def errors(result: Result) -> list[str]:
    return [line for line in result.err.splitlines() if line.startswith("error: ")]


def test_the_environment_page_is_generated_from_the_table() -> None:
    page = (ROOT / "docs" / "environment.md").read_text(encoding="utf-8")
    assert page == environment_page(), (
        "docs/environment.md is stale: python -m mailer.deliver.config > docs/environment.md"
    )
    for setting in SETTINGS:
        assert f"| `{setting.name}` | {setting.default} | {setting.meaning} |" in page


def test_every_setting_the_code_reads_is_in_the_table() -> None:
    read = set()
    for path in (ROOT / "mailer").glob("*.py"):
        read |= set(re.findall(r"\b((?:SMTP|MAILER|BOUNCES)_[A-Z0-9_]*[A-Z0-9])\b", path.read_text(encoding="utf-8")))
    missing = read - {s.name for s in SETTINGS}
    assert missing == set(), (
        f"settings read by mailer/ but not in SETTINGS (mailer/deliver/config.py): {sorted(missing)}"
    )
    assert len({s.name for s in SETTINGS}) == len(SETTINGS)


def test_dotenv_comments_quotes_export_and_inline_comments(tmp_path: Path) -> None:
    folder = project(
        tmp_path / "p",
        "# the test server\n"
        'export SMTP_HOST="127.0.0.1"\n'
        "SMTP_PORT=8025  # test server\n"
        "SMTP_SECURITY='none'        # plaintext: only to this machine\n"
        "\n"
        "MAILER_CONCURRENCY = 2\n",
    )
    result = cli(folder, "check")
    assert result.code == 0, result.err
    # "none" is the security setting, said in words (it was "OK, none to 127.0.0.1:8025").
    assert "SMTP settings: OK, no TLS (plaintext, allowed only to this machine) to 127.0.0.1:8025" in result.out


def test_a_value_is_taken_literally_dollar_and_hash_included(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("SMTP_PASSWORD='pa$$word#1'\nSMTP_USERNAME=ada$HOME\n", encoding="utf-8")
    env = load_env(path, {})
    assert env["SMTP_PASSWORD"] == "pa$$word#1" and env["SMTP_USERNAME"] == "ada$HOME"
    assert env.where("SMTP_PASSWORD") == f"{path}:1"


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    path = tmp_path / ".env"
    path.write_text("SMTP_PORT=2525\nSMTP_HOST=a.invalid\n", encoding="utf-8")
    env = load_env(path, {"SMTP_PORT": "587"})
    assert env["SMTP_PORT"] == "587" and env["SMTP_HOST"] == "a.invalid"
    assert env.where("SMTP_PORT") is None and env.where("SMTP_HOST") == f"{path}:2"


def test_a_line_that_is_not_key_value_is_an_error_at_its_line(tmp_path: Path) -> None:
    folder = project(tmp_path / "p", "# SMTP\nSMTP_HOST=127.0.0.1\nSMTP_PORT 8025\n")
    result = cli(folder, "check")
    assert result.code == 2 and "Traceback" not in result.err
    assert errors(result) == ["error: .env:3:1: not a KEY=value line; wanted e.g. SMTP_HOST=smtp.example.org"]


@pytest.mark.parametrize(
    ("line", "guess"),
    [("SMTP_PASS=secret", "SMTP_PASSWORD"), ("MAILER_CONCURENCY=2", "MAILER_CONCURRENCY"),
     ("BOUNCES_IMAP_USER=ada", "BOUNCES_IMAP_USERNAME")],
)  # fmt: skip
def test_an_unknown_key_in_env_file_is_an_error_with_a_did_you_mean(tmp_path: Path, line: str, guess: str) -> None:
    folder = project(tmp_path / "p", f"SMTP_HOST=127.0.0.1\n{line}\n")
    for command in ("check", "status"):
        result = cli(folder, command)
        assert result.code == 2, result.err
        name = line.split("=")[0]
        assert errors(result) == [f"error: .env:2: {name} is not a setting seminar-mailer knows; did you mean {guess}?"]
        assert "secret" not in result.err


def test_an_unknown_key_in_the_environment_is_a_warning_of_check(tmp_path: Path) -> None:
    result = cli(project(tmp_path / "p"), "check", SMTP_PASS="secret-canary")
    assert result.code == 0, result.err
    assert (
        "warning: in the environment: SMTP_PASS is not a setting seminar-mailer knows; did you mean SMTP_PASSWORD?"
        in (result.err)
    )
    assert "secret-canary" not in result.err + result.out


def test_a_bad_value_from_env_file_names_its_line_and_one_from_the_environment_does_not(tmp_path: Path) -> None:
    folder = project(tmp_path / "p", "SMTP_HOST=127.0.0.1\n# the pool\nMAILER_CONCURRENCY=0\n")
    from_file = cli(folder, "check")
    assert from_file.code == 2
    assert errors(from_file) == ["error: .env:3: MAILER_CONCURRENCY='0' is too small; wanted a number from 1 to 256"]
    from_environment = cli(folder, "check", MAILER_CONCURRENCY="x")
    assert errors(from_environment) == [
        "error: MAILER_CONCURRENCY='x' is not a number; wanted e.g. MAILER_CONCURRENCY=4"
    ]


def test_check_refuses_the_starter_placeholders_at_their_lines(tmp_path: Path) -> None:
    folder = project(tmp_path / "p", "SMTP_HOST=smtp.example.org\nSMTP_USERNAME=ada\nSMTP_PASSWORD=\n")
    result = cli(folder, "check")
    assert result.code == 2
    assert "SMTP settings: OK" not in result.out
    assert errors(result) == [
        "error: .env:1: SMTP_HOST=smtp.example.org is a placeholder (example.org is never a real server); "
        "wanted your server's name",
        "error: .env:3: SMTP_PASSWORD= is empty; wanted the password, or no SMTP_PASSWORD line (and no username) "
        "for no login",
    ]
    filled = cli(folder, "check", SMTP_HOST="127.0.0.1", SMTP_PORT="25", SMTP_PASSWORD="x", SMTP_SECURITY="tls")
    assert filled.code == 0, filled.err


def test_environment_settings_choose_the_paths_too(tmp_path: Path) -> None:
    """MAILER_STATE in .env is read by the same loader as the SMTP settings (it was the environment only)."""
    folder = project(tmp_path / "p", "MAILER_STATE=elsewhere\n")
    result = cli(folder, "preview", "--date", "2024-01-15")
    assert result.code == 0, result.err
    assert (folder / "elsewhere" / "token.key").exists() and not (folder / "state").exists()
