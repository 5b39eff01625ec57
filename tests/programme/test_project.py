"""The project root, its default paths, and init: commands work from any sub-folder of a project."""

from __future__ import annotations

import json
import re
from pathlib import Path

from mailer.programme.schema import MODELINE, json_schema
from tests.conftest import ROOT, VALID, run_cli
from tests.deliver.test_config import cli
from tests.test_deployment import cron_jobs, readme_cron_commands


def make_project(folder: Path) -> Path:
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "seminars.yaml").write_text(VALID, encoding="utf-8")
    (folder / "recipients").mkdir()
    (folder / "recipients" / "learning-machines.txt").write_text("Ada <ada@example.org>\n")
    return folder


def test_init_creates_a_project_that_check_accepts_at_once(tmp_path: Path) -> None:
    result = run_cli("init", "my-seminar", "--date", "2031-03-01", cwd=tmp_path)
    assert result.code == 0, result.err
    project = tmp_path / "my-seminar"
    schedule = (project / "data" / "seminars.yaml").read_text()
    assert schedule.splitlines()[0] == MODELINE
    assert "date: 2031-03-06" in schedule  # Thursday of the week after --date
    assert json.loads((project / "data" / "seminars.schema.json").read_text()) == json_schema()
    assert (project / "recipients" / "my-seminar.txt").exists()
    assert "SMTP_HOST=" in (project / ".env.example").read_text()
    assert {"state/", ".env"} <= set((project / ".gitignore").read_text().splitlines())
    assert "cd my-seminar" in result.out and "crontab" in result.out

    check = run_cli("check", cwd=project)
    assert check.code == 0, check.err
    assert check.out.splitlines() == [
        "data/seminars.yaml: OK, 1 seminar of My Seminar",
        "recipients/my-seminar.txt: OK, 0 recipients",
        "built-in templates: OK, rendered 1 week",
    ]


def test_init_never_overwrites(tmp_path: Path) -> None:
    assert run_cli("init", "--date", "2031-03-01", cwd=tmp_path).code == 0
    before = (tmp_path / "data" / "seminars.yaml").read_text()
    again = run_cli("init", "--date", "2031-04-01", cwd=tmp_path)
    assert again.code == 2 and f"{tmp_path / 'data' / 'seminars.yaml'} already exists" in again.err
    assert (tmp_path / "data" / "seminars.yaml").read_text() == before


def test_init_writes_the_readme_cron_lines_for_its_folder(tmp_path: Path) -> None:
    assert run_cli("init", "--date", "2031-03-01", cwd=tmp_path).code == 0
    crontab = (tmp_path / "crontab.example").read_text()
    jobs = cron_jobs(crontab)
    command = jobs[0].split(" && ")[2].split(" send")[0]  # this installation's seminar-mailer
    assert Path(command.split()[0]).exists()
    readme = [
        c.replace("/srv/seminar-mailer", str(tmp_path)).replace(".venv/bin/seminar-mailer", command)
        for c in readme_cron_commands()
    ]
    assert jobs == readme


