"""Thin commands that call the stages; the only place that prints and exits."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import difflib
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from mailer import __version__
from mailer.address import Address
from mailer.errors import EXIT_FAILED, EXIT_INVALID, EXIT_OK, EXIT_TEMPFAIL, ConfigError, MailerError
from mailer.project import DEFAULTS, MARKER, Project

_PATH_HELP = {
    "schedule": "the programme YAML",
    "templates": "your template folder; templates you do not override come from the built-in set",
    "recipients": "the folder of mailing-list files",
    "state": "where the ledger, lock, token key and logs live",
}

_EXAMPLES = {
    "": """\
examples:
  seminar-mailer init my-seminar           create a starter project in my-seminar/
  seminar-mailer check                     validate the schedule, the list and your templates
  seminar-mailer preview --serve           live preview in the browser while you edit
  seminar-mailer preview --date 2024-01-15 --open
  seminar-mailer send --dry-run            who would receive this week's announcement
  seminar-mailer send                      send it (asks first on a terminal)

Inside a project (a folder holding data/seminars.yaml, or any folder below it) every default path
resolves against the project's root. Options go before or after the command.

exit codes: 0 done or nothing due, 1 some recipients failed permanently,
2 invalid input or configuration (nothing sent), 75 try again later.""",
    "check": """\
examples:
  seminar-mailer check
  seminar-mailer check --templates my-templates     also render your own templates for every week
  seminar-mailer check --schedule other.yaml""",
    "preview": """\
examples:
  seminar-mailer preview                       this week's announcement, files in preview/
  seminar-mailer preview --date 2024-01-15 --open
  seminar-mailer preview --serve               http://127.0.0.1:8025/, reloads when you save""",
    "send": """\
examples:
  seminar-mailer send --dry-run
  seminar-mailer send
  seminar-mailer send --date 2024-01-15 --yes""",
    "status": """\
examples:
  seminar-mailer status
  seminar-mailer status --date 2024-01-15""",
    "init": """\
examples:
  seminar-mailer init my-seminar
  seminar-mailer init                          in the current folder""",
    "schema": """\
examples:
  seminar-mailer schema > data/seminars.schema.json""",
}


class _Parser(argparse.ArgumentParser):
    """argparse with did-you-mean for commands and options."""

    def error(self, message: str) -> NoReturn:
        if match := re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message):
            word, choices = match[1], re.findall(r"'([^']*)'", match[2])
            guess = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
            hint = f"did you mean '{guess[0]}'?" if guess else f"wanted one of: {', '.join(choices)}"
            message = f"unknown command '{word}'; {hint}"
        elif match := re.search(r"unrecognized arguments: (\S+)", message):
            known = _option_strings(self)
            guess = difflib.get_close_matches(match[1].split("=")[0], known, n=1, cutoff=0.6)
            if guess:
                message += f"; did you mean '{guess[0]}'?"
        super().error(message)


