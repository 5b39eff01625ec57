"""An archive of announcement pages (the Jekyll format ``preview`` and ``publish --format jekyll`` write), or a
calendar export, read back into a programme file; from the pages' one ``preview`` writes each page again, byte for
byte.

Each page gives its week's seminars in full (title, speaker and affiliation, abstract, bio, place, date and
time, Zoom link, a cancellation, slides, video and paper) and the next ones in brief (date, speaker,
affiliation). The series is inferred from all of them: the name from the welcome line, the signature, the
information page, the usual time and zone label from "All seminars are 15:00 CET.", the place and Zoom link
most pages share, how many coming seminars a page lists. What differs from the series becomes a key of the
seminar. What the pages cannot tell (the time zone's name, the sender, the list) comes from the caller.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mailer.core.errors import Problem
from mailer.programme.edit import yaml_block, yaml_text

_LABEL = re.compile(r"^\*\*(Title|Speaker|Abstract|About the speaker|Location|Date|Zoom link|Cancelled):\*\* ?(.*)$")
_WELCOME = re.compile(r"^Welcome to (?:this week's|next week's|the coming) (.+?) seminars?\.$")
_UPCOMING = re.compile(r"^\* (\d{4}-\d\d-\d\d)(?: (\d\d:\d\d) (\S+))?: (.*)$")
_COMMON = re.compile(r"^\* All seminars are (\d\d:\d\d) (\S+)\.$")
_DATE = re.compile(r"^(\d{4}-\d\d-\d\d) (\d\d:\d\d)(?: (\S+))?$")
_LINK = re.compile(r"^\[(\S+)\]\((\S+)\)$")
_MATERIAL = re.compile(r"^\*\*(Slides|Video|Paper):\*\* \[(\S+)\]\(\S+\)$")
_INFO = re.compile(r"^More information and coming seminars: \[(\S+)\]\(\S+\)$")
_CALENDAR = re.compile(r"^Every seminar in your calendar \(subscribe once, stays up to date\): \[(\S+)\]\(\S+\)$")
_CANCELLED_ONLY = re.compile(
    r"^The (.+?) seminar on (\d{4}-\d\d-\d\d) (\d\d:\d\d) (\S+) with (.+?)(?: \(\"(.*)\"\))? is cancelled\.(?: (.*))?$"
)


@dataclass
class Talk:
    date: dt.date
    time: str | None = None
    label: str | None = None  # the zone's abbreviation the page gives
    speaker: str = "TBA"
    affiliation: str | None = None
    title: str | None = None
    abstract: str | None = None
    bio: str | None = None
    location: str | None = None
    zoom: str | None = None
    cancelled: str | None = None
    materials: dict[str, str] = field(default_factory=dict)
    full: bool = False  # from its own page (else from a list of coming seminars)
    named: bool = False  # (while reading: its Speaker line was read)
    duration: int | None = None  # minutes (a calendar says; a page does not)
    source: str = ""


@dataclass
class Archive:
    name: str | None = None
    signature: str | None = None
    info_url: str | None = None
    calendar_url: str | None = None
    common: Counter[tuple[str, str]] = field(default_factory=Counter)
    listed: list[int] = field(default_factory=list)  # how many coming seminars each page lists
    talks: dict[dt.date, Talk] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)


def _day(text: str) -> dt.date:
    """A page's date; one that does not exist (2024-02-30) raises ValueError, reported at its line."""
    return dt.date.fromisoformat(text)


def _unescape(text: str) -> str:
    """What the page's Markdown made of the YAML's text, undone (render.py's neutralise_html)."""
    return text.replace("&#123;", "{").replace("&lt;", "<")


def _speaker(text: str) -> tuple[str, str | None]:
    name, _, affiliation = text.partition(", ")
    return name.strip(), affiliation.strip() or None


