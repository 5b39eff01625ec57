"""seminar-mailer benchmarks, side by side with peers and the machine's limit, in one run.

    make bench            (or: .venv/bin/python bench/run.py [--runs 3] [--n 10000] [--only ledger,kill])

Writes bench/results/latest.md and latest.json (the comparison with peers), and ledger.md and
ledger.json (the ledger's cost and kill -9 duplicates, issue 10). Every figure is the median of --runs runs (min and
max beside it); tools are interleaved run by run, so the machine's noise hits them alike; ratios
are computed pair by pair within the same run. Each seminar-mailer run is checked at the server:
every recipient accepted exactly once (Postfix's log), so speed is never bought with lost mail.

This file is the runner: each stage is a module of bench/ (startup, sink, postfix, window, scale,
ledger, kill); common, servers, versions and report are what they share.
"""

from __future__ import annotations

import argparse
import random
import resource
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)  # bench.* and tests.* from the checkout; not bench/'s modules as top-level names

from bench.common import BENCH, WORK, header, make_recipients
from bench.kill import kill_trials
from bench.ledger import ledger_alone, ledger_cost
from bench.postfix import peers
from bench.report import save, save_ledger
from bench.scale import scale_stage
from bench.servers import Server
from bench.sink import sink_stage
from bench.startup import in_process, startup
from bench.versions import (
    BEFORE_COMMIT,
    LEDGER_BEFORE,
    LEDGER_BEFORE_COMMIT,
    LEDGER_NOW,
    NOW,
    ONE_WRITE_BEFORE_COMMIT,
    before_tree,
    preview_message,
)
from bench.window import window_stage

STAGES = ("startup", "sink", "postfix", "window", "scale", "ledger", "kill")
CLASSIC = STAGES[:5]  # the stages behind latest.md; "ledger" and "kill" write ledger.md


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


def classic(work: Path, args: argparse.Namespace, stages: set[str]) -> None:
    """Startup, smtp-sink, Postfix against peers, the checkpoint window, scale: latest.md."""
    n, runs = args.n, args.runs
    results = header(n, runs)
    # latest.md holds a whole run; a partial one (--only) goes to bench/.work/, never over it.
    name = "latest" if set(CLASSIC) <= stages else None
    eml = preview_message(work)
    size = len(eml.read_bytes())
    results["message_bytes"] = size

    if "startup" in stages:
        results["startup"] = startup(work, runs=max(runs, 5))
        results["in_process"] = in_process()
        save(results, name)

    before = before_tree(work)
    one_write_before = before_tree(work, ONE_WRITE_BEFORE_COMMIT)
    variants: dict[str, dict[str, object]] = {
        NOW: {},
        "prepared bytes, no pipelining": {"extra": {"MAILER_PIPELINING": "off"}},
        **(
            {
                f"before ({ONE_WRITE_BEFORE_COMMIT[:7]}: two writes a message, a commit most messages)": {
                    "code_from": one_write_before,
                    "current_args": True,
                }
            }
            if one_write_before
            else {}
        ),
        **({f"before ({BEFORE_COMMIT[:7]}: aiosmtplib sendmail)": {"code_from": before}} if before else {}),
    }
    if "sink" in stages:
        results["smtp_sink"] = sink_stage(work, n=n, runs=runs, variants=variants, size=size)
        save(results, name)

    if not stages & {"postfix", "window", "scale"}:
        return
    server = Server()
    try:
        if "postfix" in stages:
            results.update(peers(work, server, n=n, runs=runs, variants=variants, eml=eml, size=size))
            save(results, name)
        if "window" in stages:
            results["ledger_window"] = window_stage(work, server, n=n, runs=runs)
            save(results, name)
        if "scale" in stages:
            results["scale"] = scale_stage(work, server, counts=[int(c) for c in args.scale.split(",")], runs=runs)
            make_recipients(work / "recipients", n)
            save(results, name)
    finally:
        server.stop()
    if name:
        print((BENCH / "results" / "latest.md").read_text())


def ledger_and_kill(work: Path, args: argparse.Namespace, stages: set[str]) -> None:
    """The current code against LEDGER_BEFORE_COMMIT at the default pool: throughput and kill -9 duplicates."""
    results = header(args.n, args.runs)
    before = before_tree(work, LEDGER_BEFORE_COMMIT)
    if before is None:
        raise SystemExit(
            f"the ledger stages need commit {LEDGER_BEFORE_COMMIT[:7]} (git history; in a shallow clone: "
            "git fetch --unshallow)"
        )
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


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
    main()
