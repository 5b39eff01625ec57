"""``seminar-mailer serve``: the list's small web service (Starlette on uvicorn), behind the
organiser's reverse proxy.

- ``POST /unsubscribe?list=&r=&t=`` with ``List-Unsubscribe=One-Click`` (RFC 8058): checks the token
  (tokens.py, constant-time), records the unsubscription in the store, synced, then answers 200.
  Idempotent, no confirmation step, no cookie, no redirect.
- ``GET /unsubscribe?...``: a page with one button that makes that POST. A GET never unsubscribes:
  mail scanners follow links.
- ``GET /subscribe``: a form (name, address). ``POST /subscribe`` answers the same page whether or
  not the address is known, and mails a confirmation link in the background (so the answer's timing
  says nothing either); rate-limited per client and per address.
- ``GET /confirm?t=``: a page with one button; ``POST /confirm`` subscribes, once per link, until it
  expires.
Bad, forged, expired or used tokens get a 4xx page and change nothing. Bodies over 8 KiB get 413.
Every response forbids caching, framing, referrers and scripts; none sets a cookie.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import hashlib
import html
import logging
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from mailer.audience.manage import Listed, Manage, manage_page
from mailer.core.address import Address, format_address, header_text, parse_address
from mailer.core.errors import MailerError
from mailer.core.tokens import CONFIRM_LIFETIME, check_confirm, check_unsubscribe, confirm_token
from mailer.deliver.config import SmtpSettings
from mailer.deliver.smtp import send_one
from mailer.programme.model import Series
from mailer.record.subscribers import Subscribers

MAX_BODY = 8 * 1024  # bytes: every form here is a few hundred
MAX_SPEAKER_BODY = 64 * 1024  # bytes: the speaker's form (an abstract and a bio of 10 000 characters each)
CLIENT_BURST, CLIENT_PER_HOUR = 5, 10  # subscribe requests a client may make at once, then per hour
ADDRESS_BURST, ADDRESS_PER_DAY = 2, 3  # confirmation mails one address may get at once, then per day

log = logging.getLogger("seminar_mailer.web")

_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",  # the unsubscribe URL carries a token
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
}
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem;color:#1f2933;"
    "line-height:1.5}button{font-size:1rem;padding:.6rem 1.2rem;border:0;border-radius:4px;background:#1f6feb;"
    "color:#fff;cursor:pointer}input{font-size:1rem;padding:.4rem;width:100%;box-sizing:border-box;"
    "margin:.2rem 0 .8rem}label{font-weight:600}"
)


class RateLimit:
    """Token buckets by key: ``burst`` at once, refilled at ``rate`` per ``period`` seconds."""

    def __init__(self, burst: int, rate: int, period: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.burst, self.refill, self.clock = burst, rate / period, clock
        self.buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when)
        self.lock = threading.Lock()

    def allow(self, key: str) -> bool:
        now = self.clock()
        with self.lock:
            tokens, then = self.buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - then) * self.refill)
            allowed = tokens >= 1
            self.buckets[key] = (tokens - 1 if allowed else tokens, now)
            if len(self.buckets) > 100_000:  # bounded memory: forget the keys that are full again
                self.buckets = {
                    k: (t, w) for k, (t, w) in self.buckets.items() if t + (now - w) * self.refill < self.burst
                }
            return allowed


@dataclass(frozen=True, slots=True)
class Service:
    """What the service needs: the series, the store's folder, the token key, SMTP for confirmations."""

    series: Series
    store: Subscribers
    token_key: bytes
    smtp: SmtpSettings
    clock: Callable[[], float] = time.time
    schedule_path: Path | None = None  # the programme: the speaker's form shows its seminar (None: no form)
    lists: tuple[Listed, ...] = ()  # every list of the project, for the manage page (default: this series' alone)


def _page(series: Series, title: str, body: str, status: int = 200) -> HTMLResponse:
    name = html.escape(series.name)
    text = (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{html.escape(title)} – {name}</title><style>{_STYLE}</style></head>"
        f"<body><main><h1>{html.escape(title)}</h1>{body}</main>"
        f'<footer><p><small>{name} seminar announcements · <a href="{html.escape(series.info_url)}">'
        f"about the seminar</a></small></p></footer></body></html>"
    )
    return HTMLResponse(text, status_code=status, headers=_HEADERS)


