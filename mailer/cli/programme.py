"""The organiser's commands about the programme: init, check, preview, schema, publish."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mailer.core.errors import EXIT_OK, ConfigError, MailerError
from mailer.core.terminal import count_of as _count_of
from mailer.core.terminal import printable

if TYPE_CHECKING:
    from mailer.deliver.config import Environment
    from mailer.programme.model import Schedule
    from mailer.site.publish import Published
from mailer.cli.context import environment, first_recipient, open_in_browser, send_request, today_from, week_name


def check_command(args: argparse.Namespace) -> int:
    from mailer.compose.checks import date_warnings, drafts_due, missing_details
    from mailer.compose.render import render_every_week
    from mailer.programme.digest import is_digest
    from mailer.programme.schedule import load_schedule
    from mailer.run.dispatch import plan_notes

    if is_digest(args.schedule):
        return _check_digest(args)
    schedule = load_schedule(args.schedule)
    today = today_from(args.date, schedule.series.timezone)
    for warning in [*date_warnings(schedule, today), *missing_details(schedule, today)]:
        print(f"warning: {printable(str(warning))}", file=sys.stderr)
    for draft in drafts_due(schedule, today):
        print(f"note: {printable(str(draft))}", file=sys.stderr)
    drafts = f" (and {_count_of(len(schedule.drafts), 'draft')})" if schedule.drafts else ""
    seminars = _count_of(len(schedule.seminars), "seminar")
    print(printable(f"{args.schedule}: OK, {seminars} of {schedule.series.name}{drafts}"))
    for note in plan_notes(send_request(args, dry_run=True)):
        print(f"note: {printable(note)}", file=sys.stderr)
    _check_settings(environment())
    _check_bounces(environment())
    _check_list(args, schedule.series.list_name)
    _check_digested(args, schedule)
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


def _check_list(args: argparse.Namespace, list_name: str) -> None:
    """The list's file and recipients/unsubscribed.txt: every invalid line at its place, else how many."""
    from mailer.audience.recipients import UNSUBSCRIBED, list_file, read_entries
    from mailer.core.errors import Problem

    problems: list[Problem] = []
    path = list_file(args.recipients, list_name)
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


def _check_digested(args: argparse.Namespace, schedule: Schedule) -> None:
    """Warn of a CSV list's ``delivery: digest`` where no digest of the project gathers the list."""
    from mailer.audience.recipients import list_file
    from mailer.programme.digest import is_digest, load_digest
    from mailer.programme.project import programme_files
    from mailer.run.due_recipients import csv_choices

    deliveries, _ = csv_choices(list_file(args.recipients, schedule.series.list_name))
    wanting = sum(1 for d in deliveries.values() if d == "digest")
    if not wanting:
        return
    root = schedule.path.parent.parent if schedule.path.parent.name == "data" else None
    digests = [p for p in programme_files(root) if is_digest(p)] if root else []
    if not any(schedule.series.list_name in load_digest(p).lists for p in digests):
        print(
            printable(
                f"warning: {_count_of(wanting, 'address', 'addresses')} on {schedule.series.list_name} chose delivery "
                "digest, but no digest of the project gathers this list: they receive nothing from it"
            ),
            file=sys.stderr,
        )


def _check_digest(args: argparse.Namespace) -> int:
    """A digest: its file, the series it gathers, its list, and its templates rendered for a week of theirs."""
    from mailer.programme.digest import load_digest
    from mailer.run.digests import gathered_schedules, render_sample

    digest = load_digest(args.schedule)
    schedules = gathered_schedules(digest)
    print(printable(f"{args.schedule}: OK, {digest.name}, a weekly digest of {', '.join(digest.lists)}"))
    _check_settings(environment())
    _check_list(args, digest.list_name)
    templates = args.templates if args.templates.is_dir() else None
    if args.templates_given and templates is None:
        raise ConfigError(f"{args.templates}: no such template folder; wanted a folder of *.j2 templates")
    weeks = render_sample(digest, schedules, templates=templates)
    print(printable(f"{templates or 'built-in templates'}: OK, rendered the digest of {_count_of(weeks, 'week')}"))
    return EXIT_OK


