"""The planner (mailer/run/plan.py): what is due, as a pure function of the schedule, the ledger's memory
and the clock; and the correction and cancellation messages it leads to (golden files)."""

from __future__ import annotations

import datetime as dt
import email.utils
from dataclasses import replace
from pathlib import Path

import pytest

from mailer.core.address import Address
from mailer.programme.model import Schedule
from mailer.programme.revisions import announced_fields, derived_uid
from mailer.programme.schedule import load_schedule
from mailer.record.rows import Remembered
from mailer.run.dispatch import compose
from mailer.run.plan import (
    ANNOUNCEMENT,
    CANCELLATION,
    CHANGE,
    REMINDER,
    REMOVED,
    Memory,
    plan,
)
from tests.conftest import SERIES, check_golden

BASE = (
    SERIES
    + """\
{series_extra}seminars:
{seminars}"""
)
THURSDAY = "  - date: 2030-01-17\n    speaker: Serge Belongie\n    title: Fine-Grained Image Analysis\n"
TZ = dt.timezone(dt.timedelta(hours=1))  # CET, for writing moments in these tests
MONDAY = dt.datetime(2030, 1, 14, 8, 0, tzinfo=TZ)


def schedule(tmp_path: Path, seminars: str = THURSDAY, series_extra: str = "") -> Schedule:
    path = tmp_path / "seminars.yaml"
    path.write_text(BASE.format(seminars=seminars, series_extra=series_extra), encoding="utf-8")
    return load_schedule(path)


def announced(s: Schedule, index: int = 0, *, told: str = "2030-01-14T07:00:05.000000Z") -> Memory:
    """The memory after the first announcement of seminar ``index``, told to someone at revision 0."""
    seminar = s.seminars[index]
    key = derived_uid(s, seminar)
    remembered = Remembered(key, key, None, key, 0, announced_fields(seminar), told)
    return Memory((remembered,), {key: frozenset({0})}, {(key, 0): announced_fields(seminar)}, {key: told})


def kinds(p: object) -> list[str]:
    return [d.kind for d in p.dues]  # type: ignore[attr-defined]


def test_a_new_week_is_one_announcement_and_nothing_else(tmp_path: Path) -> None:
    s = schedule(tmp_path)
    p = plan(s, Memory(), now=MONDAY, today=MONDAY.date())
    assert kinds(p) == [ANNOUNCEMENT] and p.dues[0].key == "learning-machines-2030-01-17-serge-belongie@ri.se"


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({"Fine-Grained Image Analysis": "Fine-Grained Image Analysis, revisited"}, ["Title"]),
        ({"speaker: Serge Belongie": "speaker: Anna Kruger"}, ["Speaker"]),  # another speaker, same slot
        ({"2030-01-17\n": '2030-01-17\n    time: "16:30"\n'}, ["Time"]),
        ({"2030-01-17\n": "2030-01-17\n    location: Room 2\n"}, ["Location"]),
        ({"2030-01-17\n": "2030-01-23\n"}, ["Date"]),  # a move, recognised by speaker and title
        ({"2030-01-17\n": "2030-01-17\n    cancelled: true\n"}, ["Status"]),
        ({"2030-01-17\n": "2030-01-17\n    duration: 90\n"}, ["Duration"]),  # (a mutant once mailed nobody)
        ({"2030-01-17\n": "2030-01-17\n    zoom: https://rise.zoom.us/j/2\n"}, ["Zoom link"]),
    ],
)
def test_each_announced_field_edit_is_one_change_under_the_same_identity(
    tmp_path: Path, edit: dict[str, str], expected: list[str]
) -> None:
    s0 = schedule(tmp_path)
    memory = announced(s0)
    text = THURSDAY
    for old, new in edit.items():
        text = text.replace(old, new)
    p = plan(schedule(tmp_path, text), memory, now=MONDAY, today=MONDAY.date())
    (due,) = [d for d in p.dues if d.kind != ANNOUNCEMENT]
    assert due.kind == (CANCELLATION if expected == ["Status"] else CHANGE)
    assert [c.label for c in due.changes] == expected
    assert due.seminars[0].uid == memory.remembered[0].uid and due.seminars[0].revision == 1
    assert due.from_revision == 0 and due.thread == memory.remembered[0].thread


@pytest.mark.parametrize(
    ("edit", "notify", "mailed"),
    [
        ({"speaker: Serge Belongie": "speaker: Serge Belongi"}, None, False),  # one letter
        ({"speaker: Serge Belongie": "speaker: serge  belongie"}, None, False),  # case and spacing
        ({"Fine-Grained Image Analysis": "Fine-grained image analysis"}, None, False),
        ({"speaker: Serge Belongie": "speaker: Serge Bélongie"}, None, False),  # an accent
        ({"speaker: Serge Belongie": "speaker: Serge Belongi"}, True, True),  # notify: true mails it anyway
        ({"2030-01-17\n": '2030-01-17\n    time: "16:30"\n'}, False, False),  # notify: false silences any edit
        ({"speaker: Serge Belongie": "speaker: Serge Bergman"}, None, True),  # another person
    ],
)
def test_a_spelling_fix_is_a_silent_revision_unless_notify_says_otherwise(
    tmp_path: Path, edit: dict[str, str], notify: bool | None, mailed: bool
) -> None:
    s0 = schedule(tmp_path)
    memory = announced(s0)
    text = THURSDAY + (f"    notify: {str(notify).lower()}\n" if notify is not None else "")
    for old, new in edit.items():
        text = text.replace(old, new)
    p = plan(schedule(tmp_path, text), memory, now=MONDAY, today=MONDAY.date())
    follow_ups = [d for d in p.dues if d.kind != ANNOUNCEMENT]
    assert bool(follow_ups) == mailed, [d.changes for d in follow_ups]
    (ident,) = [i for i in p.identities if i.remembered is not None]
    assert ident.revision == 1  # the feed and the next message carry the fix at SEQUENCE 1
    assert (not mailed) == any("no mail" in note for note in p.notes), p.notes
    why = "'notify: false' is set" if notify is False else "it looks like a spelling fix"
    assert mailed or any(why in note for note in p.notes), p.notes


