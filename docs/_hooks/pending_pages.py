"""MkDocs hook: stand-ins for the manual pages being written on other branches, until they are merged.

TEMPORARY. `invitations.md` and `environment.md` are written in parallel (issue 20) and are in the nav
already. Until their branches are merged, this hook adds a clearly marked placeholder page for each one
that is missing, so `mkdocs build --strict` checks every other page and link now. Once both files are in
docs/, this hook adds nothing: delete it and its `hooks:` line in mkdocs.yml.
"""

from __future__ import annotations

import logging
from typing import Any

from mkdocs.structure.files import File, Files

PENDING = {
    "invitations.md": "Calendar invitations",
    "environment.md": "Environment variables",
}

log = logging.getLogger("mkdocs.hooks.pending_pages")


def on_files(files: Files, config: Any) -> Files:
    """Add a marked placeholder for each pending page that is not in docs/ yet."""
    for name, title in PENDING.items():
        if files.get_file_from_path(name) is None:
            log.info("placeholder for %s: the page is written on another branch", name)
            text = (
                f"# {title}\n\n"
                '!!! warning "Placeholder"\n'
                "    This page is being written on another branch and is added when it is merged.\n"
            )
            files.append(File.generated(config, name, content=text))
    return files
