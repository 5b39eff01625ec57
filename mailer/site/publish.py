"""``publish``: the programme on the web and in calendars, from the schedule and what the ledger remembers.

One folder receives, as a website (``site: html``, the default; website.py makes the pages):

- ``index.html``, and per seminar ``YYYY-MM-DD-<slug>.html`` and ``.ics``;

or, for a site Jekyll builds (``site: jekyll`` or ``--format jekyll``):

- a page per seminar, ``YYYY-MM-DD-<slug>.md`` with Jekyll front matter: the announcement of its
  week with that seminar alone, exactly as ``preview`` writes it (a cancelled seminar's page says so);
- ``programme.md``: the seminars not yet over, then the past ones by year, each linking its page;

and in both formats:

- ``seminars.ics``: the series' published calendar (RFC 5545 without METHOD), one VEVENT per seminar,
  built by ``invite.vevent`` with the UID and SEQUENCE its invitations carry (``plan.identities``); a
  seminar removed from the file after its announcement is there as STATUS:CANCELLED, as the mails say;
- ``announcements.atom``: the announcements whose week has begun, newest first (RFC 4287). With
  ``calendar_url`` (the address of this folder's seminars.ics) it has its ``rel="self"`` link and
  absolute entry links, which feed readers need once an entry leaves the feed's own page; without it
  the links stay relative to the feed.

With ``zoom_public: false`` every output is made from ``public(schedule)``, which holds no Zoom link;
the mails are made from the schedule itself. Slides, video and paper (added after the talk) appear on
the pages, in the archive and in the feed's entries.

A file is written only when its bytes change, so a site's history shows real changes only. For that
the time stamps must not move either: an event's DTSTAMP and an entry's ``updated`` are the moment
``publish`` first wrote that version of it, read back from the previous output when nothing in it
changed. ``.seminar-mailer-published`` lists the files ``publish`` wrote, so that ``--prune`` deletes
only its own pages of seminars no longer in the schedule, never a file someone else put there.
"""

from __future__ import annotations

import datetime as dt
import html
import os
import re
import stat
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from itertools import groupby
from pathlib import Path

from mailer.compose.invite import Event, build_feed, vevent
from mailer.compose.render import make_environment, page_name, render_page, render_programme
from mailer.core.errors import ConfigError, ScheduleError
from mailer.core.links import HTML_MARKDOWN
from mailer.core.outfiles import write_files
from mailer.programme.model import Schedule, Seminar, Series, Week, week_of
from mailer.programme.schedule import load_schedule
from mailer.record.ledger import Ledger
from mailer.record.state import LEDGER_FILE
from mailer.run.due_recipients import memory_of
from mailer.run.plan import Memory, plan, seminar_from_fields
from mailer.site import website
from mailer.site.website import INDEX

CALENDAR = "seminars.ics"
ATOM = "announcements.atom"
PROGRAMME = "programme.md"
MANIFEST = ".seminar-mailer-published"
REFRESH = dt.timedelta(hours=12)  # how often calendar apps should fetch the feed again
_MAX_READ = 20 * 1024 * 1024  # a previous output larger than this is not ours: it is replaced
_PAGE_NAME = re.compile(r"^\d{4}-\d{2}-\d{2}-[a-z0-9-]+\.(?:md|html|ics)$")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class Published:
    """What one ``publish`` did, for ``cli`` to print."""

    out: Path
    seminars: int  # in the schedule
    events: int  # in seminars.ics (removed seminars that the mails cancel included)
    entries: int  # in the Atom feed
    written: tuple[str, ...]
    unchanged: tuple[str, ...]
    removed: tuple[str, ...]  # --prune: pages of seminars no longer in the schedule
    stale: tuple[str, ...]  # such pages left in place (without --prune)
    # What an index of several series shows of this one (all_series.py):
    series: Series | None = None  # as published (public)
    jekyll: bool = False
    upcoming: tuple[tuple[Seminar, str], ...] = ()  # (seminar, its page) not yet over, soonest first
    calendar: bytes = b""  # its seminars.ics as written