def test_an_abstract_edit_is_no_change(tmp_path: Path) -> None:
    s0 = schedule(tmp_path, THURSDAY + "    abstract: One.\n")
    p = plan(schedule(tmp_path, THURSDAY + "    abstract: Two.\n"), announced(s0), now=MONDAY, today=MONDAY.date())
    assert [d for d in p.dues if d.kind != ANNOUNCEMENT] == [] and p.remember == ()


def test_two_candidates_for_one_announced_seminar_cannot_be_told_apart(tmp_path: Path) -> None:
    s0 = schedule(tmp_path)
    moved = (
        "  - date: 2030-01-22\n    speaker: Serge Belongie\n    title: Fine-Grained Image Analysis\n"
        "  - date: 2030-01-29\n    speaker: Serge Belongie\n    title: Fine-Grained Image Analysis\n"
    )
    p = plan(schedule(tmp_path, moved), announced(s0), now=MONDAY, today=MONDAY.date())
    assert p.problems and "cannot tell which announced seminar this is" in p.problems[0].message
    assert p.problems[0].column == 5  # where "  - date:" puts the seminar's first key: editors jump there
    assert [q.line for q in p.problems] == [x.line for x in schedule(tmp_path, moved).seminars]  # at each of them
    assert "wanted 'id: learning-machines-2030-01-17-serge-belongie@ri.se' on the seminar" in p.problems[0].message
    pinned = moved.replace("2030-01-22\n", "2030-01-22\n    id: belongie-1\n")
    pinned = pinned.replace("2030-01-29\n", "2030-01-29\n    id: belongie-2\n")
    again = plan(schedule(tmp_path, pinned), announced(s0), now=MONDAY, today=MONDAY.date())
    assert again.problems  # still two candidates: an id that never was announced does not say which
    memory = announced(s0)
    key = memory.remembered[0].key
    explicit = pinned.replace("id: belongie-1", f"id: {key}")  # the id the ledger shows in status
    third = plan(schedule(tmp_path, explicit), memory, now=MONDAY, today=MONDAY.date())
    assert not third.problems and [d.kind for d in third.dues if d.kind != ANNOUNCEMENT] == [CHANGE]


def test_a_removed_future_seminar_is_cancelled_and_a_past_one_is_left_alone(tmp_path: Path) -> None:
    s0 = schedule(tmp_path)
    other = "  - date: 2030-02-07\n    speaker: Someone Else\n"
    p = plan(schedule(tmp_path, other), announced(s0), now=MONDAY, today=MONDAY.date())
    (due,) = [d for d in p.dues if d.kind == CANCELLATION]
    assert "removed from the programme" in str(due.seminars[0].seminar.cancelled)
    assert due.seminars[0].revision == 1 and due.key.endswith(":0-1")  # the next revision: SEQUENCE 1
    assert any("no longer in" in n for n in p.notes)
    later = dt.datetime(2030, 1, 18, 8, 0, tzinfo=TZ)  # after it would have started
    assert plan(schedule(tmp_path, other), announced(s0), now=later, today=later.date()).dues == ()


def test_every_removed_future_seminar_is_cancelled_after_a_removed_past_one(tmp_path: Path) -> None:
    """Clearing old seminars out of the file: the past ones are left alone, every future one is cancelled
    (a `continue` turned `break` once stopped at the first past one)."""
    past = "  - date: 2030-01-10\n    speaker: Ada Lovelace\n    title: Engines\n"
    later = "  - date: 2030-01-24\n    speaker: Alan Turing\n    title: Machines\n"
    s0 = schedule(tmp_path, past + THURSDAY + later)
    memories = [announced(s0, i) for i in range(3)]
    memory = Memory(
        tuple(r for m in memories for r in m.remembered),
        {k: v for m in memories for k, v in m.known.items()},
        {k: v for m in memories for k, v in m.fields.items()},
        {k: v for m in memories for k, v in m.first_told.items()},
    )
    other = "  - date: 2030-02-07\n    speaker: Someone Else\n"
    p = plan(schedule(tmp_path, other), memory, now=MONDAY, today=MONDAY.date())
    cancelled = sorted(d.seminars[0].seminar.speaker for d in p.dues if d.kind == CANCELLATION)
    assert cancelled == ["Alan Turing", "Serge Belongie"]


def test_nothing_is_sent_about_a_seminar_that_has_started(tmp_path: Path) -> None:
    s0 = schedule(tmp_path)
    during = dt.datetime(2030, 1, 17, 15, 30, tzinfo=TZ)
    edited = THURSDAY.replace("2030-01-17\n", "2030-01-17\n    location: Room 9\n")
    assert plan(schedule(tmp_path, edited), announced(s0), now=during, today=during.date()).dues == ()
    start = s0.seminars[0].start  # from the very moment it starts
    assert plan(schedule(tmp_path, edited), announced(s0), now=start, today=start.date()).dues == ()
    before = start - dt.timedelta(minutes=1)
    assert CHANGE in kinds(plan(schedule(tmp_path, edited), announced(s0), now=before, today=before.date()))


@pytest.mark.parametrize(
    ("setting", "now", "due"),
    [
        ('"09:00"', dt.datetime(2030, 1, 17, 8, 59, tzinfo=TZ), False),
        ('"09:00"', dt.datetime(2030, 1, 17, 9, 0, tzinfo=TZ), True),
        ('"09:00"', dt.datetime(2030, 1, 17, 15, 0, tzinfo=TZ), False),  # it has started
        ("2h", dt.datetime(2030, 1, 17, 12, 59, tzinfo=TZ), False),
        ("2h", dt.datetime(2030, 1, 17, 13, 0, tzinfo=TZ), True),
    ],
)
def test_the_reminder_is_due_from_its_time_until_the_start(
    tmp_path: Path, setting: str, now: dt.datetime, due: bool
) -> None:
    s = schedule(tmp_path, series_extra=f"  reminder: {setting}\n")
    assert (REMINDER in kinds(plan(s, announced(s), now=now, today=now.date()))) is due


