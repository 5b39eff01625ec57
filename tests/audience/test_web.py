"""The web service, running for real on loopback (`python -m mailer serve`), with aiosmtpd catching
the confirmation mails. Every request is real HTTP; the store is read back by the real commands."""

from __future__ import annotations

import email
import email.policy
import os
import re
import socket
import subprocess
import sys
import time
import unicodedata
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailer.core.tokens import unsubscribe_query
from mailer.record.subscribers import Subscribers
from tests.conftest import FUTURE_NOW, ROOT, SCHEDULE, VALID, run_cli
from tests.smtp_server import Server, free_port, start_server
from tests.web_service import TOKEN_KEY, Service, start_service

LIST = "Ada Lovelace <ada@example.org>\nalan@example.org\ngrace@example.org\n"
ONE_CLICK = "List-Unsubscribe=One-Click"


@pytest.fixture
def smtp(tmp_path: Path) -> Iterator[Server]:
    server = start_server(tmp_path)
    yield server
    server.controller.stop()


@pytest.fixture
def service(tmp_path: Path, smtp: Server) -> Iterator[Service]:
    started = start_service(tmp_path, smtp, recipients=LIST)
    yield started
    started.stop()


def link_for(address_key: str, service: Service) -> str:
    return f"/unsubscribe?{unsubscribe_query(TOKEN_KEY.encode(), 'learning-machines', address_key)}"


def dry_run(service: Service) -> str:
    result = run_cli("send", "--dry-run", "--date", "2024-01-15", *service.paths(), env=service.env)
    assert result.code == 0, result.err
    return result.out


