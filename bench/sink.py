"""Stage sink: every version against smtp-sink, a C server that keeps nothing, so the client is the bottleneck;
and Postfix's C client smtp-source against the same sink, at the default pool's 4 sessions and at its best."""

from __future__ import annotations

from pathlib import Path

from bench.common import stats
from bench.postfix import smtp_source
from bench.servers import SmtpSink
from bench.versions import NOW, ours

SOURCE_SESSIONS = (4, 8, 16, 32)  # 4: as seminar-mailer's default pool (MAILER_CONCURRENCY)


def sink_stage(
    work: Path, *, n: int, runs: int, variants: dict[str, dict[str, object]], size: int
) -> dict[str, object]:
    """Messages per second of each variant and of smtp-source, interleaved run by run; ratios pair by pair."""
    # Its -c counter goes to a file: into an unread pipe it would fill the buffer and stall the sink.
    sink_rates: dict[str, list[float]] = {k: [] for k in variants}
    source: dict[int, list[float]] = {s: [] for s in SOURCE_SESSIONS}
    ratio_same, ratio_best = [], []
    now_vs: dict[str, list[float]] = {k: [] for k in variants if k != NOW}  # NOW ÷ each variant, pair by pair
    vs_source: dict[str, list[float]] = {k: [] for k in variants}  # each variant ÷ smtp-source at 4 sessions
    with SmtpSink(work) as sink:
        for _ in range(runs):
            for label, options in variants.items():
                wall, code, _ = ours(work, sink.port, n, **options)  # type: ignore[arg-type]
                if code != 0:
                    raise SystemExit(f"seminar-mailer ({label}) against smtp-sink exited {code}")
                sink_rates[label].append(n / wall)
            for sessions in SOURCE_SESSIONS:
                source[sessions].append(smtp_source(work, sink.port, sessions=sessions, n=n, size=size))
            ratio_same.append(sink_rates[NOW][-1] / source[4][-1])
            for label in variants:
                vs_source[label].append(sink_rates[label][-1] / source[4][-1])
                if label != NOW:
                    now_vs[label].append(sink_rates[NOW][-1] / sink_rates[label][-1])
            ratio_best.append(sink_rates[NOW][-1] / max(source[s][-1] for s in SOURCE_SESSIONS))
    return {
        "msgs_per_s": stats(sink_rates[NOW]),
        "variants": {k: stats(v) for k, v in sink_rates.items()},
        "now_vs_variant": {k: stats(v) for k, v in now_vs.items()},
        "variant_vs_smtp_source_4": {k: stats(v) for k, v in vs_source.items()},
        "smtp_source": {str(k): stats(v) for k, v in source.items()},
        "default_pool_vs_smtp_source_4": stats(ratio_same),
        "default_pool_vs_smtp_source_best": stats(ratio_best),
        "sink_counted": sink.counted(),
        "expected": n * runs * (len(variants) + len(SOURCE_SESSIONS)),
    }