def test_no_reminder_when_the_announcement_itself_went_out_after_the_reminder_time(tmp_path: Path) -> None:
    s = schedule(tmp_path, series_extra='  reminder: "09:00"\n')
    late = announced(s, told="2030-01-17T08:30:00.000000Z")  # 09:30 CET, after the 09:00 reminder
    now = dt.datetime(2030, 1, 17, 10, 0, tzinfo=TZ)
    assert REMINDER not in kinds(plan(s, late, now=now, today=now.date()))
    at_it = announced(s, told="2030-01-17T08:00:00.000000Z")  # 09:00 CET: at the reminder time itself
    assert REMINDER not in kinds(plan(s, at_it, now=now, today=now.date()))
    before = announced(s, told="2030-01-17T07:59:59.999999Z")
    assert REMINDER in kinds(plan(s, before, now=now, today=now.date()))


# --- golden files: the messages a change and a cancellation send ----------------------------------


@pytest.mark.parametrize(
    ("name", "edit"),
    [
        ("change-2030-01-17.eml", '2030-01-17\n    time: "16:00"\n    location: Room 2, Scheelevägen 17\n'),
        ("cancellation-2030-01-17.eml", "2030-01-17\n    cancelled: The speaker is ill.\n"),
    ],
)
def test_golden_correction_messages(tmp_path: Path, update_golden: bool, name: str, edit: str) -> None:
    s0 = schedule(tmp_path)
    s1 = schedule(tmp_path, THURSDAY.replace("2030-01-17\n", edit))
    (due,) = [d for d in plan(s1, announced(s0), now=MONDAY, today=MONDAY.date()).dues if d.kind != ANNOUNCEMENT]
    now = email.utils.parsedate_to_datetime("Mon, 14 Jan 2030 08:00:00 +0100")
    _, template = compose(s1, due, None, templates=None, now=now, key=b"golden-key-0123456789")
    message = template.personalise(Address("Ada Lovelace", "ada@example.org"))
    check_golden(name, message.decode("utf-8").replace("\r\n", "\n"), update_golden)


@pytest.mark.parametrize(
    ("setting", "now", "explicit", "due"),
    [
        ('"Monday 08:00"', dt.datetime(2030, 1, 14, 7, 59, tzinfo=TZ), False, False),
        ('"Monday 08:00"', dt.datetime(2030, 1, 14, 8, 0, tzinfo=TZ), False, True),
        ('"Monday 08:00"', dt.datetime(2030, 1, 14, 7, 0, tzinfo=TZ), True, True),  # send --date: asked for
        ("tue 12:30", dt.datetime(2030, 1, 15, 12, 29, tzinfo=TZ), False, False),
        ("tue 12:30", dt.datetime(2030, 1, 15, 12, 30, tzinfo=TZ), False, True),
    ],
)
def test_the_announcement_waits_for_the_series_announce_time(
    tmp_path: Path, setting: str, now: dt.datetime, explicit: bool, due: bool
) -> None:
    """So cron can run send every 15 minutes (for reminders) without announcing at Monday 00:00."""
    s = schedule(tmp_path, series_extra=f"  announce: {setting}\n")
    p = plan(s, Memory(), now=now, today=now.date(), explicit=explicit)
    assert (ANNOUNCEMENT in kinds(p)) is due
    assert due or any("goes out from" in n for n in p.notes)


def test_a_bad_announce_time_is_an_input_error(tmp_path: Path) -> None:
    from mailer.core.errors import ScheduleError

    with pytest.raises(ScheduleError) as caught:
        schedule(tmp_path, series_extra='  announce: "Moonday 8"\n')
    assert 'wanted a weekday and a 24-hour time, such as "Monday 08:00"' in str(caught.value.problems[0])


def test_a_deleted_seminar_is_not_taken_for_a_move_to_one_that_was_already_in_the_file(tmp_path: Path) -> None:
    """Alice's talk announced, then deleted; Bob's, with the same placeholder title, was in the file
    all along: Alice's is cancelled, Bob's is not her "moved" talk."""
    both = (
        "  - date: 2030-01-17\n    speaker: Alice Adams\n    title: TBA\n"
        "  - date: 2030-01-24\n    speaker: Bob Brown\n    title: TBA\n"
    )
    s0 = schedule(tmp_path, both)
    memory = announced(s0)
    seen = frozenset(derived_uid(s0, s) for s in s0.seminars)
    s1 = schedule(tmp_path, "  - date: 2030-01-24\n    speaker: Bob Brown\n    title: TBA\n")
    with_seen = Memory(memory.remembered, memory.known, memory.fields, memory.first_told, seen)
    p = plan(s1, with_seen, now=MONDAY, today=MONDAY.date())
    assert [d.kind for d in p.dues] == [CANCELLATION]
    assert p.identities[0].remembered is None  # Bob's is his own seminar, still to be announced


def test_an_id_renamed_on_an_announced_seminar_is_the_same_seminar(tmp_path: Path) -> None:
    s0 = schedule(tmp_path, THURSDAY.replace("2030-01-17\n", "2030-01-17\n    id: belongie-talk\n"))
    seminar = s0.seminars[0]
    key = derived_uid(s0, seminar)
    remembered = Remembered(key, key, "belongie-talk", key, 0, announced_fields(seminar), "2030-01-14T07:00:05.000000Z")
    memory = Memory((remembered,), {key: frozenset({0})}, {(key, 0): announced_fields(seminar)}, {})
    s1 = schedule(tmp_path, THURSDAY.replace("2030-01-17\n", "2030-01-17\n    id: talk-1\n"))
    p = plan(s1, memory, now=MONDAY, today=MONDAY.date())
    assert p.identities[0].remembered == remembered and p.identities[0].uid == key
    assert [d.kind for d in p.dues] == [ANNOUNCEMENT]  # (split by who knows it: nobody new here)
    assert not any("no longer in" in n for n in p.notes)


def test_a_seminar_migrated_from_version_1_is_matched_by_the_date_its_identity_holds(tmp_path: Path) -> None:
    """Announced by the first release (no fields recorded), then the speaker's spelling fixed."""
    s0 = schedule(tmp_path, THURSDAY.replace("Serge Belongie", "Serge Belongi"))
    key = derived_uid(s0, s0.seminars[0])
    migrated = Remembered(key, key, None, key, 0, None, "2030-01-14T07:00:05.000000Z")
    p = plan(schedule(tmp_path), Memory((migrated,), {key: frozenset({0})}), now=MONDAY, today=MONDAY.date())
    assert p.identities[0].remembered == migrated and p.identities[0].uid == key


