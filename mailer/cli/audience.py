"""The commands about subscribers: serve, subscribe, unsubscribe, subscribers, bounces."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from mailer.core.errors import EXIT_OK, ConfigError
from mailer.core.terminal import count_of as _count_of
from mailer.core.terminal import printable

if TYPE_CHECKING:
    pass
from mailer.cli.context import address_arg, environment


def serve_command(args: argparse.Namespace) -> int:
    from mailer.audience.web import Service, serve
    from mailer.deliver.config import listen_socket, smtp_settings, token_key
    from mailer.programme.schedule import load_schedule
    from mailer.record.subscribers import Subscribers

    series = load_schedule(args.schedule).series
    if series.service_url is None:
        raise ConfigError(
            f"{args.schedule}: the series has no service_url; wanted the public https address at which "
            "serve is reached, e.g. service_url: https://seminars.example.org/lm"
        )
    env = environment()
    sock = listen_socket(args.listen, option="--listen")  # before anything is opened: a bad address is exit 2
    store = Subscribers(args.state, series.list_name)
    service = Service(series, store, token_key(args.state, env), smtp_settings(env, state=args.state))
    print(f"Serving {series.service_url} on http://{args.listen} (Ctrl-C stops)", file=sys.stderr, flush=True)
    serve(service, sock, forwarded_allow_ips=args.trusted_proxy)
    return EXIT_OK


def subscribe_command(args: argparse.Namespace) -> int:
    from mailer.audience.recipients import UNSUBSCRIBED, suppressed_keys
    from mailer.programme.schedule import load_schedule
    from mailer.record.subscribers import Subscribers

    list_name = load_schedule(args.schedule).series.list_name
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
    from mailer.programme.schedule import load_schedule
    from mailer.record.subscribers import Subscribers
    from mailer.run.dispatch import status

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


def bounces_command(args: argparse.Namespace) -> int:
    import time

    from mailer.audience.bounces import Judge, imap_source, maildir_source, mbox_source, process
    from mailer.deliver.bounce_config import imap_settings, processed_folder, soft_bounce_limit
    from mailer.deliver.config import token_key
    from mailer.programme.schedule import load_schedule
    from mailer.record.ledger import Ledger
    from mailer.record.state import LEDGER_FILE
    from mailer.record.subscribers import Subscribers

    env = environment()
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


SUBSCRIBER_COMMANDS = {
    "serve": serve_command,
    "subscribe": subscribe_command,
    "unsubscribe": subscribe_command,
    "subscribers": subscribers_command,
    "bounces": bounces_command,
}
