"""What the organiser asked of one run (paths, clock, dry run, settings), and what the run reports back."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

from mailer.compose.message import MessageTemplate
from mailer.compose.render import Rendered
from mailer.core.errors import MailerError
from mailer.deliver.send import Outcome
from mailer.programme.model import Schedule, Week
from mailer.programme.revisions import Change


@dataclass(frozen=True, slots=True)
class Request:
    """What the organiser asked for."""

    schedule: Path
    templates: Path | None
    recipients: Path
    state: Path
    now: dt.datetime  # aware; the real clock, or --now
    date: dt.date | None  # --date: the week to announce, explicitly
    dry_run: bool = False
    env: dict[str, str] = field(default_factory=dict)
    clock_given: bool = False  # --now: the organiser chose the moment

    @property
    def day(self) -> dt.date:
        """The day whose week is announced: --date, else today (UTC; prepare uses the series' zone)."""
        return self.date or self.now.astimezone(dt.UTC).date()

    def moment(self, schedule: Schedule) -> tuple[dt.datetime, dt.date]:
        """The clock and the day as the series sees them. A preview or dry run of a week that is over
        (an explicit --date) acts as at the start of that week, so it shows what went out then."""
        tz = schedule.series.timezone
        now = self.now if self.now.tzinfo else self.now.replace(tzinfo=tz)
        today = self.date or now.astimezone(tz).date()
        monday = dt.datetime.combine(today - dt.timedelta(days=today.weekday()), dt.time(0, 0), tzinfo=tz)
        if self.dry_run and self.date is not None and monday + dt.timedelta(days=7) <= now:
            now = monday
        return now, today


@dataclass
class MessageReport:
    """One due message: whom it is for and what its delivery did."""

    kind: str
    key: str
    subject: str
    due: int
    already: int = 0  # announcement: subscribers already told of every seminar in it
    outcome: Outcome | None = None
    rendered: Rendered | None = None
    template: MessageTemplate | None = None
    changes: tuple[Change, ...] = ()  # a change or cancellation: what changed, old -> new

    @property
    def list_name(self) -> str:
        return self.template.list_name if self.template else ""


@dataclass
class Result:
    schedule: Schedule
    week: Week | None
    dry_run: bool
    messages: list[MessageReport]
    counts: dict[str, int]  # list lines: suppressed, duplicate, invalid
    notes: list[str]
    warnings: list[str]
    state: Path
    stopped: str | None = None  # why the run stopped early
    resume_after: dt.datetime | None = None  # daily limit: when the next run can continue
    unrecorded: int = 0  # results the ledger could not take (disk full)
    cancelled: bool = False  # the organiser answered no
    error: MailerError | None = None  # what stopped the run for everyone (a refused message, sender, login)
    list_path: Path | None = None  # the list file read (the report names it when nobody is on it)

    @property
    def failed(self) -> bool:
        return any(m.outcome and m.outcome.failed for m in self.messages)

    @property
    def pending(self) -> bool:
        """Someone is still due: deferred, uncertain (one retry to come), or not reached by a run that
        stopped early."""
        if self.dry_run:
            return False
        for m in self.messages:
            if not m.due:
                continue
            if m.outcome is None or m.outcome.deferred or m.outcome.uncertain or m.due > m.outcome.finished:
                return True
        return self.unrecorded > 0
