"""The subscriptions store, its tokens, its merge with recipients/ at send time, and its commands."""

from __future__ import annotations

import stat
from pathlib import Path

from mailer.audience.recipients import DUE, DUPLICATE, SUPPRESSED, classify
from mailer.core.address import Address
from mailer.core.tokens import check_confirm, check_unsubscribe, confirm_token, unsubscribe_query, unsubscribe_token
from mailer.record.subscribers import STORE_FILE, StillWanted, Subscribers
from tests.conftest import VALID, run_cli

KEY = b"k" * 32
ADA = Address("Ada", "ada@example.org")


def test_unsubscribe_token_round_trips_and_rejects_any_change() -> None:
    query = dict(part.split("=", 1) for part in unsubscribe_query(KEY, "lm", "ada@example.org").split("&"))
    assert query["t"] == unsubscribe_token(KEY, "lm", "ada@example.org")
    assert check_unsubscribe(KEY, "lm", query["r"], query["t"]) == "ada@example.org"
    assert check_unsubscribe(KEY, "other", query["r"], query["t"]) is None
    assert check_unsubscribe(b"x" * 32, "lm", query["r"], query["t"]) is None
    forged = query["t"][:-1] + ("A" if query["t"][-1] != "A" else "B")
    assert check_unsubscribe(KEY, "lm", query["r"], forged) is None
    alan = unsubscribe_query(KEY, "lm", "alan@example.org").split("&")[1].split("=", 1)[1]
    assert check_unsubscribe(KEY, "lm", alan, query["t"]) is None  # ada's token does not unsubscribe alan
    assert check_unsubscribe(KEY, "lm", "%%%", "") is None


def test_confirm_token_is_signed_and_expires() -> None:
    token = confirm_token(KEY, "lm", "nonce1", 1000)
    assert check_confirm(KEY, "lm", token, now=999) == ("nonce1", "")
    assert check_confirm(KEY, "lm", token, now=1001) == (None, "expired")
    assert check_confirm(KEY, "lm", token.replace("1000.", "9999."), now=999) == (None, "forged")
    assert check_confirm(KEY, "lm", token.replace("nonce1", "nonce2"), now=999) == (None, "forged")
    assert check_confirm(KEY, "other", token, now=999) == (None, "forged")
    assert check_confirm(KEY, "lm", "garbage", now=0) == (None, "forged")


