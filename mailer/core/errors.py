"""One error root for everything an organiser can get wrong, each printable as path:line:column."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

# Documented exit codes (README, "Exit codes").
EXIT_OK = 0
EXIT_FAILED = 1  # some recipients failed permanently
EXIT_INVALID = 2  # invalid input or configuration: nothing was sent
EXIT_SOFTWARE = 70  # EX_SOFTWARE: a bug in seminar-mailer; the traceback went to a file
EXIT_TEMPFAIL = 75  # EX_TEMPFAIL: deferred recipients remain, or another run holds the lock


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an input file, at a 1-based position when one is known."""

    path: Path | str
    line: int | None
    column: int | None
    message: str

    def __str__(self) -> str:
        where = str(self.path)
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        return f"{where}: {self.message}"


class MailerError(Exception):
    """Root of every error seminar-mailer reports to the user without a traceback."""

    exit_code = EXIT_INVALID

    def __init__(self, message: str, *, problems: tuple[Problem, ...] = ()) -> None:
        super().__init__(message)
        self.problems = problems

    def lines(self) -> list[str]:
        """Return the lines to print: one per problem, or the message itself."""
        return [str(p) for p in self.problems] or [str(self)]


class ScheduleError(MailerError):
    """The schedule YAML is unreadable or invalid."""

    @classmethod
    def from_problems(cls, problems: list[Problem]) -> ScheduleError:
        n = len(problems)
        return cls(f"{n} problem{'s' if n != 1 else ''} in the schedule", problems=tuple(problems))


class TemplateError(MailerError):
    """A template is missing, has a syntax error, or uses an undefined value."""


class ConfigError(MailerError):
    """The environment or command line is wrong (SMTP settings, paths)."""


class DeliveryError(MailerError):
    """Delivery could not proceed (connection, TLS, authentication)."""

    exit_code = EXIT_TEMPFAIL


class LedgerError(MailerError):
    """A result could not be recorded (disk full, I/O error): sending stops, try again later."""

    exit_code = EXIT_TEMPFAIL


class MessageRefusedError(MailerError):
    """The server refuses the message itself (content, size, line length): no recipient is to blame."""


class LockedError(MailerError):
    """Another run holds the lock for this announcement."""

    exit_code = EXIT_TEMPFAIL
