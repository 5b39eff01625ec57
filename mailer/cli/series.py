"""A project of several series: each command runs once per programme file (data/*.yaml), or refuses without
--series when it is about one series only. A project with one programme never comes here: its output is
exactly that of the command itself."""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

from mailer.core.errors import EXIT_FAILED, EXIT_INVALID, EXIT_OK, EXIT_TEMPFAIL, ConfigError, MailerError
from mailer.core.terminal import printable

# Commands about one series only (an edit of its file, its form, its proposals): --series says which.
ONE_SERIES = frozenset({"add", "shift", "approve", "invite-speaker", "proposals", "accept", "rename-list", "subscribe"})
# Commands run once for all the series together.
ONCE = frozenset({"serve", "bounces"})  # (bounces: one mailbox for every list: read it once)
# Commands whose output folder gets a sub-folder per series (named by its list).
OWN_FOLDER = frozenset({"preview"})
# Commands that take every programme at once, for what they write of the whole project (publish: a folder
# per series, and beside them an index and a calendar of all); not run once per programme.
TOGETHER = frozenset({"publish"})


def worst(codes: list[int]) -> int:
    """One exit code for several series: an error (2, 3, 70, ...) over deferred (75) over failed (1) over 0."""
    errors = [c for c in codes if c not in (EXIT_OK, EXIT_FAILED, EXIT_TEMPFAIL)]
    if errors:
        return errors[0]
    for code in (EXIT_TEMPFAIL, EXIT_FAILED):
        if code in codes:
            return code
    return EXIT_OK


def every_series(
    args: argparse.Namespace,
    targets: list[Path],
    command: Callable[[argparse.Namespace], int],
    *,
    report: Callable[[MailerError], int],
) -> int:
    """Run ``command`` for each programme in ``targets``, under a heading each; the worst exit code."""
    from mailer.programme.digest import is_digest
    from mailer.programme.project import list_name_of

    targets = sorted(targets, key=is_digest)  # every series before the digests that gather them
    names = {path: list_name_of(path) or path.stem for path in targets}
    if args.command in ONCE:  # one run for every series: serve mounts each at its path, bounces reads once
        args.programmes = targets
        return command(args)
    if args.command in ONE_SERIES or (args.command == "preview" and getattr(args, "serve", False)):
        listed = ", ".join(f"{name} ({printable(str(path))})" for path, name in names.items())
        raise ConfigError(
            f"`{args.command}` is about one series, and this project has {len(targets)}: {listed}; "
            f"wanted --series LIST to say which"
        )
    if args.command in TOGETHER:
        from mailer.cli.programme import publish_every_series

        return publish_every_series(args, targets)
    lock: AbstractContextManager[None] = nullcontext()
    if args.command == "send":
        if not _all_valid(targets, report):
            print("Nothing was sent: every programme of the project must be valid first.", file=sys.stderr)
            return EXIT_INVALID
        if not args.dry_run:
            from mailer.record.state import project_lock

            lock = project_lock(args.state)
    codes = []
    with lock:
        for number, path in enumerate(targets):
            heading = f"== {printable(names[path])} ({printable(str(path))}) =="
            print(heading if number == 0 else f"\n{heading}", flush=True)
            one = copy.copy(args)
            one.schedule = path
            if args.command in OWN_FOLDER:
                one.out = args.out / names[path]
            try:
                codes.append(command(one))
            except MailerError as err:
                codes.append(report(err))
            sys.stdout.flush()
    return worst(codes)


def _all_valid(targets: list[Path], report: Callable[[MailerError], int]) -> bool:
    """Load every programme; report the problems of each that does not load. True when all load."""
    from mailer.programme.digest import is_digest, load_digest
    from mailer.programme.schedule import load_schedule
    from mailer.run.digests import gathered_schedules

    valid = True
    for path in targets:
        try:
            if is_digest(path):
                gathered_schedules(load_digest(path))
            else:
                load_schedule(path)
        except MailerError as err:
            report(err)
            valid = False
    return valid