def build_app(service: Service) -> Starlette:
    """The ASGI application (wrapped in the body-size limit)."""
    series, store = service.series, service.store
    lock = threading.Lock()  # one SQLite connection, used from the thread pool
    per_client = RateLimit(CLIENT_BURST, CLIENT_PER_HOUR, 3600)
    per_address = RateLimit(ADDRESS_BURST, ADDRESS_PER_DAY, 86400)
    name = html.escape(series.name)

    async def locked(fn: Callable[[], Any]) -> Any:
        def run() -> Any:
            with lock:
                return fn()

        return await asyncio.to_thread(run)

    def refused(why: str, expired: str, forged: str) -> HTMLResponse:
        """A link's token that is not (or no longer) good: 410 when it expired, else 400."""
        return bad_link(expired if why == "expired" else forged, 410 if why == "expired" else 400)

    def bad_link(what: str, status: int = 400) -> HTMLResponse:
        return _page(
            series,
            "This link does not work",
            f"<p>{what} Nothing was changed.</p><p>To unsubscribe, use the link in a recent announcement, "
            f"or write to {html.escape(series.unsubscribe_address.addr)} with the subject “unsubscribe”.</p>",
            status,
        )

    async def unsubscriber(request: Request) -> str | None:
        q = request.query_params
        name = q.get("list", "")
        if name != series.list_name and name not in await locked(store.former_names):  # renamed: old links work
            return None
        return check_unsubscribe(service.token_key, name, q.get("r", ""), q.get("t", ""))

    async def unsubscribe(request: Request) -> Response:
        has_token = "t" in request.query_params
        if request.method == "GET":
            if not has_token:
                return _page(
                    series,
                    "Unsubscribe",
                    f"<p>Every {name} announcement carries your own unsubscribe link: use the "
                    "“Unsubscribe” button your mail program shows next to the sender, or the link at the "
                    f"bottom of the announcement. Or write to {html.escape(series.unsubscribe_address.addr)} "
                    "with the subject “unsubscribe”.</p>",
                )
            if await unsubscriber(request) is None:
                return bad_link("This unsubscribe link is not valid (it may have been shortened or altered).")
            return _page(
                series,
                "Unsubscribe",
                f"<p>Stop receiving the {name} seminar announcements?</p>"
                '<form method="post" action=""><input type="hidden" name="List-Unsubscribe" value="One-Click">'
                "<button type=submit>Unsubscribe</button></form>",
            )
        form = await request.form(max_files=0, max_fields=8)
        if form.get("List-Unsubscribe") != "One-Click":
            return bad_link("An unsubscribe request must carry List-Unsubscribe=One-Click (RFC 8058).")
        key = await unsubscriber(request)
        if key is None:
            return bad_link("This unsubscribe link is not valid (it may have been shortened or altered).")
        await locked(lambda: store.unsubscribe(key, "one-click", now=service.clock()))
        return _page(
            series,
            "You are unsubscribed",
            f"<p>You will receive no more {name} seminar announcements. A send that is running "
            "right now stops for you within a second.</p>",
        )

    def subscribe_form(message: str = "", status: int = 200) -> HTMLResponse:
        return _page(
            series,
            "Subscribe",
            f"{message}<p>Get the {name} seminar announcement by email every week. We send you a link to "
            "confirm first; you can unsubscribe from any announcement in one click.</p>"
            '<form method="post" action="subscribe">'
            '<label for="name">Name (optional)</label><input id="name" name="name" maxlength="100" autocomplete="name">'
            '<label for="email">Email address</label>'
            '<input id="email" name="email" type="email" required maxlength="254" autocomplete="email">'
            "<button type=submit>Subscribe</button></form>",
            status,
        )

    async def subscribe(request: Request) -> Response:
        if request.method == "GET":
            return subscribe_form()
        client = request.client.host if request.client else "unknown"
        if not per_client.allow(client):
            return _page(series, "Too many requests", "<p>Please try again in an hour.</p>", 429)
        form = await request.form(max_files=0, max_fields=8)
        raw_name, raw_email = str(form.get("name", "")).strip(), str(form.get("email", "")).strip()
        address = parse_address(raw_email) if "<" not in raw_email else None
        if address is None or len(raw_name) > 100 or any(c in raw_name for c in '<>"\\') or not raw_name.isprintable():
            return subscribe_form(
                '<p role="alert">Please enter one email address such as name@example.org, and a plain name.</p>', 400
            )
        # The name is checked but never kept: what a stranger types must not reach anyone's To: header (#9).
        address = Address(name="", addr=address.addr)
        task = None
        if per_address.allow(address.key):  # over the limit: the same answer, and no mail
            nonce, expires = await locked(lambda: store.subscribe_pending(address, now=service.clock()))
            task = BackgroundTask(
                send_confirmation, service, address, confirm_token(service.token_key, series.list_name, nonce, expires)
            )
        response = _page(
            series,
            "Check your inbox",
            f"<p>If that address can receive the {name} announcements, a message to it holds a link to confirm "
            f"the subscription. The link works once, for {CONFIRM_LIFETIME // 3600} hours.</p>",
        )
        response.background = task
        return response

    async def confirm(request: Request) -> Response:
        if request.method == "GET":
            token = request.query_params.get("t", "")
        else:
            token = str((await request.form(max_files=0, max_fields=8)).get("t", ""))
        nonce, why = check_confirm(service.token_key, series.list_name, token, now=service.clock())
        if nonce is None:
            return refused(
                why,
                "This confirmation link has expired: subscribe again for a new one.",
                "This confirmation link is not valid (it may have been shortened or altered).",
            )
        if request.method == "GET":
            return _page(
                series,
                "Confirm your subscription",
                f"<p>Receive the {name} seminar announcements by email?</p>"
                f'<form method="post" action="confirm"><input type="hidden" name="t" value="{html.escape(token)}">'
                "<button type=submit>Confirm</button></form>",
            )
        address = await locked(lambda: store.confirm(nonce, now=service.clock()))
        if address is None:
            return bad_link("This confirmation link has been used already, or is no longer valid.", 410)
        return _page(series, "You are subscribed", f"<p>You will receive the next {name} seminar announcement.</p>")

    def speaker_form(
        token: str, seminar: Any, values: dict[str, str], message: str = "", status: int = 200
    ) -> Response:
        from mailer.audience.speakers import FIELDS

        rows = []
        for field_name, label, kind, limit in FIELDS:
            value = html.escape(values.get(field_name, "") or "")
            if kind == "markdown":
                rows.append(
                    f'<label for="{field_name}">{label}</label><textarea id="{field_name}" name="{field_name}" '
                    f'rows="8" maxlength="{limit}" style="width:100%">{value}</textarea>'
                )
            else:
                rows.append(
                    f'<label for="{field_name}">{label}</label><input id="{field_name}" name="{field_name}" '
                    f'maxlength="{limit}" value="{value}"{" type=url" if kind == "url" else ""}>'
                )
        when = f"{seminar.start:%A %Y-%m-%d, %H:%M} {seminar.tz_label}"
        return _page(
            series,
            "Your seminar",
            f"{message}<p>The {name} seminar on {html.escape(when)}, {html.escape(seminar.speaker)}. What you send "
            "reaches the organisers, who publish it.</p>"
            f'<form method="post" action="speaker"><input type="hidden" name="t" value="{html.escape(token)}">'
            + "".join(rows)
            + "<button type=submit>Send to the organisers</button></form>",
            status,
        )

    async def speaker(request: Request) -> Response:
        from mailer.audience.speakers import check_fields, seminar_on
        from mailer.core.tokens import check_speaker
        from mailer.programme.schedule import load_schedule
        from mailer.record.proposals import Proposals

        if service.schedule_path is None:
            return bad_link("This service has no speakers' form.", 404)
        form = dict(await request.form(max_files=0, max_fields=16)) if request.method == "POST" else {}
        token = request.query_params.get("t", "") if request.method == "GET" else str(form.get("t", ""))
        found, why = check_speaker(service.token_key, series.list_name, token, now=service.clock())
        if found is None:
            return refused(
                why,
                "This link has expired: ask the organisers for a new one.",
                "This link is not valid (it may have been shortened or altered).",
            )
        date, who = found
        try:
            seminar = seminar_on(await asyncio.to_thread(load_schedule, service.schedule_path), date)
        except MailerError as err:  # the organiser is editing it: say so, keep the details for the log
            log.warning("speaker form: the programme cannot be read: %s", err)
            return _page(series, "Please try again later", "<p>The programme is being edited.</p>", 503)
        if seminar is None:
            return bad_link("The seminar of this link is no longer in the programme: ask the organisers.", 410)
        if request.method == "GET":
            return speaker_form(token, seminar, {f: getattr(seminar, f) or "" for f in ("title", "affiliation",
                                "abstract", "bio", "slides", "video")})  # fmt: skip
        client = request.client.host if request.client else "unknown"
        if not per_client.allow("speaker:" + client):
            return _page(series, "Too many requests", "<p>Please try again in an hour.</p>", 429)
        values = {k: str(v) for k, v in form.items() if k != "t"}
        fields, wrong = check_fields(values)
        if wrong:
            alert = '<p role="alert">' + html.escape("; ".join(wrong)) + ".</p>"
            return speaker_form(token, seminar, values, alert, 400)

        def keep() -> None:
            with Proposals(service.store.path.parent, series.list_name) as proposals:
                proposals.propose(date, who, fields, now=dt.datetime.fromtimestamp(service.clock(), dt.UTC))

        await locked(keep)
        return _page(
            series,
            "Thank you",
            "<p>The organisers have your details; they publish them with the announcement. This link works for "
            "changes until it expires.</p>",
        )

    lists = service.lists or (Listed(series.list_name, series.name, False),)
    settings = Manage(
        lists, store.path.parent, service.token_key, lambda t, b, c: _page(series, t, b, c), service.clock
    )

    async def manage(request: Request) -> Response:
        if not per_client.allow(request.client.host if request.client else "?"):
            return _page(series, "Too many requests", "<p>Please try again in a while.</p>", 429)
        return await manage_page(settings, request)

    app = Starlette(
        routes=[
            Route("/", subscribe, methods=["GET"]),
            Route("/subscribe", subscribe, methods=["GET", "POST"]),
            Route("/confirm", confirm, methods=["GET", "POST"]),
            Route("/unsubscribe", unsubscribe, methods=["GET", "POST"]),
            Route("/speaker", speaker, methods=["GET", "POST"]),
            Route("/manage", manage, methods=["GET", "POST"]),
        ]
    )
    return app


