"""Stage postfix: seminar-mailer at each pool size against mailmerge, an smtplib loop and smtp-source."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from bench.common import BENCH, PY, SENDER, WORK, measure, peak_rss, stats
from bench.servers import Server
from bench.versions import NOW, POOLS, verified_send


def peers(
    work: Path, server: Server, *, n: int, runs: int, variants: dict[str, dict[str, object]], eml: Path, size: int
) -> dict[str, object]:
    """seminar-mailer at each pool size, mailmerge, an smtplib loop and smtp-source, interleaved run by run."""
    mailmerge = ensure_mailmerge()
    template = work / "mailmerge_template.txt"
    lines = eml.read_bytes().decode().split("\r\n")
    template.write_text(
        "\n".join(
            ["TO: {{email}}", f"FROM: {SENDER}"] + [line for line in lines if not line.startswith(("To: ", "From: "))]
        )
    )
    (work / "mailmerge_database.csv").write_text("email\n" + "".join(f"user{i}@example.org\n" for i in range(n)))
    throughput: dict[str, list[float]] = {
        k: [] for k in ("seminar-mailer", "seminar-mailer, default pool", "mailmerge", "smtplib", "smtp-source")
    }
    pools: dict[int, list[float]] = {p: [] for p in POOLS}
    postfix_variants: dict[str, list[float]] = {k: [] for k in variants if k != NOW}
    # Variants that take today's arguments (a recent commit) also run at the default pool, against smtp-source.
    default_pool: dict[str, list[float]] = {k: [] for k in postfix_variants if variants[k].get("current_args")}
    default_pool_ratios: dict[str, list[float]] = {k: [] for k in default_pool}
    source_sessions: dict[int, list[float]] = {s: [] for s in (1, 2, 4, 8, 16, 32)}  # as POOLS, and fewer
    ratios: dict[str, list[float]] = {
        "vs mailmerge": [],
        "vs smtplib": [],
        "vs smtp-source": [],
        "default pool vs smtp-source": [],
    }
    verified: list[str] = []
    for run in range(runs):
        print(f"run {run + 1}/{runs}", flush=True)
        for pool in POOLS:
            pools[pool].append(
                verified_send(
                    server, work, n, f"run {run + 1}, pool {pool}", verified, extra={"MAILER_CONCURRENCY": str(pool)}
                )
            )
        throughput["seminar-mailer"].append(max(pools[p][-1] for p in POOLS))
        throughput["seminar-mailer, default pool"].append(pools[4][-1])
        for name in postfix_variants:
            options = dict(variants[name])
            options["extra"] = {**options.get("extra", {}), "MAILER_CONCURRENCY": "8"}  # type: ignore[dict-item]
            label = f"run {run + 1}, {name}, pool 8"
            postfix_variants[name].append(verified_send(server, work, n, label, verified, **options))  # type: ignore[arg-type]
        for name in default_pool:
            label = f"run {run + 1}, {name}, pool 4"
            options = {**variants[name], "extra": {"MAILER_CONCURRENCY": "4"}}
            default_pool[name].append(verified_send(server, work, n, label, verified, **options))  # type: ignore[arg-type]

        mm_conf = work / "mailmerge_server.conf"
        mm_conf.write_text(f"[smtp_server]\nhost = 127.0.0.1\nport = {server.port}\nsecurity = Never\nratelimit = 0\n")
        wall, code, _ = peak_rss(
            [
                str(mailmerge),
                "--no-dry-run",
                "--no-limit",
                "--output-format",
                "raw",
                "--template",
                str(template),
                "--database",
                str(work / "mailmerge_database.csv"),
                "--config",
                str(mm_conf),
            ],
            env={},
            cwd=work,
        )
        assert code == 0, "mailmerge failed"
        throughput["mailmerge"].append(n / wall)
        server.drain()

        wall, code, _ = peak_rss(
            [PY, str(BENCH / "peers" / "smtplib_loop.py"), "127.0.0.1", str(server.port), str(eml), str(n)],
            env={},
            cwd=work,
        )
        assert code == 0, "smtplib loop failed"
        throughput["smtplib"].append(n / wall)
        server.drain()

        best = 0.0
        for sessions in source_sessions:
            rate = smtp_source(work, server.port, sessions=sessions, n=n, size=size)
            source_sessions[sessions].append(rate)
            best = max(best, rate)
            server.drain()
        throughput["smtp-source"].append(best)
        ratios["vs mailmerge"].append(throughput["seminar-mailer"][-1] / throughput["mailmerge"][-1])
        ratios["vs smtplib"].append(throughput["seminar-mailer"][-1] / throughput["smtplib"][-1])
        ratios["vs smtp-source"].append(throughput["seminar-mailer"][-1] / best)
        ratios["default pool vs smtp-source"].append(pools[4][-1] / best)
        for name in default_pool:
            default_pool_ratios[name].append(default_pool[name][-1] / best)

    return {
        "throughput": {k: stats(v) for k, v in throughput.items()},
        "smtp_source_sessions": {str(k): stats(v) for k, v in source_sessions.items()},
        "pools": {str(k): stats(v) for k, v in pools.items()},
        "postfix_variants": {
            f"{NOW}, pool 8": stats(pools[8]),
            **{f"{k}, pool 8": stats(v) for k, v in postfix_variants.items()},
        },
        "ratios": {k: stats(v) for k, v in ratios.items()},
        "default_pool_variants": {k: stats(v) for k, v in default_pool.items()},
        "default_pool_variants_vs_smtp_source": {k: stats(v) for k, v in default_pool_ratios.items()},
        "verification": verified,
    }


def smtp_source(work: Path, port: int, *, sessions: int, n: int, size: int, cpu: list[float] | None = None) -> float:
    """Messages per second of Postfix's C load generator: ``sessions`` reused sessions (-d), ``n`` messages;
    appends its own CPU seconds to ``cpu``."""
    wall, code, _, seconds = measure(
        [
            "/usr/sbin/smtp-source",
            "-d",
            "-s",
            str(sessions),
            "-m",
            str(n),
            "-l",
            str(size),
            "-f",
            SENDER,
            "-t",
            "user@example.org",
            f"127.0.0.1:{port}",
        ],
        env={},
        cwd=work,
    )
    assert code == 0, "smtp-source failed"
    if cpu is not None:
        cpu.append(seconds)
    return n / wall


def ensure_mailmerge() -> Path:
    venv = WORK / "mailmerge-venv"
    exe = venv / "bin" / "mailmerge"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "mailmerge==2.3.0"], check=True)
    return exe
