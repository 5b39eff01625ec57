"""Load ``seminars.yaml`` into frozen values (model.py), reporting every problem with its line and column."""

from __future__ import annotations

import datetime as dt
import difflib
import re
import zoneinfo
from pathlib import Path
from urllib.parse import urlsplit

from mailer.core.address import Address, parse_address
from mailer.core.errors import Problem, ScheduleError
from mailer.core.links import normalise_url
from mailer.core.zones import zone_named
from mailer.programme import yamlfile
from mailer.programme.keys import APPROVALS, SEMINAR_KEYS, SERIES_KEYS, SITE_FORMATS, TOP_KEYS, Key
from mailer.programme.model import WEEKDAYS, Announce, Reminder, Schedule, Seminar, Series
from mailer.programme.yamlfile import Mapping, Node, Scalar, Sequence, describe

# --- field readers: each returns the value or None after recording a problem -------------------

YEARS = (1970, 2999)  # dates outside are typos; year 9999 would overflow the week arithmetic
LIST_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]")


class Reader:
    """Collects problems while reading typed values out of positioned nodes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.problems: list[Problem] = []

    def add(self, node: Node, message: str) -> None:
        self.problems.append(Problem(self.path, node.line, node.column, message))

    def mapping(self, node: Node, what: str, *, keys: dict[str, Key]) -> Mapping | None:
        if not isinstance(node, Mapping):
            self.add(node, f"{what} should be a mapping of keys, got {describe(node)}")
            return None
        known = tuple(keys)
        required = tuple(name for name, key in keys.items() if key.required)
        for key, key_node in node.keys.items():
            if key not in known:
                guess = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                hint = f"did you mean '{guess[0]}'?" if guess else f"wanted one of: {', '.join(known)}"
                if key == "password":
                    hint = "SMTP credentials come from the environment (SMTP_PASSWORD), never the schedule"
                self.add(key_node, f"unknown key '{key}' in {what}; {hint}")
        for key in required:
            if key not in node.values:
                self.add(node, f"{what} is missing the required key '{key}'")
        return node

    def text(self, node: Node | None, key: str, *, multiline: bool = False) -> str | None:
        if node is None:
            return None
        if not isinstance(node, Scalar) or not isinstance(node.value, str):
            quote = " (quote it to make it text)" if isinstance(node, Scalar) and node.value is not None else ""
            self.add(node, f"'{key}' should be text, got {describe(node)}{quote}")
            return None
        value = node.value.strip() if not multiline else node.value.rstrip() + "\n"
        if not value.strip():
            self.add(node, f"'{key}' is empty; wanted some text")
            return None
        bad = CONTROL_RE.search(value.replace("\n", "") if multiline else value)
        if bad:
            kind = "a line break" if bad.group() in "\r\n\u2028\u2029\x85" else f"the control character {bad.group()!r}"
            self.add(node, f"'{key}' contains {kind}; wanted a single line of plain text")
            return None
        return value

    def matching(self, node: Node | None, key: str, pattern: re.Pattern[str], wanted: str) -> str | None:
        """Text that must match ``pattern``; else a problem saying what it is for and what is wanted."""
        value = self.text(node, key)
        if value is not None and node is not None and not pattern.match(value):
            self.add(node, f"'{key}' {value!r} {wanted}")
            return None
        return value

    def integer(self, node: Node | None, key: str, keys: dict[str, Key]) -> int | None:
        if node is None:
            return None
        low, high = keys[key].low, keys[key].high
        if not isinstance(node, Scalar) or isinstance(node.value, bool) or not isinstance(node.value, int):
            self.add(node, f"'{key}' should be a whole number, got {describe(node)}")
            return None
        if not low <= node.value <= high:
            self.add(node, f"'{key}' is {node.value}; wanted a number from {low} to {high}")
            return None
        return node.value

    def clock(self, node: Node | None, key: str) -> dt.time | None:
        if node is None:
            return None
        if (
            isinstance(node, Scalar)
            and isinstance(node.value, int)
            and not isinstance(node.value, bool)
            and re.fullmatch(r"\d{1,2}:\d{2}", node.raw)
            and not node.quoted
        ):
            self.add(
                node,
                f"'{key}: {node.raw}' is unquoted, so YAML 1.1 reads it as the number "
                f'{node.value} (base 60); wanted it quoted: {key}: "{node.raw}"',
            )
            return None
        raw = self.text(node, key)
        if raw is None:
            return None
        match = re.fullmatch(r"(\d{1,2}):(\d{2})", raw)
        if not match or int(match[1]) > 23 or int(match[2]) > 59:
            self.add(node, f"'{key}' is {raw!r}; wanted a 24-hour time such as \"15:00\"")
            return None
        return dt.time(int(match[1]), int(match[2]))

    def day(self, node: Node | None, key: str) -> dt.date | None:
        if node is None:
            return None
        if isinstance(node, Scalar) and node.error is not None:
            self.add(node, f"'{key}' {node.raw} is not a real date ({node.error}); wanted YYYY-MM-DD")
            return None
        value: dt.date | None = None
        if isinstance(node, Scalar) and type(node.value) is dt.date:
            value = node.value
        elif isinstance(node, Scalar) and isinstance(node.value, str):
            try:
                value = dt.date.fromisoformat(node.value)
            except ValueError:
                pass
        if value is None:
            self.add(node, f"'{key}' should be a date written YYYY-MM-DD, got {describe(node)}")
        elif not YEARS[0] <= value.year <= YEARS[1]:
            self.add(
                node,
                f"'{key}' {value.isoformat()} is in the year {value.year}; wanted a year from {YEARS[0]} to {YEARS[1]}",
            )
            value = None
        return value

    def url(self, node: Node | None, key: str, *, unsubscribe: bool = False) -> str | None:
        raw = self.text(node, key)
        if raw is None or node is None:
            return None
        try:
            return normalise_url(raw, https_only=unsubscribe, for_list_header=unsubscribe)
        except ValueError as err:
            wanted = "https URL" if unsubscribe else "http(s) URL"
            self.add(
                node,
                f"'{key}' {raw!r} is not a valid web address: {err}; wanted an absolute "
                f"{wanted} such as https://example.org/page (percent-encode special characters)",
            )
            return None

    def address(self, node: Node | None, key: str) -> Address | None:
        raw = self.text(node, key)
        if raw is None or node is None:
            return None
        address = parse_address(raw)
        if address is None:
            self.add(
                node,
                f"'{key}' {raw!r} is not a valid email address; wanted name@example.org or Name <name@example.org>",
            )
        elif address.needs_smtputf8:
            # From, Reply-To and List-Unsubscribe must reach every subscriber's server, SMTPUTF8 or not.
            self.add(
                node,
                f"'{key}' {raw!r} has non-ASCII letters before the @, which a mail header can carry only "
                "to servers that support SMTPUTF8; wanted an ASCII address (the name may be in any script)",
            )
            return None
        return address

    def zone(self, node: Node | None, key: str) -> zoneinfo.ZoneInfo | None:
        raw = self.text(node, key)
        if raw is None or node is None:
            return None
        if (found := zone_named(raw)) is not None:
            return found
        guess = difflib.get_close_matches(raw, sorted(zoneinfo.available_timezones()), n=1)
        hint = f"did you mean '{guess[0]}'?" if guess else "wanted an IANA name such as Europe/Stockholm"
        self.add(node, f"unknown time zone {raw[:80]!r}; {hint}")
        return None


ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}$")  # (@ and +: the ids status shows)


def _announce(r: Reader, node: Node | None, key: str = "announce") -> Announce | bool | None:
    """``Monday 08:00`` (or ``mon 08:00``, or ``"08:00"`` for Monday); False after a problem."""
    if node is None:
        return None
    raw = node.raw if isinstance(node, Scalar) else ""
    match = re.fullmatch(r"\s*(?:([A-Za-z]+)\s+)?(\d{1,2}):(\d{2})\s*", raw)
    day = match and (match[1] or "monday").lower()
    days = [d for d in WEEKDAYS if day and len(day) >= 3 and d.startswith(day)]
    if match and len(days) == 1 and int(match[2]) < 24 and int(match[3]) < 60:
        return Announce(WEEKDAYS.index(days[0]), dt.time(int(match[2]), int(match[3])))
    r.add(
        node,
        f"'{key}' is {raw!r}; wanted a weekday and a 24-hour time, such as \"Monday 08:00\" "
        f"(the week's {'digest' if key == 'send' else 'announcement'} goes out at the first send from then on)",
    )
    return False


def _reminder(r: Reader, node: Node | None) -> Reminder | bool | None:
    """``"09:00"`` (on the day) or ``2h``/``90m`` (before the start); False after a problem."""
    if node is None:
        return None
    raw = node.raw if isinstance(node, Scalar) else ""
    if match := re.fullmatch(r"\s*(\d{1,3})\s*(h|m|min)\s*", raw):
        minutes = int(match[1]) * (60 if match[2] == "h" else 1)
        if 1 <= minutes <= 7 * 24 * 60:
            return Reminder(at=None, before=minutes)
    elif re.fullmatch(r"\d{1,2}:\d{2}", raw.strip()):
        at = r.clock(node, "reminder")
        return Reminder(at=at, before=None) if at is not None else False
    r.add(
        node,
        f"'reminder' is {raw!r}; wanted a time on the seminar's day such as \"09:00\", "
        "or a span before the start such as 2h or 90m (at most a week)",
    )
    return False


def list_name_at(r: Reader, node: Node | None) -> str | None:
    """A programme's ``list:`` (a series' or a digest's), checked: the name of its file in recipients/."""
    return r.matching(
        node,
        "list",
        LIST_NAME_RE,
        "names a file in recipients/; wanted lower-case letters, digits, '.', '_' or '-', such as learning-machines",
    )


