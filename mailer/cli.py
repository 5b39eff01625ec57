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
from typing import TYPE_CHECKING, NoReturn

from mailer import __version__
from mailer.address import Address
from mailer.crash import write_crash_report
from mailer.errors import EXIT_FAILED, EXIT_OK, EXIT_SOFTWARE, EXIT_TEMPFAIL, ConfigError, MailerError
from mailer.project import DEFAULTS, MARKER, Project
from mailer.terminal import count_of as _count_of
from mailer.terminal import printable

if TYPE_CHECKING:
    from mailer.config import Environment
    from mailer.dispatch import Request
    from mailer.recipients import Entry
    from mailer.subscribers import NoMail

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
2 invalid input or configuration (nothing sent), 70 a bug (traceback written to a file),
75 try again later.""",
    "check": """\
examples:
  seminar-mailer check
  seminar-mailer check --templates my-templates     also render your own templates for every week
  seminar-mailer check --schedule other.yaml
  seminar-mailer check --smtp                       also try the SMTP settings (sends nothing)
  seminar-mailer check --imap                       also try the bounce mailbox (moves nothing)""",
    "preview": """\
examples:
  seminar-mailer preview                       this week's announcement, files in preview/
  seminar-mailer preview --date 2024-01-15 --open
  seminar-mailer preview --serve               http://127.0.0.1:8025/, reloads when you save""",
    "send": """\
examples:
  seminar-mailer send --dry-run
  seminar-mailer send
  seminar-mailer send --dry-run --now 2030-01-17T09:00    what would be due then (reminders, say)
  seminar-mailer send --to you@example.org                 a test copy to yourself only""",
    "status": """\
examples:
  seminar-mailer status""",
    "unsuppress": """\
examples:
  seminar-mailer unsuppress ada@example.org     whether refused, bounced, unsubscribed or removed""",
    "bounces": """\
examples:
  seminar-mailer bounces                          the IMAP mailbox of BOUNCES_IMAP_*
  seminar-mailer bounces --maildir ~/Maildir
  seminar-mailer check --imap                     try the IMAP settings first (moves nothing)""",
    "rename-list": """\
examples:
  seminar-mailer rename-list learning-machines lm-seminar   # after changing list: in seminars.yaml""",
    "login": """\
examples:
  seminar-mailer login microsoft""",
    "init": """\
examples:
  seminar-mailer init my-seminar
  seminar-mailer init                          in the current folder""",
    "schema": """\
examples:
  seminar-mailer schema > data/seminars.schema.json""",
    "publish": """\
examples:
  seminar-mailer publish --out ../site/seminars     pages, programme.md, seminars.ics, announcements.atom
  seminar-mailer publish --out site --prune         also delete pages of seminars no longer in the file""",
}


class _Parser(argparse.ArgumentParser):
    """argparse with did-you-mean for commands and choices (options: see ``_parse``)."""

    def error(self, message: str) -> NoReturn:
        if match := re.search(r"argument (\S+): invalid choice: '([^']*)' \(choose from (.*)\)", message):
            what, word, choices = match[1], match[2], re.findall(r"'([^']*)'", match[3])
            guess = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
            hint = f"did you mean '{guess[0]}'?" if guess else f"wanted one of: {', '.join(choices)}"
            message = f"unknown {'command' if what == 'COMMAND' else what} '{word}'; {hint}"
        super().error(message)


