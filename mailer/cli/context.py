"""What every command resolves before it runs: paths (option, setting, project), dates, clocks, settings."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mailer.core.address import Address
from mailer.core.errors import ConfigError, MailerError
from mailer.programme.project import DEFAULTS, MARKER, Project

if TYPE_CHECKING:
    from mailer.deliver.config import Environment
    from mailer.run.request import Request


STANDALONE = ("init", "schema", "import")  # commands that need no project around them


def resolve_defaults(args: argparse.Namespace, project: Project) -> None:
    """Fill in the defaults: an option as given, else its setting (environment over .env), else the project's path."""
    env = os.environ if args.command in STANDALONE else environment()  # (these read no settings)
    args.schedule_given = getattr(args, "schedule", None) is not None or bool(env.get(DEFAULTS["schedule"][0]))
    for name in DEFAULTS:
        if getattr(args, name, None) is None:
            setattr(args, name, project.default(name, env))
            if name == "schedule" and project.root is None and not env.get("MAILER_SCHEDULE"):
                if args.command not in STANDALONE:
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


def programme_targets(args: argparse.Namespace, project: Project, *, given: bool) -> list[Path]:
    """The programme files a command covers: --schedule (or MAILER_SCHEDULE) alone when ``given``, else every
    programme of the project, narrowed by --series to the one whose ``list:`` it names."""
    from mailer.programme.project import list_name_of, programme_files

    wanted = getattr(args, "series", None)
    files = [args.schedule] if given or project.root is None else programme_files(project.root)
    if not given and project.root is not None and project.root == project.cwd.resolve():
        files = [f.relative_to(project.root) for f in files]  # in the root, paths read as typed (as defaults do)
    if wanted is None:
        return files
    names = {path: list_name_of(path) for path in files}
    chosen = [path for path, name in names.items() if name == wanted]
    if not chosen:
        known = ", ".join(f"{n} ({p})" for p, n in names.items() if n) or "none that loads"
        raise ConfigError(f"--series {wanted}: no programme here has list: {wanted}; wanted one of: {known}")
    return chosen[:1]


def today_from(arg: str | None, tz: dt.tzinfo) -> dt.date:
    if arg is None:
        return dt.datetime.now(tz).date()
    from mailer.programme.schedule import YEARS

    try:
        day = dt.date.fromisoformat(arg)
    except ValueError:
        raise ConfigError(f"--date {arg!r} is not a date; wanted YYYY-MM-DD, e.g. 2024-01-15") from None
    if not YEARS[0] <= day.year <= YEARS[1]:
        raise ConfigError(f"--date {arg!r} is in the year {day.year}; wanted a year from {YEARS[0]} to {YEARS[1]}")
    return day


def send_request(args: argparse.Namespace, *, dry_run: bool) -> Request:
    """The send request from the command line: --date, --now, paths, and the environment."""
    from mailer.run.request import Request

    date = today_from(args.date, dt.UTC) if args.date else None
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
        recipients=getattr(args, "recipients", Path("recipients")),
        state=args.state,
        now=now,
        date=date,
        dry_run=dry_run,
        env=environment(),
        clock_given=bool(given),
    )


def first_recipient(folder: Path, list_name: str) -> Address:
    """The first valid subscriber, or a stand-in when the list has none yet."""
    from mailer.audience.recipients import list_file, read_entries

    try:
        entries = read_entries(list_file(folder, list_name))
        return next(e.recipient for e in entries if e.recipient is not None)
    except (ConfigError, StopIteration):
        return Address(name="", addr="subscriber@example.org")


def week_name(args: argparse.Namespace) -> str:
    from mailer.programme.digest import is_digest, load_digest
    from mailer.programme.schedule import load_schedule

    return load_digest(args.schedule).name if is_digest(args.schedule) else load_schedule(args.schedule).series.name


def programme_list(schedule: Path) -> str:
    """The list a programme mails: its series' (or its digest's) ``list:``, the file validated first."""
    from mailer.programme.digest import is_digest, load_digest
    from mailer.programme.schedule import load_schedule

    return load_digest(schedule).list_name if is_digest(schedule) else load_schedule(schedule).series.list_name


def open_in_browser(path_or_url: Path | str) -> None:
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


def environment() -> Environment:
    """The settings of every command: the process environment over .env (MAILER_ENV_FILE, default .env in the
    project), read by the one loader, config.load_env."""
    from mailer.deliver.config import load_env

    return load_env(Project.discover(Path.cwd()).default("env_file", os.environ), os.environ)


# A test-only way past the refusal of --now on a real send (tests/conftest.py sets it): never for real mail.
TEST_CLOCK = "SEMINAR_MAILER_TEST_ONLY_SEND_NOW"


def address_arg(raw: str) -> Address:
    from mailer.core.address import parse_address

    address = parse_address(raw)
    if address is None:
        raise ConfigError(
            f"ADDRESS {raw!r} is not a valid email address; wanted name@example.org or 'Name <name@example.org>'"
        )
    return address


def located(err: MailerError) -> MailerError:
    """A settings error with the ``.env:LINE`` its value came from, when it came from .env."""
    if not isinstance(err, ConfigError):
        return err
    try:
        return environment().locate(err)
    except MailerError:  # .env itself is what is wrong: that error was the one raised
        return err


def series_zone(schedule: Path) -> dt.tzinfo | None:
    """The series' time zone for send's log lines; None (the machine's) while the schedule does not load."""
    from mailer.programme.schedule import load_schedule

    try:
        return load_schedule(schedule).series.timezone
    except MailerError:
        return None
