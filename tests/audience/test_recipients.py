"""Mailing-list files: parsing, problems at file:line:column, duplicates, suppression, streaming."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailer.audience.recipients import ALREADY, DUE, DUPLICATE, INVALID, SUPPRESSED, classify, list_file, read_entries
from mailer.core.errors import ConfigError
from tests.conftest import SCHEDULE, run_cli


def test_txt_lines_names_comments_and_problems(tmp_path: Path) -> None:
    path = tmp_path / "l.txt"
    path.write_text(
        "# comment\n\nAda Lovelace <ada@example.org>\n  alan@example.org\n"
        'bad@@example.org\n"Hopper, Grace" <grace@example.org>\nx@localhost\n'
    )
    entries = list(read_entries(path))
    assert [(e.line, e.recipient.name if e.recipient else None) for e in entries] == [
        (3, "Ada Lovelace"),
        (4, ""),
        (5, None),
        (6, "Hopper, Grace"),
        (7, None),
    ]
    assert str(entries[2].problem).startswith(f"{path}:5:1: 'bad@@example.org' is not a valid email address")
    assert str(entries[4].problem).startswith(f"{path}:7:1:")  # a domain without a dot is not deliverable


def test_csv_with_header(tmp_path: Path) -> None:
    path = tmp_path / "l.csv"
    path.write_text("email,name\nada@example.org,Ada Lovelace\nnot-an-address,X\n")
    entries = list(read_entries(path))
    assert entries[0].recipient is not None and entries[0].recipient.name == "Ada Lovelace"
    assert entries[1].problem is not None and str(entries[1].problem).startswith(f"{path}:3:1: ")
    (tmp_path / "m.csv").write_text("mail,name\n")
    with pytest.raises(ConfigError, match="wanted the header row email,name"):
        list(read_entries(tmp_path / "m.csv"))


@pytest.mark.parametrize(
    "row",
    [
        "",  # a blank row
        "# a comment row",
        "   ,  ",  # only spaces
        "short-row-without-email-column",  # email is the second column here: a short row
        '"Ada ""The Countess"" Lovelace",ada@example.org',  # a quoted name is refused, by itself
    ],
)
def test_one_odd_csv_row_never_drops_the_rows_after_it(tmp_path: Path, row: str) -> None:
    """Each odd row is skipped or reported on its own line; every row after it is still read (mutants that
    turned these `continue`s into `break`s once dropped the rest of the list silently)."""
    path = tmp_path / "l.csv"
    path.write_text(f"name,email\nFirst,first@example.org\n{row}\nLast,last@example.org\n")
    entries = list(read_entries(path))
    read = [e.recipient.addr for e in entries if e.recipient is not None]
    assert read[0] == "first@example.org" and read[-1] == "last@example.org", entries
    problems = [e.problem for e in entries if e.problem is not None]
    assert all(p.line == 3 for p in problems), problems


def test_classify_duplicates_suppressed_and_already_sent(tmp_path: Path) -> None:
    path = tmp_path / "l.txt"
    path.write_text("a@example.org\nA@EXAMPLE.ORG\nb@example.org\nc@example.org\nd@example.org\nnope\n")
    kinds = [k for k, _ in classify(path, suppressed={"b@example.org"}, done={"c@example.org"})]
    assert kinds == [DUE, DUPLICATE, SUPPRESSED, ALREADY, DUE, INVALID]


def test_missing_or_ambiguous_list_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such mailing list"):
        list_file(tmp_path, "lm")
    (tmp_path / "lm.txt").write_text("")
    (tmp_path / "lm.csv").write_text("email\n")
    with pytest.raises(ConfigError, match="both exist"):
        list_file(tmp_path, "lm")


def test_check_reports_recipient_lines_and_exits_2(tmp_path: Path) -> None:
    (tmp_path / "learning-machines.txt").write_text("ada@example.org\nAda <ada@example\n")
    result = run_cli("check", "--schedule", str(SCHEDULE), "--recipients", str(tmp_path))
    assert result.code == 2 and f"error: {tmp_path}/learning-machines.txt:2:1: " in result.err
    assert "Traceback" not in result.err


def test_a_list_is_read_as_a_stream(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_text("".join(f"user{i}@example.org\n" for i in range(50_000)))
    entries = read_entries(path)
    first = next(entries)  # the generator yields before reading the rest
    assert first.recipient is not None and first.recipient.addr == "user0@example.org"
    assert sum(1 for _ in entries) == 49_999


def test_each_problem_names_its_exact_place(tmp_path: Path) -> None:
    """Every position in a message is the one to go to (mutation testing found these unchecked): the two list
    files by name, the column of a byte that is not UTF-8, and column 1 of a CSV row that lacks its address or
    holds a whole mailbox in the email column."""
    import re

    (tmp_path / "lm.txt").write_text("")
    (tmp_path / "lm.csv").write_text("email\n")
    both = f"{re.escape(str(tmp_path / 'lm.txt'))} and {re.escape(str(tmp_path / 'lm.csv'))} both exist"
    with pytest.raises(ConfigError, match=both):
        list_file(tmp_path, "lm")
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"ada@example.org\nbj\xf6rn@example.org\n")
    with pytest.raises(ConfigError, match=re.escape(f"{latin}:2:3: the file is not valid UTF-8")):
        list(read_entries(latin))
    odd = tmp_path / "odd.csv"
    odd.write_text("name,email\nAda\nGrace,Grace Hopper <grace@example.org>\n")
    entries = list(read_entries(odd))
    assert str(entries[0].problem) == f"{odd}:2:1: missing the email column"
    assert str(entries[1].problem).startswith(f"{odd}:3:1: 'Grace Hopper <grace@example.org>': wanted a bare address")


def _line_by_line(path: Path) -> list[tuple[int, str | None, str | None]]:
    """The text list read as it was before blocks: each line decoded alone, ``rstrip("\\r\\n")``, stripped."""
    out: list[tuple[int, str | None, str | None]] = []
    for number, raw in enumerate(path.read_bytes().split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            out.append((number, None, "not UTF-8"))
            break
        stripped = text.strip()
        if not stripped or stripped.startswith("#"):
            continue
        from mailer.core.address import parse_address

        address = parse_address(text)
        out.append((number, address.addr if address else None, None if address else f"{path}:{number}:"))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_a_text_list_read_in_blocks_gives_what_each_line_alone_gives(
    tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks of a few bytes (so that lines, CR LF pairs and UTF-8 sequences fall across their edges): every
    line, number, address and problem as line by line, and a byte that is not UTF-8 reported at its line."""
    import random

    from mailer.audience import recipients

    rng = random.Random(seed)
    pieces = [
        "ada@example.org", "  grace@example.org", "Ada Lovelace <ada2@example.org>", "# a comment", "", "   ",
        "jösé@exämple.org", "not an address", "x@y.org\r", "#z@example.org", "\tt@example.org", "a@b.org \r\r",
        "Zoë <zoe@example.org>", "user@example.org\r\x0bx",
    ]  # fmt: skip
    lines = [rng.choice(pieces) for _ in range(rng.randint(0, 30))]
    data = "\n".join(lines).encode() + (b"\n" if rng.random() < 0.5 else b"")
    if rng.random() < 0.3 and data:
        at = rng.randrange(len(data))
        data = data[:at] + b"\xff" + data[at:]
    path = tmp_path / "list.txt"
    path.write_bytes(data)
    monkeypatch.setattr(recipients, "_BLOCK", rng.randint(1, 9))
    want = _line_by_line(path)
    got: list[tuple[int, str | None, str | None]] = []
    try:
        for entry in read_entries(path):
            problem = None if entry.problem is None else f"{path}:{entry.line}:"
            got.append((entry.line, entry.recipient.addr if entry.recipient else None, problem))
    except ConfigError as err:
        assert want and want[-1][2] == "not UTF-8", err
        number = want[-1][0]
        assert str(err).startswith(f"{path}:{number}:") and "not valid UTF-8" in str(err)
        want.pop()
        assert got == want[: len(got)]  # (what came before the bad line may come first, or not at all)
        return
    assert got == want
    for entry, (_, _, problem) in zip(read_entries(path), want, strict=True):
        assert problem is None or str(entry.problem).startswith(problem)


