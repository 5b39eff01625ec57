"""Load a YAML file into a tree of positioned nodes, safely.

PyYAML's ``safe_load`` loses line numbers, silently keeps the last of two duplicate keys, reads
``15:00`` as the integer 900 and expands alias bombs into memory. This module composes the
document instead (no Python objects are built from tags), keeps the 1-based position of every node,
rejects duplicate keys and non-standard tags, and bounds the size of the file and of the expanded
tree, so that the schema stage can report every problem at ``path:line:column``.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from mailer.core.errors import Problem, ScheduleError

MAX_BYTES = 1_000_000  # a year of weekly seminars with long abstracts is ~100 KB
MAX_NODES = 20_000  # nodes after alias expansion; a real schedule has a few hundred
MAX_DEPTH = 32  # lists and mappings inside each other; a schedule needs 3

_TAG = "tag:yaml.org,2002:"
_SCALAR_TAGS = {_TAG + t for t in ("str", "int", "float", "bool", "null", "timestamp")}
_ALLOWED_TAGS = _SCALAR_TAGS | {_TAG + "map", _TAG + "seq"}


@dataclass(slots=True)
class Node:
    """A YAML node with its 1-based position."""

    line: int
    column: int


@dataclass(slots=True)
class Scalar(Node):
    """A scalar: ``value`` is what YAML 1.1 makes of it, ``raw`` the text as written."""

    value: object
    raw: str
    quoted: bool
    error: str | None = None  # e.g. an impossible date: the schema reports it in context


@dataclass(slots=True)
class Mapping(Node):
    """A mapping with string keys, in file order; ``keys`` keeps each key's own position."""

    values: dict[str, Node] = field(default_factory=dict)
    keys: dict[str, Scalar] = field(default_factory=dict)


@dataclass(slots=True)
class Sequence(Node):
    """A sequence."""

    items: list[Node] = field(default_factory=list)


def describe(node: Node) -> str:
    """Name what a node holds, for messages such as 'got the number 900'."""
    if isinstance(node, Mapping):
        return "a mapping"
    if isinstance(node, Sequence):
        return "a list"
    assert isinstance(node, Scalar)
    v = node.value
    if v is None:
        return "nothing (an empty value)"
    if isinstance(v, bool):
        return f"the boolean {str(v).lower()} (YAML 1.1 reads {node.raw!r} as a boolean)"
    if isinstance(v, int | float):
        return f"the number {v!r}"
    if isinstance(v, dt.datetime):
        return f"the timestamp {node.raw}"
    if isinstance(v, dt.date):
        return f"the date {node.raw}"
    return f"the text {node.raw!r}"


def _pos(mark: yaml.Mark | None) -> tuple[int | None, int | None]:
    return (mark.line + 1, mark.column + 1) if mark is not None else (None, None)


class _Builder:
    def __init__(self, path: Path, loader: yaml.SafeLoader) -> None:
        self.path = path
        self.loader = loader
        self.budget = MAX_NODES
        self.problems: list[Problem] = []
        self.open: set[int] = set()  # the lists and mappings being built: an alias to one is a loop

    def problem(self, node: yaml.Node, message: str) -> None:
        line, col = _pos(node.start_mark)
        self.problems.append(Problem(self.path, line, col, message))

    def build(self, node: yaml.Node) -> Node:
        self.budget -= 1
        if self.budget < 0:
            line, col = _pos(node.start_mark)
            raise ScheduleError.from_problems(
                [
                    Problem(
                        self.path,
                        line,
                        col,
                        f"the document expands to more than {MAX_NODES} values (anchors and "
                        "aliases repeated many times?); wanted a plain schedule without alias chains",
                    )
                ]
            )
        line, col = _pos(node.start_mark)
        assert line is not None and col is not None
        if node.tag not in _ALLOWED_TAGS:
            tag = node.tag.replace(_TAG, "!!")
            self.problem(node, f"the tag {tag} is not allowed; wanted plain text, numbers, dates, lists and mappings")
            return Scalar(line, col, value=None, raw="", quoted=False, error="disallowed tag")
        if isinstance(node, yaml.ScalarNode):
            return self.scalar(node, line, col)
        if id(node) in self.open:
            # `series: &a [*a]`: an alias inside the very list or mapping it names.
            self.problem(
                node, "an alias refers to the list or mapping that holds it, a loop; wanted the values written out"
            )
            return Scalar(line, col, value=None, raw="", quoted=False, error="alias loop")
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return Sequence(line, col, items=[self.build(item) for item in node.value])
            assert isinstance(node, yaml.MappingNode)
            return self.mapping(node, line, col)
        finally:
            self.open.discard(id(node))

    def scalar(self, node: yaml.ScalarNode, line: int, col: int) -> Scalar:
        quoted = node.style in ("'", '"')
        try:
            value = self.loader.construct_object(node, deep=True)
        except (ValueError, OverflowError, yaml.YAMLError) as err:
            return Scalar(line, col, value=node.value, raw=node.value, quoted=quoted, error=str(err))
        return Scalar(line, col, value=value, raw=node.value, quoted=quoted)

    def mapping(self, node: yaml.MappingNode, line: int, col: int) -> Mapping:
        result = Mapping(line, col)
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":
                self.problem(key_node, "merge keys (<<) are not supported; wanted the keys written out")
                continue
            key = self.build(key_node)
            if not isinstance(key, Scalar) or not isinstance(key.value, str):
                self.problem(key_node, f"a key must be text, got {describe(key)}")
                continue
            name = key.value
            if name in result.values:
                first = result.keys[name]
                self.problem(
                    key_node,
                    f"duplicate key '{name}' (first at line {first.line}); "
                    "YAML would silently keep only the last one: wanted each key once",
                )
                continue
            result.keys[name] = key
            result.values[name] = self.build(value_node)
        return result