def _option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every option of ``parser`` and of its commands."""
    found: list[str] = []
    for action in parser._actions:
        found += action.option_strings
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _option_strings(sub)
    return found


def _paths(*names: str) -> _Parser:
    """Path options as a parent parser. Defaults are filled in later (see ``_resolve``), so an option
    may stand before the command or after it."""
    parent = _Parser(add_help=False)
    for name in names:
        env, default = DEFAULTS[name]
        parent.add_argument(
            f"--{name}",
            type=Path,
            default=argparse.SUPPRESS,
            metavar="PATH",
            help=f"{_PATH_HELP[name]} (env {env}; default {default} in the project)",
        )
    return parent


def _date() -> _Parser:
    parent = _Parser(add_help=False)
    parent.add_argument(
        "--date",
        metavar="YYYY-MM-DD",
        default=argparse.SUPPRESS,
        help="a day in the week to announce (env MAILER_DATE; default: today in the series' time zone)",
    )
    return parent


def _parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    every_path = _paths("schedule", "templates", "recipients", "state")
    parser = _Parser(
        prog="seminar-mailer",
        description="Announce this week's seminar from data/seminars.yaml by email.",
        epilog=_EXAMPLES[""],
        formatter_class=formatter,
        parents=[every_path, _date()],
    )
    parser.add_argument("--version", action="version", version=f"seminar-mailer {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def command(name: str, parents: list[_Parser], help: str, description: str) -> _Parser:
        sub: _Parser = commands.add_parser(
            name, help=help, description=description, epilog=_EXAMPLES[name], formatter_class=formatter, parents=parents
        )
        return sub

    command(
        "init",
        [_date()],
        "create a starter project: schedule, list, .env.example, cron line",
        "Create a starter project in DIR (default: here): a commented data/seminars.yaml with one "
        "example seminar in the week after --date, its JSON Schema for editors, recipients/<list>.txt, "
        ".env.example, .gitignore and crontab.example. Never overwrites a file.",
    ).add_argument("dir", nargs="?", type=Path, default=Path("."), metavar="DIR")

    command(
        "check",
        [_paths("schedule", "templates", "recipients")],
        "validate the schedule, the mailing list and the templates",
        "Validate the schedule and the mailing list, and render the templates (yours in --templates, "
        "when that folder exists, over the built-in set) for every week with a seminar; report every "
        "problem at file:line. Exit 0 when all is valid, 2 when not.",
    )

    preview = command(
        "preview",
        [every_path, _date()],
        "render this week's announcement without sending anything",
        "Render this week's announcement: print the subject and text, write announcement.html, "
        "announcement.txt, announcement.eml (the message exactly as the first subscriber gets it) and "
        "the web page into --out. With --serve, show it in the browser and re-render on every save.",
    )
    preview.add_argument(
        "--out", type=Path, default=argparse.SUPPRESS, metavar="DIR", help="where to write the files (default preview/)"
    )
    preview.add_argument("--open", action="store_true", help="show the HTML (with --serve, the page) in your browser")
    preview.add_argument(
        "--serve", action="store_true", help="serve a live preview on 127.0.0.1 that reloads when a file changes"
    )
    preview.add_argument("--port", type=int, default=8025, help="the port for --serve (default 8025; 0: any free one)")

    send = command(
        "send",
        [every_path, _date()],
        "send this week's announcement to every subscriber, exactly once",
        "Render this week's announcement once and deliver it to every subscriber not yet sent to. "
        "SMTP settings come from the environment or .env (see README). When the output is not a "
        "terminal (cron), every line starts with an ISO 8601 timestamp.",
    )
    send.add_argument(
        "--dry-run", action="store_true", help="do everything but connect: validate, render, count who would receive it"
    )
    send.add_argument("--yes", action="store_true", help="do not ask for confirmation on a terminal")

    command(
        "status",
        [_paths("schedule", "recipients", "state"), _date()],
        "show who has been sent this week's announcement",
        "Counts per state for this week's announcement and when it was sent.",
    )
    command(
        "schema",
        [],
        "print the JSON Schema of data/seminars.yaml (for editors)",
        "Print the JSON Schema of data/seminars.yaml, generated from the validator's own key tables.",
    )
    return parser


def _resolve(args: argparse.Namespace, project: Project) -> None:
    """Fill in the defaults: an option as given, else its environment variable, else the project's path."""
    for name in DEFAULTS:
        if getattr(args, name, None) is None:
            setattr(args, name, project.default(name, os.environ))
            if name == "schedule" and project.root is None and not os.environ.get("MAILER_SCHEDULE"):
                if args.command not in ("init", "schema"):
                    raise ConfigError(
                        f"no seminar-mailer project here: no {MARKER} in {project.cwd} or any folder above it; "
                        "wanted a project folder (`seminar-mailer init DIR` creates one) or --schedule PATH"
                    )
    if getattr(args, "date", None) is None and (value := os.environ.get("MAILER_DATE")):
        try:
            dt.date.fromisoformat(value)
        except ValueError:
            raise ConfigError(f"MAILER_DATE={value!r} is not a date; wanted YYYY-MM-DD, e.g. 2024-01-15") from None
        args.date = value
    elif getattr(args, "date", None) is None:
        args.date = None


def _today(arg: str | None, tz: dt.tzinfo) -> dt.date:
    if arg is None:
        return dt.datetime.now(tz).date()
    try:
        return dt.date.fromisoformat(arg)
    except ValueError:
        raise ConfigError(f"--date {arg!r} is not a date; wanted YYYY-MM-DD, e.g. 2024-01-15") from None


