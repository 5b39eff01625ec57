"""Stage ledger (issue 10): what the per-reply ledger costs, against the commit before it, at the default pool."""

from __future__ import annotations

import time
from pathlib import Path

from bench.common import stats
from bench.servers import Server, SmtpSink
from bench.versions import ours_measured, verified_send


def ledger_cost(
    work: Path, server: Server, versions: dict[str, dict[str, object]], *, n: int, runs: int, extra: dict[str, str]
) -> dict[str, object]:
    """Throughput of each version against Postfix (checked exactly once) and against smtp-sink.

    The versions alternate their order run by run (A B, B A, ...), so neither always goes first.
    """
    postfix: dict[str, list[float]] = {k: [] for k in versions}
    sink: dict[str, list[float]] = {k: [] for k in versions}
    dry: dict[str, list[float]] = {k: [] for k in versions}  # start-up, planning, the list: all but sending
    # CPU seconds of each process: the send to Postfix, the send to smtp-sink, the dry run
    cpu: dict[str, dict[str, list[float]]] = {k: {"postfix": [], "sink": [], "dry": []} for k in versions}
    verified: list[str] = []
    names = list(versions)
    with SmtpSink(work) as smtp_sink:
        for run in range(runs):
            print(f"ledger: run {run + 1}/{runs}", flush=True)
            for name in names if run % 2 == 0 else names[::-1]:
                options = {**versions[name], "extra": extra}
                label = f"run {run + 1}, {name}"
                postfix[name].append(verified_send(server, work, n, label, verified, cpu[name]["postfix"], **options))
                wall, code, _, seconds = ours_measured(work, smtp_sink.port, **options)  # type: ignore[arg-type]
                if code != 0:
                    raise SystemExit(f"seminar-mailer ({name}) against smtp-sink exited {code}")
                sink[name].append(n / wall)
                cpu[name]["sink"].append(seconds)
                wall, code, _, seconds = ours_measured(work, server.port, dry=True, **versions[name])  # type: ignore[arg-type]
                if code != 0:
                    raise SystemExit(f"seminar-mailer ({name}) dry run exited {code}")
                dry[name].append(wall)
                cpu[name]["dry"].append(seconds)
    now, before = names
    per_message = {
        k: {w: [(c - d) / n * 1e6 for c, d in zip(v[w], v["dry"], strict=True)] for w in ("postfix", "sink")}
        for k, v in cpu.items()
    }
    return {
        "pool": int(extra["MAILER_CONCURRENCY"]),
        "postfix": {k: stats(v) for k, v in postfix.items()},
        "postfix_ratio": stats([a / b for a, b in zip(postfix[now], postfix[before], strict=True)]),
        "postfix_runs": postfix,
        "smtp_sink": {k: stats(v) for k, v in sink.items()},
        "smtp_sink_ratio": stats([a / b for a, b in zip(sink[now], sink[before], strict=True)]),
        "dry_run_wall": {k: stats(v) for k, v in dry.items()},
        # CPU per message of the sending itself: (send's CPU - the same run's dry run's CPU) / n, in µs
        "send_cpu_us_per_message": {k: {w: stats(v) for w, v in per.items()} for k, per in per_message.items()},
        "send_cpu_ratio": {
            w: stats([a / b for a, b in zip(per_message[now][w], per_message[before][w], strict=True)])
            for w in ("postfix", "sink")
        },
        "cpu_seconds": cpu,
        "smtp_sink_counted": smtp_sink.counted(),
        "smtp_sink_expected": n * runs * len(versions),
        "verification": verified,
    }


def ledger_alone(work: Path, n: int = 10_000, runs: int = 3) -> dict[str, dict[str, float]]:
    """The current ledger by itself, in process: CPU microseconds per recorded result when each commit
    holds k results. A send commits once per event-loop tick, so at pool 4 a commit holds one or two
    results; the 100 row is close to what group commits cost (before: a commit every 0.1 s)."""
    from mailer.record.ledger import SENT, Ledger
    from mailer.record.rows import Mark

    cost: dict[str, list[float]] = {}
    for run in range(runs):
        for k in (1, 2, 4, 100):
            ledger = Ledger(work / f"ledger-alone-{run}-{k}", "bench", window=1.0)
            start = time.process_time()
            for i in range(n):
                ledger.mark(Mark("announcement", f"user{i}@example.org", SENT, 1, f"<{i}@bench>", "250 2.0.0 Ok"))
                if (i + 1) % k == 0:
                    ledger.flush()
            ledger.flush()
            cost.setdefault(str(k), []).append((time.process_time() - start) / n * 1e6)
            ledger.close()
    return {k: stats(v) for k, v in cost.items()}
