"""Stage startup: the process start of --help and preview, and render, build and personalise in process."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

from bench.common import DATE, ROOT, SCHEDULE, peak_rss, stats


def startup(work: Path, *, runs: int) -> dict[str, dict[str, float]]:
    exe = str(ROOT / ".venv/bin/seminar-mailer")
    timings: dict[str, list[float]] = {"--help": [], "preview": []}
    for _ in range(runs):
        timings["--help"].append(peak_rss([exe, "--help"], env={}, cwd=work)[0])
        timings["preview"].append(
            peak_rss(
                [
                    exe,
                    "preview",
                    "--date",
                    DATE,
                    "--schedule",
                    str(SCHEDULE),
                    "--out",
                    str(work / "p"),
                    "--state",
                    str(work / "sp"),
                    "--recipients",
                    str(work / "recipients"),
                ],
                env={},
                cwd=work,
            )[0]
        )
    return {k: stats(v) for k, v in timings.items()}


def in_process() -> dict[str, dict[str, float]]:
    from mailer.compose.message import build_announcement
    from mailer.compose.render import render
    from mailer.core.address import Address
    from mailer.programme.model import week_of
    from mailer.programme.schedule import load_schedule

    schedule = load_schedule(SCHEDULE)
    week = week_of(schedule, dt.date.fromisoformat(DATE))
    assert week is not None
    render(schedule, week)  # warm: imports and template compilation are start-up, measured above
    renders, builds, personalise = [], [], []
    for _ in range(7):
        t = time.perf_counter()
        rendered = render(schedule, week)
        renders.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        template = build_announcement(schedule, week, rendered, now=dt.datetime.now(dt.UTC), token_key=b"k" * 32)
        builds.append((time.perf_counter() - t) * 1000)
        people = [Address(f"User {i}", f"user{i}@example.org") for i in range(10_000)]
        t = time.perf_counter()
        for person in people:
            template.personalise(person)
        personalise.append((time.perf_counter() - t) * 1000 / len(people))
    return {"render_ms": stats(renders), "build_message_ms": stats(builds), "personalise_ms": stats(personalise)}
