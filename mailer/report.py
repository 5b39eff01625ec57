"""What a person or cron sees of a send: a progress bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time

from mailer.recipients import ALREADY, DUE, DUPLICATE, INVALID, SUPPRESSED
from mailer.send import Outcome


class Progress:
    """Redraw a bar on a terminal at most 10 times a second; log a line every 10% otherwise."""

    def __init__(self, total: int, *, tty: bool) -> None:
        self.total = max(total, 1)
        self.tty = tty
        self.shown = -1.0
        self.step = -1

    def __call__(self, outcome: Outcome) -> None:
        done = outcome.finished
        if self.tty:
            now = time.monotonic()
            if now - self.shown < 0.1 and done < self.total:
                return
            self.shown = now
            filled = 30 * done // self.total
            print(
                f"\r[{'#' * filled}{' ' * (30 - filled)}] {done}/{self.total}  sent {outcome.sent}  "
                f"deferred {len(outcome.deferred)}  failed {len(outcome.failed)}",
                end="",
                file=sys.stderr,
            )
        elif (step := 10 * done // self.total) > self.step:
            self.step = step
            print(f"progress: {done}/{self.total} done, {outcome.sent} sent", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.tty:
            print(file=sys.stderr)


def print_summary(counts: dict[str, int], outcome: Outcome | None, *, dry_run: bool, subject: str) -> None:
    """The closing report: one figure per class, then the addresses that need attention."""
    due = counts.get(DUE, 0)
    print(f"Announcement: {subject}")
    if dry_run:
        print(f"Dry run: no connection opened, nothing sent. Would send to {due} recipients.")
    elif outcome is None and due == 0:
        print(f"Nothing to do: already sent to {counts.get(ALREADY, 0)} recipients.")
    if outcome is not None:
        print(f"  sent now           {outcome.sent}")
    print(f"  already sent       {counts.get(ALREADY, 0)}")
    if outcome is not None:
        print(f"  deferred           {len(outcome.deferred)}  (run again later: they are retried)")
        print(f"  failed permanently {len(outcome.failed)}  (added to state/suppressed.txt)")
        if outcome.withdrawn:
            print(f"  unsubscribed       {outcome.withdrawn}  (while this send ran: not sent)")
    print(f"  suppressed         {counts.get(SUPPRESSED, 0)}  (unsubscribed or bounced)")
    print(f"  duplicates         {counts.get(DUPLICATE, 0)}")
    print(f"  invalid lines      {counts.get(INVALID, 0)}  (skipped; run check)")
    if outcome is not None:
        for address, detail in outcome.failed:
            print(f"failed: {address.addr}: {detail}")
        for address, detail in outcome.deferred:
            print(f"deferred: {address.addr}: {detail}")