# --- which seminars, under which identity ---------------------------------------------------------


def read_memory(state: Path, list_name: str) -> Memory:
    """What the ledger remembers; an empty memory (every seminar as a first announcement) without one."""
    if not (state / LEDGER_FILE).exists():
        return Memory()
    return memory_of(Ledger(state, list_name, readonly=True), list_name)


def calendar_events(schedule: Schedule, memory: Memory, *, now: dt.datetime) -> tuple[list[Event], list[Event]]:
    """Every seminar of the schedule as an Event with the UID and SEQUENCE of its invitations; then the
    seminars removed from the file that the mails cancel (or cancelled), under their own UID."""
    today = now.astimezone(schedule.series.timezone).date()
    planned = plan(schedule, memory, now=now, today=today)
    if planned.problems:
        raise ScheduleError.from_problems(list(planned.problems))
    events = [Event(i.seminar, i.uid, i.revision) for i in planned.identities]
    in_file = {i.key for i in planned.identities}
    revised = {r.key: r for r in planned.remember}  # the plan's next revision of each removed seminar
    removed = []
    for remembered in memory.remembered:
        if remembered.key in in_file:
            continue
        r = revised.get(remembered.key, remembered)
        if r.fields is not None and r.fields.get("cancelled") is not None:
            removed.append(Event(seminar_from_fields(schedule, r.fields), r.uid, r.revision))
    return events, removed


def _week_alone(schedule: Schedule, seminar: Seminar) -> Week:
    """The week of ``seminar`` as announced with it alone (its upcoming list as that week's)."""
    if seminar not in schedule.seminars:  # removed from the file: its week as if it were still there
        seminars = tuple(sorted((*schedule.seminars, seminar), key=lambda s: s.start))
        schedule = replace(schedule, seminars=seminars)
    week = week_of(schedule, seminar.date)
    assert week is not None
    return replace(week, seminars=(seminar,))


def _announced(schedule: Schedule, week: Week) -> dt.datetime:
    """When a week's announcement is published: the start of its Monday, in the series' zone."""
    return dt.datetime.combine(week.monday, dt.time(0, 0), tzinfo=schedule.series.timezone)


# --- the previous output: files, and the stamps of what did not change ---------------------------


