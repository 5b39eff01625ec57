"""Text for the terminal: what a server or a file supplied cannot move the cursor or recolour it.

An SMTP reply, a template or a list file can hold ANSI escape sequences (``ESC [ 2 J`` clears the
screen), other C0/C1 control characters, or bidirectional overrides that make a line read
differently from what it says. ``printable`` shows each of them as a visible escape instead.
"""

from __future__ import annotations

import re

# C0 controls but tab and newline, DEL, C1 controls, line/paragraph separators and the bidi controls.
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: str) -> str:
    """Return ``text`` with every control character replaced by a visible escape such as ``\\x1b``."""
    return _UNSAFE.sub(_escape, text)


def count_of(n: int, word: str, plural: str = "") -> str:
    """``1 recipient``, ``2 recipients``: a count with its noun (``plural`` when adding an s is wrong)."""
    return f"{n} {word if n == 1 else plural or word + 's'}"
