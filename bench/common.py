"""What every stage shares: the paths, the week sent, running one process and measuring it, medians."""

from __future__ import annotations

import datetime as dt
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
WORK = BENCH / ".work"
PY = sys.executable
# Preview, dry runs and the older versions (before trees) use the shipped 2024 week. A real send of
# the current code refuses a week that is over, so it sends the same programme moved to 2030, with
# the clock passed in (--now), as the tests do (tests/conftest.py).
DATE = "2024-01-15"
SCHEDULE = ROOT / "data" / "seminars.yaml"
SENDER = "learning-machines@ri.se"


def peak_rss(cmd: list[str], *, env: dict[str, str], cwd: Path) -> tuple[float, int, int]:
    """Run a command (output discarded); return (wall seconds, exit code, its own peak RSS in MiB)."""
    wall, code, mib, _ = measure(cmd, env=env, cwd=cwd)
    return wall, code, mib


def measure(cmd: list[str], *, env: dict[str, str], cwd: Path) -> tuple[float, int, int, float]:
    """As peak_rss, and the process's own CPU seconds (user + system): on a machine shared with other
    work the wall time depends on the others, the CPU a process needs much less."""
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # child: wait4 below reads this process's own rusage, not a max over all children
        try:
            os.chdir(cwd)
            fd = os.open(os.devnull, os.O_WRONLY)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            os.execve(cmd[0], cmd, child_env(env))
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    return wall, os.waitstatus_to_exitcode(status), usage.ru_maxrss // 1024, usage.ru_utime + usage.ru_stime


def child_env(env: dict[str, str]) -> dict[str, str]:
    """The environment of a measured command: ours with ``env`` over it, bytecode written as an install has it.

    pip compiles a wheel's modules when it installs it, so a user's every run loads them compiled. Where
    PYTHONDONTWRITEBYTECODE is set (this workplace sets it), a checkout's modules would be compiled from source
    at every measured start instead (about 0.1 s of the start here): a cost no user pays. The first run of
    each version writes its bytecode, and the runs after it load it."""
    merged = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return {**merged, **env}


def machine_cpu() -> tuple[float, float]:
    """The whole machine's CPU seconds so far, (busy, idle), from /proc/stat: what a run cost every process,
    the server's and the kernel's included, when read before and after it."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + fields[4]  # idle and iowait
    # user, nice, system, irq and softirq; not steal (a shared host's other guests ran then, not ours), nor guest
    # time (already counted in user)
    return (sum(fields[:7]) - idle) / tick, idle / tick


def stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def make_recipients(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "learning-machines.txt").open("w") as handle:
        handle.writelines(f"user{i}@example.org\n" for i in range(n))


def header(n: int, runs: int) -> dict[str, object]:
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "n": n,
        "runs": runs,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
