"""A JSON Schema for the programme files (a series' or a digest's), built from the key tables (keys.py) the
validators in schedule.py and digest.py use.

Editors (VS Code's YAML extension and anything else on yaml-language-server) read it through the
``# yaml-language-server: $schema=...`` line that ``seminar-mailer init`` writes: they complete keys,
show each key's description, and flag mistakes while the organiser types. ``check`` remains the
authority: a schema cannot see duplicate keys, two seminars at the same time, or YAML 1.1's reading
of an unquoted 15:00 (editors read YAML 1.2, where it is text).
"""

from __future__ import annotations

import json
import zoneinfo
from typing import Any

from mailer.programme.keys import (
    APPROVALS,
    DIGEST_KEYS,
    DIGEST_TOP_KEYS,
    SEMINAR_KEYS,
    SERIES_KEYS,
    SITE_FORMATS,
    TOP_KEYS,
    Key,
)
from mailer.programme.model import WEEKDAYS
from mailer.programme.schedule import CONTROL_RE, ID_RE, LIST_NAME_RE

SCHEMA_FILE = "seminars.schema.json"
MODELINE = f"# yaml-language-server: $schema={SCHEMA_FILE}"

# The control characters the validator refuses in one-line text, as the inside of a character class.
# The patterns below are both ECMA-262 (what editors run) and Python regular expressions.
_CONTROL = CONTROL_RE.pattern[1:-1]
_SPACE = r"[ \t\n]*"  # stripped by the validator around a value
_ONE_LINE = rf"^{_SPACE}[^{_CONTROL}]*[^{_CONTROL} ][^{_CONTROL}]*{_SPACE}$"
_ANY_LINE = rf"(?:[^{_CONTROL}]|\n)*"
_MULTI_LINE = rf"^{_ANY_LINE}[^{_CONTROL} ]{_ANY_LINE}$"
_MAILBOX = r"[^<>\s@]+@[^<>\s@.]+(?:\.[^<>\s@.]+)+"
_URL_MAX = 500


def _fragment(key: Key) -> dict[str, Any]:
    """The schema of one value, by the kind the validator reads it as."""
    text = {"type": "string", "pattern": _ONE_LINE}
    fragment: dict[str, Any]
    match key.kind:
        case "text":
            fragment = text
        case "markdown":
            fragment = {"type": "string", "pattern": _MULTI_LINE}
        case "url":
            fragment = {
                "type": "string",
                "maxLength": _URL_MAX,
                "pattern": r"^\s*[hH][tT][tT][pP][sS]?://[^\s/?#]+(?:[/?#][^\s]*)?\s*$",
            }
        case "address":
            fragment = {"type": "string", "pattern": rf"^\s*(?:[^<>{_CONTROL}]*<{_MAILBOX}>|{_MAILBOX})\s*$"}
        case "addresses":
            one = {"type": "string", "pattern": rf"^\s*(?:[^<>{_CONTROL}]*<{_MAILBOX}>|{_MAILBOX})\s*$"}
            fragment = {"anyOf": [one, {"type": "array", "items": one, "minItems": 1}]}
        case "zone":
            fragment = {"type": "string", "enum": sorted(zoneinfo.available_timezones())}
        case "clock":
            fragment = {"type": "string", "pattern": r"^\s*(?:[01]?[0-9]|2[0-3]):[0-5][0-9]\s*$"}
        case "date":
            fragment = {"type": "string", "pattern": r"^\d{4}-\d{2}-\d{2}$", "format": "date"}
        case "number":
            fragment = {"type": "integer", "minimum": key.low, "maximum": key.high}
        case "list":
            fragment = {"type": "string", "pattern": LIST_NAME_RE.pattern}
        case "lists":
            name = {"type": "string", "pattern": LIST_NAME_RE.pattern}
            fragment = {"type": "array", "items": name, "minItems": 1, "uniqueItems": True}
        case "id":
            fragment = {"type": "string", "pattern": ID_RE.pattern}
        case "reminder":
            at_or_before = r"(?:(?:[01]?[0-9]|2[0-3]):[0-5][0-9]|\d{1,3}\s*(?:h|m|min))"
            fragment = {"type": "string", "pattern": rf"^\s*{at_or_before}\s*$"}
        case "announce":
            days = "|".join(f"[{d[0]}{d[0].upper()}]{d[1:3]}[a-z]*" for d in WEEKDAYS)
            fragment = {"type": "string", "pattern": rf"^\s*(?:(?:{days})\s+)?(?:[01]?[0-9]|2[0-3]):[0-5][0-9]\s*$"}
        case "cancelled":
            fragment = {"anyOf": [{"type": "boolean"}, text]}
        case "site":
            fragment = {"type": "string", "enum": list(SITE_FORMATS)}
        case "approval":
            fragment = {"type": "string", "enum": list(APPROVALS)}
        case "boolean":
            fragment = {"type": "boolean"}
        case "series":
            fragment = _object(SERIES_KEYS)
        case "digest":
            fragment = _object(DIGEST_KEYS)
        case "seminars":
            fragment = {"type": "array", "items": _object(SEMINAR_KEYS)}
        case _:
            raise ValueError(f"no JSON Schema for the kind {key.kind!r} of key table entry {key}")
    return {"description": key.doc, **fragment}


def _object(keys: dict[str, Key]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {name: _fragment(key) for name, key in keys.items()},
        "required": [name for name, key in keys.items() if key.required],
        "additionalProperties": False,
    }


def json_schema() -> dict[str, Any]:
    """The schema of a programme file (JSON Schema draft 7, the newest yaml-language-server supports): a
    series' (``series:`` and ``seminars:``), or, where the file has a ``digest:`` key, a weekly digest's."""
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "seminar-mailer programme (data/*.yaml: a series, or a weekly digest)",
        "description": "Checked by `seminar-mailer check`; see the docs' 'The programme file' and 'A department'.",
        "if": {"type": "object", "required": ["digest"]},
        "then": _object(DIGEST_TOP_KEYS),
        "else": _object(TOP_KEYS),
    }


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
