"""The commands about subscribers and speakers: serve, subscribe, unsubscribe, subscribers, bounces, invite-speaker,
proposals, accept."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from mailer.core.errors import EXIT_OK, ConfigError
from mailer.core.terminal import count_of as _count_of
from mailer.core.terminal import printable

if TYPE_CHECKING:
    from pathlib import Path

    from mailer.audience.manage import Listed
    from mailer.programme.model import Series
from mailer.cli.context import address_arg, environment, programme_list


def serve_command(args: argparse.Namespace) -> int:
    """Serve one series at the root, as always; several (every programme with a service_url), each under the
    last part of its service_url's path (/lm for https://seminars.example.org/lm)."""
    from urllib.parse import urlsplit

    from mailer.audience.web import Service, serve
    from mailer.deliver.config import listen_socket, smtp_settings, token_key
    from mailer.programme.digest import is_digest
    from mailer.record.subscribers import Subscribers

    programmes = getattr(args, "programmes", None) or [args.schedule]
    senders = [(path, _served_series(path)) for path in programmes]
    lists = _listed(senders)
    missing = [path for path, series in senders if series.service_url is None]
    if len(senders) == 1 and missing:
        raise ConfigError(
            f"{args.schedule}: the series has no service_url; wanted the public https address at which "
            "serve is reached, e.g. service_url: https://seminars.example.org/lm"
        )
    for path in missing if len(senders) > 1 else ():
        print(printable(f"warning: {path} has no service_url: not served"), file=sys.stderr)
    env = environment()
    sock = listen_socket(args.listen, option="--listen")  # before anything is opened: a bad address is exit 2
    key, smtp = token_key(args.state, env), smtp_settings(env, state=args.state)
    services = []
    for path, series in senders:
        if series.service_url is not None:
            store = Subscribers(args.state, series.list_name)
            schedule_path = None if is_digest(path) else path  # (a digest has no seminars of its own for the form)
            services.append(Service(series, store, key, smtp, schedule_path=schedule_path, lists=lists))
    if len(services) == 1:
        print(f"Serving {services[0].series.service_url} on http://{args.listen} (Ctrl-C stops)", file=sys.stderr)
        serve(services[0], sock, forwarded_allow_ips=args.trusted_proxy)
        return EXIT_OK
    mounts = {}
    for service in services:
        assert service.series.service_url is not None
        prefix = "/" + urlsplit(service.series.service_url).path.rstrip("/").rpartition("/")[2]
        if prefix == "/" or prefix in mounts:
            raise ConfigError(
                f"{service.series.service_url}: with several series each service_url must end in a path of its "
                f"own (e.g. https://seminars.example.org/{service.series.list_name}); serve mounts each there"
            )
        mounts[prefix] = service
        print(f"Serving {service.series.service_url} on http://{args.listen}{prefix}", file=sys.stderr)
    print("(Ctrl-C stops)", file=sys.stderr, flush=True)
    serve(services[0], sock, forwarded_allow_ips=args.trusted_proxy, mounts=mounts)
    return EXIT_OK


def _served_series(path: Path) -> Series:
    """The series a programme's pages and mails come from (a digest's: its own name, sender and list)."""
    from mailer.programme.digest import is_digest, load_digest
    from mailer.programme.schedule import load_schedule
    from mailer.run.digests import digest_schedule, gathered_schedules

    if is_digest(path):
        digest = load_digest(path)
        return digest_schedule(digest, gathered_schedules(digest)).series
    return load_schedule(path).series


def _listed(senders: list[tuple[Path, Series]]) -> tuple[Listed, ...]:
    """Every list of the project for the manage page, each saying whether a digest gathers it."""
    from mailer.audience.manage import Listed
    from mailer.programme.digest import is_digest, load_digest

    gathered = {name for path, _ in senders if is_digest(path) for name in load_digest(path).lists}
    return tuple(Listed(s.list_name, s.name, s.list_name in gathered) for _, s in senders)


def subscribe_command(args: argparse.Namespace) -> int:
    from mailer.audience.recipients import UNSUBSCRIBED, suppressed_keys
    from mailer.record.subscribers import Subscribers

    list_name = programme_list(args.schedule)
    address = address_arg(args.address)
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


def subscribers_command(args: argparse.Namespace) -> int:
    from mailer.audience.recipients import UNSUBSCRIBED, list_file
    from mailer.audience.roster import roster
    from mailer.record.subscribers import Subscribers
    from mailer.run.records import status

    list_name = programme_list(args.schedule)
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