def test_a_file_of_one_huge_line_is_one_problem_quoted_briefly(tmp_path: Path) -> None:
    """A file that is not a list (here 3 MB and no line end, read over many blocks) is one invalid line 1, its
    problem quoting the start of it and its length, not megabytes."""
    path = tmp_path / "list.txt"
    path.write_bytes(b"x" * 3_000_000)
    (entry,) = read_entries(path)
    assert entry.line == 1 and entry.recipient is None
    assert str(entry.problem) == f"{path}:1:1: {'x' * 80!r}... (3000000 characters) is not a valid email address; " \
        "wanted name@example.org or Name <name@example.org>"  # fmt: skip


def test_a_byte_that_is_not_utf8_in_a_csv_list_is_reported_at_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_bytes(b"email,name\nada@example.org,Ada\nbj\xf6rn@example.org,Bj\xf6rn\n")
    with pytest.raises(ConfigError, match=r"list\.csv:3:3: the file is not valid UTF-8"):
        list(read_entries(path))


def test_a_csv_lists_delivery_and_timezone_columns(tmp_path: Path) -> None:
    """The optional columns: a valid choice and zone are kept, empty or missing cells are the defaults, a bad
    value is a problem at its line, and a bad address stays a problem whatever the columns hold."""
    path = tmp_path / "list.csv"
    path.write_text(
        "email,name,delivery,timezone\n"
        "ada@example.org,Ada,digest,Europe/London\n"  # 2: both chosen
        "grace@example.org,Grace,,\n"  # 3: empty cells
        "alan@example.org,Alan\n"  # 4: a short row: no cells at all
        "bad@,Bad,all,Europe/Paris\n"  # 5: not an address
        "kurt@example.org,Kurt,weekly,\n"  # 6: no such choice
        "emmy@example.org,Emmy,ALL,Mars/Olympus\n"  # 7: no such zone
    )
    entries = {e.line: e for e in read_entries(path)}
    assert (entries[2].delivery, entries[2].zone, entries[2].problem) == ("digest", "Europe/London", None)
    for line in (3, 4):
        assert entries[line].recipient is not None and (entries[line].delivery, entries[line].zone) == (None, None)
    assert entries[5].recipient is None and "is not a valid email address" in str(entries[5].problem)
    assert str(entries[6].problem).startswith(f"{path}:6:1: delivery 'weekly': wanted all (every message)")
    assert str(entries[7].problem).startswith(f"{path}:7:1: timezone 'Mars/Olympus' is not a time zone")


