"""Read a mailing list (recipients/<list>.txt or .csv) and the suppression lists, streaming.

One address a line, optionally ``Name <addr>``; ``#`` comments and blank lines are allowed. A CSV
list has the header ``email,name``. Duplicates (domain compared case-insensitively) count once.
Invalid lines become problems (``check`` reports them, ``send`` warns and skips them).
"""

from __future__ import annotations

import csv
import itertools
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from mailer.core.address import Address, parse_address
from mailer.core.errors import ConfigError, Problem
from mailer.core.zones import zone_named

UNSUBSCRIBED = "unsubscribed.txt"


class Entry(NamedTuple):
    """One line of a list file: a recipient or the problem with that line. (A named tuple, not a frozen
    dataclass: as immutable, and made in a quarter of the time, once for each of a list's lines.)"""

    line: int
    recipient: Address | None
    problem: Problem | None
    delivery: str | None = None  # a CSV list's ``delivery`` column: all, digest or none (None: not given)
    zone: str | None = None  # a CSV list's ``timezone`` column: the reader's IANA zone (None: not given)


DELIVERIES = ("all", "digest", "none")  # every message (default), the digests that gather the list only, nothing


def list_file(folder: Path, list_name: str) -> Path:
    """Find recipients/<list>.txt or .csv; both at once is ambiguous."""
    found = [p for p in (folder / f"{list_name}.txt", folder / f"{list_name}.csv") if p.exists()]
    if not found:
        raise ConfigError(
            f"{folder / (list_name + '.txt')}: no such mailing list; wanted one address a line "
            f"in {list_name}.txt (or {list_name}.csv with the header email,name)"
        )
    if len(found) == 2:
        raise ConfigError(f"{found[0]} and {found[1]} both exist; wanted one list file")
    return found[0]


def _check(path: Path, line: int, raw: str, column: int = 1) -> Entry:
    address = parse_address(raw)
    if address is None:
        return Entry(
            line,
            None,
            Problem(
                path,
                line,
                column,
                f"{_shown(raw.strip())} is not a valid email address; "
                "wanted name@example.org or Name <name@example.org>",
            ),
        )
    return Entry(line, address, None)


