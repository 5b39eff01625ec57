"""The JSON Schema agrees with the validator on every valid and invalid schedule in the tests."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from mailer.core.errors import ScheduleError
from mailer.programme import yamlfile
from mailer.programme.digest import load_digest
from mailer.programme.keys import DIGEST_KEYS
from mailer.programme.schedule import load_schedule
from mailer.programme.schema import json_schema
from mailer.programme.yamlfile import Mapping, Node, Scalar, Sequence
from tests.conftest import SCHEDULE, VALID, run_cli
from tests.programme.test_schedule import CASES

# What a JSON Schema cannot express, each with the reason. Only these may disagree; the test below
# fails if one of them stops disagreeing (then remove it here) or another case starts to.
BEYOND_A_SCHEMA = {
    "duplicate key": "JSON has no duplicate keys: the YAML loader keeps one and check reports the other",
    "same date and time": "a schema compares no two list entries' fields",
}
NOT_A_DOCUMENT = {"tab indentation", "yaml syntax"}  # no data at all: editors report these as YAML errors


def as_json(node: Node) -> Any:
    """The data an editor validates: what the YAML holds, with dates as the text written."""
    if isinstance(node, Mapping):
        return {key: as_json(value) for key, value in node.values.items()}
    if isinstance(node, Sequence):
        return [as_json(item) for item in node.items]
    assert isinstance(node, Scalar)
    if node.error is not None or isinstance(node.value, dt.date):
        return node.raw
    return node.value


def schema_accepts(path: Path) -> bool:
    tree, _ = yamlfile.load(path)
    validator = jsonschema.Draft7Validator(json_schema(), format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    return validator.is_valid(as_json(tree))


def validator_accepts(path: Path) -> bool:
    try:
        load_schedule(path)
    except ScheduleError:
        return False
    return True


EXTRA = [  # valid variations the failure cases do not cover
    ("cancelled with a reason", "speaker: Joakim Lindblad", "speaker: Joakim Lindblad\n    cancelled: Speaker is ill"),
    ("cancelled true", "speaker: Joakim Lindblad", "speaker: Joakim Lindblad\n    cancelled: true"),
    ("seminar time, duration", "speaker: Joakim", 'speaker: Joakim\n    time: "10:15"\n    duration: 90'),
    ("duration out of range", "upcoming: 4", "upcoming: 4\n  duration: 0"),
    ("upcoming too large", "upcoming: 4", "upcoming: 51"),
    ("hour 24", 'time: "15:00"', 'time: "24:00"'),
    ("list name with capitals", "list: learning-machines", "list: Learning-Machines"),
    ("empty speaker", "speaker: Joakim Lindblad", 'speaker: ""'),
    ("tab inside a title", "title: Challenges in Fine-Grained Image Analysis", 'title: "Challenges\\tin"'),
    ("abstract with paragraphs", "Some *abstract*.", "Some *abstract*.\n\n      Second paragraph."),
    ("seminars empty", "seminars:\n  - date: 2024-01-18", "seminars: []\nx:\n  - date: 2024-01-18"),
]


@pytest.mark.parametrize(
    ("name", "old", "new"),
    [(c[0], c[1], c[2]) for c in CASES] + EXTRA + [("valid", "", "")],
    ids=[c[0] for c in CASES] + [e[0] for e in EXTRA] + ["valid"],
)
def test_schema_and_validator_agree(write_schedule, name: str, old: str, new: str) -> None:
    assert old in VALID
    path = write_schedule(VALID.replace(old, new, 1))
    checked = validator_accepts(path)
    if name in NOT_A_DOCUMENT:
        assert not checked
        with pytest.raises(ScheduleError):
            yamlfile.load(path)
        return
    schema = schema_accepts(path)
    if name in BEYOND_A_SCHEMA:
        assert (checked, schema) == (False, True), "the schema now catches this: remove it from BEYOND_A_SCHEMA"
    else:
        assert schema == checked, f"validator {'accepts' if checked else 'rejects'}, the schema does not agree"


def test_shipped_schedule_is_valid_under_the_schema() -> None:
    assert schema_accepts(SCHEDULE)


def test_schema_command_prints_the_schema_with_every_key() -> None:
    result = run_cli("schema")
    assert result.code == 0, result.err
    schema = json.loads(result.out)
    assert schema == json_schema()
    series = schema["else"]
    seminar = series["properties"]["seminars"]["items"]
    assert {"date", "speaker", "abstract", "cancelled"} <= set(seminar["properties"])
    assert seminar["required"] == ["date", "speaker"]
    assert "Europe/Stockholm" in series["properties"]["series"]["properties"]["timezone"]["enum"]
    digest = schema["then"]["properties"]["digest"]
    assert set(digest["properties"]) == set(DIGEST_KEYS) and digest["required"] == ["name", "sender", "list", "include"]


DIGEST = """\
digest:
  name: This Week at the Department
  sender: Department Seminars <seminars@example.org>
  list: week
  include: [colloquium, ml-seminar]
  send: "Monday 07:00"
  upcoming: 3
"""
DIGEST_CASES = [  # (what, old, new): each a digest file the validator refuses, but the first
    ("valid", "", ""),
    ("unknown key", "  upcoming: 3", "  upcomming: 3"),
    ("no include", "  include: [colloquium, ml-seminar]\n", ""),
    ("include empty", "[colloquium, ml-seminar]", "[]"),
    ("include not a list", "[colloquium, ml-seminar]", "colloquium"),
    ("include twice", "[colloquium, ml-seminar]", "[colloquium, colloquium]"),
    ("include not a list name", "ml-seminar]", "ML Seminar!]"),
    ("send not a time", '"Monday 07:00"', '"Mondays at seven"'),
    ("upcoming out of range", "upcoming: 3", "upcoming: 40"),
    ("sender not an address", "<seminars@example.org>", "<seminars>"),
    ("list not a file name", "  list: week", "  list: The Week"),
    ("a series key in a digest", "  upcoming: 3", "  upcoming: 3\n  location: Room 1"),
    ("digest and series", "digest:", "series:\n  name: x\ndigest:"),
]


@pytest.mark.parametrize(("name", "old", "new"), DIGEST_CASES, ids=[c[0] for c in DIGEST_CASES])
def test_schema_and_the_digest_validator_agree(tmp_path: Path, name: str, old: str, new: str) -> None:
    """A digest file (data/*.yaml with ``digest:``) is valid under the schema exactly when load_digest takes it."""
    text = DIGEST.replace(old, new, 1) if old else DIGEST
    assert old == "" or text != DIGEST, f"case {name!r} changes nothing"
    path = tmp_path / "week.yaml"
    path.write_text(text)
    try:
        load_digest(path)
        valid = True
    except ScheduleError:
        valid = False
    assert valid == (name == "valid"), name
    assert schema_accepts(path) == valid, f"{name}: the schema says {not valid}, the validator {valid}"
