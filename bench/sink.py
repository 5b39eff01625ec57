"""Stage sink: every version against smtp-sink, a C server that keeps nothing, so the client is the bottleneck."""

from __future__ import annotations

from pathlib import Path

from bench.common import stats
from bench.servers import SmtpSink
from bench.versions import NOW, ours


def sink_stage(work: Path, *, n: int, runs: int, variants: dict[str, dict[str, object]]) -> dict[str, object]:
    """Messages per second of each variant, interleaved run by run; the sink's own count beside them."""
    # Its -c counter goes to a file: into an unread pipe it would fill the buffer and stall the sink.
    sink_rates: dict[str, list[float]] = {k: [] for k in variants}
    with SmtpSink(work) as sink:
        for _ in range(runs):
            for label, options in variants.items():
                wall, code, _ = ours(work, sink.port, n, **options)  # type: ignore[arg-type]
                if code != 0:
                    raise SystemExit(f"seminar-mailer ({label}) against smtp-sink exited {code}")
                sink_rates[label].append(n / wall)
    return {
        "msgs_per_s": stats(sink_rates[NOW]),
        "variants": {k: stats(v) for k, v in sink_rates.items()},
        "sink_counted": sink.counted(),
        "expected": n * runs * len(variants),
    }