def wait_for_mail(smtp: Server, n: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while len(smtp.recorder.received) < n and time.monotonic() < deadline:
        time.sleep(0.05)


def test_one_click_from_a_real_preview_removes_the_subscriber_from_the_next_send(
    service: Service, tmp_path: Path
) -> None:
    preview = run_cli(
        "preview", "--date", "2024-01-15", "--out", str(tmp_path / "p"), *service.paths(), env=service.env
    )
    assert preview.code == 0, preview.err
    message = email.message_from_bytes((tmp_path / "p" / "announcement.eml").read_bytes(), policy=email.policy.SMTP)
    assert message["List-Unsubscribe-Post"] == ONE_CLICK
    links = re.findall(r"<([^>]+)>", str(message["List-Unsubscribe"]))
    https = next(link for link in links if link.startswith("http"))
    assert https.startswith(f"{service.url}/unsubscribe?list=learning-machines&r=")
    assert "Would send to 3 recipients." in dry_run(service)

    reply = service.request("POST", https, ONE_CLICK)
    assert reply.status == 200 and "You are unsubscribed" in reply.body
    assert "set-cookie" not in reply.headers and "location" not in reply.headers
    assert "Would send to 2 recipients." in dry_run(service)
    assert "suppressed         1" in dry_run(service)
    again = service.request("POST", https, ONE_CLICK)  # idempotent
    assert again.status == 200 and "Would send to 2 recipients." in dry_run(service)
    # RFC 8058 also allows multipart/form-data.
    boundary = "xyz"
    multipart = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="List-Unsubscribe"\r\n\r\n'
        f"One-Click\r\n--{boundary}--\r\n"
    )
    alan = service.request(
        "POST",
        link_for("alan@example.org", service),
        multipart,
        {"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert alan.status == 200 and "Would send to 1 recipient." in dry_run(service)


def test_a_get_never_unsubscribes_and_shows_one_button(service: Service) -> None:
    reply = service.request("GET", link_for("ada@example.org", service))
    assert reply.status == 200
    assert re.search(r'<form method="post" action="">.*name="List-Unsubscribe" value="One-Click"', reply.body)
    assert reply.body.count("<button") == 1
    assert reply.headers["referrer-policy"] == "no-referrer" and reply.headers["cache-control"] == "no-store"
    assert "default-src 'none'" in reply.headers["content-security-policy"]
    assert "ada@example.org" not in reply.body  # the page does not say who
    assert "Would send to 3 recipients." in dry_run(service)


def test_forged_altered_or_incomplete_tokens_get_4xx_and_change_nothing(service: Service) -> None:
    good = link_for("ada@example.org", service)
    alan_r = re.search(r"r=([^&]+)", link_for("alan@example.org", service))[1]
    forged = [
        re.sub(r"t=[^&]+", "t=AAAAAAAAAAAAAAAAAAAAAAAA", good),
        re.sub(r"r=[^&]+", f"r={alan_r}", good),  # ada's token, alan's address
        good.replace("list=learning-machines", "list=other"),
        good.split("&t=")[0],
        "/unsubscribe?list=learning-machines&r=%FF%FE&t=x",
    ]
    for url in forged:
        reply = service.request("POST", url, ONE_CLICK)
        assert 400 <= reply.status < 500 and "Nothing was changed" in reply.body, url
        # A GET without a token is the bare page that explains where links are; with a bad one, the bad-link page.
        assert service.request("GET", url).status == (200 if "&t=" not in url else 400), url
    no_body = service.request("POST", good, "")
    assert no_body.status == 400  # RFC 8058: the POST must say List-Unsubscribe=One-Click
    assert "Would send to 3 recipients." in dry_run(service)
    with Subscribers(service.state, "learning-machines", create=False) as store:
        assert store.unsubscribed_keys() == set()


def test_oversized_bodies_are_refused(service: Service) -> None:
    good = link_for("ada@example.org", service)
    big = ONE_CLICK + "&pad=" + "x" * 20_000
    assert service.request("POST", good, big).status == 413
    assert service.request("POST", "/subscribe", "email=a%40example.org&name=" + "x" * 20_000).status == 413
    # Without Content-Length (chunked), counted as it arrives.
    chunks = b"".join(b"%x\r\n%s\r\n" % (1000, b"x" * 1000) for _ in range(20)) + b"0\r\n\r\n"
    chunked = service.request("POST", good, chunks, {"Transfer-Encoding": "chunked"})
    assert chunked.status == 413
    assert "Would send to 3 recipients." in dry_run(service)


def _confirmation_link(smtp: Server, index: int) -> str:
    message = email.message_from_bytes(smtp.recorder.received[index].data, policy=email.policy.default)
    body = message.get_body(("plain",)).get_content()
    return re.search(r"(http://\S+/confirm\?t=\S+)", body)[1]


def test_subscribe_confirm_once_and_a_replay_changes_nothing(service: Service, smtp: Server) -> None:
    form = "name=Katherine+Johnson&email=katherine%40example.org"
    reply = service.request("POST", "/subscribe", form)
    assert reply.status == 200 and "Check your inbox" in reply.body
    wait_for_mail(smtp, 1)
    (mail,) = smtp.recorder.received
    assert mail.rcpt == "katherine@example.org"
    link = _confirmation_link(smtp, 0)
    assert "Would send to 3 recipients." in dry_run(service)  # not before confirmation
    page = service.request("GET", link)  # a scanner following the link confirms nothing
    assert page.status == 200 and '<form method="post" action="confirm">' in page.body
    assert "Would send to 3 recipients." in dry_run(service)
    token = link.split("t=", 1)[1]
    confirmed = service.request("POST", "/confirm", f"t={token}")
    assert confirmed.status == 200 and "You are subscribed" in confirmed.body
    assert "Would send to 4 recipients." in dry_run(service)
    replay = service.request("POST", "/confirm", f"t={token}")
    assert replay.status == 410 and "Nothing was changed" in replay.body
    forged = service.request("POST", "/confirm", f"t={token[:-2]}AA")
    assert forged.status == 400
    listing = run_cli("subscribers", *service.paths(), env=service.env).out
    assert "katherine@example.org\tsubscribed\tconfirmed (web)" in listing


def test_subscribe_answers_the_same_for_known_and_unknown_addresses(service: Service, smtp: Server) -> None:
    known = service.request("POST", "/subscribe", "email=ada%40example.org")
    unknown = service.request("POST", "/subscribe", "email=nobody%40example.org")
    assert (known.status, known.body, known.headers.get("content-length")) == (
        unknown.status,
        unknown.body,
        unknown.headers.get("content-length"),
    )
    bad = service.request("POST", "/subscribe", "email=not-an-address")
    assert bad.status == 400 and "Please enter one email address" in bad.body


def test_a_hundred_rapid_subscribe_requests_from_one_client(service: Service, smtp: Server) -> None:
    statuses = [service.request("POST", "/subscribe", f"email=person{i}%40example.org").status for i in range(100)]
    assert statuses[:5] == [200] * 5 and set(statuses[5:]) == {429}
    wait_for_mail(smtp, 5)
    time.sleep(0.5)  # a sixth mail, if the limit were broken, would have had time to arrive
    assert sorted(m.rcpt for m in smtp.recorder.received) == [f"person{i}@example.org" for i in range(5)]
    with Subscribers(service.state, "learning-machines", create=False) as store:
        assert store.pending_count(now=time.time()) == 5 and list(store.confirmed()) == []


def test_one_address_gets_few_confirmation_mails_however_many_clients_ask(service: Service, smtp: Server) -> None:
    replies = [
        service.request("POST", "/subscribe", "email=victim%40example.org", {"X-Forwarded-For": f"192.0.2.{i}"})
        for i in range(6)
    ]
    assert {r.status for r in replies} == {200} and len({r.body for r in replies}) == 1
    wait_for_mail(smtp, 2)
    time.sleep(0.5)
    assert [m.rcpt for m in smtp.recorder.received] == ["victim@example.org"] * 2


def test_serve_without_service_url_is_exit_2(tmp_path: Path) -> None:
    from tests.conftest import VALID

    (tmp_path / "s.yaml").write_text(VALID)
    result = run_cli("serve", "--schedule", str(tmp_path / "s.yaml"), "--state", str(tmp_path / "state"))
    assert result.code == 2 and "Traceback" not in result.err
    assert "the series has no service_url; wanted the public https address" in result.err


def test_service_url_must_be_https_except_on_this_machine(write_schedule) -> None:
    from mailer.core.errors import ScheduleError
    from mailer.programme.schedule import load_schedule
    from tests.conftest import VALID

    path = write_schedule(VALID.replace("  upcoming: 4\n", "  upcoming: 4\n  service_url: http://example.org/lm\n"))
    with pytest.raises(ScheduleError) as caught:
        load_schedule(path)
    assert "must be the https address where `seminar-mailer serve` is reached" in caught.value.lines()[0]
    assert caught.value.lines()[0].startswith(f"{path}:12:16: ")
    ok = write_schedule(VALID.replace("  upcoming: 4\n", "  upcoming: 4\n  service_url: https://example.org/lm/\n"))
    series = load_schedule(ok).series
    assert series.service_url == "https://example.org/lm"
    assert series.unsubscribe_page == "https://example.org/lm/unsubscribe"
    both = write_schedule(
        VALID.replace(
            "  upcoming: 4\n",
            "  upcoming: 4\n  service_url: https://example.org/lm\n  unsubscribe_url: https://ri.se/unsub\n",
        )
    )
    assert load_schedule(both).series.unsubscribe_page == "https://ri.se/unsub"  # the explicit one wins


def _clean_env(**extra: str) -> dict[str, str]:
    """This machine's environment without any SMTP_/MAILER_ setting: what is used comes from .env only."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith(("SMTP_", "MAILER_"))}, **extra}


def _serve_in(project: Path, port: int, env: dict[str, str]) -> Service:
    """`seminar-mailer serve` started in the project folder, as its systemd unit does (no path options)."""
    log = project / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "mailer", "serve", "--listen", f"127.0.0.1:{port}"],
            cwd=project, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    paths = (project / "data" / "seminars.yaml", project / "recipients", project / "state")
    return Service(port, process, *paths, env, log).wait_listening()


def test_a_link_from_a_real_send_unsubscribes_a_non_ascii_address_through_serve_with_the_env_file_key(
    tmp_path: Path,
) -> None:
    """Issue 23 #3 and #5: serve reads MAILER_TOKEN_KEY from .env as send does, and the key travels as UTF-8."""
    smtp = start_server(tmp_path, enable_SMTPUTF8=True)
    try:
        port = free_port()
        project = tmp_path / "p"
        (project / "data").mkdir(parents=True)
        text = SCHEDULE.read_text().replace("2024-", "2030-")
        (project / "data" / "seminars.yaml").write_text(
            text.replace("  upcoming: 4\n", f"  upcoming: 4\n  service_url: http://127.0.0.1:{port}\n")
        )
        (project / "recipients").mkdir()
        nfd = "jo\u0308se\u0301@example.org"  # typed decomposed in the list; the key is NFC
        (project / "recipients" / "learning-machines.txt").write_text(f"{nfd}\nada@example.org\n", encoding="utf-8")
        settings = {**smtp.env(), "MAILER_TOKEN_KEY": "env-file-key-0123456789abcdef"}
        (project / ".env").write_text("".join(f"{k}={v}\n" for k, v in settings.items()))
        env = _clean_env(PYTHONPATH=str(ROOT))
        sent = subprocess.run(
            [sys.executable, "-m", "mailer", "send", "--now", FUTURE_NOW, "--yes"],
            cwd=project, env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        mail = next(r for r in smtp.recorder.received if r.rcpt != "ada@example.org")
        assert unicodedata.normalize("NFC", mail.rcpt) == "j\u00f6s\u00e9@example.org"
        message = email.message_from_bytes(mail.data, policy=email.policy.SMTP)
        link = next(u for u in re.findall(r"<([^>]+)>", str(message["List-Unsubscribe"])) if u.startswith("http"))
        service = _serve_in(project, port, env)
        try:
            reply = service.request("POST", link, ONE_CLICK)
            assert reply.status == 200 and "You are unsubscribed" in reply.body, reply.body
        finally:
            service.stop()
        assert not (project / "state" / "token.key").exists()  # no second key made beside .env's
        with Subscribers(project / "state", "learning-machines", create=False) as store:
            assert store.unsubscribed_keys() == {"j\u00f6s\u00e9@example.org"}
    finally:
        smtp.controller.stop()


def test_a_confirm_token_with_superscript_digits_is_a_400(service: Service) -> None:
    for token in ("\u00b2\u00b3.a.b", "\u0661\u0662.a.b", "12.a.b"):  # superscripts, Arabic-Indic digits, forged
        query = urllib.parse.quote(token)
        assert service.request("GET", f"/confirm?t={query}").status == 400, token
        assert service.request("POST", "/confirm", f"t={query}").status == 400, token


@pytest.mark.parametrize(
    ("listen", "words"),
    [("127.0.0.1:99999", " is not a HOST:PORT to listen on"), ("127.0.0.1:8o8o", " is not a HOST:PORT to listen on"),
     ("127.0.0.1:\u00b9\u00b2", " is not a HOST:PORT to listen on"), ("IN_USE", ": cannot listen there")],
)  # fmt: skip
def test_serve_on_a_bad_or_busy_address_is_exit_2(tmp_path: Path, listen: str, words: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        if listen == "IN_USE":
            listen = f"127.0.0.1:{busy.getsockname()[1]}"
        schedule = tmp_path / "s.yaml"
        schedule.write_text(VALID.replace("  upcoming: 4\n", "  upcoming: 4\n  service_url: http://127.0.0.1:8080\n"))
        result = run_cli("serve", "--listen", listen, "--schedule", str(schedule), "--state", str(tmp_path / "state"),
                         env={"MAILER_TOKEN_KEY": TOKEN_KEY})  # fmt: skip
    assert result.code == 2, result.err
    assert f"error: --listen {listen!r}{words}" in result.err
    assert "Traceback" not in result.err


def test_the_name_typed_in_the_form_never_reaches_a_mail_header(tmp_path: Path, smtp: Server) -> None:
    """Issue 23 #9: a stranger's text in the name field is not in the To: of later announcements."""
    service = start_service(tmp_path, smtp, shipped_schedule=True)
    try:
        reply = service.request("POST", "/subscribe", "name=Buy+cheap+pills+now&email=katherine%40example.org")
        assert reply.status == 200
        wait_for_mail(smtp, 1)
        token = _confirmation_link(smtp, 0).split("t=", 1)[1]
        assert service.request("POST", "/confirm", f"t={token}").status == 200
    finally:
        service.stop()
    sent = run_cli("send", "--now", FUTURE_NOW, "--yes", *service.paths(), env=service.env)
    assert sent.code == 0, sent.err
    (announcement,) = [m for m in smtp.recorder.received[1:] if m.rcpt == "katherine@example.org"]
    assert b"pills" not in announcement.data
    headers = email.message_from_bytes(announcement.data, policy=email.policy.default)
    assert headers["To"] == "katherine@example.org"