def _series(r: Reader, node: Node) -> Series | None:
    m = r.mapping(node, "series", keys=SERIES_KEYS)
    if m is None:
        return None
    v = m.values.get
    list_name = list_name_at(r, v("list"))
    fields = dict(
        name=r.text(v("name"), "name"),
        signature=r.text(v("signature"), "signature"),
        timezone=r.zone(v("timezone"), "timezone"),
        time=r.clock(v("time"), "time"),
        duration=r.integer(v("duration"), "duration", SERIES_KEYS) if "duration" in m.values else 60,
        location=r.text(v("location"), "location"),
        zoom=r.url(v("zoom"), "zoom"),
        info_url=r.url(v("info_url"), "info_url"),
        sender=r.address(v("sender"), "sender"),
        list_name=list_name,
        upcoming=r.integer(v("upcoming"), "upcoming", SERIES_KEYS) if "upcoming" in m.values else 4,
        reply_to=r.address(v("reply_to"), "reply_to"),
        unsubscribe_url=r.url(v("unsubscribe_url"), "unsubscribe_url", unsubscribe=True),
        unsubscribe_email=r.address(v("unsubscribe_email"), "unsubscribe_email"),
        reminder=_reminder(r, v("reminder")),
        announce=_announce(r, v("announce")),
        service_url=_service_url(r, v("service_url")),
        calendar_url=r.url(v("calendar_url"), "calendar_url"),
        site=_site(r, v("site")),
        zoom_public=_flag(r, v("zoom_public"), "zoom_public", "keep the Zoom link out of the published files", True),
        noindex=_flag(r, v("noindex"), "noindex", "ask search engines not to index the pages", False),
        followup=_flag(r, v("followup"), "followup", "mail the slides and video after the talk", False),
        approval=_approval(r, v("approval")),
        organisers=_organisers(r, v("organisers")),
    )
    optional = {
        "zoom",
        "reply_to",
        "unsubscribe_url",
        "unsubscribe_email",
        "reminder",
        "service_url",
        "announce",
        "calendar_url",
    }
    if (
        False in (fields["reminder"], fields["announce"])
        or "bad" in (fields["zoom_public"], fields["noindex"], fields["followup"], fields["approval"])
        or fields["organisers"] is None
        or any(val is None for key, val in fields.items() if key not in optional)
    ):
        return None
    return Series(**fields)  # type: ignore[arg-type]


