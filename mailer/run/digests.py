"""One run of ``send`` for a weekly digest: its series loaded from the project, their plans, the digest's plan
(``digest_plan``), and delivery to the digest's list through the same ledger and pool as a series' run.

The digest's mail comes from the digest (its sender, List-Id and unsubscribe link); its invitations keep each
seminar's own series as ORGANIZER, with the series' UID and SEQUENCE, so that a correction from either
reaches the same calendar event. The series' corrections, cancellations, reminders and follow-ups reach the
digest's readers told of the seminar as the digest sends them, under the series' own message keys."""

from __future__ import annotations

import datetime as dt
import time
import zoneinfo
from collections.abc import Callable
from pathlib import Path

from mailer.audience.recipients import Entry
from mailer.compose.invite import Event
from mailer.compose.message import MessageTemplate, build_message
from mailer.compose.render import Rendered, render_digest
from mailer.core.errors import ScheduleError
from mailer.deliver.config import ledger_window, token_key
from mailer.deliver.send import Outcome
from mailer.programme.digest import Digest, is_digest, load_digest, resolve
from mailer.programme.model import Schedule, Seminar, Series, Week
from mailer.programme.project import programme_files
from mailer.programme.schedule import load_schedule
from mailer.record.ledger import Ledger
from mailer.record.state import check_state
from mailer.run.digest_plan import DigestPlan, plan_digest
from mailer.run.dispatch import Composer, count_plan, deliver_plan, read_ledger, render_due, send_settings
from mailer.run.due_recipients import memory_of
from mailer.run.plan import DIGEST, FOLLOWUP, Due, Plan, plan
from mailer.run.request import MessageReport, Request, Result


def project_series(digest_path: Path) -> dict[str, Schedule]:
    """Every series of the digest's project (the programmes beside it in data/), by list name."""
    root = digest_path.parent.parent if digest_path.parent.name == "data" else digest_path.parent
    files = programme_files(root) if digest_path.parent.name == "data" else []
    series = {}
    for path in files:
        if path.resolve() != digest_path.resolve() and not is_digest(path):
            schedule = load_schedule(path)
            series[schedule.series.list_name] = schedule
    return series


def gathered_schedules(digest: Digest) -> list[Schedule]:
    """The series the digest gathers; a ScheduleError at each ``include`` that names none of the project."""
    return resolve(digest, project_series(digest.path))


def digest_schedule(digest: Digest, schedules: list[Schedule]) -> Schedule:
    """The digest as the series its mails are sent from: no seminars of its own."""
    return Schedule(path=digest.path, series=digest.as_series(schedules[0].series), seminars=())


def _plans(
    schedules: list[Schedule], ledger: Ledger | None, *, now: dt.datetime, today: dt.date
) -> list[tuple[Schedule, Plan]]:
    out = []
    for schedule in schedules:
        planned = plan(schedule, memory_of(ledger, schedule.series.list_name), now=now, today=today, explicit=True)
        if planned.problems:  # (the series' own run says so too; nothing of it is mailed until fixed)
            raise ScheduleError.from_problems(list(planned.problems))
        out.append((schedule, planned))
    return out


def composer(digest_as: Schedule, dp: DigestPlan, templates: Path | None) -> Composer:
    """How the digest's run renders each due message: the digest itself, or a series' message as the digest
    sends it (from the digest, with the series' invitation)."""

    def compose(due: Due, now: dt.datetime, key: bytes, zone: str | None) -> tuple[Rendered, MessageTemplate]:
        if due.kind == DIGEST:
            items = [(dp.owner[i.key].series, i.seminar) for i in due.seminars]
            there = zoneinfo.ZoneInfo(zone) if zone else None
            rendered = render_digest(digest_as.series, dp.monday, items, dp.upcoming, templates=templates, zone=there)
        else:
            rendered = render_due(dp.owner[due.seminars[0].key], due, None, templates=templates, now=now, zone=zone)
        events = [] if due.kind == FOLLOWUP else [
            Event(i.seminar, i.uid, i.revision, schedule=dp.owner[i.key]) for i in due.seminars
        ]  # fmt: skip
        template = build_message(digest_as, events, rendered, key=due.key, now=now, token_key=key, thread=due.thread)
        return rendered, template

    return compose


