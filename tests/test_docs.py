"""The manual (docs/, built by MkDocs) covers every command and option the real --help prints, builds
with --strict, and carries the current key reference; the README stays one page."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest

from mailer.programme.keys import DIGEST_KEYS, DIGEST_TOP_KEYS
from mailer.programme.schedule import SEMINAR_KEYS, SERIES_KEYS, TOP_KEYS
from tests.conftest import ROOT, run_cli

DOCS = ROOT / "docs"
OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def _manual() -> str:
    """Every page of the manual (the hook folder is not a page)."""
    pages = sorted(p for p in DOCS.rglob("*.md") if "_hooks" not in p.parts)
    assert pages, "no pages under docs/"
    return "\n".join(p.read_text(encoding="utf-8") for p in pages)


@cache
def _help(*command: str) -> str:
    result = run_cli(*command, "--help")
    assert result.code == 0 and result.err == "", result.err
    return result.out


def _section(text: str, title: str) -> list[str]:
    """The lines of one argparse section ("options:", "positional arguments:"), up to the next blank line."""
    lines = text.splitlines()
    if f"{title}:" not in lines:
        return []
    start = lines.index(f"{title}:") + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[start:end]


def _commands() -> list[str]:
    """The commands `seminar-mailer --help` lists."""
    found = [
        m.group(1) for line in _section(_help(), "positional arguments") if (m := re.match(r"^ {4}(\w[\w-]*)", line))
    ]
    assert len(found) >= 10, f"could not read the commands from --help:\n{_help()}"
    return found


def _options(*command: str) -> set[str]:
    """The options (and fixed choices such as {microsoft}) one --help describes."""
    found: set[str] = set()
    for line in _section(_help(*command), "options"):
        signature = re.split(r"\s{2,}", line.strip())[0]
        if signature.startswith("-"):
            found.update(OPTION.findall(signature))
    for line in _section(_help(*command), "positional arguments"):
        if m := re.match(r"^\s+\{([\w,-]+)\}", line):
            found.update(m.group(1).split(","))
    return found


def test_every_command_in_help_is_in_the_manual() -> None:
    manual = _manual()
    missing = [c for c in _commands() if not re.search(rf"seminar-mailer {re.escape(c)}(?![\w-])", manual)]
    assert not missing, f"commands --help lists that no page shows as `seminar-mailer COMMAND`: {missing}"


def test_every_option_in_help_is_in_the_manual() -> None:
    """Shared options appear anywhere; a command's own options on a line with that command before them."""
    manual = _manual()
    shared = _options()
    assert {"--schedule", "--state", "--date", "--version"} <= shared, shared
    missing = sorted(o for o in shared if not re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", manual))
    for command in _commands():
        own = _options(command) - shared
        for option in sorted(own):
            used = rf"(?:seminar-mailer |`){re.escape(command)} [^`\n]*?(?<![\w-]){re.escape(option)}(?![\w-])"
            if not re.search(used, manual):
                missing.append(f"{command} {option}")
    assert not missing, f"options --help prints that the manual does not show (with their command): {missing}"


def test_the_option_reader_sees_each_commands_own_options() -> None:
    """The coverage test above reads what it should: a few options it must find, and none it must not."""
    assert {"--dry-run", "--yes", "--to"} <= _options("send")
    assert {"--listen", "--trusted-proxy"} <= _options("serve")
    assert "microsoft" in _options("login")
    assert "--smtp" not in _options("send")


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_reference", ROOT / "scripts" / "docs_reference.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_key_reference_is_current_and_names_every_key() -> None:
    generator = _generator()
    committed = (DOCS / "reference" / "programme.md").read_text(encoding="utf-8")
    assert committed == generator.reference_text(), (
        "docs/reference/programme.md is stale: run python scripts/docs_reference.py and commit it"
    )
    rows = set(re.findall(r"^\| `(\w+)` \|", committed, re.M))
    assert rows == {*TOP_KEYS, *SERIES_KEYS, *SEMINAR_KEYS, *DIGEST_TOP_KEYS, *DIGEST_KEYS}


def test_the_readme_is_one_page_and_points_at_the_manual() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    assert readme.index("make demo") < readme.index("make test") < readme.index("make docs")
    targets = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", readme)  # relative links (the strict build skips the README)
    assert targets and not [t for t in targets if not (ROOT / t).is_file()], targets


def test_the_manual_builds_with_strict(tmp_path: Path) -> None:
    """mkdocs build --strict: a broken link, anchor or nav entry is an error."""
    missing = [name for name in ("mkdocs", "material") if importlib.util.find_spec(name) is None]
    if missing:
        pytest.skip(f"NOT BUILT: {', '.join(missing)} not installed (pip install -e '.[docs]'; CI installs it)")
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert (tmp_path / "site" / "reference" / "programme" / "index.html").exists()