def _read(dir_fd: int, name: str) -> bytes | None:
    """The bytes of ``name`` in the folder, never through a link; None if absent or not a plain file."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, dir_fd=dir_fd)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = handle.read(_MAX_READ + 1)
    return data if len(data) <= _MAX_READ else None


@dataclass(frozen=True, slots=True)
class _Blocks:
    """How to find, in a feed publish wrote, each event or entry, its identity and its time stamp."""

    block: re.Pattern[str]
    ident: re.Pattern[str]
    stamp: re.Pattern[str]
    parse: Callable[[str], dt.datetime]

    def previous(self, text: str) -> dict[str, tuple[str, dt.datetime]]:
        """identity -> (the block without its stamp, the stamp)."""
        found = {}
        for block in self.block.findall(text):
            ident, stamp = self.ident.search(block), self.stamp.search(block)
            if ident and stamp:
                try:
                    found[ident[1]] = (self.stamp.sub("", block), self.parse(stamp[1]))
                except ValueError:
                    continue
        return found

    def key(self, text: str) -> str:
        """One new block (the only one in ``text``) without its stamp, to compare with the previous."""
        return self.stamp.sub("", self.block.findall(text)[0])


def _utc(fmt: str) -> Callable[[str], dt.datetime]:
    return lambda text: dt.datetime.strptime(text, fmt).replace(tzinfo=dt.UTC)


_ICS = _Blocks(
    re.compile(r"BEGIN:VEVENT\r\n.*?END:VEVENT\r\n", re.S),
    re.compile(r"\r\nUID:([^\r\n]*)\r\n"),
    re.compile(r"\r\nDTSTAMP:(\d{8}T\d{6}Z)(?=\r\n)"),
    _utc("%Y%m%dT%H%M%SZ"),
)
_ATOM = _Blocks(
    re.compile(r"<entry>.*?</entry>", re.S),
    re.compile(r"<id>([^<]*)</id>"),
    re.compile(r"<updated>([^<]*)</updated>"),
    _utc("%Y-%m-%dT%H:%M:%SZ"),
)


def _unfold(ics: bytes) -> str:
    return ics.decode("utf-8", "replace").replace("\r\n ", "").replace("\r\n\t", "")


def _kept(previous: dict[str, tuple[str, dt.datetime]], ident: str, key: str) -> dt.datetime | None:
    """The previous stamp of ``ident`` when its block is unchanged."""
    old = previous.get(ident)
    return old[1] if old is not None and old[0] == key else None


# --- the calendar feed ----------------------------------------------------------------------------


def calendar_feed(schedule: Schedule, events: Iterable[Event], *, previous: bytes | None, now: dt.datetime) -> bytes:
    """seminars.ics: one VEVENT per event; an unchanged event keeps its DTSTAMP from ``previous``."""
    old = _ICS.previous(_unfold(previous)) if previous else {}
    stamped = []
    for event in events:
        key = _ICS.key(_unfold(vevent(schedule, event, stamp=now).to_ical()))
        stamped.append((event, _kept(old, event.uid, key) or now))
    return build_feed(schedule, stamped, refresh=REFRESH)


# --- the Atom feed ---------------------------------------------------------------------------------


def _iri(kind: str, text: str) -> str:
    """A stable IRI for a feed or an entry (RFC 4287 wants one that never changes): a name-based UUID."""
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, f'seminar-mailer:{kind}:{text}')}"


def _time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Announcement:
    """One entry of the Atom feed."""

    event: Event
    html: str  # the announcement as published, as HTML
    page: str  # the page's file name
    published: dt.datetime


def _title(seminar: Seminar) -> str:
    title = f"{seminar.start:%Y-%m-%d %H:%M} {seminar.tz_label}: {seminar.speaker}"
    title += f" – {seminar.title}" if seminar.title else ""
    return title + (" (cancelled)" if seminar.is_cancelled else "")


def site_base(schedule: Schedule) -> str:
    """Where the published folder is served: ``calendar_url`` without its file name, or "" (relative)."""
    url = schedule.series.calendar_url
    return url.rsplit("/", 1)[0] + "/" if url else ""


def _entry(item: Announcement, updated: dt.datetime, *, base: str) -> str:
    esc = html.escape
    link = esc(base + item.page.removesuffix(".md") + ".html")
    return (
        "  <entry>\n"
        f"    <id>{_iri('entry', item.event.uid)}</id>\n"
        f"    <title>{esc(_title(item.event.seminar), quote=False)}</title>\n"
        f"    <published>{_time(item.published)}</published>\n"
        f"    <updated>{_time(updated)}</updated>\n"
        f'    <link rel="alternate" type="text/html" href="{link}"/>\n'
        f'    <content type="html">{esc(item.html, quote=False)}</content>\n'
        "  </entry>\n"
    )


def atom_feed(
    schedule: Schedule, items: list[Announcement], *, previous: bytes | None, now: dt.datetime
) -> tuple[bytes, int]:
    """announcements.atom, newest first: an unchanged entry keeps its ``updated`` from ``previous``; a
    changed one is updated ``now``; a new one at its publication. Return it and its number of entries."""
    series = schedule.series
    base = site_base(schedule)
    old = _ATOM.previous(previous.decode("utf-8", "replace")) if previous else {}
    entries: list[tuple[dt.datetime, str]] = []
    for item in sorted(items, key=lambda i: (i.event.seminar.start, i.event.uid), reverse=True):
        ident = _iri("entry", item.event.uid)
        key = _ATOM.key(_entry(item, item.published, base=base))
        updated = _kept(old, ident, key) or (now if ident in old else item.published)
        entries.append((updated, _entry(item, updated, base=base)))
    esc = html.escape
    self_link = f'  <link rel="self" type="application/atom+xml" href="{esc(base + ATOM)}"/>\n' if base else ""
    head = (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        '<feed xmlns="http://www.w3.org/2005/Atom">\n'
        f"  <id>{_iri('feed', series.sender.ascii_addr + '/' + series.list_name)}</id>\n"
        f"  <title>{esc(series.name, quote=False)} seminars</title>\n"
        f"  <updated>{_time(max((u for u, _ in entries), default=_EPOCH))}</updated>\n"
        f'  <link rel="alternate" type="text/html" href="{esc(series.info_url)}"/>\n'
        f"{self_link}"
        f"  <author><name>{esc(series.signature, quote=False)}</name></author>\n"
        "  <generator>seminar-mailer</generator>\n"
    )
    return (head + "".join(e for _, e in entries) + "</feed>\n").encode(), len(entries)


# --- the folder ------------------------------------------------------------------------------------


@dataclass
class Folder:
    """The output folder, opened once: reads, writes by rename (``outfiles``), removals, never via links."""

    path: Path
    fd: int

    @classmethod
    def open(cls, path: Path) -> Folder:
        try:
            path.mkdir(parents=True, exist_ok=True)
            return cls(path, os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
        except OSError as err:
            raise ConfigError(f"{path}: cannot publish into it: {err.strerror}; wanted a writable folder") from err

    def read(self, name: str) -> bytes | None:
        return _read(self.fd, name)

    def remove(self, name: str) -> None:
        try:
            os.unlink(name, dir_fd=self.fd)
        except FileNotFoundError:
            pass
        except OSError as err:
            raise ConfigError(f"{self.path / name}: cannot remove it: {err.strerror}") from err

    def close(self) -> None:
        os.close(self.fd)


def _manifest(data: bytes | None) -> set[str]:
    """The names publish wrote before; only plain names of its own kinds count."""
    if data is None:
        return set()
    names = set(data.decode("utf-8", "replace").splitlines())
    return {n for n in names if _PAGE_NAME.match(n) or n in (CALENDAR, ATOM, PROGRAMME, INDEX)}


def _unique(stem: str, taken: set[str]) -> str:
    """``stem``, or ``stem`` with -2, -3 ... when two seminars of one day have the same slug."""
    n, out = 2, stem
    while out in taken:
        out, n = f"{stem}-{n}", n + 1
    taken.add(out)
    return out


def public(schedule: Schedule) -> Schedule:
    """The schedule as published: without any Zoom link when the series keeps it private (``zoom_public:
    false``); the mails are made from the schedule itself."""
    if schedule.series.zoom_public:
        return schedule
    return replace(
        schedule,
        series=replace(schedule.series, zoom=None),
        seminars=tuple(replace(s, zoom=None) for s in schedule.seminars),
    )


def _public_event(schedule: Schedule, event: Event) -> Event:
    return event if schedule.series.zoom_public else replace(event, seminar=replace(event.seminar, zoom=None))


def _by_year(past: list[tuple[Seminar, str]]) -> list[tuple[int, list[tuple[Seminar, str]]]]:
    past = sorted(past, key=lambda p: p[0].start, reverse=True)
    return [(year, list(group)) for year, group in groupby(past, key=lambda p: p[0].date.year)]


def publish(
    source: Path | Schedule,
    *,
    out: Path,
    state: Path,
    templates: Path | None,
    now: dt.datetime,
    prune: bool = False,
    site_format: str | None = None,
) -> Published:
    """Write the pages, the programme, seminars.ics and the Atom feed into ``out``; rewrite only what changed.
    ``site_format`` (html or jekyll) overrides the series' ``site``. ``source``: the programme's file, or the
    programme already loaded from it."""
    schedule = load_schedule(source) if isinstance(source, Path) else source
    tz = schedule.series.timezone
    now = now.astimezone(tz) if now.tzinfo else now.replace(tzinfo=tz)
    real_events, real_removed = calendar_events(schedule, read_memory(state, schedule.series.list_name), now=now)
    schedule = public(schedule)  # from here on only what may be published
    events = [_public_event(schedule, e) for e in real_events]
    removed = [_public_event(schedule, e) for e in real_removed]
    jekyll = (site_format or schedule.series.site) == "jekyll"
    base = site_base(schedule)

    folder = Folder.open(out)
    try:
        files: dict[str, bytes] = {}
        taken: set[str] = set()
        listed: list[tuple[Seminar, str]] = []
        announcements: list[Announcement] = []
        env = make_environment(templates, html=False)  # compiled once: 200 pages render in a fraction of a second
        site_env = None if jekyll else website.environment(templates)
        pages = [(e, True) for e in events] + ([] if prune else [(e, False) for e in removed])
        for event, in_file in pages:
            week = _week_alone(schedule, event.seminar)
            text, page = render_page(schedule, week, env=env)
            stem = _unique(page_name(week).removesuffix(".md"), taken)
            if site_env is None:
                files[stem + ".md"] = page.encode()
            else:
                html_page = website.seminar_page(
                    site_env, schedule, event, name=stem, base=base, calendar_file=CALENDAR, feed=ATOM
                )
                files[stem + ".html"] = html_page.encode()
                previous = folder.read(stem + ".ics")
                files[stem + ".ics"] = calendar_feed(schedule, [event], previous=previous, now=now)
            if in_file:  # a removed seminar keeps its page (saying it is cancelled) until --prune, nothing else
                listed.append((event.seminar, stem + ".html"))
                if (published := _announced(schedule, week)) <= now:
                    content = HTML_MARKDOWN.render(text + materials_markdown(event.seminar))
                    announcements.append(Announcement(event, content, stem + ".md", published))

        upcoming = [(s, link) for s, link in listed if s.end > now]
        past = _by_year([(s, link) for s, link in listed if s.end <= now])
        if site_env is None:
            files[PROGRAMME] = render_programme(
                schedule,
                upcoming=upcoming,
                past_years=past,
                calendar_url=schedule.series.calendar_url or CALENDAR,
                feed_url=ATOM,
                templates=templates,
            ).encode()
        else:
            files[INDEX] = website.index_page(
                site_env, schedule, upcoming=upcoming, past_years=past, calendar_file=CALENDAR, feed=ATOM
            ).encode()
        files[CALENDAR] = calendar_feed(schedule, [*events, *removed], previous=folder.read(CALENDAR), now=now)
        files[ATOM], entries = atom_feed(schedule, announcements, previous=folder.read(ATOM), now=now)

        written, unchanged, present = settle(folder, files, prune=prune)
    finally:
        folder.close()
    return Published(
        out=out,
        seminars=len(schedule.seminars),
        events=len(events) + len(removed),
        entries=entries,
        written=written,
        unchanged=unchanged,
        removed=present if prune else (),
        stale=() if prune else present,
        series=schedule.series,
        jekyll=jekyll,
        upcoming=tuple(upcoming),
        calendar=files[CALENDAR],
    )


Names = tuple[str, ...]


def settle(folder: Folder, files: dict[str, bytes], *, prune: bool) -> tuple[Names, Names, Names]:
    """Write into ``folder`` those of ``files`` whose bytes changed, and its manifest; the files publish wrote
    before and no longer makes are deleted with ``prune``, else kept (and still listed). Return the names
    written, those unchanged, and those no longer made that are still there (or were, until ``prune``)."""
    before = _manifest(folder.read(MANIFEST))
    gone = sorted(before - files.keys())
    present = [n for n in gone if folder.read(n) is not None]
    kept = [] if prune else present
    manifest = "".join(f"{n}\n" for n in sorted({*files, *kept})).encode()
    changed = {n: data for n, data in files.items() if folder.read(n) != data}
    if folder.read(MANIFEST) != manifest:
        changed[MANIFEST] = manifest
    write_files(folder.path, changed, what="the published files")
    if prune:
        for name in present:
            folder.remove(name)
    written = tuple(sorted(n for n in changed if n != MANIFEST))
    return written, tuple(sorted(n for n in files if n not in changed)), tuple(present)


def materials_markdown(seminar: Seminar) -> str:
    """The links added after the talk, as Markdown lines for the feed's entry (and nothing without any)."""
    lines = "".join(f"\n**{label}:** [{url}]({url})\n" for label, url in seminar.materials)
    return lines
