"""The ledger on its own: what its file must be before it is trusted, and the schema it writes (mutation testing
found both unguarded where the commands' own checks come first)."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import sqlite3
from pathlib import Path

import pytest

from mailer.core.errors import ConfigError, LockedError
from mailer.record.ledger import Ledger
from mailer.record.rows import Knowledge, Remembered
from mailer.record.state import run_lock


def test_the_ledger_itself_refuses_an_emptied_file(tmp_path: Path) -> None:
    """Whoever opens it (not only send, whose state check runs first): a 0-byte ledger is an error naming the
    file, never a fresh start that would announce everything again."""
    state = tmp_path / "state"
    with run_lock(state, "lm"):  # a send ran here: its lock file saw the ledger
        Ledger(state, "lm").close()
    (state / "ledger.sqlite3").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"ledger\.sqlite3 is empty"):
        Ledger(state, "lm")


def test_a_write_ahead_log_of_any_size_without_its_ledger_is_damage(tmp_path: Path) -> None:
    """However little of it there is (a single byte), a -wal beside no ledger is what a moved or truncated ledger
    leaves: an error naming both files, never a fresh start."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "ledger.sqlite3-wal").write_bytes(b"x")
    with pytest.raises(ConfigError, match=r"ledger\.sqlite3-wal exists but .*ledger\.sqlite3 is missing"):
        Ledger(state, "lm", readonly=True)


def test_an_empty_write_ahead_log_alone_holds_nothing_and_is_no_damage(tmp_path: Path) -> None:
    """A 0-byte -wal (what SQLite leaves when it was never written) beside no ledger and no sign of a send: nothing
    was recorded, so this is a fresh start, not an error."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "ledger.sqlite3-wal").write_bytes(b"")
    Ledger(state, "lm").close()
    assert (state / "ledger.sqlite3").stat().st_size > 0


def test_the_lock_names_the_process_that_holds_it(tmp_path: Path) -> None:
    """A second send is told the pid of the one running, from the lock file; what an earlier send wrote there,
    even a longer pid, is replaced, not overwritten in part (which would name a process that never ran)."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "lm.lock").write_bytes(b"99999999999 ledger")
    with run_lock(state, "lm"):
        assert (state / "lm.lock").read_bytes() == f"{os.getpid()} ledger".encode()
        with pytest.raises(LockedError, match=rf"\(pid {os.getpid()}, lock "), run_lock(state, "lm"):
            pass


def test_a_lock_that_never_saw_the_ledger_is_marked_once_a_send_holds_it_beside_one(tmp_path: Path) -> None:
    """A lock file without the mark (one written before marks existed, or beside a ledger copied in) gains it
    as soon as a send takes the lock with the ledger there, before anything else can fail: from then on a deleted
    ledger is an error, not a fresh start."""
    state = tmp_path / "state"
    Ledger(state, "lm").close()
    (state / "lm.lock").write_bytes(b"123")
    with run_lock(state, "lm"):
        assert (state / "lm.lock").read_bytes() == f"{os.getpid()} ledger".encode()


def test_an_emptied_ledger_beside_only_a_token_key_is_an_error(tmp_path: Path) -> None:
    """The token key is a sign of earlier sends too (a lock file may have been cleared away): a 0-byte ledger
    beside it is an error, not a fresh start."""
    state = tmp_path / "state"
    state.mkdir()
    (state / "token.key").write_bytes(b"k" * 32)
    (state / "ledger.sqlite3").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"ledger\.sqlite3 is empty \(0 bytes\), but earlier sends ran"):
        Ledger(state, "lm")


def test_a_possible_copy_of_a_revision_surely_known_is_superseded() -> None:
    """A copy that may have arrived, of the very revision (or an older one) another message surely brought: it is
    no longer a possible copy, so nothing is retried or told relative to it; one of a later revision is."""
    known = Knowledge.of({"a": 1, "b": 1, "c": 1}, {"a": (1, "digest"), "b": (0, "old"), "c": (2, "change")})
    assert known.maybe == {"c": (2, "change")}
    assert known.latest == {"a": 1, "b": 1, "c": 2}


def test_a_ledger_is_written_as_schema_2_and_read_back_as_it_is(tmp_path: Path) -> None:
    """The on-disk contract: schema 2 (PRAGMA user_version); a ledger of schema 2 opens as it is, its records kept
    (another number would take it for an older format and migrate it)."""
    state = tmp_path / "state"
    now = dt.datetime(2030, 1, 14, 7, tzinfo=dt.UTC)
    ledger = Ledger(state, "lm")
    seminar = Remembered("k", "k@ri.se", None, "k", 0, {"date": "2030-01-17"}, "2030-01-14T07:00:00.000000Z")
    ledger.remember([seminar], list_name="lm", now=now)
    ledger.close()
    with contextlib.closing(sqlite3.connect(state / "ledger.sqlite3")) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 2
    again = Ledger(state, "lm")
    try:
        assert [r.key for r in again.remembered("lm")] == ["k"]
    finally:
        again.close()


def test_a_ledger_of_this_schema_from_before_its_newer_tables_gains_them(tmp_path: Path) -> None:
    """Schema 2 ledgers written before the 'seen' and 'approvals' tables existed: opening one adds them, so a send
    records what it saw and approve records its approval, instead of failing."""
    state = tmp_path / "state"
    Ledger(state, "lm").close()
    with contextlib.closing(sqlite3.connect(state / "ledger.sqlite3")) as db:
        db.execute("DROP TABLE seen")
        db.execute("DROP TABLE approvals")
        db.commit()
    ledger = Ledger(state, "lm")
    try:
        now = dt.datetime(2030, 1, 14, 7, tzinfo=dt.UTC)
        ledger.see("lm", ["lm-2030-01-17-ada@ri.se"])
        ledger.approve("lm", "2030-01-14", "f1", by="Ada", now=now)
        assert ledger.seen("lm") == {"lm-2030-01-17-ada@ri.se"}
        assert ledger.approvals("lm") == [("2030-01-14", "f1", "Ada", "2030-01-14T07:00:00.000000Z")]
    finally:
        ledger.close()


