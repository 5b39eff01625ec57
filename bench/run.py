"""seminar-mailer benchmarks, side by side with peers and the machine's limit, in one run.

    make bench            (or: .venv/bin/python bench/run.py [--runs 3] [--n 10000] [--only ledger,kill])

Writes bench/results/latest.md and latest.json (the comparison with peers), and ledger.md and
ledger.json (the ledger's cost and kill -9 duplicates, issue 10). Every figure is the median of --runs runs (min and
max beside it); tools are interleaved run by run, so the machine's noise hits them alike; ratios
are computed pair by pair within the same run. Each seminar-mailer run is checked at the server:
every recipient accepted exactly once (Postfix's log), so speed is never bought with lost mail.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import postfix_instance
from tests.conftest import FUTURE_DATE, FUTURE_NOW, future_schedule
from tests.smtp_server import free_port

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
            os.execve(cmd[0], cmd, {**os.environ, **env})
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - start
    return wall, os.waitstatus_to_exitcode(status), usage.ru_maxrss // 1024, usage.ru_utime + usage.ru_stime


def stats(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def make_recipients(folder: Path, n: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "learning-machines.txt").open("w") as handle:
        handle.writelines(f"user{i}@example.org\n" for i in range(n))


class Server:
    """The private Postfix (discard transport) and a reader of its log for verification."""

    def __init__(self) -> None:
        self.postfix = postfix_instance.start(deliver="discard")
        self.port = self.postfix.port
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.postfix.log.stat().st_size if self.postfix.log.exists() else 0

    def drain(self, timeout: float = 60) -> None:
        """Wait until everything accepted so far has left the queue (keeps runs independent)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            accepted, delivered = self.postfix.accepted_by_smtpd(), self.postfix.delivered()
            if accepted <= delivered:
                return
            time.sleep(0.2)
        raise SystemExit(f"Postfix did not drain: {accepted} accepted, {delivered} delivered")

    def recipients_since_mark(self) -> Counter[str]:
        """Recipients delivered (discarded) since mark(): each line is one accepted message."""
        self.drain()
        with self.postfix.log.open(errors="replace") as handle:
            handle.seek(self.offset)
            text = handle.read()
        return Counter(re.findall(r"postfix/discard\[\d+\]: \w+: to=<([^>]+)>.*status=sent", text))

    def queued_since_mark(self) -> Iterator[int]:
        """Messages Postfix has queued since mark(), read from its log as it grows (each next() reads on)."""
        count, offset, rest = 0, self.offset, b""
        while True:
            if self.postfix.log.exists():
                with self.postfix.log.open("rb") as handle:
                    handle.seek(offset)
                    new = handle.read()
                offset += len(new)
                *lines, rest = (rest + new).split(b"\n")
                count += sum(1 for line in lines if b"postfix/cleanup" in line and b"message-id=" in line)
            yield count

    def stop(self) -> None:
        self.postfix.stop()


# The last commit before the profile-driven fixes: aiosmtplib's sendmail per message, no pipelining.
BEFORE_COMMIT = "c981ae4fd892dfbcf13e6a7d91a0ab2b8f8f6eab"
# The last commit before ledger v2 (issue 10): group commits every 0.1 s, each synced (synchronous=FULL).
LEDGER_BEFORE_COMMIT = "fcbe067a578003a0ff68e33aae906a2853515120"
POOLS = (4, 8, 16, 32)  # MAILER_CONCURRENCY values tried; 4 is the default
NOW = "now: prepared bytes, pipelined"
LEDGER_NOW, LEDGER_BEFORE = "now", f"before ({LEDGER_BEFORE_COMMIT[:7]})"
LEDGER_VERSIONS = {
    LEDGER_NOW: "a commit per event-loop tick as replies arrive (WAL, synchronous=NORMAL), a synced checkpoint "
    "every 1 s (MAILER_LEDGER_WINDOW)",
    LEDGER_BEFORE: "group commits every 0.1 s, each synced (synchronous=FULL)",
}
STAGES = ("startup", "sink", "postfix", "window", "scale", "ledger", "kill")
CLASSIC = STAGES[:5]  # the stages behind latest.md; "ledger" and "kill" write ledger.md