def _parse(parser: _Parser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse the command line; an option the command does not take is refused by the command itself,
    with a suggestion among its own options only (or the commands that do take it)."""
    args, extras = parser.parse_known_args(argv)
    if extras:
        commands = _commands(parser)
        command = commands.get(args.command) if args.command else None
        (command or parser).error(_unrecognized(extras, args.command, command or parser, commands))
    return args


def _unrecognized(extras: list[str], name: str | None, parser: _Parser, commands: dict[str, _Parser]) -> str:
    """argparse's message, and what to type instead of the first unknown option: never an option the
    command does not take."""
    message = f"unrecognized arguments: {' '.join(extras)}"
    option = next((word.split("=")[0] for word in extras if word.startswith("-")), None)
    if option is None:
        return message
    own = _option_strings(parser)
    takers = {other: _option_strings(sub) for other, sub in commands.items() if other != name}
    if option in own:  # given before the command, where only the path and date options go
        return f"{message}; {option} is an option of {name}: wanted it after the command ({name} {option} ...)"
    if (exact := [other for other, options in takers.items() if option in options]) and name is None:
        return f"{message}; {option} is an option of {', '.join(exact)}: wanted after the command"
    if exact:
        return f"{message}; {name} takes no {option} (an option of {', '.join(exact)})"
    if guess := difflib.get_close_matches(option, own, n=1, cutoff=0.6):
        return f"{message}; did you mean '{guess[0]}'?"
    if name is None:  # no command yet: an option of one, mistyped
        options = {flag: other for other, known in reversed(takers.items()) for flag in known}
        if guess := difflib.get_close_matches(option, list(options), n=1, cutoff=0.6):
            return f"{message}; did you mean '{options[guess[0]]} {guess[0]}'?"
    return message


def _commands(parser: argparse.ArgumentParser) -> dict[str, _Parser]:
    """The parser of each command."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """The options ``parser`` itself takes (not those of its commands)."""
    return [option for action in parser._actions for option in action.option_strings]


def _paths(*names: str) -> _Parser:
    """Path options as a parent parser. Defaults are filled in later (see ``_resolve``), so an option
    may stand before the command or after it."""
    parent = _Parser(add_help=False)
    _add_paths(parent, *names)
    return parent


def _date() -> _Parser:
    parent = _Parser(add_help=False)
    parent.add_argument(
        "--date",
        metavar="YYYY-MM-DD",
        default=argparse.SUPPRESS,
        help="a day in the week to announce (env MAILER_DATE; default: today in the series' time zone)",
    )
    parent.add_argument(
        "--now",
        metavar="YYYY-MM-DDTHH:MM[+ZONE]",
        default=argparse.SUPPRESS,
        help="act as if it were this moment (local to the series without a zone): what is due then; "
        "default: the clock. A preview or dry run of a past --date acts as at the start of that week",
    )
    return parent


def _add_paths(parser: argparse.ArgumentParser, *names: str) -> None:
    """Path options on a command made without ``_paths`` parents (defaults filled in by ``_resolve``)."""
    for name in names:
        env, default = DEFAULTS[name]
        parser.add_argument(
            f"--{name}",
            type=Path,
            default=argparse.SUPPRESS,
            metavar="PATH",
            help=f"{_PATH_HELP[name]} (env {env}; default {default} in the project)",
        )


def _parser() -> _Parser:
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
            name,
            help=help,
            description=description,
            epilog=_EXAMPLES.get(name, ""),
            formatter_class=formatter,
            parents=parents,
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

    check = command(
        "check",
        [_paths("schedule", "templates", "recipients", "state"), _date()],
        "validate the schedule, the mailing list, the templates and the settings",
        "Validate the schedule and the mailing list, and render the templates (yours in --templates, "
        "when that folder exists, over the built-in set) for every week with a seminar; report every "
        "problem at file:line. Say what the next send would do about seminars already announced "
        "(a removed seminar is cancelled). Exit 0 when all is valid, 2 when not.",
    )
    check.add_argument(
        "--smtp",
        action="store_true",
        help="also connect with the SMTP settings: EHLO, STARTTLS, AUTH, MAIL FROM then RSET; sends nothing",
    )
    check.add_argument(
        "--imap",
        action="store_true",
        help="also connect to the bounce mailbox (BOUNCES_IMAP_*): TLS, LOGIN, SELECT; moves nothing",
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
        "send whatever is due, exactly once: announcement, changes, cancellations, reminders",
        "Send this week's announcement to every subscriber not yet told of it; for every announced "
        "seminar that changed since, a change or cancellation to those who were told; reminders when "
        "due. SMTP settings come from the environment or .env (see README). When the output is not a "
        "terminal (cron), every line starts with an ISO 8601 timestamp in the series' time zone.",
    )
    send.add_argument(
        "--dry-run", action="store_true", help="do everything but connect: validate, render, count who would receive it"
    )
    send.add_argument("--yes", action="store_true", help="do not ask for confirmation on a terminal")
    send.add_argument(
        "--to",
        metavar="ADDRESS",
        help="send one test copy of each message to ADDRESS only ([TEST] in the subject; recorded nowhere)",
    )

    command(
        "status",
        [_paths("schedule", "recipients", "state")],
        "show what was sent about each seminar, and who gets no mail and why",
        "Per announced seminar: the announcement, changes, cancellation and reminder, when each went "
        "out and to how many; then everyone suppressed (who gets no mail), each with the reason and the "
        "date: refused at RCPT, bounced, unsubscribed by the person, removed by the organiser.",
    )
    command(
        "unsuppress",
        [_paths("schedule", "recipients", "state")],
        "let a suppressed address receive mail again, whatever the reason",
        "Undo what keeps ADDRESS from getting mail: refused at RCPT, bounced (its bounces are forgotten "
        "too), unsubscribed by the person or removed by the organiser. A line of "
        "recipients/unsubscribed.txt is yours to remove: the command says which.",
    ).add_argument("address", metavar="ADDRESS")
    renamed = command(
        "rename-list",
        [_paths("schedule", "state")],
        "carry the state of a renamed list over to its new name",
        "After changing `list:` in the programme: move what was announced, who was told, who unsubscribed and "
        "who bounced from OLD to NEW, keeping calendar UIDs and old unsubscribe links valid. Rename the "
        "recipients file yourself.",
    )
    renamed.add_argument("old", metavar="OLD")
    renamed.add_argument("new", metavar="NEW")
    command(
        "login",
        [_paths("state")],
        "sign in once to Microsoft 365 (device code) for later sends",
        "Sign in to Microsoft 365 with a device code (SMTP_OAUTH2_TENANT, SMTP_OAUTH2_CLIENT_ID); the "
        "refresh token is kept in the state folder (0600) and later sends use it.",
    ).add_argument("provider", choices=["microsoft"])
    _add_subscriber_commands(commands)
    publish = command(
        "publish",
        [_paths("schedule", "templates", "state"), _date()],
        "write the programme for the web: a page per seminar, seminars.ics, an Atom feed",
        "Write into --out a page per seminar (as preview writes it), programme.md, the calendar feed "
        "seminars.ics (the same UID and SEQUENCE as the mails' invitations) and announcements.atom. "
        "Only files whose content changed are rewritten. --now (or --date) sets the moment that "
        "divides upcoming from past.",
    )
    publish.add_argument("--out", dest="site", type=Path, required=True, metavar="DIR", help="the folder to write")
    publish.add_argument(
        "--prune", action="store_true", help="delete the pages of seminars no longer in the schedule (kept without it)"
    )
    command(
        "schema",
        [],
        "print the JSON Schema of data/seminars.yaml (for editors)",
        "Print the JSON Schema of data/seminars.yaml, generated from the validator's own key tables.",
    )
    return parser


def _resolve(args: argparse.Namespace, project: Project) -> None:
    """Fill in the defaults: an option as given, else its setting (environment over .env), else the project's path."""
    env = os.environ if args.command in ("init", "schema") else _env()  # (these two read no settings)
    for name in DEFAULTS:
        if getattr(args, name, None) is None:
            setattr(args, name, project.default(name, env))
            if name == "schedule" and project.root is None and not env.get("MAILER_SCHEDULE"):
                if args.command not in ("init", "schema"):
                    raise ConfigError(
                        f"no seminar-mailer project here: no {MARKER} in {project.cwd} or any folder above it; "
                        "wanted a project folder (`seminar-mailer init DIR` creates one) or --schedule PATH"
                    )
    if getattr(args, "date", None) is None and (value := env.get("MAILER_DATE")):
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
    from mailer.schedule import YEARS

    try:
        day = dt.date.fromisoformat(arg)
    except ValueError:
        raise ConfigError(f"--date {arg!r} is not a date; wanted YYYY-MM-DD, e.g. 2024-01-15") from None
    if not YEARS[0] <= day.year <= YEARS[1]:
        raise ConfigError(f"--date {arg!r} is in the year {day.year}; wanted a year from {YEARS[0]} to {YEARS[1]}")
    return day


def _request(args: argparse.Namespace, *, dry_run: bool) -> Request:
    """The send request from the command line: --date, --now, paths, and the environment."""
    from mailer.dispatch import Request

    date = _today(args.date, dt.UTC) if args.date else None
    now = dt.datetime.now(dt.UTC)
    given = getattr(args, "now", None)
    if given:
        try:
            now = dt.datetime.fromisoformat(given)
        except ValueError:
            raise ConfigError(f"--now {given!r} is not a moment; wanted e.g. 2030-01-14T08:00") from None
    return Request(
        schedule=args.schedule,
        templates=getattr(args, "templates", None),
        recipients=args.recipients,
        state=args.state,
        now=now,
        date=date,
        dry_run=dry_run,
        env=_env(),
        clock_given=bool(given),
    )


def _check(args: argparse.Namespace) -> int:
    from mailer.checks import date_warnings
    from mailer.dispatch import plan_notes
    from mailer.errors import Problem
    from mailer.recipients import UNSUBSCRIBED, list_file, read_entries
    from mailer.render import render_every_week
    from mailer.schedule import load_schedule

    schedule = load_schedule(args.schedule)
    today = _today(args.date, schedule.series.timezone)
    for warning in date_warnings(schedule, today):
        print(f"warning: {printable(str(warning))}", file=sys.stderr)
    print(printable(f"{args.schedule}: OK, {_count_of(len(schedule.seminars), 'seminar')} of {schedule.series.name}"))
    for note in plan_notes(_request(args, dry_run=True)):
        print(f"note: {printable(note)}", file=sys.stderr)
    _check_settings(_env())
    _check_bounces(_env())
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
        raise MailerError(_count_of(len(problems), "invalid recipient line"), problems=tuple(problems))
    print(printable(f"{path}: OK, {_count_of(count, 'recipient')}"))
    templates: Path = args.templates
    if not templates.is_dir():
        if args.templates_given:
            raise ConfigError(f"{templates}: no such template folder; wanted a folder of *.j2 templates")
        weeks = render_every_week(schedule, templates=None)
        print(f"built-in templates: OK, rendered {_count_of(weeks, 'week')}")
    else:
        weeks = render_every_week(schedule, templates=templates)
        rest = "templates not in it come from the built-in set"
        print(printable(f"{templates}: OK, rendered {_count_of(weeks, 'week')} ({rest})"))
    code = _check_smtp(args, schedule.series.sender.ascii_addr) if args.smtp else EXIT_OK
    if args.imap and code == EXIT_OK:
        code = _check_imap()
    return code


def _check_bounces(env: dict[str, str]) -> None:
    """Validate the bounce settings (MAILER_VERP, MAILER_SOFT_BOUNCES, BOUNCES_IMAP_*) that are set."""
    from mailer.config import check_bounce_settings

    if line := check_bounce_settings(env):
        print(printable(line))


def _check_imap() -> int:
    from mailer.config import imap_settings
    from mailer.doctor import check_imap

    checkup = check_imap(imap_settings(_env()))
    print("\n".join(printable(line) for line in checkup.lines()))
    return checkup.exit_code


def _check_smtp(args: argparse.Namespace, series_sender: str) -> int:
    from mailer.config import smtp_settings
    from mailer.doctor import check_smtp

    settings = smtp_settings(_env(), state=args.state)
    checkup = asyncio.run(check_smtp(settings, settings.envelope_from or series_sender))
    print("\n".join(checkup.lines()))
    return checkup.exit_code


def _login(args: argparse.Namespace) -> int:
    from mailer.oauth import MICROSOFT_CACHE, login_microsoft
    from mailer.providers import with_preset

    account = login_microsoft(with_preset(_env()), args.state, show=lambda text: print(text, flush=True))
    print(
        f"Signed in as {account}; kept in {args.state / MICROSOFT_CACHE} (only you can read it). "
        "seminar-mailer send uses it from now on."
    )
    return EXIT_OK


def _check_settings(env: Environment) -> None:
    """Validate the SMTP and MAILER_ settings that ``send`` will read (SMTP_HOST only when it is set), then
    refuse the starter's placeholders; an unknown name in the environment is a warning (in .env, an error)."""
    from mailer.config import ledger_window, placeholders, smtp_settings, unknown_hint

    for name in sorted(env):
        if name not in env.origins and (hint := unknown_hint(name)):
            print(f"warning: in the environment: {printable(hint)}", file=sys.stderr)
    if found := placeholders(env):  # first: the starter's empty password is not "set both or neither"
        raise ConfigError(f"{len(found)} placeholder settings", problems=tuple(found))
    settings = smtp_settings({**env, "SMTP_HOST": env.get("SMTP_HOST") or "localhost"})
    ledger_window(env)
    if env.get("SMTP_HOST"):
        how = "no TLS (plaintext, allowed only to this machine)" if settings.security == "none" else settings.security
        print(printable(f"SMTP settings: OK, {how} to {settings.host}:{settings.port}"))


def _first_recipient(folder: Path, list_name: str) -> Address:
    """The first valid subscriber, or a stand-in when the list has none yet."""
    from mailer.recipients import list_file, read_entries

    try:
        entries = read_entries(list_file(folder, list_name))
        return next(e.recipient for e in entries if e.recipient is not None)
    except (ConfigError, StopIteration):
        return Address(name="", addr="subscriber@example.org")


def _preview(args: argparse.Namespace) -> int:
    from mailer.dispatch import preview
    from mailer.outfiles import write_files

    request = _request(args, dry_run=True)
    week, messages = preview(request)
    if week is None:
        monday = request.day - dt.timedelta(days=request.day.weekday())
        print(
            f"No {week_name(args)} seminar in the week of {monday} to "
            f"{monday + dt.timedelta(days=6)}: nothing to announce."
        )
    if not messages:
        return EXIT_OK
    first = _first_recipient(args.recipients, messages[0].list_name)
    out: Path = args.out
    files: dict[str, bytes] = {}
    written: list[str] = []
    for n, message in enumerate(messages):
        assert message.rendered is not None and message.template is not None
        stem = "announcement" if n == 0 and message.kind == "announcement" else f"{message.kind}-{n}"
        files[f"{stem}.html"] = message.rendered.html.encode()
        files[f"{stem}.txt"] = message.rendered.text.encode()
        written += [f"{out / stem}.html ({len(message.rendered.html.encode()) // 1024} KB)", f"{out / stem}.txt"]
        if message.rendered.page_name:
            files[message.rendered.page_name] = message.rendered.page.encode()
            written.append(str(out / message.rendered.page_name))
        files[f"{stem}.eml"] = message.template.personalise(first)
        written.append(f"{out / stem}.eml (as {first.addr} gets it)")
        if n:
            print(f"\n{'=' * 72}\n")
        print(printable(f"Subject: {message.rendered.subject}\n"))
        print(printable(message.rendered.text), end="")
    write_files(out, files)
    print(printable(f"Wrote {', '.join(written)}"), file=sys.stderr)
    if args.open:
        _open(out / "announcement.html")
    return EXIT_OK


def week_name(args: argparse.Namespace) -> str:
    from mailer.schedule import load_schedule

    return load_schedule(args.schedule).series.name


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


def _env() -> Environment:
    """The settings of every command: the process environment over .env (MAILER_ENV_FILE, default .env in the
    project), read by the one loader, config.load_env."""
    from mailer.config import load_env

    return load_env(Project.discover(Path.cwd()).default("env_file", os.environ), os.environ)


# A test-only way past the refusal of --now on a real send (tests/conftest.py sets it): never for real mail.
TEST_CLOCK = "SEMINAR_MAILER_TEST_ONLY_SEND_NOW"


def _send(args: argparse.Namespace) -> int:
    from mailer.dispatch import MessageReport, run
    from mailer.report import Progress, print_result

    def confirm(messages: list[MessageReport]) -> bool:
        if not sys.stdin.isatty() or args.yes:
            return True
        what = "; ".join(f"{m.subject!r} to {_count_of(m.due, 'recipient')}" for m in messages if m.due)
        return input(f"Send {what}? [y/N] ").strip().lower() in ("y", "yes")

    def progress(message: MessageReport, total: int) -> Progress:
        return Progress(total, tty=sys.stderr.isatty(), label=f"{message.kind}: ")

    def warn(entry: Entry) -> None:
        print(f"warning: {entry.problem} (skipped)", file=sys.stderr)

    if getattr(args, "now", None) and not args.dry_run and not os.environ.get(TEST_CLOCK):
        raise ConfigError(
            f"--now {args.now}: a real send uses the real clock (the Date, the invitations' DTSTAMP and the "
            "ledger's times); wanted --dry-run with --now, or no --now (--now is for preview, --dry-run, "
            f"status and publish; {TEST_CLOCK}=1 lets the tests drive the clock)"
        )
    if args.to:
        from mailer.address import parse_address
        from mailer.dispatch import send_test

        to = parse_address(args.to)
        if to is None:
            raise ConfigError(f"--to {args.to!r} is not an email address; wanted e.g. --to you@example.org")
        for subject in send_test(_request(args, dry_run=True), to):
            print(printable(f"Test copy sent to {to.addr}: {subject}"))
        return EXIT_OK
    result = run(_request(args, dry_run=args.dry_run), confirm=confirm, progress=progress, warn=warn)
    if result.cancelled:
        print("Nothing sent.")
        return EXIT_OK
    print_result(result)
    if result.error is not None:  # after the summary: what was sent before it is on record
        for line in result.error.lines():
            print(f"error: {printable(line)}", file=sys.stderr)
        return result.error.exit_code
    if result.pending:
        return EXIT_TEMPFAIL
    return EXIT_FAILED if result.failed else EXIT_OK


def _no_mail(args: argparse.Namespace, list_name: str) -> dict[str, NoMail]:
    """Everyone who gets no mail (refused at RCPT, bounced, unsubscribed by the person, removed by the organiser)."""
    from mailer.dispatch import status
    from mailer.recipients import UNSUBSCRIBED
    from mailer.subscribers import Subscribers, no_mail

    refused = [(s.recipient, s.address, s.reason, s.at) for s in status(args.state, list_name)[1]]
    with Subscribers(args.state, list_name, create=False) as store:
        return no_mail(store, refused, [args.recipients / UNSUBSCRIBED])


def _status(args: argparse.Namespace) -> int:
    from mailer.dispatch import status
    from mailer.report import print_status
    from mailer.schedule import load_schedule

    series = load_schedule(args.schedule).series
    seminars, _ = status(args.state, series.list_name)
    print_status(seminars, [], tz=series.timezone)
    if nobody := sorted(_no_mail(args, series.list_name).values(), key=lambda n: (n.date, n.key)):
        print(f"Suppressed ({len(nobody)}; `seminar-mailer unsuppress ADDRESS` lets any of them receive mail again):")
        for n in nobody:
            print(printable(f"  {n.address}: {n.detail} ({n.reason}{f' on {n.date}' if n.date else ''})"))
    pending = any(counts.get("deferred") for s in seminars for _, _, counts, _, _ in s.messages)
    return EXIT_TEMPFAIL if pending else EXIT_OK


def _rename_list(args: argparse.Namespace) -> int:
    from mailer.dispatch import rename_list
    from mailer.schedule import LIST_NAME_RE, load_schedule

    for name in (args.old, args.new):
        if not LIST_NAME_RE.fullmatch(name):
            raise ConfigError(f"{name!r} is not a list name; wanted lower-case letters, digits, '.', '_' or '-'")
    named = load_schedule(args.schedule).series.list_name
    if named != args.new:
        raise ConfigError(f"{args.schedule} names the list {named!r}; wanted list: {args.new} there first")
    seminars, subscriptions = rename_list(args.state, args.old, args.new)
    print(f"{args.old} -> {args.new}: {seminars} seminars and {subscriptions} subscriptions carried over")
    return EXIT_OK


def _unsuppress(args: argparse.Namespace) -> int:
    from mailer.address import parse_address
    from mailer.dispatch import unsuppress
    from mailer.recipients import UNSUBSCRIBED, list_file, read_entries
    from mailer.schedule import load_schedule
    from mailer.subscribers import BY_ORGANISER, REFUSED, Subscribers

    address = parse_address(args.address)
    if address is None:
        raise ConfigError(f"{args.address!r} is not an email address; wanted name@example.org")
    list_name = load_schedule(args.schedule).series.list_name
    found = _no_mail(args, list_name).get(address.key)
    if found is None:
        print(f"{address.addr} is not suppressed: it gets mail if it is subscribed (seminar-mailer subscribers).")
        return EXIT_OK
    mine = args.recipients / UNSUBSCRIBED
    for entry in read_entries(mine) if mine.exists() else ():  # whatever else holds it back, this file wins
        if entry.recipient is not None and entry.recipient.key == address.key:
            raise ConfigError(
                f"{address.addr} is in {mine}:{entry.line} ({BY_ORGANISER}), a file only you edit: wanted that "
                "line removed (list files are never rewritten); nothing was changed"
            )
    if found.reason == REFUSED:
        unsuppress(args.state, list_name, address)
    try:
        listed = any(
            e.recipient is not None and e.recipient.key == address.key
            for e in read_entries(list_file(args.recipients, list_name))
        )
    except ConfigError:  # no list file here: the store alone decides
        listed = False
    with Subscribers(args.state, list_name) as store:  # (also an address refused and then bounced)
        store.readmit(address.key, listed=listed)
    print(printable(f"{address.addr} is no longer suppressed (it was {found}): the next send includes it."))
    return EXIT_OK


# --- subscribers: serve, subscribe, unsubscribe, subscribers, bounces --------------------------------


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
        (f"{me} check --imap", "the bounce mailbox: BOUNCES_IMAP_* in .env (docs/bounces.md)"),
    ]
    width = max(len(command) for command, _ in steps) + 2
    print("\nNext:")
    for command, why in steps:
        print(f"  {command.ljust(width)}{'# ' + why if why else ''}".rstrip())
    print(
        "\nFrom cron, send every 15 minutes and, once the bounce mailbox is set up, bounces every hour "
        "(crontab -e, as the owner of the folder), also in crontab.example:"
    )
    print(created.crontab.split("\n", 1)[1], end="")
    return EXIT_OK


