"""The result files: latest.md/.json (peers, startup, window, scale) and ledger.md/.json (ledger, kill)."""

from __future__ import annotations

import json

from bench.common import BENCH, WORK, stats
from bench.versions import BEFORE_COMMIT, LEDGER_BEFORE, LEDGER_BEFORE_COMMIT, LEDGER_NOW, LEDGER_VERSIONS


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
        f"(the sink counted {r['smtp_sink']['sink_counted']} of {r['smtp_sink']['expected']} messages sent to it). "
        "Postfix's C client smtp-source against the same sink, by session count: "
        + ", ".join(f"{k}: {_fmt(v)}" for k, v in r["smtp_sink"]["smtp_source"].items())
        + ". seminar-mailer at the default pool of 4 reaches "
        f"**{_fmt(r['smtp_sink']['default_pool_vs_smtp_source_4'], '×', 2)}** of smtp-source at 4 sessions and "
        f"{_fmt(r['smtp_sink']['default_pool_vs_smtp_source_best'], '×', 2)} of its best (pairwise, same run).",
        "",
        f"Checked at the server: {sum('exactly once' in v for v in r['verification'])} of "
        f"{len(r['verification'])} seminar-mailer runs against Postfix delivered each of the {r['n']} recipients "
        "exactly once (Postfix's log; the list is in latest.json).",
        "",
        "## Profile and fixes: before and after, measured in this run",
        "",
        f"The before version runs from `git archive {BEFORE_COMMIT[:7]}` on that commit's own data/seminars.yaml "
        "(the same 2024 seminar; today's file has keys it does not know), with the 2024 week.",
        "",
        "| version | vs smtp-sink (client-bound) | vs Postfix, pool 8 |",
        "| --- | --- | --- |",
    ]
    pv = r["postfix_variants"]
    for name, sink_stats in r["smtp_sink"]["variants"].items():
        lines.append(f"| {name} | {_fmt(sink_stats)} | {_fmt(pv[name + ', pool 8'])} |")
    lines += ["", "At the default pool of 4, pair by pair in this run:", ""]
    sink_vs = r["smtp_sink"].get("variant_vs_smtp_source_4", {})
    for name, vs in r["smtp_sink"].get("now_vs_variant", {}).items():
        lines.append(
            f"- now ÷ {name}, against smtp-sink: {_fmt(vs, '×', 2)}; it reached {_fmt(sink_vs[name], '×', 2)} "
            "of smtp-source at 4 sessions"
        )
    for name, vs in r.get("default_pool_variants_vs_smtp_source", {}).items():
        lines.append(
            f"- {name}, against Postfix at pool 4: {_fmt(r['default_pool_variants'][name])} msg/s, "
            f"{_fmt(vs, '×', 2)} of smtp-source's best (now: {_fmt(ratios['default pool vs smtp-source'], '×', 2)})"
        )
    lines += [
        "",
        "What the profiles showed (cProfile and py-spy, 10 000 messages to smtp-sink): before, aiosmtplib's "
        "`sendmail` spent a third of the sender's CPU re-parsing the already validated addresses with "
        "the email package and running two regexes (line ends, dot-stuffing) over the whole 26 KB message "
        "for every recipient. Fix 1: the message's wire form is dot-stuffed once per announcement and only "
        "the three personal header lines are prepended per recipient (`MessageTemplate.wire`). After it, "
        "the time went to four round trips a message and the event-loop wake-ups between them. Fix 2: "
        "PIPELINING (RFC 2920): MAIL, RCPT and DATA in one write, their replies in one read "
        "(`mailer/deliver/smtp.py`). What remains is the kernel's `send` of 26 KB and `epoll`; the Python left per "
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
        f"`git archive {LEDGER_BEFORE_COMMIT[:7]}` on that commit's own data/seminars.yaml (today's has keys it "
        "does not know), the same 2024 seminar, with the 2024 week and no --now (it has none). "
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