def before_tree(work: Path, commit: str = BEFORE_COMMIT) -> Path | None:
    """The mailer package as it was at ``commit`` (git archive), or None without the history."""
    target = work / f"before-{commit[:7]}"
    if target.exists():
        return target
    try:
        archive = subprocess.run(
            ["git", "-C", str(ROOT), "archive", commit, "mailer", "templates"],
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
    recipients: str = "recipients",
) -> tuple[list[str], dict[str, str]]:
    """The `seminar-mailer send` command line and environment for one run.

    ``code_from``: run the mailer package found there (an older commit), with the arguments it
    understands: the 2024 week and no --now (older versions have no --now and accept past weeks).
    The current code's real sends use the 2030 programme and --now; its dry runs keep 2024.
    """
    exe = [PY, "-m", "mailer"] if code_from else [str(ROOT / ".venv/bin/seminar-mailer")]
    if code_from or dry:
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
) -> tuple[float, int, int]:
    """One whole `seminar-mailer send` process, from an empty state folder; see send_command."""
    wall, code, mib, _ = ours_measured(work, port, extra=extra, dry=dry, code_from=code_from)
    return wall, code, mib


def ours_measured(
    work: Path,
    port: int,
    *,
    extra: dict[str, str] | None = None,
    dry: bool = False,
    code_from: Path | None = None,
) -> tuple[float, int, int, float]:
    """As ours, and the process's CPU seconds."""
    shutil.rmtree(work / "state", ignore_errors=True)
    cmd, env = send_command(work, port, extra=extra, dry=dry, code_from=code_from)
    return measure(cmd, env=env, cwd=work)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--scale", default="1000,10000,100000", help="recipient counts for the scale table")
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated stages to run, of {','.join(STAGES)} (default: all); "
        "e.g. --only ledger,kill (about 5 minutes) rewrites ledger.md and leaves latest.md alone",
    )
    parser.add_argument("--kill-n", type=int, default=3000, help="recipients of each kill -9 trial")
    parser.add_argument("--kills", type=int, default=5, help="kill -9 trials per version")
    parser.add_argument("--seed", type=int, help="seed of the random kill moments (default: random, recorded)")
    args = parser.parse_args()
    stages = set(args.only.split(",")) if args.only else set(STAGES)
    if unknown := stages - set(STAGES):
        parser.error(f"--only: unknown stage(s) {','.join(sorted(unknown))}; wanted some of {','.join(STAGES)}")
    WORK.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=WORK))
    make_recipients(work / "recipients", args.n)
    if stages & set(CLASSIC):
        classic(work, args, stages)
    if stages & {"ledger", "kill"}:
        ledger_and_kill(work, args, stages)
    shutil.rmtree(work, ignore_errors=True)


def header(n: int, runs: int) -> dict[str, object]:
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "n": n,
        "runs": runs,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }


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


