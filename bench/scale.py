"""Stage scale: wall time and peak memory of a dry run and a send, from 1 000 to 100 000 recipients."""

from __future__ import annotations

from pathlib import Path

from bench.common import make_recipients, stats
from bench.servers import Server
from bench.versions import ours


def scale_stage(
    work: Path, server: Server, *, counts: list[int], runs: int
) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """Per recipient count and mode: wall seconds and RSS (one run only above 10 000 recipients).
    Leaves work/recipients holding the last count: the caller rewrites it."""
    scale: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for count in counts:
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
    return scale
