"""The lifecycle simulation: whole histories of a seminar series, checked against invariants.

A *history* is a list of operations drawn from a seed: organiser edits (time, room, Zoom, duration, title, a new
speaker, a spelling fix, a move, cancel, uncancel, remove, re-add, a new seminar, swaps, ``id:`` added or renamed,
the list renamed, slides and a video added or taken away), audience changes (a line added to or removed from the
list file, subscribe and confirm through the real web service, one-click unsubscribe through its real handler with
the link a subscriber received, the CLI's ``unsubscribe``, ``unsuppress``), SMTP behaviour for the next run per
address (451, 452 and 421 to RCPT, 550 to RCPT, a hang-up after the message before the reply, 554 to the message
itself), the clock moving (15 minutes, hours, to the next announcement, past a reminder time, past a seminar's start
or end), and runs: ``send``, a dry run, and a second cron run while one holds the lock.

Every run is the real ``dispatch.run`` against a real aiosmtpd server on 127.0.0.1 (STARTTLS, AUTH), with the real
ledger and subscriber store in a temporary state folder; every message the server received is parsed back and its
invitation read with icalendar. The world keeps its own model of the programme and the audience, and of what each
address was told (per calendar UID: the latest SEQUENCE, start, end, location, status), and after every step checks:

1. nobody receives anything while unsubscribed or suppressed;
2. each (recipient, Message-ID) at most once;
3. an announcement only about seminars the recipient was not told of, and never one of a cancelled seminar;
   a change, cancellation or reminder only about a seminar the recipient was told of (or may have been: a copy
   whose reply never came), its SEQUENCE above what they know (a reminder: not below);
4. nothing about a seminar that has started;
5. one seminar, one UID: a seminar first announced under a UID is never announced under another;
6. the ledger's 'sent' deliveries are exactly what the server received;
7. a dry run and a run refused by the lock send and record nothing;
8. a follow-up (the series says ``followup: true``: slides and video after the talk) only about a seminar that has
   ended, within 14 days of its end, is not cancelled and has a link, only to someone told of it, once;
   nothing about a draft; with ``approval: required``, nothing about a week unless it was approved as it now is;
and once the history settles (faults cleared, runs until nothing is due):
9. every active subscriber knows every seminar of an announced week that is still ahead, at its latest date, time,
   duration, location and status; everyone told of a cancelled or removed seminar was told it is cancelled;
   every active subscriber told of a seminar that ended less than 14 days ago with a link had its follow-up.

Every mail is told apart by its List-Id (the list it came through): nothing through a list to someone not active on
it, each from its list's sender, every invitation's ORGANIZER its seminar's series' sender, a reminder of a seminar
once. After every run without faults (nothing deferred, refused or unanswered) 9's first part holds at once: every
active reader knows every seminar of a week their list told, as it now is. A crash of the mailer is a violation too.

Half the seeds (``tests.simulation_project.is_project``) play a project of two series and a weekly digest of both
instead, with its own operations and invariants: see tests/simulation_project.py.

A failing history is shrunk (operations removed while it still fails) and printed as a Python list: paste it into
``tests/test_simulation.py`` as a regression test.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email
import email.header
import email.policy
import email.utils
import gc
import io
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import icalendar

from mailer import cli
from mailer.audience.web import Service, build_app
from mailer.core.errors import ConfigError, LockedError, MailerError
from mailer.core.tokens import speaker_token
from mailer.deliver.config import smtp_settings, token_key
from mailer.programme.schedule import load_schedule
from mailer.record.proposals import Proposals
from mailer.record.state import run_lock
from mailer.record.subscribers import Subscribers
from mailer.run import dispatch
from mailer.run.request import Request, Result
from tests.smtp_server import Received, Recorder, Server

TZ = ZoneInfo("Europe/Stockholm")
START = dt.datetime(2030, 1, 14, 8, 0, tzinfo=TZ)  # a Monday, when the week is announced
END = dt.datetime(2030, 2, 10, 23, 0, tzinfo=TZ)
SERVICE = "https://seminars.example.org/lm"
TEST_CLOCK = "SEMINAR_MAILER_TEST_CLOCK"  # lets a real send take --now: the tests drive the clock
SPEAKERS = [
    "Ada Lovelace", "Alan Turing", "Grace Hopper", "Edsger Dijkstra", "Barbara Liskov", "Donald Knuth",
    "Frances Allen", "John McCarthy", "Leslie Lamport", "Margaret Hamilton", "Niklaus Wirth", "Radia Perlman",
]  # fmt: skip
ROOMS = ["Room A", "Room B", "Room Q", "Aula", "Online only"]
FOLLOWUP_WINDOW = dt.timedelta(days=14)  # (the mailer's plan.FOLLOWUP_WINDOW, restated: the model is independent)
FOLLOWUP_SUBJECT = re.compile(r"^(?:Slides|Video)\b[^:]*: (.+?) seminar (\d{4}-\d\d-\d\d \d\d:\d\d) ")
DIGEST_SUBJECT = re.compile(r"^(.+), the week of (\d{4}-\d\d-\d\d): (\d+) seminars?$")  # a weekly digest's
SENDER = "learning-machines@ri.se"  # the first series' sender (its ORGANIZER, its List-Id's domain)
TITLES = ["On Computation", "Deep Nets", "Proofs", None, "Graphs and Games"]


@dataclass
class Talk:
    """The model's seminar: what the programme says now, and the UID its first mail gave it."""

    name: str
    date: dt.date
    speaker: str
    time: str = "15:00"
    duration: int = 60
    location: str = "Room A"
    zoom: str | None = None
    title: str | None = "On Computation"
    cancelled: str | None = None
    id: str | None = None
    present: bool = True
    uid: str | None = None
    spellings: set[str] = field(default_factory=set)  # earlier spellings a silent fix may leave in calendars
    slides: str | None = None
    video: str | None = None
    edited_late: bool = False  # edited after its start: who the mailer takes it for may have changed
    draft: bool = False  # ``draft: true`` (only ever on a talk nobody was told of): in no mail
    series: int = 0  # which series of the project it is of (tests/simulation_project.py): 0, the first

    @property
    def start(self) -> dt.datetime:
        hour, minute = map(int, self.time.split(":"))
        return dt.datetime.combine(self.date, dt.time(hour, minute), tzinfo=TZ)

    @property
    def end(self) -> dt.datetime:
        return self.start + dt.timedelta(minutes=self.duration)

    def yaml(self, time: str = "15:00", location: str = "Room A") -> str:
        """The talk as its series' file lists it (``time`` and ``location``: the series' defaults)."""
        lines = [f"  - date: {self.date.isoformat()}", f"    speaker: {json.dumps(self.speaker)}"]
        if self.title:
            lines.append(f"    title: {json.dumps(self.title)}")
        if self.time != time:
            lines.append(f'    time: "{self.time}"')
        if self.duration != 60:
            lines.append(f"    duration: {self.duration}")
        if self.location != location:
            lines.append(f"    location: {json.dumps(self.location)}")
        if self.zoom:
            lines.append(f"    zoom: {self.zoom}")
        if self.cancelled is not None:
            lines.append(f"    cancelled: {json.dumps(self.cancelled) if self.cancelled else 'true'}")
        if self.id:
            lines.append(f"    id: {self.id}")
        if self.slides:
            lines.append(f"    slides: {self.slides}")
        if self.video:
            lines.append(f"    video: {self.video}")
        if self.draft:
            lines.append("    draft: true")
        return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Event:
    uid: str
    sequence: int
    start: dt.datetime
    end: dt.datetime
    location: str
    cancelled: bool
    summary: str
    organizer: str = ""  # the address of its ORGANIZER


