"""What a person or cron sees of a send: a progress bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import datetime as dt
import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mailer.audience.recipients import DUE, DUPLICATE, HELD, INVALID, SUPPRESSED
from mailer.core.terminal import count_of, printable
from mailer.deliver.send import Outcome
from mailer.programme.project import DEFAULTS, MARKER, Project, list_name_of
from mailer.record.rows import parse_time
from mailer.run.plan import WEEKLY

if TYPE_CHECKING:
    from mailer.record.rows import Suppression
    from mailer.run.records import SeminarStatus
    from mailer.run.request import MessageReport, Result

_KIND = {
    "announcement": "Announcement",
    "change": "Change",
    "cancellation": "Cancellation",
    "reminder": "Reminder",
    "followup": "Follow-up",
    "digest": "Digest",
}


class Progress:
    """Redraw a bar on a terminal at most 10 times a second; log a line every 10% otherwise."""

    def __init__(self, total: int, *, tty: bool, label: str = "") -> None:
        self.total = max(total, 1)
        self.tty = tty
        self.label = label
        self.shown = -1.0
        self.step = -1

    def __call__(self, outcome: Outcome) -> None:
        done = outcome.finished
        if self.tty:
            now = time.monotonic()
            if now - self.shown < 0.1 and done < self.total:
                return
            self.shown = now
            filled = 30 * done // self.total
            print(
                f"\r{self.label}[{'#' * filled}{' ' * (30 - filled)}] {done}/{self.total}  sent {outcome.sent}  "
                f"deferred {len(outcome.deferred)}  failed {len(outcome.failed)}",
                end="" if done < self.total else "\n",
                file=sys.stderr,
            )
        elif (step := 10 * done // self.total) > self.step:
            self.step = step
            print(f"progress: {self.label}{done}/{self.total} done, {outcome.sent} sent", file=sys.stderr, flush=True)


def _header(message: MessageReport) -> str:
    subject = message.subject
    kind = _KIND.get(message.kind, message.kind)
    line = subject if subject.startswith(("Changed:", "Cancelled:", "Reminder:")) else f"{kind}: {subject}"
    return printable(line)


def _nothing_due(result: Result, already: int) -> str:
    """Why no announcement is due: everyone was told, or nobody on the list can be (named, so it can be fixed)."""
    if already or result.counts.get(DUE, 0):
        return f"Nothing to do: already sent to {count_of(already, 'recipient')}."
    where = printable(str(result.list_path or "the mailing list"))
    if not any(result.counts.values()):
        return (
            f"Nothing to do: nobody is on the list yet: {where} holds no address. "
            "Add one a line (ada@example.org or Ada Lovelace <ada@example.org>)."
        )
    return f"Nothing to do: nobody on {where} can receive it (every line is suppressed, a duplicate or invalid)."


def status_command(schedule: Path, state: Path, *, cwd: Path) -> str:
    """The status command that works in ``cwd``: no option for a path the project there finds by itself."""
    root = Project.discover(cwd).root
    words = ["seminar-mailer", "status"]
    for name, path in (("schedule", schedule), ("state", state)):
        default = root / DEFAULTS[name][1] if root is not None else None
        if name == "schedule" and root is not None and (cwd / path).resolve().parent == (root / "data").resolve():
            if (cwd / path).resolve() != (root / MARKER).resolve() and (listed := list_name_of(cwd / path)):
                words += ["--series", listed]  # another series of the project: named by its list
            continue
        if default is None or (cwd / path).resolve() != default.resolve():
            words += [f"--{name}", str(path)]
    return shlex.join(words)


def print_result(result: Result) -> None:
    """The closing report: one block per message, then the list's figures, then who needs attention."""
    status = printable(status_command(result.schedule.path, result.state, cwd=Path.cwd()))
    for warning in result.warnings:
        print(printable(f"warning: {warning}"), file=sys.stderr)
    if result.dry_run:
        print("Dry run: no connection opened, nothing sent.")
    for note in result.notes:
        print(printable(f"note: {note}"))
    due = [m for m in result.messages if m.due]
    if not due:
        announcement = next((m for m in result.messages if m.kind in WEEKLY), None)
        if announcement is not None:
            print(_nothing_due(result, announcement.already))
        elif result.week is None:
            print(f"Nothing to do: no {result.schedule.series.name} seminar to announce this week and nothing changed.")
        else:
            print("Nothing to do yet.")  # (a note above says when the announcement goes out)
    for message in result.messages:
        if not message.due and message.kind in WEEKLY and message.subject == "":
            continue
        print(_header(message))
        for change in message.changes:
            print(printable(f"    {change.label}: {change.old} -> {change.new}"))
        if result.dry_run or message.outcome is None:
            verb = "Would send to" if result.dry_run else "Not sent to"
            print(f"  {verb} {count_of(message.due, 'recipient')}.")
            if message.kind in WEEKLY:
                print(f"  already sent       {message.already}")
            continue
        outcome = message.outcome
        print(f"  sent now           {outcome.sent}")
        if message.kind in WEEKLY:
            print(f"  already sent       {message.already}")
        print(f"  deferred           {len(outcome.deferred)}  (run again later: they are retried)")
        print(f"  failed permanently {len(outcome.failed)}  (suppressed: {status})")
        if outcome.uncertain:
            print(f"  uncertain          {len(outcome.uncertain)}  (no reply after sending: retried once, next run)")
        if outcome.retried_uncertain:
            print(f"  possible duplicates {outcome.retried_uncertain}  (retried after an uncertain first copy)")
        if (left := message.due - outcome.finished) > 0:
            print(f"  not sent yet       {left}  (the run stopped: they stay due)")
        if outcome.withdrawn:
            print(f"  unsubscribed       {outcome.withdrawn}  (while this send ran: not sent)")
    print(f"  suppressed         {result.counts.get(SUPPRESSED, 0)}  (unsubscribed or refused)")
    if result.counts.get(HELD):  # (only when a subscriber chose: a project without choices reads as before)
        print(f"  digest only or nothing  {result.counts[HELD]}  (their choice for this list)")
    print(f"  duplicates         {result.counts.get(DUPLICATE, 0)}")
    print(f"  invalid lines      {result.counts.get(INVALID, 0)}  (skipped; run check)")
    for message in result.messages:
        if message.outcome is None:
            continue
        for address, detail in message.outcome.failed:
            print(printable(f"failed: {address.addr}: {detail}"))  # the server wrote detail
        for address, detail in message.outcome.deferred:
            print(printable(f"deferred: {address.addr}: {detail}"))
        for address, detail in message.outcome.uncertain:
            print(printable(f"uncertain: {address.addr}: {detail}"))
    if result.stopped and result.pending:
        print(f"Stopped early: {printable(result.stopped)}. Everyone not sent to stays due: run send again.")
    if result.unrecorded:
        print(
            f"warning: {count_of(result.unrecorded, 'result')} could not be recorded: those recipients may get a "
            "second copy (same Message-ID) when send runs again after space is freed."
        )
    if result.resume_after is not None and result.stopped:
        local = result.resume_after.astimezone(result.schedule.series.timezone)
        print(f"The daily limit frees up from {local:%Y-%m-%d %H:%M %Z}: a run after that continues.")