def _check_bounces(env: dict[str, str]) -> None:
    """Validate the bounce settings (MAILER_VERP, MAILER_SOFT_BOUNCES, BOUNCES_IMAP_*) that are set."""
    from mailer.deliver.bounce_config import check_bounce_settings

    if line := check_bounce_settings(env):
        print(printable(line))


def _check_imap() -> int:
    from mailer.deliver.bounce_config import imap_settings
    from mailer.deliver.doctor import check_imap

    checkup = check_imap(imap_settings(environment()))
    print("\n".join(printable(line) for line in checkup.lines()))
    return checkup.exit_code


def _check_smtp(args: argparse.Namespace, series_sender: str) -> int:
    from mailer.deliver.config import smtp_settings
    from mailer.deliver.doctor import check_smtp

    settings = smtp_settings(environment(), state=args.state)
    checkup = asyncio.run(check_smtp(settings, settings.envelope_from or series_sender))
    print("\n".join(checkup.lines()))
    return checkup.exit_code


def _check_settings(env: Environment) -> None:
    """Validate the SMTP and MAILER_ settings that ``send`` will read (SMTP_HOST only when it is set), then
    refuse the starter's placeholders; an unknown name in the environment is a warning (in .env, an error)."""
    from mailer.deliver.config import ledger_window, placeholders, smtp_settings, unknown_hint

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


def preview_command(args: argparse.Namespace) -> int:
    from mailer.core.outfiles import write_files
    from mailer.programme.digest import is_digest
    from mailer.run.dispatch import preview

    request = send_request(args, dry_run=True)
    if is_digest(args.schedule):
        from mailer.run.digests import preview_digest

        week, messages = preview_digest(request)
    else:
        week, messages = preview(request)
    if week is None:
        monday = request.day - dt.timedelta(days=request.day.weekday())
        print(
            f"No {week_name(args)} seminar in the week of {monday} to "
            f"{monday + dt.timedelta(days=6)}: nothing to announce."
        )
    if not messages:
        return EXIT_OK
    first = first_recipient(args.recipients, messages[0].list_name)
    out: Path = args.out
    files: dict[str, bytes] = {}
    written: list[str] = []
    for n, message in enumerate(messages):
        assert message.rendered is not None and message.template is not None
        stem = message.kind if n == 0 and message.kind in ("announcement", "digest") else f"{message.kind}-{n}"
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
        open_in_browser(out / f"{messages[0].kind if messages[0].kind == 'digest' else 'announcement'}.html")
    return EXIT_OK


def init_command(args: argparse.Namespace) -> int:
    import shutil

    from mailer.programme.project import add_series, init, installed_command, local_timezone

    today = today_from(args.date, dt.datetime.now().astimezone().tzinfo or dt.UTC)
    if args.add_series:
        added = add_series(args.dir, args.add_series, today=today, timezone=local_timezone())
        print(f"Added the series {args.add_series} to the project {added.folder}:")
        for path in added.files:
            print(f"  {path.relative_to(added.folder)}")
        print("Every command covers it from now on (--series " + args.add_series + " for it alone); check it: "
              "seminar-mailer check --series " + args.add_series)  # fmt: skip
        return EXIT_OK
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


def schema_command(args: argparse.Namespace) -> int:
    from mailer.programme.schema import schema_text

    print(schema_text(), end="")
    return EXIT_OK


def publish_command(args: argparse.Namespace) -> int:
    from mailer.site.publish import publish

    done = publish(
        args.schedule,
        out=args.site,
        state=args.state,
        templates=args.templates,
        now=_publish_now(args),
        prune=args.prune,
        site_format=args.site_format,
    )
    _published(args.site, done)
    return EXIT_OK


