"""Speakers fill in their own details: ``invite-speaker`` mails a signed link (caught by aiosmtpd), the speaker fills
the form in headless Chromium on the real ``serve``, ``proposals`` shows the difference, ``accept`` writes it into
the programme with every comment and all the layout kept (compared byte for byte). Forged, expired and oversized
requests change nothing."""

from __future__ import annotations

import email
import email.policy
import re
import time
from pathlib import Path

from mailer.core.tokens import speaker_token
from tests.audience.test_subscribe_browser import Browser
from tests.audience.test_web import smtp
from tests.cdp import NEEDS_CHROMIUM
from tests.conftest import ARTEFACTS, run_cli
from tests.smtp_server import Server
from tests.web_service import TOKEN_KEY, start_service

__all__ = ["smtp"]  # (the aiosmtpd fixture)
COMMENTED = "  - date: 2024-01-18   # our first speaker: keep this comment\n"


def the_link(smtp: Server) -> str:
    deadline = time.monotonic() + 30
    while not smtp.recorder.received and time.monotonic() < deadline:
        time.sleep(0.05)
    (mail,) = smtp.recorder.received
    message = email.message_from_bytes(mail.data, policy=email.policy.default)
    assert mail.rcpt == "serge@example.org" and message["Auto-Submitted"] == "auto-generated"
    body = message.get_body(("plain",))
    assert body is not None
    return re.search(r"(http://\S+/speaker\?t=\S+)", body.get_content())[1]  # type: ignore[index]


@NEEDS_CHROMIUM[0]
@NEEDS_CHROMIUM[1]
def test_a_speaker_fills_the_form_and_the_organiser_accepts_it_keeping_the_file(tmp_path: Path, smtp: Server) -> None:
    service = start_service(tmp_path, smtp)
    schedule = service.schedule
    schedule.write_text(schedule.read_text().replace("  - date: 2024-01-18\n", COMMENTED))
    before = schedule.read_text()
    try:
        invited = run_cli("invite-speaker", "--date", "2024-01-18", "Serge <serge@example.org>", *service.paths()[:2],
                          "--state", str(service.state), env=service.env)  # fmt: skip
        assert invited.code == 0, invited.err
        link = the_link(smtp)
        browser = Browser(tmp_path / "profile")
        try:
            browser.goto(link)
            assert browser.run("document.getElementById('title').value") == "Challenges in Fine-Grained Image Analysis"
            browser.screenshot(ARTEFACTS / "speaker-form.png")
            browser.submit(
                "document.getElementById('title').value = 'Fine-Grained Analysis: a Review';"
                "document.getElementById('abstract').value = 'First line.\\n\\nSecond *paragraph*.';"
                "document.getElementById('slides').value = 'https://ri.se/belongie.pdf';"
                "document.querySelector('button').click()"
            )
            assert "The organisers have your details" in browser.run("document.body.innerText")
            assert browser.run("document.cookie") == ""
        finally:
            browser.close()
        assert schedule.read_text() == before  # a proposal, nothing written yet
        shown = run_cli("proposals", "--schedule", str(schedule), "--state", str(service.state))
        assert "#1 from serge@example.org" in shown.out, shown.err
        assert "  title: Challenges in Fine-Grained Image Analysis -> Fine-Grained Analysis: a Review" in shown.out
        assert "  slides: (none) -> https://ri.se/belongie.pdf" in shown.out
        accepted = run_cli("accept", "1", "--schedule", str(schedule), "--state", str(service.state))
        assert accepted.code == 0 and "written into" in accepted.out, accepted.err
        expected = before.replace(COMMENTED, COMMENTED + "    slides: https://ri.se/belongie.pdf\n")
        expected = expected.replace(
            "title: Challenges in Fine-Grained Image Analysis\n", 'title: "Fine-Grained Analysis: a Review"\n'
        )
        expected = expected.replace(
            "abstract: |\n      Some *abstract*.\n", "abstract: |\n      First line.\n\n      Second *paragraph*.\n"
        )
        assert schedule.read_text() == expected
        assert run_cli("check", *service.paths(), "--date", "2024-01-15").code == 0
        assert "No proposal waits." in run_cli("proposals", "--schedule", str(schedule), "--state",
                                               str(service.state)).out  # fmt: skip
    finally:
        service.stop()


def test_forged_expired_and_oversized_requests_change_nothing(tmp_path: Path, smtp: Server) -> None:
    service = start_service(tmp_path, smtp)
    try:
        key = TOKEN_KEY.encode()
        good = speaker_token(key, "learning-machines", "2024-01-18", "serge@example.org", int(time.time()) + 3600)
        expired = speaker_token(key, "learning-machines", "2024-01-18", "serge@example.org", int(time.time()) - 1)
        forged = speaker_token(b"another key", "learning-machines", "2024-01-18", "serge@example.org", 2**40)
        tampered = good.replace(good.split(".")[1], speaker_token(key, "x", "2024-01-25", "a@b.c", 1).split(".")[1])
        assert service.request("GET", f"/speaker?t={good}").status == 200
        assert service.request("GET", f"/speaker?t={expired}").status == 410
        assert service.request("GET", f"/speaker?t={forged}").status == 400
        assert service.request("GET", f"/speaker?t={tampered}").status == 400
        assert service.request("GET", "/speaker?t=%C2%B2%C2%B3.a.b").status == 400
        bad = service.request("POST", "/speaker", f"t={good}&slides=javascript:alert(1)")
        assert bad.status == 400 and "a web address such as" in bad.body
        big = service.request("POST", "/speaker", f"t={good}&abstract=" + "a" * 70_000)
        assert big.status == 413
        assert service.request("POST", "/speaker", f"t={good}&title=A%0Ab").status == 400  # one line only
    finally:
        service.stop()
    assert "No proposal waits." in run_cli("proposals", "--schedule", str(service.schedule), "--state",
                                           str(service.state)).out  # fmt: skip


def test_accept_writes_new_keys_and_longer_blocks_without_misplacing_one(tmp_path: Path) -> None:
    """A title the seminar lacks (a line inserted) and an abstract grown from one line to three (lines moved): each
    value lands at its own key, whatever the order of the edits."""
    from mailer.audience.speakers import accept
    from mailer.record.proposals import Proposal
    from tests.conftest import VALID

    path = tmp_path / "seminars.yaml"
    path.write_text(VALID.replace("    title: Challenges in Fine-Grained Image Analysis\n", ""))
    before = path.read_text()
    proposal = Proposal(
        1, "2024-01-18", "serge@example.org", {"title": "New", "abstract": "A.\n\nB.\n", "bio": "Me."}, "pending", ""
    )
    assert accept(path, proposal) == ["title", "abstract", "bio"]
    assert path.read_text() == before.replace(
        "  - date: 2024-01-18\n", "  - date: 2024-01-18\n    bio: |\n      Me.\n    title: New\n"
    ).replace("    abstract: |\n      Some *abstract*.\n", "    abstract: |\n      A.\n\n      B.\n")