def classic(work: Path, args: argparse.Namespace, stages: set[str]) -> None:
    """Startup, smtp-sink, Postfix against peers, the checkpoint window, scale: latest.md."""
    n, runs = args.n, args.runs
    results = header(n, runs)
    # latest.md holds a whole run; a partial one (--only) goes to bench/.work/, never over it.
    name = "latest" if set(CLASSIC) <= stages else None

    # The message every tool sends: seminar-mailer's own, as preview writes it.
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
    eml = work / "preview" / "announcement.eml"
    size = len(eml.read_bytes())
    results["message_bytes"] = size

    if "startup" in stages:
        results["startup"] = startup(work, runs=max(runs, 5))
        results["in_process"] = in_process()
        save(results, name)

    before = before_tree(work)
    variants: dict[str, dict[str, object]] = {
        NOW: {},
        "prepared bytes, no pipelining": {"extra": {"MAILER_PIPELINING": "off"}},
        **({f"before ({BEFORE_COMMIT[:7]}: aiosmtplib sendmail)": {"code_from": before}} if before else {}),
    }

    if "sink" in stages:
        # Against smtp-sink: a C server that keeps nothing, so the client is the bottleneck. Its -c counter
        # goes to a file: into an unread pipe it would fill the buffer and stall the sink.
        sink_rates: dict[str, list[float]] = {k: [] for k in variants}
        with SmtpSink(work) as sink:
            for _ in range(runs):
                for label, options in variants.items():
                    wall, code, _ = ours(work, sink.port, n, **options)  # type: ignore[arg-type]
                    if code != 0:
                        raise SystemExit(f"seminar-mailer ({label}) against smtp-sink exited {code}")
                    sink_rates[label].append(n / wall)
        results["smtp_sink"] = {
            "msgs_per_s": stats(sink_rates[NOW]),
            "variants": {k: stats(v) for k, v in sink_rates.items()},
            "sink_counted": sink.counted(),
            "expected": n * runs * len(variants),
        }
        save(results, name)

    if not stages & {"postfix", "window", "scale"}:
        return
    server = Server()
    try:
        if "postfix" in stages:
            results.update(peers(work, server, n=n, runs=runs, variants=variants, eml=eml, size=size))
            save(results, name)

        if "window" in stages:
            # The synced checkpoint's interval (MAILER_LEDGER_WINDOW, seconds) against throughput.
            window: dict[str, list[float]] = {}
            for _ in range(runs):
                for value in ("0", "0.1", "1"):
                    wall, code, _ = ours(work, server.port, n, extra={"MAILER_LEDGER_WINDOW": value})
                    if code != 0:
                        raise SystemExit(f"seminar-mailer (MAILER_LEDGER_WINDOW={value}) exited {code}")
                    window.setdefault(value, []).append(n / wall)
                    server.drain()
            results["ledger_window"] = {k: stats(v) for k, v in window.items()}
            save(results, name)

        if "scale" in stages:
            scale: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
            for count in [int(c) for c in args.scale.split(",")]:
                make_recipients(work / "recipients", count)
                for mode in ("dry-run", "send"):
                    walls: list[float] = []
                    rss: list[float] = []
                    for _ in range(runs if count <= 10_000 else 1):
                        wall, code, mib = ours(work, server.port, count, dry=mode == "dry-run")
                        assert code == 0, f"seminar-mailer send ({mode}, {count}) exited {code}"
                        walls.append(wall)
                        rss.append(mib)
                        server.drain()
                    scale.setdefault(str(count), {})[mode] = {"wall": stats(walls), "rss_mib": stats(rss)}
            results["scale"] = scale
            make_recipients(work / "recipients", n)
            save(results, name)
    finally:
        server.stop()
    if name:
        print((BENCH / "results" / "latest.md").read_text())


