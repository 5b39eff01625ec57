"""The commands that send and report: send, approve, status, unsuppress, rename-list, login."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from typing import TYPE_CHECKING

from mailer.core.errors import EXIT_FAILED, EXIT_OK, EXIT_TEMPFAIL, ConfigError
from mailer.core.terminal import count_of as _count_of
from mailer.core.terminal import printable

if TYPE_CHECKING:
    from mailer.audience.recipients import Entry
    from mailer.audience.roster import NoMail
from mailer.cli.context import TEST_CLOCK, environment, programme_list, send_request


def login_command(args: argparse.Namespace) -> int:
    from mailer.deliver.oauth import MICROSOFT_CACHE, login_microsoft
    from mailer.deliver.providers import with_preset

    account = login_microsoft(with_preset(environment()), args.state, show=lambda text: print(text, flush=True))
    print(
        f"Signed in as {account}; kept in {args.state / MICROSOFT_CACHE} (only you can read it). "
        "seminar-mailer send uses it from now on."
    )
    return EXIT_OK


def send_command(args: argparse.Namespace) -> int:
    from mailer.programme.digest import is_digest
    from mailer.run.dispatch import run
    from mailer.run.report import Progress, print_result
    from mailer.run.request import MessageReport

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
    if args.to and is_digest(args.schedule):
        raise ConfigError(
            f"{args.schedule} is a digest: --to sends a test copy of a series' messages; wanted --series with a "
            "series' list, or `seminar-mailer preview` of the digest (its .eml is what a reader gets)"
        )
    if args.to:
        from mailer.core.address import parse_address
        from mailer.run.dispatch import send_test

        to = parse_address(args.to)
        if to is None:
            raise ConfigError(f"--to {args.to!r} is not an email address; wanted e.g. --to you@example.org")
        for subject in send_test(send_request(args, dry_run=True), to):
            print(printable(f"Test copy sent to {to.addr}: {subject}"))
        return EXIT_OK
    if is_digest(args.schedule):
        from mailer.run.digests import run_digest as run
    result = run(send_request(args, dry_run=args.dry_run), confirm=confirm, progress=progress, warn=warn)
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
    from mailer.audience.recipients import UNSUBSCRIBED
    from mailer.audience.roster import no_mail
    from mailer.record.subscribers import Subscribers
    from mailer.run.records import status

    refused = [(s.recipient, s.address, s.reason, s.at) for s in status(args.state, list_name)[1]]
    with Subscribers(args.state, list_name, create=False) as store:
        return no_mail(store, refused, [args.recipients / UNSUBSCRIBED])


def status_command(args: argparse.Namespace) -> int:
    from mailer.programme.digest import is_digest
    from mailer.programme.schedule import load_schedule
    from mailer.run.records import approvals, status
    from mailer.run.report import print_status

    if is_digest(args.schedule):
        return _digest_status(args)
    series = load_schedule(args.schedule).series
    seminars, _ = status(args.state, series.list_name)
    print_status(seminars, [], tz=series.timezone)
    if series.approval and (approved := approvals(args.state, series.list_name)):
        print("Approved (series 'approval: required'; a later edit of the week needs approving again):")
        for week, fingerprint, by, at in approved:
            print(printable(f"  the week of {week} by {by}, {at[:16].replace('T', ' ')} UTC (as {fingerprint})"))
    if nobody := sorted(_no_mail(args, series.list_name).values(), key=lambda n: (n.date, n.key)):
        print(f"Suppressed ({len(nobody)}; `seminar-mailer unsuppress ADDRESS` lets any of them receive mail again):")
        for n in nobody:
            print(printable(f"  {n.address}: {n.detail} ({n.reason}{f' on {n.date}' if n.date else ''})"))
    pending = any(counts.get("deferred") for s in seminars for _, _, counts, _, _ in s.messages)
    return EXIT_TEMPFAIL if pending else EXIT_OK


def _digest_status(args: argparse.Namespace) -> int:
    """A digest's status: each digest it sent, with its figures (its seminars' other messages are in the
    status of their series)."""
    from mailer.programme.digest import load_digest
    from mailer.run.digests import gathered_schedules
    from mailer.run.records import status
    from mailer.run.report import print_status

    digest = load_digest(args.schedule)
    print(printable(f"{digest.name}: a weekly digest of {', '.join(digest.lists)} to the list {digest.list_name}"))
    schedules = gathered_schedules(digest)
    seminars = [
        replace(s, messages=[m for m in s.messages if m[0] == "digest"])
        for schedule in schedules
        for s in status(args.state, schedule.series.list_name)[0]
    ]
    print_status([s for s in seminars if s.messages], [], tz=digest.timezone or schedules[0].series.timezone)
    return EXIT_OK


def approve_command(args: argparse.Namespace) -> int:
    from mailer.run.approval import approve, default_approver

    done = approve(send_request(args, dry_run=False), by=args.by or default_approver())
    again = " (approved as it is once before)" if done.already else ""
    print(printable(f"Approved by {done.by}: the week of {done.monday}{again}, as the file is now:"))
    if not done.seminars:
        print("  no seminar: the cancellation of any seminar removed from that week may go")
    for s in done.seminars:
        state = " (cancelled)" if s.is_cancelled else ""
        print(
            printable(f"  {s.start:%Y-%m-%d %H:%M} {s.tz_label} {s.speaker}{f' – {s.title}' if s.title else ''}{state}")
        )
    print(
        "The next send mails it; an edit of a date, time, place, speaker or title of that week needs approving again."
    )
    return EXIT_OK


def rename_list_command(args: argparse.Namespace) -> int:
    from mailer.programme.schedule import LIST_NAME_RE, load_schedule
    from mailer.run.records import rename_list

    for name in (args.old, args.new):
        if not LIST_NAME_RE.fullmatch(name):
            raise ConfigError(f"{name!r} is not a list name; wanted lower-case letters, digits, '.', '_' or '-'")
    named = load_schedule(args.schedule).series.list_name
    if named != args.new:
        raise ConfigError(f"{args.schedule} names the list {named!r}; wanted list: {args.new} there first")
    seminars, subscriptions = rename_list(args.state, args.old, args.new)
    print(f"{args.old} -> {args.new}: {seminars} seminars and {subscriptions} subscriptions carried over")
    return EXIT_OK


def unsuppress_command(args: argparse.Namespace) -> int:
    from mailer.audience.recipients import UNSUBSCRIBED, list_file, read_entries
    from mailer.audience.roster import BY_ORGANISER, REFUSED
    from mailer.core.address import parse_address
    from mailer.record.subscribers import Subscribers
    from mailer.run.records import unsuppress

    address = parse_address(args.address)
    if address is None:
        raise ConfigError(f"{args.address!r} is not an email address; wanted name@example.org")
    list_name = programme_list(args.schedule)
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
