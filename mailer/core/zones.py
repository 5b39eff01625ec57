"""Time zones by IANA name, from any input: the one place a name typed by someone becomes a zone."""

from __future__ import annotations

import zoneinfo


def zone_named(name: str) -> zoneinfo.ZoneInfo | None:
    """The zone called ``name``, or None where there is none: unknown, malformed (``..``, a NUL), or a name too long
    for a file name, which zoneinfo reports as an OSError rather than as an unknown zone."""
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return None