def test_store_is_private_durable_and_idempotent(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    with Subscribers(state, "lm") as store:
        assert store.unsubscribe("ada@example.org", "one-click", now=100) is True
        assert store.unsubscribe("ada@example.org", "one-click", now=200) is False  # idempotent
        assert store.get("ada@example.org").at.startswith("1970-01-01T00:01:40")  # the first time kept
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert stat.S_IMODE((state / STORE_FILE).stat().st_mode) == 0o600
    with Subscribers(state, "lm") as again:  # another process later: it is on disk
        assert again.is_unsubscribed("ada@example.org")
        assert again.unsubscribed_keys() == {"ada@example.org"}
    with Subscribers(state, "another-list") as other:
        assert not other.is_unsubscribed("ada@example.org")


def test_dry_run_store_writes_nothing(tmp_path: Path) -> None:
    with Subscribers(tmp_path / "state", "lm", create=False) as store:
        assert store.unsubscribed_keys() == set() and list(store.confirmed()) == []
    assert not (tmp_path / "state").exists()


def test_confirmation_works_once_and_not_after_expiry(tmp_path: Path) -> None:
    with Subscribers(tmp_path, "lm") as store:
        nonce, expires = store.subscribe_pending(ADA, now=1000)
        assert store.pending_count(now=1000) == 1
        assert store.confirm(nonce, now=1001) == ADA
        assert store.confirm(nonce, now=1002) is None  # replayed
        assert [a.addr for a in store.confirmed()] == ["ada@example.org"]
        late, expires = store.subscribe_pending(Address("", "alan@example.org"), now=1000)
        assert store.confirm(late, now=expires + 1) is None
        assert [a.addr for a in store.confirmed()] == ["ada@example.org"]


def test_subscribing_lifts_an_unsubscription_and_unsubscribing_wins_over_confirmed(tmp_path: Path) -> None:
    with Subscribers(tmp_path, "lm") as store:
        store.subscribe(ADA, "command")
        store.unsubscribe(ADA.key, "one-click")
        assert list(store.confirmed()) == [] and store.is_unsubscribed(ADA.key)
        store.subscribe(ADA, "web")
        assert list(store.confirmed()) == [ADA] and not store.is_unsubscribed(ADA.key)


def test_still_wanted_sees_another_process_within_the_interval(tmp_path: Path) -> None:
    now = [0.0]
    with Subscribers(tmp_path, "lm") as reader, Subscribers(tmp_path, "lm") as writer:
        wanted = StillWanted(reader, interval=0.5, clock=lambda: now[0])
        assert wanted("ada@example.org")
        writer.unsubscribe("ada@example.org", "one-click")
        now[0] = 0.4
        assert wanted("ada@example.org")  # cached: at most interval seconds stale
        now[0] = 0.6
        assert not wanted("ada@example.org")
        assert wanted("alan@example.org")


def test_classify_merges_the_store_after_the_file(tmp_path: Path) -> None:
    path = tmp_path / "lm.txt"
    path.write_text("ada@example.org\nAlan <alan@example.org>\nada@example.org\n")
    store_people = [Address("", "ADA@example.org"), Address("Grace", "grace@example.org"), ADA]
    out = [
        (kind, e.line, e.recipient.addr if e.recipient else None)
        for kind, e in classify(path, suppressed={"alan@example.org"}, done=set(), subscribers=store_people)
    ]
    assert out == [
        (DUE, 1, "ada@example.org"),
        (SUPPRESSED, 2, "alan@example.org"),
        (DUPLICATE, 3, "ada@example.org"),  # a duplicate in the file is reported ...
        (DUE, 0, "grace@example.org"),  # ... one the store adds to the file's is silently merged
    ]


def _project(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    (tmp_path / "seminars.yaml").write_text(VALID)
    recipients = tmp_path / "recipients"
    recipients.mkdir()
    (recipients / "learning-machines.txt").write_text("Ada <ada@example.org>\nalan@example.org\nnot an address\n")
    (recipients / "unsubscribed.txt").write_text("alan@example.org\n")
    paths = ["--schedule", str(tmp_path / "seminars.yaml"), "--recipients", str(recipients)]
    return [*paths, "--state", str(tmp_path / "state")], {"MAILER_TOKEN_KEY": "t" * 32}


def test_subscribe_unsubscribe_and_subscribers_commands(tmp_path: Path) -> None:
    paths, env = _project(tmp_path)
    result = run_cli("subscribe", "Grace Hopper <grace@example.org>", *paths, env=env)
    assert (result.code, result.out) == (0, "grace@example.org: subscribed to learning-machines\n")
    assert run_cli("subscribe", "grace@example.org", *paths, env=env).out.startswith("grace@example.org: already")
    result = run_cli("unsubscribe", "ADA@example.org", *paths, env=env)
    assert (result.code, result.out) == (0, "ADA@example.org: unsubscribed from learning-machines\n")
    result = run_cli("subscribers", *paths, env=env)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == "learning-machines: 1 receive the next announcement"
    assert "  unsubscribed 2" in lines and "  invalid      1" in lines and "  pending      0  (asked" in lines[5]
    listed = {line.split("\t")[0]: line.split("\t")[1:] for line in lines if "\t" in line}
    assert listed["ada@example.org"][0] == "unsubscribed"
    assert "command on" in listed["ada@example.org"][1] and "learning-machines.txt:1" in listed["ada@example.org"][1]
    assert listed["alan@example.org"][0] == "unsubscribed" and "unsubscribed.txt:1" in listed["alan@example.org"][1]
    assert listed["grace@example.org"][0] == "subscribed" and "confirmed (command)" in listed["grace@example.org"][1]
    dry = run_cli("send", "--dry-run", "--date", "2024-01-15", *paths, env=env)
    assert "Would send to 1 recipient." in dry.out and "suppressed         2" in dry.out, dry.out + dry.err


def test_bad_address_is_exit_2_without_traceback(tmp_path: Path) -> None:
    paths, env = _project(tmp_path)
    result = run_cli("subscribe", "not-an-address", *paths, env=env)
    assert result.code == 2 and "Traceback" not in result.err
    assert result.err == (
        "error: ADDRESS 'not-an-address' is not a valid email address; "
        "wanted name@example.org or 'Name <name@example.org>'\n"
    )


def _store_project(tmp_path: Path) -> list[str]:
    """A schedule and list in tmp_path; the path options for the commands."""
    (tmp_path / "s.yaml").write_text(VALID)
    (tmp_path / "recipients").mkdir(exist_ok=True)
    (tmp_path / "recipients" / "learning-machines.txt").write_text("ada@example.org\n")
    return ["--schedule", str(tmp_path / "s.yaml"), "--recipients", str(tmp_path / "recipients"),
            "--state", str(tmp_path / "state")]  # fmt: skip


def _damage_is_refused(tmp_path: Path, words: str) -> None:
    """Every command that opens the store says what is wrong with it, by name, and changes nothing."""
    paths = _store_project(tmp_path)
    store = tmp_path / "state" / STORE_FILE
    before = store.read_bytes() if store.exists() else None
    for command in (
        ["subscribers"],
        ["unsubscribe", "alan@example.org"],
        ["send", "--dry-run", "--date", "2024-01-15"],
    ):
        result = run_cli(*command, *paths)
        assert result.code == 2, (command, result.out, result.err)
        assert "Traceback" not in result.err
        assert f"error: {store}: {words}" in result.err, (command, result.err)
        assert (store.read_bytes() if store.exists() else None) == before, command


def _unsubscribed_store(tmp_path: Path) -> Path:
    assert run_cli("unsubscribe", "ada@example.org", *_store_project(tmp_path)).code == 0
    return tmp_path / "state" / STORE_FILE


def test_an_empty_store_is_an_error_not_a_fresh_start(tmp_path: Path) -> None:
    _unsubscribed_store(tmp_path).write_bytes(b"")  # what a full disk or a bad copy leaves
    _damage_is_refused(tmp_path, "empty (0 bytes): the subscriptions store is damaged")


def test_a_store_cut_to_one_byte_is_an_error_not_a_fresh_start(tmp_path: Path) -> None:
    """SQLite takes a 1-byte file for a new, empty database and writes a fresh one over it: every unsubscription
    would be forgotten without a word. Any file too short to be a database is damage."""
    _unsubscribed_store(tmp_path).write_bytes(b"S")
    _damage_is_refused(tmp_path, "cut short (1 bytes): the subscriptions store is damaged")


def test_a_truncated_or_corrupt_store_is_an_error(tmp_path: Path) -> None:
    import sqlite3

    store = _unsubscribed_store(tmp_path)
    with sqlite3.connect(store) as db:  # enough rows to span pages, then cut the file short
        db.executemany("INSERT INTO pending VALUES (?, 'x', 'k', 'a', 'n', 0, NULL)", [(str(i),) for i in range(3000)])
    db.close()
    data = store.read_bytes()
    page = 4096
    middle = len(data) // page // 2 * page  # one page of rows overwritten: the size and the header still look right
    store.write_bytes(data[:middle] + b"\xff" * page + data[middle + page :])
    _damage_is_refused(tmp_path, "the subscriptions store is damaged")
    store.write_bytes(data[: len(data) // 2])
    _damage_is_refused(tmp_path, "the subscriptions store is damaged")
    store.write_bytes(b"not a database at all" * 100)
    _damage_is_refused(tmp_path, "the subscriptions store is damaged")


def test_a_stray_wal_without_its_store_is_an_error(tmp_path: Path) -> None:
    store = _unsubscribed_store(tmp_path)
    wal = store.with_name(store.name + "-wal")
    wal.write_bytes(b"\0" * 4096)
    store.unlink()
    _damage_is_refused(tmp_path, f"missing, but its write-ahead log {wal.name} is there")


def test_a_store_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    import sqlite3

    from mailer.record.subscribers import STORE_VERSION

    store = _unsubscribed_store(tmp_path)
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (STORE_VERSION,)
        db.execute(f"PRAGMA user_version = {STORE_VERSION + 1}")
    db.close()
    _damage_is_refused(tmp_path, f"written by a newer seminar-mailer (store version {STORE_VERSION + 1}")


def test_nfc_and_nfd_spellings_are_one_subscriber(tmp_path: Path) -> None:
    paths = _store_project(tmp_path)
    nfc, nfd = "j\u00f6s\u00e9@example.org", "jo\u0308se\u0301@Example.ORG"
    (tmp_path / "recipients" / "learning-machines.txt").write_text(f"{nfc}\n{nfd}\n", encoding="utf-8")
    listing = run_cli("subscribers", *paths)
    assert listing.code == 0, listing.err
    assert "  subscribed   1" in listing.out and "  duplicate    1" in listing.out
    assert run_cli("unsubscribe", nfd, *paths).code == 0  # the other spelling unsubscribes the same person
    after = run_cli("subscribers", "--counts", *paths)
    assert "  subscribed   0" in after.out and "  unsubscribed 1" in after.out, after.out
