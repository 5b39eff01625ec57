"""``preview --serve``: the announcement in the browser, re-rendered whenever a file is saved.

uvicorn serves a Starlette app on 127.0.0.1 only; watchfiles (inotify) sees the schedule or a
template change, the announcement is rendered again in a worker thread, and the page, told through
a server-sent event, reloads itself. A mistake in the YAML or a template is shown in the page, at
``file:line``, and the server goes on waiting for the fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import html
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse
from starlette.routing import Route

from mailer.compose.render import Rendered, render
from mailer.core.errors import EXIT_OK, ConfigError, MailerError
from mailer.programme.model import Schedule, Week, week_of
from mailer.programme.schedule import load_schedule

WIDTHS = (375, 800)  # phone and desktop, as in the README's screenshots


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the page shows: one render of the files as they are now."""

    generation: int
    rendered: Rendered | None
    note: str  # which week, or why there is nothing to show
    errors: tuple[str, ...]


def _choose_week(schedule: Schedule, today: dt.date) -> tuple[Week | None, str]:
    """This week's announcement; in a week without a seminar, the next week that has one."""
    week = week_of(schedule, today)
    if week is not None:
        return week, f"the week of {week.monday}"
    later = [s for s in schedule.seminars if s.date > today]
    if not later:
        return None, f"no seminar in the week of {today} or after it: add one to the schedule"
    week = week_of(schedule, later[0].date)
    assert week is not None
    return week, f"the week of {week.monday} (the next with a seminar after {today})"


