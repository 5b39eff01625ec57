"""The argument parser: every command, option, help text and example; unknown options answered with a did-you-mean."""

from __future__ import annotations

import argparse
import difflib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from mailer import __version__
from mailer.programme.project import DEFAULTS

if TYPE_CHECKING:
    pass


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
    "approve": """\
examples:
  seminar-mailer send --dry-run                      what waits, and which week to approve
  seminar-mailer approve --date 2030-01-14           the week of that day, as the file is now
  seminar-mailer approve --by 'Ada Lovelace'""",
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
  seminar-mailer publish --out site                 a website: index.html, a page and an .ics per seminar,
                                                    seminars.ics, announcements.atom (open site/index.html)
  seminar-mailer publish --out site --prune         also delete pages of seminars no longer in the file
  seminar-mailer publish --out ../jekyll/seminars --format jekyll
                                                    Markdown pages and programme.md for a site Jekyll builds
  (several series: each into site/<list>/, and site/index.html and site/seminars.ics of them all)""",
}


class _Parser(argparse.ArgumentParser):
    """argparse with did-you-mean for commands and choices (options: see ``parse``)."""

    def error(self, message: str) -> NoReturn:
        if match := re.search(r"argument (\S+): invalid choice: '([^']*)' \(choose from (.*)\)", message):
            what, word, choices = match[1], match[2], re.findall(r"'([^']*)'", match[3])
            guess = difflib.get_close_matches(word, choices, n=1, cutoff=0.5)
            hint = f"did you mean '{guess[0]}'?" if guess else f"wanted one of: {', '.join(choices)}"
            message = f"unknown {'command' if what == 'COMMAND' else what} '{word}'; {hint}"
        super().error(message)


def parse(parser: _Parser, argv: Sequence[str] | None) -> argparse.Namespace:
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
    """Path options as a parent parser. Defaults are filled in later (see ``resolve_defaults``), so an option
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
    """Path options on a command made without ``_paths`` parents (defaults filled in by ``resolve_defaults``)."""
    for name in names:
        env, default = DEFAULTS[name]
        parser.add_argument(
            f"--{name}",
            type=Path,
            default=argparse.SUPPRESS,
            metavar="PATH",
            help=f"{_PATH_HELP[name]} (env {env}; default {default} in the project)",
        )
        if name == "schedule":
            parser.add_argument(
                "--series",
                metavar="LIST",
                default=argparse.SUPPRESS,
                help="only the series (or digest) whose list: is LIST (default: every programme in data/)",
            )