class SmtpSink:
    """Postfix's smtp-sink on a free port, its message counter in a file."""

    def __init__(self, work: Path) -> None:
        self.port = free_port()
        self.log = work / f"smtp-sink-{self.port}.out"

    def __enter__(self) -> SmtpSink:
        self._out = self.log.open("wb")
        self._proc = subprocess.Popen(
            ["/usr/sbin/smtp-sink", "-u", "postfix", "-c", f"127.0.0.1:{self.port}", "256"],
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )
        time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        self._proc.terminate()
        self._proc.wait()
        self._out.close()

    def counted(self) -> int | None:
        counted = [int(x) for x in re.findall(r"mesg=(\d+)", self.log.read_text(errors="replace"))]
        return max(counted) if counted else None


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
            wall, code, _ = peak_rss(
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
                    f"127.0.0.1:{server.port}",
                ],
                env={},
                cwd=work,
            )
            assert code == 0, "smtp-source failed"
            source_sessions[sessions].append(n / wall)
            best = max(best, n / wall)
            server.drain()
        throughput["smtp-source"].append(best)
        ratios["vs mailmerge"].append(throughput["seminar-mailer"][-1] / throughput["mailmerge"][-1])
        ratios["vs smtplib"].append(throughput["seminar-mailer"][-1] / throughput["smtplib"][-1])
        ratios["vs smtp-source"].append(throughput["seminar-mailer"][-1] / best)
        ratios["default pool vs smtp-source"].append(pools[4][-1] / best)

    return {
        "throughput": {k: stats(v) for k, v in throughput.items()},
        "smtp_source_sessions": {str(k): stats(v) for k, v in source_sessions.items()},
        "pools": {str(k): stats(v) for k, v in pools.items()},
        "postfix_variants": {
            f"{NOW}, pool 8": stats(pools[8]),
            **{f"{k}, pool 8": stats(v) for k, v in postfix_variants.items()},
        },
        "ratios": {k: stats(v) for k, v in ratios.items()},
        "verification": verified,
    }


# --- issue 10: what the per-reply ledger costs, and what a kill -9 can duplicate -------------------


def ledger_and_kill(work: Path, args: argparse.Namespace, stages: set[str]) -> None:
    """The current code against LEDGER_BEFORE_COMMIT at the default pool: throughput and kill -9 duplicates."""
    results = header(args.n, args.runs)
    before = before_tree(work, LEDGER_BEFORE_COMMIT)
    if before is None:
        raise SystemExit(f"the ledger stages need commit {LEDGER_BEFORE_COMMIT[:7]} (git history)")
    versions: dict[str, dict[str, object]] = {LEDGER_NOW: {}, LEDGER_BEFORE: {"code_from": before}}
    pool = {"MAILER_CONCURRENCY": "4"}  # the default of both versions, set against a stray environment
    server = Server()
    try:
        if "ledger" in stages:
            results["ledger"] = {
                **ledger_cost(work, server, versions, n=args.n, runs=args.runs, extra=pool),
                "alone_us_per_result": ledger_alone(work),
            }
            save_ledger(results)
        if "kill" in stages:
            seed = args.seed if args.seed is not None else random.randrange(2**32)
            results["kill"] = {
                "seed": seed,
                **kill_trials(
                    work, server, versions, n=args.kill_n, kills=args.kills, rng=random.Random(seed), extra=pool
                ),
            }
            save_ledger(results)
    finally:
        server.stop()
    print((BENCH / "results" / "ledger.md").read_text())


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
    from mailer.ledger import SENT, Ledger, Mark

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


def save(results: dict, name: str | None = "latest") -> None:  # type: ignore[type-arg]
    """Write what has been measured so far: a late failure never loses the earlier stages.

    ``name`` None: a partial run (--only), written under bench/.work/ rather than over latest.md.
    """
    if name is None:
        (WORK / "partial.json").write_text(json.dumps(results, indent=2) + "\n")
        print(f"partial run: {WORK / 'partial.json'}", flush=True)
        return
    (BENCH / "results").mkdir(exist_ok=True)
    (BENCH / "results" / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (BENCH / "results" / f"{name}.md").write_text(report(results))


def save_ledger(results: dict) -> None:  # type: ignore[type-arg]
    (BENCH / "results").mkdir(exist_ok=True)
    (BENCH / "results" / "ledger.json").write_text(json.dumps(results, indent=2) + "\n")
    (BENCH / "results" / "ledger.md").write_text(ledger_report(results))


def ensure_mailmerge() -> Path:
    venv = WORK / "mailmerge-venv"
    exe = venv / "bin" / "mailmerge"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "mailmerge==2.3.0"], check=True)
    return exe


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
    from mailer.address import Address
    from mailer.message import build_announcement
    from mailer.render import render
    from mailer.schedule import load_schedule, week_of

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


