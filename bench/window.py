"""Stage window: the synced checkpoint's interval (MAILER_LEDGER_WINDOW, seconds) against throughput."""

from __future__ import annotations

from pathlib import Path

from bench.common import stats
from bench.servers import Server
from bench.versions import ours


def window_stage(work: Path, server: Server, *, n: int, runs: int) -> dict[str, dict[str, float]]:
    """Messages per second to Postfix at windows of 0, 0.1 and 1 s."""
    window: dict[str, list[float]] = {}
    for _ in range(runs):
        for value in ("0", "0.1", "1"):
            wall, code, _ = ours(work, server.port, n, extra={"MAILER_LEDGER_WINDOW": value})
            if code != 0:
                raise SystemExit(f"seminar-mailer (MAILER_LEDGER_WINDOW={value}) exited {code}")
            window.setdefault(value, []).append(n / wall)
            server.drain()
    return {k: stats(v) for k, v in window.items()}