def _shown(text: str, limit: int = 80) -> str:
    """A line as a problem quotes it: at most ``limit`` characters (a file that is not a list can be one
    line of megabytes)."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def read_entries(path: Path) -> Iterator[Entry]:
    """Yield every non-blank, non-comment line of a list file, parsed. Streams: memory stays flat."""
    try:
        handle = path.open("rb")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the list: {err.strerror}") from err
    with handle:
        if path.suffix == ".csv":  # the csv module ends a row at a lone CR too: hand it over as a line end
            lines = _decoded(path, handle)
            yield from _csv_entries(path, (part for line in lines for part in _LONE_CR.split(line)))
            return
        for number, text in enumerate(_text_lines(path, handle), start=1):
            if text[:1] not in _READ_THE_LONG_WAY and (address := parse_address(text)) is not None:
                yield Entry(number, address, None)  # (the common line: what _check would give, in one call)
                continue
            stripped = text.strip()
            if not stripped or stripped.startswith("#"):
                continue
            yield _check(path, number, text, len(text) - len(text.lstrip()) + 1)


_READ_THE_LONG_WAY = frozenset(("", "#", " ", "\t"))  # a blank line, a comment, or an indented one
_BLOCK = 1 << 16


def _text_lines(path: Path, handle: BinaryIO) -> Iterator[str]:
    """The lines of a text list without their line end (LF, or CR LF: ``rstrip("\\r\\n")``), as ``_decoded``
    gives them but decoded a block at a time, not a line at a time (a million-line list: a second less);
    a block that is not UTF-8 is decoded line by line, so that the error names its own line and column."""
    number = 0
    pending: list[bytes] = []  # (the start of a line that has not ended yet, in pieces: never joined again and again)
    while block := handle.read(_BLOCK):
        cut = block.rfind(b"\n") + 1
        if not cut:
            pending.append(block)
            continue
        whole, pending = b"".join((*pending, block[:cut])), [block[cut:]]
        try:
            lines = whole.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            lines = [*_decoded(path, whole.split(b"\n")[:-1], start=number + 1), ""]
        lines.pop()  # (what follows the block's last LF: nothing)
        number += len(lines)
        yield from (line.rstrip("\r") for line in lines) if b"\r" in whole else lines
    if rest := b"".join(pending):
        yield from (line.rstrip("\r\n") for line in _decoded(path, [rest], start=number + 1))


_LONE_CR = re.compile(r"(?<=\r)(?!\n)(?=.)", re.S)


def _decoded(path: Path, handle: Iterable[bytes], start: int = 1) -> Iterator[str]:
    """Lines (split at LF only: a stray CR stays inside its line and makes it invalid), decoded one by one
    so that a byte that is not UTF-8 is reported at its own line and column."""
    for number, raw in enumerate(handle, start=start):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as err:
            column = len(raw[: err.start].decode("utf-8", "replace")) + 1
            raise ConfigError(
                f"{path}:{number}:{column}: the file is not valid UTF-8; wanted it saved as UTF-8"
            ) from err


def _csv_entries(path: Path, lines: Iterator[str]) -> Iterator[Entry]:
    reader = csv.reader(lines)
    try:
        yield from _csv_rows(path, reader)
    except csv.Error as err:
        raise ConfigError(f'{path}:{reader.line_num}:1: {err}; wanted one row a line, fields quoted with "') from err


def _csv_rows(path: Path, reader: Any) -> Iterator[Entry]:
    header = next(reader, None)
    columns = [c.strip().lower() for c in header] if header else []
    if "email" not in columns:
        raise ConfigError(f"{path}:1:1: the CSV header is {header!r}; wanted the header row email,name")
    email_at, name_at = columns.index("email"), columns.index("name") if "name" in columns else None
    delivery_at = columns.index("delivery") if "delivery" in columns else None
    zone_at = columns.index("timezone") if "timezone" in columns else None
    next_start = reader.line_num + 1  # a row is reported where it starts: a quoted field may span lines
    for row in reader:
        number, next_start = next_start, reader.line_num + 1
        if not any(cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
            continue
        if len(row) <= email_at:
            yield Entry(number, None, Problem(path, number, 1, "missing the email column"))
            continue
        email = row[email_at].strip()
        name = row[name_at].strip() if name_at is not None and len(row) > name_at else ""
        if "<" in email or ">" in email or '"' in name or "<" in name:
            yield Entry(
                number,
                None,
                Problem(
                    path,
                    number,
                    1,
                    f"{email!r}: wanted a bare address in the email column and a plain name in the name column",
                ),
            )
            continue
        raw = f'"{name}" <{email}>' if name else email
        entry = _check(path, number, raw)
        if entry.recipient is not None and (delivery_at is not None or zone_at is not None):
            entry = _preferences(path, number, entry, _cell(row, delivery_at), _cell(row, zone_at))
        yield entry


def _cell(row: list[str], at: int | None) -> str:
    return row[at].strip() if at is not None and len(row) > at else ""


def _preferences(path: Path, number: int, entry: Entry, delivery: str, zone: str) -> Entry:
    """The entry with its CSV ``delivery`` and ``timezone`` (empty cells: the defaults), or the problem with them."""
    if delivery and delivery.lower() not in DELIVERIES:
        wanted = "all (every message), digest (only the digests that gather this list) or none"
        return Entry(number, None, Problem(path, number, 1, f"delivery {delivery!r}: wanted {wanted}"))
    if zone and zone_named(zone) is None:
        wanted = "an IANA time zone such as Europe/London, or an empty cell"
        return Entry(
            number, None, Problem(path, number, 1, f"timezone {_shown(zone)} is not a time zone; wanted {wanted}")
        )
    return Entry(number, entry.recipient, None, delivery.lower() or None, zone or None)


def suppressed_keys(paths: list[Path]) -> set[str]:
    """Read suppression lists (missing files are empty) into address keys."""
    keys: set[str] = set()
    for path in paths:
        if path.exists():
            keys.update(e.recipient.key for e in read_entries(path) if e.recipient is not None)
    return keys


INVALID, DUPLICATE, SUPPRESSED, ALREADY, DUE = "invalid", "duplicate", "suppressed", "already", "due"
HELD = "held"  # on the list, but chose the digests only, or nothing (delivery: digest or none)


def classify(
    path: Path,
    *,
    suppressed: set[str],
    done: set[str],
    subscribers: Iterable[Address] = (),
    held: set[str] | frozenset[str] = frozenset(),
) -> Iterator[tuple[str, Entry]]:
    """Sort every line of a list into invalid, duplicate, suppressed, held, already (done) or due; then the
    store's confirmed ``subscribers`` (as entries with line 0) that the file does not already hold."""
    # Every key seen, as UTF-8 bytes: the one set that grows with the list (a million addresses: a sixth less
    # memory than as str, whose header is larger; the same keys, one to one).
    seen: set[bytes] = set()
    from_store = (Entry(0, address, None) for address in subscribers)
    for entry in itertools.chain(read_entries(path), from_store):
        if entry.recipient is None:
            yield INVALID, entry
            continue
        key = entry.recipient.key
        if (known := key.encode()) in seen:
            if entry.line:  # a confirmed subscriber whom the file lists too is no mistake to report
                yield DUPLICATE, entry
            continue
        seen.add(known)
        if key in suppressed:
            yield SUPPRESSED, entry
        elif key in held:
            yield HELD, entry
        elif key in done:
            yield ALREADY, entry
        else:
            yield DUE, entry
