"""Stage department: a project of 20 series with 10 000 subscribers each (half of the people on two lists or
more) and a digest of 2 000 readers gathering all 20; and one list of 1 000 000 lines.

    .venv/bin/python bench/department.py [--runs 3] [--big 1000000]

Measured, never asserted (issue 24's figures): the whole dry run of every series and the digest as one
process (wall, CPU, peak RSS); the planning alone, in process (schedules loaded, every series' plan and the
digest's, with the ledger empty); the digest's cost per reader once it is rendered (its wire bytes for each
reader: what the pool does per recipient); `check` and a dry run of the one big list; and delivery, twenty
series against one: the same number of messages sent to smtp-sink (a C server that keeps nothing, so the
sender is the bottleneck) by one `send` of a project of 20 series and by one of a single series, run by run
in turn, messages per second of the whole process and their ratio pair by pair. Each figure is the median
of --runs runs. Writes bench/results/department.md and .json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[0] = str(ROOT)

from bench.common import BENCH, WORK, measure, stats
from bench.servers import SmtpSink

SERIES = 20
PER_LIST = 10_000
READERS = 2_000
NOW = "2030-01-14T08:00"
SERIES_YAML = """\
series:
  name: Series {n}
  signature: The Series {n} Team
  timezone: Europe/Stockholm
  time: "{hour:02d}:00"
  location: Room {n}
  info_url: https://example.org/s{n}
  sender: Series {n} <s{n}@example.org>
  list: s{n}
  announce: "Monday 08:00"
seminars:
  - date: 2030-01-{day:02d}
    speaker: Speaker {n}
    title: Talk {n}
    abstract: An abstract of a few words for seminar {n}.
  - date: 2030-01-{later:02d}
    speaker: Later Speaker {n}
"""


def department(folder: Path, *, seed: int = 1) -> Path:
    """Write the project: 20 series, each list 10 000 addresses drawn so that half the people are on two or
    more lists, and the digest's 2 000 readers."""
    rng = random.Random(seed)
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "recipients").mkdir(exist_ok=True)
    people = int(SERIES * PER_LIST / 1.5)  # 200 000 list lines over ~133 000 people: about half on 2+ lists
    for n in range(SERIES):
        text = SERIES_YAML.format(n=n, hour=9 + n % 8, day=14 + n % 5, later=21 + n % 5)
        (folder / "data" / ("seminars.yaml" if n == 0 else f"s{n}.yaml")).write_text(text)
        chosen = rng.sample(range(people), PER_LIST)
        (folder / "recipients" / f"s{n}.txt").write_text("".join(f"p{i}@example.org\n" for i in chosen))
    include = ", ".join(f"s{n}" for n in range(SERIES))
    (folder / "data" / "week.yaml").write_text(
        f"digest:\n  name: The Week\n  sender: The Week <week@example.org>\n  list: week\n  include: [{include}]\n"
    )
    (folder / "recipients" / "week.txt").write_text("".join(f"reader{i}@example.org\n" for i in range(READERS)))
    return folder


def big_list(folder: Path, lines: int) -> Path:
    (folder / "data").mkdir(parents=True, exist_ok=True)
    (folder / "recipients").mkdir(exist_ok=True)
    (folder / "data" / "seminars.yaml").write_text(SERIES_YAML.format(n=0, hour=15, day=17, later=24))
    with (folder / "recipients" / "s0.txt").open("w") as out:
        out.writelines(f"user{i}@example.org\n" for i in range(lines))
    return folder


