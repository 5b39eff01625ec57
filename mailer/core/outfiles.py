"""Write output files (``preview``) so that no link planted in the folder redirects them.

Each file is written under a fresh temporary name (``O_EXCL | O_NOFOLLOW``, relative to the opened
folder) and then renamed over the target. A rename replaces the directory entry itself: a symbolic
link, a hard link or a FIFO at the target is replaced, never written through, so a link to a file
outside the folder cannot make seminar-mailer overwrite that file.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from mailer.core.errors import ConfigError


def write_files(folder: Path, files: dict[str, bytes], *, what: str = "the preview") -> None:
    """Create ``folder`` if needed and write each ``name: data`` into it; names are plain file names."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as err:
        raise ConfigError(f"{folder}: cannot write {what}: {err.strerror}") from err
    try:
        for name, data in files.items():
            if "/" in name or name in ("", ".", ".."):
                raise ConfigError(f"{folder}: {name!r} is not a plain file name")
            _write(dir_fd, folder, name, data, what)
    finally:
        os.close(dir_fd)


def _write(dir_fd: int, folder: Path, name: str, data: bytes, what: str) -> None:
    temporary = f".{name}.{secrets.token_hex(6)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(temporary, flags, 0o644, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            os.unlink(temporary, dir_fd=dir_fd)
            raise
    except IsADirectoryError as err:
        raise ConfigError(f"{folder / name}: is a folder; wanted the place of a file") from err
    except OSError as err:
        raise ConfigError(f"{folder / name}: cannot write {what}: {err.strerror}") from err