async def send_confirmation(service: Service, address: Address, token: str) -> None:
    """Mail the confirmation link through the configured SMTP server; a failure is logged, not shown."""
    series, settings = service.series, service.smtp
    link = f"{series.service_url}/confirm?t={token}"
    domain = series.sender.ascii_addr.rpartition("@")[2]
    now = dt.datetime.fromtimestamp(service.clock(), dt.UTC)
    seed = hashlib.sha256(f"{address.key}\0{token}".encode()).hexdigest()[:32]
    head = [
        f"From: {format_address(series.sender)}",
        f"To: {format_address(Address('', address.addr), smtputf8=address.needs_smtputf8)}",
        f"Subject: {header_text(f'Confirm your subscription to the {series.name} seminar announcements')}",
        f"Date: {email.utils.format_datetime(now)}",
        f"Message-ID: <confirm-{seed}@{domain}>",
        "Auto-Submitted: auto-generated",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
    ]
    body = (
        f"Someone, probably you, asked to receive the {series.name} seminar announcements at this address.\n\n"
        f"To confirm, open this link and press Confirm (it works once, for {CONFIRM_LIFETIME // 3600} hours):\n\n"
        f"{link}\n\nIf it was not you, ignore this message: without confirmation nothing is sent to you.\n\n"
        f"-- {series.signature}\n"
    )
    message = ("\r\n".join(head) + "\r\n\r\n" + body.replace("\n", "\r\n")).encode("utf-8")
    try:
        await send_one(settings, settings.envelope_from or series.sender.ascii_addr, address, message)
    except Exception as err:  # a background task: the answer went out; log it for the organiser
        log.warning("confirmation mail to %s not sent: %s", address.addr, err)


