"""Stage kill (issue 10): what one kill -9 at a random moment duplicates, now and before."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

from bench.common import make_recipients, peak_rss, stats
from bench.servers import Server
from bench.versions import send_command


def kill_trials(
    work: Path,
    server: Server,
    versions: dict[str, dict[str, object]],
    *,
    n: int,
    kills: int,
    rng: random.Random,
    extra: dict[str, str],
) -> dict[str, object]:
    """For each version, ``kills`` trials of one kill -9 each: send to ``n`` from an empty state folder,
    kill -9 once a random number of messages (10% to 90% of n) has reached Postfix, rerun to completion,
    and count the copies each recipient got (Postfix's log). A trial's duplicates are that kill's."""
    make_recipients(work / "kill-recipients", n)
    trials: dict[str, list[dict[str, object]]] = {k: [] for k in versions}
    names = list(versions)
    for i in range(kills):
        print(f"kill -9: trial {i + 1}/{kills}", flush=True)
        for name in names if i % 2 == 0 else names[::-1]:
            target = rng.randint(n // 10, n * 9 // 10)
            delay = rng.uniform(0, 0.05)  # the log lags a little; a random extra wait lands anywhere in a tick
            options = {**versions[name], "extra": extra}
            trials[name].append(kill_trial(work, server, n, target, delay, **options))  # type: ignore[arg-type]
            print(f"  {name}: {trials[name][-1]}", flush=True)
    summary: dict[str, object] = {"n": n, "kills": kills, "pool": int(extra["MAILER_CONCURRENCY"])}
    for name, runs in trials.items():
        dups = [float(t["duplicates"]) for t in runs if t["killed"]]  # type: ignore[arg-type]
        summary[name] = {
            "duplicates_per_kill": stats(dups) if dups else None,
            "lost": sum(int(t["lost"]) for t in runs),  # type: ignore[call-overload]
            "trials": runs,
        }
    return summary


def kill_trial(
    work: Path,
    server: Server,
    n: int,
    target: int,
    delay: float,
    *,
    extra: dict[str, str],
    code_from: Path | None = None,
) -> dict[str, object]:
    shutil.rmtree(work / "state", ignore_errors=True)
    cmd, env = send_command(work, server.port, extra=extra, code_from=code_from, recipients="kill-recipients")
    server.drain()
    server.mark()
    with (work / "kill-stderr.txt").open("wb") as err:
        proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=work, stdout=subprocess.DEVNULL, stderr=err)
    queued = server.queued_since_mark()
    deadline = time.monotonic() + 300
    while proc.poll() is None and next(queued) < target and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(delay)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    server.drain()
    at_kill = next(queued)
    _, code, _ = peak_rss(cmd, env=env, cwd=work)  # the rerun, to completion
    got = server.recipients_since_mark()
    return {
        "killed": killed,
        "target": target,
        "queued_when_killed": at_kill,
        "rerun_exit": code,
        "distinct": len(got),
        "messages": sum(got.values()),
        "duplicates": sum(got.values()) - len(got),
        "most_copies": max(got.values(), default=0),
        "lost": n - len(got),
    }
