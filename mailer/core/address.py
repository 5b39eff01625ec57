"""Email addresses: strict parsing, IDNA, and header text that no input can break out of.

Header text is encoded here, not by the standard library's folder: Python 3.11.7 predates the fix
for CVE-2024-6923, and an RFC 2047 encoded word written by an organiser (``=?utf-8?q?x=0D=0A...?=``)
must arrive as the literal text it is. Any text holding ``=?`` or non-ASCII is therefore sent
wholly as base64 encoded words, which decoders never decode a second time.
"""

from __future__ import annotations

import base64
import re
import unicodedata
from dataclasses import dataclass, field

_LOCAL_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\x85]")
_ATOM_TEXT = re.compile(r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~ .-]*$")  # needs no quoting in a display name
_MAILBOX_RE = re.compile(r"\s*(?:(?P<name>[^<>]*?)\s*<(?P<a1>[^<>\s]+)>|(?P<a2>[^<>\s]+))\s*")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DOMAIN_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})+")  # two labels or more (compiled once: a list parses each line)


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox: display name (may be empty) and addr-spec as written."""

    name: str
    addr: str
    # Derived once here, not per use: the send loop asks for each several times a message.
    ascii_addr: str = field(init=False, repr=False, compare=False)
    key: str = field(init=False, repr=False, compare=False)
    needs_smtputf8: bool = field(init=False, repr=False, compare=False)  # a non-ASCII local part

    def __post_init__(self) -> None:
        if self.addr.isascii():  # (most addresses: nothing to encode, NFC is the identity)
            object.__setattr__(self, "ascii_addr", self.addr)
            object.__setattr__(self, "key", self.addr.lower())
            object.__setattr__(self, "needs_smtputf8", False)
            return
        local, _, domain = self.addr.rpartition("@")
        ascii_addr = f"{local}@{ascii_domain(domain)}"
        object.__setattr__(self, "ascii_addr", ascii_addr)
        object.__setattr__(self, "key", address_key(ascii_addr))
        object.__setattr__(self, "needs_smtputf8", not local.isascii())

    @property
    def local(self) -> str:
        return self.addr.rpartition("@")[0]

    @property
    def domain(self) -> str:
        return self.addr.rpartition("@")[2]


def address_key(addr: str) -> str:
    """The identity of an address for de-duplication, the ledger, the store and tokens; made only here.

    Unicode NFC (RFC 6532 section 3.1: "jösé" typed precomposed or decomposed is one person) and the
    whole address lower-cased: the domain is case-insensitive (IDNA mapping for non-ASCII ones is done
    by ``ascii_domain`` before), and while RFC 5321 lets a local part be case-sensitive, no real
    provider makes Ada@ and ada@ two people and lists do collect both spellings; like Mailman, compare
    case-insensitively (and send to the address as written).
    """
    return unicodedata.normalize("NFC", unicodedata.normalize("NFC", addr).lower())


def ascii_domain(domain: str) -> str:
    """IDNA 2008 (UTS #46) for non-ASCII domains; ``idna`` is imported only when needed."""
    if domain.isascii():
        return domain
    import idna

    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError as err:
        raise ValueError(f"invalid international domain {domain!r}: {err}") from err


# A bare ASCII address between spaces, the common line of a list: one match decides it (parse_address's general
# path gives the same answer for it; tests/core/test_address.py checks that on random input).
_BARE_RE = re.compile(
    r" *(?P<addr>(?P<local>[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*)@"
    rf"{_LABEL}(?:\.{_LABEL})+) *",
    re.ASCII,
)


def parse_address(raw: str) -> Address | None:
    """Parse ``addr`` or ``Name <addr>`` strictly; None when it is not exactly one plain mailbox."""
    if (bare := _BARE_RE.fullmatch(raw)) is not None:
        addr = bare["addr"]
        if len(addr) <= 254 and len(bare["local"]) <= 64:
            return _bare_ascii(addr)
        return None
    return _parse_general(raw)


# A list's million lines each make an Address: a frozen dataclass's __init__ (object.__setattr__ for every field)
# costs twice what setting its slots does. The same object as Address(name="", addr=addr) for an ASCII addr.
_NEW = object.__new__
_SLOTS = vars(Address)  # (the slots' descriptors: setting one bypasses the frozen class's __setattr__)
_SET_NAME, _SET_ADDR = _SLOTS["name"].__set__, _SLOTS["addr"].__set__
_SET_ASCII, _SET_KEY = _SLOTS["ascii_addr"].__set__, _SLOTS["key"].__set__
_SET_UTF8 = _SLOTS["needs_smtputf8"].__set__


def _bare_ascii(addr: str) -> Address:
    address = _NEW(Address)
    _SET_NAME(address, "")
    _SET_ADDR(address, addr)
    _SET_ASCII(address, addr)
    _SET_KEY(address, addr.lower())
    _SET_UTF8(address, False)
    return address


def _parse_general(raw: str) -> Address | None:
    """``parse_address`` for every other input: names, angle brackets, non-ASCII."""
    if _CONTROL_RE.search(raw):
        return None
    match = _MAILBOX_RE.fullmatch(raw)
    if not match:
        return None
    addr = match["a1"] or match["a2"]
    local, at, domain = addr.rpartition("@")
    if not at or not local or len(addr) > 254 or len(local) > 64:
        return None
    if not (_LOCAL_RE.match(local) or (not local.isascii() and "\\" not in local and '"' not in local)):
        return None
    try:
        if not _DOMAIN_RE.fullmatch(ascii_domain(domain)):
            return None
    except ValueError:
        return None
    name = (match["name"] or "").strip()
    if len(name) >= 2 and name[0] == name[-1] == '"':
        name = name[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return Address(name=name.strip(), addr=addr)


def _encoded_words(text: str, budget: int) -> list[str]:
    """Split ``text`` into base64 encoded words of at most ``budget`` UTF-8 bytes each."""
    words, chunk = [], ""
    for char in text:
        if len((chunk + char).encode()) > budget:
            words.append(chunk)
            chunk = ""
        chunk += char
    if chunk:
        words.append(chunk)
    return [f"=?utf-8?b?{base64.b64encode(w.encode()).decode()}?=" for w in words]


def header_text(text: str) -> str:
    """Return header-safe text: folded ASCII as is, anything else as encoded words."""
    if _CONTROL_RE.search(text):
        raise ValueError("header text must not contain control characters")
    if _plain_ascii(text):
        return _fold(text.split())
    return _fold(_encoded_words(text, 39))  # 39 bytes -> 64-char words: with "Subject: ", under 78


def _plain_ascii(text: str) -> bool:
    """Text that can go into a header as it is: ASCII, no encoded-word opener, no word too long to fold."""
    return text.isascii() and "=?" not in text and all(len(word) <= _MAX_WORD for word in text.split())


_MAX_WORD = 66  # a longer word could not be folded onto a line of its own; it goes as encoded words


def _fold(words: list[str], width: int = 66) -> str:
    """Join words into lines of at most ``width`` characters (plus a header name of up to 12)."""
    lines, line = [], ""
    for word in words:
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    lines.append(line)
    return "\r\n ".join(lines)


def format_address(address: Address, *, smtputf8: bool = False) -> str:
    """Format a mailbox for From/To: a quoted or encoded display name and the address."""
    addr = address.addr if smtputf8 else address.ascii_addr
    if not address.name:
        return f"<{addr}>"
    name = address.name
    if _plain_ascii(name):
        if not _ATOM_TEXT.match(name):
            name = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        return f"{_fold(name.split())} <{addr}>"  # folding inside a quoted string is allowed (FWS)
    return f"{_fold(_encoded_words(name, 39))} <{addr}>"