def print_status(seminars: list[SeminarStatus], suppressed: list[Suppression], *, tz: dt.tzinfo) -> None:
    """Per announced seminar: what was sent, when, to how many; then the suppressed addresses."""
    if not seminars:
        print("Nothing sent yet.")
    for entry in seminars:
        r = entry.remembered
        fields = r.fields or {}
        title = f"{fields.get('date', '?')} {fields.get('time', '')} {fields.get('speaker', r.key)}"
        print(printable(f"{title}  (revision {r.revision}, uid {r.uid})"))
        for kind, subject, counts, first, last in entry.messages:
            total = sum(counts.values())
            sent = counts.get("sent", 0)
            when = f", {_local(first, tz)} to {_local(last, tz)}" if first else ""
            print(
                printable(f"  {_KIND.get(kind, kind):<13} sent to {sent} of {total}{when}: {subject or '(migrated)'}")
            )
            for state in ("deferred", "failed", "uncertain"):
                if counts.get(state):
                    print(f"  {'':<13} {state}: {counts[state]}")
    if suppressed:
        print(f"Suppressed ({len(suppressed)}; `seminar-mailer unsuppress ADDRESS` lets one receive mail again):")
        for s in suppressed:
            print(printable(f"  {s.address}: {s.reason}"))


def _local(text: str | None, tz: dt.tzinfo) -> str:
    if not text:
        return "?"
    moment = parse_time(text)
    return moment.astimezone(tz).strftime("%Y-%m-%d %H:%M")
