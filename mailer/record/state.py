"""The state folder: created private, one send per list at a time (its lock, dropped by the kernel even on
kill -9), and the signs that a ledger existed here, so an emptied, truncated or deleted ledger is an error
naming the file, never a fresh start that announces everything again."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from mailer.core.errors import ConfigError, LockedError

LEDGER_FILE = "ledger.sqlite3"
# No SQLite database that holds anything is smaller than its smallest page; SQLite itself takes a 1-byte file
# for a new, empty database (and writes a fresh one over it), so a file cut to 1..511 bytes must be caught here.
SMALLEST_DATABASE = 512


def cut_short(path: Path) -> int:
    """The size of ``path`` when it is a database file cut short (1 to 511 bytes), else 0."""
    try:
        size = path.stat().st_size
    except OSError:  # (missing, or a folder that cannot be read: what reads it next says so)
        return 0
    return size if 0 < size < SMALLEST_DATABASE else 0


def private_file(path: Path) -> None:
    """Create ``path`` 0600 if missing (SQLite gives its -wal and -shm files the same mode)."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    except OSError as err:
        raise ConfigError(f"{path}: cannot create the ledger: {err.strerror}; wanted a writable state folder") from err


def state_folder(state: Path) -> None:
    """Create the state folder 0700 if missing, and prove it writable before anything is sent."""
    try:
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"{state}: cannot create the state folder: {err.strerror}") from err
    if not os.access(state, os.W_OK | os.X_OK):
        raise ConfigError(f"{state}: the state folder is not writable; wanted a folder this user can write to")


LEDGER_MARK = b"ledger"  # in the lock file: a send that held it had its ledger (see check_state)


def mark_lock(state: Path, list_name: str) -> None:
    """Note in the list's lock file (if a run holds it) that this state folder has a ledger."""
    lock = state / f"{list_name}.lock"
    try:
        if lock.exists() and LEDGER_MARK not in (content := lock.read_bytes()):
            lock.write_bytes(content.strip() + b" " + LEDGER_MARK)
    except OSError:
        pass  # only a sign for check_state; the ledger itself is fine


def _previous_run(state: Path, list_name: str) -> bool:
    """Whether a send has run in ``state`` before: its lock file or token key exists."""
    return (state / f"{list_name}.lock").exists() or (state / "token.key").exists()


def check_state(state: Path, list_name: str) -> None:
    """A state folder whose ledger is missing or empty while other files show earlier sends is an error, never a
    fresh start: a fresh start announces everything again to everyone and forgets every refusal. (Called before
    the run lock is taken: the lock file is one of those signs.)"""
    path = state / LEDGER_FILE
    check_file(state, list_name)
    lock = state / f"{list_name}.lock"
    if not path.exists() and lock.exists() and LEDGER_MARK in lock.read_bytes():
        raise ConfigError(
            f"{state} holds {list_name}.lock (a send ran here) but no {LEDGER_FILE}: the ledger was moved or "
            f"deleted; put it back, or, to start afresh on purpose (everything is announced again), delete "
            f"{state / (list_name + '.lock')}"
        )


def check_file(state: Path, list_name: str) -> None:
    """The ledger file itself: an empty one, or a write-ahead log without it, is damage, not a fresh start."""
    path = state / LEDGER_FILE
    if size := cut_short(path):
        raise ConfigError(
            f"{path} is {size} bytes, too short for a ledger (at least {SMALLEST_DATABASE}): it was truncated; "
            "restore it from a backup (nothing was read or sent)"
        )
    if path.exists() and path.stat().st_size > 0:
        return
    wal = state / f"{LEDGER_FILE}-wal"
    if wal.exists() and wal.stat().st_size > 0:
        raise ConfigError(
            f"{wal} exists but {path} is {'empty' if path.exists() else 'missing'}: the ledger was moved or "
            "truncated without its write-ahead log; put ledger.sqlite3 back beside it (nothing was read or sent)"
        )
    if path.exists() and _previous_run(state, list_name):
        raise ConfigError(
            f"{path} is empty (0 bytes), but earlier sends ran in {state}: the ledger was truncated; restore it "
            "from a backup (starting afresh would announce everything again to everyone; if no send ever "
            "finished here, delete the empty file)"
        )


PROJECT_LOCK = "_project"  # (list names start with a letter or digit: no list's lock can be this one)


def project_lock(state: Path) -> AbstractContextManager[None]:
    """Hold the project's lock for a send of several series: one run at a time plans and sends them all."""
    return run_lock(state, PROJECT_LOCK, what="another send of this project's series")


@contextmanager
def run_lock(state: Path, list_name: str, *, what: str | None = None) -> Iterator[None]:
    """Hold the list's lock for one send. The kernel drops it when the process dies, even by kill -9."""
    state_folder(state)
    path = state / f"{list_name}.lock"
    what = what or f"another send for the list {list_name!r}"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as err:
        raise ConfigError(f"{path}: cannot create the lock file: {err.strerror}") from err
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").split(" ")[0].strip() or "another process"
            raise LockedError(
                f"{what} is running (pid {holder}, lock {path}); "
                "nothing was sent by this one: try again when it has finished"
            ) from None
        try:
            had_ledger = LEDGER_MARK in os.pread(fd, 64, 0) or (state / LEDGER_FILE).exists()
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}{' ' + LEDGER_MARK.decode() if had_ledger else ''}".encode(), 0)
        except OSError:
            pass  # the pid is only a courtesy for the message above; the lock itself is held
        yield
    finally:
        os.close(fd)