def test_the_announce_time_holds_the_week_back_and_says_so_only_when_there_is_a_week(tmp_path: Path) -> None:
    """Before the series' announce time nothing is due and the note says when it goes; a week without seminars has
    no such note; an explicit --date (explicit=True) is not held. (Mutation testing found the default and the note
    unchecked.)"""
    s = schedule(tmp_path, series_extra='  announce: "Monday 08:00"\n')
    early = MONDAY - dt.timedelta(hours=1)
    held = plan(s, Memory(), now=early, today=early.date())
    assert kinds(held) == [] and held.notes == (
        "this week's announcement goes out from Monday 08:00 (series 'announce'), not before",
    )
    assert kinds(plan(s, Memory(), now=early, today=early.date(), explicit=True)) == [ANNOUNCEMENT]
    empty_week = early + dt.timedelta(days=14)
    assert plan(s, Memory(), now=empty_week, today=empty_week.date()).notes == ()


def test_approval_holds_every_message_of_a_week_until_it_is_approved_as_it_is(tmp_path: Path) -> None:
    from mailer.programme.revisions import week_fingerprint

    s = schedule(tmp_path, series_extra="  approval: required\n")
    waiting = plan(s, Memory(), now=MONDAY, today=MONDAY.date())
    assert kinds(waiting) == [] and any("the week of 2030-01-14 waits for approval" in n for n in waiting.notes)
    approved = Memory(approved=frozenset({("2030-01-14", week_fingerprint(s.seminars))}))
    assert kinds(plan(s, approved, now=MONDAY, today=MONDAY.date())) == [ANNOUNCEMENT]
    edited = schedule(tmp_path, THURSDAY.replace("Fine-Grained", "Coarse"), series_extra="  approval: required\n")
    assert kinds(plan(edited, approved, now=MONDAY, today=MONDAY.date())) == []  # approved as it was, not as it is


def test_a_move_with_the_speakers_name_respelled_is_still_that_seminar(tmp_path: Path) -> None:
    """Another date and "Serge Belongi" for "Serge Belongie", the same title: one change (date), not a removal
    and a new seminar."""
    s0 = schedule(tmp_path)
    moved = schedule(tmp_path, THURSDAY.replace("2030-01-17", "2030-01-23").replace("Belongie", "Belongi"))
    p = plan(moved, announced(s0), now=MONDAY + dt.timedelta(hours=2), today=MONDAY.date())
    assert kinds(p) == [CHANGE] and [c.label for c in p.dues[0].changes] == ["Date", "Speaker"]


def test_the_followup_window_is_fourteen_days_after_the_end(tmp_path: Path) -> None:
    from mailer.run.plan import FOLLOWUP

    linked = THURSDAY + "    slides: https://ri.se/s.pdf\n"
    s = schedule(tmp_path, linked, series_extra="  followup: true\n")
    memory = announced(s)
    end = s.seminars[0].end
    assert kinds(plan(s, memory, now=end + dt.timedelta(days=14, minutes=-1), today=end.date())) == [FOLLOWUP]
    assert kinds(plan(s, memory, now=end + dt.timedelta(days=14), today=end.date())) == []
    assert kinds(plan(s, memory, now=end, today=end.date())) == [FOLLOWUP]  # from the end on
    assert kinds(plan(s, memory, now=end - dt.timedelta(minutes=1), today=end.date())) == []


def test_a_seminar_moved_back_to_its_first_date_is_itself_though_a_new_talk_took_the_slot_it_left(
    tmp_path: Path,
) -> None:
    """Announced on the 17th, moved to the 23rd (told), moved back, and a new talk put on the 23rd at the same
    time: the seminar is known by the date and speaker of its first announcement before any later slot, so
    subscribers are told it moved back, and the new talk is announced, not taken for its new speaker."""
    told = "2030-01-14T07:00:05.000000Z"
    s0 = schedule(tmp_path)
    key = derived_uid(s0, s0.seminars[0])
    moved = announced_fields(schedule(tmp_path, THURSDAY.replace("2030-01-17\n", "2030-01-23\n")).seminars[0])
    first = announced_fields(s0.seminars[0])
    memory = Memory(
        (Remembered(key, key, None, key, 1, moved, told),),
        {key: frozenset({0, 1})},
        {(key, 0): first, (key, 1): moved},
        {key: told},
    )
    new = "  - date: 2030-01-23\n    speaker: Anna Kruger\n    title: Another Talk\n"
    p = plan(schedule(tmp_path, THURSDAY + new), memory, now=MONDAY, today=MONDAY.date())
    by_speaker = {i.seminar.speaker: i for i in p.identities}
    assert by_speaker["Serge Belongie"].key == key and by_speaker["Serge Belongie"].revision == 2
    assert by_speaker["Anna Kruger"].remembered is None
    (change,) = [d for d in p.dues if d.kind == CHANGE]
    assert change.seminars[0].key == key and [c.label for c in change.changes] == ["Date"]


def test_talks_of_one_speaker_on_one_day_are_seminars_with_identities_of_their_own(tmp_path: Path) -> None:
    """The same date and speaker three times (morning, afternoon, evening): each later one takes the next free
    identity (-2, -3), so their invitations do not replace each other in a calendar."""
    afternoon = THURSDAY.replace("2030-01-17\n", '2030-01-17\n    time: "16:30"\n').replace("Analysis", "Part 2")
    evening = THURSDAY.replace("2030-01-17\n", '2030-01-17\n    time: "18:00"\n').replace("Analysis", "Part 3")
    p = plan(schedule(tmp_path, THURSDAY + afternoon + evening), Memory(), now=MONDAY, today=MONDAY.date())
    keys = [i.key for i in p.identities]
    assert keys == [
        "learning-machines-2030-01-17-serge-belongie@ri.se",
        "learning-machines-2030-01-17-serge-belongie-2@ri.se",
        "learning-machines-2030-01-17-serge-belongie-3@ri.se",
    ]
    (announcement,) = p.dues
    assert announcement.key == "+".join(keys)


