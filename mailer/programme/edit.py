"""Edit the programme file in place, as text: seminars appended, a date or a time set, an ``id:`` added.

Every other byte (comments, quoting, key order, blank lines, the organiser's layout) stays as written: the
positioned tree of ``yamlfile`` says where each value is, and only those characters change. The new text
is validated as ``check`` would before it replaces the file (atomically, keeping its permissions); when it
is not valid nothing is written and the error names the file's own lines.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import tempfile
from pathlib import Path

import yaml

from mailer.core.errors import ScheduleError
from mailer.programme import yamlfile
from mailer.programme.model import Schedule
from mailer.programme.schedule import load_schedule
from mailer.programme.yamlfile import Mapping, Scalar, Sequence


def yaml_text(value: str) -> str:
    """A one-line YAML value: plain when YAML reads it back as that very text, else double-quoted."""
    try:
        plain = yaml.safe_load(value) == value and not re.search(r"(^[\s'\"&*!|>%@`#{\[-])|(: )|( #)|(\s$)", value)
    except yaml.YAMLError:
        plain = False
    return value if plain else json.dumps(value, ensure_ascii=False)


def yaml_block(value: str, indent: str) -> str:
    """Markdown of several lines as a literal block (``|``); the text as written, kept line for line."""
    if value[:1].isspace():
        return json.dumps(value, ensure_ascii=False)
    return "|\n" + "".join(f"{indent}{line}\n" if line else "\n" for line in value.rstrip("\n").split("\n"))


class Editor:
    """The programme's text and where its seminars are; edits apply to ``lines`` and keep the rest."""

    def __init__(self, path: Path) -> None:
        self.path = path
        tree, problems = yamlfile.load(path)
        if problems:
            raise ScheduleError.from_problems(problems)
        self.text = path.read_text(encoding="utf-8")
        self.lines = self.text.splitlines(keepends=True)
        if not isinstance(tree, Mapping) or not isinstance(tree.values.get("seminars"), Sequence):
            load_schedule(path)  # (says what is wrong, at its line)
            raise ScheduleError(f"{path}: wanted a 'seminars' list to edit")
        self.root = tree
        seminars = tree.values["seminars"]
        assert isinstance(seminars, Sequence)
        self.items = [i for i in seminars.items if isinstance(i, Mapping)]

    def _line(self, number: int) -> str:
        return self.lines[number - 1]

    def set_scalar(self, node: Scalar, text: str) -> None:
        """Put ``text`` (as it is to be written, quotes and all) where ``node``'s value is written."""
        line = self._line(node.line)
        start = node.column - 1
        written = f"{line[start]}{node.raw}{line[start]}" if node.quoted else node.raw
        if line[start : start + len(written)] != written or "\n" in node.raw:
            raise ScheduleError(
                f"{self.path}:{node.line}:{node.column}: cannot edit {node.raw!r} here (written over several "
                "lines or with escapes); wanted it on one line, as 'date: 2030-01-17' or 'time: \"15:00\"'"
            )
        self.lines[node.line - 1] = line[:start] + text + line[start + len(written) :]

    def set_value(self, item: Mapping, key: str, text: str) -> None:
        """``key: text`` in a seminar: its value (one line, or a block of several) replaced, or the key added."""
        if key not in item.keys:
            self.add_key(item, key, text)
            return
        name = item.keys[key]
        first = name.line - 1
        last = first  # the value's last line: the lines after the key indented deeper (and blanks among them)
        for n in range(first + 1, len(self.lines)):
            line = self.lines[n]
            if line.strip() and len(line) - len(line.lstrip(" ")) <= name.column - 1:
                break
            if line.strip():
                last = n
        line = self.lines[first]
        colon = line.index(":", name.column - 1 + len(key))
        newline = "\r\n" if line.endswith("\r\n") else "\n"
        self.lines[first : last + 1] = [line[: colon + 1] + " " + text.rstrip("\n") + newline]

    def add_key(self, item: Mapping, key: str, text: str) -> None:
        """Add ``key: text`` to a seminar, on the line after its ``date:``, indented as its other keys."""
        date_key = item.keys["date"]
        indent = " " * (date_key.column - 1)  # (on the '- date:' line, the keys below align with 'date')
        first = self._line(date_key.line)
        newline = "\r\n" if first.endswith("\r\n") else "\n"
        self.lines.insert(date_key.line, f"{indent}{key}: {text.rstrip(chr(10))}{newline}")

    def append(self, entries: list[list[tuple[str, str]]]) -> None:
        """Append seminars (each a list of (key, text)) after the last one, in the file's own indentation."""
        if self.items:
            dash = self._line(self.items[0].line)
            key_col = self.items[0].keys[next(iter(self.items[0].keys))].column - 1
            dash_col = dash.index("-")
        else:
            dash_col, key_col = 2, 4
        block = ""
        for entry in entries:
            for n, (key, text) in enumerate(entry):
                lead = " " * dash_col + "-" + " " * (key_col - dash_col - 1) if n == 0 else " " * key_col
                block += f"{lead}{key}: {text}\n"
        seminars_key = self.root.keys["seminars"]
        later = [k.line for k in self.root.keys.values() if k.line > seminars_key.line]
        if not self.items:  # 'seminars: []' (or nothing): the block list starts here
            line = self._line(seminars_key.line)
            head = line[: seminars_key.column - 1] + "seminars:"
            self.lines[seminars_key.line - 1] = head + "\n"
        if later:
            at = min(later) - 1
            while at > seminars_key.line and not self.lines[at - 1].strip():
                at -= 1  # before the blank lines that part the sections
            self.lines.insert(at, block)
        else:
            if self.lines and not self.lines[-1].endswith("\n"):
                self.lines[-1] += "\n"
            self.lines.append(block)

    def save(self) -> Schedule:
        """Validate the edited text as ``check`` would, then replace the file with it; return the new schedule."""
        text = "".join(self.lines)
        folder = self.path.parent
        handle, name = tempfile.mkstemp(prefix=".edit-", suffix=".yaml", dir=folder)
        temporary = Path(name)
        try:
            with os.fdopen(handle, "w", encoding="utf-8", newline="") as out:
                out.write(text)
            try:
                schedule = load_schedule(temporary)
            except ScheduleError as err:
                problems = tuple(
                    dataclasses.replace(p, path=self.path, message=f"{p.message} (after the edit, not saved)")
                    for p in err.problems
                )
                raise ScheduleError(
                    f"{self.path}: the edit is not valid; nothing was changed", problems=problems
                ) from err
            os.chmod(temporary, self.path.stat().st_mode & 0o7777)
            os.replace(temporary, self.path)
        finally:
            temporary.unlink(missing_ok=True)
        return Schedule(self.path, schedule.series, schedule.seminars, schedule.drafts)


def every(weekday: int, start: dt.date, until: dt.date, skip: set[dt.date]) -> list[dt.date]:
    """The days from ``start`` to ``until`` (both included) that fall on ``weekday`` (0 = Monday), less ``skip``."""
    first = start + dt.timedelta(days=(weekday - start.weekday()) % 7)
    days = []
    day = first
    while day <= until:
        if day not in skip:
            days.append(day)
        day += dt.timedelta(days=7)
    return days