def publish_every_series(args: argparse.Namespace, targets: list[Path]) -> int:
    """publish in a project of several programmes: each series into DIR/<list>/ as it alone is published,
    and DIR/index.html and DIR/seminars.ics of them all. Digests have no pages: they are skipped."""
    from mailer.programme.digest import is_digest
    from mailer.programme.project import list_name_of
    from mailer.site.all_series import department, publish_all
    from mailer.site.publish import CALENDAR

    series = [path for path in targets if not is_digest(path)]
    digests = [path for path in targets if is_digest(path)]
    if digests:
        shown = ", ".join(f"{list_name_of(p) or p.stem} ({p})" for p in digests)
        print(printable(f"Skipped {_count_of(len(digests), 'digest')}, {shown}: a digest has no pages of its own."))
    if not series:
        raise ConfigError("nothing to publish: the project's programmes are all digests; wanted a series: block")
    if len(series) == 1:  # one series and its digest: published as a project of one series is
        args.schedule = series[0]
        return publish_command(args)
    done = publish_all(
        series,
        out=args.site,
        state=args.state,
        templates=args.templates,
        now=_publish_now(args),
        prune=args.prune,
        site_format=args.site_format,
        name=department(digests),
    )
    for number, (path, one) in enumerate(zip(series, done.series, strict=True)):
        assert one.series is not None
        heading = f"== {one.series.list_name} ({path}) =="
        print(printable(heading if number == 0 else f"\n{heading}"))
        _published(one.out, one)
    index = done.index
    print(f"\n== every series ({_count_of(len(series), 'series', 'series')}) ==")
    print(f"{args.site}: an index of them, {_count_of(index.events, 'calendar event')} in {CALENDAR}; {_files(index)}")
    _published_files(args.site, index, why="publish no longer writes it here")
    return EXIT_OK


def _publish_now(args: argparse.Namespace) -> dt.datetime:
    """The moment that divides upcoming from past: --now, else the start of --date, else the clock."""
    request = send_request(args, dry_run=True)
    return request.now if request.clock_given or request.date is None else dt.datetime.combine(request.date, dt.time())


def _published(folder: Path, done: Published) -> None:
    """What publish wrote of one series into ``folder``."""
    print(
        f"{folder}: {_count_of(done.seminars, 'seminar')}, {_count_of(done.events, 'calendar event')}, "
        f"{_count_of(done.entries, 'announcement')} in the feed; {_files(done)}"
    )
    _published_files(folder, done)


def _files(done: Published) -> str:
    return f"{_count_of(len(done.written), 'file')} written, {len(done.unchanged)} unchanged"


def _published_files(folder: Path, done: Published, *, why: str = "its seminar is no longer in the schedule") -> None:
    for name in done.written:
        print(printable(f"  wrote   {folder / name}"))
    for name in done.removed:
        print(printable(f"  removed {folder / name}"))
    for name in done.stale:
        print(printable(f"  kept    {folder / name} ({why}; --prune deletes it)"))


def preview_or_serve_command(args: argparse.Namespace) -> int:
    if not args.serve:
        return preview_command(args)
    from mailer.site.live import serve

    return serve(
        schedule=args.schedule,
        templates=args.templates,
        date=args.date,
        port=args.port,
        announce=lambda url: print(f"Live preview on {url} (Ctrl-C to stop)", file=sys.stderr, flush=True),
        open_browser=open_in_browser if args.open else None,
    )


def _day(text: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text.strip())
    except ValueError:
        raise ConfigError(f"{option} {text!r} is not a date; wanted YYYY-MM-DD, such as 2030-01-17") from None


def add_command(args: argparse.Namespace) -> int:
    from mailer.programme.model import WEEKDAYS
    from mailer.run.reschedule import add_slots

    name = args.every.strip().lower()
    days = [n for n, day in enumerate(WEEKDAYS) if len(name) >= 3 and day.startswith(name)]
    if len(days) != 1:
        raise ConfigError(f"--every {args.every!r} is not a weekday; wanted monday ... sunday, or mon ... sun")
    skip = {_day(d, "--skip") for d in args.skip.split(",") if d.strip()}
    if not args.speaker.strip() or any(not c.isprintable() for c in args.speaker):
        raise ConfigError(f"--speaker {args.speaker!r}: wanted one line of printable text")
    added, taken = add_slots(
        send_request(args, dry_run=False),
        weekday=days[0],
        start=_day(args.start, "--from"),
        until=_day(args.until, "--until"),
        skip=skip,
        speaker=args.speaker.strip(),
    )
    where = printable(str(args.schedule))
    shown = ", ".join(d.isoformat() for d in added) or "none"
    print(f"Added {_count_of(len(added), 'seminar')} to {where} (speaker {printable(args.speaker.strip())}): {shown}")
    if taken:
        print(f"Already held a seminar, left as they are: {', '.join(d.isoformat() for d in taken)}")
    return EXIT_OK


