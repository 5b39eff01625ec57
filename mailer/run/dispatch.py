"""One run of ``send``: lock, ledger, what is due, delivery, and the result ``cli`` prints.

The flow is one way: load the schedule, read what the ledger remembers, ask ``plan`` what is due
at this moment, pick each due message's recipients from the list, render and build each message
once, deliver it, record every result. A dry run does all of that but the lock, the ledger writes
and the connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import signal
import time
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

import aiosmtplib

from mailer.audience.recipients import DUE, Entry
from mailer.compose.checks import drafts_due, missing_details
from mailer.compose.invite import Event
from mailer.compose.message import MessageTemplate, build_message
from mailer.compose.render import Rendered, render, render_change, render_followup
from mailer.core.address import Address
from mailer.core.errors import ConfigError, DeliveryError, LedgerError, MailerError, ScheduleError
from mailer.deliver.bounce_config import verp as verp_envelopes
from mailer.deliver.config import SmtpSettings, daily_limit, ledger_window, smtp_settings, token_key
from mailer.deliver.send import Delivery, Outcome, RateLimit, Stop
from mailer.programme.model import Schedule, Week
from mailer.programme.revisions import announced_fields, derived_uid
from mailer.programme.schedule import load_schedule
from mailer.record.ledger import Ledger
from mailer.record.rows import Remembered, parse_time, utc_text
from mailer.record.state import LEDGER_FILE, check_state
from mailer.record.subscribers import StillWanted
from mailer.run.due_recipients import Audiences, RunRoster, count_due, memory_of, roster_of
from mailer.run.organisers import remind_organisers
from mailer.run.plan import (
    ANNOUNCEMENT,
    DIGEST,
    FOLLOWUP,
    REMINDER,
    WEEKLY,
    Due,
    Plan,
    plan,
    reminder_key,
)
from mailer.run.request import MessageReport, Request, Result

# --- who is on the list --------------------------------------------------------------------------


# --- rendering -----------------------------------------------------------------------------------


def _week_of(due: Due, week: Week | None) -> Week:
    seminars = tuple(i.seminar for i in due.seminars)
    monday = seminars[0].date - dt.timedelta(days=seminars[0].date.weekday())
    return Week(monday=monday, seminars=seminars, upcoming=week.upcoming if week else ())


def compose(
    schedule: Schedule,
    due: Due,
    week: Week | None,
    *,
    templates: Path | None,
    now: dt.datetime,
    key: bytes,
    test: bool = False,
    zone: str | None = None,
) -> tuple[Rendered, MessageTemplate]:
    """Render a due message once and build the MIME message every recipient shares (``test``: the
    subject says it is a test copy; ``zone``: for readers in that zone)."""
    rendered = render_due(schedule, due, week, templates=templates, now=now, zone=zone)
    if test:
        rendered = dataclasses.replace(rendered, subject=f"[TEST] {rendered.subject}")
    # A follow-up carries no invitation: the seminar is over, and nothing in a calendar is to change.
    events = [Event(i.seminar, i.uid, i.revision) for i in due.seminars] if due.kind != FOLLOWUP else []
    template = build_message(schedule, events, rendered, key=due.key, now=now, token_key=key, thread=due.thread)
    return rendered, template


def render_due(
    schedule: Schedule,
    due: Due,
    week: Week | None,
    *,
    templates: Path | None,
    now: dt.datetime,
    zone: str | None = None,
) -> Rendered:
    """The subject, text and HTML of a due message of the series ``schedule`` (``zone``: the readers', for the
    announcement and the reminder, which then also say when each seminar starts there)."""
    there = zoneinfo.ZoneInfo(zone) if zone else None
    if due.kind == ANNOUNCEMENT:
        today = now.astimezone(schedule.series.timezone).date()  # sent the week before: "next week's"
        rendered = render(schedule, _week_of(due, week), templates=templates, today=today, zone=there)
    elif due.kind == REMINDER:
        rendered = render(schedule, _week_of(due, None), templates=templates, reminder=True, zone=there)
    elif due.kind == FOLLOWUP:
        rendered = render_followup(schedule, due.seminars[0].seminar, templates=templates)
    else:
        rendered = render_change(schedule, due.seminars[0].seminar, due.changes, kind=due.kind, templates=templates)
    return rendered


# --- the run -------------------------------------------------------------------------------------

# Renders and builds a due message at a moment with a token key, for readers in a zone (None: the series'):
# a digest's run brings its own (run/digests.py).
Composer = Callable[[Due, dt.datetime, bytes, str | None], tuple[Rendered, MessageTemplate]]
ZONED = (ANNOUNCEMENT, REMINDER, DIGEST)  # the messages that also state each time in the reader's zone


def read_ledger(state: Path, list_name: str) -> Ledger | None:
    """The ledger read-only (a dry run, preview, status, check), or None when no send ever ran here."""
    check_state(state, list_name)
    return Ledger(state, list_name, readonly=True) if (state / LEDGER_FILE).exists() else None


def check_list(state: Path, ledger: Ledger | None, schedule: Schedule) -> None:
    """A renamed ``list:`` must be carried over, never taken for a new series: that would announce everything
    again, under new calendar UIDs, to everyone, and forget who unsubscribed."""
    from mailer.programme.project import project_lists
    from mailer.record.subscribers import STORE_FILE, known_lists

    names = ledger.lists() if ledger is not None else set()
    if (state / STORE_FILE).exists():
        names |= known_lists(state)
    new = schedule.series.list_name
    # A new list beside lists the project's other programmes still name is a new series, not a rename.
    gone = names - project_lists(schedule.path) - {new}
    if gone and new not in names:
        old = sorted(gone)[0]
        raise ConfigError(
            f"{state} records the list {', '.join(repr(n) for n in sorted(names))}, which {schedule.path} "
            f"no longer names (it names {new!r}); if you renamed the list, run `seminar-mailer rename-list {old} "
            f"{new}` (it carries over what was announced and who unsubscribed); if this is another series, give it "
            "a state folder of its own (--state or MAILER_STATE). Nothing was sent"
        )


def _check_week(request: Request, schedule: Schedule) -> None:
    """A real send never mails a week that is over: --date is for preview and dry runs of the past."""
    now, today = request.moment(schedule)
    if request.dry_run or request.date is None:
        return
    sunday = today - dt.timedelta(days=today.weekday()) + dt.timedelta(days=6)
    end = dt.datetime.combine(sunday + dt.timedelta(days=1), dt.time(0, 0), tzinfo=schedule.series.timezone)
    if end <= now:
        raise ConfigError(
            f"--date {request.date} is in a week that is over: nothing is ever sent about seminars that "
            "have started. Wanted a date in this week or later; to look at a past week use preview, or "
            "send --dry-run"
        )


def prepare(request: Request, schedule: Schedule, ledger: Ledger | None, *, whole_week: bool = False) -> Plan:
    """Check the week and plan: everything a dry run and a send share (``whole_week``: this week's
    announcement even before the series' announce time, for preview)."""
    _check_week(request, schedule)
    check_list(request.state, ledger, schedule)
    now, today = request.moment(schedule)
    memory = memory_of(ledger, schedule.series.list_name)
    planned = plan(schedule, memory, now=now, today=today, explicit=whole_week or request.date is not None)
    if planned.problems:
        raise ScheduleError.from_problems(list(planned.problems))
    return planned


def send_settings(request: Request) -> tuple[SmtpSettings | None, list[str]]:
    """The SMTP settings of a send, and what a dry run warns of (None: a dry run without SMTP_HOST)."""
    try:
        return smtp_settings(request.env), []
    except ConfigError as err:
        if not request.dry_run or request.env.get("SMTP_HOST"):
            raise
        # A dry run without a server (the demo's) warns of the absent SMTP_HOST; every other setting still counts.
        smtp_settings({**request.env, "SMTP_HOST": "localhost"})
        return None, [f"{err} (a real send would stop here)"]


def run(
    request: Request,
    *,
    confirm: Callable[[list[MessageReport]], bool] = lambda _: True,
    progress: Callable[[MessageReport, int], Callable[[Outcome], None]] = lambda _m, _n: lambda _o: None,
    warn: Callable[[Entry], None] = lambda _: None,
) -> Result:
    """Send (or, dry, count) every message that is due at ``request.now``."""
    settings, warnings = send_settings(request)
    schedule = load_schedule(request.schedule)
    series = schedule.series
    if request.dry_run:
        if request.state.exists() and not request.state.is_dir():  # (a real send cannot lock there)
            raise ConfigError(f"--state {request.state} is a file; wanted the state folder (ledger, lock, token key)")
        ledger = read_ledger(request.state, series.list_name)
        try:
            planned = prepare(request, schedule, ledger)
            notes = [remind_organisers(schedule, ledger, settings, request.moment(schedule)[0], dry_run=True)]
            return count_plan(request, schedule, replace(planned, notes=(*planned.notes, *filter(None, notes))),
                              ledger, warn, warnings, settings)  # fmt: skip
        finally:  # (closed at once: not left to the garbage collector while another process writes the file)
            if ledger is not None:
                ledger.close()
    assert settings is not None
    verp_envelopes(request.env)  # (bounces) MAILER_VERP checked before anything is sent
    from mailer.record.state import run_lock

    _check_week(request, schedule)
    check_state(request.state, series.list_name)
    with run_lock(request.state, series.list_name):
        start, mono = request.moment(schedule)[0], time.monotonic()
        ledger = Ledger(
            request.state,
            series.list_name,
            window=ledger_window(request.env),
            clock=lambda: start + dt.timedelta(seconds=time.monotonic() - mono),  # --now moves on, too
        )
        try:
            planned = prepare(request, schedule, ledger)
            notes = [remind_organisers(schedule, ledger, settings, ledger.clock(), dry_run=False)]
            planned = replace(planned, notes=(*planned.notes, *filter(None, notes)))
            return deliver_plan(request, schedule, planned, ledger, settings, confirm, progress, warn, warnings)
        finally:
            ledger.close()


def count_plan(
    request: Request,
    schedule: Schedule,
    planned: Plan,
    ledger: Ledger | None,
    warn: Callable[[Entry], None],
    warnings: list[str],
    settings: SmtpSettings | None,
    composer: Composer | None = None,
    gathers: tuple[str, ...] = (),
) -> Result:
    roster = roster_of(request, schedule.series.list_name, ledger, gathers=gathers)
    audiences = Audiences(ledger, planned.dues)
    key = token_key(request.state, request.env, create=False)
    now = request.moment(schedule)[0]
    counts, plans = _due_messages(
        request, schedule, planned, ledger, roster, audiences, warn, key=key, now=now, composer=composer
    )
    reports = [report for _, report, _ in plans]
    _already(reports, planned, audiences, counts)
    notes = list(planned.notes)
    today = request.moment(schedule)[1]  # (what is still TBA in the coming announcements: as check says it)
    warnings = [*warnings, *(str(p) for p in missing_details(schedule, today))]
    notes += [str(p) for p in drafts_due(schedule, today)]
    if settings is not None and (estimate := _estimate(sum(m.due for m in reports), settings, request.env)):
        notes.append(estimate)
    return Result(schedule, planned.week, True, reports, counts, notes, warnings, request.state, list_path=roster.path)


def _due_messages(
    request: Request,
    schedule: Schedule,
    planned: Plan,
    ledger: Ledger | None,
    roster: RunRoster,
    audiences: Audiences,
    warn: Callable[[Entry], None],
    *,
    key: bytes,
    now: dt.datetime,
    composer: Composer | None = None,
) -> tuple[dict[str, int], list[tuple[Due, MessageReport, set[str]]]]:
    """One pass over the list: the figures of each kind of line, and each message due to at least one
    subscriber with its count (announcements split by which of the week's seminars each one lacks),
    rendered and built once."""
    # A reminder goes once per seminar, whichever revision it carried; a follow-up once per seminar.
    dones = {
        d.key: ledger.done(reminder_key(d.seminars[0].key) if d.kind == REMINDER else d.key)
        if ledger and d.kind in (REMINDER, FOLLOWUP)
        else set()
        for d in planned.dues
    }
    week = next((d for d in planned.dues if d.kind in WEEKLY), None)
    others = [d for d in planned.dues if d.kind not in WEEKLY]
    counts, subsets, tally, zones = count_due(roster, audiences, week, others, dones, warn)
    out = []
    for due in [*subsets.values(), *others]:
        if not tally.get(due.key):
            continue
        if composer is None:

            def composer(due: Due, now: dt.datetime, key: bytes, zone: str | None) -> tuple[Rendered, MessageTemplate]:
                return compose(schedule, due, planned.week, templates=request.templates, now=now, key=key, zone=zone)

        rendered, template = composer(due, now, key, None)
        if due.kind in ZONED and zones:
            variants = {zone: composer(due, now, key, zone)[1] for zone in sorted(zones)}
            template = replace(template, variants=variants, zone_of=roster.zones)
        report = MessageReport(
            due.kind,
            due.key,
            rendered.subject,
            tally[due.key],
            rendered=rendered,
            template=template,
            changes=due.changes,
        )
        out.append((due, report, dones.get(due.key, set())))
    return counts, out


def _estimate(total: int, settings: SmtpSettings, env: dict[str, str]) -> str | None:
    """How long ``total`` messages take at the configured rate and daily limit (what a dry run says)."""
    limit = daily_limit(env)
    if not total or not (settings.rate or limit):
        return None
    runs = -(-total // limit) if limit else 1
    per_run = min(total, limit) if limit else total
    minutes = per_run / settings.rate if settings.rate else 0.0
    pace = f"{settings.rate:g} a minute" if settings.rate else "no rate limit"
    cap = f", at most {limit} a day" if limit else ""
    span = f"{runs} days (one run a day)" if runs > 1 else "one run"
    duration = f", about {minutes / 60:.1f} hours each" if minutes >= 60 else f", about {minutes:.0f} minutes each"
    return f"at {pace}{cap}, {total} messages take {span}{duration if settings.rate else ''}"


def _already(reports: list[MessageReport], planned: Plan, audiences: Audiences, counts: dict[str, int]) -> None:
    """How many subscribers were told of every seminar of this week's announcement already."""
    week = next((d for d in planned.dues if d.kind in WEEKLY), None)
    if week is None or not week.seminars:
        return
    due = sum(m.due for m in reports if m.kind == week.kind)
    already = max(counts.get(DUE, 0) - due, 0)
    if not any(m.kind == week.kind for m in reports):
        reports.insert(0, MessageReport(week.kind, week.key, "", 0, already=already))
    else:
        next(m for m in reports if m.kind == week.kind).already = already


def deliver_plan(
    request: Request,
    schedule: Schedule,
    planned: Plan,
    ledger: Ledger,
    settings: SmtpSettings,
    confirm: Callable[[list[MessageReport]], bool],
    progress: Callable[[MessageReport, int], Callable[[Outcome], None]],
    warn: Callable[[Entry], None],
    warnings: list[str],
    composer: Composer | None = None,
    owners: Mapping[str, str] | None = None,
    gathers: tuple[str, ...] = (),
) -> Result:
    """Deliver the plan's messages to the list; ``composer``, ``owners`` (seminar key -> the list it is
    remembered under) and ``gathers`` (its series' lists) for a digest, whose seminars are its series'."""
    series = schedule.series
    now = ledger.clock()
    roster = roster_of(request, schedule.series.list_name, ledger, gathers=gathers)
    audiences = Audiences(ledger, planned.dues)
    key = token_key(request.state, request.env)
    counts, plans = _due_messages(
        request, schedule, planned, ledger, roster, audiences, warn, key=key, now=now, composer=composer
    )
    reports = [report for _, report, _ in plans]
    result = Result(schedule, planned.week, False, reports, counts, list(planned.notes), warnings, request.state)
    result.list_path = roster.path
    _already(result.messages, planned, audiences, counts)
    if planned.remember:
        ledger.remember(planned.remember, list_name=series.list_name, now=now)
    ledger.see(series.list_name, [derived_uid(schedule, s) for s in schedule.seminars])
    if not plans:
        return result
    if not confirm(reports):
        result.cancelled = True
        return result

    stop = Stop()
    limit = daily_limit(request.env)
    if limit:  # recipients per rolling 24 hours, counted in the ledger: across runs and kinds of message
        stop.budget = max(limit - ledger.sent_since(now - dt.timedelta(hours=24)), 0)
    envelope_from = settings.envelope_from or series.sender.ascii_addr
    verp = verp_envelopes(request.env)  # (bounces) one envelope sender per recipient
    doubtful = frozenset(ledger.doubtful())

    async def main() -> None:
        loop = asyncio.get_running_loop()
        signals = 0

        def on_signal(name: str) -> None:
            nonlocal signals
            signals += 1
            stop.request(f"stopped by {name}", abort=signals > 1)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal, sig.name)
        limiter = RateLimit(settings.rate)
        try:
            sent_before = False
            for due, report, done in plans:
                if stop.reason is not None:
                    break
                assert report.template is not None
                for owner in {(owners or {}).get(i.key, series.list_name) for i in due.seminars}:
                    new = [
                        Remembered(
                            i.key, i.uid, i.seminar.id, due.key, i.revision, announced_fields(i.seminar), utc_text(now)
                        )
                        for i in due.seminars
                        if i.remembered is None and (owners or {}).get(i.key, series.list_name) == owner
                    ]
                    ledger.remember(new, list_name=owner, now=now)
                ledger.open_message(
                    due.key,
                    list_name=series.list_name,
                    kind=due.kind,
                    subject=report.subject,
                    told=[(i.key, i.revision) for i in due.seminars],
                    now=now,
                )
                if sent_before:  # the messages this run sent before changed who knows what: count again
                    audiences.refresh()
                    report.due = sum(1 for a in roster.subscribers() if audiences.wants(due, a.key, done))
                delivery = Delivery(
                    report.template,
                    settings,
                    ledger,
                    envelope_from=envelope_from,
                    verp=verp,
                    stop=stop,
                    limiter=limiter,
                    progress=progress(report, report.due),
                    doubtful=doubtful,
                    wanted=StillWanted(roster.store),
                )
                recipients = (a for a in roster.subscribers() if audiences.wants(due, a.key, done))
                report.outcome = delivery.outcome
                try:
                    await delivery.run(recipients)
                finally:
                    sent_before = sent_before or delivery.outcome.finished > 0
                    failed = delivery.outcome.failed
                    ledger.suppress([(a.key, a.addr, detail, due.key) for a, detail in failed], now=ledger.clock())
                    roster.suppressed.update(a.key for a, _ in failed)
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    try:
        asyncio.run(main())
    except LedgerError as err:
        result.stopped = str(err)
        result.unrecorded = len(ledger.unrecorded)
        return result
    except MailerError as err:  # the message, the sender or the login refused, or the server unreachable
        result.error = err
        return result
    result.stopped = stop.reason
    if limit and stop.budget == 0:
        # The window frees its first slot 24 hours after the oldest message it counts.
        clock = ledger.clock()
        if (oldest := ledger.oldest_since(clock - dt.timedelta(hours=24), 0)) is not None:
            result.resume_after = parse_time(oldest) + dt.timedelta(hours=24)
    return result


def plan_notes(request: Request) -> list[str]:
    """What ``check`` says of the next send: seminars removed after they were announced (to be
    cancelled), announcements recorded before fields were; raises ScheduleError when announced
    seminars cannot be told apart."""
    schedule = load_schedule(request.schedule)
    ledger = read_ledger(request.state, schedule.series.list_name)
    if ledger is None:
        return []
    return list(prepare(request, schedule, ledger).notes)


def preview(request: Request, *, test: bool = False) -> tuple[Week | None, list[MessageReport]]:
    """This week's announcement (whether or not it went out) and every other message due now."""
    schedule = load_schedule(request.schedule)
    ledger = read_ledger(request.state, schedule.series.list_name)
    planned = prepare(request, schedule, ledger, whole_week=True)
    now = request.moment(schedule)[0]
    key = token_key(request.state, request.env)  # made once: the preview carries the real unsubscribe link
    reports = []
    for due in planned.dues:
        if due.kind == ANNOUNCEMENT and not due.seminars:
            continue
        rendered, template = compose(
            schedule, due, planned.week, templates=request.templates, now=now, key=key, test=test
        )
        reports.append(MessageReport(due.kind, due.key, rendered.subject, 0, rendered=rendered, template=template))
    return planned.week, reports


def send_test(request: Request, to: Address) -> list[str]:
    """Send one copy of each message ``preview`` shows to ``to``, marked as a test in its subject and
    recorded nowhere (the ledger does not count it as delivered). Returns the subjects sent."""
    settings = smtp_settings(request.env, state=request.state)
    schedule = load_schedule(request.schedule)
    _, messages = preview(request, test=True)
    envelope_from = (settings.envelope_from or schedule.series.sender.ascii_addr).encode()

    async def deliver_all() -> None:
        from mailer.deliver.smtp import connect

        connection = await connect(settings)
        try:
            for message in messages:
                assert message.template is not None
                rcpt = to.addr if to.needs_smtputf8 else to.ascii_addr
                await connection.send(envelope_from, rcpt.encode(), message.template.wire(to))
        finally:
            await connection.quit()

    try:
        asyncio.run(deliver_all())
    except (OSError, aiosmtplib.SMTPException) as err:
        raise DeliveryError(f"the test copy to {to.addr} was not sent: {err}") from err
    return [m.subject for m in messages]
