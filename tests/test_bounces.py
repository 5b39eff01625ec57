"""Bounce processing on real DSNs (tests/bounce_samples/, see its README) read from a Maildir, and on
bounces a private Postfix makes on loopback, read from its mbox. Through the real command."""

from __future__ import annotations

import shutil
import smtplib
import time
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from mailer.bounces import read_bounce
from mailer.subscribers import Subscribers
from tests import postfix_instance
from tests.conftest import VALID, run_cli
from tests.smtp_server import free_port

SAMPLES = Path(__file__).resolve().parent / "bounce_samples"
HARD = {
    "postfix-hard-5.1.1.eml": ("ada@gone.example.net", "5.1.1"),
    "gmail-hard-5.2.1.eml": ("kijitora-cat@google.example.com", "5.2.1"),
    "exim-dsn-hard-5.0.0.eml": ("kijitora@example.net", "5.0.0"),
    "exim-plain-hard.eml": ("kijitora@example.ed.jp", ""),
    "exchange2007-hard-5.1.1.eml": ("mikeneko@example.co.jp", "5.1.1"),
    "exchange2000-hard-5.1.1.eml": ("userx@example.com", "5.1.1"),
}
SOFT = {
    "postfix-soft-4.2.2.eml": ("alan@full.example.net", "4.2.2"),
    "gmail-soft-5.2.2.eml": ("kijitora@google.example.com", "5.2.2"),  # mailbox full: soft even as 5.x.x
    "exchange2007-soft-4.4.7.eml": ("gwang1@student.mlcsyd.nsw.edu.au", "4.4.7"),
}
NOT_A_BOUNCE = (
    b"From: Ada <ada@example.org>\nTo: lm@ri.se\nSubject: thanks!\nMessage-ID: <x@y>\n\nSee you on Thursday.\n"
)


@pytest.mark.parametrize(("name", "expected"), [*HARD.items(), *SOFT.items()])
def test_each_sample_is_read_as_the_right_kind(name: str, expected: tuple[str, str]) -> None:
    reading = read_bounce((SAMPLES / name).read_bytes())
    assert reading is not None and not reading.warning
    (failure,) = reading.failures
    assert (failure.key, failure.status) == expected
    assert failure.kind == ("hard" if name in HARD else "soft")
    assert failure.announcement.startswith("<")


def test_a_delay_warning_and_an_ordinary_message_are_not_failures() -> None:
    warning = read_bounce((SAMPLES / "delayed-warning-4.3.0.eml").read_bytes())
    assert warning is not None and warning.warning and warning.failures == ()
    assert read_bounce(NOT_A_BOUNCE) is None


def test_the_returned_message_id_identifies_the_announcement() -> None:
    reading = read_bounce((SAMPLES / "postfix-hard-5.1.1.eml").read_bytes())
    assert reading is not None
    assert reading.failures[0].announcement == "<0000000000000000000000000000000000000000@example.org>"


def maildir(root: Path, messages: dict[str, bytes]) -> Path:
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for name, raw in messages.items():
        (root / "new" / name).write_bytes(raw)
    return root


def project(tmp_path: Path) -> list[str]:
    (tmp_path / "seminars.yaml").write_text(VALID)
    return ["--schedule", str(tmp_path / "seminars.yaml"), "--state", str(tmp_path / "state")]


def test_bounces_from_a_maildir_suppress_hard_count_soft_and_move_what_was_read(tmp_path: Path) -> None:
    paths = project(tmp_path)
    messages = {p.name: p.read_bytes() for p in SAMPLES.glob("*.eml")}
    box = maildir(tmp_path / "Maildir", {**messages, "hello.eml": NOT_A_BOUNCE})
    result = run_cli("bounces", "--maildir", str(box), *paths)
    assert result.code == 0, result.err
    assert result.out.splitlines()[0] == (
        "Read 11 messages: 6 hard bounces, 3 soft, 1 delay warnings (not counted), 1 not bounces (left in place)"
    )
    with Subscribers(tmp_path / "state", "learning-machines") as store:
        assert store.unsubscribed_keys() == {address for address, _ in HARD.values()}
        assert "hard 5.1.1" in store.get("ada@gone.example.net").source
    assert sorted(p.name for p in (box / "new").iterdir()) == ["hello.eml"]
    assert len(list((box / ".Processed" / "cur").iterdir())) == 10
    again = run_cli("bounces", "--maildir", str(box), *paths)
    assert again.out.splitlines()[0].startswith("Read 1 messages: 0 hard bounces, 0 soft")