@dataclass(frozen=True)
class Got:
    """One message the server stored, as the simulation reads it."""

    run: int
    rcpt: str
    message_id: str
    kind: str  # announcement, follow-up, reminder, materials (slides, video: no invitation), service (a confirmation)
    events: tuple[Event, ...]
    unsubscribe: str | None
    start: dt.datetime | None = None  # materials: the start of the seminar, as its subject says
    list_id: str = ""  # the list it came through, as its List-Id says: <list>.<domain of the sender>
    sender: str = ""  # the address of From
    subject: str = ""
    your_times: tuple[str, ...] = ()  # the text part's "(16:00 GMT your time)": each time in the reader's zone


YOUR_TIME = re.compile(r"\(([^()]*? your time)\)")


class Violation(AssertionError):
    @property
    def signature(self) -> str:
        """The violation without its addresses, UIDs, times and numbers: what shrinking keeps."""
        text = re.sub(r"\S*[@\d]\S*", "_", str(self).split(" (at ")[0])
        return re.sub(r"'[^']*'", "_", text)


class SimRecorder(Recorder):
    """The test server's recorder, also noting each refusal it gave and each copy it dropped unanswered."""

    def __init__(self) -> None:
        super().__init__()
        self.refused: list[tuple[str, str]] = []
        self.dropped: list[tuple[str, bytes]] = []

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        reply = await super().handle_RCPT(server, session, envelope, address, options)
        if not reply.startswith("250"):
            with self.lock:
                self.refused.append((address, reply[:3]))
        return reply

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        (rcpt,) = envelope.rcpt_tos
        with self.lock:
            actions = self.data_actions.get(rcpt)
            if actions and actions[0] == "drop":
                self.dropped.append((rcpt, bytes(envelope.content)))
        reply = await super().handle_DATA(server, session, envelope)
        if reply[:1] in "45":
            with self.lock:
                self.refused.append((rcpt, reply[:3]))
        return reply


def parse_received(run: int, received: Received) -> Got:
    message = email.message_from_bytes(received.data, policy=email.policy.compat32)  # (fast: no header objects)
    events: list[Event] = []
    your_times: tuple[str, ...] = ()
    for part in message.walk():
        if part.get_content_type() == "text/plain" and not your_times:
            body = part.get_payload(decode=True)
            assert isinstance(body, bytes)
            your_times = tuple(YOUR_TIME.findall(body.decode("utf-8", "replace")))
        if part.get_content_type() == "text/calendar":
            payload = part.get_payload(decode=True)
            assert isinstance(payload, bytes)
            for vevent in icalendar.Calendar.from_ical(payload).walk("VEVENT"):
                events.append(
                    Event(
                        uid=str(vevent["UID"]),
                        sequence=int(vevent.get("SEQUENCE", 0)),
                        start=vevent.decoded("DTSTART"),
                        end=vevent.decoded("DTEND"),
                        location=str(vevent.get("LOCATION", "")),
                        cancelled=str(vevent.get("STATUS", "")).upper() == "CANCELLED",
                        summary=str(vevent.get("SUMMARY", "")),
                        organizer=str(vevent.get("ORGANIZER", "")).removeprefix("mailto:").lower(),
                    )
                )
            break
    subject = str(email.header.make_header(email.header.decode_header(str(message.get("Subject", "")))))
    start = None
    if not events and (m := FOLLOWUP_SUBJECT.match(subject)):
        kind, start = "materials", dt.datetime.strptime(m[2], "%Y-%m-%d %H:%M").replace(tzinfo=TZ)
    elif DIGEST_SUBJECT.match(subject):
        kind = "digest"
    elif not events:
        kind = "service"
    elif subject.startswith("Reminder"):
        kind = "reminder"
    elif message.get("In-Reply-To"):
        kind = "follow-up"
    else:
        kind = "announcement"
    link = None
    for target in re.findall(r"<([^>]+)>", str(message.get("List-Unsubscribe", "")).replace("\r\n", "")):
        if target.startswith("https://"):
            link = target
    list_id = re.search(r"<([^>]+)>\s*$", str(message.get("List-Id", "")).replace("\r\n", ""))
    sender = email.utils.parseaddr(str(message.get("From", "")))[1].lower()
    return Got(run, received.rcpt.lower(), received.message_id, kind, tuple(events), link, start,
               list_id[1] if list_id else "", sender, subject, your_times)  # fmt: skip