def _tab_problems(path: Path, text: str) -> list[Problem]:
    problems = []
    for number, line in enumerate(text.splitlines(), start=1):
        indent = line[: len(line) - len(line.lstrip(" \t"))]
        if "\t" in indent:
            problems.append(
                Problem(
                    path,
                    number,
                    indent.index("\t") + 1,
                    "a tab in the indentation; YAML allows only spaces there: wanted spaces instead of the tab",
                )
            )
    return problems


_OPEN = (
    yaml.BlockMappingStartToken,
    yaml.BlockSequenceStartToken,
    yaml.FlowMappingStartToken,
    yaml.FlowSequenceStartToken,
)
_CLOSE = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)


def _depth_problem(path: Path, text: str) -> Problem | None:
    """Refuse deep nesting before composing: PyYAML's composer recurses once per level."""
    depth = 0
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if isinstance(token, _OPEN):
                depth += 1
                if depth > MAX_DEPTH:
                    line, col = _pos(token.start_mark)
                    return Problem(
                        path, line, col, f"lists or mappings nested more than {MAX_DEPTH} deep; wanted a plain schedule"
                    )
            elif isinstance(token, _CLOSE):
                depth -= 1
    except yaml.YAMLError:
        return None  # the composer reports it, with its position
    return None


def _tokens_before(text: str, mark: yaml.Mark) -> list[yaml.Token]:
    """The tokens that scan cleanly before ``mark`` (at most the last two are kept)."""
    kept: list[yaml.Token] = []
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if token.start_mark.index >= mark.index:
                break
            kept = [*kept[-1:], token]
    except yaml.YAMLError:
        pass
    return kept


_KEY = re.compile(r"( *)(- +)?([A-Za-z_][\w-]*):(?: |$)")


def _key_at(line: str) -> tuple[int, str] | None:
    """The 0-based column and the name of the key a line starts with (after any ``- ``), if it does."""
    match = _KEY.match(line)
    return (len(match[1]) + len(match[2] or ""), match[3]) if match else None


def _indentation_problem(path: Path, text: str, lines: list[str], mark: yaml.Mark) -> Problem | None:
    """A key indented unlike the key above it: YAML reads it as more of that key's value (one more
    space) or as the end of the mapping (one less), and reports a colon or a block end; quotes do
    not help, the indentation does."""
    here = _key_at(lines[mark.line])
    if here is None or (mark.column != here[0] + len(here[1]) and mark.column != here[0]):
        return None
    above = next(
        (n for n in range(mark.line - 1, -1, -1) if lines[n].strip() and not lines[n].lstrip().startswith("#")), None
    )
    before = _tokens_before(text, mark)
    value = before[-1] if before else None
    continues = isinstance(value, yaml.ScalarToken) and value.plain and value.end_mark.line == mark.line
    if continues:
        assert value is not None
        above = value.start_mark.line  # this line continues the plain value that starts there
    owner = _key_at(lines[above]) if above is not None else None
    if above is None or owner is None or owner[0] == here[0]:
        return None
    (column, name), (wanted, key) = here, owner
    why = f", so YAML reads it as more of the value of '{key}'" if continues else ""
    return Problem(
        path,
        mark.line + 1,
        column + 1,
        f"'{name}:' is indented {'more' if column > wanted else 'less'} than '{key}:' on line {above + 1}{why}; "
        f"wanted '{name}:' in the same column as '{key}:' (column {wanted + 1})",
    )


def _quoted_value(line: str) -> str | None:
    """Suggest ``key: "value"`` for a source line ``key: value`` (None: the value is quoted already)."""
    indent = line[: len(line) - len(line.lstrip(" -"))]
    key, _, value = line.strip(" -").partition(": ")
    if value.strip()[:1] in ("'", '"'):
        return None
    value = value.strip().replace("\\", "\\\\").replace('"', '\\"')
    return f'{indent.strip() + " " if indent.strip() else ""}{key}: "{value}"'