def test_opening_a_ledger_makes_its_state_folder_private(tmp_path: Path) -> None:
    """Whoever opens it first (send holds its lock, which makes the folder; approve or unsuppress may come first):
    the folder is created 0700 and the ledger file 0600."""
    state = tmp_path / "new" / "state"
    Ledger(state, "lm").close()
    assert state.stat().st_mode & 0o777 == 0o700
    assert (state / "ledger.sqlite3").stat().st_mode & 0o777 == 0o600


def test_after_the_first_send_a_deleted_ledger_is_an_error(tmp_path: Path) -> None:
    """The first send takes its lock before any ledger exists; the ledger, once made, marks the lock file, so a
    ledger deleted after that very first send is an error, not a fresh start."""
    from mailer.record.state import check_state

    state = tmp_path / "state"
    with run_lock(state, "lm"):
        Ledger(state, "lm").close()
    (state / "ledger.sqlite3").unlink()
    with pytest.raises(ConfigError, match=r"a send ran here\) but no ledger\.sqlite3"):
        check_state(state, "lm")


def test_rename_list_carries_what_the_file_showed_under_the_new_name(tmp_path: Path) -> None:
    """The identities the file held at the last send move with the list, renamed (list-date-speaker@domain), so
    the next send under the new name does not take the seminars for new ones; and so do its approvals."""
    ledger = Ledger(tmp_path / "state", "old")
    try:
        ledger.see("old", ["old-2030-01-17-ada@ri.se", "pinned-id"])
        ledger.approve("old", "2030-01-14", "f1", by="Ada", now=dt.datetime(2030, 1, 13, tzinfo=dt.UTC))
        ledger.rename_list("old", "new")
        assert ledger.seen("new") == {"new-2030-01-17-ada@ri.se", "pinned-id"} and ledger.seen("old") == frozenset()
        assert [w for w, _, _, _ in ledger.approvals("new")] == ["2030-01-14"]  # an approval survives it too
    finally:
        ledger.close()


def test_what_the_ledger_answers_about_messages_and_suppressions(tmp_path: Path) -> None:
    """A message is known once opened (the organisers' reminder relies on it: once a week); unsuppress says
    whether there was anything to lift."""
    now = dt.datetime(2030, 1, 14, 7, tzinfo=dt.UTC)
    ledger = Ledger(tmp_path / "state", "lm")
    try:
        assert not ledger.has_message("organisers:2030-01-14")
        ledger.open_message("organisers:2030-01-14", list_name="lm", kind="organisers", subject="s", told=[], now=now)
        assert ledger.has_message("organisers:2030-01-14") and not ledger.has_message("organisers:2030-01-21")
        ledger.suppress([("b@example.org", "b@example.org", "550 no such user", "k")], now=now)
        assert ledger.unsuppress("b@example.org") is True
        assert ledger.unsuppress("b@example.org") is False and ledger.unsuppress("nobody@example.org") is False
    finally:
        ledger.close()


def test_closing_the_ledger_commits_what_is_buffered(tmp_path: Path) -> None:
    """A result marked and not yet flushed (the sender flushes once per event-loop tick) is committed by close:
    the last replies of a run are never lost, so nobody gets that message again."""
    from mailer.record.rows import Mark

    now = dt.datetime(2030, 1, 14, 7, tzinfo=dt.UTC)
    ledger = Ledger(tmp_path / "state", "lm")
    ledger.open_message("m1", list_name="lm", kind="announcement", subject="s", told=[], now=now)
    ledger.mark(Mark("m1", "ada@example.org", "sent", 1, "<id@ri.se>", "250 ok"))
    ledger.close()
    again = Ledger(tmp_path / "state", "lm")
    try:
        assert again.done("m1") == {"ada@example.org"}
    finally:
        again.close()


def test_a_version_1_ledger_is_remembered_seminar_by_seminar(tmp_path: Path) -> None:
    """Version 1 kept deliveries by announcement (the week's UIDs joined by '+'): each UID becomes a remembered
    seminar at revision 0, whose fields the next send adopts from the programme (never resent)."""
    state = tmp_path / "state"
    state.mkdir()
    with contextlib.closing(sqlite3.connect(state / "ledger.sqlite3")) as db:
        db.execute(
            """CREATE TABLE deliveries (announcement TEXT NOT NULL, recipient TEXT NOT NULL, state TEXT NOT NULL,
               attempts INTEGER NOT NULL, message_id TEXT NOT NULL, detail TEXT NOT NULL, at TEXT NOT NULL,
               PRIMARY KEY (announcement, recipient)) WITHOUT ROWID"""
        )
        db.execute("INSERT INTO deliveries VALUES ('lm-a@ri.se+lm-b@ri.se', 'ada@example.org', 'sent', 1, '<x>', "
                   "'250 ok', '2030-01-14T07:00:00+00:00')")  # fmt: skip
        db.commit()
    ledger = Ledger(state, "lm")
    try:
        assert [(r.key, r.revision, r.fields) for r in ledger.remembered("lm")] == [
            ("lm-a@ri.se", 0, None),
            ("lm-b@ri.se", 0, None),
        ]
        assert ledger.done("lm-a@ri.se+lm-b@ri.se") == {"ada@example.org"}
    finally:
        ledger.close()