def read_page(path: Path, archive: Archive) -> None:
    """Add what one announcement page says to ``archive``; what cannot be read goes to its problems."""
    lines = path.read_text(encoding="utf-8").split("\n")
    start = 0
    if lines and lines[0] == "---":
        start = next((n + 1 for n in range(1, len(lines)) if lines[n] == "---"), 0)
    current: Talk | None = None
    field_name: str | None = None
    listed = 0

    def problem(n: int, message: str) -> None:
        archive.problems.append(Problem(path, n + 1, None, message))

    def finish() -> None:
        nonlocal current
        if current is not None and current.date == dt.date.min:
            archive.problems.append(Problem(path, None, None, f"a seminar without a Date line ({current.speaker})"))
        elif current is not None:
            for key in ("abstract", "bio"):
                if (value := getattr(current, key)) is not None:
                    setattr(current, key, value.strip("\n") + "\n")
            archive.talks[current.date] = current  # (its own page says most: it wins over a listing)
        current = None

    section = "body"
    for n in range(start, len(lines)):
        line = lines[n]
        try:
            if m := _WELCOME.match(line):
                archive.name = archive.name or _unescape(m[1])
            elif m := _CANCELLED_ONLY.match(line):
                archive.name = archive.name or _unescape(m[1])
                name, affiliation = _speaker(_unescape(m[5]))
                talk = Talk(_day(m[2]), m[3], m[4], name, affiliation, m[6], full=True, source=str(path))
                talk.cancelled = _unescape(m[7]).rstrip(".") if m[7] else ""
                archive.talks[talk.date] = talk
            elif m := _LABEL.match(line):
                label, value = m[1], _unescape(m[2])
                # A seminar's block opens with its title, or with its speaker when it has no title.
                if current is None or label in ("Title", "Cancelled") or (label == "Speaker" and current.named):
                    finish()
                    current = Talk(dt.date.min, full=True, source=str(path))
                current.named = current.named or label == "Speaker"
                field_name = None
                if label == "Title":
                    current.title = value
                elif label == "Speaker":
                    current.speaker, current.affiliation = _speaker(value)
                elif label == "Abstract":
                    current.abstract, field_name = value, "abstract"
                elif label == "About the speaker":
                    current.bio, field_name = value, "bio"
                elif label == "Location":
                    current.location = value
                elif label == "Zoom link":
                    if not (link := _LINK.match(value)):
                        problem(n, f"a Zoom link that is not a [link](link): {value!r}")
                    else:
                        current.zoom = link[1]
                elif label == "Cancelled":
                    d = re.match(r"^(\d{4}-\d\d-\d\d) (\d\d:\d\d) (\S+) (.+?)(?:: (.*))?$", value)
                    if not d:
                        problem(
                            n, f"cannot read the cancelled seminar {value!r}; wanted DATE TIME ZONE SPEAKER[: reason]"
                        )
                        current = None
                        continue
                    current.date, current.time, current.label = _day(d[1]), d[2], d[3]
                    current.speaker, current.cancelled = d[4], (d[5] or "").rstrip(".")
                    finish()
                elif label == "Date":
                    if not (d := _DATE.match(value)):
                        problem(n, f"cannot read the date {value!r}; wanted YYYY-MM-DD HH:MM, with its zone or not")
                    else:
                        current.date, current.time, current.label = _day(d[1]), d[2], d[3]
            elif line == "**Upcoming seminars:**":
                finish()
                section = "upcoming"
            elif section == "upcoming" and (m := _COMMON.match(line)):
                archive.common[(m[1], m[2])] += 1
            elif section == "upcoming" and (m := _UPCOMING.match(line)):
                listed += 1
                rest = _unescape(m[4])
                cancelled = None
                if c := re.match(r"^(.*) \(cancelled(?:: (.*))?\)$", rest):
                    rest, cancelled = c[1], c[2] or ""
                name, affiliation = _speaker(rest)
                day = _day(m[1])
                if day not in archive.talks:
                    archive.talks[day] = Talk(day, m[2], m[3], name, affiliation, cancelled=cancelled, source=str(path))
            elif m := _INFO.match(line):
                finish()
                archive.info_url = archive.info_url or m[1]
                section = "end"
            elif line.startswith("-- ") and section == "end":
                archive.signature = archive.signature or line[3:]
            elif m := _MATERIAL.match(line):
                talks = [t for t in archive.talks.values() if t.source == str(path) and t.full]
                if len(talks) == 1:
                    talks[0].materials[m[1].lower()] = m[2]
                else:
                    problem(
                        n, f"a {m[1]} link on a page of {len(talks)} seminars: which one's? Add it to the programme"
                    )
            elif m := _CALENDAR.match(line):
                archive.calendar_url = archive.calendar_url or m[1]
            elif field_name is not None and current is not None and section == "body":
                setattr(current, field_name, getattr(current, field_name) + "\n" + _unescape(line))
            elif line.strip():
                problem(n, f"cannot read {line[:60]!r} here; it is left out of the programme")
        except ValueError as err:  # a date that does not exist (2024-02-30)
            problem(n, f"cannot read {line[:60]!r}: {err}; it is left out of the programme")
    finish()
    archive.listed.append(listed)