def _count_of(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _check(args: argparse.Namespace) -> int:
    from mailer.errors import Problem
    from mailer.recipients import UNSUBSCRIBED, list_file, read_entries
    from mailer.render import render_every_week
    from mailer.schedule import load_schedule

    schedule = load_schedule(args.schedule)
    print(f"{args.schedule}: OK, {_count_of(len(schedule.seminars), 'seminar')} of {schedule.series.name}")
    problems: list[Problem] = []
    path = list_file(args.recipients, schedule.series.list_name)
    count = 0
    for entry in read_entries(path):
        if entry.problem is not None:
            problems.append(entry.problem)
        else:
            count += 1
    if (unsubscribed := args.recipients / UNSUBSCRIBED).exists():
        problems += [e.problem for e in read_entries(unsubscribed) if e.problem is not None]
    if problems:
        raise MailerError(f"{len(problems)} invalid recipient lines", problems=tuple(problems))
    print(f"{path}: OK, {_count_of(count, 'recipient')}")
    templates: Path = args.templates
    if not templates.is_dir():
        if args.templates_given:
            raise ConfigError(f"{templates}: no such template folder; wanted a folder of *.j2 templates")
        weeks = render_every_week(schedule, templates=None)
        print(f"built-in templates: OK, rendered {_count_of(weeks, 'week')}")
    else:
        weeks = render_every_week(schedule, templates=templates)
        print(f"{templates}: OK, rendered {_count_of(weeks, 'week')} (templates not in it come from the built-in set)")
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
        f"{out / 'announcement.txt'}, {out / rendered.page_name}, "
        f"{out / 'announcement.eml'} (as {first.addr} gets it)",
        file=sys.stderr,
    )
    if args.open:
        _open(out / "announcement.html")
    return EXIT_OK


def _open(path_or_url: Path | str) -> None:
    """Show a file or URL in the organiser's browser, or say that none could be opened."""
    import webbrowser

    url = path_or_url.resolve().as_uri() if isinstance(path_or_url, Path) else path_or_url
    try:
        opened = webbrowser.open(url)
    except webbrowser.Error:
        opened = False
    if not opened:
        print(
            f"warning: no web browser could be opened (none found; set BROWSER to name one); open {url} yourself",
            file=sys.stderr,
        )


def _env() -> dict[str, str]:
    """The process environment over .env (MAILER_ENV_FILE, default .env in the project): the environment wins."""
    from mailer.config import read_dotenv

    project = Project.discover(Path.cwd())
    return {**read_dotenv(project.default("env_file", os.environ)), **os.environ}


def _send(args: argparse.Namespace) -> int:
    from mailer.config import ledger_window, smtp_settings, token_key
    from mailer.ledger import LEDGER_FILE, SUPPRESSED_FILE, Ledger, add_suppressed, run_lock
    from mailer.message import announcement_id, build_message
    from mailer.recipients import DUE, UNSUBSCRIBED, classify, list_file, suppressed_keys
    from mailer.render import render
    from mailer.report import Progress, print_summary
    from mailer.schedule import load_schedule, week_of
    from mailer.send import deliver

    env = _env()
    schedule = load_schedule(args.schedule)
    series = schedule.series
    today = _today(args.date, series.timezone)
    week = week_of(schedule, today)
    if week is None:
        print(f"No {series.name} seminar in the week of {today - dt.timedelta(days=today.weekday())}: nothing to send.")
        return EXIT_OK
    try:
        settings = smtp_settings(env)
    except ConfigError as err:
        if not args.dry_run:
            raise
        settings = None
        print(f"warning: {err} (a real send would stop here)", file=sys.stderr)
    rendered = render(schedule, week, templates=args.templates)
    template = build_message(schedule, week, rendered, now=dt.datetime.now(dt.UTC), token_key=token_key(args.state))
    path = list_file(args.recipients, series.list_name)
    announcement = announcement_id(schedule, week)
    suppressed_from = [args.recipients / UNSUBSCRIBED, args.state / SUPPRESSED_FILE]

    if args.dry_run:
        done = Ledger(args.state, announcement).done() if (args.state / LEDGER_FILE).exists() else set()
        counts = _count(path, suppressed_from, done)
        print_summary(counts, None, dry_run=True, subject=rendered.subject)
        return EXIT_OK

    with run_lock(args.state, series.list_name):
        ledger = Ledger(args.state, announcement, window=ledger_window(env))
        try:
            done = ledger.done()
            counts = _count(path, suppressed_from, done)
            due = counts.get(DUE, 0)
            if due == 0:
                print_summary(counts, None, dry_run=False, subject=rendered.subject)
                return EXIT_OK
            if sys.stdin.isatty() and not args.yes:
                answer = input(f"Send {rendered.subject!r} to {due} recipients? [y/N] ")
                if answer.strip().lower() not in ("y", "yes"):
                    print("Nothing sent.")
                    return EXIT_OK
            assert settings is not None
            recipients = (
                e.recipient
                for kind, e in classify(path, suppressed=suppressed_keys(suppressed_from), done=done)
                if kind == DUE and e.recipient is not None
            )
            progress = Progress(due, tty=sys.stderr.isatty())
            outcome = asyncio.run(
                deliver(
                    template,
                    recipients,
                    settings,
                    ledger,
                    envelope_from=settings.envelope_from or series.sender.ascii_addr,
                    progress=progress,
                )
            )
            progress.close()
            add_suppressed(args.state, [f"{a.addr}  # {detail}" for a, detail in outcome.failed])
        finally:
            ledger.close()
    print_summary(counts, outcome, dry_run=False, subject=rendered.subject)
    if outcome.deferred:
        return EXIT_TEMPFAIL
    return EXIT_FAILED if outcome.failed else EXIT_OK


