"""The ledger's journal (mailer/record/journal.py): results appended by the sender, folded into the ledger in bulk.

Real files and real processes: a sender killed with SIGKILL holds its journal under a lock the kernel drops, and
what it recorded reaches the ledger exactly once, whoever opens it next."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mailer.record import journal
from mailer.record.ledger import SENT, UNCERTAIN, Ledger
from mailer.record.rows import Mark

NOW = dt.datetime(2030, 1, 14, 7, tzinfo=dt.UTC)
ROOT = Path(__file__).resolve().parents[2]


def _mark(recipient: str, state: str = SENT, *, attempts: int = 1, doubt: bool = False) -> Mark:
    return Mark("m1", recipient, state, attempts, f"<{recipient}>", "250 ok", doubt)


def _deliveries(state: Path) -> dict[str, tuple[str, int, int]]:
    """recipient -> (state, attempts, doubts), as the ledger file itself holds them."""
    with contextlib.closing(sqlite3.connect(state / "ledger.sqlite3")) as db:
        rows = db.execute("SELECT recipient, state, attempts, doubts FROM deliveries").fetchall()
    return {r: (s, a, d) for r, s, a, d in rows}


def _folded_counts(state: Path) -> int:
    """How many journals the ledger keeps a folded-lines count of (none once each journal is gone)."""
    with contextlib.closing(sqlite3.connect(state / "ledger.sqlite3")) as db:
        return int(db.execute("SELECT count(*) FROM folded").fetchone()[0])


def _journals(state: Path) -> list[Path]:
    return sorted(state.glob(f"{journal.PREFIX}*"))


def _sender(state: Path, body: str) -> subprocess.Popen[str]:
    """A process that opens the ledger as a send does, runs ``body``, says "ready" and waits to be killed."""
    code = (
        textwrap.dedent(
            f"""
        import datetime as dt, sys, time
        from pathlib import Path
        from mailer.record.ledger import Ledger
        from mailer.record.rows import Mark
        ledger = Ledger(Path({str(state)!r}), "lm", window=3600,
                        clock=lambda: dt.datetime(2030, 1, 14, 7, tzinfo=dt.UTC))
        def mark(recipient, state="sent", attempts=1, doubt=False):
            ledger.mark(Mark("m1", recipient, state, attempts, "<" + recipient + ">", "250 ok", doubt))
        """
        )
        + textwrap.dedent(body)
        + '\nprint("ready", flush=True)\nsys.stdin.readline()\nledger.close()\n'
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def test_results_of_a_killed_sender_reach_the_ledger_once_whoever_opens_it_next(tmp_path: Path) -> None:
    """Flushed results are in the journal only (the fold waits for the window); after kill -9 a read-only
    ledger (status, a dry run) already sees them without writing anything, and the next writable one folds
    them into the file and removes the journal."""
    state = tmp_path / "state"
    Ledger(state, "lm").close()
    proc = _sender(state, 'mark("a@x.org"); mark("b@x.org", "uncertain", 0, True); ledger.flush()')
    _kill(proc)
    (path,) = _journals(state)
    assert _deliveries(state) == {}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # (addresses: for the owner only, as the ledger is)
    reader = Ledger(state, "lm", readonly=True)
    try:
        assert reader.done("m1") == {"a@x.org"} and reader.doubtful() == {"b@x.org"}
    finally:
        reader.close()
    assert len(_journals(state)) == 1 and _deliveries(state) == {}  # (the reader wrote nothing)
    descriptors = len(os.listdir("/proc/self/fd"))
    Ledger(state, "lm").close()
    assert len(os.listdir("/proc/self/fd")) == descriptors  # (the dead journal's file closed once folded)
    assert _deliveries(state) == {"a@x.org": (SENT, 1, 0), "b@x.org": (UNCERTAIN, 0, 1)}
    assert _journals(state) == [] and _folded_counts(state) == 0  # (no count kept of a journal that is gone)
    Ledger(state, "lm").close()  # (opened again: nothing is applied twice)
    assert _deliveries(state) == {"a@x.org": (SENT, 1, 0), "b@x.org": (UNCERTAIN, 0, 1)}


def test_a_read_only_ledger_reads_the_folded_results_and_a_dead_senders_journal_together(tmp_path: Path) -> None:
    """status or a dry run after a killed send: what earlier sends folded into the file and what the killed one
    left in its journal are one picture (a reader seeing only the journal would count the earlier sends' copies
    as unsent)."""
    state = tmp_path / "state"
    first = Ledger(state, "lm", clock=lambda: NOW)
    first.mark(_mark("a@x.org"))
    first.close()
    _kill(_sender(state, 'mark("b@x.org"); ledger.flush()'))
    assert _deliveries(state) == {"a@x.org": (SENT, 1, 0)} and len(_journals(state)) == 1
    reader = Ledger(state, "lm", readonly=True)
    try:
        assert reader.done("m1") == {"a@x.org", "b@x.org"}
    finally:
        reader.close()


def test_a_journal_folded_before_the_kill_is_not_applied_again(tmp_path: Path) -> None:
    """A sender killed after a fold's commit and before the journal was removed: the ledger knows how many of its
    lines it holds, so an uncertain copy is not counted uncertain twice (which would end its one retry); after
    two folds too (the count is of all the lines folded, not of the last fold's)."""
    state = tmp_path / "state"
    Ledger(state, "lm").close()
    body = """
        mark("a@x.org", "uncertain", 0, True); ledger.flush(); ledger.done("m1")
        mark("c@x.org", "uncertain", 0, True); ledger.flush(); ledger.done("m1")
        mark("b@x.org"); ledger.flush()
    """
    _kill(_sender(state, body))  # (done() folds the lines so far: a read sees what this process recorded)
    assert _deliveries(state) == {"a@x.org": (UNCERTAIN, 0, 1), "c@x.org": (UNCERTAIN, 0, 1)}
    Ledger(state, "lm").close()
    assert _deliveries(state) == {"a@x.org": (UNCERTAIN, 0, 1), "c@x.org": (UNCERTAIN, 0, 1), "b@x.org": (SENT, 1, 0)}


def test_a_killed_senders_fresh_journal_counts_its_own_lines(tmp_path: Path) -> None:
    """A sender that began a fresh journal (past ROTATE) and was killed after folding part of it: the count the
    ledger keeps is of the fresh journal's lines alone, so the part not folded is applied once and none skipped."""
    state = tmp_path / "state"
    Ledger(state, "lm").close()
    body = """
        from mailer.record import journal
        journal.ROTATE = 1  # (the next fold removes its journal: a fresh one begins)
        mark("u@x.org"); ledger.flush(); ledger.done("m1")
        journal.ROTATE = 1 << 30
        mark("c@x.org", "uncertain", 0, True); ledger.flush(); ledger.done("m1")
        mark("d@x.org", "uncertain", 0, True); ledger.flush()
    """
    _kill(_sender(state, body))
    assert len(_journals(state)) == 1
    Ledger(state, "lm").close()
    assert _deliveries(state) == {"u@x.org": (SENT, 1, 0), "c@x.org": (UNCERTAIN, 0, 1), "d@x.org": (UNCERTAIN, 0, 1)}


def test_a_journal_gone_between_the_listing_and_its_open_leaves_the_others_to_be_read(tmp_path: Path) -> None:
    """Another command may fold and remove a journal between this one's listing of the folder and its open of
    that file (here: a name that leads nowhere, first in the listing): the journals after it are still read,
    by a read-only open and by a writable one's fold, or their results would look unsent and be sent again."""
    state = tmp_path / "state"
    Ledger(state, "lm").close()
    _kill(_sender(state, 'mark("a@x.org"); ledger.flush()'))
    gone = state / f"{journal.PREFIX}-gone"  # (sorts before every journal's hex id)
    gone.symlink_to(state / "nowhere")
    assert sorted(state.glob(f"{journal.PREFIX}*"))[0] == gone
    reader = Ledger(state, "lm", readonly=True)
    try:
        assert reader.done("m1") == {"a@x.org"}
    finally:
        reader.close()
    Ledger(state, "lm").close()
    assert _deliveries(state) == {"a@x.org": (SENT, 1, 0)}


@pytest.mark.parametrize(
    "damaged",
    ['[["m1","b@x.org"', '[["m1","b@x.org"]]'],
    ids=["not JSON", "a row too short"],
)
def test_a_damaged_line_ends_what_a_journal_holds(tmp_path: Path, damaged: str) -> None:
    """A line that is not a JSON array of whole rows (only a damaged disk makes one: a line cut short is cut back
    or ends the journal) is where the journal's results end; the lines before it count, and nothing after it
    (a result after an unreadable line is not trusted: its recipient is due again)."""
    state = tmp_path / "state"
    Ledger(state, "lm").close()
    row = ["m1", "a@x.org", SENT, 1, 0, "<a>", "250 ok", "2030-01-14T07:00:00.000000Z"]
    whole = f"[{','.join(map(repr, row))}]".replace("'", '"')
    lines = [f"[{whole}]", damaged, f"[{whole.replace('a@x.org', 'c@x.org')}]"]
    (state / f"{journal.PREFIX}dead").write_text("\n".join(lines) + "\n")
    Ledger(state, "lm").close()
    assert _deliveries(state) == {"a@x.org": (SENT, 1, 0)} and _journals(state) == []


def test_a_line_the_disk_takes_only_in_part_is_cut_back_and_the_next_is_whole(tmp_path: Path) -> None:
    """A write the file system takes only in part (here a file-size limit, as a full disk does): the journal
    cuts the file back to its last whole line, so the line written after it is whole and counts."""
    state = tmp_path / "state"
    state.mkdir()
    code = textwrap.dedent(
        f"""
        import resource, signal
        from pathlib import Path
        from mailer.record import journal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # (the write fails with EFBIG instead)
        state = Path({str(state)!r})
        log = journal.Journal(state)
        def row(who):
            return ("m1", who, "sent", 1, 0, "<" + who + ">", "250 ok", "2030-01-14T07:00:00.000000Z")
        log.append([row("a@x.org")])
        size = (state / (journal.PREFIX + log.id)).stat().st_size
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 40, resource.RLIM_INFINITY))
        try:
            log.append([row(f"b{{i}}@x.org") for i in range(5)])
        except OSError as err:
            print(err.strerror)
        resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        log.append([row("c@x.org")])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
        text=True, check=False, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip() == "File too large", done.stderr
    (path,) = _journals(state)
    assert [[r[1] for r in line] for line in journal.read_lines(path.read_bytes())] == [["a@x.org"], ["c@x.org"]]


def test_a_running_senders_journal_is_its_own_to_fold(tmp_path: Path) -> None:
    """Another command opening the ledger for writing while a send runs (bounces, unsuppress) leaves the sender's
    journal alone (it holds its lock); the sender's own close folds it, once."""
    state = tmp_path / "state"
    Ledger(state, "lm").close()
    proc = _sender(state, 'mark("a@x.org"); ledger.flush()')
    try:
        Ledger(state, "lm").close()
        assert _deliveries(state) == {} and len(_journals(state)) == 1
    finally:
        assert proc.stdin is not None
        proc.stdin.write("\n")
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0
    assert _deliveries(state) == {"a@x.org": (SENT, 1, 0)} and _journals(state) == []


def test_a_line_cut_short_is_not_a_result(tmp_path: Path) -> None:
    """A kill in the middle of a write leaves a line without its newline: only the whole lines before it count."""
    state = tmp_path / "state"
    Ledger(state, "lm").close()
    row = ["m1", "a@x.org", SENT, 1, 0, "<a>", "250 ok", "2030-01-14T07:00:00.000000Z"]
    whole = f"[{','.join(map(repr, row))}]".replace("'", '"')
    # (the second line is whole but for its newline: its write did not return, so nothing was sent on it)
    (state / f"{journal.PREFIX}dead").write_text(f"[{whole}]\n[{whole.replace('a@x.org', 'b@x.org')}]")
    Ledger(state, "lm").close()
    assert _deliveries(state) == {"a@x.org": (SENT, 1, 0)} and _journals(state) == []


def test_the_senders_reads_see_what_it_recorded(tmp_path: Path) -> None:
    """Within the send, a result flushed a moment ago counts for every question asked of the deliveries."""
    state = tmp_path / "state"
    ledger = Ledger(state, "lm", window=3600, clock=lambda: NOW)
    try:
        ledger.mark(_mark("a@x.org"))
        ledger.flush()
        assert ledger.accepted("m1")
        assert ledger.sent_since(NOW - dt.timedelta(hours=1)) == 1
    finally:
        ledger.close()
    assert _journals(state) == []


def test_a_tick_with_nothing_to_record_writes_nothing(tmp_path: Path) -> None:
    """The sender flushes at every event-loop tick; most ticks have no result. Those write no line (an empty
    line a tick would grow the journal by thousands of lines a send, each read back at every fold and after
    a kill), and a send that has recorded nothing yet has no journal at all."""
    state = tmp_path / "state"
    ledger = Ledger(state, "lm", window=3600, clock=lambda: NOW)
    try:
        for _ in range(3):
            ledger.flush()
        assert _journals(state) == []
        ledger.mark(_mark("a@x.org"))
        ledger.flush()
        (path,) = _journals(state)
        size = path.stat().st_size
        for _ in range(3):
            ledger.flush()
        assert path.stat().st_size == size
    finally:
        ledger.close()


def test_a_long_send_starts_a_fresh_journal_and_leaves_no_count_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ROTATE bytes a folded journal is removed and a new one begun (what a kill leaves stays small); each
    is folded once, and the ledger keeps no count of a journal that is gone."""
    monkeypatch.setattr(journal, "ROTATE", 200)
    state = tmp_path / "state"
    descriptors = len(os.listdir("/proc/self/fd"))
    ledger = Ledger(state, "lm", window=0, clock=lambda: NOW)  # (window 0: a fold at every flush)
    begun: set[str] = set()
    try:
        for i in range(10):
            ledger.mark(_mark(f"u{i}@x.org", UNCERTAIN, attempts=0, doubt=True))
            ledger.flush()
            ledger.mark(_mark(f"u{i}@x.org"))
            ledger.flush()
            assert len(_journals(state)) <= 1
            begun.update(p.name for p in _journals(state))
            assert all(p.stat().st_size <= 2 * 200 for p in _journals(state))  # (ROTATE and a line at most)
            assert _deliveries(state)[f"u{i}@x.org"] == (SENT, 1, 1)  # (folded once the window passed, not at the end)
    finally:
        ledger.close()
    assert len(begun) >= 3  # (a fresh journal begun each time one passed ROTATE)
    assert len(os.listdir("/proc/self/fd")) == descriptors  # (each journal's file closed when it went)
    assert _deliveries(state) == {f"u{i}@x.org": (SENT, 1, 1) for i in range(10)}
    assert _folded_counts(state) == 0 and _journals(state) == []


def test_a_journal_another_command_folded_meanwhile_is_not_folded_again(tmp_path: Path) -> None:
    """Two commands open the ledger after a killed send: the second opened the journal just before the first
    folded and removed it (and its count). Taking the lock after that, it finds the file gone and applies
    nothing: the uncertain copy stays uncertain once, its one retry kept."""
    state = tmp_path / "state"
    Ledger(state, "lm").close()
    _kill(_sender(state, 'mark("a@x.org", "uncertain", 0, True); ledger.flush()'))
    (path,) = _journals(state)
    fd = os.open(path, os.O_RDONLY)  # the second command, between its open and its lock
    try:
        Ledger(state, "lm").close()  # the first: folds it, removes it, forgets its count
        with contextlib.closing(sqlite3.connect(state / "ledger.sqlite3", isolation_level=None)) as db:
            assert journal.fold_dead(path, fd, db, lambda: contextlib.nullcontext()) == 0
    finally:
        os.close(fd)
    assert _deliveries(state) == {"a@x.org": (UNCERTAIN, 0, 1)}


def test_a_journal_a_failed_close_left_is_folded_by_the_next_open_in_the_same_process(tmp_path: Path) -> None:
    """A close whose fold fails (here the ledger refuses writes) leaves the journal for the next open, and lets
    go of it: a later open in the same process folds it. (Each command opens its ledger once and exits, which
    lets go too; a program that opens it again, as the simulation does between runs, would otherwise find the
    journal held as if by a running sender, and its results out of the ledger, and an open file, until it exits.)"""
    state = tmp_path / "state"
    ledger = Ledger(state, "lm", window=3600, clock=lambda: NOW)
    ledger.mark(_mark("a@x.org"))
    ledger.flush()
    ledger._db.execute("PRAGMA query_only = 1")  # (the fold at close fails: 'attempt to write a readonly database')
    ledger.close()
    assert len(_journals(state)) == 1 and _deliveries(state) == {}
    Ledger(state, "other").close()
    assert _journals(state) == []
    assert _deliveries(state) == {"a@x.org": (SENT, 1, 0)}


def test_a_line_that_cannot_be_cut_back_ends_the_journal(tmp_path: Path) -> None:
    """A write that fails part-way is cut back to the last whole line; where even that fails (here a device
    that refuses both), no later line may follow the cut one, or every line after it would be lost at
    recovery: the journal refuses to write, and the send stops with its results counted unrecorded."""
    state = tmp_path / "state"
    state.mkdir()
    log = journal.Journal(state)
    log._fd = os.open("/dev/full", os.O_WRONLY)  # (write: ENOSPC; ftruncate: EINVAL)
    row = ("m1", "a@x.org", SENT, 1, 0, "<a>", "250 ok", "2030-01-14T07:00:00.000000Z")
    try:
        with pytest.raises(OSError, match="No space"):
            log.append([row])
        with pytest.raises(OSError, match="cut short and cannot be cut back"):
            log.append([row])
        assert log.lines == []
    finally:
        os.close(log._fd)
