"""Thin commands (check, preview) that call the stages; the only place that prints and exits."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from mailer import __version__
from mailer.address import Address
from mailer.errors import EXIT_INVALID, EXIT_OK, ConfigError, MailerError

_PATH_OPTIONS = {
    # option: (environment variable, default, help)
    "schedule": ("MAILER_SCHEDULE", "data/seminars.yaml", "the programme YAML"),
    "templates": (
        "MAILER_TEMPLATES",
        "templates/email",
        "your template folder; templates you do not override come from the built-in set",
    ),
    "recipients": ("MAILER_RECIPIENTS", "recipients", "the folder of mailing-list files"),
    "state": ("MAILER_STATE", "state", "where the ledger, lock and token key live"),
}


def _add_paths(parser: argparse.ArgumentParser, *names: str) -> None:
    for name in names:
        env, default, text = _PATH_OPTIONS[name]
        parser.add_argument(
            f"--{name}",
            type=Path,
            default=Path(os.environ.get(env) or default),
            metavar="PATH",
            help=f"{text} (env {env}; default {default})",
        )


def _add_date(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--date", metavar="YYYY-MM-DD", help="a day in the week to announce (default: today in the series' time zone)"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seminar-mailer",
        description="Announce this week's seminar from data/seminars.yaml by email.",
        epilog="Exit codes: 0 done or nothing due, 1 some recipients failed permanently, "
        "2 invalid input or configuration (nothing sent), 75 try again later.",
    )
    parser.add_argument("--version", action="version", version=f"seminar-mailer {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    check = commands.add_parser(
        "check",
        help="validate the schedule and report every problem",
        description="Validate the schedule; exit 0 when valid, 2 when not.",
    )
    _add_paths(check, "schedule")

    preview = commands.add_parser(
        "preview",
        help="render this week's announcement without sending anything",
        description="Render this week's announcement: print the subject and text, write "
        "announcement.html, announcement.txt, announcement.eml (the message exactly as the first "
        "subscriber gets it) and the web page into --out.",
    )
    _add_paths(preview, "schedule", "templates", "recipients", "state")
    _add_date(preview)
    preview.add_argument(
        "--out", type=Path, default=Path("preview"), metavar="DIR", help="where to write the files (default preview/)"
    )
    preview.add_argument("--open", action="store_true", help="show the HTML in your web browser")
    return parser


def _today(arg: str | None, tz: dt.tzinfo) -> dt.date:
    if arg is None:
        return dt.datetime.now(tz).date()
    try:
        return dt.date.fromisoformat(arg)
    except ValueError:
        raise ConfigError(f"--date {arg!r} is not a date; wanted YYYY-MM-DD, e.g. 2024-01-15") from None


def _check(args: argparse.Namespace) -> int:
    from mailer.schedule import load_schedule

    schedule = load_schedule(args.schedule)
    print(f"{args.schedule}: OK, {len(schedule.seminars)} seminars of {schedule.series.name}")
    return EXIT_OK


def _first_recipient(folder: Path, list_name: str) -> Address:
    """The first valid subscriber, or a stand-in when the list has none yet."""
    from mailer.recipients import list_file, read_entries

    try:
        entries = read_entries(list_file(folder, list_name))
        return next(e.recipient for e in entries if e.recipient is not None)
    except (ConfigError, StopIteration):
        return Address(name="", addr="subscriber@example.org")


def _preview(args: argparse.Namespace) -> int:
    from mailer.config import token_key
    from mailer.message import build_message
    from mailer.render import render
    from mailer.schedule import load_schedule, week_of

    schedule = load_schedule(args.schedule)
    today = _today(args.date, schedule.series.timezone)
    week = week_of(schedule, today)
    if week is None:
        monday = today - dt.timedelta(days=today.weekday())
        print(
            f"No {schedule.series.name} seminar in the week of {monday} to "
            f"{monday + dt.timedelta(days=6)}: nothing to announce."
        )
        return EXIT_OK
    rendered = render(schedule, week, templates=args.templates)
    template = build_message(schedule, week, rendered, now=dt.datetime.now(dt.UTC), token_key=token_key(args.state))
    first = _first_recipient(args.recipients, schedule.series.list_name)
    out: Path = args.out
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "announcement.html").write_text(rendered.html, encoding="utf-8")
        (out / "announcement.txt").write_text(rendered.text, encoding="utf-8")
        (out / rendered.page_name).write_text(rendered.page, encoding="utf-8")
        (out / "announcement.eml").write_bytes(template.personalise(first))
    except OSError as err:
        raise ConfigError(f"{out}: cannot write the preview: {err.strerror}") from err
    print(f"Subject: {rendered.subject}\n")
    print(rendered.text, end="")
    print(
        f"Wrote {out / 'announcement.html'} ({len(rendered.html.encode()) // 1024} KB), "
        f"{out / 'announcement.txt'}, {out / rendered.page_name}",
        file=sys.stderr,
    )
    if args.open:
        import webbrowser

        webbrowser.open((out / "announcement.html").resolve().as_uri())
    return EXIT_OK


_COMMANDS = {"check": _check, "preview": _preview}


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; return its exit code. Only MailerError is caught: anything else is a bug."""
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except MailerError as err:
        for line in err.lines():
            print(f"error: {line}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INVALID


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
