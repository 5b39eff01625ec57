"""Turn a week's seminars into subject, plain text, HTML (MJML + inlined CSS) and the web page.

Rendering is pure and offline: the templates see only the domain objects, Markdown is rendered with
raw HTML escaped, MJML is compiled without web fonts or includes, and the inliner never fetches.
"""

from __future__ import annotations

import datetime as dt
import importlib.resources
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jinja2
from markdown_it import MarkdownIt
from markupsafe import Markup

from mailer.errors import TemplateError
from mailer.schedule import Schedule, Seminar, Week, week_of

# Shipped inside the package (a wheel carries them as mailer/templates/*.j2); in a checkout,
# mailer/templates links to templates/email, their source. A plain folder either way (no zip imports).
BUILTIN_TEMPLATES = Path(str(importlib.resources.files("mailer") / "templates"))

SUBJECT = "subject.txt.j2"
TEXT = "announcement.txt.j2"
PAGE = "page.md.j2"
FOOTER = "footer.txt.j2"
MJML = "announcement.mjml.j2"

# CommonMark with raw HTML off: "<script>" in an abstract becomes the text "&lt;script&gt;", and
# markdown-it's validateLink drops javascript:, vbscript:, file: and data: links.
_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})


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
    return Markup(_MARKDOWN.render(text or ""))  # noqa: S704


def _neutralise_html(text: str) -> str:
    """Keep text for a Markdown web page from opening HTML tags (Jekyll passes raw HTML)."""
    return text.replace("<", "&lt;")


def _one_line(text: str) -> str:
    return " ".join(text.split())


def make_environment(templates: Path | None, *, html: bool) -> jinja2.Environment:
    """Build the Jinja environment: user templates first, built-ins second, StrictUndefined.

    ``html=True`` autoescapes everything (``select_autoescape()`` would miss ``.mjml``).
    """
    search = [str(p) for p in (templates, BUILTIN_TEMPLATES) if p is not None]
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
    return env


def _context(schedule: Schedule, week: Week) -> dict[str, Any]:
    upcoming = week.upcoming
    slots = {(s.start.strftime("%H:%M"), s.tz_label) for s in upcoming}
    common = next(iter(slots)) if len(slots) == 1 else None
    return {
        "series": schedule.series,
        "week": week,
        "seminars": week.seminars,
        "upcoming": upcoming,
        # "All seminars are 15:00 CET." only when true for every listed date; otherwise each
        # upcoming line carries its own time and zone (a list across a DST change needs both).
        "common_slot": f"{common[0]} {common[1]}" if common else None,
        "all_cancelled": all(s.is_cancelled for s in week.seminars),
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
            f"{_where(err, name)}: {err.message}; wanted only the names documented in the README's template section"
        ) from err
    except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as err:
        # A template's own mistake, such as a filter applied to the wrong kind of value.
        raise TemplateError(f"{_where(err, name)}: {type(err).__name__}: {err}") from err


def _no_include(path: str) -> str:
    raise ValueError(f"mj-include of {path!r} is not allowed: templates must be self-contained")


def compile_mjml(source: str, *, name: str = MJML) -> str:
    """Compile MJML to HTML without web fonts and without includes."""
    import mjml  # heavy native module: imported only when rendering

    try:
        return mjml.mjml2html(source, fonts={}, include_loader=_no_include, disable_comments=True)
    except Exception as err:  # mjml-python raises a bare Exception subtype for invalid MJML
        raise TemplateError(f"{name}: MJML could not be compiled: {err}") from err


_EXTERNAL_CSS = re.compile(r"@import\s+(?:url\()?[^;]*;|<link\b[^>]*rel=[\"']?stylesheet[^>]*>", re.I)


def inline_css(html: str) -> str:
    """Inline the CSS with premailer, offline: no @import, no linked sheets, no cssutils noise."""
    import premailer  # heavy: lxml and cssutils

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


def render(schedule: Schedule, week: Week, *, templates: Path | None = None) -> Rendered:
    """Render the announcement for ``week``."""
    context = _context(schedule, week)
    text_env = make_environment(templates, html=False)
    subject = _one_line(_render(text_env, SUBJECT, context))
    text = _render(text_env, TEXT, context)
    page = _render(text_env, PAGE, {**context, "text": text})
    footer = _render(text_env, FOOTER, context)
    mjml_source = _render(make_environment(templates, html=True), MJML, {**context, "subject": subject})
    html = inline_css(compile_mjml(mjml_source))
    first: Seminar = week.seminars[0]
    return Rendered(
        subject=subject,
        text=text,
        email_text=text + footer,
        html=html,
        page=page,
        page_name=f"{first.date.isoformat()}-{first.slug}.md",
    )


def render_every_week(schedule: Schedule, *, templates: Path | None) -> int:
    """Render each week that holds a seminar, as send will; return how many. Stop at the first error."""
    mondays = sorted({s.date - dt.timedelta(days=s.date.weekday()) for s in schedule.seminars})
    for monday in mondays:
        week = week_of(schedule, monday)
        assert week is not None
        try:
            render(schedule, week, templates=templates)
        except TemplateError as err:
            raise TemplateError(f"{err} (rendering the week of {monday})") from err
    return len(mondays)
