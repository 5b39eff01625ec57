"""What is due: a pure function of the schedule, what the ledger remembers, and the clock.

A seminar's identity survives edits. Each seminar announced once is remembered in the ledger
under a key: its ``id:`` when the YAML pins one, else the identity assigned at its first
announcement. At every run the schedule's seminars are matched to the remembered ones, in this
order, each step only among those still unmatched:

1. the pinned ``id:``;
2. the same date and speaker (the identity a seminar is given at its first announcement): a new
   title, time, room or Zoom link;
3. the same date and speaker as it was last told (after a new speaker or a renamed list), then the same
   date and start time: a corrected speaker's name;
4. the same date: a new time;
5. the same speaker on another date (or the same title with the speaker's name respelled): a move.

A step matches a pair only when neither side has another candidate at that step; when one has two,
the run stops and ``check`` says which seminars it cannot tell apart and to pin them with ``id:``.
A remembered seminar matched by nothing, still in the future, was removed from the file: it is
treated as cancelled (and ``check`` and the dry run say so first).

Then, in order: this week's announcement to whoever has not been told of one of the week's
seminars; for every announced seminar whose announced fields changed, one change (or
cancellation) per revision a subscriber was told, to exactly those subscribers; reminders. Nothing
is ever sent about a seminar that has started, but its follow-up: when the series says
``followup: true``, the slides, video and paper of a seminar that has ended, once, to those told of
it, within ``FOLLOWUP_WINDOW`` of its end (links added later are on the website only).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from mailer.core.errors import Problem
from mailer.programme.model import Schedule, Seminar, Week, week_of
from mailer.programme.revisions import (
    Change,
    announced_fields,
    changes,
    derived_uid,
    first_revision,
    is_spelling_fix,
    silent,
    slug,
    week_fingerprint,
)
from mailer.record.rows import Remembered, parse_time

ANNOUNCEMENT, CHANGE, CANCELLATION, REMINDER = "announcement", "change", "cancellation", "reminder"
FOLLOWUP = "followup"
DIGEST = "digest"  # a weekly digest of several series (run/digest_plan.py): told as an announcement is
WEEKLY = (ANNOUNCEMENT, DIGEST)  # what tells a week's seminars: each subscriber gets those they lack
FOLLOWUP_WINDOW = dt.timedelta(days=14)  # after a seminar's end: its materials are mailed, if added by then
REMOVED = "It has been removed from the programme."


@dataclass(frozen=True, slots=True)
class Identity:
    """A seminar of the schedule with its stable identity and the revision it is now at."""

    seminar: Seminar
    key: str
    uid: str
    revision: int  # the revision subscribers must end up knowing: calendar SEQUENCE
    remembered: Remembered | None  # None: never announced

    @property
    def thread(self) -> str | None:
        return self.remembered.thread if self.remembered else None


@dataclass(frozen=True, slots=True)
class Memory:
    """What the ledger knows, as plain values: the planner reads nothing else."""

    remembered: tuple[Remembered, ...] = ()
    known: Mapping[str, frozenset[int]] = field(default_factory=dict)  # seminar -> revisions someone was told
    fields: Mapping[tuple[str, int], Mapping[str, object] | None] = field(default_factory=dict)
    first_told: Mapping[str, str | None] = field(default_factory=dict)  # seminar -> ledger time text
    seen: frozenset[str] = frozenset()  # derived identities of the seminars in the file at the last send
    approved: frozenset[tuple[str, str]] = frozenset()  # (week's Monday, fingerprint) an organiser approved


@dataclass(frozen=True, slots=True)
class Due:
    """One message that is due, and the rule that picks its recipients (applied by dispatch)."""

    kind: str
    key: str  # message key: also the seed of each recipient's Message-ID
    seminars: tuple[Identity, ...]  # what it tells (an announcement: the week's; else one)
    from_revision: int | None = None  # change/cancellation: for subscribers told exactly this revision
    changes: tuple[Change, ...] = ()
    old: Mapping[str, object] | None = None  # the fields those subscribers were told
    since: dt.datetime | None = None  # a reminder: its time (who was told only after it gets none)

    @property
    def thread(self) -> str | None:
        """The announcement this message follows up (In-Reply-To), if any."""
        return self.seminars[0].thread if self.kind not in WEEKLY else None


@dataclass(frozen=True, slots=True)
class Plan:
    week: Week | None  # this week's announcement (seminars not started yet), if any
    identities: tuple[Identity, ...]
    dues: tuple[Due, ...]  # announcement first (its key is a template: see announcement_key)
    remember: tuple[Remembered, ...]  # new revisions to record before anything is sent
    notes: tuple[str, ...]  # said by check and the dry run: removals, adopted identities
    problems: tuple[Problem, ...]  # seminars that cannot be told apart: nothing may be sent


def announcement_key(identities: tuple[Identity, ...]) -> str:
    """The announcement of these seminars at their revisions: their keys joined (version 1's key for one
    seminar), and the revisions when any is past the first (``;r1,0``). A message tells one revision of each
    seminar, so the ledger knows exactly what a subscriber who got it was told."""
    return "+".join(i.key for i in identities) + _revisions(identities)


def digest_key(list_name: str, identities: tuple[Identity, ...]) -> str:
    """The digest of list ``list_name`` telling these seminars at their revisions (never an announcement's key)."""
    return f"{DIGEST}:{list_name}:{announcement_key(identities)}"


def narrowed(due: Due, seminars: tuple[Identity, ...]) -> Due:
    """The week's announcement or digest ``due`` of just these of its seminars: what one subscriber lacks."""
    if due.kind == DIGEST:
        return Due(DIGEST, digest_key(due.key.split(":")[1], seminars), seminars)
    return Due(ANNOUNCEMENT, announcement_key(seminars), seminars)


def reminder_key(seminar: str) -> str:
    """The reminder of a seminar (with ``;rN`` for the revision it carries: see ``Ledger.done``)."""
    return f"reminder:{seminar}"


def followup_key(seminar: str) -> str:
    """The follow-up of a seminar (slides, video, paper): one per seminar, whatever it says when it goes."""
    return f"followup:{seminar}"


def _revisions(identities: tuple[Identity, ...]) -> str:
    return ";r" + ",".join(str(i.revision) for i in identities) if any(i.revision for i in identities) else ""


# --- matching ------------------------------------------------------------------------------------


def _start_of(fields: Mapping[str, object]) -> tuple[object, object]:
    return fields.get("date"), fields.get("time")


def _same_start(s: Seminar, f: Mapping[str, object]) -> bool:
    return (s.date.isoformat(), s.start.strftime("%H:%M")) == _start_of(f)


def _same_date(s: Seminar, f: Mapping[str, object]) -> bool:
    return s.date.isoformat() == f.get("date")


def _same_speaker(s: Seminar, f: Mapping[str, object]) -> bool:
    """The same speaker (or the same title and the speaker's name respelled). A title alone is not enough:
    placeholder titles ("TBA") and series themes repeat, and a new speaker on a new date is another seminar."""
    if slug(s.speaker) == slug(str(f.get("speaker"))):
        return True
    return bool(s.title) and s.title == f.get("title") and is_spelling_fix(s.speaker, str(f.get("speaker")))


def _same_date_and_speaker(s: Seminar, f: Mapping[str, object]) -> bool:
    """The date and speaker it was last told with (after a new speaker, or a renamed list, the identity made
    at the first announcement no longer says so)."""
    return _same_date(s, f) and slug(s.speaker) == slug(str(f.get("speaker")))


_STEPS: tuple[tuple[str, Callable[[Seminar, Mapping[str, object]], bool]], ...] = (
    ("date and speaker", _same_date_and_speaker),
    ("start", _same_start),
    ("date", _same_date),
    ("speaker", _same_speaker),
)


_SLOT_STEPS = ("date and speaker", "start")  # steps that may match a seminar the file held at earlier sends


def _known_fields(schedule: Schedule, r: Remembered) -> Mapping[str, object] | None:
    """The fields to match ``r`` by: as recorded, or for a seminar migrated from version 1 (fields
    never recorded) the date and speaker its identity was made of (list-YYYY-MM-DD-speaker@domain)."""
    if r.fields is not None:
        return r.fields
    match = re.fullmatch(rf"{re.escape(schedule.series.list_name)}-(\d{{4}}-\d{{2}}-\d{{2}})-(.+)@[^@]+", r.uid)
    return {"date": match[1], "speaker": match[2]} if match else None


def identify(
    schedule: Schedule, remembered: tuple[Remembered, ...], seen: frozenset[str] = frozenset()
) -> tuple[dict[int, Remembered], list[Problem]]:
    """Match the schedule's seminars (by index) to remembered ones; report what cannot be told apart.

    ``seen``: the identities (date and speaker) of the seminars the file held at the last send. A
    seminar that was in the file then is itself, never the edited or moved form of another."""
    seminars = schedule.seminars
    matched: dict[int, Remembered] = {}
    taken: set[str] = set()
    problems: list[Problem] = []

    def free(r: Remembered) -> bool:
        return r.key not in taken

    for i, s in enumerate(seminars):  # 1. pinned
        if s.id is not None:
            for r in remembered:
                if free(r) and s.id in (r.pinned, r.key):
                    matched[i] = r
                    taken.add(r.key)
                    break
    uid = {i: derived_uid(schedule, s) for i, s in enumerate(seminars)}
    for i, _s in enumerate(seminars):  # 2. first-announcement identity (date and speaker)
        if i not in matched:
            for r in remembered:
                if free(r) and r.uid == uid[i] and r.pinned is None:
                    matched[i] = r
                    taken.add(r.key)
                    break
    known = {r.key: _known_fields(schedule, r) for r in remembered}
    for step, test in _STEPS:  # 3-5: new in the file since the last send, against remembered seminars
        # A seminar already in the file at an earlier send can still be an announced one at its recorded
        # slot (step 3), but never another one's new date or speaker (steps 4 and 5).
        open_s = [i for i, _ in enumerate(seminars) if i not in matched and (step in _SLOT_STEPS or uid[i] not in seen)]
        # A seminar removed from the file comes back only as itself (its id, or its date and speaker): a new
        # talk put on its free date, or at its time, is another seminar, not the removed one revived.
        open_r = [
            r
            for r in remembered
            if free(r)
            and known[r.key] is not None
            and (step == "date and speaker" or (known[r.key] or {}).get("cancelled") != REMOVED)
        ]
        pairs = [
            (i, r)
            for i in open_s
            for r in open_r
            # Two different ids are two seminars, unless they hold the same slot (an id renamed).
            if (seminars[i].id is None or r.pinned is None or step in _SLOT_STEPS)
            and test(seminars[i], known[r.key] or {})
        ]
        for i, r in pairs:
            rivals_s = [p for p in pairs if p[0] == i]
            rivals_r = [p for p in pairs if p[1].key == r.key]
            if len(rivals_s) == 1 and len(rivals_r) == 1:
                matched[i] = r
                taken.add(r.key)
            elif (i, r) == (rivals_s + rivals_r)[0]:
                announced = sorted({q.key for _, q in rivals_s + rivals_r})
                candidates = sorted({f"{seminars[j].date} {seminars[j].speaker}" for j, _ in rivals_s + rivals_r})
                problems.append(
                    Problem(
                        schedule.path,
                        seminars[i].line,
                        5,
                        f"cannot tell which announced seminar this is (the same {step}): the seminars "
                        f"{'; '.join(candidates)} could each be the one announced as {', '.join(announced)}; "
                        f"wanted 'id: {announced[0]}' on the seminar that is it (and another id, or none, "
                        "on the others)",
                    )
                )
    return matched, problems


def identities(schedule: Schedule, memory: Memory) -> tuple[tuple[Identity, ...], list[Remembered], list[Problem]]:
    """Every seminar with its identity and target revision; the remembered seminars left unmatched.

    Drafts are matched too, as if they were not drafts: one that is an announced seminar is a problem (a
    draft cannot take back what subscribers were told, and it must not look removed, which would cancel it);
    the others are left out."""
    everything = replace(schedule, seminars=tuple(sorted((*schedule.seminars, *schedule.drafts), key=_start)))
    matched, problems = identify(everything, memory.remembered, memory.seen)
    out: list[Identity] = []
    keys = {r.key for r in memory.remembered}
    for i, s in enumerate(everything.seminars):
        r = matched.get(i)
        if s.draft:
            if r is not None and memory.known.get(r.key):  # (remembered, but told nobody: it may wait)
                problems.append(
                    Problem(
                        schedule.path,
                        s.line,
                        5,
                        f"the seminar of {s.date} with {s.speaker} was announced (as {r.key}), so 'draft: true' "
                        "cannot take it back; wanted 'draft' removed, or 'cancelled: <reason>' to call it off",
                    )
                )
            continue
        if r is None:
            key = base = derived_uid(schedule, s)
            n = 2
            while key in keys:  # a new seminar whose derived identity another one already took
                local, _, domain = base.rpartition("@")
                key, n = f"{local}-{n}@{domain}", n + 1
            keys.add(key)
            # A seminar first announced as cancelled starts at revision 1: its CANCEL outranks any
            # copy of the event at SEQUENCE 0 that calendars may hold (a feed, a forwarded invite).
            out.append(Identity(s, key, key, first_revision(s), None))
            continue
        revision = r.revision
        if r.fields is not None and dict(r.fields) != announced_fields(s):
            # (also an edit to a seminar already cancelled: it mails nobody, but the ledger follows the seminar
            # to its new date, so it is still recognised at the next run)
            revision += 1
        out.append(Identity(s, r.key, r.uid, revision, r))
    unmatched = [r for r in memory.remembered if r.key not in {m.key for m in matched.values()}]
    return tuple(out), unmatched, problems


def _start(s: Seminar) -> dt.datetime:
    return s.start


def seminar_from_fields(schedule: Schedule, fields: Mapping[str, object], line: int = 0) -> Seminar:
    """A remembered seminar as a Seminar (for one removed from the file)."""
    tz = schedule.series.timezone
    day = dt.date.fromisoformat(str(fields["date"]))
    hour, minute = (int(x) for x in str(fields["time"]).split(":"))
    return Seminar(
        date=day,
        start=dt.datetime.combine(day, dt.time(hour, minute), tzinfo=tz),
        duration=int(str(fields.get("duration") or schedule.series.duration)),
        speaker=str(fields["speaker"]),
        affiliation=None,
        title=str(fields["title"]) if fields.get("title") else None,
        abstract=None,
        bio=None,
        location=str(fields["location"]),
        zoom=str(fields["zoom"]) if fields.get("zoom") else None,
        cancelled=str(fields["cancelled"]) if fields.get("cancelled") is not None else None,
        line=line,
    )


# --- the plan ------------------------------------------------------------------------------------


def _parse_ledger_time(text: str) -> dt.datetime:
    return parse_time(text)


def plan(schedule: Schedule, memory: Memory, *, now: dt.datetime, today: dt.date, explicit: bool = False) -> Plan:
    """Decide every message that is due at ``now``; ``today`` picks the week to announce (``explicit``:
    the organiser named the week with --date, so the series' ``announce`` time does not hold it back)."""
    ids, unmatched, problems = identities(schedule, memory)
    notes: list[str] = []
    remember: list[Remembered] = []
    dues: list[Due] = []

    # 1. This week's announcement: the week's seminars that have not started.
    week = week_of(schedule, today)
    if week is not None:
        todo = tuple(s for s in week.seminars if s.start > now)
        week = replace(week, seminars=todo) if todo else None
    gate = schedule.series.announce
    held = (
        not explicit
        and gate is not None
        and now < gate.moment(today - dt.timedelta(days=today.weekday()), schedule.series.timezone)
    )
    if week is not None and held:
        notes.append(f"this week's announcement goes out from {gate} (series 'announce'), not before")
    if week is not None and not held:
        of_week = tuple(i for i in ids if i.seminar in week.seminars)
        dues.append(Due(ANNOUNCEMENT, announcement_key(of_week), of_week))

    # 2. Changes and cancellations of announced seminars, per revision a subscriber was told.
    targets: list[tuple[Identity, Mapping[str, object]]] = []
    for ident in ids:
        r = ident.remembered
        if r is None:
            continue
        new = announced_fields(ident.seminar)
        if r.fields is None:  # migrated from version 1: adopt what the schedule says, resend nothing
            remember.append(replace(r, fields=new))
            notes.append(f"{ident.seminar.date} {ident.seminar.speaker}: announced before fields were recorded")
            continue
        updated = r
        if ident.seminar.id is not None and r.pinned != ident.seminar.id:
            updated = replace(updated, pinned=ident.seminar.id)  # an id: added after the announcement
        if ident.revision != r.revision:
            updated = replace(updated, revision=ident.revision, fields=new)
        if updated != r:
            remember.append(updated)
        if ident.seminar.start > now and ident.revision > 0:
            targets.append((ident, new))
    for r in unmatched:
        if r.fields is None:
            continue
        gone: dict[str, object] = dict(r.fields)
        seminar = seminar_from_fields(schedule, gone)
        if seminar.start <= now:
            continue
        if gone.get("cancelled") is None:
            gone["cancelled"] = REMOVED
            revision = r.revision + 1
            remember.append(replace(r, revision=revision, fields=gone))
            notes.append(
                f"the seminar of {gone['date']} with {gone['speaker']} was announced but is no longer in "
                f"{schedule.path}: subscribers will be told it is cancelled (put it back, with "
                "'cancelled: reason', to say why)"
            )
        else:
            revision = r.revision
        ident = Identity(replace(seminar, cancelled=str(gone["cancelled"])), r.key, r.uid, revision, r)
        targets.append((ident, gone))
    for ident, target in targets:
        quiet: list[tuple[Change, ...]] = []
        for told in sorted(memory.known.get(ident.key, frozenset())):
            if told >= ident.revision:
                continue
            old = memory.fields.get((ident.key, told))
            if old is None or not (what := changes(old, target)):
                continue
            cancelling = target.get("cancelled") is not None and old.get("cancelled") is None
            if old.get("cancelled") is not None and target.get("cancelled") is not None:
                continue  # an edit to a seminar they were told is cancelled: nothing to tell
            if not cancelling and (ident.seminar.notify is False or (ident.seminar.notify is None and silent(what))):
                quiet.append(what)  # calendars get it from the feed and the next message that goes anyway
                continue
            kind = CANCELLATION if target.get("cancelled") is not None and old.get("cancelled") is None else CHANGE
            key = f"{kind}:{ident.key}:{told}-{ident.revision}"
            dues.append(Due(kind, key, (ident,), from_revision=told, changes=what, old=old))
        if quiet:
            s, shown = ident.seminar, "; ".join(f"{c.label}: {c.old} -> {c.new}" for c in quiet[-1])
            why = (
                "'notify: false' is set"
                if s.notify is False
                else "it looks like a spelling fix ('notify: true' on the seminar mails it)"
            )
            notes.append(
                f"{s.date} {s.speaker}: {shown}: no mail, as {why}; the calendar feed and the next message "
                "about it (a reminder, a change) carry it"
            )

    # 3. Reminders: after the reminder time, before the start, of a seminar announced before then.
    reminder = schedule.series.reminder
    if reminder is not None:
        for ident in ids:
            s = ident.seminar
            when = reminder.due_at(s.start)
            first = memory.first_told.get(ident.key)
            if s.is_cancelled or not when <= now < s.start or first is None:
                continue
            if _parse_ledger_time(first) >= when:
                continue  # the announcement itself went out after the reminder time
            dues.append(Due(REMINDER, reminder_key(ident.key) + _revisions((ident,)), (ident,), since=when))

    # 4. Follow-ups: a seminar's slides, video and paper, after it ended, to those told of it.
    if schedule.series.followup:
        for ident in ids:
            s = ident.seminar
            if s.is_cancelled or not s.materials or not s.end <= now < s.end + FOLLOWUP_WINDOW:
                continue
            if memory.first_told.get(ident.key) is None:
                continue  # never announced to anyone: nobody to follow up
            dues.append(Due(FOLLOWUP, followup_key(ident.key), (ident,)))
    if schedule.series.approval:
        dues = _approved_only(schedule, memory, dues, notes)
    return Plan(week, ids, tuple(dues), tuple(remember), tuple(notes), tuple(problems))


def monday_of(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=day.weekday())


def _approved_only(schedule: Schedule, memory: Memory, dues: list[Due], notes: list[str]) -> list[Due]:
    """With ``approval: required``: only what tells a week as an organiser approved it (``approve``), the file's
    seminars of that week then and now alike; the rest waits, and the notes say which week to approve. A
    follow-up goes after the talk, of links alone: it needs none."""

    def approved(monday: dt.date) -> bool:
        fingerprint = week_fingerprint(s for s in schedule.seminars if monday_of(s.date) == monday)
        return (monday.isoformat(), fingerprint) in memory.approved

    out, waiting = [], set()
    for due in dues:
        weeks = {monday_of(i.seminar.date) for i in due.seminars}
        if due.kind == FOLLOWUP or all(approved(m) for m in weeks):
            out.append(due)
        else:
            waiting |= {m for m in weeks if not approved(m)}
    for monday in sorted(waiting):
        notes.append(
            f"the week of {monday} waits for approval (series 'approval: required'), as the file is now: "
            f"seminar-mailer approve --date {monday}"
        )
    return out
