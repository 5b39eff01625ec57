"""From a fresh copy of the project to a running weekly job, as the README says, with nothing borrowed.

One fresh copy of the project (the files git would commit), its wheel, and a fresh virtual
environment in the copy's .venv holding that wheel alone: then the README's own cron and systemd
lines, extracted from the README, run against it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT, VALID
from tests.smtp_server import PASSWORD, Server, start_server

ISO_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d .")
FUTURE = VALID.replace("2024-01-18", "2031-03-06").replace("2024-01-25", "2031-03-13")  # a Thursday, then the next
FUTURE_MONDAY = "2031-03-03"


@dataclass
class Deployment:
    project: Path  # a fresh copy, with .venv holding the wheel
    wheel: Path
    venv: Path
    build_output: str  # what `pip wheel` and `pip install` printed, both quiet (-q)

    def command(self) -> Path:
        return self.venv / "bin" / "seminar-mailer"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment less anything that could point back at the checkout or configure a send."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("MAILER_", "SMTP_", "PYTHON", "VIRTUAL_ENV"))}
    return {**keep, **extra}


def copy_project(target: Path) -> None:
    """The files git would commit (tracked, and new ones not ignored), symlinks kept as links."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the work tree
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name, follow_symlinks=False)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Deployment:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("LOUD SKIP: not a git checkout, so there is no list of the project's files to copy")
    base = tmp_path_factory.mktemp("deployment")
    project = base / "seminar-mailer"
    copy_project(project)
    dist = base / "dist"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(project)],
        cwd=base,
        env=clean_env(),
        check=True,
        capture_output=True,
        text=True,
    )
    shutil.rmtree(project / "build", ignore_errors=True)
    for leftover in project.glob("*.egg-info"):
        shutil.rmtree(leftover)
    (wheel,) = dist.glob("seminar_mailer-*.whl")
    venv = project / ".venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    installed = subprocess.run(
        [venv / "bin" / "pip", "install", "-q", str(wheel)],
        cwd=base,
        env=clean_env(),
        check=True,
        capture_output=True,
        text=True,
    )
    output = built.stdout + built.stderr + installed.stdout + installed.stderr
    return Deployment(project, wheel, venv, output)