def _fmt(s: dict[str, float], unit: str = "", digits: int = 0) -> str:
    return f"{s['median']:.{digits}f}{unit} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def report(r: dict) -> str:  # type: ignore[type-arg]
    if "scale" not in r:
        return "# seminar-mailer benchmarks (incomplete run)\n\n```json\n" + json.dumps(r, indent=2) + "\n```\n"
    t, ratios = r["throughput"], r["ratios"]
    lines = [
        "# seminar-mailer benchmarks",
        "",
        f"{r['date']}, {r['machine']}. {r['n']} personalised announcements of {r['message_bytes']} bytes, "
        f"to a private Postfix 3 on 127.0.0.1 (discard transport) on the same 2 cores. "
        f"Median of {r['runs']} interleaved runs (min–max). Reproduce: `make bench`.",
        "",
        "## Delivery throughput (messages/second, whole process, ledger on)",
        "",
        "| sender | msg/s | seminar-mailer ÷ it (pairwise, same run) |",
        "| --- | --- | --- |",
        f"| **seminar-mailer send**, best pool size | {_fmt(t['seminar-mailer'])} | |",
        f"| mailmerge 2.3.0 (peer) | {_fmt(t['mailmerge'])} | {_fmt(ratios['vs mailmerge'], '×', 2)} |",
        f"| smtplib, one connection (naive) | {_fmt(t['smtplib'])} | {_fmt(ratios['vs smtplib'], '×', 2)} |",
        f"| smtp-source, best session count (limit) | {_fmt(t['smtp-source'])} | "
        f"{_fmt(ratios['vs smtp-source'], '×', 2)} |",
        "",
        "Best of each tool's own knob, as a user would tune it: seminar-mailer by pool size "
        "(MAILER_CONCURRENCY) "
        + ", ".join(f"{k}: {_fmt(v)}" for k, v in r["pools"].items())
        + "; smtp-source by session count (-s, with -d: reused sessions) "
        + ", ".join(f"{k}: {_fmt(v)}" for k, v in r["smtp_source_sessions"].items())
        + f". At the default pool of 4 connections seminar-mailer reaches "
        f"{_fmt(ratios['default pool vs smtp-source'], '×', 2)} of smtp-source's best.",
        "",
        f"Against smtp-sink (keeps nothing; the client is the bottleneck): "
        f"**{_fmt(r['smtp_sink']['msgs_per_s'])} msg/s** "
        f"(the sink counted {r['smtp_sink']['sink_counted']} of {r['smtp_sink']['expected']} messages sent to it).",
        "",
        f"Checked at the server: {sum('exactly once' in v for v in r['verification'])} of "
        f"{len(r['verification'])} seminar-mailer runs against Postfix delivered each of the {r['n']} recipients "
        "exactly once (Postfix's log; the list is in latest.json).",
        "",
        "## Profile and fixes: before and after, measured in this run",
        "",
        "| version | vs smtp-sink (client-bound) | vs Postfix, pool 8 |",
        "| --- | --- | --- |",
    ]
    pv = r["postfix_variants"]
    for name, sink_stats in r["smtp_sink"]["variants"].items():
        lines.append(f"| {name} | {_fmt(sink_stats)} | {_fmt(pv[name + ', pool 8'])} |")
    lines += [
        "",
        "What the profiles showed (cProfile and py-spy, 10 000 messages to smtp-sink): before, aiosmtplib's "
        "`sendmail` spent a third of the sender's CPU re-parsing the already validated addresses with "
        "the email package and running two regexes (line ends, dot-stuffing) over the whole 26 KB message "
        "for every recipient. Fix 1: the message's wire form is dot-stuffed once per announcement and only "
        "the three personal header lines are prepended per recipient (`MessageTemplate.wire`). After it, "
        "the time went to four round trips a message and the event-loop wake-ups between them. Fix 2: "
        "PIPELINING (RFC 2920): MAIL, RCPT and DATA in one write, their replies in one read "
        "(`mailer/smtp.py`). What remains is the kernel's `send` of 26 KB and `epoll`; the Python left per "
        "message is a few microseconds (personal header lines, one ledger row; addresses' ledger keys are now"
        " computed once per address instead of at each use).",
        "",
        "## Ledger checkpoint window (MAILER_LEDGER_WINDOW) against throughput",
        "",
        "Each result is committed as its reply arrives (no fsync, survives kill -9: only messages whose "
        "reply was in flight can be sent again, see ledger.md); the window is how often the WAL is synced "
        "into the database (what a power loss can undo).",
        "",
        "| window | msg/s | what a power loss can undo |",
        "| --- | --- | --- |",
    ]
    meaning = {
        "0": "nothing committed before the last tick (a synced checkpoint at every commit)",
        "0.1": "results of the last 0.1 s",
        "1": "results of the last 1 s (the default)",
    }
    for k, v in r["ledger_window"].items():
        lines.append(f"| {k} s | {_fmt(v)} | {meaning[k]} |")
    s, ip = r["startup"], r["in_process"]
    lines += [
        "",
        "## Start-up and rendering",
        "",
        "| what | time | target |",
        "| --- | --- | --- |",
        f"| `seminar-mailer --help` (process) | {_fmt(s['--help'], ' s', 3)} | < 0.15 s |",
        f"| `seminar-mailer preview` (process) | {_fmt(s['preview'], ' s', 3)} | < 0.5 s |",
        f"| render: Jinja + MJML + premailer (in process, warm) | {_fmt(ip['render_ms'], ' ms', 1)} | |",
        f"| build the MIME message once (in process) | {_fmt(ip['build_message_ms'], ' ms', 2)} | |",
        f"| personalise, per recipient | {_fmt(ip['personalise_ms'], ' ms', 4)} | < 0.05 ms |",
        "",
        "## Scale: wall time and peak memory (RSS of the process)",
        "",
        "| recipients | dry-run wall | dry-run RSS | send wall | send RSS |",
        "| --- | --- | --- | --- | --- |",
    ]
    for count, modes in r["scale"].items():
        d, snd = modes["dry-run"], modes["send"]
        lines.append(
            f"| {int(count):,} | {_fmt(d['wall'], ' s', 2)} | {_fmt(d['rss_mib'], ' MiB')} | "
            f"{_fmt(snd['wall'], ' s', 1)} | {_fmt(snd['rss_mib'], ' MiB')} |"
        )
    lines.append("")
    return "\n".join(lines)


