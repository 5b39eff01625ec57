"""The organiser's project folder: finding its root, its default paths, and creating a starter one.

A project is a folder holding ``data/seminars.yaml``. Like git finds its repository, every command
looks for it upwards from the current folder, so it works from any sub-folder; the defaults of
``--schedule``, ``--templates``, ``--recipients``, ``--state``, ``--out`` and the ``.env`` file
resolve against that root. An explicit option or environment variable always wins (and is taken
relative to the current folder, as typed).
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from mailer.core.errors import ConfigError
from mailer.programme.schedule import LIST_NAME_RE
from mailer.programme.schema import MODELINE, SCHEMA_FILE, schema_text

MARKER = Path("data") / "seminars.yaml"  # a project's first series; any data/*.yaml with a series: block is one
_PROGRAMME = re.compile(r"^(?:series|digest):", re.M)  # the top-level block that makes a YAML file a programme

# option: (environment variable, default relative to the project root)
DEFAULTS: dict[str, tuple[str, str]] = {
    "schedule": ("MAILER_SCHEDULE", str(MARKER)),
    "templates": ("MAILER_TEMPLATES", "templates/email"),
    "recipients": ("MAILER_RECIPIENTS", "recipients"),
    "state": ("MAILER_STATE", "state"),
    "env_file": ("MAILER_ENV_FILE", ".env"),
    "out": ("MAILER_PREVIEW", "preview"),
}


def programme_files(root: Path) -> list[Path]:
    """Every programme of the project in ``root``: data/seminars.yaml, then every other data/*.yaml whose
    top level has a ``series:`` (or ``digest:``) block, by name. Other YAML files in data/ are not programmes."""
    found = []
    for path in sorted((root / "data").glob("*.yaml")):
        if path.name == MARKER.name:
            continue
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        if _PROGRAMME.search(text):
            found.append(path)
    return ([root / MARKER] if (root / MARKER).is_file() else []) + found


def list_name_of(path: Path) -> str | None:
    """The ``list:`` a programme file names, read without validating the rest (None: none found)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    block = re.search(r"^(?:series|digest):[^\n]*\n((?:[ \t]+[^\n]*\n|[ \t]*\n)*)", text + "\n", re.M)
    found = re.search(r"^[ \t]+list:[ \t]*[\"']?([^\s\"'#]+)", block.group(1), re.M) if block else None
    return found.group(1) if found else None


def project_lists(schedule: Path) -> set[str]:
    """The lists named by the programmes beside ``schedule`` in its project's data/ (just its own outside one)."""
    if schedule.parent.name != "data":
        return set()
    return {name for path in programme_files(schedule.parent.parent) if (name := list_name_of(path))}


def find_root(start: Path) -> Path | None:
    """The nearest folder at or above ``start`` that holds a programme: data/seminars.yaml or another
    data/*.yaml with a series: block."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / MARKER).is_file() or ((folder / "data").is_dir() and programme_files(folder)):
            return folder
    return None


@dataclass(frozen=True, slots=True)
class Project:
    """Where defaults resolve: the project root, or the current folder outside any project."""

    cwd: Path
    root: Path | None

    @classmethod
    def discover(cls, cwd: Path) -> Project:
        return cls(cwd=cwd, root=find_root(cwd))

    def default(self, name: str, env: Mapping[str, str]) -> Path:
        """The path for option ``name`` when none was given: environment, else root/default.

        Inside the root itself paths stay relative (``data/seminars.yaml``), so messages read as
        typed; from a sub-folder they are absolute, so every message names the real file.
        """
        variable, default = DEFAULTS[name]
        if value := env.get(variable):
            return Path(value)
        if self.root is None or self.root == self.cwd.resolve():
            return Path(default)
        return self.root / default


# --- init -----------------------------------------------------------------------------------------

_SCHEDULE = """\
{modeline}
# The programme of {name}. seminar-mailer announces each week's seminar from this file.
# Check it after every edit:  seminar-mailer check
# The line above lets editors with YAML support (VS Code: Red Hat's "YAML" extension) complete keys
# and flag mistakes while you type; `seminar-mailer schema > data/{schema}` refreshes the schema.
# Quote times ("15:00"): unquoted, YAML reads 15:00 as the number 900.
series:
  name: {name}                     # "Welcome to this week's {name} seminar."
  signature: The {name} Team
  timezone: {timezone}             # IANA name; every date and time below is local to it
  time: "15:00"                    # the usual start, quoted
  duration: 60                     # minutes
  location: Room 1, or online
  # zoom: https://example.org/your-meeting-link
  info_url: https://example.org/seminars
  sender: {name} <seminar@example.org>
  list: {list_name}                # subscribers: recipients/{list_name}.txt
  upcoming: 4                      # how many later seminars each announcement lists
  announce: "Monday 08:00"         # the week's announcement goes out from then (cron runs send every 15 min)
  # reminder: "09:00"              # remind everyone on the day at 09:00 (or 2h / 90m before the start)
  # reply_to: Organisers <organisers@example.org>
  # unsubscribe_url: https://example.org/unsubscribe
  # zoom_public: false             # keep the join link off the published website (the mails keep it)
  # approval: required            # nothing is mailed about a week before `seminar-mailer approve` for it
  # followup: true                 # mail the slides and video once after the talk, to those told of it
  # organisers: [you@example.org]  # 24 h before each announcement: what its seminars still lack (TBA)

seminars:
  - date: {date}                   # YYYY-MM-DD; announced from Monday 08:00 of its week
    speaker: Ada Lovelace
    affiliation: Analytical Society
    title: Notes on the Analytical Engine
    abstract: |
      Markdown: *emphasis*, [links](https://example.org) and paragraphs.
    # bio: |
    #   Also Markdown.
    # Per seminar, when not the series' own: time: "10:15", duration: 90, location: ..., zoom: ...
    # After the talk: slides: URL, video: URL, paper: URL (on its web page and in the archive).
    # draft: true keeps a seminar out of every mail and page until you remove the line.
    # cancelled: true (or the reason): a cancellation to everyone told of it. Edits after the
    # announcement (date, time, place, speaker, title) are sent as a change to those told.
"""

_RECIPIENTS = """\
# Subscribers of {list_name}: one a line, address@example.org or Name <address@example.org>.
# '#' starts a comment. Addresses in recipients/unsubscribed.txt are never sent to.
"""

# Every comment stands on its own line above its setting, so that removing the "# " of a setting's
# line gives a valid line (tests/programme/test_project.py uncomments each in turn and runs check).
_ENV_EXAMPLE = """\
# SMTP settings. Copy this file to .env (never commit .env) and fill it in; the environment
# wins over .env. Every variable is in the manual's "Environment variables" page (docs/environment.md).
# To set one shown commented out, remove the "# " before it.

# Your SMTP server's name (seminar-mailer check refuses this placeholder).
SMTP_HOST=smtp.example.org
# Its port: 587 by default, 465 with SMTP_SECURITY=tls.
# SMTP_PORT=587
# starttls (the default), tls (implicit TLS, port 465) or none (plaintext: a test server on this machine only).
# SMTP_SECURITY=starttls
# The login. For a server without one, delete both lines.
SMTP_USERNAME=
SMTP_PASSWORD=

# Bounces (docs/bounces.md): give the list a mailbox of its own for returned mail, read by
# `seminar-mailer bounces` (see crontab.example). Uncomment a line to set it.
# The envelope sender, where bounces go (default: the series' sender, a public address):
# MAILER_ENVELOPE_FROM=bounces@example.org
# VERP: each recipient's envelope sender becomes bounces+<token>@example.org (Postfix: recipient_delimiter = +);
# it needs MAILER_ENVELOPE_FROM above: then add the line MAILER_VERP=on
# Soft bounces (a full mailbox, a host down) about this many distinct seminars unsubscribe an address:
# MAILER_SOFT_BOUNCES=3
# The bounce mailbox over IMAP (check it with `seminar-mailer check --imap`):
# BOUNCES_IMAP_HOST=imap.example.org
# BOUNCES_IMAP_USERNAME=bounces@example.org
# BOUNCES_IMAP_PASSWORD=
# tls (implicit TLS, port 993) or starttls (port 143); certificates are always verified:
# BOUNCES_IMAP_SECURITY=tls
# BOUNCES_IMAP_PORT=993
# A PEM file of your institution's own CA, when the server's certificate is signed by it:
# BOUNCES_IMAP_CA_FILE=/etc/ssl/certs/my-ca.pem
# The folder bounces arrive in:
# BOUNCES_IMAP_FOLDER=INBOX
# Where read bounces are moved (created when missing; unreadable mail goes to seminar-mailer-quarantine):
# BOUNCES_IMAP_DONE=seminar-mailer-processed
"""

_GITIGNORE = """\
# The ledger, lock, token key and logs: this machine's record of what was sent.
state/
# SMTP credentials.
.env
preview/
.venv/
"""

_CRONTAB = """\
# Add these lines with `crontab -e` as the user who owns this folder (see the README, "From cron").
# Every 15 minutes: send decides what is due (the announcement from the series' announce time,
# changes, cancellations, reminders, retries); with nothing due it sends nothing.
# No CRON_TZ: "every 15 minutes" is the same in every zone, and send reads the series' time zone
# from data/seminars.yaml on each run, so moving the series to another zone needs no change here.
*/15 * * * *  {line}
# Every hour at :40: read the bounce mailbox (docs/bounces.md): hard bounces unsubscribe, soft ones
# count per seminar, mail that is not ours stays where it is. Once BOUNCES_IMAP_* are set in .env and
# `seminar-mailer check --imap` passes, uncomment the next line:
# 40 * * * *  {bounces}
"""


def cron_line(folder: Path, command: str) -> str:
    """The command cron runs: the README's line for this folder and this installation."""
    return f"cd {shlex.quote(str(folder))} && mkdir -p state && {command} send >> state/send.log 2>&1"


