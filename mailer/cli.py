"""Thin commands (check, preview) that call the stages; the only place that prints and exits."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mailer import __version__
from mailer.address import Address
from mailer.crash import write_crash_report
from mailer.errors import EXIT_FAILED, EXIT_OK, EXIT_SOFTWARE, EXIT_TEMPFAIL, ConfigError, MailerError
from mailer.terminal import printable

if TYPE_CHECKING:
    from mailer.dispatch import Request
    from mailer.recipients import Entry

if TYPE_CHECKING:
    pass

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
    parser.add_argument(
        "--now",
        metavar="YYYY-MM-DDTHH:MM[+ZONE]",
        help="act as if it were this moment (local to the series without a zone): what is due then; "
        "default: the clock. A preview or dry run of a past --date acts as at the start of that week",
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seminar-mailer",
        description="Announce this week's seminar from data/seminars.yaml by email.",
        epilog="Exit codes: 0 done or nothing due, 1 some recipients failed permanently, "
        "2 invalid input or configuration (nothing sent), 70 a bug (traceback written to a file), 75 try again later.",
    )
    parser.add_argument("--version", action="version", version=f"seminar-mailer {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    check = commands.add_parser(
        "check",
        help="validate the schedule and report every problem",
        description="Validate the schedule; exit 0 when valid, 2 when not.",
    )
    _add_paths(check, "schedule", "templates")
    check.add_argument(
        "--date",
        metavar="YYYY-MM-DD",
        help="today, for the date warnings and the weeks to render (default: today in the series' time zone)",
    )

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

    send = commands.add_parser(
        "send",
        help="send this week's announcement to every subscriber, exactly once",
        description="Render this week's announcement once and deliver it to every subscriber not yet "
        "sent to. SMTP settings come from the environment or .env (see README).",
    )
    _add_paths(send, "schedule", "templates", "recipients", "state")
    _add_date(send)
    send.add_argument(
        "--dry-run", action="store_true", help="do everything but connect: validate, render, count who would receive it"
    )
    send.add_argument("--yes", action="store_true", help="do not ask for confirmation on a terminal")

    status = commands.add_parser(
        "status",
        help="show what was sent about each seminar, and who is suppressed",
        description="Per announced seminar: the announcement, changes, cancellation and reminder, when "
        "each went out and to how many; then the suppressed addresses and why.",
    )
    _add_paths(status, "schedule", "state")

    unsuppress = commands.add_parser(
        "unsuppress",
        help="let a suppressed address (refused by its server) receive mail again",
        description="Remove ADDRESS from the suppressed addresses in the state folder.",
    )
    unsuppress.add_argument("address", metavar="ADDRESS")
    _add_paths(unsuppress, "schedule", "state")
    _add_subscriber_commands(commands)

    check.add_argument(
        "--recipients",
        type=Path,
        default=Path(os.environ.get("MAILER_RECIPIENTS") or "recipients"),
        metavar="PATH",
        help="the folder of mailing-list files (env MAILER_RECIPIENTS; default recipients)",
    )
    check.add_argument(
        "--smtp",
        action="store_true",
        help="also connect with the SMTP settings: EHLO, STARTTLS, AUTH, MAIL FROM then RSET; sends nothing",
    )
    _add_paths(check, "state")  # check --smtp reads a login microsoft sign-in from it

    login = commands.add_parser(
        "login",
        help="sign in once to Microsoft 365 (device code) for later sends",
        description="Sign in to Microsoft 365 with a device code (SMTP_OAUTH2_TENANT, SMTP_OAUTH2_CLIENT_ID); "
        "the refresh token is kept in the state folder (0600) and later sends use it.",
    )
    login.add_argument("provider", choices=["microsoft"])
    _add_paths(login, "state")
    return parser


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
    if args.now:
        try:
            now = dt.datetime.fromisoformat(args.now)
        except ValueError:
            raise ConfigError(f"--now {args.now!r} is not a moment; wanted e.g. 2030-01-14T08:00") from None
    return Request(
        schedule=args.schedule,
        templates=getattr(args, "templates", None),
        recipients=args.recipients,
        state=args.state,
        now=now,
        date=date,
        dry_run=dry_run,
        env=_env(),
        clock_given=bool(args.now),
    )


def _check(args: argparse.Namespace) -> int:
    from mailer.checks import date_warnings, render_coming_weeks
    from mailer.errors import Problem
    from mailer.recipients import UNSUBSCRIBED, list_file, read_entries
    from mailer.schedule import load_schedule

    schedule = load_schedule(args.schedule)
    today = _today(args.date, schedule.series.timezone)
    for warning in date_warnings(schedule, today):
        print(f"warning: {printable(str(warning))}", file=sys.stderr)
    weeks = render_coming_weeks(schedule, today=today, templates=args.templates)
    print(
        printable(f"{args.schedule}: OK, {len(schedule.seminars)} seminars of {schedule.series.name}")
        + (f"; the {weeks} coming weeks render" if weeks else "")
    )
    _check_settings(_env())
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
    print(printable(f"{path}: OK, {count} recipients"))
    if args.smtp:
        return _check_smtp(args, schedule.series.sender.ascii_addr)
    return EXIT_OK


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


def _check_settings(env: dict[str, str]) -> None:
    """Validate the SMTP and MAILER_ settings that ``send`` will read (SMTP_HOST only when it is set)."""
    from mailer.config import ledger_window, smtp_settings

    settings = smtp_settings({**env, "SMTP_HOST": env.get("SMTP_HOST") or "localhost"})
    ledger_window(env)
    if env.get("SMTP_HOST"):
        print(printable(f"SMTP settings: OK, {settings.security} to {settings.host}:{settings.port}"))


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
        import webbrowser

        webbrowser.open((out / "announcement.html").resolve().as_uri())
    return EXIT_OK


def week_name(args: argparse.Namespace) -> str:
    from mailer.schedule import load_schedule

    return load_schedule(args.schedule).series.name


def _env() -> dict[str, str]:
    """The process environment over .env (MAILER_ENV_FILE, default ./.env): the environment wins."""
    from mailer.config import read_dotenv

    return {**read_dotenv(Path(os.environ.get("MAILER_ENV_FILE") or ".env")), **os.environ}


def _send(args: argparse.Namespace) -> int:
    from mailer.dispatch import MessageReport, run
    from mailer.report import Progress, print_result

    def confirm(messages: list[MessageReport]) -> bool:
        if not sys.stdin.isatty() or args.yes:
            return True
        what = "; ".join(f"{m.subject!r} to {m.due} recipients" for m in messages if m.due)
        return input(f"Send {what}? [y/N] ").strip().lower() in ("y", "yes")

    def progress(message: MessageReport, total: int) -> Progress:
        return Progress(total, tty=sys.stderr.isatty(), label=f"{message.kind}: ")

    def warn(entry: Entry) -> None:
        print(f"warning: {entry.problem} (skipped)", file=sys.stderr)

    result = run(_request(args, dry_run=args.dry_run), confirm=confirm, progress=progress, warn=warn)
    if result.cancelled:
        print("Nothing sent.")
        return EXIT_OK
    print_result(result)
    if result.pending:
        return EXIT_TEMPFAIL
    return EXIT_FAILED if result.failed else EXIT_OK


def _status(args: argparse.Namespace) -> int:
    from mailer.dispatch import status
    from mailer.report import print_status
    from mailer.schedule import load_schedule

    series = load_schedule(args.schedule).series
    seminars, suppressed = status(args.state, series.list_name)
    print_status(seminars, suppressed, tz=series.timezone)
    pending = any(counts.get("deferred") for s in seminars for _, _, counts, _, _ in s.messages)
    return EXIT_TEMPFAIL if pending else EXIT_OK


def _unsuppress(args: argparse.Namespace) -> int:
    from mailer.address import parse_address
    from mailer.dispatch import unsuppress
    from mailer.schedule import load_schedule

    address = parse_address(args.address)
    if address is None:
        raise ConfigError(f"{args.address!r} is not an email address; wanted name@example.org")
    series = load_schedule(args.schedule).series
    if unsuppress(args.state, series.list_name, address):
        print(f"{address.addr} is no longer suppressed: the next send includes it.")
        return EXIT_OK
    print(f"{address.addr} was not suppressed.")
    return EXIT_OK


# --- subscribers: serve, subscribe, unsubscribe, subscribers, bounces --------------------------------


def _add_subscriber_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
        help="read the bounce mailbox and suppress addresses that bounce",
        description="Read bounces from --maildir, --mbox or IMAP (BOUNCES_IMAP_* settings): a hard bounce "
        "unsubscribes at once, MAILER_SOFT_BOUNCES soft bounces (default 3, distinct announcements) too. "
        "Processed messages are moved aside, so a rerun reads only new ones.",
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
    from mailer.config import smtp_settings, token_key
    from mailer.schedule import load_schedule
    from mailer.subscribers import Subscribers
    from mailer.web import Service, serve

    series = load_schedule(args.schedule).series
    if series.service_url is None:
        raise ConfigError(
            f"{args.schedule}: the series has no service_url; wanted the public https address at which "
            "serve is reached, e.g. service_url: https://seminars.example.org/lm"
        )
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"--listen {args.listen!r}; wanted HOST:PORT such as 127.0.0.1:8080")
    store = Subscribers(args.state, series.list_name)
    service = Service(series, store, token_key(args.state), smtp_settings(_env()))
    print(f"Serving {series.service_url} on http://{args.listen} (Ctrl-C stops)", file=sys.stderr, flush=True)
    serve(service, host.strip("[]"), int(port), forwarded_allow_ips=args.trusted_proxy)
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
    refused = {s.recipient: f"refused: {s.reason}" for s in status(args.state, list_name)[1]}
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

    from mailer.bounces import imap_source, maildir_source, mbox_source, process, soft_limit
    from mailer.schedule import load_schedule
    from mailer.subscribers import Subscribers

    env = _env()
    list_name = load_schedule(args.schedule).series.list_name
    limit = soft_limit(env)
    source = maildir_source(args.maildir) if args.maildir else mbox_source(args.mbox) if args.mbox else imap_source(env)
    with Subscribers(args.state, list_name) as store:
        report = process(source, store, soft_limit=limit, now=time.time())
    print(
        f"Read {report.read} messages: {report.hard} hard bounces, {report.soft} soft, {report.warnings} delay "
        f"warnings (not counted), {report.other} not bounces (left in place)"
    )
    for key, why in report.suppressed:
        print(f"unsubscribed: {key} ({why})")
    return EXIT_OK


_SUBSCRIBER_COMMANDS = {
    "serve": _serve,
    "subscribe": _subscribe,
    "unsubscribe": _subscribe,
    "subscribers": _subscribers,
    "bounces": _bounces,
}


_COMMANDS = {
    "check": _check,
    "preview": _preview,
    "send": _send,
    "status": _status,
    "unsuppress": _unsuppress,
    "login": _login,
    **_SUBSCRIBER_COMMANDS,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; return its exit code. MailerError is the user's to fix; anything else is a bug (70)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except MailerError as err:
        for line in err.lines():
            print(f"error: {printable(line)}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        # (During delivery SIGINT is handled by dispatch: in-flight messages finish and are recorded.)
        print("interrupted: run the command again; whatever was sent is recorded and not sent twice", file=sys.stderr)
        return EXIT_TEMPFAIL
    except Exception as err:  # a bug: one line here, the traceback in a file
        report = write_crash_report(err, folder=getattr(args, "state", None), argv=argv)
        where = f"the full traceback is in {report}" if report else "the traceback could not be written to a file"
        print(
            f"error: internal error ({type(err).__name__}), a bug in seminar-mailer, not in your input; "
            f"{where}: please report it",
            file=sys.stderr,
        )
        return EXIT_SOFTWARE


def run() -> None:
    """Console-script entry point."""
    sys.exit(main())