async def _asgi(app: Any, method: str, target: str, form: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One request to the real ASGI application, in process."""
    path, _, query = target.partition("?")
    body = urllib.parse.urlencode(form or {}).encode()
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "https",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": [
            (b"host", b"seminars.example.org"),
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 443),
    }
    inbox = [{"type": "http.request", "body": body, "more_body": False}]
    status: list[int] = []
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        return inbox.pop(0) if inbox else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return status[0], b"".join(chunks)


Op = tuple[Any, ...]


@dataclass
class Knowledge:
    """What one address was told of one UID, as far as the server saw."""

    sequence: int
    event: Event


@contextlib.contextmanager
def ledger_copy(path: Path) -> Iterator[sqlite3.Connection]:
    """The ledger as a killed run left it, read from a copy of its files (with its write-ahead log): a read-only
    connection to the original cannot recover the log's index after a crash and may read the database without
    the log's last commits; the copy recovers it like the next send does, and the original stays untouched. The
    results a killed send left in its journal are folded into the copy, as the next send folds them."""
    import tempfile

    from mailer.record import journal

    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / path.name
        for source in [path, path.with_name(path.name + "-wal"), *path.parent.glob(f"{journal.PREFIX}*")]:
            if source.exists():
                shutil.copyfile(source, Path(folder) / source.name)
        with contextlib.closing(sqlite3.connect(copy, isolation_level=None)) as db:
            journal.recover(Path(folder), db, lambda: _transaction(db))
            yield db


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class World:
    """One history's programme, audience, server and state folder, and the invariants over them."""

    def __init__(self, folder: Path, server: Server, recorder: SimRecorder, *, tag: str, pinned: bool) -> None:
        self.folder = folder
        self.server = server
        self.recorder = recorder
        self.tag = tag
        self.pinned = pinned
        self.list_name = "learning-machines"
        self.now = START
        self.talks: list[Talk] = []
        for n, day in enumerate((17, 24, 31, 38)):
            date = dt.date(2030, 1, 1) + dt.timedelta(days=day - 1)
            self.talks.append(Talk(f"T{n}", date, SPEAKERS[n], id=f"talk-{n}" if pinned else None))
        self.next_speaker = len(self.talks)
        self.file: list[str] = [self.addr(i) for i in range(5)]
        self.store_confirmed: set[str] = set()
        self.unsubscribed: set[str] = set()
        self.suppressed: set[str] = set()
        self.got: list[Got] = []
        self.runs = 0
        self.known: dict[tuple[str, str], Knowledge] = {}
        self.maybe: set[tuple[str, str]] = set()  # (address, uid): a copy went out but no reply came
        self.followed: set[tuple[str, str]] = set()  # (address, uid): had the follow-up of that seminar
        self.approval = False  # the series says approval: required
        self.approved: set[tuple[dt.date, tuple[Any, ...]]] = set()  # (week's Monday, its talks when approved)
        self.faults: dict[str, str] = {}
        self.refused5: set[str] = set()
        self.kills = 0
        self.bounces = 0
        self.duplicates = 0
        self.in_flight: set[tuple[str, str]] = set()  # copies a killed run sent whose reply it never read
        self.doubted: set[tuple[str, str]] = set()  # every copy that was ever in flight so
        self.reminded: dict[tuple[str, str], str] = {}  # (address, uid): the Message-ID of its reminder
        self.refuse_message = False
        self.log: list[str] = []
        (folder / "recipients").mkdir(parents=True, exist_ok=True)
        self.write()

    # --- the world's files ---------------------------------------------------------------------

    def addr(self, n: int) -> str:
        return f"{self.tag}-u{n}@example.org"

    @property
    def schedule(self) -> Path:
        return self.folder / "seminars.yaml"

    @property
    def state(self) -> Path:
        return self.folder / "state"

    @property
    def recipients(self) -> Path:
        return self.folder / "recipients"

    def write(self) -> None:
        """The first series' file and list (a project's other files: ``write_more``)."""
        series = (
            "series:\n  name: Learning Machines\n  signature: The Learning Machines Team\n"
            '  timezone: Europe/Stockholm\n  time: "15:00"\n  location: Room A\n'
            "  info_url: https://ri.se/lm-sem\n  sender: Learning Machines <learning-machines@ri.se>\n"
            f'  list: {self.list_name}\n  announce: "Monday 08:00"\n  reminder: 2h\n  service_url: {SERVICE}\n'
            "  followup: true\n" + ("  approval: required\n" if self.approval else "")
        )
        talks = [t for t in self.talks if t.present and t.series == 0]
        text = series + "seminars:\n" + "".join(t.yaml() for t in sorted(talks, key=lambda t: t.start))
        if not talks:
            text = series + "seminars: []\n"
        self.schedule.write_text(text, encoding="utf-8")
        (self.recipients / f"{self.list_name}.txt").write_text("".join(f"{a}\n" for a in self.file))
        self.write_more()

    def env(self) -> dict[str, str]:
        return self.server.env(MAILER_ATTEMPTS="2", MAILER_BACKOFF="0.01", MAILER_TIMEOUT="5")

    def request(self, schedule: Path | None = None, *, dry_run: bool = False) -> Request:
        return Request(
            schedule=schedule or self.schedule,
            templates=None,
            recipients=self.recipients,
            state=self.state,
            now=self.now,
            date=None,
            dry_run=dry_run,
            env=self.env(),
            clock_given=True,
        )

    def active(self, address: str) -> bool:
        listed = address in self.file or address in self.store_confirmed
        return listed and address not in self.unsubscribed and address not in self.suppressed

    def audience(self) -> set[str]:
        return {a for a in (*self.file, *self.store_confirmed) if self.active(a)}

    # --- the project: one series here; tests/simulation_project.py adds a second and a digest ---------

    def write_more(self) -> None:
        """The project's other programmes and lists."""

    def programmes(self) -> list[tuple[Path, str, Callable[[Request], Result]]]:
        """Each programme as ``send`` runs it, in its order: file, list, run."""
        return [(self.schedule, self.list_name, dispatch.run)]

    def lists(self) -> dict[str, str]:
        """Each list of the project and the List-Id its mail carries: the list, a dot, its sender's domain."""
        return {self.list_name: f"{self.list_name}.{SENDER.partition('@')[2]}"}

    def list_sender(self, list_name: str) -> str:
        """The From of whatever comes through ``list_name``."""
        return SENDER

    def active_lists(self) -> dict[str, set[str]]:
        """Who may be sent what through each list: the active subscribers of each."""
        return {self.list_name: self.audience()}

    def telling(self, t: Talk) -> set[str]:
        """The lists through which mail about ``t`` may come: its series', and a digest's that includes it."""
        return {self.list_name}

    def series_sender(self, t: Talk) -> str:
        """The ORGANIZER of ``t``'s invitations: its series' sender, whoever sends the mail."""
        return SENDER

    def readers(self, t: Talk) -> set[str]:
        """Whoever is to hear what changes of ``t`` once told of it: the active readers of a list telling it."""
        return self.audience()

    def must_know(self, address: str, t: Talk) -> bool:
        """Whether reader ``address`` must have been told of ``t`` by now: its week was announced to them."""
        monday = t.date - dt.timedelta(days=t.date.weekday())
        return not self.waits(t) and self.now >= dt.datetime.combine(monday, dt.time(8, 0), tzinfo=TZ)

    def waits(self, t: Talk) -> bool:
        """Whether ``t``'s week waits for an approval as it now is (the first series' ``approval: required``)."""
        monday = t.date - dt.timedelta(days=t.date.weekday())
        return self.approval and t.series == 0 and (monday, self.week_as_now(monday)) not in self.approved

    def followup_on(self, t: Talk) -> bool:
        """Whether ``t``'s series says ``followup: true``."""
        return True

    def reminder_lead(self, t: Talk) -> dt.timedelta:
        """How long before ``t``'s start its series' reminder is due."""
        return dt.timedelta(hours=2)

    def talk_defaults(self, series: int) -> tuple[str, str]:
        """A new talk's time and location: its series' defaults."""
        return "15:00", "Room A"

    def check_mail(self, g: Got, via: str) -> None:
        """What is particular to one kind of list: a digest (tests/simulation_project.py)."""
        if g.kind == "digest":
            self.fail(f"{g.rcpt} was sent a digest ({g.subject!r}) through {via}, a series' list")

    # --- checks ----------------------------------------------------------------------------------

    def fail(self, what: str) -> None:
        raise Violation(f"{what} (at {self.now:%Y-%m-%d %H:%M}, run {self.runs})")

    def ledger_sent(self) -> set[tuple[str, str]]:
        path = self.state / "ledger.sqlite3"
        if not path.exists():
            return set()
        with ledger_copy(path) as db:
            rows = db.execute("SELECT recipient, message_id FROM deliveries WHERE state = 'sent'")
            return {(r.lower(), m) for r, m in rows}

    def ledger_in_flight(self) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
        """Copies the ledger holds as uncertain: (recipient, Message-ID) and (recipient, UID) they may have told."""
        path = self.state / "ledger.sqlite3"
        if not path.exists():
            return set(), set()
        with ledger_copy(path) as db:
            rows = list(
                db.execute(
                    """SELECT d.recipient, d.message_id, s.uid FROM deliveries d JOIN told t ON t.message = d.message
                       JOIN seminars s ON s.key = t.seminar WHERE d.state = 'uncertain'"""
                )
            )
        return {(r.lower(), m) for r, m, _ in rows}, {(r.lower(), u) for r, _, u in rows}

    def ledger_suppressed(self) -> set[str]:
        path = self.state / "ledger.sqlite3"
        if not path.exists():
            return set()
        with ledger_copy(path) as db:
            return {r.lower() for (r,) in db.execute("SELECT recipient FROM suppressed")}

    def ledger_size(self) -> tuple[int, ...]:
        path = self.state / "ledger.sqlite3"
        if not path.exists():
            return (0,)
        with ledger_copy(path) as db:
            return tuple(
                db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                for table in ("deliveries", "messages", "seminars", "revisions", "suppressed")
            )

    def talk_at(self, start: dt.datetime) -> Talk | None:
        for t in self.talks:
            if t.present and not t.draft and t.start == start:
                return t
        return None

    def absorb(self, new: list[Got], *, active_before: dict[str, set[str]]) -> None:
        """Check the messages one run delivered and learn what each recipient now knows."""
        seen_ids = {(g.rcpt, g.message_id) for g in self.got}
        by_id = {list_id: name for name, list_id in self.lists().items()}
        for g in new:
            if g.kind == "service":
                continue
            via = by_id.get(g.list_id)
            if via is None:
                self.fail(f"{g.rcpt} received {g.kind} {g.message_id} with the List-Id {g.list_id!r}: no list's")
            assert via is not None
            if g.rcpt not in active_before.get(via, set()):
                self.fail(f"{g.rcpt} received {g.kind} {g.message_id} while unsubscribed or suppressed (from {via})")
            if g.sender != self.list_sender(via):
                self.fail(f"{g.rcpt} received {g.kind} {g.message_id} through {via} from {g.sender!r}")
            if (g.rcpt, g.message_id) in seen_ids:
                if (g.rcpt, g.message_id) not in self.in_flight:
                    self.fail(f"{g.rcpt} received {g.message_id} twice")
                self.duplicates += 1  # the one retry of a copy whose reply a killed run never read
                if self.duplicates > self.kills * 4:  # (the pool of 4: at most one copy in flight per worker)
                    self.fail(f"{self.duplicates} duplicate copies after {self.kills} kills")
                self.in_flight.discard((g.rcpt, g.message_id))
                continue
            seen_ids.add((g.rcpt, g.message_id))
            self.check_mail(g, via)
            if g.kind == "materials":
                self.check_followup(g, via)
            for ev in g.events:
                if ev.start <= self.now:
                    self.fail(f"{g.rcpt} was sent a {g.kind} about {ev.uid}, which started at {ev.start}")
                owner = next((t for t in self.talks if t.uid == ev.uid), None)
                if owner is None:
                    owner = self.talk_at(ev.start)
                    if owner is None:
                        self.fail(f"{g.rcpt} was told of {ev.uid} at {ev.start}: no seminar of the programme is then")
                    assert owner is not None
                    if owner.uid is not None and owner.uid != ev.uid:
                        self.fail(f"{owner.name} ({owner.speaker}) was announced as {owner.uid}, now also as {ev.uid}")
                    owner.uid = ev.uid
                if self.approval and owner.series == 0:
                    week = ev.start.date() - dt.timedelta(days=ev.start.weekday())
                    if (week, self.week_as_now(week)) not in self.approved:
                        self.fail(f"{g.rcpt} had a {g.kind} about the week of {week}, which is not approved as it is")
                if via not in self.telling(owner):
                    self.fail(f"{g.rcpt} had a {g.kind} about {owner.name} ({ev.uid}) through {via}, not its series'")
                if ev.organizer != self.series_sender(owner):
                    self.fail(f"{g.rcpt} had {ev.uid} with the ORGANIZER {ev.organizer!r}, not its series' sender")
                key = (g.rcpt, ev.uid)
                before = self.known.get(key)
                if g.kind in ("announcement", "digest"):
                    if before is not None:
                        self.fail(f"{g.rcpt} was sent the {g.kind} of {ev.uid} again (knew SEQUENCE {before.sequence})")
                    if ev.cancelled:
                        self.fail(f"{g.rcpt} was sent the {g.kind} of {ev.uid} as cancelled, never told of it")
                else:
                    if before is None and key not in self.maybe:
                        self.fail(f"{g.rcpt} was sent a {g.kind} about {ev.uid} without having been told of it")
                    if before is not None and g.kind == "follow-up" and ev.sequence <= before.sequence:
                        self.fail(
                            f"{g.rcpt} was sent a follow-up about {ev.uid} at SEQUENCE {ev.sequence}, "
                            f"knowing {before.sequence} already"
                        )
                    if before is not None and g.kind == "reminder" and ev.sequence < before.sequence:
                        self.fail(f"{g.rcpt} was reminded of {ev.uid} at an older SEQUENCE {ev.sequence}")
                if g.kind == "reminder":
                    earlier = self.reminded.get(key)
                    if earlier is not None and (g.rcpt, earlier) not in self.doubted:
                        self.fail(f"{g.rcpt} was reminded of {ev.uid} a second time (through {via})")
                    self.reminded[key] = g.message_id
                self.known[key] = Knowledge(ev.sequence, ev)
        self.got.extend(new)

    def week_as_now(self, monday: dt.date) -> tuple[Any, ...]:
        """The week's talks as the file holds them (what an approval covers): every announced field."""
        return tuple(
            sorted(
                (t.start, t.duration, t.location, t.zoom or "", t.speaker, t.title or "", t.cancelled)
                for t in self.talks
                if t.present
                and not t.draft
                and t.series == 0
                and t.date - dt.timedelta(days=t.date.weekday()) == monday
            )
        )

    def approve(self, weeks: int) -> None:
        """The organiser approves this week and the ``weeks`` - 1 after it, as the file is now (``approve``)."""
        monday = self.now.date() - dt.timedelta(days=self.now.weekday())
        for k in range(weeks):
            week = monday + dt.timedelta(days=7 * k)
            code = self.cli("approve", "--date", week.isoformat(), "--by", "organiser")
            if code != 0:
                self.fail(f"approve --date {week} exited {code}")
            self.approved.add((week, self.week_as_now(week)))

    def op_approve(self) -> None:
        if self.approval:
            self.approve(2)

    def op_require_approval(self) -> None:
        self.approval = True
        self.write()

    def check_followup(self, g: Got, via: str) -> None:
        """A follow-up: about a seminar that ended less than 14 days ago, is on, has a link; to one told of it, once."""
        assert g.start is not None
        t = self.talk_at(g.start)
        if t is None or t.uid is None:
            self.fail(f"{g.rcpt} had a follow-up of the seminar at {g.start}: none of the announced ones is then")
        assert t is not None and t.uid is not None
        if not t.end <= self.now < t.end + FOLLOWUP_WINDOW:
            self.fail(f"{g.rcpt} had the follow-up of {t.name} ({t.start} to {t.end}) at {self.now}")
        if via not in self.telling(t) or not self.followup_on(t):
            self.fail(f"{g.rcpt} had the follow-up of {t.name} through {via} (followup: {self.followup_on(t)})")
        if t.cancelled is not None or not (t.slides or t.video):
            self.fail(f"{g.rcpt} had the follow-up of {t.name}, cancelled {t.cancelled!r}, links {t.slides} {t.video}")
        if (g.rcpt, t.uid) not in self.known and (g.rcpt, t.uid) not in self.maybe:
            self.fail(f"{g.rcpt} had the follow-up of {t.name} ({t.uid}) without having been told of it")
        if (g.rcpt, t.uid) in self.followed:
            self.fail(f"{g.rcpt} had the follow-up of {t.name} ({t.uid}) a second time")
        self.followed.add((g.rcpt, t.uid))

    def check_ledger(self) -> None:
        stored = {(g.rcpt, g.message_id) for g in self.got if g.kind != "service"}
        sent = self.ledger_sent()
        if sent - stored or stored - sent - self.in_flight:
            self.fail(
                f"the ledger and the server disagree: received but not 'sent' {sorted(stored - sent)[:3]}, "
                f"'sent' but never received {sorted(sent - stored)[:3]}"
            )

    def check_told(self) -> None:
        """After a run without faults (nothing deferred, refused or unanswered): every reader knows every seminar
        of a week their lists told, as it now is, at once (not only once the history settles)."""
        for t in self.talks:
            if t.start <= self.now or t.edited_late or not t.present or t.draft or t.cancelled is not None:
                continue
            for a in sorted(self.readers(t)):
                if not self.must_know(a, t) or (a, t.uid) in self.maybe:
                    continue
                k = self.known.get((a, t.uid)) if t.uid else None
                if k is None:
                    self.fail(f"{a} was not told of {t.name} ({t.uid}) by a run without faults, due this week")
                elif wrong := self.wrongly(k.event, t):
                    self.fail(f"{a} knows {t.name} ({t.uid}) wrongly after a run without faults: {'; '.join(wrong)}")

    def check_settled(self) -> None:
        for t in self.talks:
            readers = self.readers(t)
            if t.end <= self.now < t.end + FOLLOWUP_WINDOW and t.present and t.uid and not t.edited_late:
                if t.cancelled is None and (t.slides or t.video) and self.followup_on(t):
                    for a in sorted(readers):
                        if (a, t.uid) in self.known and (a, t.uid) not in self.followed:
                            self.fail(
                                f"{a} was told of {t.name} ({t.uid}), which ended at {t.end}, and had no follow-up"
                            )
            if t.start <= self.now:
                continue
            live = t.present and t.cancelled is None and not t.draft
            if t.uid is None:
                if live and any(self.must_know(a, t) for a in readers):
                    self.fail(f"{t.name} ({t.speaker}, {t.start}) is this week's and was never announced")
                continue
            for a in sorted(readers):
                k = self.known.get((a, t.uid))
                if k is None:
                    if live and self.must_know(a, t):
                        self.fail(f"{a} was never told of {t.name} ({t.uid}), due this week")
                    continue
                ev = k.event
                if not live:
                    if not ev.cancelled:
                        self.fail(f"{a} was not told that {t.name} ({t.uid}) is cancelled")
                    continue
                if wrong := self.wrongly(ev, t):
                    self.fail(f"{a} knows {t.name} ({t.uid}) wrongly: {'; '.join(wrong)}")

    @staticmethod
    def wrongly(ev: Event, t: Talk) -> list[str]:
        """How what a reader knows of a live talk differs from the talk as it now is."""
        wrong = []
        if ev.cancelled:
            wrong.append("cancelled")
        if ev.start != t.start:
            wrong.append(f"start {ev.start} for {t.start}")
        if ev.end != t.end:
            wrong.append(f"end {ev.end} for {t.end}")
        if ev.location != t.location:
            wrong.append(f"location {ev.location!r} for {t.location!r}")
        if not any(name in ev.summary for name in {t.speaker, *t.spellings}):
            wrong.append(f"summary {ev.summary!r} without {t.speaker!r}")
        return wrong

    # --- runs ------------------------------------------------------------------------------------

    def send(self) -> Result | None:
        """One ``send``: every programme of the project in its order (as the CLI runs them), then the checks."""
        active_before = self.active_lists()
        before = len(self.recorder.received)
        dropped_before = len(self.recorder.dropped)
        clean = not self.faults and not self.refuse_message
        self.arm()
        self.runs += 1
        result: Result | None = None
        results: list[Result] = []
        programmes = self.programmes()
        try:
            for path, list_name, runner in programmes:
                result = runner(self.request(path))
                results.append(result)
                self.log.append(
                    f"  run {self.runs}{f' of {list_name}' if len(programmes) > 1 else ''} at {self.now:%m-%d %H:%M}: "
                    + "; ".join(f"{m.kind} {m.key} to {m.due}" for m in result.messages if m.due)
                    + (f" [{result.error}]" if result.error else "")
                    + (f" notes: {result.notes}" if result.notes else "")
                )
        except ConfigError as err:
            if "rename-list" not in str(err):
                raise
            self.log.append(f"refused: {err}")
            clean = False
        finally:
            self.disarm()
        with self.recorder.lock:
            new = [parse_received(self.runs, r) for r in self.recorder.received[before:]]
            dropped = self.recorder.dropped[dropped_before:]
            refused = list(self.recorder.refused)
            self.recorder.refused.clear()
        for rcpt, data in dropped:
            calendar = re.findall(rb"UID:([^\r\n]+)", data)
            self.maybe.update((rcpt.lower(), u.decode()) for u in calendar)
            # A copy that may have arrived announced its seminars under their UIDs too: learn them, so a later
            # cancellation of a seminar removed meanwhile is still recognised as that seminar's.
            for ev in parse_received(self.runs, Received(rcpt, "", data)).events:
                owner = self.talk_at(ev.start)
                if owner is not None and owner.uid is None and not any(t.uid == ev.uid for t in self.talks):
                    owner.uid = ev.uid
        self.refused5 |= {a.lower() for a, code in refused if code.startswith("5")}
        # Who is suppressed is the sender's call (a 5xx to RCPT, or to a message the server took for others):
        # take it from the ledger, but only ever for an address the server refused permanently.
        suppressed = self.ledger_suppressed()
        if unjust := suppressed - self.refused5:
            self.fail(f"{sorted(unjust)} suppressed, never refused permanently")
        self.suppressed |= suppressed
        self.absorb(new, active_before=active_before)
        self.check_ledger()
        if clean and not any(r.error or r.stopped for r in results):
            self.check_told()
        return result

    def arm(self) -> None:
        for address, fault in self.faults.items():
            if fault == "drop":
                self.recorder.data_actions[address] = ["drop"]
            else:
                replies = {
                    "451": "451 4.7.1 try again later",
                    "452": "452 4.2.2 mailbox full for now",
                    "421": "421 4.4.2 closing, too busy",
                    "550": "550 5.1.1 no such user",
                }
                self.recorder.rcpt_replies[address] = [replies[fault]] * (1 if fault == "550" else 2)
        if self.refuse_message:
            self.recorder.message_reply = "554 5.6.0 message refused by content filter"

    def disarm(self) -> None:
        for address in self.faults:
            self.recorder.rcpt_replies.pop(address, None)
            self.recorder.data_actions.pop(address, None)
        self.recorder.message_reply = None
        self.faults.clear()
        self.refuse_message = False

    def send_command(self) -> tuple[list[str], Path | None]:
        """The command line of a real ``send`` at the world's moment, and the folder it runs in."""
        return [
            sys.executable, "-m", "mailer", "send", "--now", self.now.isoformat(), "--schedule", str(self.schedule),
            "--recipients", str(self.recipients), "--state", str(self.state),
        ], None  # fmt: skip

    def kill(self, wait_ms: int) -> None:
        """A real ``send`` process, killed with SIGKILL ``wait_ms`` after its first copy reached the server."""
        # The mailer leaves its read-only ledger connections (a dry run's, bounces') to the cyclic collector. One
        # still open in this process while another process writes the ledger and dies makes this process's next
        # writable connection read it as malformed (SQLite shares one wal-index per file and process): a hazard
        # of running many commands in one process, as no command of the mailer does; collect them first.
        gc.collect()
        active_before = self.active_lists()
        before = len(self.recorder.received)
        self.arm()
        self.recorder.delay = 0.03  # slow enough for the kill to land mid-send
        self.runs += 1
        command, cwd = self.send_command()
        environment = {**os.environ, **self.env(), TEST_CLOCK: "1"}
        try:
            proc = subprocess.Popen(
                command, env=environment, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            deadline = time.monotonic() + 60
            while proc.poll() is None and len(self.recorder.received) == before and time.monotonic() < deadline:
                time.sleep(0.01)
            time.sleep(wait_ms / 1000)
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                self.kills += 1
                self.log.append(f"  run {self.runs} killed")
            proc.wait()
        finally:
            self.recorder.delay = 0.0
            self.disarm()
        with self.recorder.lock:
            new = [parse_received(self.runs, r) for r in self.recorder.received[before:]]
            refused = list(self.recorder.refused)
            self.recorder.refused.clear()
        self.refused5 |= {a.lower() for a, code in refused if code.startswith("5")}  # (a killed run's 550s too)
        copies, told = self.ledger_in_flight()
        self.maybe |= told
        self.in_flight |= copies
        self.doubted |= copies
        self.absorb(new, active_before=active_before)
        self.check_ledger()

    def dry_run(self) -> None:
        before, size = len(self.recorder.received), self.ledger_size()
        for path, _, runner in self.programmes():
            runner(self.request(path, dry_run=True))
        if len(self.recorder.received) != before or self.ledger_size() != size:
            self.fail("a dry run sent or recorded something")

    def locked_run(self, which: int = 0) -> None:
        """A second cron run while another holds the lock (of programme ``which``): it must send and record
        nothing."""
        before, size = len(self.recorder.received), self.ledger_size()
        programmes = self.programmes()
        path, list_name, runner = programmes[which % len(programmes)]
        with run_lock(self.state, list_name):
            try:
                runner(self.request(path))
            except LockedError:
                pass
            else:
                self.fail("a send ran while another held the lock")
        if len(self.recorder.received) != before or self.ledger_size() != size:
            self.fail("a run refused by the lock sent or recorded something")

    def settle(self) -> None:
        self.faults.clear()
        self.refuse_message = False
        if self.approval:  # (the organiser approves every week still ahead, as it now is)
            self.approve(5)
        for _ in range(6):
            before = len(self.recorder.received)
            self.send()
            if len(self.recorder.received) == before:
                break
            self.now += dt.timedelta(minutes=1)
        else:
            self.fail("still sending after 6 runs without faults")
        self.check_settled()

    # --- operations -------------------------------------------------------------------------------

    def apply(self, op: Op) -> None:
        self.log.append(repr(op))
        getattr(self, "op_" + op[0])(*op[1:])

    def op_send(self) -> None:
        self.send()

    def op_kill(self, wait_ms: int) -> None:
        self.kill(wait_ms)

    def op_dry(self) -> None:
        self.dry_run()

    def op_locked(self, which: int = 0) -> None:
        self.locked_run(which)

    def op_tick(self, minutes: int) -> None:
        self.now = min(self.now + dt.timedelta(minutes=minutes), END)

    def op_until(self, what: str, n: int) -> None:
        """Move the clock to a moment that matters: a reminder time or a start of talk n, next announcement."""
        talks = [t for t in self.talks if t.present]
        if what == "monday":
            days = 7 - self.now.weekday()
            moment = dt.datetime.combine(self.now.date() + dt.timedelta(days=days), dt.time(8, 0), tzinfo=TZ)
        elif not talks:
            return
        else:
            t = talks[n % len(talks)]
            after = t.end if what == "end" else t.start
            lead = self.reminder_lead(t) - dt.timedelta(minutes=1)
            moment = t.start - lead if what == "reminder" else after + dt.timedelta(minutes=1)
        if moment > self.now:
            self.now = min(moment, END)

    def free_date(self, n: int, talk: Talk | None = None) -> dt.date | None:
        taken = {t.date for t in self.talks if t.present and t is not talk}
        base = self.now.date()
        for k in range(22):
            day = base + dt.timedelta(days=(n + k) % 22)
            if day not in taken and day.weekday() < 5:
                return day
        return None

    def new_speaker(self) -> str:
        """A speaker never seen in this history (a replacement is another person, not a respelling)."""
        n, self.next_speaker = self.next_speaker, self.next_speaker + 1
        return SPEAKERS[n % len(SPEAKERS)] + (f" {n // len(SPEAKERS)}" if n >= len(SPEAKERS) else "")

    def edited(self) -> None:
        """The organiser saves the file, and cron runs within 15 minutes: one edit per run, as the README asks
        (two edits between runs, such as a move and a new speaker, cannot be told from two seminars)."""
        self.write()
        self.send()

    def op_edit(self, n: int, kind: str, value: int) -> None:
        if not self.talks:
            return
        t = self.talks[n % len(self.talks)]
        if kind == "readd":
            if not t.present and t.date not in {x.date for x in self.talks if x.present}:
                t.present = True
                t.edited_late |= t.start <= self.now
            self.edited()
            return
        if not t.present:
            return
        if t.start <= self.now and kind != "links":
            t.edited_late = True
        if kind in ("draft", "undraft"):  # a draft: only of a talk nobody was told of (else check refuses it)
            uids = {x.uid for x in self.talks}
            unsure = any(u not in uids for _, u in self.maybe)  # a copy of some talk, unknown which, may be out
            if kind == "undraft" or (t.uid is None and not unsure):
                t.draft = kind == "draft"
        elif kind == "links":  # after the talk (or before it): slides, a video, or both taken away again
            t.slides = None if value % 4 == 3 else f"https://ri.se/lm/{t.name.lower()}-{value}.pdf"
            t.video = f"https://video.example.org/{t.name.lower()}-{value}" if value % 2 else None
        elif kind == "time":
            t.time = ["10:15", "13:00", "15:00", "16:15", "17:30"][value % 5]
        elif kind == "room":
            t.location = ROOMS[value % len(ROOMS)]
        elif kind == "zoom":
            t.zoom = None if value % 3 == 0 else f"https://rise.zoom.us/j/{100 + value}"
        elif kind == "duration":
            t.duration = [45, 60, 90, 120][value % 4]
        elif kind == "title":
            t.title = TITLES[value % len(TITLES)]
        elif kind == "speaker":
            t.speaker = self.new_speaker()
            t.spellings.clear()
        elif kind == "spelling":
            t.spellings.add(t.speaker)
            t.speaker = t.speaker[:-1] if value % 2 else t.speaker + "e"
        elif kind == "cancel":
            t.cancelled = "the speaker is ill" if value % 2 else ""
        elif kind == "uncancel":
            t.cancelled = None
        elif kind == "remove":
            t.present = False
        elif kind == "move":
            day = self.free_date(value, t)
            if day is not None:
                t.date = day
        elif kind == "pin":
            t.id = t.id or f"pinned-{t.name.lower()}"
        elif kind == "repin" and t.id:
            t.id = f"{t.id}-x"
        if kind != "links" and t.start <= self.now:  # (moved into the past)
            t.edited_late = True
        self.edited()

    def op_new(self, value: int, series: int = 0) -> None:
        day = self.free_date(value)
        if day is None:
            return
        speaker = self.new_speaker()
        name = f"T{len(self.talks)}"
        time, location = self.talk_defaults(series)
        self.talks.append(Talk(name, day, speaker, time=time, location=location, series=series,
                               id=f"talk-{name}" if self.pinned else None))  # fmt: skip
        self.edited()

    def op_swap(self, a: int, b: int) -> None:
        live = [t for t in self.talks if t.present and not t.draft]
        if len(live) < 2:
            return
        x = live[a % len(live)]
        same = [t for t in live if t.series == x.series]  # (across series a swap is a remove and a new talk)
        y = same[b % len(same)]
        if x is y:
            return
        late = x.start <= self.now or y.start <= self.now
        x.edited_late |= late
        y.edited_late |= late
        if self.pinned:  # the ids follow the talks to their new dates
            x.date, y.date = y.date, x.date
            x.time, y.time = y.time, x.time
        else:  # without ids a slot is the seminar: its speaker and title change
            x.speaker, y.speaker = y.speaker, x.speaker
            x.title, y.title = y.title, x.title
            x.spellings.clear()
            y.spellings.clear()
        self.edited()

    def op_add(self, n: int) -> None:
        a = self.addr(n)
        if a not in self.file:
            self.file.append(a)
        self.write()

    def op_drop(self, n: int) -> None:
        a = self.addr(n)
        if a in self.file:
            self.file.remove(a)
        self.write()

    def op_fault(self, n: int, kind: str) -> None:
        if kind == "554":
            self.refuse_message = True
        else:
            self.faults[self.addr(n)] = kind

    def cli(self, *args: str, recipients: bool = False) -> int:
        more = ["--recipients", str(self.recipients)] if recipients else []
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            return cli.main([*args, "--schedule", str(self.schedule), "--state", str(self.state), *more])

    def op_unsubscribe(self, n: int) -> None:
        a = self.addr(n)
        assert self.cli("unsubscribe", a, recipients=True) == 0
        self.unsubscribed.add(a)

    def service(self, programme: Path | None = None) -> Any:
        """The real web service of a series (``programme``: its file; the first series' by default), and its store."""
        path = programme or self.schedule
        schedule = load_schedule(path)
        store = Subscribers(self.state, schedule.series.list_name)
        key = token_key(self.state, self.env())
        return build_app(Service(schedule.series, store, key, smtp_settings(self.env()), schedule_path=path)), store

    def service_of(self, link: str) -> tuple[str, Path | None, str]:
        """The list a one-click link unsubscribes from, its programme (None: the first series') and the service's
        https prefix of the link."""
        return self.list_name, None, SERVICE

    def left_list(self, list_name: str) -> set[str]:
        """Who the model says left ``list_name`` (unsubscribed)."""
        return self.unsubscribed

    def op_oneclick(self, n: int) -> None:
        """One click on the unsubscribe link of the latest mail that carried one, through the real web service of
        the list it came through: the address leaves that list."""
        a = self.addr(n)
        link = next((g.unsubscribe for g in reversed(self.got) if g.rcpt == a and g.unsubscribe), None)
        if link is None:
            return
        list_name, programme, prefix = self.service_of(link)
        app, store = self.service(programme)
        try:
            status, _ = asyncio.run(_asgi(app, "POST", link.removeprefix(prefix), {"List-Unsubscribe": "One-Click"}))
        finally:
            store.close()
        if status != 200:
            self.fail(f"one-click unsubscribe of {a} from {list_name} with the link it received answered {status}")
        self.left_list(list_name).add(a)

    def op_propose(self, n: int, value: int) -> None:
        """The speaker of talk n proposes another title through the real form; the organiser accepts it (the real
        ``accept`` writes the YAML), and the cron run tells it as any title edit."""
        talks = [t for t in self.talks if t.series == 0]  # (the first series' form; a project's others have none)
        t = talks[n % len(talks)]
        if not t.present or t.draft:
            return
        title = TITLES[value % len(TITLES)] or "Untitled Thoughts"
        token = speaker_token(token_key(self.state, self.env()), self.list_name, t.date.isoformat(),
                              "speaker@example.org", int(time.time()) + 3600)  # fmt: skip
        app, store = self.service()
        try:
            status, _ = asyncio.run(_asgi(app, "POST", "/speaker", {"t": token, "title": title}))
        finally:
            store.close()
        if status != 200:
            self.fail(f"the speaker's form for {t.name} answered {status}")
        with contextlib.closing(Proposals(self.state, self.list_name, create=False)) as proposals:
            (pending,) = proposals.pending()
        if self.cli("accept", str(pending.id)) != 0:
            self.fail(f"accept {pending.id} (a title for {t.name}) failed")
        written = [s.title for s in load_schedule(self.schedule).seminars if s.date == t.date]
        if written != [title]:
            self.fail(f"accept {pending.id} wrote the title {written} for {t.name}, not {title!r}")
        if t.start <= self.now:
            t.edited_late = True
        t.title = title
        self.edited()

    def op_subscribe(self, n: int) -> None:
        a = self.addr(n)
        self.web_subscribe(a)
        self.store_confirmed.add(a)
        self.unsubscribed.discard(a)

    def web_subscribe(self, a: str, programme: Path | None = None) -> None:
        """Subscribe ``a`` through the series' real form, and confirm with the link the mail brought."""
        before = len(self.recorder.received)
        app, store = self.service(programme)
        try:
            form = {"email": a, "name": f"Person {a.partition('@')[0]}"}
            status, _ = asyncio.run(_asgi(app, "POST", "/subscribe", form))
            if status != 200:
                self.fail(f"subscribing {a} answered {status}")
            with self.recorder.lock:
                mails = [r for r in self.recorder.received[before:] if r.rcpt.lower() == a]
            if not mails:
                self.fail(f"no confirmation mail reached {a}")
            link = re.search(rb"(https://\S+/confirm\?t=\S+)", mails[-1].data.replace(b"=\r\n", b""))
            assert link is not None
            token = urllib.parse.parse_qs(urllib.parse.urlsplit(link[1].decode()).query)["t"][0]
            status, _ = asyncio.run(_asgi(app, "POST", "/confirm", {"t": token}))
            if status != 200:
                self.fail(f"confirming {a} answered {status}")
        finally:
            store.close()
        self.got.extend(parse_received(self.runs, r) for r in self.recorder.received[before:])

    def dsn(self, failed: str, returned_id: str, status: str = "5.1.1") -> bytes:
        """A delivery status notification (RFC 3464) as a remote Postfix writes it, quoting headers only."""
        return (
            "From: MAILER-DAEMON@mx.example.org\r\nTo: learning-machines@ri.se\r\n"
            f"Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn-{len(self.got)}-{failed}>\r\n"
            'MIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
            "--b\r\nContent-Type: text/plain\r\n\r\nThe mail could not be delivered.\r\n"
            "--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.org\r\n\r\n"
            f"Final-Recipient: rfc822; {failed}\r\nAction: failed\r\nStatus: {status}\r\n"
            f"Diagnostic-Code: smtp; 550 {status} no such user\r\n"
            f"--b\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: {returned_id}\r\nSubject: x\r\n--b--\r\n"
        ).encode()

    def bounce_arrives(self, a: str, forged: bool, list_name: str) -> tuple[Path, Path, Path, bool]:
        """Into the bounces Maildir: a malformed message, and a hard bounce naming ``a`` that returns the
        Message-ID of a copy it received through ``list_name`` (genuine), or one another address received (forged).
        Returns the Maildir, the two files, and whether ``a`` had a copy of that list to bounce."""
        lid = self.lists()[list_name]
        own = [g.message_id for g in self.got if g.rcpt == a and g.kind != "service" and g.list_id == lid]
        other = [g.message_id for g in self.got if g.rcpt != a and g.kind != "service"]
        returned = (other if forged else own)[-1:] or [f"<never-sent-{a.partition('@')[0]}@ri.se>"]
        box = self.folder / "bounces"
        for sub in ("cur", "new", "tmp"):
            (box / sub).mkdir(parents=True, exist_ok=True)
        self.bounces += 1
        junk, dsn = box / "new" / f"{self.bounces}-junk.sim", box / "new" / f"{self.bounces}-dsn.sim"
        junk.write_bytes(b"\x00\xff not a message at all\r\n")
        dsn.write_bytes(self.dsn(a, returned[0]))
        return box, junk, dsn, bool(own)

    def op_bounce(self, n: int, forged: bool) -> None:
        """A hard bounce arrives: a genuine one for a copy this address really received, or a forged one
        naming it with a Message-ID sent to someone else, beside a malformed message; the real ``bounces``."""
        a = self.addr(n)
        box, junk, dsn, own = self.bounce_arrives(a, forged, self.list_name)  # (the first series' own copies)
        with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()):
            code = cli.main(["bounces", "--maildir", str(box), "--schedule", str(self.schedule), "--state",
                             str(self.state)])  # fmt: skip
        if code != 0:
            self.fail(f"bounces exited {code}: {out.getvalue()[-300:]}")
        if junk.exists():
            self.fail("bounces left an unreadable message where it was (wanted it quarantined)")
        if dsn.exists() and not forged and own:
            self.fail("bounces left a genuine bounce where it was (wanted it processed)")
        with contextlib.closing(Subscribers(self.state, self.list_name)) as store:
            gone = store.is_unsubscribed(a.lower())
        genuine = not forged and own
        if gone and not genuine and a not in self.unsubscribed:
            self.fail(f"a forged bounce for {a} unsubscribed it")
        if genuine and not gone and self.active(a):
            self.fail(f"a genuine hard bounce for {a} did not unsubscribe it")
        if gone:
            self.unsubscribed.add(a)

    def op_unsuppress(self, n: int) -> None:
        """The organiser readmits an address, whatever held it back (refused, bounced, unsubscribed)."""
        a = self.addr(n)
        code = self.cli("unsuppress", a, recipients=True)
        if code != 0:
            self.fail(f"unsuppress {a} exited {code}")
        self.suppressed.discard(a)
        if a in self.unsubscribed:
            self.unsubscribed.discard(a)
            if a not in self.file:
                self.store_confirmed.add(a)
        if a in self.ledger_suppressed():
            self.fail(f"unsuppress {a} left it suppressed")

    def op_rename(self) -> None:
        """The organiser renames the list (and its file); the next send must not start the series afresh."""
        old, new = self.list_name, self.list_name + "-x"
        (self.recipients / f"{old}.txt").unlink()
        self.list_name = new
        self.write()
        before = len(self.log)
        self.send()
        if any("rename-list" in line for line in self.log[before:]):
            code = self.cli("rename-list", old, new)
            if code != 0:
                self.fail(f"rename-list {old} {new} exited {code}")


# --- histories ----------------------------------------------------------------------------------------

EDITS = ("time", "room", "zoom", "duration", "title", "speaker", "spelling", "cancel", "uncancel", "remove",
         "readd", "move", "pin", "repin", "links", "draft", "undraft")  # fmt: skip
FAULTS = ("451", "452", "421", "550", "drop", "554")


def history(seed: int, *, length: int = 40, rename: bool = True, kills: bool = False) -> tuple[bool, list[Op]]:
    """A random history from ``seed``: (pinned, operations); ``kills``: some runs are killed mid-send."""
    rng = random.Random(seed)
    pinned = rng.random() < 0.3
    ops: list[Op] = [("require_approval",)] if rng.random() < 0.2 else []
    while len(ops) < length:
        r = rng.random()
        if r < 0.22:
            ops.append(("kill", rng.randrange(0, 150)) if kills and rng.random() < 0.4 else ("send",))
        elif r < 0.40:
            ops.append(rng.choice([("tick", 15), ("tick", 120), ("tick", 60 * 24)]))
        elif r < 0.48:
            ops.append(("until", rng.choice(["monday", "reminder", "start", "end"]), rng.randrange(8)))
        elif r < 0.66:
            ops.append(("edit", rng.randrange(6), rng.choice(EDITS), rng.randrange(12)))
        elif r < 0.69:
            ops.append(rng.choice([("new", rng.randrange(22)), ("swap", rng.randrange(6), rng.randrange(6)),
                                   ("propose", rng.randrange(6), rng.randrange(12))]))  # fmt: skip
        elif r < 0.80:
            op = rng.choice(["add", "drop", "subscribe", "oneclick", "unsubscribe", "unsuppress", "bounce"])
            ops.append((op, rng.randrange(9), rng.random() < 0.5) if op == "bounce" else (op, rng.randrange(9)))
        elif r < 0.93:
            ops.append(("fault", rng.randrange(9), rng.choice(FAULTS)))
        elif r < 0.95:
            ops.append(("dry",))
        elif r < 0.965:
            ops.append(("approve",))
        elif r < 0.99 or not rename:
            ops.append(("locked",))
        else:
            ops.append(("rename",))
    return pinned, ops


def run_history(
    folder: Path,
    server: Server,
    recorder: SimRecorder,
    ops: list[Op],
    *,
    pinned: bool,
    tag: str,
    project: tuple[str, str | None] | None = None,
) -> World:
    """Play ``ops`` and settle; raise Violation (with the world's log) at the first broken invariant.
    ``project``: a project of two series and a digest (tests/simulation_project.py), with the second series'
    announce time and the digest's send time (None: with the series)."""
    if project is None:
        world = World(folder, server, recorder, tag=tag, pinned=pinned)
    else:
        from tests.simulation_project import ProjectWorld

        world = ProjectWorld(folder, server, recorder, tag=tag, pinned=pinned, times=project)
    try:
        for op in ops:
            world.apply(op)
        world.settle()
    except MailerError as err:  # every input the simulation writes is valid: an error is a finding too
        raise Violation(f"{type(err).__name__}: {err}") from err
    except Violation:
        raise
    except Exception as err:  # a crash of the mailer (exit 70 from the command line): a finding, shrunk as any
        raise Violation(f"internal error {type(err).__name__}: {err}") from err
    return world


def shrink(fails: Callable[[list[Op]], bool], ops: list[Op]) -> list[Op]:
    """The shortest history found by removing chunks, then single operations, while it still fails."""
    chunk = max(len(ops) // 2, 1)
    while chunk >= 1:
        i, changed = 0, False
        while i < len(ops):
            candidate = ops[:i] + ops[i + chunk :]
            if candidate != ops and fails(candidate):
                ops, changed = candidate, True
            else:
                i += chunk
        if not changed:
            chunk //= 2
    return ops


def folders(base: Path) -> Iterator[Path]:
    n = 0
    while True:
        n += 1
        path = base / f"h{n}"
        path.mkdir(parents=True)
        yield path


@dataclass(frozen=True)
class Outcome:
    seed: int
    steps: int
    kills: int
    failure: str | None  # the violation and the shrunk history, ready to paste as a regression test
    followups: int = 0  # follow-up copies received: that the histories reach that part at all
    project: bool = False  # a project of two series and a digest
    digests: int = 0  # digest copies received


def play(base: Path, server: Server, recorder: SimRecorder, seed: int, *, kills: bool = False) -> Outcome:
    """Play one history from ``seed``; on a violation shrink it to a minimal one with the same violation.
    Some seeds (``tests.simulation_project.PROJECT_SHARE``) play a project of two series and a digest."""
    from tests.simulation_project import is_project, project_history

    project: tuple[str, str | None] | None = None
    if is_project(seed):
        pinned, ops, project = project_history(seed, kills=kills)
    else:
        pinned, ops = history(seed, kills=kills)
    fresh = folders(base / f"seed-{seed}")
    try:
        world = run_history(next(fresh), server, recorder, ops, pinned=pinned, tag=f"s{seed}", project=project)
    except Violation as first:
        attempt, signature = 0, first.signature

        def fails(candidate: list[Op]) -> bool:
            nonlocal attempt
            attempt += 1
            try:
                run_history(next(fresh), server, recorder, candidate, pinned=pinned, tag=f"s{seed}m{attempt}",
                            project=project)  # fmt: skip
            except Violation as err:
                return err.signature == signature
            return False

        minimal = shrink(fails, ops)
        shown = f"minimal history ({len(minimal)} of {len(ops)}, pinned={pinned}, project={project!r}): {minimal!r}"
        return Outcome(seed, len(ops), 0, f"seed {seed}: {first}\n{shown}", project=project is not None)
    finally:
        shutil.rmtree(base / f"seed-{seed}", ignore_errors=True)
    digests = sum(g.kind == "digest" for g in world.got)
    return Outcome(seed, len(ops), world.kills, None, len(world.followed), project is not None, digests)


def play_many(
    base: Path, seeds: list[int], *, kills: bool = False, until: float | None = None, progress: int = 0
) -> list[Outcome]:
    """Play ``seeds`` in this process against a server of its own (stop early at ``until``, a monotonic time);
    with ``progress``, a line every that many histories."""
    from tests.smtp_server import start_server

    base.mkdir(parents=True, exist_ok=True)
    recorder = SimRecorder()
    server = start_server(base, recorder=recorder)
    out = []
    try:
        for seed in seeds:
            if until is not None and time.monotonic() >= until:
                break
            out.append(outcome := play(base, server, recorder, seed, kills=kills))
            if outcome.failure:  # said at once: a long soak that is stopped still tells what it found
                print(f"{base.name}: seed {seed}: VIOLATION\n{outcome.failure}", flush=True)
            if progress and len(out) % progress == 0:
                bad = sum(o.failure is not None for o in out)
                print(f"{base.name}: {len(out)} histories, last seed {seed}, {bad} violating", flush=True)
    finally:
        server.controller.stop()
    return out


def play_parallel(
    base: Path,
    seeds: list[int],
    *,
    workers: int,
    kills: bool = False,
    seconds: float | None = None,
    progress: int = 0,
) -> list[Outcome]:
    """Play ``seeds`` over ``workers`` processes (each with its own server), interleaved so each gets its share."""
    import concurrent.futures
    import multiprocessing

    until = time.monotonic() + seconds if seconds is not None else None
    if workers <= 1:
        return play_many(base / "w0", seeds, kills=kills, until=until, progress=progress)
    context = multiprocessing.get_context("spawn")  # no fork of a process with a server thread running
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        jobs = [
            pool.submit(play_many, base / f"w{n}", seeds[n::workers], kills=kills, until=until, progress=progress)
            for n in range(workers)
        ]
        return sorted((o for job in jobs for o in job.result()), key=lambda o: o.seed)