def test_a_seminar_announced_before_fields_were_recorded_is_adopted_and_said(tmp_path: Path) -> None:
    s0 = schedule(tmp_path)
    key = derived_uid(s0, s0.seminars[0])
    migrated = Remembered(key, key, None, key, 0, None, "2030-01-14T07:00:05.000000Z")
    p = plan(s0, Memory((migrated,), {key: frozenset({0})}), now=MONDAY, today=MONDAY.date())
    assert p.remember == (replace(migrated, fields=announced_fields(s0.seminars[0])),)
    assert p.notes == ("2030-01-17 Serge Belongie: announced before fields were recorded",)
    assert kinds(p) == [ANNOUNCEMENT]  # (nothing resent: the split by who knows it is dispatch's)


def test_an_id_taken_off_an_announced_seminar_stays_pinned_in_the_ledger(tmp_path: Path) -> None:
    """The id: line deleted from a seminar announced with it: it is still matched (by date and speaker), and
    the ledger keeps the id, so it is still that seminar when the line comes back, and nothing is recorded."""
    s0 = schedule(tmp_path, THURSDAY.replace("2030-01-17\n", "2030-01-17\n    id: belongie-talk\n"))
    key = derived_uid(s0, s0.seminars[0])
    remembered = Remembered(key, key, "belongie-talk", key, 0, announced_fields(s0.seminars[0]), "2030-01-14T07:00:05Z")
    memory = Memory((remembered,), {key: frozenset({0})}, {(key, 0): announced_fields(s0.seminars[0])}, {})
    p = plan(schedule(tmp_path), memory, now=MONDAY, today=MONDAY.date())
    assert p.identities[0].remembered == remembered and p.remember == ()


def test_a_removed_seminar_is_not_cancelled_from_the_moment_it_starts(tmp_path: Path) -> None:
    s0 = schedule(tmp_path)
    start = s0.seminars[0].start
    other = "  - date: 2030-02-07\n    speaker: Someone Else\n"
    before = start - dt.timedelta(minutes=1)
    assert [d.kind for d in plan(schedule(tmp_path, other), announced(s0), now=before, today=before.date()).dues] == [
        CANCELLATION
    ]
    assert plan(schedule(tmp_path, other), announced(s0), now=start, today=start.date()).dues == ()


def test_a_seminar_announced_before_fields_were_recorded_does_not_hide_an_edit_of_the_next(tmp_path: Path) -> None:
    """The first seminar migrated from version 1 (no fields recorded), the next one announced since and edited:
    subscribers are still told of the edit (a `continue` turned `break` once stopped at the migrated one)."""
    later = "  - date: 2030-01-16\n    speaker: Ada Lovelace\n    title: Engines\n"
    s0 = schedule(tmp_path, later + THURSDAY)
    old = derived_uid(s0, s0.seminars[0])
    migrated = Remembered(old, old, None, old, 0, None, "2030-01-07T07:00:05.000000Z")
    memory = announced(s0, 1)
    memory = Memory(
        (migrated, *memory.remembered), {old: frozenset({0}), **memory.known}, memory.fields, memory.first_told
    )
    edited = later + THURSDAY.replace("2030-01-17\n", "2030-01-17\n    location: Room 2\n")
    p = plan(schedule(tmp_path, edited), memory, now=MONDAY, today=MONDAY.date())
    (change,) = [d for d in p.dues if d.kind == CHANGE]
    assert change.seminars[0].seminar.speaker == "Serge Belongie" and [c.label for c in change.changes] == ["Location"]


def test_a_removed_seminar_is_cancelled_after_an_unmatched_one_announced_before_fields_were_recorded(
    tmp_path: Path,
) -> None:
    """A seminar announced by version 1 (no fields recorded) that nothing in the file matches is left alone,
    and the next removed one is still cancelled (a `continue` turned `break` once stopped at the first)."""
    s0 = schedule(tmp_path)
    old = "learning-machines-2030-01-16-ada-lovelace@ri.se"
    migrated = Remembered(old, old, None, old, 0, None, "2030-01-07T07:00:05.000000Z")
    memory = announced(s0)
    memory = Memory(
        (migrated, *memory.remembered), {old: frozenset({0}), **memory.known}, memory.fields, memory.first_told
    )
    other = "  - date: 2030-02-07\n    speaker: Someone Else\n"
    p = plan(schedule(tmp_path, other), memory, now=MONDAY, today=MONDAY.date())
    (due,) = [d for d in p.dues if d.kind == CANCELLATION]
    assert due.seminars[0].key == memory.remembered[1].key


def told_revisions(tmp_path: Path, *texts: str, known: tuple[int, ...]) -> Memory:
    """The memory of one seminar announced as ``texts[0]`` and revised to each next text (revision i is
    texts[i]); ``known``: the revisions someone was told."""
    revisions = [announced_fields(schedule(tmp_path, text).seminars[0]) for text in texts]
    key = derived_uid(schedule(tmp_path, texts[0]), schedule(tmp_path, texts[0]).seminars[0])
    told = "2030-01-14T07:00:05.000000Z"
    last = len(texts) - 1
    return Memory(
        (Remembered(key, key, None, key, last, revisions[last], told),),
        {key: frozenset(known)},
        {(key, i): revisions[i] for i in known},
        {key: told},
    )


ROOM_B = THURSDAY.replace("2030-01-17\n", "2030-01-17\n    location: Room B\n")
CANCELLED = THURSDAY.replace("2030-01-17\n", "2030-01-17\n    cancelled: The speaker is ill.\n")


