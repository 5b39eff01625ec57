"""What a subscriber is told of a seminar, and how two versions of it differ.

The announced fields (what a message states; edits to anything else mail nobody), the changes between two
revisions as the reader sees them, which of those are only spelling fixes (silent), and the UID a seminar is
given at its first announcement, and the fingerprint of a week an organiser approves. Pure functions of the
schedule: the planner decides with them, the messages show them.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from mailer.programme.model import Schedule, Seminar

# The fields subscribers were told, in the order a change lists them.
_LABELS = {
    "date": "Date",
    "time": "Time",
    "duration": "Duration",
    "location": "Location",
    "zoom": "Zoom link",
    "speaker": "Speaker",
    "title": "Title",
    "cancelled": "Status",
}


def announced_fields(seminar: Seminar) -> dict[str, object]:
    """The fields a message tells about ``seminar``; edits to anything else (abstract, bio) mail nobody."""
    return {
        "date": seminar.date.isoformat(),
        "time": seminar.start.strftime("%H:%M"),
        "tz": seminar.tz_label,
        "duration": seminar.duration,
        "location": seminar.location,
        "zoom": seminar.zoom,
        "speaker": seminar.speaker,
        "title": seminar.title,
        "cancelled": seminar.cancelled,
    }


def week_fingerprint(seminars: Iterable[Seminar]) -> str:
    """What an organiser approves (series ``approval: required``): the announced fields of a week's seminars,
    as the file holds them then; any edit of one of them gives another fingerprint."""
    told = sorted((announced_fields(s) for s in seminars), key=lambda f: (str(f["date"]), str(f["time"])))
    return hashlib.sha256(json.dumps(told, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Change:
    label: str
    old: str
    new: str


def _shown(name: str, fields: Mapping[str, object]) -> str:
    value = fields.get(name)
    if name == "time":
        return f"{value} {fields.get('tz') or ''}".strip()
    if name == "duration":
        return f"{value} minutes"
    if name == "cancelled":
        return "on" if value is None else ("cancelled" + (f": {value}" if value else ""))
    return "(none)" if value in (None, "") else str(value)


def _folded(text: str) -> str:
    """Text as a reader tells names apart: no case, accents, punctuation or runs of spaces."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.sub(r"[\W_]+", " ", plain.casefold()).strip()


def _distance(a: str, b: str) -> int:
    """Edits (insert, delete, substitute, swap two neighbours) from ``a`` to ``b``."""
    previous, row = list(range(len(b) + 1)), [0] * (len(b) + 1)
    before: list[int] = []
    for i, x in enumerate(a, start=1):
        row = [i] + [0] * len(b)
        for j, y in enumerate(b, start=1):
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + (x != y))
            if i > 1 and j > 1 and x == b[j - 2] and a[i - 2] == y:
                row[j] = min(row[j], before[j - 2] + 1)
        before, previous = previous, row
    return previous[len(b)]


def is_spelling_fix(old: str, new: str) -> bool:
    """A correction of the same name or title, not another one: equal but for case, accents, punctuation or
    spacing, or at most two letters apart and at most one edit per eight letters ("Serge Belongi" ->
    "Serge Belongie" is; "Sam Lee" -> "Pam Lee" is not: a short name one letter apart is another person)."""
    a, b = _folded(old), _folded(new)
    if a == b:
        return True
    edits = _distance(a, b)
    return edits <= 2 and edits * 8 <= max(len(a), len(b))


SILENT_LABELS = ("Speaker", "Title")  # the fields whose spelling fixes mail nobody


def silent(what: tuple[Change, ...]) -> bool:
    """Whether these changes are only spelling fixes of the speaker's name or the title."""
    return all(c.label in SILENT_LABELS and is_spelling_fix(c.old, c.new) for c in what)


def changes(old: Mapping[str, object], new: Mapping[str, object]) -> tuple[Change, ...]:
    """What changed between two revisions, as the reader sees it: old -> new."""
    out = []
    for name, label in _LABELS.items():
        before, after = _shown(name, old), _shown(name, new)
        if before != after:
            out.append(Change(label, before, after))
    return tuple(out)


def derived_uid(schedule: Schedule, seminar: Seminar) -> str:
    """The identity given at a first announcement: list, date and speaker (pinned: list and id)."""
    domain = schedule.series.sender.ascii_addr.rpartition("@")[2]
    if seminar.id is not None:
        return f"{schedule.series.list_name}-{seminar.id}@{domain}"
    return f"{schedule.series.list_name}-{seminar.date.isoformat()}-{slug(seminar.speaker)}@{domain}"


def slug(text: str | None) -> str:
    return re.sub(r"[^a-z0-9]+", "-", (text or "").lower()).strip("-") or "seminar"


def first_revision(seminar: Seminar) -> int:
    return 1 if seminar.is_cancelled else 0
