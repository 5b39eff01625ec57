"""Approval (series ``approval: required``): an organiser approves a week as the file holds it, and only then
does anything about that week's seminars go out.

What is approved is the week's fingerprint (``revisions.week_fingerprint``: the announced fields of its
seminars), recorded in the ledger with who and when. The planner holds back every message about a week whose
seminars, as the file is now, no approval covers; so an edit of a date, time, place, speaker or title after the
approval needs approving again, while an abstract or bio edit does not. Cron runs the same line throughout.
"""

from __future__ import annotations

import datetime as dt
import getpass
from dataclasses import dataclass

from mailer.core.errors import ConfigError
from mailer.programme.model import Seminar
from mailer.programme.revisions import week_fingerprint
from mailer.programme.schedule import load_schedule
from mailer.record.ledger import Ledger
from mailer.record.state import check_state, run_lock
from mailer.run.dispatch import check_list
from mailer.run.plan import monday_of
from mailer.run.request import Request


@dataclass(frozen=True, slots=True)
class Approval:
    monday: dt.date
    seminars: tuple[Seminar, ...]
    fingerprint: str
    by: str
    already: bool  # this very state of the week was approved before


def default_approver() -> str:
    """Who approves, when --by does not say: the user running the command."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # (no name for this uid, as in some containers)
        return "unknown"


def approve(request: Request, *, by: str) -> Approval:
    """Record the approval of the week holding ``request``'s day (default today), as the file is now."""
    schedule = load_schedule(request.schedule)
    series = schedule.series
    if not series.approval:
        raise ConfigError(
            f"{schedule.path} does not ask for approval, so nothing waits for one; wanted 'approval: required' "
            "in its series first"
        )
    if not by.strip() or any(not c.isprintable() for c in by):
        raise ConfigError(f"--by {by!r}: wanted the approver's name, one line of printable text")
    monday = monday_of(request.moment(schedule)[1])
    seminars = tuple(s for s in schedule.seminars if monday_of(s.date) == monday)  # (none: its removals may go)
    fingerprint = week_fingerprint(seminars)
    check_state(request.state, series.list_name)
    with run_lock(request.state, series.list_name):
        ledger = Ledger(request.state, series.list_name)
        try:
            check_list(request.state, ledger, schedule)
            week = monday.isoformat()
            already = any(w == week and f == fingerprint for w, f, _, _ in ledger.approvals(series.list_name))
            ledger.approve(series.list_name, week, fingerprint, by=by.strip(), now=dt.datetime.now(dt.UTC))
        finally:
            ledger.close()
    return Approval(monday, seminars, fingerprint, by.strip(), already)
