"""The versions of seminar-mailer compared (this checkout and older commits) and one run of each.

An older commit runs from ``git archive`` with its own data/seminars.yaml: today's programme has keys
it does not know (``announce``), and it would refuse it (exit 2) before sending anything.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from bench.common import DATE, PY, ROOT, SCHEDULE, measure
from bench.servers import Server
from tests.conftest import FUTURE_DATE, FUTURE_NOW, future_schedule

# The last commit before the profile-driven fixes: aiosmtplib's sendmail per message, no pipelining.
BEFORE_COMMIT = "c981ae4fd892dfbcf13e6a7d91a0ab2b8f8f6eab"
# The last commit before ledger v2 (issue 10): group commits every 0.1 s, each synced (synchronous=FULL).
LEDGER_BEFORE_COMMIT = "fcbe067a578003a0ff68e33aae906a2853515120"
# The last commit before issue 20's remaining fixes (one write a message, a commit a tick, the list parsed once).
# It takes today's arguments (the 2030 programme and --now): run with current_args.
ONE_WRITE_BEFORE_COMMIT = "d549c17adcf5cd0d538e5ff5c3c89642bf4e21ec"
POOLS = (4, 8, 16, 32)  # MAILER_CONCURRENCY values tried; 4 is the default
NOW = "now: prepared bytes, pipelined"
LEDGER_NOW, LEDGER_BEFORE = "now", f"before ({LEDGER_BEFORE_COMMIT[:7]})"
LEDGER_VERSIONS = {
    LEDGER_NOW: "a commit per event-loop tick as replies arrive (WAL, synchronous=NORMAL), a synced checkpoint "
    "every 1 s (MAILER_LEDGER_WINDOW)",
    LEDGER_BEFORE: "group commits every 0.1 s, each synced (synchronous=FULL)",
}


def before_tree(work: Path, commit: str = BEFORE_COMMIT) -> Path | None:
    """The mailer package as it was at ``commit`` (git archive) with that commit's own programme
    (data/seminars.yaml, the 2024 week it understands), or None without the history."""
    target = work / f"before-{commit[:7]}"
    if target.exists():
        return target
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", commit, "mailer", "templates", "data/seminars.yaml"],
            capture_output=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as err:
        print(f"WARNING: no before/after comparison: cannot read commit {commit[:7]}: {err}", flush=True)
        return None
    target.mkdir()
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def send_command(
    work: Path,
    port: int,
    *,
    extra: dict[str, str] | None = None,
    dry: bool = False,
    code_from: Path | None = None,
    current_args: bool = False,
    recipients: str = "recipients",
) -> tuple[list[str], dict[str, str]]:
    """The `seminar-mailer send` command line and environment for one run.

    ``code_from``: run the mailer package found there (an older commit), with the input and the
    arguments it understands: its own programme, the 2024 week and no --now (older versions have no
    --now and accept past weeks); with ``current_args`` (a recent commit), the current code's arguments.
    The current code's real sends use the 2030 programme and --now;
    its dry runs keep 2024.
    """
    exe = [PY, "-m", "mailer"] if code_from else [str(ROOT / ".venv/bin/seminar-mailer")]
    if code_from and not current_args:
        when = ["--date", DATE, "--schedule", str(code_from / "data" / "seminars.yaml")]
    elif dry:
        when = ["--date", DATE, "--schedule", str(SCHEDULE)]
    else:
        when = ["--date", FUTURE_DATE, "--now", FUTURE_NOW, "--schedule", str(future_schedule(work))]
    cmd = [
        *exe,
        "send",
        "--yes",
        *when,
        "--recipients",
        str(work / recipients),
        "--state",
        str(work / "state"),
    ] + (["--dry-run"] if dry else [])
    env = {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(port), "SMTP_SECURITY": "none", **(extra or {})}
    if code_from:
        env["PYTHONPATH"] = str(code_from)
    return cmd, env


def ours(
    work: Path,
    port: int,
    n: int,
    *,
    extra: dict[str, str] | None = None,
    dry: bool = False,
    code_from: Path | None = None,
    current_args: bool = False,
) -> tuple[float, int, int]:
    """One whole `seminar-mailer send` process, from an empty state folder; see send_command."""
    wall, code, mib, _ = ours_measured(work, port, extra=extra, dry=dry, code_from=code_from, current_args=current_args)
    return wall, code, mib


def ours_measured(
    work: Path,
    port: int,
    *,
    extra: dict[str, str] | None = None,
    dry: bool = False,
    code_from: Path | None = None,
    current_args: bool = False,
) -> tuple[float, int, int, float]:
    """As ours, and the process's CPU seconds."""
    shutil.rmtree(work / "state", ignore_errors=True)
    cmd, env = send_command(work, port, extra=extra, dry=dry, code_from=code_from, current_args=current_args)
    return measure(cmd, env=env, cwd=work)


def verified_send(
    server: Server, work: Path, n: int, label: str, log: list[str], cpu: list[float] | None = None, **options: object
) -> float:
    """One seminar-mailer run against Postfix, checked at the server: each recipient exactly once.
    Returns messages per second; appends the process's CPU seconds to ``cpu``."""
    server.mark()
    wall, code, _, seconds = ours_measured(work, server.port, **options)  # type: ignore[arg-type]
    if cpu is not None:
        cpu.append(seconds)
    got = server.recipients_since_mark()
    ok = code == 0 and len(got) == n and set(got.values()) == {1}
    log.append(
        f"{label}: exit {code}, {len(got)} distinct recipients, "
        f"{sum(got.values())} messages accepted: {'exactly once' if ok else 'MISMATCH'}"
    )
    if not ok:
        raise SystemExit(f"verification failed: {log[-1]}")
    return n / wall


def preview_message(work: Path) -> Path:
    """The message every tool sends: seminar-mailer's own announcement.eml, as preview writes it."""
    subprocess.run(
        [
            str(ROOT / ".venv/bin/seminar-mailer"),
            "preview",
            "--date",
            DATE,
            "--out",
            str(work / "preview"),
            "--state",
            str(work / "state-preview"),
            "--recipients",
            str(work / "recipients"),
        ],
        check=True,
        capture_output=True,
    )
    return work / "preview" / "announcement.eml"