class LimitBody:
    """ASGI middleware: refuse bodies over ``limit`` bytes with 413, by Content-Length or as they stream.

    The body is read here in full (it is small) before the application sees the request.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], limit: int = MAX_BODY) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = MAX_SPEAKER_BODY if scope.get("path") == "/speaker" else self.limit
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            await self._refuse(send)
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > limit:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Any:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(send: Callable[..., Any]) -> None:
        body = b"Request too large\n"
        headers = [(k.lower().encode(), v.encode()) for k, v in _HEADERS.items()]
        headers += [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
        headers += [(b"connection", b"close")]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def serve(
    service: Service,
    sock: socket.socket,
    *,
    forwarded_allow_ips: str = "127.0.0.1",
    mounts: dict[str, Service] | None = None,
) -> None:
    """Run on ``sock`` (bound by the caller) until interrupted. X-Forwarded-For is trusted only from
    ``forwarded_allow_ips`` (the proxy). ``mounts``: several series, each under its path prefix."""
    import uvicorn
    from starlette.routing import Mount

    app = (
        build_app(service) if not mounts else Starlette(routes=[Mount(p, app=build_app(s)) for p, s in mounts.items()])
    )
    config = uvicorn.Config(
        LimitBody(app),
        proxy_headers=True,
        forwarded_allow_ips=forwarded_allow_ips,
        server_header=False,
        limit_concurrency=200,
        timeout_keep_alive=5,
        log_level="info",
        access_log=False,  # request lines hold unsubscribe and confirmation tokens
    )
    uvicorn.Server(config).run(sockets=[sock])