def ledger_report(r: dict) -> str:  # type: ignore[type-arg]
    """ledger.md: issue 10's figures (the per-reply ledger's cost, kill -9 duplicates per kill)."""
    lines = [
        "# seminar-mailer: the ledger's cost and kill -9 duplicates",
        "",
        f"{r['date']}, {r['machine']}, shared with other work: compare within this file only. Private Postfix 3 "
        "on 127.0.0.1 (discard transport) on the same cores. Reproduce: "
        "`.venv/bin/python bench/run.py --only ledger,kill`.",
        "",
        f"- **now**: {LEDGER_VERSIONS[LEDGER_NOW]} (this commit);",
        f"- **before**: {LEDGER_VERSIONS[LEDGER_BEFORE]}; the commit before the change, run from "
        f"`git archive {LEDGER_BEFORE_COMMIT[:7]}` with the 2024 week and no --now (it has none). "
        "Everything else that changed between the two commits (the "
        "planner, ledger v2's tables, the subscriber store asked before each message, OAuth2, input checks) "
        "is in the comparison too.",
        "",
    ]
    if "ledger" in r:
        led = r["ledger"]
        now, before = led["postfix"][LEDGER_NOW], led["postfix"][LEDGER_BEFORE]
        ratio = led["postfix_ratio"]
        lines += [
            f"## Throughput at the default pool ({led['pool']}), {r['n']} recipients",
            "",
            f"Median of {r['runs']} interleaved runs (min–max), the two versions alternating which goes first; "
            "ratios pair by pair within a run. Every run against Postfix checked in its log: each recipient "
            "accepted exactly once.",
            "",
            "| version | msg/s to Postfix | its CPU per message | msg/s to smtp-sink (client-bound) | "
            "its CPU per message | dry run of the list (no mail): wall, CPU |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for label, name, rate in (("now", LEDGER_NOW, now), ("before", LEDGER_BEFORE, before)):
            c = led["send_cpu_us_per_message"][name]
            lines.append(
                f"| {label} | {_fmt(rate)} | {_fmt(c['postfix'], ' µs')} | {_fmt(led['smtp_sink'][name])} | "
                f"{_fmt(c['sink'], ' µs')} | {_fmt(led['dry_run_wall'][name], ' s', 2)}, "
                f"{_fmt(stats(led['cpu_seconds'][name]['dry']), ' s', 2)} |"
            )
        cr = led["send_cpu_ratio"]
        lines += [
            f"| **now ÷ before** | **{_fmt(ratio, '×', 3)}** | {_fmt(cr['postfix'], '×', 2)} | "
            f"{_fmt(led['smtp_sink_ratio'], '×', 3)} | {_fmt(cr['sink'], '×', 2)} | |",
            "",
            "CPU per message: the sender process's own CPU (user + system) for the send, minus that of a dry "
            "run of the same list in the same run (start-up, planning, reading the list), divided by the "
            "number of messages. It depends much less than msg/s on the other work sharing the machine.",
            "",
            f"Against Postfix the change costs **{(1 - ratio['median']) * 100:.1f}%** of throughput (median of the "
            f"pairwise ratios; a negative figure is a gain); the target is under 5%. "
            f"{sum('exactly once' in v for v in led['verification'])} of {len(led['verification'])} runs "
            f"verified exactly once; smtp-sink counted {led['smtp_sink_counted']} of "
            f"{led['smtp_sink_expected']} messages.",
            "",
            "The ledger by itself (in process, CPU per recorded result, 10 000 results): "
            + ", ".join(
                f"{k} result{'s' if k != '1' else ''} per commit: {_fmt(v, ' µs', 1)}"
                for k, v in led["alone_us_per_result"].items()
            )
            + ". A send commits once per event-loop tick: at pool 4, one or two results per commit.",
            "",
        ]
    if "kill" in r:
        k = r["kill"]
        lines += [
            f"## kill -9: duplicates per kill at the default pool ({k['pool']})",
            "",
            f"{k['kills']} trials per version, each one kill: a send to {k['n']} recipients from an empty state "
            "folder, `kill -9` once a random number of messages (10–90% of the list) has reached Postfix, "
            "then a rerun to completion; the copies each recipient got are counted in Postfix's log, so a "
            f"trial's duplicates are its kill's. Random moments from seed {k['seed']}.",
            "",
            "| version | duplicates per kill: median | max | each kill (queued when killed → duplicates) | lost |",
            "| --- | --- | --- | --- | --- |",
        ]
        for label, name in (("now", LEDGER_NOW), ("before", LEDGER_BEFORE)):
            v = k[name]
            d = v["duplicates_per_kill"]
            each = ", ".join(
                f"{t['queued_when_killed']}→{t['duplicates']}" if t["killed"] else "finished before the kill"
                for t in v["trials"]
            )
            med, top = (f"{d['median']:.0f}", f"{d['max']:.0f}") if d else ("–", "–")
            lines.append(f"| {label} | **{med}** | {top} | {each} | {v['lost']} |")
        lines += [
            "",
            "Lost: recipients that never got the message after the rerun (should be 0). A rerun's exit codes: "
            + "; ".join(
                f"{label} {sorted({t['rerun_exit'] for t in k[name]['trials']})}"
                for label, name in (("now", LEDGER_NOW), ("before", LEDGER_BEFORE))
            )
            + ".",
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
    main()
