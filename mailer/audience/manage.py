"""The manage page of ``serve``: a subscriber, from the signed link in the footer of every mail, chooses per list of
the project every message, the digest only, or nothing, and a time zone; stored in the preferences (the next
send follows). The link's token names one address (core/tokens.manage_token), so nobody chooses for another.
One-click unsubscribe (RFC 8058) stays per list, in each mail's List-Unsubscribe."""

from __future__ import annotations

import asyncio
import datetime as dt
import html
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from mailer.core.tokens import check_manage
from mailer.core.zones import zone_named
from mailer.record.preferences import ALL, DIGEST, NONE, Preferences

LABELS = {ALL: "every message", DIGEST: "only in the weekly digest", NONE: "nothing"}


@dataclass(frozen=True, slots=True)
class Listed:
    """A list of the project as the page shows it: its name, and whether a digest gathers it."""

    list_name: str
    name: str
    digested: bool


@dataclass(frozen=True, slots=True)
class Manage:
    lists: tuple[Listed, ...]
    state: Path
    token_key: bytes
    page: Callable[[str, str, int], HTMLResponse]  # title, body, status: the service's page
    clock: Callable[[], float]


def _form(manage: Manage, token: str, deliveries: dict[str, str], zone: str | None, message: str = "") -> str:
    rows = []
    for n, listed in enumerate(manage.lists):
        choices = [ALL, *([DIGEST] if listed.digested else []), NONE]
        current = deliveries.get(listed.list_name, ALL)
        radios = "".join(
            f'<label style="font-weight:normal;display:block"><input type="radio" name="list-{n}" value="{c}"'
            f'{" checked" if c == current else ""} style="width:auto"> {LABELS[c]}</label>'
            for c in choices
        )
        rows.append(f"<fieldset><legend>{html.escape(listed.name)}</legend>{radios}</fieldset>")
    return (
        f"{message}<p>For each list you are on; to join one, use its subscribe page. "
        "Unsubscribing stays one click in every mail.</p>"
        f'<form method=post action="manage?t={html.escape(token)}">{"".join(rows)}'
        '<label for="zone">Your time zone (every time is also shown in it; empty: the series\' own)</label>'
        f'<input id="zone" name="zone" value="{html.escape(zone or "")}" placeholder="Europe/London" maxlength="64">'
        "<button type=submit>Save</button></form>"
    )


async def manage_page(manage: Manage, request: Request) -> Response:
    token = request.query_params.get("t", "")
    key = check_manage(manage.token_key, token)
    if key is None:
        body = "<p>This link is not valid (it may have been shortened or altered). Nothing was changed.</p>"
        return manage.page("This link does not work", body, 400)

    def read() -> tuple[dict[str, str], str | None]:
        with Preferences(manage.state) as chosen:
            deliveries = {n.list_name: chosen.deliveries(n.list_name).get(key, ALL) for n in manage.lists}
            return deliveries, chosen.zones().get(key)

    if request.method == "GET":
        deliveries, zone = await asyncio.to_thread(read)
        return manage.page("Your subscriptions", _form(manage, token, deliveries, zone), 200)
    form = await request.form(max_files=0, max_fields=2 * len(manage.lists) + 4)
    wanted: dict[str, str] = {}
    for n, listed in enumerate(manage.lists):
        value = str(form.get(f"list-{n}", ALL))
        if value not in LABELS or (value == DIGEST and not listed.digested):
            return manage.page("Not saved", "<p>That choice is not one this page offers. Nothing was changed.</p>", 400)
        wanted[listed.list_name] = value
    zone = str(form.get("zone", "")).strip() or None
    if zone is not None and zone_named(zone) is None:
        message = (
            f"<p><strong>{html.escape(zone[:80])} is not a time zone</strong>: wanted a name such as Europe/London.</p>"
        )
        return manage.page("Not saved", _form(manage, token, wanted, None, message), 400)

    def write() -> None:
        with Preferences(manage.state, create=True) as chosen:
            chosen.choose(key, wanted, zone, now=dt.datetime.fromtimestamp(manage.clock(), dt.UTC))

    await asyncio.to_thread(write)
    said = "".join(f"<li>{html.escape(n.name)}: {LABELS[wanted[n.list_name]]}</li>" for n in manage.lists)
    where = f" Times are also shown in {html.escape(zone)}." if zone else ""
    return manage.page("Saved", f"<p>From the next mail on:</p><ul>{said}</ul><p>{where}</p>", 200)
