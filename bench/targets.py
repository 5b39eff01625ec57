"""The two throughput targets of issue 20, alone and quickly (about 5 minutes): seminar-mailer at its default pool
against smtp-source at 4 sessions on smtp-sink, and against smtp-source at its best session count on Postfix;
optionally an older commit beside it, all interleaved run by run, ratios pair by pair.

    .venv/bin/python bench/targets.py [--n 10000] [--runs 5] [--before COMMIT]

Prints a Markdown table and writes bench/.work/targets.json (never the committed results). Every run against
Postfix is checked in its log: each recipient exactly once.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import WORK, machine_cpu, make_recipients, stats
from bench.postfix import smtp_source
from bench.servers import Server, SmtpSink
from bench.versions import ours_measured, preview_message, verified_send

SESSIONS = (4, 8, 16)  # smtp-source's best on Postfix is among these (bench/results/latest.md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--before", help="an older commit to measure beside the current code (git archive)")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="targets-", dir=WORK))
    try:
        make_recipients(work / "recipients", args.n)
        size = len(preview_message(work).read_bytes())
        versions: dict[str, dict[str, object]] = {"now": {}}
        if args.before:
            versions[args.before[:7]] = {"code_from": _archive(work, args.before), "current_args": True}
        results: dict[str, Any] = {"n": args.n, "runs": args.runs, "sink": _sink(work, args, versions, size)}
        results["postfix"] = _postfix(work, args, versions, size)
        (WORK / "targets.json").write_text(json.dumps(results, indent=1) + "\n")
        _table(results, versions)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _archive(work: Path, commit: str) -> Path:
    import subprocess

    tree = work / f"tree-{commit[:7]}"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", commit], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def _sink(work: Path, args: argparse.Namespace, versions: dict[str, dict[str, object]], size: int) -> dict[str, Any]:
    rates: dict[str, list[float]] = {v: [] for v in versions}
    cpu: dict[str, list[float]] = {v: [] for v in versions}
    source: list[float] = []
    ratios: dict[str, list[float]] = {v: [] for v in versions}
    with SmtpSink(work) as sink:
        for _ in range(args.runs):
            for label, options in versions.items():
                wall, code, _, seconds = ours_measured(work, sink.port, **options)  # type: ignore[arg-type]
                if code != 0:
                    raise SystemExit(f"seminar-mailer ({label}) against smtp-sink exited {code}")
                rates[label].append(args.n / wall)
                cpu[label].append(seconds / args.n * 1e6)
            source.append(smtp_source(work, sink.port, sessions=4, n=args.n, size=size))
            for label in versions:
                ratios[label].append(rates[label][-1] / source[-1])
    return {
        "msgs_per_s": {k: stats(v) for k, v in rates.items()},
        "cpu_us_per_msg": {k: stats(v) for k, v in cpu.items()},
        "smtp_source_4": stats(source),
        "vs_smtp_source_4": {k: stats(v) for k, v in ratios.items()},
    }


def _postfix(work: Path, args: argparse.Namespace, versions: dict[str, dict[str, object]], size: int) -> dict[str, Any]:
    rates: dict[str, list[float]] = {v: [] for v in versions}
    source: dict[int, list[float]] = {s: [] for s in SESSIONS}
    ratios: dict[str, list[float]] = {v: [] for v in versions}
    # Where a message's CPU goes, each client against the same Postfix on the same cores: the client's own, and
    # everything else the machine did (Postfix's processes and the kernel) until Postfix had delivered all.
    clients = [*versions, *(f"smtp-source {s}" for s in SESSIONS)]
    own: dict[str, list[float]] = {c: [] for c in clients}
    rest: dict[str, list[float]] = {c: [] for c in clients}
    idle: dict[str, list[float]] = {c: [] for c in clients}
    log: list[str] = []
    server = Server()

    def accounted(client: str, run: Callable[[list[float]], float]) -> float:
        seconds: list[float] = []
        (busy, spare), start = machine_cpu(), time.perf_counter()
        rate = run(seconds)
        server.drain()
        (busy_after, spare_after), elapsed = machine_cpu(), time.perf_counter() - start
        own[client].append(seconds[0] / args.n * 1e6)
        rest[client].append((busy_after - busy - seconds[0]) / args.n * 1e6)
        idle[client].append((spare_after - spare) / elapsed)
        return rate

    try:
        for _ in range(args.runs):
            for label, options in versions.items():
                rates[label].append(
                    accounted(label, lambda cpu: verified_send(server, work, args.n, label, log, cpu, **options))  # noqa: B023
                )
            for s in SESSIONS:
                source[s].append(
                    accounted(
                        f"smtp-source {s}",
                        lambda cpu: smtp_source(work, server.port, sessions=s, n=args.n, size=size, cpu=cpu),  # noqa: B023
                    )
                )
            best = max(source[s][-1] for s in SESSIONS)
            for label in versions:
                ratios[label].append(rates[label][-1] / best)
    finally:
        server.stop()
    return {
        "msgs_per_s": {k: stats(v) for k, v in rates.items()},
        "smtp_source": {str(k): stats(v) for k, v in source.items()},
        "vs_smtp_source_best": {k: stats(v) for k, v in ratios.items()},
        "client_cpu_us_per_msg": {k: stats(v) for k, v in own.items()},
        "rest_of_machine_cpu_us_per_msg": {k: stats(v) for k, v in rest.items()},
        "idle_cores": {k: stats(v) for k, v in idle.items()},
        "checked": log,
    }


def _table(results: dict[str, Any], versions: dict[str, dict[str, object]]) -> None:
    def cell(s: dict[str, float], fmt: str = ".2f") -> str:
        return f"{s['median']:{fmt}} ({s['min']:{fmt}}–{s['max']:{fmt}})"

    sink, postfix = results["sink"], results["postfix"]
    print(f"\n{results['n']} messages, median of {results['runs']} interleaved runs (min–max), default pool (4)\n")
    print(
        "| version | smtp-sink msg/s | CPU µs/msg | ÷ smtp-source, 4 sessions | Postfix msg/s | ÷ smtp-source, best |"
    )
    print("| --- | --- | --- | --- | --- | --- |")
    for label in versions:
        print(
            f"| {label} | {cell(sink['msgs_per_s'][label], '.0f')} | {cell(sink['cpu_us_per_msg'][label], '.0f')} | "
            f"**{cell(sink['vs_smtp_source_4'][label])}** | {cell(postfix['msgs_per_s'][label], '.0f')} | "
            f"**{cell(postfix['vs_smtp_source_best'][label])}** |"
        )
    print(
        f"\nsmtp-source on smtp-sink, 4 sessions: {cell(sink['smtp_source_4'], '.0f')} msg/s; on Postfix: "
        + ", ".join(f"{s}: {cell(v, '.0f')}" for s, v in postfix["smtp_source"].items())
    )
    print(
        f"Checked in Postfix's log: {sum('exactly once' in line for line in postfix['checked'])} of "
        f"{len(postfix['checked'])} runs delivered each recipient exactly once."
    )
    print("\nAgainst Postfix, where a message's CPU went (µs a message; the rest: Postfix and the kernel)\n")
    print("| client | msg/s | the client's CPU | the rest of the machine | idle cores |")
    print("| --- | --- | --- | --- | --- |")
    for client, own in postfix["client_cpu_us_per_msg"].items():
        rate = postfix["msgs_per_s"].get(client) or postfix["smtp_source"][client.rpartition(" ")[2]]
        others = postfix["rest_of_machine_cpu_us_per_msg"][client]
        print(
            f"| {client} | {cell(rate, '.0f')} | {cell(own, '.0f')} | {cell(others, '.0f')} | "
            f"{cell(postfix['idle_cores'][client])} |"
        )


if __name__ == "__main__":
    main()