def test_soft_bounces_suppress_after_three_distinct_announcements_only(tmp_path: Path) -> None:
    paths = project(tmp_path)
    soft = (SAMPLES / "postfix-soft-4.2.2.eml").read_bytes()
    original = b"<0000000000000000000000000000000000000001@example.org>"
    assert original in soft
    box = tmp_path / "Maildir"
    # The same announcement bouncing three times (say, a resend) counts once.
    maildir(box, {f"same{i}": soft for i in range(3)})
    assert run_cli("bounces", "--maildir", str(box), *paths).code == 0
    with Subscribers(tmp_path / "state", "learning-machines") as store:
        assert not store.is_unsubscribed("alan@full.example.net")
    # Two more announcements: three distinct ones.
    maildir(box, {f"week{i}": soft.replace(original, b"<%040d@example.org>" % i) for i in (2, 3)})
    result = run_cli("bounces", "--maildir", str(box), *paths)
    assert "unsubscribed: alan@full.example.net (bounces: 3 soft, the last 4.2.2)" in result.out
    env = {"MAILER_SOFT_BOUNCES": "0"}
    bad = run_cli("bounces", "--maildir", str(box), *paths, env=env)
    assert bad.code == 2 and bad.err == (
        "error: MAILER_SOFT_BOUNCES='0'; wanted a whole number of announcements, at least 1\n"
    )


def test_bad_mailbox_and_missing_imap_settings_are_exit_2(tmp_path: Path) -> None:
    paths = project(tmp_path)
    result = run_cli("bounces", "--maildir", str(tmp_path), *paths)
    assert result.code == 2 and "not a Maildir (no cur/ and new/ in it)" in result.err
    env = {"BOUNCES_IMAP_HOST": "", "BOUNCES_IMAP_USERNAME": "", "BOUNCES_IMAP_PASSWORD": "", "MAILER_ENV_FILE": "/x"}
    result = run_cli("bounces", *paths, env=env)
    assert result.code == 2 and "BOUNCES_IMAP_HOST, BOUNCES_IMAP_USERNAME and BOUNCES_IMAP_PASSWORD" in result.err
    assert "Traceback" not in result.err


class _Refuse:
    async def handle_RCPT(
        self, server: object, session: object, envelope: object, address: str, options: list[str]
    ) -> str:
        if "gone" in address:
            return f"550 5.1.1 <{address}>: The email account that you tried to reach does not exist"
        return f"452 4.2.2 <{address}>: Mailbox full, try again later"


@pytest.mark.skipif(postfix_instance.available() is not None, reason=f"LOUD SKIP: {postfix_instance.available()}")
def test_a_live_postfix_bounce_is_read_from_its_mbox(tmp_path: Path) -> None:
    """Postfix relays to a server that refuses (550 / 452) and, giving up at once, returns its DSNs."""
    remote = Controller(_Refuse(), hostname="127.0.0.1", port=free_port())
    remote.start()
    postfix = postfix_instance.start()
    try:
        conf = postfix.root / "conf"
        relay = f"smtp:[127.0.0.1]:{remote.port}"
        (conf / "transport").write_text(f"gone.example.net {relay}\nfull.example.net {relay}\n")
        with (conf / "main.cf").open("a") as main:
            main.write(
                f"transport_maps = texthash:{conf}/transport\nrelay_domains = gone.example.net, full.example.net\n"
                "maximal_queue_lifetime = 0\nbounce_queue_lifetime = 0\nsmtp_tls_security_level = none\n"
            )
        postfix._postfix("reload")
        for i, rcpt in enumerate(["ada@gone.example.net", "alan@full.example.net"]):
            head = f"From: <lm@example.org>\r\nTo: {rcpt}\r\nSubject: seminar\r\n"
            message = f"{head}Message-ID: <{i:040x}@example.org>\r\n\r\nHi\r\n"
            with smtplib.SMTP("127.0.0.1", postfix.port) as client:
                client.sendmail("lm@example.org", [rcpt], message)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and postfix.delivered() < 2:
            time.sleep(0.2)
        assert postfix.delivered() == 2, postfix.log.read_text()
        mbox = tmp_path / "bounces.mbox"
        shutil.copy(postfix.mailbox, mbox)
    finally:
        postfix.stop()
        remote.stop()
    paths = project(tmp_path)
    result = run_cli("bounces", "--mbox", str(mbox), *paths)
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        "Read 2 messages: 1 hard bounces, 1 soft, 0 delay warnings (not counted), 0 not bounces (left in place)",
        "unsubscribed: ada@gone.example.net (bounces: hard 5.1.1)",
    ]
    assert mbox.read_bytes() == b""  # moved to bounces.mbox.processed
    assert (tmp_path / "bounces.mbox.processed").read_bytes().count(b"From MAILER-DAEMON") == 2
    again = run_cli("bounces", "--mbox", str(mbox), *paths)
    assert again.out.startswith("Read 0 messages")