def _syntax_problem(path: Path, text: str, err: yaml.MarkedYAMLError) -> Problem:
    """Say in plain words what the commonest YAML mistakes are, at the line where they were made."""
    problem = err.problem or ""
    mark = err.problem_mark or err.context_mark
    lines = text.splitlines()
    wanted = "wanted valid YAML (check quotes, colons and indentation)"
    indented = "mapping values are not allowed" in problem or "expected <block end>" in problem
    if indented and mark is not None and mark.line < len(lines):
        if found := _indentation_problem(path, text, lines, mark):
            return found
    if (
        "mapping values are not allowed" in problem
        and mark is not None
        and mark.line < len(lines)
        and (suggestion := _quoted_value(lines[mark.line])) is not None
    ):
        return Problem(
            path,
            mark.line + 1,
            mark.column + 1,
            "a colon followed by a space inside a value makes YAML read a second key; "
            f"wanted the value in quotes: {suggestion}",
        )
    if "end of stream" in problem and "quoted scalar" in (err.context or "") and err.context_mark is not None:
        quote = text[err.context_mark.index] if err.context_mark.index < len(text) else '"'
        return Problem(
            path,
            *_pos(err.context_mark),
            f"this {quote} is never closed; wanted the closing {quote} at the end of the value",
        )
    if mark is not None and problem.startswith("expected"):
        before = _tokens_before(text, mark)
        previous = before[-1] if before else None
        if isinstance(previous, yaml.ScalarToken) and previous.style in ("'", '"'):
            quote = previous.style
            start, end = previous.start_mark, previous.end_mark
            if start.line != end.line:
                return Problem(
                    path,
                    *_pos(start),
                    f"this {quote} is not closed on its line, so the value runs on to the {quote} on line "
                    f"{end.line + 1}; wanted the closing {quote} at the end of the value",
                )
            hint = " (inside '...', write an apostrophe as '')" if quote == "'" else ""
            return Problem(
                path,
                *_pos(mark),
                f"text after the closing {quote} of a quoted value; wanted the whole value inside the quotes{hint}",
            )
    at_end = "end of stream" in problem and err.context_mark is not None
    where = _pos(err.context_mark if at_end else mark)
    what = " ".join(p for p in (err.context, problem) if p)
    return Problem(path, *where, f"YAML syntax error: {what}; {wanted}")


def load(path: Path) -> tuple[Node, list[Problem]]:
    """Compose ``path`` into positioned nodes, with the problems found on the way.

    Raise ScheduleError when nothing can be read at all (syntax, size, encoding, tabs).
    """
    try:
        size = path.stat().st_size
        if size > MAX_BYTES:
            raise ScheduleError.from_problems(
                [Problem(path, None, None, f"the file is {size} bytes; wanted at most {MAX_BYTES} bytes")]
            )
        data = path.read_bytes()
    except OSError as err:
        raise ScheduleError(f"{path}: cannot read the schedule: {err.strerror}") from err
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise ScheduleError.from_problems(
            [Problem(path, line, column, "the file is not valid UTF-8; wanted it saved as UTF-8")]
        ) from err
    if problems := _tab_problems(path, text):
        raise ScheduleError.from_problems(problems)
    try:
        loader = yaml.SafeLoader(text)  # checks that every character is printable
    except yaml.reader.ReaderError as err:
        line = text.count("\n", 0, err.position) + 1
        column = err.position - (text.rfind("\n", 0, err.position) + 1) + 1
        raise ScheduleError.from_problems(
            [Problem(path, line, column, f"the control character {chr(err.character)!r}; wanted printable text")]
        ) from err
    if problem := _depth_problem(path, text):
        raise ScheduleError.from_problems([problem])
    try:
        root = loader.get_single_node()
        if root is None:
            raise ScheduleError.from_problems(
                [Problem(path, 1, 1, "the file is empty; wanted a 'series' and a 'seminars' section")]
            )
        builder = _Builder(path, loader)
        tree = builder.build(root)
    except yaml.MarkedYAMLError as err:
        raise ScheduleError.from_problems([_syntax_problem(path, text, err)]) from err
    except yaml.YAMLError as err:
        raise ScheduleError.from_problems([Problem(path, None, None, f"YAML error: {err}")]) from err
    except RecursionError as err:  # the depth scan should prevent it; a position-less message is the fallback
        raise ScheduleError.from_problems(
            [Problem(path, None, None, f"the document is nested too deeply; wanted at most {MAX_DEPTH} levels")]
        ) from err
    finally:
        loader.dispose()
    return tree, builder.problems
