"""A weekly digest: a programme file with a top-level ``digest:`` block that gathers the seminars of several
series of the project into one mail a week to its own list.

``load_digest`` reads and validates the file alone (every problem at file:line:column, like the schedule);
``resolve`` ties it to the project's series by their list names, reporting an include that names none."""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Mapping as AnyMapping
from dataclasses import dataclass
from pathlib import Path

from mailer.core.address import Address
from mailer.core.errors import Problem, ScheduleError
from mailer.programme import yamlfile
from mailer.programme.keys import DIGEST_KEYS, DIGEST_TOP_KEYS
from mailer.programme.model import Announce, Schedule, Series
from mailer.programme.schedule import LIST_NAME_RE, Reader, _announce, list_name_at
from mailer.programme.yamlfile import Sequence, describe

_DIGEST_BLOCK = re.compile(r"^digest:", re.M)


def is_digest(path: Path) -> bool:
    """Whether ``path`` is a digest's file (a top-level ``digest:`` block) rather than a series'."""
    try:
        return bool(_DIGEST_BLOCK.search(path.read_text(encoding="utf-8", errors="replace")))
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class Digest:
    path: Path
    name: str
    sender: Address
    list_name: str
    include: tuple[tuple[str, int, int], ...]  # list name, line, column (of its entry in the file)
    send: Announce | None = None  # None: with the earliest announcement of the week among the series
    timezone: zoneinfo.ZoneInfo | None = None  # None: the first included series' zone
    signature: str | None = None
    info_url: str | None = None
    upcoming: int = 2  # later weeks listed in brief
    reply_to: Address | None = None
    unsubscribe_url: str | None = None
    service_url: str | None = None

    @property
    def lists(self) -> tuple[str, ...]:
        return tuple(name for name, _, _ in self.include)

    def as_series(self, first: Series) -> Series:
        """The digest as the series its mails come from: its name, sender and list, its zone (else the first
        included series'), its page (else the first series')."""
        return Series(
            name=self.name,
            signature=self.signature or self.name,
            timezone=self.timezone or first.timezone,
            time=dt.time(0, 0),
            duration=60,
            location="",
            zoom=None,
            info_url=self.info_url or first.info_url,
            sender=self.sender,
            list_name=self.list_name,
            upcoming=self.upcoming,
            reply_to=self.reply_to,
            unsubscribe_url=self.unsubscribe_url,
            unsubscribe_email=None,
            announce=self.send,
            service_url=self.service_url,
        )


def load_digest(path: Path) -> Digest:
    """Read and validate a digest file; raise ScheduleError listing every problem."""
    tree, problems = yamlfile.load(path)
    r = Reader(path)
    r.problems.extend(problems)
    root = r.mapping(tree, "the digest file", keys=DIGEST_TOP_KEYS)
    m = r.mapping(root.values["digest"], "digest", keys=DIGEST_KEYS) if root and "digest" in root.values else None
    if m is None:
        raise ScheduleError.from_problems(r.problems or [Problem(path, 1, 1, "no digest: block")])
    v = m.values.get
    list_name = list_name_at(r, v("list"))
    include: list[tuple[str, int, int]] = []
    node = v("include")
    if node is not None and not isinstance(node, Sequence):
        r.add(
            node, f"'include' should be a list of the series' list names, e.g. [colloquium, ml], got {describe(node)}"
        )
    elif isinstance(node, Sequence):
        for item in node.items:
            name = r.matching(item, "include", LIST_NAME_RE, "is not a list name; wanted a series' list: value")
            if name is not None and name in [n for n, _, _ in include]:
                r.add(item, f"'include' names {name!r} twice; wanted each series once")
            elif name is not None:
                include.append((name, item.line, item.column))
        if not node.items:
            r.add(node, "'include' is empty; wanted the list names of the series the digest gathers")
    send = _announce(r, v("send"), "send")
    upcoming = r.integer(v("upcoming"), "upcoming", DIGEST_KEYS) if "upcoming" in m.values else 2
    fields = dict(
        name=r.text(v("name"), "name"),
        sender=r.address(v("sender"), "sender"),
        timezone=r.zone(v("timezone"), "timezone"),
        signature=r.text(v("signature"), "signature"),
        info_url=r.url(v("info_url"), "info_url"),
        reply_to=r.address(v("reply_to"), "reply_to"),
        unsubscribe_url=r.url(v("unsubscribe_url"), "unsubscribe_url", unsubscribe=True),
        service_url=r.url(v("service_url"), "service_url"),
    )
    if r.problems or list_name is None or send is False or upcoming is None:
        r.problems.sort(key=lambda p: (p.line or 0, p.column or 0))
        raise ScheduleError.from_problems(r.problems)
    assert isinstance(fields["name"], str) and isinstance(fields["sender"], Address)
    return Digest(
        path=path,
        list_name=list_name,
        include=tuple(include),
        send=send if isinstance(send, Announce) else None,
        upcoming=upcoming,
        **fields,  # type: ignore[arg-type]
    )


def resolve(digest: Digest, series: AnyMapping[str, Schedule]) -> list[Schedule]:
    """The schedules the digest gathers, in its order; a ScheduleError at each include that names no series of
    the project (or names the digest itself)."""
    problems = []
    for name, line, column in digest.include:
        if name not in series:
            known = ", ".join(sorted(series)) or "none"
            problems.append(
                Problem(
                    digest.path,
                    line,
                    column,
                    f"'include' names {name!r}, which no series of the project has as its list; wanted one of: {known}",
                )
            )
    if digest.list_name in series:
        problems.append(
            Problem(digest.path, 1, 1, f"the digest's list {digest.list_name!r} is also a series' list; wanted its own")
        )
    if problems:
        raise ScheduleError.from_problems(problems)
    return [series[name] for name in digest.lists]