def delivery(work: Path, *, series: int, per_list: int, runs: int) -> dict[str, object]:
    """``series`` lists of ``per_list`` distinct addresses in one project, against one series of them all: the
    same messages, from one `send` each, to the same smtp-sink; whole-process messages per second."""
    many, one = work / "many", work / "one"
    for folder, count in ((many, series), (one, 1)):
        (folder / "data").mkdir(parents=True)
        (folder / "recipients").mkdir()
        for n in range(count):
            text = SERIES_YAML.format(n=n, hour=9 + n % 8, day=14 + n % 5, later=21 + n % 5)
            (folder / "data" / ("seminars.yaml" if n == 0 else f"s{n}.yaml")).write_text(text)
            size = per_list * series // count
            (folder / "recipients" / f"s{n}.txt").write_text("".join(f"p{n}-{i}@example.org\n" for i in range(size)))
    total = series * per_list
    rates: dict[str, list[float]] = {"many": [], "one": []}
    ratio = []
    with SmtpSink(work) as sink:
        env = {"PYTHONPATH": str(ROOT), "SMTP_HOST": "127.0.0.1", "SMTP_PORT": str(sink.port), "SMTP_SECURITY": "none"}
        env["SEMINAR_MAILER_TEST_ONLY_SEND_NOW"] = "1"  # (the 2030 week on the sink: the tests' clock, never real mail)
        for _ in range(runs):
            for label, folder in (("many", many), ("one", one)):
                for state in folder.glob("state"):
                    shutil.rmtree(state)
                cmd = [sys.executable, "-m", "mailer", "send", "--yes", "--now", NOW]
                wall, code, _, _ = measure(cmd, env={**env, "MAILER_STATE": str(folder / "state")}, cwd=folder)
                assert code == 0, f"send of {label} exited {code}"
                rates[label].append(total / wall)
            ratio.append(rates["many"][-1] / rates["one"][-1])
        counted = sink.counted()
    return {
        "series": series, "per_list": per_list, "messages": total, "sink_counted": counted,
        "expected": 2 * runs * total, "many": stats(rates["many"]), "one": stats(rates["one"]),
        "many_vs_one": stats(ratio),
    }  # fmt: skip


def whole(folder: Path, *args: str, runs: int) -> dict[str, dict[str, float]]:
    cmd = [sys.executable, "-m", "mailer", *args]
    env = {"PYTHONPATH": str(ROOT), "MAILER_STATE": str(folder / "state")}
    walls, cpus, rss = [], [], []
    for _ in range(runs):
        wall, code, mib, cpu = measure(cmd, env=env, cwd=folder)
        assert code in (0, 75), f"{' '.join(args)} exited {code}"
        walls.append(wall)
        cpus.append(cpu)
        rss.append(float(mib))
    return {"wall": stats(walls), "cpu": stats(cpus), "rss_mib": stats(rss)}


def planning(folder: Path, *, runs: int) -> dict[str, float]:
    """Load every programme, plan every series and the digest (empty ledger), in this process: seconds."""
    from mailer.programme.digest import load_digest
    from mailer.programme.schedule import load_schedule
    from mailer.run.digest_plan import plan_digest
    from mailer.run.plan import Memory, plan

    now = dt.datetime.fromisoformat(NOW).replace(tzinfo=dt.timezone(dt.timedelta(hours=1)))
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        schedules = [load_schedule(p) for p in sorted((folder / "data").glob("*.yaml")) if p.name != "week.yaml"]
        plans = [(s, plan(s, Memory(), now=now, today=now.date(), explicit=True)) for s in schedules]
        plan_digest(load_digest(folder / "data" / "week.yaml"), plans, now=now, today=now.date())
        seconds.append(time.perf_counter() - start)
    return stats(seconds)