def test_a_line_of_exactly_the_quoted_length_is_quoted_whole(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_text("y" * 80 + "\n")
    (entry,) = read_entries(path)
    assert str(entry.problem).startswith(f"{path}:1:1: {'y' * 80!r} is not a valid email address")


@pytest.mark.parametrize(
    ("column", "value", "field"), [("delivery", "none", "delivery"), ("timezone", "Asia/Tokyo", "zone")]
)
def test_either_optional_column_alone_is_read(tmp_path: Path, column: str, value: str, field: str) -> None:
    path = tmp_path / "list.csv"
    path.write_text(f"email,{column}\nada@example.org,{value}\n")
    (entry,) = read_entries(path)
    assert getattr(entry, field) == value and entry.problem is None


def test_a_last_line_without_its_line_end_is_numbered_and_decoded_like_the_others(tmp_path: Path) -> None:
    path = tmp_path / "list.txt"
    path.write_bytes(b"ada@example.org\nbj\xf6rn@example.org")
    with pytest.raises(ConfigError, match=r"list\.txt:2:3: the file is not valid UTF-8"):
        list(read_entries(path))
    path.write_bytes(b"ada@example.org\nnot an address\r")
    assert [(e.line, e.problem is None) for e in read_entries(path)] == [(1, True), (2, False)]


def test_a_timezone_cell_too_long_for_a_file_name_is_a_problem_at_its_line(tmp_path: Path) -> None:
    """zoneinfo answers such a name with an OSError, not as an unknown zone: still the line's problem."""
    path = tmp_path / "list.csv"
    path.write_text(f"email,timezone\nada@example.org,{'x' * 300}\n")
    (entry,) = read_entries(path)
    assert str(entry.problem).startswith(f"{path}:2:1: timezone {'x' * 80!r}... (300 characters) is not a time zone")
