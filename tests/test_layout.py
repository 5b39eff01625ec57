"""The house: mailer/ is grouped by idea, and imports point one way, down the groups.

Read from the source itself (every import, lazy ones and those only for type checking included), so a new
module or import that breaks the architecture fails here, naming the file, the line and the rule.
docs/architecture.md draws the same table.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mailer"

# Each group, and the groups it may import from. The order is the architecture: durable state below
# everything that sends or serves; compose below deliver (the pool sends prepared messages); one run of
# send above the audience it reads; the CLI on top.
MAY_IMPORT: dict[str, set[str]] = {
    "core": set(),
    "programme": {"core"},
    "record": {"core"},
    "compose": {"core", "programme"},
    "deliver": {"core", "record", "compose"},
    "audience": {"core", "programme", "record", "compose", "deliver"},
    "run": {"core", "programme", "record", "compose", "deliver", "audience"},
    "site": {"core", "programme", "record", "compose", "run"},
    "cli": {"core", "programme", "record", "compose", "deliver", "audience", "run", "site"},
}
TOP_LEVEL = {"__init__.py", "__main__.py"}  # the package's version and `python -m mailer`
MAX_LINES = 550  # "about 500": a module longer than this has two ideas in it


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import of a mailer module in ``path``, wherever it stands in the file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("mailer")]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mailer"):
            assert node.level == 0, f"{path}:{node.lineno}: a relative import; the project imports absolutely"
            # `from mailer.cli import audience` imports a module; `from mailer.cli.x import f` a name
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                out.append((node.lineno, sub if sub in MODULES else node.module))
    return out


def _group(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_lies_in_a_group() -> None:
    loose = [p for p in PACKAGE.glob("*.py") if p.name not in TOP_LEVEL]
    assert not loose, f"modules outside every group: {loose}; wanted each in one of {sorted(MAY_IMPORT)}"
    groups = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert groups == set(MAY_IMPORT), f"groups on disk {sorted(groups)}, in the table {sorted(MAY_IMPORT)}"
    for group in groups:
        doc = ast.get_docstring(ast.parse((PACKAGE / group / "__init__.py").read_text()))
        assert doc, f"mailer/{group}/__init__.py says nothing of what the group holds"


def test_the_table_of_groups_has_no_cycle() -> None:
    order: list[str] = []
    while len(order) < len(MAY_IMPORT):
        ready = [g for g, below in MAY_IMPORT.items() if g not in order and below <= set(order)]
        assert ready, f"the groups {sorted(set(MAY_IMPORT) - set(order))} import each other"
        order += sorted(ready)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if _group(m) in MAY_IMPORT))
def test_imports_point_down_the_groups(module: str) -> None:
    group = _group(module)
    assert group is not None
    wrong = [
        f"{MODULES[module]}:{line}: {module} ({group}) imports {target} ({_group(target)}); "
        f"{group} may import only from {sorted(MAY_IMPORT[group]) or 'nothing of the project'}"
        for line, target in _imports(MODULES[module])
        if _group(target) not in (group, *MAY_IMPORT[group], None)
    ]
    assert not wrong, "\n".join(wrong)


def test_no_module_imports_itself_round_a_cycle() -> None:
    graph = {m: {t for _, t in _imports(p) if t in MODULES and t != m} for m, p in MODULES.items()}
    # (A package's __init__ importing its own modules is how a package is made, not a cycle of ideas.)
    graph = {m: {t for t in ts if not t.startswith(m + ".")} for m, ts in graph.items()}
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                raise AssertionError("an import cycle: " + " -> ".join([*path[path.index(t) :], t]))
            if t not in state:
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)


def test_no_module_holds_two_ideas_in_one_long_file() -> None:
    long = {
        str(p.relative_to(PACKAGE.parent)): n
        for p in PACKAGE.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines: {long}; wanted each split by idea"


def test_the_architecture_page_shows_this_table() -> None:
    page = (PACKAGE.parent / "docs" / "architecture.md").read_text()
    table = page.split("| group | may import from |\n| --- | --- |\n", 1)[1].split("\n\n", 1)[0]
    shown = {}
    for line in table.splitlines():
        group, below = (cell.strip().strip("`") for cell in line.strip("|").split("|"))
        names = set() if below == "nothing of the project" else set(below.split(", "))
        shown[group] = set(MAY_IMPORT) - {group} if below == "all of them" else names
    assert shown == MAY_IMPORT, "docs/architecture.md's table of groups differs from MAY_IMPORT here"