def digest_per_reader(folder: Path, *, runs: int) -> dict[str, object]:
    """The digest rendered once (its MJML, its invitation of 20 events), then each reader's wire bytes."""
    from mailer.core.address import Address
    from mailer.run.digests import preview_digest
    from mailer.run.request import Request

    request = Request(
        schedule=folder / "data" / "week.yaml", templates=None, recipients=folder / "recipients",
        state=folder / "state", now=dt.datetime.fromisoformat(NOW + "+01:00"), date=None, dry_run=True,
        env={"MAILER_TOKEN_KEY": "k" * 32},
    )  # fmt: skip
    start = time.perf_counter()
    _, (message,) = preview_digest(request)
    once = time.perf_counter() - start
    assert message.template is not None
    readers = [Address(name="", addr=f"reader{i}@example.org") for i in range(READERS)]
    per = []
    for _ in range(runs):
        start = time.perf_counter()
        size = sum(len(message.template.wire(r)) for r in readers)
        per.append((time.perf_counter() - start) / READERS * 1000)
    return {"render_once_s": once, "per_reader_ms": stats(per), "bytes_per_reader": size // READERS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--big", type=int, default=1_000_000)
    parser.add_argument("--per-list", type=int, default=1_000, help="delivery: subscribers of each of the 20 lists")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="department-", dir=WORK))
    folder = department(work / "dept")
    results: dict[str, object] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "series": SERIES, "per_list": PER_LIST, "digest_readers": READERS, "runs": args.runs,
    }  # fmt: skip
    results["dry_run_all"] = whole(folder, "send", "--dry-run", "--now", NOW, runs=args.runs)
    results["planning_in_process_s"] = planning(folder, runs=args.runs)
    results["digest"] = digest_per_reader(folder, runs=args.runs)
    big = big_list(work / "big", args.big)
    results["big_list_lines"] = args.big
    results["big_check"] = whole(big, "check", runs=args.runs)
    results["big_dry_run"] = whole(big, "send", "--dry-run", "--now", NOW, runs=args.runs)
    results["delivery"] = delivery(work / "delivery", series=SERIES, per_list=args.per_list, runs=args.runs)
    (BENCH / "results").mkdir(exist_ok=True)
    (BENCH / "results" / "department.json").write_text(json.dumps(results, indent=2) + "\n")
    (BENCH / "results" / "department.md").write_text(report(results))
    print(report(results))


def report(r: dict[str, object]) -> str:
    def fig(entry: object, what: str) -> str:
        assert isinstance(entry, dict)
        return f"{entry[what]['median']:.2f} (min {entry[what]['min']:.2f}, max {entry[what]['max']:.2f})"

    digest = r["digest"]
    assert isinstance(digest, dict)
    plan = r["planning_in_process_s"]
    assert isinstance(plan, dict)
    lines = [
        f"# Department scale ({r['date']})",
        "",
        f"{r['series']} series x {r['per_list']} subscribers (about half the people on two lists or more), a digest",
        f"of {r['digest_readers']} readers gathering all of them; medians of {r['runs']} runs. Measured, not asserted.",
        "",
        "| what | wall s | CPU s | peak RSS MiB |",
        "| --- | --- | --- | --- |",
        f"| `send --dry-run`, every series and the digest, one process | {fig(r['dry_run_all'], 'wall')} | "
        f"{fig(r['dry_run_all'], 'cpu')} | {fig(r['dry_run_all'], 'rss_mib')} |",
        f"| `check`, one list of {r['big_list_lines']:,} lines | {fig(r['big_check'], 'wall')} | "
        f"{fig(r['big_check'], 'cpu')} | {fig(r['big_check'], 'rss_mib')} |",
        f"| `send --dry-run`, that list | {fig(r['big_dry_run'], 'wall')} | {fig(r['big_dry_run'], 'cpu')} | "
        f"{fig(r['big_dry_run'], 'rss_mib')} |",
        "",
        f"- Planning alone (every programme loaded, 20 plans and the digest's), in process: "
        f"{plan['median']:.3f} s (min {plan['min']:.3f}).",
        f"- The digest rendered once: {digest['render_once_s']:.2f} s; then per reader "
        f"{digest['per_reader_ms']['median']:.4f} ms ({digest['bytes_per_reader']} bytes each).",
        "",
        *_delivery_lines(r.get("delivery")),
    ]
    return "\n".join(lines)


def _delivery_lines(d: object) -> list[str]:
    if not isinstance(d, dict):
        return []
    many, one, ratio = d["many"], d["one"], d["many_vs_one"]

    def rate(x: dict[str, float]) -> str:
        return f"{x['median']:.0f} (min {x['min']:.0f}, max {x['max']:.0f})"

    return [
        f"Delivery to smtp-sink, {d['messages']:,} messages each way (the sink counted {d['sink_counted']} of "
        f"{d['expected']}):",
        "",
        "| one `send` of | msg/s, whole process |",
        "| --- | --- |",
        f"| {d['series']} series x {d['per_list']:,} | {rate(many)} |",
        f"| 1 series x {d['messages']:,} | {rate(one)} |",
        "",
        f"- Twenty series against one, pair by pair: **{ratio['median']:.2f}x** (min {ratio['min']:.2f}, "
        f"max {ratio['max']:.2f}).",
        "",
    ]


if __name__ == "__main__":
    main()