@pytest.mark.parametrize(
    ("texts", "now", "expected"),
    [
        # reverted to what revision 0 said: nothing to those told it, the revert to those told revision 1
        ((THURSDAY, ROOM_B), THURSDAY, [(CHANGE, 1, ["Location"])]),
        # cancelled, back on, cancelled again for another reason: those told it was cancelled hear nothing
        # more, the others are told it is cancelled
        (
            (THURSDAY, CANCELLED, THURSDAY),
            CANCELLED.replace("The speaker is ill.", "Postponed to spring."),
            [(CANCELLATION, 0, ["Status"]), (CANCELLATION, 2, ["Status"])],
        ),
        # a spelling fix of what revision 0 said (no mail for them), another speaker for those told revision 1
        (
            (THURSDAY, THURSDAY.replace("Serge Belongie", "Anna Kruger")),
            THURSDAY.replace("Serge Belongie", "Serge Belongi"),
            [(CHANGE, 1, ["Speaker"])],
        ),
    ],
)
def test_each_revision_told_is_followed_up_on_its_own_whatever_an_earlier_one_needs(
    tmp_path: Path, texts: tuple[str, ...], now: str, expected: list[tuple[str, int, list[str]]]
) -> None:
    """Those told different revisions each get what differs from theirs; one told revision that needs no mail
    (unchanged, already cancelled, a spelling fix) does not stop the later ones being told (three `continue`
    turned `break` would)."""
    memory = told_revisions(tmp_path, *texts, known=tuple(range(len(texts))))
    p = plan(schedule(tmp_path, now), memory, now=MONDAY, today=MONDAY.date())
    got = [(d.kind, d.from_revision, [c.label for c in d.changes]) for d in p.dues if d.kind != ANNOUNCEMENT]
    assert got == expected


# --- what counts as a change, and as a spelling fix (mailer/programme/revisions.py) ----------------


def _reference_distance(a: str, b: str) -> int:
    """Insertions, deletions, substitutions and swaps of two neighbours (optimal string alignment), by its
    recursive definition: the planner's rolling-row version must agree with it everywhere."""
    memo: dict[tuple[int, int], int] = {}

    def d(i: int, j: int) -> int:
        if (i, j) not in memo:
            if not i or not j:
                memo[i, j] = i + j
            else:
                best = min(d(i - 1, j) + 1, d(i, j - 1) + 1, d(i - 1, j - 1) + (a[i - 1] != b[j - 1]))
                if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                    best = min(best, d(i - 2, j - 2) + 1)
                memo[i, j] = best
        return memo[i, j]

    return d(len(a), len(b))


def test_the_edit_distance_of_names_agrees_with_its_definition_on_every_short_string() -> None:
    from itertools import product

    from mailer.programme.revisions import _distance

    words = ["".join(p) for n in range(5) for p in product("abc", repeat=n)]
    wrong = [(a, b) for a in words for b in words if _distance(a, b) != _reference_distance(a, b)]
    assert wrong == [], wrong[:5]
    assert _distance("serge belongie", "serge bleongie") == 1 and _distance("kitten", "sitting") == 3


@pytest.mark.parametrize(
    ("old", "new", "fix"),
    [
        ("Serge Belongie", "serge  BELONGIE.", True),  # case, punctuation and spacing alone
        ("Serge Belongie", "Serge Belongi", True),  # one edit in 14 letters
        ("Sam Lee", "Pam Lee", False),  # one edit in 7 letters: another person
        ("Ada Lovelac", "Ada Lovelace", True),  # one edit in 12 letters
        ("abcdefghijklmnop", "abcdefghijklmnXY", True),  # two edits in 16 letters: exactly one in eight
        ("abcdefghijklmno", "abcdefghijklmnXY", True),  # two edits, the longer has 16 letters
        ("abcdefghijklmn", "abcdefghijklXY", False),  # two edits in 14 letters
        ("abcdefghijklmnopqrstuvwxyzabcd", "abcdefghijklmnopqrstuvwxyzaXYZ", False),  # three edits: never
    ],
)
def test_a_spelling_fix_is_at_most_two_edits_and_one_in_eight_letters(old: str, new: str, fix: bool) -> None:
    from mailer.programme.revisions import is_spelling_fix

    assert is_spelling_fix(old, new) is fix
    assert is_spelling_fix(new, old) is fix


def test_each_change_is_shown_as_the_reader_sees_it() -> None:
    from mailer.programme.revisions import Change, changes

    old = {"date": "2030-01-17", "time": "15:00", "tz": "CET", "duration": 60, "location": "Room A", "zoom": None,
           "speaker": "Ada", "title": "", "cancelled": None}  # fmt: skip
    new = {**old, "time": "16:30", "duration": 90, "zoom": "https://z.example/1", "title": "Engines",
           "cancelled": "The speaker is ill."}  # fmt: skip
    assert changes(old, new) == (
        Change("Time", "15:00 CET", "16:30 CET"),
        Change("Duration", "60 minutes", "90 minutes"),
        Change("Zoom link", "(none)", "https://z.example/1"),
        Change("Title", "(none)", "Engines"),
        Change("Status", "on", "cancelled: The speaker is ill."),
    )
    assert changes({**old, "tz": None}, {**old, "tz": None, "cancelled": ""}) == (Change("Status", "on", "cancelled"),)
    assert changes({**old, "tz": None}, {**old, "tz": None, "time": "16:00"}) == (Change("Time", "15:00", "16:00"),)
    assert changes(old, dict(old)) == ()


def test_a_seminar_first_announced_as_cancelled_starts_at_revision_1_and_others_at_0(tmp_path: Path) -> None:
    """Its CANCEL must outrank a copy at SEQUENCE 0 that a calendar may hold (a feed, a forwarded invite)."""
    other = "  - date: 2030-01-16\n    speaker: Ada Lovelace\n    title: Engines\n    cancelled: The speaker is ill.\n"
    p = plan(schedule(tmp_path, other + THURSDAY), Memory(), now=MONDAY, today=MONDAY.date())
    assert [(i.seminar.speaker, i.revision) for i in p.identities] == [("Ada Lovelace", 1), ("Serge Belongie", 0)]


def test_an_id_added_after_the_announcement_is_pinned_in_the_ledger(tmp_path: Path) -> None:
    """So the seminar is that id from then on: moved later with its date and speaker changed, it is still
    itself (step 1), which only the id can tell."""
    s0 = schedule(tmp_path)
    memory = announced(s0)
    pinned = THURSDAY.replace("2030-01-17\n", "2030-01-17\n    id: belongie-talk\n")
    p = plan(schedule(tmp_path, pinned), memory, now=MONDAY, today=MONDAY.date())
    assert p.remember == (replace(memory.remembered[0], pinned="belongie-talk"),)
    assert kinds(p) == [ANNOUNCEMENT]  # (an id alone tells subscribers nothing)