def _site(r: Reader, node: Node | None) -> str | None:
    """``site: html`` (the default) or ``site: jekyll``; None after a problem."""
    if node is None:
        return "html"
    raw = node.value if isinstance(node, Scalar) else None
    if isinstance(raw, str) and raw.strip().lower() in SITE_FORMATS:
        return raw.strip().lower()
    r.add(
        node,
        f"'site' is {describe(node)}; wanted html (publish writes a complete website) "
        "or jekyll (Markdown pages with front matter, for a site Jekyll builds)",
    )
    return None


def _organisers(r: Reader, node: Node | None) -> tuple[Address, ...] | None:
    """One address or a list of them; () when absent; None after a problem."""
    if node is None:
        return ()
    items = node.items if isinstance(node, Sequence) else [node]
    if not items:
        r.add(node, "'organisers' is an empty list; wanted an address, or a list of them")
        return None
    found = [r.address(item, "organisers") for item in items]
    return None if None in found else tuple(a for a in found if a is not None)


def _approval(r: Reader, node: Node | None) -> bool | str:
    """``approval: required`` (True) or ``none`` (the default, False); "bad" after a problem."""
    if node is None:
        return False
    raw = node.value if isinstance(node, Scalar) else None
    if isinstance(raw, str) and raw.strip().lower() in APPROVALS:
        return raw.strip().lower() == "required"
    r.add(
        node,
        f"'approval' is {describe(node)}; wanted required (nothing goes out before `seminar-mailer approve`) or none",
    )
    return "bad"


