"""The ledger and the subscriber store as the organiser's commands see and mend them: status, approvals,
unsuppress, rename-list."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mailer.core.address import Address
from mailer.core.errors import ConfigError
from mailer.record.ledger import Ledger
from mailer.record.rows import Remembered, Suppression
from mailer.record.state import LEDGER_FILE
from mailer.record.subscribers import Subscribers
from mailer.run.dispatch import read_ledger


@dataclass(frozen=True, slots=True)
class SeminarStatus:
    remembered: Remembered
    messages: list[tuple[str, str, dict[str, int], str | None, str | None]]  # kind, subject, counts, first, last


def status(state: Path, list_name: str) -> tuple[list[SeminarStatus], list[Suppression]]:
    """What was sent about each announced seminar, and who is suppressed: for ``status``."""
    ledger = read_ledger(state, list_name)
    if ledger is None:
        return [], []
    out = []
    for r in ledger.remembered(list_name):
        stats = ledger.messages_about(r.key)
        out.append(SeminarStatus(r, [(m.kind, m.subject, m.counts, m.first, m.last) for m in stats]))
    return out, ledger.suppressed()


def approvals(state: Path, list_name: str) -> list[tuple[str, str, str, str]]:
    """Every approval of the list (``approval: required``): week, fingerprint, by whom, when."""
    ledger = read_ledger(state, list_name)
    return ledger.approvals(list_name) if ledger is not None else []


def unsuppress(state: Path, list_name: str, address: Address) -> bool:
    """Let a suppressed address receive mail again; False if it was not suppressed."""
    if not (state / LEDGER_FILE).exists():
        return False
    ledger = Ledger(state, list_name)
    try:
        return ledger.unsuppress(address.key)
    finally:
        ledger.close()


def rename_list(state: Path, old: str, new: str) -> tuple[int, int]:
    """Carry list ``old``'s ledger and subscriptions over to ``new``: (seminars, subscriptions) moved."""
    from mailer.record.state import run_lock

    with run_lock(state, new):
        ledger = Ledger(state, old)
        try:
            if new in ledger.lists() - {old}:
                raise ConfigError(f"{ledger.path} already holds the list {new!r}; wanted a name not used yet")
            seminars = ledger.rename_list(old, new)
        finally:
            ledger.close()
        with Subscribers(state, old) as store:
            subscriptions = store.rename_list(new)
    return seminars, subscriptions
