"""The signed tokens in links: one-click unsubscribe (message.py makes them, web.py checks them) and
subscription confirmations. One place, so the service verifies exactly what the mail carries.

- Unsubscribe: ``list=<list>&r=<address key, base64url>&t=<HMAC-SHA256(list NUL key), 18 bytes>``.
  It never expires (a message from last year must still unsubscribe) and is the same in every
  message to that address, so a resent copy carries the same link. Knowing it lets one do exactly
  one thing: unsubscribe that address from that list.
- Confirmation: ``<expiry>.<nonce>.<HMAC-SHA256("confirm" NUL list NUL nonce NUL expiry)>``. The
  nonce is random and stored with the pending subscription, which confirming consumes: a link works
  once, until it expires.

- Speaker: ``<expiry>.<base64url(date NUL address)>.<HMAC-SHA256("speaker" NUL list NUL date NUL address NUL
  expiry)>``. It lets its holder propose details of that one seminar (stored as a proposal the organiser
  accepts or not) until it expires; it changes nothing by itself.

Every comparison of a MAC is constant-time (``hmac.compare_digest``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

CONFIRM_LIFETIME = 48 * 3600  # seconds a confirmation link stays valid
SPEAKER_LIFETIME = 30 * 86400  # seconds a speaker's link stays valid


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes | None:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None


def unsubscribe_token(key: bytes, list_name: str, address_key: str) -> str:
    """The HMAC that proves a link was made by us for this list and address; not guessable without the key."""
    mac = hmac.new(key, f"{list_name}\0{address_key}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()[:18]).decode()


def unsubscribe_query(key: bytes, list_name: str, address_key: str) -> str:
    """The query string of a one-click unsubscribe link (without the leading ``?``)."""
    who = _b64(address_key.encode())
    return f"list={list_name}&r={who}&t={unsubscribe_token(key, list_name, address_key)}"


def check_unsubscribe(key: bytes, list_name: str, who: str, token: str) -> str | None:
    """Return the address key a link's ``r`` and ``t`` stand for, or None when they are not ours."""
    raw = _unb64(who)
    if raw is None or len(raw) > 320:
        return None
    try:
        address_key = raw.decode("utf-8")  # as unsubscribe_query encoded it: a key may be non-ASCII (jösé@)
    except UnicodeDecodeError:
        return None
    expected = unsubscribe_token(key, list_name, address_key)
    if not hmac.compare_digest(expected.encode(), token.encode("ascii", "replace")):
        return None
    return address_key


def new_nonce() -> str:
    return _b64(secrets.token_bytes(16))


def _confirm_mac(key: bytes, list_name: str, nonce: str, expires: int) -> str:
    return _b64(hmac.new(key, f"confirm\0{list_name}\0{nonce}\0{expires}".encode(), hashlib.sha256).digest())


def confirm_token(key: bytes, list_name: str, nonce: str, expires: int) -> str:
    """A confirmation link's token; ``expires`` in seconds since the epoch."""
    return f"{expires}.{nonce}.{_confirm_mac(key, list_name, nonce, expires)}"


def check_confirm(key: bytes, list_name: str, token: str, *, now: float) -> tuple[str | None, str]:
    """Return (nonce, "") for a genuine, unexpired token, else (None, why) with why "forged" or "expired"."""
    parts = token.split(".")
    # ASCII digits only: str.isdigit() also accepts "²³", which int() then refuses.
    if len(parts) != 3 or not (parts[0].isascii() and parts[0].isdigit()) or len(parts[0]) > 12:
        return None, "forged"
    expires, nonce, mac = int(parts[0]), parts[1], parts[2]
    if not hmac.compare_digest(_confirm_mac(key, list_name, nonce, expires).encode(), mac.encode("ascii", "replace")):
        return None, "forged"
    if now > expires:
        return None, "expired"
    return nonce, ""


def _speaker_mac(key: bytes, list_name: str, date: str, address: str, expires: int) -> str:
    data = f"speaker\0{list_name}\0{date}\0{address}\0{expires}".encode()
    return _b64(hmac.new(key, data, hashlib.sha256).digest())


def speaker_token(key: bytes, list_name: str, date: str, address: str, expires: int) -> str:
    """The token of a speaker's link to propose the details of the seminar on ``date`` (ISO)."""
    who = _b64(f"{date}\0{address}".encode())
    return f"{expires}.{who}.{_speaker_mac(key, list_name, date, address, expires)}"


def check_speaker(key: bytes, list_name: str, token: str, *, now: float) -> tuple[tuple[str, str] | None, str]:
    """Return ((date, address), "") for a genuine, unexpired speaker token, else (None, "forged" or "expired")."""
    parts = token.split(".")
    if len(parts) != 3 or not (parts[0].isascii() and parts[0].isdigit()) or len(parts[0]) > 12:
        return None, "forged"
    raw = _unb64(parts[1])
    try:
        date, _, address = raw.decode("utf-8").partition("\0") if raw is not None and len(raw) < 400 else ("", "", "")
    except UnicodeDecodeError:
        return None, "forged"
    expected = _speaker_mac(key, list_name, date, address, int(parts[0]))
    if not date or not hmac.compare_digest(expected.encode(), parts[2].encode("ascii", "replace")):
        return None, "forged"
    if now > int(parts[0]):
        return None, "expired"
    return (date, address), ""


# --- bounce tokens: VERP envelope senders and DSN ENVIDs (send.py makes them, bounces.py checks them) ---

# Lower-case hex: survives servers that fold the case of local parts.
BOUNCE_TOKEN_RE = r"[0-9a-f]{36}"  # noqa: S105 (a pattern, not a secret)


def bounce_token(key: bytes, list_name: str, message_id: str) -> str:
    """20 hex digits of the Message-ID (finds the delivery in the ledger), then 16 of an HMAC (proves it ours)."""
    digits = message_id.strip("<>").partition("@")[0][:20].lower()
    mac = hmac.new(key, f"bounce\0{list_name}\0{message_id}".encode(), hashlib.sha256).hexdigest()[:16]
    return f"{digits}{mac}"


def check_bounce_token(key: bytes, list_name: str, token: str, message_id: str) -> bool:
    """Whether ``token`` is the bounce token of ``message_id`` (constant-time)."""
    return hmac.compare_digest(bounce_token(key, list_name, message_id).encode(), token.lower().encode())


def manage_token(key: bytes, address_key: str) -> str:
    """The manage page's token for one address (every list of the project): ``who.mac``, no expiry, like the
    unsubscribe link in the same footer; only the subscriber's own mail carries it."""
    who = _b64(address_key.encode())
    mac = _b64(hmac.new(key, f"manage\0{address_key}".encode(), hashlib.sha256).digest()[:18])
    return f"{who}.{mac}"


def check_manage(key: bytes, token: str) -> str | None:
    """The address key a manage token stands for, or None when it is not ours."""
    who, _, mac = token.partition(".")
    raw = _unb64(who) if who and len(who) <= 440 else None
    if raw is None:
        return None
    try:
        address_key = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    expected = manage_token(key, address_key).partition(".")[2]
    return address_key if hmac.compare_digest(expected.encode(), mac.encode("ascii", "replace")) else None
