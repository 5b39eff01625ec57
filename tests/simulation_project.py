"""The lifecycle simulation of a project: two series and a weekly digest that includes both (tests/simulation.py).

The first series is the single-series world's (Learning Machines, list ``learning-machines``, Thursdays 15:00,
announced Monday 08:00, reminder 2h, follow-ups); the second (ML Reading Group, list ``ml``, 10:00 in Room 2,
reminder 1h, no follow-ups) has its seminars in the same weeks, announced at a time a history picks (Monday 08:00
or 09:00, or Tuesday 08:00); the digest (This Week at the Department, list ``week``, from seminars@example.org)
includes both and is sent at a time the history picks too (before, at, between or after the series' times, or by
default with the earliest of them). Each list has its own file and subscribers, partly the same people. A run
is what ``send`` does in such a project: ``dispatch.run`` for each series, then ``run_digest``; a killed run is
the real ``send`` from the project folder, covering all three.

Subscribers choose too (what the manage page stores, in the real preferences file): per list every message, the
digest only (for a series' list: the digest's run then takes them in) or nothing; a reader is active on a list
only as their choice says, so every check below holds with the choices as they are. And a time zone: every
announcement, reminder and digest a reader gets then states each of its seminars' times in that zone too, and
one without a zone (or in the series' own) gets no such time. Bounces arrive for copies of any list (genuine, or
forged with another's Message-ID) and the real ``bounces`` runs from the project folder: a genuine hard bounce
unsubscribes the address from every list, a forged one from none. Both series have a web service (serve mounts
each at its service_url's path): a subscriber joins either through its own form and confirmation link, and a
one-click unsubscribe goes to the service of the list whose mail carried the link, and leaves that list only.

Besides everything the single-series world checks (now per list: nothing through a list to someone not active on
it, each mail from its list's sender, classified by its List-Id), after every step:

- a digest only through the digest's list, not before its send time, of the seminars of the week it names,
  its subject's count theirs, each one the reader was not told of (by any list) and not cancelled;
- every mail's VEVENT under the seminar's own UID, whoever sends it, with its series' sender as ORGANIZER;
- a change, cancellation, reminder or follow-up only through the seminar's series' list or the digest's, to
  someone told of it by either (once per revision: SEQUENCE above what they know; a reminder once);

and once settled: every active reader of a series' list or the digest's knows every seminar still ahead of a week
that list has told, at its latest fields (a correction reaches a digest reader through the digest's run).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import os
import random
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mailer import cli
from mailer.compose.render import reader_time
from mailer.core.address import parse_address
from mailer.record.preferences import Preferences
from mailer.record.subscribers import Subscribers
from mailer.run import dispatch
from mailer.run.digests import run_digest
from mailer.run.request import Request, Result
from tests.simulation import (
    EDITS,
    END,
    FAULTS,
    SENDER,
    SERVICE,
    SPEAKERS,
    TZ,
    Got,
    Op,
    SimRecorder,
    Talk,
    World,
)
from tests.smtp_server import Server

PROJECT_SHARE = 0.5  # of the seeds: the others play the single-series history they always did
FIRST = "learning-machines"
SECOND, SECOND_SENDER = "ml", "ml@example.org"
SECOND_SERVICE = "https://seminars.example.org/ml"  # (serve mounts each series at its service_url's last part)
DIGEST, DIGEST_SENDER, DIGEST_NAME = "week", "seminars@example.org", "This Week at the Department"
SECOND_ANNOUNCE = ("Monday 08:00", "Monday 09:00", "Tuesday 08:00")
# The digest's send time: by default (None, twice as likely) with the earliest series, else before, at, between and
# after the series' times.
DIGEST_SEND = (
    None,
    None,
    "Monday 07:00",
    "Monday 08:00",
    "Monday 08:30",
    "Monday 09:00",
    "Monday 12:00",
    "Tuesday 07:00",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
LISTS = (FIRST, SECOND, DIGEST)
ZONES = ("Europe/London", "America/New_York", "Asia/Tokyo", "Europe/Stockholm", None)  # (the last two: no "your time")


def is_project(seed: int) -> bool:
    """Whether ``seed`` plays a project (drawn apart from the history, so the single-series ones stay as they were)."""
    return random.Random(f"project {seed}").random() < PROJECT_SHARE


def moment(spec: str, monday: dt.date) -> dt.datetime:
    """``"Monday 08:00"`` in the week of ``monday``."""
    day, _, clock = spec.partition(" ")
    hour, minute = map(int, clock.split(":"))
    return dt.datetime.combine(monday + dt.timedelta(days=WEEKDAYS.index(day)), dt.time(hour, minute), tzinfo=TZ)


def monday_of(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=day.weekday())


@dataclass
class Audience:
    """One list's readers but the first's (the World's own fields): its file, its store, who left it."""

    file: list[str]
    store_confirmed: set[str] = field(default_factory=set)
    unsubscribed: set[str] = field(default_factory=set)


class ProjectWorld(World):
    """Two series and a digest of both in one project folder (data/*.yaml), one state folder and ledger."""

    def __init__(
        self,
        folder: Path,
        server: Server,
        recorder: SimRecorder,
        *,
        tag: str,
        pinned: bool,
        times: tuple[str, str | None],
    ) -> None:
        self.second_announce, self.digest_send = times
        self.tag = tag
        self.choices: dict[tuple[str, str], str] = {}  # (address, list) -> all, digest or none (the manage page's)
        self.zones: dict[str, str] = {}  # address -> the time zone the reader chose (the manage page's)
        self.others = {
            SECOND: Audience([self.addr(n) for n in (3, 5, 6)]),
            DIGEST: Audience([self.addr(n) for n in (1, 3, 5, 7)]),
        }
        (folder / "data").mkdir(parents=True, exist_ok=True)
        super().__init__(folder, server, recorder, tag=tag, pinned=pinned)
        for n, day in enumerate((16, 22, 36)):  # a Wednesday, a Tuesday, a Tuesday: in the first series' weeks
            date = dt.date(2030, 1, 1) + dt.timedelta(days=day - 1)
            self.talks.append(
                Talk(f"M{n}", date, SPEAKERS[4 + n], time="10:00", location="Room 2", series=1,
                     id=f"talk-{n}" if pinned else None)  # (the same ids as the first series': each its own)
            )  # fmt: skip
        self.next_speaker = 7
        self.write()

    # --- the project's files -----------------------------------------------------------------------

    @property
    def schedule(self) -> Path:
        return self.folder / "data" / "seminars.yaml"

    def path_of(self, list_name: str) -> Path:
        return {FIRST: self.schedule, SECOND: self.folder / "data" / "ml.yaml"}.get(
            list_name, self.folder / "data" / "week.yaml"
        )

    def write_more(self) -> None:
        series = (
            "series:\n  name: ML Reading Group\n  signature: The Reading Group\n  timezone: Europe/Stockholm\n"
            '  time: "10:00"\n  location: Room 2\n  info_url: https://example.org/ml\n'
            f"  sender: ML Reading Group <{SECOND_SENDER}>\n  list: {SECOND}\n"
            f'  announce: "{self.second_announce}"\n  reminder: 1h\n  service_url: {SECOND_SERVICE}\n'
        )
        talks = sorted((t for t in self.talks if t.present and t.series == 1), key=lambda t: t.start)
        seminars = "seminars:\n" + "".join(t.yaml("10:00", "Room 2") for t in talks) if talks else "seminars: []\n"
        self.path_of(SECOND).write_text(series + seminars, encoding="utf-8")
        send = f'  send: "{self.digest_send}"\n' if self.digest_send else ""
        self.path_of(DIGEST).write_text(
            f"digest:\n  name: {DIGEST_NAME}\n  sender: Department Seminars <{DIGEST_SENDER}>\n  list: {DIGEST}\n"
            f"  include: [{self.list_name}, {SECOND}]\n{send}",
            encoding="utf-8",
        )
        for name, audience in self.others.items():
            (self.recipients / f"{name}.txt").write_text("".join(f"{a}\n" for a in audience.file))

    def programmes(self) -> list[tuple[Path, str, Callable[[Request], Result]]]:
        return [
            (self.schedule, self.list_name, dispatch.run),
            (self.path_of(SECOND), SECOND, dispatch.run),
            (self.path_of(DIGEST), DIGEST, run_digest),
        ]

    def send_command(self) -> tuple[list[str], Path | None]:
        """The real ``send`` from the project folder: every programme, the series first, under one lock."""
        import sys

        command = [sys.executable, "-m", "mailer", "send", "--now", self.now.isoformat(), "--recipients",
                   str(self.recipients), "--state", str(self.state)]  # fmt: skip
        return command, self.folder

    # --- who is on which list ----------------------------------------------------------------------

    def lists(self) -> dict[str, str]:
        return {
            self.list_name: f"{self.list_name}.{SENDER.partition('@')[2]}",
            SECOND: f"{SECOND}.{SECOND_SENDER.partition('@')[2]}",
            DIGEST: f"{DIGEST}.{DIGEST_SENDER.partition('@')[2]}",
        }

    def list_sender(self, list_name: str) -> str:
        return {SECOND: SECOND_SENDER, DIGEST: DIGEST_SENDER}.get(list_name, SENDER)

    def listed_on(self, address: str, list_name: str) -> bool:
        """On the list (its file or its store), neither unsubscribed from it nor suppressed."""
        if list_name not in self.others:
            return self.active(address)
        a = self.others[list_name]
        listed = address in a.file or address in a.store_confirmed
        return listed and address not in a.unsubscribed and address not in self.suppressed

    def active_on(self, address: str, list_name: str) -> bool:
        """Mailed through the list: listed and choosing every message of it; the digest's readers also those who
        chose the digest over a series' list they are on (unless they unsubscribed from the digest or chose none)."""
        choice = self.choices.get((address, list_name), "all")
        if list_name != DIGEST:
            return choice == "all" and self.listed_on(address, list_name)
        if choice == "none":
            return False
        if self.listed_on(address, DIGEST):
            return True
        chose = any(
            self.choices.get((address, name)) == "digest" and self.listed_on(address, name)
            for name in (self.list_name, SECOND)
        )
        return chose and address not in self.others[DIGEST].unsubscribed

    def readers_of(self, list_name: str) -> set[str]:
        everyone = {*self.file, *self.store_confirmed}
        for a in self.others.values():
            everyone |= {*a.file, *a.store_confirmed}
        return {x for x in everyone if self.active_on(x, list_name)}

    def op_choose(self, n: int, list_name: str, delivery: str) -> None:
        """A subscriber's choice for a list, as the manage page stores it (the page itself: test_manage_browser)."""
        a = self.addr(n)
        found = parse_address(a)
        assert found is not None
        with Preferences(self.state, create=True) as chosen:
            chosen.choose(found.key, {list_name: delivery}, self.zones.get(a), now=self.now)
        self.choices[(a, list_name)] = delivery

    def op_zone(self, n: int, zone: str | None) -> None:
        """A subscriber's time zone, as the manage page stores it (None: none, the series' own)."""
        a = self.addr(n)
        found = parse_address(a)
        assert found is not None
        with Preferences(self.state, create=True) as chosen:
            chosen.choose(found.key, {}, zone, now=self.now)
        if zone is None:
            self.zones.pop(a, None)
        else:
            self.zones[a] = zone

    def check_zone(self, g: Got) -> None:
        """Each time of an announcement, reminder or digest also in the reader's zone, as it is now; else none."""
        if g.kind not in ("announcement", "reminder", "digest"):
            return
        zone = next((z for a, z in self.zones.items() if a.lower() == g.rcpt), None)
        there = zoneinfo.ZoneInfo(zone) if zone else None
        wanted = sorted(t for ev in g.events if not ev.cancelled and (t := reader_time(ev.start.astimezone(TZ), there)))
        if sorted(g.your_times) != wanted:
            self.fail(f"{g.rcpt} (zone {zone}) was sent {g.subject!r} stating {g.your_times}, wanted {wanted}")

    def active_lists(self) -> dict[str, set[str]]:
        return {name: self.readers_of(name) for name in (self.list_name, SECOND, DIGEST)}

    def own_list(self, t: Talk) -> str:
        return self.list_name if t.series == 0 else SECOND

    def telling(self, t: Talk) -> set[str]:
        return {self.own_list(t), DIGEST}

    def series_sender(self, t: Talk) -> str:
        return SENDER if t.series == 0 else SECOND_SENDER

    def readers(self, t: Talk) -> set[str]:
        return self.readers_of(self.own_list(t)) | self.readers_of(DIGEST)

    def gate(self, series: int, monday: dt.date) -> dt.datetime:
        """When a series announces the week of ``monday``."""
        return moment("Monday 08:00" if series == 0 else self.second_announce, monday)

    def digest_opens(self, monday: dt.date, *, latest: bool) -> dt.datetime | None:
        """When the digest tells the week of ``monday``: its ``send`` time, else the earliest announcement among
        the series with a seminar that week still ahead; ``latest``: counting only live seminars (what is sure
        to be the week's: a cancelled one may count too), else every present one (the earliest it may go)."""
        if self.digest_send:
            return moment(self.digest_send, monday)
        gates = [
            self.gate(t.series, monday)
            for t in self.talks
            if t.present and not t.draft and monday_of(t.date) == monday and t.start > self.now
            and (t.cancelled is None or not latest) and not (latest and self.waits(t))
        ]  # fmt: skip
        return min(gates, default=None)

    def must_know(self, address: str, t: Talk) -> bool:
        monday = monday_of(t.date)
        if self.waits(t):
            return False
        if self.active_on(address, self.own_list(t)) and self.now >= self.gate(t.series, monday):
            return True
        if not self.active_on(address, DIGEST) or monday != monday_of(self.now.date()):
            return False  # (a digest tells this week only: a week a reader joined after is told by nothing)
        opens = self.digest_opens(monday, latest=True)
        return opens is not None and self.now >= opens

    def followup_on(self, t: Talk) -> bool:
        return t.series == 0

    def reminder_lead(self, t: Talk) -> dt.timedelta:
        return dt.timedelta(hours=2 if t.series == 0 else 1)

    def talk_defaults(self, series: int) -> tuple[str, str]:
        return ("15:00", "Room A") if series == 0 else ("10:00", "Room 2")

    # --- the digest's own checks --------------------------------------------------------------------

    def check_mail(self, g: Got, via: str) -> None:
        self.check_zone(g)
        if via == DIGEST and g.kind == "announcement":
            self.fail(f"{g.rcpt} was sent an announcement ({g.subject!r}) through the digest's list")
        if g.kind != "digest":
            return
        if via != DIGEST:
            self.fail(f"{g.rcpt} was sent a digest ({g.subject!r}) through {via}, a series' list")
        from tests.simulation import DIGEST_SUBJECT

        m = DIGEST_SUBJECT.match(g.subject)
        assert m is not None
        monday = monday_of(self.now.date())
        if m[1] != DIGEST_NAME or m[2] != monday.isoformat():
            self.fail(f"{g.rcpt} was sent the digest {g.subject!r} in the week of {monday}")
        if int(m[3]) != len(g.events) or not g.events:
            self.fail(f"{g.rcpt} was sent the digest {g.subject!r} with {len(g.events)} events")
        if any(monday_of(ev.start.date()) != monday for ev in g.events):
            self.fail(f"{g.rcpt} was sent the digest {g.subject!r} with a seminar of another week")
        opens = self.digest_opens(monday, latest=False)
        if opens is None or self.now < opens:
            self.fail(f"{g.rcpt} was sent the digest {g.subject!r} before its time ({opens})")

    # --- operations on any list ---------------------------------------------------------------------

    def cli_in_project(self, *args: str, series: str | None = None) -> int:
        """A command from the project folder, covering every programme or (``series``) the one with that list."""
        more = ["--series", series] if series else []
        cwd = Path.cwd()
        os.chdir(self.folder)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                return cli.main([*args, *more, "--state", str(self.state), "--recipients", str(self.recipients)])
        finally:
            os.chdir(cwd)

    def audience_command(self, command: str, a: str, list_name: str | None, how: str) -> list[str]:
        """``command`` for address ``a`` on a list: by --schedule (its file), --series, or (None) every list."""
        if list_name is None:
            code = self.cli_in_project(command, a)
        elif how == "series":
            code = self.cli_in_project(command, a, series=list_name)
        else:
            more = ["--schedule", str(self.path_of(list_name)), "--state", str(self.state)]
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                code = cli.main([command, a, *more, "--recipients", str(self.recipients)])
        if code != 0:
            self.fail(f"{command} {a} ({list_name or 'every list'}, by {how}) exited {code}")
        return [list_name] if list_name else list(LISTS)

    def op_add(self, n: int, list_name: str | None = None) -> None:
        if list_name in self.others and (a := self.addr(n)) not in self.others[list_name].file:
            self.others[list_name].file.append(a)
        if list_name in self.others:
            self.write()
        else:
            super().op_add(n)

    def op_drop(self, n: int, list_name: str | None = None) -> None:
        if list_name in self.others and (a := self.addr(n)) in self.others[list_name].file:
            self.others[list_name].file.remove(a)
        if list_name in self.others:
            self.write()
        else:
            super().op_drop(n)

    def op_unsubscribe(self, n: int, list_name: str | None = FIRST, how: str = "schedule") -> None:
        a = self.addr(n)
        for name in self.audience_command("unsubscribe", a, list_name, how):
            (self.others[name].unsubscribed if name in self.others else self.unsubscribed).add(a)

    def service_of(self, link: str) -> tuple[str, Path | None, str]:
        """Either series' (serve mounts each at its service_url's path; the digest has none)."""
        if link.startswith(SECOND_SERVICE + "/"):
            return SECOND, self.path_of(SECOND), SECOND_SERVICE
        return FIRST, self.path_of(FIRST), SERVICE

    def left_list(self, list_name: str) -> set[str]:
        return self.others[list_name].unsubscribed if list_name in self.others else self.unsubscribed

    def op_subscribe(self, n: int, list_name: str = FIRST) -> None:
        """Subscribe and confirm through a series' own web form (the second's too: serve mounts each series)."""
        a = self.addr(n)
        self.web_subscribe(a, self.path_of(list_name))
        audience = self.others.get(list_name)
        (audience.store_confirmed if audience else self.store_confirmed).add(a)
        self.left_list(list_name).discard(a)

    def op_subscribe_cli(self, n: int, list_name: str, how: str) -> None:
        """The organiser subscribes an address with the CLI (one list: --series or --schedule)."""
        a = self.addr(n)
        self.audience_command("subscribe", a, list_name, how)
        if list_name in self.others:
            self.others[list_name].store_confirmed.add(a)
            self.others[list_name].unsubscribed.discard(a)
        else:
            self.store_confirmed.add(a)
            self.unsubscribed.discard(a)

    def op_unsuppress(self, n: int, list_name: str | None = FIRST, how: str = "schedule") -> None:
        """The organiser readmits an address on a list (or every list): a refusal is the project's, an
        unsubscription the list's."""
        a = self.addr(n)
        for name in self.audience_command("unsuppress", a, list_name, how):
            audience = self.others.get(name)
            file, confirmed, left = (
                (audience.file, audience.store_confirmed, audience.unsubscribed)
                if audience
                else (self.file, self.store_confirmed, self.unsubscribed)
            )
            if a in left:
                left.discard(a)
                if a not in file:
                    confirmed.add(a)
        self.suppressed.discard(a)
        if a in self.ledger_suppressed():
            self.fail(f"unsuppress {a} left it suppressed")

    def op_bounce_any(self, n: int, forged: bool, list_name: str) -> None:
        """A hard bounce of a copy that came through ``list_name`` (genuine: one this address received from it;
        forged: naming it with another's Message-ID), beside a malformed message; the real ``bounces`` run from the
        project folder, covering every list: a genuine one unsubscribes the address from every list, a forged one
        from none."""
        a = self.addr(n)
        box, junk, dsn, own = self.bounce_arrives(a, forged, list_name)
        cwd = Path.cwd()
        os.chdir(self.folder)  # (from the project folder, as cron runs it: every list; bounces takes no --recipients)
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                code = cli.main(["bounces", "--maildir", str(box), "--state", str(self.state)])
        finally:
            os.chdir(cwd)
        if code != 0:
            self.fail(f"bounces (every list) exited {code}")
        if junk.exists():
            self.fail("bounces left an unreadable message where it was (wanted it quarantined)")
        genuine = not forged and own
        if dsn.exists() and genuine:
            self.fail(f"bounces left a genuine bounce of a {list_name} copy where it was (wanted it processed)")
        for name in LISTS:
            with contextlib.closing(Subscribers(self.state, name)) as store:
                gone = store.is_unsubscribed(a.lower())
            left = self.others[name].unsubscribed if name in self.others else self.unsubscribed
            if gone and not genuine and a not in left:
                self.fail(f"a forged bounce for {a} (a {list_name} copy) unsubscribed it from {name}")
            if genuine and not gone and self.active_on(a, name):
                self.fail(f"a genuine hard bounce of {a}'s {list_name} copy left it on {name}")
            if gone:
                left.add(a)

    def op_until(self, what: str, n: int) -> None:
        """Also ``gate``: the next moment a list tells a week (the first series', the second's, the digest's)."""
        if what != "gate":
            super().op_until(what, n)
            return
        monday = monday_of(self.now.date())
        for week in (monday, monday + dt.timedelta(days=7)):
            spec = ("Monday 08:00", self.second_announce, self.digest_send or "Monday 08:00")[n % 3]
            if (at := moment(spec, week)) > self.now:
                self.now = min(at, END)
                return


def project_history(
    seed: int, *, length: int = 40, kills: bool = False
) -> tuple[bool, list[Op], tuple[str, str | None]]:
    """A random history of a project from ``seed``: (pinned, operations, (the second series' announce time, the
    digest's send time))."""
    rng = random.Random(seed)
    pinned = rng.random() < 0.3
    times = (rng.choice(SECOND_ANNOUNCE), rng.choice(DIGEST_SEND))
    ops: list[Op] = [("require_approval",)] if rng.random() < 0.15 else []
    while len(ops) < length:
        r = rng.random()
        n = rng.randrange(9)
        if r < 0.22:
            ops.append(("kill", rng.randrange(0, 150)) if kills and rng.random() < 0.4 else ("send",))
        elif r < 0.38:
            ops.append(rng.choice([("tick", 15), ("tick", 120), ("tick", 60 * 24)]))
        elif r < 0.47:
            what = rng.choice(["monday", "gate", "gate", "reminder", "start", "end"])
            ops.append(("until", what, rng.randrange(8)))
        elif r < 0.64:
            ops.append(("edit", rng.randrange(8), rng.choice(EDITS), rng.randrange(12)))
        elif r < 0.67:
            ops.append(rng.choice([("new", rng.randrange(22), rng.randrange(2)), ("swap", rng.randrange(8),
                                   rng.randrange(8)), ("propose", rng.randrange(6), rng.randrange(12))]))  # fmt: skip
        elif r < 0.81:
            list_name = rng.choice(LISTS)
            how = rng.choice(["schedule", "series"])
            op = rng.choice(["add", "add", "drop", "subscribe", "oneclick", "unsubscribe", "unsuppress", "bounce",
                             "subscribe_cli"])  # fmt: skip
            if op in ("add", "drop"):
                ops.append((op, n, list_name))
            elif op in ("unsubscribe", "unsuppress"):
                ops.append((op, n, None if rng.random() < 0.15 else list_name, how))
            elif op == "subscribe_cli":
                ops.append((op, n, list_name, how))
            else:
                if op == "bounce":
                    ops.append(("bounce_any", n, rng.random() < 0.5, list_name))
                elif op == "subscribe":
                    ops.append((op, n, SECOND if list_name == SECOND else FIRST))  # (a digest has no form)
                else:
                    ops.append((op, n))
        elif r < 0.86:  # a subscriber's choice: the digest over a series' list, nothing from a list, or back
            list_name = rng.choice(LISTS)
            digest = list_name != DIGEST and rng.random() < 0.5
            if rng.random() < 0.35:
                ops.append(("zone", n, rng.choice(ZONES)))
            else:
                ops.append(("choose", n, list_name, "digest" if digest else rng.choice(["none", "all"])))
        elif r < 0.93:
            ops.append(("fault", n, rng.choice(FAULTS)))
        elif r < 0.95:
            ops.append(("dry",))
        elif r < 0.965:
            ops.append(("approve",))
        else:
            ops.append(("locked", rng.randrange(3)))
    return pinned, ops, times