def test_a_new_talk_in_the_slot_of_a_removed_seminar_is_a_new_seminar_not_it_revived(tmp_path: Path) -> None:
    """Announced, removed from the file (subscribers told it is cancelled), then another speaker put at the same
    date and time: that is announced as a new seminar; the removed one stays cancelled."""
    s0 = schedule(tmp_path)
    key = derived_uid(s0, s0.seminars[0])
    first = announced_fields(s0.seminars[0])
    gone = {**first, "cancelled": REMOVED}
    told = "2030-01-14T07:00:05.000000Z"
    memory = Memory(
        (Remembered(key, key, None, key, 1, gone, told),),
        {key: frozenset({1})},  # (everyone was told it is cancelled)
        {(key, 1): gone},
        {key: told},
    )
    other = THURSDAY.replace("Serge Belongie", "Anna Kruger").replace("Fine-Grained Image Analysis", "Another Talk")
    p = plan(schedule(tmp_path, other), memory, now=MONDAY, today=MONDAY.date())
    (ident,) = p.identities
    assert ident.remembered is None and ident.key != key
    assert kinds(p) == [ANNOUNCEMENT]


def test_a_seminar_in_the_file_at_the_last_send_is_still_matched_at_its_slot_before_a_new_one_on_its_date(
    tmp_path: Path,
) -> None:
    """Moved to the 24th (told), its title edited since, and a new talk added on the 24th at another time: the
    seminar the last send saw is matched at its recorded date and speaker (a slot step, open to seminars seen
    before), so nothing is ambiguous and only the new talk is new."""
    told = "2030-01-14T07:00:05.000000Z"
    s0 = schedule(tmp_path)
    key = derived_uid(s0, s0.seminars[0])
    moved_text = THURSDAY.replace("2030-01-17\n", "2030-01-24\n")
    moved = schedule(tmp_path, moved_text)
    fields = announced_fields(moved.seminars[0])
    memory = Memory(
        (Remembered(key, key, None, key, 1, fields, told),),
        {key: frozenset({1})},
        {(key, 1): fields},
        {key: told},
        seen=frozenset({derived_uid(moved, moved.seminars[0])}),
    )
    edited = moved_text.replace("Fine-Grained Image Analysis", "Fine-Grained Image Analysis, revisited")
    new = '  - date: 2030-01-24\n    time: "17:00"\n    speaker: Anna Kruger\n    title: Another Talk\n'
    p = plan(schedule(tmp_path, edited + new), memory, now=MONDAY, today=MONDAY.date())
    assert p.problems == ()
    by_speaker = {i.seminar.speaker: i for i in p.identities}
    assert by_speaker["Serge Belongie"].key == key and by_speaker["Anna Kruger"].remembered is None


def test_a_removed_seminar_is_cancelled_as_it_was_told_with_its_own_duration(tmp_path: Path) -> None:
    """The cancellation of a seminar no longer in the file is rebuilt from what the ledger recorded: its
    invitation's end must be the one told (90 minutes here, not the series' 60)."""
    s0 = schedule(tmp_path, THURSDAY + "    duration: 90\n")
    other = "  - date: 2030-02-07\n    speaker: Someone Else\n"
    p = plan(schedule(tmp_path, other), announced(s0), now=MONDAY, today=MONDAY.date())
    (due,) = [d for d in p.dues if d.kind == CANCELLATION]
    assert due.seminars[0].seminar.duration == 90 and due.seminars[0].seminar.end == s0.seminars[0].end


def test_a_cancellation_is_mailed_even_with_notify_false(tmp_path: Path) -> None:
    """'notify: false' silences edits, never a cancellation: subscribers must not come to a talk that is off."""
    s0 = schedule(tmp_path)
    cancelled = THURSDAY + "    notify: false\n    cancelled: The speaker is ill.\n"
    p = plan(schedule(tmp_path, cancelled), announced(s0), now=MONDAY, today=MONDAY.date())
    assert [d.kind for d in p.dues if d.kind != ANNOUNCEMENT] == [CANCELLATION]
    assert not any("no mail" in n for n in p.notes)


def test_a_seminar_rebuilt_from_the_ledger_keeps_its_cancellation_and_its_links(tmp_path: Path) -> None:
    """What the calendar feed shows of a seminar removed from the file (site/publish.py) and what its
    cancellation tells: rebuilt from the fields the ledger recorded, each as it was."""
    from mailer.run.plan import seminar_from_fields

    s = schedule(tmp_path, THURSDAY + "    zoom: https://rise.zoom.us/j/2\n")
    fields = announced_fields(s.seminars[0])
    rebuilt = seminar_from_fields(s, {**fields, "cancelled": REMOVED})
    assert rebuilt.cancelled == REMOVED and rebuilt.zoom == "https://rise.zoom.us/j/2"
    assert (rebuilt.start, rebuilt.end, rebuilt.speaker, rebuilt.title) == (
        s.seminars[0].start, s.seminars[0].end, "Serge Belongie", "Fine-Grained Image Analysis"
    )  # fmt: skip
    plain = seminar_from_fields(s, {**fields, "zoom": None, "title": None})
    assert plain.cancelled is None and plain.zoom is None and plain.title is None


def test_a_seminar_matched_by_its_identity_is_not_matched_again_to_a_removed_one(tmp_path: Path) -> None:
    """Two seminars of one speaker announced; the second removed from the file. The first, unchanged, is
    itself (its identity), and only the second is cancelled: the first is not taken again, by its speaker, for
    the removed one moved."""
    later = THURSDAY.replace("2030-01-17", "2030-01-24").replace("Analysis", "Analysis, part 2")
    s0 = schedule(tmp_path, THURSDAY + later)
    memories = [announced(s0, i) for i in range(2)]
    memory = Memory(
        tuple(r for m in memories for r in m.remembered),
        {k: v for m in memories for k, v in m.known.items()},
        {k: v for m in memories for k, v in m.fields.items()},
        {k: v for m in memories for k, v in m.first_told.items()},
    )
    p = plan(schedule(tmp_path, THURSDAY), memory, now=MONDAY, today=MONDAY.date())
    first, second = (m.remembered[0].key for m in memories)
    assert [i.key for i in p.identities] == [first]
    assert [(d.kind, d.seminars[0].key) for d in p.dues if d.kind != ANNOUNCEMENT] == [(CANCELLATION, second)]