def build_parser() -> _Parser:
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

    init = command(
        "init",
        [_date()],
        "create a starter project: schedule, list, .env.example, cron line",
        "Create a starter project in DIR (default: here): a commented data/seminars.yaml with one "
        "example seminar in the week after --date, its JSON Schema for editors, recipients/<list>.txt, "
        ".env.example, .gitignore and crontab.example. Never overwrites a file. With --add-series LIST inside "
        "a project: another series of it, data/LIST.yaml and recipients/LIST.txt.",
    )
    init.add_argument("dir", nargs="?", type=Path, default=Path("."), metavar="DIR")
    init.add_argument(
        "--add-series",
        metavar="LIST",
        help="add a series with this list name to the project DIR is in (data/LIST.yaml, recipients/LIST.txt)",
    )

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
        "Per announced seminar: the announcement, changes, cancellation, reminder and follow-up, when each went "
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
    approve = command(
        "approve",
        [_paths("schedule", "state"), _date()],
        "approve a week's mails as the file is now (series 'approval: required')",
        "Record in the ledger that the seminars of the week holding --date (default: today) may be mailed about "
        "as the file holds them now: the announcement, and any change, cancellation or reminder. The next send "
        "(cron) sends them; an edit of a date, time, place, Zoom link, speaker, title or cancellation of that "
        "week afterwards waits for another approve.",
    )
    approve.add_argument("--by", metavar="NAME", help="who approves (default: the user running the command)")
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
    add_subscriber_commands(commands)
    publish = command(
        "publish",
        [_paths("schedule", "templates", "state"), _date()],
        "write the programme for the web: a website (or Jekyll pages), seminars.ics, an Atom feed",
        "Write into --out a website (index.html, a page and an .ics per seminar) or, with the series' "
        "'site: jekyll' or --format jekyll, a Markdown page per seminar (as preview writes it) and programme.md; "
        "and always the calendar feed seminars.ics (the same UID and SEQUENCE as the mails' invitations) and "
        "announcements.atom. Only files whose content changed are rewritten. --now (or --date) sets the "
        "moment that divides upcoming from past.",
    )
    publish.add_argument("--out", dest="site", type=Path, required=True, metavar="DIR", help="the folder to write")
    publish.add_argument(
        "--prune", action="store_true", help="delete the pages of seminars no longer in the schedule (kept without it)"
    )
    publish.add_argument(
        "--format",
        dest="site_format",
        choices=["html", "jekyll"],
        help="html: a complete website; jekyll: Markdown pages for Jekyll (default: the series' 'site', else html)",
    )
    imported = command(
        "import",
        [],
        "write a programme from announcement pages you already have (Jekyll Markdown)",
        "Read announcement pages in the format preview writes (the Jekyll pages of an existing archive) and write "
        "a commented programme from which preview writes each of them again, byte for byte: the series inferred "
        "from them, each page's seminars in full and those its coming list names. It never overwrites a file.",
    )
    imported.add_argument("pages", nargs="*", type=Path, metavar="PAGE", help="announcement pages (.md)")
    imported.add_argument(
        "--ics",
        action="append",
        default=[],
        type=Path,
        metavar="FILE",
        help="a calendar export (.ics), one seminar an event",
    )
    imported.add_argument("--timezone", required=True, help="the IANA zone the pages' times are in (Europe/Stockholm)")
    imported.add_argument(
        "--sender", metavar="ADDRESS", help="From: Name <address@example.org> (default: a placeholder)"
    )
    imported.add_argument("--list", dest="list_name", metavar="NAME", help="the list's name (default: from the series)")
    imported.add_argument(
        "--out", dest="target", type=Path, default=Path("data/seminars.yaml"), help="default data/seminars.yaml"
    )
    add = command(
        "add",
        [_paths("schedule")],
        "append a TBA seminar on every given weekday of a span (a term's slots)",
        "Append to the programme a seminar (speaker TBA, or --speaker) on every --every weekday from --from to "
        "--until that holds no seminar yet, less --skip; the rest of the file stays as written, comments "
        "included. Fill the slots in later: check lists what is still TBA.",
    )
    add.add_argument("--every", required=True, metavar="WEEKDAY", help="monday ... sunday (or mon, tue, ...)")
    add.add_argument("--from", dest="start", required=True, metavar="YYYY-MM-DD", help="the first day of the span")
    add.add_argument("--until", required=True, metavar="YYYY-MM-DD", help="the last day of the span")
    add.add_argument("--skip", default="", metavar="DATE,...", help="days to leave out (a holiday, a conference)")
    add.add_argument("--speaker", default="TBA", help="the speaker of each new slot (default TBA)")
    shift = command(
        "shift",
        [_paths("schedule", "state")],
        "move the seminars from a date on by some days, or to another start time",
        "Move every seminar from --from on (to --until) by --by days, or to the start --to-time, writing only "
        "those values (and, for a seminar subscribers were told of, its id: so it keeps its identity). The next "
        "send mails each announced seminar's change to those told of it, as for any edit.",
    )
    shift.add_argument("--from", dest="start", required=True, metavar="YYYY-MM-DD", help="the first seminar to move")
    shift.add_argument("--until", metavar="YYYY-MM-DD", help="the last day whose seminars move (default: all later)")
    how = shift.add_mutually_exclusive_group(required=True)
    how.add_argument("--by", metavar="DAYS", help="days to move them by: 7d, 14d; earlier: --by=-7d")
    how.add_argument("--to-time", metavar="HH:MM", help="the new start time, in the series' zone")
    command(
        "schema",
        [],
        "print the JSON Schema of data/seminars.yaml (for editors)",
        "Print the JSON Schema of data/seminars.yaml, generated from the validator's own key tables.",
    )
    return parser


def add_subscriber_commands(commands: argparse._SubParsersAction[_Parser]) -> None:
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
    invite = commands.add_parser(
        "invite-speaker",
        help="mail a speaker a link to give their title, abstract and bio themselves",
        description="Mail SPEAKER (an address) a signed link, valid 30 days, to a form on the web service "
        "(service_url) for the seminar on --date: title, affiliation, abstract, bio, and after the talk slides and "
        "video. What they send is kept as a proposal: `proposals` shows it, `accept` writes it into the programme.",
    )
    _add_paths(invite, "schedule", "state")
    invite.add_argument("--date", required=True, metavar="YYYY-MM-DD", help="the day of the speaker's seminar")
    invite.add_argument("speaker", metavar="SPEAKER", help="the speaker's address: Name <name@example.org>")
    proposals = commands.add_parser(
        "proposals",
        help="show what speakers proposed, each as its difference from the programme",
        description="List the pending proposals speakers sent through their link, each field as it is in the "
        "programme now and as proposed; `seminar-mailer accept ID` writes one into the programme.",
    )
    _add_paths(proposals, "schedule", "state")
    accepted = commands.add_parser(
        "accept",
        help="write a speaker's proposal into the programme (comments and layout kept)",
        description="Write proposal ID (see `proposals`) into the programme: only the fields it changes, every "
        "other byte of the file as it was; the result is checked before it is saved. The next send tells "
        "subscribers what changed, as for any edit.",
    )
    _add_paths(accepted, "schedule", "state")
    accepted.add_argument("proposal", type=int, metavar="ID", help="the proposal's number, as `proposals` shows it")
    where = bounces.add_mutually_exclusive_group()
    where.add_argument("--maildir", type=Path, metavar="PATH", help="a local Maildir")
    where.add_argument("--mbox", type=Path, metavar="PATH", help="a local mbox file")