def _flag(r: Reader, node: Node | None, key: str, what: str, default: bool) -> bool | str:
    """A true/false key; its default when absent; "bad" after a problem."""
    if node is None:
        return default
    if isinstance(node, Scalar) and isinstance(node.value, bool):
        return node.value
    r.add(node, f"'{key}' should be true or false ({'true' if not default else 'false'}: {what}), got {describe(node)}")
    return "bad"


def _service_url(r: Reader, node: Node | None) -> str | None:
    """https (plain http only to this machine, for trying it out); no query or fragment."""
    url = r.url(node, "service_url")
    if url is None or node is None:
        return None
    parts = urlsplit(url)
    local = parts.hostname in ("localhost", "127.0.0.1", "::1")
    if (parts.scheme != "https" and not local) or parts.query or parts.fragment:
        r.add(
            node,
            f"'service_url' {url!r} must be the https address where `seminar-mailer serve` is reached, "
            "without ? or #; wanted e.g. https://seminars.example.org/lm",
        )
        return None
    return url.rstrip("/")


def _cancelled(r: Reader, node: Node | None) -> str | bool | None:
    """Return None (not cancelled), a reason ('' for plain true), or False after a problem."""
    if node is None or (isinstance(node, Scalar) and node.value is False):
        return None
    if isinstance(node, Scalar) and node.value is True:
        return ""
    reason = r.text(node, "cancelled")
    return reason if reason is not None else False


def _notify(r: Reader, node: Node | None) -> bool | str | None:
    """``notify: true|false`` as a bool; None when absent; "bad" after a problem."""
    if node is None:
        return None
    if isinstance(node, Scalar) and isinstance(node.value, bool):
        return node.value
    r.add(node, "'notify' must be true (mail even a spelling fix) or false (mail no edit of this seminar)")
    return "bad"


def _seminar(r: Reader, node: Node, series: Series | None) -> Seminar | None:
    m = r.mapping(node, "a seminar", keys=SEMINAR_KEYS)
    if m is None:
        return None
    v = m.values.get
    day = r.day(v("date"), "date")
    time = r.clock(v("time"), "time") if "time" in m.values else (series.time if series else None)
    duration = (
        r.integer(v("duration"), "duration", SEMINAR_KEYS)
        if "duration" in m.values
        else (series.duration if series else None)
    )
    speaker = r.text(v("speaker"), "speaker")
    optional_text = {k: r.text(v(k), k) for k in ("affiliation", "title")}
    markdown = {k: r.text(v(k), k, multiline=True) for k in ("abstract", "bio")}
    location = r.text(v("location"), "location") if "location" in m.values else (series.location if series else None)
    zoom = r.url(v("zoom"), "zoom") if "zoom" in m.values else (series.zoom if series else None)
    cancelled = _cancelled(r, v("cancelled"))
    pinned = r.matching(
        v("id"),
        "id",
        ID_RE,
        "names this seminar for good; wanted letters, digits, '.', '_', '-', '@' or '+', such as 2024-01-belongie",
    )
    notify = _notify(r, v("notify"))
    draft = _flag(r, v("draft"), "draft", "keep it out of every mail and page until removed", False)
    materials = {k: r.url(v(k), k) for k in ("slides", "video", "paper")}
    bad_material = any(v(k) is not None and url is None for k, url in materials.items())
    if None in (day, time, duration, speaker, location) or series is None or cancelled is False or notify == "bad":
        return None
    if bad_material or draft == "bad":
        return None
    assert day is not None and time is not None and duration is not None and speaker and location
    start = local_start(day, time, series.timezone)
    if isinstance(start, str):
        r.add(m.values.get("time") or m.values["date"], start)
        return None
    return Seminar(
        date=day,
        start=start,
        duration=duration,
        speaker=speaker,
        affiliation=optional_text["affiliation"],
        title=optional_text["title"],
        abstract=markdown["abstract"],
        bio=markdown["bio"],
        location=location,
        zoom=zoom,
        cancelled=cancelled if isinstance(cancelled, str) else None,
        line=m.line,
        id=pinned,
        notify=notify if isinstance(notify, bool) else None,
        draft=draft is True,
        **materials,
    )