def _memory_of_all(s: Schedule, indices: tuple[int, ...], told: str = "2030-01-14T07:00:05.000000Z") -> Memory:
    memories = [announced(s, i, told=told) for i in indices]
    return Memory(
        tuple(r for m in memories for r in m.remembered),
        {k: v for m in memories for k, v in m.known.items()},
        {k: v for m in memories for k, v in m.fields.items()},
        {k: v for m in memories for k, v in m.first_told.items()},
    )


def test_each_seminar_gets_its_followup_whatever_the_one_before_it(tmp_path: Path) -> None:
    """Three talks of one week have ended: the first has no links, the second was never announced to anyone,
    the third has links and was announced: its follow-up is due (a `continue` turned `break` at either of the
    first two once lost it)."""
    from mailer.run.plan import FOLLOWUP

    links = "    slides: https://ri.se/s.pdf\n"
    talks = (
        "  - date: 2030-01-14\n    speaker: Ada Lovelace\n    title: Engines\n"
        "  - date: 2030-01-15\n    speaker: Alan Turing\n    title: Machines\n" + links
        + THURSDAY + links
    )  # fmt: skip
    s = schedule(tmp_path, talks, series_extra="  followup: true\n")
    after = s.seminars[2].end + dt.timedelta(minutes=5)
    p = plan(s, _memory_of_all(s, (0, 2)), now=after, today=after.date())
    assert [(d.kind, d.seminars[0].seminar.speaker) for d in p.dues] == [(FOLLOWUP, "Serge Belongie")]


def test_each_seminar_gets_its_reminder_whatever_the_one_before_it(tmp_path: Path) -> None:
    """Three talks on one day with a 09:00 reminder: the first is cancelled, the second was first announced
    after 09:00, the third is due its reminder (a `continue` turned `break` at either once lost it)."""
    talks = (
        "  - date: 2030-01-17\n    time: \"12:00\"\n    speaker: Ada Lovelace\n    cancelled: Ill.\n"
        "  - date: 2030-01-17\n    time: \"13:00\"\n    speaker: Alan Turing\n"
        + THURSDAY
    )  # fmt: skip
    s = schedule(tmp_path, talks, series_extra='  reminder: "09:00"\n')
    late = _memory_of_all(s, (1,), told="2030-01-17T08:30:00.000000Z")  # 09:30 local: after the reminder time
    early = _memory_of_all(s, (0, 2))
    memory = Memory(
        (*early.remembered, *late.remembered),
        {**early.known, **late.known},
        {**early.fields, **late.fields},
        {**early.first_told, **late.first_told},
    )
    now = dt.datetime(2030, 1, 17, 10, 0, tzinfo=TZ)
    p = plan(s, memory, now=now, today=now.date())
    assert [d.seminars[0].seminar.speaker for d in p.dues if d.kind == REMINDER] == ["Serge Belongie"]


def test_a_seminar_with_another_id_on_another_date_is_another_seminar(tmp_path: Path) -> None:
    """Two different ids are two seminars unless they hold the same slot: the seminar announced as id talk-a
    (the 17th) is gone, and one with id talk-b on the 24th, same speaker and title, is new, not talk-a moved."""
    s0 = schedule(tmp_path, THURSDAY.replace("2030-01-17\n", "2030-01-17\n    id: talk-a\n"))
    key = derived_uid(s0, s0.seminars[0])
    fields = announced_fields(s0.seminars[0])
    memory = Memory(
        (Remembered(key, key, "talk-a", key, 0, fields, "2030-01-14T07:00:05.000000Z"),),
        {key: frozenset({0})},
        {(key, 0): fields},
        {key: "2030-01-14T07:00:05.000000Z"},
    )
    other = THURSDAY.replace("2030-01-17\n", "2030-01-24\n    id: talk-b\n")
    p = plan(schedule(tmp_path, other), memory, now=MONDAY, today=MONDAY.date())
    (ident,) = p.identities
    assert ident.remembered is None and ident.key == "learning-machines-talk-b@ri.se"
    assert [(d.kind, d.seminars[0].key) for d in p.dues if d.kind != ANNOUNCEMENT] == [(CANCELLATION, key)]


def test_an_edit_is_not_told_from_the_moment_the_seminar_starts(tmp_path: Path) -> None:
    """A room changed: a change up to the minute before the start, nothing at the start itself (as for removals)."""
    s0 = schedule(tmp_path)
    start = s0.seminars[0].start
    edited = schedule(tmp_path, THURSDAY + "    location: Room 2\n")
    before = start - dt.timedelta(minutes=1)
    assert CHANGE in [d.kind for d in plan(edited, announced(s0), now=before, today=before.date()).dues]
    assert CHANGE not in [d.kind for d in plan(edited, announced(s0), now=start, today=start.date()).dues]


def test_a_digest_narrowed_to_part_of_its_week_keeps_its_list(tmp_path: Path) -> None:
    """What one digest reader lacks of the week: a digest of the same list, of just those seminars."""
    from mailer.run.plan import DIGEST, Due, digest_key, narrowed

    s = schedule(tmp_path, THURSDAY + "  - date: 2030-01-18\n    speaker: Someone Else\n")
    week = plan(s, Memory(), now=MONDAY, today=MONDAY.date()).identities
    whole = Due(DIGEST, digest_key("week", tuple(week)), tuple(week))
    part = narrowed(whole, tuple(week[1:]))
    assert (part.kind, part.key, part.seminars) == (DIGEST, digest_key("week", tuple(week[1:])), tuple(week[1:]))
    assert part.key.startswith("digest:week:") and part.key != whole.key