def shift_command(args: argparse.Namespace) -> int:
    import re

    from mailer.run.reschedule import shift

    days = time = None
    if args.by is not None:
        if not (m := re.fullmatch(r"\s*([+-]?\d{1,3})\s*d?\s*", args.by)) or int(m[1]) == 0:
            raise ConfigError(f"--by {args.by!r}: wanted a number of days such as 7d, 14d or -7d")
        days = int(m[1])
    else:
        try:
            time = dt.time.fromisoformat(args.to_time.strip())
        except ValueError:
            raise ConfigError(f"--to-time {args.to_time!r}: wanted a 24-hour time such as 14:00") from None
    until = _day(args.until, "--until") if args.until else None
    moved = shift(
        send_request(args, dry_run=False), start=_day(args.start, "--from"), until=until, days=days, time=time
    )
    if not moved:
        print(f"No seminar from {args.start} on: nothing moved.")
        return EXIT_OK
    for move in moved:
        pinned = f"  (id: {move.pinned} written: subscribers were told of it)" if move.pinned else ""
        was = f"{move.before.date} {move.before.start:%H:%M} {move.before.speaker}"
        print(printable(f"{was} -> {move.after.strip(chr(34))}{pinned}"))
    print(
        f"Moved {_count_of(len(moved), 'seminar')} in {printable(str(args.schedule))}. "
        "`seminar-mailer send --dry-run` shows the changes the announced ones get."
    )
    return EXIT_OK


def import_command(args: argparse.Namespace) -> int:

    from mailer.core.address import parse_address
    from mailer.core.errors import ScheduleError
    from mailer.core.zones import zone_named
    from mailer.programme.importer import Archive, programme_text, read_calendar, read_page
    from mailer.programme.schedule import LIST_NAME_RE

    if zone_named(args.timezone) is None:
        raise ConfigError(
            f"--timezone {args.timezone!r} is not a time zone; wanted an IANA name such as Europe/Stockholm"
        )
    if args.sender is not None and parse_address(args.sender) is None:
        raise ConfigError(f"--sender {args.sender!r} is not an address; wanted Name <address@example.org>")
    if args.list_name is not None and not LIST_NAME_RE.fullmatch(args.list_name):
        raise ConfigError(f"--list {args.list_name!r}: wanted lower-case letters, digits, '.', '_' or '-'")
    target: Path = args.target
    if target.exists() or target.is_symlink():
        raise ConfigError(f"{target} exists; import never overwrites a file: wanted --out a new file")
    if not args.pages and not args.ics:
        raise ConfigError("nothing to import: wanted announcement pages (PAGE...) or --ics FILE")
    archive = Archive()
    for page in args.pages:
        try:
            read_page(page, archive)
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"{page}: cannot read the page: {err}") from None
    for calendar in args.ics:
        try:
            read_calendar(calendar, archive, args.timezone)
        except OSError as err:
            raise ConfigError(f"{calendar}: cannot read the calendar: {err}") from None
    if not archive.talks:
        raise ScheduleError("no seminar found in the pages", problems=tuple(archive.problems))
    text = programme_text(
        archive, timezone=args.timezone, sender=args.sender, list_name=args.list_name, jekyll=bool(args.pages)
    )
    for problem in archive.problems:
        print(f"warning: {printable(str(problem))}", file=sys.stderr)
    target.parent.mkdir(parents=True, exist_ok=True)
    with target.open("x", encoding="utf-8") as out:  # (exclusive: a file made meanwhile is not overwritten)
        out.write(text)
    files = _count_of(len(args.pages), "page") if args.pages else _count_of(len(args.ics), "calendar")
    print(printable(f"{target}: {_count_of(len(archive.talks), 'seminar')} from {files}"))
    print(f"Next: seminar-mailer check --schedule {printable(str(target))}")
    return EXIT_OK
