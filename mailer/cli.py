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
from mailer.errors import EXIT_FAILED, EXIT_INVALID, EXIT_OK, EXIT_TEMPFAIL, ConfigError, MailerError

if TYPE_CHECKING:
    from mailer.subscribers import Subscribers

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
        help="show who has been sent this week's announcement",
        description="Counts per state for this week's announcement and when it was sent.",
    )
    _add_paths(status, "schedule", "recipients", "state")
    _add_date(status)
    _add_subscriber_commands(commands)

    check.add_argument(
        "--recipients",
        type=Path,
        default=Path(os.environ.get("MAILER_RECIPIENTS") or "recipients"),
        metavar="PATH",
        help="the folder of mailing-list files (env MAILER_RECIPIENTS; default recipients)",
    )
    return parser


def _today(arg: str | None, tz: dt.tzinfo) -> dt.date:
    if arg is None:
        return dt.datetime.now(tz).date()
    try:
        return dt.date.fromisoformat(arg)
    except ValueError:
        raise ConfigError(f"--date {arg!r} is not a date; wanted YYYY-MM-DD, e.g. 2024-01-15") from None


def _check(args: argparse.Namespace) -> int:
    from mailer.errors import Problem
    from mailer.recipients import UNSUBSCRIBED, list_file, read_entries
    from mailer.schedule import load_schedule

    schedule = load_schedule(args.schedule)
    print(f"{args.schedule}: OK, {len(schedule.seminars)} seminars of {schedule.series.name}")
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
    print(f"{path}: OK, {count} recipients")
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
        import webbrowser

        webbrowser.open((out / "announcement.html").resolve().as_uri())
    return EXIT_OK


def _env() -> dict[str, str]:
    """The process environment over .env (MAILER_ENV_FILE, default ./.env): the environment wins."""
    from mailer.config import read_dotenv

    return {**read_dotenv(Path(os.environ.get("MAILER_ENV_FILE") or ".env")), **os.environ}


def _send(args: argparse.Namespace) -> int:
    from mailer.config import ledger_window, smtp_settings, token_key
    from mailer.ledger import LEDGER_FILE, SUPPRESSED_FILE, Ledger, add_suppressed, run_lock
    from mailer.message import announcement_id, build_message
    from mailer.recipients import DUE, UNSUBSCRIBED, classify, list_file, suppressed_keys
    from mailer.render import render
    from mailer.report import Progress, print_summary
    from mailer.schedule import load_schedule, week_of
    from mailer.send import deliver
    from mailer.subscribers import StillWanted, Subscribers

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
    store = Subscribers(args.state, series.list_name, create=not args.dry_run)  # serve, bounces, (un)subscribe

    if args.dry_run:
        done = Ledger(args.state, announcement).done() if (args.state / LEDGER_FILE).exists() else set()
        counts = _count(path, suppressed_from, done, store)
        print_summary(counts, None, dry_run=True, subject=rendered.subject)
        return EXIT_OK

    with run_lock(args.state, series.list_name):
        ledger = Ledger(args.state, announcement, window=ledger_window(env))
        try:
            done = ledger.done()
            counts = _count(path, suppressed_from, done, store)
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
                for kind, e in classify(
                    path,
                    suppressed=suppressed_keys(suppressed_from) | store.unsubscribed_keys(),
                    done=done,
                    subscribers=store.confirmed(),
                )
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
                    still_wanted=StillWanted(store),
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


def _count(path: Path, suppressed_from: list[Path], done: set[str], store: Subscribers) -> dict[str, int]:
    """One pass over the list and the store: how many fall in each class; invalid lines are warned about."""
    from mailer.recipients import INVALID, classify, suppressed_keys

    counts: dict[str, int] = {}
    suppressed = suppressed_keys(suppressed_from) | store.unsubscribed_keys()
    for kind, entry in classify(path, suppressed=suppressed, done=done, subscribers=store.confirmed()):
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
    from mailer.ledger import SUPPRESSED_FILE
    from mailer.recipients import UNSUBSCRIBED, list_file
    from mailer.schedule import load_schedule
    from mailer.subscribers import Subscribers, roster

    list_name = load_schedule(args.schedule).series.list_name
    path = list_file(args.recipients, list_name)
    with Subscribers(args.state, list_name, create=False) as store:
        result = roster(path, [args.recipients / UNSUBSCRIBED, args.state / SUPPRESSED_FILE], store)
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


_COMMANDS = {"check": _check, "preview": _preview, "send": _send, "status": _status, **_SUBSCRIBER_COMMANDS}


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