def _wall(moment: dt.datetime, zone: zoneinfo.ZoneInfo) -> dt.datetime:
    """The clock on the wall in ``zone`` at ``moment`` (via UTC: astimezone to its own zone is a no-op)."""
    return moment.astimezone(dt.UTC).astimezone(zone).replace(tzinfo=None)


def local_start(day: dt.date, time: dt.time, zone: zoneinfo.ZoneInfo) -> dt.datetime | str:
    """The aware start of a seminar, or why that local time does not exist.

    A time that happens twice (when clocks go back) is taken at its first occurrence, still in summer
    time: fold=0, the rule RFC 5545 (3.3.5) gives calendars. A time skipped when clocks go forward is
    an error naming the nearest valid times on either side of the gap.
    """
    start = dt.datetime.combine(day, time, tzinfo=zone)
    if _wall(start, zone) == start.replace(tzinfo=None):
        return start
    # In the gap, fold=0 reads the time with the offset before the change, fold=1 with the one after:
    # the change itself lies between the two readings; find it to the minute.
    low = start.replace(fold=1).astimezone(dt.UTC)
    high = start.astimezone(dt.UTC)
    low, high = min(low, high), max(low, high)
    before = low.astimezone(zone).utcoffset()
    while high - low > dt.timedelta(minutes=1):
        mid = low + (high - low) / 2
        if mid.astimezone(zone).utcoffset() == before:
            low = mid
        else:
            high = mid
    assert before is not None
    last, first, jump = _wall(low, zone), _wall(high, zone), (high + before).replace(tzinfo=None)

    def show(wall: dt.datetime) -> str:
        return f"{wall:%H:%M}" if wall.date() == day else f"{wall:%Y-%m-%d %H:%M}"

    return (
        f"{day.isoformat()} {time:%H:%M} does not exist in {zone.key}: the clocks jump from "
        f"{show(jump)} to {show(first)} that night; wanted a time outside the gap, "
        f'the nearest being "{show(last)}" or "{show(first)}"'
    )


def load_schedule(path: Path) -> Schedule:
    """Read and validate ``path``; raise ScheduleError listing every problem found."""
    tree, problems = yamlfile.load(path)
    r = Reader(path)
    r.problems.extend(problems)
    root = r.mapping(tree, "the schedule", keys=TOP_KEYS)
    series = _series(r, root.values["series"]) if root and "series" in root.values else None
    seminars: list[Seminar] = []
    node = root.values.get("seminars") if root else None
    if node is not None and not isinstance(node, Sequence):
        r.add(node, f"'seminars' should be a list (each entry starting with '- date:'), got {describe(node)}")
    elif isinstance(node, Sequence):
        seen: dict[dt.datetime, Seminar] = {}
        ids: dict[str, Seminar] = {}
        for item in node.items:
            seminar = _seminar(r, item, series)
            if seminar is None:
                continue
            if (first := seen.get(seminar.start)) is not None:
                date_node = item.values["date"] if isinstance(item, Mapping) else item
                r.add(
                    date_node,
                    f"two seminars at {seminar.start:%Y-%m-%d %H:%M}: this one and the one at "
                    f"line {first.line}; wanted one seminar per date and time",
                )
                continue
            if seminar.id is not None and (other := ids.get(seminar.id)) is not None:
                assert isinstance(item, Mapping)
                r.add(
                    item.values["id"],
                    f"'id' {seminar.id!r} is also the id of the seminar at line {other.line}; wanted each id once",
                )
                continue
            if seminar.id is not None:
                ids[seminar.id] = seminar
            seen[seminar.start] = seminar
            seminars.append(seminar)
    if r.problems:
        r.problems.sort(key=lambda p: (p.line or 0, p.column or 0))
        raise ScheduleError.from_problems(r.problems)
    assert series is not None
    ordered = sorted(seminars, key=lambda s: s.start)
    return Schedule(
        path=path,
        series=series,
        seminars=tuple(s for s in ordered if not s.draft),
        drafts=tuple(s for s in ordered if s.draft),
    )