def _count(path: Path, suppressed_from: list[Path], done: set[str]) -> dict[str, int]:
    """One pass over the list: how many lines fall in each class; invalid lines are warned about."""
    from mailer.recipients import INVALID, classify, suppressed_keys

    counts: dict[str, int] = {}
    for kind, entry in classify(path, suppressed=suppressed_keys(suppressed_from), done=done):
        counts[kind] = counts.get(kind, 0) + 1
        if kind == INVALID:
            print(f"warning: {entry.problem} (skipped)", file=sys.stderr)
    return counts


def _status(args: argparse.Namespace) -> int:
    from mailer.ledger import LEDGER_FILE, Ledger
    from mailer.message import announcement_id
    from mailer.schedule import load_schedule, week_of

    schedule = load_schedule(args.schedule)
    today = _today(args.date, schedule.series.timezone)
    week = week_of(schedule, today)
    if week is None:
        print(f"No {schedule.series.name} seminar in the week of {today - dt.timedelta(days=today.weekday())}.")
        return EXIT_OK
    announcement = announcement_id(schedule, week)
    if not (args.state / LEDGER_FILE).exists():
        print(f"{announcement}: not sent yet (no ledger in {args.state})")
        return EXIT_OK
    summary = Ledger(args.state, announcement).summary()
    print(f"{announcement}:")
    for state in ("sent", "deferred", "failed"):
        print(f"  {state:<9}{summary.counts.get(state, 0)}")
    if summary.first:
        print(f"  sent between {summary.first} and {summary.last} (UTC)")
    for recipient, detail in summary.failures:
        print(f"  failed: {recipient}: {detail}")
    return EXIT_TEMPFAIL if summary.counts.get("deferred") else EXIT_OK


def _init(args: argparse.Namespace) -> int:
    import shutil

    from mailer.project import init, installed_command, local_timezone

    today = _today(args.date, dt.datetime.now().astimezone().tzinfo or dt.UTC)
    command = installed_command()
    created = init(args.dir, today=today, timezone=local_timezone(), command=command)
    here = Path.cwd().resolve()
    shown = created.folder.relative_to(here) if created.folder.is_relative_to(here) else created.folder
    print(f"Created a seminar-mailer project in {created.folder}:")
    for path in created.files:
        print(f"  {path.relative_to(created.folder)}")
    # The short name where it runs this installation; the full path where it does not.
    on_path = shutil.which("seminar-mailer")
    me = "seminar-mailer" if on_path and Path(on_path).resolve() == Path(command).resolve() else command
    steps = [(f"cd {shown}", "")] if shown != Path(".") else []
    steps += [
        (f"{me} check", "validate it all"),
        (f"{me} preview --serve --date {created.seminar_date}", "live preview: edit data/seminars.yaml and watch"),
        ("cp .env.example .env", "then fill in your SMTP server"),
        (f"{me} send --dry-run --date {created.seminar_date}", "who would receive it"),
    ]
    width = max(len(command) for command, _ in steps) + 2
    print("\nNext:")
    for command, why in steps:
        print(f"  {command.ljust(width)}{'# ' + why if why else ''}".rstrip())
    print("\nEvery Monday from cron (crontab -e, as the owner of the folder), also in crontab.example:")
    print(created.crontab.split("\n", 1)[1], end="")
    return EXIT_OK


def _schema(args: argparse.Namespace) -> int:
    from mailer.schema import schema_text

    print(schema_text(), end="")
    return EXIT_OK


def _preview_or_serve(args: argparse.Namespace) -> int:
    if not args.serve:
        return _preview(args)
    from mailer.live import serve

    return serve(
        schedule=args.schedule,
        templates=args.templates,
        date=args.date,
        port=args.port,
        announce=lambda url: print(f"Live preview on {url} (Ctrl-C to stop)", file=sys.stderr, flush=True),
        open_browser=_open if args.open else None,
    )


_COMMANDS = {
    "init": _init,
    "check": _check,
    "schema": _schema,
    "preview": _preview_or_serve,
    "send": _send,
    "status": _status,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; return its exit code. Only MailerError is caught: anything else is a bug."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    args.templates_given = getattr(args, "templates", None) is not None or bool(os.environ.get("MAILER_TEMPLATES"))
    try:
        _resolve(args, Project.discover(Path.cwd()))
        if args.command == "send":
            from mailer.logs import timestamp_unless_terminal

            timestamp_unless_terminal()
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
