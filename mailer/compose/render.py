"""Turn a week's seminars into subject, plain text, HTML (MJML + inlined CSS) and the web page.

Rendering is pure and offline: the templates see only the domain objects, Markdown is rendered with
raw HTML escaped, MJML is compiled without web fonts or includes, and the inliner never fetches.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import importlib.resources
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import jinja2
from markupsafe import Markup

from mailer.core.errors import TemplateError
from mailer.core.links import HTML_MARKDOWN, sanitise
from mailer.programme.model import Schedule, Seminar, Series, Week, week_of

if TYPE_CHECKING:
    from mailer.programme.revisions import Change

# Shipped inside the package (a wheel carries them as mailer/templates/*.j2); in a checkout,
# mailer/templates links to templates/email, their source. A plain folder either way (no zip imports).
BUILTIN_TEMPLATES = Path(str(importlib.resources.files("mailer") / "templates"))

SUBJECT = "subject.txt.j2"
TEXT = "announcement.txt.j2"
PAGE = "page.md.j2"
FOOTER = "footer.txt.j2"
MJML = "announcement.mjml.j2"
CHANGE_SUBJECT = "change_subject.txt.j2"
CHANGE_TEXT = "change.txt.j2"
CHANGE_MJML = "change.mjml.j2"
PROGRAMME = "programme.md.j2"
FOLLOWUP_SUBJECT = "followup_subject.txt.j2"
FOLLOWUP_TEXT = "followup.txt.j2"
FOLLOWUP_MJML = "followup.mjml.j2"
DIGEST_SUBJECT = "digest_subject.txt.j2"
DIGEST_TEXT = "digest.txt.j2"
DIGEST_MJML = "digest.mjml.j2"

# The link policy (mailer/core/links.py) is one for all outputs: the HTML renders Markdown with raw HTML
# off and only http(s)/mailto targets, and every text that reaches Markdown (text part, web page)
# has any other link escaped by ``sanitise`` before a template sees it.


@dataclass(frozen=True, slots=True)
class Rendered:
    """One announcement, rendered once and shared by every recipient."""

    subject: str
    text: str  # the announcement as published: identical to the web page's body
    email_text: str  # the text part of the email: ``text`` and the list footer
    html: str  # the HTML part of the email, footer included
    page: str
    page_name: str  # YYYY-MM-DD-<slug>.md


def _markdown(text: str | None) -> Markup:
    # Safe: the parser runs with html=False, so every "<" from the YAML arrives escaped.
    return Markup(HTML_MARKDOWN.render(text or ""))  # noqa: S704


def _neutralise_html(text: str) -> str:
    """Keep text for a Markdown web page from opening HTML tags (Jekyll passes raw HTML), and from
    running Liquid (``{{``, ``{%``) or adding kramdown attributes (``{:``) when Jekyll builds the page."""
    text = text.replace("<", "&lt;")
    for opening in ("{{", "{%", "{:"):
        text = text.replace(opening, "&#123;" + opening[1:])
    return text


def _one_line(text: str) -> str:
    return " ".join(text.split())


def make_environment(templates: Path | None, *, html: bool, builtin: Path = BUILTIN_TEMPLATES) -> jinja2.Environment:
    """The Jinja environment: user templates first, built-ins (``builtin``) second, StrictUndefined.

    ``html=True`` autoescapes everything (``select_autoescape()`` would miss ``.mjml``). Built once per
    folder and set of file names there (a template added to the folder is found at once; Jinja reloads an
    edited one by its mtime): compiling the templates again for every message cost more than MJML.
    """
    names = frozenset(os.listdir(templates)) if templates is not None and templates.is_dir() else frozenset()
    return _environment(templates, names, html=html, builtin=builtin)


@functools.lru_cache(maxsize=32)
def _environment(templates: Path | None, names: frozenset[str], *, html: bool, builtin: Path) -> jinja2.Environment:
    search = [str(p) for p in (templates, builtin) if p is not None]
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(search),
        undefined=jinja2.StrictUndefined,
        autoescape=html,  # noqa: S701  (False only for text and subject, which are never HTML)
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["markdown"] = _markdown
    env.filters["neutralise_html"] = _neutralise_html
    env.filters["one_line"] = _one_line
    env.filters["sentence"] = sentence
    env.globals["manage_link"] = MANAGE_LINK
    return env


def manage_page_linked(schedule: Schedule) -> bool:
    """Whether the footer links each reader to the manage page: for a series with a service_url in a project of
    several lists (series, digests), where a reader has choices to make; a project of one series mails exactly
    as it did before the page existed (its readers' zones can still come from the CSV's timezone column)."""
    from mailer.programme.project import project_lists

    return bool(schedule.series.service_url) and len(project_lists(schedule.path)) > 1


# Where each subscriber's own link to the manage page goes (the footer, with the series' service_url): a URL of a
# reserved domain (RFC 2606) that message.py replaces per recipient, as it puts each one's ATTENDEE line.
MANAGE_LINK = "https://manage.invalid/seminar-mailer"


_SEMINAR_TEXT = ("speaker", "affiliation", "title", "location", "cancelled")


def _safe_seminar(seminar: Seminar, *, all_fields: bool) -> Seminar:
    """The seminar with its Markdown fields (and, for Markdown outputs, every text field) link-safe."""
    names = ("abstract", "bio", *(_SEMINAR_TEXT if all_fields else ()))
    changes: dict[str, Any] = {
        n: sanitise(v) for n in names if isinstance(v := getattr(seminar, n), str) and sanitise(v) != v
    }
    return dataclasses.replace(seminar, **changes) if changes else seminar


def safe_for_html(seminar: Seminar) -> Seminar:
    """The seminar as an autoescaping HTML template needs it: its Markdown fields' links http(s)/mailto only."""
    return _safe_seminar(seminar, all_fields=False)


def _safe_series(series: Series) -> Series:
    changes: dict[str, Any] = {
        n: sanitise(v) for n in ("name", "signature", "location") if sanitise(v := getattr(series, n)) != v
    }
    return dataclasses.replace(series, **changes) if changes else series


def sentence(text: str) -> str:
    """``text`` ending as a sentence does: one full stop added unless it ends in . ! ? or …"""
    text = text.strip()
    return text if not text or text[-1] in ".!?…" else text + "."


def calendar_links(series: Series) -> dict[str, str] | None:
    """Ways to subscribe to the published calendar (``calendar_url``): webcal for Apple, Outlook
    desktop and Thunderbird, and the pages of Google Calendar and Outlook on the web that add it."""
    url = series.calendar_url
    if url is None:
        return None
    webcal = "webcal://" + url.split("://", 1)[1]
    return {
        "url": url,
        "webcal": webcal,
        "google": "https://calendar.google.com/calendar/r?cid=" + quote(webcal, safe=""),
        "outlook": "https://outlook.office.com/calendar/0/addfromweb?url="
        + quote(url, safe="")
        + "&name="
        + quote(series.name, safe=""),
    }


def _which_week(week: Week, today: dt.date | None) -> str:
    """How the welcome names the week: "this week's" unless the mail goes out before it begins."""
    if today is None or today >= week.monday:
        return "this week's"
    return "next week's" if (week.monday - today).days <= 7 else "the coming"


def _context(
    schedule: Schedule,
    week: Week,
    *,
    markdown_output: bool = True,
    reminder: bool = False,
    today: dt.date | None = None,
    zone: dt.tzinfo | None = None,
    manage: bool = False,
) -> dict[str, Any]:
    """What the templates see; for Markdown outputs (text, page, subject) every field link-safe. With the
    reader's ``zone``, ``your_time(s)`` says when a seminar starts there (" (16:00 GMT your time)"), else ""."""
    week = dataclasses.replace(
        week,
        seminars=tuple(_safe_seminar(s, all_fields=markdown_output) for s in week.seminars),
        upcoming=() if reminder else tuple(_safe_seminar(s, all_fields=markdown_output) for s in week.upcoming),
    )
    upcoming = week.upcoming
    # "All seminars are 15:00 CET." only when true for every seminar the mail lists, this week's
    # included; otherwise every line carries its own time and zone (a list across a DST change needs both).
    slots = {(s.start.strftime("%H:%M"), s.tz_label) for s in (*week.seminars, *upcoming)}
    common = next(iter(slots)) if upcoming and len(slots) == 1 else None
    series = schedule.series
    return {
        "series": _safe_series(series) if markdown_output else series,
        "manage": manage,  # (the footer's link to the manage page: see manage_page_linked)
        "week": week,
        "seminars": week.seminars,
        "upcoming": upcoming,
        "common_slot": f"{common[0]} {common[1]}" if common else None,
        "which_week": _which_week(week, today),
        "all_cancelled": all(s.is_cancelled for s in week.seminars),
        "calendar": calendar_links(series),
        "your_time": lambda s: f" ({there})" if (there := reader_time(s.start, zone)) else "",
        # A reminder is the announcement of one seminar, opening with when it starts.
        "reminder": (
            f"on {week.seminars[0].start:%A %Y-%m-%d} at {week.seminars[0].start:%H:%M} {week.seminars[0].tz_label}"
            if reminder
            else False
        ),
    }


def _where(err: BaseException, name: str) -> str:
    """``file:line`` of the template line that failed (Jinja rewrites its traceback to point there)."""
    where = name
    tb = err.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(".j2"):
            where = f"{filename}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


def render_template(env: jinja2.Environment, name: str, context: dict[str, Any]) -> str:
    """Render one template of ``env``; every failure a TemplateError naming the template's file and line."""
    return _render(env, name, context)


def _render(env: jinja2.Environment, name: str, context: dict[str, Any]) -> str:
    try:
        return env.get_template(name).render(context)
    except jinja2.TemplateSyntaxError as err:
        raise TemplateError(f"{err.filename or name}:{err.lineno}: template syntax error: {err.message}") from err
    except jinja2.TemplateNotFound as err:
        folders = ", ".join(getattr(env.loader, "searchpath", []))
        raise TemplateError(f"{_where(err, name)}: template {err.name} not found in {folders}") from err
    except jinja2.UndefinedError as err:
        raise TemplateError(
            f"{_where(err, name)}: {err.message}; wanted only the names the manual's Templates page documents"
        ) from err
    except Exception as err:  # a template's own expression failed ({{ 1 / 0 }}, a wrong method call)
        raise TemplateError(
            f"{_where(err, name)}: the template failed: {type(err).__name__}: {err}; "
            "wanted expressions that work for every seminar (test with check)"
        ) from err


def _no_include(path: str) -> str:
    raise ValueError(f"mj-include of {path!r} is not allowed: templates must be self-contained")


def compile_mjml(source: str, *, name: str = MJML) -> str:
    """Compile MJML to HTML without web fonts and without includes."""
    import mjml  # heavy native module: imported only when rendering

    try:
        return mjml.mjml2html(source, fonts={}, include_loader=_no_include, disable_comments=True)
    except Exception as err:  # mjml-python raises a bare Exception subtype for invalid MJML
        raise TemplateError(f"{name}: MJML could not be compiled: {err}") from err


_HEADER_UNSAFE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]")  # what address.header_text refuses
_EXTERNAL_CSS = re.compile(r"@import\s+(?:url\()?[^;]*;|<link\b[^>]*rel=[\"']?stylesheet[^>]*>", re.I)


def inline_css(html: str) -> str:
    """Inline the CSS with premailer, offline: no @import, no linked sheets, no cssutils noise."""
    import cssutils
    import premailer  # heavy: lxml and cssutils

    # premailer validates inline styles even with disable_validation (merge_styles), which compiles cssutils'
    # property grammars (a third of a send's start); validation only logs, and the log is off: no profiles.
    cssutils.profile.removeProfile(all=True)
    html = _EXTERNAL_CSS.sub("", html)
    inlined = str(
        premailer.Premailer(
            html,
            allow_network=False,
            allow_loading_external_files=False,
            disable_link_rewrites=True,
            disable_validation=True,
            remove_classes=False,
            keep_style_tags=False,  # media queries survive as premailer's "leftover" CSS
            cssutils_logging_level=logging.CRITICAL,
        ).transform()
    )
    # lxml drops MJML's doctype; without it clients render in quirks mode.
    return inlined if inlined.lstrip().lower().startswith("<!doctype") else "<!doctype html>\n" + inlined


# MJML's preview block hides its text with white 1 px type (SpamAssassin: HTML_FONT_LOW_CONTRAST) and
# shows it as a stray first line where CSS is dropped; its bgcolor attributes stay behind text whose
# colour lives in CSS only (white on #0b3d62 becomes black on it). Both are rewritten after MJML.
_MJML_PREVIEW = re.compile(r'<div style="display:none;font-size:1px;color:#ffffff;[^"]*">(.*?)</div>', re.S)
_BGCOLOR = re.compile(r'\sbgcolor="[^"]*"')
_MSO = re.compile(r"<!--\[if mso.*?<!\[endif\]-->", re.S)  # Outlook's own tables keep theirs: it applies CSS


def _hidden_preview(html: str) -> str:
    """MJML's output with its preview block hidden everywhere, by no colour trick."""
    return _MJML_PREVIEW.sub(
        lambda m: f'<div hidden style="display:none;max-height:0;overflow:hidden;mso-hide:all">{m[1].strip()}</div>',
        html,
        count=1,
    )


def _no_bgcolor(html: str) -> str:
    """The inlined HTML (premailer writes bgcolor from CSS too) without bgcolor outside Outlook's tables."""
    pieces, end = [], 0
    for m in _MSO.finditer(html):
        pieces += [_BGCOLOR.sub("", html[end : m.start()]), m[0]]
        end = m.end()
    return "".join([*pieces, _BGCOLOR.sub("", html[end:])])


def _html(templates: Path | None, name: str, context: dict[str, Any]) -> str:
    mjml = _render(make_environment(templates, html=True), name, context)
    html = _no_bgcolor(inline_css(_hidden_preview(compile_mjml(mjml, name=name))))
    # On a line of its own (whitespace inside a tag), so that quoted-printable leaves it whole to be replaced.
    return html.replace(f'href="{MANAGE_LINK}"', f'\nhref="{MANAGE_LINK}"\n')


def _subject(env: jinja2.Environment, name: str, context: dict[str, Any]) -> str:
    subject = _one_line(_render(env, name, context))
    if bad := _HEADER_UNSAFE.search(subject):
        raise TemplateError(
            f"{name}: the subject holds the control character {bad.group()!r}; wanted one line of plain text"
        )
    return subject


def render(
    schedule: Schedule,
    week: Week,
    *,
    templates: Path | None = None,
    reminder: bool = False,
    today: dt.date | None = None,
    zone: dt.tzinfo | None = None,
) -> Rendered:
    """Render the announcement for ``week`` (or, with ``reminder``, the reminder of its one seminar);
    ``today``, the day it goes out, says "next week's" when that is before the week (default: in it);
    ``zone``, the readers' zone, adds each start there."""
    # every text field link-safe: it ends up in Markdown; the plain context's fields escape themselves
    manage = manage_page_linked(schedule)  # (reads the project's programme files: once a render, not per context)
    context = _context(schedule, week, reminder=reminder, today=today, zone=zone, manage=manage)
    plain_context = _context(
        schedule, week, markdown_output=False, reminder=reminder, today=today, zone=zone, manage=manage
    )
    text_env = make_environment(templates, html=False)
    subject = _subject(text_env, SUBJECT, plain_context)
    text, page = _text_and_page(text_env, context)
    footer = _render(text_env, FOOTER, context)
    html = _html(templates, MJML, {**plain_context, "subject": subject})
    return Rendered(
        subject=subject, text=text, email_text=text + footer, html=html, page=page, page_name=page_name(week)
    )


def page_name(week: Week) -> str:
    """The web page's file name, from the week's first seminar: YYYY-MM-DD-<slug>.md."""
    first: Seminar = week.seminars[0]
    return f"{first.date.isoformat()}-{first.slug}.md"


def render_page(schedule: Schedule, week: Week, *, env: jinja2.Environment) -> tuple[str, str]:
    """The announcement of ``week`` as published on the web, without the email parts: (text, page).
    ``env`` is ``make_environment(templates, html=False)``, made once for many pages."""
    return _text_and_page(env, _context(schedule, week))


def render_programme(
    schedule: Schedule,
    *,
    upcoming: Sequence[tuple[Seminar, str]],
    past_years: Sequence[tuple[int, Sequence[tuple[Seminar, str]]]],
    calendar_url: str,
    feed_url: str,
    templates: Path | None = None,
) -> str:
    """The programme page (``publish``): upcoming seminars, then past ones by year, each with its page's link."""

    def safe(listed: Sequence[tuple[Seminar, str]]) -> list[tuple[Seminar, str]]:
        return [(_safe_seminar(s, all_fields=True), link) for s, link in listed]

    context = {
        "series": _safe_series(schedule.series),
        "upcoming": safe(upcoming),
        "past_years": [(year, safe(listed)) for year, listed in past_years],
        "calendar_url": calendar_url,
        "feed_url": feed_url,
    }
    return _render(make_environment(templates, html=False), PROGRAMME, context)


def _text_and_page(text_env: jinja2.Environment, context: dict[str, Any]) -> tuple[str, str]:
    text = _render(text_env, TEXT, context)
    return text, _render(text_env, PAGE, {**context, "text": text})


def render_change(
    schedule: Schedule, seminar: Seminar, changes: Sequence[Change], *, kind: str, templates: Path | None = None
) -> Rendered:
    """Render a change or cancellation of ``seminar``: what changed ("new (was old)"), and how it is now."""
    plain_context: dict[str, Any] = {
        "series": schedule.series,
        "manage": manage_page_linked(schedule),
        "seminar": seminar,
        "changes": changes,
        "kind": kind,
        "calendar": calendar_links(schedule.series),
    }
    safe = [dataclasses.replace(c, old=sanitise(c.old), new=sanitise(c.new)) for c in changes]
    context = {
        **plain_context,
        "series": _safe_series(schedule.series),
        "seminar": _safe_seminar(seminar, all_fields=True),
        "changes": safe,
    }
    return _notice(templates, (CHANGE_SUBJECT, CHANGE_TEXT, CHANGE_MJML), plain_context, context)


def _notice(
    templates: Path | None, names: tuple[str, str, str], plain_context: dict[str, Any], context: dict[str, Any]
) -> Rendered:
    """A message about one seminar (a change, a cancellation, a follow-up) from its subject, text and MJML
    templates (``names``): the plain context for the subject and the HTML, the link-safe one for the text."""
    subject_name, text_name, mjml_name = names
    text_env = make_environment(templates, html=False)
    subject = _subject(text_env, subject_name, plain_context)
    text = _render(text_env, text_name, context)
    footer = _render(text_env, FOOTER, context)
    html = _html(templates, mjml_name, {**plain_context, "subject": subject})
    return Rendered(subject=subject, text=text, email_text=text + footer, html=html, page="", page_name="")


def materials_label(seminar: Seminar) -> str:
    """What a follow-up brings, in words: "Slides and video", "Paper", "Slides, video and paper"."""
    names = [label.lower() for label, _ in seminar.materials]
    text = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return text[:1].upper() + text[1:]


def render_followup(schedule: Schedule, seminar: Seminar, *, templates: Path | None = None) -> Rendered:
    """Render the follow-up of a seminar that has ended: its slides, video and paper (``followup: true``)."""
    plain_context: dict[str, Any] = {
        "series": schedule.series,
        "manage": manage_page_linked(schedule),
        "seminar": seminar,
        "materials": seminar.materials,
        "what": materials_label(seminar),
        "calendar": calendar_links(schedule.series),
    }
    context = {
        **plain_context,
        "series": _safe_series(schedule.series),
        "seminar": _safe_seminar(seminar, all_fields=True),
    }
    return _notice(templates, (FOLLOWUP_SUBJECT, FOLLOWUP_TEXT, FOLLOWUP_MJML), plain_context, context)


def reader_time(start: dt.datetime, zone: dt.tzinfo | None) -> str | None:
    """A start in the reader's zone ("16:00 GMT your time", with the day when it differs); None without a zone
    or where the wall clock reads the same."""
    if zone is None:
        return None
    there = start.astimezone(zone)
    if there.utcoffset() == start.utcoffset() and there.tzname() == start.tzname():
        return None
    day = f"{there:%A} " if there.date() != start.date() else ""
    return f"{day}{there:%H:%M} {there.tzname() or ''} your time".replace("  ", " ")


def render_digest(
    digest: Series,
    monday: dt.date,
    items: Sequence[tuple[Series, Seminar]],
    upcoming: Sequence[tuple[Series, Seminar]],
    *,
    templates: Path | None = None,
    zone: dt.tzinfo | None = None,
) -> Rendered:
    """Render a weekly digest (``digest`` as the series it is sent from): the week's seminars of the series it
    gathers, each with its series, and the next weeks in brief; with ``zone``, every time also in that zone."""

    def listed(pairs: Sequence[tuple[Series, Seminar]], *, safe: bool) -> list[dict[str, Any]]:
        return [
            {
                "series": _safe_series(series) if safe else series,
                "seminar": _safe_seminar(seminar, all_fields=True) if safe else safe_for_html(seminar),
                "local": reader_time(seminar.start, zone),
            }
            for series, seminar in pairs
        ]

    plain_context: dict[str, Any] = {
        "series": digest,
        "manage": True,  # (a digest gathers several lists: where the manage page has choices to offer)
        "monday": monday,
        "items": listed(items, safe=False),
        "upcoming": listed(upcoming, safe=False),
        "calendar": None,
    }
    context = {
        **plain_context,
        "series": _safe_series(digest),
        "items": listed(items, safe=True),
        "upcoming": listed(upcoming, safe=True),
    }
    return _notice(templates, (DIGEST_SUBJECT, DIGEST_TEXT, DIGEST_MJML), plain_context, context)


def render_every_week(schedule: Schedule, *, templates: Path | None) -> int:
    """Render each week that holds a seminar, as send will (and, with ``followup: true``, the follow-up of
    each seminar with slides, video or paper); return how many weeks. Stop at the first error."""
    mondays = sorted({s.date - dt.timedelta(days=s.date.weekday()) for s in schedule.seminars})
    for monday in mondays:
        week = week_of(schedule, monday)
        assert week is not None
        try:
            render(schedule, week, templates=templates)
            if schedule.series.followup:
                for seminar in week.seminars:
                    if seminar.materials and not seminar.is_cancelled:
                        render_followup(schedule, seminar, templates=templates)
        except TemplateError as err:
            raise TemplateError(f"{err} (rendering the week of {monday})") from err
    return len(mondays)
