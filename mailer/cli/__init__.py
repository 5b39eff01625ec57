"""Thin commands that call the stages; the only place that prints and exits.

One module per group of commands (programme, delivery, audience), the parser, and the context every
command resolves; ``main`` dispatches and turns errors into exit codes."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from mailer.cli.audience import SUBSCRIBER_COMMANDS
from mailer.cli.context import STANDALONE, located, programme_targets, resolve_defaults, series_zone
from mailer.cli.delivery import (
    approve_command,
    login_command,
    rename_list_command,
    send_command,
    status_command,
    unsuppress_command,
)
from mailer.cli.parser import build_parser, parse
from mailer.cli.programme import (
    add_command,
    check_command,
    import_command,
    init_command,
    preview_or_serve_command,
    publish_command,
    schema_command,
    shift_command,
)
from mailer.cli.series import every_series
from mailer.core.crash import write_crash_report
from mailer.core.errors import EXIT_OK, EXIT_SOFTWARE, EXIT_TEMPFAIL, MailerError
from mailer.core.terminal import printable
from mailer.programme.project import Project

_COMMANDS = {
    "init": init_command,
    "check": check_command,
    "preview": preview_or_serve_command,
    "send": send_command,
    "status": status_command,
    "unsuppress": unsuppress_command,
    "rename-list": rename_list_command,
    "approve": approve_command,
    "login": login_command,
    "schema": schema_command,
    "add": add_command,
    "import": import_command,
    "shift": shift_command,
    "publish": publish_command,
    **SUBSCRIBER_COMMANDS,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; return its exit code. MailerError is the user's to fix; anything else is a bug (exit 70)."""
    parser = build_parser()
    args = parse(parser, argv)
    if args.command is None:
        parser.print_help()
        return EXIT_OK
    args.templates_given = getattr(args, "templates", None) is not None or bool(os.environ.get("MAILER_TEMPLATES"))
    try:
        project = Project.discover(Path.cwd())
        resolve_defaults(args, project)
        targets = [args.schedule]
        if args.command not in STANDALONE and hasattr(args, "schedule"):
            targets = programme_targets(args, project, given=args.schedule_given)
            args.schedule = targets[0]
        if args.command == "send":
            from mailer.core.logs import timestamp_unless_terminal

            timestamp_unless_terminal(zone=lambda: series_zone(args.schedule))
        if len(targets) > 1:
            return every_series(args, targets, _COMMANDS[args.command], report=_report)
        return _COMMANDS[args.command](args)
    except MailerError as err:
        return _report(err)
    except BrokenPipeError:  # before the bug handler: a reader that stops early is no bug
        return closed_pipe()
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


def _report(err: MailerError) -> int:
    for line in located(err).lines():
        print(f"error: {printable(line)}", file=sys.stderr)
    return err.exit_code


EXIT_PIPE = 141  # 128 + SIGPIPE: the reader of the output went away, as git and grep end then


def closed_pipe() -> int:
    """The reader of stdout went away (``status | head -1``): stop quietly, with no crash file."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # the interpreter's last flush then has nowhere to fail
    os.close(devnull)
    return EXIT_PIPE


def run() -> None:
    """Console-script entry point."""
    code = main()
    try:
        sys.stdout.flush()  # what main printed into the pipe's buffer goes out here
    except BrokenPipeError:
        code = closed_pipe()
    sys.exit(code)