# --- a calendar export (Indico, Google, Outlook, our own seminars.ics) ----------------------------------------


_ZOOM = re.compile(r"https://[\w.-]*zoom\.us/\S+")
_DESCRIPTION_LABELS = ("Speaker:", "Speakers:", "Cancelled.", "Zoom:", "More information:")


def read_calendar(path: Path, archive: Archive, timezone: str) -> None:
    """Add one seminar per timed event of an iCalendar file: speaker and title from the summary (and the
    description's "Speaker:" line) where they can be told apart, else the summary as the title and TBA."""
    import icalendar

    zone = zoneinfo.ZoneInfo(timezone)
    try:
        calendar = icalendar.Calendar.from_ical(path.read_bytes())
    except ValueError as err:
        archive.problems.append(Problem(path, None, None, f"not an iCalendar file: {err}"))
        return
    prefix = f"{calendar.get('X-WR-CALNAME')}: " if calendar.get("X-WR-CALNAME") else ""
    archive.name = archive.name or (str(calendar["X-WR-CALNAME"]) if prefix else None)
    for n, event in enumerate(calendar.walk("VEVENT"), 1):
        start = event.decoded("DTSTART", None)
        if not isinstance(start, dt.datetime):
            archive.problems.append(
                Problem(path, None, None, f"event {n} ({event.get('SUMMARY')}): not timed, skipped")
            )
            continue
        local = start.astimezone(zone) if start.tzinfo else start.replace(tzinfo=zone)
        end = event.decoded("DTEND", None)
        minutes = int((end - start).total_seconds() // 60) if isinstance(end, dt.datetime) else None
        summary = str(event.get("SUMMARY", "")).strip().removeprefix(prefix)
        description = str(event.get("DESCRIPTION", ""))
        speaker, affiliation, title = "TBA", None, summary or None
        if said := re.search(r"^Speakers?: (.+)$", description, re.M):
            speaker, affiliation = _speaker(said[1].strip())
            title = summary.removesuffix(f" ({speaker})") if summary not in (speaker, "") else None
        elif m := re.fullmatch(r"(.+) \(([^()]+)\)", summary):
            title, speaker = m[1], m[2]
        elif m := re.fullmatch(r"([^:–]+?)(?::| –| -) (.+)", summary):
            speaker, title = m[1].strip(), m[2].strip()
        paragraphs = [p.strip() for p in description.split("\n\n") if p.strip()]
        abstract = "\n\n".join(p for p in paragraphs if not p.startswith(_DESCRIPTION_LABELS)) or None
        if info := re.search(r"^More information: (\S+)$", description, re.M):
            archive.info_url = archive.info_url or info[1]
        zoom = next((z for z in (str(event.get("URL", "")), description, str(event.get("LOCATION", "")))
                     if _ZOOM.search(z)), None)  # fmt: skip
        talk = Talk(local.date(), f"{local:%H:%M}", local.tzname(), speaker, affiliation, title, full=True)
        talk.duration, talk.source = minutes, str(path)
        talk.abstract = abstract + "\n" if abstract else None
        talk.location = str(event.get("LOCATION", "")).strip() or None
        talk.zoom = _ZOOM.search(zoom)[0] if zoom and _ZOOM.search(zoom) else None  # type: ignore[index]
        if str(event.get("STATUS", "")).upper() == "CANCELLED":
            reason = re.search(r"^Cancelled\.\s*(.*)$", description, re.M)
            talk.cancelled = reason[1].strip() if reason else ""
        archive.talks[talk.date] = talk
    archive.listed.append(4)


# --- writing the programme ----------------------------------------------------------------------------


def programme_text(
    archive: Archive, *, timezone: str, sender: str | None, list_name: str | None, jekyll: bool = True
) -> str:
    """The programme file the archive's pages come from, commented; placeholders where the pages are silent."""
    zone = zoneinfo.ZoneInfo(timezone)
    talks = sorted(archive.talks.values(), key=lambda t: t.date)
    for t in talks:  # a seminar listed as "the usual slot" takes the series' time
        if t.time is None and archive.common:
            t.time, t.label = archive.common.most_common(1)[0][0]
    times = Counter(t.time for t in talks if t.time)
    usual = archive.common.most_common(1)[0][0][0] if archive.common else (times.most_common(1) or [("15:00", 0)])[0][0]
    full = [t for t in talks if t.full and t.cancelled is None]
    location = Counter(t.location for t in full if t.location).most_common(1)
    zoom = Counter(t.zoom for t in full).most_common(1)
    series_location = location[0][0] if location else "TBA"
    durations = Counter(t.duration for t in talks if t.duration)
    usual_duration = durations.most_common(1)[0][0] if durations else 60
    series_zoom = zoom[0][0] if zoom else None
    name = archive.name or "Our seminar"
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "seminar"
    for t in talks:
        if t.time and t.label:
            try:
                start = dt.datetime.combine(t.date, dt.time.fromisoformat(t.time), tzinfo=zone)
            except ValueError:
                archive.problems.append(Problem(t.source, None, None, f"{t.date}: the time {t.time} does not exist"))
                continue
            if start.tzname() != t.label:
                said = f"the page says {t.label}: is --timezone right?"
                message = f"{t.date} {t.time} is {start.tzname()} in {timezone}, {said}"
                archive.problems.append(Problem(t.source, None, None, message))
    source = "announcement pages" if jekyll else "a calendar"
    out = [
        f"# The programme, imported from {source} by `seminar-mailer import`. Check it:",
        "#   seminar-mailer check        (and preview --date a week of the archive: the same page again)",
        '# Quote times ("15:00"): unquoted, YAML reads 15:00 as the number 900.',
        "series:",
        f"  name: {yaml_text(name)}",
        f"  signature: {yaml_text(archive.signature or 'The ' + name + ' Team')}",
        f"  timezone: {timezone}",
        f'  time: "{usual}"',
        f"  location: {yaml_text(series_location)}",
    ]
    if usual_duration != 60:
        out.append(f"  duration: {usual_duration}")
    if series_zoom:
        out.append(f"  zoom: {series_zoom}")
    out.append(f"  info_url: {archive.info_url or 'https://example.org/seminars'}")
    if archive.calendar_url:
        out.append(f"  calendar_url: {archive.calendar_url}")
    if sender:
        out.append(f"  sender: {yaml_text(sender)}")
    else:
        out.append(f"  sender: {yaml_text(name + ' <seminar@example.org>')}   # the pages do not say: check reports it")
    out.append(f"  list: {list_name or slug}")
    out.append(f"  upcoming: {max(archive.listed, default=4)}")
    if jekyll:
        out.append("  site: jekyll               # the pages came from a Jekyll site: publish writes them the same way")
    out.append("")
    out.append("seminars:")
    for t in talks:
        item = [f"  - date: {t.date.isoformat()}", f"    speaker: {yaml_text(t.speaker)}"]
        if t.affiliation:
            item.append(f"    affiliation: {yaml_text(t.affiliation)}")
        if t.title:
            item.append(f"    title: {yaml_text(t.title)}")
        if t.time and t.time != usual:
            item.append(f'    time: "{t.time}"')
        if t.duration and t.duration != usual_duration:
            item.append(f"    duration: {t.duration}")
        if t.full and t.location and t.location != series_location:
            item.append(f"    location: {yaml_text(t.location)}")
        if t.full and t.cancelled is None and t.zoom != series_zoom and t.zoom:
            item.append(f"    zoom: {t.zoom}")
        if t.abstract:
            item.append(f"    abstract: {yaml_block(t.abstract, '      ')}".rstrip("\n"))
        if t.bio:
            item.append(f"    bio: {yaml_block(t.bio, '      ')}".rstrip("\n"))
        for key in ("slides", "video", "paper"):
            if key in t.materials:
                item.append(f"    {key}: {t.materials[key]}")
        if t.cancelled is not None:
            item.append(f"    cancelled: {yaml_text(t.cancelled) if t.cancelled else 'true'}")
        out.append("\n".join(item))
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"