def _schema(args: argparse.Namespace) -> int:
    from mailer.schema import schema_text

    print(schema_text(), end="")
    return EXIT_OK


def _publish(args: argparse.Namespace) -> int:
    from mailer.publish import publish

    request = _request(args, dry_run=True)
    now = request.now if request.clock_given or request.date is None else dt.datetime.combine(request.date, dt.time())
    done = publish(args.schedule, out=args.site, state=args.state, templates=args.templates, now=now, prune=args.prune)
    print(
        f"{args.site}: {_count_of(done.seminars, 'seminar')}, {_count_of(done.events, 'calendar event')}, "
        f"{_count_of(done.entries, 'announcement')} in the feed; {_count_of(len(done.written), 'file')} written, "
        f"{len(done.unchanged)} unchanged"
    )
    for name in done.written:
        print(printable(f"  wrote   {args.site / name}"))
    for name in done.removed:
        print(printable(f"  removed {args.site / name}"))
    for name in done.stale:
        print(printable(f"  kept    {args.site / name} (its seminar is no longer in the schedule; --prune deletes it)"))
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


def _add_subscriber_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the web service: one-click unsubscribe, subscribe with confirmation",
        description="Serve <service_url>/unsubscribe, /subscribe and /confirm behind your reverse proxy "
        "(see README). Needs service_url in the series and the SMTP settings (for confirmation mails).",
    )
    _add_paths(serve, "schedule", "state")
    serve.add_argument("--listen", default="127.0.0.1:8080", metavar="HOST:PORT", help="default 127.0.0.1:8080")
    serve.add_argument(
        "--trusted-proxy",
        default="127.0.0.1",
        metavar="IPS",
        help="comma-separated addresses whose X-Forwarded-For is believed (default 127.0.0.1)",
    )
    for name, verb in (("subscribe", "add"), ("unsubscribe", "remove")):
        command = commands.add_parser(
            name,
            help=f"{verb} one subscriber (in the state folder's store; list files are never rewritten)",
            description=f"{verb.capitalize()} ADDRESS: recorded in state/subscribers.sqlite3, "
            "read by the next send and by a running one.",
        )
        _add_paths(command, "schedule", "recipients", "state")
        command.add_argument("address", metavar="ADDRESS", help="name@example.org or 'Name <name@example.org>'")
    listing = commands.add_parser(
        "subscribers",
        help="count subscribers and list each with its state and where it came from",
        description="Everyone the next send considers: the list file, then confirmed subscribers from the "
        "store; with each one's state and source.",
    )
    _add_paths(listing, "schedule", "recipients", "state")
    listing.add_argument("--counts", action="store_true", help="only the counts")
    bounces = commands.add_parser(
        "bounces",
        help="read the bounce mailbox and unsubscribe addresses that bounce",
        description="Read bounces from --maildir, --mbox or IMAP (BOUNCES_IMAP_* settings). Only a bounce "
        "tied to a message sent to that very address counts (its bounce token, VERP or DSN ENVID, or its "
        "Message-ID in the ledger); other mail is left in place as not ours. A hard bounce unsubscribes at "
        "once; soft bounces about MAILER_SOFT_BOUNCES distinct seminars (default 3) do too. Read bounces are "
        "moved to seminar-mailer-processed (BOUNCES_IMAP_DONE), unreadable mail to seminar-mailer-quarantine "
        "with its reason, so a rerun reads only new mail. See docs/bounces.md.",
        epilog=_EXAMPLES["bounces"],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_paths(bounces, "schedule", "state")
    where = bounces.add_mutually_exclusive_group()
    where.add_argument("--maildir", type=Path, metavar="PATH", help="a local Maildir")
    where.add_argument("--mbox", type=Path, metavar="PATH", help="a local mbox file")


def _address_arg(raw: str) -> Address:
    from mailer.address import parse_address

    address = parse_address(raw)
    if address is None:
        raise ConfigError(
            f"ADDRESS {raw!r} is not a valid email address; wanted name@example.org or 'Name <name@example.org>'"
        )
    return address


def _serve(args: argparse.Namespace) -> int:
    from mailer.config import listen_socket, smtp_settings, token_key
    from mailer.schedule import load_schedule
    from mailer.subscribers import Subscribers
    from mailer.web import Service, serve

    series = load_schedule(args.schedule).series
    if series.service_url is None:
        raise ConfigError(
            f"{args.schedule}: the series has no service_url; wanted the public https address at which "
            "serve is reached, e.g. service_url: https://seminars.example.org/lm"
        )
    env = _env()
    sock = listen_socket(args.listen, option="--listen")  # before anything is opened: a bad address is exit 2
    store = Subscribers(args.state, series.list_name)
    service = Service(series, store, token_key(args.state, env), smtp_settings(env, state=args.state))
    print(f"Serving {series.service_url} on http://{args.listen} (Ctrl-C stops)", file=sys.stderr, flush=True)
    serve(service, sock, forwarded_allow_ips=args.trusted_proxy)
    return EXIT_OK


def _subscribe(args: argparse.Namespace) -> int:
    from mailer.recipients import UNSUBSCRIBED, suppressed_keys
    from mailer.schedule import load_schedule
    from mailer.subscribers import Subscribers

    list_name = load_schedule(args.schedule).series.list_name
    address = _address_arg(args.address)
    with Subscribers(args.state, list_name) as store:
        if args.command == "subscribe":
            changed = store.subscribe(address, "command")
            print(f"{address.addr}: {'subscribed to' if changed else 'already subscribed to'} {list_name}")
            if address.key in suppressed_keys([args.recipients / UNSUBSCRIBED]):
                print(
                    f"warning: {address.addr} is in {args.recipients / UNSUBSCRIBED}, which wins: "
                    "remove it there to send to it",
                    file=sys.stderr,
                )
        else:
            changed = store.unsubscribe(address.key, "command", address=address)
            print(f"{address.addr}: {'unsubscribed from' if changed else 'already unsubscribed from'} {list_name}")
    return EXIT_OK


def _subscribers(args: argparse.Namespace) -> int:
    from mailer.dispatch import status
    from mailer.recipients import UNSUBSCRIBED, list_file
    from mailer.schedule import load_schedule
    from mailer.subscribers import Subscribers, roster

    list_name = load_schedule(args.schedule).series.list_name
    path = list_file(args.recipients, list_name)
    refused = [(s.recipient, s.address, s.reason, s.at) for s in status(args.state, list_name)[1]]
    with Subscribers(args.state, list_name, create=False) as store:
        result = roster(path, [args.recipients / UNSUBSCRIBED], store, refused)
    print(f"{list_name}: {result.counts.get('subscribed', 0)} receive the next announcement")
    for state in ("subscribed", "unsubscribed", "duplicate", "invalid"):
        print(f"  {state:<13}{result.counts.get(state, 0)}")
    print(f"  {'pending':<13}{result.pending}  (asked to subscribe, not yet confirmed)")
    if not args.counts:
        for line in result.lines:
            print(f"{line.address}\t{line.state}\t{line.source}")
    return EXIT_OK


def _bounces(args: argparse.Namespace) -> int:
    import time

    from mailer.bounces import Judge, imap_source, maildir_source, mbox_source, process
    from mailer.config import imap_settings, processed_folder, soft_bounce_limit, token_key
    from mailer.ledger import LEDGER_FILE, Ledger
    from mailer.schedule import load_schedule
    from mailer.subscribers import Subscribers

    env = _env()
    list_name = load_schedule(args.schedule).series.list_name
    limit = soft_bounce_limit(env)
    done = processed_folder(env)
    if args.maildir:
        source = maildir_source(args.maildir, done_folder=done)
    elif args.mbox:
        source = mbox_source(args.mbox)
    else:
        source = imap_source(imap_settings(env))
    ledger = Ledger(args.state, list_name, readonly=True) if (args.state / LEDGER_FILE).exists() else None
    judge = Judge(ledger, token_key(args.state, env, create=False), list_name)
    with Subscribers(args.state, list_name) as store:
        report = process(source, store, judge, soft_limit=limit, now=time.time())
    earlier = f"; {report.earlier} left in place by earlier runs (not read again)" if report.earlier else ""
    print(
        f"Read {_count_of(report.read, 'new message')}: {report.hard} hard bounces, {report.soft} soft, "
        f"{report.warnings} delay warnings (not counted), {report.not_ours} not ours, {report.other} not bounces "
        f"(left in place), {report.quarantined.__len__()} quarantined{earlier}"
    )
    for key, why in report.unsubscribed:
        print(printable(f"unsubscribed: {key} ({why})"))
    for name, claims in report.strangers:
        print(printable(f"not ours: {name} claims {claims}, but names no delivery of ours to it (left in place)"))
    for name, why in report.quarantined:
        print(printable(f"quarantined: {name}: {why}"))
    return EXIT_OK


_SUBSCRIBER_COMMANDS = {
    "serve": _serve,
    "subscribe": _subscribe,
    "unsubscribe": _subscribe,
    "subscribers": _subscribers,
    "bounces": _bounces,
}
_COMMANDS = {
    "init": _init,
    "check": _check,
    "preview": _preview_or_serve,
    "send": _send,
    "status": _status,
    "unsuppress": _unsuppress,
    "rename-list": _rename_list,
    "login": _login,
    "schema": _schema,
    "publish": _publish,
    **_SUBSCRIBER_COMMANDS,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; return its exit code. MailerError is the user's to fix; anything else is a bug (exit 70)."""
    parser = _parser()
    args = _parse(parser, argv)
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    args.templates_given = getattr(args, "templates", None) is not None or bool(os.environ.get("MAILER_TEMPLATES"))
    try:
        _resolve(args, Project.discover(Path.cwd()))
        if args.command == "send":
            from mailer.logs import timestamp_unless_terminal

            timestamp_unless_terminal(zone=lambda: _series_zone(args.schedule))
        return _COMMANDS[args.command](args)
    except MailerError as err:
        for line in _located(err).lines():
            print(f"error: {printable(line)}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:  # before the bug handler: a reader that stops early is no bug
        return _closed_pipe()
    except KeyboardInterrupt:
        # (During delivery SIGINT is handled by dispatch: in-flight messages finish and are recorded.)
        print("interrupted: run the command again; whatever was sent is recorded and not sent twice", file=sys.stderr)
        return EXIT_TEMPFAIL
    except Exception as err:  # a bug: one line here, the traceback in a file
        report = write_crash_report(
            err, folder=getattr(args, "state", None), argv=list(sys.argv if argv is None else argv)
        )
        where = f"the full traceback is in {report}" if report else "the traceback could not be written to a file"
        print(
            f"error: internal error ({type(err).__name__}), a bug in seminar-mailer, not in your input; "
            f"{where}: please report it",
            file=sys.stderr,
        )
        return EXIT_SOFTWARE


EXIT_PIPE = 141  # 128 + SIGPIPE: the reader of the output went away, as git and grep end then


def _closed_pipe() -> int:
    """The reader of stdout went away (``status | head -1``): stop quietly, with no crash file."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush then has nowhere to fail
    os.close(devnull)
    return EXIT_PIPE


def _located(err: MailerError) -> MailerError:
    """A settings error with the ``.env:LINE`` its value came from, when it came from .env."""
    if not isinstance(err, ConfigError):
        return err
    try:
        return _env().locate(err)
    except MailerError:  # .env itself is what is wrong: that error was the one raised
        return err


def _series_zone(schedule: Path) -> dt.tzinfo | None:
    """The series' time zone for send's log lines; None (the machine's) while the schedule does not load."""
    from mailer.schedule import load_schedule

    try:
        return load_schedule(schedule).series.timezone
    except MailerError:
        return None


def run() -> None:
    """Console-script entry point."""
    code = main()
    try:
        sys.stdout.flush()  # what main printed into the pipe's buffer goes out here
    except BrokenPipeError:
        code = _closed_pipe()
    sys.exit(code)