def run_digest(
    request: Request,
    *,
    confirm: Callable[[list[MessageReport]], bool] = lambda _: True,
    progress: Callable[[MessageReport, int], Callable[[Outcome], None]] = lambda _m, _n: lambda _o: None,
    warn: Callable[[Entry], None] = lambda _: None,
) -> Result:
    """Send (or, dry, count) what the digest has due at ``request.now``."""
    settings, warnings = send_settings(request)
    digest = load_digest(request.schedule)
    schedules = gathered_schedules(digest)
    as_series = digest_schedule(digest, schedules)
    now, today = request.moment(as_series)
    if request.dry_run:
        ledger = read_ledger(request.state, digest.list_name)
        try:
            gathered = _plans(schedules, ledger, now=now, today=today)
            dp = plan_digest(digest, gathered, now=now, today=today, explicit=request.date is not None)
            return count_plan(request, as_series, _as_plan(dp), ledger, warn, warnings, settings,
                              composer(as_series, dp, request.templates), digest.lists)  # fmt: skip
        finally:
            if ledger is not None:
                ledger.close()
    assert settings is not None
    from mailer.record.state import run_lock

    check_state(request.state, digest.list_name)
    with run_lock(request.state, digest.list_name):
        mono = time.monotonic()
        ledger = Ledger(
            request.state,
            digest.list_name,
            window=ledger_window(request.env),
            clock=lambda: now + dt.timedelta(seconds=time.monotonic() - mono),
        )
        try:
            gathered = _plans(schedules, ledger, now=now, today=today)
            for schedule, planned in gathered:  # what the series' own run records first, if it has not run
                if planned.remember:
                    ledger.remember(planned.remember, list_name=schedule.series.list_name, now=now)
            dp = plan_digest(digest, gathered, now=now, today=today, explicit=request.date is not None)
            owners = {key: schedule.series.list_name for key, schedule in dp.owner.items()}
            return deliver_plan(
                request, as_series, _as_plan(dp), ledger, settings, confirm, progress, warn, warnings,
                composer(as_series, dp, request.templates), owners, digest.lists,
            )  # fmt: skip
        finally:
            ledger.close()


def _as_plan(dp: DigestPlan) -> Plan:
    """The digest's plan in the shape delivery takes: its week first, then the series' other messages."""
    dues = ((dp.week,) if dp.week else ()) + dp.others
    return Plan(week=None, identities=(), dues=dues, remember=(), notes=dp.notes, problems=())


def preview_digest(request: Request) -> tuple[Week | None, list[MessageReport]]:
    """The digest of the week of ``request.day``, whether or not it went out, as its readers get it."""
    digest = load_digest(request.schedule)
    schedules = gathered_schedules(digest)
    as_series = digest_schedule(digest, schedules)
    now, today = request.moment(as_series)
    ledger = read_ledger(request.state, digest.list_name)
    dp = plan_digest(digest, _plans(schedules, ledger, now=now, today=today), now=now, today=today, explicit=True)
    if dp.week is None:
        return None, []
    key = token_key(request.state, request.env)
    rendered, template = composer(as_series, dp, request.templates)(dp.week, now, key, None)
    week = Week(dp.monday, tuple(i.seminar for i in dp.week.seminars), tuple(s for _, s in dp.upcoming))
    return week, [MessageReport(DIGEST, dp.week.key, rendered.subject, 0, rendered=rendered, template=template)]


def render_sample(digest: Digest, schedules: list[Schedule], *, templates: Path | None) -> int:
    """Render the digest of every week with a seminar of its series (what ``check`` proves); how many weeks."""
    as_series = digest_schedule(digest, schedules).series
    weeks: dict[dt.date, list[tuple[Series, Seminar]]] = {}
    for schedule in schedules:
        for seminar in schedule.seminars:
            weeks.setdefault(seminar.date - dt.timedelta(days=seminar.date.weekday()), []).append(
                (schedule.series, seminar)
            )
    for monday, items in sorted(weeks.items()):
        render_digest(as_series, monday, sorted(items, key=lambda pair: pair[1].start), (), templates=templates)
    return len(weeks)
