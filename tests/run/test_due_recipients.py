"""The run's roster (mailer/run/due_recipients.py): the list parsed once a run, read again when it changed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mailer.audience.recipients import DUE
from mailer.record.subscribers import Subscribers
from mailer.run import due_recipients
from mailer.run.due_recipients import RunRoster


def _roster(tmp_path: Path, lines: list[str]) -> tuple[RunRoster, Path]:
    folder = tmp_path / "recipients"
    folder.mkdir(exist_ok=True)
    path = folder / "list.txt"
    path.write_text("".join(f"{line}\n" for line in lines))
    return RunRoster(path, set(), Subscribers(tmp_path / "state", "list")), path


def test_the_send_uses_the_subscribers_the_counting_pass_found(tmp_path: Path) -> None:
    roster, path = _roster(tmp_path, ["a@example.org", "not an address", "b@example.org", "A@example.org"])
    assert [kind for kind, _ in roster.classified()].count(DUE) == 2
    # Other bytes under the same size and mtime: what the send then uses is what the counting pass read.
    stamp = path.stat().st_mtime_ns
    path.write_text(path.read_text().replace("b@example.org", "d@example.org"))
    os.utime(path, ns=(stamp, stamp))
    assert [a.addr for a in roster.subscribers()] == ["a@example.org", "b@example.org"]
    roster.suppressed.add("b@example.org")  # refused during the run: no longer due
    assert [a.addr for a in roster.subscribers()] == ["a@example.org"]


def test_a_list_edited_after_counting_is_read_again(tmp_path: Path) -> None:
    roster, path = _roster(tmp_path, ["a@example.org", "b@example.org"])
    list(roster.classified())
    path.write_text("a@example.org\nc@example.org\n")
    os.utime(path, ns=(1, 1))  # (a different mtime even on a coarse clock)
    assert [a.addr for a in roster.subscribers()] == ["a@example.org", "c@example.org"]


def test_a_list_longer_than_kept_is_streamed_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read again, the list yields its due subscribers only: not a suppressed one, not a line's second copy."""
    monkeypatch.setattr(due_recipients, "KEPT", 2)
    roster, _ = _roster(tmp_path, [*(f"u{i}@example.org" for i in range(4)), "U0@example.org"])
    roster.suppressed.add("u1@example.org")
    list(roster.classified())
    assert roster.kept is None
    assert [a.addr for a in roster.subscribers()] == ["u0@example.org", "u2@example.org", "u3@example.org"]


def test_a_list_of_exactly_kept_due_subscribers_is_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """KEPT is how many are kept: a list of that many due is parsed once (the send uses what the count read)."""
    monkeypatch.setattr(due_recipients, "KEPT", 2)
    roster, _ = _roster(tmp_path, ["u0@example.org", "u1@example.org"])
    list(roster.classified())
    assert roster.kept is not None and [a.addr for a in roster.kept] == ["u0@example.org", "u1@example.org"]