def snapshot(generation: int, *, schedule: Path, templates: Path, date: dt.date | None) -> Snapshot:
    """Load and render; a MailerError becomes the page's error list instead of stopping."""
    try:
        loaded = load_schedule(schedule)
        today = date or dt.datetime.now(loaded.series.timezone).date()
        week, note = _choose_week(loaded, today)
        if week is None:
            return Snapshot(generation, None, note, ())
        return Snapshot(generation, render(loaded, week, templates=templates), note, ())
    except MailerError as err:
        return Snapshot(generation, None, "", tuple(err.lines()))


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font: 15px/1.4 system-ui, sans-serif; margin: 1rem; background: #f4f4f4; color: #222; }}
h1 {{ font-size: 1.1rem; margin: 0 0 .25rem; }}
.note {{ color: #555; margin: 0 0 1rem; }}
#errors {{ background: #fde8e8; border: 2px solid #c00; padding: .75rem; white-space: pre-wrap; }}
.frames {{ display: flex; gap: 1rem; align-items: flex-start; flex-wrap: wrap; }}
figure {{ margin: 0; }} figcaption {{ color: #555; font-size: .85rem; }}
iframe {{ border: 1px solid #bbb; background: #fff; height: 1400px; }}
pre#text {{ background: #fff; border: 1px solid #bbb; padding: .75rem; white-space: pre-wrap; max-width: 80ch; }}
</style></head>
<body data-generation="{generation}">
<h1 id="subject">{subject}</h1>
<p class="note">Live preview of {note}. Save data/seminars.yaml or a template and this page reloads.</p>
{body}
<script>
new EventSource("/events?seen={generation}").onmessage = () => location.reload();
</script>
</body></html>
"""


def page(shot: Snapshot) -> str:
    """The preview page for one snapshot."""
    esc = html.escape
    if shot.errors:
        body = '<pre id="errors">' + esc("\n".join(f"error: {line}" for line in shot.errors)) + "</pre>"
        return _PAGE.format(
            title="seminar-mailer: errors",
            generation=shot.generation,
            subject="Fix these and save:",
            note="your files",
            body=body,
        )
    if shot.rendered is None:
        return _PAGE.format(
            title="seminar-mailer",
            generation=shot.generation,
            subject="Nothing to announce",
            note=esc(shot.note),
            body="",
        )
    frames = "".join(
        f'<figure><figcaption>HTML at {w} px</figcaption><iframe src="/email.html?g={shot.generation}" '
        f'width="{w}" title="the email at {w} px"></iframe></figure>'
        for w in WIDTHS
    )
    body = (
        f'<div class="frames">{frames}<figure><figcaption>Plain text</figcaption>'
        f'<pre id="text">{esc(shot.rendered.email_text)}</pre></figure></div>'
    )
    return _PAGE.format(
        title=esc(shot.rendered.subject),
        generation=shot.generation,
        subject=esc(shot.rendered.subject),
        note=esc(shot.note),
        body=body,
    )


class Live:
    """The latest snapshot and the pages waiting to hear of the next one."""

    def __init__(self, *, schedule: Path, templates: Path, date: dt.date | None) -> None:
        self.schedule = schedule
        self.templates = templates
        self.date = date
        self.shot = snapshot(1, schedule=schedule, templates=templates, date=date)
        self.changed = asyncio.Condition()

    async def refresh(self) -> None:
        """Render again (in a thread: MJML and the inliner take a moment) and wake the pages."""
        generation = self.shot.generation + 1
        shot = await asyncio.to_thread(
            snapshot, generation, schedule=self.schedule, templates=self.templates, date=self.date
        )
        async with self.changed:
            self.shot = shot
            self.changed.notify_all()

    async def events(self, seen: int) -> AsyncIterator[str]:
        """Server-sent events: ``reload`` once a snapshot newer than ``seen`` exists; comments keep it open."""
        while True:
            async with self.changed:
                if self.shot.generation <= seen:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self.changed.wait(), timeout=15)
                current = self.shot.generation
            if current > seen:
                yield f"data: reload {current}\n\n"
                return
            yield ": still here\n\n"

    def watched(self) -> list[Path]:
        return [p for p in (self.schedule.resolve().parent, self.templates.resolve()) if p.is_dir()]

    def relevant(self, path: str) -> bool:
        changed = Path(path)
        return changed == self.schedule.resolve() or (
            changed.suffix == ".j2" and changed.parent == self.templates.resolve()
        )

    async def watch(self) -> None:
        import watchfiles

        async for changes in watchfiles.awatch(*self.watched(), debounce=50, step=20, recursive=False):
            if any(self.relevant(path) for _, path in changes):
                await self.refresh()


class OwnHost:
    """ASGI middleware: answer 400 to any ``Host:`` but 127.0.0.1:PORT or localhost:PORT.

    A web page elsewhere can point its own name at 127.0.0.1 (DNS rebinding) and read the preview
    through the browser; its requests still carry its own name in ``Host:``, so they stop here.
    """

    def __init__(self, app: Callable[..., Awaitable[None]], port: int) -> None:
        self.app, self.allowed = app, {f"127.0.0.1:{port}".encode(), f"localhost:{port}".encode()}

    async def __call__(self, scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
        if scope["type"] == "http" and dict(scope["headers"]).get(b"host", b"").lower() not in self.allowed:
            body = b"Wrong Host header: open the preview at the address seminar-mailer printed\n"
            headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode())]
            await send({"type": "http.response.start", "status": 400, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def app(live: Live) -> Starlette:
    """The Starlette application: the page, the email's HTML, and the event stream."""
    no_cache = {"Cache-Control": "no-store"}

    async def index(request: Request) -> Response:
        return HTMLResponse(page(live.shot), headers=no_cache)

    async def email(request: Request) -> Response:
        rendered = live.shot.rendered
        if rendered is None:
            return HTMLResponse("<p>Nothing rendered: see the errors above.</p>", headers=no_cache)
        return HTMLResponse(rendered.html, headers=no_cache)

    async def events(request: Request) -> Response:
        try:
            seen = int(request.query_params.get("seen", "0"))
        except ValueError:
            seen = 0
        return StreamingResponse(live.events(seen), media_type="text/event-stream", headers=no_cache)

    return Starlette(
        routes=[Route("/", index), Route("/email.html", email), Route("/events", events)],
    )


def _listen(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as err:
        sock.close()
        raise ConfigError(
            f"--port {port}: cannot listen on 127.0.0.1:{port} ({err.strerror}); wanted a free port, or --port 0"
        ) from None
    sock.listen(64)
    return sock


def serve(
    *,
    schedule: Path,
    templates: Path,
    date: str | None,
    port: int,
    announce: Callable[[str], None],
    open_browser: Callable[[str], None] | None,
) -> int:
    """Serve the live preview on 127.0.0.1 until Ctrl-C."""
    import uvicorn

    day = dt.date.fromisoformat(date) if date else None
    sock = _listen(port)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/"

    async def main() -> None:
        live = Live(schedule=schedule, templates=templates, date=day)
        own = OwnHost(app(live), sock.getsockname()[1])
        config = uvicorn.Config(own, log_level="warning", timeout_graceful_shutdown=1, lifespan="off")
        server = uvicorn.Server(config)
        watcher = asyncio.create_task(live.watch())
        announce(url)
        if open_browser is not None:
            open_browser(url)
        try:
            await server.serve(sockets=[sock])
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return EXIT_OK
