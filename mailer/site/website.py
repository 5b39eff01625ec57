"""``publish`` as a complete website (series ``site: html``, the default): HTML pages beside the feeds.

- ``index.html``: the seminars not yet over, soonest first, then the past ones by year, newest first;
- ``YYYY-MM-DD-<slug>.html`` per seminar: everything about it, and ``YYYY-MM-DD-<slug>.ics`` beside it
  (the same VEVENT as ``seminars.ics``, so importing it and subscribing later give one event), with
  "Add to Google Calendar / Outlook" links and the ``webcal://`` subscription when ``calendar_url`` is set.

Every link is relative, so the folder works opened from disk or served from any path; nothing is loaded
from elsewhere (no fonts, stylesheets, scripts or images); a small inline script adds the reader's local
time where their zone differs. The pages come from ``templates/site/site-*.html.j2``, which an organiser
overrides as the mail templates: a file of the same name in their templates folder.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jinja2

from mailer.compose.invite import Event
from mailer.compose.render import calendar_links, make_environment, render_template, safe_for_html
from mailer.core.links import plain
from mailer.programme.model import Schedule, Seminar, Series

BUILTIN_SITE_TEMPLATES = Path(__file__).resolve().parent / "templates"
INDEX = "index.html"
INDEX_TEMPLATE = "site-index.html.j2"
SEMINAR_TEMPLATE = "site-seminar.html.j2"
LANG = "en"


def environment(templates: Path | None) -> jinja2.Environment:
    """The site's templates: the organiser's folder first, then the built-in site-*.html.j2; autoescaped."""
    return make_environment(templates, html=True, builtin=BUILTIN_SITE_TEMPLATES)


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.UTC)


def event_title(series: Series, seminar: Seminar) -> str:
    """The event's name in a calendar: the same as the invitation's SUMMARY."""
    if seminar.title:
        return f"{series.name}: {seminar.title} ({seminar.speaker})"
    return f"{series.name}: {seminar.speaker}"


def add_links(series: Series, seminar: Seminar, page_url: str | None) -> dict[str, str]:
    """ "Add to calendar" links for one seminar: Google Calendar's and Outlook on the web's event forms.
    They carry what the published page shows (no Zoom link when it is kept private: ``seminar`` is the
    public one)."""
    details = [f"Speaker: {seminar.speaker}" + (f", {seminar.affiliation}" if seminar.affiliation else "")]
    if seminar.zoom:
        details.append(f"Zoom: {seminar.zoom}")
    details.append(f"More information: {page_url or series.info_url}")
    if seminar.abstract:
        details.append(plain(seminar.abstract)[:1000])
    body = "\n\n".join(details)
    title = event_title(series, seminar)
    start, end = _utc(seminar.start), _utc(seminar.end)
    google = urlencode(
        {
            "action": "TEMPLATE",
            "text": title,
            "dates": f"{start:%Y%m%dT%H%M%SZ}/{end:%Y%m%dT%H%M%SZ}",
            "details": body,
            "location": seminar.location,
        }
    )
    outlook = urlencode(
        {
            "path": "/calendar/action/compose",
            "rru": "addevent",
            "subject": title,
            "startdt": f"{start:%Y-%m-%dT%H:%M:%SZ}",
            "enddt": f"{end:%Y-%m-%dT%H:%M:%SZ}",
            "body": body,
            "location": seminar.location,
        }
    )
    return {
        "google": "https://calendar.google.com/calendar/render?" + google,
        "outlook": "https://outlook.office.com/calendar/0/deeplink/compose?" + outlook,
    }


def _common(schedule: Schedule, *, calendar_file: str, feed: str) -> dict[str, Any]:
    series = schedule.series
    return {
        "series": series,
        "lang": LANG,
        "calendar": calendar_links(series),
        "calendar_file": calendar_file,
        "feed": feed,
        "subscribe": f"{series.service_url}/subscribe" if series.service_url else None,
    }


def seminar_page(
    env: jinja2.Environment,
    schedule: Schedule,
    event: Event,
    *,
    name: str,
    base: str,
    calendar_file: str,
    feed: str,
) -> str:
    """One seminar's page; ``name`` is its file name without suffix, ``base`` the site's address or ""."""
    seminar = safe_for_html(event.seminar)
    page_url = base + name + ".html" if base else None
    context = {
        **_common(schedule, calendar_file=calendar_file, feed=feed),
        "s": seminar,
        "ics": name + ".ics",
        "add": add_links(schedule.series, event.seminar, page_url),
    }
    return render_template(env, SEMINAR_TEMPLATE, context)


def index_page(
    env: jinja2.Environment,
    schedule: Schedule,
    *,
    upcoming: Sequence[tuple[Seminar, str]],
    past_years: Sequence[tuple[int, Sequence[tuple[Seminar, str]]]],
    calendar_file: str,
    feed: str,
) -> str:
    """index.html: (seminar, page) pairs, upcoming soonest first, past ones by year."""

    def safe(listed: Sequence[tuple[Seminar, str]]) -> list[tuple[Seminar, str]]:
        return [(safe_for_html(s), page) for s, page in listed]

    context = {
        **_common(schedule, calendar_file=calendar_file, feed=feed),
        "upcoming": safe(upcoming),
        "past_years": [(year, safe(listed)) for year, listed in past_years],
    }
    return render_template(env, INDEX_TEMPLATE, context)
