"""One link policy for every output: which web addresses are accepted, and which links survive.

URLs from the schedule (``zoom``, ``info_url``, ``unsubscribe_url``) are parsed and normalised
(IDNA host, percent-encoded path) by ``normalise_url``; characters that could end a header's
``<...>`` or a Markdown link early are refused. Links written in Markdown (abstracts, bios, any
one-line field) are kept only with an ``http``, ``https`` or ``mailto`` target, in every output alike:
the HTML, the text part, the web page and the invitation. A field holding any other link
(``javascript:``, ``data:``, a relative path) is shown with its link syntax escaped, so every output
shows the same literal text and none has a live link.
"""

from __future__ import annotations

import re
from urllib.parse import quote, urlsplit, urlunsplit

from markdown_it import MarkdownIt
from markdown_it.token import Token

from mailer.core.address import ascii_domain

SAFE_SCHEMES = frozenset({"http", "https", "mailto"})
MAX_URL = 500  # characters, after normalising: a header line stays far below 998 octets

# Refused outright: each could close "<...>" in a header or "[...](...)" in Markdown, or is a typo.
_BREAKING = {" ": "a space", "<": "'<'", ">": "'>'", '"': "'\"'", "\\": "a backslash", "[": "'['", "]": "']'"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
# RFC 3986 characters kept as they are in path, query and fragment; everything else is percent-encoded
# (non-ASCII as UTF-8). Parentheses are encoded too: an unbalanced ")" ends a Markdown link.
_KEEP = "-._~!$&'*+,;=:@/?%"
_LOOSE_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def normalise_url(raw: str, *, https_only: bool = False, for_list_header: bool = False) -> str:
    """Return ``raw`` as an absolute, ASCII, normalised http(s) URL; raise ValueError saying what is wrong.

    ``for_list_header``: the URL is extended with a query and listed in List-Unsubscribe, where RFC 2369
    wants commas encoded and a fragment would swallow the appended query.
    """
    if bad := _CONTROL.search(raw):
        raise ValueError(f"it contains the control character {bad.group()!r}")
    for char, name in _BREAKING.items():
        if char in raw:
            raise ValueError(f"it contains {name}, which could end the link early in a header or in Markdown")
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as err:
        raise ValueError(f"it cannot be parsed ({err})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("it is not an absolute http(s) address")
    if https_only and scheme != "https":
        raise ValueError("one-click unsubscribe (RFC 8058) requires https")
    if parts.username is not None or parts.password is not None:
        raise ValueError("it holds a user name or password before the host (user@host)")
    try:
        host = ascii_domain(parts.hostname).lower()
    except ValueError:
        raise ValueError(f"its host {parts.hostname!r} is not a valid domain name") from None
    if not all(_LABEL.fullmatch(label) for label in host.rstrip(".").split(".")):
        raise ValueError(f"its host {parts.hostname!r} is not a valid domain name")
    netloc = host + (f":{port}" if port is not None else "")
    if for_list_header and parts.fragment:
        raise ValueError("it has a #fragment, and the subscriber's token is appended as a query")
    keep = _KEEP.replace(",", "") if for_list_header else _KEEP
    path, query, fragment = (
        quote(_LOOSE_PERCENT.sub("%25", part), safe=keep) for part in (parts.path, parts.query, parts.fragment)
    )
    url = urlunsplit((scheme, netloc, path, query, fragment))
    if len(url) > MAX_URL:
        raise ValueError(f"it is {len(url)} characters long once encoded; wanted at most {MAX_URL}")
    return url


def safe_link(url: str) -> bool:
    """A link target every output may keep: an absolute http, https or mailto URL."""
    match = re.match(r"([A-Za-z][A-Za-z0-9+.-]*):", url.strip())
    return match is not None and match[1].lower() in SAFE_SCHEMES


def _html_markdown() -> MarkdownIt:
    md = MarkdownIt("commonmark", {"html": False, "linkify": True, "typographer": False}).enable("linkify")
    # Only URLs written out with their scheme become links: "e.g." and "ri.se" stay text.
    assert md.linkify is not None  # linkify-it-py is a dependency
    md.linkify.set({"fuzzy_link": False, "fuzzy_email": False})
    md.validateLink = safe_link  # type: ignore[method-assign]
    return md


# For the HTML part: raw HTML off (``<script>`` arrives as text), bare URLs linked, unsafe targets dropped.
HTML_MARKDOWN = _html_markdown()
# For finding every link as written, safe or not (markdown-it's own validateLink would hide some).
_ANY_LINK = MarkdownIt("commonmark", {"html": False})
_ANY_LINK.validateLink = lambda url: True  # type: ignore[method-assign]


def _children(markdown: str) -> list[Token]:
    return [c for t in _ANY_LINK.parse(markdown) if t.type == "inline" for c in t.children or ()]


def _unsafe(token: Token) -> bool:
    if token.type == "link_open":
        return not safe_link(str(token.attrGet("href") or ""))
    if token.type == "image":
        return not safe_link(str(token.attrGet("src") or ""))
    return False


# An unescaped "[" (links, images, references) or "<" (autolinks): preceded by an even number of "\".
_LINK_SYNTAX = re.compile(r"(?<!\\)((?:\\\\)*)([\[<])")


def sanitise(markdown: str) -> str:
    """Return ``markdown`` unchanged when every link in it is safe; else with all link syntax escaped."""
    if "[" not in markdown and "<" not in markdown:
        return markdown
    if not any(_unsafe(child) for child in _children(markdown)):
        return markdown
    return _LINK_SYNTAX.sub(lambda m: f"{m[1]}\\{m[2]}", markdown)


def plain(markdown: str) -> str:
    """Markdown to plain text, as the invitation shows it: words kept, links as ``text (url)``."""
    out: list[str] = []
    for block in _ANY_LINK.parse(sanitise(markdown)):
        if block.type != "inline" or block.children is None:
            continue
        parts: list[str] = []
        target: str | None = None
        start = 0
        for child in block.children:
            if child.type in ("text", "code_inline"):
                parts.append(child.content)
            elif child.type in ("softbreak", "hardbreak"):
                parts.append(" ")
            elif child.type == "image":
                parts.append(child.content)
            elif child.type == "link_open":
                target, start = str(child.attrGet("href") or ""), len(parts)
            elif child.type == "link_close" and target is not None:
                text = "".join(parts[start:])
                if target.removeprefix("mailto:") != text and target != text:
                    parts.append(f" ({target})")
                target = None
        out.append("".join(parts))
    return "\n\n".join(out)