def bounces_line(folder: Path, command: str) -> str:
    """The command cron runs to read the bounce mailbox."""
    return f"cd {shlex.quote(str(folder))} && mkdir -p state && {command} bounces >> state/bounces.log 2>&1"


def installed_command() -> str:
    """How to run this seminar-mailer from anywhere: the console script beside this Python."""
    script = Path(sys.executable).parent / "seminar-mailer"
    if script.is_file():
        return shlex.quote(str(script))
    return f"{shlex.quote(sys.executable)} -m mailer"


def local_timezone() -> str:
    """The machine's IANA zone name from /etc/localtime, else UTC."""
    target = Path("/etc/localtime")
    try:
        parts = target.resolve().parts
    except OSError:
        return "UTC"
    if "zoneinfo" in parts:
        name = "/".join(parts[parts.index("zoneinfo") + 1 :])
        if name and not name.startswith(("posix/", "right/")):
            return name
    return "UTC"


@dataclass(frozen=True, slots=True)
class Created:
    folder: Path
    files: tuple[Path, ...]
    seminar_date: dt.date
    crontab: str


def init(folder: Path, *, today: dt.date, timezone: str, command: str) -> Created:
    """Create a starter project in ``folder``; refuse to overwrite any file, or to nest in another project."""
    folder = folder.resolve()
    # Inside a project every command finds the nearest root, so a project made in a sub-folder would
    # silently take over there (its own list, state and ledger): almost always a mistyped folder.
    if (outer := find_root(folder)) is not None and outer != folder:
        raise ConfigError(
            f"{folder} is inside the seminar-mailer project {outer} ({outer / MARKER}); wanted a folder "
            "outside any project, e.g. seminar-mailer init ../my-seminar"
        )
    words = re.sub(r"[^A-Za-z0-9]+", " ", folder.name).strip()
    name = words.title() if words else "Research"
    list_name = re.sub(r"[^a-z0-9]+", "-", folder.name.lower()).strip("-._")
    if not LIST_NAME_RE.match(list_name):
        list_name = "seminar"
    monday = today + dt.timedelta(days=7 - today.weekday())  # next week's Monday
    seminar_date = monday + dt.timedelta(days=3)
    crontab = _CRONTAB.format(line=cron_line(folder, command), bounces=bounces_line(folder, command))
    files = {
        MARKER: _SCHEDULE.format(
            modeline=MODELINE, schema=SCHEMA_FILE, name=name, timezone=timezone, list_name=list_name, date=seminar_date
        ),
        MARKER.parent / SCHEMA_FILE: schema_text(),
        Path("recipients") / f"{list_name}.txt": _RECIPIENTS.format(list_name=list_name),
        Path(".env.example"): _ENV_EXAMPLE,
        Path(".gitignore"): _GITIGNORE,
        Path("crontab.example"): crontab,
    }
    existing = [folder / path for path in files if (folder / path).exists()]
    if existing:
        raise ConfigError(f"{existing[0]} already exists; wanted an empty or new folder (init never overwrites a file)")
    try:
        for path, text in files.items():
            (folder / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / path).write_text(text, encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{err.filename}: cannot create the project: {err.strerror}") from err
    return Created(folder, tuple(folder / p for p in files), seminar_date, crontab)


def add_series(folder: Path, list_name: str, *, today: dt.date, timezone: str) -> Created:
    """Add a starter series to the project ``folder`` is in: data/<list>.yaml and recipients/<list>.txt."""
    root = find_root(folder.resolve())
    if root is None:
        raise ConfigError(f"{folder.resolve()} is in no seminar-mailer project; wanted a project (init DIR makes one)")
    if not LIST_NAME_RE.match(list_name) or list_name == MARKER.stem:
        raise ConfigError(
            f"--add-series {list_name!r} is not a list name; wanted lower-case letters, digits, '.', '_' or '-' "
            f"(and not {MARKER.stem!r}, the first series' file)"
        )
    if list_name in {list_name_of(p) for p in programme_files(root)}:
        raise ConfigError(f"{root}: a programme already has list: {list_name}; wanted a list name of its own")
    name = re.sub(r"[^A-Za-z0-9]+", " ", list_name).strip().title() or "Research"
    monday = today + dt.timedelta(days=7 - today.weekday())
    seminar_date = monday + dt.timedelta(days=3)
    files = {
        Path("data") / f"{list_name}.yaml": _SCHEDULE.format(
            modeline=MODELINE, schema=SCHEMA_FILE, name=name, timezone=timezone, list_name=list_name, date=seminar_date
        ),
        Path("recipients") / f"{list_name}.txt": _RECIPIENTS.format(list_name=list_name),
    }
    for path in files:
        if (root / path).exists():
            raise ConfigError(f"{root / path} already exists; wanted a new list name (init never overwrites a file)")
    for path, text in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(text, encoding="utf-8")
    return Created(root, tuple(root / p for p in files), seminar_date, "")