def bounces_command(args: argparse.Namespace) -> int:
    import time

    from mailer.audience.bounces import Judge, imap_source, maildir_source, mbox_source, process
    from mailer.deliver.bounce_config import imap_settings, processed_folder, soft_bounce_limit
    from mailer.deliver.config import token_key
    from mailer.record.ledger import Ledger
    from mailer.record.state import LEDGER_FILE
    from mailer.record.subscribers import Subscribers

    env = environment()
    lists = [programme_list(path) for path in getattr(args, "programmes", None) or [args.schedule]]
    list_name = lists[0]
    limit = soft_bounce_limit(env)
    done = processed_folder(env)
    if args.maildir:
        source = maildir_source(args.maildir, done_folder=done)
    elif args.mbox:
        source = mbox_source(args.mbox)
    else:
        source = imap_source(imap_settings(env))
    ledger = Ledger(args.state, list_name, readonly=True) if (args.state / LEDGER_FILE).exists() else None
    judge = Judge(ledger, token_key(args.state, env, create=False), list_name, others=tuple(lists[1:]))
    others = [Subscribers(args.state, name) for name in lists[1:]]  # every list of the project: one mailbox
    try:
        with Subscribers(args.state, list_name) as store:
            report = process(source, store, judge, soft_limit=limit, now=time.time(), others=tuple(others))
    finally:
        for other in others:
            other.close()
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


def invite_speaker_command(args: argparse.Namespace) -> int:
    import asyncio
    import datetime as dt

    import aiosmtplib

    from mailer.audience.speakers import invitation
    from mailer.core.address import parse_address
    from mailer.core.errors import DeliveryError
    from mailer.deliver.config import smtp_settings, token_key
    from mailer.deliver.smtp import send_one
    from mailer.programme.schedule import load_schedule

    speaker = parse_address(args.speaker)
    if speaker is None:
        raise ConfigError(f"{args.speaker!r} is not an email address; wanted Name <name@example.org>")
    try:
        day = dt.date.fromisoformat(args.date)
    except ValueError:
        raise ConfigError(f"--date {args.date!r} is not a date; wanted YYYY-MM-DD") from None
    env = environment()
    settings = smtp_settings(env, state=args.state)
    schedule = load_schedule(args.schedule)
    mail = invitation(schedule, day, speaker, key=token_key(args.state, env), now=dt.datetime.now(dt.UTC))
    try:
        asyncio.run(
            send_one(settings, settings.envelope_from or schedule.series.sender.ascii_addr, speaker, mail.message)
        )
    except (OSError, aiosmtplib.SMTPException) as err:
        raise DeliveryError(f"the link to {speaker.addr} was not sent: {err}") from err
    print(printable(f"Sent {speaker.addr} the link to the form for {mail.seminar.date} ({mail.seminar.speaker})."))
    print("What they send waits for you: seminar-mailer proposals")
    return EXIT_OK


def proposals_command(args: argparse.Namespace) -> int:
    from mailer.audience.speakers import differences, seminar_on
    from mailer.programme.schedule import load_schedule
    from mailer.record.proposals import Proposals

    schedule = load_schedule(args.schedule)
    with Proposals(args.state, schedule.series.list_name, create=False) as store:
        pending = store.pending()
    if not pending:
        print("No proposal waits.")
    for p in pending:
        seminar = seminar_on(schedule, p.date)
        print(printable(f"#{p.id} from {p.speaker}, {p.at[:16].replace('T', ' ')} UTC, for {p.date}:"))
        changed = differences(seminar, p)
        for name, now, new in changed:
            was = (now or "(none)").strip().replace("\n", " ")
            print(printable(f"  {name}: {was[:70]} -> {new.strip().replace(chr(10), ' ')[:70]}"))
        if not changed:
            print("  (nothing differs from the programme)")
        print(f"  accept it: seminar-mailer accept {p.id}")
    return EXIT_OK


def accept_command(args: argparse.Namespace) -> int:
    from mailer.audience.speakers import accept
    from mailer.programme.schedule import load_schedule
    from mailer.record.proposals import Proposals

    schedule = load_schedule(args.schedule)
    with Proposals(args.state, schedule.series.list_name) as store:
        found = next((p for p in store.pending() if p.id == args.proposal), None)
        if found is None:
            raise ConfigError(
                f"no pending proposal #{args.proposal}; wanted an ID that `seminar-mailer proposals` shows"
            )
        written = accept(args.schedule, found)
        store.accepted(found.id)
    where = printable(str(args.schedule))
    print(
        f"#{found.id} written into {where}: {', '.join(written) or 'nothing differed'}"
        + ("; `seminar-mailer send --dry-run` shows what subscribers are told" if written else "")
    )
    return EXIT_OK


SUBSCRIBER_COMMANDS = {
    "invite-speaker": invite_speaker_command,
    "proposals": proposals_command,
    "accept": accept_command,
    "serve": serve_command,
    "subscribe": subscribe_command,
    "unsubscribe": subscribe_command,
    "subscribers": subscribers_command,
    "bounces": bounces_command,
}
