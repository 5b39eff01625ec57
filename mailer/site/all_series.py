"""``publish`` in a project of several series: each series into a folder of its own, named by its list,
exactly as that series alone is published (its pages, seminars.ics and announcements.atom, in its own
``site`` format), and beside those folders:

- ``index.html``: every series with its next seminar, a link to its programme and to its calendar
  (``site-all-series.html.j2``, the same look and rules as the series' pages);
- ``seminars.ics``: one calendar of every series' seminars, the very VEVENTs of the series' own feeds
  (same UID, SEQUENCE and DTSTAMP), so subscribing to it and to one series' feed gives one event each.

Every programme is read before anything is written: one invalid programme stops them all. The two files
are written only when their bytes change, and listed in the folder's manifest like a series' own files.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mailer.compose.invite import feed_calendar
from mailer.compose.render import calendar_links, render_template, safe_for_html
from mailer.core.errors import ConfigError, MailerError, Problem, ScheduleError
from mailer.programme.digest import load_digest
from mailer.programme.model import Schedule, Seminar, Series
from mailer.programme.schedule import load_schedule
from mailer.site import website
from mailer.site.publish import ATOM, CALENDAR, MANIFEST, PROGRAMME, REFRESH, Folder, Published, publish, settle
from mailer.site.website import INDEX, LANG

TEMPLATE = "site-all-series.html.j2"
UNNAMED = "Seminars"  # the index's and the calendar's name when no digest names the department
_VEVENT = re.compile(rb"BEGIN:VEVENT\r\n.*?END:VEVENT\r\n", re.S)


@dataclass(frozen=True, slots=True)
class Listed:
    """One series as the index shows it; every link relative to the index."""

    series: Series
    folder: str  # its list name
    home: str  # its programme: LIST/index.html, or the page Jekyll makes of LIST/programme.md
    calendar_file: str
    feed: str
    calendar: dict[str, str] | None  # subscription links, with the series' calendar_url
    next: Seminar | None  # the next seminar that takes place
    next_page: str | None


@dataclass(frozen=True, slots=True)
class AllPublished:
    """What a publish of several series did: each series' own, then the index's folder (index.html, seminars.ics)."""

    series: tuple[Published, ...]
    index: Published


def department(digests: Sequence[Path]) -> str:
    """The name of the project's seminars together: its digest's (which gathers them into one mail), when
    it has exactly one that loads; else "Seminars"."""
    names = []
    for path in digests:
        try:
            names.append(load_digest(path).name)
        except MailerError:
            continue
    return names[0] if len(names) == 1 else UNNAMED


def load_every_series(paths: Sequence[Path]) -> list[Schedule]:
    """Every series' programme, read before any is published: the problems of all of them in one error."""
    loaded: list[Schedule] = []
    problems: list[Problem] = []
    for path in paths:
        try:
            loaded.append(load_schedule(path))
        except ScheduleError as err:
            problems.extend(err.problems or (Problem(path, 1, 1, str(err)),))
    if problems:
        raise ScheduleError.from_problems(problems)
    folders: dict[str, Path] = {}
    for path, schedule in zip(paths, loaded, strict=True):
        name = schedule.series.list_name
        if name in (INDEX, CALENDAR, MANIFEST):
            raise ConfigError(f"{path}: list: {name} is the name of a file of the index; wanted another list name")
        if name in folders:
            raise ConfigError(f"{path} and {folders[name]} both have list: {name}; wanted a list of its own for each")
        folders[name] = path
    return loaded


def publish_all(
    paths: Sequence[Path],
    *,
    out: Path,
    state: Path,
    templates: Path | None,
    now: dt.datetime,
    prune: bool = False,
    site_format: str | None = None,
    name: str = UNNAMED,
) -> AllPublished:
    """Publish each series of ``paths`` into ``out``/LIST/, then the index and the calendar of all into ``out``."""
    schedules = load_every_series(paths)
    done = tuple(
        publish(
            schedule,
            out=out / schedule.series.list_name,
            state=state,
            templates=templates,
            now=now,
            prune=prune,
            site_format=site_format,
        )
        for schedule in schedules
    )
    listed = [_listed(p) for p in done]
    files = {
        INDEX: index_page(listed, name=name, templates=templates, calendar=_combined_url(listed)).encode(),
        CALENDAR: combined_calendar(name, [p.calendar for p in done]),
    }
    folder = Folder.open(out)
    try:
        written, unchanged, present = settle(folder, files, prune=prune)
    finally:
        folder.close()
    index = Published(
        out=out,
        seminars=sum(p.seminars for p in done),
        events=sum(p.events for p in done),
        entries=0,
        written=written,
        unchanged=unchanged,
        removed=present if prune else (),
        stale=() if prune else present,
        calendar=files[CALENDAR],
    )
    return AllPublished(done, index)


def combined_calendar(name: str, feeds: Sequence[bytes]) -> bytes:
    """One calendar named ``name`` holding every VEVENT of ``feeds`` as each feed has it, byte for byte."""
    head = bytes(feed_calendar(name, refresh=REFRESH).to_ical())
    events = b"".join(b"".join(_VEVENT.findall(feed)) for feed in feeds)
    end = b"END:VCALENDAR\r\n"
    assert head.endswith(end)
    return head.removesuffix(end) + events + end


def _listed(done: Published) -> Listed:
    assert done.series is not None
    folder = done.series.list_name
    following = [(s, page) for s, page in done.upcoming if not s.is_cancelled]
    seminar, page = following[0] if following else (None, None)
    home = PROGRAMME.removesuffix(".md") + ".html" if done.jekyll else INDEX
    return Listed(
        series=done.series,
        folder=folder,
        home=f"{folder}/{home}",
        calendar_file=f"{folder}/{CALENDAR}",
        feed=f"{folder}/{ATOM}",
        calendar=calendar_links(done.series),
        next=safe_for_html(seminar) if seminar is not None else None,
        next_page=f"{folder}/{page}" if page is not None else None,
    )


def _combined_url(listed: Sequence[Listed]) -> str | None:
    """Where the combined seminars.ics is served, when every series' calendar_url says it is served from
    BASE/LIST/seminars.ics with one BASE: BASE/seminars.ics; else None (the index links the file itself)."""
    bases = set()
    for item in listed:
        url = item.series.calendar_url or ""
        if not url.endswith(f"/{item.calendar_file}"):
            return None
        bases.add(url.removesuffix(item.calendar_file))
    return f"{bases.pop()}{CALENDAR}" if len(bases) == 1 else None


def index_page(listed: Sequence[Listed], *, name: str, templates: Path | None, calendar: str | None) -> str:
    """index.html of every series: ``name`` as its title, each series with its next seminar and its links."""
    links = None
    if calendar is not None:
        webcal = "webcal://" + calendar.split("://", 1)[1]
        links = {"url": calendar, "webcal": webcal}
    context = {
        "lang": LANG,
        "name": name,
        "listed": list(listed),
        "calendar_file": CALENDAR,
        "calendar": links,
        "noindex": any(item.series.noindex for item in listed),
    }
    return render_template(website.environment(templates), TEMPLATE, context)