def run(args: list[str | Path], *, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env or clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_the_wheel_carries_the_templates(deployment: Deployment) -> None:
    names = zipfile.ZipFile(deployment.wheel).namelist()
    shipped = sorted(n.removeprefix("mailer/templates/") for n in names if n.startswith("mailer/templates/"))
    assert shipped == sorted(p.name for p in (ROOT / "templates" / "email").glob("*.j2"))
    site = sorted(n.removeprefix("mailer/site/templates/") for n in names if n.startswith("mailer/site/templates/"))
    assert site == sorted(p.name for p in (ROOT / "templates" / "site").glob("*.j2"))
    assert not [n for n in names if n.startswith("templates/")]


def test_the_build_and_the_install_print_no_warning(deployment: Deployment) -> None:
    """A quiet build stays quiet: setuptools' 40-line "Package 'mailer.templates' is absent from the
    `packages` configuration" warning read as a broken install."""
    assert "absent from the" not in deployment.build_output
    assert "Warning" not in deployment.build_output, deployment.build_output


def test_the_editable_install_of_make_setup_prints_no_warning(tmp_path: Path) -> None:
    """`make setup` installs the checkout editable, with a current pip (which shows the build's warnings
    even with -q): quiet too, and the installed mailer is the checkout's."""
    checkout = tmp_path / "checkout"
    copy_project(checkout)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--upgrade-deps", str(venv)], check=True, capture_output=True)
    installed = run([venv / "bin" / "pip", "install", "-q", "--no-deps", "-e", checkout], cwd=checkout)
    assert installed.returncode == 0, installed.stderr
    output = installed.stdout + installed.stderr
    assert "absent from the" not in output and "Warning" not in output, output
    found = run([venv / "bin" / "python", "-c", "import mailer; print(mailer.__file__)"], cwd=tmp_path)
    assert Path(found.stdout.strip()) == checkout / "mailer" / "__init__.py", found.stdout


def test_installed_wheel_works_from_an_unrelated_folder(deployment: Deployment, tmp_path: Path) -> None:
    """pip install, init, then check, preview and a dry-run send, none of it near the checkout."""
    exe = deployment.command()
    where = run([deployment.venv / "bin" / "python", "-c", "import mailer; print(mailer.__file__)"], cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(deployment.venv), where.stdout

    created = run([exe, "init", "physics-colloquium", "--date", "2031-03-01"], cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    project = tmp_path / "physics-colloquium"
    (project / "recipients" / "physics-colloquium.txt").write_text("Ada <ada@example.org>\nbob@example.org\n")
    inside = project / "recipients"  # a sub-folder: the project root is found upwards

    check = run([exe, "check"], cwd=inside)
    assert check.returncode == 0, check.stderr
    assert "OK, 1 seminar of Physics Colloquium" in check.stdout and "built-in templates: OK" in check.stdout

    preview = run([exe, "preview", "--date", "2031-03-06"], cwd=inside)
    assert preview.returncode == 0, preview.stderr
    assert preview.stdout.startswith("Subject: Physics Colloquium seminar 2031-03-06 15:00")
    assert (project / "preview" / "announcement.html").read_text().startswith("<!doctype html>")
    assert (project / "state" / "token.key").exists() and not (inside / "state").exists()

    dry = run([exe, "send", "--dry-run", "--date", "2031-03-06"], cwd=inside)
    assert dry.returncode == 0, dry.stderr
    assert "Would send to 2 recipients" in dry.stdout

    schema = run([exe, "schema"], cwd=tmp_path)
    assert json.loads(schema.stdout) == json.loads((project / "data" / "seminars.schema.json").read_text())

    site = tmp_path / "site"  # the website, from the wheel's own site templates
    published = run([exe, "publish", "--out", site, "--date", "2031-03-02"], cwd=inside)
    assert published.returncode == 0, published.stderr
    assert "<h1" in (site / "index.html").read_text() and len(list(site.glob("2031-03-06-*.html"))) == 1


def readme_block(language: str, first_line: str) -> str:
    """The documentation's (README.md and the manual in docs/) fenced ``language`` block starting ``first_line``."""
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    text = "\n".join(page.read_text(encoding="utf-8") for page in pages)
    blocks = re.findall(rf"```{language}\n(.*?)```", text, re.S)
    found = [b for b in blocks if b.startswith(first_line)]
    assert len(found) == 1, f"no single ```{language} block starting {first_line!r} in README.md and docs/"
    return found[0]


def cron_jobs(crontab: str) -> list[str]:
    """The commands of a crontab's job lines (not comments, not VAR=value lines)."""
    lines = [line for line in crontab.splitlines() if line and not line.startswith("#") and "=" not in line.split()[0]]
    return [line.split(maxsplit=5)[5] for line in lines]


def readme_cron_commands() -> list[str]:
    return cron_jobs(readme_block("cron", "# m h dom mon dow"))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = start_server(tmp_path)
    yield srv
    srv.controller.stop()


def test_readme_cron_line_sends_once_on_a_fresh_deployment(
    deployment: Deployment, server: Server, tmp_path: Path
) -> None:
    project = deployment.project
    (project / "data" / "seminars.yaml").write_text(FUTURE, encoding="utf-8")
    addresses = ["ada@example.org", "bob@example.org", "cy@example.org"]
    (project / "recipients" / "learning-machines.txt").write_text("\n".join(addresses) + "\n")
    (project / ".env").write_text("".join(f"{k}={v}\n" for k, v in server.env().items()))
    assert not (project / "state").exists(), "not a fresh deployment"
    (line,) = (c.replace("/srv/seminar-mailer", str(project)) for c in readme_cron_commands())
    first = retry = line  # the same line again 15 minutes later
    home = tmp_path / "home"
    home.mkdir()
    # What cron gives a job: HOME, a short PATH, /bin/sh; MAILER_DATE stands in for next Monday.
    cron_env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "SHELL": "/bin/sh", "LOGNAME": "organiser"}
    cron_env["MAILER_DATE"] = FUTURE_MONDAY

    ran = run(["/bin/sh", "-c", first], cwd=home, env=cron_env)
    assert ran.returncode == 0, (ran.stdout, ran.stderr)
    assert ran.stdout == ran.stderr == ""  # everything went to the log
    assert server.recorder.count() == Counter(addresses)
    log = (project / "state" / "send.log").read_text()
    assert "sent now           3" in log
    lines = log.splitlines()
    assert lines and all(ISO_LINE.match(line) for line in lines), log

    again = run(["/bin/sh", "-c", retry], cwd=home, env=cron_env)
    assert again.returncode == 0, again.stderr
    assert server.recorder.count() == Counter(addresses)  # the next run sends nothing twice
    log = (project / "state" / "send.log").read_text()
    assert "already sent to 3 recipients" in log and all(ISO_LINE.match(line) for line in log.splitlines())
    for path in (project / "state").rglob("*"):  # the log and everything else the runs wrote
        assert not path.is_file() or PASSWORD.encode() not in path.read_bytes(), path


def test_readme_systemd_units_are_valid_and_run_unprivileged(deployment: Deployment, tmp_path: Path) -> None:
    service, timer = readme_block("ini", "# seminar-mailer.service").split("# seminar-mailer.timer\n")
    settings = dict(line.split("=", 1) for line in service.splitlines() if "=" in line and not line.startswith("#"))
    assert settings.get("User") not in (None, "", "root", "0"), "the service would run as root"
    assert settings["ExecStart"].split()[0] == f"{settings['WorkingDirectory']}/.venv/bin/seminar-mailer"
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("LOUD SKIP: no systemd-analyze to verify the units with")
    units = tmp_path / "units"
    units.mkdir()
    for name, text in (("seminar-mailer.service", service), ("seminar-mailer.timer", timer)):
        (units / name).write_text(text.replace("/srv/seminar-mailer", str(deployment.project)))
    verified = run([analyze, "verify", *(str(p) for p in sorted(units.iterdir()))], cwd=units)
    problems = [line for line in verified.stderr.splitlines() if "seminar-mailer" in line and "User" not in line]
    assert verified.returncode == 0 and problems == [], verified.stderr