def test_commands_find_the_root_from_a_sub_folder_and_write_nothing_there(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    deep = project / "notes" / "drafts"
    deep.mkdir(parents=True)
    check = run_cli("check", cwd=deep)
    assert check.code == 0, check.err
    assert check.out.startswith(f"{project / 'data' / 'seminars.yaml'}: OK")  # the real path, not data/...
    preview = run_cli("preview", "--date", "2024-01-15", cwd=deep)
    assert preview.code == 0, preview.err
    assert (project / "preview" / "announcement.eml").exists() and (project / "state" / "token.key").exists()
    assert f"Wrote {project / 'preview' / 'announcement.html'}" in preview.err
    assert list(deep.iterdir()) == []


def test_outside_a_project_commands_say_so_and_create_nothing(tmp_path: Path) -> None:
    result = run_cli("preview", "--date", "2024-01-15", cwd=tmp_path)
    assert result.code == 2
    assert f"no seminar-mailer project here: no data/seminars.yaml in {tmp_path} or any folder above" in result.err
    assert list(tmp_path.iterdir()) == []


def test_options_and_environment_win_over_the_project(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    other = tmp_path / "other.yaml"
    other.write_text(VALID.replace("Serge Belongie", "Grace Hopper"))
    by_option = run_cli("preview", "--date", "2024-01-15", "--schedule", str(other), "--out", "here", cwd=project)
    assert by_option.code == 0 and "Grace Hopper" in by_option.out and (project / "here").is_dir()
    by_env = run_cli("preview", "--date", "2024-01-15", cwd=project, env={"MAILER_SCHEDULE": str(other)})
    assert by_env.code == 0 and "Grace Hopper" in by_env.out


def test_the_env_file_is_read_from_the_project_root(tmp_path: Path) -> None:
    project = make_project(tmp_path / "p")
    (project / ".env").write_text("SMTP_HOST=smtp.ri.se\nSMTP_SECURITY=bogus\n")
    (project / "sub").mkdir()
    result = run_cli("send", "--dry-run", "--date", "2024-01-15", cwd=project / "sub")
    # A dry run refuses what a real send refuses, at the line of the root's .env it came from.
    assert result.code == 2 and f"error: {project / '.env'}:2: SMTP_SECURITY='bogus'" in result.err


def starter(tmp_path: Path) -> Path:
    assert run_cli("init", "my-seminar", "--date", "2031-03-01", cwd=tmp_path).code == 0
    return tmp_path / "my-seminar"


def test_the_starter_env_file_uncomments_cleanly_line_by_line(tmp_path: Path) -> None:
    """Each commented setting of .env.example, uncommented alone, gives a .env that check reads (issue 20)."""
    project = starter(tmp_path)
    example = (project / ".env.example").read_text().splitlines(keepends=True)
    untouched = cli(project, "check")
    assert untouched.code == 0, untouched.err  # no .env yet: nothing to refuse
    (project / ".env").write_text("".join(example))
    as_copied = cli(project, "check")
    host = next(n for n, line in enumerate(example, 1) if line.startswith("SMTP_HOST="))
    password = next(n for n, line in enumerate(example, 1) if line.startswith("SMTP_PASSWORD="))
    assert as_copied.code == 2
    assert [line.split(" is ")[0] for line in as_copied.err.splitlines() if line.startswith("error: ")] == [
        f"error: .env:{host}: SMTP_HOST=smtp.example.org",
        f"error: .env:{password}: SMTP_PASSWORD=",
    ]  # the placeholders, each at its line, and nothing else
    filled = [
        {"SMTP_HOST=smtp.example.org\n": "SMTP_HOST=127.0.0.1\n", "SMTP_USERNAME=\n": "SMTP_USERNAME=ada\n",
         "SMTP_PASSWORD=\n": "SMTP_PASSWORD=pa$$ #word\n"}.get(line, line)
        for line in example
    ]  # fmt: skip
    commented = [n for n, line in enumerate(filled) if re.match(r"# [A-Z][A-Z0-9_]*=", line)]
    assert len(commented) >= 2
    for n in commented:  # its comment stands on its own line above it, never after the value
        assert re.fullmatch(r"# [A-Z][A-Z0-9_]*=\S*\n", filled[n]), f".env.example:{n + 1}: {filled[n]!r}"
    for n in commented:
        lines = [*filled]
        lines[n] = lines[n].removeprefix("# ")
        (project / ".env").write_text("".join(lines))
        result = cli(project, "check")
        errors = [line for line in result.err.splitlines() if line.startswith("error: ")]
        if result.code == 2 and len(errors) == 1 and ("is a placeholder" in errors[0] or " is empty; " in errors[0]):
            assert errors[0].startswith(f"error: .env:{n + 1}: "), errors  # an example value, named at its line
            continue
        if filled[n].startswith("# BOUNCES_IMAP_") and len(errors) == 1 and "not set; wanted the bounce" in errors[0]:
            continue  # the IMAP login goes together: alone, one of its lines gets the group's clear error
        assert result.code == 0, f"uncommenting .env:{n + 1} {filled[n]!r}: {result.err}"
        assert "SMTP settings: OK" in result.out


def test_init_inside_a_project_refuses_to_nest_another(tmp_path: Path) -> None:
    project = starter(tmp_path)
    (project / "notes").mkdir()
    for cwd, target in ((project / "notes", "."), (project, "talks"), (project / "notes", "deeper/x")):
        result = run_cli("init", target, "--date", "2031-03-01", cwd=cwd)
        assert result.code == 2, result.out
        assert f"is inside the seminar-mailer project {project}" in result.err
        assert not (cwd / target / "data").exists()
    beside = run_cli("init", "../other", "--date", "2031-03-01", cwd=project)
    assert beside.code == 0, beside.err


def test_crontab_example_follows_the_series_zone_wherever_it_moves(tmp_path: Path) -> None:
    """No CRON_TZ to go stale: the job runs every 15 minutes and send reads the zone from the series."""
    project = starter(tmp_path)
    crontab = (project / "crontab.example").read_text()
    assert not [line for line in crontab.splitlines() if line.startswith("CRON_TZ")]
    schedule = project / "data" / "seminars.yaml"
    zone = re.search(r"timezone: (\S+)", schedule.read_text())[1]
    schedule.write_text(schedule.read_text().replace(f"timezone: {zone}", "timezone: Pacific/Auckland"))
    assert cli(project, "check").code == 0
    jobs = [line.split()[:5] for line in crontab.splitlines() if line and not line.startswith("#")]
    assert jobs == [["*/15", "*", "*", "*", "*"]]


def test_checkout_is_itself_a_project() -> None:
    assert run_cli("check", cwd=ROOT / "tests").code == 0
